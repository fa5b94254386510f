/* ktproxy._ktscan.chunk_text / splice_text: the streaming fast path of DESIGN §4.
 *
 * This is a port of ktproxy/wire/chunk_text.py, whose chunk_text_py and splice_text_py
 * are the specification. chunk_text reads one SSE event in a single pass with a small
 * strict JSON reader and returns the text delta of a plain one-choice chunk. It is
 * deliberately stricter than msgspec, which the reference decodes with: anything it does
 * not fully check — escaped or repeated keys among the ones it reads, integers of more
 * than 18 digits, nesting deeper than MAX_DEPTH, invalid or overlong UTF-8, lone
 * surrogate escapes, whitespace other than space and tab — gives None, and the caller
 * falls back to the reference's general path. So whenever this returns a view the
 * reference returns the same one; the test suite checks that on generated events.
 *
 * Every input is bytes of any content: the reader never reads past the end of the
 * buffer and allocates nothing but its results. The module keeps no state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "stream.h"

/* Containers nested deeper than this are not parsed (None). */
#define MAX_DEPTH 64

/* Integers the reader converts: at most this many digits (fits a long long). */
#define MAX_INT_DIGITS 18

typedef const unsigned char *Ptr;

/* A JSON string token as read: [start, end) spans its quotes. */
typedef struct {
    Ptr start;
    Ptr end;
    int escaped; /* holds a backslash escape */
    int plain;   /* ASCII without escapes: the bytes are the text */
    int orjson;  /* written as orjson writes this text (no \u, no \/ escape) */
} Str;

/* What chunk_text reads of one chunk. */
typedef struct {
    long long index;
    Ptr content_key; /* the opening quote of the delta's "content" key, or NULL */
    Str content;     /* valid when has_text */
    int has_text;    /* the content is a string (not null) */
    /* For the reference's byte tests, counted while reading (see spliceable). */
    int backslash_u;     /* the bytes \u occur (in a string: nowhere else can they) */
    int content_strings; /* occurrences of the bytes "content" */
} Chunk;

/* 1 for bytes a string may hold as they are (printable ASCII except '"' and '\\'). */
static const unsigned char PLAIN[256] = {
    /* 0x00 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x10 */ 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x20 */ 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x30 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x40 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x50 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    /* 0x60 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x70 */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x80 and above: 0 (UTF-8, checked apart) */
};

static Ptr
skip_ws(Ptr p, Ptr end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

static int
hex4(Ptr p, Ptr end, unsigned *out)
{
    if (end - p < 4) {
        return -1;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        }
        else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        }
        else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        }
        else {
            return -1;
        }
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* One UTF-8 sequence starting at a byte >= 0x80, strictly (no overlong forms, no
 * surrogates, nothing above U+10FFFF): its length and code point, or 0 if invalid. */
static int
utf8_char(Ptr p, Ptr end, Py_UCS4 *cp)
{
    unsigned c = p[0];
    Py_ssize_t left = end - p;
    if (c >= 0xC2 && c <= 0xDF) {
        if (left < 2 || (p[1] & 0xC0) != 0x80) {
            return 0;
        }
        *cp = (c & 0x1F) << 6 | (p[1] & 0x3F);
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) {
            return 0;
        }
        Py_UCS4 v = (c & 0x0F) << 12 | (p[1] & 0x3F) << 6 | (p[2] & 0x3F);
        if (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF)) {
            return 0;
        }
        *cp = v;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80) {
            return 0;
        }
        Py_UCS4 v = (c & 0x07) << 18 | (p[1] & 0x3F) << 12 | (p[2] & 0x3F) << 6 | (p[3] & 0x3F);
        if (v < 0x10000 || v > 0x10FFFF) {
            return 0;
        }
        *cp = v;
        return 4;
    }
    return 0;
}

/* The character of the escape at p (just after the backslash) and the bytes it takes,
 * or 0 if it is not a valid escape (lone surrogates included). */
