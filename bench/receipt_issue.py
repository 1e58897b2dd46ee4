"""Benchmark: warehouse receipts issued per second, end to end through the API over loopback HTTP.

What one "receipt issued" is: POST /api/v1/lots/{id}/receipts with a token and an Idempotency-Key, served
by a real gunicorn (production settings, sync workers) on 127.0.0.1, on PostgreSQL. Each request inserts
the idempotency row, takes the lot's row lock and the metal/year number counter's lock, checks the lot's
attestations and remaining mass, builds and Ed25519-signs the hash-chained `issued` event, and commits.

    .venv/bin/python bench/receipt_issue.py [--receipts N] [--clients C] [--workers W] [--keep-db]

It creates an isolated database `ingot_bench` (dropped and re-created at the start, dropped at the end
unless --keep-db), migrates it, builds one warehouse with graded gallium lots through the services, starts
gunicorn, and runs two phases:

  1. sequential: one client, one lot — the latency of a single issue with nothing to wait for;
  2. parallel:   C clients, each issuing against its own lot — throughput with every worker busy.

Afterwards it checks that the database holds exactly one receipt per 201 response and that a bundle of
one of them verifies. Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis on :6379.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "ingot_bench"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
QUANTITY = "1.000"  # kg per receipt; each lot is large enough for every receipt a phase issues
WARM_UP = 3  # unmeasured receipts per client before a phase

ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_SECURE_SSL_REDIRECT": "false",  # loopback HTTP; production otherwise redirects to HTTPS
    "INGOT_KEY_SECRET": secrets.token_hex(32),
    "API_THROTTLE_USER": "10000000/min",
    "GUNICORN_ACCESSLOG": "/dev/null",
}


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def create_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _admin(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=ENV, check=True)


def drop_database() -> None:
    _admin(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def build_world(lots: int, mass_kg: int) -> dict[str, Any]:
    """Members, tokens, a warehouse and `lots` graded gallium lots, all through the services."""
    os.environ.update(ENV)
    import django

    django.setup()
    from datetime import date, timedelta
    from decimal import Decimal

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from django.db import connections
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from members.services import member_create, member_set_kyc_status, signing_key_register, user_create
    from receipts import services
    from receipts.canonical import utc_stamp
    from receipts.signing import b64url_encode, public_key_bytes, sign_document

    def member(name: str, legal_id: str, roles: list[str]) -> Any:
        made = member_create(name=name, legal_id=legal_id, country="CN", roles=roles)
        return member_set_kyc_status(member=made, status="approved", decided_by=None, reason="bench")

    operator = member("Bench Vault", "BENCH-WH", ["warehouse"])
    lab = member("Bench Lab", "BENCH-LAB", ["assay_lab"])
    holder = member("Bench Holder", "BENCH-HOLDER", ["trader"])
    user = user_create(username="bench-wh", password=secrets.token_hex(16), member=operator)
    token = Token.objects.create(user=user).key
    lab_key = Ed25519PrivateKey.generate()
    kid = signing_key_register(member=lab, public_key=b64url_encode(public_key_bytes(lab_key.public_key())),
                               valid_from=timezone.now() - timedelta(days=30)).kid
    warehouse = services.warehouse_create(operator=operator, code="BENCH-01", name="Bench Vault", country="CN",
                                          region="CN", approved=True)
    issued = utc_stamp(timezone.now() - timedelta(days=2))
    lot_ids = []
    for n in range(lots):
        lot = services.lot_register(
            warehouse=warehouse, registered_by=operator, metal="Ga", form="ingot", net_mass_kg=Decimal(mass_kg),
            package_count=mass_kg, brand="BENCH", batch_number=f"BENCH-{n:04d}", production_date=date(2026, 1, 5),
            location="A1", depositor=holder, nominees=[(lab, ["assay"])])
        assay = {"type": "assay", "lot": lot.reference, "lab": lab.legal_id, "method": "GDMS",
                 "sampledAt": issued, "issuedAt": issued, "purityPercent": "99.99995",
                 "impurities": [{"element": e, "value": v, "unit": "ppb"} for e, v in
                                [("O", "2"), ("C", "1"), ("Fe", "1"), ("Cu", "1"), ("Zn", "2"), ("Pb", "1")]]}
        services.attestation_submit(lot=lot, kind="assay", document=assay, signature=sign_document(assay, lab_key, kid),
                                    submitted_by=lab)
        services.lot_grade(lot=lot, by=operator)
        lot_ids.append(lot.pk)
    connections.close_all()
    return {"token": token, "lot_ids": lot_ids, "holder": holder.legal_id}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**ENV, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "config.wsgi", "-c", "platform/gunicorn.conf.py"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"gunicorn did not come up: {proc.stderr.read().decode() if proc.stderr else ''}")


class Client:
    """One keep-alive HTTP connection issuing receipts against one lot."""

    def __init__(self, port: int, token: str, lot_id: int, holder: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = f"/api/v1/lots/{lot_id}/receipts"
        self.body = json.dumps({"holder": holder, "quantity_kg": QUANTITY}).encode()
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.numbers: list[str] = []

    def issue(self, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            self.conn.request("POST", self.path, self.body, {**self.headers, "Idempotency-Key": uuid.uuid4().hex})
            response = self.conn.getresponse()
            payload = response.read()
            self.latencies.append(time.perf_counter() - started)
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            if response.status == 201:
                self.numbers.append(json.loads(payload)["number"])


def run_phase(port: int, world: dict[str, Any], lot_ids: list[int], per_client: int) -> dict[str, Any]:
    clients = [Client(port, world["token"], lot_id, world["holder"]) for lot_id in lot_ids]
    for client in clients:  # warm-up: connections open, workers' code paths and caches hot (not measured)
        client.issue(WARM_UP)
        client.latencies.clear()
        client.numbers.clear()
        client.statuses.clear()
    threads = [threading.Thread(target=c.issue, args=(per_client,)) for c in clients]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(x for c in clients for x in c.latencies)
    statuses: dict[int, int] = {}
    for client in clients:
        for status, n in client.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "requests": len(latencies), "created": statuses.get(201, 0), "statuses": statuses, "seconds": elapsed,
        "rate": statuses.get(201, 0) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))], "numbers": [n for c in clients for n in c.numbers],
        "warm_up": WARM_UP * len(clients),
    }


def check(port: int, world: dict[str, Any], numbers: list[str], warm_up: int) -> str:
    """Every 201 left exactly one receipt, and a receipt issued under load has a bundle that verifies."""
    from receipts.models import Receipt

    stored = Receipt.objects.count()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/api/v1/receipts/{numbers[-1]}/bundle", headers={"Authorization": f"Token {world['token']}"})
    bundle = conn.getresponse().read()
    conn.request("POST", "/api/v1/receipts/verify", bundle, {"Content-Type": "application/json"})
    verified = json.loads(conn.getresponse().read())["ok"]
    return (f"{stored} receipts in the database = {len(set(numbers))} measured 201s (distinct numbers) + {warm_up} "
            f"warm-up: {'OK' if stored == len(set(numbers)) + warm_up else 'MISMATCH'}; bundle of {numbers[-1]} "
            f"verifies: {verified}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=600, help="receipts per phase (default 600)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients in the parallel phase")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--keep-db", action="store_true", help=f"leave database {DB_NAME} behind")
    args = parser.parse_args()

    print(f"setting up database {DB_NAME} (migrate, one warehouse, {args.clients + 1} graded Ga lots) ...")
    create_database()
    proc = None
    try:
        world = build_world(args.clients + 1, mass_kg=max(10_000, 2 * args.receipts))
        port = free_port()
        proc = start_gunicorn(port, args.workers)
        per_client = max(1, args.receipts // args.clients)
        sequential = run_phase(port, world, world["lot_ids"][:1], args.receipts)
        parallel = run_phase(port, world, world["lot_ids"][1:], per_client)
        verdict = check(port, world, sequential["numbers"] + parallel["numbers"],
                        sequential["warm_up"] + parallel["warm_up"])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            drop_database()

    print()
    print("Receipts issued end to end: POST /api/v1/lots/{id}/receipts over loopback HTTP to gunicorn "
          f"({args.workers} sync workers, production settings) on PostgreSQL; each is one signed, hash-chained "
          f"`issued` event, {QUANTITY} kg, with an Idempotency-Key. CPUs: {os.cpu_count()}.")
    for name, phase, shape in (("sequential", sequential, "1 client, 1 lot"),
                               ("parallel", parallel, f"{args.clients} clients, 1 lot each")):
        print(f"  {name:<10} ({shape:<20}): {phase['rate']:7.1f} receipts/s   "
              f"{phase['created']} issued in {phase['seconds']:.2f} s   latency p50 {phase['p50_ms']:.1f} ms, "
              f"p95 {phase['p95_ms']:.1f} ms   statuses {phase['statuses']}")
    print(f"  check: {verdict}")
    print(f"  database {DB_NAME} {'kept' if args.keep_db else 'dropped'}")


if __name__ == "__main__":
    main()
