"""After-commit publishes that may be merged: one message for many rows written by one transaction.

`on_commit_merged(key, items, send)` is `transaction.on_commit(lambda: send(items), robust=True)`, except inside
`merged()`, where the items of every call with the same key are gathered and sent once, by the first call's
`send`, when the block ends without an error (after the commit the caller puts inside it). Order entry's batches
(`trading.batching`) use it: the candle fold of an instrument and the ESG evaluation of the receipts its splits
gave go once per batch instead of once per order. Inside `merged()`, `part()` wraps work that may fail alone
(an order's savepoint): what it gathered is dropped with it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from django.db import transaction

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
    """Call `send(sorted distinct items)` after the current transaction commits, merged with the other calls of
    the same key inside `merged()`. Nothing is sent for no items. A failing `send` is logged, never raised."""
    gathered: list[_Gathered] = getattr(_local, "stack", [])
    if gathered:
        gathered[-1].add(key, items, send)
        return
    distinct = sorted(set(items))
    if distinct:
        transaction.on_commit(lambda: send(distinct), robust=True)


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
    """Gather `on_commit_merged` calls; send each key once when the block ends without an error."""
    with _gathering() as gathered:
        yield
    for key, items in gathered.items.items():
        distinct = sorted(set(items))
        if distinct:
            try:
                gathered.sends[key](distinct)
            except Exception:  # noqa: BLE001 - the work has committed; like on_commit(robust=True)
                log.exception("after-commit publish %r failed", key)


@contextlib.contextmanager
def part() -> Iterator[None]:
    """Inside `merged()`: what the block gathers joins the rest only if it ends without an error."""
    if not getattr(_local, "stack", None):
        yield
        return
    with _gathering() as gathered:
        yield
    _local.stack[-1].absorb(gathered)
