"""Each process keeps its instruments' order books in memory and catches them up from the command log.

The database is the truth: under the instrument's row lock a book is (re)built or replayed to the
instrument's `book_seq` before use. A book touched by a transaction that did not commit is dropped,
because its in-memory state may hold orders the database never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.db import connection, transaction

from trading.engine import OrderBook
from trading.models import LIVE_ORDER_STATUSES, Instrument, Order, OrderType


@dataclass
class CachedBook:
    book: OrderBook
    seq: int
    confirmed: bool = True
    pending: Any = None  # the on_commit hook that confirms the book's tentative changes


_BOOKS: dict[int, CachedBook] = {}
rebuilds = 0  # books built from the database by this process (tests, diagnostics)


def drop(instrument_id: int) -> None:
    _BOOKS.pop(instrument_id, None)


def _rebuild(instrument: Instrument) -> CachedBook:
    from trading.conversions import to_ticks, to_units

    global rebuilds
    rebuilds += 1
    resting = (Order.objects.filter(instrument=instrument, status__in=LIVE_ORDER_STATUSES,
                                    order_type=OrderType.LIMIT, tif="GTC")
               .order_by("book_seq").values_list("pk", "member_id", "side", "price", "quantity_kg", "filled_kg"))
    book = OrderBook.restore(
        (pk, member_id, side, to_ticks(cast(Decimal, price), instrument), to_units(qty - filled))  # limits: priced
        for pk, member_id, side, price, qty, filled in resting)
    return CachedBook(book=book, seq=instrument.book_seq)


def book_for(instrument: Instrument) -> CachedBook:
    """The instrument's book at `instrument.book_seq`. Caller holds the instrument's row lock."""
    cached = _BOOKS.get(instrument.pk)
    if cached is None or not (cached.confirmed or _own(cached)) or cached.seq > instrument.book_seq:
        cached = _BOOKS[instrument.pk] = _rebuild(instrument)
    elif cached.seq < instrument.book_seq:
        # Another process moved the book: replay what it did, in order (the engine is deterministic). One command
        # behind (two processes taking turns), that command came with the instrument's row.
        last = instrument.last_command
        if cached.seq == instrument.book_seq - 1 and last and last[0] == instrument.book_seq:
            commands: list[Any] = [last]
        else:
            commands = _commands_after(instrument.pk, cached.seq)
        for seq, kind, order_id, owner, side, quantity, price, tif in commands:
            if kind == "submit":
                cached.book.submit(order_id, owner, side, quantity, price, tif)
            else:
                cached.book.cancel(order_id)
            cached.seq = seq
    return cached


def _commands_after(instrument_id: int, seq: int) -> list[tuple[Any, ...]]:
    """The book's commands after `seq`, in order, as plain tuples: one plain statement. With two web processes
    taking turns on one instrument, nearly every order replays the other's last command, and the queryset
    compiled anew each time was a fifth of the CPU spent under the instrument's lock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, kind, order_id, owner, side, quantity, price, tif FROM trading_bookcommand "
                       "WHERE instrument_id = %s AND seq > %s ORDER BY seq", [instrument_id, seq])
        return cursor.fetchall()


def mark_tentative(instrument_id: int, cached: CachedBook) -> None:
    """The book now holds uncommitted changes; it becomes trusted again only when the transaction commits, and
    meanwhile only by that transaction (the next orders of a batch, `trading.batching`)."""
    cached.confirmed = False

    def confirm() -> None:
        if _BOOKS.get(instrument_id) is cached:
            cached.confirmed = True

    cached.pending = confirm
    transaction.on_commit(confirm)


def _own(cached: CachedBook) -> bool:
    """Whether the book's unconfirmed changes are the current transaction's own: its confirming hook waits for
    this transaction's commit. A transaction that rolled back took its hooks with it; one that rolled back to a
    savepoint took that savepoint's, and whoever ran the savepoint dropped the book (`order_place`, a batch)."""
    pending = cached.pending
    return pending is not None and any(entry[1] is pending for entry in connection.run_on_commit)  # (savepoints, hook, robust)
