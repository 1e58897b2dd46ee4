"""Embedded default for `make run`: SQLite and the filesystem broker unless DATABASE_URL / REDIS_URL are set."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
INGOT_DEMO_MARKET_MAKER = env.bool("INGOT_DEMO_MARKET_MAKER", default=True)
INGOT_DEMO = env.bool("INGOT_DEMO", default=True)
