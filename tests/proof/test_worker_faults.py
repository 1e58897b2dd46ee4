"""Proof 4, worker faults (issue 8): a real Celery worker on a Redis server of the test's own.

1. kill -9 of the POOL CHILD in the middle of a pricing, stock-reconciliation or ESG task: the parent sees
   the child die (WorkerLostError) and, with acks_late + reject_on_worker_lost, puts the message back at
   once; the task runs again and every task identity ends with exactly one stored result. Kills land in
   every phase that matters:
   - partial store: a reference-price run has committed instrument A and waits for instrument B's row
     lock (held by the test) when it is killed;
   - mid-transaction: a reconciliation has locked its statement and is inserting its gap rows (the second
     waits behind an uncommitted row of the test's on the unique index) when it is killed: the orphaned
     transaction rolls back and the rerun stores the two gaps once;
   - commit in doubt: a reconciliation has sent COMMIT, which waits on a deferred foreign-key check (the
     test holds the lot's row lock) when it is killed: the server completes the commit after the client is
     gone, and the rerun must find the statement reconciled and add nothing;
   - committed, not acknowledged: the body returned and committed, the worker has not acked (a pause in
     task_postrun): the redelivered run must find the work done and store nothing twice;
   - before the body (a pause in task_prerun).
   Reference prices (trading), stock reconciliation (receipts) and ESG evaluation (compliance) are the
   tasks that write results others rely on; "exactly once" is checked on the rows they store (one reference
   price per instrument and window, two gap rows per statement, one result per receipt and active pack
   with no audit "update"), not on log lines: a run killed after its commit logged "succeeded" too.
2. kill -9 of the WHOLE worker (parent and children, as the OOM killer or a lost host would) with tasks
   unacknowledged, then a fresh worker: every unacknowledged task runs again within 60 s of the kill, and
   the tasks still queued run too. This is bounded by the Redis transport's visibility_timeout and how often
   a live worker sweeps the unacked index (restore_visible); the values live in config/settings/base.py.

The CI variant kills 3 pool children and restarts the whole worker once; `make proof` (the `proof` mark)
kills 20 pool children and restarts the whole worker 3 times. Figures go to var/proof (tests/proof/record.py).

Helpers here (a private Redis server, the Celery app pointed at it, the worker's children, row locks) are
reused by tests/proof/test_broker_loss.py.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
import redis
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from compliance.models import EsgEvaluation, EsgRulePack
from compliance.services import esg_rule_packs_sync
from compliance.tasks import esg_evaluate_receipts
from config.celery import app as celery_app
from receipts import services as receipt_services
from receipts.canonical import utc_stamp
from receipts.models import StockGap, StockStatement
from receipts.tasks import stock_statement_reconcile_task
from tests.conftest import ROOT, TEST_QUEUE, start_worker, stop_worker, wait_for
from tests.factories.compliance import EsgWorld
from tests.factories.members import MemberFactory
from tests.factories.pricing import record_trade
from tests.factories.receipts import ReceiptWorld, Signer
from tests.factories.trading import instrument
from tests.proof.record import record
from trading.pricing_models import ReferencePrice
from trading.pricing_services import window_end_for
from trading.tasks import reference_prices_compute

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

WORKER_SETTINGS = "tests.proof.worker_settings"
LOG = ROOT / "var" / f"test-worker-{os.getpid()}.log"  # where tests.conftest.start_worker writes
RERUN_BOUND_S = 60.0  # issue 8: every unacknowledged task runs again within 60 s of the whole worker's death


# --- a Redis server of our own ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """`redis-server` on a free loopback port, no persistence: SIGKILL and a fresh start lose every key,
    which is exactly a broker restarted with its data lost. Never the shared server on 6379."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=log, stderr=subprocess.STDOUT)
        client = self.client()
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def lose_data(self) -> None:
        """SIGKILL, then a fresh, empty server on the same port."""
        self.kill()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


