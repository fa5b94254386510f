"""Text normaliser for phrase matching: `normalize` and `normalize_with_offsets`.

Attackers dodge phrase lists with case (`IgNoRe`), zero-width characters
(`ig\u200bnore`), look-alike letters from other scripts (Cyrillic `о` for `o`),
leetspeak (`1gn0r3`), and punctuation or spacing (`i.g.n.o.r.e`, `ignore   all`).
`normalize` undoes all of these so one phrase list matches every variant:

1. case folded (`str.lower` per character);
2. zero-width, bidi-control and other format/control characters dropped;
3. confusable letters mapped to their ASCII look-alike, leetspeak digits and
   symbols mapped to letters;
4. every run of whitespace and punctuation collapsed to one space, and a run of
   three or more single letters separated by such runs joined (`i g n o r e`).

`normalize_with_offsets` also returns, for each output character, the index of the
input character it came from, so findings can point into the original text.

Both are the C extension's (`ktproxy._ktscan`, ext/normalize.c) when it is built and
`KTPROXY_NO_EXTENSIONS` is not set, else the pure-Python reference below,
`normalize_py` and `normalize_with_offsets_py`, which is their specification: the
tests check that both give the same results, offsets included.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from ktproxy.scan import NO_EXTENSIONS

# Look-alike letters of other scripts -> ASCII (lower case; applied after folding).
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "һ": "h",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s",
    # Latin variants
    "ı": "i", "ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "ð": "d", "þ": "th",
    "ſ": "s",
}  # fmt: skip

# Leetspeak and symbol substitutions.
LEET: dict[str, str] = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s",
}  # fmt: skip


def _char_class(c: str) -> int:
    """0: drop, 1: separator, 2: letter/digit to keep (after mapping)."""
    if c in LEET:
        return 2
    if c.isalnum():
        return 2
    cat = unicodedata.category(c)
    if cat in ("Cf", "Cc", "Cs", "Co", "Cn", "Mn", "Me") and not c.isspace():
        return 0
    return 1


def _fold(c: str) -> str:
    """Case-fold, strip accents and map confusables and leetspeak for one character."""
    low = c.lower()
    if low in LEET:
        return LEET[low]
    if low in CONFUSABLES:
        return CONFUSABLES[low]
    if low.isascii():
        return low
    base = unicodedata.normalize("NFKD", low)
    stripped = "".join(ch for ch in base if not unicodedata.combining(ch))
    if stripped and stripped.isascii():
        return stripped.lower()
    return CONFUSABLES.get(stripped, stripped) if stripped else low


def normalize_with_offsets_py(text: str, /) -> tuple[str, list[int]]:
    """The normalised text and, per output character, its source index in `text`."""
    out: list[str] = []
    src: list[int] = []
    pending_space = -1
    for i, c in enumerate(text):
        kind = _char_class(c)
        if kind == 0:
            continue
        if kind == 1:
            if out and pending_space < 0:
                pending_space = i
            continue
        if pending_space >= 0:
            out.append(" ")
            src.append(pending_space)
            pending_space = -1
        for piece in _fold(c):
            out.append(piece)
            src.append(i)
    return _join_spelled(out, src)


def _join_spelled(out: list[str], src: list[int]) -> tuple[str, list[int]]:
    """Join runs of >= 3 single letters separated by single spaces (`i g n o r e`)."""
    text = "".join(out)
    if " " not in text:
        return text, src
    words = text.split(" ")
    keep_out: list[str] = []
    keep_src: list[int] = []
    pos = 0
    run: list[tuple[int, str]] = []  # (position in text, letter) of a single-letter run

    def close_run() -> None:
        if len(run) >= 3:
            if keep_out:
                keep_out.append(" ")
                keep_src.append(src[run[0][0] - 1] if run[0][0] > 0 else src[run[0][0]])
            for p, letter in run:
                keep_out.append(letter)
                keep_src.append(src[p])
        else:
            for p, letter in run:
                if keep_out:
                    keep_out.append(" ")
                    keep_src.append(src[p - 1] if p > 0 else src[p])
                keep_out.append(letter)
                keep_src.append(src[p])
        run.clear()

    for word in words:
        if len(word) == 1:
            run.append((pos, word))
        else:
            close_run()
            if word:
                if keep_out:
                    keep_out.append(" ")
                    keep_src.append(src[pos - 1] if pos > 0 else src[pos])
                keep_out.extend(word)
                keep_src.extend(src[pos : pos + len(word)])
        pos += len(word) + 1
    close_run()
    return "".join(keep_out), keep_src


def _ascii_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(128):
        c = chr(code)
        kind = _char_class(c)
        table[code] = "" if kind == 0 else " " if kind == 1 else _fold(c)
    return table


_ASCII = _ascii_table()
_SPELLED = re.compile(r"(?<![^ ])(?:[^ ] ){2,}[^ ](?![^ ])")


def normalize_py(text: str, /) -> str:
    """The normalised text (see the module docstring).

    ASCII text (most traffic) takes a fast path of one `str.translate` and two
    string passes; it gives exactly what `normalize_with_offsets_py` gives.
    """
    if not text.isascii():
        return normalize_with_offsets_py(text)[0]
    out = " ".join(text.translate(_ASCII).split())
    if " " in out and _SPELLED.search(out):
        out = _SPELLED.sub(lambda m: m.group(0).replace(" ", ""), out)
    return out


IMPLEMENTATION: str
"""`c` when `normalize` and `normalize_with_offsets` are the extension's, else `py`."""

if TYPE_CHECKING:
    normalize = normalize_py
    normalize_with_offsets = normalize_with_offsets_py
    IMPLEMENTATION = "py"
elif NO_EXTENSIONS:
    normalize = normalize_py
    normalize_with_offsets = normalize_with_offsets_py
    IMPLEMENTATION = "py"
else:
    try:
        from ktproxy._ktscan import normalize, normalize_with_offsets
    except ImportError:  # importing ktproxy.scan has already warned about it
        normalize = normalize_py
        normalize_with_offsets = normalize_with_offsets_py
        IMPLEMENTATION = "py"
    else:
        IMPLEMENTATION = "c"
