"""Loads and validates trading/pricing_config.yaml into frozen dataclasses: per-metal
reference-price, band and forward settings, factor specifications and the spot-index method."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

DEFAULT_CONFIG_PATH = Path(__file__).with_name("pricing_config.yaml")
COMPONENTS: tuple[str, ...] = ("trades", "book", "model")


class PricingConfigError(ValueError):
    """The pricing configuration is invalid; `errors` lists every problem with its path."""

    code = "pricing_config_invalid"

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        where = f" ({source})" if source else ""
        super().__init__(f"invalid pricing config{where}:\n  - " + "\n  - ".join(errors))


@dataclass(frozen=True, slots=True)
class FactorSpec:
    """An external series the factor model may use."""

    factor_id: str
    unit: str
    description: str
    # A newer observation arriving later than this after the previous one is a "gap" warning.
    expected_interval: dt.timedelta
    # When the latest observation is older than this, the factor is stale and left out of the model.
    max_age: dt.timedelta
    # Every series we know of (prices, GW, %) is non-negative; a spread-like series would opt in.
    allow_negative: bool = False


@dataclass(frozen=True, slots=True)
class ComponentWeights:
    trades: Decimal
    book: Decimal
    model: Decimal

    def as_dict(self) -> dict[str, Decimal]:
        return {"trades": self.trades, "book": self.book, "model": self.model}


@dataclass(frozen=True, slots=True)
class BandConfig:
    base_pct: Decimal  # half-width of the band around the reference, in percent
    vol_threshold_pct: Decimal  # 30-day realised volatility (percent) above which the band widens
    widen_factor: Decimal  # base_pct is multiplied by this when volatility is above the threshold
    vol_lookback_days: int  # number of daily returns the volatility is measured over


@dataclass(frozen=True, slots=True)
class UtilisationRule:
    """A forward premium that switches on when a utilisation factor runs hot for whole weeks.

    Fires when each of the `consecutive_weeks` most recent complete ISO weeks (Monday 00:00 UTC
    to Monday 00:00 UTC, the week containing "now" excluded) has a mean observed value strictly
    above `threshold_pct`; a week without observations breaks the run. When it fires, every
    forward tenor of at most `max_tenor_days` is raised by `premium_pct` percent.
    """

    factor: str
    threshold_pct: Decimal
    consecutive_weeks: int
    premium_pct: Decimal
    max_tenor_days: int


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    drift_pct_per_year: Decimal  # continuously compounded annual drift, percent
    tenors_days: tuple[int, ...]
    utilisation_rules: tuple[UtilisationRule, ...] = ()


@dataclass(frozen=True, slots=True)
class MetalPricingConfig:
    symbol: str
    name: str
    price_quantum: Decimal  # reference and forward prices are rounded (half-even) to this
    trade_window: dt.timedelta  # only trades younger than this feed the decayed VWAP
    half_life: dt.timedelta
    weights: ComponentWeights
    max_spread_pct: Decimal  # book mid is ignored when (ask - bid) / mid exceeds this, percent
    sensitivities: Mapping[str, Decimal]  # factor id -> beta (elasticity on log changes)
    factors: Mapping[str, FactorSpec]  # specs of every factor this metal's model and rules read
    band: BandConfig
    forward: ForwardConfig


@dataclass(frozen=True, slots=True)
class IndexMethod:
    """The published spot-index method (see trading/METHODOLOGY.md); defaults are version IDX-1."""

    version: str = "IDX-1"
    outlier_pct: Decimal = Decimal("10")  # trades further than this from the median are excluded
    min_trades: int = 5
    min_sellers: int = 3
    price_quantum: Decimal = Decimal("0.01")
    window_close_local: dt.time = dt.time(16, 0)
    utc_offset: dt.timedelta = dt.timedelta(hours=8)  # China Standard Time has no DST
    publication_delay: dt.timedelta = dt.timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class PricingConfig:
    version: int
    factors: Mapping[str, FactorSpec]
    metals: Mapping[str, MetalPricingConfig]
    index: IndexMethod

    def metal(self, key: str) -> MetalPricingConfig:
        """Look a metal up by symbol or name, case-insensitively ("GA", "Ga", "gallium")."""
        wanted = key.strip().lower()
        for metal in self.metals.values():
            if wanted in (metal.symbol.lower(), metal.name.lower()):
                return metal
        raise KeyError(f"no pricing config for metal {key!r}; known: {', '.join(self.metals)}")


def load_pricing_config(path: str | Path | None = None) -> PricingConfig:
    """Read and validate a pricing config file (YAML; JSON is valid YAML too)."""
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PricingConfigError([f"not valid YAML: {exc}"], str(source)) from exc
    return parse_pricing_config(raw, source=str(source))


@lru_cache(maxsize=1)
def default_pricing_config() -> PricingConfig:
    """The repository's config, parsed once per process (it is immutable)."""
    return load_pricing_config(DEFAULT_CONFIG_PATH)


