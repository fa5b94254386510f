/* ktproxy._ktscan.normalize / normalize_with_offsets: the text normaliser of DESIGN §4.
 *
 * This is a port of ktproxy/scan/normalizer.py, whose normalize_with_offsets_py is the
 * specification: the same text and the same offsets for every str, which the test suite
 * checks on generated text and on every code point. Change the Python first.
 *
 * ASCII characters (nearly all traffic) are mapped by a table, and an ASCII text never
 * leaves C. For the other characters the reference asks the Unicode database, which
 * CPython opens to C only in part, so this file asks it the same questions: the public
 * Py_UNICODE_IS* predicates settle most classes, and unicodedata.category, str.lower,
 * unicodedata.normalize and unicodedata.combining are called, as the reference calls
 * them, for the rest. The results thus follow the running interpreter's Unicode version,
 * like the reference's. Each distinct non-ASCII character is worked out once per call
 * (a memo); the module keeps no state, and unicodedata is looked up only by a call whose
 * text needs it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "normalize.h"

/* What becomes of an input character (the reference's _char_class). */
enum { DROP, SEP, KEEP };

#define SP ' '
/* ASCII_MAP[c] for an ASCII c: 0 if dropped, ' ' if a separator, else its fold (always one
 * character). Equal to the reference's _ASCII table. */
static const unsigned char ASCII_MAP[128] = {
    /* 0x00 */ 0,   0,   0,   0,   0,   0,   0,   0,   0,   SP,  SP,  SP,  SP,  SP,  0,   0,
    /* 0x10 */ 0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   SP,  SP,  SP,  SP,
    /* 0x20 */ SP,  SP,  SP,  SP,  's', SP,  SP,  SP,  SP,  SP,  SP,  SP,  SP,  SP,  SP,  SP,
    /* 0x30 */ 'o', 'i', '2', 'e', 'a', 's', '6', 't', 'b', 'g', SP,  SP,  SP,  SP,  SP,  SP,
    /* 0x40 */ 'a', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    /* 0x50 */ 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', SP,  SP,  SP,  SP,  SP,
    /* 0x60 */ SP,  'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
    /* 0x70 */ 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', SP,  SP,  SP,  SP,  0,
};
#undef SP

/* The reference's LEET (all keys ASCII). */
static Py_UCS4
leet(Py_UCS4 c)
{
    switch (c) {
    case '0': return 'o';
    case '1': return 'i';
    case '3': return 'e';
    case '4': return 'a';
    case '5': return 's';
    case '7': return 't';
    case '8': return 'b';
    case '9': return 'g';
    case '@': return 'a';
    case '$': return 's';
    default: return c;
    }
}

/* The reference's CONFUSABLES (all keys one non-ASCII character), sorted by code point. */
static const struct {
    Py_UCS4 from;
    char to[3];
} CONFUSABLES[] = {
    {0x00DF, "ss"}, {0x00E6, "ae"}, {0x00F0, "d"}, {0x00F8, "o"}, {0x00FE, "th"},
    {0x0131, "i"},  {0x0142, "l"},  {0x0153, "oe"}, {0x017F, "s"}, {0x0261, "g"},
    {0x03B1, "a"},  {0x03B2, "b"},  {0x03B5, "e"}, {0x03B7, "n"}, {0x03B9, "i"},
    {0x03BA, "k"},  {0x03BD, "v"},  {0x03BF, "o"}, {0x03C1, "p"}, {0x03C2, "s"},
    {0x03C4, "t"},  {0x03C5, "u"},  {0x03C7, "x"}, {0x03C9, "w"}, {0x0430, "a"},
    {0x0432, "b"},  {0x0435, "e"},  {0x043A, "k"}, {0x043C, "m"}, {0x043D, "h"},
    {0x043E, "o"},  {0x0440, "p"},  {0x0441, "c"}, {0x0442, "t"}, {0x0443, "y"},
    {0x0445, "x"},  {0x0451, "e"},  {0x0455, "s"}, {0x0456, "i"}, {0x0457, "i"},
    {0x0458, "j"},  {0x04BB, "h"},  {0x0501, "d"}, {0x051B, "q"}, {0x051D, "w"},
};

