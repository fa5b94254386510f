"""Token budgets with the embedded (in-process) backend: no Redis needed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import openai
import pytest

from ktproxy.budgets import LocalBudgets
from ktproxy.config import Budgets
from ktproxy.configcheck import check_text
from tests.api.test_consumers import ENV, groups_config
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import LoopThread, sdk_client

USAGE = {"prompt_tokens": 60, "completion_tokens": 60, "total_tokens": 120}
BUDGETED = """    - id: budgeted
      keys: [{env: BUDGETED_KEY}]
      budgets: {tokens_per_day: 100}
"""


async def test_a_day_budget_renews_at_utc_midnight_and_a_month_budget_at_the_first() -> None:
    now = [datetime(2024, 12, 31, 23, 0, tzinfo=UTC).timestamp()]
    keeper = LocalBudgets(clock=lambda: now[0])
    budgets = Budgets(tokens_per_day=10, tokens_per_month=15)
    await keeper.spend("g", budgets, 10)
    spent = await keeper.check("g", budgets)
    assert spent is not None and spent.period == "day"
    assert spent.resets_at == datetime(2025, 1, 1, tzinfo=UTC) and spent.retry_after == 3600
    now[0] += 3600
    assert await keeper.check("g", budgets) is None  # a new day and a new month
    await keeper.spend("g", budgets, 9)
    now[0] += 86400
    await keeper.spend("g", budgets, 6)  # 6 today, 15 this month
    spent = await keeper.check("g", budgets)
    assert spent is not None and spent.period == "month" and spent.limit == 15
    assert spent.resets_at == datetime(2025, 2, 1, tzinfo=UTC)
    assert keeper.refusals == {("g", "budget_day"): 1, ("g", "budget_month"): 1}
    assert await keeper.check("other", budgets) is None


def test_a_spent_budget_gives_429_naming_it(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(
        groups_config(upstream.url, extra=BUDGETED), {**ENV, "BUDGETED_KEY": "kt-budgeted"}
    )
    client = sdk_client(gw, api_key="kt-budgeted")
    upstream.enqueue(Reply(usage=USAGE))
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as info:  # admitted under budget, overshot it
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "budget_exceeded"
    assert "`budgeted`" in info.value.message and "100 tokens per day" in info.value.message
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 86400
    assert len(upstream.requests) == 1


def test_streams_report_usage_to_the_budget(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, loop_thread: LoopThread
) -> None:
    gw = make_gateway(
        groups_config(upstream.url, extra=BUDGETED), {**ENV, "BUDGETED_KEY": "kt-budgeted"}
    )
    client = sdk_client(gw, api_key="kt-budgeted")
    upstream.enqueue(Reply(usage=USAGE))
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)  # asked for by the gateway, not sent on
    sent = upstream.requests[-1].body.decode()
    assert '"include_usage":true' in sent.replace(" ", "")
    runtime = gw.state.runtime
    assert runtime is not None
    group = runtime.consumers.groups["budgeted"]
    assert group.needs_usage and group.budgets is not None
    budgets = group.budgets

    async def spent() -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if await runtime.budgets.check("budgeted", budgets) is not None:
                return True
            await asyncio.sleep(0.02)
        return False

    assert loop_thread.run(spent(), timeout=15)


CONFIG = """
providers:
  targets:
    - {id: echo, provider: mock, model: gpt-4o}
"""


@pytest.mark.parametrize(
    ("state", "env", "for_start", "expected"),
    [
        ("{backend: redis}", {}, False, "5: $.state: backend redis needs a `redis:` section"),
        (
            "{backend: redis, redis: {url: {env: R}}}",
            {},
            True,
            "5: $.state.redis.url.env: environment variable R is not set; the gateway "
            "cannot reach Redis for its rate limits and budgets",
        ),
        (
            "{backend: redis, redis: {url: {env: R}}}",
            {},
            False,
            "5: warning: $.state.redis.url.env: environment variable R is not set",
        ),
        (
            "{backend: redis, redis: {url: {env: R}}}",
            {"R": "http://secret@host"},
            False,
            "5: $.state.redis.url.env: environment variable R does not hold a redis://, "
            "rediss:// or unix:// URL",
        ),
        ("{redis: {url: {env: R}}}", {}, False, "5: warning: $.state.redis: unused"),
        (
            "{budgets: {on_backend_error: open}}",
            {},
            False,
            "5: $.state.budgets.on_backend_error: expected one of fail-open, fail-closed; "
            "got 'open'",
        ),
    ],
)
def test_lint_of_the_state_section(
    state: str, env: dict[str, str], for_start: bool, expected: str
) -> None:
    _, problems = check_text(CONFIG + f"state: {state}\n", env=env, for_start=for_start)
    messages = [p.format("c.yaml") for p in problems]
    assert any(m.startswith("c.yaml:" + expected) for m in messages), messages
    assert not any("secret@host" in m for m in messages)


def test_the_embedded_default_never_imports_redis() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from ktproxy.app import make_app; from ktproxy.configcheck import "
        "check_text; c, _ = check_text('providers: {targets: [{id: e, provider: mock, "
        "model: m}]}', env={}); make_app(c, {}); print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
