"""Unit conversion: ppb/ppm/wt%, purity <-> total impurity, physical units, kg quantities."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receipts.errors import ProofError
from receipts.units import (
    MASS_FRACTION_UNITS,
    canonical_unit,
    convert,
    format_kg,
    from_ppb,
    impurity_ppb_to_purity,
    nines_to_purity,
    parse_decimal,
    parse_kg,
    plain,
    purity_to_impurity_ppb,
    to_ppb,
)


@pytest.mark.parametrize(
    ("value", "unit", "ppb"),
    [
        ("5", "ppb", "5"),
        ("1", "ppm", "1000"),
        ("0.001", "ppm", "1"),
        ("1", "wt%", "10000000"),
        ("0.0001", "%", "1000"),
        ("0.0001", "percent", "1000"),
        ("2.5", "mg/kg", "2500"),
        ("7", "µg/kg", "7"),
        ("7", "ug/kg", "7"),
        ("0", "ppm", "0"),
    ],
)
def test_to_ppb_converts_exactly(value: str, unit: str, ppb: str) -> None:
    assert to_ppb(value, unit) == Decimal(ppb)
    assert to_ppb(Decimal(value), unit) == Decimal(ppb)


def test_to_ppb_accepts_int() -> None:
    assert to_ppb(3, "ppm") == Decimal(3000)


@pytest.mark.parametrize(("value", "unit", "code"), [
    ("1", "ppt", "unknown_unit"),
    ("1", "PPM", "unknown_unit"),
    ("1", "µm", "incompatible_unit"),
    ("-0.1", "ppb", "negative_value"),
    ("1e3", "ppb", "invalid_decimal"),
    ("", "ppb", "invalid_decimal"),
    (1.5, "ppb", "invalid_decimal"),
    (True, "ppb", "invalid_decimal"),
    (Decimal("NaN"), "ppb", "invalid_decimal"),
    (Decimal("Infinity"), "ppb", "invalid_decimal"),
])
def test_to_ppb_refuses_with_a_clear_code(value: object, unit: str, code: str) -> None:
    with pytest.raises(ProofError) as caught:
        to_ppb(value, unit)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.message


@given(
    st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False),
    st.sampled_from(sorted(MASS_FRACTION_UNITS)),
)
def test_ppb_round_trip_is_exact(value: Decimal, unit: str) -> None:
    assert from_ppb(to_ppb(value, unit), unit) == value


def test_canonical_unit_resolves_aliases() -> None:
    assert canonical_unit("%") == "wt%"
    assert canonical_unit("um") == "µm"
    assert canonical_unit("\u03bcm") == "µm"  # Greek mu, as some lab software writes it


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    ("15", "µm", "nm", "15000"),
    ("15000", "nm", "µm", "15"),
    ("0.015", "mm", "µm", "15"),
    ("0.92", "1", "1", "0.92"),
])
def test_convert_physical_units(value: str, source: str, target: str, expected: str) -> None:
    assert convert(value, source, target) == Decimal(expected)


def test_convert_refuses_across_dimensions() -> None:
    with pytest.raises(ProofError) as caught:
        convert("1", "µm", "ppm")
    assert caught.value.code == "incompatible_unit"


@pytest.mark.parametrize(("purity", "ppb"), [
    ("99.9999", "1000"), ("99.99999", "100"), ("99.9995", "5000"), ("100", "0"), ("99.99", "100000"),
])
def test_purity_and_total_impurity(purity: str, ppb: str) -> None:
    assert purity_to_impurity_ppb(purity) == Decimal(ppb)
    assert impurity_ppb_to_purity(ppb) == Decimal(purity)


@given(st.decimals(min_value=0, max_value=100, places=9, allow_nan=False, allow_infinity=False))
def test_purity_round_trip(purity: Decimal) -> None:
    assert impurity_ppb_to_purity(purity_to_impurity_ppb(purity)) == purity


def test_purity_out_of_range_is_refused() -> None:
    with pytest.raises(ProofError):
        purity_to_impurity_ppb("100.1")
    with pytest.raises(ProofError) as caught:
        impurity_ppb_to_purity("-1")
    assert caught.value.code == "negative_value"
    assert impurity_ppb_to_purity(Decimal(10**12)) == 0  # more than all of it: clamps at 0 %


@pytest.mark.parametrize(("code", "purity"), [
    ("4N", "99.99"), ("5N", "99.999"), ("5N5", "99.9995"), ("6N", "99.9999"), ("7N", "99.99999"), ("3N5", "99.95"),
])
def test_nines(code: str, purity: str) -> None:
    assert nines_to_purity(code) == Decimal(purity)


@pytest.mark.parametrize("code", ["6n", "N6", "6N6", "", "0N"])
def test_bad_nines(code: str) -> None:
    with pytest.raises(ProofError):
        nines_to_purity(code)


@pytest.mark.parametrize("text", ["1e3", "+1", "01", " 1", "1.", ".5", "1,5", "--1"])
def test_parse_decimal_wants_plain_decimal_strings(text: str) -> None:
    with pytest.raises(ProofError) as caught:
        parse_decimal(text)
    assert caught.value.code == "invalid_decimal"


def test_parse_decimal_accepts_plain_forms() -> None:
    assert parse_decimal("-0.5") == Decimal("-0.5")
    assert parse_decimal("0") == 0
    assert parse_decimal(Decimal("1.20")) == Decimal("1.20")


def test_plain_has_no_exponent() -> None:
    assert plain(Decimal("5E+3")) == "5000"
    assert plain(Decimal("1.500")) == "1.5"
    assert plain(Decimal("-0")) == "0"


def test_kg_quantities_have_one_spelling() -> None:
    assert parse_kg("1250.000") == Decimal("1250")
    assert format_kg(Decimal("1.5")) == "1.500"
    assert format_kg("400") == "400.000"
    for bad in ("1250", "1250.5", "1250.0000", "-1.000", "1e3", 1250):
        with pytest.raises(ProofError) as caught:
            parse_kg(bad)  # type: ignore[arg-type]
        assert caught.value.code == "invalid_quantity"


def test_format_kg_never_rounds_metal() -> None:
    with pytest.raises(ProofError) as caught:
        format_kg(Decimal("1.0005"))
    assert caught.value.code == "invalid_quantity"
    with pytest.raises(ProofError) as caught:
        format_kg(Decimal("-1"))
    assert caught.value.code == "negative_value"
    with pytest.raises(ProofError):
        format_kg(Decimal("1E+40"))


@given(st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False, allow_infinity=False))
def test_kg_round_trip(quantity: Decimal) -> None:
    assert parse_kg(format_kg(quantity)) == quantity
