/* route_params.c: GET /v1/sessions/{name}/params, as JSON or (with
 * Accept: application/octet-stream) raw little-endian values, and PUT,
 * which replaces the parameters and keeps the optimizer state and step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "binary.h"
#include "codec.h"
#include "dtoa.h"
#include "fmt.h"
#include "http.h"
#include "numarray.h"

/* True when the client asked for raw bytes. */
static bool wants_binary(optd_req_t *req)
{
    const char *accept = optd_req_header(req, MHD_HTTP_HEADER_ACCEPT);
    return accept && strcasestr(accept, "application/octet-stream") != NULL;
}

/* ?min_step=K&wait=SECONDS (API.md 1.1 "Waiting for parameters"): true
 * when the request now waits (wait.c) or was answered; false to answer
 * with the parameters as they are. */
static bool long_poll(optd_req_t *req)
{
    if (req->wait) { /* resumed: the step came, the time ran out, or a stop */
        int why = req->wait->why;
        optd_wait_end(req);
        if (why == OPTD_WAIT_STOP) {
            optd_http_error(req, OPTD_EUNAVAIL, "the daemon is shutting down");
            return true;
        }
        return false;
    }
    uint64_t min_step, secs;
    if (!optd_req_query_u64(req, "min_step", 0, UINT64_MAX - 1, 0, &min_step) ||
        !optd_req_query_u64(req, "wait", 0, 300, 0, &secs))
        return true;
    if (!optd_req_query(req, "min_step") || secs == 0)
        return false;
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return true;
    bool waiting = optd_wait_begin(req, s, min_step, NULL, secs);
    optd_session_release(s);
    if (waiting)
        return true;
    int why = req->wait ? req->wait->why : 0;
    optd_wait_end(req);
    if (why == OPTD_WAIT_STOP) {
        optd_http_error(req, OPTD_EUNAVAIL, "the daemon is shutting down");
        return true;
    }
    return false;
}

/* ---- reading rows (API.md 1.1, Tables) ---------------------------------------- */

/* The most rows a GET ...?rows= lists (a URL's length is bounded; POST
 * .../rows takes any number). */
#define ROWS_QUERY_MAX 1000

/* "3,17,42" into rows (malloc'd): 0, or OPTD_EINVAL naming the bad entry. */
static int rows_query_parse(const char *q, uint64_t n_table, uint64_t **rows, size_t *n, optd_err_t *err)
{
    *rows = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *c = q; *c; c++)
        cap += *c == ',';
    if (cap > ROWS_QUERY_MAX)
        return optd_err_set(err, OPTD_EINVAL, "query 'rows' lists at most %d rows (POST .../rows takes any number)",
                            ROWS_QUERY_MAX);
    if (!(*rows = malloc(cap * sizeof **rows)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu rows", cap);
    const char *p = q;
    for (size_t i = 0; i < cap; i++) {
        uint64_t r = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9' && r <= UINT64_MAX / 10)
            r = r * 10 + (uint64_t)(*p++ - '0');
        if (p == start || (*p != ',' && *p != '\0') || p - start > 19 || r >= n_table) {
            free(*rows);
            *rows = NULL;
            return optd_err_set(err, OPTD_EINVAL,
                                "query 'rows': entry %zu must be a row number from 0 to %llu (the session has %llu rows)",
                                i, (unsigned long long)(n_table - 1), (unsigned long long)n_table);
        }
        (*rows)[i] = r;
        p += *p == ',';
    }
    *n = cap;
    return 0;
}

/* Answers the values of rows[0, n) of s (takes rows; releases s).  The
 * copy and its text come out of --max-memory while the answer is held, as
 * for the whole params: POST .../rows takes any number of rows. */
static void reply_rows(optd_req_t *req, optd_session_t *s, uint64_t *rows, size_t n)
{
    size_t R = optd_session_row_size(&s->cfg);
    optd_dtype_t dtype = s->cfg.dtype;
    size_t bytes = n * R * optd_dtype_size(dtype);
    size_t text = wants_binary(req) ? 0 : n * R * (OPTD_DTOA_MAX + 1) + n * 21 + 64;
    optd_err_t err = {0};
    void *vals = NULL;
    int rc = optd_store_borrow(req->srv->store, bytes + text, &err);
    if (rc == 0) {
        req->charge = bytes + text;
        if (!(vals = malloc(bytes + 1)))
            optd_http_charge_drop(req);
    }
    if (rc) {
        optd_http_error(req, OPTD_ELIMIT, "reading %zu rows: %s", n, err.msg);
    } else if (!vals) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory copying %zu rows", n);
    } else {
        uint64_t step = optd_session_copy_rows(s, rows, n, vals);
        optd_http_reply_step(req, wants_binary(req), &(optd_step_answer_t){.step = step, .rows = rows, .n_rows = n,
                                                                        .dtype = dtype, .params = vals, .n = n * R});
    }
    free(rows);
    optd_session_release(s);
}

