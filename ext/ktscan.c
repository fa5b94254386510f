/* ktproxy._ktscan: the PII / secret scanner of DESIGN §4 in C.
 *
 * This is a port of ktproxy/scan/reference.py, which is the specification: each
 * detector below is named like its Python counterpart and follows it line by line
 * (same order of detectors, same boundary rules), and the test suite checks that
 * both return the same matches for generated text. Change the Python first.
 *
 * Text. Every value the scanner knows is ASCII, so a code point >= 0x80 can only be
 * a character that matches nothing. The scanner therefore reads one byte per code
 * point: a 1-byte-kind str (ASCII or Latin-1) is read in place, and a 2- or 4-byte
 * kind str is narrowed once into a byte buffer in which every non-ASCII code point
 * becomes 0xFF. Offsets are code-point indices, exactly like Python's. Byte 0 is an
 * ordinary character, so no NUL-terminated C string function ever reads the text.
 *
 * Threads. Long texts are scanned with the GIL released: matches go into a C array
 * and the Python list is built once the GIL is held again. The module has no
 * global mutable state (multi-phase init; safe in subinterpreters and without GIL).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && !defined(KTSCAN_NO_SIMD)
#include <emmintrin.h> /* the block classifier */
#endif

#include "normalize.h"
#include "stream.h"

/* Kind numbers: the index of each name in ktproxy/scan/kinds.py KINDS. */
enum {
    EMAIL,
    PHONE,
    SSN,
    CARD,
    IPV4,
    IPV6,
    IBAN,
    OPENAI_KEY,
    ANTHROPIC_KEY,
    AWS_KEY,
    GITHUB,
    GITLAB,
    SLACK,
    JWT,
    PRIVATE_KEY,
    KIND_COUNT
};

static const char *const KIND_NAMES[KIND_COUNT] = {
    "EMAIL",        "PHONE",        "SSN",         "CREDIT_CARD", "IPV4",
    "IPV6",         "IBAN",         "OPENAI_KEY",  "ANTHROPIC_KEY", "AWS_ACCESS_KEY",
    "GITHUB_TOKEN", "GITLAB_TOKEN", "SLACK_TOKEN", "JWT",         "PRIVATE_KEY",
};

#define WANTS(mask, kind) (((mask) >> (kind)) & 1u)

/* Texts longer than this are scanned with the GIL released. */
#define RELEASE_GIL_ABOVE 4096

/* Non-ASCII code points of 2- and 4-byte strings become this byte. */
#define NON_ASCII 0xFF

typedef const unsigned char *Text;

/* -- character classes (ASCII only, like the reference's) --------------------------- */

/* Every byte's classes, computed at compile time. The scanner only ever indexes it with
 * a byte (the text is one byte per code point). */
enum {
    C_DIGIT = 1 << 0,
    C_UPPER = 1 << 1,
    C_LOWER = 1 << 2,
    C_HEX_LETTER = 1 << 3, /* a-f A-F */
    C_LOCAL = 1 << 4,      /* ._%+-     the rest of reference._local */
    C_TOKEN = 1 << 5,      /* _-        the rest of reference._token */
    C_HELD = 1 << 6,       /* @._%+-:() the rest of reference._held */
    C_START = 1 << 7,      /* +(-:      the rest of what reference.scan looks at */
};
#define C_ALNUM (C_DIGIT | C_UPPER | C_LOWER)

#define IN(c, lo, hi) ((c) >= (lo) && (c) <= (hi))
#define CLASS_OF(c)                                                                        \
    ((IN(c, '0', '9') ? C_DIGIT : 0) | (IN(c, 'A', 'Z') ? C_UPPER : 0) |                   \
     (IN(c, 'a', 'z') ? C_LOWER : 0) |                                                     \
     (IN(c, 'a', 'f') || IN(c, 'A', 'F') ? C_HEX_LETTER : 0) |                             \
     ((c) == '.' || (c) == '_' || (c) == '%' || (c) == '+' || (c) == '-' ? C_LOCAL : 0) |  \
     ((c) == '_' || (c) == '-' ? C_TOKEN : 0) |                                            \
     ((c) == '@' || (c) == '.' || (c) == '_' || (c) == '%' || (c) == '+' || (c) == '-' ||  \
              (c) == ':' || (c) == '(' || (c) == ')'                                       \
          ? C_HELD                                                                         \
          : 0) |                                                                           \
     ((c) == '+' || (c) == '(' || (c) == '-' || (c) == ':' ? C_START : 0))
#define CLASS_4(c) CLASS_OF(c), CLASS_OF(c + 1), CLASS_OF(c + 2), CLASS_OF(c + 3)
#define CLASS_16(c) CLASS_4(c), CLASS_4(c + 4), CLASS_4(c + 8), CLASS_4(c + 12)
#define CLASS_64(c) CLASS_16(c), CLASS_16(c + 16), CLASS_16(c + 32), CLASS_16(c + 48)

static const unsigned char CLASSES[256] = {CLASS_64(0), CLASS_64(64), CLASS_64(128),
                                           CLASS_64(192)};

static inline int
has(unsigned char c, int classes)
{
    return (CLASSES[c] & classes) != 0;
}

static inline int
is_digit(unsigned char c)
{
    return has(c, C_DIGIT);
}

static inline int
is_upper(unsigned char c)
{
    return has(c, C_UPPER);
}

static inline int
is_alpha(unsigned char c)
{
    return has(c, C_UPPER | C_LOWER);
}

static inline int
is_alnum(unsigned char c)
{
    return has(c, C_ALNUM);
}

static inline int
is_hex(unsigned char c)
{
    return has(c, C_DIGIT | C_HEX_LETTER);
}

/* reference._local: a character of an email's local part. */
static inline int
is_local(unsigned char c)
{
    return has(c, C_ALNUM | C_LOCAL);
}

/* reference._token: a character of URL-safe tokens (keys, JWT segments). */
static inline int
is_token(unsigned char c)
{
    return has(c, C_ALNUM | C_TOKEN);
}

/* reference._held: a character a value can contain (spaces are handled apart). */
static inline int
is_held(unsigned char c)
{
    return has(c, C_ALNUM | C_HELD);
}

/* The end of the run of 'a'-'z' from k (the words of prose). Eight bytes at a time
 * where the compiler has count-trailing-zeros and bytes are little-endian: one
 * branch per word instead of one per letter. */
static inline Py_ssize_t
skip_lower(Text t, Py_ssize_t k, Py_ssize_t n)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    while (k + 8 <= n) {
        uint64_t x;
        memcpy(&x, t + k, 8);
        /* Bit Twiddling Hacks' hasbetween(x, 'a' - 1, 'z' + 1): the high bit of each
         * byte that is in 'a'..'z'. Exact per byte: on the low 7 bits no sum or
         * difference carries into the next byte, and ~x drops bytes >= 0x80. */
        uint64_t low7 = x & (ones * 127);
        uint64_t above = ones * (127 + 'z' + 1) - low7;      /* high bit: byte <= 'z' */
        uint64_t below = low7 + ones * (127 - ('a' - 1));    /* high bit: byte >= 'a' */
        uint64_t other = ~(above & ~x & below) & highs;
        if (other != 0) {
            return k + __builtin_ctzll(other) / 8;
        }
        k += 8;
    }
#endif
    while (k < n && has(t[k], C_LOWER)) {
        k++;
    }
    return k;
}

/* The index of the lowest set bit of x, which is not 0. */
static inline int
lowest_bit(uint64_t x)
{
#if defined(__GNUC__)
    return __builtin_ctzll(x);
#else
    int k = 0;
    for (; (x & 1) == 0; x >>= 1) {
        k++;
    }
    return k;
#endif
}

/* The index of the highest set bit of x, which is not 0. */
static inline int
highest_bit(uint64_t x)
{
#if defined(__GNUC__)
    return 63 - __builtin_clzll(x);
#else
    int k = 63;
    for (; (x >> 63) == 0; x <<= 1) {
        k--;
    }
    return k;
#endif
}

