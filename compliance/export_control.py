"""Export-control decisions for controlled minor metals (pure; the list is data/export_controls.yaml).

Destination-specific measures (e.g. bans on named countries) are not modelled: officers decide those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import yaml

EXPORT_CONTROLS_FILE: Final = Path(__file__).resolve().parent / "data" / "export_controls.yaml"
_COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")
_METAL_RE: Final = re.compile(r"[A-Z][a-z]?")


class ExportControlDataError(ValueError):
    """The export-control data file is malformed."""


@dataclass(frozen=True, slots=True)
class Control:
    jurisdiction: str  # ISO code of the state imposing the control
    reference: str  # legal instrument, e.g. "MOFCOM/GAC Announcement No. 23 of 2023"
    since: date


@dataclass(frozen=True, slots=True)
class MetalControls:
    symbol: str
    name: str
    export_controlled: bool
    controls: tuple[Control, ...]

    def in_force(self, on: date | None) -> tuple[Control, ...]:
        if not self.export_controlled:
            return ()
        return tuple(c for c in self.controls if on is None or c.since <= on)


@dataclass(frozen=True, slots=True)
class ExportControlList:
    metals: dict[str, MetalControls]  # by casefolded symbol
    enforce_in: frozenset[str] | None  # warehouse countries where the platform enforces; None: all
    source: str

    def for_metal(self, metal: str) -> MetalControls | None:
        return self.metals.get(metal.strip().casefold())


@dataclass(frozen=True, slots=True)
class ExportDecision:
    """A yes/no with the reason to show the member and the officer; truthy when required."""

    required: bool
    reason: str
    references: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.required


def _fail(source: str, where: str, problem: str) -> ExportControlDataError:
    return ExportControlDataError(f"{source}: {where}: {problem}")


def _parse(data: Any, source: str) -> ExportControlList:
    if not isinstance(data, dict):
        raise ExportControlDataError(f"{source}: top level must be a mapping")
    unknown = set(data) - {"version", "enforce_in", "metals"}
    if unknown:
        raise _fail(source, "top level", f"unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    enforce = data.get("enforce_in", "*")
    enforce_in: frozenset[str] | None
    if enforce == "*":
        enforce_in = None
    elif isinstance(enforce, list) and all(isinstance(c, str) and _COUNTRY_RE.fullmatch(c) for c in enforce):
        enforce_in = frozenset(enforce)
    else:
        raise _fail(source, "enforce_in", 'must be "*" or a list of ISO 3166 alpha-2 codes')
    metals_data = data.get("metals")
    if not isinstance(metals_data, dict) or not metals_data:
        raise _fail(source, "metals", "must be a non-empty mapping of element symbols")
    metals: dict[str, MetalControls] = {}
    for symbol, item in metals_data.items():
        where = f"metals.{symbol}"
        if not isinstance(symbol, str) or not _METAL_RE.fullmatch(symbol):
            raise _fail(source, where, "key must be an element symbol such as Ga")
        if not isinstance(item, dict):
            raise _fail(source, where, "must be a mapping")
        name = item.get("name")
        controlled = item.get("export_controlled")
        if not isinstance(name, str) or not name:
            raise _fail(source, f"{where}.name", "must be a non-empty string")
        if not isinstance(controlled, bool):
            raise _fail(source, f"{where}.export_controlled", "must be true or false")
        controls: list[Control] = []
        for i, c in enumerate(item.get("controls") or []):
            at = f"{where}.controls[{i}]"
            if not isinstance(c, dict):
                raise _fail(source, at, "must be a mapping")
            jurisdiction, reference, since = c.get("jurisdiction"), c.get("reference"), c.get("since")
            if not isinstance(jurisdiction, str) or not _COUNTRY_RE.fullmatch(jurisdiction):
                raise _fail(source, f"{at}.jurisdiction", "must be an ISO 3166 alpha-2 code")
            if not isinstance(reference, str) or not reference:
                raise _fail(source, f"{at}.reference", "must be a non-empty string")
            if not isinstance(since, date) or isinstance(since, datetime):
                raise _fail(source, f"{at}.since", "must be a date (YYYY-MM-DD)")
            controls.append(Control(jurisdiction=jurisdiction, reference=reference, since=since))
        if controlled and not controls:
            raise _fail(source, where, "export_controlled metals must list at least one control")
        metals[symbol.casefold()] = MetalControls(
            symbol=symbol, name=name, export_controlled=controlled, controls=tuple(controls)
        )
    return ExportControlList(metals=metals, enforce_in=enforce_in, source=source)


def load_export_controls(path: str | Path = EXPORT_CONTROLS_FILE) -> ExportControlList:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportControlDataError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise ExportControlDataError(f"{path}:{line}: YAML syntax error: {exc.problem}") from None
    return _parse(data, str(path))


@lru_cache(maxsize=1)
def default_export_controls() -> ExportControlList:
    return load_export_controls()


def _country(value: str, what: str) -> str:
    code = value.strip().upper()
    if not _COUNTRY_RE.fullmatch(code):
        raise ValueError(f"{what} {value!r} is not an ISO 3166 alpha-2 country code")
    return code


def _controls_in_force(
    metal: str, warehouse_country: str, on: date | None, controls: ExportControlList | None
) -> tuple[MetalControls | None, tuple[Control, ...], str | None]:
    """(metal entry, controls that bind here, reason when none bind)."""
    listing = controls or default_export_controls()
    entry = listing.for_metal(metal)
    if entry is None or not entry.export_controlled:
        return entry, (), f"{metal} is not export-controlled"
    binding = entry.in_force(on)
    if not binding:
        first = min(c.since for c in entry.controls)
        return entry, (), f"{entry.symbol} controls take effect on {first.isoformat()}, after {on}"
    if listing.enforce_in is not None and warehouse_country not in listing.enforce_in:
        return entry, (), f"{entry.symbol} controls are not enforced for warehouses in {warehouse_country}"
    return entry, binding, None


def _cite(binding: tuple[Control, ...]) -> str:
    return "; ".join(f"{c.reference}, since {c.since.isoformat()}" for c in binding)


def end_use_declaration_decision(
    metal: str,
    buyer_country: str,
    warehouse_country: str,
    *,
    on: date | None = None,
    controls: ExportControlList | None = None,
) -> ExportDecision:
    """Does a buyer need an approved end-use declaration to buy this metal in this warehouse?

    Yes when the metal is controlled (and in force `on`, if given) and the buyer is outside the
    warehouse's country.
    """
    buyer = _country(buyer_country, "buyer_country")
    warehouse = _country(warehouse_country, "warehouse_country")
    entry, binding, reason = _controls_in_force(metal, warehouse, on, controls)
    if reason is not None or entry is None:
        return ExportDecision(False, reason or f"{metal} is not export-controlled")
    refs = tuple(c.reference for c in binding)
    if buyer == warehouse:
        return ExportDecision(False, f"buyer and warehouse are both in {buyer}: no cross-border sale", refs)
    return ExportDecision(
        True,
        f"{entry.symbol} ({entry.name}) is export-controlled ({_cite(binding)}); the buyer in {buyer} "
        f"is outside the warehouse country {warehouse}: an approved end-use declaration is required",
        refs,
    )


def export_licence_decision(
    metal: str,
    from_country: str,
    to_country: str,
    *,
    on: date | None = None,
    controls: ExportControlList | None = None,
) -> ExportDecision:
    """Does withdrawing this metal from `from_country` (the warehouse) to `to_country` need a licence?"""
    origin = _country(from_country, "from_country")
    destination = _country(to_country, "to_country")
    entry, binding, reason = _controls_in_force(metal, origin, on, controls)
    if reason is not None or entry is None:
        return ExportDecision(False, reason or f"{metal} is not export-controlled")
    refs = tuple(c.reference for c in binding)
    if origin == destination:
        return ExportDecision(False, f"delivery stays in {origin}: no export", refs)
    return ExportDecision(
        True,
        f"{entry.symbol} ({entry.name}) is export-controlled ({_cite(binding)}); delivery from {origin} "
        f"to {destination} needs an approved export licence",
        refs,
    )


def needs_end_use_declaration(
    metal: str,
    buyer_country: str,
    warehouse_country: str,
    *,
    on: date | None = None,
    controls: ExportControlList | None = None,
) -> bool:
    return end_use_declaration_decision(
        metal, buyer_country, warehouse_country, on=on, controls=controls
    ).required


def needs_export_licence(
    metal: str,
    from_country: str,
    to_country: str,
    *,
    on: date | None = None,
    controls: ExportControlList | None = None,
) -> bool:
    return export_licence_decision(metal, from_country, to_country, on=on, controls=controls).required


def is_export_controlled(metal: str, *, on: date | None = None, controls: ExportControlList | None = None) -> bool:
    entry = (controls or default_export_controls()).for_metal(metal)
    return entry is not None and bool(entry.in_force(on))
