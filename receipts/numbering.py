"""Receipt numbers, `WR-GA-2026-000123`: the metal's symbol, the year of issue and a serial unique across the
platform.

On PostgreSQL the serials come from one sequence, `receipts_receipt_serial`, and each process takes them in
blocks: no row lock, so splits on two instruments of one metal, and a warehouse issuing meanwhile, do not
wait for each other, and a split costs no round trip for its numbers. Numbers are unique and never reused;
they are not gap-free (a rolled-back transaction's number, the rest of a block when a process stops) and,
across processes, not in issue order. SQLite (the embedded mode) has no sequences: there the metal/year
counter row is moved in the caller's transaction, as its writers run one at a time anyway.
"""

from __future__ import annotations

import functools

from django.db import IntegrityError, connection, transaction

from config.db import from_sequence
from receipts.lock_objects import receipt_counter_advance
from receipts.models import Lot, ReceiptNumberCounter

SEQUENCE = "receipts_receipt_serial"


def receipt_numbers(lot_id: int, year: int, count: int) -> list[str]:
    """`count` new receipt numbers for receipts of the lot issued in `year`."""
    if connection.vendor != "postgresql":
        return _counted(lot_id, year, count)
    symbol = _symbol(lot_id)
    return [f"WR-{symbol}-{year}-{serial:06d}" for serial in from_sequence(SEQUENCE, count)]


@functools.lru_cache(maxsize=4096)
def _symbol(lot_id: int) -> str:
    """The symbol of the lot's metal, upper case (a lot never changes metal)."""
    return str(Lot.objects.filter(pk=lot_id).values_list("metal__symbol", flat=True).get()).upper()


def _counted(lot_id: int, year: int, count: int) -> list[str]:
    """Numbers from the metal/year counter, moved under its row lock in the caller's transaction."""
    taken = receipt_counter_advance(lot_id=lot_id, year=year, count=count)
    if taken is None:
        metal_id = Lot.objects.filter(pk=lot_id).values_list("metal_id", flat=True).get()
        try:
            with transaction.atomic():
                ReceiptNumberCounter.objects.create(metal_id=metal_id, year=year)
        except IntegrityError:
            pass
        taken = receipt_counter_advance(lot_id=lot_id, year=year, count=count)
        assert taken is not None
    last, symbol = taken
    return [f"WR-{symbol.upper()}-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]
