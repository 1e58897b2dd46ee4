"""A real Celery worker on Redis evaluates receipts when they are issued and when a pack changes; running
the task again changes nothing; and after the broker loses its queue the pending-work sweep re-publishes
from the database and the work completes exactly once.

The loss is simulated by deleting this test run's queue (tests.conftest.TEST_QUEUE) rather than by FLUSHDB:
other test runs share the Redis database, and a FLUSHDB would lose their queues too. For messages that
were published and not yet taken it is the same loss."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django.apps import apps
from django.db import connection
from django.utils import timezone

from compliance import tasks
from compliance.models import EsgEvaluation, EsgRulePack, Flag, FlagKind
from compliance.rulepack_loader import RULEPACK_DIR
from compliance.selectors import receipts_pending_esg, receipts_with_label
from compliance.services import esg_rule_packs_sync
from receipts import services as receipt_services
from receipts.canonical import utc_stamp
from receipts.models import Receipt, StockGap, StockStatement
from tests.conftest import TEST_QUEUE, _redis_url, start_worker, stop_worker, wait_for
from tests.factories.compliance import EsgWorld
from tests.factories.receipts import Signer

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def active_packs() -> int:
    esg_rule_packs_sync(reevaluate=False)  # a flushed test database is re-synced by post_migrate; be sure
    return EsgRulePack.objects.filter(active=True).count()


def evaluated(receipt: Receipt, count: int) -> bool:
    return EsgEvaluation.objects.filter(receipt=receipt, rule_pack__active=True).count() == count


def snapshot(receipts: list[Receipt]) -> tuple[Any, ...]:
    """Results, flags and audit events of these receipts."""
    events = apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.filter(receipt__in=receipts)
    return (tuple(EsgEvaluation.objects.filter(receipt__in=receipts).order_by("pk")
                  .values_list("pk", "outcome", "label", "result_hash", "evaluated_at")),
            tuple(Flag.objects.filter(receipt__in=receipts).order_by("pk").values_list("pk", "subject_key")),
            tuple(events.order_by("pgh_id").values_list("pgh_id", "pgh_label")))


def test_issuing_a_receipt_has_the_worker_evaluate_it_and_a_rerun_changes_nothing(celery_worker: Any) -> None:
    packs = active_packs()
    world = EsgWorld()
    green = world.proven_receipt(footprint="12.4")
    unsourced = world.proven_receipt(smelter=None)

    wait_for(lambda: evaluated(green, packs) and evaluated(unsourced, packs), timeout=60)
    assert receipts_with_label("LC").filter(pk=green.pk).exists()
    assert not receipts_with_label("LC").filter(pk=unsourced.pk).exists()
    assert set(Flag.objects.filter(kind=FlagKind.ESG_FAILURE).values_list("subject_key", flat=True)) == {
        f"esg:{unsourced.number}:base:1", f"esg:{unsourced.number}:eu-market:2"}
    before = snapshot([green, unsourced])
    assert [label for _, label in before[2]] == ["insert"] * (2 * packs)

    for _ in range(2):
        tasks.esg_evaluate_receipts.delay([green.pk, unsourced.pk])
    # The worker (concurrency 1, prefetch 1) takes one task at a time, in order: once a receipt issued after
    # the two reruns has been evaluated, the reruns have run.
    marker = world.proven_receipt(quantity="1.000")
    wait_for(lambda: evaluated(marker, packs), timeout=60)
    assert snapshot([green, unsourced]) == before


def test_a_pack_change_has_the_worker_re_evaluate_every_open_receipt(celery_worker: Any, tmp_path: Path) -> None:
    packs = active_packs()
    world = EsgWorld()
    goods = [world.proven_receipt(quantity="10.000") for _ in range(3)]
    wait_for(lambda: all(evaluated(r, packs) for r in goods), timeout=60)
    assert all(receipts_with_label("LC").filter(pk=r.pk).exists() for r in goods)

    directory = tmp_path / "packs"
    shutil.copytree(RULEPACK_DIR, directory)
    pack = directory / "low-carbon.yaml"
    text = pack.read_text(encoding="utf-8")
    pack.write_text(text.replace("Ga: 119.9", "Ga: 10.0").replace("version: 1", "version: 2"), encoding="utf-8")
    [v2] = esg_rule_packs_sync(directory=directory)  # enqueues esg_evaluate_all on commit

    wait_for(lambda: EsgEvaluation.objects.filter(rule_pack=v2).count() == 3, timeout=60)
    assert set(EsgEvaluation.objects.filter(rule_pack=v2).values_list("outcome", flat=True)) == {"fail"}
    assert not receipts_with_label("LC").exists()  # 12.4 > 10.0 under version 2
    assert EsgEvaluation.objects.filter(rule_pack__pack_id="low-carbon").count() == 6  # version 1's kept


def statement(world: EsgWorld, signer: Signer, rows: list[tuple[str, str]]) -> StockStatement:
    document = {"type": "stock_statement", "warehouse": world.warehouse.code, "asOf": utc_stamp(timezone.now()),
                "lots": [{"lot": ref, "quantity": kg} for ref, kg in rows]}
    return receipt_services.stock_statement_submit(warehouse=world.warehouse, by=world.operator, document=document,
                                                   signature=signer.sign(document))


def test_after_the_broker_loses_its_queue_the_sweep_recovers_the_work_exactly_once(transactional_db: None) -> None:
    packs = active_packs()
    broker = redis.Redis.from_url(_redis_url())
    broker.delete(TEST_QUEUE)
    world = EsgWorld()
    goods = world.proven_receipt(quantity="40.000", mass="40.000")
    short = world.proven_receipt(quantity="100.000", mass="100.000")
    submitted = statement(world, Signer(world.operator), [(goods.lot.reference, "40.000"),
                                                          (short.lot.reference, "60.000")])
    assert broker.llen(TEST_QUEUE) >= 3  # the two evaluations and the reconciliation were published...
    broker.delete(TEST_QUEUE)  # ...and the broker lost them

    worker: subprocess.Popen[bytes] = start_worker(connection.settings_dict["NAME"])
    try:
        time.sleep(2)
        assert receipts_pending_esg().filter(pk__in=[goods.pk, short.pk]).count() == 2  # nothing ran
        assert StockStatement.objects.get(pk=submitted.pk).reconciled_at is None

        assert tasks.pending_work_sweep(min_age_seconds=3600) == {"receipts": 0, "esg_tasks": 0,
                                                                 "stock_statements": 0, "rescreens": 0}  # too young
        swept = tasks.pending_work_sweep(min_age_seconds=0)
        assert swept == {"receipts": 2, "esg_tasks": 1, "stock_statements": 1, "rescreens": 0}

        wait_for(lambda: evaluated(goods, packs) and evaluated(short, packs), timeout=60)
        wait_for(lambda: StockStatement.objects.get(pk=submitted.pk).reconciled_at is not None, timeout=60)
        assert tasks.pending_work_sweep(min_age_seconds=0) == {"receipts": 0, "esg_tasks": 0,
                                                              "stock_statements": 0, "rescreens": 0}
        # Exactly once: one result per receipt and active pack version, each inserted once and never rewritten;
        # one gap, for the short lot.
        results, _, events = snapshot([goods, short])
        assert len(results) == 2 * packs
        assert [label for _, label in events] == ["insert"] * (2 * packs)
        assert list(StockGap.objects.values_list("lot_id", "stated_kg")) == [(short.lot_id, 60)]
        assert receipts_with_label("LC").filter(pk__in=[goods.pk, short.pk]).count() == 2
    finally:
        stop_worker(worker)
