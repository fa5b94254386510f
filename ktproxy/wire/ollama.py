"""Ollama's native chat API (`POST /api/chat`) to and from OpenAI's chat format.

The API layer and the policies speak OpenAI's format only, so an `ollama` target
with `api: native` needs four translations: the OpenAI request into a native one,
a native answer (one JSON object, or NDJSON lines) into a `chat.completion`, a
native NDJSON stream into OpenAI chunk SSE as the bytes arrive, and a native error
body (`{"error": "..."}`) into an OpenAI error body.

Ollama's `thinking` text is deliberately not passed on: OpenAI's chat format has no
field for it, and text in a field the stream filters do not read would leave the
gateway unscanned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec
import orjson
from msgspec import Struct

from ktproxy.errors import GatewayError, bad_request
from ktproxy.wire.sse import data_event

# A stream line longer than this is not a chat chunk but a broken or hostile upstream.
MAX_LINE = 8 * 1024 * 1024

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_DONE_EVENT = data_event(b"[DONE]")

IdMaker = Callable[[str], str]


def new_id(prefix: str) -> str:
    """A fresh id with OpenAI's prefix (`chatcmpl-`, `call_`): Ollama sends none."""
    return prefix + uuid.uuid4().hex[:24]


# --- native response shapes (only the fields the translation reads) ----------------------


class NativeFunction(Struct, frozen=True):
    """`message.tool_calls[i].function`; `arguments` is a JSON object, not a string."""

    name: str = ""
    arguments: Any = None


class NativeToolCall(Struct, frozen=True):
    """`message.tool_calls[i]`; recent Ollama versions add an `id`."""

    function: NativeFunction = NativeFunction()
    id: str | None = None


class NativeMessage(Struct, frozen=True):
    """`message` of a native answer or stream line."""

    content: str | None = None
    tool_calls: list[NativeToolCall] | None = None


class NativeChunk(Struct, frozen=True):
    """One native answer, or one line of a native stream (the last has `done: true`)."""

    model: str = ""
    created_at: str = ""
    message: NativeMessage | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    # A failure reported in place of (or in the middle of) an answer.
    error: Any = None


chunk_decoder = msgspec.json.Decoder(NativeChunk)


# --- request: OpenAI -> native ------------------------------------------------------------


def native_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The native `/api/chat` body for an OpenAI chat request.

    Raises `GatewayError` (400) for what the native API cannot express: more than
    one choice, remote image URLs, tool-call arguments that are not a JSON object.
    `stream` is always sent, because the native API streams unless told not to.
    """
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise bad_request("`messages` must be a list.", param="messages")
    n = request.get("n")
    if isinstance(n, int) and n > 1:
        raise bad_request("Ollama answers with one choice per request; set `n` to 1.", param="n")
    out: dict[str, Any] = {
        "model": request.get("model"),
        "messages": _messages(messages),
        "stream": bool(request.get("stream")),
    }
    tools = _tools(request.get("tools"), request.get("tool_choice"))
    if tools:
        out["tools"] = tools
    fmt = _format(request.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    options = _options(request)
    if options:
        out["options"] = options
    keep_alive = request.get("keep_alive")
    if keep_alive is not None:
        out["keep_alive"] = keep_alive
    return out


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    # Tool results name their call by id; native tool messages also want its name.
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"`{where}` must be an object.", param=where)
        role = message.get("role")
        text, images = _content(message.get("content"), where)
        native: dict[str, Any] = {"role": _ROLES.get(str(role), role), "content": text}
        if images:
            native["images"] = images
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise bad_request(f"`{where}.tool_calls` must be a list.", param=where)
            native["tool_calls"] = [
                _call_out(call, f"{where}.tool_calls[{j}]", names) for j, call in enumerate(calls)
            ]
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str):
                native["tool_call_id"] = call_id
                if call_id in names:
                    native["tool_name"] = names[call_id]
        elif role == "function":  # the legacy form of a tool result
            native["role"] = "tool"
            if isinstance(message.get("name"), str):
                native["tool_name"] = message["name"]
        elif role not in _ROLES:
            raise bad_request(f"`{where}.role` {role!r} is not a chat role.", param=where)
        out.append(native)
    return out


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    """Text (parts joined by newlines) and base64 images of a message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise bad_request(f"`{where}.content` must be a string or a list of parts.", param=where)
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url":
            images.append(_image(part.get("image_url"), at))
        else:
            raise bad_request(
                f"`{at}`: content part type {kind!r} is not supported by Ollama's native API.",
                param=at,
            )
    return "\n".join(texts), images