/* `c in set` for one character; c == 0 is never in a set. */
static inline int
one_of(unsigned char c, const char *set)
{
    for (; *set; set++) {
        if ((unsigned char)*set == c) {
            return 1;
        }
    }
    return 0;
}

static inline int
all_digits(Text t, Py_ssize_t from, Py_ssize_t to)
{
    for (Py_ssize_t k = from; k < to; k++) {
        if (!is_digit(t[k])) {
            return 0;
        }
    }
    return 1;
}

/* `t[k] in seps and k + 1 < n and _digit(t[k + 1])`: a separator then more digits, which
 * make the number before it something else (a decimal, a longer number). */
static inline int
digits_go_on(Text t, Py_ssize_t k, Py_ssize_t n, const char *seps)
{
    return one_of(t[k], seps) && k + 1 < n && is_digit(t[k + 1]);
}

/* t.startswith(lit, i) for a string literal. */
#define STARTS_WITH(t, i, n, lit)                                                          \
    ((n) - (i) >= (Py_ssize_t)sizeof(lit) - 1 && memcmp((t) + (i), (lit), sizeof(lit) - 1) == 0)

/* t.find(needle, from) within t[:to]: the first position >= from where the whole
 * needle lies before `to`, or -1. */
static Py_ssize_t
find(Text t, Py_ssize_t from, Py_ssize_t to, const char *needle, Py_ssize_t len)
{
    Py_ssize_t last = to - len;
    while (from <= last) {
        size_t span = (size_t)(last - from + 1);
        const unsigned char *hit = memchr(t + from, (unsigned char)needle[0], span);
        if (hit == NULL) {
            return -1;
        }
        if (memcmp(hit, needle, (size_t)len) == 0) {
            return hit - t;
        }
        from = hit - t + 1;
    }
    return -1;
}

/* reference._run: the end of the run of token (or, with !token, alnum) characters. */
static Py_ssize_t
run(Text t, Py_ssize_t j, Py_ssize_t n, int token)
{
    while (j < n && (token ? is_token(t[j]) : is_alnum(t[j]))) {
        j++;
    }
    return j;
}

/* -- validators ------------------------------------------------------------------------ */

