/* parse=json for the fluentd sink, compiled: each line that is a JSON object straight to the
 * msgpack of its record's extra pairs (message, level, time, json), with no Python object in
 * between. It produces what pylog.sinks.fluentd_encode._packed_extras makes of the general
 * path's parse (tests/test_jsonpack.py checks both on the same lines), and refuses the whole
 * batch (None) at the first line it cannot say the same way: the Python path then does it.
 *
 * The batch is transcoded with the GIL released (the event loop runs meanwhile); only the
 * result's bytes objects are made with it. Limited API (3.11): one wheel for every CPython. */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32   /* pylog.jsonlines.MAX_DEPTH: deeper lines are the Python path's */
#define MAX_MEMBERS 128 /* keys in one object (duplicates are checked pairwise) */
#define MAX_KEYS 16    /* names in each of parse-message-keys, -level-keys, -time-keys */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} Buf;

static int reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put_be(unsigned char *at, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        at[i] = (unsigned char)v;
}

/* A container's header: room for one byte was left at `at`; the rest moves right if needed. */
static int container_header(Buf *b, size_t at, size_t count, unsigned char fix,
                            unsigned char b16) {
    if (count < 16) {
        b->p[at] = fix | (unsigned char)count;
        return 0;
    }
    int extra = count < 65536 ? 2 : 4;
    if (reserve(b, extra))
        return -1;
    memmove(b->p + at + 1 + extra, b->p + at + 1, b->len - at - 1);
    b->len += extra;
    b->p[at] = count < 65536 ? b16 : (unsigned char)(b16 + 1);
    put_be(b->p + at + 1, count, extra);
    return 0;
}

static int str_header_len(size_t n) { return n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5; }

static void str_header(unsigned char *at, size_t n) {
    if (n < 32) {
        at[0] = 0xa0 | (unsigned char)n;
    } else if (n < 256) {
        at[0] = 0xd9;
        at[1] = (unsigned char)n;
    } else if (n < 65536) {
        at[0] = 0xda;
        put_be(at + 1, n, 2);
    } else {
        at[0] = 0xdb;
        put_be(at + 1, n, 4);
    }
}

typedef struct {
    const unsigned char *s, *end, *start;
    Buf *out;
    int depth;
} Parser;

static void skip_ws(Parser *q) {
    while (q->s < q->end && (*q->s == ' ' || *q->s == '\t' || *q->s == '\n' || *q->s == '\r'))
        q->s++;
}

static int hex4(const unsigned char *s, unsigned *v) {
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        r = r << 4 | d;
    }
    *v = r;
    return 0;
}

static unsigned char *put_utf8(unsigned char *w, unsigned cp) {
    if (cp < 0x80) {
        *w++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *w++ = 0xc0 | (cp >> 6);
        *w++ = 0x80 | (cp & 0x3f);
    } else if (cp < 0x10000) {
        *w++ = 0xe0 | (cp >> 12);
        *w++ = 0x80 | ((cp >> 6) & 0x3f);
        *w++ = 0x80 | (cp & 0x3f);
    } else {
        *w++ = 0xf0 | (cp >> 18);
        *w++ = 0x80 | ((cp >> 12) & 0x3f);
        *w++ = 0x80 | ((cp >> 6) & 0x3f);
        *w++ = 0x80 | (cp & 0x3f);
    }
    return w;
}

/* One UTF-8 sequence starting at s (a byte >= 0x80), strictly (no overlong form, no
 * surrogate, nothing past U+10FFFF): its length, or 0. */