def _image(value: Any, where: str) -> str:
    """The base64 payload of a `data:` URL; the gateway fetches no remote images."""
    url = value.get("url") if isinstance(value, dict) else value
    if isinstance(url, str) and url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if sep and header.endswith(";base64") and payload:
            return payload
    raise bad_request(
        f"`{where}`: Ollama's native API takes images as base64 `data:` URLs only.",
        param=where,
    )


def _call_out(call: Any, where: str, names: dict[str, str]) -> dict[str, Any]:
    """An assistant's OpenAI tool call as a native one (arguments as an object)."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"`{where}` must have a function with a name.", param=where)
    args = function.get("arguments")
    if isinstance(args, str):
        try:
            args = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError:
            args = None
    elif args is None:
        args = {}
    if not isinstance(args, dict):
        raise bad_request(
            f"`{where}.function.arguments` must be a JSON object for Ollama.",
            param=f"{where}.function.arguments",
        )
    native: dict[str, Any] = {"function": {"name": function["name"], "arguments": args}}
    call_id = call.get("id")
    if isinstance(call_id, str):
        native["id"] = call_id
        names[call_id] = function["name"]
    return native


def _tools(tools: Any, choice: Any) -> list[Any] | None:
    """Tools as sent (the native API takes OpenAI's tool shape).

    The native API has no `tool_choice`: `none` is honoured by sending no tools and
    a named function by sending only that one; `required` cannot be enforced.
    """
    if tools is None or choice == "none":
        return None
    if not isinstance(tools, list):
        raise bad_request("`tools` must be a list.", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise bad_request(f"`tools[{i}]` must be a function tool.", param=f"tools[{i}]")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"].get("name") == wanted]
        if not chosen:
            raise bad_request(f"`tool_choice` names no tool of `tools`: {wanted!r}.", "tool_choice")
        return chosen
    return tools


def _format(response_format: Any) -> Any:
    """`response_format` as the native `format`: "json" or a JSON schema."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else "json"
    return None


def _options(request: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling parameters as native `options`, over any `options` the client sent."""
    given = request.get("options")
    options: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
        if request.get(name) is not None:
            options[name] = request[name]
    limit = request.get("max_completion_tokens")
    if limit is None:
        limit = request.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    stop = request.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = stop
    return options


# --- responses: native -> OpenAI ----------------------------------------------------------


def _unix(created_at: str) -> int:
    """Native RFC 3339 timestamps (nanosecond fractions) as OpenAI's epoch seconds."""
    try:
        return int(datetime.fromisoformat(created_at).timestamp())
    except ValueError:
        return int(time.time())


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value if value is not None else {}).decode()


def _call_in(call: NativeToolCall, make_id: IdMaker) -> dict[str, Any]:
    """A native tool call as OpenAI's (an id, arguments as a JSON string)."""
    return {
        "id": call.id or make_id("call_"),
        "type": "function",
        "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)},
    }


def _finish(done_reason: str | None, tool_calls: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def _usage(chunk: NativeChunk) -> dict[str, int]:
    prompt = chunk.prompt_eval_count or 0
    generated = chunk.eval_count or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": generated,
        "total_tokens": prompt + generated,
    }


def _bad_upstream(message: str) -> GatewayError:
    return GatewayError(502, message, type="upstream_error", code="upstream_bad_response")


def completion(body: bytes, model: str, make_id: IdMaker = new_id) -> bytes:
    """A native answer as an OpenAI `chat.completion` body.

    The answer is normally one JSON object; NDJSON lines (an upstream that streamed
    anyway) are joined into one message.
    """
    try:
        chunks = [chunk_decoder.decode(line) for line in body.split(b"\n") if line.strip()]
    except msgspec.DecodeError:
        raise _bad_upstream("Upstream returned a body that is not an Ollama chat answer.") from None
    if not chunks:
        raise _bad_upstream("Upstream returned an empty body.")
    for chunk in chunks:
        if chunk.error is not None:
            raise _bad_upstream(f"Upstream failed: {chunk.error}")
    messages = [c.message for c in chunks if c.message is not None]
    text = "".join(m.content or "" for m in messages)
    calls = [_call_in(call, make_id) for m in messages for call in m.tool_calls or ()]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    first, last = chunks[0], chunks[-1]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish(last.done_reason, bool(calls)),
    }
    return orjson.dumps(
        {
            "id": make_id("chatcmpl-"),
            "object": "chat.completion",
            "created": _unix(first.created_at),
            "model": first.model or model,
            "choices": [choice],
            "usage": _usage(last),
        }
    )


