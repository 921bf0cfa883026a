/* route_step.c: POST /v1/sessions/{name}/step, one optimizer update from a
 * JSON or a binary (application/octet-stream) gradient. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binary.h"
#include "codec.h"
#include "dtoa.h"
#include "fmt.h"
#include "http.h"
#include "numarray.h"

static const char *const step_fields[] = {"gradient", "step", "loss", "worker", NULL};

/* Reads the JSON form: the gradient into *grad (malloc'd).  Big gradients
 * take numarray's fast path (parsed straight into the buffer, Jansson only
 * for the rest of the object); anything unusual takes Jansson for the whole
 * body, which also words the error.  Returns 1 when it already answered. */
static int decode_json(optd_req_t *req, size_t n, optd_dtype_t dtype, void **grad, bool *has_expect,
                       uint64_t *expect, bool *has_loss, double *loss, char *worker, optd_err_t *err)
{
    if (!(*grad = malloc(n * optd_dtype_size(dtype))))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for a gradient of %zu values", n);
    char *rest = NULL;
    size_t rest_len = 0;
    json_t *body = NULL;
    int fast = req->body_kind == OPTD_BODY_BINARY
                   ? 0
                   : optd_numarray_fast_member(req->body ? req->body : "", req->body_len, "gradient", dtype,
                                               *grad, n, req->srv->pool, &rest, &rest_len);
    if (fast < 0)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory reading the gradient");
    if (fast == 2) /* the usual small step: {"gradient": [...]} and nothing else */
        return 0;
    if (fast == 1) {
        /* A rest that is no JSON object: the whole body, read below, words
         * the error at its true line and column.  A repeated key: Jansson,
         * reading the whole body, decides which one counts. */
        body = json_loadb(rest, rest_len, JSON_REJECT_DUPLICATES, NULL);
        free(rest);
        if (!json_is_object(body) || !json_is_null(json_object_get(body, "gradient"))) {
            json_decref(body);
            body = NULL;
            fast = 0;
        }
    }
    if (!body && !(body = optd_req_json_object(req)))
        return 1;
    int rc = 0;
    if (!optd_req_known_fields(req, body, step_fields, "a step request")) {
        json_decref(body);
        return 1;
    }
    const json_t *v = json_object_get(body, "gradient");
    if (!v) {
        rc = optd_err_set(err, OPTD_EINVAL, "'gradient' is required (an array of %zu numbers)", n);
        goto out;
    }
    if (!fast && (rc = optd_numarray_decode_into(v, dtype, "gradient", *grad, n, err)))
        goto out;
    /* API.md 1.1: present means a number; null is refused, not ignored. */
    if ((v = json_object_get(body, "step"))) {
        if ((rc = optd_codec_u64_decode(v, "step", expect, err)))
            goto out;
        *has_expect = true;
    }
    if ((v = json_object_get(body, "loss"))) {
        if ((rc = optd_codec_number_decode(v, "loss", loss, err)))
            goto out;
        *has_loss = true;
    }
    if ((v = json_object_get(body, "worker")) && (rc = optd_route_worker_name(json_string_value(v), worker, err)))
        goto out;
out:
    json_decref(body);
    return rc;
}

/* The step's inputs, read from a binary body and its headers, or from
 * JSON (then *grad_owned is the malloc'd gradient).  0, an error in err,
 * or 1 when it already answered. */
static int read_input(optd_req_t *req, size_t n, optd_dtype_t dtype, void **grad_owned,
                      optd_step_input_t *in, uint64_t *expect, double *loss, char *worker, optd_err_t *err)
{
    bool has_expect = false, has_loss = false;
    int rc;
    const char *h;
    if (req->body_kind == OPTD_BODY_BINARY) {
        /* Length first (a wrong length stays size_mismatch, as in 1.0),
         * then the dtype the body says it holds, then its values. */
        size_t bytes = n * optd_dtype_size(dtype);
        rc = req->body_len != bytes ? optd_binary_gradient_check(req->body, req->body_len, dtype, n, err)
                                    : optd_binary_dtype_check(optd_req_header(req, "Optd-Dtype"), dtype, err);
        if (!rc)
            rc = optd_binary_gradient_check(req->body, req->body_len, dtype, n, err);
        if (!rc && (h = optd_req_header(req, "Optd-Expect-Step"))) {
            rc = optd_binary_header_u64(h, "Optd-Expect-Step", expect, err);
            has_expect = true;
        }
        if (!rc && (h = optd_req_header(req, "Optd-Loss"))) {
            rc = optd_binary_header_double(h, "Optd-Loss", loss, err);
            has_loss = true;
        }
        in->grad = req->body;
    } else {
        rc = decode_json(req, n, dtype, grad_owned, &has_expect, expect, &has_loss, loss, worker, err);
        in->grad = *grad_owned;
        if (rc == 1) /* already answered */
            return 1;
        /* A JSON step may name its expected step in the header instead of
         * "step"; both at once must agree. */
        if (!rc && (h = optd_req_header(req, "Optd-Expect-Step"))) {
            uint64_t hv;
            rc = optd_binary_header_u64(h, "Optd-Expect-Step", &hv, err);
            if (!rc && has_expect && hv != *expect)
                rc = optd_err_set(err, OPTD_EINVAL,
                                  "header Optd-Expect-Step (%llu) and field 'step' (%llu) disagree",
                                  (unsigned long long)hv, (unsigned long long)*expect);
            *expect = hv;
            has_expect = true;
        }
    }
    in->expect_step = has_expect ? expect : NULL;
    in->loss = has_loss ? loss : NULL;
    if (!rc && (h = optd_req_header(req, "Optd-Worker"))) {
        char hw[OPTD_WORKER_NAME_MAX + 1];
        rc = optd_route_worker_name(h, hw, err);
        if (!rc && worker[0] && strcmp(hw, worker) != 0)
            rc = optd_err_set(err, OPTD_EINVAL, "header Optd-Worker and field 'worker' disagree");
        if (!rc)
            memcpy(worker, hw, sizeof hw);
    }
    return rc;
}

