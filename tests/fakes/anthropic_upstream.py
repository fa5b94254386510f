"""A fake Anthropic Messages API server for the gateway's tests.

Why it exists: the `anthropic` adapter must be tested against something that speaks
the Messages API's *real* wire format — key and `anthropic-version` headers,
the request's validation rules (alternating-free but typed content blocks, tool
results that answer an earlier `tool_use`, no unknown fields), `message` objects,
the named SSE events (`message_start`, `content_block_*`, `message_delta`,
`message_stop`, `ping`, `error`) and `{"type": "error", "error": {...}}` bodies with
their statuses (529 for overloaded) — misbehaves on demand (events cut at awkward
byte offsets, CRLF line ends, a mid-stream `error` event, a stream cut short) and
records exactly what the gateway sent. The shapes follow the installed `anthropic`
package's types (`Message`, `RawMessageStreamEvent`, `ErrorResponse`); the tests in
tests/providers/test_anthropic.py run the real Anthropic SDK against this fake to
prove it.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.openai_upstream import DEFAULT_SPLIT, RecordedRequest
from tests.fakes.server import HostileWriter, ScriptedServer, pieces

DEFAULT_MODEL = "claude-fake-1"

# The status Anthropic sends with each error type.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_TYPE_FOR_STATUS = {status: kind for kind, status in ERROR_STATUS.items()}

# Top-level request fields the Messages API accepts; any other is a 400.
REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_config",
    }
)
_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})


@dataclass
class Reply:
    """A scripted answer to one `POST .../v1/messages`.

    - `text` None and no `tool_uses`: the reply is `"Echo: <last user text>"`.
    - `status != 200` (or `error_body`): an error; the body is Anthropic's error JSON
      with `error_type` (default: the type Anthropic sends with that status).
    - Streaming only: `pings` interleaves ping events; `error_after` sends an `error`
      event (`stream_error_type`) after that many deltas and ends the stream;
      `truncate_after` ends it after that many deltas with nothing more; `split` sets
      the text piece sizes; `tcp_split` cuts events at odd byte offsets; `crlf` ends
      lines with CRLF.
    """

    text: str | None = None
    tool_uses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    thinking: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    error_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] | None = None
    pings: bool = True
    error_after: int | None = None
    stream_error_type: str = "overloaded_error"
    truncate_after: int | None = None
    split: list[int] | None = None
    tcp_split: bool = True
    crlf: bool = False


def error_payload(kind: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error body (`ErrorResponse`)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


class Invalid(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


def _texts(content: Any) -> Iterator[str]:
    """Every text a message or system prompt carries (tool results included)."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                yield block["text"]
            if block.get("type") == "tool_result":
                yield from _texts(block.get("content"))
            if block.get("type") == "tool_use":
                yield json.dumps(block.get("input"))


def validate(body: Any) -> None:
    """Raise `Invalid` where the Messages API answers 400 (the rules the gateway's
    translation must respect)."""
    if not isinstance(body, dict):
        raise Invalid("Request body must be a JSON object")
    for name in body:
        if name not in REQUEST_FIELDS:
            raise Invalid(f"{name}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise Invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise Invalid("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or any(b.get("type") != "text" for b in system):
            raise Invalid("system: Input should be a valid string or list of text blocks")
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise Invalid("stop_sequences: Input should be a valid list")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise Invalid(f"tools.{i}: name and input_schema are required")
        if tool["input_schema"].get("type") != "object":
            raise Invalid(f"tools.{i}.input_schema.type: Input should be 'object'")
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
        raise Invalid("tool_choice: Input tag does not match any of the expected tags")
    tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise Invalid(f"messages.{i}.content: Input should be a valid list")
        allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
        answered = tool_ids
        tool_ids = set()
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in allowed:
                raise Invalid(f"messages.{i}.content.{j}: unexpected block type {kind!r}")
            if kind == "text" and not block.get("text"):
                raise Invalid(f"messages.{i}.content.{j}: text content blocks must be non-empty")
            if kind == "tool_use":
                if not isinstance(block.get("input"), dict):
                    raise Invalid(f"messages.{i}.content.{j}.input: Input should be an object")
                tool_ids.add(block["id"])
            if kind == "tool_result" and block.get("tool_use_id") not in answered:
                raise Invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    "`tool_result` blocks. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") not in ("base64", "url"):
                    raise Invalid(f"messages.{i}.content.{j}.source: invalid image source")


