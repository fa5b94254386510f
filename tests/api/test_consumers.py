"""Consumer groups through the real `openai` SDK: keys, per-group rules, limits."""

from __future__ import annotations

import hashlib

import openai
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import GATEWAY_ENV, UPSTREAM_KEY, openai_config, sdk_client

TEAM_A_KEY = "kt-team-a-0123456789abcdef"
TEAM_B_KEY = "kt-team-b-fedcba9876543210"
ENV = {**GATEWAY_ENV, "TEAM_A_KEY": TEAM_A_KEY}
PII = "Mail me at jane.roe@example.com please."


def groups_config(url: str, *, require_key: bool = True, extra: str = "") -> str:
    digest = hashlib.sha256(TEAM_B_KEY.encode()).hexdigest()
    return (
        openai_config(url, chain="[pii-detector]")
        + f"""
policy:
  pii-detector: {{action: redact}}
consumers:
  require_key: {str(require_key).lower()}
  groups:
    - id: team-a
      keys: [{{env: TEAM_A_KEY}}]
    - id: team-b
      keys: [{{sha256: "{digest}"}}]
      policy:
        pii-detector: {{action: block}}
      models: [gpt-4o]
{extra}
"""
    )


def ask(client: openai.OpenAI, text: str = "hello", model: str = "gpt-4o") -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content or ""


def test_each_group_gets_its_own_policy_options(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url), ENV)
    a = sdk_client(gw, default_headers={"x-kt-api-key": TEAM_A_KEY})
    assert "[REDACTED:EMAIL]" in ask(a, PII)
    assert "jane.roe" not in upstream.requests[-1].body.decode()
    b = sdk_client(gw, default_headers={"x-kt-api-key": TEAM_B_KEY})
    with pytest.raises(openai.APIStatusError) as info:
        ask(b, PII)
    assert info.value.status_code == 422
    assert len(upstream.requests) == 1  # the blocked request never left


def test_a_gateway_key_as_bearer_names_the_group_and_is_not_forwarded(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url), ENV)
    client = sdk_client(gw, api_key=TEAM_A_KEY)
    assert "[REDACTED:EMAIL]" in ask(client, PII)
    sent = upstream.requests[-1].headers["authorization"]
    assert sent == f"Bearer {UPSTREAM_KEY}"  # the gateway's upstream key, not the caller's


def test_missing_and_unknown_keys_get_401_when_keys_are_required(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url), ENV)
    for client in (
        sdk_client(gw),
        sdk_client(gw, default_headers={"x-kt-api-key": "kt-not-a-key"}),
    ):
        with pytest.raises(openai.AuthenticationError) as info:
            ask(client)
        assert info.value.status_code == 401
        assert info.value.code == "invalid_api_key"
    assert upstream.requests == []
    assert ask(sdk_client(gw, api_key=TEAM_A_KEY))  # and the gateway still serves


def test_without_require_key_unknown_callers_are_the_default_group(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url, require_key=False), ENV)
    assert "[REDACTED:EMAIL]" in ask(sdk_client(gw), PII)  # global options: redact
    b = sdk_client(gw, default_headers={"x-kt-api-key": "kt-unknown"})
    assert "[REDACTED:EMAIL]" in ask(b, PII)


def test_a_group_only_reaches_its_models(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url), ENV)
    b = sdk_client(gw, api_key=TEAM_B_KEY)
    assert ask(b, model="openai:chat:gpt-4o")  # the same route, spelled explicitly
    with pytest.raises(openai.NotFoundError) as info:
        ask(b, model="mock-model")
    assert "team-b" in str(info.value)
    assert ask(sdk_client(gw, api_key=TEAM_A_KEY), model="mock-model")


