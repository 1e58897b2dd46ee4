"""Pure ESG evaluation of warehouse receipts against versioned rule packs.

No Django, no database: the lead builds `ReceiptFacts` from the database and stores the results.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, NamedTuple

# Outcomes are module-level constants so that bulk results share the same string objects.
PASS: Final = "pass"  # noqa: S105 -- an outcome, not a password
FAIL: Final = "fail"
NOT_APPLICABLE: Final = "not_applicable"
WARN: Final = "warn"  # overall outcome only: a warn-severity rule failed, no block-severity rule did

SEVERITY_BLOCK: Final = "block"
SEVERITY_WARN: Final = "warn"
SEVERITIES: Final = (SEVERITY_BLOCK, SEVERITY_WARN)

SMELTER_ID_RE: Final = re.compile(r"CID\d{6}")
# Assays are dated by the lab in its own time zone; one day of grace keeps a lab ahead of UTC from
# failing a fresh assay as "dated in the future".
ASSAY_FUTURE_GRACE: Final = timedelta(days=1)
CENT: Final = Decimal("0.01")
KG_PER_TONNE: Final = Decimal(1000)
HUNDRED: Final = Decimal(100)


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptFacts:
    """What the rules may look at, copied from the database by the caller.

    Percentages and masses are Decimal (never float); the assay date is a `date`, not a datetime.
    """

    receipt_number: str
    metal: str  # element symbol as in the catalogue: "Ga", "In", "W"
    grade_code: str
    quantity_kg: Decimal
    warehouse_country: str  # ISO 3166-1 alpha-2
    assay_issued_on: date | None = None
    footprint_kgco2e_per_kg: Decimal | None = None
    footprint_verified: bool = False  # third-party verification present
    footprint_verification_standard: str | None = None  # PACT verification.standardName
    recycled_pre_consumer_pct: Decimal | None = None
    recycled_post_consumer_pct: Decimal | None = None
    origin_smelter_id: str | None = None  # RMI smelter id, "CID" + 6 digits
    open_storage_incident: bool = False

    def __post_init__(self) -> None:
        # Cheap type guards: a float mass or a datetime assay date would otherwise surface as a
        # wrong answer (or a TypeError deep inside a rule) far from where it was made.
        if type(self.quantity_kg) is not Decimal or not self.quantity_kg.is_finite():
            raise TypeError(f"{self.receipt_number}: quantity_kg must be a finite Decimal")
        if self.quantity_kg <= 0:
            raise ValueError(f"{self.receipt_number}: quantity_kg must be > 0")
        issued = self.assay_issued_on
        if issued is not None and (isinstance(issued, datetime) or not isinstance(issued, date)):
            raise TypeError(f"{self.receipt_number}: assay_issued_on must be a date (not a datetime)")
        fp = self.footprint_kgco2e_per_kg
        if fp is not None and (type(fp) is not Decimal or not fp.is_finite() or fp < 0):
            raise TypeError(f"{self.receipt_number}: footprint_kgco2e_per_kg must be a Decimal >= 0")
        for name in ("recycled_pre_consumer_pct", "recycled_post_consumer_pct"):
            pct = getattr(self, name)
            if pct is not None and (
                type(pct) is not Decimal or not pct.is_finite() or not 0 <= pct <= HUNDRED
            ):
                raise TypeError(f"{self.receipt_number}: {name} must be a Decimal between 0 and 100")


# --------------------------------------------------------------------------- rule packs


@dataclass(frozen=True, slots=True)
class AssayMaxAge:
    months: int


@dataclass(frozen=True, slots=True)
class FootprintDeclaredVerified:
    # Empty: any third-party verification counts; otherwise its standard must be one of these.
    recognised_standards: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecycledContentMin:
    min_percent: Decimal  # pre-consumer + post-consumer share, in %


@dataclass(frozen=True, slots=True)
class CarbonIntensityMax:
    thresholds: tuple[tuple[str, Decimal], ...]  # (metal symbol, kgCO2e per kg) pairs
    default: Decimal | None = None  # None: metals not listed are not_applicable

    def threshold_for(self, metal: str) -> Decimal | None:
        for symbol, limit in self.thresholds:
            if symbol.casefold() == metal.casefold():
                return limit
        return self.default


@dataclass(frozen=True, slots=True)
class SmelterConformant:
    conformant: frozenset[str]  # resolved: inline ids plus the ids of the list file, if any
    list_file: str | None = None  # as written in the pack, for messages only


@dataclass(frozen=True, slots=True)
class NoOpenStorageIncident:
    pass


RuleParams = (
    AssayMaxAge
    | FootprintDeclaredVerified
    | RecycledContentMin
    | CarbonIntensityMax
    | SmelterConformant
    | NoOpenStorageIncident
)

RULE_KINDS: Final[dict[str, type]] = {
    "assay_max_age": AssayMaxAge,
    "footprint_declared_verified": FootprintDeclaredVerified,
    "recycled_content_min": RecycledContentMin,
    "carbon_intensity_max": CarbonIntensityMax,
    "smelter_conformant": SmelterConformant,
    "no_open_storage_incident": NoOpenStorageIncident,
}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    kind: str
    description: str
    severity: str  # "block" | "warn"
    params: RuleParams

    def __post_init__(self) -> None:
        expected = RULE_KINDS.get(self.kind)
        if expected is None:
            raise ValueError(f"rule {self.id}: unknown kind {self.kind!r}")
        if type(self.params) is not expected:
            raise TypeError(f"rule {self.id}: kind {self.kind} takes {expected.__name__} params")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.id}: severity must be one of {SEVERITIES}")


@dataclass(frozen=True, slots=True)
class CbamPolicy:
    """EU CBAM cost estimate for metal without a recognised carbon certification."""

    eur_per_tonne_low: Decimal
    eur_per_tonne_high: Decimal
    recognised_standards: tuple[str, ...] = ()  # empty: any third-party verified footprint counts
    description: str = ""


@dataclass(frozen=True, slots=True)
class RulePack:
    id: str
    version: int | str  # integer or semver string
    title: str
    market: str
    label: str | None  # what a receipt earns when every rule passes; None: a gate, no label
    rules: tuple[Rule, ...]
    description: str = ""
    cbam: CbamPolicy | None = None
    source: str = "<code>"  # file the pack was read from; not part of the content hash
    content_hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        ids = [rule.id for rule in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"pack {self.id}: duplicate rule ids")
        object.__setattr__(self, "content_hash", pack_content_hash(self))


def _canonical_decimal(value: Decimal) -> str:
    # 30, 30.0 and 3E+1 are the same threshold: the hash must not change with the spelling.
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _canonical_params(params: RuleParams) -> dict[str, Any]:
    if isinstance(params, AssayMaxAge):
        return {"months": params.months}
    if isinstance(params, FootprintDeclaredVerified):
        return {"recognised_standards": list(params.recognised_standards)}
    if isinstance(params, RecycledContentMin):
        return {"min_percent": _canonical_decimal(params.min_percent)}
    if isinstance(params, CarbonIntensityMax):
        return {
            "thresholds": {m: _canonical_decimal(v) for m, v in sorted(params.thresholds)},
            "default": None if params.default is None else _canonical_decimal(params.default),
        }
    if isinstance(params, SmelterConformant):
        # The resolved ids, not the file name: editing the list file changes the pack's hash.
        return {"conformant": sorted(params.conformant)}
    return {}


def pack_canonical(pack: RulePack) -> dict[str, Any]:
    """The pack's meaning as plain JSON-able data (comments, layout and file paths excluded)."""
    cbam = pack.cbam
    return {
        "hash_format": 1,
        "id": pack.id,
        "version": pack.version,
        "title": pack.title,
        "market": pack.market,
        "label": pack.label,
        "description": pack.description,
        "cbam": None
        if cbam is None
        else {
            "eur_per_tonne_low": _canonical_decimal(cbam.eur_per_tonne_low),
            "eur_per_tonne_high": _canonical_decimal(cbam.eur_per_tonne_high),
            "recognised_standards": list(cbam.recognised_standards),
            "description": cbam.description,
        },
        "rules": [
            {
                "id": r.id,
                "kind": r.kind,
                "description": r.description,
                "severity": r.severity,
                "params": _canonical_params(r.params),
            }
            for r in pack.rules
        ],
    }


