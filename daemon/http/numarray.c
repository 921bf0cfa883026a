/* numarray.c: JSON number arrays <-> dtype buffers (see numarray.h). */
#include "numarray.h"
#include "numparse.h"

#include "dtoa.h"
#include "ftoa.h"
#include "parallel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The smallest magnitude that rounds to infinity as a float: FLT_MAX plus
 * half an ulp.  Anything below rounds to a finite float (FLT_MAX printed
 * with 9 digits, 3.40282347e+38, is a little above FLT_MAX itself). */
#define FLOAT_OVERFLOW 0x1.ffffffp+127

/* Arrays of at least this many numbers are parsed and printed in chunks
 * spread over the update pool: a number costs ~40 ns either way, so this
 * is ~1 ms of work, well above the cost of waking a thread. */
#define PAR_MIN ((size_t)1 << 15)
/* Chunks per thread (a worker that wakes late takes what is left instead
 * of leaving the caller waiting on a big share), and at most. */
#define CHUNKS_PER_THREAD 4
#define MAX_CHUNKS 64

static unsigned chunks_for(optd_pool_t *pool)
{
    unsigned t = optd_pool_threads(pool) * CHUNKS_PER_THREAD;
    return t < MAX_CHUNKS ? t : MAX_CHUNKS;
}

int optd_numarray_decode_into(const json_t *v, optd_dtype_t dtype, const char *field, void *out,
                              size_t n, optd_err_t *err)
{
    if (!json_is_array(v))
        return optd_err_set(err, OPTD_EINVAL, "'%s' must be an array of numbers", field);
    size_t len = json_array_size(v);
    if (len != n)
        return optd_err_set(err, OPTD_ESIZE, "'%s' has %zu elements; the session has %zu", field,
                            len, n);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_number(e))
            return optd_err_set(err, OPTD_EINVAL, "'%s'[%zu] is not a number", field, i);
        double d = json_number_value(e);
        if (!isfinite(d))
            return optd_err_set(err, OPTD_ENONFINITE, "'%s'[%zu] is not finite", field, i);
        if (dtype == OPTD_FLOAT32) {
            if (fabs(d) >= FLOAT_OVERFLOW)
                return optd_err_set(err, OPTD_EINVAL,
                                    "'%s'[%zu] = %g is out of float32 range", field, i, d);
            ((float *)out)[i] = (float)d;
        } else {
            ((double *)out)[i] = d;
        }
    }
    return 0;
}

int optd_numarray_decode(const json_t *v, optd_dtype_t dtype, const char *field, void **out,
                         size_t *n, optd_err_t *err)
{
    if (!json_is_array(v))
        return optd_err_set(err, OPTD_EINVAL, "'%s' must be an array of numbers", field);
    size_t len = json_array_size(v);
    if (len == 0)
        return optd_err_set(err, OPTD_EINVAL, "'%s' must hold at least one number", field);
    void *buf = malloc(len * optd_dtype_size(dtype));
    if (!buf)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu values of '%s'", len, field);
    int rc = optd_numarray_decode_into(v, dtype, field, buf, len, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *n = len;
    return 0;
}

/* Writes element i of v at o; returns the end. */
static char *encode_one(char *o, optd_dtype_t dtype, const void *v, size_t i)
{
    if (dtype == OPTD_FLOAT32)
        return o + optd_ftoa(((const float *)v)[i], o); /* %.9g's bytes, ~4x faster */
    /* Grisu2, not %.17g: ~10x faster, and reads back exactly too. */
    return o + optd_dtoa(((const double *)v)[i], o);
}

/* Elements [lo, hi) of v at o, each after a comma but the very first. */
static char *encode_range(char *o, optd_dtype_t dtype, const void *v, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++) {
        if (i)
            *o++ = ',';
        o = encode_one(o, dtype, v, i);
    }
    return o;
}

typedef struct encode_job {
    optd_dtype_t dtype;
    const void *v;
    size_t n;
    unsigned n_chunks;
    char *base;              /* chunk k is written at base + k * room */
    size_t room;
    size_t len[MAX_CHUNKS];  /* bytes chunk k wrote */
} encode_job_t;

