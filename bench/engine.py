"""Benchmark of trading.engine.OrderBook against a list-based reference book on one seeded stream.

Run: .venv/bin/python bench/engine.py [--ops N] [--runs R] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from bisect import insort
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# Run as a script from anywhere: make the repo root importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trading.engine import FOK, GTC, IOC, OrderBook  # noqa: E402

TARGET_RESTING = 2_400
# Passive limits land 1..PASSIVE_RANGE ticks behind the opposite touch; with the touch drifting
# this gives ~50 levels per side.
PASSIVE_RANGE = 36
OWNERS = 200
# Max market quantity when the book holds TARGET_RESTING orders (scaled by (resting/target)^2);
# tuned so the book settles near TARGET_RESTING.
MARKET_SIZE = 380
START_PRICE = 100_000

# A stream entry: (True, submit args) or (False, order id to cancel).
Op = tuple[bool, Any]
# What one op did, in a shape both books produce: comparable across them.
Outcome = tuple[Any, ...] | bool


class Book(Protocol):
    def submit(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        quantity: int,
        price: int | None = ...,
        tif: str = ...,
    ) -> Any: ...

    def cancel(self, order_id: Hashable) -> bool: ...


@dataclass(eq=False)  # identity equality: list.remove() must find this very entry
class ReferenceEntry:
    priority: int  # -price for bids, price for asks: ascending priority is best first
    seq: int  # arrival order
    remaining: int
    order_id: Hashable
    owner: Hashable
    price: int


def _priority(entry: ReferenceEntry) -> tuple[int, int]:
    return entry.priority, entry.seq


class ReferenceBook:
    """Obviously correct, slow book: each side one list sorted by price-time priority, scanned from the front."""

    def __init__(self) -> None:
        self.bids: list[ReferenceEntry] = []
        self.asks: list[ReferenceEntry] = []
        self.live: dict[Hashable, ReferenceEntry] = {}
        self.seq = 0

    def submit(
        self,
        order_id: Hashable,
        owner: Hashable,
        side: str,
        quantity: int,
        price: int | None = None,
        tif: str = GTC,
    ) -> tuple[list[tuple[Hashable, Hashable, int, int]], list[Hashable], int, int]:
        if price is None and tif == GTC:
            tif = IOC
        book = self.asks if side == "buy" else self.bids

        def crosses(entry: ReferenceEntry) -> bool:
            if price is None:
                return True
            return entry.price <= price if side == "buy" else entry.price >= price

        if tif == FOK:
            available = sum(e.remaining for e in book if crosses(e) and e.owner != owner)
            if available < quantity:
                return [], [], 0, quantity
        fills: list[tuple[Hashable, Hashable, int, int]] = []
        cancelled: list[Hashable] = []
        remaining = quantity
        while remaining and book and crosses(book[0]):
            entry = book[0]
            if entry.owner == owner:
                cancelled.append(entry.order_id)
                book.pop(0)
                del self.live[entry.order_id]
                continue
            traded = min(remaining, entry.remaining)
            fills.append((entry.order_id, order_id, entry.price, traded))
            entry.remaining -= traded
            remaining -= traded
            if entry.remaining == 0:
                book.pop(0)
                del self.live[entry.order_id]
        if remaining and tif == GTC:
            assert price is not None
            self.seq += 1
            entry = ReferenceEntry(
                -price if side == "buy" else price, self.seq, remaining, order_id, owner, price
            )
            insort(self.bids if side == "buy" else self.asks, entry, key=_priority)
            self.live[order_id] = entry
            return fills, cancelled, remaining, 0
        return fills, cancelled, 0, remaining

    def cancel(self, order_id: Hashable) -> bool:
        entry = self.live.pop(order_id, None)
        if entry is None:
            return False
        (self.bids if entry.priority < 0 else self.asks).remove(entry)
        return True


def generate(n_ops: int, seed: int) -> tuple[list[Op], float, float]:
    """The op stream, plus the average resting order count and price-level count over it.

    Ops are chosen against a live OrderBook so cancels hit resting orders and limit prices sit
    near the touch. Market size grows with the resting count: that feedback holds the book
    near TARGET_RESTING instead of letting it random-walk.
    """
    rng = random.Random(seed)
    book = OrderBook()
    # Resting ids as a list (for a uniform random pick) plus each id's index (for O(1) removal).
    live: list[Hashable] = []
    where: dict[Hashable, int] = {}

    def forget(order_id: Hashable) -> None:
        index = where.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[index] = last
            where[last] = index

    ops: list[Op] = []
    resting_sum = levels_sum = samples = 0
    next_id = 0
    for step in range(n_ops):
        draw = rng.random()
        side = "buy" if rng.random() < 0.5 else "sell"
        if draw < 0.2 and live:
            order_id = live[rng.randrange(len(live))]
            ops.append((False, order_id))
            book.cancel(order_id)
            forget(order_id)
        else:
            next_id += 1
            owner = rng.randrange(OWNERS)
            bid, ask = book.best_bid(), book.best_ask()
            if draw < 0.3:
                scale = len(live) / TARGET_RESTING
                args: tuple[Any, ...] = (
                    next_id,
                    owner,
                    side,
                    rng.randint(1, int(MARKET_SIZE * scale * scale) + 1),
                )
            else:
                tif = GTC
                tif_draw = rng.random()
                if tif_draw < 0.04:
                    tif = IOC
                elif tif_draw < 0.08:
                    tif = FOK
                # Prices are placed relative to the opposite touch (or the other touch if that
                # side is empty) so levels stay clustered; ~4 % cross it.
                if side == "buy":
                    touch = ask if ask is not None else (bid + 1 if bid is not None else START_PRICE)
                    offset = -rng.randint(0, 3) if rng.random() < 0.04 else rng.randint(1, PASSIVE_RANGE)
                    price = touch - offset
                else:
                    touch = bid if bid is not None else (ask - 1 if ask is not None else START_PRICE)
                    offset = -rng.randint(0, 3) if rng.random() < 0.04 else rng.randint(1, PASSIVE_RANGE)
                    price = touch + offset
                args = (next_id, owner, side, rng.randint(1, 100), price, tif)
            ops.append((True, args))
            ex = book.submit(*args)
            for fill in ex.fills:
                if fill.maker_id not in book:
                    forget(fill.maker_id)
            for cancelled_id in ex.cancelled:
                forget(cancelled_id)
            if ex.resting:
                where[next_id] = len(live)
                live.append(next_id)
        if step % 100 == 0:
            bids, asks = book.depth(None)
            resting_sum += len(book)
            levels_sum += len(bids) + len(asks)
            samples += 1
    return ops, resting_sum / samples, levels_sum / samples / 2


def replay(book: Book, ops: Sequence[Op]) -> float:
    """Seconds to run the stream through ``book``; results are discarded (timing only)."""
    submit = book.submit
    cancel = book.cancel
    gc.collect()
    start = time.perf_counter()
    for is_submit, args in ops:
        if is_submit:
            submit(*args)
        else:
            cancel(args)
    return time.perf_counter() - start


def outcomes(book: Book, ops: Sequence[Op]) -> list[Outcome]:
    result: list[Outcome] = []
    for is_submit, args in ops:
        if is_submit:
            fills, cancelled, resting, dropped = tuple(book.submit(*args))[:4]
            result.append((tuple(map(tuple, fills)), tuple(cancelled), resting, dropped))
        else:
            result.append(book.cancel(args))
    return result


def best_rate(make: Callable[[], Book], ops: Sequence[Op], runs: int) -> float:
    return len(ops) / min(replay(make(), ops) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20_240_601)
    options = parser.parse_args()

    ops, avg_resting, avg_levels = generate(options.ops, options.seed)
    submits = [args for is_submit, args in ops if is_submit]
    markets = sum(1 for args in submits if len(args) == 4)
    print(
        f"stream: {len(ops):,} ops (seed {options.seed}): {len(submits) - markets:,} limit, "
        f"{len(ops) - len(submits):,} cancel, {markets:,} market"
    )
    print(
        f"book over the stream (sampled every 100 ops): avg {avg_resting:,.0f} resting orders, "
        f"avg {avg_levels:.1f} price levels per side"
    )

    engine_out = outcomes(OrderBook(), ops)
    reference_out = outcomes(ReferenceBook(), ops)
    n_fills = sum(len(out[0]) for out in engine_out if isinstance(out, tuple))
    n_stp = sum(len(out[1]) for out in engine_out if isinstance(out, tuple))
    same = engine_out == reference_out
    print(
        f"identical outcomes (fills, STP cancels, resting, dropped, cancel results): {same} "
        f"({n_fills:,} fills, {n_stp:,} self-trade cancels)"
    )

    engine_rate = best_rate(OrderBook, ops, options.runs)
    reference_runs = max(1, (options.runs + 1) // 2)  # the reference is slow; fewer runs suffice
    reference_rate = best_rate(ReferenceBook, ops, reference_runs)
    print(f"engine:    {engine_rate:>12,.0f} ops/s (best of {options.runs})")
    print(f"reference: {reference_rate:>12,.0f} ops/s (best of {reference_runs})")
    print(f"ratio:     {engine_rate / reference_rate:>12.1f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