/* reference._luhn */
static int
luhn(const unsigned char *digits, int count)
{
    int total = 0;
    for (int pos = 0; pos < count; pos++) {
        int d = digits[count - 1 - pos] - '0';
        if (pos % 2 == 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        total += d;
    }
    return total % 10 == 0;
}

/* reference._card_prefix_ok: issuer ranges of the major networks, with their lengths. */
static int
card_prefix_ok(const unsigned char *digits, int n)
{
    int p2 = (digits[0] - '0') * 10 + (digits[1] - '0');
    int p3 = p2 * 10 + (digits[2] - '0');
    int p4 = p3 * 10 + (digits[3] - '0');
    if (digits[0] == '4') {
        return n == 13 || n == 16 || n == 19; /* Visa */
    }
    if ((51 <= p2 && p2 <= 55) || (2221 <= p4 && p4 <= 2720)) {
        return n == 16; /* Mastercard */
    }
    if (p2 == 34 || p2 == 37) {
        return n == 15; /* American Express */
    }
    if (p4 == 6011 || (644 <= p3 && p3 <= 649) || p2 == 65) {
        return 16 <= n && n <= 19; /* Discover */
    }
    if (3528 <= p4 && p4 <= 3589) {
        return 16 <= n && n <= 19; /* JCB */
    }
    if (p2 == 36 || p2 == 38 || (300 <= p3 && p3 <= 305)) {
        return 14 <= n && n <= 16; /* Diners Club */
    }
    if (p2 == 62) {
        return 16 <= n && n <= 19; /* UnionPay */
    }
    return 0;
}

/* reference.IBAN_LENGTHS: IBAN lengths by country (ISO 13616 registry). */
static const struct {
    char country[3];
    unsigned char length;
} IBAN_LENGTHS[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
    {"BG", 22}, {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28},
    {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24},
    {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
    {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23},
    {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32},
    {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24}, {"ME", 22},
    {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24},
    {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
    {"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28},
    {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
};

#define IBAN_MAX_LENGTH 32

/* IBAN_LENGTHS.get(t[i:i+2]), with 0 for None. */
static int
iban_length(Text t, Py_ssize_t i)
{
    for (size_t k = 0; k < sizeof IBAN_LENGTHS / sizeof IBAN_LENGTHS[0]; k++) {
        if (IBAN_LENGTHS[k].country[0] == t[i] && IBAN_LENGTHS[k].country[1] == t[i + 1]) {
            return IBAN_LENGTHS[k].length;
        }
    }
    return 0;
}

/* reference._iban_ok: mod-97 of the rearranged characters is 1. */
static int
iban_ok(const unsigned char *chars, int count)
{
    int remainder = 0;
    for (int k = 0; k < count; k++) {
        unsigned char c = chars[(k + 4) % count]; /* chars[4:] + chars[:4] */
        int value = is_digit(c) ? (int)c - 48 : (int)c - 55;
        remainder = (remainder * (value > 9 ? 100 : 10) + value) % 97;
    }
    return remainder == 1;
}

/* -- detectors: each returns the end of a value starting at i, or -1 ------------------- */

/* reference._email */
static Py_ssize_t
email(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i;
    while (j < n && is_local(t[j])) {
        j++;
        if (j - i > 64) { /* too long whatever follows; stops early on long runs */
            return -1;
        }
    }
    if (j >= n || t[j] != '@' || t[j - 1] == '.') {
        return -1;
    }
    for (Py_ssize_t k = i; k + 1 < j; k++) {
        if (t[k] == '.' && t[k + 1] == '.') {
            return -1;
        }
    }
    /* Domain: labels of [A-Za-z0-9-], not starting or ending with '-', joined by '.'. */
    Py_ssize_t k = j + 1;
    int labels = 0;
    Py_ssize_t best = -1;
    for (;;) {
        Py_ssize_t start = k;
        while (k < n && (is_alnum(t[k]) || t[k] == '-') && k - start < 63) {
            k++;
        }
        if (k == start || t[start] == '-' || t[k - 1] == '-') {
            break;
        }
        labels++;
        if (labels >= 2 && k - start >= 2) {
            int alpha = 1;
            for (Py_ssize_t m = start; m < k && alpha; m++) {
                alpha = is_alpha(t[m]);
            }
            if (alpha) {
                best = k;
            }
        }
        if (k < n && t[k] == '.' && k + 1 < n && is_alnum(t[k + 1])) {
            k++;
            continue;
        }
        break;
    }
    if (best < 0 || (best < n && (is_alnum(t[best]) || t[best] == '-' || t[best] == '_'))) {
        return -1;
    }
    /* `icon@2x.png`: a retina-image suffix, not an address. */
    Py_ssize_t label = j + 1;
    while (label < n && is_digit(t[label])) {
        label++;
    }
    if (label > j + 1 && label + 1 < n && t[label] == 'x' && t[label + 1] == '.') {
        return -1;
    }
    return best;
}

/* reference._ssn */
static Py_ssize_t
ssn(Text t, Py_ssize_t i, Py_ssize_t n)
{
    if (i + 11 > n) {
        return -1;
    }
    unsigned char sep = t[i + 3];
    if (!(sep == '-' || sep == ' ') || t[i + 6] != sep) {
        return -1;
    }
    if (!all_digits(t, i, i + 3) || !all_digits(t, i + 4, i + 6) || !all_digits(t, i + 7, i + 11)) {
        return -1;
    }
    int area = (t[i] - '0') * 100 + (t[i + 1] - '0') * 10 + (t[i + 2] - '0');
    int group = (t[i + 4] - '0') * 10 + (t[i + 5] - '0');
    int serial = (t[i + 7] - '0') * 1000 + (t[i + 8] - '0') * 100 + (t[i + 9] - '0') * 10 +
                 (t[i + 10] - '0');
    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) {
        return -1;
    }
    Py_ssize_t end = i + 11;
    if (end < n && (is_alnum(t[end]) || digits_go_on(t, end, n, "-."))) {
        return -1;
    }
    return end;
}

/* reference.LONGEST_NUMBER: a card number has at most 19 digits; digit groups joined by
 * spaces that hold more are values side by side, not one number. */
#define LONGEST_NUMBER 19
/* Only groups of four digits, as card numbers and IBANs are written, make a phone number
 * a piece of a longer number (reference.CARD_GROUP). */
#define CARD_GROUP 4

/* reference._tied: does c, next to a run of digits, tie the run to a word or another
 * value: a letter, one of `-.:@_` and then a letter or digit, or `,` or `/` between
 * digits? */
static inline int
tied(unsigned char c, unsigned char beyond)
{
    return is_alpha(c) || (one_of(c, "-.:@_") && is_alnum(beyond)) ||
           ((c == ',' || c == '/') && is_digit(beyond));
}

/* reference._digits_before: digits in the groups joined by single spaces that run up to
 * i. A run of digits tied to more characters is no such group. */
static int
digits_before(Text t, Py_ssize_t i)
{
    int count = 0;
    Py_ssize_t k = i;
    while (k >= 2 && t[k - 1] == ' ' && is_digit(t[k - 2]) && count <= LONGEST_NUMBER) {
        Py_ssize_t g = k - 2;
        while (g > 0 && is_digit(t[g - 1])) {
            g--;
        }
        if (g > 0 && tied(t[g - 1], g >= 2 ? t[g - 2] : ' ')) {
            break;
        }
        if (k - 1 - g != CARD_GROUP) {
            break; /* "020 7946 0958 24 hours": not the groups of a card number */
        }
        count += CARD_GROUP;
        k = g;
    }
    return count;
}

/* reference._digits_after: digits in the groups joined by single spaces that follow
 * `end`. */
static int
digits_after(Text t, Py_ssize_t end, Py_ssize_t n)
{
    int count = 0;
    Py_ssize_t k = end;
    while (k + 1 < n && t[k] == ' ' && is_digit(t[k + 1]) && count <= LONGEST_NUMBER) {
        Py_ssize_t g = k + 1;
        while (g < n && is_digit(t[g])) {
            g++;
        }
        if (g < n && tied(t[g], g + 1 < n ? t[g + 1] : ' ')) {
            break;
        }
        if (g - k - 1 != CARD_GROUP) {
            break;
        }
        count += CARD_GROUP;
        k = g;
    }
    return count;
}

/* reference._iban_groups_before: do groups of 4 capitals and digits, the first a country
 * code and two check digits, run up to the space before i? (Eight groups at most: an
 * IBAN has 34 characters.) */
static int
iban_groups_before(Text t, Py_ssize_t i)
{
    Py_ssize_t k = i;
    for (int round = 0; round < 8; round++) {
        if (k < 5 || t[k - 1] != ' ') {
            return 0;
        }
        for (Py_ssize_t m = k - 5; m < k - 1; m++) {
            if (!(is_upper(t[m]) || is_digit(t[m]))) {
                return 0;
            }
        }
        Py_ssize_t g = k - 5;
        if (is_upper(t[g]) && is_upper(t[g + 1]) && is_digit(t[g + 2]) && is_digit(t[g + 3]) &&
            iban_length(t, g) != 0) {
            return g == 0 || !is_alnum(t[g - 1]);
        }
        k = g;
    }
    return 0;
}

/* reference._piece_of_number: is the number [i, end), in digit groups joined by spaces,
 * a piece of a longer one? It is when it continues the groups of an IBAN (`NL66 LJYF
 * 0376 4384 13`). A phone number, which has no check digit, is one too when it goes on,
 * joined the same way, into groups before or after it that make a number of at most
 * LONGEST_NUMBER digits (`5170 0113 1529 1397`). A card number passed its own check. */
static int
piece_of_number(Text t, Py_ssize_t i, Py_ssize_t end, Py_ssize_t n, int phone)
{
    Py_ssize_t first = i;
    while (first < end && is_digit(t[first])) {
        first++;
    }
    int spaced = first < end && t[first] == ' ';
    if (spaced && iban_groups_before(t, i)) {
        return 1;
    }
    if (!phone) {
        return 0;
    }
    Py_ssize_t last = end;
    while (last > first && is_digit(t[last - 1])) {
        last--;
    }
    int more = spaced ? digits_before(t, i) : 0;
    if (last > first && t[last - 1] == ' ') {
        more += digits_after(t, end, n);
    }
    if (more == 0) {
        return 0;
    }
    int own = 0;
    for (Py_ssize_t k = i; k < end; k++) {
        own += is_digit(t[k]);
    }
    return 0 < more && more <= LONGEST_NUMBER - own;
}

/* reference._card: 13-19 digits, optionally in groups joined by one kind of separator
 * (` ` or `-`); the longest run of whole groups with a known issuer prefix and a valid
 * Luhn sum. */
static Py_ssize_t
card(Text t, Py_ssize_t i, Py_ssize_t n)
{
    unsigned char digits[20];
    int count = 0;
    /* (end, digit count) after each group; a separator is always followed by a digit,
     * so there are at most 20 groups. */
    Py_ssize_t ends[21];
    int counts[21];
    int groups = 0;
    unsigned char sep = 0; /* "" */
    Py_ssize_t j = i;
    for (;;) {
        if (!(j < n && count <= 19)) { /* the while loop's `else:` */
            if (count <= 19) {
                ends[groups] = j;
                counts[groups++] = count;
            }
            break;
        }
        if (is_digit(t[j])) {
            digits[count++] = t[j];
            j++;
            continue;
        }
        ends[groups] = j;
        counts[groups++] = count;
        if (digits_go_on(t, j, n, " -") && (sep == 0 || sep == t[j])) {
            sep = t[j];
            j++;
            continue;
        }
        break;
    }
    for (int g = groups - 1; g >= 0; g--) {
        Py_ssize_t end = ends[g];
        int c = counts[g];
        if (!(13 <= c && c <= 19)) {
            continue;
        }
        if (end < n && (is_alpha(t[end]) || digits_go_on(t, end, n, ".,"))) {
            continue;
        }
        if (end < n && is_digit(t[end])) {
            continue;
        }
        if (card_prefix_ok(digits, c) && luhn(digits, c)) {
            return piece_of_number(t, i, end, n, 0) ? -1 : end;
        }
    }
    return -1;
}

/* reference._ipv4 */
static Py_ssize_t
ipv4(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i;
    for (int part = 0; part < 4; part++) {
        Py_ssize_t start = j;
        while (j < n && is_digit(t[j]) && j - start < 4) {
            j++;
        }
        Py_ssize_t length = j - start;
        if (length == 0 || length > 3 || (length > 1 && t[start] == '0')) {
            return -1;
        }
        int value = 0;
        for (Py_ssize_t k = start; k < j; k++) {
            value = value * 10 + (t[k] - '0');
        }
        if (value > 255) {
            return -1;
        }
        if (part < 3) {
            if (j >= n || t[j] != '.') {
                return -1;
            }
            j++;
        }
    }
    if (j < n && (is_alnum(t[j]) || digits_go_on(t, j, n, "."))) {
        return -1;
    }
    return j;
}

/* reference._ipv6 */
static Py_ssize_t
ipv6(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i;
    int groups = 0;
    int compressed = 0;
    int has_digit = 0;
    if (STARTS_WITH(t, j, n, "::")) {
        compressed = 1;
        j += 2;
    }
    while (j < n) {
        Py_ssize_t start = j;
        while (j < n && is_hex(t[j]) && j - start < 5) {
            j++;
        }
        Py_ssize_t length = j - start;
        if (length == 0) {
            break;
        }
        if (length > 4) {
            return -1;
        }
        /* An embedded IPv4 tail (::ffff:192.0.2.1) ends the address. */
        if (j + 1 < n && t[j] == '.' && is_digit(t[j + 1]) && groups <= 6) {
            Py_ssize_t end = ipv4(t, start, n);
            if (end < 0) {
                return -1;
            }
            return (compressed || groups == 6) ? end : -1;
        }
        groups++;
        for (Py_ssize_t k = start; k < j && !has_digit; k++) {
            has_digit = is_digit(t[k]);
        }
        if (j + 1 < n && t[j] == ':' && t[j + 1] == ':') {
            if (compressed) {
                return -1;
            }
            compressed = 1;
            j += 2;
            continue;
        }
        if (j + 1 < n && t[j] == ':' && is_hex(t[j + 1])) {
            j++;
            continue;
        }
        break;
    }
    if (compressed) {
        /* `a::b`, `std::map`-like names: letters only, too few groups to be an address. */
        if (groups > 7 || groups == 0 || (groups < 3 && !has_digit)) {
            return -1;
        }
    }
    else if (groups != 8) {
        return -1;
    }
    if (j < n && (is_alnum(t[j]) || t[j] == ':')) {
        return -1;
    }
    return j;
}

/* reference._iban */
static Py_ssize_t
iban(Text t, Py_ssize_t i, Py_ssize_t n)
{
    if (i + 4 > n || !(is_upper(t[i]) && is_upper(t[i + 1]))) {
        return -1;
    }
    int length = iban_length(t, i);
    if (length == 0 || !(is_digit(t[i + 2]) && is_digit(t[i + 3]))) {
        return -1;
    }
    unsigned char chars[IBAN_MAX_LENGTH];
    memcpy(chars, t + i, 4);
    int count = 4;
    Py_ssize_t j = i + 4;
    int grouped = j < n && t[j] == ' ';
    while (count < length && j < n) {
        unsigned char c = t[j];
        if (grouped && c == ' ' && count % 4 == 0 && j + 1 < n && t[j + 1] != ' ') {
            j++;
            continue;
        }
        if (!(is_upper(c) || is_digit(c))) {
            break;
        }
        chars[count++] = (unsigned char)c;
        j++;
    }
    if (count != length || (j < n && is_alnum(t[j]))) {
        return -1;
    }
    return iban_ok(chars, count) ? j : -1;
}

/* One entry of reference._phone_groups' list. */
typedef struct {
    Py_ssize_t end;
    int digits;
    int groups;
    int sep_used;
} PhoneGroup;

/* Each group has at least one digit, and there are at most 15 digits. */
#define PHONE_MAX_GROUPS 16

/* reference._phone_groups: digit groups from j, one entry per group (written to out,
 * returns how many). Groups are 1 to max_group digits joined by one of ` -.`; a
 * parenthesised group (1-5 digits) may only be the first or second one, may follow the
 * first group without a separator and be followed by ` ` or `-` (`+44 (0)20 ...`,
 * `+49(0)89 ...`, `(020) 7946 ...`, `(0406)-812415`). Groups stop before the count would
 * pass max_digits. The caller takes the longest prefix that forms a valid number. */
static int
phone_groups(Text t, Py_ssize_t j, Py_ssize_t n, int max_digits, int max_group,
             PhoneGroup *out)
{
    int count = 0;
    int digits = 0, groups = 0, sep_used = 0;
    while (j < n) {
        if (t[j] == '(') {
            if (groups >= 2) {
                break;
            }
            Py_ssize_t k = j + 1;
            while (k < n && is_digit(t[k]) && k - j <= 5) {
                k++;
            }
            if (k == j + 1 || k >= n || t[k] != ')' || digits + (k - j - 1) > max_digits) {
                break;
            }
            digits += (int)(k - j - 1);
            groups++;
            j = k + 1;
            sep_used = 1;
            out[count++] = (PhoneGroup){j, digits, groups, sep_used};
            if (j + 1 < n && (t[j] == ' ' || t[j] == '-') && is_digit(t[j + 1])) {
                j++;
            }
            continue;
        }
        Py_ssize_t start = j;
        while (j < n && is_digit(t[j]) && j - start <= max_group) {
            j++;
        }
        if (j == start || j - start > max_group || digits + (j - start) > max_digits) {
            break;
        }
        digits += (int)(j - start);
        groups++;
        out[count++] = (PhoneGroup){j, digits, groups, sep_used};
        if (j + 1 < n && one_of(t[j], " -.") && (is_digit(t[j + 1]) || t[j + 1] == '(')) {
            j++;
            sep_used = 1;
            continue;
        }
        if (j < n && t[j] == '(' && groups == 1) {
            continue;
        }
        break;
    }
    return count;
}

/* reference._phone_end: the end of a phone number whose digits end at `end`: past an
 * extension of 1-5 digits (`415-555-2671x1234`) if one follows; -1 when a letter or
 * `-`/`.` and a digit follow (the digits go on into something else). */
static Py_ssize_t
phone_end(Text t, Py_ssize_t end, Py_ssize_t n)
{
    if (end + 1 < n && t[end] == 'x' && is_digit(t[end + 1])) {
        Py_ssize_t k = end + 1;
        while (k < n && is_digit(t[k]) && k - end <= 5) {
            k++;
        }
        if (!(k < n && is_digit(t[k]))) {
            end = k;
        }
    }
    if (end < n && (is_alnum(t[end]) || digits_go_on(t, end, n, "-."))) {
        return -1;
    }
    return end;
}

/* reference._area */
static int
area(Text t, Py_ssize_t j, Py_ssize_t n)
{
    return j + 3 <= n && '2' <= t[j] && t[j] <= '9' && is_digit(t[j + 1]) && is_digit(t[j + 2]);
}

/* reference._nanp: (NXX) XXX-XXXX, NXX-XXX-XXXX, NXX.XXX.XXXX, NXX XXX XXXX,
 * optionally after `1 `. */
static Py_ssize_t
nanp(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t j = i;
    if (t[j] == '1' && j + 1 < n && one_of(t[j + 1], " -.")) {
        j += 2;
    }
    unsigned char sep = 0; /* "" */
    if (j < n && t[j] == '(') {
        if (!(j + 5 <= n && t[j + 4] == ')' && area(t, j + 1, n))) {
            return -1;
        }
        j += 5;
        if (j < n && t[j] == ' ') {
            j++;
        }
    }
    else {
        if (!(area(t, j, n) && j + 3 < n && one_of(t[j + 3], " -."))) {
            return -1;
        }
        sep = t[j + 3];
        j += 4;
    }
    if (j + 8 > n || !one_of(t[j + 3], " -.") || (sep && t[j + 3] != sep)) {
        return -1;
    }
    if (!all_digits(t, j, j + 3) || !all_digits(t, j + 4, j + 8)) {
        return -1;
    }
    return j + 8;
}

/* reference._international: after `+` or `00`, a country code and subscriber number,
 * 8-15 digits in all. */
static Py_ssize_t
international(Text t, Py_ssize_t j, Py_ssize_t n)
{
    PhoneGroup found[PHONE_MAX_GROUPS];
    if (j >= n || !('1' <= t[j] && t[j] <= '9')) {
        return -1;
    }
    Py_ssize_t compact = run(t, j, n, 0);
    if (8 <= compact - j && compact - j <= 15 && all_digits(t, j, compact)) {
        return phone_end(t, compact, n); /* +14155552671 */
    }
    for (int g = phone_groups(t, j, n, 15, 12, found) - 1; g >= 0; g--) {
        Py_ssize_t end;
        if (found[g].digits >= 8 && found[g].groups >= 2 &&
            (end = phone_end(t, found[g].end, n)) >= 0) {
            return end;
        }
    }
    return -1;
}

/* reference._phone_number */
static Py_ssize_t
phone_number(Text t, Py_ssize_t i, Py_ssize_t n)
{
    unsigned char c = t[i];
    if (c == '+') {
        return international(t, i + 1, n);
    }
    if (STARTS_WITH(t, i, n, "00")) {
        Py_ssize_t k = i + 2;
        if (k < n && t[k] == ' ') {
            k++;
        }
        return international(t, k, n);
    }
    if (c == '0' || (c == '(' && i + 1 < n && t[i + 1] == '0')) {
        /* National number with a trunk 0: 10-11 digits (`020 7946 0958`, `030 1234567`,
         * `(030) 1168569`, `0151 23456789`, `0345061053`); the digit after 0 is 1-9. */
        PhoneGroup found[PHONE_MAX_GROUPS];
        Py_ssize_t first = c == '(' ? i + 1 : i;
        if (first + 1 >= n || !('1' <= t[first + 1] && t[first + 1] <= '9')) {
            return -1;
        }
        Py_ssize_t compact = run(t, first, n, 0);
        if (c == '0' && 10 <= compact - i && compact - i <= 11 && all_digits(t, i, compact)) {
            return phone_end(t, compact, n);
        }
        for (int g = phone_groups(t, i, n, 12, 8, found) - 1; g >= 0; g--) {
            Py_ssize_t end;
            if (found[g].digits < 10 || found[g].groups < 2 || !found[g].sep_used ||
                (end = phone_end(t, found[g].end, n)) < 0) {
                continue;
            }
            Py_ssize_t k = first;
            while (k < n && is_digit(t[k])) {
                k++;
            }
            if (2 <= k - first && k - first <= 5) {
                return end;
            }
        }
        return -1;
    }
    Py_ssize_t end = nanp(t, i, n);
    return end >= 0 ? phone_end(t, end, n) : -1;
}

/* reference._phone: a phone number at i that is not a piece of a longer run of digit
 * groups. */
static Py_ssize_t
phone(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t end = phone_number(t, i, n);
    return end < 0 || piece_of_number(t, i, end, n, 1) ? -1 : end;
}

/* reference._jwt: three base64url segments joined by '.'; the last may be empty. */
static Py_ssize_t
jwt(Text t, Py_ssize_t i, Py_ssize_t n)
{
    Py_ssize_t end1 = run(t, i, n, 1);
    if (end1 - i < 10 || end1 >= n || t[end1] != '.' || !STARTS_WITH(t, end1 + 1, n, "eyJ")) {
        return -1;
    }
    Py_ssize_t end2 = run(t, end1 + 1, n, 1);
    if (end2 - end1 - 1 < 10 || end2 >= n || t[end2] != '.') {
        return -1;
    }
    return run(t, end2 + 1, n, 1);
}

/* t[i:i+4] in reference._AWS_PREFIXES */
static int
aws_prefix(Text t, Py_ssize_t i, Py_ssize_t n)
{
    static const char prefixes[][5] = {"AKIA", "ASIA", "ABIA", "ACCA", "AGPA",
                                       "AIDA", "AROA", "AIPA", "ANPA", "ANVA"};
    if (n - i < 4) {
        return 0;
    }
    for (size_t k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++) {
        if (memcmp(t + i, prefixes[k], 4) == 0) {
            return 1;
        }
    }
    return 0;
}

/* t[i:i+4] in reference._GITHUB_PREFIXES: ghp_ gho_ ghu_ ghs_ ghr_ */
static int
github_prefix(Text t, Py_ssize_t i, Py_ssize_t n)
{
    return n - i >= 4 && t[i] == 'g' && t[i + 1] == 'h' && one_of(t[i + 2], "pousr") &&
           t[i + 3] == '_';
}

/* reference._secret: a provider secret starting at i; its end (and *kind), or -1. */
static Py_ssize_t
secret(Text t, Py_ssize_t i, Py_ssize_t n, unsigned mask, int *kind)
{
    unsigned char c = t[i];
    Py_ssize_t end;
    if (c == 's' && STARTS_WITH(t, i, n, "sk-")) {
        end = run(t, i + 3, n, 1);
        if (STARTS_WITH(t, i, n, "sk-ant-")) {
            if (end - (i + 7) >= 20 && WANTS(mask, ANTHROPIC_KEY)) {
                *kind = ANTHROPIC_KEY;
                return end;
            }
        }
        else if (end - (i + 3) >= 20 && WANTS(mask, OPENAI_KEY)) {
            *kind = OPENAI_KEY;
            return end;
        }
    }
    else if (c == 'A' && WANTS(mask, AWS_KEY) && aws_prefix(t, i, n)) {
        end = i + 20;
        if (end <= n) {
            for (Py_ssize_t k = i + 4; k < end; k++) {
                if (!(is_upper(t[k]) || is_digit(t[k]))) {
                    return -1;
                }
            }
            if (end == n || !is_token(t[end])) {
                *kind = AWS_KEY;
                return end;
            }
        }
    }
    else if (c == 'g' && WANTS(mask, GITHUB) && github_prefix(t, i, n)) {
        end = run(t, i + 4, n, 0);
        if (36 <= end - (i + 4) && end - (i + 4) <= 255 && (end == n || !is_token(t[end]))) {
            *kind = GITHUB;
            return end;
        }
    }
    else if (c == 'g' && WANTS(mask, GITHUB) && STARTS_WITH(t, i, n, "github_pat_")) {
        end = run(t, i + 11, n, 1);
        if (end - (i + 11) >= 22) {
            *kind = GITHUB;
            return end;
        }
    }
    else if (c == 'g' && WANTS(mask, GITLAB) && STARTS_WITH(t, i, n, "glpat-")) {
        end = run(t, i + 6, n, 1);
        if (end - (i + 6) >= 20) {
            *kind = GITLAB;
            return end;
        }
    }
    else if (c == 'x' && WANTS(mask, SLACK) && STARTS_WITH(t, i, n, "xox") && i + 4 < n) {
        if (one_of(t[i + 3], "abposr") && t[i + 4] == '-') {
            end = i + 5;
            while (end < n && (is_alnum(t[end]) || t[end] == '-')) {
                end++;
            }
            if (end - (i + 5) >= 10) {
                *kind = SLACK;
                return end;
            }
        }
    }
    else if (c == 'e' && WANTS(mask, JWT) && STARTS_WITH(t, i, n, "eyJ")) {
        end = jwt(t, i, n);
        if (end > 0) {
            *kind = JWT;
            return end;
        }
    }
    return -1;
}

#define PK_BEGIN "-----BEGIN "
#define PK_END "-----END "
#define PENDING (-2)

/* reference._private_key: a private-key block (PEM, or OpenPGP armor: `-----BEGIN PGP
 * PRIVATE KEY BLOCK-----`): its end; n when unterminated and final; PENDING (-2) when it
 * may still be arriving; -1 when not a key block. */
static Py_ssize_t
private_key(Text t, Py_ssize_t i, Py_ssize_t n, int final)
{
    Py_ssize_t line_end = find(t, i, n, "\n", 1);
    Py_ssize_t header_end = line_end >= 0 ? line_end : n;
    Py_ssize_t close = find(t, i + (Py_ssize_t)strlen(PK_BEGIN), header_end, "-----", 5);
    if (close < 0) {
        return (line_end < 0 && !final && header_end - i < 80) ? PENDING : -1;
    }
    if (close - i + 5 > 80) { /* a header a stream has given up on before its `-----` came */
        return -1;
    }
    /* header[:close].endswith(("PRIVATE KEY", "PRIVATE KEY BLOCK")), where
     * close - i >= len(PK_BEGIN) = 11 */
    if (memcmp(t + close - 11, "PRIVATE KEY", 11) != 0 &&
        !(close - i >= 17 && memcmp(t + close - 17, "PRIVATE KEY BLOCK", 17) == 0)) {
        return -1;
    }
    Py_ssize_t end_at = find(t, close, n, PK_END, (Py_ssize_t)strlen(PK_END));
    if (end_at >= 0) {
        Py_ssize_t tail = find(t, end_at + (Py_ssize_t)strlen(PK_END), n, "-----", 5);
        if (tail >= 0) {
            return tail + 5;
        }
    }
    return final ? n : PENDING;
}

/* -- where the scan stops ------------------------------------------------------------- */

/* The reference's scan loop steps through every character but calls its detectors only
 * at a few: a '-', or an alnum or one of `+(:` that does not follow a word character
 * (alnum or '_'); and most of those are the first letters of plain words, where nothing
 * is found (ends_plain_word). The C loop finds the other positions 64 characters at a
 * time, from bitmasks of character classes (bit j for t[b + j]), and jumps from one to
 * the next: no test per character, no stop per word, few mispredicted branches. */

/* Fast path, not in the reference. A letter at i, then lower-case letters up to k: the
 * reference finds no value at i when t[k] ends the held run (it is not `_held`, or
 * k == n), or is one of `.:)` that does (t[k + 1] is not `_held`, or k + 1 == n):
 * - secrets need a '-', '_' or capital where t[k] is (sk-, ghp_, glpat-, xoxb-, eyJ, AKIA);
 * - an IBAN needs a second capital;
 * - an email needs an '@' after its local part, which ends at k, or after a '.' at k + 1,
 *   on a character that is not `_held` (so no '@');
 * - IPv6 needs its first hex group, which ends at k at the latest, followed by a ':' and
 *   a hex digit or ':', or by a '.' and a digit;
 * - the other detectors need a digit, '+' or '(' at i.
 * Nor does it try anything in t[i+1..k]: letters or ':' after a letter, '.', ')' and
 * characters that are not `_held` start no value. Most words of prose end so. */
static inline int
ends_plain_word(Text t, Py_ssize_t k, Py_ssize_t n)
{
    if (k == n || !is_held(t[k])) {
        return 1;
    }
    return (t[k] == '.' || t[k] == ':' || t[k] == ')') && (k + 1 == n || !is_held(t[k + 1]));
}

typedef struct {
    uint64_t start; /* alnum or one of +(-: : what reference.scan looks at */
    uint64_t word;  /* alnum or '_': no value starts just after one, but at a '-' */
    uint64_t alpha;
    uint64_t lower; /* 'a'-'z' */
    uint64_t held;  /* reference._held */
    uint64_t stop;  /* one of .:) */
    uint64_t dash;  /* '-' */
} Classes64;

#if defined(__SSE2__) && !defined(KTSCAN_NO_SIMD) /* every x86-64 has SSE2 */

/* Each byte with lo <= byte <= hi (unsigned): the range is moved to start at -128, where
 * one signed comparison bounds it (wrapping bytes land above it). */
static inline __m128i
bytes_in(__m128i v, int lo, int hi)
{
    __m128i moved = _mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - lo)));
    return _mm_cmplt_epi8(moved, _mm_set1_epi8((char)(hi - lo - 127)));
}

static inline __m128i
bytes_eq(__m128i v, char c)
{
    return _mm_cmpeq_epi8(v, _mm_set1_epi8(c));
}

#define OR(a, b) _mm_or_si128((a), (b))
#define BITS(v, q) ((uint64_t)(unsigned)_mm_movemask_epi8(v) << (16 * (q)))

/* The classes of s[0..len-1], 16 bytes at a time (the same sets as the class table's);
 * s[0..63] are readable. */
static inline Classes64
classify64(const unsigned char *s, int len)
{
    Classes64 m = {0, 0, 0, 0, 0, 0, 0};
    for (int q = 0; 16 * q < len; q++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + 16 * q));
        __m128i alpha = bytes_in(OR(v, _mm_set1_epi8(0x20)), 'a', 'z');
        __m128i alnum = OR(bytes_in(v, '0', '9'), alpha);
        __m128i dash = bytes_eq(v, '-'), colon = bytes_eq(v, ':');
        __m128i start = OR(OR(alnum, dash), OR(colon, OR(bytes_eq(v, '+'), bytes_eq(v, '('))));
        __m128i word = OR(alnum, bytes_eq(v, '_'));
        __m128i stop = OR(colon, OR(bytes_eq(v, '.'), bytes_eq(v, ')')));
        __m128i held = OR(OR(start, word), OR(stop, OR(bytes_eq(v, '@'), bytes_eq(v, '%'))));
        m.start |= BITS(start, q);
        m.word |= BITS(word, q);
        m.alpha |= BITS(alpha, q);
        m.lower |= BITS(bytes_in(v, 'a', 'z'), q);
        m.held |= BITS(held, q);
        m.stop |= BITS(stop, q);
        m.dash |= BITS(dash, q);
    }
    return m;
}

