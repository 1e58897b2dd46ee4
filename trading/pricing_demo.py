"""DEMO pricing data: the demo factor series, a few days of price history, reference prices, candles and
the daily index, so the charts and the index page are not empty. Idempotent; everything here is demo data.

The history is made of real trades (order entry, delivery versus payment, fees) between the demo members,
so cash and receipts stay consistent; only their execution time is then moved back into the past days.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.utils import timezone

from config.errors import ApplicationError
from members.models import KycStatus, Member
from trading import pricing
from trading.models import LIVE_ORDER_STATUSES, Instrument, InstrumentStatus, Order, Trade
from trading.pricing_config import default_pricing_config
from trading.pricing_models import IndexValue
from trading.pricing_services import (
    candles_fold,
    factors_load_csv,
    index_grades,
    index_publish,
    index_scopes,
    references_compute,
    window_end_for,
)
from trading.services import eligible_receipts, order_cancel, order_place

DEMO_FACTORS = Path(__file__).with_name("data") / "factors_demo.csv"
HISTORY_DAYS = 5
TAG = "demo-hist"  # client order id prefix of the history's orders: the marker that it was built
# Trades per index day: the first instrument of a grade gets enough for a "traded" index where three
# sellers hold receipts; the others stay thin and publish the assessed reference.
TRADES_PER_DAY = 6


def load() -> list[str]:
    lines = [f"  pricing:    {_load_factors()}"]
    trades = 0 if Order.objects.filter(client_order_id__startswith=TAG).exists() else _build_history()
    references = _compute_references()
    folded = sum(candles_fold(instrument=i) for i in Instrument.objects.order_by("pk"))
    published = _publish_index()
    lines.append(f"              DEMO price history: {trades} trades over the last {HISTORY_DAYS} days (new this run), "
                 f"{references} reference prices, {folded} trades folded into candles, {published} index values new")
    lines.append("              reference: GET /api/v1/instruments/GA-6N-CN/reference; index: GET /api/v1/index/GA-6N")
    return lines


def _load_factors() -> str:
    try:
        report = factors_load_csv(file=DEMO_FACTORS, backfill=True, skip_existing=True)
    except ApplicationError as refused:  # e.g. a machine clock earlier than the demo series
        return f"demo factor series not loaded ({refused.code}: {refused.message})"
    return (f"demo factor series {DEMO_FACTORS.name}: {report.created} observations loaded, "
            f"{report.skipped} already there")


def _traders() -> list[Member]:
    return list(Member.objects.filter(kyc_status=KycStatus.APPROVED, users__isnull=False,
                                      roles__role="trader").distinct().order_by("pk"))


def _tick(price: Decimal, instrument: Instrument) -> Decimal:
    return (price / instrument.tick_size).to_integral_value() * instrument.tick_size


def _build_history() -> int:
    """Real trades between demo members on each standard instrument, moved back into the last few index days."""
    method = default_pricing_config().index
    today = (timezone.now() + method.utc_offset).date()
    traders = _traders()
    made = 0
    seen_grades: set[int] = set()
    for instrument in (Instrument.objects.filter(status=InstrumentStatus.OPEN, esg_class="")
                       .exclude(reference_price=None).select_related("grade__metal").order_by("code")):
        rng = random.Random(instrument.code)
        sellers = [m for m in traders if eligible_receipts(m, instrument)]
        if not sellers:
            continue
        per_day = TRADES_PER_DAY if instrument.grade_id not in seen_grades and len(sellers) >= 3 else 2
        seen_grades.add(instrument.grade_id)
        reference = instrument.reference_price or Decimal(0)
        level = reference
        for back in range(HISTORY_DAYS, 0, -1):
            level = level * (1 + Decimal(rng.uniform(-0.02, 0.02)))
            day_start, _ = pricing.index_window(today - timedelta(days=back), method)
            for n in range(per_day):
                price = _tick(level * (1 + Decimal(rng.uniform(-0.006, 0.006))), instrument)
                price = min(max(price, instrument.band_low or price), instrument.band_high or price)
                at = day_start + timedelta(hours=1 + 3 * n, minutes=rng.randint(0, 50))
                made += _one_trade(instrument, sellers[n % len(sellers)], traders, price, at, f"{back}-{n}")
    for order in Order.objects.filter(client_order_id__startswith=TAG, status__in=LIVE_ORDER_STATUSES):
        order_cancel(member=order.member, order_id=order.pk)
    return made


def _one_trade(instrument: Instrument, seller: Member, traders: list[Member], price: Decimal, at: datetime,
               tag: str) -> int:
    """Sell 1 kg and buy it back from the first demo member allowed to; date the fills at `at`."""
    coid = f"{TAG}-{instrument.code}-{tag}"
    try:
        sold = order_place(member=seller, instrument=instrument, side="sell", order_type="limit", tif="GTC",
                           quantity_kg=Decimal(1), price=price, client_order_id=f"{coid}-s")
    except ApplicationError:
        return 0
    trades = list(sold.trades)
    for buyer in traders:
        if trades:
            break
        if buyer.pk == seller.pk:
            continue
        try:
            bought = order_place(member=buyer, instrument=instrument, side="buy", order_type="limit", tif="IOC",
                                 quantity_kg=Decimal(1), price=price, client_order_id=f"{coid}-b{buyer.pk}")
        except ApplicationError:
            continue
        trades = list(bought.trades)
    Trade.objects.filter(pk__in=[t.pk for t in trades]).update(executed_at=at)
    return len(trades)


def _compute_references() -> int:
    """References at each past index close (so the history has its assessed prices), then the last minute."""
    method = default_pricing_config().index
    instruments = list(Instrument.objects.filter(status=InstrumentStatus.OPEN).select_related("grade__metal"))
    now = timezone.now()
    today = (now + method.utc_offset).date()
    closes = [pricing.index_window(today - timedelta(days=back), method)[1].astimezone(UTC)
              for back in range(HISTORY_DAYS, -1, -1)]
    windows = [c for c in closes if c < now] + [window_end_for(now)]
    return sum(len(references_compute(instruments=instruments, window_end=end)) for end in windows)


def _publish_index() -> int:
    method = default_pricing_config().index
    now = timezone.now()
    today = (now + method.utc_offset).date()
    before = IndexValue.objects.count()
    for grade in index_grades():
        for back in range(HISTORY_DAYS, -1, -1):
            day = today - timedelta(days=back)
            if pricing.index_publication_time(day, method) > now:
                continue
            for region in index_scopes(grade):
                try:
                    index_publish(grade=grade, day=day, region=region)
                except ApplicationError:  # no trades and no reference for that grade: nothing to publish
                    continue
    return IndexValue.objects.count() - before
