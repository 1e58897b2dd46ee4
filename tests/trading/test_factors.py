"""Tests for trading.factors: observation validation codes and all-or-nothing CSV parsing."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from trading.factors import (
    FactorFileError,
    FactorIssue,
    errors_only,
    parse_factor_csv,
    parse_factor_csv_report,
    validate_observation,
)
from trading.pricing_config import default_pricing_config

D = Decimal
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FACTORS = default_pricing_config().factors
DEMO_CSV = Path(__file__).resolve().parents[2] / "trading" / "data" / "factors_demo.csv"
HEADER = "factor,observed_at,value,unit,source\n"


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


def codes(issues: list[FactorIssue]) -> list[str]:
    return [issue.code for issue in issues]


NOV_1 = day(2026, 11, 1)


def check(
    factor: str = "aluminium_price",
    observed_at: datetime = NOV_1,
    value: str = "2800",
    unit: str = "USD/t",
    seen: dict | None = None,
    known=FACTORS,
) -> list[FactorIssue]:
    return validate_observation(factor, observed_at, D(value), unit, known, NOW, seen or {})


# --- validate_observation ----------------------------------------------------------------------


def test_valid_observation_has_no_issues() -> None:
    assert check(seen={"aluminium_price": {day(2026, 10, 1)}}) == []


def test_future_timestamp() -> None:
    issues = check(observed_at=NOW + timedelta(minutes=1))
    assert codes(issues) == ["factor_in_future"]
    assert issues[0].severity == "error"


def test_negative_value() -> None:
    assert codes(check(value="-1")) == ["negative_value"]
    assert check(value="0") == []  # zero is a value (the model refuses to take its log, with a reason)
    allowed = {
        **FACTORS,
        "spread": dataclasses.replace(FACTORS["aluminium_price"], factor_id="spread", allow_negative=True),
    }
    assert check("spread", value="-1", known=allowed) == []


def test_duplicate_timestamp() -> None:
    issues = check(seen={"aluminium_price": {day(2026, 10, 1), day(2026, 11, 1)}})
    assert codes(issues) == ["duplicate_observation"]
    # the same date on another factor is not a duplicate
    assert check(seen={"solar_installations": {day(2026, 11, 1)}}) == []


def test_unknown_factor() -> None:
    issues = check(factor="copper_price")
    assert codes(issues) == ["unknown_factor"]
    assert "aluminium_price" in issues[0].message  # lists what is known


def test_wrong_unit() -> None:
    issues = check(unit="USD/kg")
    assert codes(issues) == ["wrong_unit"]
    assert issues[0].message == "unit 'USD/kg' does not match aluminium_price's unit 'USD/t'"


def test_gap_is_a_warning() -> None:
    issues = check(observed_at=day(2026, 11, 1), seen={"aluminium_price": {day(2026, 8, 1)}})
    assert codes(issues) == ["gap"]
    assert issues[0].severity == "warning"
    assert errors_only(issues) == []
    assert (
        "92 days since the previous aluminium_price observation (2026-08-01); expected at most 31"
        in issues[0].message
    )
    # monthly on the 1st (31 days) is not a gap; weekly display data is
    assert check(observed_at=day(2026, 11, 1), seen={"aluminium_price": {day(2026, 10, 1)}}) == []
    weekly = check(
        "display_line_utilisation",
        day(2026, 11, 16),
        "91",
        "%",
        seen={"display_line_utilisation": {day(2026, 11, 2)}},
    )
    assert codes(weekly) == ["gap"]


def test_backfill_does_not_warn_of_gaps() -> None:
    assert check(observed_at=day(2025, 1, 1), seen={"aluminium_price": {day(2026, 10, 1)}}) == []


def test_several_problems_are_reported_together() -> None:
    issues = check(observed_at=NOW + timedelta(days=1), value="-5", unit="t")
    assert codes(issues) == ["factor_in_future", "negative_value", "wrong_unit"]


def test_naive_timestamp_and_non_finite_value() -> None:
    assert codes(check(observed_at=datetime(2026, 11, 1))) == ["invalid_timestamp"]
    assert codes(
        validate_observation("aluminium_price", day(2026, 11, 1), D("NaN"), "USD/t", FACTORS, NOW, {})
    ) == ["invalid_value"]
    with pytest.raises(ValueError, match="now"):
        validate_observation(
            "aluminium_price", day(2026, 11, 1), D("1"), "USD/t", FACTORS, datetime(2026, 1, 1), {}
        )


# --- parse_factor_csv --------------------------------------------------------------------------


def test_parses_rows_sorted_with_dates_as_utc_midnight() -> None:
    text = HEADER + (
        "aluminium_price,2026-11-01,2910,USD/t,DEMO\n"
        "aluminium_price,2026-10-01,2860.5,USD/t,DEMO\n"
        "display_line_utilisation,2026-11-16T09:00:00+08:00,93.0,%,DEMO\n"
    )
    rows = parse_factor_csv(io.StringIO(text), now=NOW)
    assert [(r.factor, r.observed_at, r.value) for r in rows] == [
        ("aluminium_price", day(2026, 10, 1), D("2860.5")),
        ("aluminium_price", day(2026, 11, 1), D("2910")),
        ("display_line_utilisation", datetime(2026, 11, 16, 1, 0, tzinfo=UTC), D("93.0")),
    ]
    assert rows[0].source == "DEMO" and rows[0].unit == "USD/t" and rows[0].recorded_at is None


def test_one_bad_row_rejects_the_whole_file_with_row_numbers() -> None:
    text = HEADER + (
        "aluminium_price,2026-10-01,2860,USD/t,DEMO\n"  # row 2, fine
        "aluminium_price,2026-11-01,-3,USD/t,DEMO\n"  # row 3
        "copper_price,2026-11-01,9000,USD/t,DEMO\n"  # row 4
        "aluminium_price,2027-01-01,2900,USD/t,DEMO\n"  # row 5
        "solar_installations,2026-11-01,24,GW,DEMO\n"  # row 6
        "aluminium_price,2026-10-01,2861,USD/t,DEMO\n"  # row 7: duplicates row 2
        "aluminium_price,1 Nov 2026,abc,USD/t,\n"  # row 8: three problems
        "aluminium_price,2026-09-01T00:00:00,2800,USD/t,DEMO\n"  # row 9: no offset
        "aluminium_price,2026-09-01\n"  # row 10
    )
    with pytest.raises(FactorFileError) as caught:
        parse_factor_csv(io.StringIO(text), now=NOW)
    found = [(issue.row, issue.code) for issue in caught.value.issues]
    assert found == [
        (3, "negative_value"),
        (4, "unknown_factor"),
        (5, "factor_in_future"),
        (6, "wrong_unit"),
        (7, "duplicate_observation"),
        (8, "invalid_timestamp"),
        (8, "invalid_value"),
        (8, "missing_field"),
        (9, "invalid_timestamp"),
        (10, "bad_row"),
    ]
    assert "row 3: negative_value" in str(caught.value)
    assert caught.value.code == "factor_file_invalid"


def test_gaps_are_warnings_and_do_not_reject() -> None:
    text = HEADER + (
        "aluminium_price,2026-06-01,2850,USD/t,DEMO\n"
        "aluminium_price,2026-10-01,2860,USD/t,DEMO\n"
        "aluminium_price,2026-11-01,2910,USD/t,DEMO\n"
    )
    report = parse_factor_csv_report(io.StringIO(text), now=NOW)
    assert len(report.observations) == 3
    assert [(w.row, w.code, w.severity) for w in report.warnings] == [(3, "gap", "warning")]


def test_existing_timestamps_count_as_duplicates_and_gap_anchors() -> None:
    text = HEADER + "aluminium_price,2026-11-01,2910,USD/t,DEMO\n"
    with pytest.raises(FactorFileError) as caught:
        parse_factor_csv(io.StringIO(text), now=NOW, existing={"aluminium_price": [day(2026, 11, 1)]})
    assert codes(caught.value.issues) == ["duplicate_observation"]
    report = parse_factor_csv_report(
        io.StringIO(text), now=NOW, existing={"aluminium_price": [day(2026, 5, 1)]}
    )
    assert codes(report.warnings) == ["gap"]


def test_header_and_empty_file_errors() -> None:
    with pytest.raises(FactorFileError) as caught:
        parse_factor_csv(io.StringIO(""), now=NOW)
    assert codes(caught.value.issues) == ["empty_file"]
    with pytest.raises(FactorFileError) as caught:
        parse_factor_csv(io.StringIO("factor,date,value,unit,source\n"), now=NOW)
    assert [(i.row, i.code) for i in caught.value.issues] == [(1, "bad_header")]
    # header only: a valid, empty file
    assert parse_factor_csv(io.StringIO(HEADER), now=NOW) == []


def test_reads_bytes_with_bom_reordered_columns_and_blank_lines(tmp_path: Path) -> None:
    text = "source,factor,value,unit,observed_at\nDEMO,aluminium_price,2910,USD/t,2026-11-01\n\n"
    rows = parse_factor_csv(io.BytesIO(b"\xef\xbb\xbf" + text.encode()), now=NOW)
    assert [(r.factor, r.value) for r in rows] == [("aluminium_price", D("2910"))]
    path = tmp_path / "f.csv"
    path.write_text(text, encoding="utf-8")
    assert parse_factor_csv(path, now=NOW) == rows
    with pytest.raises(FactorFileError, match="not UTF-8"):
        parse_factor_csv(io.BytesIO(b"\xff\xfe\x00"), now=NOW)


def test_demo_file_is_clean_and_labelled_demo() -> None:
    report = parse_factor_csv_report(DEMO_CSV, now=NOW)
    assert report.warnings == []
    assert {r.factor for r in report.observations} == set(FACTORS)
    assert all(r.source.startswith("DEMO") for r in report.observations)
    with DEMO_CSV.open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["factor", "observed_at", "value", "unit", "source"]
    yearly = {
        (r.factor, r.observed_at.year): r.value for r in report.observations if r.factor.endswith("_usd_kg")
    }
    # DESIGN.md section 8: 2022 310 / 1,250 ... 2026 580 / 1,750 USD/kg
    assert yearly[("ga_price_usd_kg", 2022)] == 310 and yearly[("ge_price_usd_kg", 2022)] == 1250
    assert yearly[("ga_price_usd_kg", 2026)] == 580 and yearly[("ge_price_usd_kg", 2026)] == 1750
    months = [r for r in report.observations if r.factor == "aluminium_price"]
    assert (months[0].observed_at, months[-1].observed_at) == (day(2022, 1, 1), day(2026, 11, 1))
    hot = [
        r.observed_at.date().isoformat()
        for r in report.observations
        if r.factor == "display_line_utilisation" and r.value > 90
    ]
    assert hot[:3] == ["2026-10-26", "2026-11-02", "2026-11-09"]
