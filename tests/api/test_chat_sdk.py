"""The OpenAI SDK, unchanged, against a running gateway in front of a fake OpenAI."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import UPSTREAM_KEY, RunningGateway, openai_config, sdk_client

USER = [{"role": "user", "content": "héllo wörld, say something ✓ 日本語"}]
EXPECTED_ECHO = "Echo: héllo wörld, say something ✓ 日本語"


def client(gw: RunningGateway, **kwargs: object) -> OpenAI:
    client: OpenAI = sdk_client(gw, **kwargs)
    return client


def test_create_non_streaming(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    completion = client(gateway).chat.completions.create(model="gpt-4o", messages=USER)
    assert completion.choices[0].message.content == EXPECTED_ECHO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    (received,) = upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.json is not None and received.json["messages"] == USER


async def test_async_client(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    async with AsyncOpenAI(base_url=gateway.base_url, api_key="any", max_retries=0) as aclient:
        completion = await aclient.chat.completions.create(model="gpt-4o", messages=USER)
        assert completion.choices[0].message.content == EXPECTED_ECHO
        stream = await aclient.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == EXPECTED_ECHO


def test_stream_with_usage(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    stream = client(gateway).chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_ECHO
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(EXPECTED_ECHO.split())
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}


def test_stream_helper_events(gateway: RunningGateway) -> None:
    with client(gateway).chat.completions.stream(model="gpt-4o", messages=USER) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in types and types.count("content.done") == 1
    assert final.choices[0].message.content == EXPECTED_ECHO


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_tool_calls(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    upstream.enqueue(Reply(tool_calls=[("get_weather", '{"city": "Paris"}')]))
    completion = client(gateway).chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=TOOLS,
        tool_choice="auto",  # type: ignore[arg-type]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"city": "Paris"}'  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert upstream.requests[0].json["tools"] == TOOLS
    assert upstream.requests[0].json["tool_choice"] == "auto"


def test_streamed_tool_call_deltas(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    args = '{"city": "Zürich", "unit": "celsius"}'
    upstream.enqueue(Reply(tool_calls=[("get_weather", args)]))
    with client(gateway).chat.completions.stream(
        model="gpt-4o",
        messages=USER,
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_completion()
    assert types.count("tool_calls.function.arguments.delta") > 3
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert call.function.arguments == args
    assert json.loads(call.function.arguments) == {"city": "Zürich", "unit": "celsius"}


class Weather(BaseModel):
    city: str
    degrees: int


def test_structured_output_parse(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    upstream.enqueue(Reply(content='{"city": "Oslo", "degrees": -3}'))
    completion = client(gateway).beta.chat.completions.parse(
        model="gpt-4o", messages=USER, response_format=Weather
    )
    assert completion.choices[0].message.parsed == Weather(city="Oslo", degrees=-3)
    sent = upstream.requests[0].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Weather"


def test_default_headers_and_httpx_client(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    with httpx.Client(timeout=30) as http:
        c = client(gateway, default_headers={"x-kt-api-key": "team-a-key"}, http_client=http)
        completion = c.chat.completions.create(model="gpt-4o", messages=USER)
    assert completion.choices[0].message.content == EXPECTED_ECHO
    # The gateway key names the consumer at the gateway; it never travels upstream.
    assert "x-kt-api-key" not in upstream.requests[0].headers


@pytest.mark.parametrize("placeholder", ["any", "unused"])
def test_placeholder_keys_use_gateway_key(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, placeholder: str
) -> None:
    client(gateway, api_key=placeholder).chat.completions.create(model="gpt-4o", messages=USER)
    assert upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_no_bearer_uses_gateway_key(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    r = httpx.post(
        f"{gateway.base_url}/chat/completions", json={"model": "gpt-4o", "messages": USER}
    )
    assert r.status_code == 200
    assert upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_client_provider_key_is_forwarded(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    client(gateway, api_key="sk-client-own-key").chat.completions.create(
        model="gpt-4o", messages=USER
    )
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-client-own-key"


def test_client_key_ignored_when_configured(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(openai_config(upstream.url, client_key="ignore"))
    client(gw, api_key="sk-client-own-key").chat.completions.create(model="gpt-4o", messages=USER)
    assert upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_missing_upstream_key_is_401_with_guidance(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(openai_config(upstream.url), env={})
    with pytest.raises(openai.AuthenticationError) as info:
        client(gw).chat.completions.create(model="gpt-4o", messages=USER)
    assert "UPSTREAM_KEY" in info.value.message
    assert upstream.requests == []
    # ... while a client that brings its own key is served.
    out = client(gw, api_key="sk-own").chat.completions.create(model="gpt-4o", messages=USER)
    assert out.choices[0].message.content == EXPECTED_ECHO


@pytest.mark.parametrize(
    ("requested", "sent"),
    [("gpt-4o", "gpt-4o"), ("primary", "gpt-4o"), ("openai:chat:gpt-4o-mini", "gpt-4o-mini")],
)
def test_model_resolution(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, requested: str, sent: str
) -> None:
    completion = client(gateway).chat.completions.create(model=requested, messages=USER)
    assert upstream.requests[0].json["model"] == sent
    assert completion.model == sent


def test_mock_target_answers_without_upstream(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    c = client(gateway)
    completion = c.chat.completions.create(model="mock-model", messages=USER)
    assert completion.choices[0].message.content == USER[0]["content"]
    streamed = c.chat.completions.create(model="local", messages=USER, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == USER[0]["content"]
    assert upstream.requests == []


def test_unknown_model_is_404(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    c = client(gateway)
    for name in ("gpt-5-nope", "anthropic:chat:claude", "openai:chat:"):
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model=name, messages=USER)
        assert info.value.code == "model_not_found"
    assert upstream.requests == []
    assert c.chat.completions.create(model="gpt-4o", messages=USER).choices


def test_models_list_and_retrieve(gateway: RunningGateway) -> None:
    c = client(gateway)
    assert [m.id for m in c.models.list()] == ["gpt-4o", "primary", "mock-model", "local"]
    assert c.models.retrieve("openai:chat:gpt-4o-mini").owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")
