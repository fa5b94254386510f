"""Differential fuzzing of the scanner: C extension against the pure-Python reference.

atheris instruments the reference (the C code mirrors its structure, so the
reference's coverage is a good guide to the C code's paths) and every input is
checked four ways: C == Python; the stream redactor fed the text in fuzzer-chosen
pieces equals whole-text redaction; the C normaliser and the Python fast path equal
the reference normaliser, offsets included; the streaming fast path (`chunk_text`,
`splice_text`) reads the input's bytes, as an event and spliced into a chunk, as
the reference does or declines them, and reads a chunk carrying the text exactly
as the reference does. Any difference or exception is a crash that atheris saves.

    python fuzz/fuzz_scan.py -max_total_time=20        # a bounded run (CI)
    python fuzz/fuzz_scan.py -runs=1 fuzz/crashes/*    # replay saved inputs
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ktproxy.scan", "ktproxy.wire.chunk_text"]):
    from ktproxy.scan import redactor as redactor_module
    from ktproxy.scan import reference
    from ktproxy.scan.kinds import ALL_KINDS, KINDS
    from ktproxy.scan.normalizer import normalize_py, normalize_with_offsets_py
    from ktproxy.wire.chunk_text import chunk_text_py, splice_text_py

import orjson

from ktproxy import _ktscan

SEEDS = (
    "john.doe@example.com +44 20 7946 0958 4111 1111 1111 1111 123-45-6789 "
    "192.168.1.20 2001:db8::1 DE89 3704 0044 0532 0130 00 sk-proj-"
)


CHUNK_HEAD = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":'
)
CHUNK_TAIL = b'},"logprobs":null,"finish_reason":null}]}\n\n'


def tag(value: str, kind: int) -> str:
    return f"[{KINDS[kind]}]"


def check_chunk_text(data: bytes, text: str) -> None:
    """C reads what the reference reads, or declines; never crashes, never differs."""
    for event in (
        b"data: " + data + b"\n\n",
        CHUNK_HEAD + data + CHUNK_TAIL,
        CHUNK_HEAD + orjson.dumps(text) + CHUNK_TAIL,
    ):
        got = _ktscan.chunk_text(event)
        expected = chunk_text_py(event)
        if got is not None and got != expected:
            raise AssertionError(f"chunk_text: C {got!r} != Python {expected!r} for {event!r}")
    if got is None:  # a plain chunk carrying the text
        raise AssertionError(f"chunk_text declined a plain chunk: {event!r}")
    start, end = (got[2], got[3]) if got[2] >= 0 else (len(CHUNK_HEAD), len(CHUNK_HEAD))
    if _ktscan.splice_text(event, start, end, text[::-1]) != splice_text_py(
        event, start, end, text[::-1]
    ):
        raise AssertionError(f"splice_text differs for {text!r}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mask = fdp.ConsumeIntInRange(0, ALL_KINDS)
    final = fdp.ConsumeBool()
    cuts = [fdp.ConsumeIntInRange(1, 12) for _ in range(fdp.ConsumeIntInRange(1, 6))]
    prefix_len = fdp.ConsumeIntInRange(0, len(SEEDS))
    text = SEEDS[:prefix_len] + fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    start = min(len(text), cuts[0] - 1)

    expected = reference.scan(text, mask, final, start)
    got = _ktscan.scan(text, mask, final, start)
    if got != expected:
        raise AssertionError(f"C {got!r} != Python {expected!r} for {text!r} {mask} {final}")

    redactor_module.scan = reference.scan  # the stream check runs on the reference
    r = redactor_module.StreamRedactor(mask, tag, max_hold=1 << 20)
    out, i, k = [], 0, 0
    while i < len(text):
        out.append(r.feed(text[i : i + cuts[k % len(cuts)]]))
        i += cuts[k % len(cuts)]
        k += 1
    out.append(r.flush())
    whole = redactor_module.redact_text(text, mask, tag)
    if "".join(out) != whole:
        raise AssertionError(f"stream {''.join(out)!r} != whole {whole!r} for {text!r}")

    check_chunk_text(data, text)

    reference_norm = normalize_with_offsets_py(text)
    if _ktscan.normalize_with_offsets(text) != reference_norm:
        raise AssertionError(f"C normaliser differs for {text!r}")
    if _ktscan.normalize(text) != reference_norm[0] or normalize_py(text) != reference_norm[0]:
        raise AssertionError(f"normalize differs from normalize_with_offsets for {text!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