def test_requests_per_minute_give_429_with_retry_after(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    extra = """    - id: tiny
      keys: [{env: TINY_KEY}]
      limits: {requests_per_minute: 2}
"""
    gw = make_gateway(groups_config(upstream.url, extra=extra), {**ENV, "TINY_KEY": "kt-tiny"})
    client = sdk_client(gw, api_key="kt-tiny")
    ask(client)
    ask(client)
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    assert info.value.status_code == 429
    assert int(info.value.response.headers["Retry-After"]) >= 1
    assert info.value.code == "rate_limit_exceeded"
    assert len(upstream.requests) == 2
    assert ask(sdk_client(gw, api_key=TEAM_A_KEY))  # other groups are not limited


def test_tokens_per_minute_count_the_usage_of_responses(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    extra = """    - id: thrifty
      keys: [{env: THRIFTY_KEY}]
      limits: {tokens_per_minute: 100}
"""
    gw = make_gateway(
        groups_config(upstream.url, extra=extra), {**ENV, "THRIFTY_KEY": "kt-thrifty"}
    )
    client = sdk_client(gw, api_key="kt-thrifty")
    upstream.enqueue(
        Reply(usage={"prompt_tokens": 60, "completion_tokens": 60, "total_tokens": 120})
    )
    ask(client)  # admitted with a full bucket, then overdraws it
    with pytest.raises(openai.RateLimitError) as info:
        ask(client)
    assert "tokens per minute" in info.value.message
    assert len(upstream.requests) == 1


def test_lint_catches_group_mistakes() -> None:
    from ktproxy.configcheck import check_text

    text = (
        openai_config("http://127.0.0.1:9", chain="[pii-detector]")
        + """
consumers:
  groups:
    - id: a
      keys: [{env: K1}, {sha256: "abc"}]
      chain: [pii-detector, nope]
      policy:
        pii-detector: {action: redcat}
      limits: {requests_per_minute: 0}
      models: [gpt-4o, openai:chat:gpt-5, gpt-9, anthropic:chat:claude]
    - id: a
      keys: [{env: K1}]
"""
    )
    _, problems = check_text(text, env=GATEWAY_ENV)
    messages = [p.message for p in problems]
    assert any("64 lower-case hex" in m for m in messages)
    assert any("unknown policy 'nope'" in m for m in messages)
    assert any("got 'redcat'" in m for m in messages)
    assert any(">= 1" in m for m in messages)
    assert any("duplicate group id 'a'" in m for m in messages)
    assert any("already a key of group #1" in m for m in messages)
    assert any("K1 is not set" in m for m in messages)
    unrouted = [p.path for p in problems if "not routed" in p.message]
    assert unrouted == [
        ("consumers", "groups", 0, "models", 2),
        ("consumers", "groups", 0, "models", 3),
    ]


def test_models_lists_what_the_group_may_use(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(groups_config(upstream.url), ENV)
    b = sdk_client(gw, api_key=TEAM_B_KEY)
    assert [m.id for m in b.models.list()] == ["gpt-4o", "primary"]
    with pytest.raises(openai.NotFoundError):
        b.models.retrieve("mock-model")
    a = sdk_client(gw, api_key=TEAM_A_KEY)
    assert "mock-model" in [m.id for m in a.models.list()]
    with pytest.raises(openai.AuthenticationError):
        sdk_client(gw).models.list()


def test_rate_limit_refusals_are_counted_in_metrics(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    import httpx

    extra = """    - id: tiny
      keys: [{env: TINY_KEY}]
      limits: {requests_per_minute: 1}
"""
    gw = make_gateway(groups_config(upstream.url, extra=extra), {**ENV, "TINY_KEY": "kt-tiny"})
    client = sdk_client(gw, api_key="kt-tiny")
    ask(client)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            ask(client)
    text = httpx.get(f"http://127.0.0.1:{gw.port}/metrics", timeout=10).text
    line = next(
        ln for ln in text.splitlines() if ln.startswith("ktproxy_rate_limited_requests_total")
    )
    assert 'consumer_group="tiny"' in line and 'kind="requests"' in line
    assert line.endswith(" 3.0")