static const char *
confusable(Py_UCS4 c)
{
    size_t lo = 0, hi = sizeof CONFUSABLES / sizeof CONFUSABLES[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (CONFUSABLES[mid].from == c) {
            return CONFUSABLES[mid].to;
        }
        if (CONFUSABLES[mid].from < c) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return NULL;
}

/* -- non-ASCII characters: the Unicode database, and a memo per call ------------------- */

typedef struct {
    Py_UCS4 cp;     /* 0 marks a free slot: ASCII characters never go in */
    int cls;        /* DROP, SEP or KEEP */
    PyObject *fold; /* for KEEP, the reference's _fold of the character (a str); else NULL */
} Slot;

#define MEMO_FIRST 32 /* slots on the stack, before the memo moves to the heap */

/* What one call needs for its non-ASCII characters; the Python objects are looked up when
 * first needed (a text of punctuation needs only unicodedata.category, for example). */
typedef struct {
    PyObject *unicodedata, *category, *decompose, *combining, *lower, *nfkd;
    Slot *slots; /* `first`, until it fills up */
    size_t mask; /* capacity - 1; the capacity is a power of two */
    size_t used;
    Slot first[MEMO_FIRST];
} Unicode;

static void
unicode_init(Unicode *u)
{
    memset(u, 0, sizeof *u);
    u->slots = u->first;
    u->mask = MEMO_FIRST - 1;
}

static void
unicode_clear(Unicode *u)
{
    for (size_t i = 0; i <= u->mask; i++) {
        Py_XDECREF(u->slots[i].fold);
    }
    if (u->slots != u->first) {
        PyMem_Free(u->slots);
    }
    Py_XDECREF(u->unicodedata);
    Py_XDECREF(u->category);
    Py_XDECREF(u->decompose);
    Py_XDECREF(u->combining);
    Py_XDECREF(u->lower);
    Py_XDECREF(u->nfkd);
}

/* unicodedata.<name> into *slot unless already there; -1 with an exception on failure. */
static int
unicodedata_function(Unicode *u, PyObject **slot, const char *name)
{
    if (*slot != NULL) {
        return 0;
    }
    if (u->unicodedata == NULL) {
        /* From sys.modules when it is there: an import costs microseconds. */
        PyObject *module_name = PyUnicode_FromString("unicodedata");
        if (module_name == NULL) {
            return -1;
        }
        u->unicodedata = PyImport_GetModule(module_name);
        if (u->unicodedata == NULL && !PyErr_Occurred()) {
            u->unicodedata = PyImport_Import(module_name);
        }
        Py_DECREF(module_name);
        if (u->unicodedata == NULL) {
            return -1;
        }
    }
    *slot = PyObject_GetAttrString(u->unicodedata, name);
    return *slot == NULL ? -1 : 0;
}

/* fn(chr(cp)): a new reference, or NULL with an exception set. */
static PyObject *
call_on_char(PyObject *fn, Py_UCS4 cp)
{
    PyObject *c = PyUnicode_FromOrdinal((int)cp);
    if (c == NULL) {
        return NULL;
    }
    PyObject *result = PyObject_CallOneArg(fn, c);
    Py_DECREF(c);
    return result;
}

/* The reference's _char_class for a non-ASCII character, or -1 with an exception set. */
static int
char_class(Unicode *u, Py_UCS4 cp)
{
    if (Py_UNICODE_ISALNUM(cp)) { /* exactly str.isalnum for one character */
        return KEEP;
    }
    if (Py_UNICODE_ISSPACE(cp)) {
        return SEP;
    }
    /* Non-printable means a category C* or Z*, and every Z* character is a space: so
     * this is Cc, Cf, Cs, Co or Cn, all dropped. */
    if (!Py_UNICODE_ISPRINTABLE(cp)) {
        return DROP;
    }
    if (unicodedata_function(u, &u->category, "category") < 0) {
        return -1;
    }
    PyObject *category = call_on_char(u->category, cp);
    if (category == NULL) {
        return -1;
    }
    int cls = PyUnicode_Check(category) && (PyUnicode_CompareWithASCIIString(category, "Mn") == 0 ||
                                            PyUnicode_CompareWithASCIIString(category, "Me") == 0)
                  ? DROP
                  : SEP;
    Py_DECREF(category);
    return cls;
}

/* unicodedata.combining(ch) != 0, or -1 with an exception set. */
static int
is_combining(Unicode *u, Py_UCS4 ch)
{
    if (ch < 0x80) { /* every ASCII character has combining class 0 */
        return 0;
    }
    if (unicodedata_function(u, &u->combining, "combining") < 0) {
        return -1;
    }
    PyObject *klass = call_on_char(u->combining, ch);
    if (klass == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(klass);
    Py_DECREF(klass);
    return truth;
}

/* The reference's _fold for a non-ASCII character (a new str), or NULL with an exception. */
static PyObject *
fold_char(Unicode *u, Py_UCS4 cp)
{
    if (u->lower == NULL &&
        (u->lower = PyObject_GetAttrString((PyObject *)&PyUnicode_Type, "lower")) == NULL) {
        return NULL;
    }
    PyObject *low = call_on_char(u->lower, cp); /* full lower case: may be longer */
    if (low == NULL) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(low) == 1) {
        Py_UCS4 l = PyUnicode_READ_CHAR(low, 0);
        if (leet(l) != l) {
            Py_DECREF(low);
            return PyUnicode_FromOrdinal((int)leet(l));
        }
        const char *to = confusable(l);
        if (to != NULL) {
            Py_DECREF(low);
            return PyUnicode_FromString(to);
        }
    }
    if (PyUnicode_IS_ASCII(low)) { /* exactly str.isascii */
        return low;
    }
    if (unicodedata_function(u, &u->decompose, "normalize") < 0 ||
        (u->nfkd == NULL && (u->nfkd = PyUnicode_FromString("NFKD")) == NULL)) {
        Py_DECREF(low);
        return NULL;
    }
    PyObject *args[2] = {u->nfkd, low};
    PyObject *base = PyObject_Vectorcall(u->decompose, args, 2, NULL);
    if (base == NULL || !PyUnicode_Check(base)) {
        if (base != NULL) {
            PyErr_SetString(PyExc_TypeError, "unicodedata.normalize() did not return a str");
        }
        Py_XDECREF(base);
        Py_DECREF(low);
        return NULL;
    }
    /* stripped: the characters of base that are not combining. */
    Py_ssize_t n = PyUnicode_GET_LENGTH(base);
    Py_UCS4 *stripped = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(Py_UCS4));
    if (stripped == NULL) {
        Py_DECREF(base);
        Py_DECREF(low);
        return PyErr_NoMemory();
    }
    Py_ssize_t kept = 0;
    int ascii = 1;
    PyObject *result = NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_UCS4 ch = PyUnicode_READ_CHAR(base, j);
        int combining = is_combining(u, ch);
        if (combining < 0) {
            goto done;
        }
        if (!combining) {
            stripped[kept++] = ch;
            ascii &= ch < 0x80;
        }
    }
    if (kept == 0) {
        result = Py_NewRef(low);
    }
    else if (ascii) { /* stripped.lower() */
        for (Py_ssize_t j = 0; j < kept; j++) {
            if (stripped[j] >= 'A' && stripped[j] <= 'Z') {
                stripped[j] += 'a' - 'A';
            }
        }
        result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, stripped, kept);
    }
    else if (kept == 1 && confusable(stripped[0]) != NULL) {
        result = PyUnicode_FromString(confusable(stripped[0]));
    }
    else {
        result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, stripped, kept);
    }
