"""Each process's cached book is caught up from the command log, rebuilt when unsure; the database is the truth."""

from decimal import Decimal

import pytest

from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading import book_cache
from trading.models import BookCommand, Order, OrderStatus
from trading.selectors import depth
from trading.services import order_cancel, order_place

pytestmark = pytest.mark.django_db


def place(member, inst, side, qty, price, coid):
    return order_place(member=member, instrument=inst, side=side, order_type="limit", tif="GTC", quantity_kg=qty,
                       price=price, client_order_id=coid)


def engine_depth(inst):
    bids, asks = book_cache._BOOKS[inst.pk].book.depth(10)
    return bids, asks


def test_a_stale_process_replays_what_another_process_did() -> None:
    world = ReceiptWorld()
    inst = instrument()
    seller, _ = seller_with(world, "50.000")
    buyer = funded_member()
    place(seller, inst, "sell", "10", "600.00", "s1")
    stale = book_cache._BOOKS[inst.pk]  # this "process" stops here...
    book_cache.drop(inst.pk)  # ...while "another process" (a fresh cache) moves the book
    place(seller, inst, "sell", "5", "601.00", "s2")
    resting = place(buyer, inst, "buy", "3", "590.00", "b1").order
    order_cancel(member=buyer, order_id=resting.pk)
    inst.refresh_from_db()
    assert stale.seq < inst.book_seq
    book_cache._BOOKS[inst.pk] = stale  # back in the first process: its book is behind
    result = place(buyer, inst, "buy", "12", "601.00", "b2")
    # It must have replayed s2 and the cancel: 10 @ 600 then 2 of the 5 @ 601.
    assert [(t.price, t.quantity_kg) for t in result.trades] == [(Decimal("600.00"), Decimal("10.000")),
                                                                 (Decimal("601.00"), Decimal("2.000"))]
    assert book_cache._BOOKS[inst.pk].seq == BookCommand.objects.filter(instrument=inst).count()
    bids, asks = engine_depth(inst)
    assert asks == [(60100, 3000)] and bids == []
    assert depth(inst)["asks"] == [{"price": "601", "quantity_kg": "3.000"}]
    assert_value_invariants()


def test_a_rolled_back_order_never_stays_in_the_cached_book() -> None:
    world = ReceiptWorld()
    inst = instrument()
    seller, _ = seller_with(world, "10.000")
    place(seller, inst, "sell", "10", "600.00", "s1")
    poor = funded_member("100.00")
    with pytest.raises(Exception):  # noqa: B017 - the point is that it failed, whatever the code
        place(poor, inst, "buy", "1", "600.00", "b1")
    assert book_cache._BOOKS.get(inst.pk) is None  # dropped: the next order rebuilds from the database
    rich = funded_member()
    [trade] = place(rich, inst, "buy", "10", "600.00", "b2").trades
    assert trade.quantity_kg == Decimal("10.000")
    assert Order.objects.get(client_order_id="s1").status == OrderStatus.FILLED
    assert_value_invariants()


def test_rebuild_from_the_database_matches_the_live_book() -> None:
    world = ReceiptWorld()
    inst = instrument()
    seller, _ = seller_with(world, "40.000")
    buyer = funded_member()
    for i, price in enumerate(["601.00", "600.00", "602.00", "600.00"]):
        place(seller, inst, "sell", "5", price, f"s{i}")
    for i, price in enumerate(["590.00", "595.00", "595.00"]):
        place(buyer, inst, "buy", "2", price, f"b{i}")
    place(buyer, inst, "buy", "7", "600.00", "cross")
    live = engine_depth(inst)
    book_cache.drop(inst.pk)
    inst.refresh_from_db()
    rebuilt = book_cache.book_for(inst)
    assert rebuilt.book.depth(10) == live
    assert rebuilt.seq == inst.book_seq


def test_a_process_one_command_behind_catches_up_from_the_instruments_row() -> None:
    """Two web workers take turns: each order finds the other's last command missing from its book. That command
    comes with the instrument's locking read (`last_command`, written with `book_seq`), so the command log is not
    read; further behind, it is."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    world = ReceiptWorld()
    inst = instrument()
    seller, _ = seller_with(world, "50.000")
    buyer = funded_member()
    place(seller, inst, "sell", "10", "600.00", "s1")
    resting = place(buyer, inst, "buy", "2", "590.00", "b0").order
    for n, other_process_does in enumerate((lambda: place(seller, inst, "sell", "5", "601.00", "s2"),
                                            lambda: order_cancel(member=buyer, order_id=resting.pk))):
        stale = book_cache._BOOKS[inst.pk]
        book_cache.drop(inst.pk)  # "another process" (a fresh cache) moves the book by one command
        other_process_does()
        book_cache._BOOKS[inst.pk] = stale
        with CaptureQueriesContext(connection) as queries:
            place(buyer, inst, "buy", "1", "580.00", f"probe-{n}")
        assert not [q for q in queries if "FROM trading_bookcommand" in q["sql"]]
    inst.refresh_from_db()
    assert inst.last_command[:2] == [inst.book_seq, "submit"]
    # The caught-up book is the book the database holds.
    assert engine_depth(inst) == book_cache._rebuild(inst).book.depth(10)
    assert engine_depth(inst) == ([(58000, 2000)], [(60000, 10000), (60100, 5000)])
    assert_value_invariants()
