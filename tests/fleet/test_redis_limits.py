"""Rate limits and token budgets kept in Redis (`state.backend: redis`).

The limiter against a real Redis (exactly N of M concurrent requests admitted, token
buckets, budgets across a day rollover), then real `kt gateway run` processes: two
gateways sharing one Redis enforce one limit, and a Redis that stops mid-run gives
what `on_backend_error` says until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from ktproxy.config import Budgets, RateLimits, RedisState, SecretRef, State
from ktproxy.fleet.backends import open_backend
from ktproxy.fleet.redis_backend import RedisBackend
from ktproxy.limits import StateUnavailable
from tests.harness import free_port
from tests.test_cli import gateway_process, process_env
from tests.test_process import KT

URL_VAR = "KT_STATE_REDIS_URL"
LIMITED_KEY = "kt-limited-0123456789"
BUDGETED_KEY = "kt-budgeted-0123456789"
PROMPT = "one two three four five"  # the echo mock reports 5 + 5 = 10 tokens


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"kttest:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def state_config(prefix: str, **options: Any) -> State:
    spec = RedisState(SecretRef(URL_VAR), key_prefix=prefix, **options)
    return State(backend="redis", redis=spec)


@pytest.fixture
async def backend(redis_url: str, prefix: str) -> AsyncIterator[RedisBackend]:
    opened = open_backend(state_config(prefix), {URL_VAR: redis_url})
    assert isinstance(opened, RedisBackend)
    yield opened
    await opened.close()


# -- the limiter against a real Redis ---------------------------------------------------


async def test_exactly_n_of_m_concurrent_requests_are_admitted(backend: RedisBackend) -> None:
    limits = RateLimits(requests_per_minute=10)
    answers = await asyncio.gather(*(backend.limiter.admit("g", limits) for _ in range(40)))
    refused = [a for a in answers if a is not None]
    assert len(answers) - len(refused) == 10
    assert all(r.kind == "requests" and r.limit == 10 for r in refused)
    # the next one is due when the oldest of the minute's allowance renews: 60/10 s
    assert all(0 < r.retry_after <= 6.0 for r in refused)
    assert backend.limiter.refusals == {("g", "requests"): 30}
    assert await backend.limiter.admit("other", limits) is None  # groups are apart


async def test_a_token_limit_is_spent_by_usage_and_refuses_while_overdrawn(
    backend: RedisBackend,
) -> None:
    limits = RateLimits(tokens_per_minute=100)
    assert await backend.limiter.admit("g", limits) is None
    await backend.limiter.spend_tokens("g", limits, 120)  # overdraws the bucket to -20
    refusal = await backend.limiter.admit("g", limits)
    assert refusal is not None and refusal.kind == "tokens" and refusal.limit == 100
    assert 12.0 < refusal.retry_after <= 12.6  # (1 - (-20)) tokens at 100 per minute


async def test_keys_expire_when_the_allowance_is_full_again(
    backend: RedisBackend, redis_url: str, prefix: str
) -> None:
    await backend.limiter.admit("g", RateLimits(requests_per_minute=60, tokens_per_minute=600))
    await backend.limiter.spend_tokens("g", RateLimits(tokens_per_minute=600), 60)
    client = redis.Redis.from_url(redis_url)
    try:
        requests_ttl = client.pttl(f"{prefix}rl:g:requests")
        tokens_ttl = client.pttl(f"{prefix}rl:g:tokens")
    finally:
        client.close()
    assert 1000 < requests_ttl <= 2000  # one request's interval (1 s) and a margin
    assert 6000 < tokens_ttl <= 7000  # 60 tokens at 600 per minute refill in 6 s


async def test_budgets_count_per_utc_day_and_month_and_renew(redis_url: str, prefix: str) -> None:
    now = [datetime(2025, 1, 31, 23, 59, 0, tzinfo=UTC).timestamp()]
    backend = RedisBackend(state_config(prefix), {URL_VAR: redis_url})
    backend.budgets._clock = lambda: now[0]
    budgets = Budgets(tokens_per_day=100, tokens_per_month=250)
    try:
        assert await backend.budgets.check("g", budgets) is None
        await backend.budgets.spend("g", budgets, 100)
        spent = await backend.budgets.check("g", budgets)
        assert spent is not None and spent.period == "day" and spent.limit == 100
        assert spent.resets_at == datetime(2025, 2, 1, tzinfo=UTC)
        assert spent.retry_after == 60.0
        now[0] += 120  # 1 February: a new day and a new month
        assert await backend.budgets.check("g", budgets) is None
        for _ in range(2):
            await backend.budgets.spend("g", budgets, 100)
            now[0] += 86400
        await backend.budgets.spend("g", budgets, 50)  # 250 in February, 50 today
        spent = await backend.budgets.check("g", budgets)
        assert spent is not None and spent.period == "month" and spent.limit == 250
        assert spent.resets_at == datetime(2025, 3, 1, tzinfo=UTC)
        assert backend.budgets.refusals == {("g", "budget_day"): 1, ("g", "budget_month"): 1}
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.get(f"{prefix}budget:g:month:202502") == b"250"
            assert client.get(f"{prefix}budget:g:day:20250203") == b"50"
            ttl = client.ttl(f"{prefix}budget:g:day:20250203")
        finally:
            client.close()
        # spent at 00:01 on 3 February: the day ends in 86340 s, and is kept a day more
        assert 86340 + 86400 - 10 < ttl <= 86340 + 86400
    finally:
        await backend.close()


async def test_an_unreachable_redis_fails_open_or_closed_as_configured() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    backend = RedisBackend(state_config("kttest:none:", retry_interval=60), {URL_VAR: url})
    try:
        limits = RateLimits(requests_per_minute=1)
        for _ in range(3):  # fail-open (the rate-limit default): every request admitted
            assert await backend.limiter.admit("g", limits) is None
        with pytest.raises(StateUnavailable) as info:  # fail-closed (the budget default)
            await backend.budgets.check("g", Budgets(tokens_per_day=10))
        assert info.value.feature == "budgets" and info.value.retry_after > 0
        await backend.budgets.spend("g", Budgets(tokens_per_day=10), 5)  # never raises
        assert backend.errors == {
            ("rate limits", "served"): 3,
            ("budgets", "refused"): 1,
            ("budget usage", "served"): 1,
        }
    finally:
        await backend.close()


async def test_admit_latency_figure(backend: RedisBackend) -> None:
    """Not a timed assertion: prints the mean admit round trip for the report."""
    limits = RateLimits(requests_per_minute=1_000_000, tokens_per_minute=1_000_000)
    await backend.limiter.admit("bench", limits)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        await backend.limiter.admit("bench", limits)
    mean = (time.perf_counter() - start) / n
    print(f"\nRedis admit: {mean * 1e6:.0f} us per request (sequential, {n} calls)")


# -- real gateway processes ----------------------------------------------------------------


def gateway_config(prefix: str, rpm: int, budget: int, extra_state: str = "") -> str:
    return f"""
