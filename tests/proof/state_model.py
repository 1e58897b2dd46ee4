"""Helpers for the proof suites of issue 8: a reference model of the market (cash, holdings, the book),
the invariants tests/invariants.py does not check yet, the small world the stateful test runs in, and
the JSON line every proof scenario writes to var/proof/ for `make proof`'s table.

The model is deliberately naive (lists, sorts, Decimal arithmetic): it says what the services must
have done, and the stateful test compares the database with it after every step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import transaction

from compliance.models import ExportLicence
from members.keys import b64url_decode
from members.models import Member, SigningKey
from receipts import chain
from receipts.canonical import canonical_bytes
from receipts.models import OPEN_STATUSES, Lot, ReceiptStatus
from receipts.signing import verify_bytes
from trading.models import LIVE_ORDER_STATUSES, AccountKind, Instrument

CENT = Decimal("0.01")
ZERO = Decimal(0)
BPS = Decimal(10000)


# --- the report line ---------------------------------------------------------------------------------

def record_proof(scenario: str, *, runs: int, failures: int, figures: dict[str, Any], variant: str) -> Path:
    """One {"scenario", "runs", "failures", "figures"} line for bench/proof_report.py (tests/proof/record.py).
    A scenario's CI and proof variants share its name; the table shows the proof line when there is one."""
    from tests.proof.record import record

    return record(scenario, runs=runs, failures=failures, figures=json.loads(json.dumps(figures, default=str)),
                  variant=variant)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)


@contextmanager
def proof_scenario(scenario: str, *, variant: str) -> Iterator[dict[str, Any]]:
    """Record the scenario's line whatever happens: the body fills in "runs", "figures" and, when it
    counts them itself, "failures"; an exception out of the body counts as one more failure."""
    result: dict[str, Any] = {"runs": 0, "failures": 0, "figures": {}}
    clock = Stopwatch()
    raised = True
    try:
        yield result
        raised = False
    finally:
        record_proof(scenario, runs=result["runs"], failures=result["failures"] + int(raised), variant=variant,
                     figures={**result["figures"], "seconds": clock.seconds})


def seed_from_env(name: str = "INGOT_PROOF_SEED") -> int:
    """The seed to run with: $INGOT_PROOF_SEED when set (to replay a printed run), else a fresh one."""
    value = os.environ.get(name)
    return int(value) if value else int.from_bytes(os.urandom(4), "big")


# --- an isolated example inside a test transaction -----------------------------------------------------

class ExampleTransaction:
    """A savepoint around one hypothesis example, rolled back at its end, so every example starts from
    the same small world without a TRUNCATE.

    Marked the way Django marks a TestCase's own atomic blocks, so the API's
    `transaction.atomic(durable=True)` (Idempotency-Key) may open inside it, exactly as it does in a
    `django_db` test."""

    def __init__(self) -> None:
        self._atomic: Any = None

    def __enter__(self) -> ExampleTransaction:
        self._atomic = transaction.atomic()
        self._atomic._from_testcase = True
        self._atomic.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)


def vacuum_rolled_back_rows() -> float:
    """VACUUM the test database from a second connection; returns the seconds it took.

    Every example's rows are rolled back with its savepoint, but the test transaction itself stays open,
    so PostgreSQL never counts those dead rows and autovacuum never comes. Seen in a 2,000 x 50 run: after
    700 examples receipts_receipt had grown to ~1,000 pages for a few dozen live rows and one scan of it
    took 11 ms (0.2 ms after a VACUUM); the invariant statements scan it several times per check. VACUUM
    from another session may remove them (rows written by an aborted subtransaction are dead to everyone)
    and runs beside the open transaction (its lock does not conflict with row writes; TRUNCATE false: the
    trailing pages stay, no attempt at the exclusive lock)."""
    from django.db import connection

    started = time.monotonic()
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("VACUUM (TRUNCATE false)")
    finally:
        other.close()
    return time.monotonic() - started