static void encode_task(void *vj, unsigned k)
{
    encode_job_t *j = vj;
    size_t lo = j->n * k / j->n_chunks, hi = j->n * (k + 1) / j->n_chunks;
    char *o = j->base + (size_t)k * j->room;
    j->len[k] = (size_t)(encode_range(o, j->dtype, j->v, lo, hi) - o);
}

void optd_numarray_encode(optd_sbuf_t *b, optd_dtype_t dtype, const void *v, size_t n,
                          optd_pool_t *pool)
{
    _Static_assert(OPTD_FTOA_MAX <= OPTD_DTOA_MAX, "room per float32");
    size_t per = OPTD_DTOA_MAX + 1; /* at most, with its comma */
    unsigned chunks = n >= PAR_MIN && optd_pool_threads(pool) > 1 ? chunks_for(pool) : 1;
    if (chunks == 1) {
        if (!optd_sbuf_reserve(b, n * per + 3))
            return;
        char *o = b->p + b->len;
        *o++ = '[';
        o = encode_range(o, dtype, v, 0, n);
        *o++ = ']';
        *o = '\0';
        b->len = (size_t)(o - b->p);
        return;
    }
    /* Each chunk is printed at the start of its own worst-case room, then
     * the chunks are moved down to follow each other, in order (a chunk's
     * destination can overlap only rooms before its own, already moved). */
    encode_job_t j = {.dtype = dtype, .v = v, .n = n, .n_chunks = chunks};
    j.room = (n / chunks + 1) * per;
    if (!optd_sbuf_reserve(b, chunks * j.room + 3))
        return;
    char *o = b->p + b->len;
    *o++ = '[';
    j.base = o;
    optd_pool_run(pool, chunks, encode_task, &j);
    o += j.len[0];
    for (unsigned k = 1; k < chunks; k++) {
        memmove(o, j.base + (size_t)k * j.room, j.len[k]);
        o += j.len[k];
    }
    *o++ = ']';
    *o = '\0';
    b->len = (size_t)(o - b->p);
}

/* ---- fast path ------------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Skips a JSON string starting at the quote; NULL if unterminated. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Skips one JSON value loosely (brackets balanced, strings skipped); the
 * remainder goes through Jansson, which rejects anything malformed. */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        char c = *p;
        if (c == '"') {
            if (!(p = skip_string(p, end)))
                return NULL;
            if (depth == 0)
                return p;
            continue;
        }
        if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth == 0)
                return p; /* the end of the enclosing object */
            if (--depth == 0)
                return p + 1;
        } else if (c == ',' && depth == 0) {
            return p;
        }
        p++;
    }
    return NULL;
}

static bool in_number_array(char c)
{
    return (c >= '0' && c <= '9') || c == ',' || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E' ||
           c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t optd_numarray_outside_bytes(const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    size_t inside = 0;
    while (p < end) {
        if (*p == '"') {
            const char *e = skip_string(p, end);
            if (!e)
                break;
            p = e;
            continue;
        }
        if (*p == '[') {
            const char *q = p + 1;
            while (q < end && in_number_array(*q))
                q++;
            if (q < end && *q == ']') {
                inside += (size_t)(q + 1 - p);
                p = q + 1;
                continue;
            }
        }
        p++;
    }
    return len - inside;
}

/* Length of a JSON number at p (RFC 8259 grammar), or 0. */
static size_t json_number_len(const char *p, const char *end)
{
    const char *s = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return 0;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    else
        return 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return (size_t)(p - s);
}

/* Parses the number at *pp into element i of out and moves *pp past it;
 * false when it is not a JSON number that fits dtype. */
static bool parse_one(const char **pp, const char *end, optd_dtype_t dtype, void *out, size_t i)
{
    const char *p = *pp;
    size_t k = json_number_len(p, end);
    if (k == 0 || k > OPTD_NUMPARSE_MAX)
        return false;
    double d = optd_parse_double(p, k);
    if (!isfinite(d))
        return false;
    if (dtype == OPTD_FLOAT32) {
        if (fabs(d) >= FLOAT_OVERFLOW)
            return false;
        ((float *)out)[i] = (float)d;
    } else {
        ((double *)out)[i] = d;
    }
    *pp = p + k;
    return true;
}

/* Parses "[n1, n2, ...]" at p into out; returns the end of the array, or
 * NULL when it is not exactly n numbers that fit dtype. */
static const char *parse_array(const char *p, const char *end, optd_dtype_t dtype, void *out, size_t n)
{
    if (p >= end || *p != '[')
        return NULL;
    p = skip_ws(p + 1, end);
    size_t i = 0;
    if (p < end && *p == ']')
        return n == 0 ? p + 1 : NULL;
    for (;;) {
        if (i >= n || !parse_one(&p, end, dtype, out, i))
            return NULL;
        i++;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']')
            return i == n ? p + 1 : NULL;
        return NULL;
    }
}

