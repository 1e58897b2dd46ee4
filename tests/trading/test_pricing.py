"""Tests for trading.pricing and trading.pricing_config: pure, no database."""

from __future__ import annotations

import dataclasses
import time as clock
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.factors import FactorObservation, parse_factor_csv
from trading.pricing import (
    Candle,
    IndexMethod,
    IndexTrade,
    book_mid,
    bucket_start,
    daily_index,
    decayed_vwap,
    factor_model,
    fold_candle,
    forward_curve,
    forward_curve_detail,
    index_publication_time,
    index_window,
    price_band,
    price_band_for,
    realised_volatility,
    reference_price,
    utilisation_rule_check,
)
from trading.pricing_config import (
    ComponentWeights,
    MetalPricingConfig,
    PricingConfigError,
    UtilisationRule,
    default_pricing_config,
    load_pricing_config,
    parse_pricing_config,
)

D = Decimal
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
DEMO_CSV = Path(__file__).resolve().parents[2] / "trading" / "data" / "factors_demo.csv"
# No example database: the suite must not write a .hypothesis folder into the repository.
PROPERTY = settings(max_examples=150, deadline=None, database=None)


def ln(text: str) -> Decimal:
    # pricing works in a 34-digit context; compare log changes at the same precision
    return Context(prec=34).ln(D(text))


def metal(symbol: str = "GA", **changes: object) -> MetalPricingConfig:
    return dataclasses.replace(default_pricing_config().metal(symbol), **changes)  # type: ignore[arg-type]


def obs(factor: str, when: datetime, value: str, recorded_at: datetime | None = None) -> FactorObservation:
    unit = default_pricing_config().factors[factor].unit
    return FactorObservation(factor, when, D(value), unit, "test", recorded_at)


