"""Reads of the trading app: market data (public) and a member's own orders, trades, balances, holdings;
and the portal's reads (market overview, candles from trades, a receipt's proof laid out from its bundle)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, cast

from django.db import connection
from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from config.db import columns, for_update, select_rows
from members.models import Member
from receipts import grading
from receipts.bundles import Check, VerificationResult, verify_bundle
from receipts.catalogue import AGGREGATE, NON_METALS, PROPERTY, TOTAL_METALLIC, Threshold, parse_grade
from receipts.errors import ProofError
from receipts.models import OPEN_STATUSES, Grade, Metal, Receipt
from receipts.selectors import jwks, receipt_bundle
from receipts.units import convert, from_ppb, plain
from trading import pricing
from trading.models import (
    LIVE_ORDER_STATUSES,
    Account,
    AccountKind,
    Instrument,
    InstrumentStatus,
    Order,
    OrderType,
    Side,
    Trade,
)


def depth(instrument: Instrument, levels: int = 10) -> dict[str, list[dict[str, str]]]:
    """Aggregated resting quantity per price level, best first, straight from the database (the truth)."""
    rows = (Order.objects.filter(instrument=instrument, status__in=LIVE_ORDER_STATUSES, order_type=OrderType.LIMIT,
                                 tif="GTC")
            .values("side", "price").annotate(quantity=Sum(F("quantity_kg") - F("filled_kg"))))
    bids = sorted(((r["price"], r["quantity"]) for r in rows if r["side"] == Side.BUY), reverse=True)[:levels]
    asks = sorted((r["price"], r["quantity"]) for r in rows if r["side"] == Side.SELL)[:levels]

    def fmt(side: list[tuple[Decimal | None, Any]]) -> list[dict[str, str]]:
        return [{"price": f"{p.normalize():f}", "quantity_kg": f"{q:.3f}"} for p, q in side if p is not None]

    return {"bids": fmt(bids), "asks": fmt(asks)}


# Where a buy on an instrument may be delivered from: the countries of its region's approved warehouses
# (the buyer must be cleared for each). `{region}` is a placeholder or a column.
_DELIVERY_COUNTRIES = ("SELECT DISTINCT w.country FROM receipts_warehouse w WHERE w.region = {region} "
                       "AND w.approved ORDER BY w.country")


def delivery_countries(region: str) -> list[str]:
    """The countries of the region's approved warehouses: where a buy on it may be delivered from."""
    with connection.cursor() as cursor:
        cursor.execute(_DELIVERY_COUNTRIES.format(region="%s"), [region])
        return [str(row[0]) for row in cursor.fetchall()]


class OrderInstrument(NamedTuple):
    instrument: Instrument
    delivery_countries: list[str]


def instrument_for_order(code: str, *, lock: bool = False) -> OrderInstrument | None:
    """The instrument an order names, with its grade's metal as order entry's policy checks read it (id and
    symbol; the grade's and the metal's other fields load on first use) and the countries a buy on it may be
    delivered from, in one plain statement. The ORM's select_related("grade__metal") compiled a three-table
    select anew for every order (~0.9 ms) and built two models it did not need, parsing their JSON. With `lock`,
    the instrument's row is locked as order entry's serialising read (see `order_place(locked=True)`): the read
    and the lock are one statement."""
    countries = _DELIVERY_COUNTRIES.format(region="i.region")
    # PostgreSQL returns the countries as an array; SQLite (the embedded mode) has none, so a JSON array.
    as_list = (f"ARRAY({countries})" if connection.vendor == "postgresql"
               else f"(SELECT json_group_array(country) FROM ({countries}))")  # noqa: S608  # nosec B608 - a constant subquery
    found = select_rows(
        f"SELECT {columns(Instrument, 'i')}, m.id, m.symbol, {as_list} FROM trading_instrument i "  # noqa: S608  # nosec B608 - columns from meta, constant subqueries
        "JOIN receipts_grade g ON g.id = i.grade_id JOIN receipts_metal m ON m.id = g.metal_id WHERE i.code = %s"
        f"{for_update('i') if lock else ''}", [code], Instrument)
    if not found:
        return None
    instrument, metal_pk, metal_symbol, countries_found = found[0]
    if isinstance(countries_found, str):
        countries_found = sorted(json.loads(countries_found))
    db = instrument._state.db
    grade = Grade.from_db(db, ["id", "metal_id"], [instrument.grade_id, metal_pk])
    grade.metal = Metal.from_db(db, ["id", "symbol"], [metal_pk, metal_symbol])
    instrument.grade = grade
    return OrderInstrument(cast(Instrument, instrument), [str(c) for c in countries_found])


