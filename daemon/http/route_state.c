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
    int rc = optd_session_copy_image(s, &img, &err);
    optd_session_release(s);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        return;
    }
    json_t *desc = optd_codec_descriptor(img.name, &img.cfg, img.size, img.st.step, img.created_ms,
                                         img.updated_ms);
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
        optd_sbuf_put_member_key(&b, "mu_product");
        optd_sbuf_put_double(&b, img.st.mu_product);
    }
    optd_sbuf_puts(&b, "}}");
    optd_session_image_free(&img);
    optd_http_reply_sbuf(req, 200, &b);
}

static const char *const state_fields[] = {"name", "optimizer", "dtype", "size", "step",
                                           "hyperparameters", "schedule", "max_grad_norm", "labels",
                                           "ttl_seconds", "created_at", "updated_at", "params", "state",
                                           NULL};

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

/* Fills img.st from the "state" object v (after optd_optim_state_init). */
static int decode_state(const json_t *v, optd_session_image_t *img, optd_err_t *err)
{
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "'state' must be an object of buffers");
    const optd_optim_desc_t *d = optd_optim_desc(img->cfg.kind);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
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
        int rc = optd_numarray_decode_into(val, img->cfg.dtype, field, img->st.buf[k], img->size, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Builds the image an import document describes. */
static int decode_import(optd_req_t *req, const json_t *body, optd_session_image_t *img, optd_err_t *err)
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

    if (!(v = json_object_get(body, "params")))
        return optd_err_set(err, OPTD_EINVAL, "'params' is required (an array of numbers)");
    if ((rc = optd_numarray_decode(v, img->cfg.dtype, "params", &img->params, &img->size, err)))
        return rc == OPTD_ENONFINITE ? optd_err_set(err, OPTD_EINVAL, "%s", err->msg) : rc;
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

    if ((rc = optd_optim_state_init(&img->st, img->cfg.kind, img->cfg.dtype, img->size, &img->cfg.hp, err)))
        return rc;
    img->st.step = u;
    return decode_state(json_object_get(body, "state"), img, err);
}

void optd_route_state_put(optd_req_t *req)
{
    json_t *body = optd_req_json_object(req);
    if (!body)
        return;
    optd_session_image_t img;
    memset(&img, 0, sizeof img);
    optd_session_t *s = NULL;
    optd_err_t err = {0};
    if (!optd_req_known_fields(req, body, state_fields, "a state document"))
        goto out;
    if (req->name_too_long || !optd_session_name_valid(req->name)) {
        optd_http_error(req, OPTD_EINVAL,
                        "invalid session name: names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        goto out;
    }
    snprintf(img.name, sizeof img.name, "%s", req->name); /* the URL's name wins */
    int rc = decode_import(req, body, &img, &err);
    if (!rc)
        rc = optd_session_from_image_take(&img, req->srv->cfg.history, &s, &err);
    bool replaced = false;
    if (!rc)
        rc = optd_store_insert(req->srv->store, s, true, &replaced, &err);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    optd_http_reply_descriptor(req, s, replaced ? 200 : 201);
    if (req->status == 201) {
        char loc[OPTD_NAME_MAX + 32];
        snprintf(loc, sizeof loc, "/v1/sessions/%s", req->name);
        optd_http_header(req, MHD_HTTP_HEADER_LOCATION, loc);
    }
out:
    optd_session_image_free(&img);
    if (s)
        optd_session_release(s);
    json_decref(body);
}
