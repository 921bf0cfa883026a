/* route_state.c: GET and PUT /v1/sessions/{name}/state, the full export
 * (descriptor + params + optimizer buffers under PyTorch's state_dict
 * names) and its import, which creates or replaces the session. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "http.h"
#include "numarray.h"

void optd_route_state_get(optd_req_t *req)
{
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    optd_session_image_t img;
    memset(&img, 0, sizeof img);
    optd_err_t err = {0};
    optd_session_desc_t now = {0}; /* for the pending round, which an image leaves out */
    int rc = optd_session_copy_image(s, &img, &err);
    if (!rc)
        rc = optd_session_copy_descriptor(s, &now, &err);
    optd_session_release(s);
    if (rc) {
        optd_session_image_free(&img);
        optd_session_desc_free(&now);
        optd_http_store_error(req, rc, &err);
        return;
    }
    optd_session_desc_t view = {.cfg = img.cfg, /* borrowed: freed with img */
                                .size = img.size,
                                .step = img.st.step,
                                .created_ms = img.created_ms,
                                .updated_ms = img.updated_ms,
                                .loss = img.loss,
                                .round_on = now.round_on,
                                .round_step = now.round_step,
                                .round_n = now.round_n,
                                .round_workers = now.round_workers};
    json_t *desc = optd_codec_descriptor(img.name, &view);
    optd_session_desc_free(&now);
    if (!desc) {
        optd_session_image_free(&img);
        optd_http_error(req, OPTD_ENOMEM, "out of memory encoding the state");
        return;
    }
    const optd_optim_desc_t *d = optd_optim_desc(img.cfg.kind);
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_put_object_open(&b, desc);
    json_decref(desc);
    optd_sbuf_put_member_key(&b, "params");
    optd_numarray_encode(&b, img.cfg.dtype, img.params, img.size, req->srv->pool);
    optd_sbuf_put_member_key(&b, "state");
    optd_sbuf_puts(&b, "{");
    for (int k = 0; k < OPTD_BUF_COUNT; k++) {
        if (!(d->bufs & (1u << k)) || !img.st.buf[k])
            continue;
        optd_sbuf_put_member_key(&b, optd_buf_name((optd_buf_t)k));
        optd_numarray_encode(&b, img.cfg.dtype, img.st.buf[k], img.size, req->srv->pool);
    }
    if (d->has_mu_product) {
        /* With groups, one value per group: each keeps its own product. */
        optd_sbuf_put_member_key(&b, "mu_product");
        if (img.st.n_groups > 0) {
            optd_sbuf_puts(&b, "[");
            for (size_t g = 0; g < img.st.n_groups; g++) {
                if (g)
                    optd_sbuf_puts(&b, ",");
                optd_sbuf_put_double(&b, img.st.groups[g].mu_product);
            }
            optd_sbuf_puts(&b, "]");
        } else {
            optd_sbuf_put_double(&b, img.st.mu_product);
        }
    }
    optd_sbuf_puts(&b, "}}");
    optd_session_image_free(&img);
    optd_http_reply_sbuf(req, 200, &b);
}

static const char *const state_fields[] = {"name", "optimizer", "dtype", "size", "step",
                                           "hyperparameters", "schedule", "max_grad_norm", "labels",
                                           "ttl_seconds", "created_at", "updated_at", "loss", "params", "state",
                                           "groups", "aggregate", "round", "row_size", NULL};

/* Lists the buffers kind keeps ("exp_avg, exp_avg_sq") for messages. */
static void buf_names(const optd_optim_desc_t *d, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int k = 0; k < OPTD_BUF_COUNT && n < cap; k++)
        if (d->bufs & (1u << k))
            n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", optd_buf_name((optd_buf_t)k));
    if (d->has_mu_product && n < cap)
        snprintf(out + n, cap - n, "%smu_product", n ? ", " : "");
}

/* The arrays of a state document that numarray's fast path reads straight
 * from the body, each left as null in the JSON the rest is read from (see
 * read_state_body).  Where a decode finds such a null, it parses the span
 * of the same name; anything it cannot account for, and any error, is
 * DECLINED: the import starts over from the whole body read by Jansson,
 * which also words every error as before. */
#define DECLINED 1
#define ANSWERED 2
#define MAX_STATE_ARRAYS (OPTD_BUF_COUNT + 2)

typedef struct state_fast {
    optd_pool_t *pool;
    optd_numarray_span_t params;
    optd_numarray_span_t st[MAX_STATE_ARRAYS];
    size_t n_st;
} state_fast_t;

