"""Builders for pricing tests: recorded trades at chosen times and prices, factor observations.

`record_trade` writes a trade row (and the two filled orders it needs) without settlement: pricing
only reads trades, and index rules need trades order entry never makes (a member trading with itself
is cancelled by self-trade prevention). Tests that move value use trading.services.order_place.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from members.models import Member
from trading.models import Instrument, Order, Trade
from trading.pricing_models import FactorObservation

_seq = itertools.count(1)


def record_trade(instrument: Instrument, *, price: str | Decimal, quantity: str | Decimal = "1.000",
                 at: datetime, buyer: Member, seller: Member) -> Trade:
    price, quantity = Decimal(price), Decimal(quantity)
    n = next(_seq)
    orders = {
        side: Order.objects.create(member=member, instrument=instrument, client_order_id=f"rec-{side}-{n}", side=side,
                                   order_type="limit", tif="GTC", price=price, quantity_kg=quantity,
                                   filled_kg=quantity, status="filled", book_seq=0)
        for side, member in (("buy", buyer), ("sell", seller))
    }
    return Trade.objects.create(instrument=instrument, buy_order=orders["buy"], sell_order=orders["sell"], buyer=buyer,
                                seller=seller, aggressor="buy", price=price, quantity_kg=quantity,
                                notional=(price * quantity).quantize(Decimal("0.01")), buyer_fee=Decimal(0),
                                seller_fee=Decimal(0), executed_at=at)


def observation(factor: str, observed_at: datetime, value: str, *, unit: str, recorded_at: datetime | None = None,
                source: str = "test") -> FactorObservation:
    return FactorObservation.objects.create(factor=factor, observed_at=observed_at, value=Decimal(value), unit=unit,
                                            source=source, recorded_at=recorded_at or observed_at)
