"""The invariant checks themselves: a healthy market passes, and each invariant of tests/invariants.py
(and the chain audit's comparison of every receipt row) fails when the database is broken in exactly
its way.

The stateful model test runs these checks after every step as set-based statements in one round trip;
this is where each one is shown to still catch what it is there for. Every corruption is raw SQL inside
a savepoint that is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from receipts.models import Receipt, ReceiptStatus
from receipts.services import receipt_split
from tests.invariants import VALUE_INVARIANTS, assert_value_invariants, fetch, value_invariant_statements
from tests.proof.state_model import ChainAuditor, assert_more_invariants, build_market_world
from trading.services import order_place

pytestmark = pytest.mark.django_db


@pytest.fixture
def market() -> dict[str, Any]:
    """Two traders with cash and a receipt each; a resting bid, a resting ask, and a split receipt."""
    w = build_market_world(traders=2, opening_kg="10.000")
    buy = order_place(member=w.traders[0], instrument=w.instrument, side="buy", order_type="limit", tif="GTC",
                      quantity_kg=Decimal(2), price=Decimal("570.00"), client_order_id="bid").order
    sell = order_place(member=w.traders[1], instrument=w.instrument, side="sell", order_type="limit", tif="GTC",
                       quantity_kg=Decimal(3), price=Decimal("590.00"), client_order_id="ask").order
    receipt = Receipt.objects.get(holder=w.traders[0], status=ReceiptStatus.ACTIVE)
    parts = receipt_split(receipt=receipt, quantities=[Decimal("4.000"), Decimal("6.000")], by=w.traders[0])
    return {"world": w, "buy": buy, "sell": sell, "split": receipt, "parts": parts}


@contextmanager
def broken(*statements: str) -> Iterator[set[str]]:
    """Run the corrupting statements in a savepoint, yield the names of the invariants that then fail,
    roll back."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
        results = fetch(value_invariant_statements())
        yield {name for name, rows in results.items() if rows}
        transaction.set_rollback(True)


def test_a_healthy_market_passes_every_check(market: dict[str, Any]) -> None:
    assert_value_invariants()
    auditor = ChainAuditor()
    assert_more_invariants(auditor=auditor)
    assert auditor.events_checked > 0
    assert_more_invariants(auditor=auditor)  # again: nothing new to replay, every row compared again


# invariant -> the raw SQL that breaks it (and perhaps others) in the market fixture
BREAKAGES: list[tuple[str, list[str]]] = [
    ("unbalanced_entries", [
        "INSERT INTO trading_posting (entry_id, account_id, bucket, amount, currency)"
        " SELECT entry_id, account_id, bucket, 1, currency FROM trading_posting ORDER BY id DESC LIMIT 1"]),
    ("drifted_accounts", ["UPDATE trading_account SET available = available + 1, held = held - 1"
                          " WHERE kind = 'member' AND held > 0"]),
    ("cash_not_zero", ["UPDATE trading_account SET available = available + 1 WHERE kind = 'external'"]),
    ("held_not_orders", ["UPDATE trading_order SET held_amount = held_amount - 1 WHERE side = 'buy'"]),
    ("lots_not_conserved", ["UPDATE receipts_lot SET net_mass_kg = 1"]),
    ("parts_not_parent", ["UPDATE receipts_receipt SET quantity_kg = quantity_kg + 1"
                          " WHERE id = (SELECT max(id) FROM receipts_receipt WHERE parent_id IS NOT NULL)"]),
    # The schema forbids it (holder_id NOT NULL, also in the audit copy): lift that first.
    ("open_without_holder", ["SET CONSTRAINTS ALL IMMEDIATE",
                             "ALTER TABLE receipts_receipt ALTER COLUMN holder_id DROP NOT NULL",
                             "ALTER TABLE compliance_receiptauditevent ALTER COLUMN holder_id DROP NOT NULL",
                             "UPDATE receipts_receipt SET holder_id = NULL"
                             " WHERE id = (SELECT min(id) FROM receipts_receipt WHERE status = 'active')"]),
    ("encumbered_not_by_live_order", ["UPDATE trading_order SET status = 'cancelled' WHERE side = 'sell'"]),
]


def test_every_value_invariant_has_its_breakage() -> None:
    assert [name for name, _ in BREAKAGES] == list(VALUE_INVARIANTS)


@pytest.mark.parametrize("invariant, statements", BREAKAGES, ids=[name for name, _ in BREAKAGES])
def test_each_value_invariant_catches_its_breakage(market: dict[str, Any], invariant: str,
                                                   statements: list[str]) -> None:
    assert_value_invariants()
    with broken(*statements) as failing:
        assert invariant in failing, f"{invariant} did not notice; failing: {failing}"
        with pytest.raises(AssertionError, match=invariant):
            assert_value_invariants()
    assert_value_invariants()


def test_the_chain_audit_compares_every_receipt_row_each_time(market: dict[str, Any]) -> None:
    """A receipt row changed behind its chain's back is caught even when it has no new event."""
    auditor = ChainAuditor()
    auditor.check()
    [part] = [p for p in market["parts"] if p.quantity_kg == Decimal("4.000")]
    with transaction.atomic():
        Receipt.objects.filter(pk=part.pk).update(status=ReceiptStatus.PLEDGED, encumbrance_ref="loan:x")
        with pytest.raises(AssertionError, match=part.number):
            auditor.check()
        transaction.set_rollback(True)
    auditor.check()


def test_the_checks_run_after_a_rollback_seen_in_pipeline_mode() -> None:
    """psycopg drops every prepared statement (the checks' too) after a ROLLBACK, at the end of the next statement
    it runs; a rollback run in pipeline mode (order entry's, inside a test's transaction a savepoint's) is seen
    only when its result is read. The checks still find their statements gone and prepare them again."""
    from config.db import pipelined

    assert_value_invariants()  # prepared
    with pipelined():
        rolled_back = transaction.savepoint()
        transaction.savepoint_rollback(rolled_back)
    assert_value_invariants()