def parse_pricing_config(raw: Any, *, source: str = "") -> PricingConfig:
    """Validate an already-decoded mapping; raises PricingConfigError listing every problem."""
    v = _Validator()
    root = v.mapping(raw, "<root>")
    if root is None:
        raise PricingConfigError(v.errors, source)
    v.keys(root, "<root>", required={"version", "factors", "metals", "index"}, optional={"defaults"})
    version = v.integer(root.get("version"), "version", minimum=1) or 0

    factors: dict[str, FactorSpec] = {}
    for factor_id, block in (v.mapping(root.get("factors"), "factors") or {}).items():
        spec = _parse_factor(v, str(factor_id), block)
        if spec is not None:
            factors[spec.factor_id] = spec

    index = _parse_index(v, root.get("index"))

    defaults = v.mapping(root.get("defaults", {}), "defaults") or {}
    metals: dict[str, MetalPricingConfig] = {}
    for symbol, block in (v.mapping(root.get("metals"), "metals") or {}).items():
        merged = _merge(defaults, v.mapping(block, f"metals.{symbol}") or {})
        metal = _parse_metal(v, str(symbol), merged, factors)
        if metal is not None:
            metals[metal.symbol] = metal
    if not metals and not v.errors:
        v.error("metals", "at least one metal is required")

    if v.errors:
        raise PricingConfigError(v.errors, source)
    return PricingConfig(
        version=version,
        factors=MappingProxyType(factors),
        metals=MappingProxyType(metals),
        index=index,
    )


