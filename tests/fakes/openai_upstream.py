"""A fake OpenAI-compatible upstream server for the gateway's tests.

Why it exists: the gateway must be tested against something that speaks OpenAI's *real* wire
format (field names, chunk order, headers, error shapes), misbehaves on demand (slow first byte,
stalls, truncated streams, odd TCP framing) and records exactly what the gateway forwarded.
The shapes follow the installed ``openai`` package's types (``ChatCompletion``,
``ChatCompletionChunk``, ``CompletionUsage``); the tests in this folder prove that the real SDK
accepts them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import HostileWriter, ScriptedServer, pieces

#: Default streamed-text piece sizes (characters, cycled): uneven so words and multi-byte
#: characters straddle chunk boundaries the way real token streams do.
DEFAULT_SPLIT: tuple[int, ...] = (1, 3, 2, 5, 4, 7)
SYSTEM_FINGERPRINT = "fp_fake0001"
INFINITE_TICK_SECONDS = 0.02
_DEFAULT_MODEL = "gpt-fake"
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
_PROMPT_DETAILS = ("cached_tokens", "audio_tokens")
_COMPLETION_DETAILS = ("reasoning_tokens", "audio_tokens")
_COMPLETION_DETAILS_PREDICTION = ("accepted_prediction_tokens", "rejected_prediction_tokens")


@dataclass
class RecordedRequest:
    """One request as the fake saw it, so tests can assert on what the gateway forwarded."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any | None  # parsed body, or None when it is not valid JSON


@dataclass
class Reply:
    """A scripted reply for one ``POST .../v1/chat/completions``; every knob is a failure or
    shape the gateway has to cope with.

    - ``content`` None and no ``tool_calls``: echoes ``"Echo: <last user text>"``.
    - ``status != 200`` or ``error_body`` set: sent as is (default body: OpenAI-shaped error
      JSON; ``content_type`` defaults to application/json). ``headers`` go on every reply.
    - ``delay_before_headers``: sleep before anything is sent (first-byte timeouts).
    - Streaming only: ``stall_after_chunks``/``stall_seconds`` pause mid-stream (idle
      timeouts); ``n_chunks_then_close`` drops the connection without ``[DONE]``;
      ``infinite`` streams until the client leaves; ``extra_events`` are raw SSE bytes sent
      after the first chunk; ``split`` sets the text piece sizes; ``tcp_split`` makes events
      straddle (and share) writes.
    - ``extra_fields``/``extra_message_fields`` are merged into the top level / the message or
      delta of every object sent, to check unknown fields pass through.
    - ``usage`` replaces the computed one (words in the prompt / in the reply).
    """

    content: str | None = None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments JSON)
    finish_reason: str | None = None
    status: int = 200
    error_body: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_before_headers: float = 0.0
    stall_after_chunks: int | None = None
    stall_seconds: float = 0.0
    extra_fields: dict[str, Any] = field(default_factory=dict)
    extra_message_fields: dict[str, Any] = field(default_factory=dict)
    extra_events: list[bytes] = field(default_factory=list)
    usage: dict[str, int] | None = None
    split: list[int] | None = None
    tcp_split: bool = True
    n_chunks_then_close: int | None = None
    infinite: bool = False


@dataclass
class _Plan:
    """Everything about one completion that chunks and the full object share."""

    id: str
    created: int
    model: str
    n: int
    text: str | None
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish_reason: str
    usage: dict[str, Any]
    include_usage: bool