done:
    PyMem_Free(stripped);
    Py_DECREF(base);
    Py_DECREF(low);
    return result;
}

static Slot *
memo_find(const Unicode *u, Py_UCS4 cp)
{
    size_t i = ((size_t)cp * 0x9E3779B1u) & u->mask;
    while (u->slots[i].cp != 0 && u->slots[i].cp != cp) {
        i = (i + 1) & u->mask;
    }
    return &u->slots[i];
}

static int
memo_grow(Unicode *u)
{
    Slot *old = u->slots;
    size_t old_mask = u->mask;
    u->mask = old_mask * 2 + 1;
    u->slots = PyMem_Calloc(u->mask + 1, sizeof(Slot));
    if (u->slots == NULL) {
        u->slots = old;
        u->mask = old_mask;
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= old_mask; i++) {
        if (old[i].cp != 0) {
            *memo_find(u, old[i].cp) = old[i];
        }
    }
    if (old != u->first) {
        PyMem_Free(old);
    }
    return 0;
}

/* Class and fold of a non-ASCII character, worked out on its first occurrence. The
 * slot stays valid until the next call. NULL with an exception set on failure. */
static const Slot *
memo_get(Unicode *u, Py_UCS4 cp)
{
    Slot *slot = memo_find(u, cp);
    if (slot->cp == cp) {
        return slot;
    }
    int cls = char_class(u, cp);
    if (cls < 0) {
        return NULL;
    }
    PyObject *fold = NULL;
    if (cls == KEEP && (fold = fold_char(u, cp)) == NULL) {
        return NULL;
    }
    if ((u->used + 1) * 2 > u->mask + 1) {
        if (memo_grow(u) < 0) {
            Py_XDECREF(fold);
            return NULL;
        }
        slot = memo_find(u, cp);
    }
    slot->cp = cp;
    slot->cls = cls;
    slot->fold = fold;
    u->used++;
    return slot;
}