def recent_trades(instrument: Instrument, limit: int = 50) -> QuerySet[Trade]:
    return Trade.objects.filter(instrument=instrument).order_by("-executed_at", "-pk")[:limit]


def orders_of(member: Member) -> QuerySet[Order]:
    return Order.objects.filter(member=member).select_related("instrument").order_by("-created_at", "-pk")


def open_orders_of(member: Member) -> QuerySet[Order]:
    return orders_of(member).filter(status__in=LIVE_ORDER_STATUSES)


def trades_of(member: Member) -> QuerySet[Trade]:
    return (Trade.objects.filter(Q(buyer=member) | Q(seller=member)).select_related("instrument")
            .order_by("-executed_at", "-pk"))


def balances_of(member: Member) -> QuerySet[Account]:
    return Account.objects.filter(member=member, kind=AccountKind.MEMBER).order_by("currency")


def holdings_of(member: Member) -> QuerySet[Receipt]:
    return (Receipt.objects.filter(holder=member, status__in=OPEN_STATUSES)
            .select_related("grade", "lot__warehouse", "lot__metal").order_by("issued_at", "pk"))


def instrument_summary(instrument: Instrument) -> dict[str, Any]:
    last = Trade.objects.filter(instrument=instrument).order_by("-executed_at", "-pk").first()
    return {"last_price": last.price if last else None, "last_trade_at": last.executed_at if last else None}


# --- portal reads: market overview, candles, the order ticket's position, a receipt's proof ------------

DAY = timedelta(hours=24)
CANDLE_INTERVALS: dict[str, timedelta] = {
    # How far back a chart of each interval looks: enough candles to read a trend, few enough trades to fold.
    "1m": timedelta(hours=6),
    "1h": timedelta(days=14),
    "1d": timedelta(days=365),
}


def _with_market_figures(instruments: QuerySet[Instrument], now: datetime) -> QuerySet[Instrument]:
    """Last trade, the 24 h figures and the price the 24 h change is measured from, as subqueries (one
    query for every instrument, on PostgreSQL and on the embedded SQLite alike)."""
    since = now - DAY
    trades = Trade.objects.filter(instrument=OuterRef("pk"))
    newest = trades.order_by("-executed_at", "-pk")
    in_window = trades.filter(executed_at__gte=since)
    window_total = in_window.order_by().values("instrument")
    return instruments.select_related("grade__metal").annotate(
        last_price=Subquery(newest.values("price")[:1]),
        last_trade_at=Subquery(newest.values("executed_at")[:1]),
        price_before_window=Subquery(trades.filter(executed_at__lt=since)
                                     .order_by("-executed_at", "-pk").values("price")[:1]),
        first_price_in_window=Subquery(in_window.order_by("executed_at", "pk").values("price")[:1]),
        volume_24h=Subquery(window_total.annotate(total=Sum("quantity_kg")).values("total")[:1]),
        trades_24h=Subquery(window_total.annotate(count=Count("pk")).values("count")[:1]),
    )


def _market_row(instrument: Instrument) -> dict[str, Any]:
    last: Decimal | None = instrument.last_price  # type: ignore[attr-defined]
    # The 24 h change runs from the last trade before the window (or, on a market younger than a
    # day, the window's first trade) to the last trade.
    base: Decimal | None = instrument.price_before_window or instrument.first_price_in_window  # type: ignore[attr-defined]
    change = last - base if last is not None and base is not None else None
    return {
        "instrument": instrument,
        "last_price": last,
        "last_trade_at": instrument.last_trade_at,  # type: ignore[attr-defined]
        "change": change,
        "change_pct": (change / base * 100).quantize(Decimal("0.01")) if change is not None and base else None,
        "volume_24h": instrument.volume_24h or Decimal("0.000"),  # type: ignore[attr-defined]
        "trades_24h": instrument.trades_24h or 0,  # type: ignore[attr-defined]
    }


