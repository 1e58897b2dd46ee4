"""The floor under order entry on this machine: what the parts no design can leave out cost, with nothing of ours
between them.

    .venv/bin/python bench/orders_floor.py [--orders 1000] [--batches 1,8,32] [--http-seconds 10]

Issue #4's goal is 1,000 orders/s (p99 <= 20 ms) through gunicorn with 2 workers on this machine's 2 cores:
at most 2 ms of CPU per order in all (web workers, PostgreSQL, the load generator), less for headroom. This
bench measures, per order:

1. **PostgreSQL's work for what an order writes.** The mix of bench/orders_api.py (30 % crossing) is posted
   in-process through the full path (bench/orders_profile.py's set-up), and every statement sent to the server is
   captured with its parameters. A copy of the database as it was before them then receives exactly those
   statements again, over one connection in psycopg's pipeline mode: no round trip waited for and no Python
   between statements, committed every B orders (B = 1 is a transaction per order, as the sync workers run; 8
   and 32 are group commits). It prints the CPU of all PostgreSQL processes per order (the backend, the WAL
   writer and the rest), the CPU the replaying process spent in psycopg sending them, and checks that the replay
   wrote the rows the run wrote. Two more replays say what the statements' work is made of: one with every
   trigger skipped (`session_replication_role = replica`: the audit trail's, the append-only guards', the
   foreign keys' checks; an experiment, never a setting), one with each statement replaced by `SELECT 1`
   (PostgreSQL's cost of a statement that does nothing: what a set-based rewrite sending fewer statements could
   save at most). A last replay sends them one at a time and times each, by statement and by kind of order.
2. **The receipts' event chain:** the Ed25519 signature and RFC 8785 canonical form of one captured event,
   times the events written per order.
3. **HTTP with no framework.** A bare app (read the JSON body, parse it, answer 201 with a small JSON body; no
   Django, no database) under gunicorn with 2 workers, driven by wrk with 8 connections posting an order-sized
   body: requests/s and the whole machine's CPU per request (wrk included). Once as WSGI under gunicorn's sync
   worker (the bench's), once as ASGI under uvicorn's worker for gunicorn (uvloop and httptools: the fastest
   Python HTTP front at hand).

The summary's `budget_ms_per_order` adds the cheapest of each: what is left of 2 ms for every other part of an
order (authentication, the Idempotency-Key, validation, the compliance policy, matching, building the rows).

Uses its own databases (`ingot_bench_orders_floor` and copies; all dropped at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orders_api  # noqa: E402  (the market set-up, wrk's figures, /proc readers)
import orders_profile  # noqa: E402  (the in-process order mix, statement kinds)

DB = "ingot_bench_orders_floor"
orders_api.DB = DB
TEMPLATE = f"{DB}_before"
COPY = f"{DB}_replay"
HTTP_PORT = 8766
TABLES = ("trading_order", "trading_trade", "receipts_receipt", "receipts_receiptevent", "trading_posting")
BUDGET_MS = 2.0  # 2 cores busy at 1,000 orders/s


@dataclass
class Captured:
    """One order's statements as sent (sql, params, many), its side, and whether it traded."""

    side: str
    statements: list[tuple[Any, Any, bool]] = field(default_factory=list)

    @cached_property
    def kind(self) -> str:
        traded = any(orders_profile.statement_kind(str(sql)) == "INSERT trading_trade" for sql, _p, _m in self.statements)
        return f"{'crossing' if traded else 'resting'} {self.side}"