static int
escape_char(Ptr p, Ptr end, Py_UCS4 *cp)
{
    if (p >= end) {
        return 0;
    }
    switch (*p) {
    case '"': *cp = '"'; return 1;
    case '\\': *cp = '\\'; return 1;
    case '/': *cp = '/'; return 1;
    case 'b': *cp = '\b'; return 1;
    case 'f': *cp = '\f'; return 1;
    case 'n': *cp = '\n'; return 1;
    case 'r': *cp = '\r'; return 1;
    case 't': *cp = '\t'; return 1;
    case 'u': break;
    default: return 0;
    }
    unsigned hi, lo;
    if (hex4(p + 1, end, &hi) < 0) {
        return 0;
    }
    if (hi < 0xD800 || hi > 0xDFFF) {
        *cp = hi;
        return 5;
    }
    if (hi > 0xDBFF || end - p < 11 || p[5] != '\\' || p[6] != 'u' ||
        hex4(p + 7, end, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF) {
        return 0; /* a lone or reversed surrogate */
    }
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return 11;
}

/* Read the string token at p (which is '"'); 0, or -1 if it is not a valid string. */
static int
read_string(Ptr p, Ptr end, Str *s, Chunk *chunk)
{
    s->start = p++;
    s->escaped = 0;
    s->plain = 1;
    s->orjson = 1;
    for (;;) {
        while (p < end && PLAIN[*p]) {
            p++;
        }
        if (p >= end) {
            return -1;
        }
        unsigned c = *p;
        if (c == '"') {
            s->end = p + 1;
            /* The bytes "content" can only end a string: as the whole string, or after an
             * escaped quote (anywhere else, the quote would be the string's end). */
            if (s->end - s->start >= 9 && memcmp(s->end - 9, "\"content\"", 9) == 0) {
                chunk->content_strings++;
            }
            return 0;
        }
        Py_UCS4 cp;
        int n;
        if (c == '\\') {
            n = escape_char(p + 1, end, &cp);
            if (n == 0) {
                return -1;
            }
            if (p[1] == 'u' || p[1] == '/') {
                s->orjson = 0;
            }
            if (p[1] == 'u' || (p[1] == '\\' && p + 2 < end && p[2] == 'u')) {
                chunk->backslash_u = 1;
            }
            s->escaped = 1;
            s->plain = 0;
            p += 1 + n;
        }
        else if (c >= 0x80) {
            n = utf8_char(p, end, &cp);
            if (n == 0) {
                return -1;
            }
            s->plain = 0;
            p += n;
        }
        else {
            return -1; /* a control character */
        }
    }
}

/* The str a string token decodes to (read_string accepted it). */
static PyObject *
decode_string(const Str *s)
{
    Ptr p = s->start + 1, end = s->end - 1;
    if (s->plain) {
        PyObject *out = PyUnicode_New(end - p, 127);
        if (out != NULL) {
            memcpy(PyUnicode_DATA(out), p, (size_t)(end - p));
        }
        return out;
    }
    /* Two passes: count and widest character, then write. */
    Py_ssize_t count = 0;
    Py_UCS4 widest = 0, cp = 0;
    for (Ptr q = p; q < end; count++) {
        if (*q == '\\') {
            q += 1 + escape_char(q + 1, end, &cp);
        }
        else if (*q >= 0x80) {
            q += utf8_char(q, end, &cp);
        }
        else {
            cp = *q++;
        }
        if (cp > widest) {
            widest = cp;
        }
    }
    PyObject *out = PyUnicode_New(count, widest);
    if (out == NULL) {
        return NULL;
    }
    int kind = PyUnicode_KIND(out);
    void *data = PyUnicode_DATA(out);
    Py_ssize_t i = 0;
    for (Ptr q = p; q < end; i++) {
        if (*q == '\\') {
            q += 1 + escape_char(q + 1, end, &cp);
        }
        else if (*q >= 0x80) {
            q += utf8_char(q, end, &cp);
        }
        else {
            cp = *q++;
        }
        PyUnicode_WRITE(kind, data, i, cp);
    }
    return out;
}

/* A JSON number at p: its end, or NULL. `integer` asks for a plain integer of at most
 * MAX_INT_DIGITS digits (stored in *value), anything else being NULL. */
static Ptr
read_number(Ptr p, Ptr end, int integer, long long *value)
{
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    Ptr digits = p;
    if (p < end && *p == '0') {
        p++;
    }
    else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    else {
        return NULL;
    }
    if (integer) {
        if (p - digits > MAX_INT_DIGITS || (p < end && (*p == '.' || *p == 'e' || *p == 'E'))) {
            return NULL;
        }
        long long v = 0;
        for (Ptr q = digits; q < p; q++) {
            v = v * 10 + (*q - '0');
        }
        *value = negative ? -v : v;
        return p;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    return p;
}

static Ptr
read_literal(Ptr p, Ptr end, const char *word, Py_ssize_t n)
{
    if (end - p < n || memcmp(p, word, (size_t)n) != 0) {
        return NULL;
    }
    return p + n;
}

#define IS_NULL(p, end) ((end) - (p) >= 4 && memcmp((p), "null", 4) == 0)

/* Any JSON value at p, checked: its end, or NULL. */
static Ptr
skip_value(Ptr p, Ptr end, int depth, Chunk *chunk)
{
    if (p >= end) {
        return NULL;
    }
    switch (*p) {
    case '"': {
        Str s;
        return read_string(p, end, &s, chunk) < 0 ? NULL : s.end;
    }
    case '{':
    case '[': {
        unsigned char close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        if (depth >= MAX_DEPTH) {
            return NULL;
        }
        p = skip_ws(p + 1, end);
        if (p < end && *p == close) {
            return p + 1;
        }
        for (;;) {
            if (object) {
                Str key;
                if (p >= end || *p != '"' || read_string(p, end, &key, chunk) < 0) {
                    return NULL;
                }
                p = skip_ws(key.end, end);
                if (p >= end || *p != ':') {
                    return NULL;
                }
                p = skip_ws(p + 1, end);
            }
            p = skip_value(p, end, depth + 1, chunk);
            if (p == NULL) {
                return NULL;
            }
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == close) {
                return p + 1;
            }
            return NULL;
        }
    }
    case 't': return read_literal(p, end, "true", 4);
    case 'f': return read_literal(p, end, "false", 5);
    case 'n': return read_literal(p, end, "null", 4);
    default: {
        long long unused;
        return read_number(p, end, 0, &unused);
    }
    }
}

#define KEY_IS(k, lit)                                                                   \
    ((k).end - (k).start == (Py_ssize_t)sizeof(lit) + 1 &&                              \
     memcmp((k).start + 1, (lit), sizeof(lit) - 1) == 0)

/* The members of the object at p ('{'), each key handed to `member`, which reads its
 * value and returns the value's end (NULL: not a fast-path chunk) and notes the keys it
 * read in `*seen`. The end of the object, or NULL. Keys with escapes are refused: they
 * might spell a key we read. */
typedef Ptr (*MemberFn)(Ptr p, Ptr end, const Str *key, Chunk *chunk, unsigned *seen);

static Ptr
read_object(Ptr p, Ptr end, MemberFn member, Chunk *chunk, unsigned *seen)
{
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        return p + 1;
    }
    for (;;) {
        Str key;
        if (p >= end || *p != '"' || read_string(p, end, &key, chunk) < 0 || key.escaped) {
            return NULL;
        }
        p = skip_ws(key.end, end);
        if (p >= end || *p != ':') {
            return NULL;
        }
        p = member(skip_ws(p + 1, end), end, &key, chunk, seen);
        if (p == NULL) {
            return NULL;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            return p + 1;
        }
        return NULL;
    }
}

