"""`pii-detector` end to end: the OpenAI SDK, a running gateway, a recording fake upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from ktproxy.policies import registry
from ktproxy.scan.kinds import ALL_KINDS, KINDS
from ktproxy.scan.redactor import redact_text
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import RunningGateway, openai_config, sdk_client
from tests.policies.sample_policies import DecisionRecorder

EMAIL = "john.doe@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
KEY = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789"
VALUES = (EMAIL, PHONE, CARD, KEY)
TEXT = f"Reach me at {EMAIL} or {PHONE}; card {CARD}, key {KEY}. Thanks!"


@pytest.fixture(autouse=True)
def decisions() -> Iterator[list[list[object]]]:
    registry.register(DecisionRecorder)
    DecisionRecorder.seen.clear()
    yield DecisionRecorder.seen  # type: ignore[misc]
    registry.unregister(DecisionRecorder.name)


def gateway(
    make_gateway: GatewayFactory,
    upstream: FakeOpenAIUpstream,
    options: str = "",
) -> RunningGateway:
    config = openai_config(upstream.url, chain="[pii-detector, test-decisions]")
    if options:
        config += f"policy:\n  pii-detector: {{{options}}}\n"
    return make_gateway(config)


def client(gw: RunningGateway) -> OpenAI:
    c: OpenAI = sdk_client(gw)
    return c


def leaked(data: bytes | str) -> list[str]:
    blob = data.decode() if isinstance(data, bytes) else data
    return [v for v in VALUES if v in blob]


def recorded(count: int) -> list[list[object]]:
    deadline = time.monotonic() + 5
    while len(DecisionRecorder.seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return DecisionRecorder.seen  # type: ignore[return-value]


def test_request_texts_are_redacted_before_leaving(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway(make_gateway, upstream)
    messages = [
        {"role": "system", "content": f"Operator {EMAIL}"},
        {"role": "user", "content": [{"type": "text", "text": TEXT}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "arguments": orjson.dumps({"phone": PHONE}).decode(),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"Card on file: {CARD}"},
        {"role": "user", "content": TEXT},
    ]
    client(gw).chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    sent = upstream.requests[0]
    assert leaked(sent.body) == []
    body = sent.json
    assert body["messages"][1]["content"][0]["text"] == (
        "Reach me at [REDACTED:EMAIL] or [REDACTED:PHONE]; card [REDACTED:CREDIT_CARD], "
        "key [REDACTED:OPENAI_KEY]. Thanks!"
    )
    args = orjson.loads(body["messages"][2]["tool_calls"][0]["function"]["arguments"])
    assert args == {"phone": "[REDACTED:PHONE]"}
    (decisions,) = recorded(1)
    (decision,) = decisions
    assert decision.policy == "pii-detector" and decision.action == "redact"  # type: ignore[attr-defined]
    assert decision.detail["EMAIL"] == 3 and decision.detail["CREDIT_CARD"] == 3  # type: ignore[attr-defined]


def test_whole_response_is_redacted(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway(make_gateway, upstream, "direction: response")
    upstream.enqueue(
        Reply(content=TEXT, tool_calls=[("notify", orjson.dumps({"to": EMAIL}).decode())])
    )
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"mine: {EMAIL}"}]
    )
    assert EMAIL in upstream.requests[0].body.decode(), "direction: response leaves requests"
    assert leaked(raw.content) == []
    message = raw.parse().choices[0].message
    assert message.content == redact_text(TEXT, ALL_KINDS, lambda v, k: f"[REDACTED:{KINDS[k]}]")
    assert message.tool_calls[0].function.arguments == '{"to":"[REDACTED:EMAIL]"}'  # type: ignore[index,union-attr]


@pytest.mark.parametrize("split", [[1], [2, 3], [5, 1, 7], [13], None])
def test_streamed_response_never_leaks(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, split: list[int] | None
) -> None:
    gw = gateway(make_gateway, upstream)
    upstream.enqueue(Reply(content=TEXT, split=split))
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        pieces = list(response.iter_bytes())
    body = b"".join(pieces)
    assert leaked(body) == []
    chunks = [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == redact_text(TEXT, ALL_KINDS, lambda v, k: f"[REDACTED:{KINDS[k]}]")
    finish = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish and all(
        not c["choices"] or not c["choices"][0]["delta"].get("content")
        for c in chunks[finish[0] + 1 :]
    )


def test_streaming_with_the_sdk(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> None:
    gw = gateway(make_gateway, upstream, "action: mask")
    upstream.enqueue(Reply(content=f"Card {CARD} and mail {EMAIL}."))
    with client(gw).chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_completion()
    assert (
        final.choices[0].message.content
        == "Card **** **** **** 1111 and mail j*******@example.com."
    )


def test_block_request_is_422_and_nothing_leaves(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway(make_gateway, upstream, "action: block")
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client(gw).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"my mail is {EMAIL}"}]
        )
    assert info.value.status_code == 422
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "pii_detector.email"
    assert error["policy"] == "pii-detector" and EMAIL not in error["message"]
    assert upstream.requests == []


def test_block_on_a_stream_stops_before_the_value(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway(make_gateway, upstream, "action: block, direction: response")
    upstream.enqueue(Reply(content=f"Sure. The address is {EMAIL} as requested."))
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(gw).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "Sure. The address is "
    assert info.value.code == "pii_detector.email"  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
def test_pseudonymize_round_trip(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, stream: bool
) -> None:
    gw = gateway(make_gateway, upstream, "action: pseudonymize")
    prompt = f"Write to {EMAIL} and {EMAIL}, cc mary@example.org, call {PHONE}"
    upstream.enqueue(Reply(split=[1, 2, 3]))  # the fake echoes the last user message
    c = client(gw)
    if stream:
        text = "".join(
            ch.choices[0].delta.content or ""
            for ch in c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True
            )
            if ch.choices
        )
    else:
        text = (
            c.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": prompt}]
            )
            .choices[0]
            .message.content
            or ""
        )
    sent = upstream.requests[0].json["messages"][0]["content"]
    assert sent == "Write to <EMAIL_1> and <EMAIL_1>, cc <EMAIL_2>, call <PHONE_1>"
    assert text == f"Echo: {prompt}"


def test_direction_request_leaves_responses(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = gateway(make_gateway, upstream, "direction: request")
    upstream.enqueue(Reply(content=f"reply {EMAIL}"))
    out = client(gw).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"ask {EMAIL}"}]
    )
    assert out.choices[0].message.content == f"reply {EMAIL}"
    assert EMAIL not in upstream.requests[0].body.decode()


def test_entities_and_log(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> None:
    gw = gateway(make_gateway, upstream, "entities: [EMAIL]")
    client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": TEXT}])
    sent = upstream.requests[0].json["messages"][0]["content"]
    assert EMAIL not in sent and PHONE in sent and CARD in sent
    upstream.reset()
    gw = gateway(make_gateway, upstream, "action: log")
    client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": TEXT}])
    assert upstream.requests[0].json["messages"][0]["content"] == TEXT
    decision = recorded(2)[-1][0]
    assert decision.action == "log"  # type: ignore[attr-defined]
    # Once in the request and once in the echoed response.
    expected = {"EMAIL": 2, "PHONE": 2, "CREDIT_CARD": 2, "OPENAI_KEY": 2}
    assert decision.detail == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize("split", [[1], [3, 2], None])
def test_streamed_tool_call_arguments_are_redacted(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream, split: list[int] | None
) -> None:
    gw = gateway(make_gateway, upstream)
    arguments = orjson.dumps({"to": EMAIL, "card": CARD, "note": "call " + PHONE}).decode()
    reply = Reply(tool_calls=[("send", arguments), ("log", '{"ip": "10.1.2.3"}')], split=split)
    upstream.enqueue(reply, reply)
    with httpx.stream(
        "POST",
        f"{gw.base_url}/chat/completions",
        json={
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "go"}],
            "tools": [{"type": "function", "function": {"name": "send", "parameters": {}}}],
        },
    ) as response:
        body = b"".join(response.iter_bytes())
    assert leaked(body) == [] and b"10.1.2.3" not in body
    with client(gw).chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "go"}],
        tools=[{"type": "function", "function": {"name": "send", "parameters": {}}}],
    ) as stream:
        list(stream)
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["send", "log"]
    assert orjson.loads(calls[0].function.arguments) == {
        "to": "[REDACTED:EMAIL]",
        "card": "[REDACTED:CREDIT_CARD]",
        "note": "call [REDACTED:PHONE]",
    }
    assert orjson.loads(calls[1].function.arguments) == {"ip": "[REDACTED:IPV4]"}
