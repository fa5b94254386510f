"""Pure-Python reference of the PII / secret scanner (the C extension mirrors it).

The scanner is written as explicit loops over characters rather than regular
expressions so that `ext/ktscan.c` can follow it step by step: both must return the
same matches for every text (a hypothesis test and generated corpora check this).
It is also what runs where no compiler is present or `KTPROXY_NO_EXTENSIONS=1`.

`scan(text, mask, final, start)` returns `(matches, safe_end)`:

- `matches`: non-overlapping `(start, end, kind)` triples, in order, each ending at
  or before `safe_end`, for the kinds selected by `mask`;
- `safe_end`: how much of `text` is final. When `final` is false, text after
  `safe_end` may still turn out to be (part of) a value once more text arrives: the
  trailing run of characters that a value could contain, and any private-key block
  whose END line has not arrived. With `final`, `safe_end == len(text)`.

Scanning begins at `start`; characters before it are context only (the character
just before a value decides whether the value starts at a word boundary; the digit
groups just before a number, whether it is a piece of a longer one).
"""

from __future__ import annotations

from ktproxy.scan.kinds import KIND_INDEX

EMAIL = KIND_INDEX["EMAIL"]
PHONE = KIND_INDEX["PHONE"]
SSN = KIND_INDEX["SSN"]
CARD = KIND_INDEX["CREDIT_CARD"]
IPV4 = KIND_INDEX["IPV4"]
IPV6 = KIND_INDEX["IPV6"]
IBAN = KIND_INDEX["IBAN"]
OPENAI_KEY = KIND_INDEX["OPENAI_KEY"]
ANTHROPIC_KEY = KIND_INDEX["ANTHROPIC_KEY"]
AWS_KEY = KIND_INDEX["AWS_ACCESS_KEY"]
GITHUB = KIND_INDEX["GITHUB_TOKEN"]
GITLAB = KIND_INDEX["GITLAB_TOKEN"]
SLACK = KIND_INDEX["SLACK_TOKEN"]
JWT = KIND_INDEX["JWT"]
PRIVATE_KEY = KIND_INDEX["PRIVATE_KEY"]

Match = tuple[int, int, int]


# -- character classes (ASCII only: every value the scanner knows is ASCII) -------------


def _digit(c: str) -> bool:
    return "0" <= c <= "9"