static const optd_numarray_span_t *span_named(const optd_numarray_span_t *sp, size_t n, const char *key)
{
    size_t len = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (sp[i].key_len == len && memcmp(sp[i].key, key, len) == 0)
            return &sp[i];
    return NULL;
}

/* A grouped nadam's "mu_product": one number per group (or one number for
 * all), rounded to the dtype, into img->st.groups. */
static int decode_group_mu(const json_t *val, const state_fast_t *fast, optd_session_image_t *img,
                           optd_err_t *err)
{
    size_t n = img->st.n_groups;
    double *mu = calloc(n, sizeof *mu);
    if (!mu)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for state.mu_product");
    int rc = 0;
    if (fast && json_is_null(val)) {
        const optd_numarray_span_t *sp = span_named(fast->st, fast->n_st, "mu_product");
        if (!sp || !optd_numarray_parse_into(sp->arr, sp->len, OPTD_FLOAT64, mu, n, fast->pool))
            rc = DECLINED;
    } else if (json_is_number(val)) {
        rc = optd_codec_number_decode(val, "state.mu_product", &mu[0], err);
        for (size_t g = 1; g < n; g++)
            mu[g] = mu[0];
    } else {
        rc = optd_numarray_decode_into(val, OPTD_FLOAT64, "state.mu_product", mu, n, err);
    }
    for (size_t g = 0; rc == 0 && g < n; g++)
        img->st.groups[g].mu_product = img->cfg.dtype == OPTD_FLOAT32 ? (double)(float)mu[g] : mu[g];
    if (rc == 0)
        img->st.mu_product = img->st.groups[0].mu_product;
    free(mu);
    return rc;
}