# --- the invariants tests/invariants.py does not (yet) check -----------------------------------------

_REF_PATTERN = {
    ReceiptStatus.ACTIVE: re.compile(r"\A\Z"),
    ReceiptStatus.ENCUMBERED: re.compile(r"\AO\d+\Z"),
    ReceiptStatus.PLEDGED: re.compile(r"\Aloan:.+\Z"),
    ReceiptStatus.WITHDRAWAL_REQUESTED: re.compile(r"\Awithdrawal:.+\Z"),
    ReceiptStatus.SPLIT: re.compile(r"\A\Z"),
    ReceiptStatus.WITHDRAWN: re.compile(r"\A\Z"),
}
_FREEZABLE = {ReceiptStatus.ACTIVE, ReceiptStatus.ENCUMBERED, ReceiptStatus.PLEDGED,
              ReceiptStatus.WITHDRAWAL_REQUESTED}


_SNAPSHOT = {
    "orders": "SELECT o.id, o.member_id, o.side, o.status, o.quantity_kg, o.filled_kg, o.held_amount, o.price,"
              " o.instrument_id FROM trading_order o ORDER BY o.id",
    "receipts": "SELECT r.id, r.number, r.parent_id, r.lot_id, r.holder_id, m.legal_id, r.status, r.quantity_kg,"
                " r.encumbrance_ref, r.closed_at, r.frozen_from, r.last_event_seq, r.last_event_hash"
                " FROM receipts_receipt r LEFT JOIN members_member m ON m.id = r.holder_id ORDER BY r.id",
    "trades": "SELECT buy_order_id, sell_order_id, buyer_id, seller_id, quantity_kg, price, notional, buyer_fee,"
              " seller_fee FROM trading_trade",
    "accounts": "SELECT member_id, kind, available, held FROM trading_account",
    "book": "SELECT i.id, i.book_seq, count(c.id), max(c.seq) FROM trading_instrument i"
            " LEFT JOIN trading_bookcommand c ON c.instrument_id = i.id GROUP BY i.id, i.book_seq",
    "licences": "SELECT l.id, l.drawn_kg, l.quantity_cap_kg, (SELECT sum(d.quantity_kg) FROM"
                " compliance_licencedrawdown d WHERE d.licence_id = l.id) FROM compliance_exportlicence l",
    "drawn_for_active": "SELECT 1 FROM compliance_licencedrawdown d JOIN receipts_receipt r ON r.id = d.receipt_id"
                        " WHERE r.status = 'active' LIMIT 1",
}
# The signed events recorded since the auditor last looked: at or after the last event it replayed ($1, in
# microseconds since the epoch; the steps run one after another, each later than the last). Not by id: event
# keys are taken ahead in blocks per process (config.db.new_keys), so a later event may have a smaller id.
_EVENTS = ("SELECT id, receipt_id, seq, kind, event, hash, signature,"
           " (extract(epoch FROM recorded_at) * 1000000)::bigint FROM receipts_receiptevent"
           " WHERE recorded_at >= 'epoch'::timestamptz + $1 * interval '1 microsecond' ORDER BY receipt_id, seq")


