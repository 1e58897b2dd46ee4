"""API rate limits with constant cost per request: a sliding-window counter (the `limits` library) in Redis.

DRF's own throttles keep a sliding log: every request reads the caller's whole list of request times from
the cache, trims it and writes it back. A member's bot allowed 100,000 requests a minute drags a list of up
to 100,000 floats through Redis on each request, so the throttle itself slows down as the caller speeds up
(measured on the authenticated floor of bench/orders_api.py: 0.6-1.0 ms of a 3-4 ms request after a few
thousand requests). `limits`' sliding-window counter keeps two integers per caller and window and takes one
Lua call per request, whatever the rate. It weights the previous window's count by how much of it still
overlaps, so it approximates the exact log closely and never lets a burst at a window boundary through twice.

The classes keep DRF's scopes, rates (`DEFAULT_THROTTLE_RATES`), cache keys and `Retry-After` behaviour;
only the bookkeeping differs. Without Redis (local runs on SQLite) the counters live in process memory.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from rest_framework.throttling import (
    AnonRateThrottle,
    ScopedRateThrottle,
    SimpleRateThrottle,
    UserRateThrottle,
)

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES)
    from rest_framework.request import Request
    from rest_framework.views import APIView


_built = threading.Lock()
_limiters: dict[str, SlidingWindowCounterRateLimiter] = {}


def _limiter(url: str) -> SlidingWindowCounterRateLimiter:
    """The limiter for `url`, built once per process by one thread: the first requests of a gthread worker
    arrive together, and `limits`, importing its Redis client lazily in several threads at once, failed with
    "The minimum version of 3.0 for 'redis' could not be found. Found version: 0.0.0" (a 500 each)."""
    found = _limiters.get(url)
    if found is None:
        with _built:
            found = _limiters.get(url)
            if found is None:
                found = _limiters[url] = SlidingWindowCounterRateLimiter(storage_from_string(url))
    return found


def limiter() -> SlidingWindowCounterRateLimiter:
    """The process's limiter on the configured Redis (its own connection pool), or in memory without one."""
    return _limiter(str(getattr(settings, "REDIS_URL", "") or "memory://"))


@lru_cache(maxsize=64)
def _item(num_requests: int, duration: int) -> RateLimitItem:
    return RateLimitItemPerSecond(num_requests, duration)


class CounterThrottleMixin(SimpleRateThrottle):
    """`allow_request` and `wait` of a DRF rate throttle on a sliding-window counter."""

    key: str
    item: RateLimitItem

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        # SimpleRateThrottle parsed the rate into num_requests per duration seconds.
        self.key, self.item = key, _item(int(self.num_requests), int(self.duration))  # type: ignore[attr-defined]
        return limiter().hit(self.item, key)

    def wait(self) -> float | None:
        stats = limiter().get_window_stats(self.item, self.key)
        return max(0.0, stats.reset_time - time.time())


class AnonThrottle(CounterThrottleMixin, AnonRateThrottle):
    """Anonymous callers, per client address (scope `anon`)."""


class UserThrottle(CounterThrottleMixin, UserRateThrottle):
    """Signed-in callers, per user (scope `user`)."""


class ScopedThrottle(CounterThrottleMixin, ScopedRateThrottle):
    """Per view scope (`throttle_scope`), per user or client address."""

    def allow_request(self, request: Request, view: Any) -> bool:
        # ScopedRateThrottle reads the view's scope and rate here, before the counting.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
