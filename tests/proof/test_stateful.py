"""Stateful model test on real PostgreSQL: random programs of deposits, issues, orders, cancels, pledges,
splits, freezes, withdrawals and idempotent replays, with every value invariant of DESIGN.md §6 (and
those tests/proof/state_model.py adds) and a reference model of cash, title and the book checked after
every step.

Each hypothesis example runs in a savepoint of the test transaction, rolled back at its end, so the
small world (warehouse, graded lots, traders, licences) is built once per test. The seed is printed;
INGOT_PROOF_SEED=<seed> replays a run (INGOT_STATEFUL_EXAMPLES / INGOT_STATEFUL_STEPS shorten it).

The checks after a step cost one round trip to PostgreSQL: every invariant statement of tests/invariants.py
(prepared once per connection), the rows the other checks and the model compare, and the chain events
appended since the last check, fetched together; the rest is Python over those rows. A step itself (the
services and the API under test) is now most of an example's time.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.db.models import Q
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from compliance import policy
from config.errors import ApplicationError
from receipts.models import OPEN_STATUSES, Receipt, ReceiptStatus
from receipts.services import (
    receipt_freeze,
    receipt_issue,
    receipt_pledge,
    receipt_split,
    receipt_unfreeze,
    receipt_unpledge,
    receipt_withdrawal_complete,
    receipt_withdrawal_request,
)
from tests.invariants import assert_value_invariants
from tests.proof.state_model import (
    ChainAuditor,
    ExampleTransaction,
    MarketModel,
    MarketWorld,
    Snapshot,
    assert_more_invariants,
    build_market_world,
    grams,
    kg,
    proof_scenario,
    seed_from_env,
    vacuum_rolled_back_rows,
)
from trading import book_cache
from trading.ledger import cash_deposit
from trading.models import Trade
from trading.services import order_cancel, order_place

# Buyers bid 578–585 and sellers ask 575–582 (half-dollar ticks): most orders meet someone, some rest.
STEPS = st.integers(0, 14)
TIF = st.sampled_from(["GTC", "GTC", "GTC", "IOC", "FOK"])
VIA_API = st.sampled_from([False, False, True])  # the API path costs ~3x a service call
TRADERS = 3
MEMBER = st.integers(0, TRADERS - 1)
QUANTITIES = st.builds(lambda whole, part: Decimal(whole) + Decimal(part), st.integers(1, 30),
                       st.sampled_from(["0", "0", "0.5", "0.250", "0.001"]))
PICK = st.integers(0, 63)  # an index into what exists (modulo); small, so 30 steps fit the choice buffer
SCOPE = st.sampled_from(["active", "active", "active", "any"])  # "any": also attack receipts that may not move


def limit_price(side: str, step: int) -> Decimal:
    return Decimal("578.00" if side == "buy" else "575.00") + Decimal(step) * Decimal("0.50")


@dataclass
class ApiCall:
    """A creating request that succeeded, kept to be replayed with its Idempotency-Key."""

    kind: str  # order | issue | withdrawal
    client: Any
    path: str
    body: dict[str, Any]
    key: str
    status: int
    content: bytes

    def mismatched(self) -> dict[str, Any]:
        body = dict(self.body)
        if self.kind == "order":
            body["quantity_kg"] = str(Decimal(body["quantity_kg"]) + 1)
        elif self.kind == "issue":
            body["quantity_kg"] = str(Decimal(body["quantity_kg"]) + Decimal("0.001"))
        else:
            body["destination_country"] = "CN" if body["destination_country"] == "DE" else "DE"
        return body


def outcome(action: Callable[[], Any]) -> tuple[str | None, Any]:
    """(None, result) when the service did it, (code, None) when it refused with a domain error."""
    try:
        return None, action()
    except ApplicationError as exc:
        return exc.code, None


def counted(function: Callable[..., str | None]) -> Callable[..., None]:
    """Count each step by rule and outcome, for the report's figures."""

    @functools.wraps(function)
    def step(self: IngotMachine, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        result = function(self, *args, **kwargs)
        IngotMachine.stats[f"{function.__name__}:{result or 'ok'}"] += 1
        IngotMachine.stats["steps"] += 1
        self.steps_run += 1
        IngotMachine.timings["steps"] += time.perf_counter() - started
        IngotMachine.rule_seconds[function.__name__] += time.perf_counter() - started
        IngotMachine.rule_counts[function.__name__] += 1

    return step


class IngotMachine(RuleBasedStateMachine):
    world: MarketWorld
    steps_per_example = 30
    stats: Counter[str] = Counter()
    timings: defaultdict[str, float] = defaultdict(float)
    rule_seconds: defaultdict[str, float] = defaultdict(float)
    rule_counts: Counter[str] = Counter()
    progress: Callable[[int], None] | None = None  # told every `progress_every` examples (long runs)
    progress_every = 100
    vacuum_every = 50  # examples between VACUUMs of what they rolled back (see vacuum_rolled_back_rows)

    def __init__(self) -> None:
        started = time.perf_counter()
        super().__init__()
        w = self.world
        self.tx = ExampleTransaction().__enter__()
        book_cache.drop(w.instrument.pk)
        inst = w.instrument
        self.model = MarketModel(
            members=len(w.traders), maker_bps=inst.maker_fee_bps, taker_bps=inst.taker_fee_bps,
            lot_mass=[lot.net_mass_kg for lot in w.lots],
            licence_cap=w.licences[0].quantity_cap_kg)
        for m in range(len(w.traders)):  # what build_market_world gave every trader
            self.model.available[m] = w.funding
            self.model.free_kg[m] = w.opening_kg
            self.model.receipted[len(w.lots) - 1] += w.opening_kg
        self.index = {pk: i for i, pk in enumerate(w.trader_pks)}
        self.auditor = ChainAuditor()
        self.api_log: list[ApiCall] = []
        self.frozen_loans: dict[str, str] = {}
        self.counter = itertools.count(1)
        self.steps_run = 0
        self.snapshot: Snapshot | None = None  # the last invariant check's rows
        IngotMachine.stats["examples"] += 1
        IngotMachine.timings["example_setup"] += time.perf_counter() - started

    def teardown(self) -> None:
        started = time.perf_counter()
        self.tx.__exit__(None, None, None)
        book_cache.drop(self.world.instrument.pk)
        IngotMachine.stats["chain_events_verified"] += self.auditor.events_checked
        if self.steps_run >= self.steps_per_example:
            IngotMachine.stats["examples_full_length"] += 1
        IngotMachine.timings["example_rollback"] += time.perf_counter() - started
        examples = IngotMachine.stats["examples"]
        if examples % IngotMachine.vacuum_every == 0:
            IngotMachine.timings["vacuum"] += vacuum_rolled_back_rows()
        if IngotMachine.progress is not None and examples % IngotMachine.progress_every == 0:
            IngotMachine.progress(examples)

    # -- helpers --

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def pick_receipt(self, pick: int, scope: str) -> Receipt | None:
        """The pick-th (modulo) open receipt in the order receipts were made: only active ones, or any open one
        (scope "any"). Chosen from the last invariant check's snapshot, which is current: hypothesis checks the
        invariants after __init__ and after every step, nothing writes in between, and every rule picks
        before it changes anything. Then only the chosen row is read.

        The order is the receipt number's serial, not the key: a split's receipts take keys from this
        process's block (config.db.new_keys) while an issued one takes the sequence's next, so key order
        depends on how much of the block earlier examples used, and hypothesis, replaying an example, would
        pick another receipt. Serials all come from one block pool, in the order receipts are made."""
        statuses = [ReceiptStatus.ACTIVE] if scope == "active" else OPEN_STATUSES
        if self.snapshot is None:
            rows = list(Receipt.objects.filter(status__in=statuses).values_list("pk", "number"))
        else:
            rows = [(row[0], row[1]) for row in self.snapshot.receipts if row[6] in statuses]
        found = [pk for pk, _ in sorted(rows, key=lambda r: int(r[1].rsplit("-", 1)[1]))]
        if not found:
            return None
        return Receipt.objects.select_related("lot__warehouse", "lot__metal", "holder").get(
            pk=found[pick % len(found)])

    def api(self, kind: str, client: Any, path: str, body: dict[str, Any]) -> Any:
        key = self.next_id("idem-")
        response = client.post(path, body, key=key)
        assert response.status_code != 500, response.content[:2000]
        if response.status_code in (200, 201):
            self.api_log.append(ApiCall(kind, client, path, body, key, response.status_code, response.content))
        return response

    def expect(self, got: str | None, expected: str | None, what: str) -> None:
        assert got == expected, f"{what}: expected {expected or 'success'}, got {got or 'success'}"

    # -- cash --

    @rule(m=MEMBER, amount=st.sampled_from(["250.00", "1000.00", "4000.50", "15000.00", "60000.00"]),
          reason=st.sampled_from(["wire", "SWIFT MT103"]))
    @counted
    def deposit(self, m: int, amount: str, reason: str) -> str | None:
        cash_deposit(member=self.world.traders[m], currency="USD", amount=Decimal(amount), by=None,
                     reason=f"stateful test {reason}")
        self.model.available[m] += Decimal(amount)
        return None

    # -- title --

    @rule(lot=st.integers(0, 1), m=MEMBER, quantity=QUANTITIES, via_api=VIA_API)
    @counted
    def issue(self, lot: int, m: int, quantity: Decimal, via_api: bool) -> str | None:
        w = self.world
        expected = None if self.model.receipted[lot] + quantity <= self.model.lot_mass[lot] else "lot_over_issued"
        if via_api:
            response = self.api("issue", w.operator_client, f"/api/v1/lots/{w.lots[lot].pk}/receipts",
                                {"holder": w.traders[m].legal_id, "quantity_kg": str(quantity)})
            code = None if response.status_code == 201 else response.json()["code"]
            assert code is None or response.status_code == 409, response.content
        else:
            code, _ = outcome(lambda: receipt_issue(lot=w.lots[lot], holder=w.traders[m], quantity_kg=quantity,
                                                    issued_by=w.receipts.operator))
        self.expect(code, expected, f"issue {quantity} kg of lot {lot}")
        if code is None:
            self.model.free_kg[m] += quantity
            self.model.receipted[lot] += quantity
        return code

    # -- orders --

    def place(self, m: int, side: str, order_type: str, tif: str, quantity: Decimal, price: Decimal | None,
              via_api: bool) -> str | None:
        w = self.world
        limit = price if price is not None else (w.instrument.band_high if side == "buy" else w.instrument.band_low)
        prediction = self.model.predict(m, side, quantity, limit, tif, order_type)
        coid = self.next_id("c")
        if via_api:
            body = {"instrument": w.instrument.code, "side": side, "order_type": order_type, "tif": tif,
                    "quantity_kg": str(quantity), "price": None if price is None else str(price),
                    "client_order_id": coid}
            response = self.api("order", w.clients[m], "/api/v1/orders", body)
            if response.status_code == 201:
                code, pk = None, response.json()["order"]["id"]
                cancelled = response.json()["cancelled_order_ids"]
            else:
                code, pk, cancelled = response.json()["code"], None, []
                assert response.status_code == 409, response.content
        else:
            code, result = outcome(lambda: order_place(
                member=w.traders[m], instrument=w.instrument, side=side, order_type=order_type, tif=tif,
                quantity_kg=quantity, price=price, client_order_id=coid))
            pk = result.order.pk if result else None
            cancelled = result.cancelled_order_ids if result else []
            assert result is None or not result.replayed
        self.expect(code, prediction.code, f"{side} {quantity} kg @ {limit} {tif} by member {m}")
        if code is not None:
            return code
        trades = Trade.objects.filter(Q(buy_order_id=pk) | Q(sell_order_id=pk)).order_by("pk")
        fills = [(t.sell_order_id if side == "buy" else t.buy_order_id, t.quantity_kg, t.price) for t in trades]
        assert fills == prediction.fills, f"fills {fills} but the model matched {prediction.fills}"
        assert sorted(cancelled) == sorted(prediction.cancelled), \
            f"self-trade cancels {cancelled}, model {prediction.cancelled}"
        self.model.apply(pk, m, side, quantity, limit, tif, order_type, coid, prediction)
        IngotMachine.stats["trades"] += len(fills)
        return None

    # Hypothesis sorts rules by their number of arguments and favours the first: order entry takes one
    # packed argument (and every other rule at least two) so that placing orders is the most frequent step.
    @rule(order=st.tuples(MEMBER, st.sampled_from(["buy", "sell"]), STEPS, st.integers(1, 12), TIF, VIA_API))
    @counted
    def place_limit(self, order: tuple[int, str, int, int, str, bool]) -> str | None:
        m, side, step, quantity, tif, via_api = order
        return self.place(m, side, "limit", tif, Decimal(quantity), limit_price(side, step), via_api)

    @rule(order=st.tuples(MEMBER, st.integers(1, 12), TIF, VIA_API))
    @counted
    def take(self, order: tuple[int, int, str, bool]) -> str | None:
        """Trade against another member's best resting order at its price (random programs rarely cross)."""
        m, quantity, tif, via_api = order
        others = [o for o in self.model.live_orders() if o.member != m]
        if not others:
            side = "sell" if quantity % 2 else "buy"
            return self.place(m, side, "limit", "GTC", Decimal(quantity), Decimal("580.00"), via_api)
        best = min(others, key=lambda o: (-o.price if o.side == "buy" else o.price, o.seq))
        side = "sell" if best.side == "buy" else "buy"
        return self.place(m, side, "limit", tif, Decimal(quantity), best.price, via_api)

    @rule(order=st.tuples(MEMBER, st.sampled_from(["buy", "sell"]), st.integers(1, 12),
                          st.sampled_from(["IOC", "FOK"]), VIA_API))
    @counted
    def place_market(self, order: tuple[int, str, int, str, bool]) -> str | None:
        m, side, quantity, tif, via_api = order
        return self.place(m, side, "market", tif, Decimal(quantity), None, via_api)

    @precondition(lambda self: self.model.orders)
    @rule(pick=PICK, live=st.sampled_from([True, True, True, False]), own=st.sampled_from([True, True, True, False]))
    @counted
    def cancel(self, pick: int, live: bool, own: bool) -> str | None:
        orders = sorted(self.model.orders.values(), key=lambda o: o.pk)
        if live and self.model.live_orders():
            orders = sorted(self.model.live_orders(), key=lambda o: o.pk)
        order = orders[pick % len(orders)]
        by = order.member if own else (order.member + 1) % self.model.members
        expected = "not_found" if not own else (None if order.live else "order_not_live")
        code, _ = outcome(lambda: order_cancel(member=self.world.traders[by], order_id=order.pk))
        self.expect(code, expected, f"cancel O{order.pk} ({order.status}) by member {by}")
        if code is None:
            self.model.close(order, "cancelled")
        return code

    @precondition(lambda self: self.model.orders)
    @rule(pick=PICK, change=st.sampled_from([None, None, "quantity", "side"]))
    @counted
    def replay_client_order_id(self, pick: int, change: str | None) -> str | None:
        order = sorted(self.model.orders.values(), key=lambda o: o.pk)[pick % len(self.model.orders)]
        side = {"buy": "sell", "sell": "buy"}[order.side] if change == "side" else order.side
        quantity = order.quantity + (1 if change == "quantity" else 0)
        code, result = outcome(lambda: order_place(
            member=self.world.traders[order.member], instrument=self.world.instrument, side=side,
            order_type=order.order_type, tif=order.tif, quantity_kg=quantity,
            price=order.price if order.order_type == "limit" else None, client_order_id=order.coid))
        self.expect(code, None if change is None else "client_order_id_reused", f"replay of {order.coid}")
        if result is not None:
            assert result.replayed and result.order.pk == order.pk
        return code

    # -- pledges, splits, freezes --

    @rule(pick=PICK, scope=SCOPE)
    @counted
    def pledge(self, pick: int, scope: str) -> str | None:
        receipt = self.pick_receipt(pick, scope)
        if receipt is None:
            return "nothing"
        m, loan = self.index[receipt.holder_id], self.next_id("loan-")
        code, _ = outcome(lambda: receipt_pledge(receipt=receipt, by=receipt.holder, lender=self.world.lender,
                                                 loan=loan))
        self.expect(code, None if receipt.status == ReceiptStatus.ACTIVE else "illegal_transition",
                    f"pledge {receipt.number} ({receipt.status})")
        if code is None:
            self.model.free_kg[m] -= receipt.quantity_kg
            self.model.pledged[receipt.number] = (m, receipt.quantity_kg, loan)
        return code

    @precondition(lambda self: self.model.pledged or self.frozen_loans)
    @rule(pick=PICK, wrong_loan=st.sampled_from([False, False, False, True]))
    @counted
    def unpledge(self, pick: int, wrong_loan: bool) -> str | None:
        candidates = sorted([(n, loan) for n, (_, _, loan) in self.model.pledged.items()]
                            + list(self.frozen_loans.items()))
        number, loan = candidates[pick % len(candidates)]
        receipt = Receipt.objects.get(number=number)
        code, _ = outcome(lambda: receipt_unpledge(receipt=receipt, lender=self.world.lender,
                                                   loan="someone-else" if wrong_loan else loan))
        expected = "not_pledged" if wrong_loan else (None if number in self.model.pledged else "illegal_transition")
        self.expect(code, expected, f"unpledge {number} ({receipt.status})")
        if code is None:
            m, quantity, _ = self.model.pledged.pop(number)
            self.model.free_kg[m] += quantity
        return code

    @rule(pick=PICK, scope=SCOPE, weights=st.lists(st.integers(1, 9), min_size=2, max_size=3),
          conserved=st.sampled_from([True, True, True, False]))
    @counted
    def split(self, pick: int, scope: str, weights: list[int], conserved: bool) -> str | None:
        receipt = self.pick_receipt(pick, scope)
        if receipt is None:
            return "nothing"
        total = grams(receipt.quantity_kg)
        parts = [max(1, total * w // sum(weights)) for w in weights[:-1]]
        parts.append(total - sum(parts) + (0 if conserved else 1))
        if parts[-1] <= 0:
            expected: str | None = "invalid_quantity"
        elif not conserved:
            expected = "quantity_not_conserved"
        else:
            expected = None if receipt.status == ReceiptStatus.ACTIVE else "illegal_transition"
        code, children = outcome(lambda: receipt_split(receipt=receipt, quantities=[kg(g) for g in parts],
                                                       by=receipt.holder))
        self.expect(code, expected, f"split {receipt.number} ({receipt.status}) into {parts} g")
        if children is not None:
            assert [c.quantity_kg for c in children] == [kg(g) for g in parts]
            assert all(c.holder_id == receipt.holder_id and c.parent_id == receipt.pk for c in children)
        return code

    @rule(pick=PICK, scope=st.sampled_from(["active", "any"]))
    @counted
    def freeze(self, pick: int, scope: str) -> str | None:
        receipt = self.pick_receipt(pick, scope)
        if receipt is None:
            return "nothing"
        status, number, quantity = receipt.status, receipt.number, receipt.quantity_kg
        code, _ = outcome(lambda: receipt_freeze(receipt=receipt, reason="stateful test hold"))
        self.expect(code, "illegal_transition" if status == ReceiptStatus.FROZEN else None,
                    f"freeze {number} ({status})")
        if code is None:
            m = self.index[receipt.holder_id]
            if status == ReceiptStatus.ENCUMBERED:
                # The freeze pulls the sell order behind the receipt (all its receipts are released), then
                # freezes the receipt as an active one.
                pulled = self.model.orders[int(receipt.encumbrance_ref.removeprefix("O"))]
                self.model.close(pulled, "cancelled")
                IngotMachine.stats["freeze_pulled_order"] += 1
                status = ReceiptStatus.ACTIVE
            if status == ReceiptStatus.ACTIVE:
                self.model.free_kg[m] -= quantity
            elif status == ReceiptStatus.PLEDGED:
                self.frozen_loans[number] = self.model.pledged.pop(number)[2]
            elif status == ReceiptStatus.WITHDRAWAL_REQUESTED:
                self.model.pending.pop(number)
            self.model.frozen[number] = (m, quantity, status)
            IngotMachine.stats[f"freeze_from:{status}"] += 1
        return code

    @precondition(lambda self: self.model.frozen)
    @rule(pick=PICK, reason=st.sampled_from(["cleared", "false positive"]))
    @counted
    def unfreeze(self, pick: int, reason: str) -> str | None:
        number = sorted(self.model.frozen)[pick % len(self.model.frozen)]
        code, _ = outcome(lambda: receipt_unfreeze(receipt=Receipt.objects.get(number=number), reason=reason))
        self.expect(code, None, f"unfreeze {number}")
        m, quantity, status = self.model.frozen.pop(number)
        if status == ReceiptStatus.ACTIVE:
            self.model.free_kg[m] += quantity
        elif status == ReceiptStatus.PLEDGED:
            self.model.pledged[number] = (m, quantity, self.frozen_loans.pop(number))
        elif status == ReceiptStatus.WITHDRAWAL_REQUESTED:
            self.model.pending[number] = (m, quantity)
        return code

    # -- withdrawals --

    @rule(pick=PICK, scope=SCOPE, destination=st.sampled_from(["CN", "DE", "DE"]), via_api=VIA_API)
    @counted
    def withdraw(self, pick: int, scope: str, destination: str, via_api: bool) -> str | None:
        receipt = self.pick_receipt(pick, scope)
        if receipt is None:
            return "nothing"
        m, quantity = self.index[receipt.holder_id], receipt.quantity_kg
        if destination == "DE" and self.model.drawn[m] + quantity > self.model.licence_cap:
            expected: str | None = "licence_exhausted"  # export control is asked before the receipt moves
        else:
            expected = None if receipt.status == ReceiptStatus.ACTIVE else "illegal_transition"
        if via_api:
            response = self.api("withdrawal", self.world.clients[m], f"/api/v1/holdings/{receipt.number}/withdrawal",
                                {"destination_country": destination})
            code = None if response.status_code == 201 else response.json()["code"]
            assert code is None or response.status_code == {"licence_exhausted": 403}.get(code, 409), response.content
        else:
            def request() -> Receipt:  # what trading/api.py WithdrawalRequestView does, in one transaction
                with transaction.atomic():
                    policy.require(policy.withdrawal_check_and_draw(receipt.holder, receipt, destination, quantity))
                    return receipt_withdrawal_request(receipt=receipt, by=receipt.holder,
                                                      withdrawal_ref=f"W-{receipt.number}")
            code, _ = outcome(request)
        self.expect(code, expected, f"withdraw {receipt.number} ({receipt.status}, {quantity} kg) to {destination}")
        if code is None:
            self.model.free_kg[m] -= quantity
            self.model.pending[receipt.number] = (m, quantity)
            if destination == "DE":
                self.model.drawn[m] += quantity
        return code

    def withdrawals_to_complete(self) -> list[str]:
        frozen = sorted(n for n, v in self.model.frozen.items() if v[2] == ReceiptStatus.WITHDRAWAL_REQUESTED)
        return sorted(self.model.pending) + frozen

    @precondition(lambda self: self.withdrawals_to_complete())
    @rule(pick=PICK, requested=st.sampled_from([True, True, True, False]))
    @counted
    def complete_withdrawal(self, pick: int, requested: bool) -> str | None:
        candidates = self.withdrawals_to_complete()
        number = candidates[pick % len(candidates)]
        if not requested:  # the warehouse tries to close a receipt nobody asked to withdraw
            active = self.pick_receipt(pick, "active")
            number = active.number if active is not None else number
        code, _ = outcome(lambda: receipt_withdrawal_complete(receipt=Receipt.objects.get(number=number),
                                                              by=self.world.receipts.operator))
        if number in self.model.pending:
            expected: str | None = None
        elif number in self.model.frozen:
            expected = "receipt_frozen"
        else:
            expected = "illegal_transition"
        self.expect(code, expected, f"complete withdrawal of {number}")
        if code is None:
            m, quantity = self.model.pending.pop(number)
            self.model.withdrawn_kg[m] += quantity
        return code

    # -- Idempotency-Key replays over the API --

    @precondition(lambda self: self.api_log)
    @rule(pick=PICK, how=st.sampled_from(["same", "same", "mismatch", "new_key"]))
    @counted
    def replay_api_request(self, pick: int, how: str) -> str | None:
        call = self.api_log[pick % len(self.api_log)]
        if how == "new_key" and call.kind != "order":
            how = "same"
        if how == "same":
            response = call.client.post(call.path, call.body, key=call.key)
            assert (response.status_code, response.content) == (call.status, call.content), \
                f"replay of {call.key} answered {response.status_code} {response.content[:300]!r}"
            assert response["Idempotent-Replayed"] == "true"
            return "replayed"
        if how == "mismatch":
            response = call.client.post(call.path, call.mismatched(), key=call.key)
            assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused", \
                response.content[:500]
            return "mismatch_422"
        # Same order, same client_order_id, a fresh key: the order is found by its client_order_id.
        response = call.client.post(call.path, call.body, key=self.next_id("idem-"))
        first = _json(call.content)["order"]["id"]
        assert response.status_code == 200 and response.json()["order"]["id"] == first, response.content[:500]
        return "coid_replayed"

    # -- after every step --

    @invariant()
    def value_invariants_hold(self) -> None:
        # One round trip: the set-based statements of tests/invariants.py, the rows the other checks and
        # the model read, and the chain events appended since the last check; then every check in Python.
        started = time.perf_counter()
        snapshot = self.snapshot = self.auditor.snapshot()
        fetched = time.perf_counter()
        assert_value_invariants(snapshot.value_results)
        assert_more_invariants(snapshot, self.auditor)
        self.model.assert_matches(snapshot, self.world.trader_pks, [lot.pk for lot in self.world.lots],
                                  [lic.pk for lic in self.world.licences])
        IngotMachine.timings["invariants_fetch"] += fetched - started
        IngotMachine.timings["invariants_check"] += time.perf_counter() - fetched
        IngotMachine.stats["invariant_checks"] += 1


def _json(content: bytes) -> Any:
    import json

    return json.loads(content)


STATEFUL = "stateful model: random programs on PostgreSQL, invariants and model after every step"


def run_stateful(capsys: pytest.CaptureFixture[str], *, examples: int, steps: int, variant: str) -> None:
    # INGOT_STATEFUL_EXAMPLES / INGOT_STATEFUL_STEPS: a shorter run (profiling, replaying a seed quickly).
    examples = int(os.environ.get("INGOT_STATEFUL_EXAMPLES") or examples)
    steps = int(os.environ.get("INGOT_STATEFUL_STEPS") or steps)
    seed = seed_from_env()
    with capsys.disabled():
        print(f"\n[stateful {examples} x {steps}] hypothesis seed {seed} (INGOT_PROOF_SEED={seed} to replay)")
    IngotMachine.world = build_market_world(traders=TRADERS, opening_kg="40.000")
    IngotMachine.stats = Counter()
    IngotMachine.timings = defaultdict(float)
    IngotMachine.rule_seconds = defaultdict(float)
    IngotMachine.rule_counts = Counter()
    IngotMachine.steps_per_example = steps
    started = time.monotonic()

    def progress(done: int) -> None:
        with capsys.disabled():
            print(f"[stateful {examples} x {steps}] {done} examples, {time.monotonic() - started:.0f} s", flush=True)

    IngotMachine.progress = progress
    with proof_scenario(STATEFUL, variant=variant) as out:
        try:
            # _min_steps: every example runs all its steps (by default hypothesis may end one early, and
            # about a quarter did); a failing program still shrinks its rules and arguments.
            run_state_machine_as_test(
                hypothesis_seed(seed)(IngotMachine), _min_steps=steps,
                settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
                                  suppress_health_check=list(HealthCheck), print_blob=True))
        finally:
            stats = IngotMachine.stats
            outcomes = {k: v for k, v in sorted(stats.items()) if ":" in k}
            out.update(runs=stats["examples"], figures={
                "seed": seed, "examples": stats["examples"], "steps_per_example": steps,
                "examples_full_length": stats["examples_full_length"], "steps": stats["steps"],
                "invariant_checks": stats["invariant_checks"], "trades": stats["trades"],
                "chain_events_verified": stats["chain_events_verified"],
                "refusals_as_predicted": sum(v for k, v in outcomes.items() if not k.endswith(":ok")),
                "seconds_per_example": round(sum(IngotMachine.timings.values()) / max(1, stats["examples"]), 2),
                "seconds_in": {k: round(v, 1) for k, v in IngotMachine.timings.items()}, "outcomes": outcomes})
            with capsys.disabled():
                print(f"[stateful {examples} x {steps}] {stats['examples']} examples "
                      f"({stats['examples_full_length']} of {steps} steps), {stats['steps']} steps, "
                      f"{stats['invariant_checks']} invariant checks, {stats['trades']} trades (seed {seed}); "
                      "seconds in " + ", ".join(f"{k} {v:.1f}" for k, v in IngotMachine.timings.items()))
                print("ms per rule: " + ", ".join(
                    f"{k} {1000 * v / IngotMachine.rule_counts[k]:.0f} x{IngotMachine.rule_counts[k]}"
                    for k, v in sorted(IngotMachine.rule_seconds.items(), key=lambda kv: -kv[1])))


@pytest.mark.django_db
def test_stateful_market_keeps_every_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    run_stateful(capsys, examples=200, steps=30, variant="ci")


@pytest.mark.proof
@pytest.mark.django_db
def test_stateful_market_keeps_every_invariant_proof(capsys: pytest.CaptureFixture[str]) -> None:
    run_stateful(capsys, examples=2000, steps=50, variant="proof")


# --- bugs the model found: minimal reproductions, regression tests since fixed --------------------------------------

def _resting_sell(quantity: str = "10.000") -> tuple[Any, Any, Receipt, Any]:
    from tests.factories.receipts import ReceiptWorld
    from tests.factories.trading import instrument, seller_with

    inst = instrument()
    seller, [receipt] = seller_with(ReceiptWorld(), quantity)
    order = order_place(member=seller, instrument=inst, side="sell", order_type="limit", tif="GTC",
                        quantity_kg=quantity, price="600.00", client_order_id="ask").order
    receipt.refresh_from_db()
    assert (receipt.status, receipt.encumbrance_ref) == (ReceiptStatus.ENCUMBERED, f"O{order.pk}")
    return inst, seller, receipt, order


@pytest.mark.django_db
def test_freezing_a_receipt_behind_a_sell_order_pulls_the_order_and_releases_the_receipt() -> None:
    """Was: the receipt stayed reserved for the cancelled order and, once unfrozen, encumbered by a dead order
    for good (DESIGN.md §6 invariant 5). The freeze now cancels the order first."""
    from trading.models import Order, OrderStatus

    _, seller, receipt, order = _resting_sell()
    receipt_freeze(receipt=receipt, reason="compliance hold")
    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED and "compliance hold" in order.cancel_reason
    receipt.refresh_from_db()
    assert (receipt.status, receipt.frozen_from, receipt.encumbrance_ref) == (ReceiptStatus.FROZEN, "active", "")
    with pytest.raises(ApplicationError):
        order_cancel(member=seller, order_id=order.pk)  # nothing left to cancel
    receipt_unfreeze(receipt=Receipt.objects.get(pk=receipt.pk), reason="cleared")
    receipt.refresh_from_db()
    assert (receipt.status, receipt.encumbrance_ref) == (ReceiptStatus.ACTIVE, "")
    assert not Order.objects.filter(status__in=["open", "partially_filled"]).exists()
    assert_value_invariants()
    ChainAuditor().check()


@pytest.mark.django_db
def test_a_frozen_ask_does_not_refuse_the_buyers_that_reach_it() -> None:
    from tests.factories.receipts import ReceiptWorld
    from tests.factories.trading import funded_member, seller_with

    inst, _, receipt, _ = _resting_sell()
    receipt_freeze(receipt=receipt, reason="compliance hold")
    other, _ = seller_with(ReceiptWorld(), "10.000")  # another warehouse of the same region
    order_place(member=other, instrument=inst, side="sell", order_type="limit", tif="GTC", quantity_kg="10",
                price="600.00", client_order_id="second-ask")
    result = order_place(member=funded_member(), instrument=inst, side="buy", order_type="limit", tif="IOC",
                         quantity_kg="5", price="600.00", client_order_id="bid")
    assert sum(t.quantity_kg for t in result.trades) == Decimal("5.000")
    receipt.refresh_from_db()
    assert receipt.status == ReceiptStatus.FROZEN  # and nothing left the frozen receipt


@pytest.mark.django_db
def test_reusing_a_client_order_id_with_another_price_is_422() -> None:
    from config.errors import Unprocessable
    from tests.factories.trading import funded_member, instrument

    inst, buyer = instrument(), funded_member()
    order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="GTC", quantity_kg="1",
                price="590.00", client_order_id="same")
    with pytest.raises(Unprocessable):
        order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="GTC", quantity_kg="1",
                    price="600.00", client_order_id="same")


@pytest.mark.django_db
def test_unpledging_in_another_lenders_name_is_refused() -> None:
    from tests.factories.members import MemberFactory
    from tests.factories.receipts import ReceiptWorld

    holder = MemberFactory()
    receipt = ReceiptWorld().receipt(holder, quantity="10.000")
    lender = MemberFactory(name="The Lender")
    receipt_pledge(receipt=receipt, by=holder, lender=lender, loan="L1")
    with pytest.raises(ApplicationError) as refused:
        receipt_unpledge(receipt=receipt, lender=MemberFactory(name="Someone Else"), loan="L1")
    assert refused.value.code == "not_pledged"
    ChainAuditor().check()  # the receipt's chain still verifies
    assert receipt_unpledge(receipt=receipt, lender=lender, loan="L1").status == ReceiptStatus.ACTIVE
    ChainAuditor().check()