def _dumps(obj: Any, *, pretty: bool = False) -> bytes:
    """Serialise like OpenAI: raw UTF-8, compact in SSE, indented for whole JSON bodies."""
    if pretty:
        return json.dumps(obj, ensure_ascii=False, indent=2).encode()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _text_of(content: Any) -> str:
    """Text of a message ``content``, which may be a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _choice(index: int, key: str, value: Any, finish: str | None) -> dict[str, Any]:
    """One ``choices[]`` entry; ``key`` is "message" (whole object) or "delta" (chunk)."""
    return {"index": index, key: value, "logprobs": None, "finish_reason": finish}


def _envelope(
    reply: Reply, plan: _Plan, kind: str, choices: list[Any], **more: Any
) -> dict[str, Any]:
    """Top-level fields shared by the completion object and every chunk, plus extras."""
    obj: dict[str, Any] = {
        "id": plan.id,
        "object": kind,
        "created": plan.created,
        "model": plan.model,
    }
    obj.update(choices=choices, **more)
    obj.update(service_tier="default", system_fingerprint=SYSTEM_FINGERPRINT)
    return {**obj, **reply.extra_fields}


def error_payload(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error object, so clients' error parsing is exercised for real."""
    err_type = "server_error" if status >= 500 else "invalid_request_error"
    if code is None:
        code = _ERROR_CODES.get(status)
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