static int utf8_len(const unsigned char *s, const unsigned char *end) {
    unsigned c = s[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (end - s < n || s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* Past the text at r that needs no decoding (printable ASCII but '"' and '\\', valid UTF-8):
 * at the first other byte, or NULL at invalid UTF-8. */
static const unsigned char *plain_run(const unsigned char *r, const unsigned char *end) {
    while (r < end) {
        if (*r >= 0x20 && *r < 0x80 && *r != '"' && *r != '\\') {
            r++;
        } else if (*r >= 0x80) {
            int k = utf8_len(r, end);
            if (!k)
                return NULL;
            r += k;
        } else {
            break;
        }
    }
    return r;
}

/* The escape at s (its backslash) decoded at *w, which moves past it: past the escape, or
 * NULL. A \u escape's UTF-8 is never longer than the escape. */
static const unsigned char *unescape(const unsigned char *s, const unsigned char *end,
                                     unsigned char **w) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (end - s < 2)
        return NULL;
    unsigned c = s[1], cp, lo;
    const char *k = c ? strchr(from, (int)c) : NULL;
    s += 2;
    if (k) {
        *(*w)++ = (unsigned char)to[k - from];
        return s;
    }
    if (c != 'u' || end - s < 4 || hex4(s, &cp) || (cp >= 0xdc00 && cp <= 0xdfff))
        return NULL;  /* not an escape, or a lone low surrogate */
    s += 4;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo) || lo < 0xdc00 ||
            lo > 0xdfff)
            return NULL;  /* a high surrogate without its low one */
        s += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    *w = put_utf8(*w, cp);
    return s;
}

/* The string at q->s (its opening quote) as a msgpack str; its text starts at *text and is
 * *n bytes. */
static int parse_string(Parser *q, size_t *text, size_t *n) {
    Buf *b = q->out;
    if (reserve(b, (size_t)(q->end - q->s) + 5))
        return -1;
    size_t at = b->len, len;
    const unsigned char *s = q->s + 1, *end = q->end, *r = plain_run(s, end);
    if (r && r < end && *r == '"') {  /* no escape (most strings): copied once, after its head */
        len = (size_t)(r - s);
        str_header(b->p + at, len);
        memcpy(b->p + at + str_header_len(len), s, len);
    } else {  /* decoded after room for the longest head, then moved to follow its own */
        unsigned char *start = b->p + at + 5, *w = start;
        for (;;) {
            if (!r || r >= end)
                return -1;
            memcpy(w, s, (size_t)(r - s));
            w += r - s;
            if (*r == '"')
                break;
            if (*r != '\\' || !(s = unescape(r, end, &w)))
                return -1;  /* a control character must be escaped */
            r = plain_run(s, end);
        }
        len = (size_t)(w - start);
        memmove(b->p + at + str_header_len(len), start, len);
        str_header(b->p + at, len);
    }
    b->len = at + (size_t)str_header_len(len) + len;
    *text = at + (size_t)str_header_len(len);
    *n = len;
    q->s = r + 1;
    return 0;
}

static int put_byte(Buf *b, unsigned char c) {
    if (reserve(b, 1))
        return -1;
    b->p[b->len++] = c;
    return 0;
}

static int put_int(Buf *b, int negative, uint64_t m) {
    unsigned char h[9];
    int n;
    if (!negative) {
        if (m < 128) { h[0] = (unsigned char)m; n = 1; }
        else if (m < 256) { h[0] = 0xcc; n = 2; }
        else if (m < 65536) { h[0] = 0xcd; n = 3; }
        else if (m < 4294967296ULL) { h[0] = 0xce; n = 5; }
        else { h[0] = 0xcf; n = 9; }
        if (n > 1)
            put_be(h + 1, m, n - 1);
    } else {
        int64_t v = m == 0 ? 0 : (int64_t)(0 - m);  /* m <= 2**63 (checked) */
        if (v == 0) { h[0] = 0; n = 1; }
        else if (v >= -32) { h[0] = (unsigned char)(v & 0xff); n = 1; }
        else if (v >= -128) { h[0] = 0xd0; n = 2; }
        else if (v >= -32768) { h[0] = 0xd1; n = 3; }
        else if (v >= -2147483648LL) { h[0] = 0xd2; n = 5; }
        else { h[0] = 0xd3; n = 9; }
        if (n > 1)
            put_be(h + 1, (uint64_t)v, n - 1);
    }
    if (reserve(b, (size_t)n))
        return -1;
    memcpy(b->p + b->len, h, (size_t)n);
    b->len += (size_t)n;
    return 0;
}