# --- the HTTP floor's apps (gunicorn imports them from this module) -----------------------------------------


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Read and parse an order's JSON body, answer 201 with JSON: WSGI."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    order = json.loads(environ["wsgi.input"].read(length) or b"{}")
    body = json.dumps({"id": 1, "status": "open", "client_order_id": order.get("client_order_id")}).encode()
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same as bare_wsgi, as ASGI."""
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    order = json.loads(b"".join(chunks) or b"{}")
    body = json.dumps({"id": 1, "status": "open", "client_order_id": order.get("client_order_id")}).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --- measuring -------------------------------------------------------------------------------------------------


def row_counts() -> dict[str, int]:
    from django.db import connection

    counts = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608  # nosec B608 - fixed table names
            counts[table] = cursor.fetchone()[0]
    return counts


def capture(orders: int) -> tuple[list[Captured], dict[str, int], dict[str, int]]:
    """Post `orders` orders in-process and return each one's statements, with the row counts before and after;
    the template database holds the database as it was before them."""
    env = {**orders_api.env(), "DATABASE_URL": f"{orders_api.PG}/{DB}"}
    orders_api.psql(f"DROP DATABASE IF EXISTS {DB}")
    orders_api.psql(f"CREATE DATABASE {DB}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    tokens, sides, _ = orders_api.setup_market(20)

    from django.db import connection
    from django.test import Client

    client = Client()

    def post(n: int, run: str) -> tuple[int, str]:
        token, key, body = orders_profile.order_body(n, run, tokens, sides)
        status = client.post("/api/v1/orders", body, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Token {token}", HTTP_IDEMPOTENCY_KEY=key).status_code
        return status, json.loads(body)["side"]

    for n in range(100):  # warm-up: both sides of the book, per-process caches
        post(n, "warm")
    before = row_counts()
    connection.close()  # a template must have no connection; the replays' connections open as this one did
    orders_api.psql(f"DROP DATABASE IF EXISTS {TEMPLATE}")
    orders_api.psql(f"CREATE DATABASE {TEMPLATE} TEMPLATE {DB}")

    captured: list[Captured] = []
    current: list[tuple[Any, Any, bool]] = []
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def captured_execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        current.append((query, params, False))
        return execute(self, query, params, **kwargs)

    def captured_executemany(self: Any, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> Any:
        params_seq = list(params_seq)
        current.append((query, params_seq, True))
        return executemany(self, query, params_seq, **kwargs)

    statuses: dict[int, int] = {}
    psycopg.Cursor.execute, psycopg.Cursor.executemany = captured_execute, captured_executemany  # type: ignore[method-assign]
    try:
        for n in range(orders):
            status, side = post(n, "measure")
            statuses[status] = statuses.get(status, 0) + 1
            captured.append(Captured(side, current[:]))  # the COMMIT is not a statement here: the replay commits
            current.clear()
    finally:
        psycopg.Cursor.execute, psycopg.Cursor.executemany = execute, executemany  # type: ignore[method-assign]
    if set(statuses) != {201}:
        raise RuntimeError(f"the captured run had refusals: {statuses}")
    after = row_counts()
    connection.close()
    return captured, before, after


def fresh_copy() -> psycopg.Connection[Any]:
    """A copy of the database before the captured orders, and a connection to it opened as Django opens its own
    (its adapters, time zone and server-side binding; psycopg prepares a statement on its 5th run)."""
    from django.conf import settings
    from django.db import connection

    orders_api.psql(f"DROP DATABASE IF EXISTS {COPY}")
    orders_api.psql(f"CREATE DATABASE {COPY} TEMPLATE {TEMPLATE}")
    settings.DATABASES["default"]["NAME"] = connection.settings_dict["NAME"] = COPY
    connection.ensure_connection()
    raw: psycopg.Connection[Any] = connection.connection
    raw.autocommit = False
    return raw


def drop_copy() -> dict[str, int]:
    from django.db import connection

    counts = row_counts()
    connection.close()
    orders_api.psql(f"DROP DATABASE IF EXISTS {COPY}")
    return counts


def groups(captured: list[Captured], batch: int) -> list[list[Captured]]:
    """The first tenth alone (warming psycopg's prepared statements and PostgreSQL's caches, not measured), then
    the rest in transactions of `batch` orders."""
    warm = max(len(captured) // 10, 1)
    rest = captured[warm:]
    return [captured[:warm]] + [rest[i:i + batch] for i in range(0, len(rest), batch)]


def replay(captured: list[Captured], batch: int, variant: str = "as captured") -> dict[str, Any]:
    """Send the captured statements again, pipelined, committing every `batch` orders: PostgreSQL's CPU per
    order and the rows written. variant "no triggers" skips every trigger; "SELECT 1" sends `SELECT 1` instead of
    each statement."""
    raw = fresh_copy()
    if variant == "no triggers":
        raw.execute("SET session_replication_role = replica")
        raw.commit()
    cursor = raw.cursor()
    batches = groups(captured, batch)
    pg = 0
    wall = cpu = 0.0
    for index, group in enumerate(batches):
        if index == 1:
            time.sleep(0.3)  # let the warm-up's background work (the WAL writer) settle before counting
            pg, wall, cpu = orders_api.ticks_of("postgres"), time.perf_counter(), time.process_time()
        with raw.pipeline():
            for order in group:
                for sql, params, many in order.statements:
                    if variant == "SELECT 1":
                        cursor.execute("SELECT 1")
                    elif many:
                        cursor.executemany(sql, params)
                    else:
                        cursor.execute(sql, params)
        raw.commit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pg = orders_api.ticks_of("postgres") - pg
    n = sum(len(group) for group in batches[1:])
    return {"batch": batch, "variant": variant, "orders": n,
            "postgresql_cpu_ms_per_order": round(pg * 1000 / orders_api.HZ / n, 2),
            "psycopg_client_cpu_ms_per_order": round(cpu * 1000 / n, 2),
            "wall_ms_per_order": round(wall * 1000 / n, 2), "rows": drop_copy()}


def timed_replay(captured: list[Captured], batch: int) -> dict[str, Any]:
    """The statements one at a time (no pipeline), each timed from send to answer less the round trip of a
    `SELECT 1` timed the same way (the median): PostgreSQL's execution per order, by kind of statement (verb and
    table) and by kind of order (resting or crossing, buy or sell). The commits are timed apart."""
    raw = fresh_copy()
    cursor = raw.cursor()
    batches = groups(captured, batch)
    timed: list[tuple[str, str, float]] = []  # (order kind, statement kind, seconds)
    trips: list[float] = []
    commits = 0.0
    for index, group in enumerate(batches):
        for order in group:
            for sql, params, many in order.statements:
                started = time.perf_counter()
                cursor.executemany(sql, params) if many else cursor.execute(sql, params)
                took = time.perf_counter() - started
                if index:
                    timed.append((order.kind, orders_profile.statement_kind(str(sql)), took))
                    started = time.perf_counter()
                    cursor.execute("SELECT 1")
                    trips.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.commit()
        if index:
            commits += time.perf_counter() - started
    drop_copy()
    trip = sorted(trips)[len(trips) // 2]
    measured = [order for group in batches[1:] for order in group]
    orders_of = {kind: sum(1 for o in measured if o.kind == kind) for kind in {o.kind for o in measured}}
    by_statement: dict[str, float] = {}
    by_order: dict[str, float] = {}
    for order_kind, statement, seconds in timed:
        by_statement[statement] = by_statement.get(statement, 0.0) + seconds - trip
        by_order[order_kind] = by_order.get(order_kind, 0.0) + seconds - trip
    n = len(measured)
    return {
        "round_trip_ms": round(trip * 1000, 3), "commit_ms_per_order": round(commits * 1000 / n, 3),
        "execution_ms_per_order_by_statement": {k: round(s * 1000 / n, 3)
                                                for k, s in sorted(by_statement.items(), key=lambda kv: -kv[1])},
        "execution_ms_per_order_by_order_kind": {k: {"orders": orders_of[k], "ms_each": round(s * 1000 / orders_of[k], 3)}
                                                 for k, s in sorted(by_order.items())},
    }


def chain_cost(events_per_order: float) -> dict[str, Any]:
    """Canonical form and Ed25519 signature of the newest captured event's document, timed (CPU)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from django.db import connection

    from receipts.signing import sign_document

    with connection.cursor() as cursor:
        cursor.execute("SELECT event FROM receipts_receiptevent ORDER BY id DESC LIMIT 1")
        document = cursor.fetchone()[0]
    document = json.loads(document) if isinstance(document, str) else document
    key = Ed25519PrivateKey.generate()
    rounds = 2000
    started = time.process_time()
    for _ in range(rounds):
        sign_document(document, key, "bench")
    each = (time.process_time() - started) / rounds * 1000
    return {"ms_per_event": round(each, 3), "events_per_order": round(events_per_order, 2),
            "ms_per_order": round(each * events_per_order, 3)}


