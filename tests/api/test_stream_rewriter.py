"""The stream rewriter: streamed output equals the filter applied to the whole text.

Every test runs with each implementation of the fast path (`chunk_text` and
`splice_text`: `c`, the extension's, and `py`, the reference), and a property test
checks that both give the same bytes for the same stream with the default chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktproxy.api import stream_rewriter
from ktproxy.api.stream_rewriter import StreamRewriter
from ktproxy.context import RequestContext
from ktproxy.policies.base import Policy
from ktproxy.policies.chain import EMPTY_CHAIN, CompiledChain
from ktproxy.policies.pii_detector import PIIDetector, PIIOptions
from ktproxy.scan.kinds import ALL_KINDS, KINDS
from ktproxy.scan.redactor import redact_text
from ktproxy.wire.chunk_text import chunk_text_py, splice_text_py
from tests.policies.sample_policies import MaskDigitsFilter, UpperFilter
from tests.scan.conftest import EXTENSION, c_param, chosen, require

FastPath = tuple[Callable[..., Any], Callable[..., Any]]
PY_PATH: FastPath = (chunk_text_py, splice_text_py)
C_PATH: FastPath | str = (
    EXTENSION if isinstance(EXTENSION, str) else (EXTENSION.chunk_text, EXTENSION.splice_text)
)


@contextmanager
def fast_path(impl: FastPath) -> Iterator[None]:
    """The rewriter using `impl` for `chunk_text` and `splice_text`."""
    saved = stream_rewriter.chunk_text, stream_rewriter.splice_text
    stream_rewriter.chunk_text, stream_rewriter.splice_text = impl
    try:
        yield
    finally:
        stream_rewriter.chunk_text, stream_rewriter.splice_text = saved


@pytest.fixture(autouse=True, params=[c_param(C_PATH), pytest.param(PY_PATH, id="py")])
def implementation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test once per fast-path implementation."""
    with fast_path(chosen(request.param)):
        yield


class HoldUpper(Policy):
    name = "t-upper"

    def __init__(self, hold: int) -> None:
        super().__init__(None)
        self.hold = hold

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> UpperFilter:
        return UpperFilter(self.hold)


class Mask(Policy):
    name = "t-mask"

    def stream_filter(self, ctx: RequestContext, choice_index: int) -> MaskDigitsFilter:
        return MaskDigitsFilter()


def ctx() -> RequestContext:
    return RequestContext("id", "chat.completions", b"{}", "m", True)


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    obj = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        **extra,
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_bytes(pieces: list[str], n: int, finish: bool, usage: bool) -> bytes:
    events = [
        chunk([{"index": i, "delta": {"role": "assistant", "content": ""}} for i in range(n)])
    ]
    for p in pieces:
        events.append(chunk([{"index": i, "delta": {"content": p}, "kt": 1} for i in range(n)]))
    if finish:
        events.append(chunk([{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)]))
    if usage:
        events.append(chunk([], usage={"total_tokens": 3}))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def run(chain: CompiledChain, data: bytes, cuts: list[int]) -> bytes:
    rewriter = StreamRewriter(chain, ctx())
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    out = [rewriter.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    out.append(rewriter.finish())
    return b"".join(out)


def texts(body: bytes) -> tuple[dict[int, str], list[dict[str, Any]]]:
    chunks = [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    per: dict[int, str] = {}
    for c in chunks:
        for choice in c["choices"]:
            per[choice["index"]] = per.get(choice["index"], "") + (
                choice["delta"].get("content") or ""
            )
    return per, chunks


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=12),
    n=st.integers(min_value=1, max_value=3),
    hold=st.integers(min_value=0, max_value=6),
    finish=st.booleans(),
    usage=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=20),
)
def test_stream_equals_whole(
    pieces: list[str], n: int, hold: int, finish: bool, usage: bool, cuts: list[int]
) -> None:
    chain = CompiledChain([Mask(None), HoldUpper(hold)])
    body = run(chain, stream_bytes(pieces, n, finish, usage), cuts)
    per, chunks = texts(body)
    whole = "".join(pieces)
    expected = "".join("#" if c.isdigit() else c for c in whole).upper()
    assert per == {i: expected for i in range(n)}
    assert body.endswith(b"data: [DONE]\n\n")
    if finish:
        # Nothing of a choice's text comes after its finish_reason.
        done: set[int] = set()
        for c in chunks:
            for choice in c["choices"]:
                assert choice["index"] not in done or not choice["delta"].get("content")
                if choice.get("finish_reason"):
                    done.add(choice["index"])
    # Every upstream content event is still there, unknown fields included.
    assert sum(ch.get("kt") == 1 for c in chunks for ch in c["choices"]) == len(pieces) * n


def test_unchanged_events_are_forwarded_byte_for_byte() -> None:
    data = stream_bytes(["hello ", "world"], 1, True, True)
    assert run(CompiledChain([Mask(None)]), data, [7, 50, 51, 200]) == data
    assert run(EMPTY_CHAIN, data, [3]) == data


def test_non_chunk_events_pass_through() -> None:
    data = (
        b": keep-alive\n\n"
        + b'event: ping\ndata: {"type": "ping"}\n\n'
        + b'data: {"error": {"message": "x"}}\n\n'
        + b"data: not json\n\n"
        + b"data: \xff\xfe broken text\n\n"
        + b"data: "
        + b"[" * 5000
        + b"\n\n"
    )
    assert run(EMPTY_CHAIN, data, [5, 9]) == data
    assert run(CompiledChain([Mask(None)]), data, [5, 9]) == data  # nothing to mask in them


