"""Scanner throughput: the C extension against the pure-Python reference and alternatives.

One run, one generated text (~1 MB of English-like prose, ~1 % of its words being
values such as emails, phone numbers, cards, IPs, IBANs and keys, plus look-alikes),
scanned by:

- `C`: `ktproxy._ktscan.scan` (every kind, final), on the text as it is (a 1-byte-kind
  str) and with one emoji added (a 4-byte-kind str, which the C code narrows first);
- `Python reference`: `ktproxy.scan.reference.scan`, the same results;
- `re alternation`: one compiled regular expression with comparable patterns for the
  same kinds, `finditer` over the text (no Luhn, mod-97 or range checks, so it does
  less work and finds more);
- `pyahocorasick anchors`: an automaton of the literal anchors only (`@`, key
  prefixes, `-----BEGIN `), iterated over the text: the floor of any design that
  first looks for anchors (skipped when pyahocorasick is not installed).

Then the cost of one call on a typical streamed chunk (~80 characters, final=False).
Figures are the best of `--repeat` runs; only same-run ratios mean much.

    python -m benchmarks.bench_scan [--size 1000000] [--pii 0.01] [--repeat 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from ktproxy.scan import reference
from ktproxy.scan.kinds import ALL_KINDS

VALUES = [
    "john.doe@example.com",
    "ops+alerts@mail.example.org",
    "(415) 555-2671",
    "415-555-2671",
    "+44 20 7946 0958",
    "+14155552671",
    "123-45-6789",
    "4111 1111 1111 1111",
    "378282246310005",
    "5555-5555-5555-4444",
    "192.168.0.1",
    "10.20.30.40",
    "2001:db8::8a2e:370:7334",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "sk-proj-Abcdefghijklmnopqrstuvwxyz0123",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36",
]
LOOK_ALIKES = ["v2.10.3", "2024-01-15", "12:30:45", "$1,299.99", "978-3-16-148410-0", "3.14"]
WORDS = (
    "the of and to in is that it for as with was on be by at this from or have an they "
    "which one you were all we can her has there been if more when will would who so no "
    "its into time two may only other new some could these see than first model answer "
    "request policy gateway token stream provider user system prompt response customer "
    "account address number please send call email write contact support order invoice"
).split()

COMPARABLE_RE = re.compile(
    "|".join(
        [
            r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}",  # email
            r"\+[1-9][0-9 ().-]{6,20}[0-9]",  # international phone
            r"(?:\b1[ .-])?(?:\([2-9][0-9]{2}\) ?|\b[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}\b",
            r"\b[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}\b",  # SSN
            r"\b(?:[0-9][ -]?){12,18}[0-9]\b",  # card
            r"\b(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}"
            r"(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\b",  # IPv4
            r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?"
            r"|::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}",  # IPv6
            r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",  # IBAN
            r"\bsk-ant-[\w-]{20,}|\bsk-[\w-]{20,}",
            r"\bA(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|IPA|NPA|NVA)[A-Z0-9]{16}\b",
            r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_\w{22,}",
            r"\bglpat-[\w-]{20,}|\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"\beyJ[\w-]{7,}\.eyJ[\w-]{7,}\.[\w-]*",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        ]
    ),
    re.ASCII,
)
ANCHORS = [
    "@",
    "sk-",
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "eyJ",
    "-----BEGIN ",
]


def make_text(size: int, pii: float, seed: int) -> str:
    """English-like words with a share `pii` of values and some look-alikes."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < size:
        r = rng.random()
        if r < pii:
            word = rng.choice(VALUES)
        elif r < pii * 2:
            word = rng.choice(LOOK_ALIKES)
        elif r < pii * 3:
            word = str(rng.randrange(1, 100_000))
        else:
            word = rng.choice(WORDS)
        sep = rng.choice([" "] * 14 + [", ", ". ", ".\n", ": ", " (", ") "])
        parts.append(word + sep)
        length += len(word) + len(sep)
    return "".join(parts)


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def load_c() -> Any:
    try:
        from ktproxy import _ktscan
    except ImportError as exc:
        sys.exit(f"ktproxy._ktscan is not built ({exc}); run `python setup.py build_ext --inplace`")
    return _ktscan


def load_ahocorasick() -> Any:
    try:
        import ahocorasick
    except ImportError:
        return None
    automaton = ahocorasick.Automaton()
    for anchor in ANCHORS:
        automaton.add_word(anchor, anchor)
    automaton.make_automaton()
    return automaton


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="characters of text")
    parser.add_argument("--pii", type=float, default=0.01, help="share of words that are values")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    c = load_c()
    automaton = load_ahocorasick()

    text = make_text(args.size, args.pii, args.seed)
    wide = "😀" + text  # 4-byte kind
    mb = len(text) / 1e6
    c_result = c.scan(text, ALL_KINDS)
    py_result = reference.scan(text, ALL_KINDS)
    if c_result != py_result:
        print("ERROR: the C and Python scanners disagree on the benchmark text", file=sys.stderr)
        return 1
    print(
        f"text: {len(text):,} characters, {len(c_result[0]):,} values found "
        f"(pii share {args.pii}, seed {args.seed}); best of {args.repeat}"
    )

    rows: list[tuple[str, float]] = [
        ("C _ktscan", best_time(lambda: c.scan(text, ALL_KINDS), args.repeat)),
        ("C _ktscan, 4-byte-kind str", best_time(lambda: c.scan(wide, ALL_KINDS), args.repeat)),
        (
            "Python reference",
            best_time(lambda: reference.scan(text, ALL_KINDS), max(1, min(args.repeat, 2))),
        ),
        (
            "re alternation",
            best_time(lambda: sum(1 for _ in COMPARABLE_RE.finditer(text)), args.repeat),
        ),
    ]
    if automaton is not None:
        rows.append(
            (
                "pyahocorasick anchors only",
                best_time(lambda: sum(1 for _ in automaton.iter(text)), args.repeat),
            )
        )
    else:
        print("(pyahocorasick is not installed: no anchors-only figure)")

    c_time = rows[0][1]
    print(f"\n{'scanner':<30}{'MB/s':>10}{'ms/MB':>10}{'C is x faster':>16}")
    for name, seconds in rows:
        print(
            f"{name:<30}{mb / seconds:>10.1f}{seconds / mb * 1e3:>10.2f}{seconds / c_time:>16.1f}"
        )

    chunk = "Sure! You can reach John at john.doe@example.com or (415) 555-2671 today, ok? "
    calls = 20_000
    c_us = best_time(lambda: [c.scan(chunk, ALL_KINDS, False, 0) for _ in range(calls)], 3)
    py_us = best_time(lambda: [reference.scan(chunk, ALL_KINDS, False, 0) for _ in range(500)], 3)
    c_us, py_us = c_us / calls * 1e6, py_us / 500 * 1e6
    print(
        f"\none call on a {len(chunk)}-character chunk (final=False): "
        f"C {c_us:.2f} us, Python {py_us:.1f} us ({py_us / c_us:.0f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