def _reset_broker_pools() -> None:
    pool = celery_app._pool
    if pool is not None:
        with suppress(Exception):  # a killed server's connections may not close cleanly
            pool.force_close_all()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    # kombu keeps a process-wide registry of producer pools keyed by connection; one of them still points at
    # the pool just closed, and a later .delay() (another test, back on the shared broker) would acquire
    # from it: "Acquire on closed pool". Empty the registry too.
    from kombu import pools

    with suppress(Exception):
        pools.reset()


@contextmanager
def celery_app_on(url: str) -> Iterator[None]:
    """Point this process's Celery app (publishing, control/inspect) at `url`, and back afterwards."""
    saved = celery_app.conf.broker_url
    _reset_broker_pools()
    celery_app.conf.broker_url = url
    try:
        yield
    finally:
        _reset_broker_pools()
        celery_app.conf.broker_url = saved


@contextmanager
def private_redis_server(workdir: Path) -> Iterator[PrivateRedis]:
    """A PrivateRedis, with this process's Celery app pointed at it for the duration."""
    server = PrivateRedis(workdir)
    server.start()
    try:
        with celery_app_on(server.url):
            yield server
    finally:
        server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis_server(tmp_path / "redis") as server:
        yield server


# --- the worker ----------------------------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    started_in: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_everything(self) -> list[int]:
        """SIGKILL the parent and every pool child at once (no warm shutdown, nothing restored)."""
        victims = [self.pid, *self.children()]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        return victims


def worker_env(server: PrivateRedis, hook_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {"DJANGO_SETTINGS_MODULE": WORKER_SETTINGS, "REDIS_URL": server.url, "INGOT_PROOF_QUEUE": TEST_QUEUE,
           **extra}
    if hook_dir is not None:
        env["INGOT_PROOF_HOOK_DIR"] = str(hook_dir)
    return env


def launch_worker(server: PrivateRedis, *, concurrency: int = 1, hook_dir: Path | None = None,
                  **extra: str) -> Worker:
    started = time.monotonic()
    proc = start_worker(connection.settings_dict["NAME"], concurrency=concurrency,
                        extra_env=worker_env(server, hook_dir, **extra))
    return Worker(proc, time.monotonic() - started)


class WorkerLog:
    """The worker log from where this test started (tests.conftest.start_worker appends to one file)."""

    def __init__(self) -> None:
        self.start = LOG.stat().st_size if LOG.exists() else 0

    def text(self) -> str:
        return LOG.read_bytes()[self.start:].decode(errors="replace") if LOG.exists() else ""

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))

    def received(self, task_id: str) -> int:
        return self.count(rf"\[{task_id}\] received")

    def succeeded(self, task_id: str) -> int:
        return self.count(rf"\[{task_id}\] succeeded")


def queue_idle(server: PrivateRedis) -> bool:
    """Nothing queued, nothing unacknowledged, nothing running."""
    client = server.client()
    try:
        if client.llen(TEST_QUEUE) or client.zcard("unacked_index") or client.hlen("unacked"):
            return False
        active = celery_app.control.inspect(timeout=1.0).active() or {}
    except (redis.ConnectionError, OperationalError):  # a pooled connection to a server that was killed
        return False
    return all(not running for running in active.values())


def publish(task: Any, args: tuple[Any, ...], *, task_id: str | None = None) -> str:
    task_id = task_id or str(uuid.uuid4())
    task.apply_async(args, task_id=task_id, queue=TEST_QUEUE)
    return task_id


def plan_pause(hook_dir: Path, task_id: str, phase: str, seconds: float) -> Path:
    """Ask the worker (tests/proof/worker_settings.py) to pause the first run of `task_id` in `phase`."""
    (hook_dir / f"{task_id}.{phase}").write_text(str(seconds), encoding="utf-8")
    return hook_dir / f"{task_id}.{phase}.paused"


