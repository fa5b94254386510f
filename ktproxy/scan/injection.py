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
import bisect
import codecs
import itertools
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import ahocorasick

from ktproxy.scan.english import is_english, word_cost
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
    (re.compile(r"\[/?\s*(INST|SYS|SYSTEM)\s*\]"), "inst_tag", 1.0, "["),
    (re.compile(r"<<\s*/?\s*SYS\s*>>", re.I), "llama_sys_tag", 1.0, "<<"),
    (re.compile(r"</?\s*(system|system_prompt|system-prompt|instructions|developer)\s*>", re.I),
     "xml_role_tag", 1.0, "<"),
    (re.compile(r"(?im)^[ \t]*(system|assistant)[ \t]*:[ \t]*\S"), "role_prefix_line", 0.6, ":"),
    (re.compile(r"(?im)^[ \t]*[-=*#_~]{3,}[ \t]*\n[ \t]*(system|assistant|developer)[ \t]*:"),
     "separator_then_role", 1.0, "\n"),
    (re.compile(r"(?i)\b(end|close)\s+of\s+(the\s+)?(user\s+)?(input|message|prompt)\s*[\]>\-=#*]"),
     "fake_delimiter", 1.0, "of"),
    (re.compile(r"(?im)^[ \t#*>]*(system ?note|system notice|systemhinweis|note syst[eè]me|"
                r"nota del sistema|nota di sistema|ai note|agent note)[ \t]*:"),
     "system_note_label", 0.6, ":"),
    (re.compile(r"(?i)\b(reasoning|thinking|thought|reasoning trace|chain of thought)\s*"
                r"\(\s*(assistant|model|ai)\s*\)\s*:"), "fake_reasoning_trace", 0.6, "("),
    (re.compile(r"(?is)<!--(?:(?!-->).){0,400}?\b(important|when summari[sz]ing|you must|"
                r"ignore|assistant|ai|llm|instruction)\b"), "hidden_comment", 0.6, "<!--"),
)  # fmt: skip

# Signals that need the raw text (normalising turns `delete_file` into two words).
_RAW_RULES: tuple[tuple[re.Pattern[str], str, str, float, str], ...] = (
    (re.compile(r"(?i)\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?"
                r"[a-z][a-z0-9]*_[a-z0-9_]+(?:\s+(?:tool|function))?\b"),
     "indirect_instruction", "tool_call_instruction", 0.6, "_"),
    (re.compile(r"(?i)\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?"
                r"[a-z][a-z0-9]*\s+(?:tool|function|plugin)\b"),
     "indirect_instruction", "tool_call_instruction", 0.6, " "),
    (re.compile(r'"(?:system_prompt|systemprompt|system_message|hidden_instructions|'
                r'developer_message)"\s*:'), "system_prompt_exfiltration", "prompt_key", 0.5, '"'),
    (re.compile(r"\[(?:TASK|HARMFUL[ _A-Z]*|RESTRICTED[ _A-Z]*|FORBIDDEN[ _A-Z]*|"
                r"ILLEGAL[ _A-Z]*|DANGEROUS[ _A-Z]*)\]"), "harmful_request", "harmful_placeholder",
     0.5, "["),
    (re.compile(r'"(?:tool|function|tool_name|function_name|action|name)"\s*:\s*'
                r'"[a-z][a-z0-9]*_[a-z0-9_]+"'), "tool_abuse", "json_tool_call", 0.5, '"'),
)  # fmt: skip

_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,6}(?![A-Za-z0-9+/=_-])")
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){10,}(?![0-9A-Fa-f])")

