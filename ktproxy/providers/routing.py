"""Fallbacks, retries, weighted load balancing and circuit breaking across targets.

A model name either resolves to one target (the router's rules) or names a route of
`routing.models`: an ordered list of targets, optionally weighted. A request's plan
is that list (the first target drawn by weight, the rest in order); each target is
tried up to `retries.attempts` times with exponential backoff and full jitter, and
a failure of a kind in `fallback_on` (connect error, timeout, 5xx, 429) moves on to
the next target. All of this happens before the client has received a byte: the
adapters return once the upstream status is known, so a stream that already
started is never retried or moved (its later failures end it with an error event).

A circuit breaker per target rests a target after `failures` failed calls in a row
for `cooldown_s`; a resting target is skipped while another target can serve, and
after the cooldown one call is let through to test it (half-open).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ktproxy.config import CircuitBreaker, Routing
from ktproxy.context import Attempt
from ktproxy.errors import GatewayError
from ktproxy.providers.base import UpstreamResponse
from ktproxy.providers.router import Route, Router


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0  # monotonic; 0: closed
    trial: bool = False  # half-open: one call is testing the target


class Breakers:
    """Circuit breakers of one runtime, by target id."""

    def __init__(
        self, settings: CircuitBreaker | None, clock: Callable[[], float] = time.monotonic
    ):
        self.settings = settings
        self._clock = clock
        self._state: dict[str, _Breaker] = {}
        self.opened: dict[str, int] = {}  # times each target was rested, for /metrics

    def resting(self, target: str) -> bool:
        """Is `target` resting (open, and not yet due for its trial call)?"""
        b = self._state.get(target)
        if b is None or b.open_until == 0.0:
            return False
        if self._clock() >= b.open_until and not b.trial:
            return False  # due for a trial
        return True

    def is_open(self, target: str) -> bool:
        """For /metrics: does the breaker of `target` currently hold it back?"""
        b = self._state.get(target)
        return b is not None and b.open_until != 0.0

    def before_call(self, target: str) -> None:
        b = self._state.get(target)
        if b is not None and b.open_until and self._clock() >= b.open_until:
            b.trial = True

    def success(self, target: str) -> None:
        self._state.pop(target, None)

    def failure(self, target: str) -> None:
        if self.settings is None:
            return
        b = self._state.setdefault(target, _Breaker())
        b.failures += 1
        if b.trial or b.failures >= self.settings.failures:
            b.open_until = self._clock() + self.settings.cooldown_s
            b.trial = False
            self.opened[target] = self.opened.get(target, 0) + 1

    def soonest(self, targets: Sequence[str]) -> str:
        """Of resting targets, the one whose rest ends first."""
        return min(targets, key=lambda t: self._state[t].open_until if t in self._state else 0)


class RoutePlanner:
    """Model name -> the routes to try, in order, for one request."""

    def __init__(self, router: Router, routing: Routing, rng: random.Random | None = None):
        self.router = router
        self._rng = rng or random.Random()
        by_id = {p.target.id: p for p in router.providers}
        self._routes: dict[str, tuple[list[Route], list[float] | None]] = {}
        for spec in routing.models:
            routes = [Route(by_id[t], by_id[t].target.model) for t in spec.targets]
            self._routes[spec.name] = (routes, spec.weights)

    def routes(self, model: str) -> list[Route] | None:
        """The routes for `model` in the order to try them, or None when unknown."""
        found = self._routes.get(model)
        if found is None:
            route = self.router.resolve(model)
            return [route] if route is not None else None
        routes, weights = found
        if weights is None or len(routes) == 1:
            return list(routes)
        first = self._rng.choices(range(len(routes)), weights=weights)[0]
        return [routes[first], *routes[:first], *routes[first + 1 :]]


def classify(error: GatewayError) -> str:
    """`connect` or `timeout` for a transport failure from an adapter."""
    return "timeout" if (error.code or "").startswith("upstream_timeout") else "connect"


def outcome_of(status: int) -> str:
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    return "ok" if status < 400 else "client_error"


def _retry_after(resp: UpstreamResponse) -> float | None:
    value = resp.headers.get("retry-after") or resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class AttemptRunner:
    """Runs a request's plan: retries, fallbacks, breakers; records every attempt."""

    def __init__(
        self,
        routing: Routing,
        breakers: Breakers,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.routing = routing
        self.breakers = breakers
        self.fallback_on = frozenset(routing.fallback_on)
        self._sleep = sleep
        self._rng = random.Random()
        self.counts: dict[tuple[str, str], int] = {}  # (target, outcome) -> attempts
        self.fallbacks: dict[str, int] = {}  # from target -> fallbacks

    def _order(self, routes: list[Route]) -> list[Route]:
        """Resting targets go last (or, when all rest, the one due soonest first)."""
        awake = [r for r in routes if not self.breakers.resting(r.provider.target.id)]
        if awake:
            return awake + [r for r in routes if r not in awake]
        ids = [r.provider.target.id for r in routes]
        first = self.breakers.soonest(ids)
        return sorted(routes, key=lambda r: r.provider.target.id != first)

    def _backoff(self, attempt: int, hint: float | None) -> float:
        r = self.routing.retries
        ceiling = r.max_backoff_ms / 1000
        if hint is not None:
            return min(hint, ceiling)
        return self._rng.uniform(0, min(ceiling, r.backoff_ms / 1000 * (2**attempt)))

    def _count(self, target: str, outcome: str) -> None:
        key = (target, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    async def run(
        self,
        routes: list[Route],
        send: Callable[[Route], Awaitable[UpstreamResponse]],
        attempts: list[Attempt],
    ) -> tuple[Route, UpstreamResponse]:
        """The first acceptable response of the plan, or the last failure."""
        order = self._order(routes)
        tries = self.routing.retries.attempts
        last_error: GatewayError | None = None
        for ti, route in enumerate(order):
            tid = route.provider.target.id
            last_target = ti == len(order) - 1
            for attempt in range(tries):
                final = last_target and attempt == tries - 1
                self.breakers.before_call(tid)
                started = time.perf_counter()
                try:
                    resp = await send(route)
                except GatewayError as exc:
                    ms = round((time.perf_counter() - started) * 1000, 3)
                    if exc.status < 500:
                        # The adapter refused the request itself (one it cannot
                        # translate): the client's to change, nothing to retry.
                        attempts.append(Attempt(tid, "client_error", exc.status, ms))
                        self._count(tid, "client_error")
                        raise
                    kind = classify(exc)
                    attempts.append(Attempt(tid, kind, exc.status, ms))
                    self._count(tid, kind)
                    self.breakers.failure(tid)
                    if final or kind not in self.fallback_on:
                        raise
                    last_error = exc
                    if attempt < tries - 1:
                        await self._sleep(self._backoff(attempt, None))
                    continue
                ms = round((time.perf_counter() - started) * 1000, 3)
                kind = outcome_of(resp.status)
                attempts.append(Attempt(tid, kind, resp.status, ms))
                self._count(tid, kind)
                if kind in ("ok", "client_error"):
                    self.breakers.success(tid)
                    return route, resp
                self.breakers.failure(tid)
                if final or kind not in self.fallback_on:
                    return route, resp
                hint = _retry_after(resp)
                resp.close()
                if attempt < tries - 1:
                    await self._sleep(self._backoff(attempt, hint))
            if not last_target:
                self.fallbacks[tid] = self.fallbacks.get(tid, 0) + 1
        assert last_error is not None  # every path above returns or raises at the end
        raise last_error
