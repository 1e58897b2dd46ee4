"""Benchmark: server time to render the portal's instrument page with a full book.

What is measured: Django's test client (in process, no network) GETs /markets/GA-6N-CN/ for a signed-in
member: every middleware, the session, the page's reads (instrument and 24 h figures, 50-level depth
aggregated in SQL and shown 12 levels a side, 25 recent trades, 1 h candles folded from 14 days of trades,
the ticket's cash and eligible receipts, the member's open orders) and the template. Also the live panel
the page polls every 2 s (full render, and the 204 answer when nothing changed) and the page for an
anonymous visitor. Timing is wall clock per request; the median and p95 are printed.

    .venv/bin/python bench/portal_render.py [--requests N] [--levels L] [--trades T] [--keep-db]

The book is built through trading.services.order_place (real reservations, matching and settlement):
L resting sell and L resting buy levels (a market maker's, one order each), T crossing trades, and two resting
buys of the trader whose page is measured first (the market maker's page, with its 2L orders listed, second). The trades are then
spread over the last 10 days by rewriting Trade.executed_at in this throwaway database, so the 1 h chart
has a realistic number of candles (the services stamp every trade "now"). Needs PostgreSQL on
127.0.0.1:5432 (user postgres); it creates the database `ingot_bench_portal`, and drops it at the end
unless --keep-db.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "ingot_bench_portal"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.test",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
    "DJANGO_DEBUG": "false",
}
CODE = "GA-6N-CN"


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
    from django.db import connections

    connections.close_all()
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def build_market(levels: int, trades: int) -> dict[str, Any]:
    """A gallium book with `levels` price levels a side and `trades` trades, all through the services."""
    from django.utils import timezone

    from receipts.services import catalogue_sync
    from tests.factories.members import UserFactory
    from tests.factories.receipts import ReceiptWorld
    from tests.factories.trading import funded_member, instrument
    from trading.models import Trade
    from trading.services import order_place

    catalogue_sync()
    world = ReceiptWorld()
    inst = instrument(CODE)
    maker = funded_member("50000000.00", name="Bench Market Maker")
    world.receipt(maker, quantity=f"{levels * 10}.000")
    seller = funded_member("1000.00", name="Bench Seller")
    world.receipt(seller, quantity=f"{trades * 2}.000")
    buyer = funded_member("50000000.00", name="Bench Buyer")
    maker_user = UserFactory(username="bench-maker", member=maker)
    trader_user = UserFactory(username="bench-trader", member=buyer)
    counter = iter(range(10**9))

    def place(member: Any, side: str, quantity: str, price: str, tif: str = "GTC") -> None:
        order_place(member=member, instrument=inst, side=side, order_type="limit", tif=tif, quantity_kg=quantity,
                    price=price, client_order_id=f"bench-{next(counter)}")

    started = time.perf_counter()
    for n in range(trades):  # crossing pairs near the reference: 1 or 2 kg each
        price = f"{Decimal('575.00') + Decimal(n % 21) * Decimal('0.50'):.2f}"
        quantity = str(1 + n % 2)
        place(seller, "sell", quantity, price)
        place(buyer, "buy", quantity, price, tif="IOC")
    for level in range(levels):  # resting levels either side of the trades, 0.50 apart
        place(maker, "sell", str(1 + level % 9), f"{Decimal('586.00') + Decimal(level) * Decimal('0.50'):.2f}")
        place(maker, "buy", str(1 + level % 7), f"{Decimal('574.00') - Decimal(level) * Decimal('0.50'):.2f}")
    built = time.perf_counter() - started
    # Spread the trades over 10 days (newest now), keeping their order: a realistic 1 h chart.
    now = timezone.now()
    ids = list(Trade.objects.order_by("executed_at", "pk").values_list("pk", flat=True))
    step = timedelta(days=10) / max(1, len(ids))
    for age, pk in enumerate(reversed(ids)):
        Trade.objects.filter(pk=pk).update(executed_at=now - step * age)
    # The trader rests two orders of its own, as a member watching the book typically does.
    place(buyer, "buy", "3", "570.00")
    place(buyer, "buy", "5", "569.50")
    return {"maker": maker_user, "trader": trader_user, "built_s": built, "trades": Trade.objects.count()}


def measure(label: str, client: Any, url_of: Callable[[], str], count: int, expect: int) -> dict[str, Any]:
    """`url_of` is called outside the timed part (the 204 case needs the version current this minute)."""
    from django.db import connection

    for _ in range(5):  # warm up: template loader, book cache, connection
        client.get(url_of())
    url = url_of()
    queries: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = client.get(url)
    assert response.status_code == expect, (label, response.status_code)
    times = []
    for _ in range(count):
        url = url_of()
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == expect
    times.sort()
    return {"label": label, "median": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1],
            "min": times[0], "queries": len(queries), "bytes": len(response.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--levels", type=int, default=50)
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    os.environ.update(ENV)
    create_database()
    import django

    django.setup()
    try:
        from django.test import Client

        from trading import selectors
        from trading.models import Instrument

        world = build_market(args.levels, args.trades)
        inst = Instrument.objects.get(code=CODE)
        depth = selectors.depth(inst, 1000)
        trader, maker, anonymous = Client(), Client(), Client()
        trader.force_login(world["trader"])
        maker.force_login(world["maker"])
        page, live = f"/markets/{CODE}/", f"/markets/{CODE}/live/"

        def unchanged() -> str:
            return f"{live}?v={selectors.market_version(Instrument.objects.get(code=CODE))}"

        results = [
            measure("instrument page, trader (2 own orders)", trader, lambda: page, args.requests, 200),
            measure(f"instrument page, maker ({2 * args.levels} own orders)", maker, lambda: page, args.requests, 200),
            measure("instrument page, anonymous", anonymous, lambda: page, args.requests, 200),
            measure("live panel (poll), full render", anonymous, lambda: live, args.requests, 200),
            measure("live panel (poll), nothing new: 204", anonymous, unchanged, args.requests, 204),
        ]
        print(f"book: {len(depth['asks'])} ask levels, {len(depth['bids'])} bid levels; {world['trades']} trades "
              f"over 10 days (built through order_place in {world['built_s']:.1f} s)")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"PostgreSQL, Django test client in process, DEBUG off, {args.requests} requests each after 5 warm-up; "
              f"machine load average {load} (shared machine: min is the undisturbed figure)")
        print(f"{'what':<42} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} {'queries':>8} {'KiB':>6}")
        for r in results:
            print(f"{r['label']:<42} {r['median']:>10.2f} {r['p95']:>8.2f} {r['min']:>8.2f} {r['queries']:>8} "
                  f"{r['bytes'] / 1024:>6.1f}")
    finally:
        if not args.keep_db:
            drop_database()


if __name__ == "__main__":
    main()