@dataclass
class Snapshot:
    """Every row the invariants, the chain audit and the model comparison read, fetched once per check
    in a single round trip: the statements of tests/invariants.py, these rows and the new chain events
    (the stateful test checks after every step)."""

    orders: list[tuple[Any, ...]]  # pk, member, side, status, quantity, filled, held, price, instrument
    receipts: list[tuple[Any, ...]]  # pk, number, parent, lot, holder, legal id, status, kg, ref, closed, frozen, seq, hash
    trades: list[tuple[Any, ...]]  # buy, sell, buyer, seller, kg, price, notional, buyer fee, seller fee
    accounts: list[tuple[Any, ...]]  # member, kind, available, held
    book: list[tuple[Any, ...]]  # instrument, book_seq, commands, top seq
    licences: list[tuple[Any, ...]]  # pk, drawn, cap, ledger
    drawn_for_active: bool
    events: list[tuple[Any, ...]]  # id, receipt, seq, kind, event (JSON), hash, signature (JSON), recorded (µs)
    events_since: int  # the time (µs since the epoch) `events` were recorded at or after
    value_results: dict[str, list[tuple[Any, ...]]]  # tests/invariants.py's statements' rows

    @classmethod
    def take(cls, *, events_since: int = 0) -> Snapshot:
        from tests.invariants import fetch, value_invariant_statements

        value = value_invariant_statements()
        results = fetch({**value, **_SNAPSHOT, "events": _EVENTS}, {"events": [events_since]})
        return cls(**{name: results[name] for name in _SNAPSHOT if name != "drawn_for_active"},
                   drawn_for_active=bool(results["drawn_for_active"]), events=results["events"],
                   events_since=events_since, value_results={name: results[name] for name in value})


class ChainAuditor:
    """Replays every receipt's signed chain (hash links, transition map, signatures) and compares the
    state the chain implies with every receipt row. Incremental: only events new since the last check
    are replayed (the snapshot fetches just those), so it can run after every step of a long stateful
    run; the comparison with the rows is redone for every receipt each time."""

    def __init__(self) -> None:
        self.states: dict[int, chain.ReceiptState] = {}
        self.keys: dict[str, Ed25519PublicKey] = {}
        self.events_checked = 0
        self.last_event_at = 0  # µs since the epoch

    def _key(self, kid: str) -> Ed25519PublicKey:
        if kid not in self.keys:
            row = SigningKey.objects.filter(kid=kid).values_list("public_key", flat=True).first()
            assert row is not None, f"event signed by unknown kid {kid}"
            self.keys[kid] = Ed25519PublicKey.from_public_bytes(b64url_decode(row))
        return self.keys[kid]

    def snapshot(self) -> Snapshot:
        """A snapshot carrying the events this auditor has not replayed yet."""
        return Snapshot.take(events_since=self.last_event_at)

    def check(self, snapshot: Snapshot | None = None) -> None:
        snapshot = snapshot or self.snapshot()
        assert snapshot.events_since <= self.last_event_at, "snapshot misses events this auditor never saw"
        rows = {r[0]: r for r in snapshot.receipts}
        events: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for event in snapshot.events:
            known = self.states.get(event[1])
            if known is None or event[2] > known.seq:  # events recorded at the last one's time come again
                events[event[1]].append(event)
        # Parents before their parts (a part's chain opens from its parent's state); keys say nothing of it.
        ordered: list[int] = []

        def visit(pk: int) -> None:
            if pk in events and pk not in ordered:
                parent_id = rows[pk][2] if pk in rows else None
                if parent_id:
                    visit(parent_id)
                ordered.append(pk)

        for pk in sorted(events):
            visit(pk)
        for pk in ordered:
            assert pk in rows, f"events of receipt {pk}, which has no row"
            number, parent_id = rows[pk][1], rows[pk][2]
            state = self.states.get(pk)
            parent = self.states.get(parent_id) if parent_id else None
            for _, _, seq, kind, document, stored_hash, signature, recorded in events[pk]:
                document, signature = _json(document), _json(signature)
                raw = canonical_bytes(document)
                assert verify_bytes(raw, signature, self._key(signature["kid"])), \
                    f"{number} seq {seq}: signature does not verify"
                state = chain.apply_event(state, document, hash=hashlib.sha256(raw).hexdigest(), parent=parent)
                assert state.head == stored_hash, f"{number} seq {seq}: stored hash differs"
                assert kind == document["kind"] and seq == document["seq"]
                self.last_event_at = max(self.last_event_at, recorded)
                self.events_checked += 1
            assert state is not None
            self.states[pk] = state
        for pk, (_, number, _, _, _, legal_id, status, quantity, ref, _, _, seq, head) in rows.items():
            state = self.states.get(pk)
            assert state is not None, f"{number} has no events"
            assert (state.seq, state.head) == (seq, head), f"{number}: row says seq {seq}, chain has {state.seq}"
            assert state.status == status, f"{number}: row {status}, chain {state.status}"
            assert state.holder == legal_id, f"{number}: row holder {legal_id}, chain {state.holder}"
            assert state.quantity == quantity, f"{number}: quantity differs from its chain"
            if status == ReceiptStatus.ENCUMBERED:
                assert ref == state.order, f"{number}: order {ref} differs from its chain's {state.order}"
            if status == ReceiptStatus.PLEDGED:
                assert state.loan is not None and ref == f"loan:{state.loan[1]}", f"{number}: loan differs"
        assert len(self.states) == len(rows), "the auditor replayed chains of receipts that no longer exist"