#undef OR
#undef BITS

#else /* portable: a table of the classes of each byte, transposed 8 bytes at a time */

/* One bit per mask of Classes64, in its order. */
enum {
    F_START = 1 << 0,
    F_WORD = 1 << 1,
    F_ALPHA = 1 << 2,
    F_LOWER = 1 << 3,
    F_HELD = 1 << 4,
    F_STOP = 1 << 5,
    F_DASH = 1 << 6,
};
#define FLAGS_OF(c)                                                                        \
    ((CLASS_OF(c) & (C_ALNUM | C_START) ? F_START : 0) |                                   \
     (CLASS_OF(c) & C_ALNUM || (c) == '_' ? F_WORD : 0) |                                  \
     (CLASS_OF(c) & (C_UPPER | C_LOWER) ? F_ALPHA : 0) |                                   \
     (CLASS_OF(c) & C_LOWER ? F_LOWER : 0) | (CLASS_OF(c) & (C_ALNUM | C_HELD) ? F_HELD : 0) | \
     ((c) == '.' || (c) == ':' || (c) == ')' ? F_STOP : 0) | ((c) == '-' ? F_DASH : 0))
#define FLAGS_4(c) FLAGS_OF(c), FLAGS_OF(c + 1), FLAGS_OF(c + 2), FLAGS_OF(c + 3)
#define FLAGS_16(c) FLAGS_4(c), FLAGS_4(c + 4), FLAGS_4(c + 8), FLAGS_4(c + 12)
#define FLAGS_64(c) FLAGS_16(c), FLAGS_16(c + 16), FLAGS_16(c + 32), FLAGS_16(c + 48)