def paused_pid(marker: Path, timeout: float = 30.0) -> int:
    wait_for(marker.exists, timeout=timeout, interval=0.02)
    return int(marker.read_text(encoding="utf-8").split()[0])


# --- row locks held by the test, so a task is killed while it waits inside its transaction ---------------------


@contextmanager
def held_open(sql: str, params: list[Any]) -> Iterator[Callable[[], None]]:
    """Run `sql` in a transaction of our own and keep it open (its locks held); yields a release function
    that rolls it back."""
    db = connection.settings_dict
    lock = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"] or "127.0.0.1",
                           port=db["PORT"] or 5432, password=db["PASSWORD"] or None, autocommit=False)
    lock.execute(sql, params)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            lock.rollback()
            released = True

    try:
        yield release
    finally:
        release()
        lock.close()


def row_locked(table: str, pk: int) -> Any:
    return held_open(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [pk])  # noqa: S608 - our table names


def gap_row_pending(statement_id: int, lot_id: int) -> Any:
    """An uncommitted gap row for (statement, lot): another INSERT of that pair waits on the unique index."""
    return held_open("INSERT INTO receipts_stockgap (statement_id, lot_id, stated_kg, receipted_kg, opened_at) "
                     "VALUES (%s, %s, 0, 1, now())", [statement_id, lot_id])


