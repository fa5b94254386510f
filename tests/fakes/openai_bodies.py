"""OpenAI chat-completion bodies, for the upstreams a test scripts by hand (raw bytes or
a small aiohttp app) rather than through `FakeOpenAIUpstream`."""

from __future__ import annotations

from typing import Any

import orjson


def chunk_event(text: str, finish: str | None = None) -> bytes:
    """One SSE `data:` event: a `chat.completion.chunk` whose delta is `text`."""
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion(text: str, prompt_tokens: int = 1, completion_tokens: int = 1) -> dict[str, Any]:
    """A whole `chat.completion` answering `text`, with its usage."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
