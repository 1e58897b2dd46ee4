"""The deliverable catalogue (metals, forms, storage limits, grades and their thresholds)
loaded from the versioned `catalogue.json`, plus the reference tables the proof modules
share: the 118 element symbols, which of them are non-metals, ISO 3166 country codes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from receipts.errors import INVALID_CATALOGUE, UNKNOWN_ELEMENT, UNKNOWN_GRADE, UNKNOWN_METAL, ProofError
from receipts.units import (
    DECIMAL_PATTERN,
    KG_PATTERN,
    MASS_FRACTION,
    UNITS,
    unit_of,
)

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")

# --- reference tables -------------------------------------------------------------------

ELEMENTS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr",
    "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn",
    "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb",
    "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm",
    "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds",
    "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip
ELEMENT_SET: frozenset[str] = frozenset(ELEMENTS)

# Elements that do NOT count towards "total metallic impurities" and metals-basis purity:
# the interstitial gases (H, N, O), carbon, the halogens, P, S, Se and the noble gases.
# Metalloids (B, Si, Ge, As, Sb, Te) DO count as metallic: they are electrically active
# dopants in the semiconductor and optical uses these grades serve, so leaving them out
# would flatter a lot. The matrix metal itself is never an impurity of its own lot.
NON_METALS: frozenset[str] = frozenset(
    {"H", "He", "C", "N", "O", "F", "Ne", "P", "S", "Cl", "Ar", "Se", "Br", "Kr", "I", "Xe", "Rn"}
)

TOTAL_METALLIC = "total_metallic"
TOTAL_IMPURITIES = "total_impurities"
AGGREGATES: frozenset[str] = frozenset({TOTAL_METALLIC, TOTAL_IMPURITIES})

PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]*")

COUNTRIES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
    DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
    GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
    MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
    SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
    US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905 - a block of codes is easier to check against ISO 3166
)  # ISO 3166-1 alpha-2 officially assigned codes (249)


def check_element(symbol: object) -> str:
    """`symbol` if it is one of the 118 element symbols (case-sensitive: 'Co' is cobalt,
    'CO' is not an element); ProofError(unknown_element) otherwise."""
    if isinstance(symbol, str) and symbol in ELEMENT_SET:
        return symbol
    raise ProofError(UNKNOWN_ELEMENT, f"unknown element symbol {symbol!r}", {"element": str(symbol)})


def is_metallic(symbol: str) -> bool:
    return symbol not in NON_METALS


# --- typed catalogue ----------------------------------------------------------------------

ELEMENT = "element"
PROPERTY = "property"
AGGREGATE = "aggregate"
MAX = "max"
MIN = "min"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One rule of a grade: an element, a physical property or an aggregate (total
    metallic / total impurities) bounded above (max) or below (min), in its own unit."""

    kind: str
    subject: str
    limit: str
    value: Decimal
    unit: str
    strict: bool = False

    @property
    def rule(self) -> str:
        """Readable, stable rule text used in failure lists: 'O <= 5 ppb'."""
        op = {(MAX, False): "<=", (MAX, True): "<", (MIN, False): ">=", (MIN, True): ">"}[(self.limit, self.strict)]
        return f"{self.subject} {op} {format(self.value, 'f')} {self.unit}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.subject, "limit": self.limit}
        if self.strict:
            out["strict"] = True
        out["value"] = format(self.value, "f")
        out["unit"] = self.unit
        return out


@dataclass(frozen=True, slots=True)
class Grade:
    """A deliverable standard: what a lot must meet to back a standard receipt."""

    code: str
    metal: str
    name: str
    purity_min: Decimal
    rank: int
    forms: tuple[str, ...]
    thresholds: tuple[Threshold, ...]
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "metal": self.metal,
            "name": self.name,
            "purity_min": format(self.purity_min, "f"),
            "rank": self.rank,
            "forms": list(self.forms),
            "thresholds": [t.to_dict() for t in self.thresholds],
        }
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True)
class StorageLimits:
    min_temp_c: Decimal
    max_temp_c: Decimal
    max_humidity_pct: Decimal

    def breaches(self, *, temperature_c: Decimal, humidity_pct: Decimal) -> list[str]:
        """Which limits a storage reading breaks (empty when the reading is fine)."""
        found = []
        if temperature_c > self.max_temp_c:
            found.append(f"temperature {temperature_c} C above {self.max_temp_c} C")
        if temperature_c < self.min_temp_c:
            found.append(f"temperature {temperature_c} C below {self.min_temp_c} C")
        if humidity_pct > self.max_humidity_pct:
            found.append(f"humidity {humidity_pct} % above {self.max_humidity_pct} %")
        return found


