"""Celery tasks of the receipts app: thin, idempotent, calling services."""

from celery import shared_task

from receipts.services import stock_statement_reconcile


@shared_task(name="receipts.tasks.stock_statement_reconcile")
def stock_statement_reconcile_task(statement_id: int) -> int:
    """Reconcile one stock statement; a second delivery finds it reconciled and changes nothing."""
    return len(stock_statement_reconcile(statement_id=statement_id))
