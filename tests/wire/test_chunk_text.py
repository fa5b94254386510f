"""The streaming fast path: `chunk_text` and `splice_text`, the extension's and the reference.

Every test taking `impl` runs once per implementation (`c`, `py`). The reference is
the specification; the C `chunk_text` may decline (None) an event the reference reads,
never the reverse, and otherwise returns the same view — checked on generated chunks
in every encoding style, on mutated and arbitrary bytes, and on every plain chunk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ktproxy.wire import chunk_text as chunk_text_module
from ktproxy.wire.chunk_text import ChunkText, chunk_text_py, splice_text_py
from tests.scan.conftest import EXTENSION, IN_CI, c_param, chosen, require, rss_growth_mb


@dataclass(frozen=True)
class Impl:
    """One implementation: `name` is its test id."""

    name: str
    chunk_text: Callable[[bytes], ChunkText | None]
    splice_text: Callable[[bytes, int, int, str], bytes | None]


PY = Impl("py", chunk_text_py, splice_text_py)
C: Impl | str = (
    EXTENSION
    if isinstance(EXTENSION, str)
    else Impl("c", EXTENSION.chunk_text, EXTENSION.splice_text)
)


@pytest.fixture(params=[c_param(C), pytest.param(PY, id="py")])
def impl(request: pytest.FixtureRequest) -> Impl:
    """Each implementation in turn."""
    chosen_impl: Impl = chosen(request.param)
    return chosen_impl


@pytest.fixture(scope="session")
def c_impl() -> Impl:
    """The extension's functions (session-scoped, so hypothesis tests can use it)."""
    return require(C)


def test_c_fast_path_loaded() -> None:
    """CI must run the C fast path: a silent fallback to the reference fails here."""
    if IN_CI:
        assert chunk_text_module.IMPLEMENTATION == "c", (
            "CI=true but ktproxy.wire.chunk_text uses the pure-Python reference "
            f"(KTPROXY_NO_EXTENSIONS={os.environ.get('KTPROXY_NO_EXTENSIONS')!r})"
        )
    elif chunk_text_module.IMPLEMENTATION != "c":
        pytest.skip("the fast path is the pure-Python reference (required only under CI=true)")
    c = require(C)
    assert chunk_text_module.chunk_text is c.chunk_text
    assert chunk_text_module.splice_text is c.splice_text


LEAK_CHECK = """
import os
from ktproxy._ktscan import chunk_text, splice_text

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

events = [
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"john.d"}}]}\\n\\n',
    b'data: {"choices":[{"index":7,"delta":{"content":'
    b'"caf\\\\u00e9 \\xc3\\xa9 \\xf0\\x9f\\x98\\x80"}}]}\\n\\n',
    b'data: {"choices":[{"index":0,"delta":{"content":null}}]}\\n\\n',
    b'data: {"choices":[{"delta":{"content":"\\xff"}}]}\\n\\n',
    b'data: {"choices":[{"delta":{"content":"a"}}',
    b"data: [DONE]\\n\\n",
]
bad = [None, "data: x", 1]

def work():
    for ev in events:
        view = chunk_text(ev)
        if view is not None and view[2] >= 0:
            splice_text(ev, view[2], view[3], "x\\u00e9\\U0001f600\\n")
            splice_text(ev, view[2], view[3], "\\ud800")
    for arg in bad:
        for call in (lambda: chunk_text(arg), lambda: splice_text(arg, 0, 0, "x")):
            try:
                call()
            except TypeError:
                pass
    try:
        splice_text(b"x", 2, 1, "y")
    except ValueError:
        pass

for _ in range(2000):
    work()
before = rss_mb()
for _ in range(60000):
    work()
print(rss_mb() - before)
"""