static const char *const rows_fields[] = {"rows", NULL};

/* The rows of a POST .../rows body (any number of rows, each 8 bytes here
 * rather than a JSON value: doc.h).  0 or an error in err. */
static int rows_post_read(optd_req_t *req, uint64_t n_table, uint64_t **rows, size_t *n, optd_err_t *err)
{
    const optd_doc_spec_t spec = {.what = "a rows request", .fields = rows_fields, .size = OPTD_DOC_ROWS,
                                  .rows_key = "rows", .n_table = n_table};
    optd_doc_t doc;
    int rc = optd_req_doc(req, &spec, &doc, err);
    *rows = doc.rows;
    *n = doc.n_rows;
    doc.rows = NULL;
    optd_doc_free(&doc);
    return rc;
}

void optd_route_rows_post(optd_req_t *req)
{
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    optd_err_t err = {0};
    uint64_t *rows = NULL;
    size_t n = 0;
    int rc = rows_post_read(req, s->size / optd_session_row_size(&s->cfg), &rows, &n, &err);
    if (rc) {
        optd_http_error_from(req, &err);
        free(rows);
        optd_session_release(s);
        return;
    }
    reply_rows(req, s, rows, n);
}

void optd_route_params_get(optd_req_t *req)
{
    if (long_poll(req))
        return;
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    const char *q = optd_req_query(req, "rows");
    if (q) {
        optd_err_t err = {0};
        uint64_t *rows;
        size_t nr;
        if (rows_query_parse(q, s->size / optd_session_row_size(&s->cfg), &rows, &nr, &err)) {
            optd_http_error_from(req, &err);
            optd_session_release(s);
            return;
        }
        reply_rows(req, s, rows, nr);
        return;
    }
    /* size and dtype are fixed for a session's life (import makes a new
     * session), so they are read without its lock. */
    size_t n = s->size;
    optd_dtype_t dtype = s->cfg.dtype;
    size_t bytes = n * optd_dtype_size(dtype);
    bool binary = wants_binary(req);
    /* The copy (and the text of the JSON form) come out of --max-memory
     * too: a session near the budget must not double the daemon's memory
     * when it is read. */
    size_t text = binary ? 0 : n * (OPTD_DTOA_MAX + 1) + 64;
    optd_err_t err = {0};
    if (optd_store_borrow(req->srv->store, bytes + text, &err)) {
        optd_session_release(s);
        optd_http_error(req, OPTD_ELIMIT, "reading %zu parameters: %s", n, err.msg);
        return;
    }
    req->charge = bytes + text;
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        optd_session_release(s);
        optd_http_charge_drop(req);
        optd_http_error(req, OPTD_ENOMEM, "out of memory copying %zu parameters", n);
        return;
    }
    uint64_t step = optd_session_copy_params(s, buf);
    optd_session_release(s);
    optd_http_reply_step(req, binary, &(optd_step_answer_t){.step = step, .dtype = dtype, .params = buf, .n = n,
                                                          .release_copy = true});
    optd_http_charge_drop(req);
}