def _upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _alpha(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _alnum(c: str) -> bool:
    return _digit(c) or _alpha(c)


def _hex(c: str) -> bool:
    return _digit(c) or "a" <= c <= "f" or "A" <= c <= "F"


def _local(c: str) -> bool:
    """A character of an email's local part."""
    return _alnum(c) or c in "._%+-"


def _token(c: str) -> bool:
    """A character of URL-safe tokens (keys, JWT segments)."""
    return _alnum(c) or c == "_" or c == "-"


def _held(c: str) -> bool:
    """A character a value can contain (spaces are handled apart)."""
    return _alnum(c) or c in "@._%+-:()"


# -- validators -----------------------------------------------------------------------


def _luhn(digits: str) -> bool:
    total = 0
    for pos, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if pos % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """Issuer ranges of the major networks, with their lengths."""
    n = len(digits)
    p2 = int(digits[:2])
    p3 = int(digits[:3])
    p4 = int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16  # Mastercard
    if p2 in (34, 37):
        return n == 15  # American Express
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return 16 <= n <= 19  # Discover
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19  # JCB
    if p2 in (36, 38) or 300 <= p3 <= 305:
        return 14 <= n <= 16  # Diners Club
    if p2 == 62:
        return 16 <= n <= 19  # UnionPay
    return False


# IBAN lengths by country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _iban_ok(chars: str) -> bool:
    rearranged = chars[4:] + chars[:4]
    remainder = 0
    for c in rearranged:
        value = ord(c) - 48 if _digit(c) else ord(c) - 55
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder == 1


# -- detectors: each returns the end of a value starting at i, or -1 ------------------


def _email(t: str, i: int, n: int) -> int:
    j = i
    while j < n and _local(t[j]):
        j += 1
    if j >= n or t[j] != "@" or j - i > 64 or t[j - 1] == "." or ".." in t[i:j]:
        return -1
    # Domain: labels of [A-Za-z0-9-], not starting or ending with '-', joined by '.'.
    k = j + 1
    labels = 0
    best = -1
    while True:
        start = k
        while k < n and (_alnum(t[k]) or t[k] == "-") and k - start < 63:
            k += 1
        if k == start or t[start] == "-" or t[k - 1] == "-":
            break
        labels += 1
        if labels >= 2 and k - start >= 2 and all(_alpha(c) for c in t[start:k]):
            best = k
        if k < n and t[k] == "." and k + 1 < n and _alnum(t[k + 1]):
            k += 1
            continue
        break
    if best < 0 or (best < n and (_alnum(t[best]) or t[best] in "-_")):
        return -1
    # `icon@2x.png`: a retina-image suffix, not an address.
    label = j + 1
    while label < n and _digit(t[label]):
        label += 1
    if label > j + 1 and label + 1 < n and t[label] == "x" and t[label + 1] == ".":
        return -1
    return best


def _ssn(t: str, i: int, n: int) -> int:
    if i + 11 > n:
        return -1
    sep = t[i + 3]
    if sep not in "- " or t[i + 6] != sep:
        return -1
    s = t[i : i + 11]
    d = s[0:3] + s[4:6] + s[7:11]
    if not all(_digit(c) for c in d):
        return -1
    area, group, serial = int(d[0:3]), int(d[3:5]), int(d[5:9])
    if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
        return -1
    end = i + 11
    if end < n and (_alnum(t[end]) or (t[end] in "-." and end + 1 < n and _digit(t[end + 1]))):
        return -1
    return end


def _card(t: str, i: int, n: int) -> int:
    """13-19 digits, optionally in groups joined by one kind of separator (` ` or `-`);
    the longest run of whole groups with a known issuer prefix and a valid Luhn sum."""
    digits: list[str] = []
    ends: list[tuple[int, int]] = []  # (end, digit count) after each group
    sep = ""
    j = i
    while j < n and len(digits) <= 19:
        if _digit(t[j]):
            digits.append(t[j])
            j += 1
            continue
        ends.append((j, len(digits)))
        if t[j] in " -" and j + 1 < n and _digit(t[j + 1]) and sep in ("", t[j]):
            sep = t[j]
            j += 1
            continue
        break
    else:
        if len(digits) <= 19:
            ends.append((j, len(digits)))
    s = "".join(digits)
    for end, count in reversed(ends):
        if not 13 <= count <= 19:
            continue
        if end < n and (_alpha(t[end]) or (t[end] in ".," and end + 1 < n and _digit(t[end + 1]))):
            continue
        if end < n and _digit(t[end]):
            continue
        if _card_prefix_ok(s[:count]) and _luhn(s[:count]):
            return -1 if _piece_of_number(t, i, end, n, False) else end
    return -1


# A card number has at most 19 digits: digit groups joined by spaces that hold more are
# values side by side (`+44 20 7946 0958 4111 1111 1111 1111`), not one number.
LONGEST_NUMBER = 19
# Only groups of four digits, as card numbers and IBANs are written, make a phone number
# a piece of a longer number: `call 020 7946 0958 24 hours` keeps its phone number.
CARD_GROUP = 4


def _piece_of_number(t: str, i: int, end: int, n: int, phone: bool) -> bool:
    """Is the number [i, end), in digit groups joined by spaces, a piece of a longer
    one? It is when it continues the groups of an IBAN (`NL66 LJYF 0376 4384 13`: an
    IBAN failing its check). A phone number, which has no check digit, is one too when
    it goes on, joined the same way, into groups before or after it that make a number
    of at most `LONGEST_NUMBER` digits (`5170 0113 1529 1397`: a card number failing
    its check). A card number passed its own check: a group before it is a label
    (`card #2 4111 1111 1111 1111`), digits after it an expiry date."""
    first = i
    while first < end and _digit(t[first]):
        first += 1
    spaced = first < end and t[first] == " "
    if spaced and _iban_groups_before(t, i):
        return True
    if not phone:
        return False
    last = end
    while last > first and _digit(t[last - 1]):
        last -= 1
    more = _digits_before(t, i) if spaced else 0
    if last > first and t[last - 1] == " ":
        more += _digits_after(t, end, n)
    return 0 < more <= LONGEST_NUMBER - sum(_digit(c) for c in t[i:end])


def _digits_before(t: str, i: int) -> int:
    """Digits in the groups of four joined by single spaces that run up to i. A run of
    digits tied to more characters is no such group: `_tied`."""
    count = 0
    k = i
    while k >= 2 and t[k - 1] == " " and _digit(t[k - 2]) and count <= LONGEST_NUMBER:
        g = k - 2
        while g > 0 and _digit(t[g - 1]):
            g -= 1
        if g > 0 and _tied(t[g - 1], t[g - 2] if g >= 2 else " "):
            break
        if k - 1 - g != CARD_GROUP:
            break  # "020 7946 0958 24 hours": not the groups of a card number
        count += k - 1 - g
        k = g
    return count


def _digits_after(t: str, end: int, n: int) -> int:
    """Digits in the groups of four joined by single spaces that follow `end` (`_tied`)."""
    count = 0
    k = end
    while k + 1 < n and t[k] == " " and _digit(t[k + 1]) and count <= LONGEST_NUMBER:
        g = k + 1
        while g < n and _digit(t[g]):
            g += 1
        if g < n and _tied(t[g], t[g + 1] if g + 1 < n else " "):
            break
        if g - k - 1 != CARD_GROUP:
            break
        count += g - k - 1
        k = g
    return count


def _tied(c: str, beyond: str) -> bool:
    """Does `c`, next to a run of digits, tie the run to a word or another value: a
    letter (`24h`), one of `-.:@_` and then a letter or digit (`123-45-6789`,
    `2001:db8::1`, `3.14`, `1234@example.com`), or `,` or `/` between digits (`1,299`,
    `09/29`)? These are what `_safe_end` holds back, so a stream scans them together
    with the digits."""
    return _alpha(c) or (c in "-.:@_" and _alnum(beyond)) or (c in ",/" and _digit(beyond))


def _iban_groups_before(t: str, i: int) -> bool:
    """Do groups of 4 capitals and digits, the first a country code and two check digits,
    run up to the space before i? (Eight groups at most: an IBAN has 34 characters.)"""
    k = i
    for _ in range(8):
        if k < 5 or t[k - 1] != " " or not all(_upper(c) or _digit(c) for c in t[k - 5 : k - 1]):
            return False
        g = k - 5
        if t[g : g + 2] in IBAN_LENGTHS and _digit(t[g + 2]) and _digit(t[g + 3]):
            return g == 0 or not _alnum(t[g - 1])
        k = g
    return False


def _ipv4(t: str, i: int, n: int) -> int:
    j = i
    for part in range(4):
        start = j
        while j < n and _digit(t[j]) and j - start < 4:
            j += 1
        length = j - start
        if length == 0 or length > 3 or (length > 1 and t[start] == "0"):
            return -1
        if int(t[start:j]) > 255:
            return -1
        if part < 3:
            if j >= n or t[j] != ".":
                return -1
            j += 1
    if j < n and (_alnum(t[j]) or (t[j] == "." and j + 1 < n and _digit(t[j + 1]))):
        return -1
    return j


def _ipv6(t: str, i: int, n: int) -> int:
    j = i
    groups = 0
    compressed = False
    has_digit = False
    if t.startswith("::", j):
        compressed = True
        j += 2
    while j < n:
        start = j
        while j < n and _hex(t[j]) and j - start < 5:
            j += 1
        length = j - start
        if length == 0:
            break
        if length > 4:
            return -1
        # An embedded IPv4 tail (::ffff:192.0.2.1) ends the address.
        if j + 1 < n and t[j] == "." and _digit(t[j + 1]) and groups <= 6:
            end = _ipv4(t, start, n)
            if end < 0:
                return -1
            return end if (compressed or groups == 6) else -1
        groups += 1
        has_digit = has_digit or any(_digit(c) for c in t[start:j])
        if j + 1 < n and t[j] == ":" and t[j + 1] == ":":
            if compressed:
                return -1
            compressed = True
            j += 2
            continue
        if j + 1 < n and t[j] == ":" and _hex(t[j + 1]):
            j += 1
            continue
        break
    if compressed:
        # `a::b`, `std::map`-like names: letters only, too few groups to be an address.
        if groups > 7 or groups == 0 or (groups < 3 and not has_digit):
            return -1
    elif groups != 8:
        return -1
    if j < n and (_alnum(t[j]) or t[j] == ":"):
        return -1
    return j


def _iban(t: str, i: int, n: int) -> int:
    if i + 4 > n or not (_upper(t[i]) and _upper(t[i + 1])):
        return -1
    length = IBAN_LENGTHS.get(t[i : i + 2])
    if length is None or not (_digit(t[i + 2]) and _digit(t[i + 3])):
        return -1
    chars = [t[i], t[i + 1], t[i + 2], t[i + 3]]
    j = i + 4
    grouped = j < n and t[j] == " "
    while len(chars) < length and j < n:
        c = t[j]
        if grouped and c == " " and (len(chars) % 4 == 0) and j + 1 < n and t[j + 1] != " ":
            j += 1
            continue
        if not (_upper(c) or _digit(c)):
            break
        chars.append(c)
        j += 1
    if len(chars) != length or (j < n and _alnum(t[j])):
        return -1
    return j if _iban_ok("".join(chars)) else -1


def _phone_groups(
    t: str, j: int, n: int, max_digits: int, max_group: int
) -> list[tuple[int, int, int, bool]]:
    """Digit groups from j, one (end, digits, groups, used a separator) per group.

    Groups are 1 to `max_group` digits joined by one of ` -.`; a parenthesised group
    (1-5 digits) may only be the first or second one, may follow the first group
    without a separator and be followed by ` ` or `-` (`+44 (0)20 ...`, `+49(0)89 ...`,
    `(020) 7946 ...`, `(0406)-812415`). Groups
    stop before the count would pass `max_digits`. The caller takes the longest
    prefix that forms a valid number.
    """
    out: list[tuple[int, int, int, bool]] = []
    digits = groups = 0
    sep_used = False
    while j < n:
        if t[j] == "(":
            if groups >= 2:
                break
            k = j + 1
            while k < n and _digit(t[k]) and k - j <= 5:
                k += 1
            if k == j + 1 or k >= n or t[k] != ")" or digits + k - j - 1 > max_digits:
                break
            digits += k - j - 1
            groups += 1
            j = k + 1
            sep_used = True
            out.append((j, digits, groups, sep_used))
            if j + 1 < n and t[j] in " -" and _digit(t[j + 1]):
                j += 1
            continue
        start = j
        while j < n and _digit(t[j]) and j - start <= max_group:
            j += 1
        if j == start or j - start > max_group or digits + j - start > max_digits:
            break
        digits += j - start
        groups += 1
        out.append((j, digits, groups, sep_used))
        if j + 1 < n and t[j] in " -." and (_digit(t[j + 1]) or t[j + 1] == "("):
            j += 1
            sep_used = True
            continue
        if j < n and t[j] == "(" and groups == 1:
            continue
        break
    return out


def _phone_end(t: str, end: int, n: int) -> int:
    """The end of a phone number whose digits end at `end`: past an extension of 1-5
    digits (`415-555-2671x1234`) if one follows; -1 when a letter or `-`/`.` and a digit
    follow (the digits go on into something else)."""
    if end + 1 < n and t[end] == "x" and _digit(t[end + 1]):
        k = end + 1
        while k < n and _digit(t[k]) and k - end <= 5:
            k += 1
        if not (k < n and _digit(t[k])):
            end = k
    if end < n and (_alnum(t[end]) or (t[end] in "-." and end + 1 < n and _digit(t[end + 1]))):
        return -1
    return end


def _international(t: str, j: int, n: int) -> int:
    """After `+` or `00`: a country code and subscriber number, 8-15 digits in all."""
    if j >= n or not "1" <= t[j] <= "9":
        return -1
    compact = _run(t, j, n, token=False)
    if 8 <= compact - j <= 15 and all(_digit(x) for x in t[j:compact]):
        return _phone_end(t, compact, n)  # +14155552671
    for end, digits, groups, _ in reversed(_phone_groups(t, j, n, 15, 12)):
        if digits >= 8 and groups >= 2 and (end := _phone_end(t, end, n)) >= 0:
            return end
    return -1


def _phone(t: str, i: int, n: int) -> int:
    """A phone number at i that is not a piece of a longer run of digit groups."""
    end = _phone_number(t, i, n)
    return -1 if end < 0 or _piece_of_number(t, i, end, n, True) else end


def _phone_number(t: str, i: int, n: int) -> int:
    c = t[i]
    if c == "+":
        return _international(t, i + 1, n)
    if t.startswith("00", i):
        k = i + 2
        if k < n and t[k] == " ":
            k += 1
        return _international(t, k, n)
    if c == "0" or (c == "(" and i + 1 < n and t[i + 1] == "0"):
        # National number with a trunk 0: 10-11 digits (`020 7946 0958`, `030 1234567`,
        # `(030) 1168569`, `0151 23456789`, `0345061053`); the digit after 0 is 1-9.
        first = i + 1 if c == "(" else i
        if first + 1 >= n or not "1" <= t[first + 1] <= "9":
            return -1
        compact = _run(t, first, n, token=False)
        if c == "0" and 10 <= compact - i <= 11 and all(_digit(x) for x in t[i:compact]):
            return _phone_end(t, compact, n)
        for end, digits, groups, sep in reversed(_phone_groups(t, i, n, 12, 8)):
            if digits < 10 or groups < 2 or not sep or (end := _phone_end(t, end, n)) < 0:
                continue
            k = first
            while k < n and _digit(t[k]):
                k += 1
            if 2 <= k - first <= 5:
                return end
        return -1
    end = _nanp(t, i, n)
    return _phone_end(t, end, n) if end >= 0 else -1


def _nanp(t: str, i: int, n: int) -> int:
    """(NXX) XXX-XXXX, NXX-XXX-XXXX, NXX.XXX.XXXX, NXX XXX XXXX, optionally after `1 `."""
    j = i
    if t[j] == "1" and j + 1 < n and t[j + 1] in " -.":
        j += 2
    sep = ""
    if j < n and t[j] == "(":
        if not (j + 5 <= n and t[j + 4] == ")" and _area(t, j + 1)):
            return -1
        j += 5
        if j < n and t[j] == " ":
            j += 1
    else:
        if not (_area(t, j) and j + 3 < n and t[j + 3] in " -."):
            return -1
        sep = t[j + 3]
        j += 4
    if j + 8 > n or t[j + 3] not in " -." or (sep and t[j + 3] != sep):
        return -1
    if not all(_digit(c) for c in t[j : j + 3] + t[j + 4 : j + 8]):
        return -1
    return j + 8


def _area(t: str, j: int) -> bool:
    return j + 3 <= len(t) and "2" <= t[j] <= "9" and _digit(t[j + 1]) and _digit(t[j + 2])


def _run(t: str, j: int, n: int, token: bool = True) -> int:
    while j < n and (_token(t[j]) if token else _alnum(t[j])):
        j += 1
    return j


def _secret(t: str, i: int, n: int, mask: int) -> tuple[int, int]:
    """A provider secret starting at i: (end, kind), or (-1, -1)."""
    c = t[i]
    if c == "s" and t.startswith("sk-", i):
        end = _run(t, i + 3, n)
        if t.startswith("sk-ant-", i):
            if end - (i + 7) >= 20 and mask >> ANTHROPIC_KEY & 1:
                return end, ANTHROPIC_KEY
        elif end - (i + 3) >= 20 and mask >> OPENAI_KEY & 1:
            return end, OPENAI_KEY
    elif c == "A" and mask >> AWS_KEY & 1 and t[i : i + 4] in _AWS_PREFIXES:
        end = i + 20
        if end <= n and all(_upper(x) or _digit(x) for x in t[i + 4 : end]):
            if end == n or not _token(t[end]):
                return end, AWS_KEY
    elif c == "g" and mask >> GITHUB & 1 and t[i : i + 4] in _GITHUB_PREFIXES:
        end = _run(t, i + 4, n, token=False)
        if 36 <= end - (i + 4) <= 255 and (end == n or not _token(t[end])):
            return end, GITHUB
    elif c == "g" and mask >> GITHUB & 1 and t.startswith("github_pat_", i):
        end = _run(t, i + 11, n)
        if end - (i + 11) >= 22:
            return end, GITHUB
    elif c == "g" and mask >> GITLAB & 1 and t.startswith("glpat-", i):
        end = _run(t, i + 6, n)
        if end - (i + 6) >= 20:
            return end, GITLAB
    elif c == "x" and mask >> SLACK & 1 and t.startswith("xox", i) and i + 4 < n:
        if t[i + 3] in "abposr" and t[i + 4] == "-":
            end = i + 5
            while end < n and (_alnum(t[end]) or t[end] == "-"):
                end += 1
            if end - (i + 5) >= 10:
                return end, SLACK
    elif c == "e" and mask >> JWT & 1 and t.startswith("eyJ", i):
        end = _jwt(t, i, n)
        if end > 0:
            return end, JWT
    return -1, -1


_AWS_PREFIXES = frozenset(
    {"AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA"}
)
_GITHUB_PREFIXES = frozenset({"ghp_", "gho_", "ghu_", "ghs_", "ghr_"})


def _jwt(t: str, i: int, n: int) -> int:
    def b64(j: int) -> int:
        while j < n and (_alnum(t[j]) or t[j] in "_-"):
            j += 1
        return j

    end1 = b64(i)
    if end1 - i < 10 or end1 >= n or t[end1] != "." or not t.startswith("eyJ", end1 + 1):
        return -1
    end2 = b64(end1 + 1)
    if end2 - end1 - 1 < 10 or end2 >= n or t[end2] != ".":
        return -1
    return b64(end2 + 1)


_PK_BEGIN = "-----BEGIN "
_PK_END = "-----END "


def _private_key(t: str, i: int, n: int, final: bool) -> int:
    """A private-key block: its end; n when unterminated and final; -2 when pending.

    PEM (`-----BEGIN RSA PRIVATE KEY-----`, also EC, DSA, OPENSSH, ENCRYPTED, or none)
    or OpenPGP armor (`-----BEGIN PGP PRIVATE KEY BLOCK-----`, whose header lines,
    base64 body and `=` checksum line hold no `-----`): up to the `-----` that closes the
    first END line after it.
    """
    line_end = t.find("\n", i)
    header = t[i : line_end if line_end >= 0 else n]
    close = header.find("-----", len(_PK_BEGIN))
    if close < 0:
        return -2 if line_end < 0 and not final and len(header) < 80 else -1
    if close + 5 > 80:  # a header a stream has given up on before its `-----` came
        return -1
    if not header[:close].endswith(("PRIVATE KEY", "PRIVATE KEY BLOCK")):
        return -1
    end_at = t.find(_PK_END, i + close)
    if end_at >= 0:
        tail = t.find("-----", end_at + len(_PK_END))
        if tail >= 0:
            return tail + 5
    return n if final else -2


# -- the scan -------------------------------------------------------------------------


def scan(text: str, mask: int, final: bool = True, start: int = 0) -> tuple[list[Match], int]:
    """Find values of the kinds in `mask`; see the module docstring."""
    t = text
    n = len(t)
    if start < 0:
        raise ValueError("start must not be negative")
    start = min(start, n)
    safe = n if final else _safe_end(t, start, n)
    matches: list[Match] = []
    i = start
    while i < n:
        c = t[i]
        end = -1
        kind = -1
        if not (_alnum(c) or c in "+(-:"):
            i += 1
            continue
        prev = t[i - 1] if i > 0 else " "
        if c == "-":
            if mask >> PRIVATE_KEY & 1 and t.startswith(_PK_BEGIN, i):
                end = _private_key(t, i, n, final)
                if end == -2:  # a key block still arriving: nothing from here is final
                    safe = min(safe, i)
                    break
                kind = PRIVATE_KEY
        elif not (_alnum(prev) or prev == "_"):
            end, kind = _secret(t, i, n, mask)
            if end < 0 and mask >> EMAIL & 1 and _alnum(c):
                end, kind = _email(t, i, n), EMAIL
            if end < 0 and mask >> IBAN & 1 and _upper(c):
                end, kind = _iban(t, i, n), IBAN
            number = _digit(c) and prev not in ".-+"
            if end < 0 and number and mask >> CARD & 1:
                end, kind = _card(t, i, n), CARD
            if end < 0 and number and mask >> SSN & 1:
                end, kind = _ssn(t, i, n), SSN
            if end < 0 and mask >> IPV6 & 1 and (_hex(c) or c == ":") and prev not in ":.":
                end, kind = _ipv6(t, i, n), IPV6
            if end < 0 and number and mask >> IPV4 & 1:
                end, kind = _ipv4(t, i, n), IPV4
            if end < 0 and mask >> PHONE & 1 and (_digit(c) or c in "+(") and prev not in ".-+":
                end, kind = _phone(t, i, n), PHONE
        if end > i:
            if end > safe:  # a value reaching into the unfinished tail is not final either
                safe = min(safe, i)
                break
            matches.append((i, end, kind))
            i = end
        else:
            i += 1
    return matches, safe


def _safe_end(t: str, start: int, n: int) -> int:
    """Start of the trailing run that more text could still turn into a value."""
    j = n
    while j > start:
        c = t[j - 1]
        if _held(c):
            j -= 1
        elif (
            c == " "
            and j - 2 >= start
            and (_digit(t[j - 2]) or t[j - 2] == ")" or _upper(t[j - 2]))
        ):
            j -= 1  # may continue a phone, card or IBAN group ("GB82 WEST 1234")
        elif c in ",/" and j - 2 >= start and _digit(t[j - 2]):
            # "4111111111111111,5" is no card, "0958 24/7" ends no run of digit groups
            # (`_tied`): wait for what follows
            j -= 1
        elif c == " " and j < n and (_digit(t[j]) or t[j] == "("):
            j -= 1
        else:
            break
    return j
