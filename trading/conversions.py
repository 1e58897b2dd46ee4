"""Instrument-specific conversion between Decimal prices/quantities and the engine's integer ticks and grams."""

from __future__ import annotations

from decimal import Decimal

from trading.models import Instrument
from trading.money import kg_to_units, price_to_ticks, ticks_to_price, units_to_kg


def to_ticks(price: Decimal, instrument: Instrument) -> int:
    return price_to_ticks(price, instrument.tick_size)


def to_price(ticks: int, instrument: Instrument) -> Decimal:
    return ticks_to_price(ticks, instrument.tick_size)


def to_units(kg: Decimal) -> int:
    return kg_to_units(kg)


def to_kg(units: int) -> Decimal:
    return units_to_kg(units)