@pytest.mark.skipif(
    "asan" in os.environ.get("LD_PRELOAD", ""),
    reason="under ASan, freed memory waits in quarantine: RSS tells nothing",
)
def test_no_leak_in_a_long_run(c_impl: Impl) -> None:
    """RSS stays flat over many calls, through the error paths (own process)."""
    growth_mb = rss_growth_mb(LEAK_CHECK)
    assert growth_mb < 4, f"RSS grew by {growth_mb:.1f} MB over 60000 rounds"


def event(obj: Any, dumps: Callable[[Any], bytes] = orjson.dumps) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def chunk(delta: Any = None, **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "delta": {"content": "hello"} if delta is None else delta,
                "logprobs": None,
                "finish_reason": None,
                **choice,
            }
        ],
    }


def spliced_at(ev: bytes, view: ChunkText | None) -> bytes:
    assert view is not None and view[2] >= 0
    return ev[view[2] : view[3]]


# -- chunk_text, both implementations --------------------------------------------------


@pytest.mark.parametrize(
    "text", ["hello", " the", "a\nb", 'say "hi"', "back\\slash", "é日本😀", "\x7f", "tab\tx"]
)
def test_plain_text_delta(impl: Impl, text: str) -> None:
    ev = event(chunk({"content": text}, index=2))
    view = impl.chunk_text(ev)
    assert view is not None and view[:2] == (2, text)
    assert spliced_at(ev, view) == orjson.dumps(text)


@pytest.mark.parametrize(
    "delta", [{"role": "assistant", "content": ""}, {"content": None}, {}, {"refusal": "no"}]
)
def test_delta_without_text(impl: Impl, delta: dict[str, Any]) -> None:
    assert impl.chunk_text(event(chunk(delta))) == (0, "", -1, -1)


def test_python_json_style_is_read_too(impl: Impl) -> None:
    ev = event(chunk({"content": "hi there"}), lambda o: json.dumps(o).encode())
    view = impl.chunk_text(ev)
    assert view is not None and view[1] == "hi there"
    assert spliced_at(ev, view) == b'"hi there"'  # after `"content": `


NOT_PLAIN = {
    "done": b"data: [DONE]\n\n",
    "comment": b": keep-alive\n\n",
    "named event": b'event: x\ndata: {"choices":[{"delta":{"content":"a"}}]}\n\n',
    "two data lines": b'data: {"choices":[{"delta":\ndata: {"content":"a"}}]}\n\n',
    "crlf": b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n',
    "cr inside": b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\n',
    "no blank line": b'data: {"choices":[{"delta":{"content":"a"}}]}\n',
    "two events": b'data: {"choices":[]}\n\ndata: {"choices":[{"delta":{"content":"a"}}]}\n\n',
    "no space after colon": b'data:{"choices":[{"delta":{"content":"a"}}]}\n\n',
    "no choices": event({"id": "x"}),
    "empty choices": event({"choices": [], "usage": {"total_tokens": 1}}),
    "two choices": event({"choices": [{"delta": {"content": "a"}}, {"delta": {"content": "b"}}]}),
    "tool calls": event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]})),
    "empty tool calls": event(chunk({"content": "a", "tool_calls": []})),
    "finish reason": event(chunk({"content": "a"}, finish_reason="stop")),
    "null delta": event(chunk(None) | {"choices": [{"index": 0, "delta": None}]}),
    "no delta": event({"choices": [{"index": 0}]}),
    "delta not an object": event({"choices": [{"delta": "a"}]}),
    "content not a string": event(chunk({"content": 5})),
    "id not a string": event(chunk() | {"id": 5}),
    "created a float": event(chunk() | {"created": 1.5}),
    "index a bool": event(chunk(index=True)),
    "not json": b"data: not json\n\n",
    "an array": b'data: [{"choices":[{"delta":{"content":"a"}}]}]\n\n',
    "truncated": b'data: {"choices":[{"delta":{"content":"a"}}\n\n',
    "trailing bytes": b'data: {"choices":[{"delta":{"content":"a"}}]} x\n\n',
    "trailing comma": b'data: {"choices":[{"delta":{"content":"a"},}]}\n\n',
    "invalid utf-8": b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n',
    "a surrogate in utf-8": b'data: {"choices":[{"delta":{"content":"\xed\xa0\x80"}}]}\n\n',
    "a lone surrogate escape": b'data: {"choices":[{"delta":{"content":"\\ud800"}}]}\n\n',
    "a control character": b'data: {"choices":[{"delta":{"content":"\x01"}}]}\n\n',
    "a bad escape": b'data: {"choices":[{"delta":{"content":"\\x41"}}]}\n\n',
    "a bad number": b'data: {"n":01,"choices":[{"delta":{"content":"a"}}]}\n\n',
    "deep nesting": b'data: {"x":' + b"[" * 3000 + b"]" * 3000 + b',"choices":[]}\n\n',
    "only the prefix": b"data: \n\n",
    "empty": b"",
}


