"""Reads in the compliance app that are more than a one-line query."""

from __future__ import annotations

from django.db.models import QuerySet

from compliance.models import (
    EndUseDeclaration,
    EsgEvaluation,
    EsgOutcome,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
)
from config.errors import NotFound
from members.models import Member
from receipts.models import Receipt


def end_use_declarations_of(member: Member, *, status: str | None = None,
                            metal: str | None = None) -> QuerySet[EndUseDeclaration]:
    declarations = EndUseDeclaration.objects.filter(member=member).select_related("metal")
    if status:
        declarations = declarations.filter(status=status)
    if metal:
        declarations = declarations.filter(metal__symbol__iexact=metal)
    return declarations.order_by("-submitted_at", "-pk")


def end_use_declaration_of(member: Member, pk: int) -> EndUseDeclaration:
    """The member's own declaration; anyone else's is indistinguishable from a missing one (404)."""
    declaration = end_use_declarations_of(member).filter(pk=pk).first()
    if declaration is None:
        raise NotFound("No such end-use declaration.")
    return declaration


def export_licences_of(member: Member, *, status: str | None = None,
                       metal: str | None = None) -> QuerySet[ExportLicence]:
    licences = ExportLicence.objects.filter(exporter=member).select_related("metal")
    if status:
        licences = licences.filter(status=status)
    if metal:
        licences = licences.filter(metal__symbol__iexact=metal)
    return licences.order_by("-submitted_at", "-pk")


def export_licence_of(member: Member, pk: int) -> ExportLicence:
    licence = export_licences_of(member).filter(pk=pk).first()
    if licence is None:
        raise NotFound("No such export licence.")
    return licence


def open_flags(*, kind: str | None = None) -> QuerySet[Flag]:
    flags = Flag.objects.filter(status=FlagStatus.OPEN)
    return flags.filter(kind=kind) if kind else flags


def sanctions_flags_blocking(member: Member) -> QuerySet[Flag]:
    """Open or confirmed sanctions hits: while any exists, title cannot move to the member."""
    return Flag.objects.filter(member=member, kind=FlagKind.SANCTIONS_HIT,
                               status__in=[FlagStatus.OPEN, FlagStatus.CONFIRMED]).order_by("pk")


def receipt_esg_labels(receipt: Receipt) -> frozenset[str]:
    """Labels (ESG classes, e.g. "low-carbon") the receipt holds under the active packs: which
    instruments it may back. A result under a superseded pack version counts for nothing."""
    return frozenset(EsgEvaluation.objects.filter(receipt=receipt, rule_pack__active=True, outcome=EsgOutcome.PASS)
                     .exclude(label="").values_list("label", flat=True))


def receipt_esg_blocked(receipt: Receipt) -> bool:
    """A blocking rule of an active pack fails for the receipt."""
    return EsgEvaluation.objects.filter(receipt=receipt, rule_pack__active=True, outcome=EsgOutcome.FAIL).exists()