static int parse_number(Parser *q, int *integral_out) {
    const unsigned char *s = q->s, *end = q->end, *start = s;
    int negative = 0, integral = 1;
    if (s < end && *s == '-') {
        negative = 1;
        s++;
    }
    if (s >= end || *s < '0' || *s > '9')
        return -1;
    const unsigned char *digits = s;
    if (*s == '0')
        s++;
    else
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    const unsigned char *digits_end = s;
    if (s < end && *s == '.') {
        integral = 0;
        s++;
        if (s >= end || *s < '0' || *s > '9')
            return -1;
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        integral = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            s++;
        if (s >= end || *s < '0' || *s > '9')
            return -1;
        while (s < end && *s >= '0' && *s <= '9')
            s++;
    }
    q->s = s;
    *integral_out = integral;
    if (integral) {
        if (digits_end - digits > 20)
            return -1;
        uint64_t m = 0;
        for (const unsigned char *d = digits; d < digits_end; d++) {
            unsigned v = (unsigned)(*d - '0');
            if (m > (UINT64_MAX - v) / 10)
                return -1;  /* past 64 bits: the Python path's */
            m = m * 10 + v;
        }
        if (negative && m > (1ULL << 63))
            return -1;
        return put_int(q->out, negative, m);
    }
    char text[64];
    size_t len = (size_t)(s - start);
    if (len >= sizeof text)
        return -1;
    memcpy(text, start, len);
    text[len] = 0;
    errno = 0;
    double v = strtod(text, NULL);  /* correctly rounded (glibc), as orjson's */
    if (!isfinite(v) || (errno == ERANGE && v == 0))
        return -1;  /* out of a double's range; a subnormal (ERANGE too) is correctly rounded */
    union { double d; uint64_t u; } bits = {.d = v};
    Buf *b = q->out;
    if (reserve(b, 9))
        return -1;
    b->p[b->len] = 0xcb;
    put_be(b->p + b->len + 1, bits.u, 8);
    b->len += 9;
    return 0;
}

static int literal(Parser *q, const char *word, unsigned char code) {
    size_t n = strlen(word);
    if ((size_t)(q->end - q->s) < n || memcmp(q->s, word, n))
        return -1;
    q->s += n;
    return put_byte(q->out, code);
}

enum { OTHER, STRING, NUL, WORD };  /* WORD: an integer, true or false, said as its text */

static int parse_value(Parser *q, int *kind, size_t *text, size_t *n);

typedef struct {
    size_t at, n;  /* a key's text in the output */
} Span;

static int duplicate(const Buf *b, const Span *keys, int count) {
    const Span *k = &keys[count];
    for (int i = 0; i < count; i++)
        if (keys[i].n == k->n && !memcmp(b->p + keys[i].at, b->p + k->at, k->n))
            return 1;
    return 0;
}

/* An object's members after its '{': each key and value written; with `members`, where each
 * member's key text and value are (the top level's, to take some out). */
typedef struct {
    Span key;
    size_t start, end, text, n;  /* the member's bytes; a string value's text */
    int kind;
} Member;

static int parse_members(Parser *q, Member *members, size_t *count) {
    Span keys[MAX_MEMBERS];
    Member scratch;
    int c = 0;
    skip_ws(q);
    if (q->s < q->end && *q->s == '}') {
        q->s++;
        *count = 0;
        return 0;
    }
    for (;;) {
        if (c == MAX_MEMBERS)
            return -1;
        Member *m = members ? &members[c] : &scratch;
        skip_ws(q);
        if (q->s >= q->end || *q->s != '"')
            return -1;
        m->start = q->out->len;
        if (parse_string(q, &keys[c].at, &keys[c].n) || duplicate(q->out, keys, c))
            return -1;
        m->key = keys[c];
        skip_ws(q);
        if (q->s >= q->end || *q->s != ':')
            return -1;
        q->s++;
        skip_ws(q);
        if (parse_value(q, &m->kind, &m->text, &m->n))
            return -1;
        m->end = q->out->len;
        c++;
        skip_ws(q);
        if (q->s >= q->end)
            return -1;
        if (*q->s == '}') {
            q->s++;
            *count = (size_t)c;
            return 0;
        }
        if (*q->s != ',')
            return -1;
        q->s++;
    }
}

