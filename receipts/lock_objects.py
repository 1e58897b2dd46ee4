"""Every row lock the receipts app takes, in primary-key order."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.db import connection
from django.db.models import QuerySet

from config.db import columns, for_update, send_select_rows
from receipts.models import Lot, Receipt, ReceiptStatus, StockStatement, StorageIncident


def receipts_for_update(pks: Iterable[int]) -> QuerySet[Receipt]:
    return Receipt.objects.select_for_update(of=("self",)).filter(pk__in=sorted(set(pks))).order_by("pk")


def order_receipts_locked(*, holder_id: int, order_ref: str) -> Callable[[], list[Receipt]]:
    """The receipts a sell order holds encumbered, locked in pk order (delivery sorts them oldest first), in one
    plain statement: the queryset compiled anew on every fill cost more than the statement's round trip. Sent
    now, read by the function returned (config.db.send_select_rows), so settlement sends it with its trades."""
    sql = (f"SELECT {columns(Receipt, 'r')} FROM receipts_receipt r "  # noqa: S608  # nosec B608 - columns from meta
           f"WHERE r.holder_id = %s AND r.encumbrance_ref = %s AND r.status = %s ORDER BY r.id{for_update()}")
    rows = send_select_rows(sql, [holder_id, order_ref, ReceiptStatus.ENCUMBERED], Receipt)
    return lambda: [row[0] for row in rows()]


def lot_for_update(pk: int) -> QuerySet[Lot]:
    return Lot.objects.select_for_update(of=("self",)).filter(pk=pk)


def receipt_counter_advance(*, lot_id: int, year: int, count: int) -> tuple[int, str] | None:
    """Move the counter of the lot's metal and `year` on by `count`: its new last number and the metal's symbol.
    The UPDATE takes the row lock (held to commit) and reads the counter in one statement. None when the
    counter has no row yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE receipts_receiptnumbercounter SET last = last + %s "
            "WHERE year = %s AND metal_id = (SELECT metal_id FROM receipts_lot WHERE id = %s) "
            "RETURNING last, (SELECT symbol FROM receipts_metal WHERE id = receipts_receiptnumbercounter.metal_id)",
            [count, year, lot_id])
        row = cursor.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def open_incident_for_update(*, warehouse_id: int, location: str) -> QuerySet[StorageIncident]:
    """Open storage incidents at a location, oldest first (new breaches join the oldest)."""
    return StorageIncident.objects.select_for_update().filter(
        warehouse_id=warehouse_id, location=location, closed_at__isnull=True).order_by("pk")


def stock_statement_for_update(pk: int) -> QuerySet[StockStatement]:
    return StockStatement.objects.select_for_update().filter(pk=pk)
