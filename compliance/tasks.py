"""Celery tasks of the compliance app: thin, idempotent, calling services.

The database, not the broker, is the source of truth: every task here may run twice, or not at all
because a queue was lost, and `pending_work_sweep` (Celery beat) re-publishes from the database what
should have run and has not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from django.utils import timezone

from compliance.models import ScreeningList
from compliance.selectors import receipts_pending_esg
from compliance.services import ESG_CHUNK, esg_evaluate, member_screen
from members.models import Member
from receipts.models import OPEN_STATUSES, Receipt, StockStatement

logger = logging.getLogger(__name__)

# Work younger than this is probably still on its way through the queue: the sweep leaves it alone.
SWEEP_MIN_AGE_SECONDS = 60


@shared_task(name="compliance.tasks.members_screen_all")
def members_screen_all(screening_list_id: int | None = None) -> int:
    """Screen every member against the active list; returns how many hits are flagged now.

    Enqueued when a list load commits (with its id) and daily by beat (without). A stale id (a newer
    list replaced it) does nothing: the newer load enqueued its own run. Running twice is harmless:
    member_screen never flags the same listed party twice for a member.
    """
    active = ScreeningList.objects.filter(active=True).first()
    if active is None or (screening_list_id is not None and active.pk != screening_list_id):
        return 0
    hits = 0
    for member in Member.objects.order_by("pk").iterator(chunk_size=500):
        hits += len(member_screen(member=member))
    # Done for this version: the sweep stops re-publishing it. (A member who registers meanwhile is screened
    # at registration.)
    ScreeningList.objects.filter(pk=active.pk, rescreen_due=True).update(rescreen_due=False)
    return hits


@shared_task(name="compliance.tasks.member_screen")
def member_screen_task(member_id: int) -> int:
    """Screen one member (e.g. after a refused transfer rolled its fresh flag back)."""
    member = Member.objects.filter(pk=member_id).first()
    return len(member_screen(member=member)) if member is not None else 0


# --- ESG -----------------------------------------------------------------------------------------


@shared_task(name="compliance.tasks.esg_evaluate_receipts")
def esg_evaluate_receipts(receipt_ids: list[int]) -> int:
    """Evaluate these receipts under every active pack version; returns the rows written (0 on a rerun)."""
    return esg_evaluate(receipt_ids=receipt_ids).written


@shared_task(bind=True, name="compliance.tasks.esg_evaluate_all")
def esg_evaluate_all(self: Task, chunk_size: int = ESG_CHUNK) -> int:
    """Fan out: one `esg_evaluate_receipts` task per chunk of open receipts, on the queue this task came
    from. Enqueued when a pack version changes and daily by beat (an assay ages: a result can change with
    nothing else changing). Returns the number of chunks enqueued."""
    queue = None if self.request.called_directly else (self.request.delivery_info or {}).get("routing_key")
    ids = Receipt.objects.filter(status__in=OPEN_STATUSES).order_by("pk").values_list("pk", flat=True)
    return enqueue_esg(ids, chunk_size=chunk_size, queue=queue)


def enqueue_esg(receipt_ids: Iterable[int], *, chunk_size: int = ESG_CHUNK, queue: str | None = None) -> int:
    """Publish `esg_evaluate_receipts` per chunk of ids (on `queue`, default: the default queue); returns how
    many tasks were published.

    A broker that is down loses nothing: the failure is logged and the sweep finds the receipts again."""
    def publish(ids: list[int]) -> None:
        if queue:
            esg_evaluate_receipts.apply_async((ids,), queue=queue)
        else:
            esg_evaluate_receipts.delay(ids)

    chunk: list[int] = []
    published = 0
    try:
        for pk in receipt_ids:
            chunk.append(pk)
            if len(chunk) >= chunk_size:
                publish(chunk)
                published, chunk = published + 1, []
        if chunk:
            publish(chunk)
            published += 1
    except Exception:
        logger.warning("ESG evaluation not enqueued; the pending-work sweep will re-publish it", exc_info=True)
    return published


def enqueue_esg_all() -> None:
    """Publish `esg_evaluate_all` when there is anything to evaluate (robust to a broker that is down)."""
    if not Receipt.objects.filter(status__in=OPEN_STATUSES).exists():
        return
    try:
        esg_evaluate_all.delay()
    except Exception:
        logger.warning("ESG re-evaluation not enqueued; the daily run or the sweep will catch up", exc_info=True)


@shared_task(name="compliance.tasks.pending_work_sweep")
def pending_work_sweep(min_age_seconds: int = SWEEP_MIN_AGE_SECONDS) -> dict[str, Any]:
    """Re-publish from the database the work a lost queue dropped (Celery beat, every few minutes):

    - open receipts issued more than `min_age_seconds` ago that lack a result under an active pack version
      -> `esg_evaluate_receipts` in chunks;
    - stock statements received more than `min_age_seconds` ago and still not reconciled
      -> `receipts.tasks.stock_statement_reconcile_task` each;
    - the active screening list, loaded more than `min_age_seconds` ago, whose members were never all
      screened against it (`rescreen_due`) -> `members_screen_all`.

    Every one of these tasks is idempotent, so publishing work that is merely slow costs a duplicate run, never a
    duplicate effect.
    """
    from receipts.tasks import stock_statement_reconcile_task

    cutoff = timezone.now() - timedelta(seconds=min_age_seconds)
    receipt_ids = list(receipts_pending_esg(issued_before=cutoff).order_by("pk").values_list("pk", flat=True))
    esg_tasks = enqueue_esg(receipt_ids) if receipt_ids else 0
    statements = list(StockStatement.objects.filter(reconciled_at__isnull=True, received_at__lt=cutoff)
                      .order_by("pk").values_list("pk", flat=True))
    for statement_id in statements:
        stock_statement_reconcile_task.delay(statement_id)
    rescreen = ScreeningList.objects.filter(active=True, rescreen_due=True, loaded_at__lt=cutoff) \
        .values_list("pk", flat=True).first()
    if rescreen is not None:
        members_screen_all.delay(rescreen)
    if receipt_ids or statements or rescreen is not None:
        logger.info("pending-work sweep re-published %d receipt(s) in %d task(s), %d stock statement(s) and "
                    "%d rescreen(s)", len(receipt_ids), esg_tasks, len(statements), int(rescreen is not None))
    return {"receipts": len(receipt_ids), "esg_tasks": esg_tasks, "stock_statements": len(statements),
            "rescreens": int(rescreen is not None)}
