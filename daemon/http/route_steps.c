/* route_steps.c: POST /v1/steps, many sessions stepped by one request (a
 * tuning fleet's whole population at once).
 *
 * Three passes: every item is read (item_read, or the fast scanner) and
 * prepared against its session (item_prepare: looked up, gradient decoded)
 * without any lock; the prepared ones are applied together, in order, by
 * optd_store_step_batch (their sessions locked, journaled as one group: one
 * fsync round with --sync always); then each gets its result.  A failing
 * item changes nothing and stops nothing else.  Only a body that is wrong
 * as a whole is answered with an error status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dtoa.h"
#include "fmt.h"
#include "http.h"
#include "numarray.h"

#define STEPS_MAX 10000

/* What one item asks, read and checked before its session is touched;
 * its gradient as a Jansson value (the slow path) or as the scanner's
 * doubles (text: the item's own text, read again by Jansson when the
 * doubles do not fit the session, so errors are worded by one path). */
typedef struct item {
    const char *session;      /* NULL: the item has no valid name */
    const json_t *gradient;
    bool scanned;             /* read by the scanner: its gradient is grad_f64 */
    const double *grad_f64;
    size_t grad_n;
    const char *text;
    size_t text_len;
    json_t *own;              /* the item's own text as read by Jansson */
    const json_t *rows;       /* a rows step (API.md 1.1, Tables), or NULL */
    uint64_t *row_list;       /* its rows, decoded against the session (malloc'd) */
    size_t n_rows;
    bool has_expect, has_loss;
    uint64_t expect;
    double loss;
    void *buf;                /* its gradient in the session's dtype, then room for params */
} item_t;

static const char *const item_fields[] = {"session", "gradient", "step", "loss", "rows", "worker", NULL};

/* Reads item i from its JSON value v; errors as an item's result. */
static int item_read(const json_t *v, size_t i, item_t *it, optd_err_t *err)
{
    it->gradient = NULL;
    it->rows = NULL;
    it->scanned = false;
    it->has_expect = it->has_loss = false;
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu] must be an object", i);
    const json_t *s = json_object_get(v, "session");
    it->session = json_is_string(s) ? json_string_value(s) : NULL;
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
    if (!it->session || !optd_session_name_valid(it->session))
        return optd_err_set(err, OPTD_EINVAL, "steps[%zu].session must be a session name", i);
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

/* One result object appended to b: for a rows step (rows, n_rows) the
 * rows and their values. */
static void put_result(optd_sbuf_t *b, const char *name, int rc, const optd_err_t *err,
                       optd_session_t *s, uint64_t step, const void *params, const uint64_t *rows,
                       size_t n_rows, bool return_none, struct optd_pool *pool)
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
        optd_sbuf_puts(b, ",");
        optd_codec_step_members(b, step, rows, n_rows, s->cfg.dtype, return_none ? NULL : params,
                                rows ? n_rows * optd_session_row_size(&s->cfg) : s->size, pool);
    }
    optd_sbuf_puts(b, "}");
}

/* The body's "steps" array, or NULL when it already answered. */
static const json_t *steps_array(optd_req_t *req, const json_t *body)
{
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
    const char *text;   /* the item's object: from its '{' to the first '}' */
    size_t text_len;
    char session[OPTD_NAME_MAX + 1];
    size_t grad_off, grad_n; /* its gradient in its chunk's doubles */
    const double *grad;      /* there, once its chunk is read */
    bool has_grad, has_expect, has_loss;
    uint64_t expect;
    double loss;
} fast_item_t;

/* The doubles of the gradients one chunk of items holds. */
typedef struct scan_vals {
    double *v;
    size_t n, cap;
    bool oom;
    bool failed;   /* an item of the chunk is not one the scanner reads */
} scan_vals_t;

typedef struct fast_scan {
    fast_item_t *items;
    size_t n, cap;
    scan_vals_t *chunks;
    unsigned n_chunks;
} fast_scan_t;

