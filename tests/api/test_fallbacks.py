"""Fallbacks and retries through the real `openai` SDK, audited and counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from ktproxy.audit.sink import Query
from ktproxy.audit.sqlite_sink import SQLiteSink
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import GATEWAY_ENV, LoopThread, free_port, sdk_client


@pytest.fixture
def backup(loop_thread: LoopThread) -> Iterator[FakeOpenAIUpstream]:
    """A second OpenAI upstream, the healthy fallback."""
    fake = FakeOpenAIUpstream()
    loop_thread.run(fake.start())
    yield fake
    loop_thread.run(fake.close())


def config(primary_url: str, backup_url: str, extra: str = "", chain: str = "[]") -> str:
    return f"""
providers:
  timeouts: {{connect: 2, first_byte: 5, idle: 5}}
  targets:
    - {{id: primary, provider: openai, model: gpt-4o, base_url: "{primary_url}",
        secret_key_ref: {{env: UPSTREAM_KEY}}}}
    - {{id: backup, provider: openai, model: gpt-4o-2024-08-06, base_url: "{backup_url}",
        secret_key_ref: {{env: UPSTREAM_KEY}}}}
routing:
  models:
    - name: gpt-4o
      targets: [primary, backup]
{extra}
policies:
  chain: {chain}
"""


def ask(client: openai.OpenAI, stream: bool = False) -> str:
    messages = [{"role": "user", "content": "hello"}]
    if not stream:
        r = client.chat.completions.create(model="gpt-4o", messages=messages)
        return r.choices[0].message.content or ""
    chunks = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_an_unreachable_target_falls_back_to_a_healthy_one(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # connection refused
    gw = make_gateway(config(dead, upstream.url), GATEWAY_ENV)
    client = sdk_client(gw)
    assert ask(client) == "Echo: hello"
    assert ask(client, stream=True) == "Echo: hello"
    # The backup got its own model name, not the one the client sent.
    assert [r.json["model"] for r in upstream.requests] == ["gpt-4o-2024-08-06"] * 2


def test_a_5xx_falls_back_and_the_attempts_are_audited_and_counted(
    make_gateway: GatewayFactory,
    upstream: FakeOpenAIUpstream,
    backup: FakeOpenAIUpstream,
    tmp_path: Path,
) -> None:
    db = tmp_path / "audit.db"
    extra = f"""policy:
  audit-logger: {{path: "{db}", flush_interval_ms: 5}}"""
    gw = make_gateway(config(upstream.url, backup.url, extra, "[audit-logger]"), GATEWAY_ENV)
    upstream.enqueue(Reply(status=503))
    assert ask(sdk_client(gw)) == "Echo: hello"
    assert len(upstream.requests) == 1 and len(backup.requests) == 1
    deadline = time.monotonic() + 10
    while True:
        sink = SQLiteSink(db)
        found = sink.query(Query()).records
        sink.close()
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    (record,) = found
    assert [(a.target, a.outcome, a.status) for a in record.attempts] == [
        ("primary", "5xx", 503), ("backup", "ok", 200),
    ]  # fmt: skip
    assert (record.target, record.upstream_model, record.status) == (
        "backup", "gpt-4o-2024-08-06", 200,
    )  # fmt: skip
    metrics = httpx.get(f"http://127.0.0.1:{gw.port}/metrics", timeout=10).text
    assert 'ktproxy_upstream_attempts_total{outcome="5xx",target="primary"} 1.0' in metrics or (
        'ktproxy_upstream_attempts_total{target="primary",outcome="5xx"} 1.0' in metrics
    )
    assert 'ktproxy_fallbacks_total{target="primary"} 1.0' in metrics


def test_retries_on_the_same_target_before_falling_back(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, backup: FakeOpenAIUpstream
) -> None:
    extra = "  retries: {attempts: 2, backoff_ms: 1, max_backoff_ms: 5}"
    gw = make_gateway(config(upstream.url, backup.url, extra), GATEWAY_ENV)
    upstream.enqueue(Reply(status=500))
    assert ask(sdk_client(gw)) == "Echo: hello"
    assert len(upstream.requests) == 2 and backup.requests == []


def test_no_fallback_once_a_stream_has_started(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, backup: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(config(upstream.url, backup.url), GATEWAY_ENV)
    upstream.enqueue(Reply(content="one two three four five", split=[4] * 6, n_chunks_then_close=2))
    with pytest.raises(openai.APIError):
        ask(sdk_client(gw), stream=True)
    assert backup.requests == []  # the client had bytes: nothing is retried elsewhere


def test_client_errors_are_returned_not_retried(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, backup: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(config(upstream.url, backup.url), GATEWAY_ENV)
    upstream.enqueue(Reply(status=400))
    with pytest.raises(openai.BadRequestError):
        ask(sdk_client(gw))
    assert backup.requests == []


def test_every_target_failing_gives_the_last_failure(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = make_gateway(config(upstream.url, dead), GATEWAY_ENV)
    upstream.enqueue(Reply(status=503))
    with pytest.raises(openai.APIStatusError) as info:
        ask(sdk_client(gw))
    assert info.value.status_code == 502  # the backup's connection error, the last attempt
    assert ask(sdk_client(gw)) == "Echo: hello"  # and the gateway keeps serving


def test_lint_checks_routes() -> None:
    from ktproxy.configcheck import check_text

    text = (
        config("http://127.0.0.1:1", "http://127.0.0.1:2")
        + """
"""
    )
    text = text.replace(
        "targets: [primary, backup]", "targets: [primary, nowhere]\n      weights: [1]"
    )
    _, problems = check_text(text, env=GATEWAY_ENV)
    messages = [p.message for p in problems]
    assert any("no target with id 'nowhere'" in m for m in messages)
    assert any("one entry per target" in m for m in messages)
