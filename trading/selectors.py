"""Reads of the trading app: market data (public) and a member's own orders, trades, balances, holdings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import F, Q, QuerySet, Sum

from members.models import Member
from receipts.models import OPEN_STATUSES, Receipt
from trading.models import (
    LIVE_ORDER_STATUSES,
    Account,
    AccountKind,
    Instrument,
    Order,
    OrderType,
    Side,
    Trade,
)


def depth(instrument: Instrument, levels: int = 10) -> dict[str, list[dict[str, str]]]:
    """Aggregated resting quantity per price level, best first, straight from the database (the truth)."""
    rows = (Order.objects.filter(instrument=instrument, status__in=LIVE_ORDER_STATUSES, order_type=OrderType.LIMIT,
                                 tif="GTC")
            .values("side", "price").annotate(quantity=Sum(F("quantity_kg") - F("filled_kg"))))
    bids = sorted(((r["price"], r["quantity"]) for r in rows if r["side"] == Side.BUY), reverse=True)[:levels]
    asks = sorted((r["price"], r["quantity"]) for r in rows if r["side"] == Side.SELL)[:levels]

    def fmt(side: list[tuple[Decimal, Decimal]]) -> list[dict[str, str]]:
        return [{"price": f"{p.normalize():f}", "quantity_kg": f"{q:.3f}"} for p, q in side]

    return {"bids": fmt(bids), "asks": fmt(asks)}


def recent_trades(instrument: Instrument, limit: int = 50) -> QuerySet[Trade]:
    return Trade.objects.filter(instrument=instrument).order_by("-executed_at", "-pk")[:limit]


def orders_of(member: Member) -> QuerySet[Order]:
    return Order.objects.filter(member=member).select_related("instrument").order_by("-created_at", "-pk")


def open_orders_of(member: Member) -> QuerySet[Order]:
    return orders_of(member).filter(status__in=LIVE_ORDER_STATUSES)


def trades_of(member: Member) -> QuerySet[Trade]:
    return (Trade.objects.filter(Q(buyer=member) | Q(seller=member)).select_related("instrument")
            .order_by("-executed_at", "-pk"))


def balances_of(member: Member) -> QuerySet[Account]:
    return Account.objects.filter(member=member, kind=AccountKind.MEMBER).order_by("currency")


def holdings_of(member: Member) -> QuerySet[Receipt]:
    return (Receipt.objects.filter(holder=member, status__in=OPEN_STATUSES)
            .select_related("grade", "lot__warehouse", "lot__metal").order_by("issued_at", "pk"))


def instrument_summary(instrument: Instrument) -> dict[str, Any]:
    last = Trade.objects.filter(instrument=instrument).order_by("-executed_at", "-pk").first()
    return {"last_price": last.price if last else None, "last_trade_at": last.executed_at if last else None}
