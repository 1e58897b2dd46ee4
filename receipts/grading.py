"""Grading: which deliverable grade an assayed lot meets, or, grade by grade, which
thresholds it fails with the measured and allowed figures. Pure; no database.

Semantics (also in BUNDLE_FORMAT.md):
- Impurities are compared in ppb (converted with `units.to_ppb`); failures are reported
  in the unit the grade was written in.
- A thresholded element, property or aggregate that the assay does not report FAILS with
  reason "not_measured": silence on an element is not evidence it is absent. Labs report
  non-detects at their detection limit, which grading takes as the value (an upper bound).
- `total_metallic` sums every reported element except the non-metals
  (`catalogue.NON_METALS`) and the matrix metal; `total_impurities` sums every reported
  element except the matrix metal. An aggregate with nothing to sum is "not_measured".
- Purity is on a metals basis (gases excluded, as 6N specifications are written): the
  lab's stated purity must reach the grade's `purity_min`, and so must the purity by
  difference, 100 % minus the reported metallic impurities, so a certificate cannot
  claim more nines than its own impurity table allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from receipts.catalogue import (
    AGGREGATE,
    ELEMENT,
    MAX,
    NON_METALS,
    PROPERTY_NAME,
    TOTAL_IMPURITIES,
    TOTAL_METALLIC,
    Grade,
    Threshold,
    check_element,
)
from receipts.errors import INVALID_ASSAY, ProofError
from receipts.units import (
    NON_NEGATIVE_DECIMAL_PATTERN,
    UNITS,
    canonical_unit,
    convert,
    from_ppb,
    is_mass_fraction,
    parse_decimal,
    plain,
    to_ppb,
)

_HUNDRED = Decimal(100)
_PPB_EXPONENT: dict[str, int] = {symbol: unit.exponent for symbol, unit in UNITS.items() if is_mass_fraction(symbol)}

EXCEEDS_MAX = "exceeds_max"
BELOW_MIN = "below_min"
NOT_MEASURED = "not_measured"
FORM_NOT_ACCEPTED = "form_not_accepted"
INCOMPATIBLE_UNIT = "incompatible_unit"

PURITY_RULE = "purity"
PURITY_BY_DIFFERENCE_RULE = "purity_by_difference"


@dataclass(frozen=True, slots=True)
class PropertyReading:
    value: Decimal
    unit: str


@dataclass(frozen=True, slots=True)
class AssayProfile:
    """What an assay says about a lot: stated purity (percent, metals basis), impurities
    per element in ppb, and physical properties (d90, sphericity...) in their own units."""

    purity_percent: Decimal
    impurities_ppb: Mapping[str, Decimal]
    properties: Mapping[str, PropertyReading]

    @classmethod
    def build(
        cls,
        *,
        purity_percent: Decimal | str,
        impurities: Iterable[tuple[str, Decimal | str, str]] = (),
        properties: Iterable[tuple[str, Decimal | str, str]] = (),
    ) -> AssayProfile:
        """A profile from (element, value, unit) and (name, value, unit) triples.
        Unknown elements or units, negative values and duplicates are errors."""
        purity = parse_decimal(purity_percent, field="purity_percent")
        if not Decimal(0) <= purity <= _HUNDRED:
            raise ProofError(INVALID_ASSAY, f"purity {purity} % is outside 0..100", {"purity": str(purity)})
        found: dict[str, Decimal] = {}
        for element, value, unit in impurities:
            check_element(element)
            if element in found:
                raise ProofError(INVALID_ASSAY, f"element {element} is reported twice", {"element": element})
            # Fast path for the common shape (a non-negative decimal string in a known
            # mass-fraction unit); anything else goes through to_ppb for its error.
            exponent = _PPB_EXPONENT.get(unit) if type(value) is str and type(unit) is str else None
            if exponent is not None and NON_NEGATIVE_DECIMAL_PATTERN.fullmatch(value):  # type: ignore[arg-type]
                amount = Decimal(value)  # type: ignore[arg-type]
                found[element] = amount.scaleb(exponent) if exponent else amount
            else:
                found[element] = to_ppb(value, unit)
        readings: dict[str, PropertyReading] = {}
        for name, value, unit in properties:
            if not isinstance(name, str) or not PROPERTY_NAME.fullmatch(name):
                raise ProofError(INVALID_ASSAY, f"property name {name!r} must be lower_snake_case", {"property": str(name)})
            if name in readings:
                raise ProofError(INVALID_ASSAY, f"property {name} is reported twice", {"property": name})
            readings[name] = PropertyReading(parse_decimal(value, field=name), canonical_unit(unit))
        return cls(purity_percent=purity, impurities_ppb=found, properties=readings)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AssayProfile:
        """A profile from an assay attestation document (BUNDLE_FORMAT.md shape)."""
        try:
            impurities = [(row["element"], row["value"], row["unit"]) for row in doc.get("impurities", [])]
            properties = [(row["name"], row["value"], row["unit"]) for row in doc.get("properties", [])]
            purity = doc["purityPercent"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProofError(INVALID_ASSAY, f"assay document is missing {exc}", {}) from exc
        return cls.build(purity_percent=purity, impurities=impurities, properties=properties)

    def total_ppb(self, matrix: str, *, metallic_only: bool) -> Decimal | None:
        """Sum of reported impurities (metallic ones only, if asked), None if none."""
        total: Decimal | None = None
        for element, ppb in self.impurities_ppb.items():
            if element == matrix or (metallic_only and element in NON_METALS):
                continue
            total = ppb if total is None else total + ppb
        return total


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed rule: measured vs allowed, in the rule's unit."""

    rule: str
    subject: str
    reason: str
    measured: Decimal | None
    allowed: Decimal | None
    unit: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject,
            "reason": self.reason,
            "measured": None if self.measured is None else plain(self.measured),
            "allowed": None if self.allowed is None else plain(self.allowed),
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class GradeEvaluation:
    code: str
    rank: int
    failures: tuple[Failure, ...]

    @property
    def met(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class GradingResult:
    """The best grade met (None if none) and, for every grade of the metal (best
    first), what failed."""

    metal: str
    form: str
    grade: str | None
    evaluations: tuple[GradeEvaluation, ...]

    @property
    def met(self) -> bool:
        return self.grade is not None

    def failures_for(self, code: str) -> tuple[Failure, ...]:
        for evaluation in self.evaluations:
            if evaluation.code == code:
                return evaluation.failures
        raise KeyError(code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metal": self.metal,
            "form": self.form,
            "grade": self.grade,
            "evaluations": [
                {"code": e.code, "rank": e.rank, "met": e.met, "failures": [f.to_dict() for f in e.failures]}
                for e in self.evaluations
            ],
        }


def _compare(threshold: Threshold, measured: Decimal, allowed: Decimal) -> str | None:
    if threshold.limit == MAX:
        ok = measured < allowed if threshold.strict else measured <= allowed
        return None if ok else EXCEEDS_MAX
    ok = measured > allowed if threshold.strict else measured >= allowed
    return None if ok else BELOW_MIN


def _check_threshold(
    threshold: Threshold, assay: AssayProfile, totals: dict[str, Decimal | None]
) -> Failure | None:
    if threshold.kind == ELEMENT or threshold.kind == AGGREGATE:
        if threshold.kind == ELEMENT:
            measured_ppb = assay.impurities_ppb.get(threshold.subject)
        else:
            measured_ppb = totals[threshold.subject]
        if measured_ppb is None:
            return Failure(threshold.rule, threshold.subject, NOT_MEASURED, None, threshold.value, threshold.unit)
        exponent = _PPB_EXPONENT[threshold.unit]  # the catalogue admits only mass fractions here
        allowed_ppb = threshold.value.scaleb(exponent) if exponent else threshold.value
        reason = _compare(threshold, measured_ppb, allowed_ppb)
        if reason is None:
            return None
        return Failure(
            threshold.rule, threshold.subject, reason, from_ppb(measured_ppb, threshold.unit), threshold.value, threshold.unit
        )
    reading = assay.properties.get(threshold.subject)
    if reading is None:
        return Failure(threshold.rule, threshold.subject, NOT_MEASURED, None, threshold.value, threshold.unit)
    try:
        measured = convert(reading.value, reading.unit, threshold.unit)
    except ProofError:
        return Failure(threshold.rule, threshold.subject, INCOMPATIBLE_UNIT, reading.value, threshold.value, reading.unit)
    reason = _compare(threshold, measured, threshold.value)
    if reason is None:
        return None
    return Failure(threshold.rule, threshold.subject, reason, measured, threshold.value, threshold.unit)


def _totals_ppb(assay: AssayProfile, matrix: str) -> tuple[Decimal | None, Decimal | None]:
    """(total metallic, total impurities) as `AssayProfile.total_ppb` gives them, in one
    pass over the table: the same additions in the same order, so the same Decimals."""
    metallic: Decimal | None = None
    everything: Decimal | None = None
    for element, ppb in assay.impurities_ppb.items():
        if element == matrix:
            continue
        everything = ppb if everything is None else everything + ppb
        if element not in NON_METALS:
            metallic = ppb if metallic is None else metallic + ppb
    return metallic, everything


def _best_first(grade: Grade) -> int:
    return -grade.rank


def evaluate_grade(grade: Grade, form: str, assay: AssayProfile) -> GradeEvaluation:
    """Every rule of one grade against one assay (all failures, not just the first)."""
    failures: list[Failure] = []
    if form not in grade.forms:
        failures.append(Failure("form", "form", FORM_NOT_ACCEPTED, None, None, None))
    floor = grade.purity_min
    if assay.purity_percent < floor:
        failures.append(
            Failure(f"purity >= {format(floor, 'f')} %", PURITY_RULE, BELOW_MIN, assay.purity_percent, floor, "%")
        )
    metallic, everything = _totals_ppb(assay, grade.metal)
    if metallic is not None:
        by_difference = _HUNDRED - metallic.scaleb(-7)
        if by_difference < floor:
            failures.append(
                Failure(
                    f"purity by difference >= {format(floor, 'f')} %",
                    PURITY_BY_DIFFERENCE_RULE,
                    BELOW_MIN,
                    by_difference,
                    floor,
                    "%",
                )
            )
    totals: dict[str, Decimal | None] = {TOTAL_METALLIC: metallic, TOTAL_IMPURITIES: everything}
    for threshold in grade.thresholds:
        failure = _check_threshold(threshold, assay, totals)
        if failure is not None:
            failures.append(failure)
    return GradeEvaluation(code=grade.code, rank=grade.rank, failures=tuple(failures))


def grade_lot(metal: str, form: str, assay: AssayProfile, grades: Iterable[Grade]) -> GradingResult:
    """The highest-ranked grade of `metal` that the assayed lot in `form` meets, with the
    evaluation of every grade of that metal (best first) so callers can show why the
    better grades were missed. Grades of other metals in `grades` are ignored."""
    check_element(metal)
    if metal in assay.impurities_ppb:
        raise ProofError(
            INVALID_ASSAY, f"the assay lists the matrix metal {metal} as an impurity", {"element": metal}
        )
    candidates = [g for g in grades if g.metal == metal]
    if len(candidates) > 1:
        candidates.sort(key=_best_first)  # stable: equal ranks keep their given order
    evaluations = tuple(evaluate_grade(g, form, assay) for g in candidates)
    best = next((e.code for e in evaluations if e.met), None)
    return GradingResult(metal=metal, form=form, grade=best, evaluations=evaluations)
