/* doc.c: the one reader of JSON request documents (see doc.h). */
#include "doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* ---- the whole body by Jansson ------------------------------------------------ */

/* The key Jansson found twice, into out (cap bytes): its token ends just
 * before jerr->position, so the opening quote is the nearest one before
 * that is not escaped (a JSON string holds no other).  false if it cannot
 * be read back. */
static bool duplicate_key(const char *buf, size_t len, const json_error_t *jerr, char *out, size_t cap)
{
    size_t end = (size_t)jerr->position;
    if (end < 2 || end > len || buf[end - 1] != '"')
        return false;
    for (size_t q = end - 1; q-- > 0;) {
        if (buf[q] != '"')
            continue;
        size_t bs = 0;
        while (q > bs && buf[q - 1 - bs] == '\\')
            bs++;
        if (bs % 2)
            continue;
        json_t *k = json_loadb(buf + q, end - q, JSON_DECODE_ANY, NULL);
        bool ok = json_is_string(k);
        if (ok)
            snprintf(out, cap, "%s", json_string_value(k));
        json_decref(k);
        return ok;
    }
    return false;
}

/* buf[0, len) as a JSON object, every error worded: the object (caller
 * decrefs), or NULL and err. */
static json_t *whole_object(const char *buf, size_t len, optd_err_t *err)
{
    size_t outside, bad;
    if (len > OPTD_JSON_OUTSIDE_MAX && (outside = optd_numarray_outside_bytes(buf, len)) > OPTD_JSON_OUTSIDE_MAX) {
        /* Refused unread; but a malformed body is still invalid JSON (a
         * broken number array counts as "outside" too), found in one pass
         * that builds nothing. */
        if (!optd_json_valid(buf, len, &bad))
            optd_err_set(err, OPTD_EJSON, "the body is not valid JSON (at byte %zu)", bad);
        else
            optd_err_set(err, OPTD_EINVAL,
                         "the body holds %zu bytes besides its arrays of numbers; at most %zu are "
                         "read (names, hyperparameters, schedules and 32 labels take a few KB)",
                         outside, OPTD_JSON_OUTSIDE_MAX);
        return NULL;
    }
    json_error_t jerr;
    /* API.md 1.1: a key twice in one object, at any depth, is refused, not
     * guessed at (a proxy or validator in front may read the other one). */
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc && json_error_code(&jerr) == json_error_duplicate_key) {
        char key[80];
        if (!duplicate_key(buf, len, &jerr, key, sizeof key))
            snprintf(key, sizeof key, "?");
        optd_err_set(err, OPTD_EJSON,
                     "the key \"%.64s\" appears twice in one object (line %d, column %d); every key may appear once",
                     key, jerr.line, jerr.column);
    } else if (!doc && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* 1e400 is valid JSON text but not a finite double: API.md's
         * Validation refuses non-finite numbers as invalid_argument. */
        optd_err_set(err, OPTD_EINVAL, "a number is out of range (not a finite double): %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
    } else if (!doc) {
        optd_err_set(err, OPTD_EJSON, "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                     jerr.column);
    } else if (!json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
        optd_err_set(err, OPTD_EJSON, "the body must be a JSON object");
    }
    return doc;
}

json_t *optd_doc_parse_part(const char *text, size_t len)
{
    return json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
}

/* The rest of a body the fast path took arrays out of: an object, or NULL
 * (the whole body then words what is wrong). */
static json_t *rest_object(char *rest, size_t rest_len)
{
    json_t *doc = json_loadb(rest, rest_len, JSON_REJECT_DUPLICATES, NULL);
    free(rest);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* 0, or invalid_argument naming the first member not in spec->fields. */
static int check_fields(const json_t *obj, const optd_doc_spec_t *spec, optd_err_t *err)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        const char *const *a = spec->fields;
        while (*a && strcmp(key, *a) != 0)
            a++;
        if (*a)
            continue;
        char list[300];
        size_t n = 0;
        list[0] = '\0';
        for (a = spec->fields; *a && n < sizeof list; a++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", *a);
        return optd_err_set(err, OPTD_EINVAL, "unknown field '%.64s' in %s (known: %s)", key, spec->what, list);
    }
    return 0;
}

/* Whether the member key of obj is JSON null (what the fast path left in
 * an array's place). */
static bool member_null(const json_t *obj, const char *key)
{
    return json_is_null(json_object_get(obj, key));
}

/* ---- the fast paths: 1 when taken (doc filled), 0 when the body goes to
 * Jansson whole (nothing kept), or an error ------------------------------------ */

static int fast_fixed(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    char *rest = NULL;
    size_t rest_len = 0;
    int rc = optd_numarray_fast_member(body, len, spec->array, spec->dtype, spec->into, spec->n, spec->pool, &rest,
                                       &rest_len);
    if (rc < 0)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory reading the %s", spec->array);
    doc->has_array = rc > 0;
    if (rc == 2) /* the usual small step: {"gradient": [...]} and nothing else */
        return 1;
    if (rc == 0)
        return 0;
    /* A rest that is no JSON object, or a repeated key: the whole body,
     * read by Jansson, words the error at its true line and column. */
    return (doc->obj = rest_object(rest, rest_len)) && member_null(doc->obj, spec->array);
}

/* The values and the rows of a rows step, both from the text. */
static int fast_rows(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc)
{
    const char *arr, *rows_arr;
    size_t arr_len, rest_len, rows_len, rest2_len;
    char *rest, *rest2 = NULL;
    if (optd_numarray_locate_member(body, len, spec->array, &arr, &arr_len, &rest, &rest_len) != 1)
        return 0;
    optd_err_t ignored;
    json_t *obj = NULL;
    if (optd_numarray_locate_member(rest, rest_len, spec->rows_key, &rows_arr, &rows_len, &rest2, &rest2_len) == 1 &&
        optd_codec_rows_parse(rows_arr, rows_len, spec->n_table, &doc->rows, &doc->n_rows, &ignored) == 0) {
        obj = rest_object(rest2, rest2_len);
        rest2 = NULL;
    }
    free(rest2);
    free(rest);
    doc->obj = obj;
    size_t n = doc->n_rows * spec->row_size;
    if (!obj || !member_null(obj, spec->array) || !member_null(obj, spec->rows_key) ||
        !(doc->values = malloc(n * optd_dtype_size(spec->dtype))) ||
        optd_numarray_parse_into(arr, arr_len, spec->dtype, doc->values, n, spec->pool) != 1)
        return 0;
    doc->n_values = n;
    doc->has_array = true;
    return 1;
}

/* A create's "params", whose length and dtype the document decides. */
static int fast_by_doc(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    const char *arr;
    size_t arr_len, rest_len;
    char *rest;
    int rc = optd_numarray_locate_member(body, len, spec->array, &arr, &arr_len, &rest, &rest_len);
    if (rc < 0)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory reading '%s'", spec->array);
    if (rc == 0 || !(doc->obj = rest_object(rest, rest_len)) || !member_null(doc->obj, spec->array))
        return 0;
    /* Only the plain case: no other source, a valid dtype. */
    for (const char *const *s = spec->slow_if; s && *s; s++)
        if (json_object_get(doc->obj, *s))
            return 0;
    optd_dtype_t dtype = spec->dtype;
    const json_t *dt = spec->dtype_member ? json_object_get(doc->obj, spec->dtype_member) : NULL;
    if (dt && (!json_is_string(dt) || optd_dtype_parse(json_string_value(dt), &dtype) != 0))
        return 0;
    rc = optd_numarray_parse_new(arr, arr_len, dtype, spec->max_n, spec->pool, &doc->values, &doc->n_values);
    if (rc < 0)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory reading '%s'", spec->array);
    doc->fast_dtype = dtype;
    return rc;
}

/* A state document: its one top-level array and the arrays of its nested
 * object located in the body, the rest read by Jansson with them as null;
 * they are parsed as the handler asks for them.  Jansson takes ~1.3 s for
 * a 1M-parameter Adam state; this, ~0.1 s. */
static int fast_lazy(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc)
{
    size_t n_top = 0, alen = strlen(spec->array);
    optd_numarray_span_t top[2];
    if (!optd_numarray_find_arrays(body, len, NULL, top, 2, &n_top) || n_top != 1 || top[0].key_len != alen ||
        memcmp(top[0].key, spec->array, alen) != 0)
        return 0;
    doc->top = top[0];
    if (!optd_numarray_find_arrays(body, len, spec->nested_key, doc->spans, OPTD_DOC_SPANS, &doc->n_spans))
        doc->n_spans = 0; /* none, or an object the scan does not follow: Jansson reads its arrays */
    /* All spans in body order: the top one goes before or after the others. */
    optd_numarray_span_t all[OPTD_DOC_SPANS + 1];
    size_t n = 0, i = 0;
    for (; i < doc->n_spans && doc->spans[i].arr < top[0].arr; i++)
        all[n++] = doc->spans[i];
    all[n++] = top[0];
    for (; i < doc->n_spans; i++)
        all[n++] = doc->spans[i];
    char *rest;
    size_t rest_len;
    if (optd_numarray_without(body, len, all, n, &rest, &rest_len) != 1)
        return 0;
    return (doc->obj = rest_object(rest, rest_len)) != NULL;
}

/* ---- the slow path's decoding ------------------------------------------------ */

static int slow_rows(const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    int rc = optd_codec_rows_decode(json_object_get(doc->obj, spec->rows_key), spec->n_table, 0, &doc->rows,
                                    &doc->n_rows, err);
    const json_t *v = json_object_get(doc->obj, spec->array);
    if (rc || !v)
        return rc;
    size_t n = doc->n_rows * spec->row_size;
    if (json_is_array(v) &&
        (rc = optd_codec_rows_values_check(json_array_size(v), spec->array, doc->n_rows, spec->row_size, err)))
        return rc;
    if (!(doc->values = malloc(n * optd_dtype_size(spec->dtype))))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for a gradient of %zu rows", doc->n_rows);
    doc->n_values = n;
    doc->has_array = true;
    return optd_numarray_decode_into(v, spec->dtype, spec->array, doc->values, n, err);
}

/* A read of rows: its row numbers are never Jansson values (some 25 times
 * the text's bytes: a body of row numbers would be held many times over,
 * outside --max-memory), on either path; what is wrong in them is worded
 * by the row parser, or as invalid JSON when the body is not JSON. */
static int read_rows_only(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc,
                          optd_err_t *err)
{
    const char *arr;
    size_t arr_len, rest_len, bad;
    char *rest = NULL;
    int rc = optd_numarray_locate_member(body, len, spec->rows_key, &arr, &arr_len, &rest, &rest_len);
    if (rc < 0)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory reading the rows");
    doc->obj = rc == 1 ? whole_object(rest, rest_len, err) : whole_object(body, len, err);
    free(rest);
    int frc = doc->obj ? check_fields(doc->obj, spec, err) : err->code;
    if (frc)
        return frc;
    if (rc == 0)
        return optd_codec_rows_decode(json_object_get(doc->obj, spec->rows_key), spec->n_table, 0, &doc->rows,
                                      &doc->n_rows, err);
    rc = optd_codec_rows_parse(arr, arr_len, spec->n_table, &doc->rows, &doc->n_rows, err);
    if (rc == OPTD_EINVAL && !optd_json_valid(body, len, &bad))
        rc = optd_err_set(err, OPTD_EJSON, "the body is not valid JSON (at byte %zu)", bad);
    return rc;
}

/* Back to nothing read, for the whole body. */
static void doc_clear(optd_doc_t *doc, const optd_doc_spec_t *spec)
{
    optd_doc_free(doc);
    memset(doc, 0, sizeof *doc);
    doc->spec = spec;
}

static int fast_read(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    switch (spec->size) {
    case OPTD_DOC_FIXED:
        return fast_fixed(body, len, spec, doc, err);
    case OPTD_DOC_ROWS:
        return fast_rows(body, len, spec, doc);
    case OPTD_DOC_BY_DOC:
        return fast_by_doc(body, len, spec, doc, err);
    case OPTD_DOC_LAZY:
        return fast_lazy(body, len, spec, doc);
    case OPTD_DOC_NONE:
        break;
    }
    return 0;
}

int optd_doc_read(const char *body, size_t len, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    memset(doc, 0, sizeof *doc);
    doc->spec = spec;
    if (spec->size == OPTD_DOC_ROWS && !spec->array)
        return read_rows_only(body, len, spec, doc, err);
    int rc = fast_read(body, len, spec, doc, err);
    if (rc < 0)
        return rc;
    /* Taken: the rest of the object is read.  With its array parsed
     * already, an unknown member in the rest is the answer, as before the
     * reader (the whole body, read again by Jansson, could word another
     * number first: an integer past int64, which the fast path reads as a
     * double).  A lazy array is not read yet and may be no JSON at all:
     * then the whole body words it. */
    if (rc == 1) {
        int frc = doc->obj ? check_fields(doc->obj, spec, err) : 0;
        if (!frc) {
            doc->fast = true;
            return 0;
        }
        if (spec->size != OPTD_DOC_LAZY)
            return frc;
    }
    doc_clear(doc, spec);
    *err = (optd_err_t){0};
    if (!(doc->obj = whole_object(body, len, err)))
        return err->code;
    if ((rc = check_fields(doc->obj, spec, err)))
        return rc;
    if (spec->size == OPTD_DOC_FIXED) {
        const json_t *v = json_object_get(doc->obj, spec->array);
        if (v && (rc = optd_numarray_decode_into(v, spec->dtype, spec->array, spec->into, spec->n, err)))
            return rc;
        doc->has_array = v != NULL;
    } else if (spec->size == OPTD_DOC_ROWS) {
        return slow_rows(spec, doc, err);
    }
    return 0;
}

void optd_doc_free(optd_doc_t *doc)
{
    json_decref(doc->obj);
    free(doc->values);
    free(doc->rows);
    doc->obj = NULL;
    doc->values = NULL;
    doc->rows = NULL;
}

/* ---- arrays read as the handler asks ---------------------------------------- */

/* What a fast document cannot account for: never answered (the document
 * is then read again whole, see optd_doc_decode). */
static int declined(optd_err_t *err)
{
    return optd_err_set(err, OPTD_EINVAL, "read again by Jansson");
}

int optd_doc_take_values(optd_doc_t *doc, const json_t *v, optd_dtype_t dtype, void **out, size_t *n,
                         optd_err_t *err)
{
    const optd_doc_spec_t *spec = doc->spec;
    if (doc->values) {
        if (dtype != doc->fast_dtype) /* the handler read the dtype otherwise: a bug */
            return optd_err_set(err, OPTD_EINTERNAL, "'%s' was read as another dtype", spec->array);
        *out = doc->values;
        *n = doc->n_values;
        doc->values = NULL;
        return 0;
    }
    if (doc->fast && spec->size == OPTD_DOC_LAZY && json_is_null(v)) {
        int rc = optd_numarray_parse_new(doc->top.arr, doc->top.len, dtype, 0, spec->pool, out, n);
        return rc == 1 ? 0 : rc < 0 ? optd_err_set(err, OPTD_ENOMEM, "out of memory reading '%s'", spec->array)
                                    : declined(err);
    }
    int rc = optd_numarray_decode(v, dtype, spec->array, out, n, err);
    /* A document's non-finite number is an invalid argument. */
    return rc == OPTD_ENONFINITE ? optd_err_set(err, OPTD_EINVAL, "%s", err->msg) : rc;
}

int optd_doc_values_into(optd_doc_t *doc, const char *key, const json_t *v, optd_dtype_t dtype, const char *field,
                         void *out, size_t n, optd_err_t *err)
{
    if (!doc->fast || !json_is_null(v))
        return optd_numarray_decode_into(v, dtype, field, out, n, err);
    size_t len = strlen(key);
    for (size_t i = 0; i < doc->n_spans; i++) {
        const optd_numarray_span_t *sp = &doc->spans[i];
        if (sp->key_len == len && memcmp(sp->key, key, len) == 0)
            return optd_numarray_parse_into(sp->arr, sp->len, dtype, out, n, doc->spec->pool) == 1 ? 0
                                                                                                   : declined(err);
    }
    return declined(err);
}

int optd_doc_decode(const char *body, size_t len, const optd_doc_spec_t *spec,
                    int (*decode)(optd_doc_t *doc, void *ctx, optd_err_t *err), void (*reset)(void *ctx), void *ctx,
                    optd_err_t *err)
{
    optd_doc_t doc;
    int rc = optd_doc_read(body, len, spec, &doc, err);
    if (!rc)
        rc = decode(&doc, ctx, err);
    if (rc && doc.fast) {
        /* Any error, or anything the fast path could not account for:
         * start over from the whole body, as if it had not been tried. */
        reset(ctx);
        doc_clear(&doc, spec);
        *err = (optd_err_t){0};
        if (!(doc.obj = whole_object(body, len, err)))
            rc = err->code;
        else if (!(rc = check_fields(doc.obj, spec, err)))
            rc = decode(&doc, ctx, err);
    }
    optd_doc_free(&doc);
    return rc;
}
