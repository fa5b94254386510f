"""The C scanner, built from `ext/ktscan.c`; `ktproxy.scan.reference` is its specification.

Use it through `ktproxy.scan`, which falls back to the reference when the extension
is not built or `KTPROXY_NO_EXTENSIONS=1`.
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