const char *optd_json_skip_ws(const char *p, const char *end)
{
    return skip_ws(p, end);
}

/* The 4 hex digits after "\\u" at p (p at the 'u'): the code unit, or -1. */
static long hex4(const char *p, const char *end)
{
    long v = 0;
    for (int k = 1; k <= 4; k++) {
        if (p + k >= end)
            return -1;
        char c = p[k];
        int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A JSON string at the quote p: the position after it, or NULL.  As
 * Jansson reads them: no \\u0000, surrogates only in pairs. */
static const char *valid_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c != '\\')
            continue;
        if (++p >= end)
            return NULL;
        if (*p == 'u') {
            long u = hex4(p, end);
            if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF))
                return NULL;
            p += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = p + 2 < end && p[1] == '\\' && p[2] == 'u' ? hex4(p + 2, end) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
            }
        } else if (!strchr("\"\\/bfnrt", *p)) {
            return NULL;
        }
    }
    return NULL;
}

bool optd_json_valid(const char *body, size_t len, size_t *bad)
{
    enum { MAX_DEPTH = 2048 }; /* Jansson's own limit */
    char stack[MAX_DEPTH];     /* '{' or '[' per open container */
    int depth = 0;
    const char *p = body, *end = body + len;
    for (;;) {
        /* A value is expected at p. */
        p = skip_ws(p, end);
        if (p >= end)
            goto fail;
        if (*p == '{' || *p == '[') {
            if (depth == MAX_DEPTH)
                goto fail;
            stack[depth++] = *p;
            p = skip_ws(p + 1, end);
            if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']')) {
                depth--;
                p++;
                goto after_value;
            }
            if (stack[depth - 1] == '[')
                continue;
            goto member;
        }
        if (*p == '"') {
            if (!(p = valid_string(p, end)))
                goto fail;
        } else if (*p == 't' || *p == 'f' || *p == 'n') {
            const char *w = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
            size_t k = strlen(w);
            if ((size_t)(end - p) < k || memcmp(p, w, k) != 0)
                goto fail;
            p += k;
        } else {
            size_t k = json_number_len(p, end);
            if (k == 0)
                goto fail;
            p += k;
        }
    after_value:
        p = skip_ws(p, end);
        if (depth == 0) {
            if (p != end)
                goto fail;
            return true;
        }
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            if (stack[depth - 1] == '[')
                continue;
            goto member;
        }
        if (p < end && *p == (stack[depth - 1] == '{' ? '}' : ']')) {
            depth--;
            p++;
            goto after_value;
        }
        goto fail;
    member:
        /* "key" : value, with p at the key. */
        if (p >= end || *p != '"' || !(p = valid_string(p, end)))
            goto fail;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            goto fail;
        p++;
    }
fail:
    *bad = (size_t)((p && p < end ? p : end) - body);
    return false;
}

const char *optd_json_read_number(const char *p, const char *end, double *out)
{
    size_t k = json_number_len(p, end);
    if (k == 0 || k > OPTD_NUMPARSE_MAX)
        return NULL;
    /* An integer literal Jansson would hold as an integer but cannot (past
     * int64): Jansson refuses it, so leave it to Jansson. */
    if (k > 18 && !memchr(p, '.', k) && !memchr(p, 'e', k) && !memchr(p, 'E', k))
        return NULL;
    *out = optd_parse_double(p, k);
    return isfinite(*out) ? p + k : NULL;
}

