"""Shared fixtures: API clients per member, a real Celery worker on Redis, value invariants."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories.members import MemberFactory, UserFactory, token_for

ROOT = Path(__file__).resolve().parent.parent


class MemberClient(APIClient):
    """An APIClient authenticated by token, that adds an Idempotency-Key to POSTs unless told not to."""

    counter = 0

    def post(self, path: str, data: Any = None, format: str | None = "json", *, key: str | None = "auto",
             **extra: Any) -> Any:
        if key == "auto":
            MemberClient.counter += 1
            key = f"test-{time.monotonic_ns()}-{MemberClient.counter}"
        if key is not None:
            extra["HTTP_IDEMPOTENCY_KEY"] = key
        return super().post(path, data, format=format, **extra)


def client_for(user: Any) -> MemberClient:
    client = MemberClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture(autouse=True)
def _fresh_platform_key_cache() -> None:
    """Each test's database has its own platform keys; never sign with the previous test's cached one."""
    from receipts.platform_keys import forget_active_key

    forget_active_key()


@pytest.fixture
def member_client(db: None) -> Any:
    def make(roles: list[str] | None = None, **member_fields: Any) -> MemberClient:
        member = MemberFactory(roles=roles if roles is not None else ["trader"], **member_fields)
        return client_for(UserFactory(member=member))

    return make


@pytest.fixture
def trader(member_client: Any) -> MemberClient:
    return member_client(["trader"])


# --- a real Celery worker on Redis ------------------------------------------------------

def _redis_url() -> str:
    from django.conf import settings

    return str(settings.REDIS_URL)


# Each test run has its own default queue, so parallel runs (developers, CI) sharing one Redis never
# take each other's tasks, and nobody has to flush the broker under someone else's feet.
TEST_QUEUE = f"ingot-test-{os.getpid()}"


def pytest_configure(config: pytest.Config) -> None:
    from config.celery import app

    app.conf.task_default_queue = TEST_QUEUE


def start_worker(db_name: str, *, concurrency: int = 1, extra_env: dict[str, str] | None = None,
                 queues: str = TEST_QUEUE) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}", "REDIS_URL": _redis_url(),
           **(extra_env or {})}
    # Ping this worker by name: any other worker on the broker (another run's) must not count as ready.
    node = f"test-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    log = open(ROOT / "var" / f"test-worker-{os.getpid()}.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--pool", "prefork",
         "--concurrency", str(concurrency), "-Q", queues, "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", node],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited with {proc.returncode}; see var/test-worker-*.log")
        replies = app.control.ping(destination=[node], timeout=0.5)
        if replies:
            return proc
    proc.kill()
    raise RuntimeError("Celery worker did not answer ping within 60 s")


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def celery_worker(transactional_db: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process on Redis, reading and writing the test database."""
    import redis
    from django.db import connection

    client = redis.Redis.from_url(_redis_url())
    client.delete(TEST_QUEUE)  # only this run's queue: leftovers of an earlier run with the same pid
    proc = start_worker(connection.settings_dict["NAME"])
    try:
        yield proc
    finally:
        stop_worker(proc)


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