/* -- the two passes ------------------------------------------------------------------- */

/* Pass 1 on an ASCII text: drop, map, and collapse each run of separators after a kept
 * character into one space at the run's first character, as the reference does. Its
 * space is pending until a kept character follows; here it is written at once and taken
 * back at the end if none followed, which lets the loop run without branches (letters and
 * separators alternate unpredictably). `out` has room for n characters; `src`, if not
 * NULL, for n offsets; every write is at w <= i. */
static inline Py_ALWAYS_INLINE Py_ssize_t
fold_ascii(const Py_UCS1 *in, Py_ssize_t n, Py_UCS1 *out, Py_ssize_t *src)
{
    Py_ssize_t w = 0;
    unsigned char last = ' '; /* the last character written (a space before the first) */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char m = ASCII_MAP[in[i] & 0x7F];
        out[w] = m;
        if (src != NULL) {
            src[w] = i;
        }
        w += (m != 0) & ((m != ' ') | (last != ' '));
        last = m != 0 ? m : last;
    }
    return w > 0 && out[w - 1] == ' ' ? w - 1 : w;
}

/* fold_ascii compiled once without offsets and once with (out of line: inlined into its
 * caller, the loop ran short of registers). */
static Py_NO_INLINE Py_ssize_t
fold_ascii_text(const Py_UCS1 *in, Py_ssize_t n, Py_UCS1 *out)
{
    return fold_ascii(in, n, out, NULL);
}

static Py_NO_INLINE Py_ssize_t
fold_ascii_offsets(const Py_UCS1 *in, Py_ssize_t n, Py_UCS1 *out, Py_ssize_t *src)
{
    return fold_ascii(in, n, out, src);
}

/* Whether pass 2 can change the output of fold_ascii, which has no leading, trailing or
 * double spaces: only if it has three one-character words in a row, that is, a
 * one-character word between two others. `buf` must have three spaces before and after
 * its n characters (so that a word at either end has no one-character neighbour there). */
static int
has_spelled_run(const Py_UCS1 *buf, Py_ssize_t n)
{
    unsigned char found = 0;
    for (Py_ssize_t q = 0; q < n; q++) {
        found |= (buf[q - 3] == ' ') & (buf[q - 2] != ' ') & (buf[q - 1] == ' ') &
                 (buf[q] != ' ') & (buf[q + 1] == ' ') & (buf[q + 2] != ' ') &
                 (buf[q + 3] == ' ');
    }
    return found;
}

/* The normalised characters with their offsets; `src` is NULL when none are wanted. */
typedef struct {
    Py_UCS4 *chars;
    Py_ssize_t *src;
    Py_ssize_t len, cap;
} Out;