@pytest.mark.parametrize("ev", list(NOT_PLAIN.values()), ids=list(NOT_PLAIN))
def test_not_a_plain_text_event(impl: Impl, ev: bytes) -> None:
    assert impl.chunk_text(ev) is None


@pytest.mark.parametrize(
    ("content_json", "text"),
    [
        (rb'"a\nb\"c\\d\te\rf\bg\fh"', 'a\nb"c\\d\te\rf\bg\fh'),
        (rb'"caf\u00e9 \ud83d\ude00"', "café 😀"),
        (rb'"a\/b"', "a/b"),
        (rb'"\u0000"', "\x00"),
    ],
)
def test_escapes_decode_as_json_does(impl: Impl, content_json: bytes, text: str) -> None:
    ev = b'data: {"choices":[{"index":0,"delta":{"content":' + content_json + b"}}]}\n\n"
    view = impl.chunk_text(ev)
    assert view is not None and view[1] == text
    # Replaced in place only when written the way orjson writes it, and no \u is near.
    assert (view[2] >= 0) == (content_json == orjson.dumps(text) and b"\\u" not in ev)


SPLICE_DECLINED = {
    "space before colon": b'data: {"choices":[{"delta":{"content" :"ab"}}]}\n\n',
    "two spaces after colon": b'data: {"choices":[{"delta":{"content":  "ab"}}]}\n\n',
    "a tab after colon": b'data: {"choices":[{"delta":{"content":\t"ab"}}]}\n\n',
    "logprobs content": (
        b'data: {"choices":[{"delta":{"content":"ab"},"logprobs":{"content":[]}}]}\n\n'
    ),
    "content as a value": b'data: {"x":"content","choices":[{"delta":{"content":"ab"}}]}\n\n',
    "content ending a string": (
        b'data: {"x":"say \\"content","choices":[{"delta":{"content":"ab"}}]}\n\n'
    ),
    "a \\u escape elsewhere": b'data: {"id":"\\u0041","choices":[{"delta":{"content":"ab"}}]}\n\n',
    "an escaped backslash before u": (
        b'data: {"id":"a\\\\u","choices":[{"delta":{"content":"ab"}}]}\n\n'
    ),
}


@pytest.mark.parametrize("ev", list(SPLICE_DECLINED.values()), ids=list(SPLICE_DECLINED))
def test_text_is_read_but_not_replaced_in_place(impl: Impl, ev: bytes) -> None:
    assert impl.chunk_text(ev) == (0, "ab", -1, -1)


def test_escaped_keys_are_declined_by_c_only(impl: Impl) -> None:
    ev = b'data: {"choices":[{"delta":{"con\\u0074ent":"ab"}}]}\n\n'
    view = impl.chunk_text(ev)
    assert view == ((0, "ab", -1, -1) if impl.name == "py" else None)


