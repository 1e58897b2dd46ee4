"""Group commit for order entry: the orders for one instrument that reach one process together are placed in
one transaction.

Order entry on an instrument is serialised by the instrument's row lock (`order_place`), so the rate is one over
the time an order holds it. Placed one per transaction, each order paid for the lock's read, the book's
catch-up on the other process's last command, its own commit and its after-commit publishes, and a web
worker could hold only one order. Here the request threads of a process (gunicorn's gthread worker) queue
their orders per instrument; one of them, the *combiner*, opens one transaction, claims the first queued
order's Idempotency-Key (before the lock: a replay is answered without it), locks the instrument once,
places that order, then takes every order that queued meanwhile (up to `MAX_BATCH` in all) and runs each in
its own savepoint (a refused order rolls back alone and its requester gets its error; the others go on),
writes the Idempotency-Key responses in one statement, commits once, and hands each requester its outcome.
Orders are placed in the order they were queued; while a batch runs, the next one queues (flat combining).
Under the sync worker every batch is one order, without a savepoint.

An order is acknowledged only after the commit of its batch, as before: a batch whose commit fails answers
every one of its orders with that error, and nothing of any of them was written.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from config import after_commit
from config import db as config_db
from members.idempotency import (
    IdempotentRequest,
    Outcome,
    answer,
    claim,
    enter_pipeline,
    record_responses,
    run_once,
)
from trading import book_cache, selectors
from trading.selectors import OrderInstrument

# At most this many orders per transaction. Each order's savepoint is a subtransaction, and PostgreSQL keeps
# the ids of at most 64 per transaction in shared memory before other sessions' snapshots get slower.
MAX_BATCH = 32

# Places one order with the instrument read and locked (None: no instrument has that code); returns the
# response's status and body data.
Place = Callable[[OrderInstrument | None], tuple[int, Any]]


@dataclass(eq=False)
class _Job:
    req: IdempotentRequest
    place: Place
    done: bool = False
    outcome: Outcome | None = None
    error: BaseException | None = None

    def run(self, found: OrderInstrument | None) -> Outcome:
        """Claim the order's Idempotency-Key and place it (or replay the key's first answer)."""
        return run_once(self.req, lambda: self.place(found))

    def answer(self) -> Outcome:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


@dataclass(eq=False)
class _Lane:
    """One instrument's queue in this process, and whether a combiner is running a batch of it."""
    ready: threading.Condition = field(default_factory=threading.Condition)
    queue: list[_Job] = field(default_factory=list)
    busy: bool = False
    running: int = 0  # orders taken by the batch that is running


_LANES: dict[str, _Lane] = {}
_LANES_LOCK = threading.Lock()


@dataclass
class BatchStats:
    """What this process's batches have held so far (for tests and diagnostics)."""
    batches: int = 0
    orders: int = 0
    largest: int = 0


STATS = BatchStats()


def unanswered(code: str) -> int:
    """How many orders for the instrument `code` this process has not answered yet: queued, or taken by the batch
    that is running."""
    with _LANES_LOCK:
        lane = _LANES.get(code)
    if lane is None:
        return 0
    with lane.ready:
        return len(lane.queue) + lane.running


def _lane(code: str) -> _Lane:
    with _LANES_LOCK:
        return _LANES.setdefault(code, _Lane())


def place_batched(code: str, req: IdempotentRequest, place: Place) -> Outcome:
    """Place an order for the instrument `code` in the next batch of this process, and return its outcome (or
    raise its error). In the combiner's thread, inside the batch's transaction, the request's Idempotency-Key
    is claimed and `place` called with the instrument read and locked (`_run_batch` says when in a savepoint of
    its own); it places the order (`order_place(locked=True, savepoint=False)`). The calling thread becomes the
    combiner when no batch of this instrument is running in the process."""
    lane, job = _lane(code), _Job(req, place)
    with lane.ready:
        lane.queue.append(job)
        while lane.busy and not job.done:
            lane.ready.wait()
        if job.done:
            return job.answer()
        lane.busy = True
    try:
        while not job.done:  # its job may lie beyond the first MAX_BATCH of the queue
            _run_batch(code, lane)
    finally:
        with lane.ready:
            lane.busy = False
            lane.ready.notify_all()
    return job.answer()


