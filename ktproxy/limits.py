"""Rate limits per consumer group: requests per minute and tokens per minute.

The in-process limiter is the embedded default (one worker's view). Its interface
is what a fleet backend implements too (a Redis module running the same checks as
one atomic server-side script), so the API layer never knows which one it has.

- Requests: GCRA (the generic cell rate algorithm). With `rpm` per minute, one
  request "costs" 60/rpm seconds of a theoretical arrival time, and up to a minute's
  worth may arrive at once; the answer to a refused request says exactly when the
  next one would be admitted.
- Tokens: a bucket holding at most a minute's allowance, refilled continuously.
  Usage is only known after a response, so it is taken then and may overdraw the
  bucket; requests are refused while it is empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ktproxy.config import RateLimits


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was refused and when to try again."""

    kind: Literal["requests", "tokens"]
    limit: int
    retry_after: float  # seconds


# What a shared backend keeps: named in logs, metrics and the client's error.
Feature = Literal["rate limits", "budgets", "pseudonyms"]


class StateUnavailable(Exception):
    """A shared backend could not answer and the feature is set to fail closed."""

    def __init__(self, feature: Feature, retry_after: float) -> None:
        super().__init__(f"{feature}: state backend unavailable")
        self.feature = feature
        self.retry_after = retry_after


class RateLimiter(Protocol):
    """What the API layer asks of a limiter backend.

    A shared backend that cannot answer either admits (fail-open) or raises
    `StateUnavailable` (fail-closed); it never raises anything else.
    """

    refusals: dict[tuple[str, str], int]  # (group, "requests" | "tokens") -> count

    async def admit(self, group: str, limits: RateLimits) -> Refusal | None:
        """Take one request from `group`'s allowance; a `Refusal` when there is none."""

    async def spend_tokens(self, group: str, limits: RateLimits, tokens: int) -> None:
        """Charge `tokens` (from a response's usage) to `group`."""


@dataclass(slots=True)
class _Bucket:
    tat: float = 0.0  # GCRA theoretical arrival time (monotonic seconds)
    tokens: float | None = None  # token balance; None until first used
    stamp: float = field(default_factory=time.monotonic)  # last refill of `tokens`


class LocalRateLimiter:
    """Limits kept in this process (the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._now = clock
        self._buckets: dict[str, _Bucket] = {}
        # (group, "requests" | "tokens") -> refusals, for /metrics
        self.refusals: dict[tuple[str, str], int] = {}

    def _bucket(self, group: str) -> _Bucket:
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = self._buckets[group] = _Bucket(stamp=self._now())
        return bucket

    def _refill(self, bucket: _Bucket, tpm: int, now: float) -> float:
        if bucket.tokens is None:
            bucket.tokens = float(tpm)
        else:
            bucket.tokens = min(float(tpm), bucket.tokens + (now - bucket.stamp) * tpm / 60.0)
        bucket.stamp = now
        return bucket.tokens

    async def admit(self, group: str, limits: RateLimits) -> Refusal | None:
        now = self._now()
        bucket = self._bucket(group)
        tpm = limits.tokens_per_minute
        if tpm is not None:
            balance = self._refill(bucket, tpm, now)
            if balance <= 0:
                return self._refuse(group, Refusal("tokens", tpm, (1.0 - balance) * 60.0 / tpm))
        rpm = limits.requests_per_minute
        if rpm is not None:
            interval = 60.0 / rpm
            burst = 60.0 - interval  # a minute's worth may arrive at once
            tat = max(bucket.tat, now)
            if tat - now > burst:
                return self._refuse(group, Refusal("requests", rpm, tat - now - burst))
            bucket.tat = tat + interval
        return None

    def _refuse(self, group: str, refusal: Refusal) -> Refusal:
        key = (group, refusal.kind)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        return refusal

    async def spend_tokens(self, group: str, limits: RateLimits, tokens: int) -> None:
        tpm = limits.tokens_per_minute
        if tpm is None or tokens <= 0:
            return
        bucket = self._bucket(group)
        self._refill(bucket, tpm, self._now())
        assert bucket.tokens is not None
        bucket.tokens -= tokens