def market_overview(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every instrument with its reference price and band, last trade, 24 h change and 24 h volume."""
    now = now or timezone.now()
    return [_market_row(i) for i in _with_market_figures(Instrument.objects.order_by("code"), now)]


def instrument_market(instrument: Instrument, now: datetime | None = None) -> dict[str, Any]:
    """The market figures of one instrument (the same row the markets page shows)."""
    now = now or timezone.now()
    return _market_row(_with_market_figures(Instrument.objects.filter(pk=instrument.pk), now).get())


def market_version(instrument: Instrument, now: datetime | None = None) -> str:
    """Changes whenever what the live market panel shows may have changed: any book command (orders,
    cancels and, through them, trades), a new reference price or band, a halt, and once a minute (the
    24 h window slides). Read from the instrument row the caller has just loaded, so a poller with
    nothing new costs one indexed read."""
    minute = int((now or timezone.now()).timestamp() // 60)
    state = (instrument.book_seq, instrument.reference_price, instrument.band_low, instrument.band_high,
             instrument.status, minute)
    return hashlib.sha256(repr(state).encode()).hexdigest()[:16]


CANDLE_WIDTHS: dict[str, timedelta] = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}


def candles_from_trades(instrument: Instrument, interval: str = "1h", *, now: datetime | None = None,
                        latest: int | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """OHLC candles with volume folded from the instrument's trades (trading.pricing's buckets and fold,
    in execution order), oldest first: {time: Unix seconds of the bucket start (UTC), open, high, low,
    close, volume, trades}, prices and volumes as decimal strings. With `latest`, only the buckets of the
    last `latest` intervals (what a live chart needs to update its newest bars)."""
    if interval not in CANDLE_INTERVALS:
        raise ValueError(f"unknown candle interval {interval!r}")
    now = now or timezone.now()
    if since is None:
        since = now - CANDLE_INTERVALS[interval]
    if latest is not None:
        since = pricing.bucket_start(now, interval) - CANDLE_WIDTHS[interval] * (latest - 1)  # type: ignore[arg-type]
    rows = (Trade.objects.filter(instrument=instrument, executed_at__gte=since)
            .order_by("executed_at", "pk").values_list("executed_at", "price", "quantity_kg"))
    buckets: dict[datetime, pricing.Candle] = {}
    for executed_at, price, quantity in rows.iterator(chunk_size=2000):
        start = pricing.bucket_start(executed_at, interval)  # type: ignore[arg-type]
        buckets[start] = pricing.fold_candle(buckets.get(start), price, quantity)
    return [_candle_dict(start, c) for start, c in buckets.items()]


def _candle_dict(start: datetime, c: Any) -> dict[str, Any]:
    return {"time": int(start.timestamp()), "open": plain(c.open), "high": plain(c.high), "low": plain(c.low),
            "close": plain(c.close), "volume": plain(c.volume), "trades": c.trade_count}


def chart_candles(instrument: Instrument, interval: str, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The chart's candles: those the pricing worker has stored (trading.pricing_selectors.candles_of), and
    for the buckets from the newest stored one on, the candles folded from the trades themselves, so the
    chart is never behind the tape while the worker catches up. No stored candles: all from trades."""
    from trading.pricing_selectors import candles_of

    now = now or timezone.now()
    stored = candles_of(instrument, interval, since=now - CANDLE_INTERVALS[interval], limit=1000)
    if not stored:
        return candles_from_trades(instrument, interval, now=now)
    tail_from = stored[-1].bucket_start  # the newest stored bucket may still be filling
    tail = candles_from_trades(instrument, interval, now=now, since=tail_from)
    return [_candle_dict(c.bucket_start, c) for c in stored if c.bucket_start < tail_from] + tail


def latest_index_per_grade() -> list[Any]:
    """The newest published spot index value (trading.pricing_models.IndexValue, over every region) of every
    grade that has one, by grade code; each with `regional`, that day's regional values (METHODOLOGY §1.6),
    by region, and `regional_spread` (see `regional_spread`)."""
    from trading.pricing_models import IndexValue

    newest_day = IndexValue.objects.filter(grade=OuterRef("grade"), region="").order_by("-day").values("day")[:1]
    values = list(IndexValue.objects.filter(region="", day=Subquery(newest_day)).select_related("grade")
                  .order_by("grade__code"))
    attach_regional(values)
    return values


def attach_regional(values: list[Any]) -> None:
    """Set `regional` (the same grade and day's regional values, by region) and `regional_spread` on each of
    `values` (index values over every region), in one query."""
    from trading.pricing_models import IndexValue

    regional: dict[tuple[int, Any], list[Any]] = {}
    if values:
        rows = IndexValue.objects.filter(grade_id__in={v.grade_id for v in values}, day__in={v.day for v in values}
                                         ).exclude(region="").order_by("region")
        for row in rows:
            regional.setdefault((row.grade_id, row.day), []).append(row)
    for value in values:
        value.regional = regional.get((value.grade_id, value.day), [])
        value.regional_spread = regional_spread(value.regional)


