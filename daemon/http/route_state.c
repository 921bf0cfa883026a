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

/* A grouped nadam's "mu_product": one number per group (or one number for
 * all), rounded to the dtype, into img->st.groups. */
static int decode_group_mu(const json_t *val, optd_doc_t *doc, optd_session_image_t *img, optd_err_t *err)
{
    size_t n = img->st.n_groups;
    double *mu = calloc(n, sizeof *mu);
    if (!mu)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for state.mu_product");
    int rc = 0;
    if (json_is_number(val)) {
        rc = optd_codec_number_decode(val, "state.mu_product", &mu[0], err);
        for (size_t g = 1; g < n; g++)
            mu[g] = mu[0];
    } else {
        rc = optd_doc_values_into(doc, "mu_product", val, OPTD_FLOAT64, "state.mu_product", mu, n, err);
    }
    for (size_t g = 0; rc == 0 && g < n; g++)
        img->st.groups[g].mu_product = img->cfg.dtype == OPTD_FLOAT32 ? (double)(float)mu[g] : mu[g];
    if (rc == 0)
        img->st.mu_product = img->st.groups[0].mu_product;
    free(mu);
    return rc;
}

/* Fills img.st from the "state" object v (after optd_optim_state_init). */
static int decode_state(const json_t *v, optd_doc_t *doc, optd_session_image_t *img, optd_err_t *err)
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
            int rc = decode_group_mu(val, doc, img, err);
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
        char field[80];
        snprintf(field, sizeof field, "state.%s", key);
        int rc = optd_doc_values_into(doc, key, val, img->cfg.dtype, field, img->st.buf[k], img->size, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* What an import decodes into. */
typedef struct import_ctx {
    optd_req_t *req;
    optd_session_image_t *img;
} import_ctx_t;

/* Builds the image an import document describes (optd_doc_decode's
 * decode: its arrays read through the reader). */
static int decode_import(optd_doc_t *doc, void *ctx, optd_err_t *err)
{
    optd_req_t *req = ((import_ctx_t *)ctx)->req;
    optd_session_image_t *img = ((import_ctx_t *)ctx)->img;
    const json_t *body = doc->obj;
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
    if ((rc = optd_doc_take_values(doc, v, img->cfg.dtype, &img->params, &img->size, err)))
        return rc;
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
        (rc = decode_state(json_object_get(body, "state"), doc, img, err)))
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

/* Back to an empty image (its name kept), for decode_import's second run. */
static void import_reset(void *ctx)
{
    optd_session_image_t *img = ((import_ctx_t *)ctx)->img;
    char name[OPTD_NAME_MAX + 1];
    memcpy(name, img->name, sizeof name);
    optd_session_image_free(img);
    memset(img, 0, sizeof *img);
    memcpy(img->name, name, sizeof name);
}

/* A state document: "params" and the buffers of "state" read from the
 * text as decode_import asks for them (Jansson takes ~1.3 s for a
 * 1M-parameter Adam state; this, ~0.1 s). */
static optd_doc_spec_t state_spec(optd_req_t *req)
{
    return (optd_doc_spec_t){.what = "a state document", .fields = state_fields, .size = OPTD_DOC_LAZY,
                             .array = "params", .nested_key = "state", .pool = req->srv->pool};
}

void optd_route_state_put(optd_req_t *req)
{
    optd_session_image_t img;
    memset(&img, 0, sizeof img);
    optd_session_t *s = NULL;
    optd_err_t err = {0};
    const optd_doc_spec_t spec = state_spec(req);
    if (req->name_too_long || !optd_session_name_valid(req->name)) {
        /* After the body's own checks, as before: a bad body wins. */
        optd_doc_t doc;
        if (optd_req_doc(req, &spec, &doc, &err))
            optd_http_error_from(req, &err);
        else
            optd_http_error(req, OPTD_EINVAL,
                            "invalid session name: names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        optd_doc_free(&doc);
        return;
    }
    snprintf(img.name, sizeof img.name, "%s", req->name); /* the URL's name wins */
    import_ctx_t ctx = {req, &img};
    int rc = optd_doc_decode(req->body ? req->body : "", req->body_len, &spec, decode_import, import_reset, &ctx,
                             &err);
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
