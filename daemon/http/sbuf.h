/* sbuf.h: a growable output buffer, and the JSON writer built on it.
 *
 * Response documents are built as Jansson values and written here rather
 * than with json_dumps, for two reasons: reals print as the shortest string
 * that parses back to the same double (0.1, not 0.10000000000000001), and
 * big number arrays (params, state buffers) are appended straight from the
 * parameter buffer by numarray.c without one Jansson object per element.
 * Allocation failure is sticky: check `failed` once at the end. */
#ifndef OPTD_HTTP_SBUF_H
#define OPTD_HTTP_SBUF_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

typedef struct optd_sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} optd_sbuf_t;

void optd_sbuf_init(optd_sbuf_t *b);
void optd_sbuf_free(optd_sbuf_t *b);
/* Makes room for n more bytes; false (and failed set) when out of memory. */
bool optd_sbuf_reserve(optd_sbuf_t *b, size_t n);
void optd_sbuf_put(optd_sbuf_t *b, const char *s, size_t n);
void optd_sbuf_puts(optd_sbuf_t *b, const char *s);
void optd_sbuf_printf(optd_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal with escapes. */
void optd_sbuf_put_jstring(optd_sbuf_t *b, const char *s);
/* A JSON number for a double: shortest round-trip form, with ".0" kept on
 * integral values so the type reads back as a real; null when not finite. */
void optd_sbuf_put_double(optd_sbuf_t *b, double v);
/* Any Jansson value, compact, keys in insertion order. */
void optd_sbuf_put_json(optd_sbuf_t *b, const json_t *v);
/* Writes an object without its closing brace, so further members can be
 * appended with optd_sbuf_put_member_key and the object closed with "}". */
void optd_sbuf_put_object_open(optd_sbuf_t *b, const json_t *obj);
/* `,"key":` (or `"key":` right after the opening brace). */
void optd_sbuf_put_member_key(optd_sbuf_t *b, const char *key);

/* Formats v into buf (at least OPTD_DTOA_MAX + 1 bytes) the shortest way
 * that reads back exactly (dtoa.h), NUL-terminated; returns the length. */
int optd_fmt_double(char *buf, double v);

#endif
