"""Tests of trading.engine: one test per matching rule, then generated streams against a reference model."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading.engine import (
    FOK,
    GTC,
    IOC,
    BookInvariantError,
    DuplicateOrderError,
    EngineError,
    Execution,
    Fill,
    OrderBook,
    RestingOrder,
)

# ----------------------------------------------------------------------------- helpers


def fills_of(ex: Execution) -> list[tuple[Hashable, Hashable, int, int]]:
    return [(f.maker_id, f.taker_id, f.price, f.quantity) for f in ex.fills]


def book_with(*orders: tuple[Hashable, Hashable, str, int, int]) -> OrderBook:
    """A book with these (order_id, owner, side, quantity, price) GTC orders submitted in order."""
    book = OrderBook()
    for order_id, owner, side, quantity, price in orders:
        ex = book.submit(order_id, owner, side, quantity, price)
        assert ex.fills == [] and ex.resting == quantity, "fixture orders must not cross"
    return book


# ----------------------------------------------------------------------------- empty book, resting


def test_empty_book_has_no_prices() -> None:
    book = OrderBook()
    assert book.best_bid() is None and book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert len(book) == 0 and book.resting_count() == 0
    assert book.snapshot() == []


def test_limit_order_that_does_not_cross_rests() -> None:
    book = OrderBook()
    ex = book.submit(1, "a", "buy", 10, 99)
    assert (ex.fills, ex.cancelled, ex.resting, ex.dropped, ex.order_id) == ([], [], 10, 0, 1)
    ex = book.submit(2, "b", "sell", 4, 101)
    assert ex.resting == 4
    assert (book.best_bid(), book.best_ask()) == (99, 101)
    assert book.order(1) == RestingOrder(1, "a", "buy", 99, 10)
    assert len(book) == 2


# ----------------------------------------------------------------------------- price-time priority


def test_better_price_fills_first() -> None:
    book = book_with((1, "m", "sell", 1, 102), (2, "m", "sell", 1, 100), (3, "m", "sell", 1, 101))
    ex = book.submit(9, "t", "buy", 3, 102)
    assert [f.maker_id for f in ex.fills] == [2, 3, 1]
    assert [f.price for f in ex.fills] == [100, 101, 102]


def test_better_bid_fills_first_for_a_sell() -> None:
    book = book_with((1, "m", "buy", 1, 98), (2, "m", "buy", 1, 100), (3, "m", "buy", 1, 99))
    ex = book.submit(9, "t", "sell", 3, 98)
    assert [f.maker_id for f in ex.fills] == [2, 3, 1]


def test_earlier_order_fills_first_at_same_price() -> None:
    book = book_with((1, "m1", "sell", 2, 100), (2, "m2", "sell", 2, 100), (3, "m3", "sell", 2, 100))
    ex = book.submit(9, "t", "buy", 5, 100)
    assert fills_of(ex) == [(1, 9, 100, 2), (2, 9, 100, 2), (3, 9, 100, 1)]


def test_fill_is_at_the_resting_order_price() -> None:
    book = book_with((1, "m", "sell", 5, 100), (2, "m", "buy", 5, 90))
    assert fills_of(book.submit(3, "t", "buy", 1, 105)) == [(1, 3, 100, 1)]
    assert fills_of(book.submit(4, "t", "sell", 1, 80)) == [(2, 4, 90, 1)]


def test_limit_stops_at_its_price_and_rests_the_rest() -> None:
    book = book_with((1, "m", "sell", 3, 100), (2, "m", "sell", 3, 101), (3, "m", "sell", 3, 102))
    ex = book.submit(9, "t", "buy", 10, 101)
    assert [f.maker_id for f in ex.fills] == [1, 2]
    assert ex.resting == 4 and ex.dropped == 0
    assert (book.best_bid(), book.best_ask()) == (101, 102)


# ----------------------------------------------------------------------------- partial fills


def test_partial_fill_rests_the_taker_remainder() -> None:
    book = book_with((1, "m", "sell", 3, 100))
    ex = book.submit(2, "t", "buy", 5, 100)
    assert fills_of(ex) == [(1, 2, 100, 3)]
    assert ex.resting == 2
    assert book.order(1) is None
    assert book.order(2) == RestingOrder(2, "t", "buy", 100, 2)


def test_partly_filled_maker_keeps_its_place() -> None:
    book = book_with((1, "a", "sell", 10, 100), (2, "b", "sell", 5, 100))
    assert fills_of(book.submit(3, "t", "buy", 4, 100)) == [(1, 3, 100, 4)]
    assert book.order(1) == RestingOrder(1, "a", "sell", 100, 6)
    assert fills_of(book.submit(4, "t", "buy", 7, 100)) == [(1, 4, 100, 6), (2, 4, 100, 1)]
    assert book.depth(1) == ([], [(100, 4)])


# ----------------------------------------------------------------------------- IOC, market


def test_ioc_fills_what_it_can_and_never_rests() -> None:
    book = book_with((1, "m", "sell", 3, 100), (2, "m", "sell", 3, 102))
    ex = book.submit(9, "t", "buy", 5, 101, IOC)
    assert fills_of(ex) == [(1, 9, 100, 3)]
    assert (ex.resting, ex.dropped) == (0, 2)
    assert book.order(9) is None and book.best_bid() is None


def test_ioc_that_does_not_cross_is_dropped_whole() -> None:
    book = book_with((1, "m", "sell", 3, 100))
    ex = book.submit(9, "t", "buy", 5, 99, IOC)
    assert (ex.fills, ex.resting, ex.dropped) == ([], 0, 5)
    assert book.snapshot() == [RestingOrder(1, "m", "sell", 100, 3)]


def test_market_order_sweeps_any_price_and_drops_the_rest() -> None:
    book = book_with((1, "m", "sell", 2, 100), (2, "m", "sell", 2, 5_000))
    ex = book.submit(9, "t", "buy", 10)
    assert fills_of(ex) == [(1, 9, 100, 2), (2, 9, 5_000, 2)]
    assert (ex.resting, ex.dropped) == (0, 6)
    assert book.depth(None) == ([], [])


def test_market_sell_hits_bids_best_first() -> None:
    book = book_with((1, "m", "buy", 2, 1), (2, "m", "buy", 2, 50))
    ex = book.submit(9, "t", "sell", 3, None, IOC)
    assert fills_of(ex) == [(2, 9, 50, 2), (1, 9, 1, 1)]
    assert book.order(1) == RestingOrder(1, "m", "buy", 1, 1)


def test_market_order_with_gtc_is_treated_as_ioc() -> None:
    book = book_with((1, "m", "sell", 2, 100))
    ex = book.submit(9, "t", "buy", 5, None, GTC)
    assert (ex.resting, ex.dropped) == (0, 3)
    assert len(book) == 0 and book.best_bid() is None


def test_market_order_on_empty_book_is_dropped() -> None:
    ex = OrderBook().submit(9, "t", "sell", 5)
    assert (ex.fills, ex.resting, ex.dropped) == ([], 0, 5)


# ----------------------------------------------------------------------------- FOK


def test_fok_short_of_quantity_does_nothing() -> None:
    book = book_with((1, "m", "sell", 3, 100), (2, "m", "sell", 3, 101), (3, "m", "sell", 9, 102))
    before = book.snapshot()
    ex = book.submit(9, "t", "buy", 7, 101, FOK)  # only 6 within the limit
    assert (ex.fills, ex.cancelled, ex.resting, ex.dropped) == ([], [], 0, 7)
    assert book.snapshot() == before


def test_fok_with_enough_quantity_fills_completely() -> None:
    book = book_with((1, "m", "sell", 3, 100), (2, "m", "sell", 3, 101))
    ex = book.submit(9, "t", "buy", 6, 101, FOK)
    assert fills_of(ex) == [(1, 9, 100, 3), (2, 9, 101, 3)]
    assert (ex.resting, ex.dropped) == (0, 0)
    assert len(book) == 0


def test_fok_does_not_count_own_orders_and_cancels_nothing_when_killed() -> None:
    book = book_with((1, "t", "sell", 10, 100), (2, "m", "sell", 5, 100))
    ex = book.submit(9, "t", "buy", 8, 100, FOK)
    assert (ex.fills, ex.cancelled, ex.dropped) == ([], [], 8)
    assert book.order(1) == RestingOrder(1, "t", "sell", 100, 10)


def test_fok_that_fills_cancels_own_orders_it_meets() -> None:
    book = book_with((1, "t", "sell", 10, 100), (2, "m", "sell", 5, 100), (3, "t", "sell", 4, 101))
    ex = book.submit(9, "t", "buy", 5, 101, FOK)
    assert fills_of(ex) == [(2, 9, 100, 5)]
    assert ex.cancelled == [1]  # order 3 was never reached, so it stays
    assert book.snapshot() == [RestingOrder(3, "t", "sell", 101, 4)]


def test_fok_market_order_is_all_or_nothing_at_any_price() -> None:
    book = book_with((1, "m", "buy", 3, 10), (2, "m", "buy", 3, 1))
    assert book.submit(8, "t", "sell", 7, None, FOK).dropped == 7
    assert len(book) == 2
    ex = book.submit(9, "t", "sell", 6, None, FOK)
    assert fills_of(ex) == [(1, 9, 10, 3), (2, 9, 1, 3)] and ex.dropped == 0


# ----------------------------------------------------------------------------- self-trade prevention


def test_self_trade_cancels_the_resting_order_and_matching_continues() -> None:
    book = book_with((1, "a", "sell", 5, 100), (2, "b", "sell", 5, 100))
    ex = book.submit(9, "a", "buy", 3, 100)
    assert ex.cancelled == [1]
    assert fills_of(ex) == [(2, 9, 100, 3)]
    assert book.order(1) is None and book.cancel(1) is False
    assert book.depth(1) == ([], [(100, 2)])


def test_self_trade_leaves_own_orders_not_reached() -> None:
    book = book_with((1, "b", "sell", 5, 100), (2, "a", "sell", 5, 100), (3, "a", "sell", 5, 101))
    ex = book.submit(9, "a", "buy", 5, 101)
    assert fills_of(ex) == [(1, 9, 100, 5)] and ex.cancelled == []
    assert [o.order_id for o in book.snapshot()] == [2, 3]


def test_self_trade_lets_gtc_rest_without_crossing() -> None:
    book = book_with((1, "a", "sell", 5, 100), (2, "a", "sell", 5, 101))
    ex = book.submit(9, "a", "buy", 4, 101)
    assert ex.cancelled == [1, 2] and ex.fills == [] and ex.resting == 4
    assert (book.best_bid(), book.best_ask()) == (101, None)


def test_self_trade_by_a_market_order_empties_the_level() -> None:
    book = book_with((1, "a", "buy", 5, 100))
    ex = book.submit(9, "a", "sell", 5)
    assert ex.cancelled == [1] and ex.dropped == 5
    assert book.depth(None) == ([], [])


# ----------------------------------------------------------------------------- cancel


def test_cancel_removes_a_resting_order_once() -> None:
    book = book_with((1, "a", "buy", 5, 100), (2, "a", "buy", 5, 100))
    assert book.cancel(1) is True
    assert book.cancel(1) is False
    assert book.depth(None) == ([(100, 5)], [])
    assert book.cancel(2) is True
    assert book.best_bid() is None and book.depth(None) == ([], [])


def test_cancel_after_partial_fill_removes_the_remainder() -> None:
    book = book_with((1, "m", "sell", 10, 100))
    book.submit(2, "t", "buy", 4, None)
    assert book.cancel(1) is True
    assert book.best_ask() is None and len(book) == 0


def test_cancel_after_full_fill_or_of_unknown_ids_is_false() -> None:
    book = book_with((1, "m", "sell", 4, 100))
    book.submit(2, "t", "buy", 4, 100)
    assert book.cancel(1) is False
    assert book.cancel(2) is False  # filled as a taker, never rested
    assert book.cancel("nope") is False
    assert book.cancel(["unhashable"]) is False


def test_cancelled_order_is_skipped_by_matching() -> None:
    book = book_with((1, "m", "sell", 4, 100), (2, "m", "sell", 4, 100), (3, "m", "sell", 4, 100))
    assert book.cancel(2) is True
    ex = book.submit(9, "t", "buy", 8, 100)
    assert [f.maker_id for f in ex.fills] == [1, 3]


def test_cancelled_orders_do_not_pile_up_in_a_level() -> None:
    # Cancel is lazy inside a level; the level must still be compacted, or memory grows without bound.
    book = OrderBook()
    for order_id in range(1_000):
        book.submit(order_id, "m", "sell", 1, 100)
    for order_id in range(1, 999):
        assert book.cancel(order_id)
    assert len(book._ask_levels[-100].queue) < 100  # reaches inside: the bound is internal
    book.audit()
    assert [f.maker_id for f in book.submit("t", "t", "buy", 5, 100).fills] == [0, 999]


# ----------------------------------------------------------------------------- depth, best bid/ask


def test_depth_aggregates_each_level_best_first() -> None:
    book = book_with(
        (1, "a", "buy", 3, 99),
        (2, "b", "buy", 4, 99),
        (3, "a", "buy", 1, 97),
        (4, "a", "buy", 2, 98),
        (5, "a", "sell", 5, 103),
        (6, "b", "sell", 6, 101),
        (7, "c", "sell", 7, 101),
    )
    assert book.depth(None) == ([(99, 7), (98, 2), (97, 1)], [(101, 13), (103, 5)])
    assert book.depth(2) == ([(99, 7), (98, 2)], [(101, 13), (103, 5)])
    assert book.depth(0) == ([], [])
    book.submit(8, "t", "sell", 8, 98)
    assert book.depth(None) == ([(98, 1), (97, 1)], [(101, 13), (103, 5)])


@pytest.mark.parametrize("levels", [-1, 1.0, True, "3"])
def test_depth_rejects_bad_level_counts(levels: Any) -> None:
    with pytest.raises(EngineError):
        OrderBook().depth(levels)


def test_best_bid_and_ask_follow_fills_and_cancels() -> None:
    book = book_with(
        (1, "m", "buy", 2, 98), (2, "m", "buy", 2, 99), (3, "m", "sell", 2, 101), (4, "m", "sell", 2, 102)
    )
    assert (book.best_bid(), book.best_ask()) == (99, 101)
    book.submit(5, "t", "buy", 2, 101)
    assert book.best_ask() == 102
    book.cancel(2)
    assert book.best_bid() == 98
    book.submit(6, "t", "buy", 1, 100)
    assert book.best_bid() == 100


# ----------------------------------------------------------------------------- validation


GOOD: dict[str, Any] = {"order_id": 9, "owner": "t", "side": "buy", "quantity": 5, "price": 100, "tif": GTC}


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": 0},
        {"quantity": -3},
        {"quantity": 2.0},
        {"quantity": True},
        {"quantity": "5"},
        {"price": 0},
        {"price": -1},
        {"price": 100.0},
        {"price": False},
        {"side": "BUY"},
        {"side": "bid"},
        {"side": None},
        {"tif": "gtc"},
        {"tif": "DAY"},
        {"tif": ["GTC"]},
        {"order_id": ["unhashable"]},
        {"order_id": 1},  # live duplicate
    ],
)
def test_bad_input_raises_value_error_and_leaves_the_book_alone(change: dict[str, Any]) -> None:
    book = book_with((1, "m", "sell", 5, 100), (2, "t", "buy", 5, 90))
    before = (book.snapshot(), book.depth(None))
    with pytest.raises(ValueError) as raised:
        book.submit(**{**GOOD, **change})
    assert isinstance(raised.value, EngineError)
    assert (book.snapshot(), book.depth(None)) == before
    book.audit()


def test_duplicate_live_id_is_its_own_error_but_dead_ids_can_be_reused() -> None:
    book = book_with(("x", "m", "sell", 5, 100))
    with pytest.raises(DuplicateOrderError):
        book.submit("x", "t", "buy", 5, 90)
    book.submit("y", "t", "buy", 5, 100)  # fills x
    assert book.submit("x", "t", "buy", 1, 90).resting == 1
    assert book.cancel("x") is True
    assert book.submit("x", "t", "buy", 1, 90).resting == 1


def test_ids_and_owners_are_opaque() -> None:
    book = OrderBook()
    book.submit(("venue", 1), ("member", 7), "sell", 5, 100)
    ex = book.submit("b-1", frozenset({"m"}), "buy", 2, 100)
    assert fills_of(ex) == [(("venue", 1), "b-1", 100, 2)]
    ex = book.submit("b-2", ("member", 7), "buy", 1, 100)
    assert ex.cancelled == [("venue", 1)]


# ----------------------------------------------------------------------------- persistence helpers


def test_order_lookup_reports_what_is_left() -> None:
    book = book_with((1, "m", "sell", 5, 100))
    book.submit(2, "t", "buy", 2, 100)
    assert book.order(1) == RestingOrder(order_id=1, owner="m", side="sell", price=100, remaining=3)
    assert book.order(2) is None and book.order("missing") is None and book.order([]) is None
    assert 1 in book and 2 not in book and [] not in book


def test_snapshot_lists_resting_orders_oldest_first() -> None:
    book = book_with((1, "m", "sell", 5, 101), (2, "m", "buy", 5, 99), (3, "m", "sell", 5, 100))
    book.submit(4, "t", "buy", 7, 100)  # fills all of 3, rests 2
    assert [o.order_id for o in book.snapshot()] == [1, 2, 4]
    assert list(book) == book.snapshot()


def test_restore_rebuilds_the_book_without_matching_and_keeps_time_priority() -> None:
    book = OrderBook.restore([(5, "a", "sell", 100, 3), (2, "b", "sell", 100, 4), (7, "c", "buy", 99, 1)])
    assert book.depth(None) == ([(99, 1)], [(100, 7)])
    ex = book.submit(8, "t", "buy", 5, 100)
    assert fills_of(ex) == [(5, 8, 100, 3), (2, 8, 100, 2)]
    book.audit()


def test_restore_round_trips_a_snapshot() -> None:
    book = book_with((1, "a", "sell", 5, 101), (2, "b", "sell", 5, 101), (3, "a", "buy", 5, 99))
    book.submit(4, "t", "buy", 3, 101)
    book.cancel(2)
    restored = OrderBook.restore(book.snapshot())
    assert restored.snapshot() == book.snapshot()
    assert restored.depth(None) == book.depth(None)
    assert fills_of(restored.submit(9, "t", "buy", 9)) == fills_of(book.submit(9, "t", "buy", 9))


@pytest.mark.parametrize(
    "orders",
    [
        [(1, "a", "sell", 100, 3), (2, "b", "buy", 100, 3)],  # would cross
        [(1, "a", "sell", 100, 3), (2, "b", "buy", 101, 3)],
        [(1, "a", "sell", 100, 3), (1, "b", "sell", 101, 3)],  # duplicate id
        [(1, "a", "sell", 100, 0)],
        [(1, "a", "sell", 0, 3)],
        [(1, "a", "sell", 100.0, 3)],
        [(1, "a", "ask", 100, 3)],
        [([1], "a", "sell", 100, 3)],
    ],
)
def test_restore_rejects_bad_or_crossed_input(orders: list[tuple[Any, ...]]) -> None:
    with pytest.raises(EngineError):
        OrderBook.restore(orders)


# ----------------------------------------------------------------------------- audit


def test_audit_detects_corruption() -> None:
    # The property tests lean on audit(); it must actually fail on a broken book.
    def fresh() -> OrderBook:
        return book_with((1, "a", "sell", 5, 101), (2, "b", "sell", 5, 101), (3, "a", "buy", 5, 99))

    fresh().audit()
    book = fresh()
    book._ask_levels[-101].total += 1
    with pytest.raises(BookInvariantError):
        book.audit()
    book = fresh()
    book._orders[1][0] = -1
    with pytest.raises(BookInvariantError):
        book.audit()
    book = fresh()
    del book._orders[2]
    with pytest.raises(BookInvariantError):
        book.audit()
    book = fresh()
    book._bid_keys.append(102)
    with pytest.raises(BookInvariantError):
        book.audit()


# ----------------------------------------------------------------------------- reference model


@dataclass
class ModelOrder:
    order_id: Hashable
    owner: Hashable
    side: str
    price: int
    quantity: int


@dataclass
class ModelBook:
    """The rules written as plainly as possible: a list of resting orders in arrival order."""

    orders: list[ModelOrder] = field(default_factory=list)

    def submit(
        self, order_id: Hashable, owner: Hashable, side: str, quantity: int, price: int | None, tif: str
    ) -> tuple[list[tuple[Hashable, Hashable, int, int]], list[Hashable], int, int]:
        if any(o.order_id == order_id for o in self.orders):
            raise DuplicateOrderError(order_id)
        if price is None and tif == GTC:
            tif = IOC
        opposite = "sell" if side == "buy" else "buy"

        def crosses(o: ModelOrder) -> bool:
            return price is None or (o.price <= price if side == "buy" else o.price >= price)

        # sorted() is stable, so equal prices stay in arrival order: price-time priority.
        candidates = sorted(
            (o for o in self.orders if o.side == opposite and crosses(o)),
            key=lambda o: o.price if side == "buy" else -o.price,
        )
        if tif == FOK and sum(o.quantity for o in candidates if o.owner != owner) < quantity:
            return [], [], 0, quantity
        fills: list[tuple[Hashable, Hashable, int, int]] = []
        cancelled: list[Hashable] = []
        remaining = quantity
        for o in candidates:
            if remaining == 0:
                break
            if o.owner == owner:
                self.orders.remove(o)
                cancelled.append(o.order_id)
                continue
            traded = min(o.quantity, remaining)
            fills.append((o.order_id, order_id, o.price, traded))
            o.quantity -= traded
            remaining -= traded
            if o.quantity == 0:
                self.orders.remove(o)
        if remaining and tif == GTC:
            assert price is not None
            self.orders.append(ModelOrder(order_id, owner, side, price, remaining))
            return fills, cancelled, remaining, 0
        return fills, cancelled, 0, remaining

    def cancel(self, order_id: Hashable) -> bool:
        for o in self.orders:
            if o.order_id == order_id:
                self.orders.remove(o)
                return True
        return False

    def snapshot(self) -> list[tuple[Hashable, Hashable, str, int, int]]:
        return [(o.order_id, o.owner, o.side, o.price, o.quantity) for o in self.orders]


class Harness:
    """Drives an OrderBook and a ModelBook in step and checks the book's invariants after every op."""

    def __init__(self, book: OrderBook | None = None, model: ModelBook | None = None) -> None:
        self.book = book or OrderBook()
        self.model = model or ModelBook()
        self.next_id = 0
        self.used_ids: list[int] = []
        self.gone: set[Hashable] = set()  # filled or cancelled, and not submitted again since

    def new_id(self) -> int:
        self.next_id += 1
        self.used_ids.append(self.next_id)
        return self.next_id

    def submit(
        self, order_id: Hashable, owner: Hashable, side: str, quantity: int, price: int | None, tif: str
    ) -> Execution | None:
        before = self.book.snapshot()
        try:
            expected = self.model.submit(order_id, owner, side, quantity, price, tif)
        except DuplicateOrderError:
            with pytest.raises(DuplicateOrderError):
                self.book.submit(order_id, owner, side, quantity, price, tif)
            assert self.book.snapshot() == before
            self.check()
            return None
        self.gone.discard(order_id)
        makers_before = {o.order_id: o.remaining for o in before}
        ex = self.book.submit(order_id, owner, side, quantity, price, tif)
        assert (fills_of(ex), ex.cancelled, ex.resting, ex.dropped) == expected
        assert ex.order_id == order_id
        # Quantity is conserved for the taker...
        assert ex.filled == quantity - ex.resting - ex.dropped >= 0
        assert all(f.quantity > 0 and f.taker_id == order_id for f in ex.fills)
        if price is None or tif != GTC:
            assert ex.resting == 0
        if tif == FOK:
            assert ex.dropped in (0, quantity) and (ex.dropped == 0 or not ex.fills and not ex.cancelled)
        # ...and for every maker: what it traded left its resting quantity.
        traded: dict[Hashable, int] = defaultdict(int)
        for f in ex.fills:
            traded[f.maker_id] += f.quantity
        for maker_id, qty in traded.items():
            left = self.book.order(maker_id)
            assert makers_before[maker_id] - qty == (left.remaining if left else 0)
            if left is None:
                self.gone.add(maker_id)
        for cancelled_id in ex.cancelled:
            assert cancelled_id in makers_before and cancelled_id not in traded
            self.gone.add(cancelled_id)
        resting = self.book.order(order_id)
        assert (resting.remaining if resting else 0) == ex.resting
        if not ex.resting:
            self.gone.add(order_id)
        self.check()
        return ex

    def cancel(self, order_id: Hashable) -> bool:
        expected = self.model.cancel(order_id)
        assert self.book.cancel(order_id) is expected
        if expected:
            self.gone.add(order_id)
        self.check()
        return expected

    def check(self) -> None:
        book = self.book
        book.audit()
        snapshot = book.snapshot()
        assert [tuple(o) for o in snapshot] == self.model.snapshot()
        assert len(book) == book.resting_count() == len(snapshot)
        assert all(o.remaining > 0 for o in snapshot)
        assert not {o.order_id for o in snapshot} & self.gone, "an order is both resting and filled/cancelled"
        bids, asks = book.depth(None)
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, "crossed book"
        assert bid == (bids[0][0] if bids else None) and ask == (asks[0][0] if asks else None)
        assert [p for p, _ in bids] == sorted({p for p, _ in bids}, reverse=True)
        assert [p for p, _ in asks] == sorted({p for p, _ in asks})
        totals: dict[tuple[str, int], int] = defaultdict(int)
        for o in snapshot:
            totals[o.side, o.price] += o.remaining
        assert dict(totals) == {("buy", p): q for p, q in bids} | {("sell", p): q for p, q in asks}


