"""Bad input and upstream faults: a clear OpenAI-shaped error, and the gateway keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import BlackholePort, RunningGateway, free_port, openai_config, sdk_client

USER = [{"role": "user", "content": "hello"}]


def client(gw: RunningGateway, **kwargs: object) -> OpenAI:
    client: OpenAI = sdk_client(gw, **kwargs)
    return client


def assert_still_serving(gw: RunningGateway, model: str = "gpt-4o") -> None:
    out = client(gw).chat.completions.create(model=model, messages=USER)
    assert out.choices[0].message.content


def post_raw(gw: RunningGateway, body: bytes, **headers: str) -> httpx.Response:
    hdrs = {"content-type": "application/json", **headers}
    return httpx.post(f"{gw.base_url}/chat/completions", content=body, headers=hdrs)


def error_of(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b"[1, 2]", None, "Invalid request"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model"),
        (b'{"model": "gpt-4o"}', "messages", "messages"),
        (b'{"model": "gpt-4o", "messages": []}', "messages", "length >= 1"),
        (b'{"model": 7, "messages": [{"role": "user"}]}', "model", "Expected `str`"),
        (b'{"model": "gpt-4o", "messages": [{"content": "x"}]}', "messages[0]", "role"),
        (b'{"model": "gpt-4o", "messages": "hi"}', "messages", "Expected `array`"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user"}], "stream": "yes"}', "stream", ""),
    ],
)
def test_malformed_requests_are_400(
    gateway: RunningGateway,
    upstream: FakeOpenAIUpstream,
    body: bytes,
    param: str | None,
    fragment: str,
) -> None:
    response = post_raw(gateway, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in str(error["message"])
    assert upstream.requests == []
    assert_still_serving(gateway)


def test_sdk_sees_bad_request(gateway: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError):
        client(gateway).chat.completions.create(model="gpt-4o", messages=[])
    assert_still_serving(gateway)


def test_wrong_content_type_is_415(gateway: RunningGateway) -> None:
    response = post_raw(gateway, b"model=gpt-4o", **{"content-type": "text/plain"})
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert_still_serving(gateway)


def test_body_over_limit_is_413(make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream) -> None:
    gw = make_gateway(openai_config(upstream.url, gateway=", max_body_bytes: 2048"))
    big = [{"role": "user", "content": "x" * 4096}]
    with pytest.raises(openai.APIStatusError) as info:
        client(gw).chat.completions.create(model="gpt-4o", messages=big)
    assert info.value.status_code == 413

    # Without Content-Length (chunked upload) the limit holds as well.
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}]}'

    response = httpx.post(
        f"{gw.base_url}/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert upstream.requests == []
    assert_still_serving(gw)


def test_unknown_path_and_method(gateway: RunningGateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/nope")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"
    response = httpx.delete(f"{gateway.base_url}/chat/completions")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    error_of(response)


def test_upstream_refused_is_502(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(openai_config(f"http://127.0.0.1:{free_port()}"))
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            client(gw).chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
        assert info.value.status_code == 502
        assert info.value.code == "upstream_unavailable"  # type: ignore[attr-defined]
    assert_still_serving(gw, model="mock-model")


def test_connect_timeout_is_504(make_gateway: GatewayFactory) -> None:
    hole = BlackholePort()
    try:
        gw = make_gateway(
            openai_config(
                f"http://127.0.0.1:{hole.port}", timeouts="      timeouts: {connect: 0.5}"
            )
        )
        with pytest.raises(openai.APIStatusError) as info:
            client(gw).chat.completions.create(model="gpt-4o", messages=USER)
        assert info.value.status_code == 504
        assert info.value.code == "upstream_timeout.connect"  # type: ignore[attr-defined]
        assert_still_serving(gw, model="mock-model")
    finally:
        hole.close()


def test_first_byte_timeout_is_504(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(
        openai_config(upstream.url, timeouts="      timeouts: {first_byte: 0.4, idle: 5}")
    )
    for stream in (False, True):
        upstream.enqueue(Reply(delay_before_headers=2.0))
        with pytest.raises(openai.APIStatusError) as info:
            client(gw).chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
        assert info.value.status_code == 504
        assert info.value.code == "upstream_timeout.first_byte"  # type: ignore[attr-defined]
    assert_still_serving(gw)


def test_idle_timeout_mid_stream_ends_with_error_event(
    make_gateway: GatewayFactory, upstream: FakeOpenAIUpstream
) -> None:
    gw = make_gateway(
        openai_config(upstream.url, timeouts="      timeouts: {first_byte: 5, idle: 0.4}")
    )
    upstream.enqueue(Reply(content="one two three four", stall_after_chunks=2, stall_seconds=3))
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(gw).chat.completions.create(model="gpt-4o", messages=USER, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received, "chunks before the stall reach the client"
    assert "idle timeout" in info.value.message
    assert_still_serving(gw)


def test_truncated_stream_is_relayed_as_is(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Reply(content="a b c d e f g h", n_chunks_then_close=3))
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "stream": True},
    ) as response:
        body = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert body.count(b"data: ") >= 3 and b"[DONE]" not in body
    assert_still_serving(gateway)


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_pass_through(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream, stream: bool
) -> None:
    upstream.enqueue(Reply(status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as info:
        client(gateway).chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
    assert info.value.response.headers["retry-after"] == "7"
    upstream_error = info.value.body
    assert isinstance(upstream_error, dict) and upstream_error["type"]
    upstream.enqueue(
        Reply(
            status=400,
            error_body=b'{"error": {"message": "bad temperature", '
            b'"type": "invalid_request_error", "param": "temperature", "code": null}}',
        )
    )
    with pytest.raises(openai.BadRequestError) as bad:
        client(gateway).chat.completions.create(model="gpt-4o", messages=USER, stream=stream)
    assert bad.value.message.endswith("bad temperature")
    assert bad.value.param == "temperature"  # type: ignore[attr-defined]
    assert_still_serving(gateway)


def test_html_error_page_becomes_json(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        Reply(
            status=503,
            error_body=b"<html><body>Service Unavailable</body></html>",
            content_type="text/html",
        )
    )
    response = post_raw(gateway, b'{"model": "gpt-4o", "messages": [{"role": "user"}]}')
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "upstream_http_503" and "Service Unavailable" in str(error["message"])
    assert_still_serving(gateway)


def test_client_disconnect_releases_upstream(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Reply(infinite=True))
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": USER, "stream": True},
        timeout=10,
    ) as response:
        seen = 0
        for _ in response.iter_raw():
            seen += 1
            if seen >= 3:
                break
        before = upstream.disconnects
    deadline = time.monotonic() + 5
    while upstream.disconnects == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnects == before + 1, "the upstream stream was not closed"
    assert gateway.state.pool.connections_in_use() == 0
    assert gateway.state.inflight == 0
    assert_still_serving(gateway)


def test_stream_is_relayed_as_it_arrives(
    gateway: RunningGateway, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        Reply(content="early words then late ones", stall_after_chunks=2, stall_seconds=1.5)
    )
    start = time.monotonic()
    first = None
    stream = client(gateway).chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - start
    total = time.monotonic() - start
    assert first is not None and total >= 1.5
    assert first < total - 1.0, "the first chunk arrived only with the rest (buffered)"


def test_errors_carry_the_request_id(gateway: RunningGateway) -> None:
    response = post_raw(gateway, b'{"model": "nope", "messages": [{"role": "user"}]}')
    assert response.status_code == 404
    assert len(response.headers["x-kt-request-id"]) == 32