def test_repeated_keys(impl: Impl) -> None:
    ev = b'data: {"choices":[{"delta":{"content":"a","content":"b"}}]}\n\n'
    # msgspec keeps the last; C declines. Neither splices (two "content" keys).
    assert impl.chunk_text(ev) == ((0, "b", -1, -1) if impl.name == "py" else None)


def test_wrong_argument_type(impl: Impl) -> None:
    with pytest.raises(TypeError):
        impl.chunk_text("data: {}\n\n")  # type: ignore[arg-type]


# -- splice_text, both implementations -------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "x", "é日本😀", "".join(map(chr, range(0x80))), '"\\', "\u2028\u2029"]
)
def test_splice_encodes_as_orjson(impl: Impl, text: str) -> None:
    ev = event(chunk({"content": "hello"}))
    view = impl.chunk_text(ev)
    assert view is not None
    out = impl.splice_text(ev, view[2], view[3], text)
    assert out == ev[: view[2]] + orjson.dumps(text) + ev[view[3] :]
    assert out is not None and orjson.loads(out[6:])["choices"][0]["delta"]["content"] == text


def test_splice_declines_surrogates(impl: Impl) -> None:
    assert impl.splice_text(b"data: x\n\n", 6, 7, "a\ud800") is None


@pytest.mark.parametrize(("start", "end"), [(-1, 2), (3, 2), (0, 10), (10, 10)])
def test_splice_checks_its_span(impl: Impl, start: int, end: int) -> None:
    with pytest.raises(ValueError):
        impl.splice_text(b"data: x\n\n", start, end, "y")


def test_splice_argument_types(impl: Impl) -> None:
    with pytest.raises(TypeError):
        impl.splice_text("data", 0, 0, "y")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        impl.splice_text(b"data", 0, 0, 5)  # type: ignore[arg-type]


# -- C against the reference -----------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
texts = st.text(max_size=12) | st.sampled_from(["content", '"content"', "\\u", "é", "\n"])
small_int = st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1)
odd_int = st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()


@st.composite
def deltas(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.none() | json_value)
    delta: dict[str, Any] = {}
    if draw(st.booleans()):
        delta["role"] = "assistant"
    if draw(st.integers(0, 4)):
        delta["content"] = draw(st.none() | texts | json_leaf)
    if draw(st.integers(0, 4)) == 0:
        delta["tool_calls"] = draw(
            st.none()
            | st.lists(st.fixed_dictionaries({"index": small_int, "function": json_value}))
        )
    if draw(st.integers(0, 5)) == 0:
        delta[draw(st.sampled_from(["refusal", "content\\", "x"]))] = draw(json_value)
    return delta


@st.composite
def choices(draw: st.DrawFn) -> Any:
    choice: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        choice["index"] = draw(small_int if draw(st.integers(0, 5)) else odd_int)
    if draw(st.integers(0, 9)):
        choice["delta"] = draw(deltas())
    if draw(st.booleans()):
        choice["finish_reason"] = draw(
            st.none() if draw(st.integers(0, 3)) else st.sampled_from(["stop", 1])
        )
    if draw(st.booleans()):
        choice["logprobs"] = draw(
            st.none() | st.fixed_dictionaries({"content": st.lists(json_value, max_size=2)})
        )
    return choice


@st.composite
def chunks(draw: st.DrawFn) -> Any:
    obj: dict[str, Any] = {}
    for key, plain, odd in (
        ("id", st.text(max_size=8), json_leaf),
        ("created", small_int, odd_int),
        ("model", st.text(max_size=8), json_leaf),
        ("object", st.just("chat.completion.chunk"), json_value),
    ):
        if draw(st.integers(0, 5)):
            obj[key] = draw(plain if draw(st.integers(0, 7)) else odd)
    n = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    obj["choices"] = [draw(choices()) for _ in range(n)]
    if draw(st.integers(0, 3)) == 0:
        obj[draw(st.text(max_size=6))] = draw(json_value)
    keys = list(obj)
    order = draw(st.permutations(keys))
    return {k: obj[k] for k in order}


