"""Ollama's native chat format to and from OpenAI's: requests, answers, streams, errors."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ktproxy.errors import GatewayError
from ktproxy.wire.ollama import (
    MAX_LINE,
    NativeStream,
    completion,
    error_body,
    native_request,
)
from ktproxy.wire.sse import SSEParser, event_data

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42"
    "mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
CREATED_AT = "2024-07-22T20:33:28.123648123Z"
CREATED = 1721680408


def counter_ids() -> Callable[[str], str]:
    count = itertools.count(1)
    return lambda prefix: f"{prefix}{next(count)}"


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def piece(content: str = "", **message: Any) -> bytes:
    return line(
        {
            "model": "llama3.2",
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": content, **message},
            "done": False,
        }
    )


def final(reason: str = "stop", prompt: int = 12, generated: int = 7) -> bytes:
    return line(
        {
            "model": "llama3.2",
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reason,
            "total_duration": 885095291,
            "prompt_eval_count": prompt,
            "eval_count": generated,
        }
    )


def payloads(sse: bytes) -> list[Any]:
    """The decoded `data:` payloads of an SSE byte string ("[DONE]" kept as is)."""
    parser = SSEParser()
    out: list[Any] = []
    for event in parser.feed(sse):
        data = event_data(event)
        assert data is not None
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    assert parser.remainder() == b""
    return out


def gateway_error(fn: Callable[[], object]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        fn()
    return info.value


# --- requests -----------------------------------------------------------------------------


def test_plain_request_always_says_whether_to_stream() -> None:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    assert native_request(body) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    }
    assert native_request({**body, "stream": True})["stream"] is True


def test_sampling_parameters_become_options() -> None:
    native = native_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "max_tokens": 50,
            "stop": "END",
            "presence_penalty": 0.5,
            "keep_alive": "10m",
            "options": {"num_ctx": 8192, "temperature": 1.5},
            "user": "someone",
        }
    )
    assert native["options"] == {
        "num_ctx": 8192,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "num_predict": 50,
        "stop": ["END"],
        "presence_penalty": 0.5,
    }
    assert native["keep_alive"] == "10m"
    assert "user" not in native
    both = native_request(
        {"model": "m", "messages": [], "max_tokens": 50, "max_completion_tokens": 20, "stop": []}
    )
    assert both["options"] == {"num_predict": 20, "stop": []}


def test_parts_are_joined_and_data_url_images_become_base64() -> None:
    native = native_request(
        {
            "model": "llava",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "text", "text": "And this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
            ],
        }
    )
    assert native["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?\nAnd this?", "images": [PNG, PNG]},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,not-base64"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        "just a string",
    ],
)
def test_unsupported_parts_are_400(part: Any) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    err = gateway_error(lambda: native_request(request))
    assert err.status == 400 and err.param == "messages[0].content[0]"


def test_tool_round_trip_messages() -> None:
    native = native_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"degrees": 21}'},
            ],
        }
    )
    assert native["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    "id": "call_1",
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"degrees": 21}',
            "tool_call_id": "call_1",
            "tool_name": "get_weather",
        },
    ]


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_must_be_an_object(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    request = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}
    err = gateway_error(lambda: native_request(request))
    assert err.status == 400 and err.param == "messages[0].tool_calls[0].function.arguments"


TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "b", "strict": True}},
]


def test_tools_and_tool_choice() -> None:
    base = {"model": "m", "messages": [], "tools": TOOLS}
    assert native_request(base)["tools"] == TOOLS
    assert native_request({**base, "tool_choice": "auto"})["tools"] == TOOLS
    assert "tools" not in native_request({**base, "tool_choice": "none"})
    named = {"type": "function", "function": {"name": "b"}}
    assert native_request({**base, "tool_choice": named})["tools"] == [TOOLS[1]]
    missing = {"type": "function", "function": {"name": "zzz"}}
    assert gateway_error(lambda: native_request({**base, "tool_choice": missing})).status == 400
    assert gateway_error(lambda: native_request({**base, "tools": [{"type": "x"}]})).status == 400


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    base: dict[str, Any] = {"model": "m", "messages": []}
    as_json = native_request({**base, "response_format": {"type": "json_object"}})
    assert as_json["format"] == "json"
    spec = {"type": "json_schema", "json_schema": {"name": "W", "schema": schema, "strict": True}}
    assert native_request({**base, "response_format": spec})["format"] == schema
    assert "format" not in native_request({**base, "response_format": {"type": "text"}})


def test_bad_requests() -> None:
    assert (
        gateway_error(lambda: native_request({"model": "m", "messages": [], "n": 2})).param == "n"
    )
    assert gateway_error(lambda: native_request({"model": "m", "messages": "x"})).status == 400
    bad_role = {"model": "m", "messages": [{"role": "robot", "content": "x"}]}
    assert gateway_error(lambda: native_request(bad_role)).param == "messages[0]"


# --- whole answers ------------------------------------------------------------------------


def test_text_answer() -> None:
    body = json.dumps(
        {
            "model": "llama3.2",
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": "Hello!", "thinking": "hmm, secret"},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 26,
            "eval_count": 298,
        }
    ).encode()
    out = json.loads(completion(body, "requested", counter_ids()))
    assert out == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "llama3.2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324},
    }
    ChatCompletion.model_validate(out)


def test_tool_call_answer() -> None:
    body = json.dumps(
        {
            "model": "llama3.2",
            "created_at": "not a time",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Zürich"}}},
                    {"id": "call_x", "function": {"index": 1, "name": "now", "arguments": {}}},
                ],
            },
            "done": True,
            "done_reason": "stop",
        }
    ).encode()
    out = ChatCompletion.model_validate(json.loads(completion(body, "m", counter_ids())))
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("call_1", "get_weather", '{"city":"Zürich"}'),
        ("call_x", "now", "{}"),
    ]
    assert out.usage is not None and out.usage.total_tokens == 0
    assert out.created > 0


def test_length_and_ndjson_answers() -> None:
    body = piece("Hel") + piece("lo") + final("length", 3, 2)
    out = ChatCompletion.model_validate(json.loads(completion(body, "m", counter_ids())))
    assert out.choices[0].message.content == "Hello"
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 2


@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b'{"error": "boom"}', b"[1]"])
def test_unreadable_answers_are_502(body: bytes) -> None:
    err = gateway_error(lambda: completion(body, "m"))
    assert err.status == 502 and err.type == "upstream_error"


# --- streams ------------------------------------------------------------------------------


def stream_of(*lines: bytes, include_usage: bool = False) -> list[Any]:
    translator = NativeStream("requested", include_usage=include_usage, make_id=counter_ids())
    data = b"".join(lines)
    return payloads(translator.feed(data) + translator.finish())


def test_stream_events_in_openai_order() -> None:
    events = stream_of(
        piece("", thinking="let me think"),
        piece("Hel"),
        piece("lo ✓"),
        piece(tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}]),
        final(),
        include_usage=True,
    )
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert {c.id for c in chunks} == {"chatcmpl-1"} and {c.created for c in chunks} == {CREATED}
    assert {c.model for c in chunks} == {"llama3.2"}
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    assert [d.content for d in deltas[1:3]] == ["Hel", "lo ✓"]
    call = (deltas[3].tool_calls or [])[0]
    assert (call.index, call.id, call.type) == (0, "call_2", "function")
    assert call.function is not None
    assert (call.function.name, call.function.arguments) == ("f", '{"x":1}')
    assert chunks[4].choices[0].finish_reason == "tool_calls"
    assert chunks[5].choices == [] and chunks[5].usage is not None
    assert chunks[5].usage.model_dump() == {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "total_tokens": 19,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    assert all(e["usage"] is None for e in events[:5])
    assert "think" not in json.dumps(events)


def test_stream_without_usage_has_no_usage_field() -> None:
    events = stream_of(piece("a"), final("length"))
    assert [e if e == "[DONE]" else e["choices"][0]["finish_reason"] for e in events] == [
        None,
        None,
        "length",
        "[DONE]",
    ]
    assert all("usage" not in e for e in events[:-1])


def test_tool_call_indexes_run_over_lines() -> None:
    calls = [{"function": {"name": n, "arguments": {}}} for n in "ab"]
    events = stream_of(piece(tool_calls=calls), piece(tool_calls=calls[:1]), final())
    indexes = [
        c["index"] for e in events[1:-2] for c in e["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert indexes == [0, 1, 2]


def test_error_line_ends_the_stream_with_an_error_event() -> None:
    events = stream_of(piece("Hi"), line({"error": "model runner crashed"}), piece("late"))
    assert [e["choices"][0]["delta"] for e in events[:2]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
    ]
    assert events[2] == {
        "error": {
            "message": "Upstream failed mid-stream: model runner crashed",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_error",
        }
    }
    assert len(events) == 3


@pytest.mark.parametrize("bad", [b"<html>\n", b'{"message": {"content": 5}}\n'])
def test_malformed_line_is_an_error_event(bad: bytes) -> None:
    events = stream_of(piece("a"), bad, final())
    assert events[-1]["error"]["code"] == "upstream_stream_error"
    assert "[DONE]" not in events


def test_stream_cut_short_is_an_error_event() -> None:
    events = stream_of(piece("a"), piece("b"))
    assert events[-1]["error"]["message"] == "Upstream stream ended before its final message."
    assert stream_of()[0]["error"]["code"] == "upstream_stream_error"


def test_last_line_without_newline_and_crlf() -> None:
    data = (piece("a") + final()).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    events = stream_of(data)
    assert events[-1] == "[DONE]" and events[1]["choices"][0]["delta"] == {"content": "a"}


def test_a_line_without_end_is_bounded() -> None:
    translator = NativeStream("m", include_usage=False)
    translator.feed(piece("a"))
    for _ in range(MAX_LINE // 65536):
        assert translator.feed(b"x" * 65536) == b""
    (error,) = payloads(translator.feed(b"x"))
    assert error["error"]["message"] == "Upstream sent a stream line over the gateway's limit."
    assert translator.finish() == b""


def test_nothing_after_the_end() -> None:
    translator = NativeStream("m", include_usage=False)
    assert translator.feed(final()).endswith(b"data: [DONE]\n\n")
    assert translator.feed(piece("more")) == b""
    assert translator.finish() == b""


TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=12
)
LINES = st.lists(
    st.one_of(
        TEXT.map(lambda t: piece(t)),
        st.dictionaries(st.sampled_from("xyz"), TEXT, max_size=2).map(
            lambda a: piece(tool_calls=[{"function": {"name": "f", "arguments": a}}])
        ),
    ),
    max_size=12,
)


@given(LINES, st.sampled_from(["stop", "length"]), st.booleans(), st.lists(st.integers(0, 4000)))
def test_stream_translation_does_not_depend_on_the_cuts(
    lines: list[bytes], reason: str, usage: bool, points: list[int]
) -> None:
    data = b"".join(lines) + final(reason)
    whole = NativeStream("m", include_usage=usage, make_id=counter_ids())
    expected = whole.feed(data) + whole.finish()
    cut = NativeStream("m", include_usage=usage, make_id=counter_ids())
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    out = b"".join(cut.feed(data[a:b]) for a, b in itertools.pairwise(bounds)) + cut.finish()
    assert out == expected
    events = payloads(out)
    assert events[-1] == "[DONE]"
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )
    assert text == "".join(json.loads(x)["message"]["content"] for x in lines)


# --- errors -------------------------------------------------------------------------------


def test_model_not_found() -> None:
    body = error_body(404, b'{"error":"model \\"llama9\\" not found, try pulling it first"}')
    assert json.loads(body) == {
        "error": {
            "message": 'model "llama9" not found, try pulling it first',
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


@pytest.mark.parametrize(
    ("status", "body", "message", "kind", "code"),
    [
        (500, b'{"error":"out of memory"}', "out of memory", "upstream_error", "upstream_http_500"),
        (400, b'{"error":"bad"}', "bad", "invalid_request_error", "upstream_http_400"),
        (
            401,
            b"Unauthorized",
            "Upstream returned HTTP 401: Unauthorized",
            "invalid_request_error",
            "invalid_api_key",
        ),  # fmt: skip
        (502, b"", "Upstream returned HTTP 502.", "upstream_error", "upstream_http_502"),
        (
            429,
            b'{"error": ""}',
            'Upstream returned HTTP 429: {"error": ""}',
            "invalid_request_error",
            "rate_limit_exceeded",
        ),  # fmt: skip
    ],
)
def test_error_bodies(status: int, body: bytes, message: str, kind: str, code: str) -> None:
    error = json.loads(error_body(status, body))["error"]
    assert (error["message"], error["type"], error["code"]) == (message, kind, code)


def test_openai_shaped_error_passes_unchanged() -> None:
    body = b'{"error": {"message": "x", "type": "y", "param": null, "code": null}}'
    assert error_body(403, body) == body