static int parse_container(Parser *q) {
    unsigned char open = *q->s++;
    if (++q->depth > MAX_DEPTH)
        return -1;
    Buf *b = q->out;
    size_t at = b->len, count = 0;
    if (put_byte(b, 0))
        return -1;
    if (open == '{') {
        if (parse_members(q, NULL, &count) || container_header(b, at, count, 0x80, 0xde))
            return -1;
    } else {
        skip_ws(q);
        if (q->s < q->end && *q->s == ']') {
            q->s++;
        } else {
            for (;;) {
                int kind;
                size_t text, n;
                skip_ws(q);
                if (parse_value(q, &kind, &text, &n))
                    return -1;
                count++;
                skip_ws(q);
                if (q->s >= q->end)
                    return -1;
                if (*q->s == ']') {
                    q->s++;
                    break;
                }
                if (*q->s != ',')
                    return -1;
                q->s++;
            }
        }
        if (container_header(b, at, count, 0x90, 0xdc))
            return -1;
    }
    q->depth--;
    return 0;
}

static int parse_value(Parser *q, int *kind, size_t *text, size_t *n) {
    *kind = OTHER;
    if (q->s >= q->end)
        return -1;
    switch (*q->s) {
    case '"':
        *kind = STRING;
        return parse_string(q, text, n);
    case '{':
    case '[':
        return parse_container(q);
    case 't':
        *kind = WORD;
        *text = (size_t)(q->s - q->start);
        *n = 4;
        return literal(q, "true", 0xc3);
    case 'f':
        *kind = WORD;
        *text = (size_t)(q->s - q->start);
        *n = 5;
        return literal(q, "false", 0xc2);
    case 'n':
        *kind = NUL;
        return literal(q, "null", 0xc0);
    default: {
        const unsigned char *at = q->s;
        int integral;
        if (parse_number(q, &integral))
            return -1;
        if (integral) {  /* its text as orjson says the int: as written, but -0 is 0 */
            *kind = WORD;
            int minus_zero = q->s - at == 2 && at[0] == '-' && at[1] == '0';
            *text = (size_t)(at - q->start) + (size_t)minus_zero;
            *n = (size_t)(q->s - at) - (size_t)minus_zero;
        }
        return 0;
    }
    }
}

typedef struct {
    const char *s[MAX_KEYS];
    Py_ssize_t n[MAX_KEYS];
    Py_ssize_t count;
} Keys;

/* The first of `keys` among the members not taken yet, now taken: its index, or -1. */
static int take(const Buf *b, const Member *members, size_t count, char *taken,
                const Keys *keys) {
    for (Py_ssize_t k = 0; k < keys->count; k++)
        for (size_t i = 0; i < count; i++)
            if (!taken[i] && members[i].key.n == (size_t)keys->n[k] &&
                !memcmp(b->p + members[i].key.at, keys->s[k], members[i].key.n)) {
                taken[i] = 1;
                return (int)i;
            }
    return -1;
}

typedef struct {
    Keys lists[3];  /* message, level, time keys */
    const char *names[4];  /* the pairs' keys, as msgpack: message, level, time, json */
    Py_ssize_t name_lens[4];
} Rules;

