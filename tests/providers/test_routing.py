"""Route plans, retries, fallbacks and circuit breakers, with scripted upstreams."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ktproxy.config import CircuitBreaker, ModelRoute, Retries, Routing, Target, Timeouts
from ktproxy.context import Attempt
from ktproxy.errors import GatewayError, upstream_timeout, upstream_unreachable
from ktproxy.providers.base import Provider, UpstreamCall, UpstreamResponse
from ktproxy.providers.router import Route, Router
from ktproxy.providers.routing import AttemptRunner, Breakers, RoutePlanner


class Answer(UpstreamResponse):
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        self.status = status
        self.headers = {"retry-after": retry_after} if retry_after else {}
        self.is_event_stream = False
        self.closed = False

    async def read(self) -> bytes:
        return b"{}"

    async def chunks(self) -> AsyncIterator[bytes]:
        yield b""

    def close(self) -> None:
        self.closed = True


class Scripted(Provider):
    kind = "openai"

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        raise AssertionError("sent through the test's send()")


def provider(tid: str) -> Scripted:
    return Scripted(Target(id=tid, provider="openai", model=f"m-{tid}"), Timeouts(), None, None)


A, B, C = provider("a"), provider("b"), provider("c")
ROUTER = Router([A, B, C])


def routing(**kw: Any) -> Routing:
    return Routing(models=[ModelRoute("pool", ["a", "b", "c"])], **kw)


class Script:
    """Per target, the outcomes of its next calls (status ints or GatewayErrors)."""

    def __init__(self, **plans: list[Any]) -> None:
        self.plans = {k: list(v) for k, v in plans.items()}
        self.calls: list[str] = []

    async def send(self, route: Route) -> UpstreamResponse:
        tid = route.provider.target.id
        self.calls.append(tid)
        plan = self.plans.get(tid) or [200]
        outcome = plan.pop(0) if len(plan) > 1 else plan[0]
        if isinstance(outcome, GatewayError):
            raise outcome
        if isinstance(outcome, tuple):
            return Answer(*outcome)
        return Answer(outcome)


def runner(
    r: Routing, clock: Callable[[], float] | None = None
) -> tuple[AttemptRunner, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    breakers = Breakers(r.circuit_breaker, clock) if clock else Breakers(r.circuit_breaker)
    return AttemptRunner(r, breakers, sleep), slept


def routes(r: Routing) -> list[Route]:
    found = RoutePlanner(ROUTER, r).routes("pool")
    assert found is not None
    return found


REFUSED = upstream_unreachable("x", "cannot connect (Connection refused)")
TIMEOUT = upstream_timeout("x", "first_byte", 1.0)


async def test_falls_back_in_order_and_records_every_attempt() -> None:
    r = routing()
    run, slept = runner(r)
    script = Script(a=[503], b=[REFUSED], c=[200])
    attempts: list[Attempt] = []
    route, resp = await run.run(routes(r), script.send, attempts)
    assert route.provider is C and resp.status == 200
    assert [(x.target, x.outcome, x.status) for x in attempts] == [
        ("a", "5xx", 503), ("b", "connect", 502), ("c", "ok", 200),
    ]  # fmt: skip
    assert slept == []  # no retries configured: straight to the next target
    assert run.fallbacks == {"a": 1, "b": 1}


async def test_retries_with_backoff_then_falls_back() -> None:
    r = routing(retries=Retries(attempts=3, backoff_ms=100, max_backoff_ms=150))
    run, slept = runner(r)
    script = Script(a=[500, 500, 500], b=[TIMEOUT, 200])
    route, _ = await run.run(routes(r), script.send, [])
    assert script.calls == ["a", "a", "a", "b", "b"]
    assert route.provider is B
    assert len(slept) == 3 and all(0 <= s <= 0.15 for s in slept)


async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    r = routing(retries=Retries(attempts=2, max_backoff_ms=1500))
    run, slept = runner(r)
    script = Script(a=[(429, "1"), 200])
    route, _ = await run.run(routes(r), script.send, [])
    assert route.provider is A and slept == [1.0]
    run, slept = runner(r)
    await run.run(routes(r), Script(a=[(429, "30"), 200]).send, [])
    assert slept == [1.5]


async def test_client_errors_are_not_retried_and_failures_end_with_the_last() -> None:
    r = routing(retries=Retries(attempts=3))
    run, _ = runner(r)
    script = Script(a=[400])
    route, resp = await run.run(routes(r), script.send, [])
    assert script.calls == ["a"] and resp.status == 400
    # Everything fails: the last upstream answer is what the client gets.
    script = Script(a=[503], b=[503], c=[502])
    route, resp = await run.run(routes(routing()), script.send, [])
    assert route.provider is C and resp.status == 502
    # ... or the last transport failure.
    with pytest.raises(GatewayError) as info:
        await run.run(routes(routing()), Script(a=[503], b=[503], c=[TIMEOUT]).send, [])
    assert info.value.code == "upstream_timeout.first_byte"


async def test_fallback_on_limits_what_moves_on() -> None:
    r = routing(fallback_on=("connect",))
    run, _ = runner(r)
    route, resp = await run.run(routes(r), Script(a=[503]).send, [])
    assert route.provider is A and resp.status == 503  # 5xx is not in fallback_on
    with pytest.raises(GatewayError):
        await run.run(routes(r), Script(a=[TIMEOUT]).send, [])
    route, _ = await run.run(routes(r), Script(a=[REFUSED]).send, [])
    assert route.provider is B


async def test_circuit_breaker_rests_a_failing_target_then_tries_it_again() -> None:
    now = [0.0]
    r = routing(circuit_breaker=CircuitBreaker(failures=2, cooldown_s=10))
    run, _ = runner(r, clock=lambda: now[0])
    script = Script(a=[503], b=[200])
    for _ in range(2):
        await run.run(routes(r), script.send, [])
    assert script.calls == ["a", "b", "a", "b"]
    assert run.breakers.is_open("a")
    script.calls.clear()
    for _ in range(3):
        await run.run(routes(r), script.send, [])
    assert script.calls == ["b", "b", "b"]  # a rests
    now[0] = 11.0
    script.plans["a"] = [200]
    await run.run(routes(r), script.send, [])
    assert script.calls[-1] == "a"  # the trial call after the cooldown succeeded
    assert not run.breakers.is_open("a")
    assert run.breakers.opened == {"a": 1}


async def test_all_resting_still_tries_the_one_due_soonest() -> None:
    now = [0.0]
    r = Routing(models=[ModelRoute("pool", ["a", "b"])],
                circuit_breaker=CircuitBreaker(failures=1, cooldown_s=10))  # fmt: skip
    run, _ = runner(r, clock=lambda: now[0])
    await run.run(routes(r), Script(a=[503], b=[503]).send, [])
    now[0] = 1.0
    await run.run(routes(r), Script(a=[503], b=[503]).send, [])  # b first now... both rest
    script = Script(a=[200], b=[200])
    route, _ = await run.run(routes(r), script.send, [])
    assert len(script.calls) == 1


def test_weights_draw_the_first_target() -> None:
    r = Routing(models=[ModelRoute("pool", ["a", "b", "c"], weights=[6, 3, 1])])
    planner = RoutePlanner(ROUTER, r, random.Random(7))
    firsts = Counter()
    for _ in range(10_000):
        plan = planner.routes("pool")
        assert plan is not None and len(plan) == 3
        firsts[plan[0].provider.target.id] += 1
        rest = [x.provider.target.id for x in plan[1:]]
        assert rest == [t for t in ("a", "b", "c") if t != plan[0].provider.target.id]
    assert 5700 < firsts["a"] < 6300 and 2700 < firsts["b"] < 3300 and 800 < firsts["c"] < 1200


def test_plain_model_names_still_route_to_one_target() -> None:
    planner = RoutePlanner(ROUTER, routing())
    plan = planner.routes("m-b")
    assert plan is not None and [x.provider for x in plan] == [B]
    assert planner.routes("nope") is None
    plan = planner.routes("openai:chat:other")
    assert plan is not None and plan[0].upstream_model == "other"