_TAGS = re.compile("[\U000e0000-\U000e007f]")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
_URL_RUN = re.compile(r"(?:[^\s%]*%[0-9A-Fa-f]{2}){3,}[^\s%]*")
_ESCAPE_RUN = re.compile(r"(?:\\u[0-9A-Fa-f]{4}|\\x[0-9A-Fa-f]{2}){4,}")
_BINARY_RUN = re.compile(r"(?<![01])(?:[01]{8}[ ]?){4,}(?![01])")
_BASE32 = re.compile(r"[A-Z2-7]{16,}=*")
# A word that mixes Latin letters with Cyrillic or Greek look-alikes ("Ехрlаin"):
# typists do not do that, filter evaders do.
_MIXED_SCRIPT = re.compile(
    r"\b(?=\w*[A-Za-z])(?=\w*[\u0370-\u03ff\u0400-\u04ff])[A-Za-z\u0370-\u03ff\u0400-\u04ff]{2,}\b"
)
_MORSE_RUN = re.compile(r"(?<![.\-\w])[.\-]{1,7}(?:[ ]+(?:/[ ]+)?[.\-]{1,7}){7,}(?![.\-\w])")
_ASCII85_RUN = re.compile(r"<~([!-u\s]{10,}?)~>")
_BASE85_RUN = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{40,}")
_MORSE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g",
    "....": "h", "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n",
    "---": "o", ".--.": "p", "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u",
    "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z", "-----": "0",
    ".----": "1", "..---": "2", "...--": "3", "....-": "4", ".....": "5", "-....": "6",
    "--...": "7", "---..": "8", "----.": "9", ".-.-.-": ".", "--..--": ",", "..--..": "?",
    ".----.": "'", "-.-.--": "!", "-..-.": "/", "-.--.": "(", "-.--.-": ")", "---...": ":",
    "-...-": "=", ".-.-.": "+", "-....-": "-", ".-..-.": '"', ".--.-.": "@",
}  # fmt: skip

MAX_PAYLOADS = 8  # encoded runs examined per text
MAX_DECODED = 16 * 1024  # characters of decoded text examined per text
MAX_DEPTH = 2  # decode inside decoded text at most this deep
MAX_ATTEMPTS = 256  # runs of each encoding looked at per text (decoded or not)
CODE_SWITCH_WEIGHT = 0.5


_COMMAND_RULES = frozenset(
    ("override_verb_object", "override_previous", "ignore_previous", "ignore_all")
)
_DESCRIBED = re.compile(
    r"\b(?:model|models|llm|llms|it|bot|chatbot|gpt|sometimes|often|always|keeps|still) $"
)
# The longest text `_DESCRIBED` can match ("sometimes " and the boundary before it).
_DESCRIBED_REACH = 16
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz ")