def pack_content_hash(pack: RulePack) -> str:
    """sha256 (hex) of the canonical JSON of the pack: changes exactly when its meaning does."""
    text = json.dumps(pack_canonical(pack), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule_id: str
    kind: str
    severity: str
    outcome: str  # "pass" | "fail" | "not_applicable"
    measured: str  # what the receipt shows, human-readable ("not declared" when absent)
    required: str  # what the rule asks for
    message: str


@dataclass(frozen=True, slots=True)
class CbamEstimate:
    eur_low: Decimal
    eur_high: Decimal
    certified: bool  # True: a recognised certification exists and the estimate is zero
    basis: str


@dataclass(frozen=True, slots=True)
class PackResult:
    receipt_number: str
    pack_id: str
    pack_version: int | str
    pack_hash: str
    outcome: str  # "pass" | "warn" | "fail"
    label: str | None  # the pack's label when earned, else None
    rules: tuple[RuleResult, ...]
    cbam: CbamEstimate | None
    evaluated_at: datetime

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.rules if r.outcome == FAIL)


class CompactResult(NamedTuple):
    """One receipt's result on the bulk path: outcomes only, in the pack's rule order."""

    receipt_number: str
    outcome: str
    rule_outcomes: tuple[str, ...]
    label: str | None
    cbam_eur_low: Decimal | None
    cbam_eur_high: Decimal | None