static const char *const put_fields[] = {"params", "step", NULL};

/* The JSON form {"params": [...], "step": c}: the values into params (n of
 * dtype), by the reader's fast path when it can.  0 or an error in err. */
static int decode_put_json(optd_req_t *req, size_t n, optd_dtype_t dtype, void *params, bool *has_expect,
                           uint64_t *expect, optd_err_t *err)
{
    const optd_doc_spec_t spec = {.what = "a params request", .fields = put_fields, .size = OPTD_DOC_FIXED,
                                  .array = "params", .dtype = dtype, .into = params, .n = n,
                                  .pool = req->srv->pool};
    optd_doc_t doc;
    int rc = optd_req_doc(req, &spec, &doc, err);
    const json_t *v;
    if (!rc && !doc.has_array)
        rc = optd_err_set(err, OPTD_EINVAL, "'params' is required (an array of %zu numbers)", n);
    if (!rc && (v = json_object_get(doc.obj, "step"))) {
        rc = optd_codec_u64_decode(v, "step", expect, err);
        *has_expect = true;
    }
    optd_doc_free(&doc);
    return rc;
}

/* A binary body: n values of dtype (Optd-Dtype, when given, must name
 * dtype), Optd-Expect-Step optional. */
static int decode_put_binary(optd_req_t *req, size_t n, optd_dtype_t dtype, bool *has_expect, uint64_t *expect,
                             optd_err_t *err)
{
    const char *h = optd_req_header(req, "Optd-Dtype");
    optd_dtype_t named;
    if (h && (optd_dtype_parse(h, &named) != 0 || named != dtype))
        return optd_err_set(err, OPTD_EINVAL, "Optd-Dtype is '%.32s' but the session holds %s", h,
                            optd_dtype_name(dtype));
    size_t es = optd_dtype_size(dtype);
    if (req->body_len != n * es)
        return optd_err_set(err, OPTD_ESIZE, "the body holds %zu bytes; the session's %zu %s params are %zu bytes",
                            req->body_len, n, optd_dtype_name(dtype), n * es);
    if (!optd_all_finite(dtype, req->body, n))
        return optd_err_set(err, OPTD_ENONFINITE, "params: every value must be finite");
    int rc = 0;
    if ((h = optd_req_header(req, "Optd-Expect-Step"))) {
        rc = optd_binary_header_u64(h, "Optd-Expect-Step", expect, err);
        *has_expect = true;
    }
    return rc;
}

void optd_route_params_put(optd_req_t *req)
{
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    size_t n = s->size; /* fixed for the session's life (see above) */
    optd_dtype_t dtype = s->cfg.dtype;
    optd_err_t err = {0};
    bool has_expect = false;
    uint64_t expect = 0, step = 0;
    void *owned = NULL;
    const void *params = req->body;
    int rc;
    if (req->body_kind == OPTD_BODY_BINARY) {
        rc = decode_put_binary(req, n, dtype, &has_expect, &expect, &err);
    } else if (!(owned = malloc(n * optd_dtype_size(dtype)))) {
        rc = optd_err_set(&err, OPTD_ENOMEM, "out of memory for %zu parameters", n);
    } else {
        rc = decode_put_json(req, n, dtype, owned, &has_expect, &expect, &err);
        params = owned;
    }
    if (rc) {
        optd_http_error_from(req, &err);
        goto out;
    }
    rc = optd_session_set_params(s, params, has_expect ? &expect : NULL, &step, &err);
    if (rc == OPTD_ESTEP) {
        optd_http_error_step(req, step, &err);
        goto out;
    }
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    optd_http_reply_step(req, false, &(optd_step_answer_t){.step = step, .dtype = dtype});
out:
    free(owned);
    optd_session_release(s);
}
