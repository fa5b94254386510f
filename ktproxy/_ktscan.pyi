"""The C scanner and normaliser, built from `ext/*.c`.

`ktproxy.scan.reference` is the specification of `scan`, and the pure-Python functions
of `ktproxy.scan.normalizer` are that of `normalize` and `normalize_with_offsets`. Use
them through `ktproxy.scan` and `ktproxy.scan.normalizer`, which fall back to the
Python ones when the extension is not built or `KTPROXY_NO_EXTENSIONS=1`.
"""

KINDS: tuple[str, ...]
"""Kind names by number, as compiled in; equal to `ktproxy.scan.kinds.KINDS`."""

def scan(
    text: str, mask: int, final: bool = True, start: int = 0
) -> tuple[list[tuple[int, int, int]], int]:
    """Find the values of the kinds selected by `mask` in `text`.

    Returns `(matches, safe_end)` exactly as `ktproxy.scan.reference.scan` does:
    `matches` are non-overlapping `(start, end, kind)` triples in order, with offsets
    that are `str` indices (code points) and `kind` an index into `KINDS`; with
    `final` false, text after `safe_end` may still become (part of) a value when more
    text arrives, and no match ends after it; with `final`, `safe_end == len(text)`.
    Scanning begins at `start`; the character before it is context only.

    Arguments, positional or by keyword:

    - `text` must be a `str` (a subclass is fine), else `TypeError`;
    - `mask` is any integer (`__index__`); only bits `0 .. len(KINDS) - 1` are read,
      in two's complement for a negative one, like `mask >> kind & 1`;
    - `final` is taken for its truth value;
    - `start` is an integer: negative raises `ValueError` (the reference does not
      check it), larger than `len(text)` is taken as `len(text)` (the reference
      then also returns `([], len(text))`).

    Texts longer than 4 KiB are scanned with the GIL released.
    """

def normalize(text: str, /) -> str:
    """The text normalised for phrase matching, exactly as
    `ktproxy.scan.normalizer.normalize_py` gives it.

    `text` must be a `str` (a subclass is fine), else `TypeError`. ASCII text is
    handled in C alone (with the GIL released above 4 KiB); for other characters the
    C code asks `unicodedata` and `str.lower` what the reference asks them.
    """

def normalize_with_offsets(text: str, /) -> tuple[str, list[int]]:
    """`(normalize(text), offsets)`, exactly as
    `ktproxy.scan.normalizer.normalize_with_offsets_py` gives them: `offsets[i]` is the
    index in `text` of the character that output character `i` comes from.
    """

def chunk_text(event: bytes, /) -> tuple[int, str, int, int] | None:
    """The text delta of a plain one-choice chunk event, as
    `ktproxy.wire.chunk_text.chunk_text_py` gives it, or None.

    Returns `(index, text, start, end)`: the choice index, the delta's text ("" when it
    has none) and, when `start >= 0`, the span of the text's JSON string in `event`
    that `splice_text` may replace. Stricter than the reference: it may return None
    where the reference returns a view, never the reverse, and otherwise returns the
    same view. `event` must be `bytes` (a subclass is fine), else `TypeError`; any
    content is safe: invalid UTF-8 or truncated JSON gives None.
    """

def splice_text(event: bytes, start: int, end: int, text: str, /) -> bytes | None:
    """`event[:start] + orjson.dumps(text) + event[end:]`, exactly as
    `ktproxy.wire.chunk_text.splice_text_py` gives it: None when `text` holds a
    surrogate (orjson refuses those), `ValueError` unless
    `0 <= start <= end <= len(event)`, `TypeError` for arguments of other types.
    """
