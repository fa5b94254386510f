"""The pooled Redis client, and the guard that applies `on_backend_error`.

One client (a blocking connection pool of `max_connections`) per backend, shared by
the rate limiter and the budget keeper. Calls fail fast: one reconnect at most (a
pooled socket may be stale after a Redis restart), then the feature's
`on_backend_error` decides. After a failure the backend is left alone for
`retry_interval` seconds, so during an outage requests are decided at once instead
of each waiting for a connect timeout; the first request after it probes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ktproxy.config import OnBackendError, RedisState
from ktproxy.limits import Feature, StateUnavailable

log = logging.getLogger("ktproxy.state")

# What a failed call raises (redis-py wraps most socket errors; not all of them).
BACKEND_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
LOG_EVERY = 30.0  # seconds between two "still failing" log lines


def connect(spec: RedisState, env: Mapping[str, str]) -> aioredis.Redis:
    """A client for the URL in `spec.url`'s environment variable (connects on first use)."""
    url = env.get(spec.url.env)
    if not url:
        raise ValueError(f"environment variable {spec.url.env} (state.redis.url) is not set")
    retry = Retry(NoBackoff(), 1)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=spec.max_connections,
        timeout=spec.command_timeout,  # waiting for a free pooled connection
        socket_connect_timeout=spec.connect_timeout,
        socket_timeout=spec.command_timeout,
        retry=retry,
    )
    return aioredis.Redis(connection_pool=pool, retry=retry)


class Guard:
    """Backoff, logging and counting of backend failures, for one client."""

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self._now = clock
        self._down_until = 0.0
        self._failing = False
        self._last_log = float("-inf")
        self._unlogged = 0
        # (feature, "served" | "refused") -> requests decided without the backend
        self.errors: dict[tuple[str, str], int] = {}

    def available(self) -> bool:
        """False during the pause after a failure."""
        return self._now() >= self._down_until

    def succeeded(self) -> None:
        """A call went through."""
        if self._failing:
            self._failing = False
            log.info("state backend reachable again")

    def failed(
        self, feature: str, policy: OnBackendError, exc: BaseException | None
    ) -> StateUnavailable | None:
        """Record a call that failed (`exc`) or was skipped during the pause (None); the
        exception to raise when `policy` fails closed, None when it fails open."""
        now = self._now()
        outcome = "served" if policy == "fail-open" else "refused"
        key = (feature, outcome)
        self.errors[key] = self.errors.get(key, 0) + 1
        if exc is not None:
            self._down_until = now + self.retry_interval
            self._failing = True
            if now - self._last_log >= LOG_EVERY:
                log.warning(
                    "state backend unavailable (%s: %s); %s %s (%d more failures since the "
                    "last message)",
                    type(exc).__name__,
                    exc,
                    feature,
                    "admit requests" if outcome == "served" else "refuse requests",
                    self._unlogged,
                )
                self._last_log, self._unlogged = now, 0
            else:
                self._unlogged += 1
        if outcome == "served":
            return None
        wait = max(self._down_until - now, self.retry_interval)
        # Only the features with an `on_backend_error` fail closed ("budget usage" never).
        return StateUnavailable(cast(Feature, feature), wait)
