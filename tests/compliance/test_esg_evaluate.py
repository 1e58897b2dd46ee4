"""ESG evaluation stored per receipt and pack version: bulk, idempotent, flags for block failures, labels
combined by one rule (gates first, then each label's own pack) and used by trading for -LC instruments."""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from compliance import services, tasks
from compliance.models import EsgEvaluation, EsgRulePack, Flag, FlagKind, FlagStatus
from compliance.rulepack_loader import RULEPACK_DIR
from compliance.selectors import (
    esg_labels_of,
    receipt_esg_blocked,
    receipt_esg_labels,
    receipt_esg_report,
    receipts_pending_esg,
    receipts_with_label,
)
from compliance.services import esg_compiled_pack, esg_evaluate, esg_rule_packs_sync, flag_set_status
from config.errors import ApplicationError
from receipts import services as receipt_services
from receipts.models import Receipt
from tests.factories.compliance import EsgWorld, officer_client, origin_doc
from tests.factories.trading import instrument
from trading.models import Instrument, OrderStatus
from trading.services import order_place

pytestmark = pytest.mark.django_db
LABELS = ("EU", "LC", "US")


def audit_events() -> int:
    return apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.count()


def state(receipts: list[Receipt]) -> list[tuple[Any, ...]]:
    rows = EsgEvaluation.objects.filter(receipt__in=receipts).order_by("pk")
    return [*rows.values_list("pk", "receipt_id", "rule_pack_id", "outcome", "label", "rules", "facts", "cbam",
                              "result_hash", "evaluated_at"),
            ("flags", *Flag.objects.order_by("pk").values_list("pk", "subject_key", "status")),
            ("audit", audit_events())]


def held(receipt: Receipt) -> set[str]:
    """Labels by the SQL selector, to compare with receipt_esg_labels (the same rule in Python)."""
    return {label for label in LABELS if receipts_with_label(label).filter(pk=receipt.pk).exists()}


def new_version(tmp_path: Path, pack: str, old: str, new: str) -> Path:
    directory = tmp_path / "packs"
    if not directory.exists():
        shutil.copytree(RULEPACK_DIR, directory)
    path = directory / f"{pack}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text and "version: 1" in text
    path.write_text(text.replace(old, new).replace("version: 1", "version: 2"), encoding="utf-8")
    return directory


@pytest.fixture
def world() -> EsgWorld:
    return EsgWorld()


