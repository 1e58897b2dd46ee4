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
