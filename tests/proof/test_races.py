"""Races on real PostgreSQL, one connection per thread: a pledged receipt attacked by hundreds of
concurrent sells and splits, and concurrent withdrawals drawing on one export licence.

(Concurrent order entry itself — nothing sold twice, no overdraft — is in tests/trading/test_concurrency.py.)
"""

from __future__ import annotations

import itertools
import random
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from compliance import policy
from compliance.models import LicenceDrawdown
from receipts.models import Receipt, ReceiptEvent, ReceiptStatus
from receipts.services import receipt_pledge, receipt_split, receipt_withdrawal_request
from tests.conftest import client_for
from tests.factories.compliance import licence
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from tests.proof.state_model import (
    ChainAuditor,
    assert_more_invariants,
    proof_scenario,
    run_concurrently,
    seed_from_env,
)
from trading.models import BookCommand, Instrument, Order, Trade
from trading.services import order_place

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16
SPLITS = [["50.000", "50.000"], ["30.000", "70.000"], ["10.000", "20.000", "70.000"], ["0.001", "99.999"]]


def _receipt_state(receipt: Receipt) -> tuple[Any, ...]:
    receipt.refresh_from_db()
    events = list(ReceiptEvent.objects.filter(receipt=receipt).order_by("seq").values_list("seq", "kind", "hash"))
    return (receipt.status, receipt.holder_id, receipt.quantity_kg, receipt.encumbrance_ref, receipt.last_event_seq,
            receipt.last_event_hash, receipt.closed_at, tuple(events))


def attack_pledged_receipt(operations: int, rng: random.Random, *, code: str = "GA-6N-CN") -> dict[str, Any]:
    """A holder whose only receipt (100 kg) is pledged sells and splits it from 16 threads at once, into
    a book with a resting bid that would buy all of it: nothing may succeed."""
    world = ReceiptWorld()
    inst = instrument(code)
    holder, [receipt] = seller_with(world, "100.000")
    receipt = receipt_pledge(receipt=receipt, by=holder, lender=MemberFactory(name="Proof Bank"), loan="LOAN-1")
    buyer = funded_member("1000000.00")
    order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="GTC", quantity_kg="100",
                price="600.00", client_order_id="resting-bid")
    before = _receipt_state(receipt)
    counts = (Receipt.objects.count(), Order.objects.count(), Trade.objects.count(), BookCommand.objects.count())
    plan = [rng.choice(["sell", "sell_market", "split"]) for _ in range(operations)]
    quantities = [rng.choice(["1", "7", "50", "100"]) for _ in range(operations)]
    coids = itertools.count(1)

    def attack(i: int) -> None:
        if plan[i] == "split":
            receipt_split(receipt=Receipt.objects.get(pk=receipt.pk), quantities=SPLITS[i % len(SPLITS)], by=holder)
        else:
            market = plan[i] == "sell_market"
            order_place(member=holder, instrument=Instrument.objects.get(pk=inst.pk), side="sell",
                        order_type="market" if market else "limit", tif="IOC" if market else "GTC",
                        quantity_kg=quantities[i], price=None if market else "590.00",
                        client_order_id=f"attack-{next(coids)}-{i}")

    outcomes, seconds = run_concurrently(THREADS, operations, attack)
    after = _receipt_state(receipt)
    assert outcomes["ok"] == 0, outcomes
    assert set(outcomes) <= {"insufficient_receipts", "illegal_transition"}, outcomes
    assert outcomes["illegal_transition"] == plan.count("split")
    assert after == before, "the pledged receipt or its chain changed"
    assert (Receipt.objects.count(), Order.objects.count(), Trade.objects.count(),
            BookCommand.objects.count()) == counts, "an attack left rows behind"
    assert_value_invariants()
    assert_more_invariants(auditor=ChainAuditor())
    return {"operations": operations, "threads": THREADS, "sells": operations - plan.count("split"),
            "splits": plan.count("split"), "succeeded": outcomes["ok"], "outcomes": dict(outcomes),
            "seconds": seconds}


PLEDGED_ATTACK = "race: a pledged receipt vs concurrent sells and splits (16 threads)"


def test_a_pledged_receipt_survives_500_concurrent_sells_and_splits() -> None:
    seed = seed_from_env()
    with proof_scenario(PLEDGED_ATTACK, variant="ci") as out:
        figures = attack_pledged_receipt(500, random.Random(seed))
        out.update(runs=figures["operations"], failures=figures["succeeded"], figures={**figures, "seed": seed})


@pytest.mark.proof
def test_a_pledged_receipt_survives_concurrent_attacks_proof() -> None:
    seed = seed_from_env()
    rng = random.Random(seed)
    with proof_scenario(PLEDGED_ATTACK, variant="proof") as out:
        rounds = []
        for n in range(10):
            rounds.append(attack_pledged_receipt(500, rng, code=f"GA-6N-CN-R{n}"))
            out.update(runs=sum(r["operations"] for r in rounds), failures=sum(r["succeeded"] for r in rounds),
                       figures={"seed": seed, "rounds": len(rounds), "attacks_per_round": 500,
                                "sells": sum(r["sells"] for r in rounds), "splits": sum(r["splits"] for r in rounds),
                                "succeeded": sum(r["succeeded"] for r in rounds), "receipt_or_chain_changed": 0})


# --- one export licence, many withdrawals ---------------------------------------------------------------

