"""Every row lock the trading app takes. Order: instrument, then accounts by pk; receipts are locked by
receipts.lock_objects (by pk) after the instrument, so two transactions never wait on each other in a cycle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from django.db.models import QuerySet

from config.db import columns, for_update, select_rows, send_select_rows
from trading.models import Account, CandleWatermark, Instrument, Order


def instrument_for_update(pk: int) -> QuerySet[Instrument]:
    # The reference-price store's lock (trading.pricing_services): the same row lock as `instrument_locked`,
    # as a queryset.
    return Instrument.objects.select_for_update().filter(pk=pk)


def instrument_locked(pk: int) -> Instrument:
    """The instrument row, locked: the row lock that serialises its book across every web process and worker,
    in one plain statement (the ORM compiled the same select anew for every order)."""
    rows = select_rows(f"SELECT {columns(Instrument, 'i')} FROM trading_instrument i WHERE i.id = %s{for_update()}",  # noqa: S608  # nosec B608 - columns from meta
                       [pk], Instrument)
    if not rows:
        raise Instrument.DoesNotExist(f"No instrument {pk}.")
    return cast(Instrument, rows[0][0])


def accounts_locked(pks: list[int]) -> list[Account]:
    """These accounts, locked in pk order and read fresh, in one plain statement (the ledger's lock on every
    posting; the ORM compiled the same select anew for every order). SQLite has no row locks."""
    keys = sorted(set(pks))
    if not keys:
        return []
    marks = ", ".join(["%s"] * len(keys))  # placeholders only; the keys go as parameters
    sql = f"SELECT {columns(Account, 'a')} FROM trading_account a WHERE a.id IN ({marks}) ORDER BY a.id{for_update()}"  # noqa: S608  # nosec B608 - columns from meta, placeholders
    return [row[0] for row in select_rows(sql, keys, Account)]


def cash_accounts_locked(member_ids: Sequence[int], currency: str, *, fees: bool,
                         of_orders: Sequence[int] = ()) -> Callable[[], list[Account]]:
    """The cash accounts in `currency` of the members `member_ids` and of the members of the orders `of_orders`
    and, if `fees`, the platform's fee account, locked in pk order and read fresh, in one plain statement:
    order settlement's accounts, locked once for the whole order. Sent now, read by the function returned
    (config.db.send_select_rows), so settlement sends it with its read of those orders."""
    members = sorted(set(member_ids))
    marks = ", ".join(["%s"] * len(members)) or "NULL"  # placeholders only; the ids go as parameters
    orders = sorted(set(of_orders))
    owners = ""
    if orders:
        order_marks = ", ".join(["%s"] * len(orders))
        owners = f" OR a.member_id IN (SELECT o.member_id FROM trading_order o WHERE o.id IN ({order_marks}))"  # noqa: S608  # nosec B608 - placeholders
    fee_account = " OR a.kind = 'fees' AND a.member_id IS NULL" if fees else ""
    sql = (f"SELECT {columns(Account, 'a')} FROM trading_account a WHERE a.currency = %s "  # noqa: S608  # nosec B608 - columns from meta, placeholders
           f"AND (a.kind = 'member' AND (a.member_id IN ({marks}){owners}){fee_account}) ORDER BY a.id{for_update()}")
    rows = send_select_rows(sql, [currency, *members, *orders], Account)
    return lambda: [row[0] for row in rows()]


def orders_for_update(pks: list[int]) -> QuerySet[Order]:
    return Order.objects.select_for_update(of=("self",)).filter(pk__in=sorted(set(pks))).order_by("pk")


def candle_watermark_for_update(instrument_id: int) -> QuerySet[CandleWatermark]:
    # Serialises candle folds of one instrument (never order entry: the instrument row is not locked).
    return CandleWatermark.objects.select_for_update().filter(pk=instrument_id)
