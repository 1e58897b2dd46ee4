"""Reads in the compliance app that are more than a one-line query."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from compliance.esg import CompiledPack, evaluate
from compliance.facts import facts_from_snapshot
from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    EsgEvaluation,
    EsgOutcome,
    EsgRulePack,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceStatus,
)
from config.errors import NotFound
from members.models import Member
from receipts.models import OPEN_STATUSES, Receipt


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


# --- ESG: labels and the results behind them ------------------------------------------------------
#
# How labels combine (one rule, applied the same way by receipts_with_label in SQL and by
# receipt_esg_labels / receipt_esg_report in Python):
#
# 1. Only current results count: a result under a version that is no longer active counts for nothing,
#    so after a pack changes its label is withheld until the receipt is evaluated under the new version
#    (the sync enqueues that as it commits).
# 2. Gate packs (active packs without a label, e.g. `base`) clear a receipt: it needs a current result
#    under every gate pack, and none may fail (pass or warn). A receipt not yet evaluated under a gate, or
#    failing one, holds no label at all.
# 3. A cleared receipt holds label L when its current result under every active pack granting L earned
#    it: every rule of that pack passed (not_applicable earns nothing: a label is a positive claim).
# 4. Labels are independent of each other: failing the EU pack does not take LC away. An instrument names
#    one class (Instrument.esg_class, e.g. "LC" for GA-6N-CN-LC), and a receipt may back it iff it holds
#    that label.


def _current(receipt_ref: Any) -> QuerySet[EsgEvaluation]:
    return EsgEvaluation.objects.filter(receipt=receipt_ref, rule_pack__active=True)


def receipts_with_label(label: str) -> QuerySet[Receipt]:
    """Receipts holding `label` (e.g. "LC") under the current packs, by the rule above, as one query of
    EXISTS / NOT EXISTS subqueries: use it as a subquery (`pk__in=receipts_with_label("LC").values("pk")`)
    rather than listing it."""
    if not label:
        return Receipt.objects.none()
    granting = EsgRulePack.objects.filter(active=True, label=label)
    gates = EsgRulePack.objects.filter(active=True, label="")
    earned_under = EsgEvaluation.objects.filter(receipt=OuterRef(OuterRef("pk")), rule_pack=OuterRef("pk"),
                                                label=label)
    cleared_by = EsgEvaluation.objects.filter(receipt=OuterRef(OuterRef("pk")), rule_pack=OuterRef("pk"),
                                              outcome__in=[EsgOutcome.PASS, EsgOutcome.WARN])
    return Receipt.objects.filter(
        Exists(_current(OuterRef("pk")).filter(rule_pack__label=label, label=label)),
        ~Exists(granting.filter(~Exists(earned_under))),
        ~Exists(gates.filter(~Exists(cleared_by))),
    )


def _labels_of(packs: list[EsgRulePack], results: dict[int, EsgEvaluation]) -> frozenset[str]:
    """The combination rule above, for one receipt: its current results by pack version pk."""
    for pack in packs:
        if not pack.label:
            result = results.get(pack.pk)
            if result is None or result.outcome == EsgOutcome.FAIL:
                return frozenset()
    granted: dict[str, bool] = {}
    for pack in packs:
        if pack.label:
            result = results.get(pack.pk)
            earned = result is not None and result.label == pack.label
            granted[pack.label] = granted.get(pack.label, True) and earned
    return frozenset(label for label, held in granted.items() if held)


def receipt_esg_labels(receipt: Receipt) -> frozenset[str]:
    """Labels (ESG classes, e.g. "LC") the receipt holds now: which instruments it may back."""
    packs = list(EsgRulePack.objects.filter(active=True))
    return _labels_of(packs, {e.rule_pack_id: e for e in _current(receipt)})


def esg_labels_of(receipt_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """receipt_esg_labels for many receipts in two queries (a page listing a holder's receipts)."""
    ids = list(receipt_ids)
    packs = list(EsgRulePack.objects.filter(active=True))
    results: dict[int, dict[int, EsgEvaluation]] = {pk: {} for pk in ids}
    for evaluation in EsgEvaluation.objects.filter(receipt_id__in=ids, rule_pack__active=True).only(
            "receipt_id", "rule_pack_id", "outcome", "label"):
        results[evaluation.receipt_id][evaluation.rule_pack_id] = evaluation
    return {pk: _labels_of(packs, by_pack) for pk, by_pack in results.items()}


def receipt_esg_blocked(receipt: Receipt) -> bool:
    """A blocking rule of an active pack fails for the receipt."""
    return _current(receipt).filter(outcome=EsgOutcome.FAIL).exists()


def receipts_pending_esg(*, issued_before: datetime | None = None) -> QuerySet[Receipt]:
    """Open receipts lacking a result under some active pack version (what the sweep re-publishes)."""
    missing = EsgRulePack.objects.filter(active=True).filter(
        ~Exists(EsgEvaluation.objects.filter(receipt=OuterRef(OuterRef("pk")), rule_pack=OuterRef("pk"))))
    receipts = Receipt.objects.filter(Exists(missing), status__in=OPEN_STATUSES)
    return receipts.filter(issued_at__lt=issued_before) if issued_before is not None else receipts


def esg_rules_explained(evaluation: EsgEvaluation, pack: CompiledPack, number: str) -> tuple[list[dict[str, Any]],
                                                                                           dict[str, Any] | None]:
    """Every rule of a stored result with measured vs required, regenerated from its stored facts and the
    pack version at the date it was judged (esg.evaluate is pure: the same inputs give the same text)."""
    stored = evaluation.rule_outcomes(pack.rule_ids)
    if not evaluation.facts:
        return [{"rule_id": rule_id, "outcome": outcome, "kind": "", "severity": "", "measured": "", "required": "",
                 "message": ""} for rule_id, outcome in stored.items()], evaluation.cbam
    result = evaluate(facts_from_snapshot(number, evaluation.facts), pack, now=evaluation.evaluated_at)
    rules = [{"rule_id": r.rule_id, "kind": r.kind, "severity": r.severity,
              "outcome": stored.get(r.rule_id, r.outcome), "measured": r.measured, "required": r.required,
              "message": r.message} for r in result.rules]
    cbam = None
    if result.cbam is not None:
        cbam = {"eur_low": str(result.cbam.eur_low), "eur_high": str(result.cbam.eur_high),
                "certified": result.cbam.certified, "basis": result.cbam.basis}
    return rules, cbam


def receipt_esg_report(receipt: Receipt) -> dict[str, Any]:
    """The receipt's ESG page: its current labels, whether the gates clear it, and per active pack version
    the stored result with every rule's outcome, measured and required values (or "pending" when the
    receipt has not been evaluated under that version yet)."""
    from compliance.services import esg_compiled_pack

    packs = list(EsgRulePack.objects.filter(active=True).order_by("pack_id"))
    results = {e.rule_pack_id: e for e in _current(receipt)}
    labels = _labels_of(packs, results)
    cleared = all(p.pk in results and results[p.pk].outcome != EsgOutcome.FAIL for p in packs if not p.label)
    entries = []
    for pack in packs:
        result = results.get(pack.pk)
        entry: dict[str, Any] = {
            "pack": pack.pack_id, "version": pack.version, "title": pack.title, "market": pack.market,
            "label": pack.label or None, "gate": not pack.label,
            "status": "evaluated" if result is not None else "pending",
            "outcome": None, "label_earned": False, "evaluated_at": None, "cbam": None, "rules": [],
        }
        if result is not None:
            rules, cbam = esg_rules_explained(result, esg_compiled_pack(pack), receipt.number)
            entry.update(outcome=result.outcome, label_earned=bool(pack.label) and result.label == pack.label,
                         evaluated_at=result.evaluated_at, cbam=cbam, rules=rules)
        entries.append(entry)
    return {"receipt": receipt.number, "labels": sorted(labels), "cleared": cleared,
            "blocked": any(e["outcome"] == EsgOutcome.FAIL for e in entries), "packs": entries}


@dataclass(frozen=True)
class ReviewQueue:
    """One queue of the console's home page: what waits for an officer's decision, and the admin list (URL name
    and filter) where it is decided."""

    label: str
    count: int
    changelist: str
    query: str = ""


def review_queues() -> list[ReviewQueue]:
    """Every queue of decisions the console owes, with its count (zero included: an empty queue is news too)
    and the admin list filtered to it. Seven small counts."""
    from django.db.models import Count

    from members.models import KycStatus
    from receipts.models import StorageIncident

    flags = dict(open_flags().values_list("kind").annotate(n=Count("pk")).values_list("kind", "n"))
    return [
        ReviewQueue("Members waiting for KYC review", Member.objects.filter(kyc_status=KycStatus.PENDING).count(),
                    "admin:members_member_changelist", "kyc_status__exact=pending"),
        *(ReviewQueue(f"Open flags: {label}", flags.get(kind, 0), "admin:compliance_flag_changelist",
                      f"kind__exact={kind}")
          for kind, label in FlagKind.choices if kind != FlagKind.OTHER or flags.get(kind)),
        ReviewQueue("End-use declarations pending review",
                    EndUseDeclaration.objects.filter(status=DeclarationStatus.PENDING).count(),
                    "admin:compliance_endusedeclaration_changelist", "status__exact=pending"),
        ReviewQueue("Export licences pending review",
                    ExportLicence.objects.filter(status=LicenceStatus.PENDING).count(),
                    "admin:compliance_exportlicence_changelist", "status__exact=pending"),
        ReviewQueue("Storage incidents open", StorageIncident.objects.filter(closed_at__isnull=True).count(),
                    "admin:receipts_storageincident_changelist"),
    ]