/* Marks key bit `bit` as seen; 0 if it was already (a repeated key: not ours to read). */
static int
first_time(unsigned *seen, unsigned bit)
{
    if (*seen & bit) {
        return 0;
    }
    *seen |= bit;
    return 1;
}

static Ptr
delta_member(Ptr p, Ptr end, const Str *key, Chunk *chunk, unsigned *seen)
{
    if (KEY_IS(*key, "content")) {
        if (!first_time(seen, 1) || p >= end) {
            return NULL;
        }
        chunk->content_key = key->start;
        if (*p == '"') {
            if (read_string(p, end, &chunk->content, chunk) < 0) {
                return NULL;
            }
            chunk->has_text = 1;
            return chunk->content.end;
        }
        return IS_NULL(p, end) ? p + 4 : NULL;
    }
    if (KEY_IS(*key, "tool_calls")) {
        return first_time(seen, 2) && IS_NULL(p, end) ? p + 4 : NULL;
    }
    return skip_value(p, end, 3, chunk);
}

static Ptr
choice_member(Ptr p, Ptr end, const Str *key, Chunk *chunk, unsigned *seen)
{
    if (KEY_IS(*key, "index")) {
        return first_time(seen, 1) ? read_number(p, end, 1, &chunk->index) : NULL;
    }
    if (KEY_IS(*key, "delta")) {
        unsigned delta_seen = 0;
        if (!first_time(seen, 2) || p >= end || *p != '{') {
            return NULL; /* a null delta takes the general path */
        }
        return read_object(p, end, delta_member, chunk, &delta_seen);
    }
    if (KEY_IS(*key, "finish_reason")) {
        return first_time(seen, 4) && IS_NULL(p, end) ? p + 4 : NULL;
    }
    return skip_value(p, end, 2, chunk);
}