@pytest.fixture(params=["copy", "bulk_create"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways results and flags are written: COPY + INSERT ... ON CONFLICT (PostgreSQL) and bulk_create."""
    monkeypatch.setattr(services, "ESG_STORE_BY_COPY", request.param == "copy")
    return str(request.param)


def test_results_are_stored_per_receipt_and_pack_version(world: EsgWorld, store: str) -> None:
    goods = world.proven_receipt()
    run = esg_evaluate(receipt_ids=[goods.pk])
    assert (run.receipts, run.results, run.written, run.flags) == (1, 4, 4, 0)
    rows = {e.rule_pack.pack_id: e for e in EsgEvaluation.objects.filter(receipt=goods).select_related("rule_pack")}
    assert set(rows) == {"base", "eu-market", "low-carbon", "us-ira"}
    assert all(e.rule_pack.active and e.outcome == "pass" for e in rows.values())
    assert {p: e.label for p, e in rows.items()} == {"base": "", "eu-market": "EU", "low-carbon": "LC", "us-ira": "US"}
    assert rows["low-carbon"].rules == ["pass", "pass"]  # in the order of the version's rules
    assert rows["low-carbon"].rule_outcomes(esg_compiled_pack(rows["low-carbon"].rule_pack).rule_ids) == \
        {"lc-footprint-verified": "pass", "lc-carbon-intensity": "pass"}
    assert rows["eu-market"].cbam == {"eur_low": "0.00", "eur_high": "0.00"}  # verified under ISO 14067
    assert rows["base"].facts["attestations"].keys() == {"assay", "carbon_footprint", "recycled_content", "origin"}
    assert receipt_esg_labels(goods) == held(goods) == {"EU", "LC", "US"}
    assert not receipt_esg_blocked(goods)


def test_running_the_same_evaluation_twice_changes_nothing(world: EsgWorld, store: str) -> None:
    goods = world.proven_receipt()
    failing = world.proven_receipt(smelter=None)
    ids = [goods.pk, failing.pk]
    first = tasks.esg_evaluate_receipts(ids)
    assert first == 8
    before = state([goods, failing])
    assert tasks.esg_evaluate_receipts(ids) == 0
    assert esg_evaluate(receipt_ids=ids, now=timezone.now() + timedelta(days=1)).written == 0  # a day later too
    assert state([goods, failing]) == before


def test_a_block_failure_raises_one_flag_per_receipt_and_pack_version(world: EsgWorld, tmp_path: Path,
                                                                     store: str) -> None:
    unsourced = world.proven_receipt(smelter=None)  # LC's own rules pass, but no origin: base and EU fail
    run = esg_evaluate(receipt_ids=[unsourced.pk])
    assert run.flags == 2
    flags = {f.subject_key: f for f in Flag.objects.filter(kind=FlagKind.ESG_FAILURE)}
    base_key = f"esg:{unsourced.number}:base:1"
    assert set(flags) == {base_key, f"esg:{unsourced.number}:eu-market:2"}
    base_flag = flags[base_key]
    assert (base_flag.receipt_id, base_flag.member_id, base_flag.status) == (unsourced.pk, unsourced.holder_id, "open")
    assert base_flag.details["failed_rules"] == ["smelter-conformant"]
    assert "smelter-conformant" in base_flag.reference
    outcomes = dict(EsgEvaluation.objects.filter(receipt=unsourced).values_list("rule_pack__pack_id", "outcome"))
    assert outcomes == {"base": "fail", "eu-market": "fail", "low-carbon": "pass", "us-ira": "warn"}
    assert receipt_esg_blocked(unsourced)
    assert receipt_esg_labels(unsourced) == held(unsourced) == set()  # the gate withholds LC

    # Dismissed by an officer, the flag stands for this version even as the failure changes.
    flag_set_status(flag=base_flag, status=FlagStatus.DISMISSED, decided_by=None, reason="smelter audit pending")
    world.attest(unsourced.lot, "origin", origin_doc(unsourced.lot, smelter_id="CID123456"))
    again = esg_evaluate(receipt_ids=[unsourced.pk])
    assert again.written == 4 and again.flags == 0  # new facts (another smelter), same failures, no new flag
    assert Flag.objects.filter(kind=FlagKind.ESG_FAILURE).count() == 2

    # A new version of the gate that still fails raises a flag of its own.
    esg_rule_packs_sync(directory=new_version(tmp_path, "base", "months: 12", "months: 11"), reevaluate=False)
    assert esg_evaluate(receipt_ids=[unsourced.pk]).flags == 1
    assert Flag.objects.filter(subject_key=f"esg:{unsourced.number}:base:2", status="open").exists()


@pytest.mark.parametrize(("proof", "expected"), [
    ({}, {"EU", "LC", "US"}),
    ({"footprint": "200.0"}, {"EU", "US"}),  # above Ga's 119.9: not low-carbon, still verified for EU
    ({"standard": "Internal review"}, {"LC", "US"}),  # EU wants a recognised verification standard; LC, US do not
    ({"verified": False}, set()),  # no verified footprint: neither LC nor EU; US only warns (no label)
    ({"recycled": ("5.0", "5.0")}, {"LC", "US"}),  # below EU's 16 %
    ({"smelter": None}, set()),  # base fails: the gate withholds every label
    ({"smelter": "CID123456"}, set()),  # a smelter not on the conformant list
])
def test_labels_combine_by_one_rule_in_sql_and_in_python(world: EsgWorld, proof: dict[str, Any],
                                                         expected: set[str]) -> None:
    goods = world.proven_receipt(**proof)
    assert receipt_esg_labels(goods) == held(goods) == set()  # not evaluated yet: nothing is claimed
    esg_evaluate(receipt_ids=[goods.pk])
    assert receipt_esg_labels(goods) == held(goods) == esg_labels_of([goods.pk])[goods.pk] == expected
    assert receipt_esg_report(goods)["labels"] == sorted(expected)


def test_a_gate_not_yet_evaluated_withholds_labels(world: EsgWorld) -> None:
    goods = world.proven_receipt()
    lc = EsgRulePack.objects.get(pack_id="low-carbon", active=True)
    esg_evaluate(receipt_ids=[goods.pk], pack_versions=[lc])
    assert EsgEvaluation.objects.get(receipt=goods).label == "LC"
    assert receipt_esg_labels(goods) == held(goods) == set()
    assert receipts_pending_esg().filter(pk=goods.pk).exists()


def test_a_new_pack_version_withholds_its_label_until_the_receipt_is_evaluated_under_it(
        world: EsgWorld, tmp_path: Path) -> None:
    goods = world.proven_receipt(footprint="12.4")
    esg_evaluate(receipt_ids=[goods.pk])
    assert "LC" in held(goods)
    assert not receipts_pending_esg().filter(pk=goods.pk).exists()

    [v2] = esg_rule_packs_sync(directory=new_version(tmp_path, "low-carbon", "Ga: 119.9", "Ga: 10.0"),
                               reevaluate=False)
    assert receipts_pending_esg().filter(pk=goods.pk).exists()
    assert receipt_esg_labels(goods) == held(goods) == {"EU", "US"}  # v1's LC counts for nothing now
    run = esg_evaluate(receipt_ids=[goods.pk])
    assert run.written == 1  # only the new version's result; the others are unchanged
    lc_v2 = EsgEvaluation.objects.get(receipt=goods, rule_pack=v2)
    assert lc_v2.outcome == "fail" and lc_v2.rules == ["pass", "fail"]
    assert EsgEvaluation.objects.filter(receipt=goods, rule_pack__pack_id="low-carbon").count() == 2  # v1 kept
    assert receipt_esg_labels(goods) == held(goods) == {"EU", "US"}


def test_the_report_explains_every_rule_with_measured_and_required(world: EsgWorld) -> None:
    goods = world.proven_receipt(footprint="130.5")
    report = receipt_esg_report(goods)
    assert report["labels"] == [] and {p["status"] for p in report["packs"]} == {"pending"}
    esg_evaluate(receipt_ids=[goods.pk])
    report = receipt_esg_report(goods)
    packs = {p["pack"]: p for p in report["packs"]}
    assert report["labels"] == ["EU", "US"] and report["cleared"] and report["blocked"]
    lc = packs["low-carbon"]
    assert (lc["version"], lc["label"], lc["outcome"], lc["label_earned"]) == ("1", "LC", "fail", False)
    intensity = lc["rules"][1]
    assert intensity == {"rule_id": "lc-carbon-intensity", "kind": "carbon_intensity_max", "severity": "block",
                         "outcome": "fail", "measured": "130.5 kgCO2e/kg", "required": "<= 119.9 kgCO2e/kg for Ga",
                         "message": "carbon intensity 130.5 kgCO2e/kg is above 119.9"}
    assert packs["base"]["gate"] and packs["base"]["label"] is None
    assert packs["eu-market"]["cbam"]["certified"] is True
    stored = EsgEvaluation.objects.get(receipt=goods, rule_pack__pack_id="low-carbon")
    assert [r["outcome"] for r in lc["rules"]] == stored.rules == ["pass", "fail"]


def test_an_lc_receipt_backs_an_lc_instrument_and_a_non_lc_one_is_refused(world: EsgWorld) -> None:
    lc_market = instrument("GA-6N-CN-LC")
    Instrument.objects.filter(pk=lc_market.pk).update(esg_class="LC")
    lc_market.refresh_from_db()
    green = world.proven_receipt(footprint="12.4")
    grey = world.proven_receipt(footprint="250.0")
    waiting = world.proven_receipt(footprint="12.4")  # would qualify, but is not evaluated yet
    esg_evaluate(receipt_ids=[green.pk, grey.pk])

    result = order_place(member=green.holder, instrument=lc_market, side="sell", order_type="limit", tif="GTC",
                         quantity_kg="10", price="580.00", client_order_id="lc-sell-1")
    assert result.order.status == OrderStatus.OPEN
    assert Receipt.objects.filter(holder=green.holder, encumbrance_ref=f"O{result.order.pk}").exists()

    for seller in (grey.holder, waiting.holder):
        with pytest.raises(ApplicationError) as refused:
            order_place(member=seller, instrument=lc_market, side="sell", order_type="limit", tif="GTC",
                        quantity_kg="10", price="580.00", client_order_id=f"lc-sell-{seller.pk}")
        assert refused.value.code == "insufficient_receipts"


def test_issue_split_and_new_attestations_enqueue_the_affected_receipts(
        world: EsgWorld, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> None:
    published: list[list[int]] = []
    monkeypatch.setattr(tasks.esg_evaluate_receipts, "delay", lambda ids: published.append(list(ids)))
    with django_capture_on_commit_callbacks(execute=True):
        goods = world.proven_receipt(quantity="100.000")
    assert published == [[goods.pk]]

    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        parts = receipt_services.receipt_split(receipt=goods, quantities=["70.000", "30.000"], by=goods.holder)
    assert published == [sorted(p.pk for p in parts)]

    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        world.attest(goods.lot, "origin", origin_doc(goods.lot, smelter_id="CID900102"))
    assert published == [sorted(p.pk for p in parts)]  # the lot's open receipts, not the closed parent


def test_storage_incidents_opening_and_closing_enqueue_the_receipts_there(
        world: EsgWorld, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> None:
    here = world.proven_receipt(location="B7")
    world.proven_receipt(location="B8")
    published: list[list[int]] = []
    monkeypatch.setattr(tasks.esg_evaluate_receipts, "delay", lambda ids: published.append(list(ids)))
    with django_capture_on_commit_callbacks(execute=True):
        _, incident = receipt_services.storage_reading_record(
            warehouse=world.warehouse, by=world.operator, location="B7", observed_at=timezone.now(),
            temperature_c=Decimal("31.00"), humidity_pct=Decimal("10.00"), seal_intact=True)
    assert incident is not None and published == [[here.pk]]
    with django_capture_on_commit_callbacks(execute=True):
        receipt_services.storage_incident_close(incident=incident, reason="re-inspected")
    assert published == [[here.pk], [here.pk]]


def test_a_broker_that_is_down_never_fails_the_receipt_change(
        world: EsgWorld, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any) -> None:
    def down(*args: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.esg_evaluate_receipts, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        goods = world.proven_receipt()
    assert Receipt.objects.filter(pk=goods.pk).exists()
    assert receipts_pending_esg().filter(pk=goods.pk).exists()  # what the sweep will find


def test_a_pack_change_enqueues_a_full_re_evaluation_once(
        world: EsgWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        django_capture_on_commit_callbacks: Any) -> None:
    world.proven_receipt()
    calls: list[int] = []
    monkeypatch.setattr(tasks.esg_evaluate_all, "delay", lambda: calls.append(1))
    directory = new_version(tmp_path, "us-ira", "months: 12", "months: 6")
    with django_capture_on_commit_callbacks(execute=True):
        assert [p.version for p in esg_rule_packs_sync(directory=directory)] == ["2"]
    assert calls == [1]
    with django_capture_on_commit_callbacks(execute=True):
        assert esg_rule_packs_sync(directory=directory) == []
    assert calls == [1]


def test_evaluate_all_fans_out_in_chunks_of_open_receipts(world: EsgWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    receipts = [world.proven_receipt(quantity="10.000") for _ in range(5)]
    receipt_services.receipt_split(receipt=receipts[0], quantities=["4.000", "6.000"], by=receipts[0].holder)
    published: list[list[int]] = []
    monkeypatch.setattr(tasks.esg_evaluate_receipts, "delay", lambda ids: published.append(list(ids)))
    assert tasks.esg_evaluate_all(chunk_size=2) == 3
    everything = [pk for chunk in published for pk in chunk]
    assert receipts[0].pk not in everything  # split: closed
    assert everything == sorted(everything) and len(everything) == 6 and all(len(c) <= 2 for c in published)


def test_the_sweep_republishes_only_old_enough_pending_work(world: EsgWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    done = world.proven_receipt()
    pending = world.proven_receipt()
    esg_evaluate(receipt_ids=[done.pk])
    published: list[list[int]] = []
    monkeypatch.setattr(tasks.esg_evaluate_receipts, "delay", lambda ids: published.append(list(ids)))
    assert tasks.pending_work_sweep() == {"receipts": 0, "esg_tasks": 0, "stock_statements": 0, "rescreens": 0}  # too young
    Receipt.objects.filter(pk=pending.pk).update(issued_at=timezone.now() - timedelta(minutes=5))
    assert tasks.pending_work_sweep()["receipts"] == 1
    assert published == [[pending.pk]]


def test_the_console_lists_explains_and_re_evaluates(world: EsgWorld) -> None:
    goods = world.proven_receipt(footprint="130.5")
    esg_evaluate(receipt_ids=[goods.pk])
    console = officer_client()
    url = reverse("admin:compliance_esgevaluation_changelist")
    page = console.get(url + "?outcome__exact=fail&current=yes").content.decode()
    assert goods.number in page and "lc-carbon-intensity" in page
    assert console.get(url + "?outcome__exact=pass&rule_pack__pack_id=low-carbon").content.decode().count(
        goods.number) == 0
    lc = EsgEvaluation.objects.get(receipt=goods, rule_pack__pack_id="low-carbon")
    detail = console.get(reverse("admin:compliance_esgevaluation_change", args=[lc.pk])).content.decode()
    assert "130.5 kgCO2e/kg" in detail and "&lt;= 119.9 kgCO2e/kg for Ga" in detail
    assert 'name="_save"' not in detail  # read-only

    world.attest(goods.lot, "carbon_footprint", world_footprint(world, goods, "11.0"))
    response = console.post(url, {"action": "reevaluate", "_selected_action": [str(lc.pk)]}, follow=True)
    assert "1 receipts re-evaluated" in response.content.decode()
    lc.refresh_from_db()
    assert lc.outcome == "pass" and lc.label == "LC"


def world_footprint(world: EsgWorld, receipt: Receipt, pcf: str) -> dict[str, Any]:
    from tests.factories.compliance import footprint_document

    return footprint_document(receipt.lot, world.producer, pcf=pcf, created_days_ago=1)