def _merge(defaults: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
    # One level deep is enough: defaults carry whole sub-blocks (weights, band, forward) whose
    # keys a metal overrides individually.
    merged: dict[str, Any] = dict(defaults)
    for key, value in block.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def _parse_factor(v: _Validator, factor_id: str, block: Any) -> FactorSpec | None:
    path = f"factors.{factor_id}"
    m = v.mapping(block, path)
    if m is None:
        return None
    v.keys(
        m,
        path,
        required={"unit", "expected_interval_days", "max_age_days"},
        optional={"description", "allow_negative"},
    )
    unit = v.text(m.get("unit"), f"{path}.unit")
    interval = v.decimal(m.get("expected_interval_days"), f"{path}.expected_interval_days", above=Decimal(0))
    max_age = v.decimal(m.get("max_age_days"), f"{path}.max_age_days", above=Decimal(0))
    allow_negative = m.get("allow_negative", False)
    if not isinstance(allow_negative, bool):
        v.error(f"{path}.allow_negative", f"must be true or false, got {allow_negative!r}")
    description = m.get("description", "")
    if unit is None or interval is None or max_age is None:
        return None
    return FactorSpec(
        factor_id=factor_id,
        unit=unit,
        description=str(description),
        expected_interval=dt.timedelta(days=float(interval)),
        max_age=dt.timedelta(days=float(max_age)),
        allow_negative=bool(allow_negative),
    )


def _parse_index(v: _Validator, block: Any) -> IndexMethod:
    path = "index"
    m = v.mapping(block, path)
    if m is None:
        return IndexMethod()
    fields = {
        "method_version",
        "outlier_pct",
        "min_trades",
        "min_sellers",
        "price_quantum",
        "window_close_local",
        "utc_offset_hours",
        "publication_delay_minutes",
    }
    v.keys(m, path, required=fields, optional=set())
    version = v.text(m.get("method_version"), f"{path}.method_version")
    outlier = v.decimal(m.get("outlier_pct"), f"{path}.outlier_pct", above=Decimal(0), at_most=Decimal(100))
    min_trades = v.integer(m.get("min_trades"), f"{path}.min_trades", minimum=1)
    min_sellers = v.integer(m.get("min_sellers"), f"{path}.min_sellers", minimum=1)
    quantum = v.decimal(m.get("price_quantum"), f"{path}.price_quantum", above=Decimal(0))
    close = v.clock(m.get("window_close_local"), f"{path}.window_close_local")
    offset = v.decimal(
        m.get("utc_offset_hours"), f"{path}.utc_offset_hours", at_least=Decimal(-12), at_most=Decimal(14)
    )
    delay = v.integer(m.get("publication_delay_minutes"), f"{path}.publication_delay_minutes", minimum=0)
    if None in (version, outlier, min_trades, min_sellers, quantum, close, offset, delay):
        return IndexMethod()
    assert version is not None and outlier is not None and min_trades is not None  # narrowed above
    assert min_sellers is not None and quantum is not None and close is not None
    assert offset is not None and delay is not None
    return IndexMethod(
        version=version,
        outlier_pct=outlier,
        min_trades=min_trades,
        min_sellers=min_sellers,
        price_quantum=quantum,
        window_close_local=close,
        utc_offset=dt.timedelta(hours=float(offset)),
        publication_delay=dt.timedelta(minutes=delay),
    )


_METAL_KEYS = {
    "name",
    "price_quantum",
    "trade_window_hours",
    "half_life_hours",
    "max_spread_pct",
    "weights",
    "sensitivities",
    "band",
    "forward",
}


def _parse_metal(
    v: _Validator, symbol: str, m: Mapping[str, Any], factors: Mapping[str, FactorSpec]
) -> MetalPricingConfig | None:
    path = f"metals.{symbol}"
    errors_before = len(v.errors)
    v.keys(m, path, required=_METAL_KEYS - {"sensitivities"}, optional={"sensitivities"})
    name = v.text(m.get("name"), f"{path}.name")
    quantum = v.decimal(m.get("price_quantum"), f"{path}.price_quantum", above=Decimal(0))
    window = v.decimal(m.get("trade_window_hours"), f"{path}.trade_window_hours", above=Decimal(0))
    half_life = v.decimal(m.get("half_life_hours"), f"{path}.half_life_hours", above=Decimal(0))
    spread = v.decimal(m.get("max_spread_pct"), f"{path}.max_spread_pct", above=Decimal(0))

    weights: ComponentWeights | None = None
    wm = v.mapping(m.get("weights"), f"{path}.weights")
    if wm is not None:
        v.keys(wm, f"{path}.weights", required=set(COMPONENTS), optional=set())
        parsed = {c: v.decimal(wm.get(c), f"{path}.weights.{c}", at_least=Decimal(0)) for c in COMPONENTS}
        if all(w is not None for w in parsed.values()):
            if sum(w for w in parsed.values() if w is not None) <= 0:
                v.error(f"{path}.weights", "at least one weight must be positive")
            else:
                weights = ComponentWeights(**{c: w for c, w in parsed.items() if w is not None})

    sensitivities: dict[str, Decimal] = {}
    for factor_id, beta in (
        v.mapping(m.get("sensitivities", {}) or {}, f"{path}.sensitivities") or {}
    ).items():
        fpath = f"{path}.sensitivities.{factor_id}"
        if factor_id not in factors:
            v.error(
                fpath,
                f"unknown factor {factor_id!r}; declare it under 'factors' (known: "
                f"{', '.join(sorted(factors)) or 'none'})",
            )
            continue
        value = v.decimal(beta, fpath)
        if value is not None:
            sensitivities[str(factor_id)] = value

    band = _parse_band(v, f"{path}.band", m.get("band"))
    forward = _parse_forward(v, f"{path}.forward", m.get("forward"), factors)

    if len(v.errors) > errors_before:
        return None
    assert name is not None and quantum is not None and window is not None and half_life is not None
    assert spread is not None and weights is not None and band is not None and forward is not None
    used = set(sensitivities) | {rule.factor for rule in forward.utilisation_rules}
    return MetalPricingConfig(
        symbol=symbol,
        name=name,
        price_quantum=quantum,
        trade_window=dt.timedelta(hours=float(window)),
        half_life=dt.timedelta(hours=float(half_life)),
        weights=weights,
        max_spread_pct=spread,
        sensitivities=MappingProxyType(sensitivities),
        factors=MappingProxyType({f: factors[f] for f in sorted(used)}),
        band=band,
        forward=forward,
    )


def _parse_band(v: _Validator, path: str, block: Any) -> BandConfig | None:
    m = v.mapping(block, path)
    if m is None:
        return None
    v.keys(
        m,
        path,
        required={"base_pct", "vol_threshold_pct", "widen_factor", "vol_lookback_days"},
        optional=set(),
    )
    base = v.decimal(m.get("base_pct"), f"{path}.base_pct", above=Decimal(0), below=Decimal(100))
    threshold = v.decimal(m.get("vol_threshold_pct"), f"{path}.vol_threshold_pct", above=Decimal(0))
    widen = v.decimal(m.get("widen_factor"), f"{path}.widen_factor", at_least=Decimal(1))
    lookback = v.integer(m.get("vol_lookback_days"), f"{path}.vol_lookback_days", minimum=2)
    if base is not None and widen is not None and base * widen >= 100:
        v.error(
            path, f"base_pct x widen_factor = {base * widen} % would let the band reach zero; keep it < 100"
        )
        return None
    if base is None or threshold is None or widen is None or lookback is None:
        return None
    return BandConfig(
        base_pct=base, vol_threshold_pct=threshold, widen_factor=widen, vol_lookback_days=lookback
    )


def _parse_forward(
    v: _Validator, path: str, block: Any, factors: Mapping[str, FactorSpec]
) -> ForwardConfig | None:
    m = v.mapping(block, path)
    if m is None:
        return None
    v.keys(m, path, required={"drift_pct_per_year", "tenors_days"}, optional={"utilisation_rules"})
    drift = v.decimal(
        m.get("drift_pct_per_year"),
        f"{path}.drift_pct_per_year",
        at_least=Decimal(-100),
        at_most=Decimal(100),
    )
    tenors: list[int] = []
    raw_tenors = m.get("tenors_days")
    if not isinstance(raw_tenors, list) or not raw_tenors:
        v.error(f"{path}.tenors_days", f"must be a non-empty list of days, got {raw_tenors!r}")
    else:
        for i, t in enumerate(raw_tenors):
            days = v.integer(t, f"{path}.tenors_days[{i}]", minimum=1)
            if days is not None:
                tenors.append(days)
        if len(set(tenors)) != len(tenors):
            v.error(f"{path}.tenors_days", f"tenors repeat: {raw_tenors!r}")
    rules: list[UtilisationRule] = []
    raw_rules = m.get("utilisation_rules", []) or []
    if not isinstance(raw_rules, list):
        v.error(f"{path}.utilisation_rules", "must be a list")
        raw_rules = []
    for i, raw_rule in enumerate(raw_rules):
        rule = _parse_rule(v, f"{path}.utilisation_rules[{i}]", raw_rule, factors)
        if rule is not None:
            rules.append(rule)
    if drift is None or not tenors:
        return None
    return ForwardConfig(
        drift_pct_per_year=drift, tenors_days=tuple(sorted(tenors)), utilisation_rules=tuple(rules)
    )


def _parse_rule(
    v: _Validator, path: str, block: Any, factors: Mapping[str, FactorSpec]
) -> UtilisationRule | None:
    m = v.mapping(block, path)
    if m is None:
        return None
    v.keys(
        m,
        path,
        required={"factor", "threshold_pct", "consecutive_weeks", "premium_pct", "max_tenor_days"},
        optional={"description"},
    )
    factor = v.text(m.get("factor"), f"{path}.factor")
    if factor is not None and factor not in factors:
        v.error(f"{path}.factor", f"unknown factor {factor!r}")
        factor = None
    threshold = v.decimal(
        m.get("threshold_pct"), f"{path}.threshold_pct", at_least=Decimal(0), at_most=Decimal(100)
    )
    weeks = v.integer(m.get("consecutive_weeks"), f"{path}.consecutive_weeks", minimum=1)
    premium = v.decimal(m.get("premium_pct"), f"{path}.premium_pct", at_least=Decimal(0), below=Decimal(100))
    max_tenor = v.integer(m.get("max_tenor_days"), f"{path}.max_tenor_days", minimum=1)
    if factor is None or threshold is None or weeks is None or premium is None or max_tenor is None:
        return None
    return UtilisationRule(
        factor=factor,
        threshold_pct=threshold,
        consecutive_weeks=weeks,
        premium_pct=premium,
        max_tenor_days=max_tenor,
    )


class _Validator:
    """Collects every error with its dotted path so one run reports all problems at once."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str) -> Mapping[str, Any] | None:
        if value is None:
            self.error(path, "is required")
            return None
        if not isinstance(value, Mapping):
            self.error(path, f"must be a mapping, got {type(value).__name__}")
            return None
        return value

    def keys(self, m: Mapping[str, Any], path: str, *, required: set[str], optional: set[str]) -> None:
        for missing in sorted(required - set(m)):
            self.error(f"{path}.{missing}", "is required")
        # Unknown keys are errors: a typo such as "half_lfe_hours" must not silently fall back.
        for extra in sorted(set(m) - required - optional, key=str):
            self.error(f"{path}.{extra}", f"unknown key (allowed: {', '.join(sorted(required | optional))})")

    def text(self, value: Any, path: str) -> str | None:
        if value is None:
            return None  # "is required" already reported by keys()
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"must be a non-empty string, got {value!r}")
            return None
        return value.strip()

    def decimal(
        self,
        value: Any,
        path: str,
        *,
        above: Decimal | None = None,
        below: Decimal | None = None,
        at_least: Decimal | None = None,
        at_most: Decimal | None = None,
    ) -> Decimal | None:
        if value is None:
            return None
        # bool is an int subclass; "true" as a weight is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            self.error(path, f"must be a number, got {value!r}")
            return None
        try:
            # str() first so YAML's float 0.3 becomes Decimal("0.3"), not the binary 0.29999...
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.error(path, f"must be a number, got {value!r}")
            return None
        if not number.is_finite():
            self.error(path, f"must be finite, got {value!r}")
            return None
        if above is not None and not number > above:
            self.error(path, f"must be > {above}, got {number}")
        elif below is not None and not number < below:
            self.error(path, f"must be < {below}, got {number}")
        elif at_least is not None and not number >= at_least:
            self.error(path, f"must be >= {at_least}, got {number}")
        elif at_most is not None and not number <= at_most:
            self.error(path, f"must be <= {at_most}, got {number}")
        else:
            return number
        return None

    def integer(self, value: Any, path: str, *, minimum: int | None = None) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be a whole number, got {value!r}")
            return None
        if minimum is not None and value < minimum:
            self.error(path, f"must be >= {minimum}, got {value}")
            return None
        return value

    def clock(self, value: Any, path: str) -> dt.time | None:
        if value is None:
            return None
        try:
            return dt.time.fromisoformat(str(value))
        except ValueError:
            self.error(path, f"must be a time of day HH:MM, got {value!r}")
            return None
