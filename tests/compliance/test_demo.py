"""compliance.demo.load(): the demo list, one near-miss for review, Lumen's declarations and a partly
drawn licence; loading twice changes nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from compliance import demo
from compliance.models import (
    EndUseDeclaration,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceDrawdown,
    ScreeningList,
)
from compliance.policy import can_buy, can_receive_title
from members import demo as members_demo
from members.models import Member


@pytest.mark.django_db
def test_demo_loads_once_and_tells_what_it_made() -> None:
    members_demo.load()
    lines = demo.load()
    assert demo.load() == lines  # idempotent: same state, same report

    assert ScreeningList.objects.get(active=True).source_name == "screening_demo.csv"
    hit = Flag.objects.get(kind=FlagKind.SANCTIONS_HIT)
    assert (hit.member.name, hit.status) == ("Baltic Rare Metals Trading OÜ (demo)", FlagStatus.OPEN)
    assert Flag.objects.filter(status=FlagStatus.OPEN).count() == 1  # licence requests were decided

    lumen = Member.objects.get(legal_id=demo.LUMEN_LEGAL_ID)
    assert sorted(EndUseDeclaration.objects.filter(member=lumen, status="approved")
                  .values_list("metal__symbol", flat=True)) == ["Ga", "In"]
    licence = ExportLicence.objects.get(licence_number=demo.DEMO_LICENCE_NUMBER)
    assert (licence.status, licence.metal.symbol, licence.drawn_kg, licence.quantity_cap_kg) == (
        "approved", "Ga", Decimal("120.000"), Decimal("500.000"))
    assert LicenceDrawdown.objects.filter(licence=licence).count() == 1
    assert can_buy(lumen, "Ga", "CN").allowed
    assert can_receive_title(lumen).allowed

    text = "\n".join(lines)
    assert "Baltic Rare Metals Trading OÜ (demo)" in text and demo.DEMO_LICENCE_NUMBER in text


@pytest.mark.django_db
def test_without_members_the_export_part_is_skipped() -> None:
    lines = demo.load()
    assert any("skipped" in line for line in lines)
    assert not ExportLicence.objects.exists()


@pytest.mark.django_db
def test_the_demo_receipts_are_evaluated_and_some_fail_the_eu_pack() -> None:
    from compliance.models import EsgEvaluation
    from compliance.selectors import receipts_with_label
    from receipts import demo as receipts_demo
    from receipts.models import OPEN_STATUSES, Receipt

    members_demo.load()
    receipts_demo.load()
    lines = demo.load()
    assert demo.load() == lines
    open_receipts = Receipt.objects.filter(status__in=OPEN_STATUSES)
    assert EsgEvaluation.objects.filter(rule_pack__active=True).count() == 4 * open_receipts.count()
    failing_eu = EsgEvaluation.objects.filter(rule_pack__pack_id="eu-market", rule_pack__active=True, outcome="fail")
    assert failing_eu.exists()
    assert Flag.objects.filter(kind=FlagKind.ESG_FAILURE, receipt=failing_eu.first().receipt).exists()
    esg = next(line for line in lines if line.strip().startswith("ESG:"))
    assert failing_eu.first().receipt.number in esg
    assert receipts_with_label("LC").exists()
    print("\n".join(lines))