# ----------------------------------------------------------------------------- generated streams

OWNER = st.integers(0, 3)
SIDE = st.sampled_from(["buy", "sell"])
PRICE = st.one_of(st.none(), st.integers(1, 8))
TIF = st.sampled_from([GTC, GTC, GTC, IOC, FOK, FOK])
# An index into ids used so far: lets streams cancel or reuse live, filled and cancelled ids.
PICK = st.integers(0, 10_000)

QUANTITY = st.integers(1, 8)
SUBMIT = st.tuples(st.just("submit"), OWNER, SIDE, QUANTITY, PRICE, TIF)
REUSE = st.tuples(st.just("reuse"), PICK, OWNER, SIDE, QUANTITY, PRICE, TIF)
CANCEL = st.tuples(st.just("cancel"), PICK)
BAD = st.tuples(
    st.just("bad"),
    st.sampled_from(
        [
            {"quantity": 0},
            {"quantity": 1.5},
            {"price": 0},
            {"price": 2.5},
            {"side": "short"},
            {"tif": "DAY"},
            {"quantity": -4},
        ]
    ),
)
STREAM = st.lists(st.one_of(SUBMIT, SUBMIT, SUBMIT, CANCEL, CANCEL, REUSE, BAD), min_size=20, max_size=80)


def run(harness: Harness, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        kind = op[0]
        if kind == "submit":
            harness.submit(harness.new_id(), *op[1:])
        elif kind == "reuse" and harness.used_ids:
            harness.submit(harness.used_ids[op[1] % len(harness.used_ids)], *op[2:])
        elif kind == "cancel":
            ids = harness.used_ids
            harness.cancel(ids[op[1] % len(ids)] if ids and op[1] % 5 else "never-used")
        elif kind == "bad":
            before = harness.book.snapshot()
            with pytest.raises(EngineError):
                harness.book.submit(**{**GOOD, "order_id": "bad", **op[1]})
            assert harness.book.snapshot() == before
            harness.check()


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAM)
def test_generated_streams_match_the_reference_model(ops: list[tuple[Any, ...]]) -> None:
    run(Harness(), ops)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAM, STREAM)