def _json(value: Any) -> Any:
    """A JSON column as the ORM would give it (Django's PostgreSQL backend reads jsonb as text)."""
    return json.loads(value) if isinstance(value, str) else value


def assert_more_invariants(snapshot: Snapshot | None = None, auditor: ChainAuditor | None = None) -> None:
    """What DESIGN.md §6 implies beyond tests/invariants.py: reservations match what the orders still
    need, the book is never crossed, no member trades with itself, fees and drawdowns add up, receipt
    rows agree with their signed chains."""
    snapshot = snapshot or (auditor.snapshot() if auditor is not None else Snapshot.take())
    live_sells: dict[int, Decimal] = {}
    book: dict[tuple[int, str], list[Decimal]] = defaultdict(list)
    filled_by_order: dict[int, Decimal] = {}
    for pk, _member, side, status, quantity, filled, held, price, instrument in snapshot.orders:
        live = status in LIVE_ORDER_STATUSES
        # Status follows the fill: open = nothing yet, partially = some, filled = all.
        if status == "open":
            assert filled == 0, f"O{pk} is open with {filled} filled"
        elif status == "partially_filled":
            assert 0 < filled < quantity, f"O{pk} is partially filled with {filled} of {quantity}"
        elif status == "filled":
            assert filled == quantity, f"O{pk} is filled with {filled} of {quantity}"
        if not live:
            assert held == 0, f"O{pk} is {status} but still holds {held}"
        if filled:
            filled_by_order[pk] = filled
        if live:
            assert price is not None, f"O{pk} is live without a price (a market order rests)"
            book[(instrument, side)].append(price)
            if side == "sell":
                live_sells[pk] = quantity - filled
    # No book is ever crossed: matching leaves no bid at or above an ask.
    for (instrument, side), bids in book.items():
        asks = book.get((instrument, "sell"), [])
        if side == "buy" and asks:
            assert max(bids) < min(asks), f"instrument {instrument} crossed: bid {max(bids)} >= ask {min(asks)}"
    # Each live sell is backed by exactly its remaining quantity of encumbered receipts; nothing is
    # reserved for an order that is no longer live (a frozen reservation counts as still reserved).
    reserved: dict[int, Decimal] = defaultdict(Decimal)
    for _, number, _, _, _, _, status, quantity, ref, closed_at, frozen_from, _, _ in snapshot.receipts:
        if status == ReceiptStatus.ENCUMBERED or (status == ReceiptStatus.FROZEN
                                                  and frozen_from == ReceiptStatus.ENCUMBERED):
            reserved[int(ref.removeprefix("O"))] += quantity
        if status == ReceiptStatus.FROZEN:
            assert frozen_from in _FREEZABLE, f"{number} frozen from {frozen_from!r}"
        else:
            assert _REF_PATTERN[status].match(ref), f"{number} is {status} with reference {ref!r}"
            assert frozen_from == "", f"{number} is {status} but remembers a freeze from {frozen_from}"
        assert (closed_at is None) == (status in OPEN_STATUSES), f"{number} {status} closed_at {closed_at}"
    for pk, quantity in reserved.items():
        assert pk in live_sells, f"{quantity} kg of receipts stay reserved for O{pk}, which is not a live sell"
    for pk, remaining in live_sells.items():
        assert reserved.get(pk, ZERO) == remaining, f"O{pk} needs {remaining} kg but {reserved.get(pk)} are reserved"
    # Filled quantities are the sum of the order's trades; nobody trades with itself; fees add up.
    traded: dict[int, Decimal] = defaultdict(Decimal)
    fees = ZERO
    for buy, sell, buyer, seller, quantity, price, notional, buyer_fee, seller_fee in snapshot.trades:
        assert buyer != seller, f"self-trade between O{buy} and O{sell}"
        assert notional == (quantity * price).quantize(CENT, rounding=ROUND_DOWN), f"trade O{buy}/O{sell} notional"
        traded[buy] += quantity
        traded[sell] += quantity
        fees += buyer_fee + seller_fee
    assert filled_by_order == dict(traded), _diff("filled quantities", filled_by_order, dict(traded))
    fee_cash = sum((a for _, kind, a, _ in snapshot.accounts if kind == AccountKind.FEES), ZERO)
    assert fee_cash == fees, f"fee account {fee_cash} != fees charged {fees}"
    # The command log of every book is gapless.
    for instrument, book_seq, commands, top in snapshot.book:
        assert book_seq == (top or 0) == commands, f"instrument {instrument}: book_seq {book_seq}, log {commands}/{top}"
    # Export licences: the running total is the ledger's sum and within the cap; no drawdown for a receipt
    # that is not leaving (no service cancels a withdrawal yet; one that does must give the draw back).
    for pk, drawn, cap, ledger in snapshot.licences:
        assert drawn == (ledger or ZERO) <= cap, f"licence {pk}: drawn {drawn}, ledger {ledger}, cap {cap}"
    assert not snapshot.drawn_for_active, "a licence was drawn for a receipt that is not being withdrawn"
    if auditor is not None:
        auditor.check(snapshot)


