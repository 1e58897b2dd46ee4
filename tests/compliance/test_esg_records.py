"""ESG rule packs as loaded versions, and results stored per receipt and pack version: a failure
raises one flag, labels decide what a receipt may back, a superseded version counts for nothing."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from compliance.esg import ReceiptFacts, evaluate
from compliance.models import EsgEvaluation, EsgRulePack, Flag, FlagKind
from compliance.rulepack_loader import RULEPACK_DIR, load_rulepack
from compliance.selectors import receipt_esg_blocked, receipt_esg_labels
from compliance.services import esg_evaluation_record, esg_rule_packs_sync
from config.errors import ValidationFailed
from tests.factories.compliance import receipt


def pack_dir(tmp_path: Path) -> Path:
    target = tmp_path / "packs"
    shutil.copytree(RULEPACK_DIR, target)
    return target


def facts_for(number: str, *, footprint: str = "9.0", assay_days: int = 30) -> ReceiptFacts:
    return ReceiptFacts(
        receipt_number=number, metal="Ga", grade_code="GA-6N", quantity_kg=Decimal("100.000"),
        warehouse_country="CN", assay_issued_on=date.today() - timedelta(days=assay_days),
        footprint_kgco2e_per_kg=Decimal(footprint), footprint_verified=True,
        footprint_verification_standard="ISO 14067", recycled_pre_consumer_pct=Decimal("10"),
        recycled_post_consumer_pct=Decimal("20"), origin_smelter_id="CID000001")


@pytest.mark.django_db
def test_sync_activates_each_pack_once(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path)
    activated = esg_rule_packs_sync(directory=directory)
    assert sorted(p.pack_id for p in activated) == ["base", "eu-market", "low-carbon", "us-ira"]
    assert esg_rule_packs_sync(directory=directory) == []
    assert EsgRulePack.objects.filter(active=True).count() == 4


@pytest.mark.django_db
def test_a_new_version_supersedes_and_a_silent_edit_is_refused(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path)
    esg_rule_packs_sync(directory=directory)
    base = directory / "base.yaml"
    text = base.read_text(encoding="utf-8")
    base.write_text(text.replace("months: 12", "months: 9"), encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        esg_rule_packs_sync(directory=directory)
    assert caught.value.code == "rulepack_version_reused"
    assert EsgRulePack.objects.filter(pack_id="base").count() == 1

    base.write_text(text.replace("months: 12", "months: 9").replace("version: 1", "version: 2"), encoding="utf-8")
    [activated] = esg_rule_packs_sync(directory=directory)
    assert (activated.pack_id, activated.version, activated.active) == ("base", "2", True)
    assert list(EsgRulePack.objects.filter(pack_id="base").order_by("version").values_list("active", flat=True)) \
        == [False, True]


@pytest.mark.django_db
def test_a_broken_pack_file_loads_nothing(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path)
    (directory / "zz-broken.yaml").write_text("id: zz-broken\nversion: [\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        esg_rule_packs_sync(directory=directory)
    assert caught.value.code == "rulepack_invalid"
    assert not EsgRulePack.objects.exists()


@pytest.mark.django_db
def test_results_are_stored_per_receipt_and_version_and_failures_are_flagged(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path)
    esg_rule_packs_sync(directory=directory)
    goods = receipt(symbol="Ga")
    now = timezone.now()
    low_carbon = EsgRulePack.objects.get(pack_id="low-carbon", active=True)
    pack = load_rulepack(directory / "low-carbon.yaml")

    passed = evaluate(facts_for(goods.number, footprint="1.0"), pack, now=now)
    stored = esg_evaluation_record(receipt=goods, rule_pack=low_carbon, result=passed)
    assert (stored.outcome, stored.label, stored.rules[0]["rule_id"]) == ("pass", "LC", "lc-footprint-verified")
    assert receipt_esg_labels(goods) == {"LC"} and not receipt_esg_blocked(goods)

    failed = evaluate(facts_for(goods.number, footprint="900", assay_days=800), pack, now=now)
    assert failed.outcome == "fail"
    for _ in range(2):
        esg_evaluation_record(receipt=goods, rule_pack=low_carbon, result=failed)
    assert EsgEvaluation.objects.filter(receipt=goods).count() == 1  # replaced, not appended
    assert receipt_esg_blocked(goods) and receipt_esg_labels(goods) == frozenset()
    flag = Flag.objects.get(kind=FlagKind.ESG_FAILURE)
    assert (flag.receipt, flag.member) == (goods, goods.holder)
    assert goods.number in flag.reference

    with pytest.raises(ValidationFailed) as mismatch:
        esg_evaluation_record(receipt=receipt(symbol="Ga"), rule_pack=low_carbon, result=failed)
    assert mismatch.value.code == "esg_result_mismatch"


@pytest.mark.django_db
def test_a_result_under_a_superseded_version_counts_for_nothing(tmp_path: Path) -> None:
    directory = pack_dir(tmp_path)
    esg_rule_packs_sync(directory=directory)
    goods = receipt(symbol="Ga")
    base_row = EsgRulePack.objects.get(pack_id="base")
    result = evaluate(facts_for(goods.number, assay_days=800), load_rulepack(directory / "base.yaml"),
                      now=datetime.now(tz=timezone.get_current_timezone()))
    esg_evaluation_record(receipt=goods, rule_pack=base_row, result=result)
    assert receipt_esg_blocked(goods)
    base = directory / "base.yaml"
    base.write_text(base.read_text(encoding="utf-8").replace("version: 1", "version: 2"), encoding="utf-8")
    esg_rule_packs_sync(directory=directory)
    assert not receipt_esg_blocked(goods)  # to be evaluated again under version 2
