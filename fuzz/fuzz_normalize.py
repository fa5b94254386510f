"""Differential fuzzing of the normaliser: C `normalize`/`normalize_with_offsets`
against the pure-Python reference, on any `str` Python can hold.

`fuzz_scan.py` checks the normaliser on the text it builds for the scanner (valid
Unicode, at most a few KiB). This target goes where that one does not: lone and
paired surrogates, code points of every plane (unassigned ones, private use,
noncharacters), characters whose `str.lower` is longer than themselves (`İ`), the
characters the normaliser maps (leetspeak, confusables, zero-width, combining
marks), `str` subclasses, and texts long enough to take the C code's GIL-released
path (> 4 KiB), up to 64 Ki characters. The C results must equal the reference's,
offsets included, and an exception must be the reference's exception.

    python fuzz/fuzz_normalize.py -max_total_time=600 build/fuzz-corpus-normalize
    python fuzz/fuzz_normalize.py -runs=1 build/fuzz-crash-normalize-*    # replay
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["ktproxy.scan.normalizer"]):
    from ktproxy.scan.normalizer import CONFUSABLES, LEET, normalize_py, normalize_with_offsets_py

from ktproxy import _ktscan

# Characters the normaliser treats specially, and neighbours of its table edges.
ALPHABET = "".join(
    sorted(
        set(CONFUSABLES)
        | set(LEET)
        | set(
            "aZ iI \t\n\r\x0b\x0c\x00\x1f\x7f\x80\x85\xa0\xad .,-_!?'\"/\\|*~"
            "\u0130\u0131\u1e9e\u00df\u03a3\u03c2\u0345\u2126\u212a\u212b"  # odd case maps
            "\u200b\u200c\u200d\u2060\ufeff\u202e\u2066\u00ad\u034f\u180e"  # format chars
            "\u0301\u0308\u20dd\u0488\u3000\u2028\u2029\u1680\u2000\u205f"  # marks, spaces
            "\uff21\uff41\uff10\U0001d400\U0001d7ce\U0001f600\U000e0041\U000e007f"
            "\ud800\udbff\udc00\udfff\ue000\uf8ff\ufdd0\ufffe\uffff\U0010ffff\U000f0000"
        )
    )
)


class Text(str):
    """A `str` subclass: the C code must not assume an exact `str`."""


def make_text(fdp: atheris.FuzzedDataProvider) -> str:
    mode = fdp.ConsumeIntInRange(0, 4)
    size = fdp.ConsumeIntInRange(0, 64)
    if mode == 0:  # any code point, surrogates included
        text = "".join(chr(fdp.ConsumeIntInRange(0, 0x10FFFF)) for _ in range(size))
    elif mode == 1:  # the normaliser's interesting characters
        text = "".join(ALPHABET[fdp.ConsumeIntInRange(0, len(ALPHABET) - 1)] for _ in range(size))
    elif mode == 2:  # bytes as a server might decode them, lone surrogates kept
        text = fdp.ConsumeBytes(size).decode("utf-8", "surrogateescape")
    elif mode == 3:  # UTF-16 code units, unpaired halves included
        raw = fdp.ConsumeBytes(2 * size)
        text = raw[: len(raw) // 2 * 2].decode("utf-16-le", "surrogatepass")
    else:
        text = fdp.ConsumeUnicode(size)
    if fdp.ConsumeIntInRange(0, 31) == 31:  # a long text: the GIL-released loops
        text = (text or "x") * (fdp.ConsumeIntInRange(4096, 1 << 16) // max(1, len(text)) + 1)
    text += fdp.ConsumeUnicode(fdp.remaining_bytes())
    return Text(text) if fdp.ConsumeBool() else text


def outcome(fn: object, text: str) -> object:
    try:
        return fn(text)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return type(exc)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = make_text(fdp)
    expected = outcome(normalize_with_offsets_py, text)
    got = outcome(_ktscan.normalize_with_offsets, text)
    if got != expected:
        raise AssertionError(f"normalize_with_offsets: C {got!r} != Python {expected!r}\n{text!r}")
    plain = outcome(_ktscan.normalize, text)
    want = expected[0] if isinstance(expected, tuple) else expected
    if plain != want or outcome(normalize_py, text) != want:
        raise AssertionError(f"normalize: C {plain!r} != {want!r} for {text!r}")
    if isinstance(expected, tuple):
        out, offsets = expected
        if len(offsets) != len(out) or any(not 0 <= i < len(text) for i in offsets):
            raise AssertionError(f"offsets out of range for {text!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