def http_floor(seconds: int, app: str, worker_class: str) -> dict[str, Any]:
    """A bare app under gunicorn (2 workers of `worker_class`) and wrk (2 threads, 8 connections) posting an
    order's body: requests/s, latency and the whole machine's CPU per request."""
    work = Path(tempfile.mkdtemp(prefix="orders-floor-"))
    script = work / "post.lua"
    body = json.dumps({"instrument": "GA-6N-CN", "side": "buy", "order_type": "limit", "tif": "GTC",
                       "quantity_kg": "2", "price": "574.50", "client_order_id": "floor-1"})
    script.write_text(f"wrk.method = \"POST\"\nwrk.body = {json.dumps(body)}\n"
                      "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
                      "wrk.headers[\"Authorization\"] = \"Token 0123456789abcdef0123456789abcdef01234567\"\n"
                      "wrk.headers[\"Idempotency-Key\"] = \"floor-1\"\n")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", f"orders_floor:{app}", "--chdir", str(ROOT / "bench"),
                               "--workers", "2", "--worker-class", worker_class, "--bind", f"127.0.0.1:{HTTP_PORT}",
                               "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{HTTP_PORT}/"
    try:
        orders_api.wait_up(url)
        subprocess.run(["wrk", "-t2", "-c8", "-d2s", "-s", str(script), url], check=True, capture_output=True)
        before = orders_api.machine_busy_ticks()
        out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-s", str(script), url],
                             check=True, capture_output=True, text=True).stdout
        busy = orders_api.machine_busy_ticks() - before
    finally:
        server.terminate()
        server.wait(timeout=20)
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    figures = orders_api.wrk_figures(out)
    figures["machine_cpu_ms_per_request"] = round(busy * 1000 / orders_api.HZ / (figures["per_s"] * seconds), 3)
    return {"app": f"{app} under gunicorn's {worker_class} worker", **figures}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--batches", default="1,8,32", help="orders per transaction in the replays")
    parser.add_argument("--http-seconds", type=int, default=10, help="0 skips the HTTP floor")
    args = parser.parse_args()
    random.seed(7)
    batches = [int(b) for b in args.batches.split(",")]
    captured, before, after = capture(args.orders)
    result: dict[str, Any] = {
        "orders_captured": len(captured),
        "statements_per_order": round(sum(len(o.statements) for o in captured) / len(captured), 2),
        "rows_written_per_order": {t: round((after[t] - before[t]) / len(captured), 2) for t in TABLES},
        "replays": [],
    }
    for batch in batches:
        result["replays"].append(replay(captured, batch))
    for variant in ("no triggers", "SELECT 1"):
        result["replays"].append(replay(captured, max(batches), variant))
    for replayed in result["replays"]:
        if replayed["variant"] != "SELECT 1" and replayed.pop("rows") != after:
            raise RuntimeError(f"a replay wrote other rows than the run: {replayed}")
        replayed.pop("rows", None)
    result["statements_timed_one_by_one"] = timed_replay(captured, max(batches))
    fresh_copy()
    result["event_chain"] = chain_cost(result["rows_written_per_order"]["receipts_receiptevent"])
    drop_copy()
    http = []
    if args.http_seconds:
        http.append(http_floor(args.http_seconds, "bare_wsgi", "sync"))
        try:
            import uvicorn.workers  # noqa: F401  (the dev extra's)
        except ImportError:
            pass
        else:
            http.append(http_floor(args.http_seconds, "bare_asgi", "uvicorn.workers.UvicornWorker"))
        result["http_floor"] = http
    best = min((r for r in result["replays"] if r["variant"] == "as captured"),
               key=lambda r: r["postgresql_cpu_ms_per_order"])
    parts = {
        f"postgresql (batch {best['batch']})": best["postgresql_cpu_ms_per_order"],
        "psycopg sending the statements": best["psycopg_client_cpu_ms_per_order"],
        "event chain signatures": result["event_chain"]["ms_per_order"],
    }
    if http:
        cheapest = min(http, key=lambda h: h["machine_cpu_ms_per_request"])
        parts[f"http ({cheapest['app']}, wrk included)"] = cheapest["machine_cpu_ms_per_request"]
    floor = sum(parts.values())
    result["budget_ms_per_order"] = {"goal": BUDGET_MS, **parts, "floor": round(floor, 2),
                                     "left_for_everything_else": round(BUDGET_MS - floor, 2)}
    orders_api.psql(f"DROP DATABASE IF EXISTS {TEMPLATE}")
    orders_api.psql(f"DROP DATABASE IF EXISTS {DB}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