# --- the reference model ------------------------------------------------------------------------------

def ceil_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_CEILING)


def floor_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_DOWN)


@dataclass
class ModelOrder:
    pk: int
    member: int
    side: str
    price: Decimal  # the limit; a market order's band edge
    quantity: Decimal
    tif: str
    order_type: str
    coid: str
    seq: int
    filled: Decimal = ZERO
    held: Decimal = ZERO
    status: str = "open"

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def live(self) -> bool:
        return self.status in ("open", "partially_filled")


@dataclass
class Prediction:
    """What the model says an order must do: refused with `code`, or these fills and STP cancels."""

    code: str | None
    hold: Decimal = ZERO
    fills: list[tuple[int, Decimal, Decimal]] = field(default_factory=list)  # maker pk, kg, price
    cancelled: list[int] = field(default_factory=list)
    status: str = "open"


@dataclass
class MarketModel:
    """Cash and title per member, the resting book, licences and lots, as the rules say they must be."""

    members: int
    maker_bps: int
    taker_bps: int
    lot_mass: list[Decimal]
    licence_cap: Decimal
    available: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    held: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    free_kg: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # ACTIVE receipts
    withdrawn_kg: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    pledged: dict[str, tuple[int, Decimal, str]] = field(default_factory=dict)  # number -> member, kg, loan
    pending: dict[str, tuple[int, Decimal]] = field(default_factory=dict)  # withdrawal requested
    frozen: dict[str, tuple[int, Decimal, str]] = field(default_factory=dict)  # number -> member, kg, from
    receipted: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # lot index -> kg
    drawn: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # licence per member
    orders: dict[int, ModelOrder] = field(default_factory=dict)
    fees: Decimal = ZERO
    trades: int = 0
    seq: int = 0

    # -- cash and orders --

    def hold_for(self, quantity: Decimal, limit: Decimal) -> Decimal:
        notional = ceil_cents(quantity * limit)
        return notional + ceil_cents(notional * max(self.maker_bps, self.taker_bps) / BPS)

    def live_orders(self) -> list[ModelOrder]:
        return [o for o in self.orders.values() if o.live]

    def predict(self, member: int, side: str, quantity: Decimal, limit: Decimal, tif: str,
                order_type: str) -> Prediction:
        hold = ZERO
        if side == "buy":
            hold = self.hold_for(quantity, limit)
            if self.available[member] < hold:
                return Prediction("insufficient_cash")
        elif self.free_kg[member] < quantity:
            return Prediction("insufficient_receipts")
        opposite = [o for o in self.live_orders() if o.side != side]
        if side == "buy":
            opposite.sort(key=lambda o: (o.price, o.seq))

            def crosses(o: ModelOrder) -> bool:
                return o.price <= limit
        else:
            opposite.sort(key=lambda o: (-o.price, o.seq))

            def crosses(o: ModelOrder) -> bool:
                return o.price >= limit
        if tif == "FOK" and sum((o.remaining for o in opposite if crosses(o) and o.member != member), ZERO) < quantity:
            return Prediction(None, hold=hold, status="expired")  # killed whole: no fills, no STP
        fills: list[tuple[int, Decimal, Decimal]] = []
        cancelled: list[int] = []
        remaining = quantity
        for resting in opposite:
            if remaining == 0 or not crosses(resting):
                break
            if resting.member == member:
                cancelled.append(resting.pk)  # self-trade prevention cancels the resting order
                continue
            take = min(remaining, resting.remaining)
            fills.append((resting.pk, take, resting.price))
            remaining -= take
        if remaining == 0:
            status = "filled"
        elif tif == "GTC" and order_type == "limit":
            status = "open" if remaining == quantity else "partially_filled"
        else:
            status = "expired"
        return Prediction(None, hold=hold, fills=fills, cancelled=cancelled, status=status)

    def apply(self, pk: int, member: int, side: str, quantity: Decimal, limit: Decimal, tif: str, order_type: str,
              coid: str, prediction: Prediction) -> ModelOrder:
        self.seq += 1
        taker = ModelOrder(pk=pk, member=member, side=side, price=limit, quantity=quantity, tif=tif,
                           order_type=order_type, coid=coid, seq=self.seq)
        self.orders[pk] = taker
        if side == "buy":
            self.available[member] -= prediction.hold
            self.held[member] += prediction.hold
            taker.held = prediction.hold
        else:
            self.free_kg[member] -= quantity
        for maker_pk, kg, price in prediction.fills:
            maker = self.orders[maker_pk]
            buy, sell = (taker, maker) if side == "buy" else (maker, taker)
            notional = floor_cents(kg * price)
            buyer_fee = floor_cents(notional * (self.taker_bps if buy is taker else self.maker_bps) / BPS)
            seller_fee = floor_cents(notional * (self.taker_bps if sell is taker else self.maker_bps) / BPS)
            self.held[buy.member] -= notional + buyer_fee
            buy.held -= notional + buyer_fee
            self.available[sell.member] += notional - seller_fee
            self.fees += buyer_fee + seller_fee
            self.free_kg[buy.member] += kg
            for order in (buy, sell):
                order.filled += kg
                order.status = "filled" if order.filled == order.quantity else "partially_filled"
            self.trades += 1
        for cancelled_pk in prediction.cancelled:
            self.close(self.orders[cancelled_pk], "cancelled")
        taker.status = prediction.status
        for order in {taker.pk: taker, **{m: self.orders[m] for m, _, _ in prediction.fills}}.values():
            if order.status in ("filled", "expired"):
                self.close(order, order.status)
        return taker

    def close(self, order: ModelOrder, status: str) -> None:
        """A finished order gives back what it still reserves."""
        order.status = status
        if order.side == "buy":
            self.held[order.member] -= order.held
            self.available[order.member] += order.held
            order.held = ZERO
        else:
            self.free_kg[order.member] += order.remaining

    # -- comparison with the database --

    def assert_matches(self, snapshot: Snapshot, member_pks: list[int], lot_pks: list[int],
                       licence_pks: list[int]) -> None:
        index = {pk: i for i, pk in enumerate(member_pks)}
        cash = {index[m]: (a, h) for m, kind, a, h in snapshot.accounts if kind == AccountKind.MEMBER and m in index}
        for m in range(self.members):
            assert cash.get(m, (ZERO, ZERO)) == (self.available[m], self.held[m]), \
                f"member {m}: cash {cash.get(m)} but the model says {(self.available[m], self.held[m])}"
        fee_cash = sum((a for _, kind, a, _ in snapshot.accounts if kind == AccountKind.FEES), ZERO)
        assert fee_cash == self.fees, f"fees {fee_cash} but the model says {self.fees}"
        by_status: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
        lots: dict[int, Decimal] = defaultdict(Decimal)
        pledged, pending, frozen = {}, {}, {}
        for _, number, _, lot, holder, _, status, quantity, ref, _, frozen_from, _, _ in snapshot.receipts:
            m = index.get(holder)
            assert m is not None, f"{number} is held by a member outside the market"
            by_status[(m, status)] += quantity
            if status != ReceiptStatus.SPLIT:
                lots[lot] += quantity
            if status == ReceiptStatus.PLEDGED:
                pledged[number] = (m, quantity, ref.removeprefix("loan:"))
            elif status == ReceiptStatus.WITHDRAWAL_REQUESTED:
                pending[number] = (m, quantity)
            elif status == ReceiptStatus.FROZEN:
                frozen[number] = (m, quantity, frozen_from)
        live = self.live_orders()
        for m in range(self.members):
            assert by_status[(m, ReceiptStatus.ACTIVE)] == self.free_kg[m], \
                f"member {m}: {by_status[(m, ReceiptStatus.ACTIVE)]} kg active, model {self.free_kg[m]}"
            selling = sum((o.remaining for o in live if o.member == m and o.side == "sell"), ZERO)
            # A receipt frozen while it backs a sell order stays reserved for it.
            reserved = by_status[(m, ReceiptStatus.ENCUMBERED)] + sum(
                (kg for (holder, kg, before) in frozen.values() if holder == m and before == ReceiptStatus.ENCUMBERED),
                ZERO)
            assert reserved == selling, f"member {m}: {reserved} kg reserved, live sells need {selling}"
            assert by_status[(m, ReceiptStatus.WITHDRAWN)] == self.withdrawn_kg[m], f"member {m}: withdrawn kg"
        assert pledged == self.pledged, f"pledged {pledged} but the model says {self.pledged}"
        assert pending == self.pending, f"withdrawals {pending} but the model says {self.pending}"
        assert frozen == self.frozen, f"frozen {frozen} but the model says {self.frozen}"
        for i, pk in enumerate(lot_pks):
            assert lots[pk] == self.receipted[i], f"lot {i}: receipted {lots[pk]}, model {self.receipted[i]}"
        drawn = {pk: d for pk, d, _, _ in snapshot.licences}
        for m, pk in enumerate(licence_pks):
            assert drawn[pk] == self.drawn[m], f"licence of member {m}: drawn {drawn[pk]}, model {self.drawn[m]}"
        orders = {pk: (status, filled, held) for pk, _, _, status, _, filled, held, _, _ in snapshot.orders}
        expected = {pk: (o.status, o.filled, o.held) for pk, o in self.orders.items()}
        assert orders == expected, _diff("orders", orders, expected)
        assert len(snapshot.trades) == self.trades, f"{len(snapshot.trades)} trades, model {self.trades}"


