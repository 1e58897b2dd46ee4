"""After-commit publishes that may be merged: one message for many rows written by one transaction.

`on_commit_merged(key, items, send)` is `transaction.on_commit(lambda: send(items), robust=True)`, except inside
`merged()`, where the items of every call with the same key are gathered and sent once, by the first call's
`send`, when the block ends without an error (after the commit the caller puts inside it). Order entry's batches
(`trading.batching`) use it: the candle fold of an instrument and the ESG evaluation of the receipts its splits
gave go once per batch instead of once per order. Inside `merged()`, `part()` wraps work that may fail alone
(an order's savepoint): what it gathered is dropped with it.

With `AFTER_COMMIT_SPOOL_MS` above zero (the default outside tests) what a commit would send goes to this
process's spool instead, and a thread of the process sends it every that many milliseconds, merged per key
with what other transactions spooled meanwhile: one Celery message per key and interval instead of one per
transaction (each publish costs about a millisecond of the request's CPU; order entry made one for most
orders). A process that dies loses what it spooled, as a broker that loses its queue would: the receivers'
work is recoverable from the database (the ESG sweep, the candle beat). A process that exits sends it first.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import connections, transaction

log = logging.getLogger(__name__)
_local = threading.local()

Send = Callable[[list[Any]], None]


class _Gathered:
    def __init__(self) -> None:
        self.sends: dict[Hashable, Send] = {}
        self.items: dict[Hashable, list[Any]] = {}

    def add(self, key: Hashable, items: Iterable[Any], send: Send) -> None:
        self.sends.setdefault(key, send)
        self.items.setdefault(key, []).extend(items)

    def absorb(self, other: _Gathered) -> None:
        for key, items in other.items.items():
            self.add(key, items, other.sends[key])


def on_commit_merged(key: Hashable, items: Iterable[Any], send: Send) -> None:
    """Call `send(sorted distinct items)` after the current transaction commits (or hand them to the spool),
    merged with the other calls of the same key inside `merged()`. Nothing is sent for no items. A failing `send`
    is logged, never raised."""
    gathered: list[_Gathered] = getattr(_local, "stack", [])
    if gathered:
        gathered[-1].add(key, items, send)
        return
    distinct = sorted(set(items))
    if distinct:
        transaction.on_commit(lambda: _dispatch(key, distinct, send), robust=True)


@contextlib.contextmanager
def _gathering() -> Iterator[_Gathered]:
    """A new innermost scope of gathered publishes for the block; it is left when the block ends, error or not."""
    stack: list[_Gathered] = _local.__dict__.setdefault("stack", [])
    gathered = _Gathered()
    stack.append(gathered)
    try:
        yield gathered
    finally:
        stack.pop()


@contextlib.contextmanager
def merged() -> Iterator[None]:
    """Gather `on_commit_merged` calls; send (or spool) each key once when the block ends without an error."""
    with _gathering() as gathered:
        yield
    for key, items in gathered.items.items():
        distinct = sorted(set(items))
        if distinct:
            _dispatch(key, distinct, gathered.sends[key])


@contextlib.contextmanager
def part() -> Iterator[None]:
    """Inside `merged()`: what the block gathers joins the rest only if it ends without an error."""
    if not getattr(_local, "stack", None):
        yield
        return
    with _gathering() as gathered:
        yield
    _local.stack[-1].absorb(gathered)


def _dispatch(key: Hashable, items: list[Any], send: Send) -> None:
    """Send now, or spool when `AFTER_COMMIT_SPOOL_MS` is above zero. A failing send is logged, never raised:
    the work has committed (like `on_commit(robust=True)`)."""
    interval = getattr(settings, "AFTER_COMMIT_SPOOL_MS", 0) / 1000
    if interval > 0:
        _spool.add(key, items, send, interval)
        return
    _send(key, items, send)


def _send(key: Hashable, items: list[Any], send: Send) -> None:
    try:
        send(items)
    except Exception:  # noqa: BLE001 - see _dispatch
        log.exception("after-commit publish %r failed", key)


class _Spool:
    """This process's publishes waiting for the spool thread, merged per key. The thread starts with the first
    item of a process (gunicorn forks its workers: a child starts its own, with an empty spool)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.flush)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.gathered = _Gathered()
        self.thread: threading.Thread | None = None
        self.flushes = 0  # flushes that sent something, for tests

    def add(self, key: Hashable, items: list[Any], send: Send, interval: float) -> None:
        with self.lock:
            self.gathered.add(key, items, send)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, args=(interval,), name="after-commit-spool",
                                               daemon=True)
                self.thread.start()

    def _run(self, interval: float) -> None:
        """The spool thread (its interval is the setting's when the process spooled first)."""
        while True:
            time.sleep(interval)
            if self.flush():
                connections.close_all()  # a receiver that read the database did it on this thread's connection

    def flush(self) -> bool:
        """Send what is spooled, one call per key with its sorted distinct items; whether there was any."""
        with self.lock:
            gathered, self.gathered = self.gathered, _Gathered()
        if gathered.items:
            self.flushes += 1
        for key, items in gathered.items.items():
            _send(key, sorted(set(items)), gathered.sends[key])
        return bool(gathered.items)


_spool = _Spool()


def flush_spool() -> None:
    """Send what this process has spooled now (tests; a process about to stop)."""
    _spool.flush()
