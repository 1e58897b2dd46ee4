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


def test_demo_books_start_at_the_reports_regional_and_low_carbon_premiums() -> None:
    from receipts.models import Grade
    from trading.demo import demo_reference

    gallium, rhenium = Grade.objects.get(code="GA-6N"), Grade.objects.get(code="RE-6N")
    assert demo_reference(gallium, "CN", "") == Decimal("580.00")
    assert demo_reference(gallium, "EU", "") == Decimal("609.00")  # export-controlled metal abroad: +5 %
    assert demo_reference(gallium, "CN", "LC") == Decimal("638.00")  # low-carbon class: +10 %
    assert demo_reference(gallium, "EU", "LC") == Decimal("670.00")  # both
    assert demo_reference(rhenium, "EU", "") == Decimal("3200.00")  # not export-controlled: no regional premium
