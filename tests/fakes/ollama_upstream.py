"""A fake Ollama server for the gateway's tests: native `/api/chat` and the OpenAI API.

Why it exists: the `ollama` adapter must be tested against something that speaks
Ollama's *real* wire formats and records what the gateway sent. The native API
streams NDJSON by default (a missing `stream` means true), takes tool-call
arguments as JSON objects and images as base64 strings, answers with `{"error": ...}`
bodies (a model that is not pulled is a 404), and may report a failure as an error
line in the middle of a 200 stream. Streams go out with lines cut at arbitrary byte
offsets (inside UTF-8 sequences too) and several lines sharing one write.

The OpenAI-compatible `/v1/chat/completions` is the fake OpenAI upstream's, plus
Ollama's 404 for a model that is not pulled.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.openai_upstream import (
    DEFAULT_SPLIT,
    FakeOpenAIUpstream,
    RecordedRequest,
)
from tests.fakes.server import HostileWriter, pieces

DEFAULT_MODELS = ("llama3.2", "llama-3.1-70b", "qwen3:8b")
_ROLES = ("system", "user", "assistant", "tool")


@dataclass
class NativeReply:
    """A scripted answer to one `POST /api/chat`.

    - ``content`` None and no ``tool_calls``: answers ``"Echo: <last user text>"``.
    - ``tool_calls``: (name, arguments object) pairs, streamed one call per line.
    - ``error`` (with ``status``, 500 when left at 200) or ``error_body``: an error reply.
    - ``error_after_chunks``: a 200 stream that reports ``error`` mid-way, as Ollama does.
    - ``end_after_chunks``: a stream that ends cleanly without its ``done`` line.
    - ``thinking``: sent first in ``message.thinking`` lines (which must not reach clients).
    - ``split``/``tcp_split``: text piece sizes; whether lines straddle and share writes.
    """

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done_reason: str = "stop"
    status: int = 200
    error: str | None = None
    error_body: bytes | None = None
    error_after_chunks: int | None = None
    end_after_chunks: int | None = None
    thinking: str | None = None
    split: list[int] | None = None
    tcp_split: bool = True
    prompt_eval_count: int | None = None
    eval_count: int | None = None


def _now() -> str:
    """An RFC 3339 timestamp with nanoseconds, as Ollama writes them."""
    now = datetime.now(UTC)
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond * 1000 + 123:09d}Z"


def _line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _cut_in_three(count: int, length: int) -> list[int]:
    """Every third line cut in three, so readers see it mid-way and across reads."""
    if count % 3 != 1 or length <= 2:
        return []
    a = 1 + (count * 7919) % (length - 1)
    return [a, a + (length - a) // 2]


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": message}).encode(),
        content_type="application/json",
    )


def _check_messages(messages: Any) -> str | None:
    """What Ollama would refuse in `messages`, as its error text (None: acceptable)."""
    if not isinstance(messages, list):
        return "json: cannot unmarshal messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"invalid role in messages[{i}]"
        if not isinstance(m.get("content", ""), str):
            return (
                "json: cannot unmarshal array into Go struct field Message.content of type string"
            )
        for image in m.get("images") or []:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, TypeError, ValueError):
                return "illegal base64 data in images"
        for call in m.get("tool_calls") or []:
            args = (call.get("function") or {}).get("arguments")
            if not isinstance(args, dict):
                return (
                    "json: cannot unmarshal string into Go struct field "
                    "ToolCallFunction.arguments of type map[string]interface {}"
                )
    return None


class FakeOllama(FakeOpenAIUpstream):
    """An in-process Ollama: scripted, recorded, both chat APIs."""

    def __init__(self, *, models: Iterable[str] = DEFAULT_MODELS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = set(models)
        self._native: deque[NativeReply] = deque()

    def enqueue_native(self, *replies: NativeReply) -> None:
        """Script the next `/api/chat` answers (FIFO); an empty queue echoes."""
        self._native.extend(replies)

    def reset(self) -> None:
        super().reset()
        self._native.clear()

    @property
    def native_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/api/chat")]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return await super()._handle(request)
        if request.path.endswith("/api/chat"):
            payload = await self._record(request)
            return await self._native_chat(request, payload)
        if request.path.endswith("/v1/chat/completions"):
            body = await request.read()  # aiohttp keeps it for the parent's read
            try:
                model = json.loads(body).get("model")
            except (ValueError, AttributeError):
                model = None
            if isinstance(model, str) and model not in self.models:
                await self._record(request)
                message = f'model "{model}" not found, try pulling it first'
                err = {"message": message, "type": "not_found_error", "param": None, "code": None}
                return web.json_response({"error": err}, status=404)
        return await super()._handle(request)

    async def _record(self, request: web.Request) -> Any:
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, headers, body, parsed
            )
        )
        return parsed

    # --- native /api/chat -------------------------------------------------------------------

    async def _native_chat(self, request: web.Request, payload: Any) -> web.StreamResponse:
        reply = self._native.popleft() if self._native else NativeReply()
        if reply.error_body is not None:
            return web.Response(status=reply.status, body=reply.error_body)
        if reply.error is not None and reply.error_after_chunks is None:
            return _error(reply.status if reply.status != 200 else 500, reply.error)
        if not isinstance(payload, dict):
            return _error(400, "invalid character looking for beginning of value")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if model not in self.models:
            return _error(404, f'model "{model}" not found, try pulling it first')
        problem = _check_messages(payload.get("messages"))
        if problem is not None:
            return _error(400, problem)
        messages = payload["messages"]
        text = reply.content
        if text is None and not reply.tool_calls:
            users = [m for m in messages if m.get("role") == "user"]
            text = "Echo: " + (users[-1].get("content", "") if users else "")
        text = text or ""
        final = {
            "done": True,
            "done_reason": reply.done_reason,
            "total_duration": 5_191_566_416,
            "load_duration": 2_154_458,
            "prompt_eval_count": reply.prompt_eval_count
            if reply.prompt_eval_count is not None
            else sum(len(str(m.get("content", "")).split()) for m in messages),
            "prompt_eval_duration": 383_809_000,
            "eval_count": reply.eval_count
            if reply.eval_count is not None
            else len(text.split()) + len(reply.tool_calls),
            "eval_duration": 4_799_921_000,
        }
        if payload.get("stream", True) is False:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if reply.thinking:
                message["thinking"] = reply.thinking
            if reply.tool_calls:
                message["tool_calls"] = list(self._native_calls(reply))
            obj = {"model": model, "created_at": _now(), "message": message, **final}
            return web.json_response(obj)
        return await self._native_stream(request, reply, model, text, final)

    @staticmethod
    def _native_calls(reply: NativeReply) -> Iterator[dict[str, Any]]:
        for index, (name, args) in enumerate(reply.tool_calls):
            yield {"function": {"index": index, "name": name, "arguments": args}}

    async def _native_stream(
        self,
        request: web.Request,
        reply: NativeReply,
        model: str,
        text: str,
        final: dict[str, Any],
    ) -> web.StreamResponse:
        def line(message: dict[str, Any], **more: Any) -> bytes:
            return _line({"model": model, "created_at": _now(), "message": message, **more})

        resp = web.StreamResponse(status=200)
        resp.content_type = "application/x-ndjson"
        writer = HostileWriter(resp, reply.tcp_split, _cut_in_three)
        self.open_streams += 1
        try:
            await resp.prepare(request)
            sent = 0
            for piece in pieces(reply.thinking or "", [6]):
                await writer.send(line({"role": "assistant", "content": "", "thinking": piece}))
            for piece in pieces(text, reply.split or list(DEFAULT_SPLIT)):
                await writer.send(line({"role": "assistant", "content": piece}, done=False))
                sent += 1
                if sent == reply.error_after_chunks:
                    await writer.send(_line({"error": reply.error or "an error was encountered"}))
                    await writer.flush()
                    await resp.write_eof()
                    return resp
                if sent == reply.end_after_chunks:
                    await writer.flush()
                    await resp.write_eof()
                    return resp
            for call in self._native_calls(reply):
                message = {"role": "assistant", "content": "", "tool_calls": [call]}
                await writer.send(line(message, done=False))
            await writer.send(line({"role": "assistant", "content": ""}, **final))
            await writer.flush()
            await resp.write_eof()
        except ConnectionResetError:
            self.disconnects += 1
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        finally:
            self.open_streams -= 1
        return resp
