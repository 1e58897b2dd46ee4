"""Pure pricing (no Django, no database): decayed trade VWAP, book mid, factor model, the blended
reference price, realised volatility and price bands, forward curve, daily spot index, candles.

Numbers: every price in and out is a Decimal, quantized half-even to the metal's (or index's)
price quantum. Logs and exponentials use Decimal.ln()/exp() in a 34-digit context. The one
float is the dimensionless decay weight 2 ** (-age / half_life) of the trade VWAP: weights are
renormalised, so its 1e-16 relative error cannot reach a 0.0001 quantum.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from types import MappingProxyType
from typing import Literal, NamedTuple

from trading.factors import FactorObservation
from trading.pricing_config import (
    COMPONENTS,
    IndexMethod,
    MetalPricingConfig,
    UtilisationRule,
)

__all__ = [
    "PRICE_QUANTUM",
    "REFERENCE_METHOD_VERSION",
    "Candle",
    "ComponentResult",
    "ExcludedTrade",
    "ForwardCurve",
    "IndexMethod",
    "IndexResult",
    "IndexTrade",
    "NoAssessedReference",
    "PricedTrade",
    "PricingReason",
    "ReferenceResult",
    "RuleCheck",
    "TradeSummary",
    "book_mid",
    "bucket_start",
    "daily_index",
    "decayed_vwap",
    "factor_model",
    "fold_candle",
    "forward_curve",
    "forward_curve_detail",
    "index_from_aggregates",
    "index_publication_time",
    "index_window",
    "outlier_exclusion",
    "outlier_limits",
    "price_band",
    "price_band_for",
    "realised_volatility",
    "reference_price",
    "self_trade_exclusion",
    "utilisation_rule_check",
    "weighted_median",
]

PRICE_QUANTUM = Decimal("0.0001")
REFERENCE_METHOD_VERSION = "REF-1"
# 34 digits (IEEE decimal128): sums of 100,000 price x quantity products keep every digit
# below the quantum, whatever the caller did to the thread's default context.
_CONTEXT = Context(prec=34)
_HUNDRED = Decimal(100)
_DAYS_PER_YEAR = Decimal(365)
_LABEL = {"trades": "trade", "book": "book", "model": "model"}


class TradeSummary(NamedTuple):
    """The decayed VWAP of a trade window computed elsewhere (the database aggregates it with the same
    weights, see trading/pricing_selectors.py), handed to `reference_price` instead of the trades."""

    vwap: Decimal | None  # None when the window holds no trade
    trade_count: int
    volume: Decimal


class PricedTrade(NamedTuple):
    """A trade as the pricing functions read it; any (at, price, quantity) tuple works too."""

    at: datetime
    price: Decimal
    quantity: Decimal


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


def decayed_vwap(
    trades: Iterable[tuple[datetime, Decimal, Decimal]],
    now: datetime,
    half_life: timedelta,
    *,
    window: timedelta | None = None,
    quantum: Decimal = PRICE_QUANTUM,
) -> Decimal | None:
    """Volume-weighted average price where a trade's weight halves every `half_life`.

    Weight of a trade = quantity x 2 ** (-(now - at) / half_life). Trades after `now` are
    ignored (a replay "as of now" must not see the future) and so are trades at or before
    `now - window` when a window is given. None when no trade is left.
    """
    vwap, _, _ = _decayed_vwap_detail(trades, now, half_life, window, quantum)
    return vwap


def _decayed_vwap_detail(
    trades: Iterable[tuple[datetime, Decimal, Decimal]],
    now: datetime,
    half_life: timedelta,
    window: timedelta | None,
    quantum: Decimal,
) -> tuple[Decimal | None, int, Decimal]:
    _require_aware(now, "now")
    if half_life <= timedelta(0):
        raise ValueError(f"half_life must be positive, got {half_life}")
    earliest = now - window if window is not None else None
    picked: list[tuple[datetime, Decimal, Decimal]] = []
    for at, price, quantity in trades:
        _require_positive(price, "trade price")
        _require_positive(quantity, "trade quantity")
        if at > now or (earliest is not None and at <= earliest):
            continue
        picked.append((at, price, quantity))
    if not picked:
        return None, 0, Decimal(0)
    # Decay relative to the newest trade rather than to `now`: the common factor cancels in the
    # ratio, and old trades cannot all underflow to weight 0.
    newest = max(at for at, _, _ in picked)
    seconds = half_life.total_seconds()
    with localcontext(_CONTEXT):
        numerator = Decimal(0)
        denominator = Decimal(0)
        volume = Decimal(0)
        for at, price, quantity in picked:
            weight = Decimal(2.0 ** (-(newest - at).total_seconds() / seconds)) * quantity
            numerator += weight * price
            denominator += weight
            volume += quantity
        return (numerator / denominator).quantize(quantum), len(picked), volume


def book_mid(
    best_bid: Decimal | None,
    best_ask: Decimal | None,
    max_spread_pct: Decimal,
    *,
    quantum: Decimal = PRICE_QUANTUM,
) -> Decimal | None:
    """(bid + ask) / 2, or None if a side is empty, the book is crossed, or the spread
    (ask - bid) / mid is wider than `max_spread_pct` percent."""
    mid, _, _ = _book_mid_detail(best_bid, best_ask, max_spread_pct, quantum)
    return mid


def _book_mid_detail(
    best_bid: Decimal | None, best_ask: Decimal | None, max_spread_pct: Decimal, quantum: Decimal
) -> tuple[Decimal | None, str, str]:
    if best_bid is None or best_ask is None:
        empty = " and ".join(side for side, px in (("bid", best_bid), ("ask", best_ask)) if px is None)
        return None, "book_side_empty", f"book has no {empty}"
    _require_positive(best_bid, "best bid")
    _require_positive(best_ask, "best ask")
    if best_bid > best_ask:
        # The engine never rests a crossed book; if one shows up the snapshot is torn, not a price.
        return None, "book_crossed", f"book crossed (bid {best_bid} > ask {best_ask})"
    with localcontext(_CONTEXT):
        mid = (best_bid + best_ask) / 2
        spread_pct = (best_ask - best_bid) / mid * _HUNDRED
        if spread_pct > max_spread_pct:
            return (
                None,
                "spread_too_wide",
                (f"book spread {spread_pct.quantize(Decimal('0.01'))} % wider than max {max_spread_pct} %"),
            )
        return (
            mid.quantize(quantum),
            "book_mid",
            (f"mid of bid {best_bid} / ask {best_ask}, spread {spread_pct.quantize(Decimal('0.01'))} %"),
        )


def factor_model(
    last_reference: Decimal,
    factor_changes: Mapping[str, float | Decimal],
    sensitivities: Mapping[str, float | Decimal],
    *,
    quantum: Decimal = PRICE_QUANTUM,
) -> Decimal:
    """last_reference x exp(sum(beta x log change)) over factors with both a change and a beta.

    A factor without a change (stale, missing) or without a beta contributes nothing.
    Floats are read through repr() so 0.1 means 0.1, not its binary neighbour.
    """
    _require_positive(last_reference, "last reference")
    with localcontext(_CONTEXT):
        exponent = Decimal(0)
        for factor_id, beta in sensitivities.items():
            if factor_id in factor_changes:
                exponent += _as_decimal(beta, f"beta {factor_id}") * _as_decimal(
                    factor_changes[factor_id], f"change {factor_id}"
                )
        return (last_reference * exponent.exp()).quantize(quantum)


# ---------------------------------------------------------------------------------------------
# Reference price
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PricingReason:
    code: str  # stable, e.g. "no_trades_in_window", "factor_stale"
    message: str
    factor: str | None = None  # the factor a factor_* reason is about

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ComponentResult:
    name: str  # "trades" | "book" | "model"
    value: Decimal | None  # None when the component is missing
    configured_weight: Decimal
    weight_used: Decimal  # after renormalising over present components; 0 when not used
    detail: str


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    metal: str
    value: Decimal | None  # None only when there is no component and no last reference
    computed_at: datetime
    last_reference: Decimal | None
    kept_last_reference: bool
    components: Mapping[str, ComponentResult]
    weights_used: Mapping[str, Decimal]  # every component, 0 for the unused; sums to 1 if any used
    factor_changes: Mapping[str, Decimal]  # log changes the model applied
    reasons: tuple[PricingReason, ...]
    method_version: str = REFERENCE_METHOD_VERSION

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(reason.code for reason in self.reasons)


def reference_price(
    *,
    config: MetalPricingConfig,
    last_reference: Decimal | None,
    trades: Iterable[tuple[datetime, Decimal, Decimal]] = (),
    best_bid: Decimal | None,
    best_ask: Decimal | None,
    factor_observations: Iterable[FactorObservation],
    now: datetime,
    last_reference_at: datetime | None = None,
    trade_summary: TradeSummary | None = None,
) -> ReferenceResult:
    """Blend decayed trade VWAP, book mid and factor model with the metal's weights.

    Missing components (no trades in the window, empty/crossed/too-wide book, no last
    reference for the model) drop out and the configured weights renormalise over the rest; a
    component with weight 0 is computed and shown but not used. The model moves the last
    reference by each fresh factor's log change between the observation known at
    `last_reference_at` and the latest one known now; without `last_reference_at` no change
    can be measured and the model is the last reference carried forward. With no component at
    all the last reference is kept. Every decision is recorded in `reasons`.

    `trade_summary`, when given, replaces `trades`: the caller aggregated the window itself (in
    SQL, with the same window and weights) so millions of stored trades never reach Python.
    """
    _require_aware(now, "now")
    quantum = config.price_quantum
    weights = config.weights.as_dict()
    values: dict[str, Decimal] = {}
    details: dict[str, str] = {}
    missing: dict[str, tuple[str, str]] = {}
    factor_reasons: list[PricingReason] = []
    changes: dict[str, Decimal] = {}

    if trade_summary is not None:
        vwap = trade_summary.vwap.quantize(quantum) if trade_summary.vwap is not None else None
        count, volume = trade_summary.trade_count, trade_summary.volume
    else:
        vwap, count, volume = _decayed_vwap_detail(trades, now, config.half_life, config.trade_window, quantum)
    window_text = _duration(config.trade_window)
    if vwap is None:
        missing["trades"] = ("no_trades_in_window", f"no trades in window (last {window_text})")
    else:
        values["trades"] = vwap
        details["trades"] = (
            f"decayed VWAP of {count} trade(s), volume {volume}, in the last {window_text}, "
            f"half-life {_duration(config.half_life)}"
        )

    mid, code, text = _book_mid_detail(best_bid, best_ask, config.max_spread_pct, quantum)
    if mid is None:
        missing["book"] = (code, text)
    else:
        values["book"] = mid
        details["book"] = text

    if last_reference is None:
        missing["model"] = ("no_last_reference", "no last reference for the factor model to move")
    else:
        changes, factor_reasons = _factor_changes(config, factor_observations, last_reference_at, now)
        values["model"] = factor_model(last_reference, changes, config.sensitivities, quantum=quantum)
        moves = ", ".join(
            f"{f} {changes[f]:+.4f} log x beta {config.sensitivities[f]}" for f in sorted(changes)
        )
        details["model"] = (
            f"last reference {last_reference} moved by {moves}"
            if changes
            else f"last reference {last_reference} carried forward (no factor change applied)"
        )

    present = [c for c in COMPONENTS if c in values and weights[c] > 0]
    reasons: list[PricingReason] = []
    for component in COMPONENTS:
        if component in missing:
            code, cause = missing[component]
            if weights[component] > 0:
                tail = (
                    f"{_LABEL[component]} weight redistributed to {' and '.join(present)}"
                    if present
                    else "no component left"
                )
                cause = f"{cause} -> {tail}"
            reasons.append(PricingReason(code, cause))
        elif weights[component] == 0:
            reasons.append(
                PricingReason(
                    "component_zero_weight", f"{component} weight is 0 in config -> computed but not used"
                )
            )
    reasons.extend(factor_reasons)

    used: dict[str, Decimal] = dict.fromkeys(COMPONENTS, Decimal(0))
    kept = False
    value: Decimal | None
    if present:
        with localcontext(_CONTEXT):
            total = sum((weights[c] for c in present), Decimal(0))
            for c in present:
                used[c] = weights[c] / total
            value = sum((used[c] * values[c] for c in present), Decimal(0)).quantize(quantum)
    elif last_reference is not None:
        value, kept = last_reference.quantize(quantum), True
        reasons.append(
            PricingReason("last_reference_kept", f"no usable component -> last reference {value} kept")
        )
    else:
        value = None
        reasons.append(PricingReason("no_price", "no usable component and no last reference -> no price"))

    components = {
        c: ComponentResult(
            name=c,
            value=values.get(c),
            configured_weight=weights[c],
            weight_used=used[c].quantize(Decimal("0.000001")),
            detail=details.get(c) or missing[c][1],
        )
        for c in COMPONENTS
    }
    return ReferenceResult(
        metal=config.symbol,
        value=value,
        computed_at=now,
        last_reference=last_reference,
        kept_last_reference=kept,
        components=MappingProxyType(components),
        weights_used=MappingProxyType({c: used[c].quantize(Decimal("0.000001")) for c in COMPONENTS}),
        factor_changes=MappingProxyType(changes),
        reasons=tuple(reasons),
    )


def _factor_changes(
    config: MetalPricingConfig,
    observations: Iterable[FactorObservation],
    last_reference_at: datetime | None,
    now: datetime,
) -> tuple[dict[str, Decimal], list[PricingReason]]:
    if not config.sensitivities:
        return {}, []
    if last_reference_at is None:
        return {}, [
            PricingReason(
                "factor_model_unanchored",
                "no last reference time -> factor changes cannot be measured, model = last reference",
            )
        ]
    wanted = set(config.sensitivities)
    series: dict[str, list[FactorObservation]] = defaultdict(list)
    for obs in observations:
        # Only what the platform knew by `now` counts, so a recomputation is reproducible.
        if obs.factor in wanted and obs.observed_at <= now and obs.known_at <= now:
            series[obs.factor].append(obs)

    changes: dict[str, Decimal] = {}
    reasons: list[PricingReason] = []
    for factor_id in sorted(wanted):
        spec = config.factors[factor_id]
        known = series.get(factor_id)
        if not known:
            reasons.append(
                PricingReason(
                    "factor_no_observations", f"factor {factor_id} has no observations -> left out", factor_id
                )
            )
            continue
        current = max(known, key=lambda o: (o.observed_at, o.known_at))
        if now - current.observed_at > spec.max_age:
            reasons.append(
                PricingReason(
                    "factor_stale",
                    f"factor {factor_id} stale (last observed {current.observed_at.date().isoformat()}, "
                    f"older than max_age {_duration(spec.max_age)}) -> left out",
                    factor_id,
                )
            )
            continue
        base_candidates = [o for o in known if o.known_at <= last_reference_at]
        if not base_candidates:
            reasons.append(
                PricingReason(
                    "factor_no_base",
                    f"factor {factor_id} had no observation at the last reference time "
                    f"{last_reference_at.isoformat()} -> left out",
                    factor_id,
                )
            )
            continue
        base = max(base_candidates, key=lambda o: (o.observed_at, o.known_at))
        if current.value <= 0 or base.value <= 0:
            reasons.append(
                PricingReason(
                    "factor_non_positive",
                    f"factor {factor_id} value not positive, log change undefined -> left out",
                    factor_id,
                )
            )
            continue
        with localcontext(_CONTEXT):
            changes[factor_id] = (current.value / base.value).ln()
    return changes, reasons


# ---------------------------------------------------------------------------------------------
# Volatility and bands
# ---------------------------------------------------------------------------------------------


def realised_volatility(
    closes: Sequence[Decimal], *, lookback_returns: int = 30, horizon_periods: int = 30
) -> Decimal | None:
    """Realised volatility in percent, rounded to 0.01.

    Sample standard deviation (n - 1) of the log returns between consecutive closes (one per
    period, normally daily), over the last `lookback_returns` returns, scaled by
    sqrt(horizon_periods). The default is the report's "30-day volatility": daily closes, a
    30-day horizon. Pass horizon_periods=365 for an annualised figure (the market trades every
    calendar day). None with fewer than two returns.
    """
    window = list(closes)[-(lookback_returns + 1) :]
    if len(window) < 3:
        return None
    for close in window:
        _require_positive(close, "close")
    with localcontext(_CONTEXT):
        returns = [(b / a).ln() for a, b in zip(window, window[1:], strict=False)]
        sd = statistics.stdev(returns)
        return (sd * Decimal(horizon_periods).sqrt() * _HUNDRED).quantize(Decimal("0.01"))


def price_band(
    reference: Decimal,
    base_pct: Decimal,
    vol: Decimal | None,
    vol_threshold: Decimal,
    widen_factor: Decimal,
    tick: Decimal,
) -> tuple[Decimal, Decimal]:
    """(low, high) of the accepted order prices: reference -+ base_pct %, or -+ base_pct x
    widen_factor % when realised `vol` (percent) is strictly above `vol_threshold`.

    Low rounds up and high rounds down to the tick, so the band never grows past its percentage.
    Unknown vol (None, too little history) does not widen. The band always keeps the ticks
    next to the reference, so a band narrower than a tick cannot halt trading, and low >= 1 tick.
    """
    _require_positive(reference, "reference")
    _require_positive(tick, "tick")
    if reference < tick:
        raise ValueError(f"reference {reference} is below one tick {tick}")
    if widen_factor < 1:
        raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
    pct = base_pct * widen_factor if vol is not None and vol > vol_threshold else base_pct
    if not 0 < pct < 100:
        raise ValueError(f"band half-width must be between 0 and 100 %, got {pct}")
    with localcontext(_CONTEXT):
        low = _to_tick(reference * (1 - pct / _HUNDRED), tick, ROUND_CEILING)
        high = _to_tick(reference * (1 + pct / _HUNDRED), tick, ROUND_FLOOR)
        low = max(min(low, _to_tick(reference, tick, ROUND_FLOOR)), tick)
        high = max(high, _to_tick(reference, tick, ROUND_CEILING))
    return low, high


def price_band_for(
    reference: Decimal, config: MetalPricingConfig, vol: Decimal | None, tick: Decimal
) -> tuple[Decimal, Decimal]:
    """`price_band` with the metal's configured percentages."""
    band = config.band
    return price_band(reference, band.base_pct, vol, band.vol_threshold_pct, band.widen_factor, tick)