@dataclass(frozen=True, slots=True)
class Metal:
    symbol: str
    name: str
    hs_code: str
    hs_code_by_form: Mapping[str, str]
    export_controlled: bool
    controlled_since: int | None
    control_reference: str | None
    package_kg: Decimal
    storage: StorageLimits
    forms: tuple[str, ...]
    storage_note: str | None = None

    def hs_code_for(self, form: str) -> str:
        """The customs heading for this metal in a given form (powders often differ)."""
        return self.hs_code_by_form.get(form, self.hs_code)


@dataclass(frozen=True)
class Catalogue:
    version: int
    metals: Mapping[str, Metal]
    grades: Mapping[str, Grade]
    _by_metal: dict[str, tuple[Grade, ...]] = field(default_factory=dict, repr=False, compare=False)

    def metal(self, symbol: str) -> Metal:
        found = self.metals.get(symbol)
        if found is None:
            raise ProofError(UNKNOWN_METAL, f"metal {symbol!r} is not in the catalogue", {"metal": str(symbol)})
        return found

    def grade(self, code: str) -> Grade:
        found = self.grades.get(code)
        if found is None:
            raise ProofError(UNKNOWN_GRADE, f"grade {code!r} is not in the catalogue", {"grade": str(code)})
        return found

    def grades_for(self, metal: str) -> tuple[Grade, ...]:
        """The metal's grades, best (highest rank) first."""
        cached = self._by_metal.get(metal)
        if cached is None:
            cached = tuple(sorted((g for g in self.grades.values() if g.metal == metal), key=lambda g: -g.rank))
            self._by_metal[metal] = cached
        return cached

    def grade_spec(self, code: str) -> dict[str, Any]:
        """The grade as embedded in a receipt bundle: its dict form plus the catalogue
        version it came from (both bound into the receipt's `issued` event)."""
        spec = self.grade(code).to_dict()
        spec["catalogue_version"] = self.version
        return spec


# --- parsing and validation ---------------------------------------------------------------------