/* ---- rows steps (API.md 1.1, Tables) ---------------------------------------- */

/* What a rows step asks: the rows (malloc'd) and their values (malloc'd
 * for JSON; in the body for binary, where rows is the body's rows copied
 * out of its little-endian bytes). */
typedef struct rows_in {
    uint64_t *rows;
    size_t n_rows;
    void *vals_owned;
} rows_in_t;

static const char *const rows_step_fields[] = {"rows", "gradient", "step", "loss", NULL};

/* numarray's fast path for the gradient, as a plain step has it: the
 * values parsed straight into ri->vals_owned, and the body without them
 * for Jansson.  NULL (nothing kept) when anything in the body is unusual:
 * Jansson then reads it whole and words any error. */
static json_t *rows_json_fast(optd_req_t *req, const optd_session_t *s, rows_in_t *ri)
{
    const char *arr;
    size_t arr_len, rest_len;
    char *rest;
    if (optd_numarray_locate_member(req->body, req->body_len, "gradient", &arr, &arr_len, &rest, &rest_len) != 1)
        return NULL;
    /* The rows too are read from the text, not as a JSON value each. */
    const char *rows_arr;
    size_t rows_len, rest2_len;
    char *rest2 = NULL;
    json_t *doc = NULL;
    size_t R = optd_session_row_size(&s->cfg);
    optd_err_t ignored;
    if (optd_numarray_locate_member(rest, rest_len, "rows", &rows_arr, &rows_len, &rest2, &rest2_len) == 1 &&
        optd_codec_rows_parse(rows_arr, rows_len, s->size / R, &ri->rows, &ri->n_rows, &ignored) == 0)
        doc = json_loadb(rest2, rest2_len, JSON_REJECT_DUPLICATES, NULL);
    free(rest2);
    free(rest);
    if (json_is_object(doc) && json_is_null(json_object_get(doc, "gradient")) &&
        json_is_null(json_object_get(doc, "rows")) &&
        (ri->vals_owned = malloc(ri->n_rows * R * optd_dtype_size(s->cfg.dtype))) &&
        optd_numarray_parse_into(arr, arr_len, s->cfg.dtype, ri->vals_owned, ri->n_rows * R,
                                 req->srv->pool) == 1)
        return doc;
    free(ri->rows);
    free(ri->vals_owned);
    memset(ri, 0, sizeof *ri);
    json_decref(doc);
    return NULL;
}

/* The JSON form (a rows step is small: its rows, not the table).  0, an
 * error in err, or 1 when it already answered. */