# ---------------------------------------------------------------------------------------------
# Forward curve
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleCheck:
    factor: str
    fired: bool
    weeks: tuple[tuple[date, Decimal | None], ...]  # (Monday, mean value or None), oldest first
    premium_pct: Decimal  # what the rule adds when fired (0 applied when not)
    max_tenor_days: int
    reason: str


@dataclass(frozen=True, slots=True)
class ForwardCurve:
    reference: Decimal
    points: Mapping[int, Decimal]  # tenor in days -> forward price
    premiums_pct: Mapping[int, Decimal]  # tenor -> total rule premium applied, percent
    rule_checks: tuple[RuleCheck, ...]


def forward_curve(
    reference: Decimal,
    config: MetalPricingConfig,
    factor_observations: Iterable[FactorObservation],
    now: datetime,
) -> dict[int, Decimal]:
    """{tenor_days: forward price} for the metal's tenors (30/60/90 by default); see
    `forward_curve_detail`."""
    return dict(forward_curve_detail(reference, config, factor_observations, now).points)


def forward_curve_detail(
    reference: Decimal,
    config: MetalPricingConfig,
    factor_observations: Iterable[FactorObservation],
    now: datetime,
) -> ForwardCurve:
    """F(T) = reference x exp(drift x T / 365) x (1 + premium / 100), where premium sums the
    metal's utilisation rules that fired and cover tenor T (T <= rule.max_tenor_days)."""
    _require_aware(now, "now")
    _require_positive(reference, "reference")
    observations = list(factor_observations)
    checks = tuple(
        utilisation_rule_check(rule, observations, now) for rule in config.forward.utilisation_rules
    )
    points: dict[int, Decimal] = {}
    premiums: dict[int, Decimal] = {}
    with localcontext(_CONTEXT):
        drift = config.forward.drift_pct_per_year / _HUNDRED
        for tenor in config.forward.tenors_days:
            premium = sum(
                (check.premium_pct for check in checks if check.fired and tenor <= check.max_tenor_days),
                Decimal(0),
            )
            price = reference * (drift * tenor / _DAYS_PER_YEAR).exp() * (1 + premium / _HUNDRED)
            points[tenor] = price.quantize(config.price_quantum)
            premiums[tenor] = premium
    return ForwardCurve(
        reference=reference,
        points=MappingProxyType(points),
        premiums_pct=MappingProxyType(premiums),
        rule_checks=checks,
    )


