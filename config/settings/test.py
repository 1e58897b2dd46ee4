"""Test settings: PostgreSQL and Redis on localhost, as in CI."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ingot")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from config.env import env  # noqa: E402
from config.settings.base import *  # noqa: E402,F403
from config.settings.base import REST_FRAMEWORK  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests hammer the API from threads; throttling is tested on its own where it matters.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": "100000/min", "user": "1000000/min",
                                                                     "token": "100000/min"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AXES_ENABLED = True
# Publishes go at their commit, so a test sees them at once; tests/config/test_after_commit.py spools.
AFTER_COMMIT_SPOOL_MS = env.int("AFTER_COMMIT_SPOOL_MS", default=0)

# One test database per test run, so parallel runs on one machine (developers, helpers, CI) never
# truncate each other's tables mid-test. pytest-django drops it at the end of the run.
DATABASES["default"]["TEST"] = {"NAME": f"test_ingot_{os.getpid()}"}  # noqa: F405
