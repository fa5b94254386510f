"""Redaction of whole texts and of streamed text with a bounded hold-back.

A value can straddle chunks (`"john.d"`, `"oe@exa"`, `"mple.com"`). `StreamRedactor`
keeps the tail the scanner says is not final yet and emits everything before it,
redacted. The tail is bounded (`max_hold` characters): when it grows past that, the
tail is scanned as final; a secret that is still running then (a long JWT, a PEM
block) is replaced at once and the rest of it is swallowed as it arrives, so no byte
of it ever leaves. Invariant, property-tested for arbitrary chunkings: the
concatenated output equals `redact_text` of the whole input.
"""

from __future__ import annotations

from collections.abc import Callable

from ktproxy.scan import scan
from ktproxy.scan.kinds import KIND_INDEX

Replace = Callable[[str, int], str]
"""Maps (value, kind) to its replacement text."""

# Values that can run on without bound: once forced out, the rest is swallowed.
_PEM = KIND_INDEX["PRIVATE_KEY"]
_TOKEN_KINDS = frozenset(
    KIND_INDEX[k]
    for k in (
        "OPENAI_KEY",
        "ANTHROPIC_KEY",
        "GITHUB_TOKEN",
        "GITLAB_TOKEN",
        "SLACK_TOKEN",
        "JWT",
    )
)
_PEM_END = "-----END "


def _token_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_-.")


_SECRET_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sk-ant-", "ANTHROPIC_KEY"),
    ("sk-", "OPENAI_KEY"),
    ("github_pat_", "GITHUB_TOKEN"),
    ("ghp_", "GITHUB_TOKEN"),
    ("gho_", "GITHUB_TOKEN"),
    ("ghu_", "GITHUB_TOKEN"),
    ("ghs_", "GITHUB_TOKEN"),
    ("ghr_", "GITHUB_TOKEN"),
    ("glpat-", "GITLAB_TOKEN"),
    ("xox", "SLACK_TOKEN"),
    ("eyJ", "JWT"),
)


def _running_secret(buf: str, begin: int, mask: int) -> tuple[int, int]:
    """(start, kind) of a secret-looking token run reaching the end of `buf`, or (-1, -1)."""
    run = len(buf)
    while run > begin and _token_char(buf[run - 1]):
        run -= 1
    if run > 0 and buf[run - 1].isascii() and buf[run - 1].isalnum():
        return -1, -1
    for prefix, name in _SECRET_PREFIXES:
        kind = KIND_INDEX[name]
        if buf.startswith(prefix, run) and mask >> kind & 1:
            return run, kind
    return -1, -1


def render(
    text: str, begin: int, end: int, matches: list[tuple[int, int, int]], replace: Replace
) -> str:
    """`text[begin:end]` with every match replaced."""
    out: list[str] = []
    pos = begin
    for start, stop, kind in matches:
        out.append(text[pos:start])
        out.append(replace(text[start:stop], kind))
        pos = stop
    out.append(text[pos:end])
    return "".join(out)


def redact_text(text: str, mask: int, replace: Replace) -> str:
    """Every value of the kinds in `mask` replaced (a whole, final text)."""
    matches, _ = scan(text, mask, True, 0)
    return render(text, 0, len(text), matches, replace) if matches else text


class StreamRedactor:
    """Redacts one stream of text fed piece by piece (a `StreamFilter`)."""

    __slots__ = ("_mask", "_replace", "_max_hold", "_pending", "_ctx", "_swallow", "_tail")

    def __init__(self, mask: int, replace: Replace, max_hold: int = 256) -> None:
        self._mask = mask
        self._replace = replace
        self._max_hold = max_hold
        self._pending = ""  # text received, not yet emitted
        self._ctx = ""  # the last emitted character (word-boundary context)
        self._swallow = -1  # kind of a forced-out value whose rest is being dropped
        self._tail = ""  # with _swallow == PEM: last characters, to find a split END line

    @property
    def held(self) -> int:
        """Characters currently held back."""
        return len(self._pending)

    def feed(self, text: str) -> str:
        """Text that may be sent now, redacted; the undecided tail is kept."""
        if self._swallow >= 0:
            text = self._swallowed(text)
            if not text:
                return ""
        buf = self._ctx + self._pending + text
        begin = len(self._ctx)
        matches, safe = scan(buf, self._mask, False, begin)
        if len(buf) - safe > self._max_hold:
            return self._forced(buf, begin)
        if safe <= begin:
            self._pending = buf[begin:]
            return ""
        out = render(buf, begin, safe, matches, self._replace) if matches else buf[begin:safe]
        self._pending = buf[safe:]
        self._ctx = buf[safe - 1]
        return out

    def flush(self) -> str:
        """Everything still held, redacted as final (end of the text)."""
        buf = self._ctx + self._pending
        begin = len(self._ctx)
        self._pending = ""
        self._swallow = -1
        if len(buf) == begin:
            return ""
        matches, _ = scan(buf, self._mask, True, begin)
        self._ctx = buf[-1]
        return render(buf, begin, len(buf), matches, self._replace) if matches else buf[begin:]

    def _forced(self, buf: str, begin: int) -> str:
        """The tail outgrew `max_hold`: decide it now, as if the text ended here."""
        self._pending = ""
        self._ctx = buf[-1]
        run, kind = _running_secret(buf, begin, self._mask)
        if kind >= 0:
            # A secret still arriving: replace what came so far, swallow the rest.
            matches, _ = scan(buf[:run], self._mask, True, begin)
            self._swallow = kind
            head = render(buf, begin, run, matches, self._replace)
            return head + self._replace(buf[run:], kind)
        matches, _ = scan(buf, self._mask, True, begin)
        if matches and matches[-1][1] == len(buf):
            kind = matches[-1][2]
            if kind == _PEM and _PEM_END not in buf[matches[-1][0] :]:
                self._swallow, self._tail = kind, ""
            elif kind in _TOKEN_KINDS:
                self._swallow = kind
        return render(buf, begin, len(buf), matches, self._replace)

    def _swallowed(self, text: str) -> str:
        """Drop the rest of a forced-out value; return what follows it."""
        if self._swallow == _PEM:
            joined = self._tail + text
            at = joined.find(_PEM_END)
            close = joined.find("-----", at + len(_PEM_END)) if at >= 0 else -1
            if close < 0:
                self._tail = joined[-64:]
                return ""
            self._swallow = -1
            self._tail = ""
            return joined[close + 5 :]
        for i, c in enumerate(text):
            if not _token_char(c):
                self._swallow = -1
                return text[i:]
        return ""