def day(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


# --- decayed VWAP ------------------------------------------------------------------------------


def test_decayed_vwap_halves_weight_every_half_life() -> None:
    hl = timedelta(hours=12)
    trades = [(NOW, D("100"), D("1")), (NOW - hl, D("200"), D("2"))]
    # weights: 1 x 1 and 2 x 0.5 -> equal, so the mean of the two prices
    assert decayed_vwap(trades, NOW, hl) == D("150.0000")


def test_decayed_vwap_without_decay_difference_is_plain_vwap() -> None:
    trades = [(NOW, D("10"), D("1")), (NOW, D("20"), D("3"))]
    assert decayed_vwap(trades, NOW, timedelta(hours=1)) == D("17.5000")


def test_decayed_vwap_ignores_future_trades_and_trades_outside_window() -> None:
    hl = timedelta(hours=12)
    trades = [
        (NOW + timedelta(seconds=1), D("999"), D("5")),
        (NOW - timedelta(hours=73), D("1"), D("5")),
        (NOW - timedelta(hours=1), D("50"), D("1")),
    ]
    assert decayed_vwap(trades, NOW, hl, window=timedelta(hours=72)) == D("50.0000")
    assert decayed_vwap(trades[:2], NOW, hl, window=timedelta(hours=72)) is None
    assert decayed_vwap([], NOW, hl) is None


def test_decayed_vwap_does_not_depend_on_how_long_ago_all_trades_were() -> None:
    # Decaying relative to the newest trade: a quiet day later the blend of old trades is the same
    # (and 2 ** -huge does not underflow to a zero denominator).
    hl = timedelta(hours=1)
    trades = [(NOW - timedelta(hours=h), D(100 + h), D("1")) for h in range(5)]
    assert decayed_vwap(trades, NOW, hl) == decayed_vwap(trades, NOW + timedelta(days=3650), hl)


def test_decayed_vwap_rejects_naive_now_and_bad_trades() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decayed_vwap([], datetime(2026, 1, 1), timedelta(hours=1))
    with pytest.raises(ValueError, match="quantity"):
        decayed_vwap([(NOW, D("1"), D("0"))], NOW, timedelta(hours=1))
    with pytest.raises(TypeError):
        decayed_vwap([(NOW, 1.5, D("1"))], NOW, timedelta(hours=1))  # type: ignore[list-item]


prices = st.integers(min_value=1, max_value=10_000_000).map(lambda cents: D(cents) / 100)
quantities = st.integers(min_value=1, max_value=100_000).map(lambda grams: D(grams) / 1000)
ages = st.integers(min_value=0, max_value=30 * 24 * 3600).map(lambda s: timedelta(seconds=s))


@PROPERTY
@given(
    st.lists(st.tuples(ages, prices, quantities), min_size=1, max_size=40),
    st.integers(min_value=60, max_value=7 * 24 * 3600),
)
def test_decayed_vwap_lies_between_min_and_max_trade_price(raw: list, half_life_s: int) -> None:
    trades = [(NOW - age, price, qty) for age, price, qty in raw]
    vwap = decayed_vwap(trades, NOW, timedelta(seconds=half_life_s))
    assert vwap is not None
    assert min(p for _, p, _ in trades) <= vwap <= max(p for _, p, _ in trades)


# --- book mid ----------------------------------------------------------------------------------


def test_book_mid() -> None:
    assert book_mid(D("99"), D("101"), D("5")) == D("100.0000")
    assert book_mid(None, D("101"), D("5")) is None
    assert book_mid(D("99"), None, D("5")) is None
    assert book_mid(D("101"), D("99"), D("5")) is None  # crossed snapshot is not a price
    assert book_mid(D("90"), D("110"), D("5")) is None  # 20 % spread
    assert book_mid(D("97.5"), D("102.5"), D("5")) == D("100.0000")  # exactly 5 % is allowed


# --- factor model ------------------------------------------------------------------------------


def test_factor_model_moves_reference_by_beta_times_log_change() -> None:
    ln_1_1 = ln("1.1")
    moved = factor_model(D("580"), {"aluminium_price": ln_1_1}, {"aluminium_price": D("0.3")})
    # 580 x 1.1 ** 0.3 = 596.81...
    assert moved == (D("580") * (D("0.3") * ln_1_1).exp()).quantize(D("0.0001"))
    assert D("596.8") < moved < D("596.9")


def test_factor_model_sums_factors_and_ignores_unmatched_ones() -> None:
    changes = {"a": 0.1, "b": D("-0.05"), "no_beta": D("5")}
    betas = {"a": D("0.5"), "b": D("1"), "no_change": D("3")}
    # exponent 0.5 x 0.1 - 0.05 = 0 -> unchanged
    assert factor_model(D("100"), changes, betas) == D("100.0000")
    assert factor_model(D("100"), {}, betas) == D("100.0000")


# --- reference price ---------------------------------------------------------------------------


LAST_AT = day(2026, 11, 1, 12)


def fresh_aluminium(before: str = "2500", after: str = "2750") -> list[FactorObservation]:
    return [
        obs("aluminium_price", day(2026, 10, 1), before),
        obs("aluminium_price", day(2026, 11, 10), after),
    ]


def ga_only_aluminium() -> MetalPricingConfig:
    base = default_pricing_config().metal("GA")
    return dataclasses.replace(
        base,
        sensitivities={"aluminium_price": D("0.3")},
        factors={"aluminium_price": base.factors["aluminium_price"]},
    )


def test_reference_blends_all_three_components_with_configured_weights() -> None:
    config = ga_only_aluminium()
    result = reference_price(
        config=config,
        last_reference=D("580"),
        trades=[(NOW - timedelta(hours=1), D("590"), D("10"))],
        best_bid=D("584"),
        best_ask=D("588"),
        factor_observations=fresh_aluminium(),
        now=NOW,
        last_reference_at=LAST_AT,
    )
    model = factor_model(D("580"), {"aluminium_price": ln("1.1")}, {"aluminium_price": D("0.3")})
    assert result.components["trades"].value == D("590.0000")
    assert result.components["book"].value == D("586.0000")
    assert result.components["model"].value == model
    assert dict(result.weights_used) == {"trades": D("0.5"), "book": D("0.3"), "model": D("0.2")}
    expected = D("0.5") * D("590") + D("0.3") * D("586") + D("0.2") * model
    assert result.value == expected.quantize(D("0.0001"))
    assert result.factor_changes["aluminium_price"] == ln("1.1")
    assert result.reasons == ()
    assert not result.kept_last_reference


def test_no_trades_redistributes_trade_weight_to_book_and_model() -> None:
    result = reference_price(
        config=metal("GA"),
        last_reference=D("580"),
        trades=[(NOW - timedelta(days=4), D("900"), D("1"))],
        best_bid=D("584"),
        best_ask=D("588"),
        factor_observations=[],
        now=NOW,
        last_reference_at=LAST_AT,
    )
    assert result.components["trades"].value is None
    assert result.weights_used["trades"] == 0
    assert result.weights_used["book"] == D("0.600000")
    assert result.weights_used["model"] == D("0.400000")
    assert result.value == (D("0.6") * D("586") + D("0.4") * D("580")).quantize(D("0.0001"))
    reason = next(r for r in result.reasons if r.code == "no_trades_in_window")
    assert str(reason) == "no trades in window (last 3 days) -> trade weight redistributed to book and model"


def test_wide_spread_and_missing_side_drop_the_book() -> None:
    wide = reference_price(
        config=metal("GA"),
        last_reference=D("580"),
        trades=[(NOW, D("590"), D("1"))],
        best_bid=D("500"),
        best_ask=D("600"),
        factor_observations=[],
        now=NOW,
    )
    assert "spread_too_wide" in wide.reason_codes
    assert wide.weights_used["book"] == 0
    assert wide.weights_used["trades"] == D("0.714286")  # 0.5 / 0.7
    one_sided = reference_price(
        config=metal("GA"),
        last_reference=D("580"),
        trades=[],
        best_bid=D("579"),
        best_ask=None,
        factor_observations=[],
        now=NOW,
    )
    assert "book_side_empty" in one_sided.reason_codes
    assert one_sided.value == D("580.0000")
    assert dict(one_sided.weights_used) == {"trades": 0, "book": 0, "model": 1}


def test_stale_factor_is_left_out_and_recorded() -> None:
    config = metal("GA")
    stale_aluminium = [
        obs("aluminium_price", day(2026, 8, 1), "2000"),
        obs("aluminium_price", day(2026, 9, 1), "3000"),
    ]
    fresh_semis = [
        obs("semiconductor_utilisation", day(2026, 10, 1), "80"),
        obs("semiconductor_utilisation", day(2026, 11, 5), "88"),
    ]
    result = reference_price(
        config=config,
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=stale_aluminium + fresh_semis,
        now=NOW,
        last_reference_at=LAST_AT,
    )
    assert "aluminium_price" not in result.factor_changes
    assert result.factor_changes["semiconductor_utilisation"] == ln("1.1")
    stale = next(r for r in result.reasons if r.code == "factor_stale")
    assert str(stale) == (
        "factor aluminium_price stale (last observed 2026-09-01, older than max_age 45 days) -> left out"
    )
    missing = next(r for r in result.reasons if r.code == "factor_no_observations")
    assert "solar_installations" in str(missing)
    assert result.value == factor_model(
        D("580"), {"semiconductor_utilisation": ln("1.1")}, {"semiconductor_utilisation": D("0.2")}
    )


def test_factor_news_counts_when_the_platform_received_it() -> None:
    config = ga_only_aluminium()
    # The November figure is dated the 1st but arrived on the 10th, after the last reference
    # (the 1st, noon): it is news now, measured against October's value.
    late = [
        obs("aluminium_price", day(2026, 10, 1), "2500"),
        obs("aluminium_price", day(2026, 11, 1), "2750", recorded_at=day(2026, 11, 10)),
    ]
    result = reference_price(
        config=config,
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=late,
        now=NOW,
        last_reference_at=LAST_AT,
    )
    assert result.factor_changes["aluminium_price"] == ln("1.1")
    # Already known at the last reference: nothing new, the model stays put.
    known = [
        obs("aluminium_price", day(2026, 10, 1), "2500"),
        obs("aluminium_price", day(2026, 11, 1), "2750"),
    ]
    result = reference_price(
        config=config,
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=known,
        now=NOW,
        last_reference_at=LAST_AT,
    )
    assert result.factor_changes["aluminium_price"] == 0
    assert result.value == D("580.0000")
    # Received after `now`: invisible, so a recomputation as of `now` is reproducible.
    future = [
        obs("aluminium_price", day(2026, 10, 1), "2500"),
        obs("aluminium_price", day(2026, 11, 1), "2500"),
        obs("aluminium_price", day(2026, 11, 20), "2750", recorded_at=NOW + timedelta(hours=1)),
    ]
    result = reference_price(
        config=config,
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=future,
        now=NOW,
        last_reference_at=LAST_AT,
    )
    assert result.factor_changes["aluminium_price"] == 0


def test_without_last_reference_time_factors_cannot_move_the_model() -> None:
    result = reference_price(
        config=ga_only_aluminium(),
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=fresh_aluminium(),
        now=NOW,
    )
    assert "factor_model_unanchored" in result.reason_codes
    assert result.value == D("580.0000")


def test_nothing_present_keeps_last_reference_and_says_so() -> None:
    result = reference_price(
        config=metal("GA", weights=ComponentWeights(D("0.6"), D("0.4"), D("0"))),
        last_reference=D("580"),
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=[],
        now=NOW,
    )
    assert result.kept_last_reference
    assert result.value == D("580.0000")
    assert result.reason_codes == (
        "no_trades_in_window",
        "book_side_empty",
        "component_zero_weight",
        "factor_model_unanchored",
        "last_reference_kept",
    )
    assert str(result.reasons[0]) == "no trades in window (last 3 days) -> no component left"
    assert all(w == 0 for w in result.weights_used.values())


def test_no_component_and_no_last_reference_gives_no_price() -> None:
    result = reference_price(
        config=metal("GA"),
        last_reference=None,
        trades=[],
        best_bid=None,
        best_ask=None,
        factor_observations=[],
        now=NOW,
    )
    assert result.value is None
    assert result.reason_codes[-1] == "no_price"
    assert "no_last_reference" in result.reason_codes


def test_first_trade_prices_a_new_instrument() -> None:
    result = reference_price(
        config=metal("RE"),
        last_reference=None,
        trades=[(NOW, D("2100"), D("1"))],
        best_bid=None,
        best_ask=None,
        factor_observations=[],
        now=NOW,
    )
    assert result.value == D("2100.0000")
    assert result.weights_used["trades"] == 1


@PROPERTY
@given(
    st.lists(st.tuples(ages, prices, quantities), max_size=5),
    st.one_of(st.none(), prices),
    st.one_of(st.none(), prices),
    st.one_of(st.none(), prices),
)
def test_used_weights_sum_to_one_and_value_within_components(raw, bid, ask, last) -> None:
    result = reference_price(
        config=metal("GA"),
        last_reference=last,
        trades=[(NOW - a, p, q) for a, p, q in raw],
        best_bid=bid,
        best_ask=ask,
        factor_observations=[],
        now=NOW,
    )
    used = [c for c in result.components.values() if c.weight_used > 0]
    if used:
        assert abs(sum(result.weights_used.values()) - 1) <= D("0.000003")
        assert result.value is not None
        assert min(c.value for c in used) <= result.value <= max(c.value for c in used)  # type: ignore[type-var]
    else:
        assert result.value == (last.quantize(D("0.0001")) if last is not None else None)


# --- volatility and bands ----------------------------------------------------------------------


def test_realised_volatility() -> None:
    assert realised_volatility([D("100")] * 31) == D("0.00")
    assert realised_volatility([D("100"), D("101")]) is None
    # alternating +-1 % log moves: sample stdev of 30 returns x sqrt(30)
    closes = [D("100") * (D("0.01") * (i % 2)).exp() for i in range(31)]
    vol = realised_volatility(closes)
    assert vol is not None and D("5.56") <= vol <= D("5.58")  # 0.01 x sqrt(30/29) x sqrt(30) x 100
    annual = realised_volatility(closes, horizon_periods=365)
    assert annual is not None and annual > vol
    # only the last `lookback_returns` returns count
    assert realised_volatility([D("1")] + [D("100")] * 31) == D("0.00")


def test_band_rounds_low_up_and_high_down_to_ticks() -> None:
    low, high = price_band(D("100"), D("10"), None, D("15"), D("1.5"), D("0.07"))
    assert (low, high) == (D("90.02"), D("109.97"))  # 90 / 0.07 = 1285.7 -> 1286; 110 / 0.07 = 1571.4 -> 1571
    assert price_band(D("583.3333"), D("10"), None, D("15"), D("1.5"), D("0.01")) == (
        D("525.00"),
        D("641.66"),
    )


def test_band_widens_only_above_vol_threshold() -> None:
    args = (D("100"), D("10"))
    assert price_band(*args, D("15.01"), D("15"), D("1.5"), D("0.01")) == (D("85.00"), D("115.00"))
    assert price_band(*args, D("15"), D("15"), D("1.5"), D("0.01")) == (D("90.00"), D("110.00"))
    assert price_band(*args, None, D("15"), D("1.5"), D("0.01")) == (D("90.00"), D("110.00"))
    # gallium's configured band with its 2025 30-day vol of 18.7 %
    assert price_band_for(D("580"), metal("GA"), D("18.7"), D("0.01")) == (D("493.00"), D("667.00"))


def test_band_narrower_than_a_tick_keeps_the_neighbouring_ticks() -> None:
    assert price_band(D("1.005"), D("0.1"), None, D("15"), D("1.5"), D("0.01")) == (D("1.00"), D("1.01"))
    with pytest.raises(ValueError, match="below one tick"):
        price_band(D("0.001"), D("10"), None, D("15"), D("1.5"), D("0.01"))


@PROPERTY
@given(
    prices,
    st.integers(min_value=1, max_value=50),
    st.one_of(st.none(), st.integers(0, 60)),
    st.sampled_from(["0.01", "0.05", "0.25", "1", "5"]),
)
def test_band_contains_reference_on_ticks_within_its_percentage(ref, base, vol, tick_text) -> None:
    tick = D(tick_text)
    if ref < tick:
        return
    base_pct = D(base)
    low, high = price_band(ref, base_pct, None if vol is None else D(vol), D("15"), D("1.5"), tick)
    assert tick <= low <= ref <= high
    assert low % tick == 0 and high % tick == 0
    pct = base_pct * D("1.5") if vol is not None and vol > 15 else base_pct
    if ref * pct / 100 >= tick:  # band wider than a tick: rounding only ever narrows it
        assert low >= ref * (1 - pct / 100) and high <= ref * (1 + pct / 100)


# --- forward curve -----------------------------------------------------------------------------


def display(*points: tuple[datetime, str]) -> list[FactorObservation]:
    return [obs("display_line_utilisation", when, value) for when, value in points]


# Mondays: Oct 19 below, then Oct 26, Nov 2, Nov 9 above 90 %.
HOT_WEEKS = display(
    (day(2026, 10, 19), "88"), (day(2026, 10, 26), "91"), (day(2026, 11, 2), "92"), (day(2026, 11, 9), "90.5")
)


def test_forward_curve_applies_drift() -> None:
    curve = forward_curve(D("580"), metal("GA"), [], NOW)
    assert set(curve) == {30, 60, 90}
    for tenor, price in curve.items():
        assert price == (D("580") * (D("0.035") * tenor / 365).exp()).quantize(D("0.0001"))
    assert curve[30] < curve[60] < curve[90]
    flat = forward_curve(D("580"), metal("BI"), [], NOW)
    assert set(flat.values()) == {D("580.0000")}


def test_indium_rule_fires_only_after_three_full_weeks_above_90() -> None:
    indium = metal("IN")
    sunday_night = day(2026, 11, 15, 23, 59)  # the week of Nov 9 is not over yet
    monday = day(2026, 11, 16)
    before = forward_curve_detail(D("300"), indium, HOT_WEEKS, sunday_night)
    after = forward_curve_detail(D("300"), indium, HOT_WEEKS, monday)
    assert not before.rule_checks[0].fired
    assert after.rule_checks[0].fired
    assert [w for w, _ in after.rule_checks[0].weeks] == [
        date(2026, 10, 26),
        date(2026, 11, 2),
        date(2026, 11, 9),
    ]
    plain = forward_curve(D("300"), indium, [], monday)
    assert after.points[30] == (plain[30] * D("1.03")).quantize(D("0.0001"))
    assert after.points[60] == plain[60] and after.points[90] == plain[90]
    assert after.premiums_pct == {30: D("3"), 60: D("0"), 90: D("0")}
    assert before.points == plain


def test_indium_rule_needs_every_week_strictly_above_threshold() -> None:
    rule = metal("IN").forward.utilisation_rules[0]
    monday = day(2026, 11, 16)
    at_threshold = display((day(2026, 10, 26), "91"), (day(2026, 11, 2), "90"), (day(2026, 11, 9), "95"))
    assert not utilisation_rule_check(rule, at_threshold, monday).fired
    missing_week = display((day(2026, 10, 26), "91"), (day(2026, 11, 9), "95"))
    check = utilisation_rule_check(rule, missing_week, monday)
    assert not check.fired and "week of 2026-11-02: no data" in check.reason
    # a week's value is the mean of its observations
    daily = display(
        (day(2026, 10, 26), "91"),
        (day(2026, 11, 2), "95"),
        (day(2026, 11, 4), "84"),
        (day(2026, 11, 9), "95"),
    )
    check = utilisation_rule_check(rule, daily, monday)
    assert not check.fired and check.weeks[1] == (date(2026, 11, 2), D("89.5"))
    assert utilisation_rule_check(dataclasses.replace(rule, threshold_pct=D("89")), daily, monday).fired


def test_rule_ignores_other_factors_and_old_runs() -> None:
    rule = UtilisationRule("display_line_utilisation", D("90"), 3, D("3"), 30)
    # an old run of hot weeks does not fire months later
    assert not utilisation_rule_check(rule, HOT_WEEKS, day(2026, 12, 20)).fired
    other = [obs("semiconductor_utilisation", o.observed_at, "99") for o in HOT_WEEKS]
    assert not utilisation_rule_check(rule, other, day(2026, 11, 16)).fired


def test_demo_factors_fire_the_indium_rule_today() -> None:
    demo = parse_factor_csv(DEMO_CSV, now=NOW)
    curve = forward_curve_detail(D("300"), metal("IN"), demo, NOW)
    assert curve.rule_checks[0].fired
    assert curve.premiums_pct[30] == D("3")


# --- daily index -------------------------------------------------------------------------------


def trade(tid: int, price: str, qty: str = "1", buyer: str = "B", seller: str = "S1") -> IndexTrade:
    return IndexTrade(tid, NOW, D(price), D(qty), buyer, seller)


def test_index_traded_needs_five_trades_from_three_sellers() -> None:
    method = IndexMethod()
    five = [
        trade(1, "100", seller="S1"),
        trade(2, "102", seller="S2"),
        trade(3, "98", seller="S3"),
        trade(4, "101", "2"),
        trade(5, "99", "2"),
    ]
    result = daily_index(five, D("90"), method)
    assert result.status == "traded"
    assert result.value == D("100.00")  # (100+102+98+202+198) / 7
    assert (result.trade_count, result.seller_count, result.volume) == (5, 3, D("7"))
    assert result.method_version == "IDX-1"

    four = daily_index(five[:4], D("90.004"), method)
    assert four.status == "assessed" and four.value == D("90.00")
    assert four.eligible_vwap is not None and "4 eligible trade(s) (minimum 5)" in four.reason

    two_sellers = [t._replace(seller="S1" if t.trade_id % 2 else "S2") for t in five]
    result = daily_index(two_sellers, D("90"), method)
    assert result.status == "assessed" and result.seller_count == 2


def test_index_excludes_self_trades_and_lists_them() -> None:
    trades = [trade(i, "100", seller=f"S{i % 3}") for i in range(5)]
    trades[0] = trade(0, "100", buyer="S0", seller="S0")
    result = daily_index(trades, D("90"), IndexMethod())
    assert result.status == "assessed"  # only 4 eligible now
    assert [(x.trade_id, x.reason) for x in result.excluded] == [(0, "self_trade")]
    assert result.considered == 5 and result.trade_count == 4


def test_index_excludes_outliers_beyond_ten_percent_of_median() -> None:
    trades = [trade(i, "100", seller=f"S{i % 3}") for i in range(5)]
    trades += [trade(10, "110", seller="S1"), trade(11, "89.99", seller="S2"), trade(12, "150", seller="S0")]
    result = daily_index(trades, D("80"), IndexMethod())
    excluded = {x.trade_id: x for x in result.excluded}
    assert set(excluded) == {11, 12}  # exactly +10 % (trade 10) stays in
    assert excluded[12].reason == "outlier"
    assert excluded[12].detail == "price 150 is +50.0 % from median 100 (limit +-10 %)"
    assert result.status == "traded" and result.trade_count == 6
    assert result.value == D("101.67")  # 610 / 6, half-even


def test_index_median_is_volume_weighted() -> None:
    # Many small prints at 130 cannot drag the anchor away from where the volume traded.
    trades = [trade(i, "100", "10", seller=f"S{i}") for i in range(3)]
    trades += [trade(10 + i, "130", "0.1", seller=f"S{i}") for i in range(6)]
    result = daily_index(trades, D("80"), IndexMethod())
    assert result.median == D("100")
    assert {x.trade_id for x in result.excluded} == {10, 11, 12, 13, 14, 15}
    assert result.status == "assessed"  # 3 eligible trades left


def test_index_with_no_trades_is_assessed() -> None:
    result = daily_index([], D("580.123"), IndexMethod())
    assert (result.status, result.value, result.trade_count, result.median) == (
        "assessed",
        D("580.12"),
        0,
        None,
    )


def test_index_method_is_configurable() -> None:
    method = IndexMethod(version="IDX-T", outlier_pct=D("50"), min_trades=1, min_sellers=1)
    result = daily_index([trade(1, "100"), trade(2, "140", seller="S2")], D("1"), method)
    assert result.status == "traded" and result.excluded == () and result.method_version == "IDX-T"


@PROPERTY
@given(st.lists(st.tuples(prices, quantities, st.integers(0, 4), st.integers(0, 4)), max_size=60))
def test_index_value_lies_within_eligible_trade_prices(raw) -> None:
    trades = [IndexTrade(i, NOW, p, q, f"M{b}", f"M{s}") for i, (p, q, b, s) in enumerate(raw)]
    result = daily_index(trades, D("1"), IndexMethod())
    excluded = {x.trade_id for x in result.excluded}
    eligible = [t for t in trades if t.trade_id not in excluded]
    assert all(t.buyer != t.seller for t in eligible)
    assert len(eligible) == result.trade_count
    if result.status == "traded":
        assert min(t.price for t in eligible) <= result.value <= max(t.price for t in eligible)
        assert len({t.seller for t in eligible}) >= 3 and len(eligible) >= 5
    else:
        assert result.value == D("1.00")


def test_index_over_100k_trades_is_fast() -> None:
    trades = [
        IndexTrade(i, NOW, D(58000 + (i * 7919) % 2000) / 100, D(1 + i % 5), i % 40, (i + 1 + i % 3) % 40)
        for i in range(100_000)
    ]
    started = clock.perf_counter()
    result = daily_index(trades, D("580"), IndexMethod())
    elapsed = clock.perf_counter() - started
    assert result.status == "traded" and result.trade_count == 100_000
    assert elapsed < 2.0  # measured ~0.1 s; generous for slow CI machines


def test_index_window_and_publication_time() -> None:
    start, end = index_window(date(2026, 11, 25), IndexMethod())
    assert start == day(2026, 11, 24, 8) and end == day(2026, 11, 25, 8)  # 16:00 CST = 08:00 UTC
    assert index_publication_time(date(2026, 11, 25), IndexMethod()) == day(2026, 11, 25, 8, 30)


# --- candles -----------------------------------------------------------------------------------


def test_bucket_start() -> None:
    at = datetime(2026, 11, 25, 13, 47, 31, 120, tzinfo=UTC)
    assert bucket_start(at, "1m") == day(2026, 11, 25, 13, 47)
    assert bucket_start(at, "1h") == day(2026, 11, 25, 13)
    assert bucket_start(at, "1d") == day(2026, 11, 25)
    # China-time days start at 16:00 UTC the day before
    assert bucket_start(at, "1d", utc_offset=timedelta(hours=8)) == day(2026, 11, 24, 16)
    assert bucket_start(day(2026, 11, 25, 15, 59), "1d", utc_offset=timedelta(hours=8)) == day(
        2026, 11, 24, 16
    )
    assert bucket_start(day(2026, 11, 25, 16), "1d", utc_offset=timedelta(hours=8)) == day(2026, 11, 25, 16)
    with pytest.raises(ValueError, match="interval"):
        bucket_start(at, "5m")  # type: ignore[arg-type]


def test_fold_candle() -> None:
    candle = None
    for price, qty in [("100", "1"), ("105", "2"), ("95", "1"), ("101", "0.5")]:
        candle = fold_candle(candle, D(price), D(qty))
    assert candle == Candle(
        open=D("100"),
        high=D("105"),
        low=D("95"),
        close=D("101"),
        volume=D("4.5"),
        turnover=D("455.5"),
        trade_count=4,
    )


@PROPERTY
@given(st.lists(st.tuples(prices, quantities), min_size=1, max_size=30))
def test_candle_invariants(fills) -> None:
    candle = None
    for price, qty in fills:
        candle = fold_candle(candle, price, qty)
    assert candle is not None
    assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
    assert candle.volume == sum(q for _, q in fills) and candle.trade_count == len(fills)
    assert candle.low <= candle.turnover / candle.volume <= candle.high


# --- config ------------------------------------------------------------------------------------


def test_default_config_covers_all_metals() -> None:
    config = load_pricing_config()
    assert set(config.metals) == {"GA", "GE", "IN", "SB", "BI", "W", "MO", "RE", "HF", "TA", "NB", "TE"}
    gallium = config.metal("gallium")
    assert gallium is config.metal("ga")
    assert dict(gallium.sensitivities) == {
        "aluminium_price": D("0.3"),
        "solar_installations": D("0.15"),
        "semiconductor_utilisation": D("0.2"),
    }
    assert dict(config.metal("GE").sensitivities) == {"solar_installations": D("0.25")}
    assert dict(config.metal("IN").sensitivities) == {"display_line_utilisation": D("0.3")}
    assert dict(config.metal("HF").sensitivities) == {"semiconductor_utilisation": D("0.2")}
    assert dict(config.metal("W").sensitivities) == {}
    assert config.metal("IN").forward.utilisation_rules == (
        UtilisationRule("display_line_utilisation", D("90"), 3, D("3"), 30),
    )
    assert config.metal("RE").half_life == timedelta(hours=72)  # override
    assert config.metal("RE").band.base_pct == D("10")  # default
    assert config.index == IndexMethod()
    with pytest.raises(KeyError, match="copper"):
        config.metal("copper")


def minimal_config() -> dict:
    return {
        "version": 1,
        "factors": {"aluminium_price": {"unit": "USD/t", "expected_interval_days": 31, "max_age_days": 45}},
        "index": {
            "method_version": "IDX-1",
            "outlier_pct": 10,
            "min_trades": 5,
            "min_sellers": 3,
            "price_quantum": "0.01",
            "window_close_local": "16:00",
            "utc_offset_hours": 8,
            "publication_delay_minutes": 30,
        },
        "defaults": {
            "price_quantum": "0.0001",
            "trade_window_hours": 72,
            "half_life_hours": 12,
            "max_spread_pct": 5,
            "weights": {"trades": 0.5, "book": 0.3, "model": 0.2},
            "band": {"base_pct": 10, "vol_threshold_pct": 15, "widen_factor": 1.5, "vol_lookback_days": 30},
            "forward": {"drift_pct_per_year": 0, "tenors_days": [30, 60, 90]},
        },
        "metals": {"GA": {"name": "gallium", "sensitivities": {"aluminium_price": 0.3}}},
    }


def test_config_parses_floats_exactly() -> None:
    config = parse_pricing_config(minimal_config())
    assert config.metal("GA").sensitivities["aluminium_price"] == D("0.3")
    assert config.metal("GA").weights == ComponentWeights(D("0.5"), D("0.3"), D("0.2"))


def test_config_reports_every_error_with_its_path() -> None:
    raw = minimal_config()
    raw["metals"]["GA"]["sensitivities"] = {"copper_price": 0.3}
    raw["metals"]["GA"]["half_lfe_hours"] = 12
    raw["metals"]["GA"]["weights"] = {"trades": -1, "book": 0, "model": 0}
    raw["metals"]["GE"] = {"name": "germanium", "weights": {"trades": 0, "book": 0, "model": 0}}
    raw["index"]["window_close_local"] = 960  # what YAML makes of an unquoted 16:00
    with pytest.raises(PricingConfigError) as caught:
        parse_pricing_config(raw)
    errors = caught.value.errors
    assert any(e.startswith("metals.GA.sensitivities.copper_price: unknown factor") for e in errors)
    assert any(e.startswith("metals.GA.half_lfe_hours: unknown key") for e in errors)
    assert "metals.GA.weights.trades: must be >= 0, got -1" in errors
    assert "metals.GE.weights: at least one weight must be positive" in errors
    assert any(e.startswith("index.window_close_local: must be a time of day") for e in errors)


def test_config_rejects_wrong_types_and_band_reaching_zero(tmp_path: Path) -> None:
    raw = minimal_config()
    raw["defaults"]["band"]["base_pct"] = 70
    raw["defaults"]["weights"]["book"] = True
    raw["metals"]["GA"]["forward"] = {"tenors_days": [30, 30]}
    with pytest.raises(PricingConfigError) as caught:
        parse_pricing_config(raw)
    text = str(caught.value)
    assert "would let the band reach zero" in text
    assert "metals.GA.weights.book: must be a number, got True" in text
    assert "metals.GA.forward.tenors_days: tenors repeat" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text("metals: [unclosed", encoding="utf-8")
    with pytest.raises(PricingConfigError, match="not valid YAML"):
        load_pricing_config(broken)
