"""Conversation pseudonyms in Redis: encrypted at rest, shared by two real gateways."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from ktproxy.config import PseudonymState, RedisState, SecretRef, State
from ktproxy.fleet.redis_backend import RedisBackend
from ktproxy.limits import StateUnavailable
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fleet.test_redis_limits import URL_VAR, gateways, prefix  # noqa: F401
from tests.harness import UPSTREAM_KEY, free_port, openai_config, sdk_client

KEY_VAR = "PSEUDONYM_KEY"  # not KT_: process_env drops those
SECRET = "a-test-secret-of-enough-length"


@pytest.fixture
async def backend(redis_url: str, prefix: str) -> AsyncIterator[RedisBackend]:  # noqa: F811
    spec = RedisState(SecretRef(URL_VAR), key_prefix=prefix, encryption_key_ref=SecretRef(KEY_VAR))
    state = State(backend="redis", redis=spec, pseudonyms=PseudonymState())
    opened = RedisBackend(state, {URL_VAR: redis_url, KEY_VAR: SECRET})
    yield opened
    await opened.close()


async def test_values_are_stored_encrypted_and_numbered_once(
    backend: RedisBackend,
    redis_url: str,
    prefix: str,  # noqa: F811
) -> None:
    vault = backend.pseudonyms
    first = await vault.assign("g", "conv", 60, [("alice@example.com", "EMAIL")])
    second = await vault.assign(
        "g", "conv", 60, [("bob@example.com", "EMAIL"), ("alice@example.com", "EMAIL")]
    )
    assert first == {"<EMAIL_1>": "alice@example.com"}
    assert second == {"<EMAIL_1>": "alice@example.com", "<EMAIL_2>": "bob@example.com"}
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}pn:*"))
        assert len(keys) == 1 and b"conv" not in keys[0]
        raw = client.hgetall(keys[0])
        ttl = client.ttl(keys[0])
    finally:
        client.close()
    blob = b"".join(k + v for k, v in raw.items())
    assert b"alice" not in blob and b"bob" not in blob and b"example" not in blob
    assert raw[b"n:EMAIL"] == b"2"
    assert 0 < ttl <= 60


def _gateway_config(upstream_url: str, prefix: str) -> str:  # noqa: F811
    return (
        openai_config(upstream_url, chain="[pii-detector]")
        + f"""
state:
  backend: redis
  redis:
    url: {{env: {URL_VAR}}}
    key_prefix: "{prefix}"
    encryption_key_ref: {{env: {KEY_VAR}}}
policy:
  pii-detector: {{action: pseudonymize, scope: conversation}}
"""
    )


def _ask(port: int, text: str, conversation: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
        ).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-kt-conversation-id": conversation,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def test_two_gateways_give_one_value_one_placeholder_and_restore_it(
    tmp_path: Path,
    redis_url: str,
    prefix: str,  # noqa: F811
    upstream: FakeOpenAIUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_VAR, SECRET)  # process_env copies the environment
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    text = _gateway_config(upstream.url, prefix)
    with gateways(tmp_path, text, redis_url, 2) as (a, b):
        turn1 = _ask(a, "mail alice@example.com", "conv-1")
        turn2 = _ask(b, "mail bob@example.com and alice@example.com", "conv-1")
        # the model naming turn 1's placeholder on its own, through the other gateway
        turn3 = _ask(a, "<EMAIL_2>", "conv-1")
        elsewhere = _ask(b, "mail bob@example.com", "conv-2")
    sent = [r.json["messages"][0]["content"] for r in upstream.requests]
    assert sent == [
        "mail <EMAIL_1>",
        "mail <EMAIL_2> and <EMAIL_1>",
        "<EMAIL_2>",
        "mail <EMAIL_1>",
    ]
    assert turn1 == "Echo: mail alice@example.com"
    assert turn2 == "Echo: mail bob@example.com and alice@example.com"
    assert turn3 == "Echo: bob@example.com"
    assert elsewhere == "Echo: mail bob@example.com"


@pytest.mark.parametrize("mode", ["fail-closed", "fail-open"])
async def test_an_unreachable_redis_refuses_or_falls_back_as_configured(mode: str) -> None:
    """fail-closed: the vault raises `StateUnavailable` (the request gets a 503);
    fail-open: it answers None (the request gets per-request placeholders)."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    spec = RedisState(
        SecretRef(URL_VAR), key_prefix="kttest:none:", encryption_key_ref=SecretRef(KEY_VAR)
    )
    state = State(
        backend="redis",
        redis=spec,
        pseudonyms=PseudonymState(on_backend_error=mode),  # type: ignore[arg-type]
    )
    backend = RedisBackend(state, {URL_VAR: url, KEY_VAR: SECRET})
    try:
        values = [("alice@example.com", "EMAIL")]
        if mode == "fail-closed":
            with pytest.raises(StateUnavailable) as info:
                await backend.pseudonyms.assign("g", "conv", 60, values)
            assert info.value.feature == "pseudonyms"
        else:
            assert await backend.pseudonyms.assign("g", "conv", 60, values) is None
    finally:
        await backend.close()


def test_a_gateway_without_its_redis_refuses_conversation_turns_with_503(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    """fail-closed end to end: a turn with a conversation id gets 503
    state_backend_unavailable and never reaches the upstream; one without is served."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gw = make_gateway(
        _gateway_config(upstream.url, "kttest:none:"),
        {URL_VAR: url, KEY_VAR: SECRET, "UPSTREAM_KEY": UPSTREAM_KEY},
    )
    client = sdk_client(gw)
    with pytest.raises(openai.APIStatusError) as info:
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "mail alice@example.com"}],
            extra_headers={"x-kt-conversation-id": "c-1"},
        )
    assert info.value.status_code == 503
    assert info.value.code == "state_backend_unavailable"
    assert upstream.requests == []
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "mail alice@example.com"}]
    )
    assert "alice@example.com" in (reply.choices[0].message.content or "")
    assert "alice@example.com" not in upstream.requests[-1].body.decode()