def _outside(
    hits: list[tuple[int, int, str, str, float]], allow: tuple[str, ...], norm: str
) -> list[tuple[int, int, str, str, float]]:
    """The hits not inside an occurrence of an allowed phrase in `norm` (in
    O((hits + occurrences) log occurrences): both can be many in a hostile text)."""
    allowed = sorted((m.start(), m.end()) for p in allow for m in re.finditer(re.escape(p), norm))
    if not allowed:
        return hits
    starts = [a for a, _ in allowed]
    reach = list(itertools.accumulate((b for _, b in allowed), max))  # furthest end so far
    kept = []
    for hit in hits:
        i = bisect.bisect_right(starts, hit[0]) - 1  # the occurrences starting at or before it
        if i < 0 or reach[i] < hit[1]:
            kept.append(hit)
    return kept


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
        # "my model sometimes ignores the system prompt" describes an override; it does
        # not command one
        # (`_DESCRIBED` ends at the hit, so only the few characters before it are read:
        # searching from 0 made a text dense with hits quadratic.)
        hits = [
            h
            for h in hits
            if h[3] not in _COMMAND_RULES
            or not _DESCRIBED.search(norm, max(0, h[0] - _DESCRIBED_REACH), h[0])
        ]
        if self._allow and hits:
            hits = _outside(hits, self._allow, norm)
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
        mixed = _mixed_script_words(text)
        if mixed:
            start, end = span or (mixed[0].start(), mixed[-1].end())
            weight = 1.0 if len(mixed) >= 2 else 0.5
            out.append(Finding("obfuscation", "mixed_script_words", weight, start, end, source))
        for pattern, family, rule, weight, literal in _RAW_RULES:
            if literal in text:
                for m in pattern.finditer(text):
                    where = span or (m.start(), m.end())
                    out.append(Finding(family, rule, weight, where[0], where[1], source))
        return out

    def findings(self, text: str) -> list[Finding]:
        """Every signal in `text`, its decoded payloads included (bounded)."""
        budget = [MAX_PAYLOADS, MAX_DECODED]  # payloads, decoded characters rescanned
        out = self._scan(text, "text", None, 0, budget)
        # The code-switch signal is the costliest to look for and weighs half: it is
        # only looked for when it can decide the verdict.
        if out and self.threshold - CODE_SWITCH_WEIGHT <= self.score(out) < self.threshold:
            switched = _code_switch(text[:MAX_DECODED])
            if switched is not None:
                out.append(
                    Finding("jailbreak_framing", "code_switch", CODE_SWITCH_WEIGHT, *switched)
                )
        return out

    def _scan(
        self, text: str, source: str, span: tuple[int, int] | None, depth: int, budget: list[int]
    ) -> list[Finding]:
        out = self._phrase_findings(text, source, span) + self._pattern_findings(text, source, span)
        if not self.decode or depth >= MAX_DEPTH or budget[0] <= 0 or budget[1] <= 0:
            return out
        for kind, start, end, decoded in _payloads(text):
            decoded = decoded[: min(MAX_DECODED, budget[1])]
            budget[0] -= 1
            budget[1] -= len(decoded)
            where = span or (start, end)
            out += self._scan(decoded, kind, where, depth + 1, budget)
            if budget[0] <= 0 or budget[1] <= 0:
                break
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
                # Clusters are disjoint and in order, and `f` starts at or after every
                # one of them: only the last can hold it (any() over all was quadratic).
                if f.rule in seen_rules and not (
                    clusters and clusters[-1][0] <= f.start < clusters[-1][1]
                ):
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


_WORD3 = re.compile(r"[^\W\d_]{3,}")
_FOREIGN_RUN = 4  # words in a row, none common English ...
_FOREIGN_COST = 8.0  # ... whose letters look un-English on average (english.word_cost)
_ENGLISH_NEEDED = 3  # common English words elsewhere make the text English around it


def _code_switch(text: str) -> tuple[int, int] | None:
    """Span of a stretch in another language inside English text, or None.

    Attacks wrap an instruction written in a language the model reads but filters
    rarely do ("This is a test. Perform <instruction in Albanian>"). Words of three
    letters or more are judged (short ones are shared across languages). A run of
    four or more that are not common English words and not capitalised like names
    or titles, whose letter trigrams are unlike English on average, is a foreign
    stretch; it counts when the rest of the text has common English words.
    """
    english = 0
    found: tuple[int, int] | None = None
    run: list[tuple[int, int, float]] = []

    def close() -> None:
        nonlocal found
        if found is None and len(run) >= _FOREIGN_RUN:
            cost = sum(min(c, 16.0) for _, _, c in run) / len(run)
            if cost >= _FOREIGN_COST:
                found = (run[0][0], run[-1][1])
        run.clear()

    for m in _WORD3.finditer(text):
        word = m.group(0)
        lower = word.lower()
        if is_english(lower):
            english += 1
            close()
        elif word[0].isupper() and not word.isupper():
            close()  # a name or a title word: neither English nor evidence
        else:
            run.append((m.start(), m.end(), word_cost(lower)))
    close()
    if found is not None and english >= _ENGLISH_NEEDED:
        return found
    return None


def _mixed_script_words(text: str) -> list[re.Match[str]]:
    if text.isascii():
        return []
    return list(_MIXED_SCRIPT.finditer(text))


def _morse(run: str) -> str | None:
    """Morse code (letters split by spaces, words by ` / `) as text, or None."""
    words = []
    for word in run.split("/"):
        letters = []
        for code in word.split():
            letter = _MORSE.get(code)
            if letter is None:
                return None
            letters.append(letter)
        words.append("".join(letters))
    decoded = " ".join(w for w in words if w)
    return decoded if sum(c.isalpha() for c in decoded) >= 6 else None