/* Fills img.st from the "state" object v (after optd_optim_state_init). */
static int decode_state(const json_t *v, const state_fast_t *fast, optd_session_image_t *img, optd_err_t *err)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "'state' must be an object of buffers");
    const optd_optim_desc_t *d = optd_optim_desc(img->cfg.kind);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (strcmp(key, "mu_product") == 0 && d->has_mu_product && img->cfg.n_groups > 0) {
            int rc = decode_group_mu(val, fast, img, err);
            if (rc)
                return rc;
            continue;
        }
        if (strcmp(key, "mu_product") == 0 && d->has_mu_product) {
            double mu;
            int rc = optd_codec_number_decode(val, "state.mu_product", &mu, err);
            if (rc)
                return rc;
            img->st.mu_product = img->cfg.dtype == OPTD_FLOAT32 ? (double)(float)mu : mu;
            continue;
        }
        int k = optd_buf_lookup(key);
        if (k < 0 || !(d->bufs & (1u << k))) {
            char names[200];
            buf_names(d, names, sizeof names);
            return optd_err_set(err, OPTD_EINVAL, "%s keeps no state '%.64s' (it keeps: %s)", d->name, key,
                                names);
        }
        if (!img->st.buf[k] && !(img->st.buf[k] = malloc(img->size * optd_dtype_size(img->cfg.dtype))))
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for state '%s'", key);
        if (fast && json_is_null(val)) {
            const optd_numarray_span_t *sp = span_named(fast->st, fast->n_st, key);
            if (!sp || !optd_numarray_parse_into(sp->arr, sp->len, img->cfg.dtype, img->st.buf[k], img->size,
                                                 fast->pool))
                return DECLINED;
            continue;
        }
        char field[80];
        snprintf(field, sizeof field, "state.%s", key);
        int rc = optd_numarray_decode_into(val, img->cfg.dtype, field, img->st.buf[k], img->size, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Builds the image an import document describes (fast: see state_fast_t;
 * NULL when body is the whole document). */
static int decode_import(optd_req_t *req, const json_t *body, const state_fast_t *fast, optd_session_image_t *img,
                         optd_err_t *err)
{
    const json_t *v = json_object_get(body, "optimizer");
    int rc;
    if (!json_is_string(v))
        return optd_err_set(err, OPTD_EINVAL, "'optimizer' is required (a name from GET /v1/optimizers)");
    if ((rc = optd_optim_lookup(json_string_value(v), &img->cfg.kind, err)))
        return rc;
    img->cfg.dtype = OPTD_FLOAT64;
    if ((v = json_object_get(body, "dtype")) &&
        (!json_is_string(v) || optd_dtype_parse(json_string_value(v), &img->cfg.dtype)))
        return optd_err_set(err, OPTD_EINVAL, "'dtype' must be \"float64\" or \"float32\"");
    optd_hparams_default(img->cfg.kind, &img->cfg.hp);
    if ((rc = optd_http_apply_config_fields(body, &img->cfg, err)))
        return rc;
    if ((v = json_object_get(body, "row_size")) && (rc = optd_codec_row_size_decode(v, &img->cfg.row_size, err)))
        return rc;

    if (!(v = json_object_get(body, "params")))
        return optd_err_set(err, OPTD_EINVAL, "'params' is required (an array of numbers)");
    if (fast && json_is_null(v)) {
        rc = optd_numarray_parse_new(fast->params.arr, fast->params.len, img->cfg.dtype, 0, fast->pool,
                                     &img->params, &img->size);
        if (rc != 1)
            return rc < 0 ? optd_err_set(err, OPTD_ENOMEM, "out of memory reading 'params'") : DECLINED;
    } else if ((rc = optd_numarray_decode(v, img->cfg.dtype, "params", &img->params, &img->size, err))) {
        return rc == OPTD_ENONFINITE ? optd_err_set(err, OPTD_EINVAL, "%s", err->msg) : rc;
    }
    uint64_t u = 0;
    if ((v = json_object_get(body, "size"))) {
        if ((rc = optd_codec_u64_decode(v, "size", &u, err)))
            return rc;
        if (u != img->size)
            return optd_err_set(err, OPTD_ESIZE, "'size' is %llu but 'params' holds %zu values",
                                (unsigned long long)u, img->size);
    }
    size_t max = req->srv->cfg.max_params;
    if (max && img->size > max)
        return optd_err_set(err, OPTD_ELIMIT, "%zu parameters are more than --max-params (%zu)", img->size,
                            max);
    u = 0;
    if ((v = json_object_get(body, "step")) && (rc = optd_codec_u64_decode(v, "step", &u, err)))
        return rc;
    int64_t now = optd_now_ms();
    img->created_ms = img->updated_ms = now;
    if ((v = json_object_get(body, "created_at")) &&
        (rc = optd_codec_time_decode(v, "created_at", &img->created_ms, err)))
        return rc;
    if ((v = json_object_get(body, "updated_at")) &&
        (rc = optd_codec_time_decode(v, "updated_at", &img->updated_ms, err)))
        return rc;
    if ((rc = optd_codec_loss_decode(json_object_get(body, "loss"), &img->loss, err)))
        return rc;
    if ((rc = optd_http_round_fits(req, &img->cfg.aggregate, img->size, err)))
        return rc;

    if ((rc = optd_optim_state_init(&img->st, img->cfg.kind, img->cfg.dtype, img->size, &img->cfg.hp, err)))
        return rc;
    /* Only what the document holds: a buffer or mu_product it lacks stays
     * missing (NULL, NaN), for optd_optim_state_validate to refuse where
     * the step needs it; at step 0 the first step starts it. */
    optd_optim_state_free(&img->st);
    if (optd_optim_desc(img->cfg.kind)->has_mu_product)
        img->st.mu_product = NAN;
    img->st.step = u;
    if ((rc = optd_optim_state_set_groups(&img->st, img->cfg.groups, img->cfg.n_groups, err)) ||
        (rc = decode_state(json_object_get(body, "state"), fast, img, err)))
        return rc;
    if (isnan(img->st.mu_product) && u == 0)
        img->st.mu_product = 1.0;
    if (img->st.n_groups == 0)
        return 0;
    /* The groups' own state again, now that the buffers are in (which sgd
     * groups have momentum started), keeping the products just read (a
     * product missing at step 0 starts at 1, as above). */
    optd_group_state_t *read = img->st.groups;
    img->st.groups = NULL;
    img->st.n_groups = 0;
    rc = optd_optim_state_set_groups(&img->st, img->cfg.groups, img->cfg.n_groups, err);
    for (size_t g = 0; rc == 0 && g < img->st.n_groups; g++)
        img->st.groups[g].mu_product = isnan(read[g].mu_product) && u == 0 ? 1.0 : read[g].mu_product;
    free(read);
    return rc;
}

/* The fast path's reading of a state document: its one top-level array
 * ("params") and the arrays of its "state" object located in the body,
 * the rest read by Jansson with those arrays as null.  NULL when the body
 * does not fit (a top-level array other than "params", a repeated key
 * anywhere, anything the loose scan does not follow): then the caller
 * reads the whole body.  Jansson takes ~1.3 s for a 1M-parameter Adam
 * state; this, ~0.1 s. */
static json_t *read_state_fast(optd_req_t *req, state_fast_t *fast)
{
    const char *body = req->body ? req->body : "";
    size_t len = req->body_len, n_top = 0;
    optd_numarray_span_t top[2];
    if (req->body_kind == OPTD_BODY_BINARY || !optd_numarray_find_arrays(body, len, NULL, top, 2, &n_top) ||
        n_top != 1 || top[0].key_len != 6 || memcmp(top[0].key, "params", 6) != 0)
        return NULL;
    fast->pool = req->srv->pool;
    fast->params = top[0];
    if (!optd_numarray_find_arrays(body, len, "state", fast->st, MAX_STATE_ARRAYS, &fast->n_st))
        fast->n_st = 0; /* no "state" object, or one the scan does not follow: Jansson reads its arrays */
    /* All spans in body order: "params" goes before or after the state's. */
    optd_numarray_span_t all[MAX_STATE_ARRAYS + 1];
    size_t n = 0, i = 0;
    for (; i < fast->n_st && fast->st[i].arr < top[0].arr; i++)
        all[n++] = fast->st[i];
    all[n++] = top[0];
    for (; i < fast->n_st; i++)
        all[n++] = fast->st[i];
    char *rest;
    size_t rest_len;
    if (optd_numarray_without(body, len, all, n, &rest, &rest_len) != 1)
        return NULL;
    json_t *doc = json_loadb(rest, rest_len, JSON_REJECT_DUPLICATES, NULL);
    free(rest);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Whether every member of body is a field of a state document. */
static bool only_state_fields(const json_t *body)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val) {
        const char *const *f = state_fields;
        while (*f && strcmp(*f, key) != 0)
            f++;
        if (!*f)
            return false;
    }
    return true;
}

