"""Unit conversion for assays and receipts: impurity mass fractions (ppb, ppm, wt%),
purity percent <-> total impurity, physical-property units, and kg quantities.

Everything is `Decimal` and every conversion is a power of ten applied with
`Decimal.scaleb`, so conversions are exact: an assay converted to ppb and back
reproduces the lab's figure digit for digit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from receipts.errors import (
    INCOMPATIBLE_UNIT,
    INVALID_DECIMAL,
    INVALID_QUANTITY,
    NEGATIVE_VALUE,
    UNKNOWN_UNIT,
    ProofError,
)

# Signed documents carry numbers as plain decimal strings (no exponent, no leading
# "+", no leading zeros) so that one value has exactly one byte representation.
DECIMAL_PATTERN = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
NON_NEGATIVE_DECIMAL_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")

MASS_FRACTION = "mass_fraction"
LENGTH = "length"
DIMENSIONLESS = "dimensionless"
DENSITY = "density"


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit: its canonical symbol, what it measures, and the power of ten that takes
    a value in this unit to the dimension's base unit (ppb, µm, 1, g/cm3)."""

    symbol: str
    dimension: str
    exponent: int


_CANONICAL_UNITS: tuple[Unit, ...] = (
    Unit("ppb", MASS_FRACTION, 0),
    Unit("ppm", MASS_FRACTION, 3),
    Unit("wt%", MASS_FRACTION, 7),
    Unit("nm", LENGTH, -3),
    Unit("µm", LENGTH, 0),
    Unit("mm", LENGTH, 3),
    Unit("1", DIMENSIONLESS, 0),
    Unit("g/cm3", DENSITY, 0),
)

# Spellings labs actually put on certificates. "%" on an assay means percent by mass;
# "µm" has two code points in the wild (micro sign U+00B5, Greek mu U+03BC).
_ALIASES: dict[str, str] = {
    "%": "wt%",
    "percent": "wt%",
    "mg/kg": "ppm",
    "µg/kg": "ppb",
    "μg/kg": "ppb",
    "ug/kg": "ppb",
    "um": "µm",
    "μm": "µm",
    "micron": "µm",
}

UNITS: dict[str, Unit] = {u.symbol: u for u in _CANONICAL_UNITS}
for _alias, _target in _ALIASES.items():
    UNITS[_alias] = UNITS[_target]

MASS_FRACTION_UNITS: frozenset[str] = frozenset(k for k, u in UNITS.items() if u.dimension == MASS_FRACTION)

_HUNDRED = Decimal(100)
_ZERO = Decimal(0)