def _printable(text: str) -> bool:
    if not text:
        return False
    good = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return good / len(text) >= 0.9 and sum(c.isalpha() for c in text) >= len(text) * 0.4


def _payloads(text: str) -> Iterator[tuple[str, int, int, str]]:
    """(kind, start, end, decoded text) of encoded runs that decode to text, lazily (the
    caller stops once its budget is spent). At most `MAX_ATTEMPTS` runs of each encoding
    are looked at, so a text full of runs costs a bounded number of decodes, and runs of
    one encoding cannot use up the tries of another."""
    tags = [] if text.isascii() else [m.start() for m in _TAGS.finditer(text)]
    if tags:  # Unicode tag characters: invisible ASCII smuggled in plain sight
        hidden = "".join(chr(ord(text[i]) - 0xE0000) for i in tags)
        yield ("tags", tags[0], tags[-1] + 1, hidden)
    if "%" in text:
        for m in islice(_URL_RUN.finditer(text), MAX_ATTEMPTS):
            yield ("url", m.start(), m.end(), urllib.parse.unquote(m.group(0)))
    if "\\u" in text or "\\x" in text:
        for m in islice(_ESCAPE_RUN.finditer(text), MAX_ATTEMPTS):
            try:
                decoded = m.group(0).encode("ascii").decode("unicode_escape")
            except (UnicodeDecodeError, UnicodeEncodeError):
                continue
            yield ("escapes", m.start(), m.end(), decoded)
    for m in (
        islice(_BINARY_RUN.finditer(text), MAX_ATTEMPTS) if "0" in text and "1" in text else ()
    ):
        bits = m.group(0).split()
        try:
            decoded = bytes(int(b, 2) for b in bits).decode("utf-8")
        except ValueError:
            continue
        if _printable(decoded):
            yield ("binary", m.start(), m.end(), decoded)
    if "-" in text or "." in text:
        for m in islice(_MORSE_RUN.finditer(text), MAX_ATTEMPTS):
            morse = _morse(m.group(0))
            if morse is not None:
                yield ("morse", m.start(), m.end(), morse)
    if "<~" in text:
        for m in islice(_ASCII85_RUN.finditer(text), MAX_ATTEMPTS):
            try:
                body = "".join(m.group(1).split())
                decoded = base64.a85decode(body.encode("ascii")).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                continue
            if _printable(decoded):
                yield ("ascii85", m.start(), m.end(), decoded)
    for m in islice(_BASE85_RUN.finditer(text), MAX_ATTEMPTS) if len(text) >= 40 else ():
        run = m.group(0)
        if run.isalnum() or not any(c in run for c in "!#$%&()*+;<=>?@^_`{|}~"):
            continue  # base64 and hex runs are the other decoders' business
        try:
            decoded = base64.b85decode(run[: len(run) - len(run) % 5]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _printable(decoded):
            yield ("base85", m.start(), m.end(), decoded)
    words = text.split()
    long_word = any(len(w) >= 16 for w in words)
    spaced_hex = sum(len(w) == 2 and w[0] in _HEXDIGITS and w[1] in _HEXDIGITS for w in words)
    if not long_word and spaced_hex < 10:
        return  # neither kind of payload can be in this text
    for m in islice(_BASE64_RUN.finditer(text), MAX_ATTEMPTS) if long_word else ():
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
                yield ("base32", m.start(), m.end(), decoded)
                continue
        raw = run.rstrip("=").replace("-", "+").replace("_", "/")
        raw += "=" * (-len(raw) % 4)
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if _printable(decoded):
            yield ("base64", m.start(), m.end(), decoded)
    for m in islice(_HEX_RUN.finditer(text), MAX_ATTEMPTS):
        digits = re.sub(r"[ :]", "", m.group(0))
        try:
            decoded = bytes.fromhex(digits).decode("utf-8")
        except ValueError:
            continue
        if _printable(decoded):
            yield ("hex", m.start(), m.end(), decoded)
