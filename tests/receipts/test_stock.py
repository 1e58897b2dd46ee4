"""Proof of stock: a warehouse's signed stock statement is reconciled against its receipts by a real Celery
worker, and a lot receipted beyond what the warehouse says it holds comes back as a gap."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from receipts import services
from receipts.canonical import utc_stamp
from receipts.models import StockGap, StockStatement
from tests.conftest import client_for, wait_for
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld, Signer


def statement(world: ReceiptWorld, rows: list[tuple[str, str]], *, as_of: Any = None) -> dict[str, Any]:
    return {"type": "stock_statement", "warehouse": world.warehouse.code,
            "asOf": utc_stamp(as_of or timezone.now()), "lots": [{"lot": ref, "quantity": kg} for ref, kg in rows]}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reconciles_a_statement_and_finds_the_over_receipted_lots(celery_worker) -> None:
    world = ReceiptWorld()
    honest = world.receipt(quantity="40.000", mass="40.000")
    short = world.receipt(quantity="100.000", mass="100.000")
    unstated = world.receipt(quantity="5.000", mass="5.000")
    document = statement(world, [(honest.lot.reference, "40.000"), (short.lot.reference, "60.000")])
    wh = client_for(UserFactory(member=world.operator))

    response = wh.post(f"/api/v1/warehouses/{world.warehouse.code}/stock-statements",
                       {"document": document, "signature": Signer(world.operator).sign(document)})
    assert response.status_code == 201, response.content
    assert response.json()["reconciled_at"] is None and response.json()["gaps"] is None

    statement_id = response.json()["id"]
    wait_for(lambda: StockStatement.objects.get(pk=statement_id).reconciled_at, timeout=30)
    reconciled = StockStatement.objects.get(pk=statement_id)
    assert reconciled.gaps == [
        {"lot": short.lot.reference, "stated_kg": "60.000", "receipted_kg": "100.000"},
        {"lot": unstated.lot.reference, "stated_kg": "0.000", "receipted_kg": "5.000"},
    ]
    assert sorted(StockGap.objects.values_list("lot_id", flat=True)) == sorted([short.lot_id, unstated.lot_id])
    listed = wh.get(f"/api/v1/warehouses/{world.warehouse.code}/stock-statements").json()
    assert listed["count"] == 1 and len(listed["results"][0]["gaps"]) == 2

    # A second delivery of the same task finds the statement reconciled and adds nothing.
    assert len(services.stock_statement_reconcile(statement_id=statement_id)) == 2
    assert StockGap.objects.count() == 2


@pytest.mark.django_db
def test_reconciliation_counts_receipts_as_they_stood_at_the_statement_time() -> None:
    world = ReceiptWorld()
    counted = world.receipt(quantity="10.000", mass="30.000")
    as_of = timezone.now()
    # Issued after the warehouse counted: not part of that count, so not a gap in it.
    services.receipt_issue(lot=counted.lot, holder=counted.holder, quantity_kg="20", issued_by=world.operator)
    document = statement(world, [(counted.lot.reference, "10.000")], as_of=as_of)
    submitted = services.stock_statement_submit(warehouse=world.warehouse, by=world.operator, document=document,
                                                signature=Signer(world.operator).sign(document))
    assert services.stock_statement_reconcile(statement_id=submitted.pk) == []

    # Withdrawn before the count: the metal left, so a statement without it is right.
    gone = world.receipt(quantity="3.000", mass="3.000")
    services.receipt_withdrawal_request(receipt=gone, by=gone.holder, withdrawal_ref="W-9")
    services.receipt_withdrawal_complete(receipt=gone, by=world.operator)
    later = statement(world, [(counted.lot.reference, "30.000")], as_of=timezone.now() + timedelta(seconds=1))
    submitted = services.stock_statement_submit(warehouse=world.warehouse, by=world.operator, document=later,
                                                signature=Signer(world.operator).sign(later))
    assert services.stock_statement_reconcile(statement_id=submitted.pk) == []
