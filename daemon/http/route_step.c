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

/* Reads the JSON form: the gradient into *grad (malloc'd), by the reader's
 * fast path when it can (doc.h). */
static int decode_json(optd_req_t *req, size_t n, optd_dtype_t dtype, void **grad, bool *has_expect,
                       uint64_t *expect, bool *has_loss, double *loss, char *worker, optd_err_t *err)
{
    if (!(*grad = malloc(n * optd_dtype_size(dtype))))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for a gradient of %zu values", n);
    const optd_doc_spec_t spec = {.what = "a step request", .fields = step_fields, .size = OPTD_DOC_FIXED,
                                  .array = "gradient", .dtype = dtype, .into = *grad, .n = n,
                                  .pool = req->srv->pool};
    optd_doc_t doc;
    int rc = optd_req_doc(req, &spec, &doc, err);
    if (!rc && !doc.has_array)
        rc = optd_err_set(err, OPTD_EINVAL, "'gradient' is required (an array of %zu numbers)", n);
    /* API.md 1.1: present means a number; null is refused, not ignored. */
    const json_t *v;
    if (!rc && (v = json_object_get(doc.obj, "step")) && !(rc = optd_codec_u64_decode(v, "step", expect, err)))
        *has_expect = true;
    if (!rc && (v = json_object_get(doc.obj, "loss")) && !(rc = optd_codec_number_decode(v, "loss", loss, err)))
        *has_loss = true;
    if (!rc && (v = json_object_get(doc.obj, "worker")))
        rc = optd_route_worker_name(json_string_value(v), worker, err);
    optd_doc_free(&doc);
    return rc;
}

/* The step's inputs, read from a binary body and its headers, or from
 * JSON (then *grad_owned is the malloc'd gradient).  0 or an error in err. */
static int read_input(optd_req_t *req, size_t n, optd_dtype_t dtype, void **grad_owned,
                      optd_step_input_t *in, uint64_t *expect, double *loss, char *worker, optd_err_t *err)
{
    bool has_expect = false, has_loss = false;
    int rc;
    const char *h;
    if (req->body_kind == OPTD_BODY_BINARY) {
        /* The dtype the body says it holds first (numpy's float64 sent to
         * a float32 session is that mistake, whatever its length: API.md
         * 1.1), then its length (size_mismatch, as in 1.0) and values. */
        rc = optd_binary_dtype_check(optd_req_header(req, "Optd-Dtype"), dtype, err);
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

/* The JSON form (a rows step is small: its rows, not the table), its rows
 * and values read from the text by the reader's fast path when it can. */
static int rows_json(optd_req_t *req, const optd_session_t *s, rows_in_t *ri, optd_step_input_t *in,
                     uint64_t *expect, double *loss, optd_err_t *err)
{
    size_t R = optd_session_row_size(&s->cfg);
    const optd_doc_spec_t spec = {.what = "a rows step", .fields = rows_step_fields, .size = OPTD_DOC_ROWS,
                                  .array = "gradient", .dtype = s->cfg.dtype, .rows_key = "rows",
                                  .n_table = s->size / R, .row_size = R, .pool = req->srv->pool};
    optd_doc_t doc;
    int rc = optd_req_doc(req, &spec, &doc, err);
    /* The rows and values are the caller's from here, whatever comes next. */
    ri->rows = doc.rows;
    ri->n_rows = doc.n_rows;
    ri->vals_owned = doc.values;
    doc.rows = NULL;
    doc.values = NULL;
    if (!rc && !doc.has_array)
        rc = optd_err_set(err, OPTD_EINVAL, "'gradient' is required (len(rows) x row_size = %zu numbers)",
                          ri->n_rows * R);
    const json_t *v;
    if (!rc && (v = json_object_get(doc.obj, "step")) && !(rc = optd_codec_u64_decode(v, "step", expect, err)))
        in->expect_step = expect;
    if (!rc && (v = json_object_get(doc.obj, "loss")) && !(rc = optd_codec_number_decode(v, "loss", loss, err)))
        in->loss = loss;
    optd_doc_free(&doc);
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
    if (!rc) /* before the length, as for a dense step */
        rc = optd_binary_dtype_check(optd_req_header(req, "Optd-Dtype"), dtype, err);
    if (rc)
        return rc;
    if (n == 0 || n > req->body_len / 8 / (1 + R * es / 8) || (req->body_len - n * 8) != n * R * es)
        return optd_err_set(err, OPTD_ESIZE,
                            "the body holds %zu bytes; Optd-Rows %llu needs 8 bytes per row number, "
                            "then %zu %s values per row",
                            req->body_len, (unsigned long long)n, R, optd_dtype_name(dtype));
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