static int put(Buf *b, const void *p, size_t n) {
    if (reserve(b, n))
        return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int put_str(Buf *b, const unsigned char *p, size_t n) {
    if (reserve(b, n + 5))
        return -1;
    str_header(b->p + b->len, n);
    b->len += (size_t)str_header_len(n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* A taken value as text: a string as it is (its msgpack, after its key's), an integer, true
 * or false as its JSON. */
static int said(const Member *m, const unsigned char *line, const Buf *tmp, Buf *out) {
    if (m->kind == WORD)
        return put_str(out, line + m->text, m->n);
    size_t value = m->key.at + m->key.n;  /* the value follows its key */
    return put(out, tmp->p + value, m->end - value);
}

/* One line's pairs appended to `out`: their number, or -1 (the Python path's line). */
static int line_pairs(const Rules *r, const unsigned char *line, size_t len, Buf *tmp,
                      Buf *out) {
    Member members[MAX_MEMBERS];
    size_t count;
    char taken[MAX_MEMBERS] = {0};
    Parser q = {line, line + len, line, tmp, 1};
    tmp->len = 0;
    skip_ws(&q);
    if (q.s >= q.end || *q.s != '{')
        return -1;
    q.s++;
    if (parse_members(&q, members, &count))
        return -1;
    skip_ws(&q);
    if (q.s != q.end)
        return -1;
    int found[3];
    for (int k = 0; k < 3; k++) {
        found[k] = take(tmp, members, count, taken, &r->lists[k]);
        if (found[k] >= 0 && members[found[k]].kind == OTHER)
            return -1;  /* a float, object or array said as text: the Python path's */
    }
    int pairs = 2;
    if (put(out, r->names[0], (size_t)r->name_lens[0]))
        return -1;
    const Member *m = found[0] >= 0 ? &members[found[0]] : NULL;
    if (m && m->kind != NUL) {
        if (said(m, line, tmp, out))
            return -1;
    } else if (put_str(out, line, len)) {  /* none, or null: the line itself */
        return -1;
    }
    for (int k = 1; k < 3; k++) {
        m = found[k] >= 0 ? &members[found[k]] : NULL;
        if (!m || m->kind == NUL)
            continue;
        if (put(out, r->names[k], (size_t)r->name_lens[k]) || said(m, line, tmp, out))
            return -1;
        pairs++;
    }
    size_t kept = count - (size_t)(found[0] >= 0) - (size_t)(found[1] >= 0) -
                  (size_t)(found[2] >= 0);
    if (put(out, r->names[3], (size_t)r->name_lens[3]))
        return -1;
    unsigned char head[3];
    size_t h = 1;
    if (kept < 16) {
        head[0] = 0x80 | (unsigned char)kept;
    } else {
        head[0] = 0xde;
        put_be(head + 1, kept, 2);
        h = 3;
    }
    if (put(out, head, h))
        return -1;
    for (size_t i = 0; i < count; i++)
        if (!taken[i] && put(out, tmp->p + members[i].start, members[i].end - members[i].start))
            return -1;
    return pairs;
}

static int keys_of(PyObject *tuple, Keys *keys) {
    keys->count = PyTuple_Size(tuple);
    if (keys->count < 0 || keys->count > MAX_KEYS)
        return -1;
    for (Py_ssize_t i = 0; i < keys->count; i++) {
        keys->s[i] = PyUnicode_AsUTF8AndSize(PyTuple_GetItem(tuple, i), &keys->n[i]);
        if (!keys->s[i])
            return -1;
    }
    return 0;
}

typedef struct {
    PyObject **items;
    const unsigned char **lines;
    Py_ssize_t *lens;
    uint32_t *ends;
    unsigned char *counts;
} Batch;

static void batch_free(Batch *t, Py_ssize_t n) {
    if (t->items)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_XDECREF(t->items[i]);
    free(t->items);
    free(t->lines);
    free(t->lens);
    free(t->ends);
    free(t->counts);
}

/* Each line's pairs in `out` (line i's end at ends[i]), with the GIL released: 0, or -1 at a
 * line the Python path must take. */
static int transcode(const Rules *r, Batch *t, Py_ssize_t n, Py_ssize_t max_bytes, Buf *out) {
    Buf tmp = {0};
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int pairs = t->lens[i] > max_bytes ? -1
                    : line_pairs(r, t->lines[i], (size_t)t->lens[i], &tmp, out);
        if (pairs < 0) {
            failed = 1;
            break;
        }
        t->counts[i] = (unsigned char)pairs;
        if (out->len > UINT32_MAX) {
            failed = 1;
            break;
        }
        t->ends[i] = (uint32_t)out->len;
    }
    Py_END_ALLOW_THREADS
    free(tmp.p);
    return failed ? -1 : 0;
}

static PyObject *result(Batch *t, Py_ssize_t n, const Buf *out) {
    return Py_BuildValue("(y#y#y#)", (const char *)out->p, (Py_ssize_t)out->len,
                         (const char *)t->ends, n * (Py_ssize_t)sizeof(uint32_t),
                         (const char *)t->counts, n);
}

static int batch_of(PyObject *texts, Batch *t, Py_ssize_t n) {
    t->items = calloc((size_t)n + 1, sizeof *t->items);
    t->lines = malloc(((size_t)n + 1) * sizeof *t->lines);
    t->lens = malloc(((size_t)n + 1) * sizeof *t->lens);
    t->ends = calloc((size_t)n + 1, sizeof *t->ends);
    t->counts = malloc((size_t)n + 1);
    if (!t->items || !t->lines || !t->lens || !t->ends || !t->counts) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GetItem(texts, i);
        char *p;
        if (!item || PyBytes_AsStringAndSize(item, &p, &t->lens[i]) < 0)
            return -1;
        Py_INCREF(item);  /* alive while the GIL is released, whatever the list does */
        t->items[i] = item;
        t->lines[i] = (const unsigned char *)p;
    }
    return 0;
}

static PyObject *pairs(PyObject *self, PyObject *args) {
    PyObject *texts, *lists[3], *names;
    Py_ssize_t max_bytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!n", &PyList_Type, &texts, &PyTuple_Type, &lists[0],
                          &PyTuple_Type, &lists[1], &PyTuple_Type, &lists[2], &PyTuple_Type,
                          &names, &max_bytes))
        return NULL;
    Rules r;
    for (int k = 0; k < 3; k++)
        if (keys_of(lists[k], &r.lists[k])) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "at most 16 keys of each kind");
            return NULL;
        }
    if (PyTuple_Size(names) != 4) {
        PyErr_SetString(PyExc_ValueError, "names: four msgpack keys");
        return NULL;
    }
    for (int k = 0; k < 4; k++) {
        char *p;
        if (PyBytes_AsStringAndSize(PyTuple_GetItem(names, k), &p, &r.name_lens[k]) < 0)
            return NULL;
        r.names[k] = p;
    }
    Py_ssize_t n = PyList_Size(texts);
    Batch t = {0};
    Buf out = {0};
    PyObject *ret = NULL;
    if (batch_of(texts, &t, n) == 0) {
        if (transcode(&r, &t, n, max_bytes, &out) == 0)
            ret = result(&t, n, &out);
        else
            ret = Py_NewRef(Py_None);
    }
    free(out.p);
    batch_free(&t, n);
    return ret;
}