# --------------------------------------------------------------------------- compiling

Check = Callable[[ReceiptFacts], str]
Binder = Callable[[date], Check]  # today -> check; only assay age depends on the date
Explainer = Callable[[ReceiptFacts, date, str], tuple[str, str, str]]  # -> measured, required, message


def _fmt(value: Decimal) -> str:
    return _canonical_decimal(value)


def _norm_standard(name: str) -> str:
    return " ".join(name.casefold().split())


def _standard_matcher(recognised: tuple[str, ...]) -> Callable[[str | None], bool]:
    """A memoised test 'is this verification standard recognised?'.

    A declared "ISO 14067:2018" matches a recognised "ISO 14067": editions are written after a colon.
    """
    keys = frozenset(_norm_standard(s) for s in recognised)
    memo: dict[str, bool] = {}

    def matches(name: str | None) -> bool:
        if name is None:
            return False
        hit = memo.get(name)
        if hit is None:
            norm = _norm_standard(name)
            hit = norm in keys or norm.split(":", 1)[0].rstrip() in keys
            if len(memo) < 4096:  # a handful of distinct standards in practice; bound it anyway
                memo[name] = hit
        return hit

    return matches


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _whole_months_between(earlier: date, later: date) -> int:
    months = (later.year - earlier.year) * 12 + later.month - earlier.month
    return months - (1 if later.day < earlier.day else 0)


def _compile_assay_max_age(p: AssayMaxAge) -> tuple[Binder, Explainer]:
    months = p.months

    def bind(today: date) -> Check:
        oldest = _months_before(today, months)
        latest = today + ASSAY_FUTURE_GRACE

        def check(f: ReceiptFacts) -> str:
            issued = f.assay_issued_on
            if issued is None:
                return FAIL
            return PASS if oldest <= issued <= latest else FAIL

        return check

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        oldest = _months_before(today, months)
        required = f"issued on or after {oldest.isoformat()} (at most {months} months old)"
        issued = f.assay_issued_on
        if issued is None:
            return "no assay", required, "no assay is attached to the receipt's lot"
        if issued > today + ASSAY_FUTURE_GRACE:
            return issued.isoformat(), required, f"assay is dated in the future ({issued.isoformat()})"
        age = max(0, _whole_months_between(issued, today))
        measured = f"issued {issued.isoformat()} ({age} months old)"
        if outcome == PASS:
            return measured, required, f"assay is {age} months old, within {months} months"
        return measured, required, f"assay is older than {months} months (issued {issued.isoformat()})"

    return bind, explain