const char *optd_json_read_f64_array(const char *p, const char *end, double **vals, size_t *n,
                                     size_t *cap, bool *oom)
{
    if (p >= end || *p != '[')
        return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return p + 1;
    for (;;) {
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 1024;
            double *v = realloc(*vals, c * sizeof *v);
            if (!v) {
                *oom = true;
                return NULL;
            }
            *vals = v;
            *cap = c;
        }
        if (!(p = optd_json_read_number(p, end, &(*vals)[*n])))
            return NULL;
        (*n)++;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return p < end && *p == ']' ? p + 1 : NULL;
    }
}

bool optd_numarray_from_f64(const double *v, size_t n, optd_dtype_t dtype, void *out)
{
    if (dtype == OPTD_FLOAT64) {
        memcpy(out, v, n * sizeof *v);
        return true;
    }
    float *f = out;
    for (size_t i = 0; i < n; i++) {
        if (fabs(v[i]) >= FLOAT_OVERFLOW)
            return false;
        f[i] = (float)v[i];
    }
    return true;
}

/* The array's text between its brackets, cut into chunks just after a
 * comma: chunk k is [cut[k], cut[k+1]), so no number straddles two.  Each
 * chunk holds `count` numbers, each followed by a comma but for the last
 * number of the last chunk, and whitespace: together, exactly the grammar
 * of the array's inside. */
typedef struct parse_job {
    optd_dtype_t dtype;
    void *out;
    unsigned n_chunks;
    const char *close;                /* the array's ']' */
    const char *cut[MAX_CHUNKS + 1];
    size_t first[MAX_CHUNKS + 1];     /* index of chunk k's first number */
    size_t commas[MAX_CHUNKS];
    bool ok[MAX_CHUNKS];
} parse_job_t;

static bool chunk_is_last(const parse_job_t *j, unsigned k)
{
    return j->cut[k + 1] == j->close && j->cut[k] < j->close;
}

/* Commas in [p, end), eight bytes at a time (a byte loop was 7% of a 1M
 * step's time, as GCC does not vectorize it at -O2). */
static size_t count_commas(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101u, low7 = 0x7f7f7f7f7f7f7f7fu;
    size_t c = 0;
    while (end - p >= 8) {
        /* Per-byte counts in acc, at most 31 each so their sum fits a byte. */
        uint64_t acc = 0;
        for (int k = 0; k < 31 && end - p >= 8; k++, p += 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t x = w ^ (ones * ',');                 /* 0 where a comma is */
            uint64_t nonzero = ((x & low7) + low7) | x;    /* high bit: byte != 0 */
            acc += (~nonzero >> 7) & ones;
        }
        c += (size_t)((acc * ones) >> 56);
    }
    for (; p < end; p++)
        c += *p == ',';
    return c;
}

static void count_task(void *vj, unsigned k)
{
    parse_job_t *j = vj;
    j->commas[k] = count_commas(j->cut[k], j->cut[k + 1]);
}

static void parse_task(void *vj, unsigned k)
{
    parse_job_t *j = vj;
    const char *p = j->cut[k], *end = j->cut[k + 1];
    size_t count = j->first[k + 1] - j->first[k];
    bool last = chunk_is_last(j, k);
    char *out = (char *)j->out + j->first[k] * optd_dtype_size(j->dtype);
    for (size_t i = 0; i < count; i++) {
        p = skip_ws(p, end);
        if (!parse_one(&p, end, j->dtype, out, i)) {
            j->ok[k] = false;
            return;
        }
        p = skip_ws(p, end);
        if (i + 1 < count || !last) {
            if (p >= end || *p != ',') {
                j->ok[k] = false;
                return;
            }
            p++;
        }
    }
    j->ok[k] = p == end;
}

/* parse_array over the pool: one pass counts each chunk's commas (which
 * gives each chunk the index of its first number), a second parses the
 * chunks into their places.  Same result, same refusals. */