/* An entry's [time, record] head: the array header and the time (EventTime, or whole seconds
 * as msgpack's int); -1 for a time EventTime cannot hold (the Python path clamps it). */
static int time_head(Buf *b, long long t, int sub_second) {
    long long secs = t / 1000000000LL, nanos = t % 1000000000LL;
    if (nanos < 0) {  /* floor, as Python's // and % */
        secs -= 1;
        nanos += 1000000000LL;
    }
    if (put_byte(b, 0x92))
        return -1;
    if (!sub_second)
        return put_int(b, secs < 0, secs < 0 ? 0 - (uint64_t)secs : (uint64_t)secs);
    if (secs < 0 || secs > (long long)UINT32_MAX || reserve(b, 11))
        return -1;
    unsigned char *w = b->p + b->len;
    w[0] = 0xd7;
    w[1] = 0x00;
    put_be(w + 2, (uint64_t)secs, 4);
    put_be(w + 6, (uint64_t)nanos, 4);
    b->len += 10;
    return 0;
}

typedef struct {
    PyObject *texts, *times, *sources, *middles;
    const char *extras;
    size_t extras_len;
    int sub_second;
} Entry;

/* Line i's entry appended to `out`, its extra pairs extras[start:end]: 0; 1 for a time
 * EventTime cannot hold; -1 with an exception. */
