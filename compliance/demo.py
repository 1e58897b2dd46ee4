"""DEMO data for the compliance app: the demo screening list, screened members (one near-miss for
review), the ESG rule packs with every open receipt evaluated (most fail the EU pack: no recycled content),
and Lumen Displays' end-use declarations and a partly drawn gallium export licence.

Idempotent; run after members.demo.load() and once the receipts catalogue (Metal rows) exists.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from importlib import import_module
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    EsgEvaluation,
    EsgOutcome,
    EsgRulePack,
    ExportLicence,
    FlagKind,
    LicenceStatus,
)
from compliance.selectors import open_flags, receipts_with_label
from compliance.services import (
    end_use_declaration_decide,
    end_use_declaration_submit,
    esg_evaluate,
    esg_rule_packs_sync,
    export_licence_decide,
    export_licence_submit,
    licence_draw,
    member_screen,
    screening_list_load,
)
from members.models import Member, User
from receipts.models import OPEN_STATUSES, Metal, Receipt

DEMO_LIST = Path(__file__).resolve().parent / "data" / "screening_demo.csv"
LUMEN_LEGAL_ID = "DEMO-DE-HRB-123456"
LUMEN_END_USER = "Lumen Displays GmbH (demo), Dresden display fab"
DEMO_LICENCE_NUMBER = "DEMO-MOFCOM-GA-2026-0001"
DEMO_LICENCE_CAP = Decimal("500.000")
DEMO_LICENCE_DRAWN = Decimal("120.000")
END_USES = {
    "Ga": "IGZO thin-film-transistor backplanes for AMOLED display panels (DEMO)",
    "In": "ITO sputtering targets for AMOLED display panels (DEMO)",
}
APPROVAL = "Demo data: approved at load"


def _metals(symbols: list[str]) -> dict[str, Metal]:
    """The demo's metals; synced from the receipts catalogue if rows are missing and receipts offers it."""
    found = {m.symbol: m for m in Metal.objects.filter(symbol__in=symbols)}
    if len(found) < len(symbols):
        try:
            sync = getattr(import_module("receipts.services"), "catalogue_sync", None)
        except ImportError:
            sync = None
        if sync is not None:
            sync()
            found = {m.symbol: m for m in Metal.objects.filter(symbol__in=symbols)}
    return found


def _validity() -> tuple[date, date]:
    today = timezone.localdate()
    return today - timedelta(days=30), date(today.year + 1, 12, 31)


def load() -> list[str]:
    """Load the compliance demo data if missing; return the lines to print."""
    officer = User.objects.filter(username="officer").first()
    screening = screening_list_load(source=DEMO_LIST, loaded_by=officer, rescreen=False)
    for member in Member.objects.order_by("pk"):
        member_screen(member=member)
    queue = open_flags(kind=FlagKind.SANCTIONS_HIT).select_related("member")
    esg_rule_packs_sync(reevaluate=False)
    packs = ", ".join(str(p) for p in EsgRulePack.objects.filter(active=True).order_by("pack_id"))
    # Evaluated here rather than left to the worker, so the console shows results as soon as the demo is up.
    run = esg_evaluate(receipt_ids=Receipt.objects.filter(status__in=OPEN_STATUSES).order_by("pk")
                       .values_list("pk", flat=True))
    failing_eu = list(EsgEvaluation.objects.filter(rule_pack__pack_id="eu-market", rule_pack__active=True,
                                                   outcome=EsgOutcome.FAIL).order_by("receipt__number")
                      .values_list("receipt__number", flat=True))
    low_carbon = list(receipts_with_label("LC").order_by("number").values_list("number", flat=True))
    lines = [
        f"  ESG packs:  {packs}",
        f"  ESG:        {run.receipts} open receipt(s) evaluated; low-carbon (LC): {', '.join(low_carbon) or 'none'}; "
        f"failing the EU pack: {', '.join(failing_eu) or 'none'}",
        f"  screening:  {screening.source_name} active ({screening.entry_count} fictional entries); "
        f"sanctions hits to review: {', '.join(str(f.member) for f in queue) or 'none'}",
    ]

    lumen = Member.objects.filter(legal_id=LUMEN_LEGAL_ID).first()
    if lumen is None:
        return [*lines, "  export:     skipped (load the members demo first)"]
    metals = _metals(sorted(END_USES))
    if len(metals) < len(END_USES):
        return [*lines, "  export:     skipped end-use declarations and licence (no Ga/In in the metal catalogue yet)"]

    valid_from, valid_to = _validity()
    with transaction.atomic():
        for symbol, end_use in sorted(END_USES.items()):
            if EndUseDeclaration.objects.filter(member=lumen, metal=metals[symbol], end_user=LUMEN_END_USER).exists():
                continue
            declaration = end_use_declaration_submit(
                member=lumen, metal=metals[symbol], end_user=LUMEN_END_USER, end_use=end_use,
                destination_country="DE", valid_from=valid_from, valid_to=valid_to)
            end_use_declaration_decide(declaration=declaration, status=DeclarationStatus.APPROVED, decided_by=officer,
                                       reason=APPROVAL)
        licence = ExportLicence.objects.filter(licence_number=DEMO_LICENCE_NUMBER).first()
        if licence is None:
            licence = export_licence_submit(
                exporter=lumen, licence_number=DEMO_LICENCE_NUMBER, metal=metals["Ga"],
                quantity_cap_kg=DEMO_LICENCE_CAP, consignee="Lumen Displays GmbH (demo), Dresden",
                end_user=LUMEN_END_USER, end_use=END_USES["Ga"], destination_country="DE",
                valid_from=valid_from, valid_to=valid_to)
            export_licence_decide(licence=licence, status=LicenceStatus.APPROVED, decided_by=officer,
                                  reason=APPROVAL)
            licence_draw(licence=licence, quantity_kg=DEMO_LICENCE_DRAWN,
                         reference="DEMO: earlier withdrawal, Shanghai to Dresden")
    declared = EndUseDeclaration.objects.filter(member=lumen, status=DeclarationStatus.APPROVED).count()
    pending = open_flags().count()
    return [
        *lines,
        f"  export:     {lumen} — {declared} approved end-use declaration(s) (Ga, In); licence "
        f"{licence.licence_number}: {licence.drawn_kg} of {licence.quantity_cap_kg} kg Ga drawn",
        f"  officer:    {pending} open flag(s) in /admin/compliance/flag/",
    ]