def _compile_footprint_declared_verified(p: FootprintDeclaredVerified) -> tuple[Binder, Explainer]:
    recognised = p.recognised_standards
    matches = _standard_matcher(recognised)

    def check(f: ReceiptFacts) -> str:
        if f.footprint_kgco2e_per_kg is None or not f.footprint_verified:
            return FAIL
        if recognised and not matches(f.footprint_verification_standard):
            return FAIL
        return PASS

    def bind(today: date) -> Check:
        return check

    required = "declared and third-party verified" + (
        f" under one of: {', '.join(recognised)}" if recognised else ""
    )

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        fp = f.footprint_kgco2e_per_kg
        if fp is None:
            return "not declared", required, "no carbon footprint is declared"
        standard = f.footprint_verification_standard or "no standard named"
        if not f.footprint_verified:
            return f"{_fmt(fp)} kgCO2e/kg, not verified", required, "footprint is declared but not verified"
        measured = f"{_fmt(fp)} kgCO2e/kg, verified ({standard})"
        if outcome == FAIL:
            return measured, required, f"verification standard not recognised: {standard}"
        return measured, required, "footprint declared and third-party verified"

    return bind, explain


def _compile_recycled_content_min(p: RecycledContentMin) -> tuple[Binder, Explainer]:
    minimum = p.min_percent

    def check(f: ReceiptFacts) -> str:
        pre = f.recycled_pre_consumer_pct
        post = f.recycled_post_consumer_pct
        # A share that is not declared counts as zero, but a receipt declaring neither fails.
        if pre is None:
            if post is None:
                return FAIL
            total = post
        elif post is None:
            total = pre
        else:
            total = pre + post
        return PASS if total >= minimum else FAIL

    def bind(today: date) -> Check:
        return check

    required = f">= {_fmt(minimum)} % (pre- + post-consumer)"

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        pre = f.recycled_pre_consumer_pct
        post = f.recycled_post_consumer_pct
        if pre is None and post is None:
            return "not declared", required, "no recycled content is declared"
        total = (pre or Decimal(0)) + (post or Decimal(0))
        measured = f"{_fmt(total)} % (pre {_fmt(pre or Decimal(0))} + post {_fmt(post or Decimal(0))})"
        verdict = "meets" if outcome == PASS else "is below"
        return measured, required, f"recycled content {_fmt(total)} % {verdict} {_fmt(minimum)} %"

    return bind, explain


def _compile_carbon_intensity_max(p: CarbonIntensityMax) -> tuple[Binder, Explainer]:
    # Index every spelling once so the per-receipt lookup is a single dict.get.
    limits: dict[str, Decimal] = {}
    for symbol, limit in p.thresholds:
        for spelling in (symbol, symbol.upper(), symbol.lower(), symbol.capitalize()):
            limits[spelling] = limit
    default = p.default
    get = limits.get

    def check(f: ReceiptFacts) -> str:
        limit = get(f.metal, default)
        if limit is None:
            return NOT_APPLICABLE
        fp = f.footprint_kgco2e_per_kg
        if fp is None:
            return FAIL
        return PASS if fp <= limit else FAIL

    def bind(today: date) -> Check:
        return check

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        limit = get(f.metal, default)
        fp = f.footprint_kgco2e_per_kg
        measured = "not declared" if fp is None else f"{_fmt(fp)} kgCO2e/kg"
        if limit is None:
            return measured, "no threshold for this metal", f"no carbon-intensity threshold for {f.metal}"
        required = f"<= {_fmt(limit)} kgCO2e/kg for {f.metal}"
        if fp is None:
            return measured, required, "no carbon footprint is declared"
        verdict = "within" if outcome == PASS else "above"
        return measured, required, f"carbon intensity {_fmt(fp)} kgCO2e/kg is {verdict} {_fmt(limit)}"

    return bind, explain


