"""OpenAI chat ⇄ Anthropic Messages translation, both directions, checked against the
real SDKs' types and stream accumulators; stream translators independent of how the
bytes are cut."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from ktproxy.errors import GatewayError
from ktproxy.wire.anthropic import (
    chat_completion_body,
    openai_error_body,
    openai_error_object,
    to_chat_completion,
    to_messages_request,
)
from ktproxy.wire.anthropic_native import (
    anthropic_error_body,
    to_anthropic_error,
    to_chat_request,
    to_message,
)
from ktproxy.wire.anthropic_stream import ChunkStream, MessageStream
from ktproxy.wire.chunk_text import chunk_text_py
from ktproxy.wire.sse import SSEParser, event_data
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply, validate

PNG = "iVBORw0KGgoAAAANSUhEUg=="
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
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": TOOLS[0]["function"]["parameters"],  # type: ignore[index]
    }
]


def forward(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_messages_request(body, default_max_tokens=1024)


def refused(**body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        forward(**body)
    assert info.value.status == 400
    return info.value


# --- OpenAI request -> Anthropic request --------------------------------------------------


def test_minimal_request() -> None:
    assert forward() == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1024,
    }


def test_system_and_developer_messages_go_to_system() -> None:
    one = forward(messages=[{"role": "system", "content": "Be brief."}, *USER])
    assert one["system"] == "Be brief." and one["messages"] == USER
    many = forward(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "A"}]},
            {"role": "developer", "content": "B"},
            *USER,
            {"role": "system", "content": "C"},
        ]
    )
    assert [b["text"] for b in many["system"]] == ["A", "B", "C"]
    assert many["messages"] == USER
    cached = forward(
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}],
            },
            *USER,
        ]
    )
    assert cached["system"] == [
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}
    ]


USER = [{"role": "user", "content": "hi"}]


def test_multipart_user_content() -> None:
    out = forward(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://ex.com/a.jpg"}},
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBE",
                        },
                    },
                ],
            }
        ]
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://ex.com/a.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]
    validate(out)


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}, "image/bmp"),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "base64"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, "base64"),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "input_audio"),
        ({"type": "file", "file": {"file_id": "file-1"}}, "file ids"),
    ],
)
def test_unsupported_parts_are_400(part: dict[str, Any], fragment: str) -> None:
    error = refused(messages=[{"role": "user", "content": [part]}])
    assert fragment in error.message
    assert error.param == "messages[0].content[0]"


def test_tool_call_round_trip_messages() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "-3 C"}]},
        {"role": "user", "content": "Thanks; and now?"},
    ]
    out = forward(messages=messages, tools=TOOLS)
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "-3 C"}],
                },
                {"type": "text", "text": "Thanks; and now?"},
            ],
        },
    ]
    assert out["tools"] == ANTHROPIC_TOOLS
    validate(out)


def test_consecutive_turns_merge_and_empty_assistant_turns_drop() -> None:
    out = forward(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "assistant", "content": "ok"},
        ]
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
        {"role": "assistant", "content": "ok"},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    body: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert forward(**body).get("tool_choice") == expected


def test_tool_definitions() -> None:
    tools = [
        {"type": "function", "function": {"name": "ping"}},
        {
            "type": "function",
            "function": {"name": "s", "parameters": {"type": "object"}, "strict": True},
        },
    ]
    out = forward(tools=tools)
    assert out["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        {"name": "s", "input_schema": {"type": "object"}, "strict": True},
    ]
    assert refused(tools=[{"type": "custom", "custom": {"name": "x"}}]).param == "tools[0]"
    assert refused(tool_choice="required").param == "tool_choice"
    assert "tool_choice" not in forward(tool_choice="auto")  # no tools: nothing to choose


def test_sampling_and_limits() -> None:
    out = forward(
        max_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        stream=True,
        stream_options={"include_usage": True},
        user="user-42",
        seed=7,
        store=False,
        n=1,
        logprobs=False,
        response_format={"type": "text"},
        presence_penalty=0,
        top_k=5,
    )
    assert out == {
        "model": "claude-x",
        "messages": USER,
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "user-42"},
        "top_k": 5,
    }
    assert forward(max_tokens=50, max_completion_tokens=70)["max_tokens"] == 70
    assert forward(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert refused(max_tokens=0).param == "max_tokens"
    assert refused(max_completion_tokens="9").param == "max_completion_tokens"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("response_format", "json"),
        ("reasoning_effort", "minimal"),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 1),
        ("audio", {"voice": "alloy"}),
        ("modalities", ["text", "audio"]),
        ("functions", [{"name": "f"}]),
    ],
)
def test_fields_anthropic_cannot_honour_are_400(field: str, value: Any) -> None:
    error = refused(**{field: value})
    assert error.param == field and error.code == "unsupported_parameter"
    assert field in error.message


def test_json_schema_and_effort_become_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}}
    out = forward(response_format=fmt, reasoning_effort="high")
    assert out["output_config"] == {
        "format": {"type": "json_schema", "schema": schema},
        "effort": "high",
    }
    assert "response_format" not in out and "reasoning_effort" not in out
    sent = forward(output_config={"effort": "max"}, response_format=fmt)["output_config"]
    assert sent == {"effort": "max", "format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in forward(response_format={"type": "text"})
    validate(out)


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
            "messages[0].tool_calls[0]",
        ),
        ({"role": "assistant", "function_call": {"name": "f"}}, "messages[0].function_call"),
        ({"role": "user", "content": 5}, "messages[0]"),
        ({"role": "system", "content": "only a system prompt"}, "messages"),
    ],
)
def test_malformed_messages_are_400(message: dict[str, Any], param: str) -> None:
    assert refused(messages=[message]).param == param


# --- Anthropic response -> OpenAI response ------------------------------------------------

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "now."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Zürich"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 20,
    },
}


def test_message_to_chat_completion() -> None:
    out = to_chat_completion(MESSAGE, created=123)
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "msg_01" and completion.model == "claude-x"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking now."
    (call,) = choice.message.tool_calls or []
    assert call.id == "toolu_9" and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Zürich"}  # type: ignore[union-attr]
    assert out["choices"][0]["message"]["reasoning_content"] == "Hmm."
    assert out["usage"] == {
        "prompt_tokens": 33,
        "completion_tokens": 7,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    only_tools = {**MESSAGE, "content": MESSAGE["content"][3:]}
    assert to_chat_completion(only_tools)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        (None, "stop"),
        ("something_new", "stop"),
    ],
)
def test_finish_reasons(stop: str | None, finish: str) -> None:
    out = to_chat_completion({**MESSAGE, "stop_reason": stop})
    assert out["choices"][0]["finish_reason"] == finish


def test_body_that_is_not_a_message_is_502() -> None:
    for body in (b"<html>", b'{"type": "error"}', b"[]"):
        with pytest.raises(GatewayError) as info:
            chat_completion_body(body)
        assert info.value.status == 502
    assert orjson.loads(chat_completion_body(orjson.dumps(MESSAGE)))["object"] == "chat.completion"


def test_errors_become_openai_errors() -> None:
    error = {"type": "rate_limit_error", "message": "Slow down"}
    body = orjson.dumps({"type": "error", "error": error, "request_id": "req_1"})
    assert orjson.loads(openai_error_body(429, body)) == {
        "error": {
            "message": "Slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_error",
        }
    }
    over = openai_error_object({"type": "overloaded_error", "message": "Overloaded"})
    assert over["type"] == "server_error" and over["code"] == "overloaded_error"
    html = orjson.loads(openai_error_body(502, b"<html>Bad gateway</html>"))
    assert html["error"]["code"] == "upstream_http_502"
    assert "Bad gateway" in html["error"]["message"]


# --- Anthropic SSE -> OpenAI chunks -------------------------------------------------------

FAKE = FakeAnthropicUpstream()
REQUEST = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def anthropic_stream(reply: Reply) -> tuple[dict[str, Any], bytes]:
    """A whole Anthropic event stream as the fake sends it, and its message."""
    message = FAKE.message_for(reply, REQUEST)
    events = [e for _, e in FAKE.events(reply, message)]
    return message, b"".join(events)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run_chunks(data: bytes, pieces: list[bytes] | None = None, **kwargs: Any) -> bytes:
    stream = ChunkStream(include_usage=kwargs.pop("include_usage", True), created=1, **kwargs)
    out = b"".join(stream.feed(p) for p in (pieces or [data]))
    return out + stream.finish()


def sse_payloads(data: bytes) -> list[bytes]:
    parser = SSEParser()
    payloads = [event_data(e) for e in parser.feed(data)]
    assert parser.remainder() == b""
    return [p for p in payloads if p is not None]


def openai_chunks(data: bytes) -> list[dict[str, Any]]:
    payloads = sse_payloads(data)
    assert payloads[-1] == b"[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


def test_text_stream() -> None:
    message, data = anthropic_stream(Reply(text="Hello wörld, ✓ 日本語 streaming!"))
    chunks = openai_chunks(run_chunks(data))
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == message["id"] and chunks[0]["model"] == "claude-x"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello wörld, ✓ 日本語 streaming!"
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == message["usage"]["output_tokens"]
    assert usage["usage"]["prompt_tokens"] == message["usage"]["input_tokens"]
    without = openai_chunks(run_chunks(data, include_usage=False))
    assert all("usage" not in c for c in without)
    assert without[-1]["choices"][0]["finish_reason"] == "stop"


def test_text_chunks_take_the_fast_path_and_match_a_full_encoding() -> None:
    _, data = anthropic_stream(Reply(text='a "quoted" \\ text ✓'))
    events = SSEParser().feed(run_chunks(data))
    texts = [e for e in events if b'"content":"' in e and b'"role"' not in e]
    assert texts
    for event in texts:
        view = chunk_text_py(event)
        assert view is not None and view[2] >= 0  # the rewriter can splice it in place
        obj = orjson.loads(event[6:-2])
        assert event == b"data: " + orjson.dumps(obj) + b"\n\n"


def test_tool_call_stream_accumulates_in_the_openai_sdk() -> None:
    inputs = {"city": "Zürich", "unit": "celsius", "days": [1, 2]}
    message, data = anthropic_stream(
        Reply(text="Let me look.", tool_uses=[("get_weather", inputs), ("ping", {})])
    )
    chunks = openai_chunks(run_chunks(data))
    heads = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "id" in (c["choices"][0]["delta"].get("tool_calls") or [{}])[0]
    ]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [(0, "get_weather"), (1, "ping")]
    assert heads[0]["id"] == message["content"][1]["id"]
    state = ChatCompletionStreamState(input_tools=TOOLS)  # type: ignore[arg-type]
    for c in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    final = state.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "Let me look." and final.choices[0].finish_reason == "tool_calls"
    calls = msg.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [inputs, {}]  # type: ignore[union-attr]
    assert calls[1].function.arguments == "{}"  # type: ignore[union-attr]


def test_thinking_stream_goes_to_reasoning_content() -> None:
    _, data = anthropic_stream(Reply(text="42", thinking="Let me think."))
    chunks = openai_chunks(run_chunks(data))
    thought = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    assert thought == "Let me think."


def test_mid_stream_error_event_becomes_an_openai_error_event() -> None:
    _, data = anthropic_stream(Reply(text="Hello there friend"))
    head = data[: data.index(b"event: content_block_stop")]
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",' + (
        b'"message":"Overloaded"}}\n\n'
    )
    payloads = sse_payloads(run_chunks(head + error + b"event: ping\ndata: {}\n\n"))
    assert b"[DONE]" not in payloads
    assert orjson.loads(payloads[-1]) == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded_error",
        }
    }


def test_truncated_streams() -> None:
    _, data = anthropic_stream(Reply(text="Hello there friend"))
    cut_early = data[: data.index(b"event: content_block_stop")]
    last = orjson.loads(sse_payloads(run_chunks(cut_early, target="claude-t"))[-1])
    assert last["error"]["code"] == "upstream_stream_truncated"
    assert "claude-t" in last["error"]["message"]
    # Everything but message_stop: the message is whole, the stream ends normally.
    no_stop = data[: data.index(b"event: message_stop")]
    assert sse_payloads(run_chunks(no_stop))[-1] == b"[DONE]"
    # A last event without its blank line still counts.
    assert sse_payloads(run_chunks(data.rstrip(b"\n")))[-1] == b"[DONE]"
    garbage = orjson.loads(sse_payloads(run_chunks(b"event: x\ndata: {nope\n\n"))[-1])
    assert garbage["error"]["code"] == "upstream_bad_response"


STREAMS = [
    Reply(text="Hello wörld, ✓ 日本語 and more text to cut"),
    Reply(text="Calling.", tool_uses=[("get_weather", {"city": "Paris"}), ("ping", {})]),
    Reply(text="x", thinking="deep thought", crlf=True),
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(STREAMS), st.lists(st.integers(0, 10_000), max_size=40))
def test_chunk_stream_is_independent_of_byte_boundaries(reply: Reply, points: list[int]) -> None:
    _, data = anthropic_stream(reply)
    assert run_chunks(data, cut(data, points)) == run_chunks(data)


# --- Anthropic request -> OpenAI request (native endpoint) -------------------------------

NATIVE_REQUEST: dict[str, Any] = {
    "model": "claude-x",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3 C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "tools": ANTHROPIC_TOOLS,
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_k": 3,
    "output_config": {"effort": "max"},
    "metadata": {"user_id": "u-1"},
}


def test_native_request_to_openai() -> None:
    out = to_chat_request({**NATIVE_REQUEST, "stream": True})
    assert out["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3 C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]
    assert out["tools"] == TOOLS
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["max_tokens"] == 300 and out["user"] == "u-1"
    # Anthropic-only options: carried for an Anthropic target.
    assert out["top_k"] == 3 and out["output_config"] == {"effort": "max"}
    assert out["stream_options"] == {"include_usage": True}


def test_native_request_round_trips_through_the_adapter_translation() -> None:
    back = to_messages_request(to_chat_request(NATIVE_REQUEST), default_max_tokens=1)
    assert back == NATIVE_REQUEST
    validate(back)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "server_tool_use", "id": "x"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_native_requests_that_cannot_be_carried_are_400(change: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        to_chat_request({**NATIVE_REQUEST, **change})
    assert info.value.status == 400 and info.value.param == param


def test_completion_to_native_message() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 5,
            "total_tokens": 35,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    message = Message.model_validate(to_message(completion))
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Sure."
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.input == {"city": "Rome"} and tool.id == "call_1"
    assert message.usage.input_tokens == 20 and message.usage.cache_read_input_tokens == 10
    assert message.usage.output_tokens == 5
    bad = json.loads(json.dumps(completion))
    bad["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "not json"
    with pytest.raises(GatewayError) as info:
        to_message(bad)
    assert info.value.status == 502


def test_message_round_trips_through_openai() -> None:
    back = to_message(to_chat_completion(MESSAGE))
    expected = {
        **MESSAGE,
        "content": [{"type": "text", "text": "Checking now."}, MESSAGE["content"][3]],
    }
    assert {k: v for k, v in back.items() if k != "usage"} == {
        k: v for k, v in expected.items() if k != "usage"
    }
    # Anthropic's separate cache-write count folds into input tokens on the way.
    assert back["usage"]["input_tokens"] == 13 and back["usage"]["cache_read_input_tokens"] == 20


def test_errors_become_anthropic_errors() -> None:
    policy = GatewayError(
        422, "Blocked.", type="policy_violation", code="prompt_injection.x", extra={"policy": "p"}
    )
    assert orjson.loads(anthropic_error_body(422, policy.body())) == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "Blocked.",
            "code": "prompt_injection.x",
            "policy": "p",
        },
    }
    for kind in ("overloaded_error", "rate_limit_error", "not_found_error", "api_error"):
        error = openai_error_object({"type": kind, "message": "m"})
        assert to_anthropic_error(error, 503)["error"]["type"] == kind  # exact round trip
    assert to_anthropic_error({"message": "m"}, 401)["error"]["type"] == "authentication_error"
    assert (
        to_anthropic_error({"message": "m", "type": "upstream_error"})["error"]["type"]
        == "api_error"
    )
    assert orjson.loads(anthropic_error_body(500, b"oops"))["error"]["message"] == "oops"


# --- OpenAI chunks -> Anthropic SSE (native endpoint) -------------------------------------

_EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def run_messages(data: bytes, pieces: list[bytes] | None = None) -> bytes:
    stream = MessageStream()
    return b"".join(stream.feed(p) for p in (pieces or [data])) + stream.finish()


def accumulate(data: bytes) -> Any:
    """The message the Anthropic SDK builds from these events (as its stream helper)."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event in SSEParser().feed(data):
        name = event.split(b"\n", 1)[0]
        payload = orjson.loads(event_data(event) or b"")
        assert name == b"event: " + payload["type"].encode()
        if payload["type"] == "error":
            raise AssertionError(payload)
        snapshot = accumulate_event(
            event=_EVENTS.validate_python(payload), current_snapshot=snapshot, json_bufs=bufs
        )
    return snapshot


