/* sbuf.c: growable buffer and compact JSON writer (see sbuf.h). */
#include "sbuf.h"

#include "dtoa.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void optd_sbuf_init(optd_sbuf_t *b)
{
    memset(b, 0, sizeof *b);
}

void optd_sbuf_free(optd_sbuf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

bool optd_sbuf_reserve(optd_sbuf_t *b, size_t n)
{
    if (b->failed)
        return false;
    if (b->cap - b->len > n)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= n) {
        if (cap > ((size_t)-1) / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void optd_sbuf_put(optd_sbuf_t *b, const char *s, size_t n)
{
    if (!optd_sbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void optd_sbuf_puts(optd_sbuf_t *b, const char *s)
{
    optd_sbuf_put(b, s, strlen(s));
}

void optd_sbuf_printf(optd_sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !optd_sbuf_reserve(b, (size_t)n + 1)) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void optd_sbuf_put_jstring(optd_sbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    /* Worst case every byte becomes \u00XX. */
    if (!optd_sbuf_reserve(b, n * 6 + 3))
        return;
    char *o = b->p + b->len;
    *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c == '\r') {
            *o++ = '\\';
            *o++ = 'r';
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->p);
}

int optd_fmt_double(char *buf, double v)
{
    size_t n = optd_dtoa(v, buf); /* shortest digits, ".0" kept on integral values */
    buf[n] = '\0';
    return (int)n;
}

void optd_sbuf_put_double(optd_sbuf_t *b, double v)
{
    if (!isfinite(v)) {
        optd_sbuf_put(b, "null", 4);
        return;
    }
    char tmp[40];
    int n = optd_fmt_double(tmp, v);
    optd_sbuf_put(b, tmp, (size_t)n);
}

static void put_object_members(optd_sbuf_t *b, const json_t *obj)
{
    const char *key;
    json_t *val;
    bool first = true;
    json_object_foreach((json_t *)obj, key, val) {
        if (!first)
            optd_sbuf_put(b, ",", 1);
        first = false;
        optd_sbuf_put_jstring(b, key);
        optd_sbuf_put(b, ":", 1);
        optd_sbuf_put_json(b, val);
    }
}

void optd_sbuf_put_json(optd_sbuf_t *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        optd_sbuf_put(b, "{", 1);
        put_object_members(b, v);
        optd_sbuf_put(b, "}", 1);
        break;
    case JSON_ARRAY:
        optd_sbuf_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                optd_sbuf_put(b, ",", 1);
            optd_sbuf_put_json(b, json_array_get(v, i));
        }
        optd_sbuf_put(b, "]", 1);
        break;
    case JSON_STRING:
        optd_sbuf_put_jstring(b, json_string_value(v));
        break;
    case JSON_INTEGER:
        optd_sbuf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        optd_sbuf_put_double(b, json_real_value(v));
        break;
    case JSON_TRUE:
        optd_sbuf_put(b, "true", 4);
        break;
    case JSON_FALSE:
        optd_sbuf_put(b, "false", 5);
        break;
    case JSON_NULL:
        optd_sbuf_put(b, "null", 4);
        break;
    }
}

void optd_sbuf_put_object_open(optd_sbuf_t *b, const json_t *obj)
{
    optd_sbuf_put(b, "{", 1);
    put_object_members(b, obj);
}

void optd_sbuf_put_member_key(optd_sbuf_t *b, const char *key)
{
    if (b->len && b->p[b->len - 1] != '{')
        optd_sbuf_put(b, ",", 1);
    optd_sbuf_put_jstring(b, key);
    optd_sbuf_put(b, ":", 1);
}