/* Reads the document (fast when it can) and builds the image: 0, an error
 * in err, or ANSWERED. */
static int import_image(optd_req_t *req, optd_session_image_t *img, optd_err_t *err)
{
    state_fast_t fast;
    json_t *body = read_state_fast(req, &fast);
    if (body) {
        int rc = only_state_fields(body) ? decode_import(req, body, &fast, img, err) : DECLINED;
        json_decref(body);
        if (rc == 0)
            return 0;
        /* Any error, or anything the fast path could not account for:
         * start over from the whole body, as if it had not been tried. */
        char name[OPTD_NAME_MAX + 1];
        memcpy(name, img->name, sizeof name);
        optd_session_image_free(img);
        memset(img, 0, sizeof *img);
        memcpy(img->name, name, sizeof name);
        *err = (optd_err_t){0};
    }
    if (!(body = optd_req_json_object(req)))
        return ANSWERED;
    if (!optd_req_known_fields(req, body, state_fields, "a state document")) {
        json_decref(body);
        return ANSWERED;
    }
    int rc = decode_import(req, body, NULL, img, err);
    json_decref(body);
    return rc;
}

void optd_route_state_put(optd_req_t *req)
{
    optd_session_image_t img;
    memset(&img, 0, sizeof img);
    optd_session_t *s = NULL;
    optd_err_t err = {0};
    if (req->name_too_long || !optd_session_name_valid(req->name)) {
        /* After the body's own checks, as before: a bad body wins. */
        json_t *body = optd_req_json_object(req);
        if (!body)
            return;
        if (optd_req_known_fields(req, body, state_fields, "a state document"))
            optd_http_error(req, OPTD_EINVAL,
                            "invalid session name: names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        json_decref(body);
        return;
    }
    snprintf(img.name, sizeof img.name, "%s", req->name); /* the URL's name wins */
    int rc = import_image(req, &img, &err);
    if (rc == ANSWERED)
        goto out;
    if (!rc)
        rc = optd_session_from_image_take(&img, req->srv->cfg.history, &s, &err);
    bool replaced = false;
    optd_session_t *live = NULL;
    if (!rc)
        rc = optd_store_import(req->srv->store, s, &live, &replaced, &err);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    /* A replace moved the contents into the session readers already hold. */
    optd_http_reply_descriptor(req, live, replaced ? 200 : 201);
    optd_session_release(live);
    if (req->status == 201) {
        char loc[OPTD_NAME_MAX + 32];
        snprintf(loc, sizeof loc, "/v1/sessions/%s", req->name);
        optd_http_header(req, MHD_HTTP_HEADER_LOCATION, loc);
    }
out:
    optd_session_image_free(&img);
    if (s)
        optd_session_release(s);
}
