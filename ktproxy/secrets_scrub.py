"""Scrubbing keys out of what an upstream sends back before a client sees it.

A hostile or merely careless upstream may echo the request's credentials in an error
body ("Incorrect API key provided: sk-gatew****6789", a debug dump of the headers) or
in a response header the gateway passes on (`x-request-id`). The upstream key is the
gateway's secret, not the client's, so such echoes must not reach the client.

`scrub_secrets` replaces, in a body, every token that contains any 8-character piece
of a key (so masked and truncated forms go too; a piece that reads like an
ordinary lower-case word counts only as the key's start), the key's base64 forms (an echoed
`Authorization: Basic ...`), and the key itself; `scrub_headers` does the same to
header values. Both run on error bodies and headers only, never on the per-chunk
path, and return their input unchanged (the same object) when there is nothing to do.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Mapping

import ahocorasick

REPLACEMENT = "[REDACTED]"

# Pieces of a key this long are treated as the key: OpenAI's own 401 message shows the
# first 8 characters and the last 4 of the key it got.
MIN_PIECE = 8

# What a token around an echoed piece may be made of: key alphabets, the `*` of masked
# keys, and base64's `+/=`. Only runs of at least `MIN_PIECE` of these can hold a piece.
_TOKEN_RUN = re.compile(rb"[A-Za-z0-9_\-.*+/=:]{%d,}" % MIN_PIECE)


# A piece that is only lower-case letters and punctuation ("upstream", "gateway-") is
# as likely an ordinary word of an error message as a piece of a key; such pieces
# count only as a key's first characters (the part a masked echo shows: "sk-gatew").
_WORDLIKE = re.compile(rb"[a-z_\-.:/+=*]+")


def secret_forms(keys: Iterable[str | None]) -> list[bytes]:
    """Every byte string whose presence means a key leaked: each key, its base64 forms
    (alone and as HTTP Basic credentials) and every `MIN_PIECE`-long piece of each."""
    forms: set[bytes] = set()
    for key in keys:
        if not key:
            continue
        raw = key.encode("utf-8")
        whole = [raw]
        for plain in (raw, b":" + raw, raw + b":"):
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                whole.append(encode(plain).rstrip(b"="))
        for form in whole:
            if len(form) <= MIN_PIECE:
                forms.add(form)
            else:
                forms.update(form[i : i + MIN_PIECE] for i in range(len(form) - MIN_PIECE + 1))
    return sorted(forms, key=len, reverse=True)


@functools.lru_cache(maxsize=64)
def _forms(keys: tuple[str, ...]) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
    """`(pieces, literals)` for `keys`, built once per set of keys (the configured ones
    repeat on every request): the `MIN_PIECE`-long pieces, looked up per token, and
    the short keys and those with characters no token holds, replaced wherever they are."""
    prefixes = {key.encode("utf-8")[:MIN_PIECE] for key in keys}
    pieces = frozenset(
        f
        for f in secret_forms(keys)
        if len(f) == MIN_PIECE and (f in prefixes or not _WORDLIKE.fullmatch(f))
    )
    literals = tuple(
        raw
        for key in keys
        if len(raw := key.encode("utf-8")) < MIN_PIECE or not _TOKEN_RUN.fullmatch(raw)
    )
    return pieces, literals


def scrub_secrets(body: bytes, keys: Iterable[str | None]) -> bytes:
    """`body` with every token that carries a key, or a piece or base64 form of one,
    replaced by `[REDACTED]`; `body` itself when it holds none. JSON stays valid: the
    tokens are made of characters that need no escaping, and the replacement too."""
    pieces, literals = _forms(tuple(sorted({key for key in keys if key})))
    found = False

    def token(match: re.Match[bytes]) -> bytes:
        nonlocal found
        tok = match.group()
        for i in range(len(tok) - MIN_PIECE + 1):
            if tok[i : i + MIN_PIECE] in pieces:
                found = True
                return REPLACEMENT.encode()
        return tok

    scrubbed = _TOKEN_RUN.sub(token, body) if pieces else body
    for literal in literals:
        if literal in scrubbed:
            found = True
            scrubbed = scrubbed.replace(literal, REPLACEMENT.encode())
    return scrubbed if found else body


@functools.lru_cache(maxsize=64)
def _finder(keys: tuple[str, ...]) -> ahocorasick.Automaton | None:
    """An automaton of every secret form of `keys`, so that the headers of every
    response (almost always clean) cost one C-level scan per value, not a Python loop."""
    pieces, literals = _forms(keys)
    if not pieces and not literals:
        return None
    automaton = ahocorasick.Automaton()
    for form in (*pieces, *literals):
        text = form.decode("utf-8", "surrogateescape")
        automaton.add_word(text, text)
    automaton.make_automaton()
    return automaton


def scrub_headers(headers: Mapping[str, str], keys: Iterable[str | None]) -> Mapping[str, str]:
    """`headers` with `scrub_secrets` applied to every value that holds a secret form;
    `headers` itself when none does (the usual case, on every response)."""
    wanted = tuple(sorted({key for key in keys if key}))
    finder = _finder(wanted) if wanted else None
    if finder is None:
        return headers
    out: dict[str, str] | None = None
    for name, value in headers.items():
        if next(finder.iter(value), None) is None:
            continue
        raw = value.encode("utf-8", "surrogateescape")
        scrubbed = scrub_secrets(raw, wanted).decode("utf-8", "surrogateescape")
        if out is None:
            out = dict(headers)
        out[name] = scrubbed
    return headers if out is None else out
