/* route_steps.c: POST /v1/steps, many sessions stepped by one request (a
 * tuning fleet's whole population at once).
 *
 * The items are applied in order, each exactly as a JSON step on its own
 * session would be (optd_store_step), and each gets its own result: a
 * failing item changes nothing and stops nothing else.  Only a body that is
 * wrong as a whole is answered with an error status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dtoa.h"
#include "fmt.h"
#include "http.h"
#include "numarray.h"

#define STEPS_MAX 10000

/* The gradient and parameter buffers, reused from item to item. */
typedef struct scratch {
    void *grad, *params;
    size_t cap; /* bytes each */
    uint64_t *rows; /* a rows item (API.md 1.1, Tables): its rows, whose values params holds */
    size_t n_rows;  /* 0: params holds the whole vector */
} scratch_t;

static bool scratch_fit(scratch_t *sc, size_t bytes)
{
    if (bytes <= sc->cap)
        return true;
    void *g = realloc(sc->grad, bytes);
    if (!g)
        return false;
    sc->grad = g;
    void *p = realloc(sc->params, bytes);
    if (!p)
        return false;
    sc->params = p;
    sc->cap = bytes;
    return true;
}

/* What one item asks, read and checked before its session is touched. */
typedef struct item {
    const char *session;
    const json_t *gradient;
    const json_t *rows; /* a rows step, or NULL */
    bool has_expect, has_loss;
    uint64_t expect;
    double loss;
} item_t;

static const char *const item_fields[] = {"session", "gradient", "step", "loss", "rows", "worker", NULL};

static int item_read(const json_t *v, size_t i, item_t *it, optd_err_t *err)
{
    memset(it, 0, sizeof *it);
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu] must be an object", i);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        const char *const *f = item_fields;
        while (*f && strcmp(*f, key) != 0)
            f++;
        if (!*f)
            return optd_err_set(err, OPTD_EINVAL, "steps[%zu]: unknown field '%.64s' (a step item takes "
                                "session, gradient, step, loss)", i, key);
    }
    const json_t *s = json_object_get(v, "session");
    if (!json_is_string(s) || !optd_session_name_valid(json_string_value(s)))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu].session must be a session name", i);
    it->session = json_string_value(s);
    it->rows = json_object_get(v, "rows");
    if (json_object_get(v, "worker"))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu]: 'worker' is for sessions that aggregate "
                            "rounds, and a batch item cannot wait for a round", i);
    if (!(it->gradient = json_object_get(v, "gradient")))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu].gradient is required", i);
    const json_t *x;
    int rc;
    if ((x = json_object_get(v, "step"))) {
        if ((rc = optd_codec_u64_decode(x, "step", &it->expect, err)))
            return rc;
        it->has_expect = true;
    }
    if ((x = json_object_get(v, "loss"))) {
        if ((rc = optd_codec_number_decode(x, "loss", &it->loss, err)))
            return rc;
        it->has_loss = true;
    }
    return 0;
}

/* Applies one item; *step_out is the step after it (or the current step
 * with OPTD_ESTEP).  The parameters are left in sc->params. */
static int item_apply(optd_req_t *req, const item_t *it, scratch_t *sc, optd_session_t **sp,
                      uint64_t *step_out, optd_err_t *err)
{
    optd_session_t *s = optd_store_get(req->srv->store, it->session);
    if (!s)
        return optd_err_set(err, OPTD_ENOTFOUND, "no session named '%s'", it->session);
    *sp = s;
    size_t bytes = s->size * optd_dtype_size(s->cfg.dtype); /* fixed for the session's life */
    if (!scratch_fit(sc, bytes))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu parameters", s->size);
    size_t n = s->size;
    free(sc->rows);
    sc->rows = NULL;
    sc->n_rows = 0;
    if (it->rows) {
        /* As a JSON rows step takes it (route_step.c). */
        size_t R = optd_session_row_size(&s->cfg);
        int rc = optd_codec_rows_decode(it->rows, s->size / R, 0, &sc->rows, &sc->n_rows, err);
        if (rc)
            return rc;
        n = sc->n_rows * R;
        if (!scratch_fit(sc, n * optd_dtype_size(s->cfg.dtype)))
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu rows", sc->n_rows);
    }
    int rc = optd_numarray_decode_into(it->gradient, s->cfg.dtype, "gradient", sc->grad, n, err);
    if (rc)
        return rc;
    optd_step_input_t in = {.grad = sc->grad, .expect_step = it->has_expect ? &it->expect : NULL,
                            .loss = it->has_loss ? &it->loss : NULL, .rows = sc->rows,
                            .n_rows = sc->n_rows};
    rc = optd_store_step(req->srv->store, sp, &in, step_out, sc->params, err);
    if (!rc)
        optd_metrics_step(&req->srv->metrics, (*sp)->cfg.kind);
    return rc;
}

