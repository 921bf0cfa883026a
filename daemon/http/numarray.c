/* numarray.c: JSON number arrays <-> dtype buffers (see numarray.h). */
#include "numarray.h"
#include "numparse.h"

#include "dtoa.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The smallest magnitude that rounds to infinity as a float: FLT_MAX plus
 * half an ulp.  Anything below rounds to a finite float (FLT_MAX printed
 * with 9 digits, 3.40282347e+38, is a little above FLT_MAX itself). */
#define FLOAT_OVERFLOW 0x1.ffffffp+127

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

/* Appends ".0" to an integral rendering so the value reads back as a real. */
static size_t keep_real(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'n' || s[i] == 'i')
            return n;
    s[n++] = '.';
    s[n++] = '0';
    return n;
}

void optd_numarray_encode(optd_sbuf_t *b, optd_dtype_t dtype, const void *v, size_t n)
{
    /* At most OPTD_DTOA_MAX bytes per element, and a comma. */
    if (!optd_sbuf_reserve(b, n * (OPTD_DTOA_MAX + 1) + 3))
        return;
    char *o = b->p + b->len;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        if (dtype == OPTD_FLOAT32) {
            int k = snprintf(o, 32, "%.9g", (double)((const float *)v)[i]);
            o += keep_real(o, (size_t)k);
        } else {
            /* Grisu2, not %.17g: ~10x faster, and reads back exactly too. */
            o += optd_dtoa(((const double *)v)[i], o);
        }
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
        size_t k = json_number_len(p, end);
        if (k == 0 || k > OPTD_NUMPARSE_MAX || i >= n)
            return NULL;
        double d = optd_parse_double(p, k);
        if (!isfinite(d))
            return NULL;
        if (dtype == OPTD_FLOAT32) {
            if (fabs(d) >= FLOAT_OVERFLOW)
                return NULL;
            ((float *)out)[i] = (float)d;
        } else {
            ((double *)out)[i] = d;
        }
        i++;
        p = skip_ws(p + k, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']')
            return i == n ? p + 1 : NULL;
        return NULL;
    }
}

int optd_numarray_fast_member(const char *body, size_t len, const char *key, optd_dtype_t dtype,
                              void *out, size_t n, char **rest, size_t *rest_len)
{
    const char *end = body + len;
    size_t klen = strlen(key);
    const char *p = skip_ws(body, end);
    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    bool first = true;
    while (p < end && *p == '"') {
        const char *kstart = p + 1;
        const char *kend = skip_string(p, end);
        if (!kend)
            return 0;
        bool match = (size_t)(kend - 1 - kstart) == klen && memcmp(kstart, key, klen) == 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return 0;
        p = skip_ws(p + 1, end);
        if (match) {
            const char *vend = parse_array(p, end, dtype, out, n);
            if (!vend)
                return 0;
            const char *after = skip_ws(vend, end);
            if (first && after < end && *after == '}' && skip_ws(after + 1, end) == end) {
                *rest = NULL; /* {"key": [...]} and nothing else: no rest to read */
                *rest_len = 0;
                return 2;
            }
            size_t head = (size_t)(p - body), tail = (size_t)(end - vend);
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
        first = false;
        if (!(p = skip_value(p, end)))
            return 0;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else
            return 0;
    }
    return 0;
}
