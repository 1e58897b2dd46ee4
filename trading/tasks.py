"""Celery tasks of the trading app: thin, idempotent, calling services."""

from celery import shared_task
from django.conf import settings


@shared_task(name="trading.tasks.demo_market_maker")
def demo_market_maker() -> int:
    """DEMO only: the demo market maker re-quotes around each instrument's reference price."""
    if not getattr(settings, "INGOT_DEMO_MARKET_MAKER", False):
        return 0
    from trading.demo import market_maker_requote

    return market_maker_requote()