def regional_spread(regional: list[Any]) -> dict[str, Any] | None:
    """The gap between a day's dearest and cheapest regional values: {high, low (the values), amount,
    percent of the low one}; None with fewer than two."""
    if len(regional) < 2:
        return None
    high = max(regional, key=lambda v: (v.value, v.region))
    low = min(regional, key=lambda v: (v.value, v.region))
    amount = high.value - low.value
    percent = (amount / low.value * 100).quantize(Decimal("0.1"))
    return {"high": high, "low": low, "amount": amount, "percent": percent}


def index_grades() -> list[Any]:
    """Grades an index page can show: those that have an instrument or a published index value."""
    from receipts.models import Grade

    return list(Grade.objects.filter(Q(instruments__isnull=False) | Q(index_values__isnull=False)).distinct()
                .order_by("code"))


def index_series(values: list[Any]) -> list[dict[str, Any]]:
    """Index values as chart points: {time: the index day's publication (UTC seconds), value, volume}."""
    return [{"time": int(datetime(v.day.year, v.day.month, v.day.day, tzinfo=UTC).timestamp()),
             "value": plain(v.value), "volume": plain(v.volume), "status": v.status} for v in values]


def ticket_position(member: Member, instrument: Instrument) -> dict[str, Any]:
    """What the member can put behind an order on this instrument: cash in its currency for a buy,
    eligible receipts (trading.services.eligible_receipts, the rule order entry applies) for a sell."""
    from trading.services import eligible_receipts

    account = balances_of(member).filter(currency=instrument.currency).first()
    receipts = eligible_receipts(member, instrument)
    return {
        "currency": instrument.currency,
        "available": account.available if account else Decimal("0.00"),
        "held": account.held if account else Decimal("0.00"),
        "receipts": receipts,
        "receipt_kg": sum((r.quantity_kg for r in receipts), Decimal("0.000")),
    }


def instruments_for_receipts(receipts: list[Receipt],
                             labels: dict[int, frozenset[str]] | None = None) -> dict[int, list[Instrument]]:
    """Per receipt, the open books its grade and delivery region trade on, in one query; a book of an ESG
    class (e.g. LC) only for a receipt holding that label (`labels` by receipt pk, from
    compliance.selectors.receipt_esg_labels). Order entry still checks a sell in full; this only says
    where a receipt may be offered."""
    keys = {(r.grade_id, r.lot.warehouse.region) for r in receipts if r.grade_id is not None}
    books: dict[tuple[int | None, str], list[Instrument]] = {}
    if keys:
        wanted = Q()
        for grade_id, region in keys:
            wanted |= Q(grade_id=grade_id, region=region)
        for instrument in Instrument.objects.filter(wanted, status=InstrumentStatus.OPEN).order_by("esg_class", "code"):
            books.setdefault((instrument.grade_id, instrument.region), []).append(instrument)
    held = labels or {}
    return {r.pk: [b for b in books.get((r.grade_id, r.lot.warehouse.region), [])
                   if not b.esg_class or b.esg_class in held.get(r.pk, frozenset())] for r in receipts}


# --- a receipt's proof, read from its bundle -------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptProof:
    """A receipt as its bundle states it, with the verifier's verdict on every part: the page shows what
    was verified, not a second reading of the database."""

    bundle: dict[str, Any]
    verification: VerificationResult
    checks: dict[str, Check]
    assays: list[dict[str, Any]]
    carbon_footprints: list[dict[str, Any]]
    recycled_contents: list[dict[str, Any]]
    origins: list[dict[str, Any]]
    chains: list[dict[str, Any]]

    @property
    def verified(self) -> bool:
        return self.verification.ok


def receipt_proof(receipt: Receipt) -> ReceiptProof:
    """Export the receipt's bundle and verify it against Ingot's key registry (the JWKS), exactly as
    the public verifier does; then lay out its attestations and event chains for reading."""
    bundle = receipt_bundle(receipt)
    kids = [k["kid"] for k in bundle["keys"]]
    verification = verify_bundle(bundle, trusted_keys=jwks(kids)["keys"])
    checks = {c.name: c for c in verification.checks}
    grade_spec = bundle.get("grade_spec")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for index, entry in enumerate(bundle["attestations"], start=1):
        label = f"attestation {index} ({entry['type']})"
        signature = checks.get(f"{label}: signature")
        item = {"document": entry["document"], "signed_by": entry["signature"].get("kid"),
                "signature_ok": bool(signature and signature.ok),
                "signature_detail": signature.detail if signature else "not checked"}
        if entry["type"] == "assay":
            item["table"] = assay_against_grade(entry["document"], grade_spec, bundle["lot"].get("form"))
        grouped.setdefault(entry["type"], []).append(item)
    chains = []
    for number, sealed_events in [*((a["receipt"], a["chain"]) for a in bundle.get("ancestors", [])),
                                  (bundle["receipt"]["number"], bundle["chain"])]:
        events = []
        for sealed in sealed_events:
            event = sealed["event"]
            check = checks.get(f"event {number}#{event['seq']} {event['kind']}: platform signature")
            events.append({"seq": event["seq"], "kind": event["kind"], "at": event["at"], "data": event["data"],
                           "hash": sealed["hash"], "signature_ok": bool(check and check.ok),
                           "signature_detail": check.detail if check else "not checked"})
        links = checks.get(f"chain {number}: hashes and links")
        chains.append({"receipt": number, "events": events, "links_ok": bool(links and links.ok),
                       "links_detail": links.detail if links else "not checked",
                       "own": number == bundle["receipt"]["number"]})
    return ReceiptProof(
        bundle=bundle, verification=verification, checks=checks, assays=grouped.get("assay", []),
        carbon_footprints=grouped.get("carbon_footprint", []), recycled_contents=grouped.get("recycled_content", []),
        origins=grouped.get("origin", []), chains=chains)


