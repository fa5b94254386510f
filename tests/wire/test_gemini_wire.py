"""OpenAI chat <-> Gemini generateContent: requests, schemas, responses, errors and streams."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktproxy.errors import GatewayError
from ktproxy.wire.gemini import SKIP_SIGNATURE, gemini_request
from ktproxy.wire.gemini_response import (
    completion,
    error_body,
    finish_reason,
    retry_after,
    usage,
)
from ktproxy.wire.gemini_schema import clean_schema
from ktproxy.wire.gemini_stream import GeminiStreamTranslator


def request(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return gemini_request({"model": "gemini-2.0-flash", "messages": messages, **fields})


def refused(messages: list[dict[str, Any]], **fields: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        request(messages, **fields)
    assert info.value.status == 400
    return info.value


HI = [{"role": "user", "content": "hi"}]


# --- requests -----------------------------------------------------------------------------


def test_roles_system_and_merging() -> None:
    out = request(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": ""},
            {"role": "user", "content": "four"},
        ]
    )
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
            {"role": "model", "parts": [{"text": "three"}]},
            {"role": "user", "parts": [{"text": "four"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
    }


def test_only_system_messages_become_the_prompt() -> None:
    out = request([{"role": "system", "content": "Say hi."}])
    assert out == {"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]}


def test_fields_without_a_gemini_counterpart_are_left_out() -> None:
    out = request(
        HI,
        user="u-1",
        store=True,
        metadata={"a": "b"},
        parallel_tool_calls=False,
        logit_bias={"1": 2},
        stream=True,
        stream_options={"include_usage": True},
        n=1,
    )
    assert out == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_generation_config() -> None:
    out = request(
        HI,
        max_tokens=10,
        max_completion_tokens=20,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        seed=7,
        stop="END",
        n=3,
        response_format={"type": "json_object"},
    )
    assert out["generationConfig"] == {
        "maxOutputTokens": 20,
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 40,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "seed": 7,
        "stopSequences": ["END"],
        "candidateCount": 3,
        "responseMimeType": "application/json",
    }
    assert request(HI, max_completion_tokens=None, max_tokens=5)["generationConfig"] == {
        "maxOutputTokens": 5
    }
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}}
    assert request(HI, response_format=fmt, stop=["x", "y"])["generationConfig"] == {
        "stopSequences": ["x", "y"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}},
    }
    assert "generationConfig" not in request(HI, response_format={"type": "text"})


def test_media_parts() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
        {"type": "image_url", "image_url": {"url": "https://example.org/a.png?x=1"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain,hi%20there"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "file", "file": {"file_data": "JVBE", "filename": "notes.txt"}},
    ]
    parts = request([{"role": "user", "content": content}])["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.org/a.png?x=1"}},
        {"inlineData": {"mimeType": "text/plain", "data": "aGkgdGhlcmU="}},
        {"inlineData": {"mimeType": "audio/mp3", "data": "AAAA"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        {"inlineData": {"mimeType": "text/plain", "data": "JVBE"}},
    ]


def test_tool_calls_and_results() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": ""}},
    ]
    out = request(
        [
            *HI,
            {"role": "assistant", "content": "Let me look.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_b", "content": "[1, 2]"},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": "thanks"},
        ]
    )
    assert out["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Let me look."},
                {"functionCall": {"name": "f", "args": {"x": 1}}},
                {"functionCall": {"name": "g", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "g", "response": {"output": [1, 2]}}},
                {"functionResponse": {"name": "f", "response": {"output": "ok"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]


def test_legacy_functions() -> None:
    out = request(
        [
            *HI,
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "function", "name": "f", "content": '{"done": true}'},
        ],
        functions=[{"name": "f", "parameters": {"type": "object", "properties": {}}}],
        function_call={"name": "f"},
    )
    assert out["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "f", "response": {"done": True}}}],
    }
    assert out["tools"] == [{"functionDeclarations": [{"name": "f"}]}]
    assert out["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }


def test_thought_signatures() -> None:
    signed = {"google": {"thought_signature": "c2ln"}}
    calls = [
        {"id": "1", "function": {"name": "f", "arguments": "{}"}},
        {"id": "2", "function": {"name": "g", "arguments": "{}"}, "extra_content": signed},
    ]
    messages: list[dict[str, Any]] = [*HI, {"role": "assistant", "tool_calls": calls}]
    parts = request(messages)["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == [None, "c2ln"]
    gemini3 = gemini_request({"model": "gemini-3-pro-preview", "messages": messages})
    parts = gemini3["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in parts] == [SKIP_SIGNATURE, "c2ln"]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("choice", "config", "names"),
    [
        (None, None, ["f", "g"]),
        ("auto", {"mode": "AUTO"}, ["f", "g"]),
        ("none", {"mode": "NONE"}, ["f", "g"]),
        ("required", {"mode": "ANY"}, ["f", "g"]),
        (
            {"type": "function", "function": {"name": "g"}},
            {"mode": "ANY", "allowedFunctionNames": ["g"]},
            ["f", "g"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"function": {"name": "g"}}]},
            },
            {"mode": "AUTO"},
            ["g"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": [{"function": {"name": "g"}}]},
            },
            {"mode": "ANY", "allowedFunctionNames": ["g"]},
            ["f", "g"],
        ),
    ],
)
def test_tool_choice(choice: Any, config: dict[str, Any] | None, names: list[str]) -> None:
    tools = [TOOL, {"type": "function", "function": {"name": "g"}}]
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None:
        fields["tool_choice"] = choice
    out = request(HI, **fields)
    assert [d["name"] for d in out["tools"][0]["functionDeclarations"]] == names
    assert out.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})


@pytest.mark.parametrize(
    ("messages", "fields", "param"),
    [
        ([{"role": "wizard", "content": "x"}], {}, "messages[0].role"),
        (["hi"], {}, "messages[0]"),
        (
            [{"role": "tool", "tool_call_id": "nope", "content": "x"}],
            {},
            "messages[0].tool_call_id",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            {},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{"}}],
                }
            ],
            {},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}],
            {},
            "messages[0].content[0]",
        ),
        (
            [{"role": "user", "content": [{"type": "video", "video": {}}]}],
            {},
            "messages[0].content[0]",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            {},
            "messages[0].content[0]",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            {},
            "messages[0].content[0]",
        ),
        ([{"role": "user", "content": 5}], {}, "messages[0].content"),
        (HI, {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        (HI, {"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_untranslatable_requests_are_400(
    messages: list[dict[str, Any]], fields: dict[str, Any], param: str
) -> None:
    assert refused(messages, **fields).param == param


def test_messages_must_be_a_list() -> None:
    with pytest.raises(GatewayError):
        gemini_request({"model": "m", "messages": "hi"})


# --- schemas ------------------------------------------------------------------------------


def test_schema_forms_gemini_does_not_know() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "format": "email", "minLength": 1},
            "when": {"type": "string", "format": "date-time"},
            "size": {"type": "integer", "format": "int64", "exclusiveMinimum": 0},
            "kind": {"const": "fixed"},
            "level": {"enum": [1, 2, 3]},
            "flag": {"enum": [True, False, None]},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "opt"},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "multi": {"type": ["string", "integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "pair": {"type": "array", "items": [{"type": "string"}, {"type": "number"}]},
            "free": True,
        },
        "required": ["name", "ghost"],
    }
    assert clean_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "minLength": 1},
            "when": {"type": "STRING", "format": "date-time"},
            "size": {"type": "INTEGER", "format": "int64"},
            "kind": {"type": "STRING", "enum": ["fixed"]},
            "level": {"type": "STRING", "enum": ["1", "2", "3"]},
            "flag": {"type": "STRING", "enum": ["true", "false"], "nullable": True},
            "maybe": {"type": "NUMBER", "description": "opt", "nullable": True},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
            "multi": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}], "nullable": True},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "pair": {"type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}},
            "free": {},
        },
        "required": ["name"],
    }


def test_integer_enum_keeps_its_type() -> None:
    assert clean_schema({"type": "integer", "enum": [1, 2]}) == {
        "type": "INTEGER",
        "enum": ["1", "2"],
        "format": "enum",
    }


def test_references_are_inlined() -> None:
    schema = {
        "$defs": {
            "Point": {"type": "object", "properties": {"x": {"type": "number"}}},
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/Node"}, "v": {"type": "string"}},
            },
        },
        "type": "object",
        "properties": {
            "at": {"$ref": "#/$defs/Point", "description": "where"},
            "via": {"allOf": [{"$ref": "#/$defs/Point"}], "title": "Via"},
            "tree": {"$ref": "#/$defs/Node"},
            "lost": {"$ref": "#/$defs/Missing"},
        },
    }
    point = {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}}}
    assert clean_schema(schema)["properties"] == {
        "at": {**point, "description": "where"},
        "via": {**point, "title": "Via"},
        "tree": {
            "type": "OBJECT",
            "properties": {"child": {"type": "OBJECT"}, "v": {"type": "STRING"}},
        },
        "lost": {"type": "OBJECT"},
    }


def test_all_of_merges_properties() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    }
    assert clean_schema(schema, ordered=True) == {
        "type": "OBJECT",
        "properties": {"b": {"type": "BOOLEAN"}, "a": {"type": "STRING"}},
        "propertyOrdering": ["b", "a"],
        "required": ["a", "b"],
    }


# --- whole responses ----------------------------------------------------------------------


def counter() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"call_{next(numbers)}"


def translate(response: dict[str, Any]) -> dict[str, Any]:
    body = completion(orjson.dumps(response), "gemini-x", created=5, new_id=counter())
    result: dict[str, Any] = orjson.loads(body)
    return result


def test_response_with_text_and_calls() -> None:
    out = translate(
        {
            "candidates": [
                {
                    "index": 1,
                    "content": {"role": "model", "parts": [{"text": "b"}]},
                    "finishReason": "MAX_TOKENS",
                },
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking...", "thought": True},
                            {"text": "Hel"},
                            {"text": "lo"},
                            {
                                "functionCall": {"name": "f", "args": {"x": "é"}},
                                "thoughtSignature": "c2ln",
                            },
                            {"functionCall": {"id": "g-1", "name": "g"}},
                        ],
                    },
                    "finishReason": "STOP",
                },
            ],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 4,
                "thoughtsTokenCount": 3,
                "cachedContentTokenCount": 2,
                "totalTokenCount": 17,
            },
            "modelVersion": "gemini-x-001",
            "responseId": "abc",
        }
    )
    assert out == {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 5,
        "model": "gemini-x-001",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":"é"}'},
                            "extra_content": {"google": {"thought_signature": "c2ln"}},
                        },
                        {
                            "id": "g-1",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "b", "refusal": None},
                "logprobs": None,
                "finish_reason": "length",
            },
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 7,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        (None, False, "stop"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("OTHER", False, "stop"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
    ],
)
def test_finish_reasons(reason: str | None, calls: bool, expected: str) -> None:
    assert finish_reason(reason, calls) == expected


def test_usage_without_metadata() -> None:
    assert usage(None)["total_tokens"] == 0
    assert usage({"promptTokenCount": 2, "candidatesTokenCount": 3})["total_tokens"] == 5


def test_filtered_candidate_has_no_content() -> None:
    out = translate({"candidates": [{"finishReason": "SAFETY", "index": 0}]})
    (choice,) = out["choices"]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "content_filter"
    assert out["model"] == "gemini-x" and out["id"].startswith("chatcmpl-")


def test_blocked_prompt_is_a_400() -> None:
    blocked = {"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "unsafe"}}
    with pytest.raises(GatewayError) as info:
        translate(blocked)
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        "content_filter",
        "messages",
    )
    assert info.value.message.endswith("(SAFETY): unsafe")


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'"x"'])
def test_non_gemini_body_is_502(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        completion(body, "m")
    assert info.value.status == 502


# --- errors -------------------------------------------------------------------------------


def google(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = list(details)
    return orjson.dumps({"error": err})


RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36.2s"}
INFO = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            google(400, "INVALID_ARGUMENT", "bad key", INFO),
            {"message": "bad key", "type": "invalid_request_error", "code": "api_key_invalid"},
        ),
        (
            429,
            google(429, "RESOURCE_EXHAUSTED", "slow down", RETRY),
            {"message": "slow down", "type": "rate_limit_error", "code": "resource_exhausted"},
        ),
        (
            403,
            b"[" + google(403, "PERMISSION_DENIED", "no") + b"]",
            {"message": "no", "type": "permission_error", "code": "permission_denied"},
        ),
        (
            503,
            b"<html>Service Unavailable</html>",
            {
                "message": "Upstream returned HTTP 503: <html>Service Unavailable</html>",
                "type": "server_error",
                "code": "upstream_http_503",
            },
        ),
        (
            418,
            b"",
            {
                "message": "Upstream returned HTTP 418.",
                "type": "upstream_error",
                "code": "upstream_http_418",
            },
        ),
    ],
)
def test_error_bodies(status: int, body: bytes, expected: dict[str, Any]) -> None:
    assert orjson.loads(error_body(status, body)) == {"error": {**expected, "param": None}}


@pytest.mark.parametrize(
    ("delay", "expected"),
    [("36.2s", "37"), ("0.2s", "1"), ("5s", "5"), ("soon", None), ("nans", None), (None, None)],
)
def test_retry_after(delay: str | None, expected: str | None) -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]
    body = google(429, "RESOURCE_EXHAUSTED", "x", *(details if delay else []))
    assert retry_after(body) == expected
    assert retry_after(b"not json") is None


# --- streams ------------------------------------------------------------------------------


def sse(*events: dict[str, Any], end: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + end for e in events)


def run(data: bytes | list[bytes], *, include_usage: bool = True, model: str = "m") -> bytes:
    translator = GeminiStreamTranslator(model, include_usage, created=1, new_id=counter())
    pieces = [data] if isinstance(data, bytes) else data
    return b"".join(translator.feed(p) for p in pieces) + translator.finish()


def chunks(out: bytes) -> list[Any]:
    events = [e for e in out.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    return [e[6:] if e == b"data: [DONE]" else orjson.loads(e[6:]) for e in events]


def text(content: str, index: int | None = None, finish: str | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": content}]}}
    if index is not None:
        cand["index"] = index
    if finish:
        cand["finishReason"] = finish
    return cand


USAGE = {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}
STREAM = sse(
    {
        "candidates": [text("Hel")],
        "usageMetadata": {**USAGE, "candidatesTokenCount": 1},
        "responseId": "r1",
    },
    {"candidates": [text("lo ✓", finish="STOP")], "usageMetadata": USAGE, "modelVersion": "v2"},
)


def test_stream_sequence() -> None:
    out = chunks(run(STREAM))
    base = {"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], "usage": None}

    assert out == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo ✓"}),
        chunk({}, "stop"),
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": 2,
                "total_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        },
        b"[DONE]",
    ]


def test_stream_without_include_usage() -> None:
    out = chunks(run(STREAM, include_usage=False))
    assert out[-1] == b"[DONE]"
    assert all("usage" not in c for c in out[:-1]) and all(c["choices"] for c in out[:-1])


def test_stream_candidates_and_calls() -> None:
    call = {"functionCall": {"name": "f", "args": {"q": 1}}}
    data = sse(
        {"candidates": [text("a"), text("b", index=1)]},
        {
            "candidates": [
                {"content": {"parts": [call, call]}, "finishReason": "STOP"},
                text("c", index=1, finish="MAX_TOKENS"),
            ]
        },
    )
    out = chunks(run(data, include_usage=False))
    deltas = [
        (c["choices"][0]["index"], c["choices"][0]["delta"], c["choices"][0]["finish_reason"])
        for c in out[:-1]
    ]
    fn = {"name": "f", "arguments": '{"q":1}'}
    assert deltas == [
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"content": "a"}, None),
        (1, {"role": "assistant", "content": ""}, None),
        (1, {"content": "b"}, None),
        (
            0,
            {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": fn}]},
            None,
        ),
        (
            0,
            {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": fn}]},
            None,
        ),
        (0, {}, "tool_calls"),
        (1, {"content": "c"}, None),
        (1, {}, "length"),
    ]


def error_of(out: bytes) -> dict[str, Any]:
    last = chunks(out)[-1]
    assert isinstance(last, dict) and b"[DONE]" not in out
    error: dict[str, Any] = last["error"]
    return error


def test_stream_blocked_prompt() -> None:
    out = run(sse({"promptFeedback": {"blockReason": "OTHER"}}, {"candidates": [text("x")]}))
    assert len(chunks(out)) == 1
    assert error_of(out)["code"] == "content_filter"


def test_stream_error_event() -> None:
    err = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    out = run(sse({"candidates": [text("x")]}, err, {"candidates": [text("y")]}))
    assert error_of(out) == {
        "message": "overloaded",
        "type": "server_error",
        "param": None,
        "code": "unavailable",
    }
    assert b'"y"' not in out


@pytest.mark.parametrize(
    "data",
    [
        b"",
        sse({"candidates": [text("unfinished")]}),
        sse({"usageMetadata": USAGE}),
    ],
)
def test_stream_cut_short(data: bytes) -> None:
    assert error_of(run(data))["code"] == "upstream_unavailable"


def test_stream_non_json_event() -> None:
    assert error_of(run(b"data: {oops\r\n\r\n"))["code"] == "upstream_bad_response"


def test_stream_comments_and_unterminated_last_event() -> None:
    data = b": keep-alive\n\n" + sse({"candidates": [text("ok", finish="STOP")]}, end=b"")
    out = chunks(run(data, include_usage=False))
    assert [c["choices"][0]["delta"] for c in out[:-1]][1] == {"content": "ok"}
    assert out[-1] == b"[DONE]"


PROPERTY_STREAM = sse(
    {"candidates": [text("日本"), text("é", index=1)], "responseId": "p", "usageMetadata": USAGE},
    {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "語 ✓"},
                        {
                            "functionCall": {"name": "f", "args": {"s": "ü€"}},
                            "thoughtSignature": "c2ln",
                        },
                    ]
                },
                "finishReason": "STOP",
            }
        ]
    },
    {"candidates": [text("\r\n", index=1, finish="SAFETY")], "usageMetadata": USAGE},
)


@given(
    st.lists(st.integers(min_value=0, max_value=len(PROPERTY_STREAM)), max_size=40),
    st.booleans(),
)
def test_stream_output_does_not_depend_on_the_cuts(points: list[int], lf: bool) -> None:
    data = PROPERTY_STREAM.replace(b"\r\n\r\n", b"\n\n") if lf else PROPERTY_STREAM
    bounds = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(pieces) == run(PROPERTY_STREAM)
