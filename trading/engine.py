"""Pure price-time-priority order book for one instrument: orders in, fills out.

Owns matching, self-trade prevention and the resting book; risk, money and persistence wrap it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from itertools import pairwise
from typing import Any, Final, NamedTuple, cast

BUY: Final = "buy"
SELL: Final = "sell"
GTC: Final = "GTC"
IOC: Final = "IOC"
FOK: Final = "FOK"

SIDES: Final = (BUY, SELL)
# A tuple, not a set: membership of an unhashable value must give False, not TypeError.
TIMES_IN_FORCE: Final = (GTC, IOC, FOK)

# Market orders compare every level key against this, so every level crosses.
_NO_LIMIT: Final = float("-inf")
# A level's queue is rebuilt once its lazily deleted (cancelled) entries outnumber its live
# orders by this much: rebuilding costs O(live) and happens at most once per ~live cancels,
# so cancel stays O(1) amortised and a queue never holds more than ~2x its live orders.
_COMPACT_SLACK: Final = 32


class EngineError(ValueError):
    """An order or command the engine refuses; the book is unchanged."""


class DuplicateOrderError(EngineError):
    """The order id is already resting on the book."""


class BookInvariantError(RuntimeError):
    """:meth:`OrderBook.audit` found the book internally inconsistent (a bug, never input)."""


class Fill(NamedTuple):
    """One trade between a resting (maker) order and the incoming (taker) order."""

    maker_id: Hashable
    taker_id: Hashable
    price: int
    quantity: int


class Execution(NamedTuple):
    """What one :meth:`OrderBook.submit` did.

    ``quantity == filled + resting + dropped`` always holds for the submitted quantity.
    """

    fills: list[Fill]
    cancelled: list[Hashable]
    resting: int
    dropped: int
    order_id: Hashable

    @property
    def filled(self) -> int:
        return sum(fill.quantity for fill in self.fills)


# tuple.__new__ builds a NamedTuple without its Python-level __new__ frame; Fill and
# Execution are made once per fill / per order, so this is on the hot path.
_new_fill = cast("Callable[[type[Fill], tuple[Hashable, Hashable, int, int]], Fill]", tuple.__new__)
_new_execution = cast(
    "Callable[[type[Execution], tuple[list[Fill], list[Hashable], int, int, Hashable]], Execution]",
    tuple.__new__,
)


class RestingOrder(NamedTuple):
    """A live order as the book holds it; the field order is what :meth:`OrderBook.restore` takes."""

    order_id: Hashable
    owner: Hashable
    side: str
    price: int
    remaining: int  # what is left to fill, not what was first submitted


# A resting order is a 4-item list [remaining, order_id, owner, level] rather than an
# object: creating a list is several times cheaper than calling a class, and unpacking it
# is one specialised opcode. remaining == 0 marks an entry cancelled but not yet popped
# from its level's queue (lazy deletion); a filled order is popped at once.
_Order = list[Any]


class _Level:
    """All resting orders at one price on one side, in arrival order."""

    __slots__ = ("key", "price", "side", "total", "count", "queue")

    def __init__(self, key: int, price: int, side: str) -> None:
        self.key = key
        self.price = price
        self.side = side
        self.total = 0  # sum of remaining over live orders, kept for depth() and FOK
        self.count = 0  # live orders; the queue may also hold cancelled entries
        self.queue: deque[_Order] = deque()


def _check_quantity(quantity: object) -> None:
    if type(quantity) is not int or quantity <= 0:
        raise EngineError(f"quantity must be a positive int, got {quantity!r}")


def _check_price(price: object) -> None:
    if type(price) is not int or price <= 0:
        raise EngineError(f"price must be a positive int (ticks), got {price!r}")


class OrderBook:
    """The resting orders of one instrument and the rules that match against them.

    Semantics (the Django layer relies on these exactly):

    * Prices are positive ``int`` ticks, quantities positive ``int`` lots (exactly ``int``:
      ``bool``, ``float``, ``Decimal`` are rejected). ``order_id`` and ``owner`` are opaque
      values compared with ``==`` (ints, strings, tuples); ``order_id`` must be hashable and
      unique among *live* (resting) orders. The id of a filled or cancelled order is forgotten
      and may be used again.
    * Price-time priority: better price first, then earlier arrival. A fill is always at the
      resting (maker) order's price. A partly filled maker keeps its place in the queue.
    * ``tif``: ``GTC`` rests what does not fill; ``IOC`` drops it; ``FOK`` fills completely or
      does nothing at all.
    * A market order (``price=None``) has no price limit and never rests: with ``tif="GTC"`` (the
      default) it is treated as ``IOC``; ``tif="FOK"`` keeps its all-or-nothing meaning.
    * Self-trade prevention (cancel resting): when the incoming order meets, in priority order,
      a resting order of the same owner, that resting order is cancelled, its id reported in
      ``Execution.cancelled`` and matching goes on. Own orders the incoming order never reaches
      (because it filled first or its limit stopped it) are left alone.
    * FOK and STP: before anything happens, a FOK order counts the quantity it could fill at its
      limit *excluding its owner's own orders* (those would be cancelled, not filled). If that is
      short of its quantity it is killed with no side effect whatsoever: no fills, no self-trade
      cancellations, nothing rests (``dropped == quantity``). Otherwise it matches like an IOC
      order, which includes cancelling own orders it meets on the way.
    * Every input is validated before the book is touched: a rejected call raises
      :class:`EngineError` (a ``ValueError``) and leaves the book exactly as it was.

    Layout: each side keeps a dict key -> level and a sorted list of keys with the *best
    last*, so taking or emptying the best level is a ``list.pop()``. A bid's key is its
    price, an ask's key is minus its price; "crosses a limit" is then ``key >= limit_key``
    on both sides.
    """

    __slots__ = ("_orders", "_bid_keys", "_bid_levels", "_ask_keys", "_ask_levels")

    def __init__(self) -> None:
        # Live orders by id; dict order is arrival order, which snapshot() relies on.
        self._orders: dict[Hashable, _Order] = {}
        self._bid_keys: list[int] = []
        self._bid_levels: dict[int, _Level] = {}
        self._ask_keys: list[int] = []
        self._ask_levels: dict[int, _Level] = {}

    # ------------------------------------------------------------------ commands

    def submit(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        quantity: int,
        price: int | None = None,
        tif: str = GTC,
    ) -> Execution:
        """Match an incoming order, then rest (GTC) or drop (IOC, FOK, market) the remainder.

        Raises :class:`EngineError` (book untouched) on bad input or a live duplicate id.
        """
        # --- validate everything before touching the book
        if type(quantity) is not int or quantity <= 0:
            raise EngineError(f"quantity must be a positive int, got {quantity!r}")
        if tif not in TIMES_IN_FORCE:
            raise EngineError(f"tif must be one of {TIMES_IN_FORCE}, got {tif!r}")
        limit_key: int | float
        if side == BUY:
            opp_keys = self._ask_keys
            opp_levels = self._ask_levels
        elif side == SELL:
            opp_keys = self._bid_keys
            opp_levels = self._bid_levels
        else:
            raise EngineError(f"side must be 'buy' or 'sell', got {side!r}")
        if price is None:
            limit_key = _NO_LIMIT
            if tif == GTC:
                tif = IOC  # a market order has no price to rest at
        else:
            if type(price) is not int or price <= 0:
                raise EngineError(f"price must be a positive int (ticks), got {price!r}")
            limit_key = -price if side == BUY else price
        orders = self._orders
        try:
            if order_id in orders:
                raise DuplicateOrderError(f"order id {order_id!r} is already resting")
        except TypeError:
            raise EngineError(f"order id must be hashable, got {order_id!r}") from None

        fills: list[Fill] = []
        cancelled: list[Hashable] = []
        if tif == FOK and not self._can_fill(opp_keys, opp_levels, limit_key, owner, quantity):
            return _new_execution(Execution, (fills, cancelled, 0, quantity, order_id))

        # --- match against the opposite side, best level first
        remaining = quantity
        while remaining and opp_keys and opp_keys[-1] >= limit_key:
            key = opp_keys[-1]
            level = opp_levels[key]
            queue = level.queue
            fill_price = level.price
            while remaining:
                head = queue[0]  # a level with live orders always has one in its queue
                maker_qty, maker_id, maker_owner, _ = head
                if not maker_qty:
                    queue.popleft()  # cancelled earlier; lazily dropped here
                    continue
                if maker_owner == owner:
                    # Self-trade prevention: cancel the resting order, keep matching.
                    queue.popleft()
                    del orders[maker_id]
                    level.total -= maker_qty
                    cancelled.append(maker_id)
                elif maker_qty <= remaining:
                    queue.popleft()
                    del orders[maker_id]
                    level.total -= maker_qty
                    remaining -= maker_qty
                    fills.append(_new_fill(Fill, (maker_id, order_id, fill_price, maker_qty)))
                else:
                    head[0] = maker_qty - remaining
                    level.total -= remaining
                    fills.append(_new_fill(Fill, (maker_id, order_id, fill_price, remaining)))
                    remaining = 0
                    break
                level.count -= 1
                if not level.count:
                    opp_keys.pop()
                    del opp_levels[key]
                    break

        # --- rest or drop what is left
        if not remaining:
            return _new_execution(Execution, (fills, cancelled, 0, 0, order_id))
        if tif != GTC:
            return _new_execution(Execution, (fills, cancelled, 0, remaining, order_id))
        assert price is not None  # market orders were turned into IOC above
        self._rest(order_id, owner, side, price, remaining)
        return _new_execution(Execution, (fills, cancelled, remaining, 0, order_id))

    def cancel(self, order_id: object) -> bool:
        """Remove a resting order. False (never an error, whatever the argument) if it is not resting."""
        try:
            order = self._orders.pop(order_id, None)
        except TypeError:  # unhashable: cannot be resting
            return False
        if order is None:
            return False
        level: _Level = order[3]
        level.total -= order[0]
        order[0] = 0
        level.count -= 1
        queue = level.queue
        if not level.count:
            self._drop_level(level)
        elif queue[0] is order:
            queue.popleft()
        elif len(queue) > 2 * level.count + _COMPACT_SLACK:
            level.queue = deque([entry for entry in queue if entry[0]])
        return True

    @classmethod
    def restore(cls, orders: Iterable[tuple[Hashable, Hashable, str, int, int]]) -> OrderBook:
        """Rebuild a book from resting orders given oldest first, without matching.

        Takes ``(order_id, owner, side, price, remaining)`` tuples, e.g. :meth:`snapshot`'s
        :class:`RestingOrder` items. Raises :class:`EngineError` on bad input, a duplicate id,
        or orders that would cross (a resting book is never crossed).
        """
        book = cls()
        for order_id, owner, side, price, quantity in orders:
            if side not in SIDES:
                raise EngineError(f"side must be 'buy' or 'sell', got {side!r}")
            _check_price(price)
            _check_quantity(quantity)
            try:
                if order_id in book._orders:
                    raise DuplicateOrderError(f"order id {order_id!r} appears twice")
            except TypeError:
                raise EngineError(f"order id must be hashable, got {order_id!r}") from None
            book._rest(order_id, owner, side, price, quantity)
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            raise EngineError(f"restored book would be crossed: bid {bid} >= ask {ask}")
        return book

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> int | None:
        keys = self._bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._ask_keys
        return -keys[-1] if keys else None

    def depth(self, levels: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``(bids, asks)``: up to ``levels`` (all if None) ``(price, total quantity)``, best first."""
        if levels is not None and (type(levels) is not int or levels < 0):
            raise EngineError(f"levels must be a non-negative int or None, got {levels!r}")
        return (
            self._side_depth(self._bid_keys, self._bid_levels, levels),
            self._side_depth(self._ask_keys, self._ask_levels, levels),
        )

    def order(self, order_id: object) -> RestingOrder | None:
        """The live order with this id (remaining quantity), or None."""
        try:
            order = self._orders.get(order_id)
        except TypeError:
            return None
        return None if order is None else self._view(order)

    def snapshot(self) -> list[RestingOrder]:
        """Every resting order, oldest first: feed it to :meth:`restore` to get this book back."""
        view = self._view
        return [view(order) for order in self._orders.values()]

    def resting_count(self) -> int:
        return len(self._orders)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        try:
            return order_id in self._orders
        except TypeError:
            return False

    def __iter__(self) -> Iterator[RestingOrder]:
        return iter(self.snapshot())

    def __repr__(self) -> str:
        return (
            f"<OrderBook {len(self._orders)} orders, bid {self.best_bid()} / ask {self.best_ask()}, "
            f"{len(self._bid_keys)}x{len(self._ask_keys)} levels>"
        )

    def audit(self) -> None:
        """Check every internal invariant (O(n)); raise :class:`BookInvariantError` if one fails.

        For tests and for a sanity check after :meth:`restore`; never needed on the hot path.
        """
        seen: set[int] = set()
        for side, keys, levels, sign in (
            (BUY, self._bid_keys, self._bid_levels, 1),
            (SELL, self._ask_keys, self._ask_levels, -1),
        ):
            if any(a >= b for a, b in pairwise(keys)):
                raise BookInvariantError(f"{side} keys not strictly ascending: {keys}")
            if set(keys) != set(levels):
                raise BookInvariantError(f"{side} key list and level map disagree")
            for key, level in levels.items():
                if level.key != key or level.price * sign != key or level.side != side:
                    raise BookInvariantError(f"{side} level {key} mislabelled")
                live = [entry for entry in level.queue if entry[0]]
                if any(entry[0] < 0 for entry in level.queue):
                    raise BookInvariantError(f"{side} level {level.price} has a negative quantity")
                if not live or len(live) != level.count:
                    raise BookInvariantError(f"{side} level {level.price} count {level.count} != {len(live)}")
                if sum(entry[0] for entry in live) != level.total:
                    raise BookInvariantError(f"{side} level {level.price} total != sum of its orders")
                for entry in live:
                    if entry[3] is not level or self._orders.get(entry[1]) is not entry:
                        raise BookInvariantError(f"order {entry[1]!r} not indexed at its level")
                    seen.add(id(entry))
        if len(seen) != len(self._orders):
            raise BookInvariantError("order index holds orders that are on no level")
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            raise BookInvariantError(f"crossed book: bid {bid} >= ask {ask}")

    # ------------------------------------------------------------------ internals

    def _rest(self, order_id: Hashable, owner: Hashable, side: str, price: int, quantity: int) -> None:
        if side == BUY:
            key, keys, levels = price, self._bid_keys, self._bid_levels
        else:
            key, keys, levels = -price, self._ask_keys, self._ask_levels
        level = levels.get(key)
        if level is None:
            level = levels[key] = _Level(key, price, side)
            insort(keys, key)
        order = [quantity, order_id, owner, level]
        level.queue.append(order)
        level.count += 1
        level.total += quantity
        self._orders[order_id] = order

    def _drop_level(self, level: _Level) -> None:
        if level.side == BUY:
            keys, levels = self._bid_keys, self._bid_levels
        else:
            keys, levels = self._ask_keys, self._ask_levels
        del keys[bisect_left(keys, level.key)]
        del levels[level.key]

    @staticmethod
    def _can_fill(
        keys: list[int], levels: dict[int, _Level], limit_key: int | float, owner: Hashable, quantity: int
    ) -> bool:
        """Whether ``quantity`` can fill within the limit from orders *not* of ``owner``."""
        available = 0
        for index in range(len(keys) - 1, -1, -1):
            key = keys[index]
            if key < limit_key:
                break
            for maker_qty, _, maker_owner, _ in levels[key].queue:
                if maker_qty and maker_owner != owner:
                    available += maker_qty
                    if available >= quantity:
                        return True
        return False

    @staticmethod
    def _side_depth(keys: list[int], levels: dict[int, _Level], count: int | None) -> list[tuple[int, int]]:
        best_first = reversed(keys) if count is None else reversed(keys[-count:] if count else [])
        return [(levels[key].price, levels[key].total) for key in best_first]

    @staticmethod
    def _view(order: _Order) -> RestingOrder:
        level: _Level = order[3]
        return RestingOrder(order[1], order[2], level.side, level.price, order[0])