/* One result object appended to b. */
static void put_result(optd_sbuf_t *b, const char *name, int rc, const optd_err_t *err,
                       optd_session_t *s, uint64_t step, const scratch_t *sc, bool return_none,
                       struct optd_pool *pool)
{
    optd_sbuf_puts(b, "{\"session\":");
    if (name)
        optd_sbuf_put_jstring(b, name);
    else
        optd_sbuf_puts(b, "null");
    if (rc) {
        optd_sbuf_puts(b, ",\"error\":");
        optd_http_put_error_object(b, err->code ? err->code : rc, err->msg,
                                   rc == OPTD_ESTEP ? &step : NULL);
    } else {
        char num[24];
        *optd_fmt_uint(num, step, 1) = '\0';
        optd_sbuf_puts(b, ",\"step\":");
        optd_sbuf_puts(b, num);
        if (!return_none) {
            if (sc->n_rows) {
                optd_sbuf_puts(b, ",\"rows\":[");
                for (size_t i = 0; i < sc->n_rows; i++)
                    optd_sbuf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)sc->rows[i]);
                optd_sbuf_puts(b, "]");
            }
            optd_sbuf_puts(b, ",\"params\":");
            optd_numarray_encode(b, s->cfg.dtype, sc->params,
                                 sc->n_rows ? sc->n_rows * optd_session_row_size(&s->cfg) : s->size, pool);
        }
    }
    optd_sbuf_puts(b, "}");
}

/* The body's "steps" array, or NULL when it already answered. */
static const json_t *steps_array(optd_req_t *req, json_t *body)
{
    static const char *const fields[] = {"steps", NULL};
    if (!optd_req_known_fields(req, body, fields, "a batch of steps"))
        return NULL;
    const json_t *steps = json_object_get(body, "steps");
    if (!json_is_array(steps)) {
        optd_http_error(req, OPTD_EINVAL, "'steps' is required: an array of 1..%d step items", STEPS_MAX);
        return NULL;
    }
    size_t n = json_array_size(steps);
    if (n < 1 || n > STEPS_MAX) {
        optd_http_error(req, OPTD_EINVAL, "'steps' holds %zu items; a batch takes 1..%d", n, STEPS_MAX);
        return NULL;
    }
    return steps;
}

/* ---- the fast scanner --------------------------------------------------------
 *
 * Jansson spends ~4 us an item of ten numbers (a value and an allocation per
 * number, strtod); a fleet's batch is thousands of such items.  The scanner
 * reads the usual batch straight from the text: {"steps": [items]} where
 * each item has only plain keys among session, gradient, step, loss, each
 * once; session a valid name; gradient plain numbers; step a plain
 * non-negative integer; loss a number.  Anything else, anywhere, and the
 * whole body goes to Jansson instead, so a body means the same either way
 * and every refusal is worded by one path.  An item the scanner read but
 * that cannot be applied as read (a gradient of the wrong length or out of
 * float32's range) is decoded again from its own text by Jansson and
 * answered by the slow path. */

typedef struct fast_item {
    const char *text;   /* the item's object, for the slow path */
    size_t text_len;
    char session[OPTD_NAME_MAX + 1];
    size_t grad_off, grad_n; /* its gradient in the scan's doubles */
    bool has_grad, has_expect, has_loss;
    uint64_t expect;
    double loss;
} fast_item_t;

typedef struct fast_scan {
    fast_item_t *items;
    size_t n, cap;
    double *vals;
    size_t n_vals, cap_vals;
    bool oom;
} fast_scan_t;

static void fast_scan_free(fast_scan_t *fs)
{
    free(fs->items);
    free(fs->vals);
}

/* A key at p (a plain string): its index in item_fields' first four, or -1
 * (not one of them, or escaped). */
static const char *scan_key(const char *p, const char *end, int *which)
{
    static const char *const keys[] = {"session", "gradient", "step", "loss"};
    if (p >= end || *p != '"')
        return NULL;
    const char *k = ++p;
    while (p < end && *p != '"' && *p != '\\')
        p++;
    if (p >= end || *p != '"')
        return NULL;
    *which = -1;
    for (int i = 0; i < 4; i++)
        if ((size_t)(p - k) == strlen(keys[i]) && memcmp(k, keys[i], (size_t)(p - k)) == 0)
            *which = i;
    return p + 1;
}

/* A session name as a plain string (valid name characters only). */
static const char *scan_name(const char *p, const char *end, char *out)
{
    if (p >= end || *p != '"')
        return NULL;
    const char *s = ++p;
    while (p < end && p - s <= OPTD_NAME_MAX &&
           ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '.' || *p == '_' || *p == '-'))
        p++;
    size_t n = (size_t)(p - s);
    if (p >= end || *p != '"' || n == 0 || n > OPTD_NAME_MAX)
        return NULL;
    memcpy(out, s, n);
    out[n] = '\0';
    return optd_session_name_valid(out) ? p + 1 : NULL;
}

