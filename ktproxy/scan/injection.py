"""Prompt-injection detector: phrase automata over normalised text, plus the signals
phrase lists miss.

- Phrases (`injection_phrases`) are matched with one pyahocorasick automaton over
  `normalize(text)`, at word boundaries for Latin-script phrases.
- Role and delimiter injection (`### system:`, fake `<|im_start|>` turns, `[INST]`,
  `<<SYS>>`, `<system>` tags, a line opening with `system:`) by patterns on the
  original text, where the punctuation still is.
- Payloads hidden in base64, hex or rot13 are decoded and scanned again, bounded in
  count, size and depth.

A finding carries its family, rule, weight and span (indices into the original
text; for a decoded payload, the span of the encoded run). A text is an attack when
the sum over distinct rules of their strongest weight reaches the threshold.
The automaton is built once per config and never mutated afterwards.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from ktproxy.scan.injection_phrases import Phrase, all_phrases
from ktproxy.scan.injection_rules import ANCHORS, RULES
from ktproxy.scan.normalizer import normalize, normalize_with_offsets


@dataclass(frozen=True, slots=True)
class Finding:
    """One signal: what it is, how strong, and where."""

    family: str
    rule: str
    weight: float
    start: int
    end: int
    source: str = "text"  # text, or the encoding it was hidden in (base64, hex, rot13, ...)


# (pattern, rule, weight, a literal every match contains: cheap to test first)
_ROLE_PATTERNS: tuple[tuple[re.Pattern[str], str, float, str], ...] = (
    (re.compile(r"(?im)^[ \t]*#{2,}[ \t]*(system|assistant|developer|instructions?)\b[ \t]*:?"),
     "markdown_role_header", 1.0, "##"),
    (re.compile(r"<\|\s*(im_start|im_end|system|assistant|endoftext|eot_id|start_header_id|"
                r"end_header_id|begin_of_text)\s*\|>", re.I), "chat_template_token", 1.0, "|"),
    (re.compile(r"\[/?\s*(INST|SYS|SYSTEM)\s*\]", re.I), "inst_tag", 1.0, "["),
    (re.compile(r"<<\s*/?\s*SYS\s*>>", re.I), "llama_sys_tag", 1.0, "<<"),
    (re.compile(r"</?\s*(system|system_prompt|system-prompt|instructions|developer)\s*>", re.I),
     "xml_role_tag", 1.0, "<"),
    (re.compile(r"(?im)^[ \t]*(system|assistant)[ \t]*:[ \t]*\S"), "role_prefix_line", 0.6, ":"),
    (re.compile(r"(?im)^[ \t]*[-=*#_~]{3,}[ \t]*\n[ \t]*(system|assistant|developer)[ \t]*:"),
     "separator_then_role", 1.0, "\n"),
    (re.compile(r"(?i)\b(end|close)\s+of\s+(the\s+)?(user\s+)?(input|message|prompt)\s*[\]>\-=#*]"),
     "fake_delimiter", 1.0, "of"),
)  # fmt: skip

# Signals that need the raw text (normalising turns `delete_file` into two words).
_RAW_RULES: tuple[tuple[re.Pattern[str], str, str, float, str], ...] = (
    (re.compile(r"(?i)\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?"
                r"[a-z][a-z0-9]*_[a-z0-9_]+(?:\s+(?:tool|function))?\b"),
     "indirect_instruction", "tool_call_instruction", 0.6, "_"),
)  # fmt: skip

_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,6}(?![A-Za-z0-9+/=_-])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){10,}(?![0-9A-Fa-f])")

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_URL_RUN = re.compile(r"(?:[^\s%]*%[0-9A-Fa-f]{2}){3,}[^\s%]*")
_ESCAPE_RUN = re.compile(r"(?:\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}){4,}")
_BINARY_RUN = re.compile(r"(?<![01])(?:[01]{8}[ ]?){4,}(?![01])")
_BASE32 = re.compile(r"[A-Z2-7]{16,}=*")

MAX_PAYLOADS = 8  # encoded runs examined per text
MAX_DECODED = 16 * 1024  # characters of decoded text examined per text
MAX_DEPTH = 2  # decode inside decoded text at most this deep


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz ")


def _plain(phrase: str) -> bool:
    """Already in normal form: lower-case ASCII letters and single inner spaces."""
    return set(phrase) <= _PLAIN and "  " not in phrase and phrase.strip() == phrase


def _is_boundary(text: str, i: int) -> bool:
    return i < 0 or i >= len(text) or not text[i].isalnum()


class InjectionDetector:
    """Finds injection signals in texts; immutable once built."""

    def __init__(
        self,
        extra_phrases: Iterable[str] = (),
        allow_phrases: Iterable[str] = (),
        threshold: float = 1.0,
        decode: bool = True,
    ) -> None:
        self.threshold = threshold
        self.decode = decode
        phrases: list[Phrase] = all_phrases()
        phrases += [(p, "custom", "extra_phrase", 1.0) for p in extra_phrases]
        self._automaton = ahocorasick.Automaton()
        for phrase, family, rule, weight in phrases:
            key = phrase if _plain(phrase) else normalize(phrase)
            if not key:
                continue
            old = self._automaton.get(key, None)
            if old is None or old[3] < weight:
                latin = key[0].isascii(), key[-1].isascii()
                self._automaton.add_word(key, (family, rule, len(key), weight, latin))
        self._automaton.make_automaton()
        # Proximity rules are tried only where one of their anchor words starts.
        rule_ids = {rule: i for i, (_, rule, _, _) in enumerate(RULES)}
        anchors: dict[str, list[int]] = {}
        for rule, words in ANCHORS.items():
            for word in words:
                anchors.setdefault(word, []).append(rule_ids[rule])
        self._anchors = ahocorasick.Automaton()
        for word, ids in anchors.items():
            self._anchors.add_word(word, (len(word), tuple(ids)))
        self._anchors.make_automaton()
        self._allow = tuple(k for k in (normalize(p) for p in allow_phrases) if k)

    # -- matching ---------------------------------------------------------------------

    def _phrase_findings(
        self, text: str, source: str, span: tuple[int, int] | None
    ) -> list[Finding]:
        norm = normalize(text)
        if not norm:
            return []
        hits: list[tuple[int, int, str, str, float]] = []  # (start, end) in `norm`
        for end, (family, rule, length, weight, latin) in self._automaton.iter(norm):
            start = end - length + 1
            if latin[0] and not _is_boundary(norm, start - 1):
                continue
            if latin[1] and not _is_boundary(norm, end + 1):
                continue
            hits.append((start, end + 1, family, rule, weight))
        tried: set[tuple[int, int]] = set()
        for end, (length, ids) in self._anchors.iter(norm):
            start = end - length + 1
            if not _is_boundary(norm, start - 1):
                continue
            for rule_id in ids:
                if (rule_id, start) in tried:
                    continue
                tried.add((rule_id, start))
                family, rule, weight, pattern = RULES[rule_id]
                m = pattern.match(norm, start)
                if m is not None:
                    hits.append((m.start(), m.end(), family, rule, weight))
        if not hits:
            return []
        if self._allow:
            allowed = [
                (m.start(), m.end()) for p in self._allow for m in re.finditer(re.escape(p), norm)
            ]
            hits = [h for h in hits if not any(a <= h[0] and h[1] <= b for a, b in allowed)]
        # Spans in the original text need the offset map; only texts with hits pay for it.
        offsets = normalize_with_offsets(text)[1] if span is None else []
        out = []
        for start, end, family, rule, weight in hits:
            where = span or (offsets[start], offsets[end - 1] + 1)
            out.append(Finding(family, rule, weight, where[0], where[1], source))
        return out

    def _pattern_findings(
        self, text: str, source: str, span: tuple[int, int] | None
    ) -> list[Finding]:
        out = []
        for pattern, rule, weight, literal in _ROLE_PATTERNS:
            if literal not in text and (literal != "of" or "OF" not in text.upper()):
                continue
            for m in pattern.finditer(text):
                where = span or (m.start(), m.end())
                out.append(Finding("role_injection", rule, weight, where[0], where[1], source))
        for pattern, family, rule, weight, literal in _RAW_RULES:
            if literal in text:
                for m in pattern.finditer(text):
                    where = span or (m.start(), m.end())
                    out.append(Finding(family, rule, weight, where[0], where[1], source))
        return out

    def findings(self, text: str) -> list[Finding]:
        """Every signal in `text`, its decoded payloads included (bounded)."""
        budget = [MAX_PAYLOADS, MAX_DECODED]
        return self._scan(text, "text", None, 0, budget)

    def _scan(
        self, text: str, source: str, span: tuple[int, int] | None, depth: int, budget: list[int]
    ) -> list[Finding]:
        out = self._phrase_findings(text, source, span) + self._pattern_findings(text, source, span)
        if not self.decode or depth >= MAX_DEPTH:
            return out
        for kind, start, end, decoded in _payloads(text):
            if budget[0] <= 0 or budget[1] <= 0:
                break
            budget[0] -= 1
            budget[1] -= len(decoded)
            where = span or (start, end)
            out += self._scan(decoded[:MAX_DECODED], kind, where, depth + 1, budget)
        if depth == 0:
            # Stretches that are not plain English: maybe rot13, maybe written backwards.
            for start, end in _foreign_segments(text[:MAX_DECODED]):
                piece = text[start:end]
                for kind, variant in (
                    ("rot13", codecs.encode(piece, "rot13")),
                    ("reversed", piece[::-1]),
                ):
                    out += [
                        f
                        for f in self._phrase_findings(variant, kind, span or (start, end))
                        if f.weight >= 1.0
                    ]
        return out

    # -- verdict ----------------------------------------------------------------------

    @staticmethod
    def score(findings: Iterable[Finding]) -> float:
        """Evidence in a text: per family, overlapping findings count once (at their
        strongest) and separate ones add up; the families' totals add up too. Each rule
        counts once, wherever and however often it matched."""
        by_family: dict[str, list[Finding]] = {}
        for f in findings:
            by_family.setdefault(f.family, []).append(f)
        total = 0.0
        for group in by_family.values():
            seen_rules: set[str] = set()
            clusters: list[tuple[int, int, float]] = []
            for f in sorted(group, key=lambda f: (f.start, -f.weight)):
                if f.rule in seen_rules and not any(a <= f.start < b for a, b, _ in clusters):
                    continue
                seen_rules.add(f.rule)
                if clusters and f.start < clusters[-1][1]:
                    a, b, w = clusters[-1]
                    clusters[-1] = (a, max(b, f.end), max(w, f.weight))
                else:
                    clusters.append((f.start, f.end, f.weight))
            total += sum(w for _, _, w in clusters)
        return total

    def is_attack(self, text: str) -> bool:
        """True when the findings of `text` reach the threshold."""
        return self.score(self.findings(text)) >= self.threshold


_COMMON = frozenset(
    "the and you to is of a in that it for on with this be are not your as was i".split()
)


_SEGMENT = re.compile(r"[^.:;!?\n]+")


def _foreign_segments(text: str) -> list[tuple[int, int]]:
    """Spans of sentences (4+ words) with none of the commonest English words.

    Only these get the rot13 and reversed passes: plain text costs nothing more.
    """
    lowered = text.lower()
    if "rot13" in lowered or "rot-13" in lowered or "caesar" in lowered:
        return [(0, len(text))]
    out = []
    for m in _SEGMENT.finditer(text):
        words = m.group(0).lower().split()
        if len(words) >= 4 and any(c.isalpha() for c in m.group(0)):
            if not any(w.strip(",'\"()") in _COMMON for w in words):
                out.append((m.start(), m.end()))
    return out[:MAX_PAYLOADS]


def _printable(text: str) -> bool:
    if not text:
        return False
    good = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return good / len(text) >= 0.9 and sum(c.isalpha() for c in text) >= len(text) * 0.4


def _payloads(text: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, decoded text) of base64 and hex runs that decode to text."""
    out: list[tuple[str, int, int, str]] = []
    tags = [i for i, c in enumerate(text) if 0xE0000 <= ord(c) <= 0xE007F]
    if tags:  # Unicode tag characters: invisible ASCII smuggled in plain sight
        hidden = "".join(chr(ord(text[i]) - 0xE0000) for i in tags)
        out.append(("tags", tags[0], tags[-1] + 1, hidden))
    if "%" in text:
        for m in _URL_RUN.finditer(text):
            out.append(("url", m.start(), m.end(), urllib.parse.unquote(m.group(0))))
    if "\\u" in text or "\\x" in text:
        for m in _ESCAPE_RUN.finditer(text):
            try:
                decoded = m.group(0).encode("ascii").decode("unicode_escape")
            except (UnicodeDecodeError, UnicodeEncodeError):
                continue
            out.append(("escapes", m.start(), m.end(), decoded))
    for m in _BINARY_RUN.finditer(text) if "0" in text and "1" in text else ():
        bits = m.group(0).split()
        try:
            decoded = bytes(int(b, 2) for b in bits).decode("utf-8")
        except ValueError:
            continue
        if _printable(decoded):
            out.append(("binary", m.start(), m.end(), decoded))
    words = text.split()
    long_word = any(len(w) >= 16 for w in words)
    spaced_hex = sum(len(w) == 2 and w[0] in _HEXDIGITS and w[1] in _HEXDIGITS for w in words)
    if not long_word and spaced_hex < 10:
        return out  # neither kind of payload can be in this text
    for m in _BASE64_RUN.finditer(text) if long_word else ():
        run = m.group(0)
        if run.isdigit() or run.isalpha() and run.islower():
            continue  # plain words and numbers are not payloads
        if _BASE32.fullmatch(run):
            body = run.rstrip("=")
            try:
                decoded = base64.b32decode(body + "=" * (-len(body) % 8)).decode("utf-8")
            except (binascii.Error, ValueError):
                decoded = ""
            if _printable(decoded):
                out.append(("base32", m.start(), m.end(), decoded))
                continue
        raw = run.rstrip("=").replace("-", "+").replace("_", "/")
        raw += "=" * (-len(raw) % 4)
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if _printable(decoded):
            out.append(("base64", m.start(), m.end(), decoded))
    for m in _HEX_RUN.finditer(text):
        digits = re.sub(r"[ :]", "", m.group(0))
        try:
            decoded = bytes.fromhex(digits).decode("utf-8")
        except ValueError:
            continue
        if _printable(decoded):
            out.append(("hex", m.start(), m.end(), decoded))
    return out
