"""Applies the policies' per-choice stream filters to an OpenAI chunk stream.

The per-chunk hot path. Nearly every event is a plain one-choice text delta:
`chunk_text` (C when built) reads its text and where its JSON string sits, the
text goes through the choice's filter, and `splice_text` writes the filtered text
into that place — every other byte kept. A read holding exactly one such event
(the usual case) does not even go through the SSE parser. Any other event is
decoded into a `ChunkView` (msgspec reads only `choices[].delta.content`,
`tool_calls` and `finish_reason`) and its text deltas go through the filter of
their choice. When no filter changed or held back anything, the event's original
bytes go on as they came — no re-encoding; otherwise the text is spliced in where
that can be done exactly, else the event is re-encoded. Held-back text is flushed
into the chunk that carries the choice's `finish_reason`, and whatever is still
held at `[DONE]` (or at the end of a stream without one) goes out in a chunk of
its own before it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from ktproxy.context import RequestContext
from ktproxy.policies.base import StreamFilter
from ktproxy.policies.chain import CompiledChain
from ktproxy.wire.chunk_text import ChunkText, chunk_text, content_span, splice_text
from ktproxy.wire.openai import chunk_decoder
from ktproxy.wire.sse import DONE, SSEParser, data_event, event_data

_CONTENT = -1  # filter key of a choice's text; tool calls use their own index


class StreamRewriter:
    """Stateful filter of one streamed response."""

    __slots__ = (
        "_chain",
        "_ctx",
        "_parser",
        "_filters",
        "_open",
        "_last",
        "_tools",
        "_text_index",
        "_text_filter",
        "_strip_usage",
        "__weakref__",  # GatewayState.rewriters
    )

    def __init__(
        self, chain: CompiledChain, ctx: RequestContext, strip_usage: bool = False
    ) -> None:
        self._chain = chain
        self._ctx = ctx
        chain.time_stream(ctx)  # one stream in CHUNK_TIMING_EVERY: filter calls timed
        # The gateway asked for the usage chunk (audit, token limits) and the client did
        # not: it is read into `ctx.usage` and not sent on.
        self._strip_usage = strip_usage
        self._parser = SSEParser()
        # (choice index, _CONTENT or tool-call index) -> filter
        self._filters: dict[tuple[int, int], StreamFilter | None] = {}
        self._open: set[tuple[int, int]] = set()  # filters that may still hold text
        # The last event with choices: its id, created and model name the flush chunk.
        self._last = b""
        self._tools = chain.has_tool_args_filters
        # The text filter of the choice last seen on the fast path (one lookup saved).
        self._text_index: int | None = None
        self._text_filter: StreamFilter | None = None

    def feed(self, data: bytes) -> bytes:
        """Bytes to send to the client for the upstream bytes `data` (may be empty)."""
        if self._parser.idle:
            # One whole plain text event, the parser would return it unchanged.
            view = chunk_text(data)
            if view is not None:
                return self._text(data, view)
        events = self._parser.feed(data)
        if not events:
            return b""
        if len(events) == 1:
            return self._event(events[0])
        return b"".join([self._event(e) for e in events])

    def held(self) -> int:
        """Characters the open filters hold back now (for /metrics, at scrape time)."""
        total = 0
        for key in self._open:
            f = self._filters.get(key)
            total += getattr(f, "held", 0)
        return total

    def finish(self) -> bytes:
        """At upstream EOF: held text of every choice, then any unterminated bytes."""
        return self._flush_all() + self._parser.remainder()

    def _filter_for(self, key: tuple[int, int]) -> StreamFilter | None:
        try:
            return self._filters[key]
        except KeyError:
            if key[1] == _CONTENT:
                f = self._chain.stream_filter(self._ctx, key[0])
            else:
                f = self._chain.tool_args_filter(self._ctx, key[0], key[1])
            self._filters[key] = f
            if f is not None:
                self._open.add(key)
            return f

    def _text(self, event: bytes, view: ChunkText) -> bytes:
        """A plain one-choice text event (what the general path below does with one)."""
        self._last = event
        index, text, start, end = view
        if not text:
            return event
        if index == self._text_index:
            f = self._text_filter
        else:
            f = self._text_filter = self._filter_for((index, _CONTENT))
            self._text_index = index
        if f is None:
            return event
        out = f.feed(text)
        if out == text:
            return event
        if start >= 0:
            spliced = splice_text(event, start, end, out)
            if spliced is not None:
                return spliced
        obj = orjson.loads(event_data(event) or b"")
        _delta(obj["choices"][0])["content"] = out
        return data_event(orjson.dumps(obj))

    def _event(self, event: bytes) -> bytes:
        view = chunk_text(event)
        if view is not None:
            return self._text(event, view)
        data = event_data(event)
        if data is None:
            return event  # comments, retry hints, events without data
        if data == DONE:
            return self._flush_all() + event
        try:
            chunk = chunk_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return self._opaque(event, data)  # e.g. an upstream error object
        if chunk.usage is not None:
            self._ctx.usage = chunk.usage
        if not chunk.choices:
            if chunk.usage is not None:  # the usage chunk: numbers only
                return b"" if self._strip_usage else event
            return self._opaque(event, data)  # e.g. {"error": {...}}: no choices, but text
        self._last = event
        texts: dict[int, str] | None = None  # choice position -> new delta.content
        args: dict[tuple[int, int], str] | None = None  # (choice pos, call pos) -> arguments
        held_args: dict[int, dict[int, str]] | None = None  # choice pos -> flushed calls
        for pos, choice in enumerate(chunk.choices):
            delta = choice.delta
            f = self._filter_for((choice.index, _CONTENT))
            if f is not None:
                content = delta.content if delta is not None else None
                filtered = f.feed(content) if content else content
                if filtered != content:
                    if texts is None:
                        texts = {}
                    texts[pos] = filtered or ""
            if self._tools and delta is not None and delta.tool_calls:
                for cpos, call in enumerate(delta.tool_calls):
                    fragment = call.function.arguments if call.function is not None else None
                    g = self._filter_for((choice.index, call.index))
                    if g is None or not fragment:
                        continue
                    out = g.feed(fragment)
                    if out != fragment:
                        if args is None:
                            args = {}
                        args[(pos, cpos)] = out
            if choice.finish_reason is not None:
                content_held, calls_held = self._flush_choice(choice.index)
                if content_held:
                    if texts is None:
                        texts = {}
                    base = texts.get(pos)
                    if base is None:
                        base = (delta.content if delta is not None else None) or ""
                    texts[pos] = base + content_held
                if calls_held:
                    if held_args is None:
                        held_args = {}
                    held_args[pos] = calls_held
        if texts is None and args is None and held_args is None:
            return event
        if args is None and held_args is None and texts is not None and len(chunk.choices) == 1:
            old = chunk.choices[0].delta
            old_text = old.content if old is not None else None
            if old_text:
                start, end = content_span(data, old_text)
                if start >= 0:
                    spliced = splice_text(data, start, end, texts[0])
                    if spliced is not None:
                        return data_event(spliced)
        obj = orjson.loads(data)
        choices = obj["choices"]
        for pos, text in (texts or {}).items():
            _delta(choices[pos])["content"] = text
        for (pos, cpos), fragment in (args or {}).items():
            _delta(choices[pos])["tool_calls"][cpos].setdefault("function", {})["arguments"] = (
                fragment
            )
        for pos, calls in (held_args or {}).items():
            delta_obj = _delta(choices[pos])
            existing = delta_obj.get("tool_calls") or []
            for index, fragment in calls.items():
                existing.append({"index": index, "function": {"arguments": fragment}})
            delta_obj["tool_calls"] = existing
        return data_event(orjson.dumps(obj))

    def _opaque(self, event: bytes, data: bytes) -> bytes:
        """An event that is not a chunk (an error object, malformed JSON): the stream
        filters see its whole text at once, so what they would hide in a chunk they
        hide here too (a PII value in an upstream error message is redacted)."""
        f = self._chain.stream_filter(self._ctx, -1)
        if f is None:
            return event
        text = data.decode("utf-8", "replace")
        out = f.feed(text) + f.flush()
        return event if out == text else data_event(out.encode("utf-8"))

    def _flush_choice(self, index: int) -> tuple[str, dict[int, str]]:
        """Flush every open filter of one choice: (held text, {call index: held args})."""
        text = ""
        calls: dict[int, str] = {}
        for key in sorted(k for k in self._open if k[0] == index):
            self._open.discard(key)
            # A choice that (unusually) goes on after its finish_reason gets a fresh
            # filter, so what it holds is flushed at [DONE] like any other.
            f = self._filters.pop(key)
            if key[1] == _CONTENT and self._text_index == index:
                self._text_index, self._text_filter = None, None
            held = f.flush() if f is not None else ""
            if not held:
                continue
            if key[1] == _CONTENT:
                text = held
            else:
                calls[key[1]] = held
        return text, calls

    def _flush_all(self) -> bytes:
        if not self._open:
            return b""
        pieces: list[dict[str, Any]] = []
        for index in sorted({k[0] for k in self._open}):
            text, calls = self._flush_choice(index)
            delta: dict[str, Any] = {}
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = [
                    {"index": i, "function": {"arguments": a}} for i, a in sorted(calls.items())
                ]
            if delta:
                pieces.append(
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                )
        if not pieces:
            return b""
        ident, created, model = "", 0, ""
        if self._last:  # an event decoded before: it decodes again
            head = chunk_decoder.decode(event_data(self._last) or b"")
            ident, created, model = head.id, head.created, head.model
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": pieces,
        }
        return data_event(orjson.dumps(chunk))


def _delta(choice: dict[str, Any]) -> dict[str, Any]:
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice["delta"] = {}
    return delta
