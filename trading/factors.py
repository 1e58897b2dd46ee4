"""External factor observations (aluminium price, PV installations, utilisation rates): the
observation type, pure validation with stable error codes, and all-or-nothing CSV parsing."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Literal

from trading.pricing_config import FactorSpec, default_pricing_config

CSV_COLUMNS: tuple[str, ...] = ("factor", "observed_at", "value", "unit", "source")

# Stable issue codes; API responses and the admin show them verbatim.
UNKNOWN_FACTOR = "unknown_factor"
FACTOR_IN_FUTURE = "factor_in_future"
NEGATIVE_VALUE = "negative_value"
DUPLICATE_OBSERVATION = "duplicate_observation"
WRONG_UNIT = "wrong_unit"
GAP = "gap"  # a warning, never an error
INVALID_VALUE = "invalid_value"
INVALID_TIMESTAMP = "invalid_timestamp"
MISSING_FIELD = "missing_field"
BAD_HEADER = "bad_header"
BAD_ROW = "bad_row"
EMPTY_FILE = "empty_file"

Severity = Literal["error", "warning"]

# What a stored observation can hold (trading.pricing_models.FactorObservation.value: 24 digits, 6 places).
VALUE_DECIMAL_PLACES = 6
VALUE_LIMIT = 10**18


@dataclass(frozen=True, slots=True)
class FactorObservation:
    factor: str
    observed_at: datetime  # timezone-aware; a date-only observation is midnight UTC of that date
    value: Decimal
    unit: str
    source: str = ""
    # When the platform received it. The factor model uses it so that a monthly figure dated
    # the 1st but loaded on the 15th counts as news on the 15th; None means "known when observed".
    recorded_at: datetime | None = None

    @property
    def known_at(self) -> datetime:
        return self.recorded_at if self.recorded_at is not None else self.observed_at


@dataclass(frozen=True, slots=True)
class FactorIssue:
    code: str
    message: str
    severity: Severity = "error"
    row: int | None = None  # CSV line number (header is line 1), None outside a file

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{where}{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class FactorFileReport:
    observations: list[FactorObservation]
    warnings: list[FactorIssue]


class FactorFileError(ValueError):
    """A factor file was rejected as a whole; `issues` holds every error with its row number."""

    code = "factor_file_invalid"

    def __init__(self, issues: list[FactorIssue]) -> None:
        self.issues = issues
        lines = "\n  ".join(str(issue) for issue in issues)
        super().__init__(f"factor file rejected, nothing loaded ({len(issues)} error(s)):\n  {lines}")


def validate_observation(
    factor_id: str,
    observed_at: datetime,
    value: Decimal,
    unit: str,
    known_factors: Mapping[str, FactorSpec],
    now: datetime,
    last_seen_timestamps: Mapping[str, Collection[datetime]],
) -> list[FactorIssue]:
    """Check one observation; returns errors (reject) and "gap" warnings (accept, but say so).

    `last_seen_timestamps` maps a factor id to the timestamps already stored for it; a value
    equal to one of them is a duplicate, and a value later than the latest of them by more than
    the factor's expected interval is a gap. Backfilling older points never warns: it closes
    gaps rather than opening them.
    """
    seen = last_seen_timestamps.get(factor_id, ())
    latest = max(seen, default=None)
    return _validate(factor_id, observed_at, value, unit, known_factors, now, seen, latest)


def _validate(
    factor_id: str,
    observed_at: datetime,
    value: Decimal,
    unit: str,
    known_factors: Mapping[str, FactorSpec],
    now: datetime,
    seen: Collection[datetime],
    latest: datetime | None,
) -> list[FactorIssue]:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    issues: list[FactorIssue] = []
    spec = known_factors.get(factor_id)
    if spec is None:
        issues.append(
            FactorIssue(
                UNKNOWN_FACTOR, f"unknown factor {factor_id!r}; known: {', '.join(sorted(known_factors))}"
            )
        )

    aware = observed_at.tzinfo is not None
    if not aware:
        issues.append(
            FactorIssue(INVALID_TIMESTAMP, f"observed_at {observed_at.isoformat()} has no UTC offset")
        )
    elif observed_at > now:
        issues.append(
            FactorIssue(
                FACTOR_IN_FUTURE, f"observed_at {observed_at.isoformat()} is after now ({now.isoformat()})"
            )
        )

    if not value.is_finite():
        issues.append(FactorIssue(INVALID_VALUE, f"value {value} is not a finite number"))
    elif abs(value) >= VALUE_LIMIT or _decimal_places(value) > VALUE_DECIMAL_PLACES:
        issues.append(
            FactorIssue(
                INVALID_VALUE,
                f"value {value} is out of range: below {VALUE_LIMIT:,} with at most {VALUE_DECIMAL_PLACES} "
                "decimal places",
            )
        )
    elif value < 0 and not (spec is not None and spec.allow_negative):
        issues.append(FactorIssue(NEGATIVE_VALUE, f"value {value} is negative"))

    if spec is not None and unit.strip() != spec.unit:
        issues.append(
            FactorIssue(WRONG_UNIT, f"unit {unit!r} does not match {factor_id}'s unit {spec.unit!r}")
        )

    if spec is not None and aware:
        if observed_at in seen:
            issues.append(
                FactorIssue(
                    DUPLICATE_OBSERVATION,
                    f"{factor_id} already has an observation at {observed_at.isoformat()}",
                )
            )
        elif latest is not None and observed_at - latest > spec.expected_interval:
            days = (observed_at - latest).total_seconds() / 86400
            expected = spec.expected_interval.total_seconds() / 86400
            issues.append(
                FactorIssue(
                    GAP,
                    f"{days:g} days since the previous {factor_id} observation ({latest.date().isoformat()}); "
                    f"expected at most {expected:g}",
                    severity="warning",
                )
            )
    return issues


def errors_only(issues: Iterable[FactorIssue]) -> list[FactorIssue]:
    return [issue for issue in issues if issue.severity == "error"]


def parse_factor_csv(
    file: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    known_factors: Mapping[str, FactorSpec] | None = None,
    now: datetime | None = None,
    existing: Mapping[str, Collection[datetime]] | None = None,
) -> list[FactorObservation]:
    """Parse a factor CSV (columns factor, observed_at, value, unit, source), all or nothing.

    Raises FactorFileError listing every error with its row number; returns the observations
    sorted by (factor, observed_at). Gap warnings do not reject the file (see
    `parse_factor_csv_report` to read them). `known_factors` defaults to the repository's
    pricing config and `now` to the current time.
    """
    return parse_factor_csv_report(file, known_factors=known_factors, now=now, existing=existing).observations


def parse_factor_csv_report(
    file: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    known_factors: Mapping[str, FactorSpec] | None = None,
    now: datetime | None = None,
    existing: Mapping[str, Collection[datetime]] | None = None,
) -> FactorFileReport:
    """`parse_factor_csv`, also returning the gap warnings."""
    factors = known_factors if known_factors is not None else default_pricing_config().factors
    clock = now if now is not None else datetime.now(UTC)
    text = _read_text(file)
    errors: list[FactorIssue] = []
    reader = csv.reader(io.StringIO(text))

    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise FactorFileError(
            [
                FactorIssue(
                    EMPTY_FILE, f"the file is empty; expected a header row {','.join(CSV_COLUMNS)}", row=1
                )
            ]
        )
    names = [cell.strip().lower() for cell in header]
    if sorted(names) != sorted(CSV_COLUMNS):
        raise FactorFileError(
            [
                FactorIssue(
                    BAD_HEADER,
                    f"header must have exactly the columns {', '.join(CSV_COLUMNS)}; got {', '.join(names)}",
                    row=1,
                )
            ]
        )
    position = {name: names.index(name) for name in CSV_COLUMNS}

    # First pass: per-row field parsing. Cross-row checks (duplicates, gaps) need the rows of a
    # factor in time order, so they run in a second pass.
    parsed: list[tuple[int, FactorObservation]] = []
    for cells in reader:
        row = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, e.g. a trailing newline from a spreadsheet export
        if len(cells) != len(CSV_COLUMNS):
            errors.append(
                FactorIssue(BAD_ROW, f"expected {len(CSV_COLUMNS)} cells, got {len(cells)}", row=row)
            )
            continue
        fields = {name: cells[i].strip() for name, i in position.items()}
        row_errors = [
            FactorIssue(MISSING_FIELD, f"{name} is empty", row=row)
            for name, cell in fields.items()
            if not cell
        ]
        observed_at = _parse_timestamp(fields["observed_at"]) if fields["observed_at"] else None
        if fields["observed_at"] and observed_at is None:
            row_errors.append(
                FactorIssue(
                    INVALID_TIMESTAMP,
                    f"observed_at {fields['observed_at']!r} is not an ISO "
                    "date or a datetime with a UTC offset",
                    row=row,
                )
            )
        value = _parse_decimal(fields["value"]) if fields["value"] else None
        if fields["value"] and value is None:
            row_errors.append(
                FactorIssue(INVALID_VALUE, f"value {fields['value']!r} is not a number", row=row)
            )
        if row_errors or observed_at is None or value is None:
            errors.extend(row_errors)
            continue
        parsed.append(
            (
                row,
                FactorObservation(
                    factor=fields["factor"],
                    observed_at=observed_at,
                    value=value,
                    unit=fields["unit"],
                    source=fields["source"],
                ),
            )
        )

    warnings: list[FactorIssue] = []
    seen: dict[str, set[datetime]] = {f: set(ts) for f, ts in (existing or {}).items()}
    latest: dict[str, datetime] = {f: max(ts) for f, ts in seen.items() if ts}
    for row, obs in sorted(parsed, key=lambda item: (item[1].factor, item[1].observed_at, item[0])):
        factor_seen = seen.setdefault(obs.factor, set())
        for issue in _validate(
            obs.factor,
            obs.observed_at,
            obs.value,
            obs.unit,
            factors,
            clock,
            factor_seen,
            latest.get(obs.factor),
        ):
            located = FactorIssue(issue.code, issue.message, issue.severity, row=row)
            (warnings if issue.severity == "warning" else errors).append(located)
        factor_seen.add(obs.observed_at)
        if obs.factor not in latest or obs.observed_at > latest[obs.factor]:
            latest[obs.factor] = obs.observed_at

    if errors:
        raise FactorFileError(sorted(errors, key=lambda issue: (issue.row or 0, issue.code)))
    observations = [obs for _, obs in sorted(parsed, key=lambda item: (item[1].factor, item[1].observed_at))]
    return FactorFileReport(observations=observations, warnings=sorted(warnings, key=lambda i: i.row or 0))


def read_text(file: str | os.PathLike[str] | IO[str] | IO[bytes]) -> str:
    """A factor file's text: UTF-8 (a leading byte-order mark dropped), from a path or a file object."""
    return _read_text(file)


def parse_timestamp(cell: str) -> datetime | None:
    """An ISO date (midnight UTC) or an ISO datetime with an offset, in UTC; None otherwise."""
    return _parse_timestamp(cell)


def _read_text(file: str | os.PathLike[str] | IO[str] | IO[bytes]) -> str:
    if isinstance(file, str | os.PathLike):
        raw: str | bytes = Path(file).read_bytes()
    else:
        raw = file.read()
    if isinstance(raw, bytes):
        try:
            # utf-8-sig: spreadsheet exports often start with a byte-order mark.
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FactorFileError([FactorIssue(INVALID_VALUE, f"the file is not UTF-8: {exc}")]) from exc
    return raw.removeprefix("\ufeff")


def _parse_timestamp(cell: str) -> datetime | None:
    try:
        if len(cell) == 10:
            return datetime.combine(date.fromisoformat(cell), time(0), tzinfo=UTC)
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return None
    # A datetime without an offset is ambiguous (whose midnight?), so it is refused.
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _decimal_places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _parse_decimal(cell: str) -> Decimal | None:
    try:
        number = Decimal(cell)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
