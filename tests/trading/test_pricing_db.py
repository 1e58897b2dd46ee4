"""Pricing on PostgreSQL: reference prices with their components and bands (which order entry then
enforces), the spot index rules, incremental candles, and factor input refused with nothing stored."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

import pytest
from django.utils import timezone

from config.errors import ApplicationError
from receipts.models import Grade
from tests.factories.members import MemberFactory
from tests.factories.pricing import observation, record_trade
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants
from trading import pricing, pricing_selectors
from trading.models import Instrument, Trade
from trading.pricing_config import default_pricing_config
from trading.pricing_models import Candle, CandleWatermark, FactorObservation, IndexValue, ReferencePrice
from trading.pricing_services import (
    FactorDuplicate,
    FactorRejected,
    candles_fold,
    factor_observation_create,
    factors_load_csv,
    index_publish,
    index_scopes,
    reference_price_compute,
    references_compute,
    window_end_for,
    windows_missing,
)
from trading.services import order_place

pytestmark = pytest.mark.django_db

GA = default_pricing_config().metal("GA")
METHOD = default_pricing_config().index


def end_of_last_minute() -> datetime:
    return window_end_for(timezone.now())


def place(member, inst, side, qty, price, *, tif="GTC"):
    place.n = getattr(place, "n", 0) + 1
    return order_place(member=member, instrument=inst, side=side, order_type="limit", tif=tif, quantity_kg=qty,
                       price=price, client_order_id=f"p{place.n}")


# --- reference price --------------------------------------------------------------------------------------


def test_reference_blends_trades_book_and_model_and_stores_every_component() -> None:
    world = ReceiptWorld()
    inst = instrument()  # GA-6N-CN, seeded reference 580.00, band +-10 %
    end = end_of_last_minute()
    buyer, seller = MemberFactory(), MemberFactory()
    prints = [(end - timedelta(hours=2), Decimal("590.00"), Decimal("2.000")),
              (end - timedelta(hours=30), Decimal("570.00"), Decimal("5.000")),
              (end - timedelta(hours=80), Decimal("400.00"), Decimal("9.000"))]  # outside the 72 h window
    for at, price, qty in prints:
        record_trade(inst, price=price, quantity=qty, at=at, buyer=buyer, seller=seller)
    maker, _ = seller_with(world, "10.000")
    place(maker, inst, "sell", "5", "585.00")
    place(funded_member(), inst, "buy", "5", "575.00")

    row = reference_price_compute(instrument=inst, window_end=end)

    expected = pricing.reference_price(config=GA, last_reference=Decimal("580.00"), trades=prints,
                                       best_bid=Decimal("575"), best_ask=Decimal("585"), factor_observations=[],
                                       now=end)
    assert row.value == expected.value
    parts = row.components
    assert Decimal(parts["components"]["trades"]["value"]) == pricing.decayed_vwap(
        prints, end, GA.half_life, window=GA.trade_window)
    assert Decimal(parts["components"]["book"]["value"]) == Decimal("580.0000")
    assert Decimal(parts["components"]["model"]["value"]) == Decimal("580.0000")  # carried forward, unanchored
    assert parts["weights_used"] == {"trades": "0.500000", "book": "0.300000", "model": "0.200000"}
    assert parts["trades"]["count"] == 2 and Decimal(parts["trades"]["volume"]) == Decimal("7.000")
    assert parts["omitted"] == []
    assert "factor_model_unanchored" in [r["code"] for r in parts["reasons"]]
    assert parts["last_reference"] == {"value": "580.00", "at": None, "source": "instrument"}
    assert set(row.forward_curve["points"]) == {"30", "60", "90"}
    assert row.window_end == end and row.window_start == end - timedelta(minutes=1)

    inst.refresh_from_db()
    low, high = pricing.price_band(row.value, Decimal(10), row.vol, GA.band.vol_threshold_pct,
                                   GA.band.widen_factor, inst.tick_size)
    assert (inst.reference_price, inst.band_low, inst.band_high) == (row.value, low, high)
    assert (row.band_low, row.band_high) == (low, high)
    assert_value_invariants()


def test_weights_move_to_book_and_model_when_there_are_no_trades() -> None:
    world = ReceiptWorld()
    inst = instrument()
    maker, _ = seller_with(world, "10.000")
    place(maker, inst, "sell", "5", "590.00")
    place(funded_member(), inst, "buy", "5", "570.00")

    row = reference_price_compute(instrument=inst, window_end=end_of_last_minute())

    parts = row.components
    assert parts["weights_used"] == {"trades": "0.000000", "book": "0.600000", "model": "0.400000"}
    [omitted] = parts["omitted"]
    assert omitted["component"] == "trades" and omitted["code"] == "no_trades_in_window"
    assert "trade weight redistributed to book and model" in omitted["message"]
    # 0.6 x 580 (mid) + 0.4 x 580 (last reference carried forward)
    assert row.value == Decimal("580.0000")


def test_only_the_model_is_left_when_the_book_is_one_sided_and_nothing_traded() -> None:
    world = ReceiptWorld()
    inst = instrument()
    maker, _ = seller_with(world, "10.000")
    place(maker, inst, "sell", "5", "600.00")

    row = reference_price_compute(instrument=inst, window_end=end_of_last_minute())

    assert row.components["weights_used"] == {"trades": "0.000000", "book": "0.000000", "model": "1.000000"}
    assert [o["code"] for o in row.components["omitted"]] == ["no_trades_in_window", "book_side_empty"]
    assert row.value == Decimal("580.0000")


def test_a_stale_factor_is_left_out_and_the_omission_is_recorded() -> None:
    inst = instrument()
    end = end_of_last_minute()
    anchor_at = end - timedelta(hours=1)
    observation("aluminium_price", end - timedelta(days=100), "2500", unit="USD/t")  # max age 45 days
    observation("solar_installations", end - timedelta(days=40), "20", unit="GW/month")
    # Published after the previous reference: news for this run.
    observation("solar_installations", end - timedelta(days=10), "22", unit="GW/month",
                recorded_at=end - timedelta(minutes=30))
    anchor = reference_price_compute(instrument=inst, window_end=anchor_at)

    row = reference_price_compute(instrument=inst, window_end=end)

    omitted = {f["factor"]: f["code"] for f in row.components["factors_omitted"]}
    assert omitted == {"aluminium_price": "factor_stale", "semiconductor_utilisation": "factor_no_observations"}
    stale = next(f for f in row.components["factors_omitted"] if f["factor"] == "aluminium_price")
    assert "older than max_age 45 days" in stale["message"]
    assert set(row.components["factor_changes"]) == {"solar_installations"}
    with localcontext(Context(prec=34)):
        change = (Decimal(22) / Decimal(20)).ln()
    assert Decimal(row.components["factor_changes"]["solar_installations"]) == change
    expected_model = pricing.factor_model(anchor.value, {"solar_installations": change}, GA.sensitivities)
    assert Decimal(row.components["components"]["model"]["value"]) == expected_model
    assert row.components["last_reference"]["source"] == "reference_price"


def test_running_a_window_twice_stores_one_result_and_an_older_window_never_moves_the_band() -> None:
    inst = instrument()
    buyer, seller = MemberFactory(), MemberFactory()
    end = end_of_last_minute()
    record_trade(inst, price="600.00", at=end - timedelta(minutes=5), buyer=buyer, seller=seller)
    first = reference_price_compute(instrument=inst, window_end=end)
    record_trade(inst, price="620.00", at=end - timedelta(minutes=4), buyer=buyer, seller=seller)

    again = reference_price_compute(instrument=inst, window_end=end)

    assert again.pk == first.pk and again.value == first.value
    assert ReferencePrice.objects.filter(instrument=inst, window_end=end).count() == 1
    older = reference_price_compute(instrument=inst, window_end=end - timedelta(minutes=2))
    inst.refresh_from_db()
    assert older.pk != first.pk and inst.reference_price == first.value


def test_windows_a_lost_queue_left_unpriced_are_found_for_the_tick_to_publish_again() -> None:
    priced, fresh, unpriced = instrument(), instrument("GA-6N-EU", region="EU"), instrument("GA-6N-US", region="US")
    end = end_of_last_minute()
    for minutes in (9, 8, 5, 1):  # the queue lost the windows 7, 6, 4, 3 and 2 minutes ago
        reference_price_compute(instrument=priced, window_end=end - timedelta(minutes=minutes))
    reference_price_compute(instrument=fresh, window_end=end - timedelta(minutes=2))  # listed 2 minutes ago

    missing = windows_missing(instrument_ids=[priced.pk, fresh.pk, unpriced.pk], window_end=end)

    assert missing == {**{end - timedelta(minutes=m): [priced.pk] for m in (7, 6, 4, 3, 2)},
                       end - timedelta(minutes=1): [fresh.pk]}  # nothing before its first window
    assert windows_missing(instrument_ids=[priced.pk], window_end=end, lookback=6) == {
        end - timedelta(minutes=m): [priced.pk] for m in (4, 3, 2)}  # only within the lookback
    for window, ids in missing.items():  # what the tick publishes: each window stored once
        references_compute(instruments=list(Instrument.objects.filter(pk__in=ids)), window_end=window)
    assert windows_missing(instrument_ids=[priced.pk, fresh.pk], window_end=end) == {}
    assert ReferencePrice.objects.filter(instrument=priced).count() == 9
    assert not ReferencePrice.objects.filter(instrument=unpriced).exists()


def test_a_window_that_has_not_closed_is_refused() -> None:
    with pytest.raises(ApplicationError) as refused:
        reference_price_compute(instrument=instrument(), window_end=timezone.now() + timedelta(minutes=5))
    assert refused.value.code == "window_not_closed"


def _daily_prints(inst, end, prices):
    buyer, seller = MemberFactory(), MemberFactory()
    for k, price in enumerate(reversed(prices)):
        record_trade(inst, price=price, at=end - timedelta(days=k, minutes=1), buyer=buyer, seller=seller)


def test_high_volatility_widens_the_band_and_order_entry_follows_the_new_band() -> None:
    end = end_of_last_minute()
    volatile = instrument("GA-6N-CN-V")
    calm = instrument("GA-6N-CN-C")
    _daily_prints(volatile, end, ["560.00" if k % 2 else "600.00" for k in range(31)])
    _daily_prints(calm, end, ["579.00" if k % 2 else "581.00" for k in range(31)])

    wide, narrow = references_compute(instruments=[volatile, calm], window_end=end)

    assert wide.vol > GA.band.vol_threshold_pct and wide.band_pct == Decimal("15.00")
    assert wide.components["band"]["widened"] is True and wide.components["band"]["daily_closes_used"] == 31
    assert narrow.vol <= GA.band.vol_threshold_pct and narrow.band_pct == Decimal("10.00")
    buyer = funded_member("10000000.00")
    for inst, row in ((volatile, wide), (calm, narrow)):
        inst.refresh_from_db()
        assert (inst.band_low, inst.band_high) == (row.band_low, row.band_high)
    # 12 % above the reference: inside +-15 %, outside +-10 %.
    wide_price = (wide.value * Decimal("1.12")).quantize(Decimal("0.01"))
    accepted = place(buyer, volatile, "buy", "1", wide_price)
    assert accepted.order.status == "open"
    narrow_price = (narrow.value * Decimal("1.12")).quantize(Decimal("0.01"))
    with pytest.raises(ApplicationError) as refused:
        place(buyer, calm, "buy", "1", narrow_price)
    assert refused.value.code == "out_of_band"
    details = refused.value.details
    assert (Decimal(details["band_low"]), Decimal(details["band_high"])) == (narrow.band_low, narrow.band_high)
    assert_value_invariants()


def test_the_sql_decayed_vwap_equals_the_pure_function() -> None:
    rng = random.Random(6)
    inst = instrument()
    end = end_of_last_minute()
    buyer, seller = MemberFactory(), MemberFactory()
    prints = []
    for _ in range(300):
        at = end - timedelta(seconds=rng.randint(-3600, 80 * 3600))  # some after the window, some before it
        price = Decimal(rng.randint(50000, 65000)) / 100
        qty = Decimal(rng.randint(1, 50000)) / 1000
        record_trade(inst, price=price, quantity=qty, at=at, buyer=buyer, seller=seller)
        prints.append((at, price, qty))

    summary = pricing_selectors.trade_summary(instrument_id=inst.pk, window_end=end, trade_window=GA.trade_window,
                                              half_life=GA.half_life)

    inside = [p for p in prints if end - GA.trade_window < p[0] <= end]
    assert summary.trade_count == len(inside) and summary.volume == sum(q for _, _, q in inside)
    assert summary.vwap.quantize(Decimal("0.0001")) == pricing.decayed_vwap(prints, end, GA.half_life,
                                                                            window=GA.trade_window)


# --- spot index -------------------------------------------------------------------------------------------


def index_day() -> tuple:
    day = (timezone.now() + METHOD.utc_offset).date() - timedelta(days=2)
    start, _ = pricing.index_window(day, METHOD)
    return day, start


def test_index_publishes_the_vwap_excluding_self_trades_and_outliers_and_lists_them() -> None:
    day, start = index_day()
    inst = instrument()
    low_carbon = instrument("GA-6N-CN-LC")
    low_carbon.esg_class = "LC"
    low_carbon.save(update_fields=["esg_class"])
    s1, s2, s3, b = (MemberFactory() for _ in range(4))
    spec = [(s1, b, "580.00", "2"), (s2, b, "582.00", "1"), (s3, b, "578.00", "3"), (s1, b, "581.00", "1"),
            (s2, b, "579.00", "2"), (s1, s1, "600.00", "4"), (s3, b, "700.00", "1"), (s2, b, "638.00", "0.5")]
    trades = [record_trade(inst, price=p, quantity=q, at=start + timedelta(hours=i + 1), buyer=buyer, seller=seller)
              for i, (seller, buyer, p, q) in enumerate(spec)]
    record_trade(low_carbon, price="650.00", at=start + timedelta(hours=1), buyer=b, seller=s3)  # other ESG class
    record_trade(inst, price="580.00", at=start - timedelta(seconds=1), buyer=b, seller=s1)  # previous index day

    row = index_publish(grade=inst.grade, day=day)

    stored = Trade.objects.filter(pk__in=[t.pk for t in trades]).order_by("pk")
    expected = pricing.daily_index([pricing.IndexTrade(t.pk, t.executed_at, t.price, t.quantity_kg, t.buyer_id,
                                                       t.seller_id) for t in stored], Decimal("580.00"), METHOD)
    assert row.status == "traded" and row.value == expected.value
    assert (row.trade_count, row.seller_count, row.volume) == (6, 3, Decimal("9.500"))
    assert row.median == expected.median == Decimal("580.00")
    excluded = {e["trade_id"]: e["reason"] for e in row.excluded}
    assert excluded == {trades[5].pk: "self_trade", trades[6].pk: "outlier"}  # 638.00 is exactly +10 %: kept
    assert row.excluded == [{"trade_id": e.trade_id, "reason": e.reason, "detail": e.detail}
                            for e in expected.excluded]
    assert row.instruments == ["GA-6N-CN"] and row.considered == 8 and row.method_version == "IDX-1"


def test_a_thin_day_publishes_the_assessed_reference_marked_as_assessed() -> None:
    day, start = index_day()
    inst = instrument()
    s1, s2, b = (MemberFactory() for _ in range(3))
    for i in range(6):  # six trades but only two sellers
        record_trade(inst, price="590.00", at=start + timedelta(hours=i + 1), buyer=b, seller=(s1, s2)[i % 2])
    _, close = pricing.index_window(day, METHOD)
    ReferencePrice.objects.create(instrument=inst, window_start=close - timedelta(minutes=61),
                                  window_end=close - timedelta(minutes=60), value=Decimal("575.1251"),
                                  components={}, method_version="REF-1")
    ReferencePrice.objects.create(instrument=inst, window_start=close + timedelta(minutes=1),
                                  window_end=close + timedelta(minutes=2), value=Decimal("999.0000"),
                                  components={}, method_version="REF-1")  # after the close: not used

    row = index_publish(grade=inst.grade, day=day)

    assert row.status == "assessed" and row.value == Decimal("575.13") and row.assessed_from == "GA-6N-CN"
    assert (row.trade_count, row.seller_count) == (6, 2)
    assert "minimum 3" in row.reason


def test_fewer_than_five_trades_is_assessed_and_publishing_twice_returns_the_first_value() -> None:
    day, start = index_day()
    inst = instrument()
    b = MemberFactory()
    for i in range(4):
        record_trade(inst, price="590.00", at=start + timedelta(hours=i + 1), buyer=b, seller=MemberFactory())
    first = index_publish(grade=inst.grade, day=day)
    record_trade(inst, price="590.00", at=start + timedelta(hours=9), buyer=b, seller=MemberFactory())

    again = index_publish(grade=inst.grade, day=day)

    assert first.status == "assessed" and first.value == Decimal("580.00")  # the seeded reference
    assert again.pk == first.pk and IndexValue.objects.filter(grade=inst.grade, day=day).count() == 1


def test_the_index_is_not_published_before_its_publication_time_nor_without_any_price() -> None:
    inst = instrument(reference=None)
    today = (timezone.now() + METHOD.utc_offset).date()
    with pytest.raises(ApplicationError) as early:
        index_publish(grade=inst.grade, day=today + timedelta(days=1))
    assert early.value.code == "index_not_due"
    day, _ = index_day()
    with pytest.raises(ApplicationError) as nothing:
        index_publish(grade=inst.grade, day=day)
    assert nothing.value.code == "no_assessed_reference"
    assert not IndexValue.objects.exists()


def test_a_grade_in_two_regions_gets_a_value_per_region_each_from_its_own_trades_and_reference() -> None:
    day, start = index_day()
    cn = instrument()  # reference 580.00
    eu = instrument("GA-6N-EU", region="EU", reference="612.00")
    buyer = MemberFactory()
    cn_trades = [record_trade(cn, price=price, quantity="2", at=start + timedelta(hours=i + 1), buyer=buyer,
                              seller=MemberFactory()) for i, price in enumerate(["556.00", "558.00", "560.00",
                                                                               "557.00", "559.00"])]
    eu_trades = [record_trade(eu, price=price, quantity="1", at=start + timedelta(hours=i + 1), buyer=buyer,
                              seller=MemberFactory()) for i, price in enumerate(["605.00", "609.00"])]

    assert index_scopes(cn.grade) == ["", "CN", "EU"]
    everywhere = index_publish(grade=cn.grade, day=day)
    china = index_publish(grade=cn.grade, day=day, region="CN")
    europe = index_publish(grade=cn.grade, day=day, region="EU")

    def vwap(trades: list) -> Decimal:
        return (sum(t.price * t.quantity_kg for t in trades) / sum(t.quantity_kg for t in trades)).quantize(
            Decimal("0.01"))

    # Over every region: seven trades, VWAP of both books (the index of sections 1.1-1.4, unchanged).
    assert (everywhere.region, everywhere.status, everywhere.trade_count) == ("", "traded", 7)
    assert everywhere.value == vwap(cn_trades + eu_trades) and everywhere.instruments == ["GA-6N-CN", "GA-6N-EU"]
    # China alone: its five trades.
    assert (china.region, china.status, china.trade_count, china.value) == ("CN", "traded", 5, vwap(cn_trades))
    assert china.instruments == ["GA-6N-CN"]
    # Europe is thin (two trades): assessed from its own book's reference, not China's.
    assert (europe.region, europe.status, europe.trade_count) == ("EU", "assessed", 2)
    assert europe.value == Decimal("612.00") and europe.assessed_from == "GA-6N-EU"
    assert europe.instruments == ["GA-6N-EU"]
    # Published once each: a second call returns the stored rows.
    assert index_publish(grade=cn.grade, day=day, region="EU").pk == europe.pk
    assert IndexValue.objects.filter(grade=cn.grade, day=day).count() == 3


def test_a_grade_in_one_region_publishes_its_index_only() -> None:
    day, start = index_day()
    inst = instrument()
    assert index_scopes(inst.grade) == [""]
    with pytest.raises(ApplicationError) as elsewhere:
        index_publish(grade=inst.grade, day=day, region="EU")
    assert elsewhere.value.code == "no_instruments" and "region EU" in elsewhere.value.message
    assert not IndexValue.objects.exists()


def test_index_days_become_due_at_half_past_four_china_time() -> None:
    from trading.pricing_services import index_days_due

    before = datetime(2026, 3, 10, 8, 29, tzinfo=UTC)  # 16:29 CST on 10 March
    after = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)
    assert index_days_due(now=before, lookback_days=3) == [datetime(2026, 3, d).date() for d in (8, 9)]
    assert index_days_due(now=after, lookback_days=3) == [datetime(2026, 3, d).date() for d in (8, 9, 10)]


# --- candles ----------------------------------------------------------------------------------------------


def _candles(inst):
    return {(c.interval, c.bucket_start): (c.open, c.high, c.low, c.close, c.volume, c.trade_count)
            for c in Candle.objects.filter(instrument=inst)}


def _from_scratch(inst):
    folded = {}
    for t in Trade.objects.filter(instrument=inst).order_by("pk"):
        for interval in ("1m", "1h", "1d"):
            key = (interval, pricing.bucket_start(t.executed_at, interval))
            folded[key] = pricing.fold_candle(folded.get(key), t.price, t.quantity_kg)
    return {k: (c.open, c.high, c.low, c.close, c.volume, c.trade_count) for k, c in folded.items()}


def test_candles_fold_only_new_trades_and_a_rerun_changes_nothing() -> None:
    inst = instrument()
    b, s = MemberFactory(), MemberFactory()
    base = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    for seconds, price in ((10, "100.00"), (40, "105.00"), (65, "98.00"), (5400, "101.00")):
        record_trade(inst, price=price, at=base + timedelta(seconds=seconds), buyer=b, seller=s)

    assert candles_fold(instrument=inst) == 4
    first = _candles(inst)
    assert first[("1m", base)] == (Decimal("100.00"), Decimal("105.00"), Decimal("100.00"), Decimal("105.00"),
                                   Decimal("2.000"), 2)
    assert first[("1h", base)] == (Decimal("100.00"), Decimal("105.00"), Decimal("98.00"), Decimal("98.00"),
                                   Decimal("3.000"), 3)
    assert first[("1d", base.replace(hour=0))][5] == 4

    record_trade(inst, price="110.00", quantity="2.000", at=base + timedelta(seconds=6300), buyer=b, seller=s)
    assert candles_fold(instrument=inst, batch_size=1) == 1
    second = _candles(inst)
    assert second[("1h", base + timedelta(hours=1))] == (Decimal("101.00"), Decimal("110.00"), Decimal("101.00"),
                                                          Decimal("110.00"), Decimal("3.000"), 2)
    assert second[("1m", base)] == first[("1m", base)]  # untouched bucket
    assert second == _from_scratch(inst)

    assert candles_fold(instrument=inst) == 0
    assert _candles(inst) == second
    assert CandleWatermark.objects.get(pk=inst.pk).last_trade_id == Trade.objects.filter(instrument=inst).latest("pk").pk


def test_folding_in_small_batches_gives_the_same_candles_as_one_pass() -> None:
    rng = random.Random(3)
    one, many = instrument("GA-6N-CN-A"), instrument("GA-6N-CN-B")
    b, s = MemberFactory(), MemberFactory()
    at = datetime(2026, 3, 2, 23, 50, tzinfo=UTC)
    for _ in range(60):
        at += timedelta(seconds=rng.randint(1, 90))
        price, qty = Decimal(rng.randint(9000, 11000)) / 100, Decimal(rng.randint(1, 9))
        for inst in (one, many):
            record_trade(inst, price=price, quantity=qty, at=at, buyer=b, seller=s)
    candles_fold(instrument=one)
    while candles_fold(instrument=many, batch_size=7):
        pass
    assert _candles(one) == _candles(many) == _from_scratch(one)


# --- factor observations ------------------------------------------------------------------------------------


GOOD = {"factor": "aluminium_price", "observed_at": "2026-01-01", "value": "2400", "unit": "USD/t",
        "source": "test desk"}


@pytest.mark.parametrize(("change", "code", "error"), [
    ({"observed_at": "2099-01-01"}, "factor_in_future", FactorRejected),
    ({"value": "-3"}, "negative_value", FactorRejected),
    ({"factor": "copper_price"}, "unknown_factor", FactorRejected),
    ({"unit": "USD/kg"}, "wrong_unit", FactorRejected),
    ({"observed_at": "2026-01-01T00:00:00"}, "invalid_timestamp", FactorRejected),
    ({"value": "lots"}, "invalid_value", FactorRejected),
    ({}, "duplicate_observation", FactorDuplicate),
])
def test_bad_factor_observations_are_refused_with_a_clear_code_and_nothing_stored(change, code, error) -> None:
    observation("aluminium_price", datetime(2026, 1, 1, tzinfo=UTC), "2400", unit="USD/t")
    before = FactorObservation.objects.count()
    with pytest.raises(error) as refused:
        factor_observation_create(**{**GOOD, **change})
    assert refused.value.code == code
    assert FactorObservation.objects.count() == before


def test_a_good_observation_is_stored_with_its_source_and_a_gap_is_only_a_warning() -> None:
    observation("aluminium_price", datetime(2025, 10, 1, tzinfo=UTC), "2400", unit="USD/t")
    created = factor_observation_create(**GOOD)
    row = created.observation
    assert (row.factor, row.value, row.unit, row.source) == ("aluminium_price", Decimal("2400"), "USD/t", "test desk")
    assert row.observed_at == datetime(2026, 1, 1, tzinfo=UTC) and row.recorded_at <= timezone.now()
    assert [w["code"] for w in created.warnings] == ["gap"]


CSV_GOOD = ("factor,observed_at,value,unit,source\n"
            "aluminium_price,2026-01-01,2400,USD/t,desk\n"
            "aluminium_price,2026-02-01,2450,USD/t,desk\n"
            "display_line_utilisation,2026-02-02,91.5,%,desk\n")


def test_a_factor_file_loads_all_or_nothing_and_reloading_it_can_be_a_no_op() -> None:
    bad = CSV_GOOD + "aluminium_price,2026-03-01,-1,USD/t,desk\nnickel_price,2026-03-01,1,USD/t,desk\n"
    with pytest.raises(FactorRejected) as refused:
        factors_load_csv(file=io.StringIO(bad))
    assert refused.value.code == "factor_file_invalid"
    assert [(i["row"], i["code"]) for i in refused.value.details["issues"]] == [(5, "negative_value"),
                                                                                (6, "unknown_factor")]
    assert not FactorObservation.objects.exists()

    report = factors_load_csv(file=io.StringIO(CSV_GOOD))
    assert (report.created, report.skipped) == (3, 0)
    again = factors_load_csv(file=io.StringIO(CSV_GOOD), skip_existing=True)
    assert (again.created, again.skipped) == (0, 3)
    with pytest.raises(FactorRejected) as duplicate:
        factors_load_csv(file=io.StringIO(CSV_GOOD))
    assert {i["code"] for i in duplicate.value.details["issues"]} == {"duplicate_observation"}
    changed = CSV_GOOD.replace("2450", "2460")
    with pytest.raises(FactorDuplicate):
        factors_load_csv(file=io.StringIO(changed), skip_existing=True)
    assert FactorObservation.objects.count() == 3


def test_backfilled_factors_count_from_their_own_date_and_fresh_loads_from_now() -> None:
    factors_load_csv(file=io.StringIO(CSV_GOOD), backfill=True)
    row = FactorObservation.objects.get(factor="aluminium_price", observed_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert row.recorded_at == row.observed_at
    FactorObservation.objects.all().delete()
    factors_load_csv(file=io.StringIO(CSV_GOOD))
    assert FactorObservation.objects.filter(recorded_at__lt=timezone.now() - timedelta(minutes=1)).count() == 0


def test_the_demo_factor_file_loads_and_grades_exist_for_every_demo_metal() -> None:
    from pathlib import Path

    import trading

    report = factors_load_csv(file=Path(trading.__file__).with_name("data") / "factors_demo.csv", backfill=True,
                              now=datetime(2026, 12, 1, tzinfo=UTC))
    assert report.created == FactorObservation.objects.count() > 200
    assert Grade.objects.filter(code="GA-6N").exists()