@pytest.mark.parametrize("reply", STREAMS[:2], ids=["text", "tools"])
def test_anthropic_stream_round_trips_through_openai_chunks(reply: Reply) -> None:
    message, data = anthropic_stream(reply)
    final = accumulate(run_messages(run_chunks(data)))
    assert final.model_dump(exclude_none=True)["content"] == message["content"]
    assert final.stop_reason == message["stop_reason"]
    assert final.usage.output_tokens == message["usage"]["output_tokens"]
    assert final.usage.input_tokens == message["usage"]["input_tokens"]


def openai_events(*chunks: dict[str, Any]) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    return b"".join(b"data: " + orjson.dumps({**base, **c}) + b"\n\n" for c in chunks)


def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


OPENAI_STREAM = (
    openai_events(
        delta({"role": "assistant", "content": ""}),
        delta({"content": "Hel"}),
        delta({"content": "lo"}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        ),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{}"},
                    }
                ]
            }
        ),
        delta({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    )
    + b"data: [DONE]\n\n"
)


def test_openai_chunks_to_anthropic_events() -> None:
    out = run_messages(OPENAI_STREAM)
    names = [e.split(b"\n", 1)[0][7:].decode() for e in SSEParser().feed(out)]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 3
    final = accumulate(out)
    assert final.id == "chatcmpl-1" and final.model == "gpt-x"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Hello"
    assert final.content[1].input == {"x": 1} and final.content[1].id == "call_a"
    assert final.content[2].input == {} and final.content[2].name == "g"
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 9 and final.usage.output_tokens == 4


def test_openai_error_and_truncation_become_anthropic_error_events() -> None:
    head = OPENAI_STREAM[: OPENAI_STREAM.index(b'data: {"id"', 200)]
    error = b'data: {"error": {"message": "PII found", "type": "policy_violation", ' + (
        b'"code": "pii.block"}}\n\n'
    )
    out = run_messages(head + error)
    last = SSEParser().feed(out)[-1]
    assert last.startswith(b"event: error\n")
    assert orjson.loads(event_data(last) or b"") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "PII found", "code": "pii.block"},
    }
    truncated = SSEParser().feed(run_messages(head))[-1]
    assert truncated.startswith(b"event: error\n") and b"api_error" in truncated
    # Finished but no [DONE]: the message is whole.
    no_done = OPENAI_STREAM[: OPENAI_STREAM.index(b"data: [DONE]")]
    assert SSEParser().feed(run_messages(no_done))[-1].startswith(b"event: message_stop")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), max_size=40))
def test_message_stream_is_independent_of_byte_boundaries(points: list[int]) -> None:
    assert run_messages(OPENAI_STREAM, cut(OPENAI_STREAM, points)) == run_messages(OPENAI_STREAM)
