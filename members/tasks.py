"""Celery tasks of the members app: thin, idempotent, calling services."""

from celery import shared_task

from members.services import idempotency_records_purge


@shared_task(name="members.tasks.idempotency_keys_purge")
def idempotency_keys_purge() -> int:
    """Forget idempotency keys older than the retention window; running it twice is harmless."""
    return idempotency_records_purge()
