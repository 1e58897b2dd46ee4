"""Reads for pricing: the set-based trade aggregates behind the reference price and the spot index,
stored factor series, reference prices, index history and candles.

The trade aggregates run in the database (one indexed range query per instrument, decay weights
computed in SQL), so pricing never loads a window's trades into Python. They compute exactly what the
pure functions in trading/pricing.py define; tests/trading/test_pricing_db.py checks the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

from django.db.models import (
    Count,
    F,
    FloatField,
    Func,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Exp

from receipts.models import Grade
from trading import factors, pricing, selectors
from trading.models import Instrument, Trade
from trading.pricing_models import Candle, FactorObservation, IndexValue, ReferencePrice

METHODOLOGY_PATH = Path(__file__).with_name("METHODOLOGY.md")
_CONTEXT = Context(prec=34)


class EpochSeconds(Func):
    """Seconds since 1970-01-01 UTC of a datetime column, as a float, on PostgreSQL and SQLite."""

    arity = 1
    output_field = FloatField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="date_part('epoch', %(expressions)s)", **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django stores SQLite datetimes as UTC text; julianday() parses it (to ~10 µs).
        return self.as_sql(compiler, connection, template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)",
                           **extra)


# --- reference price inputs --------------------------------------------------------------------------------


def trade_summary(*, instrument_id: int, window_end: datetime, trade_window: timedelta,
                  half_life: timedelta) -> pricing.TradeSummary:
    """Decayed VWAP of the instrument's trades in (window_end - trade_window, window_end], in SQL.

    Weight = quantity x 2^(-(window_end - executed_at) / half_life), written exp(age x -ln 2 / half_life)
    (EXP is several times faster than POWER in PostgreSQL). pricing.decayed_vwap decays from the newest
    trade instead, a common factor that cancels in the ratio. The sums are double precision: the decay
    weight is a float in the pure function too, and over 10^5 trades the relative error stays near
    1e-12, eight orders of magnitude below the 0.0001 quantum the result is rounded to. One range scan
    of the (instrument, executed_at) index; three sums come back.
    """
    seconds_before_end = EpochSeconds(F("executed_at")) - Value(window_end.timestamp())
    weight = Exp(seconds_before_end * Value(math.log(2) / half_life.total_seconds()))
    price = Cast("price", FloatField())
    quantity = Cast("quantity_kg", FloatField())
    row = (Trade.objects.filter(instrument_id=instrument_id, executed_at__gt=window_end - trade_window,
                                executed_at__lte=window_end)
           .aggregate(count=Count("pk"), volume=Sum("quantity_kg"),
                      numerator=Sum(price * quantity * weight, output_field=FloatField()),
                      denominator=Sum(quantity * weight, output_field=FloatField())))
    if not row["count"] or not row["denominator"]:
        return pricing.TradeSummary(None, 0, Decimal(0))
    with localcontext(_CONTEXT):
        # repr() keeps every digit the float has; the ratio is then taken in decimal.
        vwap = Decimal(repr(row["numerator"])) / Decimal(repr(row["denominator"]))
    return pricing.TradeSummary(vwap, int(row["count"]), Decimal(row["volume"]))


def best_bid_ask(instrument: Instrument) -> tuple[Decimal | None, Decimal | None]:
    """Top of the book from the database depth (the same rows trading.selectors.depth shows)."""
    book = selectors.depth(instrument, levels=1)
    bid = Decimal(book["bids"][0]["price"]) if book["bids"] else None
    ask = Decimal(book["asks"][0]["price"]) if book["asks"] else None
    return bid, ask


def sampled_closes(instrument_ids: Sequence[int], *, window_end: datetime, points: int,
                   step: timedelta = timedelta(days=1)) -> dict[int, list[Decimal]]:
    """Per instrument, the last traded price at window_end - k x step for k = points-1 .. 0, oldest
    first; samples before the first trade are left out. One statement: `points` correlated LIMIT 1
    probes per instrument down the (instrument, executed_at) index."""
    names = [f"close_{k}" for k in range(points)]
    probes = {
        name: Subquery(Trade.objects.filter(instrument_id=OuterRef("pk"), executed_at__lte=window_end - k * step)
                       .order_by("-executed_at", "-pk").values("price")[:1])
        for k, name in enumerate(names)
    }
    rows = Instrument.objects.filter(pk__in=list(instrument_ids)).order_by().values("pk", **probes)
    closes: dict[int, list[Decimal]] = {}
    for row in rows:
        found: dict[str, Any] = dict(row)
        series = [found[name] for name in reversed(names)]
        closes[found["pk"]] = [Decimal(price) for price in series if price is not None]
    return closes


@dataclass(frozen=True)
class LastReference:
    value: Decimal
    at: datetime | None  # window_end of the stored reference; None for a seeded Instrument.reference_price
    source: str  # "reference_price" | "instrument"


def last_references(instruments: Iterable[Instrument], *, before: datetime) -> dict[int, LastReference]:
    """The newest stored reference before `before` per instrument, else the instrument's seeded price."""
    by_pk = {instrument.pk: instrument for instrument in instruments}
    newest = ReferencePrice.objects.filter(instrument_id=OuterRef("pk"), window_end__lt=before,
                                           value__isnull=False).order_by("-window_end")
    rows = (Instrument.objects.filter(pk__in=list(by_pk)).order_by()
            .values("pk", last_value=Subquery(newest.values("value")[:1]),
                    last_at=Subquery(newest.values("window_end")[:1])))
    found: dict[int, LastReference] = {}
    for row in rows:
        seeded = by_pk[row["pk"]].reference_price
        if row["last_value"] is not None:
            found[row["pk"]] = LastReference(Decimal(row["last_value"]), row["last_at"], "reference_price")
        elif seeded is not None:
            found[row["pk"]] = LastReference(Decimal(seeded), None, "instrument")
    return found


