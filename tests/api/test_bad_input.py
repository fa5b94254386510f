"""Bad input from clients: each gets a clear error in the gateway's shape, nothing of it
reaches the upstream, and the next good request (on a new connection) is served.

Requests the SDKs cannot send (smuggling-style header combinations, oversized or
malformed heads, slow-drip clients) go over raw sockets; the rest through `httpx` and
the real `openai` SDK. The schema-driven fuzz at the end sends thousands of generated
and mutated requests and checks that none gets a 5xx.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktproxy.wire.openai import MAX_CHOICES, MAX_TOKENS_BOUND
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.harness import RunningGateway, openai_config, sdk_client

USER = [{"role": "user", "content": "hello"}]
GOOD = orjson.dumps({"model": "gpt-4o", "messages": USER})
CHAT = "/v1/chat/completions"
# Examples per fuzz test (three tests): `KT_FUZZ_EXAMPLES=20000 pytest -k fuzz` for a long run.
FUZZ_EXAMPLES = int(os.environ.get("KT_FUZZ_EXAMPLES", "1200"))


# --- helpers ------------------------------------------------------------------------------


def assert_still_serving(gw: RunningGateway, model: str = "gpt-4o") -> None:
    """A good request on a new connection (a new SDK client) is answered."""
    out = sdk_client(gw).chat.completions.create(model=model, messages=USER)
    assert out.choices[0].message.content


def openai_error(status: int, body: bytes) -> dict[str, Any]:
    obj = orjson.loads(body)
    error = obj["error"]
    assert set(error) >= {"message", "type", "param", "code"}, obj
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


def post(gw: RunningGateway, body: bytes, path: str = CHAT, **headers: str) -> httpx.Response:
    hdrs = {"content-type": "application/json", **headers}
    return httpx.post(f"{gw.url}{path}", content=body, headers=hdrs, timeout=30)


def request_bytes(body: bytes = GOOD, path: str = CHAT, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class Raw:
    """A raw client connection: send bytes, read what comes back until EOF."""

    def __init__(self, gw: RunningGateway) -> None:
        self.sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self, within: float = 30.0) -> bytes:
        """Everything the server sends until it closes (bounded by `within` seconds)."""
        deadline = time.monotonic() + within
        chunks = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                # Closed, then reset: the bytes a dripping client sent after the close
                # draw an RST from the server's kernel. Closed all the same.
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError(f"connection still open after {within} s: {b''.join(chunks)!r}")

    def close(self) -> None:
        self.sock.close()


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def raw_exchange(gw: RunningGateway, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` on a new connection; the response, read until the server closes."""
    conn = Raw(gw)
    try:
        conn.send(data)
        return parse_response(conn.read_until_closed())
    finally:
        conn.close()


# --- HTTP-level: smuggling-style heads, oversized and malformed heads -------------------

H = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
B = GOOD
CL = f"Content-Length: {len(B)}\r\n".encode()
CHUNKED = f"{len(B):x}\r\n".encode() + B + b"\r\n0\r\n\r\n"