static const char *parse_array_split(const char *p, const char *end, optd_dtype_t dtype, void *out,
                                     size_t n, optd_pool_t *pool)
{
    if (p >= end || *p != '[')
        return NULL;
    const char *text = p + 1;
    /* Numbers hold no ']', so in an array of numbers the first is its end. */
    const char *close = memchr(text, ']', (size_t)(end - text));
    if (!close)
        return NULL;
    parse_job_t j = {.dtype = dtype, .out = out, .n_chunks = chunks_for(pool), .close = close};
    size_t len = (size_t)(close - text);
    j.cut[0] = text;
    /* Each cut is just after the first comma from its even share of the
     * text; cuts never go backwards (when a share holds no comma, two cuts
     * find the same one, and the chunk between them is empty). */
    for (unsigned k = 1; k < j.n_chunks; k++) {
        const char *c = text + len * k / j.n_chunks;
        const char *comma = memchr(c, ',', (size_t)(close - c));
        j.cut[k] = comma ? comma + 1 : close;
    }
    j.cut[j.n_chunks] = close;
    optd_pool_run(pool, j.n_chunks, count_task, &j);
    for (unsigned k = 0; k < j.n_chunks; k++)
        j.first[k + 1] = j.first[k] + j.commas[k] + chunk_is_last(&j, k);
    if (j.first[j.n_chunks] != n)
        return NULL;
    optd_pool_run(pool, j.n_chunks, parse_task, &j);
    for (unsigned k = 0; k < j.n_chunks; k++)
        if (!j.ok[k])
            return NULL;
    return close + 1;
}

/* Finds the top-level member key of the JSON object body[0, end): *val
 * is where its value starts, *first whether it is the object's first
 * member.  false when the body does not start as an object, or the key is
 * not found before something the loose scan cannot skip. */
static bool find_member(const char *body, const char *end, const char *key, const char **val, bool *first)
{
    size_t klen = strlen(key);
    const char *p = skip_ws(body, end);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    *first = true;
    while (p < end && *p == '"') {
        const char *kstart = p + 1;
        const char *kend = skip_string(p, end);
        if (!kend)
            return false;
        bool match = (size_t)(kend - 1 - kstart) == klen && memcmp(kstart, key, klen) == 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return false;
        p = skip_ws(p + 1, end);
        if (match) {
            *val = p;
            return true;
        }
        *first = false;
        if (!(p = skip_value(p, end)))
            return false;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else
            return false;
    }
    return false;
}

/* body[0, end) with the value [val, vend) replaced by null, malloc'd: 1,
 * 0 when that is over OPTD_JSON_OUTSIDE_MAX (the caller then declines, and
 * the whole body is refused by the reader), or OPTD_ENOMEM. */
static int rest_of(const char *body, const char *end, const char *val, const char *vend, char **rest,
                   size_t *rest_len)
{
    size_t head = (size_t)(val - body), tail = (size_t)(end - vend);
    if (head + tail > OPTD_JSON_OUTSIDE_MAX)
        return 0;
    char *r = malloc(head + 4 + tail + 1);
    if (!r)
        return OPTD_ENOMEM;
    memcpy(r, body, head);
    memcpy(r + head, "null", 4);
    memcpy(r + head + 4, vend, tail);
    r[head + 4 + tail] = '\0';
    *rest = r;
    *rest_len = head + 4 + tail;
    return 1;
}

int optd_numarray_fast_member(const char *body, size_t len, const char *key, optd_dtype_t dtype,
                              void *out, size_t n, optd_pool_t *pool, char **rest, size_t *rest_len)
{
    const char *end = body + len, *p;
    bool first;
    if (!find_member(body, end, key, &p, &first))
        return 0;
    const char *vend = n >= PAR_MIN && optd_pool_threads(pool) > 1 ? parse_array_split(p, end, dtype, out, n, pool)
                                                                   : parse_array(p, end, dtype, out, n);
    if (!vend)
        return 0;
    const char *after = skip_ws(vend, end);
    if (first && after < end && *after == '}' && skip_ws(after + 1, end) == end) {
        *rest = NULL; /* {"key": [...]} and nothing else: no rest to read */
        *rest_len = 0;
        return 2;
    }
    return rest_of(body, end, p, vend, rest, rest_len);
}

