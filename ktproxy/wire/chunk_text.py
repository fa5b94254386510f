"""The streaming fast path: one chunk event's text delta, read and replaced in place.

Nearly every event of a streamed chat completion is one `data:` line carrying one
choice with a text delta and nothing else. `chunk_text` recognises exactly those
events and returns what the stream rewriter needs from them — the choice index,
the text, and where the text's JSON string sits in the event bytes — and None for
anything else (the rewriter's general path handles those). `splice_text` writes
the event back with another text in that place, every other byte kept.

`chunk_text_py` and `splice_text_py` below are the specification. The C extension
(`ktproxy._ktscan`, ext/stream.c) has both, and is used unless
`KTPROXY_NO_EXTENSIONS` is set; its `chunk_text` may return None where the
reference returns a view (it declines what it does not parse itself, such as
escaped keys or integers beyond 18 digits), never the other way round, and when
both return a view it is the same view — the tests check this. Either way the
rewriter's output is the same, because its general path treats such an event
exactly as the fast path does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ktproxy.scan import NO_EXTENSIONS
from ktproxy.wire.openai import chunk_decoder

ChunkText = tuple[int, str, int, int]
"""(choice index, delta text, start, end): `event[start:end]` is the text's JSON
string, quotes included, when start >= 0; (-1, -1) when it cannot be replaced in
place. The text is "" when the delta has none (then start and end are -1)."""

_KEY = b'"content"'


def content_span(data: bytes, text: str) -> tuple[int, int]:
    """Where `text`'s JSON string is in `data`, a chunk already decoded to have the
    one delta content `text` (non-empty); (-1, -1) when it cannot be told for sure.

    Found by bytes, not by parsing: when `data` holds no `\\u` escape, a key that
    decodes to `content` is written `"content"`; when that byte string occurs only
    once it is therefore the delta's key, and its value is `text`'s string. That
    string is replaced in place only if it is written the way orjson writes it
    (one space after the colon at most), so the result equals a re-encoding.
    """
    if data.find(b"\\") >= 0 and data.find(b"\\u") >= 0:  # one-byte find is memchr
        return -1, -1
    key = data.find(_KEY)
    if key < 0 or data.find(_KEY, key + len(_KEY)) >= 0:
        return -1, -1
    value = key + len(_KEY)
    if data[value : value + 1] != b":":
        return -1, -1
    value += 1
    if data[value : value + 1] == b" ":
        value += 1
    encoded = orjson.dumps(text)
    if not data.startswith(encoded, value):
        return -1, -1
    return value, value + len(encoded)


def chunk_text_py(event: bytes) -> ChunkText | None:
    """The text delta of a plain one-choice chunk event, else None.

    `event` must be one `data: <json>` line ending in a blank line, holding no CR
    and no other LF; the JSON must decode as a `ChunkView` with exactly one choice
    whose `delta` is an object, without `tool_calls` (or with null) and with no
    `finish_reason` (or null). Offsets are into `event`.
    """
    if not isinstance(event, bytes):
        raise TypeError(f"chunk_text() argument must be bytes, not {type(event).__name__}")
    if not (event.startswith(b"data: ") and event.endswith(b"\n\n")):
        return None
    if event.find(b"\n") != len(event) - 2 or event.find(b"\r") >= 0:
        return None
    data = event[6:-2]
    try:
        chunk = chunk_decoder.decode(data)
    except (ValueError, RecursionError):  # msgspec's DecodeError, UnicodeDecodeError
        return None
    if len(chunk.choices) != 1:
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    if delta is None or delta.tool_calls is not None or choice.finish_reason is not None:
        return None
    text = delta.content
    if not text:
        return choice.index, "", -1, -1
    start, end = content_span(data, text)
    if start < 0:
        return choice.index, text, -1, -1
    return choice.index, text, start + 6, end + 6


def splice_text_py(event: bytes, start: int, end: int, text: str) -> bytes | None:
    """`event` with `event[start:end]` replaced by `text` as orjson encodes it, or
    None when orjson cannot encode it (lone surrogates); ValueError unless
    `0 <= start <= end <= len(event)`."""
    if not isinstance(event, bytes) or not isinstance(text, str):
        raise TypeError("splice_text() takes bytes, int, int, str")
    if not 0 <= start <= end <= len(event):
        raise ValueError("splice_text: need 0 <= start <= end <= len(event)")
    try:
        encoded = orjson.dumps(text)
    except TypeError:  # orjson.JSONEncodeError
        return None
    return event[:start] + encoded + event[end:]


IMPLEMENTATION: str
"""`c` when `chunk_text` and `splice_text` are the extension's, else `py`."""

if TYPE_CHECKING:
    chunk_text = chunk_text_py
    splice_text = splice_text_py
    IMPLEMENTATION = "py"
elif NO_EXTENSIONS:
    chunk_text = chunk_text_py
    splice_text = splice_text_py
    IMPLEMENTATION = "py"
else:
    try:
        from ktproxy._ktscan import chunk_text, splice_text
    except ImportError:  # importing ktproxy.scan has already warned about it
        chunk_text = chunk_text_py
        splice_text = splice_text_py
        IMPLEMENTATION = "py"
    else:
        IMPLEMENTATION = "c"

__all__ = [
    "IMPLEMENTATION",
    "ChunkText",
    "chunk_text",
    "chunk_text_py",
    "content_span",
    "splice_text",
    "splice_text_py",
]