/* A plain non-negative integer below 10^18 (Jansson reads larger ones,
 * up to int64's limit or refusing them, and says how). */
static const char *scan_u64(const char *p, const char *end, uint64_t *out)
{
    const char *s = p;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - s < 18)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == s || (p - s > 1 && *s == '0') ||
        (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E')))
        return NULL;
    *out = v;
    return p;
}

static const char *scan_item(fast_scan_t *fs, const char *p, const char *end, fast_item_t *it)
{
    memset(it, 0, sizeof *it);
    it->text = p;
    if (p >= end || *p != '{')
        return NULL;
    p = optd_json_skip_ws(p + 1, end);
    unsigned seen = 0;
    if (p < end && *p == '}')
        goto close;
    for (;;) {
        int which;
        if (!(p = scan_key(p, end, &which)) || which < 0 || (seen & (1u << which)))
            return NULL;
        seen |= 1u << which;
        p = optd_json_skip_ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        p = optd_json_skip_ws(p + 1, end);
        if (which == 0) {
            p = scan_name(p, end, it->session);
        } else if (which == 1) {
            it->grad_off = fs->n_vals;
            p = optd_json_read_f64_array(p, end, &fs->vals, &fs->n_vals, &fs->cap_vals, &fs->oom);
            it->grad_n = fs->n_vals - it->grad_off;
            it->has_grad = true;
        } else if (which == 2) {
            p = scan_u64(p, end, &it->expect);
            it->has_expect = true;
        } else {
            p = optd_json_read_number(p, end, &it->loss);
            it->has_loss = true;
        }
        if (!p)
            return NULL;
        p = optd_json_skip_ws(p, end);
        if (p < end && *p == ',') {
            p = optd_json_skip_ws(p + 1, end);
            continue;
        }
        break;
    }
close:
    if (p >= end || *p != '}' || !(seen & 1u))
        return NULL;
    it->text_len = (size_t)(p + 1 - it->text);
    return p + 1;
}

/* 1 when the whole body is a batch the scanner reads (fs filled), 0 when
 * Jansson must read it, -1 out of memory. */
static int fast_scan(const char *body, size_t len, fast_scan_t *fs)
{
    const char *p = body, *end = body + len;
    static const char key[] = "\"steps\"";
    p = optd_json_skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    p = optd_json_skip_ws(p + 1, end);
    if ((size_t)(end - p) < sizeof key - 1 || memcmp(p, key, sizeof key - 1) != 0)
        return 0;
    p = optd_json_skip_ws(p + sizeof key - 1, end);
    if (p >= end || *p != ':')
        return 0;
    p = optd_json_skip_ws(p + 1, end);
    if (p >= end || *p != '[')
        return 0;
    p = optd_json_skip_ws(p + 1, end);
    for (;;) {
        if (fs->n == STEPS_MAX)
            return 0; /* too many: Jansson's path words the refusal */
        if (fs->n == fs->cap) {
            size_t c = fs->cap ? fs->cap * 2 : 64;
            fast_item_t *v = realloc(fs->items, c * sizeof *v);
            if (!v)
                return -1;
            fs->items = v;
            fs->cap = c;
        }
        if (!(p = scan_item(fs, p, end, &fs->items[fs->n])))
            return fs->oom ? -1 : 0;
        fs->n++;
        p = optd_json_skip_ws(p, end);
        if (p < end && *p == ',') {
            p = optd_json_skip_ws(p + 1, end);
            continue;
        }
        break;
    }
    if (p >= end || *p != ']')
        return 0;
    p = optd_json_skip_ws(p + 1, end);
    if (p >= end || *p != '}')
        return 0;
    return optd_json_skip_ws(p + 1, end) == end;
}

/* ---- the batch ---------------------------------------------------------------- */

typedef struct batch {
    optd_req_t *req;
    bool return_none;
    scratch_t sc;
    optd_sbuf_t out;
    size_t n_done;
} batch_t;

/* The slow path for item i given as a Jansson value. */
static void run_json_item(batch_t *bt, const json_t *v, size_t i)
{
    optd_err_t err = {0};
    optd_session_t *s = NULL;
    uint64_t step = 0;
    item_t it;
    int rc = item_read(v, i, &it, &err);
    if (!rc)
        rc = item_apply(bt->req, &it, &bt->sc, &s, &step, &err);
    if (rc)
        atomic_fetch_add_explicit(&bt->req->srv->metrics.step_errors, 1, memory_order_relaxed);
    if (bt->n_done++)
        optd_sbuf_puts(&bt->out, ",");
    const json_t *name = json_is_object(v) ? json_object_get(v, "session") : NULL;
    put_result(&bt->out, json_is_string(name) ? json_string_value(name) : NULL, rc, &err, s, step,
               &bt->sc, bt->return_none, bt->req->srv->pool);
    if (s)
        optd_session_release(s);
}