HTTP_CASES: list[tuple[str, bytes, int, str]] = [
    ("cl-and-te", H + CL + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED, 400, "Content-Length"),
    ("te-and-cl", H + b"Transfer-Encoding: chunked\r\n" + CL + b"\r\n" + CHUNKED, 400, "Length"),
    ("two-content-lengths", H + CL + b"Content-Length: 3\r\n\r\n" + B, 400, "Duplicate"),
    ("same-content-length-twice", H + CL + CL + b"\r\n" + B, 400, "Duplicate"),
    ("te-chunked-identity", H + b"Transfer-Encoding: chunked, identity\r\n\r\n" + CHUNKED, 400, ""),
    (
        "te-twice",
        H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n" + CHUNKED,
        400,
        "",
    ),
    ("te-gzip-only", H + b"Transfer-Encoding: gzip\r\n\r\n" + B, 400, "Transfer-Encoding"),
    ("te-with-space", H + b"Transfer-Encoding : chunked\r\n\r\n" + CHUNKED, 400, ""),
    ("obs-fold", H + b"X-Folded: a\r\n  b\r\n" + CL + b"\r\n" + B, 400, "whitespace"),
    ("obs-fold-te", H + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + CHUNKED, 400, ""),
    ("space-in-header-name", H + b"X Bad: 1\r\n" + CL + b"\r\n" + B, 400, "header token"),
    ("nul-in-header-value", H + b"X-Nul: a\x00b\r\n" + CL + b"\r\n" + B, 400, "value char"),
    ("nul-in-header-name", H + b"X-N\x00ul: a\r\n" + CL + b"\r\n" + B, 400, ""),
    ("bare-cr-in-header", H + b"X-Cr: a\rb\r\n" + CL + b"\r\n" + B, 400, ""),
    (
        "lf-only-line-ends",
        H.replace(b"\r\n", b"\n") + CL.replace(b"\r\n", b"\n") + b"\n" + B,
        400,
        "",
    ),
    ("negative-content-length", H + b"Content-Length: -1\r\n\r\n" + B, 400, "Content-Length"),
    ("plus-content-length", H + b"Content-Length: +41\r\n\r\n" + B, 400, "Content-Length"),
    ("hex-content-length", H + b"Content-Length: 0x10\r\n\r\n" + B, 400, "Content-Length"),
    (
        "bad-chunk-size",
        H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
        "chunk",
    ),
    (
        "bad-method-token",
        b"P@ST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n" + CL + b"\r\n" + B,
        400,
        "",
    ),
    (
        "bad-version",
        b"POST /v1/chat/completions HTTP/9.9\r\nHost: a\r\n" + CL + b"\r\n" + B,
        400,
        "",
    ),
    ("header-over-8k", H + b"X-Big: " + b"a" * 9000 + b"\r\n" + CL + b"\r\n" + B, 431, "size"),
    ("header-name-over-8k", H + b"X-" + b"a" * 9000 + b": 1\r\n" + CL + b"\r\n" + B, 431, "size"),
    (
        "200-headers",
        H + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + CL + b"\r\n" + B,
        431,
        "",
    ),
    ("request-line-over-8k", b"POST /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, ""),
]


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [pytest.param(d, s, f, id=name) for name, d, s, f in HTTP_CASES],
)
def test_malformed_http_is_refused_in_json(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, data: bytes, status: int, fragment: str
) -> None:
    got, headers, body = raw_exchange(gateway, data)
    assert got == status, body
    assert headers["content-type"].startswith("application/json")
    error = openai_error(got, body)
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    # The message names the reason, never the offending bytes (they may hold a key).
    assert "aaaaaaaa" not in error["message"] and "\\x00" not in error["message"]
    # aiohttp closes the connection after a parse error: `raw_exchange` read to EOF.
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_bad_chunk_after_a_good_head(
    quick_timeouts: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    """A chunked body that turns bad after the handler started reading it: aiohttp does
    not fail the body stream the handler waits on, so the body deadline ends the wait
    (408); a bad chunk in the same packet as the head is a 400 (HTTP_CASES)."""
    gateway = quick_timeouts
    conn = Raw(gateway)
    try:
        conn.send(H + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"mod\r\n')
        time.sleep(0.2)  # lets the handler start on the body (not a timing assertion)
        conn.send(b"zz\r\nel\r\n0\r\n\r\n")
        status, _, body = parse_response(conn.read_until_closed())
    finally:
        conn.close()
    assert status in (400, 408)
    assert openai_error(status, body)["type"] == "invalid_request_error"
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_truncated_body_then_close(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    """A client that promises more body than it sends and hangs up: nothing goes upstream."""
    conn = Raw(gateway)
    conn.send(H + b"Content-Length: 1000\r\n\r\n" + GOOD)
    conn.sock.shutdown(socket.SHUT_WR)
    conn.read_until_closed()
    conn.close()
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_unsupported_methods_are_405(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = httpx.request(method, f"{gateway.url}{CHAT}", content=GOOD)
        assert response.status_code == 405, method
        assert "POST" in response.headers["allow"]
        assert openai_error(405, response.content)["type"] == "invalid_request_error"
    response = httpx.post(f"{gateway.url}/v1/models", content=GOOD)
    assert response.status_code == 405
    openai_error(405, response.content)
    status, _, body = raw_exchange(
        gateway, b"BREW /v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert status in (400, 405)
    openai_error(status, body)
    assert upstream.requests == []
    assert_still_serving(gateway)


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonx",
    ],
)
def test_unsupported_content_types_are_415(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, ctype: str
) -> None:
    response = post(gateway, GOOD, **{"content-type": ctype})
    assert response.status_code == 415
    assert openai_error(415, response.content)["code"] == "unsupported_media_type"
    assert upstream.requests == []


def test_json_content_type_variants_are_accepted(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    for ctype in ("application/json; charset=utf-8", "APPLICATION/JSON", "text/json"):
        assert post(gateway, GOOD, **{"content-type": ctype}).status_code == 200


def test_declared_length_over_limit_is_413_before_the_body(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(openai_config(upstream.url, gateway=", max_body_bytes: 2048"))
    conn = Raw(gw)
    try:
        # Only the head is sent: the 413 comes without waiting for the 10 MB.
        conn.send(H + b"Content-Length: 10000000\r\n\r\n")
        conn.sock.settimeout(10)
        data = conn.sock.recv(65536)
    finally:
        conn.close()
    status, _, body = parse_response(data)
    assert status == 413
    assert openai_error(status, body)["code"] == "request_too_large"
    assert upstream.requests == []
    assert_still_serving(gw)


# --- JSON-level: invalid JSON and UTF-8, depth, size ---------------------------------------


def message_with(value: bytes) -> bytes:
    return b'{"model": "gpt-4o", "messages": [{"role": "user", "content": ' + value + b"}]}"


INVALID_JSON = [
    pytest.param(b'{"model": "gpt-4o", "messages": [', id="truncated"),
    pytest.param(b"\xef\xbb\xbf" + GOOD, id="utf8-bom"),
    pytest.param(message_with(b'"caf\xe9"'), id="latin1-in-content"),
    pytest.param(message_with(b'"\xff\xfe"'), id="invalid-utf8-in-content"),
    pytest.param(message_with(b'"\xed\xa0\x80"'), id="utf8-encoded-surrogate"),
    pytest.param(GOOD[:-1] + b', "x": "\xc3\x28"}', id="invalid-utf8-in-unknown-field"),
    pytest.param(GOOD[:-1] + b', "x": 1e400}', id="number-beyond-double"),
    pytest.param(GOOD[:-1] + b', "x": NaN}', id="nan"),
    pytest.param(message_with(b'"a\x01b"'), id="raw-control-char"),
    pytest.param(message_with(b'"\\ud800"'), id="lone-surrogate-escape"),
    pytest.param(GOOD + b" trailing", id="trailing-garbage"),
    pytest.param(GOOD + GOOD, id="two-documents"),
    pytest.param(b"\x00" * 64, id="nul-bytes"),
    pytest.param(GOOD.decode().encode("utf-16"), id="utf-16"),
]


@pytest.mark.parametrize("body", INVALID_JSON)
def test_invalid_json_and_utf8_are_400(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, body: bytes
) -> None:
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = openai_error(400, response.content)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    assert upstream.requests == []
    assert_still_serving(gateway)


DEPTH = 100_000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * DEPTH + b"]" * DEPTH, id="top-level-arrays"),
        pytest.param(b'{"a":' * DEPTH + b"1" + b"}" * DEPTH, id="top-level-objects"),
        pytest.param(GOOD[:-1] + b', "x": ' + b"[" * DEPTH + b"]" * DEPTH + b"}", id="unknown"),
        pytest.param(
            GOOD[:-1] + b', "metadata": {"a": ' + b"[" * DEPTH + b"]" * DEPTH + b"}}",
            id="metadata",
        ),
        pytest.param(message_with(b"[" * DEPTH + b"]" * DEPTH), id="content"),
        pytest.param(GOOD[:-1] + b', "x": ' + b"[" * DEPTH + b"}", id="unclosed"),
        pytest.param(GOOD[:-1] + b', "x": ' + b"[" * 1100 + b"]" * 1100 + b"}", id="just-over"),
    ],
)
def test_deep_nesting_is_400(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, body: bytes
) -> None:
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    assert openai_error(400, response.content)["code"] == "invalid_json"
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_moderate_nesting_is_forwarded(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    body = GOOD[:-1] + b', "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert post(gateway, body).status_code == 200
    assert upstream.requests[-1].body == body


# The fake upstream takes 1 MiB bodies at most: requests over that go to the local
# `mock` target (`mock-model`), which echoes the last user message.


def test_huge_string_under_the_limit_works(gateway: RunningGateway) -> None:
    text = "x" * (3 * 1024 * 1024)
    out = sdk_client(gateway).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": text}]
    )
    assert out.choices[0].message.content == text


def test_huge_string_over_the_limit_is_413(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        sdk_client(gateway).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "y" * (5 * 1024 * 1024)}]
        )
    assert info.value.status_code == 413
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_huge_arrays(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    # 300k elements in a field the gateway does not read: forwarded untouched (< 1 MiB).
    body = GOOD[:-1] + b', "x": [' + b",".join([b"0"] * 300_000) + b"]}"
    response = post(gateway, body)
    assert response.status_code == 200
    assert upstream.requests[-1].body == body
    # 100k messages (3 MB): checked one by one, answered.
    many = orjson.dumps(
        {"model": "mock-model", "messages": [{"role": "user", "content": "a"}] * 100_000}
    )
    assert post(gateway, many).status_code == 200
    # 500k messages, one of them bad: a 400 naming it.
    bad = [{"role": "user", "content": "a"}] * 500_000
    bad[499_999] = {"role": "user", "content": 5}  # type: ignore[dict-item]
    response = post(gateway, orjson.dumps({"model": "gpt-4o", "messages": bad}))
    assert response.status_code in (400, 413)  # 413: over the 4 MiB default first
    # 500k stop strings (2 MB) are the provider's to judge.
    stops = b'{"model": "mock-model", "messages": [{"role": "user"}], "stop": ['
    stops += b",".join([b'"a"'] * 500_000) + b"]}"
    assert post(gateway, stops).status_code == 200
    assert_still_serving(gateway)


# --- wrong types in every field the gateway reads ------------------------------------------


def with_field(name: str, value: Any) -> bytes:
    return orjson.dumps({"model": "gpt-4o", "messages": USER, name: value})


WRONG_TYPES: list[tuple[str, bytes, str]] = [
    ("model-int", orjson.dumps({"model": 7, "messages": USER}), "model"),
    ("model-null", orjson.dumps({"model": None, "messages": USER}), "model"),
    ("model-empty", orjson.dumps({"model": "", "messages": USER}), "model"),
    ("model-list", orjson.dumps({"model": ["gpt-4o"], "messages": USER}), "model"),
    (
        "messages-object",
        orjson.dumps({"model": "gpt-4o", "messages": {"role": "user"}}),
        "messages",
    ),
    ("messages-null", orjson.dumps({"model": "gpt-4o", "messages": None}), "messages"),
    ("message-string", orjson.dumps({"model": "gpt-4o", "messages": ["hi"]}), "messages[0]"),
    ("message-null", orjson.dumps({"model": "gpt-4o", "messages": [None]}), "messages[0]"),
    ("role-int", orjson.dumps({"model": "gpt-4o", "messages": [{"role": 1}]}), "messages[0].role"),
    (
        "role-empty",
        orjson.dumps({"model": "gpt-4o", "messages": [{"role": ""}]}),
        "messages[0].role",
    ),
    (
        "role-missing",
        orjson.dumps({"model": "gpt-4o", "messages": [{"content": "x"}]}),
        "messages[0]",
    ),
    ("content-int", message_with(b"5"), "messages[0].content"),
    ("content-object", message_with(b'{"text": "x"}'), "messages[0].content"),
    ("content-bool", message_with(b"true"), "messages[0].content"),
    ("part-string", message_with(b'["x"]'), "messages[0].content[0]"),
    ("part-no-type", message_with(b'[{"text": "x"}]'), "messages[0].content[0]"),
    ("part-type-int", message_with(b'[{"type": 1}]'), "messages[0].content[0].type"),
    (
        "part-text-int",
        message_with(b'[{"type": "text", "text": 5}]'),
        "messages[0].content[0].text",
    ),
    # Found by the fuzz below: a text part without its text reached the mock as None.
    ("part-text-null", message_with(b'[{"type": "text", "text": null}]'), "messages[0].content[0]"),
    ("part-text-missing", message_with(b'[{"type": "text"}]'), "messages[0].content[0]"),
    ("stream-string", with_field("stream", "yes"), "stream"),
    ("stream-int", with_field("stream", 1), "stream"),
    ("stream_options-string", with_field("stream_options", "usage"), "stream_options"),
    (
        "include_usage-string",
        with_field("stream_options", {"include_usage": "y"}),
        "stream_options.include_usage",
    ),
    ("n-string", with_field("n", "2"), "n"),
    ("n-list", with_field("n", [2]), "n"),
    ("max_tokens-string", with_field("max_tokens", "100"), "max_tokens"),
    (
        "max_completion_tokens-object",
        with_field("max_completion_tokens", {}),
        "max_completion_tokens",
    ),
    ("temperature-string", with_field("temperature", "hot"), "temperature"),
    ("temperature-bool", with_field("temperature", True), "temperature"),
    ("top_p-list", with_field("top_p", [1]), "top_p"),
    ("stop-int", with_field("stop", 5), "stop"),
    ("stop-list-of-int", with_field("stop", [1, 2]), "stop[0]"),
    ("tools-object", with_field("tools", {"type": "function"}), "tools"),
    ("tool-string", with_field("tools", ["f"]), "tools[0]"),
    (
        "tool-function-name-int",
        with_field("tools", [{"type": "function", "function": {"name": 1}}]),
        "tools[0].function.name",
    ),
    (
        "tool-function-no-name",
        with_field("tools", [{"type": "function", "function": {}}]),
        "tools[0].function",
    ),
    ("tool_choice-int", with_field("tool_choice", 1), "tool_choice"),
    ("user-int", with_field("user", 42), "user"),
    ("user-object", with_field("user", {"id": 1}), "user"),
    ("metadata-list", with_field("metadata", ["a"]), "metadata"),
    ("metadata-string", with_field("metadata", "a=b"), "metadata"),
]


@pytest.mark.parametrize(("body", "param"), [pytest.param(b, p, id=n) for n, b, p in WRONG_TYPES])
def test_wrong_types_are_400_naming_the_field(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, body: bytes, param: str
) -> None:
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error = openai_error(400, response.content)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert upstream.requests == []


def test_wrong_type_through_the_sdk(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    client = sdk_client(gateway)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER, extra_body={"user": 42})
    assert info.value.param == "user"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}],  # type: ignore[list-item, typeddict-item]
        )
    assert info.value.param == "messages[0].content[0].text"  # type: ignore[attr-defined]
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_valid_shapes_pass(gateway: RunningGateway, upstream: FakeOpenAIUpstream) -> None:
    """What real clients send in those fields is accepted and forwarded byte for byte."""
    body = orjson.dumps(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                        {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "developer", "content": "x", "name": "dev"},
            ],
            "stream": None,
            "stream_options": None,
            "n": MAX_CHOICES,
            "max_tokens": MAX_TOKENS_BOUND - 1,
            "max_completion_tokens": None,
            "temperature": 1,
            "top_p": 0.5,
            "stop": ["\n"],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "user": "u1",
            "metadata": {"k": "v", "tags": ["a"]},
            "response_format": {"type": "json_object"},
            "future_field": {"anything": [1, 2, 3]},
        }
    )
    assert post(gateway, body).status_code == 200
    assert upstream.requests[-1].body == body


