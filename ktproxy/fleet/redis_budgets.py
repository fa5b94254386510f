"""Token budgets in Redis: one counter per group and UTC day or month.

Keys `{prefix}budget:{group}:day:YYYYMMDD` and `{prefix}budget:{group}:month:YYYYMM`,
incremented by each response's usage (INCRBY is atomic, so every gateway adds to one
count) and expiring a day after their period ends. The period is taken from the
gateway's clock (UTC); gateways whose clocks differ by seconds count the usage near
midnight into either day.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from ktproxy.budgets import (
    BudgetRefusal,
    Period,
    count_refusal,
    limits_of,
    period_end,
    period_key,
    refusal,
    utc_now,
)
from ktproxy.config import Budgets, OnBackendError
from ktproxy.fleet.redis_client import BACKEND_ERRORS, Guard

KEEP_AFTER_END = 86400  # seconds a spent period's counter stays readable


class RedisBudgets:
    """`BudgetKeeper` whose counters live in Redis, shared by every gateway."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        guard: Guard,
        on_error: OnBackendError,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._guard = guard
        self._on_error: OnBackendError = on_error
        self._clock = clock
        self.refusals: dict[tuple[str, str], int] = {}

    def key(self, group: str, period: Period, stamp: str) -> str:
        """The counter of `group`'s `period` named `stamp` (YYYYMMDD or YYYYMM)."""
        return f"{self._prefix}budget:{group}:{period}:{stamp}"

    async def check(self, group: str, budgets: Budgets) -> BudgetRefusal | None:
        found = limits_of(budgets)
        if not found:
            return None
        if not self._guard.available():
            self._backend_error(None)
            return None
        now = utc_now(self._clock)
        keys = [self.key(group, period, period_key(period, now)) for period, _ in found]
        try:
            values = await self._client.mget(keys)
        except BACKEND_ERRORS as exc:
            self._backend_error(exc)
            return None
        self._guard.succeeded()
        for (period, limit), value in zip(found, values, strict=True):
            if value is not None and int(value) >= limit:
                spent = refusal(period, limit, now)
                count_refusal(self.refusals, group, spent)
                return spent
        return None

    async def spend(self, group: str, budgets: Budgets, tokens: int) -> None:
        found = limits_of(budgets)
        if not found or tokens <= 0:
            return
        if not self._guard.available():
            # Not tried during the pause after a failure: this runs before the response
            # is sent, and must not wait for a connect timeout. The tokens go uncounted.
            self._guard.failed("budget usage", "fail-open", None)
            return
        now = utc_now(self._clock)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for period, _ in found:
                    key = self.key(group, period, period_key(period, now))
                    pipe.incrby(key, tokens)
                    # Relative to this gateway's clock, the one that named the period.
                    left = (period_end(period, now) - now).total_seconds()
                    pipe.expire(key, int(left) + KEEP_AFTER_END)
                await pipe.execute()
        except BACKEND_ERRORS as exc:
            self._guard.failed("budget usage", "fail-open", exc)
        else:
            self._guard.succeeded()

    def _backend_error(self, exc: BaseException | None) -> None:
        unavailable = self._guard.failed("budgets", self._on_error, exc)
        if unavailable is not None:
            raise unavailable