static int rows_json(optd_req_t *req, const optd_session_t *s, rows_in_t *ri, optd_step_input_t *in,
                     uint64_t *expect, double *loss, optd_err_t *err)
{
    json_t *body = rows_json_fast(req, s, ri);
    bool fast = body != NULL;
    if (!body && !(body = optd_req_json_object(req)))
        return 1;
    if (!optd_req_known_fields(req, body, rows_step_fields, "a rows step")) {
        json_decref(body);
        return 1;
    }
    size_t R = optd_session_row_size(&s->cfg);
    int rc = fast ? 0
                  : optd_codec_rows_decode(json_object_get(body, "rows"), s->size / R, 0, &ri->rows,
                                           &ri->n_rows, err);
    const json_t *v = json_object_get(body, "gradient");
    if (!rc && !v)
        rc = optd_err_set(err, OPTD_EINVAL, "'gradient' is required (len(rows) x row_size = %zu numbers)",
                          ri->n_rows * R);
    if (!rc && !fast && !(ri->vals_owned = malloc(ri->n_rows * R * optd_dtype_size(s->cfg.dtype))))
        rc = optd_err_set(err, OPTD_ENOMEM, "out of memory for a gradient of %zu rows", ri->n_rows);
    if (!rc && !fast)
        rc = optd_numarray_decode_into(v, s->cfg.dtype, "gradient", ri->vals_owned, ri->n_rows * R, err);
    if (!rc && (v = json_object_get(body, "step")) && !(rc = optd_codec_u64_decode(v, "step", expect, err)))
        in->expect_step = expect;
    if (!rc && (v = json_object_get(body, "loss")) && !(rc = optd_codec_number_decode(v, "loss", loss, err)))
        in->loss = loss;
    json_decref(body);
    in->grad = ri->vals_owned;
    /* As a plain JSON step: Optd-Expect-Step instead of "step", or agreeing. */
    const char *h = optd_req_header(req, "Optd-Expect-Step");
    uint64_t hv;
    if (!rc && h && !(rc = optd_binary_header_u64(h, "Optd-Expect-Step", &hv, err))) {
        if (in->expect_step && hv != *expect)
            rc = optd_err_set(err, OPTD_EINVAL, "header Optd-Expect-Step (%llu) and field 'step' (%llu) disagree",
                              (unsigned long long)hv, (unsigned long long)*expect);
        *expect = hv;
        in->expect_step = expect;
    }
    return rc;
}

/* The binary form: Optd-Rows: n, then n little-endian u64 rows and n x
 * row_size values of the session's dtype. */
static int rows_binary(optd_req_t *req, const optd_session_t *s, rows_in_t *ri, optd_step_input_t *in,
                       uint64_t *expect, double *loss, optd_err_t *err)
{
    uint64_t n;
    optd_dtype_t dtype = s->cfg.dtype;
    size_t R = optd_session_row_size(&s->cfg), es = optd_dtype_size(dtype);
    int rc = optd_binary_header_u64(optd_req_header(req, "Optd-Rows"), "Optd-Rows", &n, err);
    if (rc)
        return rc;
    if (n == 0 || n > req->body_len / 8 / (1 + R * es / 8) || (req->body_len - n * 8) != n * R * es)
        return optd_err_set(err, OPTD_ESIZE,
                            "the body holds %zu bytes; Optd-Rows %llu needs 8 bytes per row number, "
                            "then %zu %s values per row",
                            req->body_len, (unsigned long long)n, R, optd_dtype_name(dtype));
    if ((rc = optd_binary_dtype_check(optd_req_header(req, "Optd-Dtype"), dtype, err)))
        return rc;
    if (!(ri->rows = malloc(n * sizeof *ri->rows)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %llu rows", (unsigned long long)n);
    ri->n_rows = (size_t)n;
    const uint8_t *b = (const uint8_t *)req->body;
    uint64_t n_table = s->size / R;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = 0;
        for (int k = 7; k >= 0; k--)
            r = r << 8 | b[8 * i + (size_t)k];
        if (r >= n_table)
            return optd_err_set(err, OPTD_EINVAL, "row %zu of the body is %llu; the session has %llu rows", i,
                                (unsigned long long)r, (unsigned long long)n_table);
        ri->rows[i] = r;
    }
    /* The body is malloc'd, so the values after n * 8 bytes are aligned. */
    in->grad = req->body + n * 8;
    if ((rc = optd_binary_gradient_check(in->grad, n * R * es, dtype, n * R, err)))
        return rc;
    const char *h;
    if ((h = optd_req_header(req, "Optd-Expect-Step"))) {
        if ((rc = optd_binary_header_u64(h, "Optd-Expect-Step", expect, err)))
            return rc;
        in->expect_step = expect;
    }
    if ((h = optd_req_header(req, "Optd-Loss"))) {
        if ((rc = optd_binary_header_double(h, "Optd-Loss", loss, err)))
            return rc;
        in->loss = loss;
    }
    return 0;
}

/* A rows step on s (the caller's reference, released here). */
static void route_rows_step(optd_req_t *req, optd_session_t *s, bool return_none)
{
    optd_server_t *srv = req->srv;
    bool binary = req->body_kind == OPTD_BODY_BINARY;
    optd_dtype_t dtype = s->cfg.dtype;
    size_t R = optd_session_row_size(&s->cfg);
    optd_err_t err = {0};
    rows_in_t ri = {0};
    optd_step_input_t in = {0};
    uint64_t expect = 0, step = 0;
    double loss = 0;
    void *vals = NULL;
    /* A round reduces whole gradients: a rows step is never a worker's
     * contribution, by header as by field ("worker" is refused as unknown
     * in the JSON form), rather than a plain rows step that ignores it. */
    int rc = optd_req_header(req, "Optd-Worker")
                 ? optd_err_set(&err, OPTD_EINVAL, "a rows step cannot be a worker's contribution to a round "
                                                   "(header Optd-Worker): rounds take whole gradients")
             : binary ? rows_binary(req, s, &ri, &in, &expect, &loss, &err)
                      : rows_json(req, s, &ri, &in, &expect, &loss, &err);
    if (rc == 1)
        goto out;
    in.rows = ri.rows;
    in.n_rows = ri.n_rows;
    /* ?return=none answers no values: none are copied out. */
    if (!rc && !return_none && !(vals = malloc(ri.n_rows * R * optd_dtype_size(dtype))))
        rc = optd_err_set(&err, OPTD_ENOMEM, "out of memory for %zu rows", ri.n_rows);
    if (!rc)
        rc = optd_store_step(srv->store, &s, &in, &step, vals, &err);
    if (rc == OPTD_ESTEP)
        optd_http_error_step(req, step, &err);
    else if (rc)
        optd_http_store_error(req, rc, &err);
    if (rc) {
        atomic_fetch_add_explicit(&srv->metrics.step_errors, 1, memory_order_relaxed);
        goto out;
    }
    optd_metrics_step(&srv->metrics, s->cfg.kind);
    optd_http_reply_step(req, binary, &(optd_step_answer_t){.step = step, .rows = ri.rows, .n_rows = ri.n_rows,
                                                          .dtype = dtype, .params = vals, .n = ri.n_rows * R});
    vals = NULL;
out:
    free(vals);
    free(ri.rows);
    free(ri.vals_owned);
    optd_session_release(s);
}

/* Whether a step request is a rows step: binary with Optd-Rows, or JSON
 * with the key "rows" (a plain step never has it: the key is refused as
 * unknown, by the Jansson path too).  A key is a string followed by a
 * colon: the string "rows" as a value (a worker may be named rows) is
 * followed by a comma or a brace, and stays a plain step. */
static bool is_rows_step(optd_req_t *req)
{
    if (req->body_kind == OPTD_BODY_BINARY)
        return optd_req_header(req, "Optd-Rows") != NULL;
    if (!req->body) /* no body: a plain step, refused as such */
        return false;
    const char *p = req->body, *end = req->body + req->body_len;
    while (p && (p = memmem(p, (size_t)(end - p), "\"rows\"", 6))) {
        p += 6;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p < end && *p == ':')
            return true;
    }
    return false;
}