# --- absurd n / max_tokens ------------------------------------------------------------------

ABSURD = [
    ("n", -1),
    ("n", 0),
    ("n", MAX_CHOICES + 1),
    ("n", 10**12),
    ("n", 1.5),
    ("n", True),
    ("n", 2**64),
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", MAX_TOKENS_BOUND),
    ("max_tokens", 10**12),
    ("max_tokens", 2.5),
    ("max_tokens", False),
    ("max_tokens", 2**70),
    ("max_completion_tokens", 0),
    ("max_completion_tokens", 10**12),
    ("max_completion_tokens", -(2**63)),
]


@pytest.mark.parametrize(("name", "value"), ABSURD)
def test_absurd_n_and_max_tokens_are_400(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, name: str, value: Any
) -> None:
    body = (
        GOOD[:-1] + f', "{name}": {value}}}'.encode()
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63
        else with_field(name, value)
    )
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    assert openai_error(400, response.content)["param"] == name
    assert upstream.requests == []


def test_absurd_values_through_the_sdk(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    client = sdk_client(gateway)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER, n=10**12)
    assert info.value.param == "n"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=-1)
    assert info.value.param == "max_tokens"  # type: ignore[attr-defined]
    # In range: the provider judges (here the fake upstream accepts).
    client.chat.completions.create(model="gpt-4o", messages=USER, n=3, max_tokens=123456)
    assert orjson.loads(upstream.requests[-1].body)["max_tokens"] == 123456


