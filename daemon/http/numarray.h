/* numarray.h: number arrays between JSON and parameter buffers.
 *
 * The one module that turns a JSON array of numbers into n elements of a
 * dtype and back.  It is the hot path of every JSON step (gradient in,
 * params out), kept in one place so it can be made faster without touching
 * the handlers. */
#ifndef OPTD_HTTP_NUMARRAY_H
#define OPTD_HTTP_NUMARRAY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "optd/error.h"
#include "optd/optim.h"
#include "parallel.h"
#include "sbuf.h"

/* The most bytes a JSON body may hold outside its arrays of numbers
 * (issue 16 #12).  What is not a number array (a name, hyperparameters, a
 * schedule, 32 labels of at most 64 + 256 bytes) is a few KB; without a cap
 * a 79 MB body of labels cost 14 s of CPU and 1.2 GB in Jansson before its
 * 400.  Bodies over it are refused before Jansson sees them, and the fast
 * paths decline any body whose rest would exceed it. */
#define OPTD_JSON_OUTSIDE_MAX ((size_t)1 << 20)

/* Bytes of body[0, len) outside its arrays of plain numbers ("[1, 2e3]";
 * strings are skipped whole, so a bracket inside one counts for nothing):
 * one pass over the bytes, no allocation. */
size_t optd_numarray_outside_bytes(const char *body, size_t len);

/* Decodes the array v (field names it in messages) into a new buffer of
 * dtype: *out malloc'd (caller frees), *n elements.  Errors: OPTD_EINVAL
 * (not an array, empty when !allow_empty, an element not a number, a value
 * out of the dtype's range), OPTD_ENOMEM. */
int optd_numarray_decode(const json_t *v, optd_dtype_t dtype, const char *field, void **out,
                         size_t *n, optd_err_t *err);

/* Decodes v into out, which holds exactly n elements of dtype: as above,
 * plus OPTD_ESIZE when the array's length is not n. */
int optd_numarray_decode_into(const json_t *v, optd_dtype_t dtype, const char *field, void *out,
                              size_t n, optd_err_t *err);

/* The fast path for big bodies: finds the top-level member `key` of the
 * JSON object in body[0, len) and, when its value is an array of exactly n
 * plain JSON numbers that fit dtype, parses them straight into out (no
 * Jansson value per element) and returns a malloc'd copy of the body with
 * that array replaced by null (*rest, *rest_len), for Jansson to validate
 * and decode the small remainder.  Returns 1 when it did, 2 when the body
 * was that member and nothing else (JSON whitespace aside), so it is valid
 * JSON with no other field and there is no rest (*rest NULL: the usual
 * small step, which then needs no Jansson at all), 0 when the body
 * does not fit the fast path (then nothing is allocated and the caller
 * decodes the whole body with Jansson, which also words any error), or
 * OPTD_ENOMEM.  A long array is parsed in chunks over pool (may be NULL),
 * with the same result and the same refusals. */
int optd_numarray_fast_member(const char *body, size_t len, const char *key, optd_dtype_t dtype,
                              void *out, size_t n, optd_pool_t *pool, char **rest, size_t *rest_len);

/* The fast path for a big array whose length is not known beforehand (the
 * "params" of a create), in two steps, as the dtype it is read into is
 * known only once the rest of the body has been read.  Locate: finds the
 * top-level member `key` of the JSON object in body[0, len) whose value
 * starts as an array: *arr, *arr_len span that array's text (inside body),
 * and *rest, *rest_len (malloc'd) are the body with it replaced by null.
 * Returns 1 when it did, 0 when the body does not fit (nothing allocated),
 * or OPTD_ENOMEM. */
int optd_numarray_locate_member(const char *body, size_t len, const char *key, const char **arr,
                                size_t *arr_len, char **rest, size_t *rest_len);

/* Parse: when arr[0, len) is an array of at least one and at most max_n
 * (0: any number) plain JSON numbers that fit dtype, parses them into a new
 * buffer (*out, malloc'd, caller frees; *n elements) and returns 1; a long
 * array is parsed in chunks over pool (may be NULL).  Returns 0 when it is
 * anything else (nothing allocated: decode the body with Jansson, which
 * words the error), or OPTD_ENOMEM. */
int optd_numarray_parse_new(const char *arr, size_t len, optd_dtype_t dtype, size_t max_n, optd_pool_t *pool,
                            void **out, size_t *n);

/* For documents with several arrays (a state import: "params" and each
 * buffer of "state"): an array value of a member, by its place in the
 * body. */
typedef struct optd_numarray_span {
    const char *key;   /* the member's name, inside the body (not NUL-terminated) */
    size_t key_len;
    const char *arr;   /* the array's text, inside the body */
    size_t len;
} optd_numarray_span_t;

/* Lists, in body order, the members whose values start as an array, of
 * the JSON object body[0, len) (obj_key NULL) or of the object that is its
 * top-level member obj_key.  Returns 1 (*n spans, at most max; 0 spans is
 * fine), or 0 when the body does not fit the loose scan or holds more than
 * max such arrays. */
int optd_numarray_find_arrays(const char *body, size_t len, const char *obj_key, optd_numarray_span_t *spans,
                              size_t max, size_t *n);

/* body with each of the n spans (in body order) replaced by null, for
 * Jansson: 1 and *rest malloc'd, 0 when the spans are not in order inside
 * body, or OPTD_ENOMEM. */
int optd_numarray_without(const char *body, size_t len, const optd_numarray_span_t *spans, size_t n,
                          char **rest, size_t *rest_len);

/* Parses arr[0, len) into out when it is an array of exactly n plain JSON
 * numbers that fit dtype (1), else 0 (out then holds anything); split over
 * pool (may be NULL) when long. */
int optd_numarray_parse_into(const char *arr, size_t len, optd_dtype_t dtype, void *out, size_t n,
                             optd_pool_t *pool);

/* Token readers for the fast scanners of small documents (a batch of steps,
 * route_steps.c): each reads at p, never past end, and returns the position
 * after what it read, or NULL when the text there is not that. */
const char *optd_json_skip_ws(const char *p, const char *end);
/* Whether body[0, len) is one JSON value by RFC 8259's grammar (UTF-8 is
 * not checked), without building it: for a body refused unread for its
 * size, so that a malformed one is still called invalid JSON.  *bad is the
 * offset of the first byte that does not fit. */
bool optd_json_valid(const char *body, size_t len, size_t *bad);
/* One JSON number (RFC 8259 grammar) whose value is a finite double; an
 * integer literal of more than 18 characters is not read (Jansson, which
 * the caller falls back to, refuses those past int64). */
const char *optd_json_read_number(const char *p, const char *end, double *out);
/* "[n1, n2, ...]" of plain JSON numbers that are finite doubles, appended
 * to the growable array *vals (*n used, *cap allocated; realloc'd as
 * needed).  Sets *oom (and returns NULL) when memory ran out. */
const char *optd_json_read_f64_array(const char *p, const char *end, double **vals, size_t *n,
                                     size_t *cap, bool *oom);
/* n doubles into out as dtype, exactly as the parsers above store them;
 * false when one does not fit a float32 (out then holds anything). */
bool optd_numarray_from_f64(const double *v, size_t n, optd_dtype_t dtype, void *out);

/* Appends "[...]" with n elements of dtype from v: float64 with 17
 * significant digits, float32 with 9 (both read back exactly).  Long
 * arrays are printed in chunks over pool (may be NULL: this thread alone);
 * the text is the same either way. */
void optd_numarray_encode(optd_sbuf_t *b, optd_dtype_t dtype, const void *v, size_t n,
                          optd_pool_t *pool);

#endif
