"""The `mock` provider: answers locally in OpenAI's format, with no network and no key.

It lets the gateway run, demo and be load-tested anywhere: `echo` repeats the last
user message, `fixed` answers with a configured reply; both stream when asked, in
chunks of `chunk_chars` characters, with usage when `stream_options.include_usage`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ktproxy.config import MockOptions
from ktproxy.providers.base import Provider, UpstreamCall, UpstreamResponse


class MockResponse(UpstreamResponse):
    """A locally generated answer: one JSON body or a list of SSE events."""

    def __init__(self, body: bytes | None, events: list[bytes] | None, delay: float) -> None:
        self.status = 200
        self.headers = {}
        self.is_event_stream = events is not None
        self._body = body
        self._events = events or []
        self._delay = delay

    async def read(self) -> bytes:
        return self._body or b""

    async def chunks(self) -> AsyncIterator[bytes]:
        for event in self._events:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield event

    def close(self) -> None:
        self._events = []


_DEFAULTS = MockOptions()


class MockProvider(Provider):
    """Answers from the target's `mock` options."""

    kind = "mock"

    @property
    def options(self) -> MockOptions:
        """The target's `mock` options, or the defaults."""
        return self.target.mock or _DEFAULTS

    async def chat(self, call: UpstreamCall) -> UpstreamResponse:
        request = orjson.loads(call.body)
        text = self._reply_text(request)
        model = str(request.get("model", self.target.model))
        n = request.get("n") if isinstance(request.get("n"), int) else 1
        n = max(1, min(n, 8))
        usage = _usage(request, text, n)
        delay = self.options.latency_ms / 1000.0
        ident = f"chatcmpl-mock-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if delay:
            await asyncio.sleep(delay)
        if not call.stream:
            body = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                    for i in range(n)
                ],
                "usage": usage,
            }
            return MockResponse(orjson.dumps(body), None, 0.0)
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        return MockResponse(
            None,
            _stream_events(
                ident,
                created,
                model,
                text,
                n,
                self.options.chunk_chars,
                usage if include_usage else None,
            ),
            self.options.chunk_delay_ms / 1000.0,
        )

    def _reply_text(self, request: dict[str, Any]) -> str:
        if self.options.mode == "fixed":
            return self.options.reply
        for message in reversed(request.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def _words(request: dict[str, Any]) -> int:
    return sum(
        len(_text_of(m.get("content")).split())
        for m in request.get("messages") or []
        if isinstance(m, dict)
    )


def _usage(request: dict[str, Any], text: str, n: int) -> dict[str, int]:
    prompt = _words(request)
    completion = len(text.split()) * n
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _stream_events(
    ident: str,
    created: int,
    model: str,
    text: str,
    n: int,
    size: int,
    usage: dict[str, int] | None,
) -> list[bytes]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        if usage is not None and "usage" not in extra:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [event([choice(i, {"role": "assistant", "content": ""}) for i in range(n)])]
    for start in range(0, len(text), size):
        piece = text[start : start + size]
        events.append(event([choice(i, {"content": piece}) for i in range(n)]))
    events.append(event([choice(i, {}, "stop") for i in range(n)]))
    if usage is not None:
        events.append(event([], usage=usage))
    events.append(b"data: [DONE]\n\n")
    return events