def _compile_smelter_conformant(p: SmelterConformant) -> tuple[Binder, Explainer]:
    conformant = p.conformant  # the loader admits only well-formed ids, so membership implies format

    def check(f: ReceiptFacts) -> str:
        return PASS if f.origin_smelter_id in conformant else FAIL

    def bind(today: date) -> Check:
        return check

    source = f" ({p.list_file})" if p.list_file else ""
    required = f"on the conformant smelter list{source}"

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        sid = f.origin_smelter_id
        if sid is None:
            return "not declared", required, "no origin smelter is declared"
        if not SMELTER_ID_RE.fullmatch(sid):
            return sid, required, f"smelter id {sid!r} is not an RMI id (CID + 6 digits)"
        if outcome == FAIL:
            return sid, required, f"smelter {sid} is not on the conformant list"
        return sid, required, f"smelter {sid} is conformant"

    return bind, explain


def _compile_no_open_storage_incident(p: NoOpenStorageIncident) -> tuple[Binder, Explainer]:
    def check(f: ReceiptFacts) -> str:
        return FAIL if f.open_storage_incident else PASS

    def bind(today: date) -> Check:
        return check

    def explain(f: ReceiptFacts, today: date, outcome: str) -> tuple[str, str, str]:
        if f.open_storage_incident:
            return "open incident", "no open incident", "the warehouse has an open storage incident"
        return "none", "no open incident", "no open storage incident"

    return bind, explain


_COMPILERS: Final[dict[str, Callable[[Any], tuple[Binder, Explainer]]]] = {
    "assay_max_age": _compile_assay_max_age,
    "footprint_declared_verified": _compile_footprint_declared_verified,
    "recycled_content_min": _compile_recycled_content_min,
    "carbon_intensity_max": _compile_carbon_intensity_max,
    "smelter_conformant": _compile_smelter_conformant,
    "no_open_storage_incident": _compile_no_open_storage_incident,
}


def _compile_cbam(policy: CbamPolicy) -> Callable[[ReceiptFacts], tuple[Decimal, Decimal, bool]]:
    low_per_kg = policy.eur_per_tonne_low / KG_PER_TONNE
    high_per_kg = policy.eur_per_tonne_high / KG_PER_TONNE
    recognised = policy.recognised_standards
    matches = _standard_matcher(recognised)
    zero = Decimal("0.00")

    def estimate(f: ReceiptFacts) -> tuple[Decimal, Decimal, bool]:
        if (
            f.footprint_kgco2e_per_kg is not None
            and f.footprint_verified
            and (not recognised or matches(f.footprint_verification_standard))
        ):
            return zero, zero, True
        q = f.quantity_kg
        return (
            (q * low_per_kg).quantize(CENT, ROUND_HALF_UP),
            (q * high_per_kg).quantize(CENT, ROUND_HALF_UP),
            False,
        )

    return estimate


@dataclass(frozen=True, slots=True)
class CompiledPack:
    """A pack turned into closures once, so each receipt costs a few function calls."""

    pack: RulePack
    rule_ids: tuple[str, ...]
    binders: tuple[Binder, ...]
    explainers: tuple[Explainer, ...]
    block_positions: tuple[int, ...]
    cbam: Callable[[ReceiptFacts], tuple[Decimal, Decimal, bool]] | None

    def bind(self, now: datetime) -> tuple[Check, ...]:
        return tuple(bind(_today(now)) for bind in self.binders)


def compile_pack(pack: RulePack) -> CompiledPack:
    binders: list[Binder] = []
    explainers: list[Explainer] = []
    for rule in pack.rules:
        bind, explain = _COMPILERS[rule.kind](rule.params)
        binders.append(bind)
        explainers.append(explain)
    return CompiledPack(
        pack=pack,
        rule_ids=tuple(r.id for r in pack.rules),
        binders=tuple(binders),
        explainers=tuple(explainers),
        block_positions=tuple(i for i, r in enumerate(pack.rules) if r.severity == SEVERITY_BLOCK),
        cbam=None if pack.cbam is None else _compile_cbam(pack.cbam),
    )