# --- the Anthropic surface ------------------------------------------------------------------

ANTHROPIC_GOOD = {"model": "gpt-4o", "max_tokens": 10, "messages": USER}


@pytest.mark.parametrize(
    ("body", "param_hint"),
    [
        pytest.param(b"{nope", None, id="invalid-json"),
        pytest.param(
            b'{"model": "gpt-4o", "max_tokens": 1, "messages": '
            b'[{"role": "user", "content": "\xff"}]}',
            None,
            id="invalid-utf8",
        ),
        pytest.param(b"[" * DEPTH + b"]" * DEPTH, None, id="deep"),
        pytest.param(orjson.dumps([1]), None, id="not-object"),
        pytest.param(
            orjson.dumps({**ANTHROPIC_GOOD, "max_tokens": "10"}),
            "max_tokens",
            id="max_tokens-string",
        ),
        pytest.param(
            orjson.dumps({**ANTHROPIC_GOOD, "max_tokens": 10**12}),
            "max_tokens",
            id="max_tokens-huge",
        ),
        pytest.param(orjson.dumps({**ANTHROPIC_GOOD, "model": 5}), "model", id="model-int"),
        pytest.param(
            orjson.dumps({**ANTHROPIC_GOOD, "messages": "hi"}), "messages", id="messages-string"
        ),
        pytest.param(
            orjson.dumps({**ANTHROPIC_GOOD, "messages": [{"role": "system", "content": "x"}]}),
            "role",
            id="bad-role",
        ),
        pytest.param(orjson.dumps({**ANTHROPIC_GOOD, "system": 5}), "system", id="system-int"),
        pytest.param(
            orjson.dumps(
                {
                    **ANTHROPIC_GOOD,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                }
            ),
            "text",
            id="text-int",
        ),
        pytest.param(
            orjson.dumps({**ANTHROPIC_GOOD, "temperature": "hot"}),
            "temperature",
            id="temperature-string",
        ),
        pytest.param(orjson.dumps({**ANTHROPIC_GOOD, "stop_sequences": 5}), "stop", id="stop-int"),
        pytest.param(orjson.dumps({**ANTHROPIC_GOOD, "tools": "x"}), "tools", id="tools-string"),
    ],
)
def test_messages_surface_gets_anthropic_errors(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, body: bytes, param_hint: str | None
) -> None:
    response = post(gateway, body, path="/v1/messages")
    assert response.status_code == 400, response.text
    obj = response.json()
    assert obj["type"] == "error"
    assert obj["error"]["type"] == "invalid_request_error"
    assert obj["error"]["message"]
    if param_hint is not None:
        assert param_hint in obj["error"]["message"] or param_hint in obj["error"].get("param", "")
    assert upstream.requests == []
    assert_still_serving(gateway)