def test_non_chunk_events_are_filtered_as_whole_texts() -> None:
    """PII in an upstream error object (or any event that is not a chunk) is redacted too."""
    pii = CompiledChain([PIIDetector(PIIOptions())])
    data = (
        b'data: {"error": {"message": "quota of jane.roe@example.com exceeded"}}\n\n'
        + b"data: call +1 415 555 0100 now\n\n"
    )
    out = run(pii, data, [7, 30])
    assert b"jane.roe" not in out and b"555 0100" not in out
    first, second = out.split(b"\n\n")[:2]
    assert json.loads(first[6:])["error"]["message"] == "quota of [REDACTED:EMAIL] exceeded"
    assert second == b"data: call [REDACTED:PHONE] now"


def test_usage_chunk_is_read_and_dropped_when_the_gateway_asked_for_it() -> None:
    data = stream_bytes(["ab", "cd"], 1, True, True) + b"data: [DONE]\n\n"
    context = ctx()
    rewriter = StreamRewriter(EMPTY_CHAIN, context, strip_usage=True)
    out = rewriter.feed(data) + rewriter.finish()
    assert context.usage == {"total_tokens": 3}
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    context = ctx()
    rewriter = StreamRewriter(EMPTY_CHAIN, context)
    assert rewriter.feed(data) + rewriter.finish() == data  # the client asked: kept
    assert context.usage == {"total_tokens": 3}


def test_unplain_events_still_filtered() -> None:
    """Events the fast path declines (escaped keys, several choices) go the general way."""
    data = (
        b'data: {"choices":[{"index":0,"delta":{"con\\u0074ent":"a1"}}]}\n\n'
        + b'data: {"choices":[{"index":0,"delta":{"content":"b2"}},'
        + b'{"index":1,"delta":{"content":"c3"}}]}\n\n'
        + b'data: {"choices":[{"index":-1,"delta":{"content":"d4"}}]}\n\n'
        + b"data: [DONE]\n\n"
    )
    per, _ = texts(run(CompiledChain([Mask(None)]), data, [40, 41, 90]))
    assert per == {0: "a#b#", 1: "c#", -1: "d#"}


# -- the default chain: C and Python fast paths give the same bytes ---------------------

EMAIL = "john.doe@example.com"
VALUES = [EMAIL, "+44 20 7946 0958", "4111 1111 1111 1111", "192.168.1.20", "123-45-6789"]
FILLER = ["hello ", "world. ", "at ", "é ", "日本 ", "\n", '"q" ', "\\", "x", "content"]


def tag(value: str, kind: int) -> str:
    return f"[REDACTED:{KINDS[kind]}]"


def _python_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # ", " and ": " separators, non-ASCII as \uXXXX


def pii_stream(pieces: list[str], encoder: Callable[[Any], bytes], finish: bool) -> bytes:
    def chunk_event(choice: dict[str, Any]) -> bytes:
        obj = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        return b"data: " + encoder(obj | {"choices": [choice]}) + b"\n\n"

    events = [chunk_event({"index": 0, "delta": {"role": "assistant", "content": ""}})]
    events += [
        chunk_event({"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None})
        for p in pieces
    ]
    if finish:
        events.append(chunk_event({"index": 0, "delta": {}, "finish_reason": "stop"}))
    return b"".join(events) + b"data: [DONE]\n\n"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    words=st.lists(st.sampled_from(VALUES + FILLER) | st.text(max_size=4), max_size=14),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8),
    encoder=st.sampled_from([orjson.dumps, _python_json]),
    finish=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
)
def test_c_and_python_fast_paths_agree(
    words: list[str],
    sizes: list[int],
    encoder: Callable[[Any], bytes],
    finish: bool,
    cuts: list[int],
) -> None:
    c_path = require(C_PATH)
    text = " ".join(words)
    pieces, i, k = [], 0, 0
    while i < len(text):
        pieces.append(text[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    data = pii_stream(pieces, encoder, finish)
    chain = CompiledChain([PIIDetector(PIIOptions())])
    outputs = []
    for impl in (c_path, PY_PATH):
        with fast_path(impl):
            rewriter = StreamRewriter(chain, ctx())
            bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
            writes = [rewriter.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
            writes.append(rewriter.finish())
        outputs.append(writes)
    assert outputs[0] == outputs[1]
    body = b"".join(outputs[0])
    per, _ = texts(body)
    whole = redact_text(text, ALL_KINDS, tag)
    assert per.get(0, "") == whole
    # A value the whole-text redaction finds is in no write to the client.
    hidden = [v.encode() for v in VALUES if v in text and v not in whole]
    for write in outputs[0]:
        assert not any(v in write for v in hidden)


def test_text_after_a_finish_reason_is_still_flushed() -> None:
    data = (
        chunk([{"index": 0, "delta": {"content": "ab"}}])
        + chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        + chunk([{"index": 0, "delta": {"content": "cd"}}])
        + b"data: [DONE]\n\n"
    )
    per, _ = texts(run(CompiledChain([HoldUpper(2)]), data, [30, 100]))
    assert per == {0: "ABCD"}
