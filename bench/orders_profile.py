"""Where one order's time goes: the order mix of bench/orders_api.py posted in-process (Django's test client,
the full middleware and DRF stack, real PostgreSQL and Redis), without HTTP or a second process.

    .venv/bin/python bench/orders_profile.py [--orders 500]

Prints, per order: wall and CPU milliseconds of this process, SQL statements by verb and table, and the
share of wall time in each part of the path (cProfile cumulative times, taken in a second, separate run
because profiling slows Python down more than the database). The HTTP bench gives throughput; this one
says what each order costs and where, so a change can be judged on one number before the whole bench runs.

Uses its own database `ingot_bench_orders_profile` (dropped at the end).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orders_api  # noqa: E402  (bench/orders_api.py: the same market set-up and order mix)

orders_api.DB = "ingot_bench_orders_profile"

# (label, file suffix, function name): cumulative time of the outermost call of each. A part the code no
# longer has is printed as "not found", so a refactor shows up here instead of silently vanishing.
PARTS = [
    ("whole request (middleware, DRF, view)", "django/core/handlers/base.py", "get_response"),
    ("token authentication", "config/api/authentication.py", "authenticate_credentials"),
    ("throttles", "rest_framework/views.py", "check_throttles"),
    ("idempotency wrapper incl. the order", "members/idempotency.py", "idempotent"),
    ("order_place (checks, policy, locked part)", "trading/services.py", "order_place"),
    ("  locked part (_place_locked)", "trading/services.py", "_place_locked"),
    ("    receipt encumbrance (sells)", "receipts/services.py", "receipts_encumber"),
    ("    settlement (_settle)", "trading/services.py", "_settle"),
    ("      receipt delivery", "receipts/services.py", "receipts_deliver"),
    ("      ledger post_many", "trading/ledger.py", "post_many"),
    ("  compliance policy", "compliance/policy.py", "can_trade"),
    ("response rendering (serializers)", "rest_framework/serializers.py", "to_representation"),
    ("after-commit publishes (Celery)", "celery/app/task.py", "apply_async"),
    ("SQL round trips (psycopg execute)", "psycopg/cursor.py", "execute"),
    ("commit", "django/db/backends/base/base.py", "commit"),
]


def order_body(n: int, run: str, tokens: list[str], sides: list[str]) -> tuple[str, str, str]:
    """(token, key, JSON body) of order n: the mix of bench/orders_api.py's Lua (30 % crossing)."""
    i = (n * 7) % len(tokens)
    side = sides[i]
    if random.random() < 0.30:
        price = 590.0 if side == "buy" else 570.0
    else:
        offset = random.randint(1, 50) / 10
        price = 575 - offset if side == "buy" else 585 + offset
    coid = f"{run}-{n}"
    body = json.dumps({"instrument": "GA-6N-CN", "side": side, "order_type": "limit", "tif": "GTC",
                       "quantity_kg": str(random.randint(1, 3)), "price": f"{price:.2f}", "client_order_id": coid})
    return tokens[i], coid, body