static const unsigned char FLAGS[256] = {FLAGS_64(0), FLAGS_64(64), FLAGS_64(128),
                                         FLAGS_64(192)};

static inline Classes64
classify64(const unsigned char *s, int len)
{
    Classes64 m = {0, 0, 0, 0, 0, 0, 0};
    for (int q = 0; 8 * q < len; q++) {
        /* Byte k of x holds the flags of s[8q + k]: an 8x8 bit matrix, which three
         * steps of Hacker's Delight's transpose8 turn so that byte f holds flag f of
         * each of the 8 bytes. */
        uint64_t x = 0;
        for (int k = 0; k < 8; k++) {
            x |= (uint64_t)FLAGS[s[8 * q + k]] << (8 * k);
        }
        uint64_t t;
        t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAu;
        x = x ^ t ^ (t << 7);
        t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCu;
        x = x ^ t ^ (t << 14);
        t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0u;
        x = x ^ t ^ (t << 28);
        m.start |= (x & 0xFF) << (8 * q);
        m.word |= (x >> 8 & 0xFF) << (8 * q);
        m.alpha |= (x >> 16 & 0xFF) << (8 * q);
        m.lower |= (x >> 24 & 0xFF) << (8 * q);
        m.held |= (x >> 32 & 0xFF) << (8 * q);
        m.stop |= (x >> 40 & 0xFF) << (8 * q);
        m.dash |= (x >> 48 & 0xFF) << (8 * q);
    }
    return m;
}