static Ptr
chunk_member(Ptr p, Ptr end, const Str *key, Chunk *chunk, unsigned *seen)
{
    if (KEY_IS(*key, "id") || KEY_IS(*key, "model")) {
        Str s;
        unsigned bit = key->end - key->start == 4 ? 1 : 2;
        if (!first_time(seen, bit) || p >= end || *p != '"' || read_string(p, end, &s, chunk) < 0) {
            return NULL;
        }
        return s.end;
    }
    if (KEY_IS(*key, "created")) {
        long long unused;
        return first_time(seen, 4) ? read_number(p, end, 1, &unused) : NULL;
    }
    if (KEY_IS(*key, "choices")) {
        /* Exactly one choice, an object with a delta object. */
        if (!first_time(seen, 8) || p >= end || *p != '[') {
            return NULL;
        }
        p = skip_ws(p + 1, end);
        if (p >= end || *p != '{') {
            return NULL; /* no choice, or not an object */
        }
        unsigned choice_seen = 0;
        p = read_object(p, end, choice_member, chunk, &choice_seen);
        if (p == NULL) {
            return NULL;
        }
        if (!(choice_seen & 2)) {
            return NULL; /* no delta: the general path */
        }
        p = skip_ws(p, end);
        return p < end && *p == ']' ? p + 1 : NULL;
    }
    return skip_value(p, end, 1, chunk);
}

/* The reference's content_span, given what the reader found: 1 if the text's string
 * may be replaced in place. */
static int
spliceable(const Chunk *chunk)
{
    /* With no \u anywhere, the delta's key is written "content"; counted once, it is the
     * one the reference finds. */
    if (!chunk->content.orjson || chunk->backslash_u || chunk->content_strings != 1) {
        return 0;
    }
    Ptr value = chunk->content_key + 9;
    if (*value != ':') {
        return 0;
    }
    value++;
    if (*value == ' ') {
        value++;
    }
    return value == chunk->content.start;
}

const char ktscan_chunk_text_doc[] =
    "chunk_text(event, /)\n--\n\n"
    "The text delta of a plain one-choice chunk event: (index, text, start, end),\n"
    "or None; see ktproxy.wire.chunk_text.chunk_text_py.";

PyObject *
ktscan_chunk_text(PyObject *Py_UNUSED(module), PyObject *event)
{
    if (!PyBytes_Check(event)) {
        PyErr_Format(PyExc_TypeError, "chunk_text() argument must be bytes, not %.100s",
                     Py_TYPE(event)->tp_name);
        return NULL;
    }
    Ptr base = (Ptr)PyBytes_AS_STRING(event);
    Py_ssize_t size = PyBytes_GET_SIZE(event);
    if (size < 8 || memcmp(base, "data: ", 6) != 0 || base[size - 2] != '\n' ||
        base[size - 1] != '\n') {
        Py_RETURN_NONE;
    }
    /* The JSON reader takes no LF or CR (whitespace is space or tab, and strings hold no
     * control characters), so a view means one data line and no CR, as required. */
    Ptr data = base + 6, end = base + size - 2;
    Chunk chunk = {0};
    Ptr p = skip_ws(data, end);
    unsigned seen = 0;
    if (p >= end || *p != '{') {
        Py_RETURN_NONE;
    }
    p = read_object(p, end, chunk_member, &chunk, &seen);
    if (p == NULL) {
        Py_RETURN_NONE;
    }
    if (!(seen & 8) || skip_ws(p, end) != end) { /* no choices, or bytes after the object */
        Py_RETURN_NONE;
    }

    PyObject *text;
    Py_ssize_t start = -1, stop = -1;
    if (chunk.has_text && chunk.content.end - chunk.content.start > 2) {
        text = decode_string(&chunk.content);
        if (text == NULL) {
            return NULL;
        }
        if (spliceable(&chunk)) {
            start = chunk.content.start - base;
            stop = chunk.content.end - base;
        }
    }
    else {
        text = PyUnicode_New(0, 0);
        if (text == NULL) {
            return NULL;
        }
    }
    PyObject *index = PyLong_FromLongLong(chunk.index);
    if (index == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *out = PyTuple_New(4);
    if (out == NULL) {
        Py_DECREF(index);
        Py_DECREF(text);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, index);
    PyTuple_SET_ITEM(out, 1, text);
    PyObject *a = PyLong_FromSsize_t(start), *b = PyLong_FromSsize_t(stop);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 2, a);
    PyTuple_SET_ITEM(out, 3, b);
    return out;
}