def assay_against_grade(document: dict[str, Any], grade_spec: dict[str, Any] | None,
                        form: str | None) -> dict[str, Any]:
    """An assay's figures against the grade's thresholds, row by row: the verdicts are receipts.grading's
    own (evaluate_grade), the measured figures are the assay's, converted to each threshold's unit."""
    try:
        profile = grading.AssayProfile.from_document(document)
    except ProofError as exc:
        return {"error": exc.message, "thresholds": [], "others": []}
    metal = grade_spec["metal"] if grade_spec else None
    reported = {row["element"]: row for row in document.get("impurities", []) if isinstance(row, dict)}
    rows: list[dict[str, Any]] = []
    thresholded: set[str] = set()
    if grade_spec:
        grade = parse_grade(grade_spec)
        failures = {f.rule: f for f in grading.evaluate_grade(grade, form or "", profile).failures}
        floor = format(grade.purity_min, "f")
        for rule in (f"purity >= {floor} %", f"purity by difference >= {floor} %"):
            failure = failures.get(rule)
            measured: Decimal | None = profile.purity_percent
            if rule.startswith("purity by"):
                metallic = profile.total_ppb(grade.metal, metallic_only=True)
                measured = None if metallic is None else Decimal(100) - metallic.scaleb(-7)
            if measured is None:
                continue
            rows.append({"subject": "purity" if rule.startswith("purity >=") else "purity by difference",
                         "rule": rule, "measured": plain(measured), "unit": "%",
                         **_verdict(None if failure is None else failure.reason)})
        for threshold in grade.thresholds:
            failure = failures.get(threshold.rule)
            thresholded.add(threshold.subject)
            rows.append({"subject": _subject_name(threshold.subject), "rule": threshold.rule,
                         "measured": _measured(profile, threshold, grade.metal), "unit": threshold.unit,
                         **_verdict(None if failure is None else failure.reason)})
    others = [{"element": element, "value": row.get("value"), "unit": row.get("unit"),
               "counts_in": "total impurities" if element in NON_METALS else "total metallic"}
              for element, row in reported.items() if element not in thresholded and element != metal]
    return {"error": None, "thresholds": rows, "others": others}


_VERDICTS = {
    None: "within the limit",
    grading.EXCEEDS_MAX: "exceeds the limit",
    grading.BELOW_MIN: "below the minimum",
    grading.NOT_MEASURED: "not measured",
    grading.FORM_NOT_ACCEPTED: "form not accepted",
    grading.INCOMPATIBLE_UNIT: "unit not comparable",
}


def _verdict(reason: str | None) -> dict[str, str]:
    return {"verdict": "pass" if reason is None else reason, "verdict_text": _VERDICTS.get(reason, str(reason))}


def _subject_name(subject: str) -> str:
    return subject.replace("_", " ")


def _measured(profile: grading.AssayProfile, threshold: Threshold, metal: str) -> str | None:
    """What the assay says about one threshold's subject, in the threshold's unit (None: not reported)."""
    if threshold.kind == PROPERTY:
        reading = profile.properties.get(threshold.subject)
        if reading is None:
            return None
        try:
            return plain(convert(reading.value, reading.unit, threshold.unit))
        except ProofError:
            return f"{plain(reading.value)} {reading.unit}"
    if threshold.kind == AGGREGATE:
        ppb = profile.total_ppb(metal, metallic_only=threshold.subject == TOTAL_METALLIC)
    else:
        ppb = profile.impurities_ppb.get(threshold.subject)
    return None if ppb is None else plain(from_ppb(ppb, threshold.unit))