def utilisation_rule_check(
    rule: UtilisationRule, factor_observations: Iterable[FactorObservation], now: datetime
) -> RuleCheck:
    """Did `rule.factor` average strictly above the threshold in each of the last
    `rule.consecutive_weeks` complete ISO weeks (Monday 00:00 UTC; the week of `now` is still
    running and does not count)? A week with no observation known by `now` breaks the run."""
    _require_aware(now, "now")
    today = now.astimezone(UTC).date()
    this_monday = today - timedelta(days=today.weekday())
    mondays = [this_monday - timedelta(weeks=k) for k in range(rule.consecutive_weeks, 0, -1)]
    start = datetime.combine(mondays[0], time(0), tzinfo=UTC)
    end = datetime.combine(this_monday, time(0), tzinfo=UTC)
    by_week: dict[date, list[Decimal]] = defaultdict(list)
    for obs in factor_observations:
        if obs.factor == rule.factor and start <= obs.observed_at < end and obs.known_at <= now:
            day = obs.observed_at.astimezone(UTC).date()
            by_week[day - timedelta(days=day.weekday())].append(obs.value)

    weeks: list[tuple[date, Decimal | None]] = []
    with localcontext(_CONTEXT):
        for monday in mondays:
            values = by_week.get(monday)
            weeks.append((monday, sum(values, Decimal(0)) / len(values) if values else None))
    fired = all(mean is not None and mean > rule.threshold_pct for _, mean in weeks)
    shown = ", ".join(f"week of {monday.isoformat()}: {_percent(mean)}" for monday, mean in weeks)
    if fired:
        reason = (
            f"{rule.factor} above {rule.threshold_pct} % in each of the last {rule.consecutive_weeks} "
            f"complete weeks ({shown}) -> +{rule.premium_pct} % on tenors <= {rule.max_tenor_days} days"
        )
    else:
        reason = (
            f"{rule.factor} not above {rule.threshold_pct} % in all of the last "
            f"{rule.consecutive_weeks} complete weeks ({shown}) -> no premium"
        )
    return RuleCheck(
        factor=rule.factor,
        fired=fired,
        weeks=tuple(weeks),
        premium_pct=rule.premium_pct,
        max_tenor_days=rule.max_tenor_days,
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------
# Daily spot index
# ---------------------------------------------------------------------------------------------


class IndexTrade(NamedTuple):
    trade_id: int | str
    at: datetime
    price: Decimal
    quantity: Decimal
    buyer: int | str  # member ids; pass affiliation-group ids to treat affiliates as one member
    seller: int | str


@dataclass(frozen=True, slots=True)
class ExcludedTrade:
    trade_id: int | str
    reason: Literal["self_trade", "outlier"]
    detail: str


@dataclass(frozen=True, slots=True)
class IndexResult:
    value: Decimal
    status: Literal["traded", "assessed"]
    trade_count: int  # eligible trades (after self-trade and outlier exclusion)
    seller_count: int  # distinct sellers among the eligible trades
    volume: Decimal  # eligible quantity
    excluded: tuple[ExcludedTrade, ...]
    method_version: str
    median: Decimal | None  # volume-weighted median of the non-self trades, the outlier anchor
    eligible_vwap: Decimal | None  # VWAP of eligible trades even when too thin to publish
    assessed_reference: Decimal
    considered: int  # trades handed in
    reason: str


def daily_index(
    trades: Iterable[IndexTrade],
    assessed_reference: Decimal,
    method: IndexMethod,
) -> IndexResult:
    """The day's spot index under `method` (see trading/METHODOLOGY.md).

    1. Trades whose buyer and seller are the same member are excluded ("self_trade").
    2. The anchor is the volume-weighted median price of the rest (the lowest price at which
       half the volume is reached), so a stream of small prints cannot move it.
    3. Trades priced more than method.outlier_pct % from the anchor are excluded ("outlier");
       exactly at the limit stays in.
    4. With >= method.min_trades eligible trades from >= method.min_sellers distinct sellers,
       value = VWAP of the eligible trades, status "traded"; otherwise value = the assessed
       reference, status "assessed". The value is rounded half-even to method.price_quantum.
    One pass plus one sort: 100,000 trades take a fraction of a second (bench/pricing_pure.py).
    The database path (trading/pricing_services.index_publish) computes the same aggregates in SQL
    and finishes with `index_from_aggregates`, `weighted_median` and `outlier_limits` below.
    """
    _require_positive(assessed_reference, "assessed reference")
    excluded: list[ExcludedTrade] = []
    candidates: list[IndexTrade] = []
    considered = 0
    for trade in trades:
        considered += 1
        if not (trade.price > 0 and trade.quantity > 0):
            raise ValueError(f"trade {trade.trade_id}: price and quantity must be positive")
        if trade.buyer == trade.seller:
            excluded.append(self_trade_exclusion(trade.trade_id, trade.seller))
        else:
            candidates.append(trade)

    median: Decimal | None = None
    count = 0
    sellers: set[int | str] = set()
    with localcontext(_CONTEXT):
        volume = Decimal(0)
        turnover = Decimal(0)
        if candidates:
            median = _weighted_median(candidates)
            low, high = outlier_limits(median, method)
            for trade in candidates:
                if low <= trade.price <= high:
                    count += 1
                    volume += trade.quantity
                    turnover += trade.price * trade.quantity
                    sellers.add(trade.seller)
                else:
                    excluded.append(outlier_exclusion(trade.trade_id, trade.price, median, method))
    return index_from_aggregates(
        count=count,
        seller_count=len(sellers),
        volume=volume,
        turnover=turnover,
        median=median,
        excluded=excluded,
        assessed_reference=assessed_reference,
        considered=considered,
        method=method,
    )


class NoAssessedReference(ValueError):
    """Too few eligible trades to publish a traded index, and no reference to publish instead."""


def index_from_aggregates(
    *,
    count: int,
    seller_count: int,
    volume: Decimal,
    turnover: Decimal,
    median: Decimal | None,
    excluded: Sequence[ExcludedTrade],
    assessed_reference: Decimal | None,
    considered: int,
    method: IndexMethod,
) -> IndexResult:
    """Step 4 of `daily_index` from the eligible trades' aggregates (count, distinct sellers,
    Σ quantity, Σ price x quantity). `assessed_reference` may be None only on a traded day;
    otherwise NoAssessedReference is raised."""
    if assessed_reference is not None:
        _require_positive(assessed_reference, "assessed reference")
    with localcontext(_CONTEXT):
        eligible_vwap = (turnover / volume).quantize(method.price_quantum) if count and volume > 0 else None
    enough = count >= method.min_trades and seller_count >= method.min_sellers
    status: Literal["traded", "assessed"]
    if enough and eligible_vwap is not None:
        value, status = eligible_vwap, "traded"
        reason = f"{count} eligible trades from {seller_count} sellers -> VWAP published"
    else:
        if assessed_reference is None:
            raise NoAssessedReference(
                f"{count} eligible trade(s) from {seller_count} seller(s) is below the minimum and there "
                "is no reference price to publish as assessed"
            )
        value, status = assessed_reference.quantize(method.price_quantum), "assessed"
        reason = (
            f"{count} eligible trade(s) (minimum {method.min_trades}) from {seller_count} seller(s) "
            f"(minimum {method.min_sellers}) -> assessed reference published"
        )
    return IndexResult(
        value=value,
        status=status,
        trade_count=count,
        seller_count=seller_count,
        volume=volume,
        excluded=tuple(excluded),
        method_version=method.version,
        median=median,
        eligible_vwap=eligible_vwap,
        assessed_reference=assessed_reference if assessed_reference is not None else value,
        considered=considered,
        reason=reason,
    )


def outlier_limits(median: Decimal, method: IndexMethod) -> tuple[Decimal, Decimal]:
    """[low, high] of the prices that stay in: median -+ method.outlier_pct %, both inclusive."""
    with localcontext(_CONTEXT):
        limit = median * method.outlier_pct / _HUNDRED
        return median - limit, median + limit


def self_trade_exclusion(trade_id: int | str, seller: int | str) -> ExcludedTrade:
    return ExcludedTrade(trade_id, "self_trade", f"buyer and seller are member {seller}")


def outlier_exclusion(trade_id: int | str, price: Decimal, median: Decimal, method: IndexMethod) -> ExcludedTrade:
    with localcontext(_CONTEXT):
        distance = (price - median) / median * _HUNDRED
    return ExcludedTrade(
        trade_id,
        "outlier",
        f"price {price} is {distance.quantize(Decimal('0.1')):+} % from median {median} "
        f"(limit +-{method.outlier_pct} %)",
    )


def weighted_median(volume_at: Mapping[Decimal, Decimal]) -> Decimal:
    """The lowest price at which the cumulative volume, from the cheapest level up, reaches half
    of the total. `volume_at` maps each traded price level to its volume."""
    if not volume_at:
        raise ValueError("no price levels")
    with localcontext(_CONTEXT):
        total = sum(volume_at.values(), Decimal(0))
        cumulative = Decimal(0)
        for price in sorted(volume_at):
            cumulative += volume_at[price]
            # 2 x cumulative >= total is cumulative >= total / 2 without a division.
            if 2 * cumulative >= total:
                return price
    raise AssertionError("unreachable: the cumulative volume ends at the total")


def _weighted_median(trades: Sequence[IndexTrade]) -> Decimal:
    # Volume per distinct price first: a day's trades share few price levels, so the sort is
    # over levels rather than trades (100,000 trades: ~3x faster than sorting the trades).
    volume_at: dict[Decimal, Decimal] = defaultdict(Decimal)
    for trade in trades:
        volume_at[trade.price] += trade.quantity
    return weighted_median(volume_at)


def index_window(day: date, method: IndexMethod) -> tuple[datetime, datetime]:
    """[start, end) of the trades that make index day `day`: from the window close (local time)
    of the previous day, inclusive, to the close on `day`, exclusive."""
    end = datetime.combine(day, method.window_close_local, tzinfo=timezone(method.utc_offset))
    return end - timedelta(days=1), end


def index_publication_time(day: date, method: IndexMethod) -> datetime:
    return index_window(day, method)[1] + method.publication_delay


# ---------------------------------------------------------------------------------------------
# Candles
# ---------------------------------------------------------------------------------------------

Interval = Literal["1m", "1h", "1d"]


@dataclass(frozen=True, slots=True)
class Candle:
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    turnover: Decimal  # sum of price x quantity, so a bucket's VWAP is turnover / volume
    trade_count: int


def bucket_start(at: datetime, interval: Interval, *, utc_offset: timedelta = timedelta(0)) -> datetime:
    """Start (UTC, aware) of the `interval` bucket holding `at`. Day buckets begin at local
    midnight for `utc_offset` (UTC by default)."""
    _require_aware(at, "at")
    local = at.astimezone(UTC) + utc_offset
    if interval == "1m":
        start = local.replace(second=0, microsecond=0)
    elif interval == "1h":
        start = local.replace(minute=0, second=0, microsecond=0)
    elif interval == "1d":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"unknown candle interval {interval!r}; use 1m, 1h or 1d")
    return start - utc_offset


