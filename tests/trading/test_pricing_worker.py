"""A real Celery worker on Redis runs the pricing tasks against the test database; a worker whose pool
child is killed (-9) in the middle of a run runs the task again and stores exactly one result.

Each test's worker consumes a queue of its own (`pricing-test-<pid>`), so parallel test runs sharing
Redis database 15 never execute each other's tasks against the wrong database.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from tests.conftest import ROOT, start_worker, stop_worker, wait_for
from tests.factories.members import MemberFactory
from tests.factories.pricing import record_trade
from tests.factories.trading import instrument
from trading import pricing
from trading.models import Instrument
from trading.pricing_config import default_pricing_config
from trading.pricing_models import Candle, IndexValue, ReferencePrice
from trading.pricing_services import index_days_due, window_end_for
from trading.tasks import (
    candles_fold_all,
    index_publish_due,
    index_publish_grade,
    reference_prices_compute,
    reference_prices_tick,
)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

QUEUE = f"pricing-test-{os.getpid()}"
LOG = ROOT / "var" / f"test-worker-{os.getpid()}.log"


@pytest.fixture
def pricing_worker(transactional_db):
    started = []

    def start(**extra_env: str):
        proc = start_worker(connection.settings_dict["NAME"], queues=QUEUE, extra_env=extra_env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_worker(proc)


def _active(task_id: str) -> dict | None:
    """The running task as the worker reports it (includes the pool child's pid), or None."""
    for tasks in (celery_app.control.inspect(timeout=0.5).active() or {}).values():
        for task in tasks:
            if task["id"] == task_id:
                return task
    return None


def test_a_real_worker_prices_folds_and_publishes(pricing_worker) -> None:
    end = window_end_for(timezone.now())
    ga = instrument()
    instrument("GE-6N-CN", grade="GE-6N", reference="1750.00")
    b, s = MemberFactory(), MemberFactory()
    record_trade(ga, price="590.00", quantity="2", at=end - timedelta(hours=1), buyer=b, seller=s)
    record_trade(ga, price="600.00", quantity="1", at=end - timedelta(minutes=10), buyer=b, seller=s)
    method = default_pricing_config().index
    day = (timezone.now() + method.utc_offset).date() - timedelta(days=1)
    pricing_worker()

    reference_prices_tick.apply_async(queue=QUEUE)  # fans out to reference_prices_compute on the same queue
    candles_fold_all.apply_async(queue=QUEUE)
    index_publish_grade.apply_async((ga.grade_id, day.isoformat()), queue=QUEUE)

    rows = wait_for(lambda: list(ReferencePrice.objects.filter(window_end__gte=end).order_by("instrument__code"))
                    if ReferencePrice.objects.filter(window_end__gte=end).count() == 2 else None, timeout=45)
    ga_row, ge_row = rows
    config = default_pricing_config().metal("GA")
    vwap = pricing.decayed_vwap([(end - timedelta(hours=1), Decimal("590.00"), Decimal("2")),
                                 (end - timedelta(minutes=10), Decimal("600.00"), Decimal("1"))],
                                ga_row.window_end, config.half_life, window=config.trade_window)
    assert Decimal(ga_row.components["components"]["trades"]["value"]) == vwap
    assert ga_row.components["weights_used"] == {"trades": "0.714286", "book": "0.000000", "model": "0.285714"}
    assert ge_row.value == Decimal("1750.0000") and ge_row.components["omitted"][0]["code"] == "no_trades_in_window"
    ga.refresh_from_db()
    assert (ga.reference_price, ga.band_low, ga.band_high) == (ga_row.value, ga_row.band_low, ga_row.band_high)
    wait_for(lambda: Candle.objects.filter(instrument=ga, interval="1d").exists(), timeout=30)
    assert sum(c.trade_count for c in Candle.objects.filter(instrument=ga, interval="1m")) == 2
    index = wait_for(lambda: IndexValue.objects.filter(grade=ga.grade, day=day).first(), timeout=30)
    assert index.status == "assessed"


def test_the_beat_sweep_publishes_each_due_day_for_the_grade_and_each_of_its_regions(pricing_worker) -> None:
    cn = instrument()
    instrument("GA-6N-EU", region="EU", reference="612.00")
    method = default_pricing_config().index
    day = (timezone.now() + method.utc_offset).date() - timedelta(days=2)
    pricing_worker()

    index_publish_due.apply_async(queue=QUEUE)  # fans out to index_publish_grade on the same queue

    rows = wait_for(lambda: list(IndexValue.objects.filter(grade=cn.grade, day=day).order_by("region"))
                    if IndexValue.objects.filter(grade=cn.grade, day=day).count() == 3 else None, timeout=45)
    assert [(r.region, r.value, r.assessed_from) for r in rows] == [
        ("", Decimal("580.00"), "GA-6N-CN"), ("CN", Decimal("580.00"), "GA-6N-CN"),
        ("EU", Decimal("612.00"), "GA-6N-EU")]
    # A week's catch-up, three values a day; a second sweep queues nothing new for the days published.
    due = len(index_days_due())
    wait_for(lambda: IndexValue.objects.filter(grade=cn.grade).count() == 3 * due or None, timeout=45)
    assert index_publish_due() == 0  # run here: it counts what it queued


def test_killing_the_pool_child_mid_run_runs_the_task_again_and_stores_one_result(pricing_worker) -> None:
    end = window_end_for(timezone.now()) - timedelta(minutes=1)
    inst = instrument()
    record_trade(inst, price="600.00", at=end - timedelta(minutes=30), buyer=MemberFactory(), seller=MemberFactory())
    log_start = LOG.stat().st_size if LOG.exists() else 0
    worker = pricing_worker(DJANGO_SETTINGS_MODULE="tests.trading.pricing_worker_settings")

    sent = reference_prices_compute.apply_async((end.isoformat(), [inst.pk]), queue=QUEUE)
    running = wait_for(lambda: _active(sent.id), timeout=30)
    child = running["worker_pid"]
    assert child != worker.pid
    time.sleep(1.0)  # computed by now, sleeping in the 3 s pause before the store
    assert not ReferencePrice.objects.exists()
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()

    row = wait_for(lambda: ReferencePrice.objects.filter(instrument=inst, window_end=end).first(), timeout=40)
    redone_in = time.monotonic() - killed_at
    # Requeued at once by reject_on_worker_lost, not after the broker's 60 s visibility timeout.
    assert redone_in < 15, redone_in
    rerun = wait_for(lambda: _active(sent.id) is None, timeout=10)
    assert rerun
    time.sleep(1.0)
    assert ReferencePrice.objects.filter(instrument=inst, window_end=end).count() == 1
    assert ReferencePrice.objects.count() == 1
    assert Instrument.objects.get(pk=inst.pk).reference_price == row.value

    log = LOG.read_bytes()[log_start:].decode(errors="replace")
    assert "signal 9" in log  # the WorkerLostError
    assert len(re.findall(rf"reference_prices_compute\[{sent.id}\] received", log)) == 2
    assert re.search(rf"reference_prices_compute\[{sent.id}\] succeeded", log)
