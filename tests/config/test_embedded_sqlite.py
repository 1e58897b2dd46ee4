"""The embedded mode (`make run` with no environment: SQLite) loads the demo market through the same services:
receipts issued and split, orders matched and settled, the ledger posted. SQLite takes other paths than
PostgreSQL in the hot writes (receipt numbers from the metal/year counter, keys from its AUTOINCREMENT counter,
one statement per part where PostgreSQL sends one data-modifying WITH): this runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_market_loads_on_sqlite_with_its_books_balanced(tmp_path: Path) -> None:
    database = tmp_path / "embedded.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": f"sqlite:///{database}",
           "REDIS_URL": "", "INGOT_VAR_DIR": str(tmp_path)}
    for command in (["migrate", "--noinput", "-v", "0"], ["demo_load"]):
        result = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=240)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # SQLite keeps decimals as REAL: its SUM is float arithmetic, so sums are compared rounded to 4 places.
    with sqlite3.connect(database) as db:
        numbers = [row[0] for row in db.execute("SELECT number FROM receipts_receipt")]
        children = db.execute("SELECT COUNT(*) FROM receipts_receipt WHERE parent_id IS NOT NULL").fetchone()[0]
        orphans = db.execute("SELECT COUNT(*) FROM receipts_receiptevent e LEFT JOIN receipts_receipt r "
                             "ON r.id = e.receipt_id WHERE r.id IS NULL").fetchone()[0]
        unchained = db.execute("SELECT COUNT(*) FROM receipts_receipt r WHERE r.last_event_seq <> "
                               "(SELECT MAX(seq) FROM receipts_receiptevent e WHERE e.receipt_id = r.id)").fetchone()[0]
        trades = db.execute("SELECT COUNT(*) FROM trading_trade").fetchone()[0]
        unbalanced = db.execute("SELECT COUNT(*) FROM (SELECT entry_id FROM trading_posting GROUP BY entry_id "
                                "HAVING ROUND(SUM(amount), 4) <> 0)").fetchone()[0]
        empty_entries = db.execute("SELECT COUNT(*) FROM trading_journalentry j WHERE NOT EXISTS "
                                   "(SELECT 1 FROM trading_posting p WHERE p.entry_id = j.id)").fetchone()[0]
        drift = db.execute(
            "SELECT COUNT(*) FROM trading_account a WHERE ROUND(a.available - COALESCE((SELECT SUM(amount) FROM "
            "trading_posting p WHERE p.account_id = a.id AND p.bucket = 'available'), 0), 4) <> 0 OR ROUND(a.held - "
            "COALESCE((SELECT SUM(amount) FROM trading_posting p WHERE p.account_id = a.id AND p.bucket = 'held'), 0), 4) "
            "<> 0"
        ).fetchone()[0]
        filled = db.execute("SELECT COUNT(*) FROM trading_order WHERE status = 'filled'").fetchone()[0]
        # The books the demo leaves: each standard instrument has resting orders on both sides (an ESG
        # instrument's asks need receipts holding its label, which the worker's evaluation gives them later).
        sides = db.execute("SELECT i.code, COUNT(DISTINCT o.side) FROM trading_order o JOIN trading_instrument i "
                           "ON i.id = o.instrument_id WHERE o.status IN ('open', 'partially_filled') "
                           "AND i.esg_class = '' GROUP BY i.code").fetchall()
    assert numbers and len(numbers) == len(set(numbers))  # receipt numbers unique
    assert children > 0 and trades > 0 and filled > 0  # splits, fills and closed orders happened
    assert orphans == 0 and unchained == 0  # every event belongs to a receipt whose chain head it matches
    assert unbalanced == 0 and empty_entries == 0 and drift == 0  # the ledger balances, balances = postings
    assert sides and all(count == 2 for _, count in sides), sides

    # The API's order entry (its own locking read of the instrument) on the same database: a demo trader's buy
    # rests, is listed, and is cancelled, through token authentication and the Idempotency-Key.
    api = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", API_SESSION], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert api.returncode == 0, api.stdout[-3000:] + api.stderr[-3000:]
    assert api.stdout.split() == ["201", "open", "200", "True", "200", "cancelled", "not-200:", "[]"], api.stdout[-3000:]

    # The demo officer signs in to the console (password and one-time code, one step) and finds the audit trail
    # empty, with the reason: its triggers are PostgreSQL's.
    console = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", CONSOLE_SESSION], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=240)
    assert console.returncode == 0, console.stdout[-3000:] + console.stderr[-3000:]
    assert console.stdout.split() == ["302", "200", "True"], console.stdout[-3000:]


CONSOLE_SESSION = """
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

device = TOTPDevice.objects.get(user__username="officer")
client = Client(HTTP_HOST="127.0.0.1")
signed_in = client.post("/admin/login/?next=/admin/", {"username": "officer", "password": "ingot-demo-2026",
    "otp_token": f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"})
print(signed_in.status_code)
trail = client.get("/admin/compliance/memberauditevent/")
print(trail.status_code, b"Embedded mode (SQLite): the audit trail is written by PostgreSQL triggers" in trail.content)
"""


API_SESSION = """
import json
from django.test import Client
from rest_framework.authtoken.models import Token
from members.models import User

token = Token.objects.get_or_create(user=User.objects.get(username="lumen"))[0].key
client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {token}")
placed = client.post("/api/v1/orders", json.dumps({
    "instrument": "GA-6N-EU", "side": "buy", "order_type": "limit", "tif": "GTC", "quantity_kg": "1",
    "price": "580.00", "client_order_id": "embedded-api-1"}), content_type="application/json",
    HTTP_IDEMPOTENCY_KEY="embedded-api-1")
order = placed.json().get("order", {})
print(placed.status_code, order.get("status", placed.content[:300]))
listed = client.get("/api/v1/orders")
print(listed.status_code, any(o["id"] == order["id"] for o in listed.json()))
cancelled = client.post(f"/api/v1/orders/{order['id']}/cancel", content_type="application/json")
print(cancelled.status_code, cancelled.json().get("status", cancelled.content[:300]))

# Every read of the API a trader has, on the embedded database.
holding = client.get("/api/v1/holdings").json()[0]["number"]
book = "/api/v1/instruments/GA-6N-EU"
paths = ["/api/v1/balances", "/api/v1/holdings", "/api/v1/instruments", book, f"{book}/candles", f"{book}/depth",
         f"{book}/reference", f"{book}/trades", "/api/v1/index/GA-6N", "/api/v1/index/GA-6N?region=EU",
         "/api/v1/index/methodology", "/api/v1/members/me", "/api/v1/members/me/keys", "/api/v1/orders",
         f"/api/v1/orders/{order['id']}", "/api/v1/trades/mine", "/api/v1/receipts", f"/api/v1/receipts/{holding}",
         f"/api/v1/receipts/{holding}/bundle", f"/api/v1/compliance/receipts/{holding}/esg", "/api/v1/warehouses",
         "/api/v1/compliance/end-use-declarations", "/api/v1/compliance/export-licences", "/.well-known/jwks.json"]
print("not-200:", [(path, status) for path in paths if (status := client.get(path).status_code) != 200])
"""
