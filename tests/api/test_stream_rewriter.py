"""The stream rewriter: streamed output equals the filter applied to the whole text."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ktproxy.api.stream_rewriter import StreamRewriter
from ktproxy.context import RequestContext
from ktproxy.policies.base import Policy
from ktproxy.policies.chain import EMPTY_CHAIN, CompiledChain
from tests.policies.sample_policies import MaskDigitsFilter, UpperFilter


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


@settings(max_examples=300, deadline=None)
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
    )
    assert run(CompiledChain([HoldUpper(2)]), data, [5, 9]) == data
