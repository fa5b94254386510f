"""The C extension returns exactly what the pure-Python reference returns.

Generated text mixes values and their look-alikes, pieces of them, digits,
separators and arbitrary unicode, for every mask, `final` and `start`; a ~2 MB
corpus is compared once. The guard test makes CI fail when the extension is not the
implementation in use.
"""

from __future__ import annotations

import importlib
import os
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ktproxy.scan
from ktproxy.scan import reference
from ktproxy.scan.kinds import ALL_KINDS, KINDS
from tests.scan.conftest import IN_CI, ScanFn, require_c, rss_growth_mb

VALUES = [
    "john.doe@example.com",
    "a@b.co",
    "ops@sub-domain.example.co.uk",
    "x..y@foo.org",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "1 415 555 2671",
    "+14155552671",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "020 7946 0958",
    "(020) 7946 0958",
    "+39 07062433645",
    "(0406)-812415",
    "415-555-2671x1234",
    "(432)737-5327x1105",
    "5170 0113 1529 1397",
    "0113 1529 1397 5170",
    "123-45-6789",
    "078 05 1120",
    "666-12-3456",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "4111111111111111",
    "4111 1111 1111 1112",
    "378282246310005",
    "5555555555554444",
    "2223000048400011",
    "6011111111111117",
    "3530111333300000",
    "30569309025904",
    "6200000000000005",
    "4222222222222",
    "192.168.0.1",
    "255.255.255.255",
    "256.1.1.1",
    "01.2.3.4",
    "::1",
    "fe80::1",
    "2001:db8::8a2e:370:7334",
    "::ffff:192.0.2.1",
    "1:2:3:4:5:6:7:8",
    "2001:0db8:0000:0000:0000:ff00:0042:8329",
    "DE89 3704 0044 0532 0130 00",
    "BE41 0099 3052 4944",
    "NL66 LJYF 0376 4384 13",
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "NL91ABNA0417164300",
    "sk-proj-Abcdefghijklmnopqrstuvwxyz0123",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_wx-yz",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
    "glpat-abcdefghijklmnopqrst",
    "xoxb-123456789012-abcdefghij",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fw",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nMIIB",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBGZ3\n=q8Xy\n"
    "-----END PGP PRIVATE KEY BLOCK-----",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHz\n-----END ENCRYPTED PRIVATE KEY-----",
    "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
]
LOOK_ALIKES = [
    "v1.2.3",
    "2024-01-15",
    "15.01.2024",
    "12:30:45",
    "123e4567-e89b-12d3-a456-426614174000",
    "$1,299.99",
    "978-3-16-148410-0",
    "00:1A:2B:3C:4D:5E",
    "std::vector",
    "a::b",
]
PIECES = [
    "@",
    "@example.com",
    ".com",
    "sk-",
    "sk-ant-",
    "eyJ",
    "xoxb-",
    "ghp_",
    "github_pat_",
    "glpat-",
    "AKIA",
    "::",
    "(0)",
    "+44",
    "+1 ",
    "(415)",
    "DE89",
    "GB82",
    "-----BEGIN ",
    "PRIVATE KEY-----",
    "PGP PRIVATE KEY BLOCK-----",
    "x1234",
    "-----END ",
    "-----",
]
WORDS = ["the", "call", "mail", "to", "é", "日本語", "😀", "\u200b", "\x00", "\r\n"]


@st.composite
def cut_value(draw: st.DrawFn) -> str:
    """A prefix or suffix of a value: what a stream chunk boundary leaves."""
    value = draw(st.sampled_from(VALUES))
    k = draw(st.integers(0, len(value)))
    return value[:k] if draw(st.booleans()) else value[k:]


fragments = st.one_of(
    st.sampled_from(VALUES),
    st.sampled_from(VALUES),
    st.sampled_from(LOOK_ALIKES + PIECES + WORDS),
    cut_value(),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(alphabet="0123456789 -.+()", max_size=12),
    st.text(alphabet=string.ascii_letters + string.digits + "_-.:@", max_size=12),
    st.sampled_from(list(" \n\t-.,:;()+@_/=")),
    st.text(max_size=4),
)


@st.composite
def texts(draw: st.DrawFn) -> str:
    text = "".join(draw(st.lists(fragments, max_size=14)))
    if text and draw(st.booleans()):  # mutate a few characters
        chars = list(text)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(chars) - 1))
            chars[at] = draw(st.sampled_from(list("0123456789 -.:@(+eé日😀A_")))
        text = "".join(chars)
    return text


masks = st.one_of(
    st.just(ALL_KINDS),
    st.sampled_from([1 << k for k in range(len(KINDS))]),
    st.integers(0, ALL_KINDS),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
)


