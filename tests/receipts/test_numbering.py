"""Receipt numbers: unique serials from one PostgreSQL sequence, taken without a lock that would make order
entry on two instruments of one metal wait for each other."""

from __future__ import annotations

import re
import threading

import pytest
from django.db import connection, connections, transaction

from config.db import from_sequence
from receipts import numbering
from receipts.converters import ReceiptNumberConverter
from receipts.models import Receipt
from receipts.services import receipt_split
from tests.factories.receipts import ReceiptWorld

pytestmark = pytest.mark.django_db


def test_numbers_name_the_metal_and_year_and_match_the_url_converter() -> None:
    receipt = ReceiptWorld(metal="Ge").receipt()
    children = receipt_split(receipt=receipt, quantities=["40.000", "60.000"], by=receipt.holder)
    numbers = [receipt.number, *(c.number for c in children)]
    assert all(re.fullmatch(ReceiptNumberConverter.regex, n) for n in numbers)
    assert all(n.startswith(f"WR-GE-{receipt.issued_at.year}-") for n in numbers)
    assert len(set(numbers)) == 3


def test_serials_are_unique_across_processes_sharing_the_sequence() -> None:
    """Another process taking serials from the sequence while this one draws on its block never gets one of
    this process's (config.db.from_sequence; its fork safety is tested in tests/config/test_db.py)."""
    mine = from_sequence(numbering.SEQUENCE, 3)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT nextval('{numbering.SEQUENCE}') FROM generate_series(1, 50)")  # noqa: S608  # nosec B608 - a constant name
        other = {row[0] for row in cursor.fetchall()}
    mine += from_sequence(numbering.SEQUENCE, 120)
    assert len(set(mine)) == 123 and not set(mine) & other


@pytest.mark.django_db(transaction=True)
def test_a_split_does_not_wait_for_another_open_transaction_numbering_the_same_metal() -> None:
    """Splits (the sell's encumbrance, a fill's delivery) on two gallium instruments, and a warehouse issuing
    gallium, run side by side: a transaction holding new numbers open does not block another. With a
    metal/year counter row locked to commit the second split waited (here: lock timeout)."""
    world = ReceiptWorld()
    first, second = world.receipt(), world.receipt()
    holding = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def split_and_hold() -> None:
        try:
            with transaction.atomic():
                receipt_split(receipt=first, quantities=["10.000", "90.000"], by=first.holder)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=split_and_hold)
    holder.start()
    try:
        assert holding.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
            children = receipt_split(receipt=second, quantities=["30.000", "70.000"], by=second.holder)
            outcome.append("split")
    finally:
        release.set()
        holder.join()
    assert outcome == ["split"]
    numbers = list(Receipt.objects.filter(lot__in=[first.lot, second.lot]).values_list("number", flat=True))
    assert len(numbers) == len(set(numbers)) == 6
    assert {c.number for c in children} <= set(numbers)