# --- slow clients ---------------------------------------------------------------------------


class Dripper(threading.Thread):
    """Sends `data` one byte every `interval` seconds until done, stopped or cut off."""

    def __init__(self, conn: Raw, data: bytes, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.conn, self.data, self.interval = conn, data, interval
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for i in range(len(self.data)):
            if self.stop.wait(self.interval):
                return
            try:
                self.conn.sock.send(self.data[i : i + 1])
            except OSError:
                return
            self.sent += 1


@pytest.fixture
def quick_timeouts(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> RunningGateway:
    return make_gateway(openai_config(upstream.url, gateway=", header_timeout: 1, body_timeout: 1"))


def test_slow_drip_head_is_cut_while_others_are_served(
    quick_timeouts: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    gw = quick_timeouts
    conn = Raw(gw)
    head = request_bytes()
    dripper = Dripper(conn, head, interval=0.1)  # the whole head would take seconds
    dripper.start()
    try:
        served = 0
        # Other clients are served meanwhile, on their own connections.
        while dripper.is_alive() and served < 3:
            assert_still_serving(gw)
            served += 1
        data = conn.read_until_closed(within=30)
    finally:
        dripper.stop.set()
        dripper.join(5)
        conn.close()
    assert served >= 1
    assert len(upstream.requests) == served  # the served ones only
    assert dripper.sent < len(head), "the head was not cut before it was complete"
    status, headers, body = parse_response(data)
    assert status == 408
    assert headers["connection"] == "close"
    assert openai_error(status, body)["code"] == "request_timeout"
    assert_still_serving(gw)


def test_silent_connection_is_closed_without_a_response(quick_timeouts: RunningGateway) -> None:
    conn = Raw(quick_timeouts)
    try:
        assert conn.read_until_closed(within=30) == b""
    finally:
        conn.close()
    assert_still_serving(quick_timeouts)


def test_slow_drip_second_head_on_a_kept_alive_connection(quick_timeouts: RunningGateway) -> None:
    conn = Raw(quick_timeouts)
    try:
        conn.send(request_bytes())
        first = b""
        while b"\r\n\r\n" not in first or len(first.partition(b"\r\n\r\n")[2]) < int(
            parse_response(first)[1].get("content-length", "1")
        ):
            first += conn.sock.recv(65536)
        assert parse_response(first)[0] == 200
        dripper = Dripper(conn, request_bytes(), interval=0.1)
        dripper.start()
        data = conn.read_until_closed(within=30)
        dripper.stop.set()
        dripper.join(5)
    finally:
        conn.close()
    assert parse_response(data)[0] == 408


def test_slow_drip_body_is_408(
    quick_timeouts: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    conn = Raw(quick_timeouts)
    conn.send(H + f"Content-Length: {len(GOOD)}\r\n\r\n".encode())
    dripper = Dripper(conn, GOOD, interval=0.1)
    dripper.start()
    try:
        conn.sock.settimeout(30)
        data = conn.sock.recv(65536)
    finally:
        dripper.stop.set()
        dripper.join(5)
        conn.close()
    assert dripper.sent < len(GOOD)
    status, _, body = parse_response(data)
    assert status == 408
    assert openai_error(status, body)["code"] == "request_timeout"
    assert upstream.requests == []
    assert_still_serving(quick_timeouts)


def test_a_slow_but_steady_normal_client_is_not_cut(quick_timeouts: RunningGateway) -> None:
    """Head and body each well within their deadlines, with pauses between packets."""
    conn = Raw(quick_timeouts)
    try:
        data = request_bytes()
        cut = data.index(b"\r\n\r\n")
        conn.send(data[:20])
        time.sleep(0.2)
        conn.send(data[20 : cut + 4])
        time.sleep(0.2)
        conn.send(data[cut + 4 :])
        conn.sock.settimeout(30)
        assert parse_response(conn.sock.recv(65536))[0] == 200
    finally:
        conn.close()


# --- /openapi.json and the schema-driven fuzz --------------------------------------------


def test_openapi_describes_every_route(gateway: RunningGateway) -> None:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    routes = set()
    for route in gateway.runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            routes.add((path.replace("{model:.+}", "{model}"), route.method.lower()))
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == described
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    props = chat["content"]["application/json"]["schema"]["properties"]
    assert props["n"]["maximum"] == MAX_CHOICES
    events = doc["paths"]["/v1/kt/events"]["get"]
    assert events["security"]


FUZZ_CONFIG = """
gateway: {port: 41002}
providers:
  targets:
    - id: local
      provider: mock
      model: mock-model
policies:
  chain: [prompt-injection, pii-detector]
"""

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
junk_json = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)})
content = st.none() | st.text(max_size=60) | st.lists(text_part, max_size=3)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer"])},
    optional={"content": content, "name": st.text(max_size=8)},
)
chat_request = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["mock-model", "local", "mock:chat:mock-model", "nope"]),
        "messages": st.lists(message, min_size=1, max_size=4),
    },
    optional={
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
        "n": st.integers(1, 8),
        "max_tokens": st.integers(1, 4096),
        "max_completion_tokens": st.integers(1, 4096),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=3),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8)}),
                }
            ),
            max_size=2,
        ),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "user": st.text(max_size=10),
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "unknown_field": junk_json,
    },
)
anthropic_block = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)})
messages_request = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["mock-model", "nope"]),
        "max_tokens": st.integers(1, 4096),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant"]),
                    "content": st.text(max_size=40) | st.lists(anthropic_block, max_size=3),
                }
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "system": st.text(max_size=20),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(st.text(max_size=4), max_size=2),
        "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=8)}),
    },
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A request from the schema, then (usually) broken: a field's value swapped for junk
    of another type, a field dropped, a nested value replaced, or the bytes themselves
    truncated, spliced or garbled."""
    obj = draw(base)
    kind = draw(st.sampled_from(["valid", "retype", "drop", "nested", "bytes"]))
    if kind == "retype":
        obj[draw(st.sampled_from(sorted(obj) + ["n", "max_tokens", "stream"]))] = draw(junk_json)
    elif kind == "drop":
        del obj[draw(st.sampled_from(sorted(obj)))]
    elif kind == "nested":
        msg = draw(st.sampled_from(obj["messages"]))
        msg[draw(st.sampled_from(["role", "content", "name"]))] = draw(junk_json)
        parts = msg.get("content")
        if isinstance(parts, list) and parts and isinstance(parts[0], dict):
            msg["content"][0][draw(st.sampled_from(["type", "text"]))] = draw(junk_json)
    data = json.dumps(obj).encode()  # stdlib: integers beyond 64 bits too
    if kind == "bytes":
        how = draw(st.sampled_from(["truncate", "splice", "garble"]))
        at = draw(st.integers(0, len(data)))
        if how == "truncate":
            data = data[:at]
        elif how == "splice":
            data = data[:at] + draw(st.binary(max_size=16)) + data[at:]
        else:
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


def check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        obj = response.json()
        assert isinstance(obj["error"], dict) and obj["error"]["message"]


@pytest.fixture
def fuzz_gateway(make_gateway: GatewayFactory) -> RunningGateway:
    return make_gateway(FUZZ_CONFIG)


FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz_run(gw: RunningGateway, path: str, strategy: st.SearchStrategy[bytes]) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        counted = []

        @FUZZ
        @given(
            body=strategy,
            ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", ""]),
        )
        def one(body: bytes, ctype: str) -> None:
            headers = {"content-type": ctype} if ctype else {}
            check_answer(client.post(path, content=body, headers=headers))
            counted.append(1)

        one()
        assert len(counted) >= min(FUZZ_EXAMPLES, 100)
    # Alive and serving at the end.
    assert httpx.get(f"{gw.url}/healthz").status_code == 200
    out = sdk_client(gw).chat.completions.create(model="mock-model", messages=USER)
    assert out.choices[0].message.content


def test_fuzz_chat_completions(fuzz_gateway: RunningGateway) -> None:
    fuzz_run(fuzz_gateway, CHAT, mutated(chat_request))


def test_fuzz_messages(fuzz_gateway: RunningGateway) -> None:
    fuzz_run(fuzz_gateway, "/v1/messages", mutated(messages_request))


def test_fuzz_raw_bytes_and_other_routes(fuzz_gateway: RunningGateway) -> None:
    paths = st.sampled_from([CHAT, "/chat/completions", "/v1/messages", "/v1/models", "/healthz"])
    with httpx.Client(base_url=fuzz_gateway.url, timeout=30) as client:

        @FUZZ
        @given(
            path=paths,
            method=st.sampled_from(["POST", "GET", "PUT"]),
            body=st.binary(max_size=200) | junk_json.map(lambda v: json.dumps(v).encode()),
        )
        def one(path: str, method: str, body: bytes) -> None:
            check_answer(
                client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            )

        one()
    out = sdk_client(fuzz_gateway).chat.completions.create(model="mock-model", messages=USER)
    assert out.choices[0].message.content