def factor_observations_known(factor_ids: Iterable[str], *, as_of: datetime) -> list[factors.FactorObservation]:
    """Observations of the factors that Ingot had recorded by `as_of` (point in time)."""
    wanted = sorted(set(factor_ids))
    if not wanted:
        return []
    rows = (FactorObservation.objects.filter(factor__in=wanted, observed_at__lte=as_of, recorded_at__lte=as_of)
            .order_by("factor", "observed_at").values_list("factor", "observed_at", "value", "unit", "source",
                                                           "recorded_at"))
    return [factors.FactorObservation(factor=f, observed_at=at, value=Decimal(v), unit=u, source=s, recorded_at=r)
            for f, at, v, u, s, r in rows]


def factor_timestamps(factor_ids: Iterable[str]) -> dict[str, set[datetime]]:
    """Every stored observed_at per factor: what the validation's duplicate and gap checks compare with."""
    stamps: dict[str, set[datetime]] = {}
    for factor_id, observed_at in FactorObservation.objects.filter(factor__in=sorted(set(factor_ids))).values_list(
            "factor", "observed_at"):
        stamps.setdefault(factor_id, set()).add(observed_at)
    return stamps


def existing_references(instrument_ids: Sequence[int], *, window_end: datetime) -> dict[int, ReferencePrice]:
    return {r.instrument_id: r for r in ReferencePrice.objects.filter(instrument_id__in=list(instrument_ids),
                                                                      window_end=window_end)}


# --- spot index inputs -------------------------------------------------------------------------------------


def index_instruments(grade: Grade, region: str = "") -> list[Instrument]:
    """Instruments whose trades make a grade's index: the standard ESG class, every delivery region (or
    `region`'s alone, for a regional value). Low-carbon twins trade at a premium (8-12 % in the report) and
    would bias the anchor."""
    rows = Instrument.objects.filter(grade=grade, esg_class="")
    if region:
        rows = rows.filter(region=region)
    return list(rows.order_by("code"))


def index_regions(grade: Grade) -> list[str]:
    """The delivery regions a grade gets regional index values for (METHODOLOGY §1.6): those of its
    standard-class instruments, when there are two or more (with one, its value is the grade's)."""
    regions = sorted(set(Instrument.objects.filter(grade=grade, esg_class="").values_list("region", flat=True)))
    return regions if len(regions) > 1 else []


def index_regions_known(grade: Grade) -> list[str]:
    """The regions a grade has regional index values for or gets them for: its regions now and any region
    published before (an instrument may have closed since)."""
    published = IndexValue.objects.filter(grade=grade).exclude(region="").values_list("region", flat=True)
    return sorted(set(index_regions(grade)) | set(published))


@dataclass(frozen=True)
class IndexAggregates:
    considered: int
    self_trades: list[tuple[int, int]]  # (trade id, member id)
    median: Decimal | None
    count: int
    seller_count: int
    volume: Decimal
    turnover: Decimal
    outliers: list[tuple[int, Decimal]]  # (trade id, price)
    volume_by_instrument: dict[int, Decimal]