#endif

/* The positions from b to b + 63 that the scan tries (bit j for b + j): where the
 * reference's loop calls its detectors, less the first letters of plain words. Past the
 * end of the text, every byte counts as a NUL, which is in no class: no position there
 * is tried, and a word reaching the end of the text ends there. */
static inline uint64_t
block_at(Text t, Py_ssize_t b, Py_ssize_t n)
{
    Classes64 m;
    if (n - b >= 64) {
        m = classify64(t + b, 64);
    }
    else { /* the last block, read from a padded copy, and only as far as needed: short
            * texts (stream chunks) are the common case */
        unsigned char padded[64] = {0};
        memcpy(padded, t + b, (size_t)(n - b));
        m = classify64(padded, (int)(n - b));
    }
    /* `prev = t[i - 1] if i > 0 else " "`: the text before `start` counts. */
    int word_before = b > 0 && (is_alnum(t[b - 1]) || t[b - 1] == '_');
    uint64_t starts = m.start & ~(m.word << 1 | (uint64_t)word_before);
    uint64_t letters = starts & m.alpha;
    uint64_t tried = m.dash | (starts & ~letters);
    /* ends_plain_word for every position (t[b + 64] decides for the last) */
    int next_held = b + 64 < n && is_held(t[b + 64]);
    uint64_t not_held = ~m.held;
    uint64_t plain = not_held | (m.stop & (not_held >> 1 | (uint64_t)!next_held << 63));
    /* Where the lower-case letters after each letter end (its k): adding the bit after
     * the letter carries through the set bits of `lower` that follow, up to the first
     * clear one. No letter of `letters` lies between a letter and its k (they are all
     * after a letter), so the word of a k is the last letter before it. */
    uint64_t ends = (m.lower + (letters << 1)) & ~m.lower;
    for (uint64_t odd = ends & ~plain; odd != 0; odd &= odd - 1) {
        uint64_t end_bit = odd & -odd;
        tried |= (uint64_t)1 << highest_bit(letters & (end_bit - 1));
    }
    /* The last word's letters may run on past the block (no carry out is kept): then
     * every bit of `lower` after its letter is set. */
    if (letters != 0) {
        int last = highest_bit(letters);
        if ((m.lower | (((uint64_t)2 << last) - 1)) == ~(uint64_t)0 &&
            !ends_plain_word(t, skip_lower(t, b + 64, n), n)) {
            tried |= (uint64_t)1 << last;
        }
    }
    return tried;
}