def _diff(what: str, actual: dict[Any, Any], expected: dict[Any, Any]) -> str:
    keys = sorted(set(actual) | set(expected))
    rows = [f"  {k}: db {actual.get(k)} model {expected.get(k)}" for k in keys if actual.get(k) != expected.get(k)]
    return f"{what} differ from the model:\n" + "\n".join(rows[:20])


def grams(kg: Decimal) -> int:
    return int(kg * 1000)


def kg(grams_: int) -> Decimal:
    return (Decimal(grams_) / 1000).quantize(Decimal("0.001"))


# --- the small market the stateful and idempotency suites run in ------------------------------------------

@dataclass
class MarketWorld:
    """One warehouse (CN) with graded lots, one instrument, traders with API clients, cash, one receipt
    each and an export licence each (gallium to DE), a lender, and the warehouse operator's client."""

    receipts: Any  # tests.factories.receipts.ReceiptWorld
    instrument: Instrument
    traders: list[Member]
    clients: list[Any]  # tests.conftest.MemberClient, one per trader
    operator_client: Any
    lender: Member
    lots: list[Lot]
    licences: list[ExportLicence]
    funding: Decimal  # each trader's opening cash
    opening_kg: Decimal  # each trader's opening receipt, issued from the last lot

    @property
    def trader_pks(self) -> list[int]:
        return [m.pk for m in self.traders]


