"""What the client sends reaches the upstream unchanged, and what it returns reaches the client."""

from __future__ import annotations

import httpx
import orjson
import pytest
from openai import OpenAI

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import RunningGateway, openai_config, sdk_client

USER = [{"role": "user", "content": "hello"}]


def client(gw: RunningGateway) -> OpenAI:
    c: OpenAI = sdk_client(gw)
    return c


def test_request_bytes_forwarded_unchanged(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    body = (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi","name":"u1"}],'
        b'"temperature":0.25,"seed":7,"logit_bias":{"50256":-100},'
        b'"kt_future_field":{"nested":[1,2.5,null,"\xc3\xa9"]},"metadata":{"a":"b"}}'
    )
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    assert upstream.requests[0].body == body


def test_unknown_fields_survive_model_rewrite(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    extra = {"kt_future_field": {"x": [1, 2]}, "parallel_tool_calls": False, "top_logprobs": 2}
    client(gateway).chat.completions.create(
        model="primary", messages=USER, extra_body=extra, temperature=0.5
    )
    sent = upstream.requests[0].json
    assert sent["model"] == "gpt-4o"
    assert {k: sent[k] for k in extra} == extra and sent["temperature"] == 0.5


def test_unknown_response_fields_reach_client(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        Reply(
            content="hi",
            extra_fields={"kt_provider_extra": {"region": "eu"}},
            extra_message_fields={"reasoning_content": "thought"},
            headers={"x-ratelimit-remaining-requests": "41", "set-cookie": "s=1"},
        )
    )
    raw = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    body = orjson.loads(raw.content)
    assert body["kt_provider_extra"] == {"region": "eu"}
    assert body["choices"][0]["message"]["reasoning_content"] == "thought"
    assert raw.headers["x-ratelimit-remaining-requests"] == "41"
    assert raw.headers["x-request-id"] and raw.headers["x-kt-request-id"]
    assert "set-cookie" not in raw.headers
    completion = raw.parse()
    assert completion.model_extra == {"kt_provider_extra": {"region": "eu"}}


def test_stream_events_reach_client_unchanged(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    comment = b": keep-alive comment\n\n"
    ping = b'event: ping\ndata: {"type":"ping"}\n\n'
    upstream.enqueue(
        Reply(
            content="alpha beta", extra_events=[comment, ping], extra_fields={"kt_chunk_extra": 1}
        )
    )
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "stream": True},
    ) as response:
        body = b"".join(response.iter_bytes())
    assert response.headers["content-type"].startswith("text/event-stream")
    assert comment in body and ping in body
    events = [e for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    chunks = [orjson.loads(e[6:]) for e in events]
    assert all(c.get("kt_chunk_extra") == 1 for c in chunks if "choices" in c)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == "alpha beta"
    assert body.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/proxy", "/proxy/v1"])
def test_base_url_forms(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, suffix: str
) -> None:
    gw = make_gateway(openai_config(upstream.url + suffix))
    client(gw).chat.completions.create(model="gpt-4o", messages=USER)
    prefix = "/proxy" if suffix.startswith("/proxy") else ""
    assert upstream.requests[0].path == f"{prefix}/v1/chat/completions"


def test_only_allowed_client_headers_go_upstream(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER},
        headers={
            "OpenAI-Organization": "org-1",
            "OpenAI-Project": "proj-1",
            "Cookie": "session=secret",
            "X-Internal-Token": "t",
            "x-kt-api-key": "gw-key",
        },
    )
    headers = upstream.requests[0].headers
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "proj-1"
    for name in ("cookie", "x-internal-token", "x-kt-api-key"):
        assert name not in headers
    assert headers["user-agent"].startswith("ktproxy/")


def test_health_and_ready(gateway: RunningGateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    gateway.state.draining = True
    try:
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    finally:
        gateway.state.draining = False