/* -- the scan -------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t start;
    Py_ssize_t end;
    int kind;
} Match;

/* A growable array of matches; usable without the GIL (PyMem_Raw* allocator). */
typedef struct {
    Match *items;
    Py_ssize_t len;
    Py_ssize_t cap;
    Match first[16]; /* no allocation for the usual few matches per chunk */
} Matches;

static void
matches_init(Matches *m)
{
    m->items = m->first;
    m->len = 0;
    m->cap = (Py_ssize_t)(sizeof m->first / sizeof m->first[0]);
}

static void
matches_free(Matches *m)
{
    if (m->items != m->first) {
        PyMem_RawFree(m->items);
    }
    m->items = m->first;
}

static int
matches_push(Matches *m, Py_ssize_t start, Py_ssize_t end, int kind)
{
    if (m->len == m->cap) {
        if ((size_t)m->cap > PY_SSIZE_T_MAX / 2 / sizeof(Match)) {
            return -1;
        }
        Py_ssize_t cap = m->cap * 2;
        Match *items;
        if (m->items == m->first) {
            items = PyMem_RawMalloc((size_t)cap * sizeof(Match));
            if (items != NULL) {
                memcpy(items, m->first, sizeof m->first);
            }
        }
        else {
            items = PyMem_RawRealloc(m->items, (size_t)cap * sizeof(Match));
        }
        if (items == NULL) {
            return -1;
        }
        m->items = items;
        m->cap = cap;
    }
    m->items[m->len].start = start;
    m->items[m->len].end = end;
    m->items[m->len].kind = kind;
    m->len++;
    return 0;
}

/* reference._safe_end: start of the trailing run that more text could still turn
 * into a value. */
static Py_ssize_t
safe_end(Text t, Py_ssize_t start, Py_ssize_t n)
{
    Py_ssize_t j = n;
    while (j > start) {
        unsigned char c = t[j - 1];
        if (is_held(c)) {
            j--;
        }
        else if (c == ' ' && j - 2 >= start &&
                 (is_digit(t[j - 2]) || t[j - 2] == ')' || is_upper(t[j - 2]))) {
            j--; /* may continue a phone, card or IBAN group ("GB82 WEST 1234") */
        }
        else if ((c == ',' || c == '/') && j - 2 >= start && is_digit(t[j - 2])) {
            /* "4111111111111111,5" is no card, "0958 24/7" ends no run of digit groups
             * (tied): wait for what follows */
            j--;
        }
        else if (c == ' ' && j < n && (is_digit(t[j]) || t[j] == '(')) {
            j--;
        }
        else {
            break;
        }
    }
    return j;
}

/* The body of reference.scan's loop at a position it tries (see block_at): the end of
 * the value found there and its *kind, or -1, or PENDING for a private-key block that is
 * still arriving. */
static Py_ssize_t
detect(Text t, Py_ssize_t i, Py_ssize_t n, unsigned mask, int final, int *kind)
{
    unsigned char c = t[i];
    unsigned char prev = i > 0 ? t[i - 1] : ' ';
    Py_ssize_t end = -1;
    if (c == '-') {
        if (WANTS(mask, PRIVATE_KEY) && STARTS_WITH(t, i, n, PK_BEGIN)) {
            *kind = PRIVATE_KEY;
            return private_key(t, i, n, final);
        }
        return -1;
    }
    /* elif not (_alnum(prev) or prev == "_"): block_at gives no other position */
    if (c == '(' && !(i + 1 < n && is_digit(t[i + 1]))) {
        return -1; /* fast path: at a '(' only a phone number starts, and a digit follows */
    }
    end = secret(t, i, n, mask, kind);
    if (end < 0 && WANTS(mask, EMAIL) && is_alnum(c)) {
        end = email(t, i, n);
        *kind = EMAIL;
    }
    if (end < 0 && WANTS(mask, IBAN) && is_upper(c)) {
        end = iban(t, i, n);
        *kind = IBAN;
    }
    int number = is_digit(c) && !one_of(prev, ".-+");
    if (end < 0 && number && WANTS(mask, CARD)) {
        end = card(t, i, n);
        *kind = CARD;
    }
    if (end < 0 && number && WANTS(mask, SSN)) {
        end = ssn(t, i, n);
        *kind = SSN;
    }
    if (end < 0 && WANTS(mask, IPV6) && (is_hex(c) || c == ':') && !one_of(prev, ":.")) {
        end = ipv6(t, i, n);
        *kind = IPV6;
    }
    if (end < 0 && number && WANTS(mask, IPV4)) {
        end = ipv4(t, i, n);
        *kind = IPV4;
    }
    if (end < 0 && WANTS(mask, PHONE) && (is_digit(c) || c == '+' || c == '(') &&
        !one_of(prev, ".-+")) {
        end = phone(t, i, n);
        *kind = PHONE;
    }
    return end;
}

/* reference.scan, on 0 <= start <= n. Returns safe_end, or -1 when the match array
 * could not grow (no exception is set: this may run without the GIL). The reference
 * moves on by one character when it finds nothing and past a value when it finds one;
 * here the positions to try come from 64-character blocks (block_at), and a value
 * starts the next block at its end. */
static Py_ssize_t
scan_text(Text t, Py_ssize_t n, unsigned mask, int final, Py_ssize_t start, Matches *out)
{
    Py_ssize_t safe = final ? n : safe_end(t, start, n);
    Py_ssize_t i = start;
    while (i < n) {
        Py_ssize_t next = i + 64;
        for (uint64_t tried = block_at(t, i, n); tried != 0; tried &= tried - 1) {
            Py_ssize_t at = i + lowest_bit(tried);
            int kind = -1;
            Py_ssize_t end = detect(t, at, n, mask, final, &kind);
            if (end == PENDING) { /* a key block still arriving: nothing from here is final */
                return safe < at ? safe : at;
            }
            if (end > at) {
                if (end > safe) { /* reaching into the unfinished tail: not final either */
                    return safe < at ? safe : at;
                }
                if (matches_push(out, at, end, kind) < 0) {
                    return -1;
                }
                next = end;
                break;
            }
        }
        i = next;
    }
    return safe;
}

