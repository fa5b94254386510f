"""Gemini's streamed answer (`streamGenerateContent?alt=sse`) as an OpenAI chunk stream.

Each Gemini event is a whole `GenerateContentResponse` holding the next text of one
or more candidates, whole function calls, and on a candidate's last event its
`finishReason`; `usageMetadata` is cumulative. OpenAI clients expect per choice a
role chunk, content and tool-call deltas, a chunk with `finish_reason`, then (when
`stream_options.include_usage` was asked) a usage chunk with `choices: []`, then
`data: [DONE]`. The translator keeps the state that takes (which candidates have
started and finished, how many tool calls each has had, the last usage) and reads
upstream bytes through `SSEParser`, so its output does not depend on where the
network cut them.

Every output event carries one choice, the form the gateway's streaming fast path
reads without decoding. Errors after the 200 — an `{"error": ...}` event from
Google, a blocked prompt, a stream that ends before every candidate finished —
end the stream with an OpenAI error event and no `[DONE]`, as the gateway's own
stream errors do; the OpenAI SDK raises on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ktproxy.wire.gemini_response import (
    Json,
    bad_response,
    candidate_index,
    candidate_parts,
    completion_id,
    error_object,
    finish_reason,
    new_tool_call_id,
    part_text,
    prompt_blocked,
    tool_call,
    usage,
)
from ktproxy.wire.sse import DONE, SSEParser, data_event, event_data

_CUT_SHORT: Json = {
    "message": "Upstream response was cut short: the stream ended before every answer "
    "was complete.",
    "type": "upstream_error",
    "param": None,
    "code": "upstream_unavailable",
}


class GeminiStreamTranslator:
    """Turns one Gemini SSE response into OpenAI SSE chunks, incrementally."""

    __slots__ = (
        "_parser",
        "_model",
        "_include_usage",
        "_created",
        "_new_id",
        "_id",
        "_calls",
        "_finished",
        "_usage",
        "_ended",
    )

    def __init__(
        self,
        model: str,
        include_usage: bool,
        *,
        created: int | None = None,
        new_id: Callable[[], str] = new_tool_call_id,
    ) -> None:
        self._parser = SSEParser()
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._new_id = new_id
        self._id: str | None = None
        # Candidates that have started (their role chunk is out) -> tool calls sent.
        self._calls: dict[int, int] = {}
        self._finished: set[int] = set()
        self._usage: Any = None
        self._ended = False  # an error event went out: nothing follows it

    def feed(self, data: bytes) -> bytes:
        """OpenAI SSE bytes for the upstream bytes `data` (any boundaries; may be b"")."""
        if self._ended:
            return b""
        events = self._parser.feed(data)
        if not events:
            return b""
        return b"".join([self._event(e) for e in events])

    def finish(self) -> bytes:
        """At upstream EOF: the usage chunk and `[DONE]`, or an error event when the
        stream ended before every candidate had finished."""
        if self._ended:
            return b""
        rest = self._parser.remainder().rstrip(b"\r\n")
        out = self._event(rest + b"\n\n") if rest else b""
        if self._ended:
            return out
        if not self._calls or len(self._finished) < len(self._calls):
            return out + self._fail(_CUT_SHORT)
        if self._include_usage:
            out += self._chunk([], usage(self._usage))
        return out + data_event(DONE)

    def _event(self, event: bytes) -> bytes:
        if self._ended:
            return b""
        data = event_data(event)
        if data is None or not data.strip():
            return b""  # comments, keep-alives
        try:
            response = orjson.loads(data)
        except orjson.JSONDecodeError:
            response = None
        if not isinstance(response, dict):
            return self._fail(bad_response("a stream event that is not JSON").error_object())
        err = response.get("error")
        if isinstance(err, Mapping):
            code = err.get("code")
            return self._fail(error_object(code if isinstance(code, int) else 500, err))
        if self._id is None:
            self._id = completion_id(response)
            version = response.get("modelVersion")
            if isinstance(version, str) and version:
                self._model = version
        if "usageMetadata" in response:
            self._usage = response["usageMetadata"]
        blocked = prompt_blocked(response)
        if blocked is not None:
            return self._fail(blocked.error_object())
        out: list[bytes] = []
        for candidate in response.get("candidates") or []:
            if isinstance(candidate, Mapping):
                self._candidate(candidate, out)
        return b"".join(out)

    def _candidate(self, candidate: Mapping[str, Any], out: list[bytes]) -> None:
        index = candidate_index(candidate)
        if index in self._finished:
            return
        if index not in self._calls:
            self._calls[index] = 0
            out.append(self._chunk([_choice(index, {"role": "assistant", "content": ""})]))
        parts = candidate_parts(candidate)
        text = "".join([t for p in parts if (t := part_text(p)) is not None])
        if text:
            out.append(self._chunk([_choice(index, {"content": text})]))
        for part in parts:
            call = tool_call(part, self._new_id)
            if call is not None:
                delta = {"tool_calls": [{"index": self._calls[index], **call}]}
                self._calls[index] += 1
                out.append(self._chunk([_choice(index, delta)]))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self._finished.add(index)
            finish = finish_reason(reason, self._calls[index] > 0)
            out.append(self._chunk([_choice(index, {}, finish)]))

    def _chunk(self, choices: list[Json], usage: Json | None = None) -> bytes:
        chunk: Json = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        return data_event(orjson.dumps(chunk))

    def _fail(self, error: Mapping[str, Any]) -> bytes:
        self._ended = True
        return data_event(orjson.dumps({"error": error}))


def _choice(index: int, delta: Json, finish: str | None = None) -> Json:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