providers:
  targets:
    - id: echo
      provider: mock
      model: gpt-4o
state:
  backend: redis
  redis: {{url: {{env: {URL_VAR}}}, key_prefix: "{prefix}", retry_interval: 0.2}}
{extra_state}
consumers:
  groups:
    - id: limited
      keys: [{{env: LIMITED_KEY}}]
      limits: {{requests_per_minute: {rpm}}}
    - id: budgeted
      keys: [{{env: BUDGETED_KEY}}]
      budgets: {{tokens_per_day: {budget}}}
"""


def post(port: int, key: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]}
        ).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "x-kt-api-key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def wait_until(predicate: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll `predicate` until it holds; connection errors mean "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if predicate():
                return True
        time.sleep(0.05)
    return False


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        return response.status == 200


@contextlib.contextmanager
def gateways(tmp_path: Path, text: str, url: str, count: int) -> Iterator[list[int]]:
    """`count` `kt gateway run` processes serving `text` on ports of their own."""
    config = tmp_path / "c.yaml"
    config.write_text(text, encoding="utf-8")
    env = process_env(**{URL_VAR: url, "LIMITED_KEY": LIMITED_KEY, "BUDGETED_KEY": BUDGETED_KEY})
    ports = [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                gateway_process(KT, ["gateway", "run", "-c", str(config), "--port", str(p)], env)
            )
            for p in ports
        ]
        for proc, port in zip(procs, ports, strict=True):
            assert wait_until(lambda port=port: ready(port)), proc.output()  # type: ignore[misc]
        yield ports


def test_two_gateways_sharing_redis_admit_exactly_n_requests_per_minute(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    with gateways(tmp_path, gateway_config(prefix, rpm=5, budget=10**6), redis_url, 2) as ports:
        targets = [ports[i % 2] for i in range(16)]  # alternating, all at once
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: post(p, LIMITED_KEY), targets))
        ok = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] != 200]
        assert len(ok) == 5, [a[0] for a in answers]
        assert {a[0] for a in refused} == {429}
        for _, headers, body in refused:
            assert int(headers["Retry-After"]) >= 1
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert "5 requests per minute" in body["error"]["message"]


def test_two_gateways_sharing_redis_stop_at_one_budget(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    with gateways(tmp_path, gateway_config(prefix, rpm=1000, budget=30), redis_url, 2) as ports:
        # One at a time: a budget is checked at admission, so concurrent requests could
        # overshoot it by their own usage (documented); sequential ones stop exactly.
        answers = [post(ports[i % 2], BUDGETED_KEY) for i in range(6)]
        assert [a[0] for a in answers] == [200, 200, 200, 429, 429, 429]
        assert all(a[2]["usage"]["total_tokens"] == 10 for a in answers[:3])
        _, headers, body = answers[3]
        assert body["error"]["code"] == "budget_exceeded"
        assert "`budgeted`" in body["error"]["message"]
        assert "30 tokens per day" in body["error"]["message"]
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        assert 1 <= int(headers["Retry-After"]) <= 86400
        assert midnight.strftime("%Y-%m-%d") <= body["error"]["message"].split("renews at ")[1]


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A `redis-server` of this test's own on `port`, stopped by its PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        try:
            assert wait_until(client.ping, 10), "redis-server did not start"
        finally:
            client.close()
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_redis_stopping_mid_run_fails_open_or_closed_and_recovers(
    tmp_path: Path, redis_url: str
) -> None:
    del redis_url  # runs without the shared server, but only where the fleet tests run
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    text = gateway_config("kttest:fault:", rpm=3, budget=10**6)  # defaults: open / closed
    with own_redis(port) as server, gateways(tmp_path, text, url, 1) as (gw,):
        assert [post(gw, LIMITED_KEY)[0] for _ in range(4)] == [200, 200, 200, 429]
        assert post(gw, BUDGETED_KEY)[0] == 200
        stop(server)
        # rate limits fail open: served beyond the limit while Redis is away
        assert [post(gw, LIMITED_KEY)[0] for _ in range(5)] == [200] * 5
        # budgets fail closed: refused, with a message saying why
        status, headers, body = post(gw, BUDGETED_KEY)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        assert body["error"]["code"] == "state_backend_unavailable"
        assert "budgets of consumer group `budgeted`" in body["error"]["message"]
        with urllib.request.urlopen(f"http://127.0.0.1:{gw}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert (
            'ktproxy_state_backend_errors_total{feature="rate limits",outcome="served"} 5.0'
            in metrics
        )
        with own_redis(port):  # back, empty
            assert wait_until(lambda: post(gw, BUDGETED_KEY)[0] == 200)
            assert [post(gw, LIMITED_KEY)[0] for _ in range(4)] == [200, 200, 200, 429]