def build_market_world(*, traders: int = 4, lot_masses: Iterable[str] = ("50.000", "200.000"),
                       licence_cap: str = "30.000", funding: str = "20000.00",
                       opening_kg: str = "15.000") -> MarketWorld:
    from receipts.platform_keys import forget_active_key, platform_signer
    from receipts.services import receipt_issue
    from tests.conftest import client_for
    from tests.factories.compliance import licence
    from tests.factories.members import MemberFactory, UserFactory
    from tests.factories.receipts import ReceiptWorld
    from tests.factories.trading import instrument
    from trading.ledger import cash_deposit

    forget_active_key()
    platform_signer()  # made here, outside any example, so no example rolls the platform key back
    world = ReceiptWorld()
    members = [MemberFactory(roles=["trader"], country="CN", name=f"Proof Metals {i}") for i in range(traders)]
    lots = [world.lot(mass=mass, depositor=members[i % traders]) for i, mass in enumerate(lot_masses)]
    for member in members:
        cash_deposit(member=member, currency="USD", amount=Decimal(funding), by=None, reason="proof funding")
        if Decimal(opening_kg):
            receipt_issue(lot=lots[-1], holder=member, quantity_kg=Decimal(opening_kg), issued_by=world.operator)
    return MarketWorld(
        receipts=world, instrument=instrument(), traders=members,
        clients=[client_for(UserFactory(member=m)) for m in members],
        operator_client=client_for(UserFactory(member=world.operator)),
        lender=MemberFactory(roles=["trader"], country="CN", name="Proof Lending Bank"), lots=lots,
        licences=[licence(m, cap=licence_cap, destination="DE") for m in members],
        funding=Decimal(funding), opening_kg=Decimal(opening_kg))




# --- threads, one database connection each -----------------------------------------------------------

def run_concurrently(threads: int, operations: int, action: Any) -> tuple[Counter[str], float]:
    """Run `action(i)` for i in range(operations) from `threads` threads released together by a barrier;
    each thread uses its own connection and closes it at its end. Returns outcome counts ("ok", an
    ApplicationError's code, or the repr of anything else) and the wall time in seconds."""
    import threading

    from django.db import connections

    from config.errors import ApplicationError

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(t, operations, threads):
                try:
                    result = action(i)
                    outcome = result if isinstance(result, str) else "ok"
                except ApplicationError as exc:
                    outcome = exc.code
                except Exception as exc:  # noqa: BLE001 - counted, and the test fails on it
                    outcome = f"unexpected {exc!r}"[:300]
                with lock:
                    outcomes[outcome] += 1
        finally:
            connections.close_all()

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes, round(time.monotonic() - started, 2)