def parse_decimal(value: Decimal | str | int, *, field: str = "value") -> Decimal:
    """A finite Decimal from a decimal string, a Decimal or an int; floats are refused
    because their binary rounding would leak into purity and mass figures."""
    if isinstance(value, (bool, float)):
        raise ProofError(
            INVALID_DECIMAL,
            f"{field}: expected a decimal string, got {type(value).__name__}",
            {"field": field},
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ProofError(INVALID_DECIMAL, f"{field}: {value} is not a finite number", {"field": field})
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and DECIMAL_PATTERN.fullmatch(value):
        return Decimal(value)
    raise ProofError(INVALID_DECIMAL, f"{field}: {value!r} is not a plain decimal string", {"field": field})


def unit_of(unit: str) -> Unit:
    """The Unit for a symbol or accepted alias; ProofError(unknown_unit) otherwise."""
    found = UNITS.get(unit) if isinstance(unit, str) else None
    if found is None:
        raise ProofError(
            UNKNOWN_UNIT,
            f"unknown unit {unit!r}; known: {', '.join(sorted(UNITS))}",
            {"unit": str(unit)},
        )
    return found


def canonical_unit(unit: str) -> str:
    """The canonical symbol for a unit or one of its aliases ('%' -> 'wt%')."""
    return unit_of(unit).symbol


def is_mass_fraction(unit: str) -> bool:
    return unit in MASS_FRACTION_UNITS


def convert(value: Decimal | str | int, from_unit: str, to_unit: str) -> Decimal:
    """`value` in `from_unit` expressed in `to_unit`; both must measure the same thing."""
    source, target = unit_of(from_unit), unit_of(to_unit)
    if source.dimension != target.dimension:
        raise ProofError(
            INCOMPATIBLE_UNIT,
            f"cannot convert {source.symbol} ({source.dimension}) to {target.symbol} ({target.dimension})",
            {"from": source.symbol, "to": target.symbol},
        )
    amount = parse_decimal(value)
    shift = source.exponent - target.exponent
    return amount.scaleb(shift) if shift else amount


def to_ppb(value: Decimal | str | int, unit: str) -> Decimal:
    """An impurity mass fraction in ppb. Negative values and non-mass-fraction units
    are errors: a lab cannot measure less than nothing of an element."""
    found = unit_of(unit)
    if found.dimension != MASS_FRACTION:
        raise ProofError(
            INCOMPATIBLE_UNIT,
            f"{found.symbol} is not a mass-fraction unit (ppb, ppm, wt%)",
            {"unit": found.symbol},
        )
    amount = parse_decimal(value)
    if amount < _ZERO:
        raise ProofError(NEGATIVE_VALUE, f"impurity value {amount} {unit} is negative", {"value": str(amount)})
    return amount.scaleb(found.exponent) if found.exponent else amount


def from_ppb(ppb: Decimal, unit: str) -> Decimal:
    """A ppb figure expressed in another mass-fraction unit (for 'measured vs allowed'
    reported in the unit the grade was written in)."""
    return convert(ppb, "ppb", unit)


def purity_to_impurity_ppb(purity_percent: Decimal | str | int) -> Decimal:
    """Total impurity implied by a purity: 99.9999 % -> 1000 ppb."""
    purity = parse_decimal(purity_percent, field="purity_percent")
    if not _ZERO <= purity <= _HUNDRED:
        raise ProofError(INVALID_DECIMAL, f"purity {purity} % is outside 0..100", {"purity": str(purity)})
    return (_HUNDRED - purity).scaleb(7)


def impurity_ppb_to_purity(total_impurity_ppb: Decimal | str | int) -> Decimal:
    """Purity implied by a total impurity: 1000 ppb -> 99.9999 %."""
    total = parse_decimal(total_impurity_ppb, field="total_impurity_ppb")
    if total < _ZERO:
        raise ProofError(NEGATIVE_VALUE, f"total impurity {total} ppb is negative", {"value": str(total)})
    purity = _HUNDRED - total.scaleb(-7)
    return purity if purity > _ZERO else _ZERO


_NINES = re.compile(r"([1-9])N(5?)")


def nines_to_purity(code: str) -> Decimal:
    """Trade shorthand to purity percent: '6N' -> 99.9999, '5N5' -> 99.9995, '3N5' -> 99.95."""
    match = _NINES.fullmatch(code) if isinstance(code, str) else None
    if match is None:
        raise ProofError(INVALID_DECIMAL, f"{code!r} is not an nN or nN5 purity code", {"code": str(code)})
    nines = int(match.group(1))
    if match.group(2):
        return _HUNDRED - Decimal(5).scaleb(1 - nines)
    return _HUNDRED - Decimal(1).scaleb(2 - nines)


def plain(value: Decimal) -> str:
    """A Decimal as a plain string without exponent or trailing zeros ('5E+3' -> '5000')."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


# --- quantities -----------------------------------------------------------------------
# Receipt and lot quantities are kg with exactly three decimals (gram resolution): the
# warehouse scale's resolution for minor-metal packages, and the precision of the
# DecimalField behind them. One value has one spelling ("12.500", never "12.5"),
# which keeps the signed event bytes unambiguous.

KG_PLACES = 3
_KG_QUANTUM = Decimal(1).scaleb(-KG_PLACES)
KG_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)\.[0-9]{3}")


def parse_kg(text: str, *, field: str = "quantity") -> Decimal:
    """A kg quantity from its canonical string form ('1250.000')."""
    if not isinstance(text, str) or not KG_PATTERN.fullmatch(text):
        raise ProofError(
            INVALID_QUANTITY,
            f"{field}: {text!r} is not a kg quantity with exactly {KG_PLACES} decimals",
            {"field": field},
        )
    return Decimal(text)


def format_kg(value: Decimal | str | int) -> str:
    """The canonical string of a kg quantity; refuses values that would need rounding,
    because silently rounding metal is how stock goes missing."""
    amount = parse_decimal(value, field="quantity")
    if amount < _ZERO:
        raise ProofError(NEGATIVE_VALUE, f"quantity {amount} kg is negative", {"value": str(amount)})
    try:
        quantised = amount.quantize(_KG_QUANTUM)
    except InvalidOperation:
        quantised = None
    if quantised is None or quantised != amount:
        raise ProofError(
            INVALID_QUANTITY,
            f"quantity {amount} kg has more than {KG_PLACES} decimals",
            {"value": str(amount)},
        )
    return format(quantised, "f")