def test_restored_book_behaves_like_the_original(
    first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]
) -> None:
    original = Harness()
    run(original, first)
    model_copy = ModelBook([ModelOrder(*o) for o in original.model.snapshot()])
    restored = Harness(OrderBook.restore(original.book.snapshot()), model_copy)
    restored.next_id, restored.used_ids = original.next_id, list(original.used_ids)
    restored.gone = set(original.gone)
    restored.check()
    run(original, then)
    run(restored, then)
    assert restored.book.snapshot() == original.book.snapshot()


def test_long_seeded_stream_matches_the_reference_model() -> None:
    # Longer and deeper than hypothesis streams: many orders per level, so lazy cancels and
    # queue compaction get exercised; the model is checked after every op.
    rng = random.Random(7)
    harness = Harness()
    for _ in range(8_000):
        draw = rng.random()
        if draw < 0.3 and harness.used_ids:
            harness.cancel(rng.choice(harness.used_ids[-400:]))
        else:
            price = None if draw > 0.95 else rng.randint(40, 60) + (rng.randint(-3, 3))
            harness.submit(
                harness.new_id(),
                rng.randrange(12),
                rng.choice(["buy", "sell"]),
                rng.randint(1, 30),
                price,
                rng.choice([GTC, GTC, GTC, GTC, IOC, FOK]),
            )


def test_same_stream_gives_same_fills() -> None:
    def play() -> list[list[Fill]]:
        rng = random.Random(11)
        book = OrderBook()
        out = []
        for order_id in range(2_000):
            ex = book.submit(
                order_id, rng.randrange(5), rng.choice(["buy", "sell"]), rng.randint(1, 9), rng.randint(1, 20)
            )
            out.append(ex.fills)
        return out

    assert play() == play()