static int put_entry(const Entry *e, Py_ssize_t i, int count, uint32_t start, uint32_t end,
                     Buf *out) {
    char *line, *middle;
    Py_ssize_t len, mlen;
    long long t = PyLong_AsLongLong(PyList_GetItem(e->times, i));
    int err = PyUnicode_CompareWithASCIIString(PyList_GetItem(e->sources, i), "stderr") == 0;
    if ((t == -1 && PyErr_Occurred()) || count < 2 || count > 4 || end < start ||
        end > e->extras_len ||
        PyBytes_AsStringAndSize(PyList_GetItem(e->texts, i), &line, &len) < 0 ||
        PyBytes_AsStringAndSize(PyTuple_GetItem(e->middles, 3 * err + count - 2), &middle,
                                &mlen) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "not a transcoded batch");
        return -1;
    }
    if (time_head(out, t, e->sub_second))
        return 1;
    if (put(out, middle, (size_t)mlen) || put_str(out, (const unsigned char *)line, (size_t)len)
        || put(out, e->extras + start, end - start)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* The batch's entries: for line i its time head, middles[3 * stderr + counts[i] - 2] (the
 * record's map header, the container's pairs, source, the log key), the line as a str and its
 * extra pairs. */
static PyObject *entries(PyObject *self, PyObject *args) {
    PyObject *texts, *times, *sources, *middles;
    const char *extras, *ends_b, *counts;
    Py_ssize_t extras_len, ends_len, counts_len;
    int sub_second;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!y#y#y#O!p", &PyList_Type, &texts, &PyList_Type, &times,
                          &PyList_Type, &sources, &extras, &extras_len, &ends_b, &ends_len,
                          &counts, &counts_len, &PyTuple_Type, &middles, &sub_second))
        return NULL;
    Py_ssize_t n = PyList_Size(texts);
    if (PyList_Size(times) != n || PyList_Size(sources) != n || counts_len != n ||
        ends_len != n * (Py_ssize_t)sizeof(uint32_t) || PyTuple_Size(middles) != 6) {
        PyErr_SetString(PyExc_ValueError, "a column of another length");
        return NULL;
    }
    uint32_t *ends = (uint32_t *)(void *)ends_b;  /* bytes' storage is aligned */
    uint64_t *entry_ends = malloc(((size_t)n + 1) * sizeof *entry_ends);
    Buf out = {0};
    PyObject *ret = NULL;
    if (!entry_ends || reserve(&out, (size_t)extras_len * 3 + 64)) {
        PyErr_NoMemory();
        goto done;
    }
    Entry e = {texts, times, sources, middles, extras, (size_t)extras_len, sub_second};
    uint32_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int got = put_entry(&e, i, (unsigned char)counts[i], start, ends[i], &out);
        if (got) {
            ret = got > 0 ? Py_NewRef(Py_None) : NULL;
            goto done;
        }
        start = ends[i];
        entry_ends[i] = out.len;
    }
    ret = Py_BuildValue("(y#y#)", (const char *)out.p, (Py_ssize_t)out.len,
                        (const char *)entry_ends, n * (Py_ssize_t)sizeof(uint64_t));
done:
    free(out.p);
    free(entry_ends);
    return ret;
}

static PyMethodDef methods[] = {
    {"pairs", pairs, METH_VARARGS,
     "pairs(texts, message_keys, level_keys, time_keys, names, max_bytes) -> (extras, ends, "
     "counts) or None: the lines' extra pairs as msgpack, one after another (line i's end at "
     "ends[i], native uint32), and how many each (a byte each); None if a line is not one this "
     "can say as the Python path does."},
    {"entries", entries, METH_VARARGS,
     "entries(texts, times, sources, extras, ends, counts, middles, sub_second) -> (entries, "
     "entry_ends) or None: PackedForward's [time, record] entries, one after another (entry "
     "i's end at entry_ends[i], native uint64); None for a time EventTime cannot hold."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_jsonpack", .m_size = 0, .m_methods = methods};

PyMODINIT_FUNC PyInit__jsonpack(void) { return PyModule_Create(&module); }
