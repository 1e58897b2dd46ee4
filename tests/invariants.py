"""The value invariants of DESIGN.md §6, checked after every test that moves money or title.

Each invariant is one set-based statement that returns the rows breaking it (at most a few, for the
message); all of them go to PostgreSQL in a single round trip (one `execute` of several prepared
statements) and every result must be empty. The stateful model test runs
them after every step together with its own snapshot queries (tests/proof/state_model.py), still in
one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection

from receipts.models import OPEN_STATUSES, ReceiptStatus
from trading.models import LIVE_ORDER_STATUSES, AccountKind

Rows = list[tuple[Any, ...]]

# The statements are plain text (several go in one execute, which takes no parameters), so the status
# constants are written out in them; these lines fail at import if the models' constants ever change.
assert set(LIVE_ORDER_STATUSES) == {"open", "partially_filled"}, LIVE_ORDER_STATUSES
assert set(OPEN_STATUSES) == {"active", "encumbered", "frozen", "pledged", "withdrawal_requested"}, OPEN_STATUSES
assert (AccountKind.MEMBER, AccountKind.EXTERNAL) == ("member", "external")
assert (ReceiptStatus.SPLIT, ReceiptStatus.ENCUMBERED) == ("split", "encumbered")

# name -> (statement returning the violating rows, at most 5 for the message; what a violation means)
VALUE_INVARIANTS: dict[str, tuple[str, str]] = {
    # 1. Every journal entry balances per currency.
    "unbalanced_entries": (
        "SELECT entry_id, currency, sum(amount) FROM trading_posting GROUP BY entry_id, currency"
        " HAVING sum(amount) <> 0 ORDER BY entry_id LIMIT 5",
        "journal entries that do not balance (entry, currency, sum)"),
    # 2. Balances equal their postings; only the outside world's account may go negative.
    "drifted_accounts": (
        "SELECT a.id, a.kind, a.member_id, a.currency, a.available, a.held, coalesce(p.available, 0),"
        " coalesce(p.held, 0) FROM trading_account a LEFT JOIN (SELECT account_id,"
        " sum(amount) FILTER (WHERE bucket = 'available') AS available,"
        " sum(amount) FILTER (WHERE bucket = 'held') AS held FROM trading_posting GROUP BY account_id) p"
        " ON p.account_id = a.id"
        " WHERE a.available <> coalesce(p.available, 0) OR a.held <> coalesce(p.held, 0)"
        " OR (a.kind <> 'external' AND (a.available < 0 OR a.held < 0)) ORDER BY a.id LIMIT 5",
        "accounts whose balance differs from their postings or is negative"
        " (id, kind, member, currency, available, held, posted available, posted held)"),
    #    Cash per currency sums to zero over all accounts.
    "cash_not_zero": (
        "SELECT currency, sum(available + held) FROM trading_account GROUP BY currency"
        " HAVING sum(available + held) <> 0",
        "currencies whose cash does not sum to zero (currency, sum)"),
    # 3. A member's held cash equals what its live orders still hold (in the instrument's currency).
    "held_not_orders": (
        "SELECT coalesce(a.member_id, h.member_id), coalesce(a.currency, h.currency), a.held, h.held FROM"
        " (SELECT member_id, currency, held FROM trading_account WHERE kind = 'member') a"
        " FULL JOIN (SELECT o.member_id, i.currency, sum(o.held_amount) AS held FROM trading_order o"
        " JOIN trading_instrument i ON i.id = o.instrument_id WHERE o.status IN ('open', 'partially_filled')"
        " GROUP BY o.member_id, i.currency) h ON h.member_id = a.member_id AND h.currency = a.currency"
        " WHERE coalesce(a.held, 0) <> coalesce(h.held, 0) LIMIT 5",
        "members whose held cash differs from what their live orders hold (member, currency, held, orders)"),
    # 4. Receipt quantity per lot is conserved: issued (the roots) = leaves (open + withdrawn); the open
    #    receipts never exceed the lot; a split receipt's parts add up to it.
    "lots_not_conserved": (
        "SELECT l.id, l.net_mass_kg, r.issued, r.leaves, r.open FROM receipts_lot l JOIN (SELECT lot_id,"
        " coalesce(sum(quantity_kg) FILTER (WHERE parent_id IS NULL), 0) AS issued,"
        " coalesce(sum(quantity_kg) FILTER (WHERE status <> 'split'), 0) AS leaves,"
        " coalesce(sum(quantity_kg) FILTER (WHERE status IN"
        " ('active', 'encumbered', 'frozen', 'pledged', 'withdrawal_requested')), 0) AS open"
        " FROM receipts_receipt GROUP BY lot_id) r ON r.lot_id = l.id"
        " WHERE r.issued <> r.leaves OR r.open > l.net_mass_kg ORDER BY l.id LIMIT 5",
        "lots whose receipts are not conserved or exceed the lot (lot, net mass, issued, leaves, open)"),
    "parts_not_parent": (
        "SELECT p.number, p.quantity_kg, sum(c.quantity_kg) FROM receipts_receipt p"
        " LEFT JOIN receipts_receipt c ON c.parent_id = p.id"
        " WHERE p.status = 'split' GROUP BY p.id, p.number, p.quantity_kg"
        " HAVING sum(c.quantity_kg) IS DISTINCT FROM p.quantity_kg LIMIT 5",
        "split receipts whose parts do not add up to them (number, quantity, parts)"),
    # 5. Every open receipt has one holder; an encumbered one belongs to a live sell order of its holder.
    "open_without_holder": (
        "SELECT number, status FROM receipts_receipt WHERE holder_id IS NULL AND status IN"
        " ('active', 'encumbered', 'frozen', 'pledged', 'withdrawal_requested') LIMIT 5",
        "open receipts without a holder (number, status)"),
    "encumbered_not_by_live_order": (
        "SELECT r.number, r.holder_id, r.encumbrance_ref, o.member_id, o.side, o.status FROM receipts_receipt r"
        " LEFT JOIN trading_order o ON o.id = CASE WHEN r.encumbrance_ref ~ '^O[0-9]{1,18}$'"
        " THEN substr(r.encumbrance_ref, 2)::bigint END"
        " WHERE r.status = 'encumbered' AND (o.id IS NULL OR o.member_id <> r.holder_id"
        " OR o.side <> 'sell' OR o.status NOT IN ('open', 'partially_filled')) LIMIT 5",
        "encumbered receipts not backing a live sell order of their holder"
        " (number, holder, reference, order member, side, status)"),
}


def _statement_name(sql: str) -> str:
    return "ingot_check_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:16]


def fetch(statements: Mapping[str, str], arguments: Mapping[str, Sequence[int]] | None = None) -> dict[str, Rows]:
    """Run the statements in one round trip and return each one's rows by name.

    Each statement is prepared once per database connection (PREPARE outlives the test transactions
    and savepoints it was made in, until a DEALLOCATE) and then executed by name: planning is most of
    what such a small query costs, and the stateful test runs these after every step. `arguments`:
    integers for a statement's $1, $2... (written into the EXECUTE, so checked to be integers)."""
    arguments = arguments or {}
    names = list(statements)
    with connection.cursor() as cursor:
        by_name = {_statement_name(sql): sql for sql in statements.values()}
        # Asked of the server each time: psycopg's own statement cache sends DEALLOCATE ALL after any
        # ROLLBACK (each test's end, each savepoint rolled back), which drops these too. It sends it at the end
        # of the next statement it runs, and a rollback run in pipeline mode (order entry's) is seen only when
        # its result is read: the first statement here lets a DEALLOCATE ALL still due go before the question.
        cursor.execute("SELECT 1")
        cursor.execute("SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'ingot_check_')")
        missing = by_name.keys() - {row[0] for row in cursor.fetchall()}
        if missing:
            cursor.execute(";\n".join(f"PREPARE {name} AS {by_name[name]}" for name in sorted(missing)))
        executes = []
        for name in names:
            args = arguments.get(name, ())
            assert all(type(a) is int for a in args), args
            executes.append(f"EXECUTE {_statement_name(statements[name])}"
                            + (f"({', '.join(str(a) for a in args)})" if args else ""))
        cursor.execute(";\n".join(executes))
        results: dict[str, Rows] = {}
        for i, name in enumerate(names):
            if i:
                assert cursor.nextset(), f"no result for {name}"
            results[name] = cursor.fetchall()
    return results


def value_invariant_statements() -> dict[str, str]:
    return {name: sql for name, (sql, _) in VALUE_INVARIANTS.items()}


def assert_value_invariants(results: Mapping[str, Rows] | None = None) -> None:
    """Every invariant's statement finds nothing. `results`: the statements' rows when the caller fetched
    them already (with value_invariant_statements(), in its own round trip)."""
    if results is None:
        results = fetch(value_invariant_statements())
    broken = {name: results[name] for name in VALUE_INVARIANTS if results[name]}
    assert not broken, "value invariants broken:\n" + "\n".join(
        f"  {name}: {VALUE_INVARIANTS[name][1]}: {rows}" for name, rows in broken.items())