def withdraw_through_api(holder_user: Any, destination: str = "DE") -> Any:
    clients: dict[int, Any] = {}

    def withdraw(number: str, key: str) -> str:
        import threading

        client = clients.setdefault(threading.get_ident(), client_for(holder_user))  # one per thread
        response = client.post(f"/api/v1/holdings/{number}/withdrawal", {"destination_country": destination},
                               key=key)
        assert response.status_code in (201, 403, 409), (response.status_code, response.content[:500])
        return "ok" if response.status_code == 201 else response.json()["code"]

    return withdraw


def withdraw_through_services(holder: Any, destination: str = "DE") -> Any:
    def withdraw(number: str, key: str) -> str:
        receipt = Receipt.objects.select_related("lot__warehouse", "lot__metal").get(number=number)
        with transaction.atomic():  # as trading/api.py WithdrawalRequestView does
            policy.require(policy.withdrawal_check_and_draw(holder, receipt, destination, receipt.quantity_kg))
            receipt_withdrawal_request(receipt=receipt, by=holder, withdrawal_ref=f"W-{receipt.number}")
        return "ok"

    return withdraw


def licence_race(quantity: str, cap: str, *, path: str, same_receipt: bool = False) -> dict[str, Any]:
    """16 threads each ask to withdraw a receipt of `quantity` kg to DE against one licence of `cap` kg."""
    world = ReceiptWorld()
    holder, receipts = seller_with(world, quantity, count=1 if same_receipt else THREADS)
    made = licence(holder, cap=cap, destination="DE")
    user = UserFactory(member=holder)
    withdraw = withdraw_through_api(user) if path == "api" else withdraw_through_services(holder)
    numbers = [receipts[0].number] * THREADS if same_receipt else [r.number for r in receipts]

    outcomes, seconds = run_concurrently(THREADS, THREADS, lambda i: withdraw(numbers[i], f"w-{i}"))
    made.refresh_from_db()
    expected = min(THREADS, int(Decimal(cap) // Decimal(quantity)))
    if same_receipt:
        expected = min(1, expected)
    drawn = LicenceDrawdown.objects.filter(licence=made).order_by("drawn_total_kg")
    requested = Receipt.objects.filter(holder=holder, status=ReceiptStatus.WITHDRAWAL_REQUESTED)
    assert outcomes["ok"] == expected, outcomes
    assert set(outcomes) <= {"ok", "licence_exhausted", "illegal_transition"}, outcomes
    assert made.drawn_kg == Decimal(quantity) * expected <= made.quantity_cap_kg
    assert [d.drawn_total_kg for d in drawn] == [Decimal(quantity) * k for k in range(1, expected + 1)]
    assert sorted(d.receipt.number for d in drawn) == sorted(r.number for r in requested)
    assert requested.count() == expected
    assert_value_invariants()
    assert_more_invariants(auditor=ChainAuditor())
    return {"threads": THREADS, "quantity_kg": quantity, "cap_kg": cap, "path": path, "same_receipt": same_receipt,
            "succeeded": outcomes["ok"], "expected": expected, "drawn_kg": str(made.drawn_kg),
            "over_cap": made.drawn_kg > made.quantity_cap_kg, "outcomes": dict(outcomes), "seconds": seconds}


LICENCE_RACE = "race: 16 concurrent withdrawals vs one export licence"


@pytest.mark.parametrize("path", ["api", "services"])
def test_sixteen_concurrent_withdrawals_draw_exactly_what_one_licence_allows(path: str) -> None:
    with proof_scenario(f"{LICENCE_RACE} ({path})", variant="ci") as out:
        figures = licence_race("7.500", "100.000", path=path)  # floor(100 / 7.5) = 13 of 16
        out.update(runs=THREADS, failures=int(figures["succeeded"] != figures["expected"] or figures["over_cap"]),
                   figures=figures)


def test_sixteen_concurrent_withdrawals_of_one_receipt_draw_the_licence_once() -> None:
    with proof_scenario("race: 16 concurrent withdrawals of one receipt (api)", variant="ci") as out:
        figures = licence_race("7.500", "100.000", path="api", same_receipt=True)
        out.update(runs=THREADS, failures=int(figures["succeeded"] != 1), figures=figures)


@pytest.mark.proof
def test_concurrent_withdrawals_never_overdraw_a_licence_proof() -> None:
    seed = seed_from_env()
    rng = random.Random(seed)
    with proof_scenario(f"{LICENCE_RACE} (20 random rounds, api and services)", variant="proof") as out:
        rounds = []
        for n in range(20):
            quantity = rng.choice(["0.500", "3.000", "7.500", "12.250", "33.333"])
            cap = str(Decimal(quantity) * rng.randint(1, 20) + Decimal(rng.choice(["0", "0.001", "0.250"])))
            rounds.append(licence_race(quantity, cap, path=["api", "services"][n % 2], same_receipt=n % 5 == 4))
            out.update(runs=len(rounds) * THREADS,
                       failures=sum(int(r["succeeded"] != r["expected"] or r["over_cap"]) for r in rounds),
                       figures={"seed": seed, "rounds": len(rounds),
                                "withdrawals": sum(r["succeeded"] for r in rounds),
                                "refused": sum(THREADS - r["succeeded"] for r in rounds),
                                "exactly_floor_cap_over_qty": sum(r["succeeded"] == r["expected"] for r in rounds),
                                "over_cap": sum(r["over_cap"] for r in rounds)})