static void fast_scan_free(fast_scan_t *fs)
{
    free(fs->items);
    for (unsigned c = 0; c < fs->n_chunks; c++)
        free(fs->chunks[c].v);
    free(fs->chunks);
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

/* The item whose extent frame_items found at it->text: true when it is
 * read exactly to its end. */
static bool scan_item(scan_vals_t *vals, fast_item_t *it)
{
    const char *p = it->text, *end = it->text + it->text_len;
    memset(it->session, 0, 1);
    it->has_grad = it->has_expect = it->has_loss = false;
    it->grad_n = 0;
    p = optd_json_skip_ws(p + 1, end);
    unsigned seen = 0;
    if (p < end && *p == '}')
        goto close;
    for (;;) {
        int which;
        if (!(p = scan_key(p, end, &which)) || which < 0 || (seen & (1u << which)))
            return false;
        seen |= 1u << which;
        p = optd_json_skip_ws(p, end);
        if (p >= end || *p != ':')
            return false;
        p = optd_json_skip_ws(p + 1, end);
        if (which == 0) {
            p = scan_name(p, end, it->session);
        } else if (which == 1) {
            it->grad_off = vals->n;
            p = optd_json_read_f64_array(p, end, &vals->v, &vals->n, &vals->cap, &vals->oom);
            it->grad_n = vals->n - it->grad_off;
            it->has_grad = true;
        } else if (which == 2) {
            p = scan_u64(p, end, &it->expect);
            it->has_expect = true;
        } else {
            p = optd_json_read_number(p, end, &it->loss);
            it->has_loss = true;
        }
        if (!p)
            return false;
        p = optd_json_skip_ws(p, end);
        if (p < end && *p == ',') {
            p = optd_json_skip_ws(p + 1, end);
            continue;
        }
        break;
    }
close:
    return p + 1 == end && *p == '}' && (seen & 1u);
}

/* The first pass: the body's frame {"steps": [ ... ]} and each item's
 * extent, from its '{' to the first '}' after it (a plain item holds no
 * other; if a string held one, scan_item finds the item does not end
 * there and the body goes to Jansson).  1 when the frame is the usual one,
 * 0 when Jansson must read the body, -1 out of memory. */
static int frame_items(const char *body, size_t len, fast_scan_t *fs)
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
        const char *close = p < end && *p == '{' ? memchr(p, '}', (size_t)(end - p)) : NULL;
        if (!close)
            return 0;
        fs->items[fs->n].text = p;
        fs->items[fs->n].text_len = (size_t)(close + 1 - p);
        fs->n++;
        p = optd_json_skip_ws(close + 1, end);
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

/* Work over the batch's items cut into chunks, one pool task each. */
#define CHUNKS_PER_THREAD 4
#define PAR_MIN_ITEMS 256 /* below, waking a thread costs more than it saves */

static unsigned chunk_count(optd_pool_t *pool, size_t n)
{
    unsigned t = optd_pool_threads(pool);
    return n >= PAR_MIN_ITEMS && t > 1 ? t * CHUNKS_PER_THREAD : 1;
}

static size_t chunk_start(size_t n, unsigned chunks, unsigned c)
{
    return n * c / chunks;
}

/* Runs fn over chunks tasks on the pool, or on this thread for one. */
static void chunks_run(optd_pool_t *pool, unsigned chunks, void (*fn)(void *, unsigned), void *arg)
{
    if (chunks == 1)
        fn(arg, 0);
    else
        optd_pool_run(pool, chunks, fn, arg);
}

static void scan_task(void *arg, unsigned c)
{
    fast_scan_t *fs = arg;
    scan_vals_t *vals = &fs->chunks[c];
    size_t to = chunk_start(fs->n, fs->n_chunks, c + 1);
    for (size_t i = chunk_start(fs->n, fs->n_chunks, c); i < to; i++)
        if (!scan_item(vals, &fs->items[i])) {
            vals->failed = true;
            return;
        }
    for (size_t i = chunk_start(fs->n, fs->n_chunks, c); i < to; i++)
        fs->items[i].grad = fs->items[i].grad_n ? vals->v + fs->items[i].grad_off : NULL;
}

/* 1 when the whole body is a batch the scanner reads (fs filled), 0 when
 * Jansson must read it, -1 out of memory.  The items are read over the
 * pool: a number costs ~40 ns, and a big batch holds 100,000 of them. */
static int fast_scan(const char *body, size_t len, optd_pool_t *pool, fast_scan_t *fs)
{
    int rc = frame_items(body, len, fs);
    if (rc <= 0)
        return rc;
    fs->n_chunks = chunk_count(pool, fs->n);
    if (!(fs->chunks = calloc(fs->n_chunks, sizeof *fs->chunks))) {
        fs->n_chunks = 0;
        return -1;
    }
    chunks_run(pool, fs->n_chunks, scan_task, fs);
    rc = 1;
    for (unsigned c = 0; c < fs->n_chunks; c++)
        if (fs->chunks[c].failed)
            rc = fs->chunks[c].oom ? -1 : rc < 0 ? rc : 0;
    return rc;
}

/* ---- the batch ---------------------------------------------------------------- */

typedef struct batch {
    optd_req_t *req;
    bool return_none;
    size_t n;
    item_t *items;            /* n of them */
    optd_batch_step_t *steps; /* n: items[i]'s step and its outcome */
    optd_doc_t doc;           /* the slow path's document */
    fast_scan_t fs;
    unsigned chunks;          /* the items cut into this many pool tasks */
    optd_sbuf_t *parts;       /* chunks of results, printed over the pool */
} batch_t;

static void batch_free(batch_t *bt)
{
    for (size_t i = 0; i < bt->n; i++) {
        json_decref(bt->items[i].own);
        free(bt->items[i].buf);
        free(bt->items[i].row_list);
        if (bt->steps[i].s)
            optd_session_release(bt->steps[i].s);
    }
    free(bt->items);
    free(bt->steps);
    optd_doc_free(&bt->doc);
    fast_scan_free(&bt->fs);
}

static bool batch_alloc(batch_t *bt, size_t n)
{
    bt->n = n;
    bt->items = calloc(n, sizeof *bt->items);
    bt->steps = calloc(n, sizeof *bt->steps);
    if (bt->items && bt->steps)
        return true;
    bt->n = 0;
    return false;
}

/* Item i as read by the scanner, read again from its own text by Jansson
 * (when its gradient does not fit the session as read, or it has none),
 * so that a refusal is worded as for any item. */
static int item_reread(size_t i, item_t *it, optd_err_t *err)
{
    it->own = optd_doc_parse_part(it->text, it->text_len);
    return item_read(it->own, i, it, err);
}

/* Item i's gradient in the session's dtype into it->buf (n elements: the
 * session's size, or a rows step's rows times the row size; then as many
 * again for the params after the step). */
static int item_gradient(size_t i, item_t *it, const optd_session_t *s, size_t n, optd_err_t *err)
{
    size_t bytes = n * optd_dtype_size(s->cfg.dtype);
    if (!(it->buf = malloc(2 * bytes)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu parameters", n);
    if (it->scanned && it->grad_n == n &&
        optd_numarray_from_f64(it->grad_f64, it->grad_n, s->cfg.dtype, it->buf))
        return 0;
    int rc;
    if (it->scanned && (rc = item_reread(i, it, err)))
        return rc;
    return optd_numarray_decode_into(it->gradient, s->cfg.dtype, "gradient", it->buf, n, err);
}

/* Item i, read, against its session: found, its gradient decoded; on
 * success step x is ready for the batch (x->s holds a reference). */
static int item_prepare(batch_t *bt, size_t i, item_t *it, optd_batch_step_t *x)
{
    optd_session_t *s = optd_store_get(bt->req->srv->store, it->session);
    if (!s)
        return optd_err_set(&x->err, OPTD_ENOTFOUND, "no session named '%s'", it->session);
    x->s = s;
    size_t n = s->size;
    int rc;
    if (it->rows) {
        /* As a JSON rows step takes it (route_step.c). */
        size_t R = optd_session_row_size(&s->cfg);
        if ((rc = optd_codec_rows_decode(it->rows, s->size / R, 0, &it->row_list, &it->n_rows, &x->err)))
            return rc;
        n = it->n_rows * R;
        size_t got = it->scanned ? it->grad_n : json_array_size(it->gradient);
        if ((it->scanned || json_is_array(it->gradient)) &&
            (rc = optd_codec_rows_values_check(got, "gradient", it->n_rows, R, &x->err)))
            return rc;
    }
    if ((rc = item_gradient(i, it, s, n, &x->err)))
        return rc;
    x->in = (optd_step_input_t){.grad = it->buf, .expect_step = it->has_expect ? &it->expect : NULL,
                                .loss = it->has_loss ? &it->loss : NULL, .rows = it->row_list,
                                .n_rows = it->n_rows};
    x->params_out = bt->return_none ? NULL : (char *)it->buf + n * optd_dtype_size(s->cfg.dtype);
    return 0;
}

/* The items from the scanner. */
static bool batch_from_scan(batch_t *bt)
{
    fast_scan_t *fs = &bt->fs;
    if (!batch_alloc(bt, fs->n))
        return false;
    for (size_t i = 0; i < fs->n; i++) {
        const fast_item_t *fi = &fs->items[i];
        item_t *it = &bt->items[i];
        *it = (item_t){.session = fi->session, .scanned = true, .grad_n = fi->grad_n, .grad_f64 = fi->grad,
                       .text = fi->text, .text_len = fi->text_len, .has_expect = fi->has_expect,
                       .expect = fi->expect, .has_loss = fi->has_loss, .loss = fi->loss};
        if (!fi->has_grad) /* the scanner saw no gradient: Jansson words it */
            bt->steps[i].rc = item_reread(i, it, &bt->steps[i].err);
    }
    return true;
}

/* The items from Jansson (the slow path for the whole body): false when
 * it already answered. */
static bool batch_from_json(batch_t *bt)
{
    static const char *const fields[] = {"steps", NULL};
    const optd_doc_spec_t spec = {.what = "a batch of steps", .fields = fields};
    optd_err_t err = {0};
    if (optd_req_doc(bt->req, &spec, &bt->doc, &err)) {
        optd_http_error_from(bt->req, &err);
        return false;
    }
    const json_t *steps = steps_array(bt->req, bt->doc.obj);
    if (!steps)
        return false;
    if (!batch_alloc(bt, json_array_size(steps))) {
        optd_http_error(bt->req, OPTD_ENOMEM, "out of memory reading the batch");
        return false;
    }
    for (size_t i = 0; i < bt->n; i++)
        bt->steps[i].rc = item_read(json_array_get(steps, i), i, &bt->items[i], &bt->steps[i].err);
    return true;
}

/* Results [from, to) appended to out. */
static void put_results(const batch_t *bt, size_t from, size_t to, optd_sbuf_t *out)
{
    for (size_t i = from; i < to; i++) {
        const optd_batch_step_t *x = &bt->steps[i];
        if (i)
            optd_sbuf_puts(out, ",");
        put_result(out, bt->items[i].session, x->rc, &x->err, x->s, x->step, x->params_out,
                   x->in.rows, x->in.n_rows,
                   bt->return_none, bt->req->srv->pool);
    }
}

static void prepare_task(void *arg, unsigned c)
{
    batch_t *bt = arg;
    size_t to = chunk_start(bt->n, bt->chunks, c + 1);
    for (size_t i = chunk_start(bt->n, bt->chunks, c); i < to; i++)
        if (!bt->steps[i].rc)
            bt->steps[i].rc = item_prepare(bt, i, &bt->items[i], &bt->steps[i]);
}

static void print_task(void *arg, unsigned c)
{
    batch_t *bt = arg;
    optd_sbuf_t *part = &bt->parts[c];
    size_t from = chunk_start(bt->n, bt->chunks, c), to = chunk_start(bt->n, bt->chunks, c + 1);
    size_t n_vals = 0;
    for (size_t i = from; i < to; i++)
        if (!bt->steps[i].rc && !bt->return_none) /* a rows step prints its rows' values */
            n_vals += bt->steps[i].in.rows ? bt->steps[i].in.n_rows * (20 + optd_session_row_size(&bt->steps[i].s->cfg))
                                           : bt->steps[i].s->size;
    optd_sbuf_reserve(part, 16 + (to - from) * 48 + n_vals * 25);
    if (c == 0)
        optd_sbuf_puts(part, "{\"results\":[");
    put_results(bt, from, to, part);
}

/* The answer into out: the results printed over the pool in chunks (the
 * first straight into out), then joined.  False when out of memory. */
static bool print_results(batch_t *bt, optd_sbuf_t *out)
{
    if (!(bt->parts = calloc(bt->chunks, sizeof *bt->parts)))
        return false;
    bt->parts[0] = *out;
    for (unsigned c = 1; c < bt->chunks; c++)
        optd_sbuf_init(&bt->parts[c]);
    chunks_run(bt->req->srv->pool, bt->chunks, print_task, bt);
    *out = bt->parts[0];
    size_t len = 0;
    bool ok = !out->failed;
    for (unsigned c = 1; c < bt->chunks; c++) {
        len += bt->parts[c].len;
        ok = ok && !bt->parts[c].failed;
    }
    if (ok && optd_sbuf_reserve(out, len + 2)) {
        for (unsigned c = 1; c < bt->chunks; c++)
            optd_sbuf_put(out, bt->parts[c].p, bt->parts[c].len);
        optd_sbuf_puts(out, "]}");
    }
    for (unsigned c = 1; c < bt->chunks; c++)
        optd_sbuf_free(&bt->parts[c]);
    free(bt->parts);
    bt->parts = NULL;
    return ok && !out->failed;
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
    optd_pool_t *pool = req->srv->pool;
    batch_t bt = {.req = req, .return_none = return_none};
    int fast = fast_scan(req->body ? req->body : "", req->body_len, pool, &bt.fs);
    if (fast < 0 || (fast && !batch_from_scan(&bt))) {
        batch_free(&bt);
        optd_http_error(req, OPTD_ENOMEM, "out of memory reading the batch");
        return;
    }
    if (!fast && !batch_from_json(&bt)) {
        batch_free(&bt);
        return;
    }
    bt.chunks = chunk_count(pool, bt.n);
    chunks_run(pool, bt.chunks, prepare_task, &bt);
    optd_store_step_batch(req->srv->store, bt.steps, bt.n);
    for (size_t i = 0; i < bt.n; i++) {
        const optd_batch_step_t *x = &bt.steps[i];
        if (x->rc)
            atomic_fetch_add_explicit(&req->srv->metrics.step_errors, 1, memory_order_relaxed);
        else
            optd_metrics_step(&req->srv->metrics, x->s->cfg.kind);
    }
    optd_sbuf_t out;
    optd_sbuf_init(&out);
    bool printed = print_results(&bt, &out);
    batch_free(&bt);
    if (!printed) {
        optd_sbuf_free(&out);
        optd_http_error(req, OPTD_ENOMEM, "out of memory writing the results");
        return;
    }
    optd_http_reply_sbuf(req, 200, &out);
}
