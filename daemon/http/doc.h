/* doc.h: the one reader of JSON request documents.
 *
 * The policy every JSON body goes by, in one place:
 * - a document's big array of numbers is parsed straight from the text into
 *   a typed buffer (no Jansson value per number; a long one in chunks over
 *   the thread pool), and Jansson reads the small rest of the object with
 *   that member as null;
 * - a body the fast path does not follow, or that it finds anything wrong
 *   in, is read whole by Jansson instead, which words every error at its
 *   true line and column: the two paths answer the same;
 * - a key twice in one object, at any depth, is 400 invalid_json (API.md
 *   1.1); a member that is not one of the document's fields is 400
 *   invalid_argument naming it and the known ones; a body of more than
 *   OPTD_JSON_OUTSIDE_MAX bytes outside its number arrays is refused unread.
 *
 * A handler describes the document it expects (optd_doc_spec_t) and gets
 * back the decoded document (optd_doc_t) or an error in an optd_err_t with
 * the status, code and message to answer. */
#ifndef OPTD_HTTP_DOC_H
#define OPTD_HTTP_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "numarray.h"
#include "optd/error.h"
#include "optd/optim.h"
#include "parallel.h"

/* How many values the document's array holds, and where they go. */
typedef enum optd_doc_size {
    OPTD_DOC_NONE = 0, /* no big array: the whole body by Jansson (a patch, a batch's slow path) */
    OPTD_DOC_FIXED,    /* exactly n values of dtype, into the caller's buffer (a step, PUT params) */
    OPTD_DOC_ROWS,     /* rows_key's rows times row_size values, into a new buffer (a rows step); with
                        * array NULL, the rows alone, never held as Jansson values (a read of rows) */
    OPTD_DOC_BY_DOC,   /* as many as the document holds (1..max_n), into a new buffer of the dtype
                        * dtype_member names (a create): taken by optd_doc_take_values */
    OPTD_DOC_LAZY      /* a top-level array and those of the object nested_key (a state import),
                        * read only as the handler asks for them: optd_doc_decode */
} optd_doc_size_t;

typedef struct optd_doc_spec {
    const char *what;              /* names the document in messages: "a step request" */
    const char *const *fields;     /* its top-level members, NULL-terminated */
    optd_doc_size_t size;
    const char *array;             /* the member that is the big array of numbers */
    optd_dtype_t dtype;            /* its dtype (BY_DOC: when dtype_member is absent) */
    void *into;                    /* FIXED: room for n values */
    size_t n;
    const char *dtype_member;      /* BY_DOC: the member naming the dtype */
    const char *const *slow_if;    /* BY_DOC: members whose presence sends the body to Jansson */
    size_t max_n;                  /* BY_DOC: at most this many values read fast (0: any) */
    const char *rows_key;          /* ROWS: the member listing row numbers */
    uint64_t n_table;              /* ROWS: the table's rows, */
    size_t row_size;               /* and the values per row */
    const char *nested_key;        /* LAZY: the object whose arrays are read from the text too */
    optd_pool_t *pool;             /* long arrays are parsed over it (may be NULL) */
} optd_doc_spec_t;

/* The fast path's places in the body (LAZY). */
#define OPTD_DOC_SPANS (OPTD_BUF_COUNT + 2)

typedef struct optd_doc {
    json_t *obj;       /* the members (the array's member null when read fast); NULL when the body was
                        * the array member and nothing else (the usual small step: no Jansson at all) */
    bool has_array;    /* FIXED, ROWS: the array was given and is decoded */
    void *values;      /* ROWS, BY_DOC: the values, malloc'd (freed by optd_doc_free unless taken) */
    size_t n_values;
    uint64_t *rows;    /* ROWS: the rows, malloc'd (the same) */
    size_t n_rows;
    /* Private to doc.c. */
    bool fast;
    optd_dtype_t fast_dtype;
    const optd_doc_spec_t *spec;
    optd_numarray_span_t top, spans[OPTD_DOC_SPANS];
    size_t n_spans;
} optd_doc_t;

/* Reads body[0, len) as spec describes into *doc (always optd_doc_free it):
 * 0, or the error to answer in err (invalid_json, invalid_argument,
 * size_mismatch, internal when out of memory). */
int optd_doc_read(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err);
void optd_doc_free(optd_doc_t *doc);

/* BY_DOC, LAZY: the top-level array's values as dtype (which the handler
 * has read from the document's dtype_member, as the fast path did), once
 * the handler reaches the member (its value v in doc->obj) in its own order
 * of checks: *out (malloc'd, now the caller's), *n.  Errors name the
 * member; a non-finite value is invalid_argument. */
int optd_doc_take_values(optd_doc_t *doc, const json_t *v, optd_dtype_t dtype, void **out, size_t *n,
                         optd_err_t *err);

/* LAZY: runs decode(doc, ctx, err) on the document read fast; if that
 * fails in any way, runs reset(ctx) and decode again on the whole body read
 * by Jansson, so that every error is worded by that path.  decode reads the
 * arrays with optd_doc_take_values and optd_doc_values_into, passing the
 * member's value as it finds it in doc->obj. */
int optd_doc_decode(const char *body, size_t len, const optd_doc_spec_t *spec,
                    int (*decode)(optd_doc_t *doc, void *ctx, optd_err_t *err), void (*reset)(void *ctx), void *ctx,
                    optd_err_t *err);
/* The member key of the object spec->nested_key (its value v): n values of
 * dtype into out; field names it in messages. */
int optd_doc_values_into(optd_doc_t *doc, const char *key, const json_t *v, optd_dtype_t dtype, const char *field,
                         void *out, size_t n, optd_err_t *err);

/* A part of a body (a batch item's own text) read by Jansson under the
 * same rules (a repeated key refused): NULL when it is not JSON. */
json_t *optd_doc_parse_part(const char *text, size_t len);

#endif