def fold_candle(candle: Candle | None, price: Decimal, qty: Decimal) -> Candle:
    """The candle after one more trade; trades must be folded in execution order."""
    _require_positive(price, "price")
    _require_positive(qty, "quantity")
    with localcontext(_CONTEXT):
        if candle is None:
            return Candle(
                open=price,
                high=price,
                low=price,
                close=price,
                volume=qty,
                turnover=price * qty,
                trade_count=1,
            )
        return Candle(
            open=candle.open,
            high=max(candle.high, price),
            low=min(candle.low, price),
            close=price,
            volume=candle.volume + qty,
            turnover=candle.turnover + price * qty,
            trade_count=candle.trade_count + 1,
        )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")


def _require_positive(number: Decimal, name: str) -> None:
    if not isinstance(number, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(number).__name__}")
    if not (number.is_finite() and number > 0):
        raise ValueError(f"{name} must be positive, got {number}")


def _as_decimal(number: float | Decimal | int, name: str) -> Decimal:
    if isinstance(number, Decimal):
        result = number
    elif isinstance(number, int | float) and not isinstance(number, bool):
        result = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
    else:
        raise TypeError(f"{name} must be a number, got {type(number).__name__}")
    if not result.is_finite():
        raise ValueError(f"{name} must be finite, got {number}")
    return result


def _percent(mean: Decimal | None) -> str:
    return "no data" if mean is None else f"{mean.quantize(Decimal('0.01'))} %"


def _to_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (price / tick).to_integral_value(rounding=rounding) * tick


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours % 24 == 0 and hours >= 48:
        return f"{hours / 24:g} days"
    return f"{hours:g}h"
