"""Streams between OpenAI chat chunks and Anthropic Messages events, incrementally.

`ChunkStream` is the `anthropic` adapter's: Anthropic's event stream in, OpenAI
`chat.completion.chunk` events out. `MessageStream` is the native `/v1/messages`
endpoint's: an OpenAI chunk stream (after the policy chain) in, Anthropic events out.
Both are fed bytes cut anywhere (`SSEParser` reassembles the events), keep only the
state the next event needs, and always end their output with a proper end of stream
or an error event in the client's format, whatever the upstream did.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ktproxy.wire.anthropic import finish_reason, openai_error_object, usage_to_openai
from ktproxy.wire.anthropic_native import stop_reason, to_anthropic_error, usage_to_anthropic
from ktproxy.wire.sse import DONE, SSEParser, data_event, event_data

_DONE_EVENT = data_event(b"[DONE]")


@dataclass(slots=True)
class _ToolBlock:
    """A streamed `tool_use` block: its OpenAI tool-call index, and whether an argument
    fragment went out yet (a call without any must still get "{}")."""

    call: int
    has_arguments: bool = False


class _EventStream:
    """What both translators share: SSE events reassembled from bytes cut anywhere,
    each handled by `_event` until the output stream has ended (`_done`), and at
    upstream EOF an unterminated last event, then `_at_eof` if the output is open."""

    __slots__ = ("_parser", "_done")

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """Translated SSE bytes for the upstream bytes `data` (possibly b"")."""
        out: list[bytes] = []
        for event in self._parser.feed(data):
            if self._done:
                break
            self._event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """At upstream EOF: an unterminated last event, then the end of the stream."""
        out: list[bytes] = []
        rest = self._parser.remainder()
        if rest.strip() and not self._done:
            self._event(rest + b"\n\n", out)
        if not self._done:
            self._at_eof(out)
        return b"".join(out)

    def _event(self, event: bytes, out: list[bytes]) -> None:
        raise NotImplementedError

    def _at_eof(self, out: list[bytes]) -> None:
        """The upstream ended and the output stream is still open: close it."""
        raise NotImplementedError


class ChunkStream(_EventStream):
    """Translates one Anthropic Messages event stream into OpenAI chunk events.

    Fed upstream bytes cut anywhere; returns OpenAI SSE bytes as soon as an event is
    complete. Order out: a role chunk at `message_start`; text and tool-call deltas
    (a tool call's index, id and name first, then its argument fragments); at
    `message_stop` the finish chunk, the usage chunk (`choices: []`) when the client
    asked for `stream_options.include_usage`, and `data: [DONE]`. An `error` event
    becomes `data: {"error": {...}}` and ends the stream, as does an upstream that
    stops before the message is finished.
    """

    __slots__ = (
        "_include_usage",
        "_target",
        "_created",
        "_id",
        "_model",
        "_text_prefix",
        "_tools",
        "_usage",
        "_stop_reason",
    )

    def __init__(
        self,
        *,
        include_usage: bool,
        model: str = "",
        target: str = "anthropic",
        created: int | None = None,
    ) -> None:
        super().__init__()
        self._include_usage = include_usage
        self._target = target
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._model = model
        self._text_prefix = b""
        self._tools: dict[int, _ToolBlock] = {}  # by Anthropic content block index
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None

    def _at_eof(self, out: list[bytes]) -> None:
        if self._stop_reason is not None:
            self._end(out)  # everything but message_stop arrived: the message is whole
        else:
            self._error(
                {
                    "message": f"Upstream `{self._target}` ended the stream before the "
                    "message was complete.",
                    "type": "upstream_error",
                    "param": None,
                    "code": "upstream_stream_truncated",
                },
                out,
            )

    # -- events --

    def _event(self, event: bytes, out: list[bytes]) -> None:
        payload = event_data(event)
        if payload is None:
            return  # a comment or keep-alive
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            self._error(
                {
                    "message": f"Upstream `{self._target}` sent an event that is not JSON.",
                    "type": "upstream_error",
                    "param": None,
                    "code": "upstream_bad_response",
                },
                out,
            )
            return
        kind = obj.get("type")
        if kind == "content_block_delta":
            self._delta(obj, out)
        elif kind == "content_block_start":
            self._block_start(obj, out)
        elif kind == "content_block_stop":
            self._block_stop(obj, out)
        elif kind == "message_start":
            self._message_start(obj, out)
        elif kind == "message_delta":
            self._message_delta(obj)
        elif kind == "message_stop":
            self._end(out)
        elif kind == "error":
            error = obj.get("error")
            self._error(openai_error_object(error if isinstance(error, dict) else {}), out)
        # ping and event types added later carry nothing a chunk could say

    def _message_start(self, obj: dict[str, Any], out: list[bytes]) -> None:
        message = obj.get("message")
        message = message if isinstance(message, dict) else {}
        self._id = str(message.get("id") or "")
        self._model = str(message.get("model") or self._model)
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage.update(usage)
        envelope = orjson.dumps(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
            }
        )
        # Text deltas are most of a stream: their chunk is this prefix, the text's JSON
        # string and a fixed suffix — what orjson would write for the whole object.
        self._text_prefix = (
            b"data: " + envelope[:-1] + b',"choices":[{"index":0,"delta":{"content":'
        )
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _block_start(self, obj: dict[str, Any], out: list[bytes]) -> None:
        index = obj.get("index")
        block = obj.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "tool_use":
            call = len(self._tools)
            self._tools[index] = _ToolBlock(call)
            head = {
                "index": call,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [head]}))
            initial = block.get("input")
            if isinstance(initial, dict) and initial:
                self._arguments(index, orjson.dumps(initial).decode(), out)
            return
        if kind == "text" and block.get("text"):
            out.append(self._text(str(block["text"])))
        elif kind == "thinking" and block.get("thinking"):
            out.append(self._chunk({"reasoning_content": block["thinking"]}))

    def _delta(self, obj: dict[str, Any], out: list[bytes]) -> None:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                out.append(self._text(text))
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            index = obj.get("index")
            if isinstance(fragment, str) and fragment and isinstance(index, int):
                self._arguments(index, fragment, out)
        elif kind == "thinking_delta":
            thought = delta.get("thinking")
            if isinstance(thought, str) and thought:
                out.append(self._chunk({"reasoning_content": thought}))
        # signature_delta and citations_delta have no OpenAI spelling

    def _arguments(self, index: int, fragment: str, out: list[bytes]) -> None:
        tool = self._tools.get(index)
        if tool is None:
            return
        tool.has_arguments = True
        tail = {"index": tool.call, "function": {"arguments": fragment}}
        out.append(self._chunk({"tool_calls": [tail]}))

    def _block_stop(self, obj: dict[str, Any], out: list[bytes]) -> None:
        index = obj.get("index")
        tool = self._tools.get(index) if isinstance(index, int) else None
        if tool is not None and not tool.has_arguments:
            # A call without arguments: OpenAI spells its arguments "{}", never "".
            tool.has_arguments = True
            out.append(
                self._chunk({"tool_calls": [{"index": tool.call, "function": {"arguments": "{}"}}]})
            )

    def _message_delta(self, obj: dict[str, Any]) -> None:
        delta = obj.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop_reason = str(delta["stop_reason"])
        usage = obj.get("usage")
        if isinstance(usage, dict):  # cumulative counts: later values replace earlier ones
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _end(self, out: list[bytes]) -> None:
        out.append(self._chunk({}, finish_reason(self._stop_reason)))
        if self._include_usage:
            usage = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": usage_to_openai(self._usage),
            }
            out.append(data_event(orjson.dumps(usage)))
        out.append(_DONE_EVENT)
        self._done = True

    def _error(self, error: dict[str, Any], out: list[bytes]) -> None:
        out.append(data_event(orjson.dumps({"error": error})))
        self._done = True

    # -- chunk encoding --

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return data_event(orjson.dumps(chunk))

    def _text(self, text: str) -> bytes:
        if not self._text_prefix:  # a delta before message_start: spell it out
            return self._chunk({"content": text})
        return (
            self._text_prefix
            + orjson.dumps(text)
            + b'},"logprobs":null,"finish_reason":null}]}\n\n'
        )


def sse_event(kind: str, payload: Mapping[str, Any]) -> bytes:
    """One Anthropic SSE event: the event name (the SDK dispatches on it) and its data."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessageStream(_EventStream):
    """Translates one OpenAI chunk stream into an Anthropic Messages event stream.

    Fed upstream bytes cut anywhere. Out: `message_start` with the first chunk; for
    choice 0, text and tool calls as content blocks (`content_block_start`, deltas,
    `content_block_stop`, one block open at a time); at the end `message_delta` with
    the stop reason and usage (read from the usage chunk), then `message_stop`. An
    OpenAI error event becomes an Anthropic `error` event and ends the stream, as does
    an upstream that stops before the finish reason.
    """

    __slots__ = (
        "_model",
        "_started",
        "_open",
        "_next_block",
        "_calls",
        "_finish",
        "_usage",
    )

    def __init__(self, *, model: str = "") -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._open: tuple[str, int] | None = None  # ("text" | "tool", block index)
        self._next_block = 0
        self._calls: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def _at_eof(self, out: list[bytes]) -> None:
        if self._finish is not None:
            self._end(out)
        else:
            self._error({"type": "api_error", "message": "Upstream ended the stream early."}, out)

    def _event(self, event: bytes, out: list[bytes]) -> None:
        payload = event_data(event)
        if payload is None:
            return
        if payload == DONE:
            if self._finish is not None or self._started:
                self._end(out)
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            self._error({"type": "api_error", "message": "Upstream sent a malformed event."}, out)
            return
        error = chunk.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": str(error)}
            self._error(to_anthropic_error(error)["error"], out)
            return
        if not self._started:
            self._start(chunk, out)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        self._model = str(chunk.get("model") or self._model)
        message: dict[str, Any] = {
            "id": chunk.get("id"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(sse_event("message_start", {"type": "message_start", "message": message}))

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open is None or self._open[0] != "text":
                    self._open_block("text", {"type": "text", "text": ""}, out)
                self._block_delta({"type": "text_delta", "text": text}, out)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    self._tool_call(call, out)
        if choice.get("finish_reason") is not None:
            self._finish = str(choice["finish_reason"])
            self._close_block(out)

    def _tool_call(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        index = call.get("index", 0)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        if index not in self._calls:
            block = {"type": "tool_use", "id": call.get("id"), "name": function.get("name")}
            block["input"] = {}
            self._calls[index] = self._open_block("tool", block, out)
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            event = {
                "type": "content_block_delta",
                "index": self._calls[index],
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            }
            out.append(sse_event("content_block_delta", event))

    def _open_block(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._close_block(out)
        index = self._next_block
        self._next_block += 1
        self._open = (kind, index)
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(sse_event("content_block_start", start))
        return index

    def _block_delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        assert self._open is not None
        event = {"type": "content_block_delta", "index": self._open[1], "delta": delta}
        out.append(sse_event("content_block_delta", event))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            stop = {"type": "content_block_stop", "index": self._open[1]}
            out.append(sse_event("content_block_stop", stop))
            self._open = None

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        usage = usage_to_anthropic(self._usage)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": None},
            "usage": usage,
        }
        out.append(sse_event("message_delta", delta))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        self._done = True

    def _error(self, error: dict[str, Any], out: list[bytes]) -> None:
        out.append(sse_event("error", {"type": "error", "error": error}))
        self._done = True