def _python_json(ensure_ascii: bool, separators: tuple[str, str]) -> Callable[[Any], bytes]:
    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators).encode()

    return dumps


def encoded(obj: Any, encoder: Callable[[Any], bytes]) -> bytes:
    """The event, or the example skipped when orjson refuses it (ints beyond 64 bits)."""
    try:
        return event(obj, encoder)
    except TypeError:
        assume(False)
        raise


ENCODERS: list[Callable[[Any], bytes]] = [
    orjson.dumps,
    _python_json(True, (", ", ": ")),
    _python_json(False, (", ", ": ")),
    _python_json(False, (",", ":")),
    _python_json(False, (" , ", " : ")),
    _python_json(False, ("\t,", ":\t")),
]


@settings(max_examples=1500, deadline=None)
@given(obj=chunks(), encoder=st.sampled_from(ENCODERS))
def test_c_agrees_with_reference_on_generated_chunks(
    c_impl: Impl, obj: Any, encoder: Callable[[Any], bytes]
) -> None:
    ev = encoded(obj, encoder)
    expected = chunk_text_py(ev)
    got = c_impl.chunk_text(ev)
    assert got is None or got == expected


@settings(max_examples=1000, deadline=None)
@given(
    text=st.text(max_size=16),
    index=small_int,
    extra=st.dictionaries(st.sampled_from(["logprobs", "kt", "obfuscation"]), json_value),
    encoder=st.sampled_from(ENCODERS[:5]),
)
def test_c_reads_every_plain_chunk(
    c_impl: Impl, text: str, index: int, extra: dict[str, Any], encoder: Callable[[Any], bytes]
) -> None:
    """What the providers send — one choice, a text delta — never falls back."""
    ev = encoded(chunk({"content": text}, index=index, **extra), encoder)
    expected = chunk_text_py(ev)
    assert expected is not None
    assert c_impl.chunk_text(ev) == expected


SEED_EVENTS = [
    event(chunk({"content": "john.doe@exa"})),
    event(chunk({"content": 'q"\\\n日😀'}), _python_json(True, (", ", ": "))),
    b'data: {"x":[1,-2.5e3,true,false,null,{"a":"\\u00e9"}],'
    b'"choices":[{"delta":{"content":"a"}}]}\n\n',
]


@settings(max_examples=1500, deadline=None)
@given(
    seed=st.sampled_from(SEED_EVENTS),
    edits=st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 4), st.binary(max_size=3)), max_size=4
    ),
)
def test_c_agrees_with_reference_on_damaged_events(
    c_impl: Impl, seed: bytes, edits: list[tuple[int, int, bytes]]
) -> None:
    ev = seed
    for at, drop, insert in edits:
        at %= len(ev) + 1
        ev = ev[:at] + insert + ev[at + drop :]
    got = c_impl.chunk_text(ev)
    assert got is None or got == chunk_text_py(ev)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=64))
def test_c_survives_arbitrary_bytes(c_impl: Impl, body: bytes) -> None:
    for ev in (body, b"data: " + body + b"\n\n", b'data: {"choices":[{"delta":' + body + b"\n\n"):
        got = c_impl.chunk_text(ev)
        assert got is None or got == chunk_text_py(ev)


@settings(max_examples=1000, deadline=None)
@given(
    text=st.text(st.characters(codec=None, exclude_categories=()), max_size=20),
    ev=st.binary(max_size=40),
    a=st.integers(0, 40),
    b=st.integers(0, 40),
)
def test_splice_agrees_with_reference(c_impl: Impl, text: str, ev: bytes, a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    if end > len(ev):
        with pytest.raises(ValueError):
            c_impl.splice_text(ev, start, end, text)
        return
    assert c_impl.splice_text(ev, start, end, text) == splice_text_py(ev, start, end, text)
