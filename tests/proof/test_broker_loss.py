"""Proof 5, broker loss (issue 8): Redis dies and comes back EMPTY (SIGKILL, no persistence) while work is
pending, with a real worker and a real beat attached to it. The database is the source of truth:

- nothing the database considers done is lost or done twice: statements reconciled, ESG results and reference
  prices stored before the loss are unchanged after it, including a reconciliation that had committed but
  was not yet acknowledged when the broker died;
- pending work is re-published from the database: the reconciliations and ESG evaluations the queue lost
  come back through `compliance.tasks.pending_work_sweep` (beat), and pricing resumes with the next tick
  (each window idempotent); every one completes exactly once.

Beat runs the sweep, the pricing tick and the candles fold every 2 s (tests/proof/worker_settings.py; the
shipped schedule runs the sweep every 120 s for work older than 60 s, the tick every 60 s), so recovery is
measured in seconds; with the shipped schedule the same recovery takes up to ~3 minutes.

CI: one broker loss. `make proof` (the `proof` mark): five losses in a row with more work pending each time,
and three connection drops with the data kept (kombu hands in-flight messages back: each runs twice, stores
once). Figures go to var/proof (tests/proof/record.py). Two regression tests keep what a broker outage or loss
once broke: a statement submitted while the broker is down, a members' rescreen lost with the queue (the list
keeps `rescreen_due` until it ran; the sweep re-publishes it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from compliance import tasks as compliance_tasks
from compliance.models import EsgEvaluation, Flag, FlagKind
from compliance.screening import load_list_csv
from compliance.selectors import receipts_pending_esg
from compliance.services import SCREENING_THRESHOLD, screening_list_load, screening_names
from receipts.canonical import utc_stamp
from receipts.models import StockGap, StockStatement
from receipts.tasks import stock_statement_reconcile_task
from tests.conftest import ROOT, TEST_QUEUE, MemberClient, stop_worker, wait_for
from tests.factories.compliance import EsgWorld
from tests.factories.members import MemberFactory, UserFactory, token_for
from tests.factories.receipts import ReceiptWorld, Signer
from tests.proof.record import record
from tests.proof.test_worker_faults import (
    Pricing,
    PrivateRedis,
    Statement,
    WorkerLog,
    active_packs,
    launch_worker,
    paused_pid,
    plan_pause,
    private_redis_server,
    publish,
    queue_idle,
    worker_env,
)
from trading.pricing_models import ReferencePrice
from trading.tasks import reference_prices_compute

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DEMO_LIST = ROOT / "compliance" / "data" / "screening_demo.csv"  # fictional parties (DEMO data)
BEAT_EVERY_S = 2
SWEEP_MIN_AGE_S = 2


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def beat(private_redis: PrivateRedis, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery beat` on the private Redis with the short schedule of tests/proof/worker_settings.py."""
    env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
           **worker_env(private_redis, INGOT_PROOF_BEAT_EVERY=str(BEAT_EVERY_S),
                        INGOT_PROOF_SWEEP_MIN_AGE=str(SWEEP_MIN_AGE_S),
                        INGOT_PROOF_BEAT_FILE=str(tmp_path / "celerybeat-schedule"))}
    log = open(tmp_path / "beat.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def evaluation_audit(label: str) -> int:
    return apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.filter(pgh_label=label).count()


def done_snapshot() -> dict[str, Any]:
    """What the database considers done: it must read the same after the broker loss and the recovery."""
    statements = StockStatement.objects.filter(reconciled_at__isnull=False)
    return {
        "statements": sorted(statements.values_list("pk", "reconciled_at", "gaps")),
        "gaps": sorted(StockGap.objects.filter(statement__in=statements).values_list("pk", "statement_id", "lot_id",
                                                                                      "stated_kg", "receipted_kg")),
        "evaluations": sorted(EsgEvaluation.objects.values_list("pk", "receipt_id", "rule_pack_id", "result_hash",
                                                                "evaluated_at")),
        "prices": sorted(ReferencePrice.objects.values_list("pk", "instrument_id", "window_end", "value")),
    }


def still_same(before: dict[str, Any]) -> dict[str, Any]:
    """The rows of `before`, as they read now (rows added since are ignored; a changed or lost one shows)."""
    now = done_snapshot()
    return {key: [row for row in now[key] if row[0] in {old[0] for old in rows}] for key, rows in before.items()}


@dataclass
class Round:
    loss_at: float = 0.0
    recovered_in: float = 0.0
    pricing_resumed_in: float = 0.0
    queued_lost: int = 0
    statements: int = 0
    receipts: int = 0
    swept_receipts: int = 0
    swept_statements: int = 0


def one_loss(server: PrivateRedis, log: WorkerLog, hook_dir: Path, packs: int, *, statements: int,
             receipts: int) -> Round:
    """Two reconciliations in flight (one committed but unacknowledged, one paused before its body) hold both
    worker slots while new statements and receipts publish their tasks to the queue; then the broker dies
    and restarts empty, and the pauses end."""
    client = server.client()
    in_flight = [Statement.make(), Statement.make()]
    plans = [(str(uuid.uuid4()), "postrun"), (str(uuid.uuid4()), "prerun")]
    markers = [plan_pause(hook_dir, task_id, phase, 120) for task_id, phase in plans]
    for made, (task_id, _) in zip(in_flight, plans, strict=True):
        publish(stock_statement_reconcile_task, (made.statement.pk,), task_id=task_id)
    for marker in markers:
        paused_pid(marker)
    assert in_flight[0].done_once() and StockStatement.objects.get(pk=in_flight[1].statement.pk).reconciled_at is None

    before = done_snapshot()  # includes the committed, unacknowledged reconciliation
    world = EsgWorld()
    queued_statements = [Statement.make(published=True) for _ in range(statements)]
    queued_receipts = [world.proven_receipt(quantity="10.000").pk for _ in range(receipts)]
    queued = client.llen(TEST_QUEUE)
    assert queued >= statements + 1, queued  # their tasks wait in Redis behind the two paused ones
    assert all(not s.done_once() for s in queued_statements)

    mark = len(log.text())
    server.lose_data()  # SIGKILL, and a fresh empty server on the same port
    loss_at = time.monotonic()
    for marker in markers:
        marker.with_name(marker.name.replace(".paused", ".release")).touch()

    pending = [*in_flight, *queued_statements]
    resumed: list[float] = []

    def recovered() -> bool:
        # Pricing resumes when a beat tick, after the loss, has had its window priced (stored, or found
        # stored: a window is priced once, so within a minute the row may already be there).
        if not resumed and re.search(r"reference_prices_compute\[[^\]]+\] succeeded", log.text()[mark:]):
            resumed.append(time.monotonic() - loss_at)
        return all(s.done_once() for s in pending) and not receipts_pending_esg().exists() and bool(resumed)

    wait_for(recovered, timeout=120, interval=0.2)
    recovered_in = time.monotonic() - loss_at
    wait_for(lambda: queue_idle(server), timeout=60, interval=0.3)
    swept = [tuple(int(n) for n in found) for found in re.findall(
        r"pending-work sweep re-published (\d+) receipt\(s\) in \d+ task\(s\) and (\d+) stock statement",
        log.text()[mark:])]

    assert still_same(before) == before  # nothing done before the loss was redone, changed or lost
    assert all(s.done_once() for s in pending)  # two gap rows each, never four
    assert EsgEvaluation.objects.filter(receipt_id__in=queued_receipts).count() == packs * receipts
    return Round(loss_at, recovered_in, resumed[0], queued, statements + 2, receipts,
                 sum(r for r, _ in swept), sum(st for _, st in swept))


def run_broker_losses(server: PrivateRedis, tmp_path: Path, losses: int, *, statements: int,
                      receipts: int) -> dict[str, Any]:
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    packs = active_packs()
    pricing = Pricing().setup()
    log = WorkerLog()
    worker = launch_worker(server, concurrency=2, hook_dir=hook_dir)
    rounds: list[Round] = []
    try:
        # Done before any loss: reconciled, evaluated, priced through the ordinary paths.
        warm = [Statement.make(published=True) for _ in range(2)]
        world = EsgWorld()
        evaluated = [world.proven_receipt(quantity="10.000").pk for _ in range(2)]
        wait_for(lambda: all(s.done_once() for s in warm) and not receipts_pending_esg().exists()
                 and ReferencePrice.objects.exists(), timeout=90, interval=0.2)
        assert EsgEvaluation.objects.filter(receipt_id__in=evaluated).count() == 2 * packs
        first = done_snapshot()
        for _ in range(losses):
            rounds.append(one_loss(server, log, hook_dir, packs, statements=statements, receipts=receipts))
            print(f"broker loss: {rounds[-1].queued_lost} queued messages lost; recovered in "
                  f"{rounds[-1].recovered_in:.1f} s, pricing resumed in {rounds[-1].pricing_resumed_in:.1f} s")
        assert still_same(first) == first
    finally:
        stop_worker(worker.proc)

    # Exactly once, all of it: no evaluation rewritten, nothing left for the sweep, no task failed.
    assert evaluation_audit("insert") == EsgEvaluation.objects.count()
    assert evaluation_audit("update") == 0
    assert compliance_tasks.pending_work_sweep(min_age_seconds=0) == {"receipts": 0, "esg_tasks": 0,
                                                                     "stock_statements": 0, "rescreens": 0}
    assert StockGap.objects.count() == 2 * StockStatement.objects.count()
    text = log.text()
    failed = text.count("] raised unexpected")
    assert failed == 0, failed
    ends = sorted(ReferencePrice.objects.filter(instrument=pricing.a).values_list("window_end", flat=True))
    missing = sum(int((b - a) / timedelta(minutes=1)) - 1 for a, b in zip(ends, ends[1:], strict=False))
    figures = {
        "broker losses": losses,
        "queued messages lost": sum(r.queued_lost for r in rounds),
        "in flight at each loss": "2 reconciliations (1 committed not acked, 1 not started)",
        "queued at each loss": f"{statements} reconciliations, ESG of {receipts + 2 * statements} receipts, "
                               "beat's ticks",
        "re-published by the sweep": f"{sum(r.swept_statements for r in rounds)} statements, "
                                     f"{sum(r.swept_receipts for r in rounds)} receipts",
        "done before loss redone/changed": 0, "done twice": 0, "lost": 0,
        "recovery s": f"max {max(r.recovered_in for r in rounds):.1f} (beat every {BEAT_EVERY_S} s)",
        "pricing resumed s": f"max {max(r.pricing_resumed_in for r in rounds):.1f}",
        "pricing minutes with no window": missing,
    }
    return figures


def test_broker_restarted_empty_loses_nothing_done_and_the_sweep_republishes_pending_work(
        private_redis: PrivateRedis, beat: subprocess.Popen[bytes], tmp_path: Path) -> None:
    figures = run_broker_losses(private_redis, tmp_path, 1, statements=2, receipts=2)
    record("Broker loss: Redis restarted empty", runs=figures["broker losses"], failures=figures["lost"],
           figures=figures)


@pytest.mark.proof
def test_proof_five_broker_losses_in_a_row(private_redis: PrivateRedis, beat: subprocess.Popen[bytes],
                                           tmp_path: Path) -> None:
    figures = run_broker_losses(private_redis, tmp_path, 5, statements=5, receipts=10)
    record("Broker loss: Redis restarted empty", runs=figures["broker losses"], failures=figures["lost"],
           figures=figures, variant="proof")


@pytest.mark.proof
def test_proof_a_broker_connection_drop_hands_in_flight_tasks_back_and_they_still_store_once(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    """The other broker fault: Redis keeps its data but drops every client connection (a failover, a network
    blip). The worker's channel closes and kombu hands its unacknowledged messages back to the queue while
    their tasks are still running, so each in-flight task runs a second time, here concurrently (a free slot).
    Each must still store exactly once."""
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    pricing = Pricing().setup()
    made = [Statement.make() for _ in range(3)]
    client = private_redis.client()
    client.delete(TEST_QUEUE)
    log = WorkerLog()
    worker = launch_worker(private_redis, concurrency=3, hook_dir=hook_dir)
    windows, drops = [], 3
    try:
        for round_ in range(drops):
            window = pricing.window()
            reconcile_id, pricing_id = str(uuid.uuid4()), str(uuid.uuid4())
            markers = [plan_pause(hook_dir, reconcile_id, "postrun", 4), plan_pause(hook_dir, pricing_id, "prerun", 4)]
            publish(stock_statement_reconcile_task, (made[round_].statement.pk,), task_id=reconcile_id)
            publish(reference_prices_compute, (window.isoformat(), [pricing.a.pk, pricing.b.pk]), task_id=pricing_id)
            for marker in markers:
                paused_pid(marker)
            client.client_kill_filter(_type="normal")  # every client but this one
            wait_for(lambda r=reconcile_id, p=pricing_id: log.received(r) >= 2 and log.received(p) >= 2
                     and log.succeeded(p) >= 2, timeout=60, interval=0.1)
            wait_for(lambda: queue_idle(private_redis), timeout=30, interval=0.2)
            windows.append(window)
    finally:
        stop_worker(worker.proc)
    assert all(m.done_once() for m in made)
    assert all(pricing.done_once(w) for w in windows)
    assert ReferencePrice.objects.count() == 2 * drops and StockGap.objects.count() == 2 * drops
    record("Broker connection drop: in-flight tasks handed back", runs=drops, failures=0, variant="proof",
           figures={"drops": drops, "in-flight tasks run twice": 2 * drops, "stored more than once": 0,
                    "messages kombu handed back on the drops": sum(
                        int(n) for n in re.findall(r"Restoring (\d+) unacknowledged", log.text()))})


# --- what a broker loss once broke: regression tests ------------------------------------------


def test_a_statement_submitted_while_the_broker_is_down_is_accepted(private_redis: PrivateRedis) -> None:
    world = ReceiptWorld()
    held = world.receipt(quantity="10.000", mass="10.000")
    document = {"type": "stock_statement", "warehouse": world.warehouse.code,
                "asOf": utc_stamp(timezone.now()), "lots": [{"lot": held.lot.reference, "quantity": "10.000"}]}
    client = MemberClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(UserFactory(member=world.operator))}")
    private_redis.kill()  # the broker is down, nothing else is

    url, body = f"/api/v1/warehouses/{world.warehouse.code}/stock-statements", {
        "document": document, "signature": Signer(world.operator).sign(document)}
    response = client.post(url, body, key="statement-broker-down")
    assert StockStatement.objects.filter(warehouse=world.warehouse).count() == 1  # committed either way
    assert client.post(url, body, key="statement-broker-down").status_code == 201  # the replay says so
    assert response.status_code == 201, (response.status_code, response.content[:300])  # 500 today


def test_a_rescreen_lost_with_the_broker_is_republished_from_the_database(private_redis: PrivateRedis,
                                                                          tmp_path: Path) -> None:
    listed = MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE")
    # Precondition, without writing a flag: the member is a hit on the list about to be loaded.
    assert load_list_csv(DEMO_LIST).screen(listed.name, aliases=screening_names(listed.name), country="EE",
                                           threshold=SCREENING_THRESHOLD)
    client = private_redis.client()
    screening_list_load(source=DEMO_LIST)  # publishes the rescreen on commit...
    assert client.llen(TEST_QUEUE) >= 1
    private_redis.lose_data()  # ...and the broker loses it
    worker = launch_worker(private_redis)
    try:
        # What beat does every 120 s (the work is older than the sweep's minimum age by then).
        compliance_tasks.pending_work_sweep.apply_async(kwargs={"min_age_seconds": 0}, queue=TEST_QUEUE)
        wait_for(lambda: queue_idle(private_redis), timeout=30, interval=0.2)
        time.sleep(0.5)
        wait_for(lambda: queue_idle(private_redis), timeout=30, interval=0.2)
    finally:
        stop_worker(worker.proc)
    assert Flag.objects.filter(kind=FlagKind.SANCTIONS_HIT, member=listed).exists()
