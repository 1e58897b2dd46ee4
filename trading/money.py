"""Money and quantity conversion in one place: Decimal at the edges, integer ticks and grams in the engine."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
GRAM = Decimal("0.001")
GRAMS_PER_KG = 1000


def quantize_money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def fee(notional: Decimal, bps: int) -> Decimal:
    return quantize_money(notional * bps / Decimal(10000))


def kg_to_units(kg: Decimal) -> int:
    """Engine quantities are grams; a mass finer than a gram is not a valid order quantity."""
    grams = kg * GRAMS_PER_KG
    if grams != grams.to_integral_value():
        raise ValueError("quantity finer than one gram")
    return int(grams)


def units_to_kg(units: int) -> Decimal:
    return (Decimal(units) / GRAMS_PER_KG).quantize(GRAM)


def price_to_ticks(price: Decimal, tick: Decimal) -> int:
    ticks = price / tick
    if ticks != ticks.to_integral_value():
        raise ValueError("price not on tick")
    return int(ticks)


def ticks_to_price(ticks: int, tick: Decimal) -> Decimal:
    return Decimal(ticks) * tick