class FakeOpenAIUpstream(ScriptedServer[Reply]):
    """An in-process OpenAI-compatible HTTP server with scripted, recorded behaviour."""

    def __init__(self, *, host: str = "127.0.0.1", shutdown_timeout: float = 0.25) -> None:
        super().__init__(host=host, shutdown_timeout=shutdown_timeout)
        self.requests: list[RecordedRequest] = []
        self.open_streams: int = 0
        self.disconnects: int = 0
        self._counter = itertools.count(1)

    def reset(self) -> None:
        """Forget script, recordings and counters (`open_streams` is a live gauge: kept)."""
        super().reset()
        self.disconnects = 0
        self._counter = itertools.count(1)

    # --- request handling -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any | None = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, headers, body, parsed
            )
        )
        if request.method == "POST" and request.path.endswith("/v1/chat/completions"):
            return await self._chat(request, parsed)
        if request.method == "GET" and request.path.endswith("/v1/models"):
            now = int(time.time())
            models = [
                {"id": m, "object": "model", "created": now, "owned_by": "fake"}
                for m in (_DEFAULT_MODEL, "gpt-fake-mini")
            ]
            return self._json(200, {"object": "list", "data": models}, {})
        msg = f"Invalid URL ({request.method} {request.path})"
        return self._json(404, error_payload(404, msg, code="unknown_url"), {})

    def _base_headers(self, reply: Reply) -> dict[str, str]:
        return {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-processing-ms": "7",
            "openai-version": "2020-10-01",
            "x-ratelimit-remaining-requests": "9999",
            **reply.headers,
        }

    @staticmethod
    def _json(status: int, obj: Any, headers: dict[str, str]) -> web.Response:
        return web.Response(
            status=status,
            body=_dumps(obj, pretty=True),
            headers=headers,
            content_type="application/json",
        )

    async def _chat(self, request: web.Request, payload: Any) -> web.StreamResponse:
        reply = self._queue.popleft() if self._queue else Reply()
        if reply.delay_before_headers > 0:
            await asyncio.sleep(reply.delay_before_headers)
        headers = self._base_headers(reply)
        if reply.status != 200 or reply.error_body is not None:
            body = reply.error_body
            if body is None:
                err = error_payload(reply.status, f"Fake upstream error {reply.status}")
                body = _dumps(err, pretty=True)
            headers["Content-Type"] = reply.content_type or "application/json"
            return web.Response(status=reply.status, body=body, headers=headers)
        if not isinstance(payload, dict):
            err = error_payload(400, "We could not parse the JSON body of your request.")
            return self._json(400, err, headers)
        plan = self._plan(reply, payload)
        if payload.get("stream") is True:
            return await self._stream(request, reply, plan, headers)
        return self._json(200, self._completion(reply, plan), headers)

    def _plan(self, reply: Reply, payload: dict[str, Any]) -> _Plan:
        messages = [m for m in payload.get("messages") or [] if isinstance(m, dict)]
        text = reply.content
        if text is None and not reply.tool_calls:
            users = [m for m in messages if m.get("role") == "user"]
            text = "Echo: " + (_text_of(users[-1].get("content")) if users else "")
        calls = [(f"call_{next(self._counter)}", name, args) for name, args in reply.tool_calls]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        usage: dict[str, Any] | None = dict(reply.usage) if reply.usage is not None else None
        if usage is None:
            prompt = sum(len(_text_of(m.get("content")).split()) for m in messages)
            completion = len((text or "").split()) + sum(len(a.split()) for _, _, a in calls)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion}
            usage["total_tokens"] = prompt + completion
            usage["prompt_tokens_details"] = dict.fromkeys(_PROMPT_DETAILS, 0)
            usage["completion_tokens_details"] = dict.fromkeys(
                _COMPLETION_DETAILS + _COMPLETION_DETAILS_PREDICTION, 0
            )
        n = payload.get("n")
        stream_options = payload.get("stream_options")
        return _Plan(
            id=f"chatcmpl-fake{next(self._counter):06d}{uuid.uuid4().hex[:12]}",
            created=int(time.time()),
            model=str(payload.get("model") or _DEFAULT_MODEL),
            n=n if isinstance(n, int) and n > 0 else 1,
            text=text,
            calls=calls,
            finish_reason=finish,
            usage=usage,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
        )

    def _completion(self, reply: Reply, plan: _Plan) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None}
        if plan.calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in plan.calls
            ]
        message["annotations"] = []
        message.update(reply.extra_message_fields)
        choices = [_choice(i, "message", dict(message), plan.finish_reason) for i in range(plan.n)]
        return _envelope(reply, plan, "chat.completion", choices, usage=plan.usage)

    @staticmethod
    def _chunk(reply: Reply, plan: _Plan, choices: list[Any], usage: Any = None) -> bytes:
        more = {"usage": usage} if plan.include_usage else {}
        obj = _envelope(reply, plan, "chat.completion.chunk", choices, **more)
        return b"data: " + _dumps(obj) + b"\n\n"

    def _events(self, reply: Reply, plan: _Plan) -> Iterator[tuple[bool, bytes]]:
        """Yield ``(is_content, sse_event)`` in OpenAI's order; content events are counted."""

        def per_choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
            delta = {**delta, **reply.extra_message_fields}
            return self._chunk(
                reply, plan, [_choice(i, "delta", delta, finish) for i in range(plan.n)]
            )

        sizes = reply.split or DEFAULT_SPLIT
        first = {"role": "assistant", "content": "" if plan.text is not None else None}
        yield False, per_choice({**first, "refusal": None})
        if reply.infinite:
            source = pieces((plan.text or "tick") + " ", sizes)
            for piece in itertools.cycle(source):
                yield True, per_choice({"content": piece})
        for piece in pieces(plan.text or "", sizes):
            yield True, per_choice({"content": piece})
        for index, (cid, name, args) in enumerate(plan.calls):
            head = {
                "index": index,
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            yield True, per_choice({"tool_calls": [head]})
            for piece in pieces(args, sizes):
                tail = {"index": index, "function": {"arguments": piece}}
                yield True, per_choice({"tool_calls": [tail]})
        yield False, per_choice({}, plan.finish_reason)
        if plan.include_usage:
            yield False, self._chunk(reply, plan, [], usage=plan.usage)
        yield False, b"data: [DONE]\n\n"

    async def _stream(
        self, request: web.Request, reply: Reply, plan: _Plan, headers: dict[str, str]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        writer = HostileWriter(resp, reply.tcp_split)
        self.open_streams += 1
        try:
            await resp.prepare(request)
            content_events = 0
            for index, (is_content, event) in enumerate(self._events(reply, plan)):
                await writer.send(event)
                if index == 0:
                    for extra in reply.extra_events:
                        await writer.send(extra)
                if not is_content:
                    continue
                content_events += 1
                if reply.infinite:
                    await writer.flush()
                    await asyncio.sleep(INFINITE_TICK_SECONDS)
                if reply.stall_after_chunks == content_events:
                    await writer.flush()
                    await asyncio.sleep(reply.stall_seconds)
                if reply.n_chunks_then_close == content_events:
                    await writer.flush()
                    if request.transport is not None:
                        request.transport.close()  # truncated: no finish chunk, no [DONE]
                    return resp
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
