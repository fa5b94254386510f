"""Applies the policies' per-choice stream filters to an OpenAI chunk stream.

The per-chunk hot path. Each upstream SSE event is decoded into a `ChunkView`
(msgspec reads only `choices[].delta.content` and `finish_reason`); its text deltas
go through the filter of their choice. When no filter changed or held back anything,
the event's original bytes go on as they came — no re-encoding. Otherwise the event
is re-encoded with the filtered text. Held-back text is flushed into the chunk that
carries the choice's `finish_reason`, and whatever is still held at `[DONE]` (or at
the end of a stream without one) goes out in a chunk of its own before it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ktproxy.context import RequestContext
from ktproxy.policies.base import StreamFilter
from ktproxy.policies.chain import CompiledChain
from ktproxy.wire.openai import DeltaView, chunk_decoder
from ktproxy.wire.sse import DONE, SSEParser, data_event, event_data


class StreamRewriter:
    """Stateful filter of one streamed response."""

    __slots__ = ("_chain", "_ctx", "_parser", "_filters", "_open", "_last")

    def __init__(self, chain: CompiledChain, ctx: RequestContext) -> None:
        self._chain = chain
        self._ctx = ctx
        self._parser = SSEParser()
        self._filters: dict[int, StreamFilter | None] = {}
        self._open: set[int] = set()  # choices whose filter may still hold text
        self._last: tuple[str, int, str] = ("", 0, "")

    def feed(self, data: bytes) -> bytes:
        """Bytes to send to the client for the upstream bytes `data` (may be empty)."""
        events = self._parser.feed(data)
        if not events:
            return b""
        if len(events) == 1:
            return self._event(events[0])
        return b"".join([self._event(e) for e in events])

    def finish(self) -> bytes:
        """At upstream EOF: held text of every choice, then any unterminated bytes."""
        return self._flush_all() + self._parser.remainder()

    def _filter_for(self, index: int) -> StreamFilter | None:
        try:
            return self._filters[index]
        except KeyError:
            f = self._filters[index] = self._chain.stream_filter(self._ctx, index)
            if f is not None:
                self._open.add(index)
            return f

    def _event(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event  # comments, retry hints, events without data
        if data == DONE:
            return self._flush_all() + event
        try:
            chunk = chunk_decoder.decode(data)
        except msgspec.DecodeError:
            return event  # not a chunk we understand (e.g. an upstream error object)
        if not chunk.choices:
            return event
        self._last = (chunk.id, chunk.created, chunk.model)
        changes: dict[int, str] | None = None
        for pos, choice in enumerate(chunk.choices):
            f = self._filter_for(choice.index)
            if f is None:
                continue
            delta = choice.delta
            text = delta.content if delta is not None else None
            out = f.feed(text) if text else text
            if choice.finish_reason is not None and choice.index in self._open:
                self._open.discard(choice.index)
                held = f.flush()
                if held:
                    out = (out or "") + held
            if out != text:
                if changes is None:
                    changes = {}
                changes[pos] = out or ""
        if changes is None:
            return event
        if len(chunk.choices) == 1:
            spliced = _splice_content(data, chunk.choices[0].delta, changes[0])
            if spliced is not None:
                return spliced
        obj = orjson.loads(data)
        choices = obj["choices"]
        for pos, text in changes.items():
            delta_obj = choices[pos].get("delta")
            if not isinstance(delta_obj, dict):
                delta_obj = choices[pos]["delta"] = {}
            delta_obj["content"] = text
        return data_event(orjson.dumps(obj))

    def _flush_all(self) -> bytes:
        if not self._open:
            return b""
        pieces: list[dict[str, Any]] = []
        for index in sorted(self._open):
            f = self._filters[index]
            held = f.flush() if f is not None else ""
            if held:
                pieces.append(
                    {
                        "index": index,
                        "delta": {"content": held},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
        self._open.clear()
        if not pieces:
            return b""
        ident, created, model = self._last
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": pieces,
        }
        return data_event(orjson.dumps(chunk))


_CONTENT_KEY = b'"content":'


def _splice_content(data: bytes, delta: DeltaView | None, text: str) -> bytes | None:
    """The event with its one `delta.content` string replaced in place, or None.

    Re-encoding a whole chunk costs more than the policies themselves; when the old
    content's JSON encoding occurs exactly once after `"content":`, swapping those
    bytes gives the same event the re-encoder would, with every other byte kept.
    """
    old = delta.content if delta is not None else None
    if not old:
        return None
    key = data.find(_CONTENT_KEY)
    if key < 0 or data.find(_CONTENT_KEY, key + 1) >= 0:
        return None
    value = data.find(orjson.dumps(old), key + len(_CONTENT_KEY))
    if value < 0 or data[key + len(_CONTENT_KEY) : value].strip() != b"":
        return None
    end = value + len(orjson.dumps(old))
    return b"data: " + data[:value] + orjson.dumps(text) + data[end:] + b"\n\n"