class FakeAnthropicUpstream(ScriptedServer[Reply]):
    """An in-process Messages API server with scripted, recorded behaviour."""

    def __init__(self, *, host: str = "127.0.0.1", shutdown_timeout: float = 0.25) -> None:
        super().__init__(host=host, shutdown_timeout=shutdown_timeout)
        self.requests: list[RecordedRequest] = []
        self._counter = itertools.count(1)

    def reset(self) -> None:
        """Forget script and recordings."""
        super().reset()
        self._counter = itertools.count(1)

    # --- request handling ------------------------------------------------------------

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
        request_id = f"req_fake{uuid.uuid4().hex[:20]}"
        base = {"request-id": request_id}
        if request.method != "POST" or not request.path.endswith("/v1/messages"):
            return self._error(404, "not_found_error", "Not found", base)
        # API keys travel as `x-api-key`; the anthropic SDK 2.x sends them as a bearer token.
        if not headers.get("x-api-key") and not headers.get("authorization", "").startswith(
            "Bearer "
        ):
            return self._error(401, "authentication_error", "x-api-key header is required", base)
        if not headers.get("anthropic-version"):
            message = "anthropic-version: header is required"
            return self._error(400, "invalid_request_error", message, base)
        reply = self._queue.popleft() if self._queue else Reply()
        base.update(reply.headers)
        if reply.status != 200 or reply.error_body is not None:
            if reply.error_body is not None:
                return web.Response(status=reply.status, body=reply.error_body, headers=base)
            kind = reply.error_type or _TYPE_FOR_STATUS.get(reply.status, "api_error")
            message = reply.error_message or f"Fake upstream error {reply.status}"
            return self._error(reply.status, kind, message, base)
        try:
            validate(parsed)
        except Invalid as exc:
            return self._error(400, "invalid_request_error", str(exc), base)
        assert isinstance(parsed, dict)
        message_obj = self.message_for(reply, parsed)
        base["anthropic-ratelimit-requests-remaining"] = "49"
        if parsed.get("stream") is True:
            return await self._stream(request, reply, message_obj, base)
        return web.json_response(message_obj, headers=base, dumps=_dumps)

    @staticmethod
    def _error(status: int, kind: str, message: str, headers: dict[str, str]) -> web.Response:
        body = error_payload(kind, message, headers.get("request-id"))
        return web.json_response(body, status=status, headers=headers, dumps=_dumps)

    def message_for(self, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        """The whole `Message` this reply stands for (streams are cut from it)."""
        content: list[dict[str, Any]] = []
        if reply.thinking is not None:
            content.append({"type": "thinking", "thinking": reply.thinking, "signature": "sig"})
        text = reply.text
        if text is None and not reply.tool_uses:
            users = [m for m in body["messages"] if m.get("role") == "user"]
            text = "Echo: " + " ".join(_texts(users[-1]["content"])) if users else "Echo: "
        if text is not None:
            content.append({"type": "text", "text": text})
        for name, arguments in reply.tool_uses:
            ident = f"toolu_fake{next(self._counter):04d}{uuid.uuid4().hex[:8]}"
            content.append({"type": "tool_use", "id": ident, "name": name, "input": arguments})
        stop = reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn")
        if reply.usage is not None:
            usage = dict(reply.usage)
        else:
            words = sum(len(t.split()) for t in _texts(body.get("system")))
            for m in body["messages"]:
                words += sum(len(t.split()) for t in _texts(m.get("content")))
            out = sum(len(t.split()) for t in _texts(content))
            usage = {"input_tokens": words, "output_tokens": out}
            usage.update(cache_creation_input_tokens=0, cache_read_input_tokens=0)
        return {
            "id": f"msg_fake{next(self._counter):04d}{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": reply.stop_sequence,
            "usage": usage,
        }

    # --- streaming -------------------------------------------------------------------

    def events(self, reply: Reply, message: dict[str, Any]) -> Iterator[tuple[bool, bytes]]:
        """`(is_delta, event bytes)` in the order the Messages API sends them."""

        def event(payload: dict[str, Any]) -> bytes:
            raw = f"event: {payload['type']}\ndata: {_dumps(payload)}\n\n"
            return (raw.replace("\n", "\r\n") if reply.crlf else raw).encode()

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {**usage, "output_tokens": 1}
        yield False, event({"type": "message_start", "message": start})
        if reply.pings:
            yield False, event({"type": "ping"})
        sizes = reply.split or list(DEFAULT_SPLIT)
        for index, block in enumerate(message["content"]):
            kind = block["type"]
            if kind == "text":
                head: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"], sizes)]
            elif kind == "thinking":
                head = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": p}
                    for p in pieces(block["thinking"], sizes)
                ]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            else:
                head = {**block, "input": {}}
                parts = [""] + pieces(json.dumps(block["input"]), sizes)
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
            yield (
                False,
                event({"type": "content_block_start", "index": index, "content_block": head}),
            )
            for n, delta in enumerate(deltas):
                yield True, event({"type": "content_block_delta", "index": index, "delta": delta})
                if reply.pings and n == 2:
                    yield False, event({"type": "ping"})
            yield False, event({"type": "content_block_stop", "index": index})
        final = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
        out_usage = {"output_tokens": usage["output_tokens"]}
        yield False, event({"type": "message_delta", "delta": final, "usage": out_usage})
        yield False, event({"type": "message_stop"})

    async def _stream(
        self,
        request: web.Request,
        reply: Reply,
        message: dict[str, Any],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={**headers, "cache-control": "no-cache"})
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        writer = HostileWriter(resp, reply.tcp_split)
        await resp.prepare(request)
        deltas = 0
        try:
            for is_delta, data in self.events(reply, message):
                await writer.send(data)
                deltas += is_delta
                if is_delta and deltas == reply.error_after:
                    error = error_payload(reply.stream_error_type, "Overloaded")
                    raw = f"event: error\ndata: {_dumps(error)}\n\n"
                    await writer.send(raw.encode())
                    break
                if is_delta and deltas == reply.truncate_after:
                    break
            await writer.flush()
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the gateway went away mid-stream (a test of that checks the gateway)
        return resp


def _dumps(obj: Any) -> str:
    """Raw UTF-8 and compact, like the API."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
