"""Order entry's after-commit publishes through the spool (AFTER_COMMIT_SPOOL_MS > 0, as outside tests) reach a
real Celery worker: the receipts a fill splits off are ESG-evaluated and the trades are folded into candles,
from one merged message per interval instead of one per order."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from compliance.models import EsgEvaluation, EsgRulePack
from compliance.services import esg_rule_packs_sync
from config import after_commit
from receipts.models import Receipt
from receipts.signals import receipt_proof_changed
from tests.conftest import wait_for
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from trading.models import Trade
from trading.pricing_models import Candle
from trading.services import order_place

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_spooled_publishes_of_many_orders_reach_the_worker_merged(celery_worker: Any, settings) -> None:
    esg_rule_packs_sync(reevaluate=False)
    packs = EsgRulePack.objects.filter(active=True).count()
    assert packs
    world, inst = ReceiptWorld(), instrument()
    seller, [receipt] = seller_with(world, "100.000")
    buyer = funded_member("1000000.00")
    after_commit.flush_spool()
    settings.AFTER_COMMIT_SPOOL_MS = 50
    flushes = after_commit._spool.flushes
    announced: list[str] = []  # the thread each announcement of split receipts was sent from

    def on_proof(sender: Any, receipt_ids: list[int], **kwargs: Any) -> None:
        announced.append(threading.current_thread().name)

    receipt_proof_changed.connect(on_proof, dispatch_uid="test-spooled-publishes")
    try:
        order_place(member=seller, instrument=inst, side="sell", order_type="limit", tif="GTC", quantity_kg="60",
                    price="580.00", client_order_id="s1")
        for n in range(6):  # six fills, each splitting the seller's receipt
            order_place(member=buyer, instrument=inst, side="buy", order_type="limit", tif="GTC", quantity_kg="5",
                        price="580.00", client_order_id=f"b{n}")
        assert Trade.objects.filter(instrument=inst).count() == 6
        delivered = list(Receipt.objects.filter(holder=buyer).values_list("pk", flat=True))
        assert len(delivered) == 6

        wait_for(lambda: EsgEvaluation.objects.filter(receipt_id__in=delivered).count() == 6 * packs, timeout=60)
    finally:
        receipt_proof_changed.disconnect(dispatch_uid="test-spooled-publishes")
    wait_for(lambda: Candle.objects.filter(instrument=inst, interval="1m").values_list("volume", flat=True).first()
             == Decimal("30.000"), timeout=60)
    # Seven transactions sent their publishes in a few merged flushes, not one message each, and none was sent
    # by the committing thread itself.
    assert 1 <= after_commit._spool.flushes - flushes < 7
    assert announced and "MainThread" not in announced and len(announced) < 6
