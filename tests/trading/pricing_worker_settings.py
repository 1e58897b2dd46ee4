"""Settings for the Celery worker of tests/trading/test_pricing_worker.py: the test settings plus a pause
between computing and storing reference prices, so the test can kill -9 the pool child mid-run."""

from config.settings.test import *  # noqa: F403

INGOT_PRICING_PAUSE_BEFORE_STORE_S = 3.0
