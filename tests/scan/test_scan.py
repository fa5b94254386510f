"""Behaviour of `scan(text, mask, final, start)`, run against both implementations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from ktproxy.scan.kinds import ALL_KINDS, KINDS, mask_of
from tests.scan.conftest import Scanner

Found = list[tuple[str, str]]


def found(scanner: Scanner, text: str, mask: int = ALL_KINDS) -> Found:
    """(value, kind name) of every match in a final text."""
    matches, safe = scanner.scan(text, mask, True, 0)
    assert safe == len(text)
    return [(text[start:end], KINDS[kind]) for start, end, kind in matches]


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq1w2e3r4\n-----END RSA PRIVATE KEY-----"

# Realistic sentences and exactly what the scanner must find in them.
SENTENCES: list[tuple[str, Found]] = [
    (
        "Please write to jane.doe+news@mail.example.org before Friday.",
        [("jane.doe+news@mail.example.org", "EMAIL")],
    ),
    (
        "Reply to a@b.co, or to ops@sub-domain.example.com.",
        [
            ("a@b.co", "EMAIL"),
            ("ops@sub-domain.example.com", "EMAIL"),
        ],
    ),
    (
        "Call (415) 555-2671 or 415-555-2671 or 1 415 555 2671 or 415.555.2671.",
        [
            ("(415) 555-2671", "PHONE"),
            ("415-555-2671", "PHONE"),
            ("1 415 555 2671", "PHONE"),
            ("415.555.2671", "PHONE"),
        ],
    ),
    (
        "London: +44 20 7946 0958, +44 (0)20 7946 0958, 020 7946 0958 or (020) 7946 0958.",
        [
            ("+44 20 7946 0958", "PHONE"),
            ("+44 (0)20 7946 0958", "PHONE"),
            ("020 7946 0958", "PHONE"),
            ("(020) 7946 0958", "PHONE"),
        ],
    ),
    ("In E.164 that is +14155552671.", [("+14155552671", "PHONE")]),
    (
        "Her SSN is 123-45-6789, his 078 05 1120.",
        [
            ("123-45-6789", "SSN"),
            ("078 05 1120", "SSN"),
        ],
    ),
    (
        "Visa 4111 1111 1111 1111, Amex 3782 822463 10005, MC 5555-5555-5555-4444 "
        "and 2223000048400011, Discover 6011111111111117, JCB 3530111333300000, "
        "Diners 30569309025904, UnionPay 6200000000000005.",
        [
            ("4111 1111 1111 1111", "CREDIT_CARD"),
            ("3782 822463 10005", "CREDIT_CARD"),
            ("5555-5555-5555-4444", "CREDIT_CARD"),
            ("2223000048400011", "CREDIT_CARD"),
            ("6011111111111117", "CREDIT_CARD"),
            ("3530111333300000", "CREDIT_CARD"),
            ("30569309025904", "CREDIT_CARD"),
            ("6200000000000005", "CREDIT_CARD"),
        ],
    ),
    (
        "The server at 192.168.0.1 answered; 10.0.0.255 did not, nor 10.0.0.0/8.",
        [("192.168.0.1", "IPV4"), ("10.0.0.255", "IPV4"), ("10.0.0.0", "IPV4")],
    ),
    (
        "Hosts 2001:db8::8a2e:370:7334, ::1, fe80::1, ::ffff:192.0.2.1 and "
        "2001:0db8:0000:0000:0000:ff00:0042:8329 (net 2001:db8::1/64).",
        [
            ("2001:db8::8a2e:370:7334", "IPV6"),
            ("::1", "IPV6"),
            ("fe80::1", "IPV6"),
            ("::ffff:192.0.2.1", "IPV6"),
            ("2001:0db8:0000:0000:0000:ff00:0042:8329", "IPV6"),
            ("2001:db8::1", "IPV6"),
        ],
    ),
    (
        "Pay to DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.",
        [("DE89 3704 0044 0532 0130 00", "IBAN"), ("GB82WEST12345698765432", "IBAN")],
    ),
    (
        "export OPENAI_API_KEY=sk-proj-Abcdefghijklmnopqrstuvwxyz0123 now",
        [("sk-proj-Abcdefghijklmnopqrstuvwxyz0123", "OPENAI_KEY")],
    ),
    (
        "the key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_wx-yz leaked",
        [("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_wx-yz", "ANTHROPIC_KEY")],
    ),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", [("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY")]),
    (
        "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 and "
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        [
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GITHUB_TOKEN"),
            ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "GITHUB_TOKEN"),
        ],
    ),
    (
        "gitlab glpat-abcdefghijklmnopqrst, slack xoxb-123456789012-abcdefghij.",
        [
            ("glpat-abcdefghijklmnopqrst", "GITLAB_TOKEN"),
            ("xoxb-123456789012-abcdefghij", "SLACK_TOKEN"),
        ],
    ),
    (f"Authorization: Bearer {JWT}", [(JWT, "JWT")]),
    (f"my key:\n{PEM}\nthanks", [(PEM, "PRIVATE_KEY")]),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCES)
def test_finds_values_in_sentences(scanner: Scanner, text: str, expected: Found) -> None:
    assert found(scanner, text) == expected


def test_sentences_cover_every_kind() -> None:
    assert {kind for _, expected in SENTENCES for _, kind in expected} == set(KINDS)


# Look-alikes: scanned for the kind they resemble, they are not that kind.
LOOK_ALIKES: list[tuple[str, str]] = [
    ("bad card 4111 1111 1111 1112", "CREDIT_CARD"),
    ("bad card 4111-1111-1111-1110 here", "CREDIT_CARD"),
    ("too long 41111111111111111111111", "CREDIT_CARD"),
    ("no issuer 9111111111111111", "CREDIT_CARD"),
    ("glued order4111111111111111 x", "CREDIT_CARD"),
    ("amount 4111111111111111.50 EUR", "CREDIT_CARD"),
    ("bad IBAN DE89 3704 0044 0532 0130 01", "IBAN"),
    ("bad IBAN GB82WEST12345698765433", "IBAN"),
    ("short IBAN DE89 3704 0044 0532", "IBAN"),
    ("unknown country ZZ89370400440532013000", "IBAN"),
    ("version 1.2.3 or v10.0.1 or 1.2.3.4.5", "IPV4"),
    ("octets 256.1.1.1 and 192.168.1.300", "IPV4"),
    ("leading zero 01.2.3.4", "IPV4"),
    ("date 2024-01-15, 15.01.2024 or 01/15/2024", "PHONE"),
    ("at 12:30:45 or 2024-01-15T12:30:45Z", "IPV6"),
    ("uuid 123e4567-e89b-12d3-a456-426614174000", "CREDIT_CARD"),
    ("uuid 123e4567-e89b-12d3-a456-426614174000", "PHONE"),
    ("uuid 123e4567-e89b-12d3-a456-426614174000", "IPV6"),
    ("price $1,299.99 or 4 111,00 EUR", "PHONE"),
    ("price $1,299.99 or 4 111,00 EUR", "CREDIT_CARD"),
    ("ISBN 978-3-16-148410-0 and 0-306-40615-2", "PHONE"),
    ("ISBN 978-3-16-148410-0 and 0-306-40615-2", "SSN"),
    ("mac 00:1A:2B:3C:4D:5E or 00-1A-2B-3C-4D-5E", "IPV6"),
    ("mac 00:1A:2B:3C:4D:5E or 00-1A-2B-3C-4D-5E", "PHONE"),
    ("use std::vector<int> here", "IPV6"),
    ("ssn 000-12-3456 is not valid", "SSN"),
    ("ssn 666-12-3456 is not valid", "SSN"),
    ("ssn 912-34-5678 is not valid", "SSN"),
    ("ssn 123-00-4567 or 123-45-0000", "SSN"),
    ("short 555-2671", "PHONE"),
    ("email jané@example.com", "EMAIL"),
    ("email x..y@example or a@localhost", "EMAIL"),
    ("aws prefix_AKIAIOSFODNN7EXAMPLE or AKIAIOSFODNN7EXAMPLE1", "AWS_ACCESS_KEY"),
    ("short sk-abc123 and ghp_short", "OPENAI_KEY"),
    ("non-ASCII digits ١٢٣-٤٥-٦٧٨٩ and ４１１１ １１１１ １１１１ １１１１", "SSN"),
    ("non-ASCII digits ١٢٣-٤٥-٦٧٨٩ and ４１１１ １１１１ １１１１ １１１１", "CREDIT_CARD"),
]


@pytest.mark.parametrize(("text", "kind"), LOOK_ALIKES)
def test_look_alikes_are_not_found(scanner: Scanner, text: str, kind: str) -> None:
    assert found(scanner, text, mask_of([kind])) == []


def test_everyday_numbers_find_nothing_at_all(scanner: Scanner) -> None:
    text = (
        "Release v2.10.3 shipped on 2024-01-15 at 12:30:45 (build 1234567); it costs "
        "$1,299.99 or 4 111,00 EUR. See ISBN 978-3-16-148410-0, uuid "
        "123e4567-e89b-12d3-a456-426614174000, mac 00:1A:2B:3C:4D:5E, std::vector<int>, "
        "pi 3.14159, 12.5 % and 256.1.1.1."
    )
    assert found(scanner, text) == []


def test_mask_selects_kinds(scanner: Scanner) -> None:
    text = "Mail jane@example.com or call 415-555-2671, key AKIAIOSFODNN7EXAMPLE."
    assert found(scanner, text, mask_of(["EMAIL"])) == [("jane@example.com", "EMAIL")]
    assert found(scanner, text, mask_of(["PHONE"])) == [("415-555-2671", "PHONE")]
    assert found(scanner, text, mask_of(["SECRETS"])) == [
        ("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY")
    ]
    assert found(scanner, text, 0) == []
    assert found(scanner, text, ALL_KINDS | 1 << 40) == found(scanner, text, ALL_KINDS)


def test_anthropic_key_is_not_an_openai_key(scanner: Scanner) -> None:
    text = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_wx-yz"
    assert found(scanner, text, mask_of(["OPENAI_KEY"])) == []


def test_private_key_without_end_runs_to_the_end_of_a_final_text(scanner: Scanner) -> None:
    text = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n"
    assert found(scanner, text) == [(text[5:], "PRIVATE_KEY")]
    assert found(scanner, "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----") == []


# -- private-key blocks ------------------------------------------------------------------

# An ASCII-armored OpenPGP secret key: header lines, a blank line, base64, the CRC-24 line.
PGP = (
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"
    "Version: GnuPG v2\n"
    "Comment: Alice Lovelace <alice@example.org>\n"
    "\n"
    "lQOYBGZ3bXkBCADKq1w2e3r4t5y6u7i8o9p0AbCdEfGhIjKlMnOpQrStUvWxYz01\n"
    "23456789+/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/AbCdEfGhIjKlMnO=\n"
    "=q8Xy\n"
    "-----END PGP PRIVATE KEY BLOCK-----"
)
PGP_NO_HEADERS = (  # what GnuPG 2.1 and later write
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"
    "\n"
    "lFgEZ3bXkBYJKwYBBAHaRw8BAQdA1w2e3r4t5y6u7i8o9p0AbCdEfGhIjKlMnOpQ\n"
    "=8nEb\n"
    "-----END PGP PRIVATE KEY BLOCK-----"
)


@pytest.mark.parametrize("label", ["RSA ", "DSA ", "EC ", "OPENSSH ", "ENCRYPTED ", ""])
def test_pem_private_keys_of_every_type(scanner: Scanner, label: str) -> None:
    block = (
        f"-----BEGIN {label}PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq1w2e3r4\n"
        f"-----END {label}PRIVATE KEY-----"
    )
    assert found(scanner, f"key:\n{block}\nthanks") == [(block, "PRIVATE_KEY")]


@pytest.mark.parametrize(
    "block",
    [PGP, PGP_NO_HEADERS, PGP.replace("\n", "\\n"), PGP.replace("\n", "\r\n")],
    ids=["headers", "no-headers", "json-escaped", "crlf"],
)
def test_pgp_private_key_block(scanner: Scanner, block: str) -> None:
    # One value, whatever its lines hold (here an address in a comment).
    assert found(scanner, f"my key:\n{block}\nthanks") == [(block, "PRIVATE_KEY")]
    assert found(scanner, f'{{"key": "{block}"}}') == [(block, "PRIVATE_KEY")]


@pytest.mark.parametrize(
    "label", ["PGP PUBLIC KEY BLOCK", "PGP SIGNATURE", "PGP MESSAGE", "CERTIFICATE"]
)
def test_other_armored_blocks_are_not_private_keys(scanner: Scanner, label: str) -> None:
    text = f"-----BEGIN {label}-----\n\nmQENBGZ3bXkBCADK\n=q8Xy\n-----END {label}-----"
    assert found(scanner, text, mask_of(["PRIVATE_KEY"])) == []


@pytest.mark.parametrize(("width", "is_key"), [(80, True), (81, False)])
def test_begin_line_is_a_key_within_80_characters(
    scanner: Scanner, width: int, is_key: bool
) -> None:
    # A stream stops waiting for the `-----` of a BEGIN line after 80 characters, so the
    # whole text must not find a key there either (the two would differ: a leak).
    begin = "-----BEGIN " + "X; " * 30
    begin = begin[: width - len("PRIVATE KEY-----")] + "PRIVATE KEY-----"
    assert len(begin) == width
    text = f"{begin}\nMIIB\n-----END PRIVATE KEY-----"
    assert found(scanner, text, mask_of(["PRIVATE_KEY"])) == (
        [(text, "PRIVATE_KEY")] if is_key else []
    )


def test_pgp_block_without_end_runs_to_the_end_of_a_final_text(scanner: Scanner) -> None:
    block = PGP[: PGP.index("=q8Xy")]
    assert found(scanner, f"key:\n{block}") == [(block, "PRIVATE_KEY")]


# -- streaming: final=False, safe_end, start ---------------------------------------------


def test_final_text_is_all_safe(scanner: Scanner) -> None:
    text = "Write to john.d"
    assert scanner.scan(text, ALL_KINDS, True, 0) == ([], len(text))


def test_unfinished_tail_is_held_back(scanner: Scanner) -> None:
    # "john.d" may become "john.doe@example.com": only "Write to " is final.
    assert scanner.scan("Write to john.d", ALL_KINDS, False, 0) == ([], 9)


def test_value_before_the_tail_is_reported(scanner: Scanner) -> None:
    text = "Mail a@b.com, thanks"
    assert scanner.scan(text, ALL_KINDS, False, 0) == ([(5, 12, 0)], 14)


def test_value_reaching_into_the_tail_is_not_reported(scanner: Scanner) -> None:
    text = "card = 4111 1111 1111 1111"
    assert scanner.scan(text, ALL_KINDS, False, 0) == ([], 6)
    assert found(scanner, text) == [("4111 1111 1111 1111", "CREDIT_CARD")]


@pytest.mark.parametrize("block", [PEM, PGP], ids=["pem", "pgp"])
def test_key_block_is_reported_once_its_end_line_is_whole(scanner: Scanner, block: str) -> None:
    text = f"key:\n{block}\nthanks"
    end = 5 + len(block)
    for cut in range(len(text) + 1):
        matches, safe = scanner.scan(text[:cut], ALL_KINDS, False, 0)
        if cut <= end:  # the END line may still grow: nothing from the block on is final
            assert matches == []
            assert safe <= 5
        else:
            assert matches == [(5, end, KINDS.index("PRIVATE_KEY"))]
            assert safe > end


def test_private_key_still_arriving_holds_everything_from_its_start(scanner: Scanner) -> None:
    head = "key:\n-----BEGIN RSA PRIV"
    assert scanner.scan(head, ALL_KINDS, False, 0) == ([], 5)
    body = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n"
    assert scanner.scan(body, ALL_KINDS, False, 0) == ([], 5)
    whole = f"key:\n{PEM}\nthanks"
    matches, safe = scanner.scan(whole, ALL_KINDS, False, 0)
    assert matches == [(5, 5 + len(PEM), KINDS.index("PRIVATE_KEY"))]
    assert safe == whole.index("thanks")


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("Contact jane@example.com or +1 415 555 2671 today; SSN 123-45-6789. Bye", 3),
        ("IBAN BE41 0099 3052 4944, card 5170 0113 1529 1397, tel 020 7946 0958 ok", 1),
        ("+44 20 7946 0958 4111 1111 1111 1111 or 020 7946 0958 123-45-6789 x", 4),
        ("call 415-555-2671x1234, or (0406)-812415 end", 2),
        ("tel 020 7946 0958 24/7, 020 7946 0958 24 hours, not 5170 0113 1529 1397 1/2", 2),
        ("not 0113 1529 1397 2024 or 5170 0113 1529 1397, but 415 555 2671 3 times", 1),
    ],
)
def test_growing_text_reports_only_whole_text_matches(
    scanner: Scanner, text: str, count: int
) -> None:
    whole, _ = scanner.scan(text, ALL_KINDS, True, 0)
    assert len(whole) == count
    for cut in range(len(text) + 1):
        matches, safe = scanner.scan(text[:cut], ALL_KINDS, False, 0)
        assert 0 <= safe <= cut
        assert all(end <= safe for _, end, _ in matches)
        assert matches == [m for m in whole if m[1] <= safe]


def test_start_skips_earlier_text_but_uses_it_as_context(scanner: Scanner) -> None:
    text = "a@b.com then c@d.org"
    assert scanner.scan(text, ALL_KINDS, True, 8) == ([(13, 20, 0)], 20)
    # The character before `start` decides the word boundary.
    assert scanner.scan("xjohn@example.com", ALL_KINDS, True, 1) == ([], 17)
    assert scanner.scan(" john@example.com", ALL_KINDS, True, 1) == ([(1, 17, 0)], 17)
    assert scanner.scan("Write to john.d", ALL_KINDS, False, 12) == ([], 12)


def test_start_past_the_end_is_clamped(scanner: Scanner) -> None:
    assert scanner.scan("a@b.com", ALL_KINDS, True, 100) == ([], 7)
    assert scanner.scan("a@b.com", ALL_KINDS, False, 100) == ([], 7)
    assert scanner.scan("a@b.com", ALL_KINDS, False, 7) == ([], 7)


# -- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", ["é", "日本語", "😀", "\u200b", "é日😀", "\x00"])
def test_offsets_are_str_indices_around_non_ascii(scanner: Scanner, pad: str) -> None:
    text = (
        f"{pad}jane@example.com{pad} {pad} 4111 1111 1111 1111{pad} "
        f"{pad}📞 +1 415 555 2671 {pad}sk-proj-Abcdefghijklmnopqrstuvwxyz0123{pad}"
    )
    assert found(scanner, text) == [
        ("jane@example.com", "EMAIL"),
        ("4111 1111 1111 1111", "CREDIT_CARD"),
        ("+1 415 555 2671", "PHONE"),
        ("sk-proj-Abcdefghijklmnopqrstuvwxyz0123", "OPENAI_KEY"),
    ]


def test_non_ascii_tail_is_final(scanner: Scanner) -> None:
    # No value contains a non-ASCII character, so one ends what could still grow.
    text = "日本語 jane@example.com 日本"
    assert scanner.scan(text, ALL_KINDS, False, 0) == ([(4, 20, 0)], len(text))
    assert scanner.scan("日本語 jane@exam", ALL_KINDS, False, 0) == ([], 4)


@pytest.mark.parametrize("final", [True, False])
def test_empty_text(scanner: Scanner, final: bool) -> None:
    assert scanner.scan("", ALL_KINDS, final, 0) == ([], 0)
    assert scanner.scan("", ALL_KINDS, final, 5) == ([], 0)


def test_long_text_with_many_matches(scanner: Scanner) -> None:
    # Above the C extension's GIL-release threshold, and more matches than its inline
    # buffer holds.
    line = "user{} wrote to user{}@example.com from 10.0.{}.1 -- é日😀\n"
    text = "".join(line.format(k, k, k % 256) for k in range(2000))
    matches, safe = scanner.scan(text, ALL_KINDS, True, 0)
    assert safe == len(text)
    assert len(matches) == 4000
    assert [text[s:e] for s, e, _ in matches[:2]] == ["user0@example.com", "10.0.0.1"]
    assert [text[s:e] for s, e, _ in matches[-2:]] == ["user1999@example.com", "10.0.207.1"]


def test_concurrent_scans_agree(scanner: Scanner) -> None:
    text = "x " * 5000 + "mail jane@example.com, ip 192.168.0.1 " * 200 + "日本語"
    expected = scanner.scan(text, ALL_KINDS, True, 0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: scanner.scan(text, ALL_KINDS, True, 0), range(16)))
    assert all(result == expected for result in results)


# -- arguments -----------------------------------------------------------------------------


def test_keyword_arguments(scanner: Scanner) -> None:
    scan = cast(Any, scanner.scan)
    assert scan(text="a@b.com x", mask=ALL_KINDS, final=False, start=0) == ([(0, 7, 0)], 8)
    assert scan("a@b.com", ALL_KINDS) == ([(0, 7, 0)], 7)
    with pytest.raises(TypeError):
        scan("a@b.com", ALL_KINDS, True, 0, "extra")
    with pytest.raises(TypeError):
        scan("a@b.com")
    with pytest.raises(TypeError):
        scan("a@b.com", ALL_KINDS, colour=True)


def test_final_is_a_truth_value(scanner: Scanner) -> None:
    scan = cast(Any, scanner.scan)
    assert scan("Write to john.d", ALL_KINDS, 0) == ([], 9)
    assert scan("Write to john.d", ALL_KINDS, 1) == ([], 15)


@pytest.mark.parametrize("text", [b"mail a@b.com", None, 42])
def test_text_must_be_str(scanner: Scanner, text: object) -> None:
    with pytest.raises(TypeError):
        cast(Any, scanner.scan)(text, ALL_KINDS, True, 0)


def test_negative_start_is_rejected(scanner: Scanner) -> None:
    with pytest.raises(ValueError, match="start"):
        scanner.scan("a@b.com", ALL_KINDS, True, -1)


@pytest.mark.parametrize(
    "value",
    [
        "+49 30 1234567",
        "030 1234567",
        "(030) 1168569",
        "089 29688542",
        "0151 23456789",
        "0044 20 7946 0958",
        "00 44 20 7946 0958",
        "+49(0)89 1234567",
        "+39 330955596",
        "+44 7396 818826",
        "07417 346555",
        "06-52454282",
        "0345061053",
        "+39 07062433645",
        "(0406)-812415",
        "(082)-3165953",
        "415-555-2671x1234",
        "(432)737-5327x1105",
        "228.383.7277x48778",
        "+1-599-535-0952x62053",
        "001-637-401-2261x01095",
    ],
)
def test_more_phone_formats(scanner: Scanner, value: str) -> None:
    text = f"Ring {value} today."
    matches, _ = scanner.scan(text, ALL_KINDS, True, 0)
    assert [(text[s:e], KINDS[k]) for s, e, k in matches] == [(value, "PHONE")]


@pytest.mark.parametrize(
    "text",
    [
        "SSN-like 000-30-1134 here",
        "ZIP 04099-5464 here",
        "icon@2x.png and logo@3x.webp",
        "use a::b and std::map or dead::beef",
        "route 0012345 only",
    ],
)
def test_more_lookalikes(scanner: Scanner, text: str) -> None:
    assert scanner.scan(text, ALL_KINDS, True, 0)[0] == []


# -- numbers inside longer numbers --------------------------------------------------------


# A card number or IBAN that fails its check holds no smaller value: no phone number in
# digit groups joined by spaces into a longer number (19 digits at most, a card's
# length), no phone or card number in the groups of an IBAN.
@pytest.mark.parametrize(
    "text",
    [
        "card 5170 0113 1529 1397 (fails Luhn)",
        "card 9170 0113 1529 1397, no issuer",
        "account 0113 1529 1397 5170",
        "IBAN BE41 0099 3052 4944.",
        '{"IBAN": "FI54 0493 8001 6471 83"}',
        "IBAN IE23 WWNC 0968 0471 2690 65",
        "IBAN NL66 LJYF 0376 4384 13",
        "IBAN RO78 DBVQ 4278 9579 4295 2191",
        "IBAN AZ30 MLQR 3191 3013 0746 6261 4704",
        "IBAN PT96 4943 3832 8366 4008 7685 6",
        "IBAN CH17 4318 8584 6384 4563 9",
        "Ring 415-555-2671x123456 today",
    ],
)
def test_pieces_of_longer_numbers_are_not_values(scanner: Scanner, text: str) -> None:
    assert found(scanner, text) == []


# Values side by side are each found: together they are longer than any one number, or
# one of them is written another way (`-`, `.`, `:`, a letter).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "+44 20 7946 0958 4111 1111 1111 1111",
            [("+44 20 7946 0958", "PHONE"), ("4111 1111 1111 1111", "CREDIT_CARD")],
        ),
        (
            "4111 1111 1111 1111 020 7946 0958",
            [("4111 1111 1111 1111", "CREDIT_CARD"), ("020 7946 0958", "PHONE")],
        ),
        ("020 7946 0958 123-45-6789", [("020 7946 0958", "PHONE"), ("123-45-6789", "SSN")]),
        ("123-45-6789 020 7946 0958", [("123-45-6789", "SSN"), ("020 7946 0958", "PHONE")]),
        ("020 7946 0958 192.168.0.1", [("020 7946 0958", "PHONE"), ("192.168.0.1", "IPV4")]),
        (
            "+44 20 7946 0958 2001:db8::1",
            [("+44 20 7946 0958", "PHONE"), ("2001:db8::1", "IPV6")],
        ),
        ("call 020 7946 0958 24h a day", [("020 7946 0958", "PHONE")]),
        ("card 4111 1111 1111 1111 09/29", [("4111 1111 1111 1111", "CREDIT_CARD")]),
        ("exp 12/28 4111 1111 1111 1111", [("4111 1111 1111 1111", "CREDIT_CARD")]),
        ("card #2 4111 1111 1111 1111", [("4111 1111 1111 1111", "CREDIT_CARD")]),
        ("call 415 555 2671 24/7", [("415 555 2671", "PHONE")]),
        ("total 1,299 020 7946 0958", [("020 7946 0958", "PHONE")]),
        ("IBAN DE89 3704 0044 0532 0130 00", [("DE89 3704 0044 0532 0130 00", "IBAN")]),
    ],
)
def test_values_side_by_side_are_each_found(scanner: Scanner, text: str, expected: Found) -> None:
    assert found(scanner, text) == expected


def test_digit_groups_before_start_are_context(scanner: Scanner) -> None:
    text = "card 5170 0113 1529 1397"
    assert scanner.scan(text, ALL_KINDS, True, text.index("0113")) == ([], len(text))
