"""Differential fuzzing of the streaming fast path: C `chunk_text`/`splice_text`
against the pure-Python reference (ktproxy/wire/chunk_text.py).

`fuzz_scan.py` feeds `chunk_text` the raw input and one well-formed chunk. This
target builds chunk events the way upstreams write them and then breaks them:
fields in any order, unknown fields, nested values, whitespace, escapes (`\\uXXXX`,
surrogate pairs, lone surrogates, escaped keys), duplicate keys, integers of any
length and sign, floats, nulls, CR/LF in odd places, invalid UTF-8, and truncation
at any byte. `chunk_text` may decline (None) where the reference reads a view but
must never return a different view nor raise; `splice_text` must equal the
reference for any offsets and any text, surrogates included (None), and raise the
same exception for offsets out of range.

    python fuzz/fuzz_stream.py -max_total_time=600 build/fuzz-corpus-stream
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ktproxy.wire.chunk_text"]):
    from ktproxy.wire.chunk_text import chunk_text_py, splice_text_py

from ktproxy import _ktscan

PIECES = (
    b'"content"', b'"\\u0063ontent"', b'"role"', b'"assistant"', b'"delta"', b'"choices"',
    b'"index"', b'"finish_reason"', b'"tool_calls"', b'"logprobs"', b'"refusal"', b'"id"',
    b"null", b"true", b"false", b"0", b"-0", b"1", b"-1", b"1e3", b"0.5", b"12345678901234567890",
    b"9223372036854775807", b"-9223372036854775809", b"{}", b"[]", b"{", b"}", b"[", b"]",
    b":", b",", b" ", b"\t", b"\n", b"\r", b'"', b"\\", b'\\"', b"\\n", b"\\u00e9",
    b"\\ud83d\\ude00", b"\\ud800", b"\\udfff", b"\\u0000", b"\\x", b"\xc3\xa9", b"\xe2\x82",
    b"\xff", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xc0\xaf", b"data: ", b"\n\n",
)  # fmt: skip

HEAD = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{'
TAIL = b'"logprobs":null,"finish_reason":null}]}\n\n'


def make_event(fdp: atheris.FuzzedDataProvider) -> bytes:
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # raw bytes
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    fields = []
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        if fdp.ConsumeBool():
            fields.append(PIECES[fdp.ConsumeIntInRange(0, len(PIECES) - 1)])
        else:
            fields.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8)))
    body = b"".join(fields)
    if mode == 1:  # a delta whose content is built from pieces
        event = HEAD + b'"index":0,"delta":{"content":"' + body + b'"},' + TAIL
    elif mode == 2:  # a choice built from pieces
        event = HEAD + body + TAIL
    else:  # a whole data line built from pieces
        event = b"data: " + body + b"\n\n"
    if fdp.ConsumeIntInRange(0, 7) == 7:
        event = event[: fdp.ConsumeIntInRange(0, len(event))]
    return event


def outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return type(exc)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    event = make_event(fdp)
    expected = outcome(chunk_text_py, event)
    got = outcome(_ktscan.chunk_text, event)
    if isinstance(got, type) or (got is not None and got != expected):
        raise AssertionError(f"chunk_text: C {got!r} != Python {expected!r} for {event!r}")

    start = fdp.ConsumeIntInRange(-2, len(event) + 2)
    end = fdp.ConsumeIntInRange(-2, len(event) + 2)
    if isinstance(expected, tuple) and expected[2] >= 0 and fdp.ConsumeBool():
        start, end = expected[2], expected[3]
    size = fdp.ConsumeIntInRange(0, 32)
    if fdp.ConsumeBool():
        text = "".join(chr(fdp.ConsumeIntInRange(0, 0x10FFFF)) for _ in range(size))
    else:
        text = fdp.ConsumeUnicode(size)
    want = outcome(splice_text_py, event, start, end, text)
    spliced = outcome(_ktscan.splice_text, event, start, end, text)
    if spliced != want:
        raise AssertionError(f"splice_text: C {spliced!r} != {want!r} for {event!r} {start} {end}")
    if isinstance(want, bytes) and isinstance(expected, tuple) and (start, end) == expected[2:]:
        again = outcome(chunk_text_py, want)  # splicing the text back reads back the text
        if isinstance(again, tuple) and again[1] != text:
            raise AssertionError(f"splice then read: {again!r} for {text!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
