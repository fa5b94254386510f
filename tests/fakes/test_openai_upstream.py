"""Proves FakeOpenAIUpstream speaks OpenAI's wire format by driving it with the real SDK.

If the official ``openai`` client accepts everything the fake sends, gateway tests that use the
fake as their upstream are testing against a faithful stand-in. Tests are sync and call
``asyncio.run`` so no pytest plugin configuration is needed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from .openai_upstream import FakeOpenAIUpstream, Reply

MULTIBYTE = "héllo wörld ✓ 日本語"


def run(test: Callable[[FakeOpenAIUpstream], Awaitable[None]]) -> None:
    """Run ``test`` against a freshly started fake and always shut the fake down."""

    async def main() -> None:
        async with FakeOpenAIUpstream() as upstream:
            await test(upstream)

    asyncio.run(main())


def sdk(upstream: FakeOpenAIUpstream, prefix: str = "/v1", **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=upstream.url + prefix, api_key="sk-test", max_retries=0, **kw
    )


def test_non_streaming_echo_and_recording() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        async with sdk(up) as client:
            result = await client.chat.completions.create(
                model="gpt-x",
                messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
                extra_body={"mystery_field": {"keep": [1, 2]}},
            )
        assert result.model == "gpt-x"
        assert result.object == "chat.completion"
        assert result.choices[0].message.content == "Echo: hi there"
        assert result.choices[0].finish_reason == "stop"
        assert result.usage is not None
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2, 3)
        assert result.usage.total_tokens == 5
        (rec,) = up.requests
        assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
        assert rec.headers["authorization"] == "Bearer sk-test"
        assert rec.json is not None and rec.json["mystery_field"] == {"keep": [1, 2]}

    run(body)


def test_extra_fields_n_and_path_prefix() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(
            Reply(
                content="x",
                extra_fields={"vendor": 1},
                extra_message_fields={"reasoning_content": "hmm"},
            )
        )
        async with sdk(up, prefix="/proxy/v1") as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "q"}], n=2
            )
            result = raw.parse()
        assert raw.headers["x-request-id"].startswith("req_")
        assert [c.index for c in result.choices] == [0, 1]
        dumped = result.model_dump()
        assert dumped["vendor"] == 1
        assert dumped["choices"][1]["message"]["reasoning_content"] == "hmm"
        assert up.requests[0].path == "/proxy/v1/chat/completions"

    run(body)


def test_streaming_multibyte_reassembles() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(Reply(content=MULTIBYTE, extra_events=[b": keep-alive\n\n"]))
        async with sdk(up) as client:
            stream = await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "q"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == MULTIBYTE
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        assert all(c.usage is None for c in chunks[:-1])
        assert up.open_streams == 0 and up.disconnects == 0

    run(body)


def test_streamed_tool_calls_assemble() -> None:
    args = json.dumps({"city": "Zürich", "unit": "celsius"})
    tool: Any = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            },
        },
    }

    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(Reply(tool_calls=[("get_weather", args), ("get_weather", "{}")]))
        async with sdk(up) as client:
            async with client.chat.completions.stream(
                model="m", messages=[{"role": "user", "content": "weather?"}], tools=[tool]
            ) as stream:
                final = await stream.get_final_completion()
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert [(c.function.name, c.function.arguments) for c in calls] == [
            ("get_weather", args),
            ("get_weather", "{}"),
        ]
        assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id

    run(body)


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_parse() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(Reply(content='{"name": "Ada", "age": 36}'))
        async with sdk(up) as client:
            result = await client.chat.completions.parse(
                model="m",
                messages=[{"role": "user", "content": "who?"}],
                response_format=Person,
            )
        assert result.choices[0].message.parsed == Person(name="Ada", age=36)
        sent = up.requests[0].json
        assert sent is not None and sent["response_format"]["type"] == "json_schema"

    run(body)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=429, headers={"retry-after": "1"}), 429),
        (Reply(status=502, error_body=b"<html>bad gateway</html>", content_type="text/html"), 502),
    ],
)
def test_error_replies_raise_api_status_error(reply: Reply, status: int) -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(reply)
        async with sdk(up) as client:
            with pytest.raises(openai.APIStatusError) as info:
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}]
                )
        assert info.value.status_code == status
        if status == 429:
            assert isinstance(info.value, openai.RateLimitError)
            assert info.value.code == "rate_limit_exceeded"

    run(body)


def test_models_404_and_first_byte_delay() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        async with sdk(up, timeout=0.2) as client:
            models = await client.models.list()
            assert models.data[0].owned_by == "fake"
            with pytest.raises(openai.NotFoundError):
                await client.embeddings.create(model="m", input="x")
            up.enqueue(Reply(delay_before_headers=1.0))
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "q"}]
                )
        assert [r.path for r in up.requests] == [
            "/v1/models",
            "/v1/embeddings",
            "/v1/chat/completions",
        ]

    run(body)


async def _read_raw(up: FakeOpenAIUpstream, reply: Reply) -> tuple[list[bytes], bytes]:
    up.enqueue(reply)
    payload = {"model": "m", "messages": [{"role": "user", "content": MULTIBYTE}], "stream": True}
    reads: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        async with session.post(up.url + "/v1/chat/completions", json=payload) as resp:
            assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
            async for data in resp.content.iter_any():
                reads.append(data)
    return reads, b"".join(reads)


def test_raw_stream_events_straddle_reads() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        reads, whole = await _read_raw(up, Reply())
        assert any(not r.endswith(b"\n\n") for r in reads), "tcp_split had no effect"
        events = whole.decode().split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""]
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "Echo: " + MULTIBYTE
        _, plain = await _read_raw(up, Reply(tcp_split=False))
        assert plain.count(b"\n\n") == whole.count(b"\n\n")

    run(body)


def test_truncated_stream_and_stall() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read_raw(up, Reply(content="abcdefghij", split=[1], n_chunks_then_close=3))
        async with sdk(up, timeout=0.2) as client:
            up.enqueue(Reply(content="abcdef", stall_after_chunks=2, stall_seconds=1.0))
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}], stream=True
            )
            with pytest.raises(openai.APITimeoutError):
                async for _ in stream:
                    pass
        await _wait_for(lambda: up.open_streams == 0, timeout=2.0)

    run(body)


async def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_infinite_stream_counts_client_disconnect() -> None:
    async def body(up: FakeOpenAIUpstream) -> None:
        up.enqueue(Reply(infinite=True))
        payload = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
        async with aiohttp.ClientSession() as session:
            async with session.post(up.url + "/v1/chat/completions", json=payload) as resp:
                seen = b""
                while seen.count(b"\n\n") < 5:
                    seen += await resp.content.readany()
                assert up.open_streams == 1
                resp.close()
        await _wait_for(lambda: up.disconnects == 1 and up.open_streams == 0, timeout=2.0)
        up.reset()
        assert (up.requests, up.disconnects) == ([], 0)

    run(body)


def test_close_does_not_wait_for_endless_stream() -> None:
    async def main() -> None:
        up = FakeOpenAIUpstream()
        await up.start()
        up.enqueue(Reply(infinite=True))
        payload = {"model": "m", "messages": [], "stream": True}
        async with aiohttp.ClientSession() as session:
            resp = await session.post(up.url + "/v1/chat/completions", json=payload)
            await resp.content.readany()
            async with asyncio.timeout(5):
                await up.close()
            assert up.open_streams == 0
            resp.close()

    asyncio.run(main())
