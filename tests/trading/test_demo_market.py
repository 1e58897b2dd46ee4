"""The demo market maker quotes both sides on the tick grid, whatever the reference price is."""

from decimal import Decimal

import pytest

from members.demo import load as members_load
from tests.factories.trading import instrument
from trading.demo import ensure_cash, ensure_end_use_declarations, market_maker_requote
from trading.models import Instrument, Order

pytestmark = pytest.mark.django_db


def test_market_maker_quotes_both_sides_even_when_the_reference_is_off_the_grid() -> None:
    members_load()
    inst = instrument(reference="554.1907", tick="0.50")
    Instrument.objects.filter(pk=inst.pk).update(band_low=Decimal("499.00"), band_high=Decimal("609.50"))
    ensure_cash()
    ensure_end_use_declarations()
    placed = market_maker_requote(seed=1)
    buys = Order.objects.filter(instrument=inst, side="buy", status="open")
    assert placed >= 3 and buys.count() == 3
    assert all(o.price % Decimal("0.50") == 0 and o.price < Decimal("554.1907") for o in buys)