def _run_batch(code: str, lane: _Lane) -> None:
    """One transaction: the first queued order, then the orders that queued while it waited for the instrument's
    lock (up to MAX_BATCH in all); their responses written, one commit; then each is marked done (with the
    commit's error if it failed).

    The first order claims its Idempotency-Key before the instrument's lock, so the lock is held one statement
    less (under the sync worker every order is first and alone), and a replay of a committed key takes no lock at
    all. It runs without a savepoint: its refusal rolls the transaction back, key row included, before any other
    order was taken. Each order taken after it runs in its own savepoint, its key's claim included, so that a
    refusal rolls back that order alone."""
    with lane.ready:  # the combiner's own order is queued until done: the queue is not empty
        first, lane.queue = lane.queue[0], lane.queue[1:]
        lane.running = 1
    batch = [first]
    answers: list[tuple[_Job, Outcome | None, BaseException | None]] = []
    try:
        with contextlib.ExitStack() as pipelined, after_commit.merged(), transaction.atomic(durable=True):
            claimed = claim(first.req)
            if isinstance(claimed, Outcome):  # a replay of a committed key: nothing to place, no lock
                answers.append((first, claimed, None))
            else:
                found = selectors.instrument_for_order(code, lock=True)
                # The first order runs in a pipeline left open for its response and the COMMIT: its writes are
                # waited for with them, in one round trip (config.db.pipelined). If orders queued meanwhile, the
                # pipeline ends first, so the first order's writes are done (any error of theirs raised) before
                # they join; each of them waits for its own at the end of its savepoint.
                first_pipeline = pipelined.enter_context(contextlib.ExitStack())
                first_pipeline.enter_context(config_db.pipelined())
                answers.append((first, answer(claimed, functools.partial(first.place, found)), None))
                with lane.ready:
                    queued = bool(lane.queue)
                if queued:
                    first_pipeline.close()
                with lane.ready:  # the orders that queued meanwhile join, each in a savepoint
                    more = lane.queue[:MAX_BATCH - 1] if queued else []  # one queued since waits for the next batch
                    lane.queue = lane.queue[len(more):]
                    lane.running += len(more)
                batch += more
                answers.extend(_run_each(more, found))
            STATS.batches, STATS.orders = STATS.batches + 1, STATS.orders + len(batch)
            STATS.largest = max(STATS.largest, len(batch))
            enter_pipeline(pipelined)
            record_responses([outcome for _, outcome, _ in answers if outcome is not None])
    except BaseException as error:
        # Nothing of this batch committed: a refused order keeps its own error, every other order gets this one.
        refused = {id(job): job_error for job, _, job_error in answers if job_error is not None}
        _finish(lane, [(job, None, refused.get(id(job), error)) for job in batch])
        if not isinstance(error, Exception):
            raise
        return
    _finish(lane, answers)


def _run_each(batch: list[_Job], found: OrderInstrument | None) -> list[tuple[_Job, Outcome | None,
                                                                           BaseException | None]]:
    """Run each order of the batch in a savepoint of its own: a refusal rolls back that order alone."""
    answers: list[tuple[_Job, Outcome | None, BaseException | None]] = []
    for job in batch:
        seq = found.instrument.book_seq if found else 0
        try:
            with transaction.atomic(), after_commit.part():
                answers.append((job, job.run(found), None))
        except Exception as refusal:  # noqa: BLE001 - the order's own refusal, handed to its requester
            answers.append((job, None, refusal))
            if found:  # its savepoint rolled back the book and its seq: rebuild the book for the next
                found.instrument.book_seq = seq
                book_cache.drop(found.instrument.pk)
    return answers


def _finish(lane: _Lane, answers: list[tuple[_Job, Outcome | None, BaseException | None]]) -> None:
    with lane.ready:
        lane.running = 0
        for job, outcome, error in answers:
            job.outcome, job.error, job.done = outcome, error, True
        lane.ready.notify_all()
