"""Concurrent order entry on real PostgreSQL, one connection per thread: nothing sold twice, no overdraft."""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connections

from config.errors import ApplicationError
from receipts.models import Receipt, ReceiptStatus
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading.models import Account, Order, Trade
from trading.services import order_place

pytestmark = pytest.mark.django_db(transaction=True)


def run_threads(threads: int, per_thread: int, action) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for i in range(per_thread):
                try:
                    action(t, i)
                    outcome = "ok"
                except ApplicationError as exc:
                    outcome = exc.code
                with lock:
                    outcomes[outcome] += 1
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes


def test_sixteen_threads_of_conflicting_sells_never_sell_a_receipt_twice() -> None:
    world = ReceiptWorld()
    inst = instrument()
    seller, receipts = seller_with(world, "25.000", count=2)  # 50 kg in two receipts

    def sell(t: int, i: int) -> None:
        order_place(member=seller, instrument=inst, side="sell", order_type="limit", tif="GTC", quantity_kg="1",
                    price=f"{600 + (i % 20)}.00", client_order_id=f"s-{t}-{i}")

    outcomes = run_threads(16, 63, sell)  # 1,008 sells
    assert outcomes["ok"] == 50
    assert outcomes["insufficient_receipts"] == 16 * 63 - 50
    encumbered = Receipt.objects.filter(status=ReceiptStatus.ENCUMBERED)
    assert sum(r.quantity_kg for r in encumbered) == Decimal("50.000")
    assert len({r.encumbrance_ref for r in encumbered}) == 50
    assert_value_invariants()


def test_sixteen_threads_of_buys_fill_exactly_what_the_cash_covers() -> None:
    world = ReceiptWorld()
    inst = instrument()
    seller, _ = seller_with(world, "500.000")
    order_place(member=seller, instrument=inst, side="sell", order_type="limit", tif="GTC", quantity_kg="500",
                price="600.00", client_order_id="big-ask")
    # One 1 kg buy at 600 holds 600.00 + 0.60 fee; this buyer can pay for exactly ten.
    buyer = funded_member("6006.00")

    def buy(t: int, i: int) -> None:
        order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="IOC", quantity_kg="1",
                    price="600.00", client_order_id=f"b-{t}-{i}")

    outcomes = run_threads(16, 100, buy)
    assert outcomes["ok"] == 10 and outcomes["insufficient_cash"] == 1590
    assert Trade.objects.filter(buyer=buyer).count() == 10
    account = Account.objects.get(member=buyer)
    assert account.available == Decimal("0.00") and account.held == Decimal("0.00")
    assert sum(r.quantity_kg for r in Receipt.objects.filter(holder=buyer)) == Decimal("10.000")
    assert Order.objects.filter(member=buyer).count() == 10
    assert_value_invariants()
