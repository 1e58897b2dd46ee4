"""Celery tasks of the trading app: thin, idempotent, calling services."""

import logging
from datetime import date, datetime
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.errors import ApplicationError
from receipts.models import Grade
from trading import pricing_services
from trading.models import Instrument, InstrumentStatus, Trade
from trading.pricing_models import IndexValue

log = logging.getLogger(__name__)


@shared_task(name="trading.tasks.demo_market_maker")
def demo_market_maker() -> int:
    """DEMO only: the demo market maker re-quotes around each instrument's reference price."""
    if not getattr(settings, "INGOT_DEMO_MARKET_MAKER", False):
        return 0
    from trading.demo import market_maker_requote

    return market_maker_requote()



# --- pricing (trading/pricing_services.py): ids and ISO timestamps in, one service call each ----------------
# acks_late + reject_on_worker_lost (settings) redeliver a task whose worker died mid-run; each task is
# idempotent for its arguments, so a second run stores nothing twice. Fan-out tasks enqueue their
# children on the queue they themselves came from, so a dedicated pricing queue keeps its work together.


def _same_queue(task: Task) -> dict[str, Any]:
    queue = (task.request.delivery_info or {}).get("routing_key")
    return {"queue": queue} if queue else {}


@shared_task(bind=True, name="trading.tasks.reference_prices_tick")
def reference_prices_tick(self: Task) -> str:
    """Beat, every minute: fix the window that has just closed and hand it to reference_prices_compute.
    The window travels as an argument so a redelivered compute prices the same window, not a later one.
    Windows of the last minutes that a lost queue or a stopped beat left unpriced are published again
    (from the database: `windows_missing`), oldest first, each compute idempotent per window."""
    window_end = pricing_services.window_end_for(timezone.now())
    instrument_ids = [i.pk for i in pricing_services.open_instruments()]
    for missed, ids in pricing_services.windows_missing(instrument_ids=instrument_ids,
                                                        window_end=window_end).items():
        reference_prices_compute.apply_async((missed.isoformat(), ids), **_same_queue(self))
    reference_prices_compute.apply_async((window_end.isoformat(), instrument_ids), **_same_queue(self))
    return window_end.isoformat()


@shared_task(name="trading.tasks.reference_prices_compute")
def reference_prices_compute(window_end: str, instrument_ids: list[int]) -> int:
    """Reference price, band and forward curve of the (open) instruments for one window, stored once."""
    instruments = list(Instrument.objects.filter(pk__in=instrument_ids, status=InstrumentStatus.OPEN)
                       .select_related("grade__metal"))
    stored = pricing_services.references_compute(instruments=instruments,
                                                 window_end=datetime.fromisoformat(window_end))
    return len(stored)


@shared_task(bind=True, name="trading.tasks.index_publish_due")
def index_publish_due(self: Task) -> int:
    """Beat: enqueue each grade's index, and its regional values (METHODOLOGY §1.6), for every day now due and
    not yet published (a week's catch-up)."""
    queued = 0
    scopes = {grade.pk: pricing_services.index_scopes(grade) for grade in pricing_services.index_grades()}
    for day in pricing_services.index_days_due():
        published = set(IndexValue.objects.filter(day=day).values_list("grade_id", "region"))
        for grade_id, regions in scopes.items():
            for region in regions:
                if (grade_id, region) not in published:
                    index_publish_grade.apply_async((grade_id, day.isoformat(), region), **_same_queue(self))
                    queued += 1
    return queued


@shared_task(name="trading.tasks.index_publish_grade")
def index_publish_grade(grade_id: int, day: str, region: str = "") -> str:
    grade = Grade.objects.get(pk=grade_id)
    try:
        return pricing_services.index_publish(grade=grade, day=date.fromisoformat(day), region=region).status
    except ApplicationError as refused:  # not due yet, or nothing to publish: the next sweep tries again
        log.info("index %s%s %s not published: %s", grade.code, f"/{region}" if region else "", day, refused)
        return refused.code


@shared_task(bind=True, name="trading.tasks.candles_fold_all")
def candles_fold_all(self: Task) -> int:
    """Beat, every minute: one fold task per instrument with trades past its candle watermark."""
    pending = (Instrument.objects.annotate(mark=Coalesce("candle_watermark__last_trade_id", 0))
               .filter(Exists(Trade.objects.filter(instrument=OuterRef("pk"), pk__gt=OuterRef("mark"))))
               .values_list("pk", flat=True))
    ids = list(pending)
    for pk in ids:
        candles_fold_instrument.apply_async((pk,), **_same_queue(self))
    return len(ids)


@shared_task(name="trading.tasks.candles_fold_instrument")
def candles_fold_instrument(instrument_id: int) -> int:
    return pricing_services.candles_fold(instrument=Instrument.objects.get(pk=instrument_id))
