"""Every row lock the compliance app takes, in primary-key order."""

from __future__ import annotations

from django.db.models import QuerySet

from compliance.models import EndUseDeclaration, ExportLicence, Flag, ScreeningList


def export_licences_for_update(*pks: int) -> QuerySet[ExportLicence]:
    # The licence row carries drawn_kg: its lock serialises every drawdown of that licence.
    return ExportLicence.objects.select_for_update(of=("self",)).filter(pk__in=sorted(set(pks))).order_by("pk")


def end_use_declarations_for_update(*pks: int) -> QuerySet[EndUseDeclaration]:
    return EndUseDeclaration.objects.select_for_update(of=("self",)).filter(pk__in=sorted(set(pks))).order_by("pk")


def flags_for_update(*pks: int) -> QuerySet[Flag]:
    return Flag.objects.select_for_update(of=("self",)).filter(pk__in=sorted(set(pks))).order_by("pk")


def active_screening_list_for_update() -> QuerySet[ScreeningList]:
    # Two list loads at once: the second waits here, then sees the first one's list as active.
    return ScreeningList.objects.select_for_update().filter(active=True).order_by("pk")
