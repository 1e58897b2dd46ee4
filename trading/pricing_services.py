"""Pricing writes: factor observations (one, or a CSV file all or nothing), reference prices and the
price bands order entry reads, the daily spot index per grade, and incremental OHLC candles.

The method lives in the pure trading/pricing.py and is written down in trading/METHODOLOGY.md; this
module gathers its inputs from the database (trading/pricing_selectors.py), stores the results and
moves each instrument's band under the instrument's row lock.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import IO, Any, NoReturn

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.errors import Conflict, NotAllowed, ValidationFailed
from members.models import Role, User
from members.selectors import member_of
from receipts.models import Grade
from trading import factors, pricing, pricing_selectors
from trading.lock_objects import candle_watermark_for_update, instrument_for_update
from trading.models import Instrument, InstrumentStatus, Trade
from trading.pricing_config import MetalPricingConfig, default_pricing_config
from trading.pricing_models import (
    CANDLE_INTERVALS,
    Candle,
    CandleWatermark,
    FactorObservation,
    IndexValue,
    ReferencePrice,
)

log = logging.getLogger(__name__)

RECOMPUTE_PERIOD = timedelta(minutes=1)
FACTOR_POSTER_ROLES = (Role.PLATFORM, Role.RESERVE_AGENCY)
# Test hook only (never set in the shipped settings): seconds to sleep between computing and storing,
# so a test can kill -9 the worker mid-run deterministically. See tests/trading/test_pricing_worker.py.
PAUSE_SETTING = "INGOT_PRICING_PAUSE_BEFORE_STORE_S"


# --- factor observations -------------------------------------------------------------------------------


class FactorRejected(ValidationFailed):
    """A factor observation or file failed validation; nothing was stored. details.issues lists all."""

    default_code = "factor_invalid"


class FactorDuplicate(Conflict):
    default_code = factors.DUPLICATE_OBSERVATION


def _issues_json(issues: Iterable[factors.FactorIssue]) -> list[dict[str, Any]]:
    return [{"code": i.code, "message": i.message, "severity": i.severity,
             **({"row": i.row} if i.row is not None else {})} for i in issues]


def _reject(errors: list[factors.FactorIssue], *, file: bool = False) -> NoReturn:
    """Raise the refusal: the one error's own code (409 for a lone duplicate), or for a file with several
    errors `factor_file_invalid`; details.issues always lists every error (with row numbers in a file)."""
    first = errors[0]
    details = {"issues": _issues_json(errors)}
    if len(errors) == 1 and first.code == factors.DUPLICATE_OBSERVATION:
        raise FactorDuplicate(str(first), details=details)
    if len(errors) == 1 or not file:
        raise FactorRejected(str(first), code=first.code, details=details)
    raise FactorRejected(f"factor file rejected, nothing loaded: {len(errors)} errors; first {first}",
                         code=factors.FactorFileError.code, details=details)


def factor_poster_require(*, user: User | Any) -> None:
    """Who may post factor observations: staff users of a member (the platform's own desk) and approved
    members holding the platform or reserve-agency role. Market data moves every reference price, so
    ordinary trading members may not publish it."""
    member = member_of(user)
    if member is None:
        raise NotAllowed("Only users of a member can post factor observations.", code="no_member")
    if getattr(user, "is_staff", False):
        return
    if member.is_approved and member.has_role(*FACTOR_POSTER_ROLES):
        return
    raise NotAllowed("Only the platform or a reserve agency may post factor observations.",
                     code="factor_poster_not_authorised")


@dataclass
class FactorObservationCreated:
    observation: FactorObservation
    warnings: list[dict[str, Any]] = field(default_factory=list)


def factor_observation_create(*, factor: str, observed_at: datetime | str, value: Decimal | str, unit: str,
                              source: str, recorded_by: User | None = None,
                              now: datetime | None = None) -> FactorObservationCreated:
    """Validate one observation (trading.factors) and store it; any error stores nothing.

    Codes: unknown_factor, wrong_unit, factor_in_future, negative_value, invalid_value, invalid_timestamp
    (400, `FactorRejected`) and duplicate_observation (409, `FactorDuplicate`). A gap is a warning only.
    """
    clock = now or timezone.now()
    moment = observed_at if isinstance(observed_at, datetime) else factors.parse_timestamp(str(observed_at).strip())
    if moment is None:
        _reject([factors.FactorIssue(factors.INVALID_TIMESTAMP,
                                     f"observed_at {observed_at!r} is not an ISO date or a datetime with a UTC offset")])
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        _reject([factors.FactorIssue(factors.INVALID_VALUE, f"value {value!r} is not a number")])
    if not source.strip():
        _reject([factors.FactorIssue(factors.MISSING_FIELD, "source is empty: say where the figure comes from")])
    known = default_pricing_config().factors
    with transaction.atomic():
        issues = factors.validate_observation(factor, moment, number, unit, known, clock,
                                              pricing_selectors.factor_timestamps([factor]))
        errors = factors.errors_only(issues)
        if errors:
            _reject(errors)
        try:
            with transaction.atomic():
                row = FactorObservation.objects.create(
                    factor=factor, observed_at=moment.astimezone(UTC), value=number, unit=unit.strip(),
                    source=source.strip(), recorded_at=clock, recorded_by=recorded_by)
        except IntegrityError:
            # A concurrent post of the same timestamp won the unique constraint.
            _reject([factors.FactorIssue(factors.DUPLICATE_OBSERVATION,
                                         f"{factor} already has an observation at {moment.isoformat()}")])
    return FactorObservationCreated(row, _issues_json(i for i in issues if i.severity == "warning"))


@dataclass
class FactorLoadReport:
    created: int
    skipped: int
    warnings: list[dict[str, Any]]


def factors_load_csv(*, file: str | os.PathLike[str] | IO[str] | IO[bytes], recorded_by: User | None = None,
                     backfill: bool = False, skip_existing: bool = False,
                     now: datetime | None = None) -> FactorLoadReport:
    """Load a factor CSV (factor, observed_at, value, unit, source) all or nothing.

    Every error in the file is reported with its row number (FactorRejected, details.issues) and nothing
    is stored. `skip_existing` makes a re-load of the same file a no-op: rows identical to a stored
    observation (same factor, timestamp, value and unit) are skipped, while a stored timestamp with a
    different value is still a duplicate error. `backfill` records each observation as known from its
    own timestamp (historical series loaded once, e.g. the demo); otherwise it is known from now.
    """
    clock = now or timezone.now()
    try:
        text = factors.read_text(file)
        # First pass without the database: the file on its own (syntax, units, dates, in-file duplicates).
        preview = factors.parse_factor_csv_report(io.StringIO(text), now=clock)
    except factors.FactorFileError as exc:
        _reject(list(exc.issues), file=True)
    ids = {obs.factor for obs in preview.observations}
    stored = {(row.factor, row.observed_at): row for row in FactorObservation.objects.filter(factor__in=ids)}
    identical = {(obs.factor, obs.observed_at) for obs in preview.observations
                 if skip_existing and (obs.factor, obs.observed_at) in stored
                 and stored[(obs.factor, obs.observed_at)].value == obs.value
                 and stored[(obs.factor, obs.observed_at)].unit == obs.unit}
    existing: dict[str, set[datetime]] = {}
    for factor_id, observed_at in stored:
        if (factor_id, observed_at) not in identical:
            existing.setdefault(factor_id, set()).add(observed_at)
    try:
        report = factors.parse_factor_csv_report(io.StringIO(text), now=clock, existing=existing)
    except factors.FactorFileError as exc:
        _reject(list(exc.issues), file=True)
    fresh = [obs for obs in report.observations if (obs.factor, obs.observed_at) not in identical]
    try:
        with transaction.atomic():
            FactorObservation.objects.bulk_create([
                FactorObservation(factor=obs.factor, observed_at=obs.observed_at, value=obs.value, unit=obs.unit,
                                  source=obs.source, recorded_at=obs.observed_at if backfill else clock,
                                  recorded_by=recorded_by)
                for obs in fresh])
    except IntegrityError:
        _reject([factors.FactorIssue(factors.DUPLICATE_OBSERVATION,
                                     "another load stored some of these timestamps meanwhile; nothing loaded")],
                file=True)
    return FactorLoadReport(created=len(fresh), skipped=len(identical), warnings=_issues_json(report.warnings))


# --- reference prices and bands ------------------------------------------------------------------------


def window_end_for(moment: datetime) -> datetime:
    """The recompute window that has just closed at `moment`: its end is `moment` floored to the minute."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


# How far back the minutely tick looks for windows a lost queue (or a stopped beat) never priced.
BACKFILL_WINDOWS = 15


def windows_missing(*, instrument_ids: Sequence[int], window_end: datetime,
                    lookback: int = BACKFILL_WINDOWS) -> dict[datetime, list[int]]:
    """The closed windows of the last `lookback` minutes before `window_end` that an instrument has no stored
    reference for, although an earlier window of that range has one (so a new instrument is not priced for
    minutes before it was), mapped to those instruments."""
    oldest = window_end - lookback * RECOMPUTE_PERIOD
    stored: dict[int, set[datetime]] = {}
    for instrument_id, end in ReferencePrice.objects.filter(
            instrument_id__in=instrument_ids, window_end__gte=oldest, window_end__lt=window_end) \
            .values_list("instrument_id", "window_end"):
        stored.setdefault(instrument_id, set()).add(end)
    missing: dict[datetime, list[int]] = {}
    for instrument_id, ends in sorted(stored.items()):
        moment = min(ends) + RECOMPUTE_PERIOD
        while moment < window_end:
            if moment not in ends:
                missing.setdefault(moment, []).append(instrument_id)
            moment += RECOMPUTE_PERIOD
    return dict(sorted(missing.items()))


def metal_config(instrument: Instrument) -> MetalPricingConfig:
    return default_pricing_config().metal(instrument.grade.metal.symbol)


def _plain(number: Decimal | None) -> str | None:
    return None if number is None else f"{number:f}"


@dataclass
class _Computed:
    instrument: Instrument
    result: pricing.ReferenceResult
    components: dict[str, Any]
    band: tuple[Decimal, Decimal] | None
    band_pct: Decimal | None
    vol: Decimal | None
    forward: dict[str, Any]


def _compute(instrument: Instrument, config: MetalPricingConfig, *, window_end: datetime,
             last: pricing_selectors.LastReference | None, closes: list[Decimal],
             observations: list[factors.FactorObservation]) -> _Computed:
    summary = pricing_selectors.trade_summary(instrument_id=instrument.pk, window_end=window_end,
                                              trade_window=config.trade_window, half_life=config.half_life)
    bid, ask = pricing_selectors.best_bid_ask(instrument)
    result = pricing.reference_price(
        config=config, last_reference=last.value if last else None, trade_summary=summary, best_bid=bid,
        best_ask=ask, factor_observations=observations, now=window_end,
        last_reference_at=last.at if last else None)
    vol = pricing.realised_volatility(closes, lookback_returns=config.band.vol_lookback_days, horizon_periods=30)
    band: tuple[Decimal, Decimal] | None = None
    band_pct: Decimal | None = None
    band_note = "no reference -> no band"
    forward: dict[str, Any] = {}
    base_pct = Decimal(instrument.band_pct)
    widened = vol is not None and vol > config.band.vol_threshold_pct
    if result.value is not None and result.value >= instrument.tick_size:
        band = pricing.price_band(result.value, base_pct, vol, config.band.vol_threshold_pct,
                                  config.band.widen_factor, instrument.tick_size)
        band_pct = base_pct * config.band.widen_factor if widened else base_pct
        band_note = (f"30-day vol {vol} % above {config.band.vol_threshold_pct} % -> band widened to +-{band_pct} %"
                     if widened else
                     f"30-day vol {'unknown' if vol is None else f'{vol} %'} not above "
                     f"{config.band.vol_threshold_pct} % -> band +-{band_pct} %")
        curve = pricing.forward_curve_detail(result.value, config, observations, window_end)
        forward = {
            "points": {str(t): _plain(p) for t, p in curve.points.items()},
            "premiums_pct": {str(t): _plain(p) for t, p in curve.premiums_pct.items()},
            "drift_pct_per_year": _plain(config.forward.drift_pct_per_year),
            "rules": [{"factor": c.factor, "fired": c.fired, "premium_pct": _plain(c.premium_pct),
                       "max_tenor_days": c.max_tenor_days, "reason": c.reason,
                       "weeks": [[monday.isoformat(), _plain(mean)] for monday, mean in c.weeks]}
                      for c in curve.rule_checks],
        }
    elif result.value is not None:
        band_note = f"reference {result.value} below one tick {instrument.tick_size} -> band left unchanged"
    components = {
        "method_version": result.method_version,
        "metal": config.symbol,
        "as_of": window_end.isoformat(),
        "components": {name: {"value": _plain(c.value), "configured_weight": _plain(c.configured_weight),
                              "weight_used": _plain(c.weight_used), "detail": c.detail}
                       for name, c in result.components.items()},
        "weights_used": {name: _plain(w) for name, w in result.weights_used.items()},
        "omitted": _omitted_components(result),
        "factor_changes": {f: _plain(change) for f, change in result.factor_changes.items()},
        "factors_omitted": [{"factor": r.factor, "code": r.code, "message": r.message}
                            for r in result.reasons if r.factor is not None],
        "reasons": [{"code": r.code, "message": r.message, **({"factor": r.factor} if r.factor else {})}
                    for r in result.reasons],
        "kept_last_reference": result.kept_last_reference,
        "last_reference": ({"value": _plain(last.value), "at": last.at.isoformat() if last.at else None,
                            "source": last.source} if last else None),
        "trades": {"count": summary.trade_count, "volume": _plain(summary.volume),
                   "since": (window_end - config.trade_window).isoformat(),
                   "half_life_hours": config.half_life.total_seconds() / 3600},
        "book": {"best_bid": _plain(bid), "best_ask": _plain(ask), "max_spread_pct": _plain(config.max_spread_pct),
                 "read_at": "compute time (the book is not historised)"},
        "band": {"base_pct": _plain(base_pct), "vol_pct": _plain(vol), "vol_threshold_pct":
                 _plain(config.band.vol_threshold_pct), "widen_factor": _plain(config.band.widen_factor),
                 "widened": bool(band and widened), "half_width_pct": _plain(band_pct),
                 "low": _plain(band[0]) if band else None, "high": _plain(band[1]) if band else None,
                 "daily_closes_used": len(closes), "note": band_note},
    }
    return _Computed(instrument, result, components, band, band_pct, vol, forward)


# The reason codes pricing.reference_price gives a component it could not compute.
_MISSING_CODES = {
    "trades": ("no_trades_in_window",),
    "book": ("book_side_empty", "book_crossed", "spread_too_wide"),
    "model": ("no_last_reference",),
}


def _omitted_components(result: pricing.ReferenceResult) -> list[dict[str, str]]:
    """Each missing component with the reason it is missing (its weight went to the others)."""
    omitted = []
    for name, component in result.components.items():
        if component.value is not None:
            continue
        reason = next((r for r in result.reasons if r.code in _MISSING_CODES.get(name, ())), None)
        omitted.append({"component": name, "code": reason.code if reason else "missing",
                        "message": reason.message if reason else component.detail})
    return omitted


def references_compute(*, instruments: Sequence[Instrument], window_end: datetime) -> list[ReferencePrice]:
    """Reference price, band and forward curve of each instrument as of `window_end`, stored once.

    Idempotent per (instrument, window_end): a stored result is returned as it is, never recomputed
    (the unique constraint backs this up). Reads are set-based (trading/pricing_selectors.py); each
    instrument is then stored in its own short transaction that takes the instrument's row lock and
    moves Instrument.reference_price / band_low / band_high, which order entry checks, unless a newer
    window has already been stored.
    """
    if timezone.is_naive(window_end):
        raise ValidationFailed("window_end must be timezone-aware.", code="invalid_window")
    window_end = window_end.astimezone(UTC)
    if window_end > timezone.now() + timedelta(seconds=5):
        raise ValidationFailed("A reference price cannot be computed for a window that has not closed.",
                               code="window_not_closed")
    instruments = sorted(instruments, key=lambda i: i.pk)
    done = pricing_selectors.existing_references([i.pk for i in instruments], window_end=window_end)
    todo = [i for i in instruments if i.pk not in done]
    computed: list[_Computed] = []
    configs: dict[int, MetalPricingConfig] = {}
    for instrument in todo:
        try:
            configs[instrument.pk] = metal_config(instrument)
        except KeyError:  # a metal added to the catalogue before pricing_config.yaml: skipped, said loudly
            log.error("pricing: no pricing config for %s's metal; no reference computed", instrument.code)
    todo = [i for i in todo if i.pk in configs]
    if todo:
        wanted = {f for c in configs.values() for f in c.factors}
        observations = pricing_selectors.factor_observations_known(wanted, as_of=window_end)
        lookback = max(c.band.vol_lookback_days for c in configs.values())
        closes = pricing_selectors.sampled_closes([i.pk for i in todo], window_end=window_end, points=lookback + 1)
        last = pricing_selectors.last_references(todo, before=window_end)
        for instrument in todo:
            config = configs[instrument.pk]
            mine = [o for o in observations if o.factor in config.factors]
            computed.append(_compute(instrument, config, window_end=window_end, last=last.get(instrument.pk),
                                     closes=closes.get(instrument.pk, [])[-(config.band.vol_lookback_days + 1):],
                                     observations=mine))
        pause = float(getattr(settings, PAUSE_SETTING, 0) or 0)
        if pause:
            log.warning("pricing: pausing %.1f s before storing (%s is set)", pause, PAUSE_SETTING)
            time.sleep(pause)
    stored = dict(done)
    for item in computed:
        stored[item.instrument.pk] = _store_reference(item, window_end)
    return [stored[i.pk] for i in instruments if i.pk in stored]


def reference_price_compute(*, instrument: Instrument, window_end: datetime) -> ReferencePrice:
    """`references_compute` for one instrument."""
    stored = references_compute(instruments=[instrument], window_end=window_end)
    if not stored:
        raise Conflict(f"{instrument.code}'s metal has no pricing configuration.", code="no_pricing_config")
    return stored[0]


def _store_reference(item: _Computed, window_end: datetime) -> ReferencePrice:
    """Store one computed reference and move the instrument's band. Takes the instrument's row lock."""
    with transaction.atomic():
        _derived_data_commit()
        instrument = instrument_for_update(item.instrument.pk).get()
        stored_ends = set(ReferencePrice.objects.filter(instrument=instrument, window_end__gte=window_end)
                          .values_list("window_end", flat=True))
        if window_end in stored_ends:  # another run of the same window committed first
            return ReferencePrice.objects.get(instrument=instrument, window_end=window_end)
        value = item.result.value
        row = ReferencePrice.objects.create(
            instrument=instrument, window_start=window_end - RECOMPUTE_PERIOD, window_end=window_end, value=value,
            components=item.components, band_low=item.band[0] if item.band else None,
            band_high=item.band[1] if item.band else None, band_pct=item.band_pct, vol=item.vol,
            forward_curve=item.forward, method_version=item.result.method_version, computed_at=timezone.now())
        # A late run of an older window (a redelivered task) stores its row but never moves the band back.
        if value is not None and item.band is not None and not stored_ends:
            instrument.reference_price = value
            instrument.band_low, instrument.band_high = item.band
            instrument.save(update_fields=["reference_price", "band_low", "band_high"])
        return row


def _derived_data_commit() -> None:
    """Commit this transaction without waiting for the WAL flush (PostgreSQL's synchronous_commit off,
    for this transaction only). A reference price is derived data: a crash can lose at most the last
    fraction of a second of them, and the next minute's run recomputes them; nothing else is relaxed."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def open_instruments() -> list[Instrument]:
    return list(Instrument.objects.filter(status=InstrumentStatus.OPEN).select_related("grade__metal")
                .order_by("pk"))


# --- daily spot index ----------------------------------------------------------------------------------


def index_publish(*, grade: Grade, day: date, region: str = "", now: datetime | None = None) -> IndexValue:
    """Publish the spot index of `grade` for index day `day` (METHODOLOGY §1), once; with `region`, the
    grade's regional value there (§1.6: the same method over that region's standard instruments alone).

    A published value is never recalculated: a second call returns the stored row. Refused before the
    publication time (16:30 CST on `day`). Trades are aggregated in the database; only the excluded
    trades (self trades, outliers) are read one by one, because the record lists them.
    """
    method = default_pricing_config().index
    existing = IndexValue.objects.filter(grade=grade, region=region, day=day).first()
    if existing is not None:
        return existing
    clock = now or timezone.now()
    start, end = pricing.index_window(day, method)
    if clock < pricing.index_publication_time(day, method):
        raise Conflict(f"The {day} index is published at {pricing.index_publication_time(day, method).isoformat()}.",
                       code="index_not_due")
    instruments = pricing_selectors.index_instruments(grade, region)
    if not instruments:
        where = f" in region {region}" if region else ""
        raise Conflict(f"Grade {grade.code} has no standard-class instrument{where} to index.", code="no_instruments")
    aggregates = pricing_selectors.index_aggregates([i.pk for i in instruments], start=start, end=end, method=method)
    benchmark, assessed = _assessed_reference(instruments, aggregates, end)
    excluded = [pricing.self_trade_exclusion(pk, seller) for pk, seller in aggregates.self_trades]
    if aggregates.median is not None:
        excluded += [pricing.outlier_exclusion(pk, price, aggregates.median, method) for pk, price in aggregates.outliers]
    try:
        result = pricing.index_from_aggregates(
            count=aggregates.count, seller_count=aggregates.seller_count, volume=aggregates.volume,
            turnover=aggregates.turnover, median=aggregates.median, excluded=excluded, assessed_reference=assessed,
            considered=aggregates.considered, method=method)
    except pricing.NoAssessedReference as exc:
        raise Conflict(str(exc), code="no_assessed_reference") from exc
    try:
        with transaction.atomic():
            return IndexValue.objects.create(
                grade=grade, region=region, day=day, value=result.value, status=result.status,
                trade_count=result.trade_count,
                seller_count=result.seller_count, volume=result.volume, considered=result.considered,
                median=result.median,
                excluded=[{"trade_id": e.trade_id, "reason": e.reason, "detail": e.detail} for e in result.excluded],
                assessed_reference=assessed, assessed_from=benchmark.code if assessed is not None else "",
                instruments=[i.code for i in instruments], reason=result.reason, window_start=start,
                window_end=end, method_version=result.method_version, published_at=clock)
    except IntegrityError:
        return IndexValue.objects.get(grade=grade, region=region, day=day)


def index_scopes(grade: Grade) -> list[str]:
    """What is published for a grade each day: its index over every region (""), then one value per delivery
    region when it trades in two or more (METHODOLOGY §1.6)."""
    return ["", *pricing_selectors.index_regions(grade)]


def _assessed_reference(instruments: list[Instrument], aggregates: pricing_selectors.IndexAggregates,
                        at: datetime) -> tuple[Instrument, Decimal | None]:
    """The grade's benchmark instrument (most eligible volume in the window, then code) and its
    reference at the window close; the next instrument is tried when one has no reference yet."""
    ranked = sorted(instruments, key=lambda i: (-aggregates.volume_by_instrument.get(i.pk, Decimal(0)), i.code))
    for instrument in ranked:
        reference = pricing_selectors.reference_at(instrument, at=at)
        if reference is not None:
            return instrument, reference
    return ranked[0], None


def index_days_due(*, now: datetime | None = None, lookback_days: int = 7) -> list[date]:
    """Index days whose publication time has passed, newest `lookback_days` of them (catch-up window)."""
    method = default_pricing_config().index
    clock = now or timezone.now()
    local_today = (clock + method.utc_offset).date()
    days = [local_today - timedelta(days=k) for k in range(lookback_days)]
    return sorted(d for d in days if pricing.index_publication_time(d, method) <= clock)


def index_grades() -> list[Grade]:
    return list(Grade.objects.filter(instruments__esg_class="").distinct().order_by("code"))


# --- candles -------------------------------------------------------------------------------------------


def candles_fold(*, instrument: Instrument, batch_size: int = 20000) -> int:
    """Fold the instrument's trades newer than its watermark into 1m/1h/1d candles; returns how many.

    Incremental and idempotent: the watermark (last trade id folded) moves in the same transaction as
    the candles, under its row lock, so a rerun or a concurrent run folds nothing twice. Trades are
    folded in id order, which is execution order: order entry creates an instrument's trades under the
    instrument's row lock, so their ids grow with time and commit together.
    """
    CandleWatermark.objects.get_or_create(instrument=instrument)
    folded = 0
    while True:
        with transaction.atomic():
            mark = candle_watermark_for_update(instrument.pk).get()
            rows = list(Trade.objects.filter(instrument=instrument, pk__gt=mark.last_trade_id).order_by("pk")
                        .values_list("pk", "executed_at", "price", "quantity_kg")[:batch_size])
            if not rows:
                return folded
            _fold_rows(instrument, rows)
            mark.last_trade_id = rows[-1][0]
            mark.folded_at = timezone.now()
            mark.save(update_fields=["last_trade_id", "folded_at"])
            folded += len(rows)
        if len(rows) < batch_size:
            return folded


def _fold_rows(instrument: Instrument, rows: list[tuple[int, datetime, Decimal, Decimal]]) -> None:
    keys = {(interval, pricing.bucket_start(at, interval)) for _, at, _, _ in rows  # type: ignore[arg-type]
            for interval in CANDLE_INTERVALS}
    starts = [start for _, start in keys]
    # Only buckets this batch touches can change; a range read keeps the query small on any backend.
    current: dict[tuple[str, datetime], pricing.Candle] = {
        (c.interval, c.bucket_start): pricing.Candle(c.open, c.high, c.low, c.close, c.volume, c.turnover,
                                                     c.trade_count)
        for c in Candle.objects.filter(instrument=instrument, bucket_start__gte=min(starts),
                                       bucket_start__lte=max(starts))
        if (c.interval, c.bucket_start) in keys}
    for _, at, price, quantity in rows:
        for interval in CANDLE_INTERVALS:
            key = (interval, pricing.bucket_start(at, interval))  # type: ignore[arg-type]
            current[key] = pricing.fold_candle(current.get(key), Decimal(price), Decimal(quantity))
    Candle.objects.bulk_create(
        [Candle(instrument=instrument, interval=interval, bucket_start=start, open=c.open, high=c.high, low=c.low,
                close=c.close, volume=c.volume, turnover=c.turnover, trade_count=c.trade_count)
         for (interval, start), c in current.items() if (interval, start) in keys],
        update_conflicts=True, unique_fields=["instrument", "interval", "bucket_start"],
        update_fields=["open", "high", "low", "close", "volume", "turnover", "trade_count"], batch_size=2000)