@settings(max_examples=1000, deadline=None)
@given(text=texts(), mask=masks, final=st.booleans(), data=st.data())
def test_c_equals_python(
    c_scan: ScanFn, text: str, mask: int, final: bool, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(text)), label="start")
    assert c_scan(text, mask, final, start) == reference.scan(text, mask, final, start)


@settings(max_examples=150, deadline=None)
@given(text=texts())
def test_c_equals_python_on_every_prefix(c_scan: ScanFn, text: str) -> None:
    for cut in range(len(text) + 1):
        prefix = text[:cut]
        for final in (False, True):
            assert c_scan(prefix, ALL_KINDS, final, 0) == reference.scan(
                prefix, ALL_KINDS, final, 0
            )


def corpus(size: int, seed: int = 20260501) -> str:
    """English-like text, about 1 % of it values, look-alikes and pieces; some non-ASCII."""
    rng = random.Random(seed)
    words = (
        "the of and to in is that it for as with was on be by at this from or have an "
        "they which one you were all we can her has there been if more when will would "
        "who so no its into time two may only other new some could these see than first"
    ).split()
    extras = ["é", "naïve", "日本語", "😀", "Größe", "\u200b"]
    noise = VALUES + LOOK_ALIKES + PIECES
    parts: list[str] = []
    length = 0
    while length < size:
        r = rng.random()
        if r < 0.012:
            part = rng.choice(noise)
        elif r < 0.03:
            part = rng.choice(extras)
        elif r < 0.05:
            part = str(rng.randrange(10 ** rng.randint(1, 12)))
        else:
            part = rng.choice(words)
        sep = rng.choice([" "] * 12 + [", ", ". ", "\n", ": ", " (", ") ", "-"])
        parts.append(part + sep)
        length += len(part) + len(sep)
    return "".join(parts)


@pytest.mark.slow
def test_c_equals_python_on_a_large_corpus(c_scan: ScanFn) -> None:
    text = corpus(2_000_000)  # has emoji: a 4-byte-kind str
    expected = reference.scan(text, ALL_KINDS, True, 0)
    assert len(expected[0]) > 1000
    assert c_scan(text, ALL_KINDS, True, 0) == expected
    half = len(text) // 2
    assert c_scan(text, ALL_KINDS, False, half) == reference.scan(text, ALL_KINDS, False, half)
    # The same text as 1-byte (Latin-1) and 2-byte kind strs.
    latin1 = "".join(c if ord(c) < 256 else "é" for c in text[:300_000])
    bmp = "".join(c if ord(c) < 0x10000 else "日" for c in text[:300_000])
    for narrower in (latin1, bmp):
        assert c_scan(narrower, ALL_KINDS, True, 0) == reference.scan(narrower, ALL_KINDS, True, 0)


LEAK_CHECK = """
import os
from ktproxy._ktscan import scan

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

small = "mail jane@example.com or 4111 1111 1111 1111, é日😀 " * 3
big = ("x " * 3000 + "mail jane@example.com, ip 192.168.0.1 ") * 3 + "😀"
bad = [(b"x", 1), ("x", 1.5), ("x", 1, True, -1), ("x",), ("x", 1, True, 0, 5)]

def work(k):
    scan(small, -1, k % 2 == 0, k % 7)
    scan(text=small, mask=32767, final=False)
    for args in bad:
        try:
            scan(*args)
        except (TypeError, ValueError):
            pass
    if k % 20 == 0:
        scan(big, -1)

for k in range(2000):
    work(k)
before = rss_mb()
for k in range(100000):
    work(k)
print(rss_mb() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
@pytest.mark.skipif(
    "asan" in os.environ.get("LD_PRELOAD", ""),
    reason="under ASan, freed memory waits in quarantine: RSS tells nothing",
)
def test_no_leak_in_a_long_run() -> None:
    """RSS stays flat over many calls, through every error path (own process)."""
    require_c()
    growth_mb = rss_growth_mb(LEAK_CHECK)
    assert growth_mb < 4, f"RSS grew by {growth_mb:.1f} MB over 100000 rounds"


def test_kind_numbering_agrees() -> None:
    require_c()
    module = importlib.import_module("ktproxy._ktscan")
    assert module.KINDS == KINDS


def test_c_extension_loaded() -> None:
    """CI must run the C scanner: a silent fallback to the reference fails here."""
    if IN_CI:
        assert ktproxy.scan.IMPLEMENTATION == "c", (
            "CI=true but ktproxy.scan uses the pure-Python reference "
            f"(KTPROXY_NO_EXTENSIONS={os.environ.get('KTPROXY_NO_EXTENSIONS')!r})"
        )
    elif ktproxy.scan.IMPLEMENTATION != "c":
        pytest.skip("ktproxy.scan uses the pure-Python reference (required only under CI=true)")
    assert ktproxy.scan.scan is importlib.import_module("ktproxy._ktscan").scan