static int
out_reserve(Out *o, Py_ssize_t extra)
{
    if (o->len + extra <= o->cap) {
        return 0;
    }
    Py_ssize_t cap = o->cap;
    while (cap < o->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Py_ssize_t)) {
            PyErr_NoMemory();
            return -1;
        }
        cap += cap / 2 + 16;
    }
    Py_UCS4 *chars = PyMem_Realloc(o->chars, (size_t)cap * sizeof(Py_UCS4));
    if (chars == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    o->chars = chars;
    if (o->src != NULL) {
        Py_ssize_t *src = PyMem_Realloc(o->src, (size_t)cap * sizeof(Py_ssize_t));
        if (src == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->src = src;
    }
    o->cap = cap;
    return 0;
}

static inline void
out_put(Out *o, Py_UCS4 c, Py_ssize_t at)
{
    o->chars[o->len] = c;
    if (o->src != NULL) {
        o->src[o->len] = at;
    }
    o->len++;
}

/* Pass 1 on any text: the loop of the reference's normalize_with_offsets. */
static int
fold_any(PyObject *text, Out *o)
{
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), pending = -1;
    Unicode u;
    unicode_init(&u);
    int rc = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        Py_UCS4 one = 0;
        PyObject *fold = NULL;
        int cls;
        if (cp < 0x80) {
            one = ASCII_MAP[cp];
            cls = one == 0 ? DROP : one == ' ' ? SEP : KEEP;
        }
        else {
            const Slot *slot = memo_get(&u, cp);
            if (slot == NULL) {
                goto done;
            }
            cls = slot->cls;
            fold = slot->fold;
        }
        if (cls == DROP) {
            continue;
        }
        if (cls == SEP) {
            if (o->len > 0 && pending < 0) {
                pending = i;
            }
            continue;
        }
        Py_ssize_t k = fold == NULL ? 1 : PyUnicode_GET_LENGTH(fold);
        if (out_reserve(o, k + 1) < 0) {
            goto done;
        }
        if (pending >= 0) {
            out_put(o, ' ', pending);
            pending = -1;
        }
        if (fold == NULL) {
            out_put(o, one, i);
        }
        else {
            for (Py_ssize_t j = 0; j < k; j++) {
                out_put(o, PyUnicode_READ_CHAR(fold, j), i);
            }
        }
    }
    rc = 0;
done:
    unicode_clear(&u);
    return rc;
}

/* Pass 2, the reference's _join_spelled, in place: split at every ' ' and join each run of
 * three or more one-character words. What it keeps is a subsequence of buf (each space it
 * keeps is the one just before a word), so the kept characters are moved down with their
 * offsets. Returns the new length. */
static inline Py_ssize_t
join_spelled(int kind, void *buf, Py_ssize_t *src, Py_ssize_t n)
{
    Py_ssize_t w = 0;
#define KEEP_AT(k)                                                                      \
    do {                                                                                \
        PyUnicode_WRITE(kind, buf, w, PyUnicode_READ(kind, buf, (k)));                  \
        if (src != NULL) {                                                              \
            src[w] = src[(k)];                                                          \
        }                                                                               \
        w++;                                                                            \
    } while (0)
    /* The current run: `count` one-character words at run, run + 2, run + 4, ... */
    Py_ssize_t run = 0, count = 0;
#define CLOSE_RUN()                                                                     \
    do {                                                                                \
        if (count >= 3) {                                                               \
            if (w > 0) {                                                                \
                KEEP_AT(run - 1);                                                       \
            }                                                                           \
            for (Py_ssize_t r = 0; r < count; r++) {                                    \
                KEEP_AT(run + 2 * r);                                                   \
            }                                                                           \
        }                                                                               \
        else {                                                                          \
            for (Py_ssize_t r = 0; r < count; r++) {                                    \
                if (w > 0) {                                                            \
                    KEEP_AT(run + 2 * r - 1);                                           \
                }                                                                       \
                KEEP_AT(run + 2 * r);                                                   \
            }                                                                           \
        }                                                                               \
        count = 0;                                                                      \
    } while (0)
    for (Py_ssize_t pos = 0;; pos++) {
        Py_ssize_t end = pos;
        while (end < n && PyUnicode_READ(kind, buf, end) != ' ') {
            end++;
        }
        if (end - pos == 1) {
            if (count++ == 0) {
                run = pos;
            }
        }
        else {
            CLOSE_RUN();
            if (end > pos) {
                if (w > 0) {
                    KEEP_AT(pos - 1);
                }
                for (Py_ssize_t k = pos; k < end; k++) {
                    KEEP_AT(k);
                }
            }
        }
        if (end == n) {
            break;
        }
        pos = end;
    }
    CLOSE_RUN();
#undef CLOSE_RUN
#undef KEEP_AT
    return w;
}

/* -- the functions ---------------------------------------------------------------------- */

/* Above this length an ASCII text is normalised with the GIL released (as scan does). */
#define NOGIL_LENGTH 4096

static PyObject *
offsets_list(const Py_ssize_t *src, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *offset = PyLong_FromSsize_t(src[i]);
        if (offset == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, offset);
    }
    return list;
}