int optd_numarray_locate_member(const char *body, size_t len, const char *key, const char **arr,
                                size_t *arr_len, char **rest, size_t *rest_len)
{
    const char *end = body + len, *p;
    bool first;
    if (!find_member(body, end, key, &p, &first) || p >= end || *p != '[')
        return 0;
    /* Numbers hold no ']': if the array is only numbers, this is its end
     * (if not, optd_numarray_parse_new declines it). */
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (!close)
        return 0;
    *arr = p;
    *arr_len = (size_t)(close + 1 - p);
    return rest_of(body, end, p, close + 1, rest, rest_len);
}

int optd_numarray_parse_new(const char *arr, size_t len, optd_dtype_t dtype, size_t max_n, optd_pool_t *pool,
                            void **out, size_t *n)
{
    const char *end = arr + len;
    if (len < 2 || arr[0] != '[')
        return 0;
    /* One number more than commas, if the array is what it should be. */
    size_t count = count_commas(arr + 1, end) + 1;
    if (max_n && count > max_n)
        return 0;
    void *buf = malloc(count * optd_dtype_size(dtype));
    if (!buf)
        return OPTD_ENOMEM;
    const char *vend = count >= PAR_MIN && optd_pool_threads(pool) > 1
                           ? parse_array_split(arr, end, dtype, buf, count, pool)
                           : parse_array(arr, end, dtype, buf, count);
    if (vend != end) {
        free(buf);
        return 0;
    }
    *out = buf;
    *n = count;
    return 1;
}

int optd_numarray_find_arrays(const char *body, size_t len, const char *obj_key, optd_numarray_span_t *spans,
                              size_t max, size_t *n)
{
    const char *end = body + len, *p = body;
    bool first;
    *n = 0;
    if (obj_key && !find_member(body, end, obj_key, &p, &first))
        return 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return 1;
    while (p < end && *p == '"') {
        const char *kstart = p + 1, *kend = skip_string(p, end);
        if (!kend)
            return 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        const char *vend;
        if (p < end && *p == '[') {
            /* As in optd_numarray_locate_member: the first ']' ends an
             * array of numbers, and optd_numarray_parse_* checks it is one. */
            const char *close = memchr(p, ']', (size_t)(end - p));
            if (!close || *n >= max)
                return 0;
            spans[*n] = (optd_numarray_span_t){kstart, (size_t)(kend - 1 - kstart), p, (size_t)(close + 1 - p)};
            (*n)++;
            vend = close + 1;
        } else if (!(vend = skip_value(p, end))) {
            return 0;
        }
        p = skip_ws(vend, end);
        if (p < end && *p == '}')
            return 1;
        if (p >= end || *p != ',')
            return 0;
        p = skip_ws(p + 1, end);
    }
    return 0;
}

int optd_numarray_without(const char *body, size_t len, const optd_numarray_span_t *spans, size_t n,
                          char **rest, size_t *rest_len)
{
    size_t cut = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].arr < body || spans[i].arr + spans[i].len > body + len ||
            (i && spans[i].arr < spans[i - 1].arr + spans[i - 1].len))
            return 0; /* not in order, or not inside the body */
        cut += spans[i].len;
    }
    size_t out_len = len - cut + 4 * n;
    if (out_len > OPTD_JSON_OUTSIDE_MAX)
        return 0; /* see rest_of */
    char *r = malloc(out_len + 1), *o = r;
    if (!r)
        return OPTD_ENOMEM;
    const char *from = body;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, from, (size_t)(spans[i].arr - from));
        o += spans[i].arr - from;
        memcpy(o, "null", 4);
        o += 4;
        from = spans[i].arr + spans[i].len;
    }
    memcpy(o, from, (size_t)(body + len - from));
    r[out_len] = '\0';
    *rest = r;
    *rest_len = out_len;
    return 1;
}

int optd_numarray_parse_into(const char *arr, size_t len, optd_dtype_t dtype, void *out, size_t n,
                             optd_pool_t *pool)
{
    const char *end = arr + len;
    const char *vend = n >= PAR_MIN && optd_pool_threads(pool) > 1 ? parse_array_split(arr, end, dtype, out, n, pool)
                                                                   : parse_array(arr, end, dtype, out, n);
    return vend == end;
}