class _Problems:
    """Collects every problem in a catalogue file so an editor sees them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def _decimal(value: Any, where: str, problems: _Problems, *, non_negative: bool = True) -> Decimal:
    if not isinstance(value, str) or not DECIMAL_PATTERN.fullmatch(value):
        problems.add(where, f"{value!r} is not a decimal string")
        return Decimal(0)
    amount = Decimal(value)
    if non_negative and amount < 0:
        problems.add(where, f"{value} is negative")
    return amount


def _text(value: Any, where: str, problems: _Problems) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.add(where, "must be a non-empty string")
        return ""
    return value


def _forms(value: Any, where: str, problems: _Problems) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(f, str) and f for f in value):
        problems.add(where, "must be a non-empty list of form names")
        return ()
    if len(set(value)) != len(value):
        problems.add(where, "lists a form twice")
    return tuple(value)


_THRESHOLD_KEYS = frozenset({ELEMENT, PROPERTY, AGGREGATE, "limit", "value", "unit", "strict"})
_GRADE_KEYS = frozenset(
    {"code", "metal", "name", "purity_min", "rank", "forms", "thresholds", "source", "catalogue_version"}
)
GRADE_CODE = re.compile(r"[A-Z]{1,2}-[0-9]N(?:5)?")


def _threshold(raw: Any, where: str, metal: str, problems: _Problems) -> Threshold | None:
    if not isinstance(raw, Mapping):
        problems.add(where, "must be an object")
        return None
    extra = set(raw) - _THRESHOLD_KEYS
    if extra:
        problems.add(where, f"unknown members {sorted(extra)}")
    kinds = [k for k in (ELEMENT, PROPERTY, AGGREGATE) if k in raw]
    if len(kinds) != 1:
        problems.add(where, "needs exactly one of element, property, aggregate")
        return None
    kind = kinds[0]
    subject = raw[kind]
    unit = raw.get("unit")
    if not isinstance(unit, str) or unit not in UNITS:
        problems.add(where, f"unknown unit {unit!r}")
        return None
    if unit_of(unit).symbol != unit:
        problems.add(where, f"write the unit as {unit_of(unit).symbol!r}, not the alias {unit!r}")
    dimension = unit_of(unit).dimension
    if kind == ELEMENT:
        if not isinstance(subject, str) or subject not in ELEMENT_SET:
            problems.add(where, f"unknown element {subject!r}")
            return None
        if subject == metal:
            problems.add(where, "the matrix metal cannot be its own impurity")
        if dimension != MASS_FRACTION:
            problems.add(where, f"element limits are mass fractions, not {unit}")
    elif kind == AGGREGATE:
        if not isinstance(subject, str) or subject not in AGGREGATES:
            problems.add(where, f"unknown aggregate {subject!r}; known: {sorted(AGGREGATES)}")
            return None
        if dimension != MASS_FRACTION:
            problems.add(where, f"aggregate limits are mass fractions, not {unit}")
    elif not isinstance(subject, str) or not PROPERTY_NAME.fullmatch(subject):
        problems.add(where, f"property name {subject!r} must be lower_snake_case")
        return None
    limit = raw.get("limit")
    if limit not in (MAX, MIN):
        problems.add(where, f"limit must be 'max' or 'min', not {limit!r}")
        return None
    strict = raw.get("strict", False)
    if not isinstance(strict, bool):
        problems.add(where, "strict must be true or false")
        strict = False
    value = _decimal(raw.get("value"), f"{where}.value", problems)
    return Threshold(kind=kind, subject=subject, limit=limit, value=value, unit=unit, strict=strict)


def _grade(raw: Any, where: str, problems: _Problems) -> Grade | None:
    if not isinstance(raw, Mapping):
        problems.add(where, "must be an object")
        return None
    extra = set(raw) - _GRADE_KEYS
    if extra:
        problems.add(where, f"unknown members {sorted(extra)}")
    code = _text(raw.get("code"), f"{where}.code", problems)
    if code and not GRADE_CODE.fullmatch(code):
        problems.add(f"{where}.code", f"{code!r} is not like 'GA-6N' or 'IN-5N5'")
    metal = raw.get("metal")
    if not isinstance(metal, str) or metal not in ELEMENT_SET:
        problems.add(f"{where}.metal", f"unknown element {metal!r}")
        metal = ""
    name = _text(raw.get("name"), f"{where}.name", problems)
    purity_min = _decimal(raw.get("purity_min"), f"{where}.purity_min", problems)
    if not Decimal(0) < purity_min <= Decimal(100):
        problems.add(f"{where}.purity_min", "must be in (0, 100]")
    rank = raw.get("rank")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        problems.add(f"{where}.rank", "must be a non-negative integer")
        rank = 0
    forms = _forms(raw.get("forms"), f"{where}.forms", problems)
    source = raw.get("source")
    if source is not None and not isinstance(source, str):
        problems.add(f"{where}.source", "must be a string")
        source = None
    raw_thresholds = raw.get("thresholds")
    thresholds: list[Threshold] = []
    if not isinstance(raw_thresholds, list):
        problems.add(f"{where}.thresholds", "must be a list")
    else:
        for i, item in enumerate(raw_thresholds):
            parsed = _threshold(item, f"{where}.thresholds[{i}]", metal, problems)
            if parsed is not None:
                thresholds.append(parsed)
        seen = [(t.kind, t.subject, t.limit) for t in thresholds]
        if len(set(seen)) != len(seen):
            problems.add(f"{where}.thresholds", "bounds the same subject the same way twice")
    version = raw.get("catalogue_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        problems.add(f"{where}.catalogue_version", "must be an integer")
    return Grade(
        code=code,
        metal=metal,
        name=name,
        purity_min=purity_min,
        rank=rank,
        forms=forms,
        thresholds=tuple(thresholds),
        source=source,
    )


def parse_grade(raw: Mapping[str, Any]) -> Grade:
    """A Grade from its dict form (a catalogue entry or a grade spec embedded in a
    bundle); ProofError(invalid_catalogue) listing every problem."""
    problems = _Problems()
    grade = _grade(raw, "grade", problems)
    if problems.items or grade is None:
        raise ProofError(INVALID_CATALOGUE, "; ".join(problems.items) or "invalid grade", {"problems": problems.items})
    return grade


def _metal(raw: Any, where: str, problems: _Problems) -> Metal | None:
    if not isinstance(raw, Mapping):
        problems.add(where, "must be an object")
        return None
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or symbol not in ELEMENT_SET:
        problems.add(f"{where}.symbol", f"unknown element {symbol!r}")
        return None
    where = f"metal {symbol}"
    name = _text(raw.get("name"), f"{where}.name", problems)
    hs_code = raw.get("hs_code")
    hs_pattern = re.compile(r"[0-9]{4}\.[0-9]{2}")
    if not isinstance(hs_code, str) or not hs_pattern.fullmatch(hs_code):
        problems.add(f"{where}.hs_code", f"{hs_code!r} is not an HS subheading like '8112.92'")
        hs_code = ""
    forms = _forms(raw.get("forms"), f"{where}.forms", problems)
    by_form = raw.get("hs_code_by_form", {})
    if not isinstance(by_form, Mapping):
        problems.add(f"{where}.hs_code_by_form", "must be an object")
        by_form = {}
    for form, code in by_form.items():
        if form not in forms:
            problems.add(f"{where}.hs_code_by_form", f"form {form!r} is not one of the metal's forms")
        if not isinstance(code, str) or not hs_pattern.fullmatch(code):
            problems.add(f"{where}.hs_code_by_form", f"{code!r} is not an HS subheading")
    controlled = raw.get("export_controlled")
    since = raw.get("controlled_since")
    reference = raw.get("control_reference")
    if not isinstance(controlled, bool):
        problems.add(f"{where}.export_controlled", "must be true or false")
        controlled = False
    if controlled:
        if not isinstance(since, int) or isinstance(since, bool) or not 1990 <= since <= 2100:
            problems.add(f"{where}.controlled_since", "a controlled metal needs the year control began")
        if not isinstance(reference, str) or not reference:
            problems.add(f"{where}.control_reference", "a controlled metal needs the control's reference")
    elif since is not None or reference is not None:
        problems.add(where, "an uncontrolled metal carries no controlled_since / control_reference")
    package = raw.get("package_kg")
    if not isinstance(package, str) or not KG_PATTERN.fullmatch(package) or Decimal(package) <= 0:
        problems.add(f"{where}.package_kg", "must be a positive kg quantity with 3 decimals")
        package = "0.000"
    storage_raw = raw.get("storage")
    if not isinstance(storage_raw, Mapping):
        problems.add(f"{where}.storage", "must be an object")
        storage_raw = {}
    storage = StorageLimits(
        min_temp_c=_decimal(storage_raw.get("min_temp_c"), f"{where}.storage.min_temp_c", problems, non_negative=False),
        max_temp_c=_decimal(storage_raw.get("max_temp_c"), f"{where}.storage.max_temp_c", problems, non_negative=False),
        max_humidity_pct=_decimal(storage_raw.get("max_humidity_pct"), f"{where}.storage.max_humidity_pct", problems),
    )
    if storage.min_temp_c >= storage.max_temp_c:
        problems.add(f"{where}.storage", "min_temp_c must be below max_temp_c")
    if storage.max_humidity_pct > 100:
        problems.add(f"{where}.storage", "max_humidity_pct must be at most 100")
    note = raw.get("storage_note")
    return Metal(
        symbol=symbol,
        name=name,
        hs_code=hs_code,
        hs_code_by_form=dict(by_form),
        export_controlled=controlled,
        controlled_since=since if controlled else None,
        control_reference=reference if controlled else None,
        package_kg=Decimal(package),
        storage=storage,
        forms=forms,
        storage_note=note if isinstance(note, str) else None,
    )


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """A validated Catalogue from the decoded JSON; ProofError(invalid_catalogue) with
    every problem in `details["problems"]` when anything is off."""
    problems = _Problems()
    if not isinstance(data, Mapping):
        raise ProofError(INVALID_CATALOGUE, "the catalogue must be a JSON object")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.add("version", "must be a positive integer")
        version = 0
    metals: dict[str, Metal] = {}
    for i, raw in enumerate(data.get("metals") or []):
        metal = _metal(raw, f"metals[{i}]", problems)
        if metal is None:
            continue
        if metal.symbol in metals:
            problems.add(f"metal {metal.symbol}", "listed twice")
        metals[metal.symbol] = metal
    if not metals:
        problems.add("metals", "the catalogue lists no metals")
    grades: dict[str, Grade] = {}
    ranks: dict[tuple[str, int], str] = {}
    for i, raw in enumerate(data.get("grades") or []):
        grade = _grade(raw, f"grades[{i}]", problems)
        if grade is None:
            continue
        where = f"grade {grade.code}"
        if grade.code in grades:
            problems.add(where, "listed twice")
        if grade.metal not in metals:
            problems.add(where, f"metal {grade.metal!r} is not in the catalogue")
        else:
            stray = set(grade.forms) - set(metals[grade.metal].forms)
            if stray:
                problems.add(where, f"forms {sorted(stray)} are not forms of {grade.metal}")
        if (grade.metal, grade.rank) in ranks:
            problems.add(where, f"rank {grade.rank} is also used by {ranks[(grade.metal, grade.rank)]}")
        ranks[(grade.metal, grade.rank)] = grade.code
        grades[grade.code] = grade
    if problems.items:
        raise ProofError(
            INVALID_CATALOGUE,
            f"catalogue has {len(problems.items)} problem(s): {problems.items[0]}",
            {"problems": problems.items},
        )
    return Catalogue(version=version, metals=metals, grades=grades)


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    """The catalogue from `path`, or the repo's catalogue.json (parsed once, cached)."""
    if path is None:
        return _default_catalogue()
    with open(path, encoding="utf-8") as handle:
        return parse_catalogue(json.load(handle))


@lru_cache(maxsize=1)
def _default_catalogue() -> Catalogue:
    with open(CATALOGUE_PATH, encoding="utf-8") as handle:
        return parse_catalogue(json.load(handle))
