"""SSE framing: events come out whole and unchanged whatever the read boundaries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ktproxy.wire.sse import SSEParser, event_data

EVENTS = [
    b'data: {"a": 1}\n\n',
    b": comment\n\n",
    b"event: ping\ndata: {}\n\n",
    b"data: line one\ndata: line two\n\n",
    b"data: [DONE]\n\n",
    'data: {"t": "日本語 ✓"}\n\n'.encode(),
]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(
    st.lists(st.sampled_from(EVENTS), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_yields_the_same_events(events: list[bytes], points: list[int]) -> None:
    data = b"".join(events)
    parser = SSEParser()
    out: list[bytes] = []
    for piece in cut(data, points):
        out.extend(parser.feed(piece))
    assert out == events
    assert parser.remainder() == b""


@given(
    st.lists(st.sampled_from(EVENTS), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_crlf_streams_are_normalised(events: list[bytes], points: list[int]) -> None:
    data = b"".join(events).replace(b"\n", b"\r\n")
    parser = SSEParser()
    out: list[bytes] = []
    for piece in cut(data, points):
        out.extend(parser.feed(piece))
    assert out == events


def test_partial_event_is_kept_for_the_end() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a": 1}\n\ndata: {"b"') == [b'data: {"a": 1}\n\n']
    assert parser.remainder() == b'data: {"b"'


def test_event_data() -> None:
    assert event_data(b'data: {"a": 1}\n\n') == b'{"a": 1}'
    assert event_data(b"data:x\n\n") == b"x"
    assert event_data(b"data: a\ndata: b\n\n") == b"a\nb"
    assert event_data(b"event: ping\ndata: {}\n\n") == b"{}"
    assert event_data(b": comment\n\n") is None
    assert event_data(b"retry: 10\n\n") is None