/* normalize or normalize_with_offsets on an ASCII text. */
static PyObject *
normalize_ascii(PyObject *text, int with_offsets)
{
    const Py_UCS1 *in = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    /* The output, with three spaces on either side for has_spelled_run. */
    Py_UCS1 small[512];
    Py_UCS1 *buf = n + 6 <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n + 6);
    Py_UCS1 *out = buf + 3;
    Py_ssize_t *src = with_offsets ? PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof *src) : NULL;
    PyObject *result = NULL;
    if (buf == NULL || (with_offsets && src == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    PyThreadState *released = n > NOGIL_LENGTH ? PyEval_SaveThread() : NULL;
    Py_ssize_t len = src == NULL ? fold_ascii_text(in, n, out) : fold_ascii_offsets(in, n, out, src);
    memset(buf, ' ', 3);
    memset(out + len, ' ', 3);
    if (has_spelled_run(out, len)) {
        len = join_spelled(PyUnicode_1BYTE_KIND, out, src, len);
    }
    if (released != NULL) {
        PyEval_RestoreThread(released);
    }
    PyObject *norm = PyUnicode_New(len, 127);
    if (norm == NULL) {
        goto done;
    }
    memcpy(PyUnicode_1BYTE_DATA(norm), out, (size_t)len);
    if (!with_offsets) {
        result = norm;
        goto done;
    }
    PyObject *offsets = offsets_list(src, len);
    if (offsets == NULL) {
        Py_DECREF(norm);
        goto done;
    }
    result = PyTuple_Pack(2, norm, offsets);
    Py_DECREF(norm);
    Py_DECREF(offsets);
done:
    if (buf != small) {
        PyMem_Free(buf);
    }
    PyMem_Free(src);
    return result;
}

/* normalize or normalize_with_offsets on a text with non-ASCII characters. */
static PyObject *
normalize_any(PyObject *text, int with_offsets)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Out o = {NULL, NULL, 0, n + 16};
    PyObject *result = NULL;
    o.chars = PyMem_Malloc((size_t)o.cap * sizeof(Py_UCS4));
    o.src = with_offsets ? PyMem_Malloc((size_t)o.cap * sizeof(Py_ssize_t)) : NULL;
    if (o.chars == NULL || (with_offsets && o.src == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    if (fold_any(text, &o) < 0) {
        goto done;
    }
    o.len = join_spelled(PyUnicode_4BYTE_KIND, o.chars, o.src, o.len);
    PyObject *norm = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, o.chars, o.len);
    if (norm == NULL || !with_offsets) {
        result = norm;
        goto done;
    }
    PyObject *offsets = offsets_list(o.src, o.len);
    if (offsets == NULL) {
        Py_DECREF(norm);
        goto done;
    }
    result = PyTuple_Pack(2, norm, offsets);
    Py_DECREF(norm);
    Py_DECREF(offsets);
done:
    PyMem_Free(o.chars);
    PyMem_Free(o.src);
    return result;
}

static PyObject *
normalize_text(const char *name, PyObject *text, int with_offsets)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s() argument must be str, not %.200s", name,
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
#endif
    return PyUnicode_IS_ASCII(text) ? normalize_ascii(text, with_offsets)
                                    : normalize_any(text, with_offsets);
}

const char ktscan_normalize_doc[] = PyDoc_STR(
    "normalize(text, /)\n--\n\n"
    "The text normalised for phrase matching: case folded, format and control\n"
    "characters dropped, confusables and leetspeak mapped, runs of space and\n"
    "punctuation collapsed, spelled-out words joined. Same result as\n"
    "ktproxy.scan.normalizer.normalize_py.");

PyObject *
ktscan_normalize(PyObject *module, PyObject *text)
{
    (void)module;
    return normalize_text("normalize", text, 0);
}

const char ktscan_normalize_with_offsets_doc[] = PyDoc_STR(
    "normalize_with_offsets(text, /)\n--\n\n"
    "(normalize(text), offsets): offsets[i] is the index in text of the character\n"
    "that output character i comes from. Same result as\n"
    "ktproxy.scan.normalizer.normalize_with_offsets_py.");

PyObject *
ktscan_normalize_with_offsets(PyObject *module, PyObject *text)
{
    (void)module;
    return normalize_text("normalize_with_offsets", text, 1);
}