/* The JSON escape orjson writes for an ASCII character, or 0 when it writes it as is;
 * 'u' for the six-byte form \u00XX. */
static const unsigned char ESCAPE[128] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    0,   0,   '"', 0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   '\\', 0,  0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
};

/* Bytes of `text` encoded as a JSON string by orjson, quotes excluded; -1 if it holds a
 * surrogate (orjson refuses those). */
static Py_ssize_t
encoded_size(int kind, const void *data, Py_ssize_t length)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            size += ESCAPE[c] == 0 ? 1 : ESCAPE[c] == 'u' ? 6 : 2;
        }
        else if (c < 0x800) {
            size += 2;
        }
        else if (c < 0x10000) {
            if (c >= 0xD800 && c <= 0xDFFF) {
                return -1;
            }
            size += 3;
        }
        else {
            size += 4;
        }
    }
    return size;
}

static unsigned char *
encode(unsigned char *out, int kind, const void *data, Py_ssize_t length)
{
    static const char HEX[] = "0123456789abcdef";
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x80) {
            unsigned char e = ESCAPE[c];
            if (e == 0) {
                *out++ = (unsigned char)c;
            }
            else if (e == 'u') {
                memcpy(out, "\\u00", 4);
                out[4] = (unsigned char)HEX[c >> 4];
                out[5] = (unsigned char)HEX[c & 15];
                out += 6;
            }
            else {
                *out++ = '\\';
                *out++ = e;
            }
        }
        else if (c < 0x800) {
            *out++ = (unsigned char)(0xC0 | c >> 6);
            *out++ = (unsigned char)(0x80 | (c & 0x3F));
        }
        else if (c < 0x10000) {
            *out++ = (unsigned char)(0xE0 | c >> 12);
            *out++ = (unsigned char)(0x80 | (c >> 6 & 0x3F));
            *out++ = (unsigned char)(0x80 | (c & 0x3F));
        }
        else {
            *out++ = (unsigned char)(0xF0 | c >> 18);
            *out++ = (unsigned char)(0x80 | (c >> 12 & 0x3F));
            *out++ = (unsigned char)(0x80 | (c >> 6 & 0x3F));
            *out++ = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    return out;
}

const char ktscan_splice_text_doc[] =
    "splice_text(event, start, end, text, /)\n--\n\n"
    "event with event[start:end] replaced by text as orjson encodes it, or None\n"
    "when it holds a surrogate; see ktproxy.wire.chunk_text.splice_text_py.";

PyObject *
ktscan_splice_text(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "splice_text() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *event = args[0], *text = args[3];
    if (!PyBytes_Check(event)) {
        PyErr_Format(PyExc_TypeError, "splice_text() argument 1 must be bytes, not %.100s",
                     Py_TYPE(event)->tp_name);
        return NULL;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "splice_text() argument 4 must be str, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t stop = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (stop == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(event);
    if (start < 0 || start > stop || stop > size) {
        PyErr_SetString(PyExc_ValueError, "splice_text: need 0 <= start <= end <= len(event)");
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    Py_ssize_t encoded = encoded_size(kind, data, length);
    if (encoded < 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t total = start + 2 + encoded + (size - stop);
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)PyBytes_AS_STRING(event);
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(dst, src, (size_t)start);
    dst += start;
    *dst++ = '"';
    dst = encode(dst, kind, data, length);
    *dst++ = '"';
    memcpy(dst, src + stop, (size_t)(size - stop));
    return out;
}
