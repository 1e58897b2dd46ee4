"""Times the pure pricing functions on in-memory data: the daily index over 100,000 trades and
reference prices (with bands and forward curves) for 20 instruments. Run: python bench/pricing_pure.py"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trading.factors import parse_factor_csv  # noqa: E402
from trading.pricing import (  # noqa: E402
    IndexTrade,
    daily_index,
    forward_curve,
    price_band_for,
    realised_volatility,
    reference_price,
)
from trading.pricing_config import default_pricing_config  # noqa: E402

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
REPEATS = 5
T = TypeVar("T")


def timed(label: str, work: Callable[[], T], repeats: int = REPEATS) -> T:
    runs = []
    result = work()  # warm-up run, also the result shown
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    print(
        f"{label}: median {statistics.median(runs) * 1000:.1f} ms, best {min(runs) * 1000:.1f} ms "
        f"({repeats} runs)"
    )
    return result


def index_trades(count: int, rng: random.Random) -> list[IndexTrade]:
    trades = []
    for i in range(count):
        seller = rng.randrange(60)
        # ~1 % self-trades and ~0.5 % fat-finger prints so every branch is exercised
        buyer = seller if rng.random() < 0.01 else (seller + 1 + rng.randrange(59)) % 60
        price = Decimal(rng.randint(57000, 59000)) / 100
        if rng.random() < 0.005:
            price *= 2
        trades.append(
            IndexTrade(
                i,
                NOW - timedelta(seconds=rng.randrange(86400)),
                price,
                Decimal(rng.randint(1, 500)) / 10,
                buyer,
                seller,
            )
        )
    return trades


def main() -> None:
    rng = random.Random(20261125)
    config = default_pricing_config()
    print(f"python {sys.version.split()[0]}; pure functions, in-memory data")

    trades = index_trades(100_000, rng)
    result = timed(
        "daily_index over 100,000 trades", lambda: daily_index(trades, Decimal("580"), config.index)
    )
    print(
        f"  -> {result.status} {result.value} USD/kg, {result.trade_count} eligible trades, "
        f"{result.seller_count} sellers, {len(result.excluded)} excluded"
    )

    factors = parse_factor_csv(ROOT / "trading" / "data" / "factors_demo.csv", now=NOW)
    # 20 instruments: every metal's CN instrument plus low-carbon twins of the most traded eight
    instruments = [(f"{m}-CN", config.metals[m]) for m in config.metals]
    instruments += [(f"{m}-CN-LC", config.metals[m]) for m in list(config.metals)[:8]]
    books = {}
    for code, _ in instruments:
        mid = Decimal(rng.randint(20000, 200000)) / 100
        fills = [
            (
                NOW - timedelta(minutes=rng.randrange(72 * 60)),
                mid * Decimal(rng.randint(97, 103)) / 100,
                Decimal(rng.randint(1, 50)),
            )
            for _ in range(500)
        ]
        closes = [mid * Decimal(rng.randint(95, 105)) / 100 for _ in range(31)]
        books[code] = (mid, fills, closes)

    def price_all() -> list[tuple[str, Decimal, tuple[Decimal, Decimal], dict[int, Decimal]]]:
        out = []
        for code, metal in instruments:
            mid, fills, closes = books[code]
            ref = reference_price(
                config=metal,
                last_reference=mid,
                trades=fills,
                best_bid=mid - Decimal("1"),
                best_ask=mid + Decimal("1"),
                factor_observations=factors,
                now=NOW,
                last_reference_at=NOW - timedelta(days=30),
            )
            assert ref.value is not None
            band = price_band_for(ref.value, metal, realised_volatility(closes), Decimal("0.01"))
            out.append((code, ref.value, band, forward_curve(ref.value, metal, factors, NOW)))
        return out

    priced = timed(
        "reference_price + band + forward curve for 20 instruments (500 trades each, "
        f"{len(factors)} factor observations)",
        price_all,
    )
    code, value, band, curve = priced[0]
    print(f"  -> e.g. {code}: reference {value}, band {band[0]}..{band[1]}, forward {curve}")


if __name__ == "__main__":
    main()
