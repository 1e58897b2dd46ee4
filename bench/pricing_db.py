"""Benchmark: reference prices for 20 instruments over 1,000,000 stored trades, and a day's spot index
over 100,000 trades, on PostgreSQL, through the real services (trading/pricing_services.py).

    .venv/bin/python bench/pricing_db.py [--trades N] [--index-trades M] [--runs R] [--keep-db]

It creates an isolated database `ingot_bench_pricing` (dropped and re-created at the start, dropped at
the end unless --keep-db), migrates it, creates 20 instruments over 12 metals' grades and COPYs the trades
in: N - M spread over the last 30 days across all 20 instruments, plus M on one index day of GA-6N-CN
(5 days ago, outside the 72 h reference window) with some self trades and outliers. Then it times:

  1. references_compute for all 20 instruments, R runs, each for a new one-minute window (every run
     computes and stores 20 results and moves 20 bands); then a replay of the last window (idempotent:
     returns the stored rows);
  2. index_publish for GA-6N on the hot day, R runs (the published row is deleted between runs).

Goal: ≤ 1 s per reference run for all 20 instruments. Needs PostgreSQL on 127.0.0.1:5432 (user postgres).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "ingot_bench_pricing"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.test",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
}
# 20 instruments: (grade, region, base price USD/kg).
INSTRUMENTS = [
    ("GA-6N", "CN", 580), ("GA-6N", "EU", 820), ("GA-7N", "CN", 820), ("GA-4N", "CN", 390), ("GE-6N", "CN", 1750),
    ("GE-5N", "EU", 1500), ("IN-5N5", "EU", 450), ("IN-6N", "CN", 520), ("IN-4N", "CN", 300), ("SB-4N", "CN", 38),
    ("BI-4N", "CN", 12), ("W-4N", "CN", 62), ("W-3N5", "EU", 55), ("MO-4N", "CN", 55), ("RE-5N5", "EU", 3200),
    ("RE-6N", "EU", 3600), ("HF-4N", "EU", 1200), ("TA-4N", "EU", 400), ("NB-4N", "EU", 90), ("TE-5N", "CN", 110),
]
COLUMNS = ("instrument_id", "buy_order_id", "sell_order_id", "buyer_id", "seller_id", "aggressor", "price",
           "quantity_kg", "notional", "buyer_fee", "seller_fee", "executed_at")


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def create_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                   env={**os.environ, **ENV}, check=True)


def drop_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def setup_django() -> None:
    os.environ.update(ENV)
    import django

    django.setup()


def build_market(total: int, index_trades: int, now: datetime, hot_day_start: datetime) -> dict[str, object]:
    from django.db import connection

    from members.models import Member
    from receipts.models import Grade
    from trading.models import Instrument, Order

    members = [Member.objects.create(name=f"Bench member {i}", legal_id=f"BENCH-{i:03d}", country="CN",
                                     kyc_status="approved") for i in range(8)]
    instruments, orders = [], {}
    for grade, region, base in INSTRUMENTS:
        inst = Instrument.objects.create(code=f"{grade}-{region}", grade=Grade.objects.get(code=grade), region=region,
                                         currency="USD", tick_size=Decimal("0.01"), lot_size_kg=Decimal("0.001"),
                                         band_pct=Decimal(10), reference_price=Decimal(base),
                                         band_low=Decimal(base) * Decimal("0.9"), band_high=Decimal(base) * Decimal("1.1"))
        instruments.append(inst)
        # Trades need a buy and a sell order; every bench trade of an instrument points at the same two.
        orders[inst.pk] = [Order.objects.create(member=members[0], instrument=inst, client_order_id=f"bench-{inst.pk}-{s}",
                                                side=s, order_type="limit", tif="GTC", price=Decimal(base),
                                                quantity_kg=Decimal("1000000"), filled_kg=Decimal("1000000"),
                                                status="filled", book_seq=0).pk for s in ("buy", "sell")]
    rng = random.Random(2026)
    spread = total - index_trades
    per_instrument = spread // len(instruments)
    span = timedelta(days=30).total_seconds()
    member_ids = [m.pk for m in members]
    hot = next(i for i in instruments if i.code == "GA-6N-CN")

    def rows():
        for inst, (_, _, base) in zip(instruments, INSTRUMENTS, strict=True):
            buy, sell = orders[inst.pk]
            level = float(base)
            # Time order = id order, as order entry produces them.
            for k in range(per_instrument):
                level *= 1 + rng.gauss(0, 0.0015)
                at = now - timedelta(seconds=span * (1 - (k + 1) / per_instrument))
                yield _row(inst.pk, buy, sell, rng, member_ids, level, at, self_share=0.0)
        buy, sell = orders[hot.pk]
        for k in range(index_trades):
            at = hot_day_start + timedelta(seconds=86399 * k / index_trades)
            price = 575 * (1 + rng.gauss(0, 0.01))
            if rng.random() < 0.005:
                price *= rng.choice((0.75, 1.25))  # outliers, to be excluded and listed
            yield _row(hot.pk, buy, sell, rng, member_ids, price, at, self_share=0.01)

    started = time.perf_counter()
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY trading_trade ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows():
                copy.write_row(row)
        cursor.execute("ANALYZE trading_trade")
    return {"instruments": instruments, "hot": hot, "copy_s": time.perf_counter() - started}


def _row(instrument_id: int, buy: int, sell: int, rng: random.Random, members: list[int], price: float,
         at: datetime, *, self_share: float) -> tuple[object, ...]:
    buyer = rng.choice(members)
    seller = buyer if rng.random() < self_share else rng.choice([m for m in members if m != buyer])
    p = Decimal(f"{max(price, 0.05):.2f}")
    q = Decimal(rng.randint(100, 20000)) / 1000
    notional = (p * q).quantize(Decimal("0.01"))
    return (instrument_id, buy, sell, buyer, seller, "buy", p, q, notional, Decimal(0), Decimal(0), at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--index-trades", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    print(f"creating database {DB_NAME} and migrating ...", flush=True)
    create_database()
    try:
        setup_django()
        run(args)
    finally:
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            drop_database()
            print(f"dropped database {DB_NAME}")


def run(args: argparse.Namespace) -> None:
    from django.utils import timezone

    from trading import pricing
    from trading.models import Trade
    from trading.pricing_config import default_pricing_config
    from trading.pricing_models import IndexValue, ReferencePrice
    from trading.pricing_services import index_publish, metal_config, references_compute, window_end_for

    method = default_pricing_config().index
    now = timezone.now()
    window_end = window_end_for(now)
    hot_day = (now + method.utc_offset).date() - timedelta(days=5)
    hot_start, hot_end = pricing.index_window(hot_day, method)
    print(f"inserting {args.trades:,} trades (COPY) ...", flush=True)
    market = build_market(args.trades, args.index_trades, now - timedelta(minutes=args.runs + 1), hot_start)
    instruments = market["instruments"]
    stored = Trade.objects.count()
    in_window = sum(Trade.objects.filter(instrument=i, executed_at__gt=window_end - metal_config(i).trade_window,
                                         executed_at__lte=window_end).count() for i in instruments)
    print(f"  {stored:,} trades stored in {market['copy_s']:.1f} s; {len(instruments)} instruments; "
          f"{in_window:,} of them inside the reference trade windows (72 h; 336 h for rhenium and hafnium)")
    print()

    print(f"1. reference prices: references_compute for all {len(instruments)} instruments, one new window per run")
    timings = []
    for k in range(args.runs - 1, -1, -1):
        end = window_end - timedelta(minutes=k)
        started = time.perf_counter()
        rows = references_compute(instruments=instruments, window_end=end)
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        print(f"   run {len(timings)}: window {end:%H:%M} UTC  {len(rows)} stored  {elapsed * 1000:7.1f} ms "
              f"({elapsed / len(rows) * 1000:.1f} ms per instrument)")
    started = time.perf_counter()
    replay = references_compute(instruments=instruments, window_end=window_end)
    replay_s = time.perf_counter() - started
    print(f"   replay of the last window (idempotent, nothing recomputed): {replay_s * 1000:.1f} ms, "
          f"{ReferencePrice.objects.filter(window_end=window_end).count()} rows for it")
    goal = "MET" if max(timings) <= 1.0 else "MISSED"
    print(f"   => per run: min {min(timings) * 1000:.0f} ms, median {statistics.median(timings) * 1000:.0f} ms, "
          f"max {max(timings) * 1000:.0f} ms for 20 instruments (goal <= 1000 ms: {goal})")
    sample = next(r for r in replay if r.instrument.code == "GA-6N-CN")
    print(f"   GA-6N-CN: value {sample.value}, trades {sample.components['trades']['count']:,} in window, "
          f"vol {sample.vol} %, band {sample.band_low}-{sample.band_high} (+-{sample.band_pct} %)")
    print()

    hot = market["hot"]
    day_trades = Trade.objects.filter(instrument__grade=hot.grade, instrument__esg_class="",
                                      executed_at__gte=hot_start, executed_at__lt=hot_end).count()
    print(f"2. spot index: index_publish for {hot.grade.code} on {hot_day} over {day_trades:,} trades "
          f"(GA-6N-CN and GA-6N-EU)")
    timings = []
    for run_no in range(1, args.runs + 1):
        IndexValue.objects.filter(grade=hot.grade, day=hot_day).delete()
        started = time.perf_counter()
        value = index_publish(grade=hot.grade, day=hot_day)
        elapsed = time.perf_counter() - started
        timings.append(elapsed)
        print(f"   run {run_no}: {elapsed * 1000:7.1f} ms")
    reasons = {"self_trade": 0, "outlier": 0}
    for item in value.excluded:
        reasons[item["reason"]] += 1
    print(f"   => per run: min {min(timings) * 1000:.0f} ms, median {statistics.median(timings) * 1000:.0f} ms, "
          f"max {max(timings) * 1000:.0f} ms")
    print(f"   index {value.value} ({value.status}), {value.trade_count:,} eligible trades from {value.seller_count} "
          f"sellers, volume {value.volume:,} kg, median {value.median}; excluded and listed: "
          f"{reasons['self_trade']:,} self trades, {reasons['outlier']:,} outliers")


if __name__ == "__main__":
    main()