def waiting_on_a_lock(statement_start: str) -> bool:
    """A backend of the test database waits on a lock in a statement starting with `statement_start`."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                       [connection.settings_dict["NAME"]])
        return any(query.lstrip().startswith(statement_start) for (query,) in cursor.fetchall())


# --- the work: pricing windows, stock statements, ESG evaluations ----------------------------------------------


def active_packs() -> int:
    esg_rule_packs_sync(reevaluate=False)  # the flushed test database may have lost the synced packs
    return EsgRulePack.objects.filter(active=True).count()


def esg_audit(label: str) -> int:
    return apps.get_model("compliance", "EsgEvaluationAuditEvent").objects.filter(pgh_label=label).count()


@dataclass
class Pricing:
    """Two instruments; each job prices one past window of both (reference_prices_compute(window, [a, b]))."""

    a: Any = None
    b: Any = None
    next_minute: int = 90

    def setup(self) -> Pricing:
        self.a = instrument()
        self.b = instrument("GE-6N-CN", grade="GE-6N", reference="1750.00")
        end = window_end_for(timezone.now())
        record_trade(self.a, price="600.00", at=end - timedelta(hours=2), buyer=MemberFactory(), seller=MemberFactory())
        return self

    def window(self) -> Any:
        self.next_minute -= 1
        return window_end_for(timezone.now()) - timedelta(minutes=self.next_minute)

    def done_once(self, window: Any) -> bool:
        rows = sorted(ReferencePrice.objects.filter(window_end=window).values_list("instrument_id", flat=True))
        return rows == sorted([self.a.pk, self.b.pk])


@dataclass
class Statement:
    """A warehouse statement stating 60 of a 100 kg lot and nothing of a 5 kg one: exactly two gaps."""

    statement: StockStatement
    lots: list[int]

    @classmethod
    def make(cls, *, published: bool = False) -> Statement:
        """published: the submission publishes its reconciliation as in production; else the test does."""
        world = ReceiptWorld()
        short = world.receipt(quantity="100.000", mass="100.000")
        unstated = world.receipt(quantity="5.000", mass="5.000")
        document = {"type": "stock_statement", "warehouse": world.warehouse.code, "asOf": utc_stamp(timezone.now()),
                    "lots": [{"lot": short.lot.reference, "quantity": "60.000"}]}
        with ExitStack() as stack:
            if not published:
                stack.enter_context(mock.patch("receipts.services._enqueue_reconcile"))
            submitted = receipt_services.stock_statement_submit(warehouse=world.warehouse, by=world.operator,
                                                                document=document,
                                                                signature=Signer(world.operator).sign(document))
        return cls(submitted, sorted([short.lot_id, unstated.lot_id]))

    def done_once(self) -> bool:
        row = StockStatement.objects.get(pk=self.statement.pk)
        gaps = sorted(StockGap.objects.filter(statement=row).values_list("lot_id", flat=True))
        return row.reconciled_at is not None and gaps == self.lots and len(row.gaps or []) == 2


def esg_done_once(receipt_ids: list[int], packs: int) -> bool:
    return EsgEvaluation.objects.filter(receipt_id__in=receipt_ids, rule_pack__active=True).count() == \
        packs * len(receipt_ids)


# --- 1. kill -9 of the pool child -------------------------------------------------------------------------------

# (family, phase). The first three are the CI variant: a partial store, a kill inside a transaction with
# rows written, and a kill after the commit but before the acknowledgement.
KILL_PLAN = [
    ("pricing", "partial-store"),
    ("reconcile", "mid-transaction"),
    ("reconcile", "committed-not-acked"),
    ("reconcile", "commit-in-doubt"),
    ("pricing", "committed-not-acked"),
    ("esg", "committed-not-acked"),
    ("esg", "before-body"),
    ("pricing", "before-body"),
]
ESG_RECEIPTS = 2  # receipts per ESG task
PAUSE_S = 2.5  # how long a planned pause lasts; the kill lands at a random moment inside it


@dataclass
class Kill:
    family: str
    phase: str
    task_id: str
    done_once: Callable[[], bool]
    delay: float = 0.0
    redone_in: float = 0.0


@dataclass
class ChildKills:
    server: PrivateRedis
    hook_dir: Path
    rng: random.Random
    packs: int
    pricing: Pricing
    statements: list[Statement] = field(default_factory=list)
    esg_receipts: list[list[int]] = field(default_factory=list)
    worker: Worker | None = None
    kills: list[Kill] = field(default_factory=list)

    def kill(self, family: str, phase: str, log: WorkerLog) -> Kill:
        assert self.worker is not None
        task_id = str(uuid.uuid4())
        release: Callable[[], None] = lambda: None  # noqa: E731
        with ExitStack() as stack:
            if family == "pricing":
                window = self.pricing.window()
                job = Kill(family, phase, task_id, lambda: self.pricing.done_once(window))
                args: tuple[Any, ...] = (window.isoformat(), [self.pricing.a.pk, self.pricing.b.pk])
                task = reference_prices_compute
            elif family == "reconcile":
                made = self.statements.pop()
                job = Kill(family, phase, task_id, made.done_once)
                args, task = (made.statement.pk,), stock_statement_reconcile_task
            else:
                ids = self.esg_receipts.pop()
                job = Kill(family, phase, task_id, lambda: esg_done_once(ids, self.packs))
                args, task = (ids,), esg_evaluate_receipts

            if phase == "partial-store":  # instrument A stored and committed, B waits for its row lock
                release = stack.enter_context(row_locked("trading_instrument", self.pricing.b.pk))
                publish(task, args, task_id=task_id)
                wait_for(lambda: ReferencePrice.objects.filter(instrument=self.pricing.a,
                                                               window_end=window).exists()
                         and waiting_on_a_lock('SELECT "trading_instrument"'), timeout=30, interval=0.05)
                assert not ReferencePrice.objects.filter(instrument=self.pricing.b, window_end=window).exists()
                [child] = self.worker.children()
                job.delay = self.rng.uniform(0.0, 0.5)
            elif phase == "mid-transaction":
                # Statement row locked, stock read, gap INSERT under way (the second gap's row waits on the
                # unique index behind an uncommitted row of the test's): rows written, nothing committed.
                release = stack.enter_context(gap_row_pending(made.statement.pk, made.lots[-1]))
                publish(task, args, task_id=task_id)
                wait_for(lambda: waiting_on_a_lock('INSERT INTO "receipts_stockgap"'), timeout=30, interval=0.05)
                assert StockStatement.objects.get(pk=made.statement.pk).reconciled_at is None
                [child] = self.worker.children()
                job.delay = self.rng.uniform(0.0, 0.5)
            elif phase == "commit-in-doubt":
                # Everything written and COMMIT sent; Django's foreign keys are DEFERRABLE INITIALLY DEFERRED,
                # so the commit checks the gap's lot, whose row lock the test holds. Killed there, the worker
                # never learns whether it committed; the server finishes the commit once the lock goes.
                release = stack.enter_context(row_locked("receipts_lot", made.lots[-1]))
                publish(task, args, task_id=task_id)
                wait_for(lambda: waiting_on_a_lock("COMMIT"), timeout=30, interval=0.05)
                assert StockStatement.objects.get(pk=made.statement.pk).reconciled_at is None
                [child] = self.worker.children()
                job.delay = self.rng.uniform(0.0, 0.5)
            else:
                hook = {"before-body": "prerun", "committed-not-acked": "postrun"}[phase]
                marker = plan_pause(self.hook_dir, task_id, hook, PAUSE_S)
                publish(task, args, task_id=task_id)
                child = paused_pid(marker)
                if phase == "committed-not-acked":
                    assert job.done_once()  # the work is in the database; the message is not acknowledged
                job.delay = self.rng.uniform(0.0, PAUSE_S * 0.8)
            time.sleep(job.delay)
            assert child in self.worker.children()
            os.kill(child, signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), timezone.now()
            # The dead child's backend gets the lock and then finds its client gone: mid-statement it rolls
            # back; in COMMIT it commits.
            release()
            wait_for(lambda: job.done_once() and log.succeeded(task_id) >= 1 and log.received(task_id) >= 2,
                     timeout=60, interval=0.05)
            job.redone_in = time.monotonic() - killed_at
            if family == "reconcile" and phase in ("mid-transaction", "commit-in-doubt"):
                reconciled_at = StockStatement.objects.get(pk=made.statement.pk).reconciled_at
                # Rolled back and done by the rerun / committed by the killed run and not redone by the rerun.
                assert (reconciled_at > killed_wall) == (phase == "mid-transaction"), (phase, reconciled_at)
        self.kills.append(job)
        return job


def run_child_kills(server: PrivateRedis, tmp_path: Path, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    plan = [KILL_PLAN[i % len(KILL_PLAN)] for i in range(kills)]
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    packs = active_packs()
    run = ChildKills(server, hook_dir, rng, packs, Pricing().setup())
    run.statements = [Statement.make() for family, _ in plan if family == "reconcile"]
    esg_world = EsgWorld()
    run.esg_receipts = [[esg_world.proven_receipt(quantity="10.000").pk for _ in range(ESG_RECEIPTS)]
                        for family, _ in plan if family == "esg"]
    server.client().delete(TEST_QUEUE)  # what setting up the data published: the test publishes itself
    evaluations_before = EsgEvaluation.objects.count()

    log = WorkerLog()
    run.worker = launch_worker(server, hook_dir=hook_dir)
    try:
        for family, phase in plan:
            run.kill(family, phase, log)
        wait_for(lambda: queue_idle(server), timeout=30, interval=0.2)
        time.sleep(0.5)
    finally:
        stop_worker(run.worker.proc)

    # Every task identity: exactly one stored result (the unique constraints would raise on a second insert;
    # the counts show nothing was stored twice and nothing is missing).
    failures = [k for k in run.kills if not k.done_once()]
    pricing_windows = sum(1 for k in run.kills if k.family == "pricing")
    assert ReferencePrice.objects.count() == 2 * pricing_windows
    assert StockGap.objects.count() == 2 * sum(1 for k in run.kills if k.family == "reconcile")
    assert EsgEvaluation.objects.count() - evaluations_before == packs * ESG_RECEIPTS * \
        sum(1 for k in run.kills if k.family == "esg")
    assert esg_audit("update") == 0
    text = log.text()
    lost = len(re.findall(r"exited with 'signal 9 \(SIGKILL\)'", text))
    runs = {k.task_id: log.received(k.task_id) for k in run.kills}
    figures = {
        "kills": len(run.kills), "seed": seed,
        "phases": {f"{f}/{p}": sum(1 for k in run.kills if (k.family, k.phase) == (f, p)) for f, p in KILL_PLAN
                   if any((k.family, k.phase) == (f, p) for k in run.kills)},
        "tasks": len(run.kills), "completed exactly once": len(run.kills) - len(failures),
        "duplicate results": 0, "lost": len(failures),
        "runs per task": f"{min(runs.values())}-{max(runs.values())}",
        "WorkerLostError": lost,
        "rerun after kill s": f"median {sorted(k.redone_in for k in run.kills)[len(run.kills) // 2]:.2f}, "
                              f"max {max(k.redone_in for k in run.kills):.2f}",
    }
    assert not failures, failures
    assert lost == len(run.kills), lost
    assert all(count >= 2 for count in runs.values()), runs
    return figures


def test_kill_9_of_the_pool_child_mid_task_runs_each_task_again_and_stores_it_once(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    figures = run_child_kills(private_redis, tmp_path, 3, seed)
    record("Worker faults: pool child kill -9", runs=figures["kills"], failures=figures["lost"], figures=figures)


@pytest.mark.proof
def test_proof_20_kills_of_the_pool_child(private_redis: PrivateRedis, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    figures = run_child_kills(private_redis, tmp_path, 20, seed)
    record("Worker faults: pool child kill -9", runs=figures["kills"], failures=figures["lost"], figures=figures,
           variant="proof")


# --- 2. kill -9 of the whole worker, then a fresh one -------------------------------------------------------------


def transport_options() -> dict[str, Any]:
    return dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)


def run_whole_worker_restarts(server: PrivateRedis, tmp_path: Path, restarts: int) -> dict[str, Any]:
    """Each round: two tasks unacknowledged in the worker (a reconciliation that has committed but not been
    acked, a pricing run not started yet) and two more waiting in the queue; SIGKILL to the parent and both
    children; a new worker at once. Measures from the kill until each unacknowledged task is received again."""
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    packs = active_packs()
    pricing = Pricing().setup()
    statements = [Statement.make() for _ in range(restarts)]
    esg_world = EsgWorld()
    esg_batches = [[esg_world.proven_receipt(quantity="10.000").pk for _ in range(ESG_RECEIPTS)]
                   for _ in range(restarts)]
    client = server.client()
    client.delete(TEST_QUEUE)

    log = WorkerLog()
    worker = launch_worker(server, concurrency=2, hook_dir=hook_dir)
    rounds: list[dict[str, float]] = []
    checks: list[Callable[[], bool]] = []
    try:
        for _ in range(restarts):
            made = statements.pop()
            reconcile_id, pricing_id = str(uuid.uuid4()), str(uuid.uuid4())
            window, queued_window, batch = pricing.window(), pricing.window(), esg_batches.pop()
            marks = [plan_pause(hook_dir, reconcile_id, "postrun", 600),
                     plan_pause(hook_dir, pricing_id, "prerun", 600)]
            publish(stock_statement_reconcile_task, (made.statement.pk,), task_id=reconcile_id)
            publish(reference_prices_compute, (window.isoformat(), [pricing.a.pk, pricing.b.pk]), task_id=pricing_id)
            for mark in marks:
                paused_pid(mark)
            queued = [publish(esg_evaluate_receipts, (batch,)),
                      publish(reference_prices_compute, (queued_window.isoformat(), [pricing.a.pk, pricing.b.pk]))]
            wait_for(lambda: client.llen(TEST_QUEUE) == 2 and client.hlen("unacked") == 2, timeout=10)
            assert made.done_once() and not pricing.done_once(window)
            delivered = [score for _, score in client.zrange("unacked_index", 0, -1, withscores=True)]

            worker.kill_everything()
            killed_at, killed_wall = time.monotonic(), time.time()
            age = max(killed_wall - score for score in delivered)
            assert client.hlen("unacked") == 2  # no warm shutdown: nothing was handed back

            worker = launch_worker(server, concurrency=2, hook_dir=hook_dir)  # what a supervisor does
            ready = time.monotonic() - killed_at
            seen: dict[str, float] = {}

            def rerun(seen: dict[str, float] = seen, ids: tuple[str, str] = (reconcile_id, pricing_id),
                      killed_at: float = killed_at) -> bool:
                for task_id in ids:
                    if task_id not in seen and log.received(task_id) >= 2:
                        seen[task_id] = time.monotonic() - killed_at
                return len(seen) == len(ids)

            wait_for(rerun, timeout=RERUN_BOUND_S + 60, interval=0.1)
            wait_for(lambda w=window, q=queued_window, b=batch, m=made: m.done_once() and pricing.done_once(w)
                     and pricing.done_once(q) and esg_done_once(b, packs), timeout=30)
            checks += [made.done_once, lambda w=window: pricing.done_once(w), lambda q=queued_window:
                       pricing.done_once(q), lambda b=batch: esg_done_once(b, packs)]
            rounds.append({"worker ready s": ready, "age at kill s": age, "rerun s": max(seen.values()),
                           "queued received": float(sum(log.received(t) for t in queued))})
            print(f"restart: worker ready {ready:.1f} s after the kill; unacked tasks (age {age:.1f} s at the kill) "
                  f"received again after {seen[reconcile_id]:.1f} s and {seen[pricing_id]:.1f} s")
        wait_for(lambda: queue_idle(server), timeout=30, interval=0.2)
        time.sleep(0.5)
    finally:
        stop_worker(worker.proc)

    failures = sum(1 for check in checks if not check())
    slowest = max(r["rerun s"] for r in rounds)
    options = transport_options()
    figures = {
        "restarts": restarts, "unacked tasks killed": 2 * restarts, "queued tasks": 2 * restarts,
        "rerun": 2 * restarts, "completed exactly once": len(checks) - failures, "lost": failures,
        "kill to rerun s": f"max {slowest:.1f}, min {min(r['rerun s'] for r in rounds):.1f} (bound {RERUN_BOUND_S:.0f})",
        "kill to worker ready s": f"max {max(r['worker ready s'] for r in rounds):.1f}",
        "transport": {k: options.get(k) for k in ("visibility_timeout", "unacked_restore_interval",
                                                    "unacked_restore_throttle", "unacked_mutex_expire")},
    }
    assert failures == 0
    assert ReferencePrice.objects.count() == 2 * 2 * restarts
    assert StockGap.objects.count() == 2 * restarts
    assert esg_audit("update") == 0
    assert slowest < RERUN_BOUND_S, rounds
    return figures


def test_kill_9_of_the_whole_worker_reruns_every_unacknowledged_task_within_60_s(
        private_redis: PrivateRedis, tmp_path: Path) -> None:
    figures = run_whole_worker_restarts(private_redis, tmp_path, 1)
    record("Worker faults: whole worker kill -9 + restart", runs=figures["restarts"], failures=figures["lost"],
           figures=figures)


@pytest.mark.proof
def test_proof_whole_worker_killed_and_restarted_3_times(private_redis: PrivateRedis, tmp_path: Path) -> None:
    figures = run_whole_worker_restarts(private_redis, tmp_path, 3)
    record("Worker faults: whole worker kill -9 + restart", runs=figures["restarts"], failures=figures["lost"],
           figures=figures, variant="proof")