/* Item i as the scanner read it; back to the slow path when its gradient
 * does not fit the session as read. */
static void run_fast_item(batch_t *bt, const fast_scan_t *fs, size_t i)
{
    const fast_item_t *fi = &fs->items[i];
    bt->sc.n_rows = 0; /* the scanner reads no rows: params holds the whole vector */
    optd_err_t err = {0};
    uint64_t step = 0;
    int rc = 0;
    optd_session_t *s = fi->has_grad ? optd_store_get(bt->req->srv->store, fi->session) : NULL;
    if (fi->has_grad && !s) {
        rc = optd_err_set(&err, OPTD_ENOTFOUND, "no session named '%s'", fi->session);
    } else if (!s || fi->grad_n != s->size || !scratch_fit(&bt->sc, s->size * optd_dtype_size(s->cfg.dtype)) ||
               !optd_numarray_from_f64(fs->vals + fi->grad_off, fi->grad_n, s->cfg.dtype, bt->sc.grad)) {
        if (s)
            optd_session_release(s);
        json_t *v = json_loadb(fi->text, fi->text_len, JSON_REJECT_DUPLICATES, NULL);
        run_json_item(bt, v, i);
        json_decref(v);
        return;
    } else {
        optd_step_input_t in = {.grad = bt->sc.grad, .expect_step = fi->has_expect ? &fi->expect : NULL,
                                .loss = fi->has_loss ? &fi->loss : NULL};
        rc = optd_store_step(bt->req->srv->store, &s, &in, &step, bt->sc.params, &err);
        if (!rc)
            optd_metrics_step(&bt->req->srv->metrics, s->cfg.kind);
    }
    if (rc)
        atomic_fetch_add_explicit(&bt->req->srv->metrics.step_errors, 1, memory_order_relaxed);
    if (bt->n_done++)
        optd_sbuf_puts(&bt->out, ",");
    put_result(&bt->out, fi->session, rc, &err, s, step, &bt->sc, bt->return_none,
               bt->req->srv->pool);
    if (s)
        optd_session_release(s);
}

/* The slow path for the whole body: false when it already answered. */
static bool run_json(batch_t *bt)
{
    json_t *body = optd_req_json_object(bt->req);
    if (!body)
        return false;
    const json_t *steps = steps_array(bt->req, body);
    if (!steps) {
        json_decref(body);
        return false;
    }
    size_t i;
    const json_t *v;
    json_array_foreach(steps, i, v)
        run_json_item(bt, v, i);
    json_decref(body);
    return true;
}

void optd_route_steps(optd_req_t *req)
{
    const char *ret = optd_req_query(req, "return");
    bool return_none = ret && strcmp(ret, "none") == 0;
    if (ret && !return_none && strcmp(ret, "params") != 0) {
        optd_http_error(req, OPTD_EINVAL, "query 'return' must be 'params' (the default) or 'none'");
        return;
    }
    if (req->body_kind == OPTD_BODY_BINARY) {
        optd_http_error(req, OPTD_EINVAL, "this route takes a JSON body, not application/octet-stream");
        return;
    }
    batch_t bt = {.req = req, .return_none = return_none};
    optd_sbuf_init(&bt.out);
    fast_scan_t fs = {0};
    int fast = fast_scan(req->body ? req->body : "", req->body_len, &fs);
    if (fast < 0) {
        fast_scan_free(&fs);
        optd_http_error(req, OPTD_ENOMEM, "out of memory reading the batch");
        return;
    }
    if (fast)
        optd_sbuf_reserve(&bt.out, 32 + fs.n * (return_none ? 48 : 48 + fs.n_vals / (fs.n ? fs.n : 1) * 25));
    optd_sbuf_puts(&bt.out, "{\"results\":[");
    bool answered = false;
    if (fast) {
        for (size_t i = 0; i < fs.n; i++)
            run_fast_item(&bt, &fs, i);
    } else {
        answered = !run_json(&bt);
    }
    fast_scan_free(&fs);
    free(bt.sc.grad);
    free(bt.sc.params);
    free(bt.sc.rows);
    if (answered) {
        optd_sbuf_free(&bt.out);
        return;
    }
    optd_sbuf_puts(&bt.out, "]}");
    if (bt.out.failed) {
        optd_sbuf_free(&bt.out);
        optd_http_error(req, OPTD_ENOMEM, "out of memory writing the results");
        return;
    }
    optd_http_reply_sbuf(req, 200, &bt.out);
}