def index_aggregates(instrument_ids: Sequence[int], *, start: datetime, end: datetime,
                     method: pricing.IndexMethod) -> IndexAggregates:
    """The trades of [start, end) reduced in the database to what pricing.daily_index needs. Four
    statements: the self trades (listed), volume and count per (instrument, price level) of the rest
    (the weighted median, the eligible sums and each instrument's volume follow from those exactly),
    the distinct sellers inside the outlier limits, and the outliers (listed)."""
    window = Trade.objects.filter(instrument_id__in=list(instrument_ids), executed_at__gte=start,
                                  executed_at__lt=end).order_by()
    self_trades = list(window.filter(buyer_id=F("seller_id")).order_by("pk").values_list("pk", "seller_id"))
    candidates = window.exclude(buyer_id=F("seller_id"))
    groups = [(pk, Decimal(price), Decimal(volume), count) for pk, price, volume, count in
              candidates.values("instrument_id", "price").annotate(volume=Sum("quantity_kg"), count=Count("pk"))
              .values_list("instrument_id", "price", "volume", "count")]
    considered = len(self_trades) + sum(count for *_, count in groups)
    by_instrument: dict[int, Decimal] = {}
    levels: dict[Decimal, Decimal] = {}
    for pk, price, volume, _ in groups:
        by_instrument[pk] = by_instrument.get(pk, Decimal(0)) + volume
        levels[price] = levels.get(price, Decimal(0)) + volume
    if not levels:
        return IndexAggregates(considered, self_trades, None, 0, 0, Decimal(0), Decimal(0), [], by_instrument)
    median = pricing.weighted_median(levels)
    low, high = pricing.outlier_limits(median, method)
    inside = [(price, volume, count) for _, price, volume, count in groups if low <= price <= high]
    with localcontext(_CONTEXT):
        volume = sum((v for _, v, _ in inside), Decimal(0))
        turnover = sum((p * v for p, v, _ in inside), Decimal(0))
    sellers = candidates.filter(price__gte=low, price__lte=high).aggregate(n=Count("seller_id", distinct=True))["n"]
    outliers = list(candidates.exclude(price__gte=low, price__lte=high).order_by("pk").values_list("pk", "price"))
    return IndexAggregates(considered=considered, self_trades=self_trades, median=median,
                           count=sum(c for *_, c in inside), seller_count=int(sellers), volume=volume,
                           turnover=turnover, outliers=[(pk, Decimal(price)) for pk, price in outliers],
                           volume_by_instrument=by_instrument)


def reference_at(instrument: Instrument, *, at: datetime) -> Decimal | None:
    """The instrument's reference as of `at`: the newest stored one, else its seeded price."""
    stored = (ReferencePrice.objects.filter(instrument=instrument, window_end__lte=at, value__isnull=False)
              .order_by("-window_end").values_list("value", flat=True).first())
    if stored is not None:
        return Decimal(stored)
    return Decimal(instrument.reference_price) if instrument.reference_price is not None else None


# --- public reads ------------------------------------------------------------------------------------------


def latest_reference(instrument: Instrument) -> ReferencePrice | None:
    return ReferencePrice.objects.filter(instrument=instrument).order_by("-window_end").first()


def factor_observations_of(factor_id: str, *, since: datetime | None = None,
                           until: datetime | None = None) -> QuerySet[FactorObservation]:
    rows = FactorObservation.objects.filter(factor=factor_id)
    if since is not None:
        rows = rows.filter(observed_at__gte=since)
    if until is not None:
        rows = rows.filter(observed_at__lte=until)
    return rows.order_by("observed_at")


def candles_of(instrument: Instrument, interval: str, *, since: datetime | None = None,
               until: datetime | None = None, limit: int = 500) -> list[Candle]:
    """The newest `limit` stored candles of an interval in [since, until], returned oldest first."""
    rows = Candle.objects.filter(instrument=instrument, interval=interval)
    if since is not None:
        rows = rows.filter(bucket_start__gte=since)
    if until is not None:
        rows = rows.filter(bucket_start__lte=until)
    return list(reversed(rows.order_by("-bucket_start")[:limit]))


def index_history(grade: Grade, *, region: str = "", since: date | None = None, until: date | None = None,
                  limit: int = 366) -> list[IndexValue]:
    """A grade's published index values (or one region's, §1.6), oldest first."""
    rows = IndexValue.objects.filter(grade=grade, region=region)
    if since is not None:
        rows = rows.filter(day__gte=since)
    if until is not None:
        rows = rows.filter(day__lte=until)
    return list(reversed(rows.order_by("-day")[:limit]))


def methodology_text() -> str:
    return METHODOLOGY_PATH.read_text(encoding="utf-8")