void optd_route_step(optd_req_t *req)
{
    if (req->wait) { /* a contribution's request, resumed */
        optd_route_contribute_finish(req);
        return;
    }
    const char *ret = optd_req_query(req, "return");
    bool return_none = ret && strcmp(ret, "none") == 0;
    if (ret && !return_none && strcmp(ret, "params") != 0) {
        optd_http_error(req, OPTD_EINVAL, "query 'return' must be 'params' (the default) or 'none'");
        return;
    }
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    if (is_rows_step(req)) {
        route_rows_step(req, s, return_none);
        return;
    }
    optd_server_t *srv = req->srv;
    /* Fixed for the session's life (see route_params.c). */
    size_t n = s->size;
    optd_dtype_t dtype = s->cfg.dtype;
    size_t bytes = n * optd_dtype_size(dtype);
    optd_err_t err = {0};
    void *grad_owned = NULL, *params = NULL;
    uint64_t expect = 0, step = 0;
    double loss = 0;
    bool binary = req->body_kind == OPTD_BODY_BINARY;
    optd_step_input_t in = {0};
    char worker[OPTD_WORKER_NAME_MAX + 1] = "";
    int rc = read_input(req, n, dtype, &grad_owned, &in, &expect, &loss, worker, &err);
    if (rc == 1)
        goto out;
    if (rc) {
        optd_http_error_from(req, &err);
        goto fail;
    }
    if (worker[0]) { /* one worker's part of a round (route_round.c) */
        optd_route_contribute(req, &s, &in, worker, return_none);
        goto out;
    }
    if (!return_none && !(params = malloc(bytes))) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory for %zu parameters", n);
        goto fail;
    }
    rc = optd_store_step(srv->store, &s, &in, &step, params, &err);
    if (rc == OPTD_ESTEP) {
        optd_http_error_step(req, step, &err);
        goto fail;
    }
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto fail;
    }
    optd_metrics_step(&srv->metrics, s->cfg.kind); /* s: the session applied to */

    optd_http_reply_step(req, binary, &(optd_step_answer_t){.step = step, .dtype = dtype, .params = params, .n = n});
    params = NULL;
    goto out;
fail:
    atomic_fetch_add_explicit(&srv->metrics.step_errors, 1, memory_order_relaxed);
out:
    free(params);
    free(grad_owned);
    optd_session_release(s);
}