def _today(now: datetime) -> date:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.date()


def _overall(outcomes: tuple[str, ...], block_positions: tuple[int, ...]) -> str:
    if FAIL not in outcomes:
        return PASS
    for i in block_positions:
        if outcomes[i] == FAIL:
            return FAIL
    return WARN


# --------------------------------------------------------------------------- evaluating


def evaluate(facts: ReceiptFacts, pack: RulePack | CompiledPack, *, now: datetime) -> PackResult:
    """Evaluate one receipt with a message per rule. For many receipts use `evaluate_many`.

    Overall: "fail" if a block rule fails, "warn" if only warn rules fail, else "pass"
    (not_applicable fails nothing). The label is earned only when every rule passed: a label is
    a positive claim, and a rule that could not be applied has proved nothing.
    """
    compiled = pack if isinstance(pack, CompiledPack) else compile_pack(pack)
    today = _today(now)
    checks = compiled.bind(now)
    rule_results = []
    outcomes = []
    for rule, check, explain in zip(compiled.pack.rules, checks, compiled.explainers, strict=True):
        outcome = check(facts)
        measured, required, message = explain(facts, today, outcome)
        outcomes.append(outcome)
        rule_results.append(
            RuleResult(
                rule_id=rule.id,
                kind=rule.kind,
                severity=rule.severity,
                outcome=outcome,
                measured=measured,
                required=required,
                message=message,
            )
        )
    overall = _overall(tuple(outcomes), compiled.block_positions)
    every_rule_passed = all(o == PASS for o in outcomes)
    cbam_estimate = None
    if compiled.cbam is not None:
        policy = compiled.pack.cbam
        assert policy is not None
        low, high, certified = compiled.cbam(facts)
        basis = (
            "recognised carbon certification: no CBAM cost expected"
            if certified
            else f"{_fmt(policy.eur_per_tonne_low)}-{_fmt(policy.eur_per_tonne_high)} EUR/t "
            f"x {_fmt(facts.quantity_kg / KG_PER_TONNE)} t, no recognised carbon certification"
        )
        cbam_estimate = CbamEstimate(eur_low=low, eur_high=high, certified=certified, basis=basis)
    return PackResult(
        receipt_number=facts.receipt_number,
        pack_id=compiled.pack.id,
        pack_version=compiled.pack.version,
        pack_hash=compiled.pack.content_hash,
        outcome=overall,
        label=compiled.pack.label if every_rule_passed else None,
        rules=tuple(rule_results),
        cbam=cbam_estimate,
        evaluated_at=now,
    )


def compact_evaluator(compiled: CompiledPack, now: datetime) -> Callable[[ReceiptFacts], CompactResult]:
    """One receipt at a time what `evaluate_many` does for a stream (same semantics, `now` bound once): for
    callers that take each receipt through several packs before the next."""
    checks = compiled.bind(now)
    all_pass = (PASS,) * len(checks)
    block_positions = compiled.block_positions
    label = compiled.pack.label
    cbam = compiled.cbam

    def judge(f: ReceiptFacts) -> CompactResult:
        outcomes = tuple([check(f) for check in checks])
        if outcomes == all_pass:
            overall = PASS
            earned = label
        else:
            overall = _overall(outcomes, block_positions)
            earned = None
        if cbam is None:
            return CompactResult(f.receipt_number, overall, outcomes, earned, None, None)
        low, high, _ = cbam(f)
        return CompactResult(f.receipt_number, overall, outcomes, earned, low, high)

    return judge


def evaluate_many(
    facts_iterable: Iterable[ReceiptFacts], compiled: CompiledPack, now: datetime
) -> Iterator[CompactResult]:
    """Evaluate receipts lazily, one `CompactResult` each, with the same semantics as `evaluate`.

    Outcomes only: call `evaluate` for the (few) receipts whose messages you want to show.
    """
    judge = compact_evaluator(compiled, now)
    for f in facts_iterable:
        yield judge(f)