class NativeStream:
    """Native NDJSON stream -> OpenAI chunk SSE, fed bytes at any boundaries.

    Emits a role chunk, a chunk per content piece and per line of tool calls, the
    finish chunk, the usage chunk (`choices: []`) when the client asked for
    `stream_options.include_usage`, then `[DONE]`. A native error line, a line that
    is not a chat chunk, or an end before the `done` line ends the stream with an
    OpenAI error event instead, as the gateway ends any failed stream.
    """

    __slots__ = ("_buf", "_model", "_usage", "_make_id", "_id", "_created", "_calls", "_state")

    def __init__(self, model: str, *, include_usage: bool, make_id: IdMaker = new_id) -> None:
        self._buf = bytearray()
        self._model = model
        self._usage = include_usage
        self._make_id = make_id
        self._id = make_id("chatcmpl-")
        self._created = 0
        self._calls = 0  # tool calls emitted so far: the next one's index
        self._state = 0  # 0 before the first line, 1 streaming, 2 ended

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the lines `data` completes (a partial line is kept)."""
        if self._state == 2:
            return b""
        if not self._buf and data.endswith(b"\n"):
            lines = data[:-1].split(b"\n")  # the usual read: whole lines, nothing held
        else:
            self._buf += data
            end = self._buf.rfind(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    return self._fail("Upstream sent a stream line over the gateway's limit.")
                return b""
            lines = bytes(self._buf[:end]).split(b"\n")
            del self._buf[: end + 1]
        out = []
        for line in lines:
            if self._state == 2:
                break
            out.append(self._line(line))
        return b"".join(out)

    def finish(self) -> bytes:
        """At upstream EOF: a last line without its newline, or the error of a cut stream."""
        out = b""
        if self._state != 2 and self._buf.strip():
            line = bytes(self._buf)
            self._buf.clear()
            out = self._line(line)
        if self._state != 2:
            out += self._fail("Upstream stream ended before its final message.")
        return out

    def _line(self, line: bytes) -> bytes:
        line = line.strip()
        if not line:
            return b""
        try:
            chunk = chunk_decoder.decode(line)
        except msgspec.DecodeError:
            return self._fail("Upstream sent a stream line that is not an Ollama chat chunk.")
        if chunk.error is not None:
            return self._fail(f"Upstream failed mid-stream: {chunk.error}")
        out: list[bytes] = []
        if self._state == 0:
            self._state = 1
            self._created = _unix(chunk.created_at)
            self._model = chunk.model or self._model
            out.append(self._event({"role": "assistant", "content": ""}))
        message = chunk.message
        if message is not None:
            if message.content:
                out.append(self._event({"content": message.content}))
            if message.tool_calls:
                deltas = []
                for call in message.tool_calls:
                    deltas.append({"index": self._calls, **_call_in(call, self._make_id)})
                    self._calls += 1
                out.append(self._event({"tool_calls": deltas}))
        if chunk.done:
            self._state = 2
            out.append(self._event({}, _finish(chunk.done_reason, self._calls > 0)))
            if self._usage:
                out.append(self._chunk([], _usage(chunk)))
            out.append(_DONE_EVENT)
        return b"".join(out)

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._chunk([choice], None)

    def _chunk(self, choices: list[Any], usage: dict[str, int] | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._usage:
            chunk["usage"] = usage  # null on every chunk but the last, as OpenAI sends it
        return data_event(orjson.dumps(chunk))

    def _fail(self, message: str) -> bytes:
        self._state = 2
        self._buf.clear()
        error = GatewayError(502, message, type="upstream_error", code="upstream_stream_error")
        return data_event(orjson.dumps({"error": error.error_object()}))


# --- errors -------------------------------------------------------------------------------


def error_body(status: int, body: bytes) -> bytes:
    """A native error body (`{"error": "..."}`) as an OpenAI error body, same status."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict):
        return body  # already OpenAI-shaped (an OpenAI-speaking proxy in front)
    if isinstance(error, str) and error:
        message = error
    else:
        text = body[:200].decode("utf-8", "replace").strip()
        message = f"Upstream returned HTTP {status}" + (f": {text}" if text else ".")
    code: str | None = f"upstream_http_{status}"
    param = None
    lowered = message.lower()
    if status == 404 and "model" in lowered and "not found" in lowered:
        code, param = "model_not_found", "model"
    elif status == 401:
        code = "invalid_api_key"
    elif status == 429:
        code = "rate_limit_exceeded"
    kind = "invalid_request_error" if status < 500 else "upstream_error"
    return GatewayError(status, message, type=kind, code=code, param=param).body()