/* -- the Python function --------------------------------------------------------------- */

/* One byte per code point: ASCII kept, anything else NON_ASCII. */
static void
narrow(int kind, const void *data, Py_ssize_t n, unsigned char *out)
{
    if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *s = data;
        for (Py_ssize_t k = 0; k < n; k++) {
            out[k] = s[k] < 0x80 ? (unsigned char)s[k] : NON_ASCII;
        }
    }
    else {
        const Py_UCS4 *s = data;
        for (Py_ssize_t k = 0; k < n; k++) {
            out[k] = s[k] < 0x80 ? (unsigned char)s[k] : NON_ASCII;
        }
    }
}

typedef struct {
    int kind;
    const void *data;
    unsigned char *buffer; /* n bytes for 2- and 4-byte kinds, else NULL */
    Py_ssize_t n;
    unsigned mask;
    int final;
    Py_ssize_t start;
    Matches *out;
} ScanJob;

static Py_ssize_t
run_job(const ScanJob *job)
{
    Text t = job->data;
    if (job->buffer != NULL) {
        narrow(job->kind, job->data, job->n, job->buffer);
        t = job->buffer;
    }
    return scan_text(t, job->n, job->mask, job->final, job->start, job->out);
}

static const char *const ARG_NAMES[] = {"text", "mask", "final", "start"};
#define ARG_COUNT 4
#define ARG_REQUIRED 2

/* scan(text, mask, final=True, start=0): positional or keyword, like a Python def. */
static int
parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **values)
{
    if (nargs > ARG_COUNT) {
        PyErr_Format(PyExc_TypeError, "scan() takes at most %d arguments (%zd given)", ARG_COUNT,
                     nargs);
        return -1;
    }
    for (Py_ssize_t k = 0; k < nargs; k++) {
        values[k] = args[k];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int slot = 0;
        while (slot < ARG_COUNT && PyUnicode_CompareWithASCIIString(name, ARG_NAMES[slot]) != 0) {
            slot++;
        }
        if (slot == ARG_COUNT) {
            PyErr_Format(PyExc_TypeError, "scan() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (values[slot] != NULL) {
            PyErr_Format(PyExc_TypeError, "scan() got multiple values for argument '%s'",
                         ARG_NAMES[slot]);
            return -1;
        }
        values[slot] = args[nargs + k];
    }
    for (int k = 0; k < ARG_REQUIRED; k++) {
        if (values[k] == NULL) {
            PyErr_Format(PyExc_TypeError, "scan() missing required argument '%s' (pos %d)",
                         ARG_NAMES[k], k + 1);
            return -1;
        }
    }
    return 0;
}

/* The start argument: ValueError when negative, clamped to len(text) above it. */
static int
parse_start(PyObject *value, Py_ssize_t n, Py_ssize_t *start)
{
    PyObject *index = PyNumber_Index(value);
    if (index == NULL) {
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && v < 0)) {
        PyErr_SetString(PyExc_ValueError, "scan() start must be >= 0");
        return -1;
    }
    *start = (overflow > 0 || v > (long long)n) ? n : (Py_ssize_t)v;
    return 0;
}

static PyObject *
match_tuple(const Match *m)
{
    PyObject *start = PyLong_FromSsize_t(m->start);
    PyObject *end = PyLong_FromSsize_t(m->end);
    PyObject *kind = PyLong_FromLong(m->kind);
    PyObject *tuple = NULL;
    if (start != NULL && end != NULL && kind != NULL) {
        tuple = PyTuple_Pack(3, start, end, kind);
    }
    Py_XDECREF(start);
    Py_XDECREF(end);
    Py_XDECREF(kind);
    return tuple;
}

static PyObject *
build_result(const Matches *found, Py_ssize_t safe)
{
    PyObject *list = PyList_New(found->len);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < found->len; k++) {
        PyObject *item = match_tuple(&found->items[k]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, item);
    }
    return Py_BuildValue("(Nn)", list, safe);
}

PyDoc_STRVAR(scan_doc,
             "scan(text, mask, final=True, start=0)\n"
             "--\n\n"
             "Find the values of the kinds selected by `mask` in `text`.\n\n"
             "Returns (matches, safe_end): matches are non-overlapping (start, end, kind)\n"
             "triples in order, offsets being str indices. Same results as\n"
             "ktproxy.scan.reference.scan; see its module docstring.");

static PyObject *
ktscan_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    (void)module;
    PyObject *values[ARG_COUNT] = {NULL, NULL, NULL, NULL};
    if (parse_args(args, nargs, kwnames, values) < 0) {
        return NULL;
    }
    PyObject *text = values[0];
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "scan() argument 'text' must be str, not %.200s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
#endif
    /* Only bits 0..KIND_COUNT-1 matter, as in the reference's `mask >> kind & 1`. */
    PyObject *mask_index = PyNumber_Index(values[1]);
    if (mask_index == NULL) {
        return NULL;
    }
    unsigned long long bits = PyLong_AsUnsignedLongLongMask(mask_index);
    unsigned mask = (unsigned)(bits & ((1u << KIND_COUNT) - 1));
    Py_DECREF(mask_index);
    if (PyErr_Occurred()) {
        return NULL;
    }
    int final = 1;
    if (values[2] != NULL && (final = PyObject_IsTrue(values[2])) < 0) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t start = 0;
    if (values[3] != NULL && parse_start(values[3], n, &start) < 0) {
        return NULL;
    }

    Matches found;
    matches_init(&found);
    unsigned char small[256];
    ScanJob job = {PyUnicode_KIND(text), PyUnicode_DATA(text), NULL, n, mask, final, start, &found};
    if (job.kind != PyUnicode_1BYTE_KIND) {
        job.buffer = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
        if (job.buffer == NULL) {
            return PyErr_NoMemory();
        }
    }
    Py_ssize_t safe;
    if (n > RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        safe = run_job(&job);
        Py_END_ALLOW_THREADS
    }
    else {
        safe = run_job(&job);
    }
    if (job.buffer != NULL && job.buffer != small) {
        PyMem_Free(job.buffer);
    }
    PyObject *result = safe < 0 ? PyErr_NoMemory() : build_result(&found, safe);
    matches_free(&found);
    return result;
}

/* -- the module ------------------------------------------------------------------------ */

static int
ktscan_exec(PyObject *module)
{
    /* The kind numbering, so the Python side can check it agrees with kinds.KINDS. */
    PyObject *kinds = PyTuple_New(KIND_COUNT);
    if (kinds == NULL) {
        return -1;
    }
    for (int k = 0; k < KIND_COUNT; k++) {
        PyObject *name = PyUnicode_FromString(KIND_NAMES[k]);
        if (name == NULL) {
            Py_DECREF(kinds);
            return -1;
        }
        PyTuple_SET_ITEM(kinds, k, name);
    }
    int rc = PyModule_AddObjectRef(module, "KINDS", kinds);
    Py_DECREF(kinds);
    return rc;
}

static PyMethodDef ktscan_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))ktscan_scan, METH_FASTCALL | METH_KEYWORDS, scan_doc},
    {"normalize", ktscan_normalize, METH_O, ktscan_normalize_doc},
    {"normalize_with_offsets", ktscan_normalize_with_offsets, METH_O,
     ktscan_normalize_with_offsets_doc},
    {"chunk_text", ktscan_chunk_text, METH_O, ktscan_chunk_text_doc},
    {"splice_text", (PyCFunction)(void (*)(void))ktscan_splice_text, METH_FASTCALL,
     ktscan_splice_text_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot ktscan_slots[] = {
    {Py_mod_exec, (void *)ktscan_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef ktscan_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "ktproxy._ktscan",
    .m_doc = "The PII / secret scanner in C; ktproxy.scan.reference is its specification.",
    .m_size = 0,
    .m_methods = ktscan_methods,
    .m_slots = ktscan_slots,
};

PyMODINIT_FUNC
PyInit__ktscan(void)
{
    return PyModuleDef_Init(&ktscan_module);
}
