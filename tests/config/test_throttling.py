"""API rate limits (config/api/throttling.py): DRF's scopes and rates on a sliding-window counter in Redis."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from config.api.throttling import AnonThrottle, ScopedThrottle, UserThrottle, limiter
from tests.conftest import client_for
from tests.factories.members import MemberFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set throttle rates for one test (DRF reads them from a dict bound at import)."""

    def set_rate(scope: str, rate: str) -> None:
        monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, scope, rate)

    yield set_rate


def _user_client() -> Any:
    # A primary key no other test run sharing this Redis will use: the counters are keyed by it.
    user = UserFactory(pk=secrets.randbelow(10**12) + 10**9, member=MemberFactory(roles=["trader"]))
    return client_for(user)


def test_the_request_past_the_user_rate_is_refused_with_retry_after(rates: Any) -> None:
    rates("user", "3/min")
    client = _user_client()
    statuses = [client.get("/api/v1/balances").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.get("/api/v1/balances")
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    # Another user of the same API is not held back by the first one's count.
    assert _user_client().get("/api/v1/balances").status_code == 200


def test_a_caller_s_bookkeeping_stays_two_counters_however_many_requests(rates: Any) -> None:
    """DRF's sliding log kept one timestamp per request in the cache; the counter keeps two integers."""
    rates("user", "100000/min")
    client = _user_client()
    for _ in range(200):
        assert client.get("/api/v1/balances").status_code == 200
    client_redis = redis.Redis.from_url(settings.REDIS_URL)
    keys = client_redis.keys(f"LIMITS:*throttle_user_{client.user.pk}*")
    assert keys, "the counter lives in Redis"
    assert all(client_redis.type(k) == b"string" for k in keys)
    assert sum(int(client_redis.get(k) or 0) for k in keys) == 200


def test_anonymous_callers_are_counted_per_address(rates: Any) -> None:
    rates("anon", "2/min")
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    anonymous = APIClient(REMOTE_ADDR=address)
    assert [anonymous.get("/api/v1/instruments").status_code for _ in range(2)] == [200, 200]
    assert anonymous.get("/api/v1/instruments").status_code == 429


def test_the_token_endpoint_has_its_own_scope(rates: Any) -> None:
    rates("token", "2/min")
    rates("anon", "1000/min")
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    client = APIClient(REMOTE_ADDR=address)
    body = {"username": "nobody-here", "password": "wrong-password"}
    assert [client.post("/api/v1/auth/token", body, format="json").status_code for _ in range(2)] == [400, 400]
    assert client.post("/api/v1/auth/token", body, format="json").status_code == 429


def test_the_api_uses_the_counter_throttles() -> None:
    from members.api import TokenView
    from trading.api import BalancesView

    assert {type(t) for t in BalancesView().get_throttles()} == {AnonThrottle, UserThrottle}
    assert [type(t) for t in TokenView().get_throttles()] == [ScopedThrottle]
    assert limiter() is limiter()  # one limiter (and connection pool) per process


def test_threads_asking_at_once_share_one_limiter() -> None:
    """A gthread worker's first requests arrive together: one limiter is built, by one of them, without error."""
    import threading

    from config.api import throttling

    saved = dict(throttling._limiters)
    throttling._limiters.clear()
    barrier, found, errors = threading.Barrier(8), [], []

    def ask() -> None:
        barrier.wait()
        try:
            found.append(limiter())
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        throttling._limiters.clear()
        throttling._limiters.update(saved)
    assert errors == [] and len(found) == 8 and len({id(f) for f in found}) == 1