def statement_kind(sql: str) -> str:
    """'SELECT trading_account', 'INSERT trading_order', 'UPDATE ...', 'WITH ...' (a CTE), 'SAVEPOINT'."""
    words = sql.split(None, 1)
    verb = words[0].upper() if words else ""
    if verb in ("SELECT", "DELETE"):
        table = re.search(r'\bFROM\s+"?(\w+)', sql, re.IGNORECASE)
    elif verb in ("INSERT", "UPDATE"):
        table = re.match(r'\s*(?:INSERT\s+INTO|UPDATE)\s+"?(\w+)', sql, re.IGNORECASE)
    elif verb == "WITH":
        table = re.search(r'\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', sql, re.IGNORECASE)
    else:
        table = None
    return f"{verb} {table.group(1)}" if table else verb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--traders", type=int, default=20)
    parser.add_argument("--dump", help="also write the cProfile stats to this file (for pstats or snakeviz)")
    parser.add_argument("--cpu", action="store_true",
                        help="profile this process's CPU time instead of wall time (waits on PostgreSQL left out)")
    args = parser.parse_args()
    random.seed(7)
    env = {**orders_api.env(), "DATABASE_URL": f"{orders_api.PG}/{orders_api.DB}"}
    orders_api.psql(f"DROP DATABASE IF EXISTS {orders_api.DB}")
    orders_api.psql(f"CREATE DATABASE {orders_api.DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    tokens, sides, _ = orders_api.setup_market(args.traders)

    from django.db import connection
    from django.test import Client

    client = Client()
    statuses: Counter[int] = Counter()

    def post(n: int, run: str) -> None:
        token, key, body = order_body(n, run, tokens, sides)
        response = client.post("/api/v1/orders", body, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Token {token}", HTTP_IDEMPOTENCY_KEY=key)
        statuses[response.status_code] += 1

    for n in range(100):  # warm-up: both sides of the book, per-process caches
        post(n, "warm")

    statements: Counter[str] = Counter()
    # The instrument's row lock: from the return of the statement that takes it to the return of the COMMIT that
    # releases it, with the statements sent in between. One connection and nothing else running, so this is the
    # lock's floor; under load (bench/orders_api.py) the holder also waits for the CPU.
    # What of the hold is spent talking to PostgreSQL: every send and every wait for an answer goes through
    # psycopg's Connection.wait (a statement's execute, a pipelined read's fetch, a pipeline's Sync, the COMMIT);
    # timing the statements' execute alone would miss the waits pipeline mode moves to later reads.
    held = {"since": 0.0, "seconds": 0.0, "statements": 0, "holds": 0, "waiting": 0.0, "in_commit": 0.0}
    psycopg_wait = psycopg.Connection.wait

    def timed_wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        locked, started = held["since"], time.perf_counter()
        try:
            return psycopg_wait(self, *args, **kwargs)
        finally:
            if locked:
                held["waiting"] += time.perf_counter() - started

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[statement_kind(sql)] += 1
        if held["since"]:
            held["statements"] += 1
        result = execute(sql, params, many, context)
        if "FROM trading_instrument i" in sql and "FOR UPDATE" in sql:
            held["since"] = time.perf_counter()
        return result

    commit = connection._commit

    def commit_and_release() -> Any:
        started = time.perf_counter()
        result = commit()
        if held["since"]:
            held["in_commit"] += time.perf_counter() - started
            held["seconds"] += time.perf_counter() - held["since"]
            held["holds"] += 1
            held["statements"] += 1  # the COMMIT
            held["since"] = 0.0
        return result

    statuses.clear()
    with connection.cursor() as cursor:  # the server process behind this connection (same machine)
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    wall, cpu, pg = time.perf_counter(), time.process_time(), orders_api.process_ticks(backend)
    connection._commit = commit_and_release
    psycopg.Connection.wait = timed_wait  # type: ignore[method-assign]
    with connection.execute_wrapper(count):
        for n in range(args.orders):
            post(n, "measure")
    psycopg.Connection.wait = psycopg_wait  # type: ignore[method-assign]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del connection._commit
    pg_after = orders_api.process_ticks(backend)

    measured = dict(statuses)
    profile = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
    profile.enable()
    for n in range(args.orders):
        post(n, "profile")
    profile.disable()
    if args.dump:
        profile.dump_stats(args.dump)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    profiled_total = sum(tt for (_f, _l, name), (_cc, _nc, tt, _ct, _callers) in stats.items())

    n = args.orders
    print(f"{n} orders in-process, load average {os.getloadavg()[0]:.2f}; statuses {measured}")
    print(f"per order: {wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU of this process "
          f"({n / wall:.0f} orders/s on one connection, no HTTP)")
    if pg is not None and pg_after is not None:
        print(f"PostgreSQL: {(pg_after - pg) / orders_api.HZ / n * 1000:.2f} ms CPU per order in the server process of this "
              "connection (WAL writer and other background processes not counted)")
    if held["holds"]:
        print(f"instrument lock held {held['seconds'] / held['holds'] * 1000:.2f} ms per order, "
              f"{held['statements'] / held['holds']:.1f} statements (the COMMIT included) while held; "
              f"{held['waiting'] / held['holds'] * 1000:.2f} ms of it waiting for PostgreSQL (the COMMIT's "
              f"{held['in_commit'] / held['holds'] * 1000:.2f} ms included), the rest in Python")
    print(f"SQL statements per order: {sum(statements.values()) / n:.1f}")
    for kind, k in statements.most_common():
        print(f"  {k / n:6.2f}  {kind}")
    print(f"share of profiled {'CPU' if args.cpu else 'wall'} time ({profiled_total / n * 1000:.1f} ms per order under cProfile):")
    for label, suffix, name in PARTS:
        found = [ct for (file, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.items()
                 if fn == name and file.endswith(suffix)]
        share = f"{max(found) / profiled_total * 100:5.1f} %" if found else "not found"
        print(f"  {share:>9}  {label}")
    connection.close()
    orders_api.psql(f"DROP DATABASE IF EXISTS {orders_api.DB}")


if __name__ == "__main__":
    main()
