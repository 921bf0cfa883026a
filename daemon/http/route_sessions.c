/* route_sessions.c: the session resource: list, create (POST, PUT at a
 * named URL, and fork with "from"), get, patch, delete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "http.h"
#include "numarray.h"

void optd_http_store_error(optd_req_t *req, int rc, const optd_err_t *err)
{
    if (err && err->msg[0] && err->code == rc) {
        optd_http_error_from(req, err);
        return;
    }
    optd_http_error(req, rc, "%s", rc == OPTD_ENOTFOUND ? "the session was deleted meanwhile"
                                   : rc == OPTD_EIO    ? "the change could not be made durable"
                                                       : optd_err_name(rc));
}

void optd_http_reply_descriptor(optd_req_t *req, optd_session_t *s, unsigned status)
{
    optd_session_desc_t desc = {0};
    optd_err_t err = {0};
    int rc = optd_session_copy_descriptor(s, &desc, &err);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        return;
    }
    json_t *d = optd_codec_descriptor(s->name, &desc);
    optd_session_desc_free(&desc);
    if (!d) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory encoding the descriptor");
        return;
    }
    optd_http_reply_json(req, status, d);
    json_decref(d);
}

int optd_http_apply_config_fields(const json_t *body, optd_session_config_t *cfg, optd_err_t *err)
{
    const json_t *v;
    int rc = 0;
    if ((v = json_object_get(body, "hyperparameters"))) {
        rc = optd_codec_hparams_apply(v, cfg->kind, &cfg->hp, err);
        /* Top-level keys set the same keys in every group. */
        for (size_t g = 0; !rc && g < cfg->n_groups; g++)
            rc = optd_codec_hparams_apply(v, cfg->kind, &cfg->groups[g].hp, err);
    }
    if (!rc && (v = json_object_get(body, "groups")))
        rc = optd_codec_groups_apply(v, cfg, err);
    if (!rc && (v = json_object_get(body, "schedule")))
        rc = optd_codec_schedule_decode(v, &cfg->has_schedule, &cfg->schedule, err);
    if (!rc && (v = json_object_get(body, "max_grad_norm")))
        rc = optd_codec_max_grad_norm_decode(v, &cfg->max_grad_norm, err);
    if (!rc && (v = json_object_get(body, "labels")))
        rc = optd_codec_labels_decode(v, cfg, err);
    if (!rc && (v = json_object_get(body, "ttl_seconds")))
        rc = optd_codec_ttl_decode(v, &cfg->ttl_seconds, err);
    if (!rc && (v = json_object_get(body, "aggregate")))
        rc = optd_codec_aggregate_decode(v, &cfg->aggregate, err);
    if (!rc)
        rc = optd_session_config_validate(cfg, err);
    return rc;
}

int optd_http_round_fits(optd_req_t *req, const optd_aggregate_t *a, size_t size, optd_err_t *err)
{
    size_t max = req->srv->cfg.max_params;
    if (!max || !a->workers || size <= max / a->workers)
        return 0;
    return optd_err_set(err, OPTD_ELIMIT,
                        "a round of %u workers holds %u gradients of %zu values, more than --max-params (%zu) "
                        "allows; use fewer workers or a larger --max-params",
                        a->workers, a->workers, size, max);
}

/* ---- create ---------------------------------------------------------------- */

/* *s (new, not in the store) takes over `reserved` bytes of the budget,
 * settled to what it holds; when more is needed and not left, *s is freed
 * (NULL) and the error says so. */
static int charge_or_drop(optd_req_t *req, optd_session_t **s, size_t reserved, optd_err_t *err)
{
    int rc = optd_store_charge(req->srv->store, *s, reserved, err);
    if (rc) {
        optd_session_release(*s);
        *s = NULL;
    }
    return rc;
}


static const char *const create_fields[] = {"name", "optimizer", "hyperparameters", "dtype", "params",
                                            "size", "from", "schedule", "max_grad_norm", "labels",
                                            "ttl_seconds", "groups", "aggregate", "row_size", NULL};

/* A new session from "from": the source's image copied under its lock,
 * with the request's overrides.  0 and *out, or an error in err. */
static int fork_session(optd_req_t *req, const json_t *body, const char *name, optd_session_t **out,
                        optd_err_t *err)
{
    const json_t *jfrom = json_object_get(body, "from");
    if (!json_is_string(jfrom))
        return optd_err_set(err, OPTD_EINVAL, "'from' must be the name of a session");
    optd_session_t *src = optd_store_get(req->srv->store, json_string_value(jfrom));
    if (!src)
        return optd_err_set(err, OPTD_ENOTFOUND, "no session named '%.128s' to fork from",
                            json_string_value(jfrom));
    /* The copy is reserved before it is made (as much as the source holds),
     * and settled once the fork, with its own options, is built. */
    size_t reserved = optd_session_bytes_now(src);
    int rc = optd_store_reserve(req->srv->store, reserved, err);
    optd_session_image_t img;
    memset(&img, 0, sizeof img);
    if (!rc && (rc = optd_session_copy_image(src, &img, err)))
        optd_store_unreserve(req->srv->store, reserved);
    optd_session_touch(src);
    optd_session_release(src);
    if (rc)
        return rc;

    const json_t *v;
    if ((v = json_object_get(body, "optimizer"))) {
        const char *want = optd_optim_desc(img.cfg.kind)->name;
        if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
            rc = optd_err_set(err, OPTD_EINVAL, "'optimizer' must equal the source session's (%s) or be omitted",
                              want);
            goto out;
        }
    }
    if ((v = json_object_get(body, "row_size"))) {
        size_t r = 0;
        if ((rc = optd_codec_row_size_decode(v, &r, err)))
            goto out;
        if (r != optd_session_row_size(&img.cfg)) {
            rc = optd_err_set(err, OPTD_EINVAL, "'row_size' must equal the source session's (%zu) or be omitted",
                              optd_session_row_size(&img.cfg));
            goto out;
        }
    }
    if ((v = json_object_get(body, "dtype"))) {
        const char *want = optd_dtype_name(img.cfg.dtype);
        if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
            rc = optd_err_set(err, OPTD_EINVAL, "'dtype' must equal the source session's (%s) or be omitted",
                              want);
            goto out;
        }
    }
    /* Labels and ttl come from the request only (the groups stay); the
     * history starts empty. */
    optd_session_config_free_labels(&img.cfg);
    img.cfg.ttl_seconds = 0;
    rc = optd_http_apply_config_fields(body, &img.cfg, err);
    if (!rc)
        rc = optd_http_round_fits(req, &img.cfg.aggregate, img.size, err);
    if (rc)
        goto out;
    snprintf(img.name, sizeof img.name, "%s", name);
    free(img.history);
    img.history = NULL;
    img.n_history = 0;
    memset(&img.loss, 0, sizeof img.loss); /* a fork's loss summary starts at null */
    optd_worker_steps_free(&img.worker_steps); /* and its workers start afresh, as its history */
    img.created_ms = img.updated_ms = optd_now_ms();
    rc = optd_session_from_image_take(&img, req->srv->cfg.history, out, err);
    if (!rc) {
        rc = charge_or_drop(req, out, reserved, err);
        reserved = 0;
    }
out:
    if (reserved)
        optd_store_unreserve(req->srv->store, reserved);
    optd_session_image_free(&img);
    return rc;
}

/* A new session from "params" or "size" (doc: the create document, whose
 * "params" the reader may have read already). */
static int new_session(optd_req_t *req, optd_doc_t *doc, const char *name, optd_session_t **out, optd_err_t *err)
{
    const json_t *body = doc->obj;
    optd_session_config_t cfg = {0};
    void *params = NULL;
    size_t size = 0;
    int rc;
    const json_t *v = json_object_get(body, "optimizer");
    if (!json_is_string(v))
        return optd_err_set(err, OPTD_EINVAL, "'optimizer' is required (a name from GET /v1/optimizers)");
    if ((rc = optd_optim_lookup(json_string_value(v), &cfg.kind, err)))
        return rc;
    cfg.dtype = OPTD_FLOAT64;
    if ((v = json_object_get(body, "dtype")) &&
        (!json_is_string(v) || optd_dtype_parse(json_string_value(v), &cfg.dtype)))
        return optd_err_set(err, OPTD_EINVAL, "'dtype' must be \"float64\" or \"float32\"");
    optd_hparams_default(cfg.kind, &cfg.hp);
    rc = optd_http_apply_config_fields(body, &cfg, err);
    if (!rc && (v = json_object_get(body, "row_size")))
        rc = optd_codec_row_size_decode(v, &cfg.row_size, err);
    if (!rc && cfg.row_size > 1 && cfg.n_groups > 0)
        rc = optd_err_set(err, OPTD_EINVAL, "'groups': a session with row_size > 1 takes no groups");
    if (rc)
        goto out;
    if ((v = json_object_get(body, "params"))) {
        if ((rc = optd_doc_take_values(doc, v, cfg.dtype, &params, &size, err)))
            goto out;
    } else {
        uint64_t u;
        rc = optd_codec_u64_decode(json_object_get(body, "size"), "size", &u, err);
        if (!rc && (u < 1 || u > (uint64_t)1 << 40))
            rc = optd_err_set(err, OPTD_EINVAL, "'size' must be an integer >= 1");
        if (rc)
            goto out;
        size = (size_t)u;
    }
    size_t max = req->srv->cfg.max_params;
    if (max && size > max) {
        rc = optd_err_set(err, OPTD_ELIMIT, "%zu parameters are more than --max-params (%zu)", size, max);
        goto out;
    }
    if ((rc = optd_http_round_fits(req, &cfg.aggregate, size, err)))
        goto out;
    /* Reserved before anything is allocated: calloc hands out untouched
     * pages, so only the budget stands between a 201 and a later OOM. */
    size_t bytes = optd_session_bytes(&cfg, size, 0, req->srv->cfg.history);
    if ((rc = optd_store_reserve(req->srv->store, bytes, err)))
        goto out;
    rc = optd_session_create(name, &cfg, size, params, req->srv->cfg.history, out, err);
    if (rc)
        optd_store_unreserve(req->srv->store, bytes);
    else
        rc = charge_or_drop(req, out, bytes, err);
out:
    free(params);
    optd_session_config_free(&cfg);
    return rc;
}

/* Members whose presence makes a create read its body by Jansson whole:
 * with another source than "params", which of them counts is its to say. */
static const char *const create_slow_if[] = {"size", "from", NULL};

void optd_route_sessions_create(optd_req_t *req)
{
    /* "params" is read by the reader's fast path when it can, straight into
     * a buffer of the session's dtype, as Jansson takes ~700 ms and ~40 MB
     * more for 1M numbers. */
    const optd_doc_spec_t spec = {.what = "a create request", .fields = create_fields, .size = OPTD_DOC_BY_DOC,
                                  .array = "params", .dtype = OPTD_FLOAT64, .dtype_member = "dtype",
                                  .slow_if = create_slow_if, .max_n = req->srv->cfg.max_params,
                                  .pool = req->srv->pool};
    optd_doc_t doc;
    optd_err_t err = {0};
    optd_session_t *s = NULL;
    char name[OPTD_NAME_MAX + 1];
    int rc = optd_req_doc(req, &spec, &doc, &err);
    const json_t *body = doc.obj;
    if (rc) {
        optd_http_error_from(req, &err);
        goto out;
    }

    const json_t *jn = json_object_get(body, "name");
    if (req->route == OPTD_R_SESSION) {
        if (jn && (!json_is_string(jn) || strcmp(json_string_value(jn), req->name) != 0)) {
            optd_http_error(req, OPTD_EINVAL, "'name' in the body must equal the name in the URL");
            goto out;
        }
        if (req->name_too_long) {
            optd_http_error(req, OPTD_EINVAL, "invalid session name: at most %d characters", OPTD_NAME_MAX);
            goto out;
        }
        snprintf(name, sizeof name, "%s", req->name);
    } else {
        if (!json_is_string(jn)) {
            optd_http_error(req, OPTD_EINVAL, "'name' is required (a string)");
            goto out;
        }
        if (strlen(json_string_value(jn)) > OPTD_NAME_MAX) {
            optd_http_error(req, OPTD_EINVAL, "invalid session name: at most %d characters", OPTD_NAME_MAX);
            goto out;
        }
        snprintf(name, sizeof name, "%s", json_string_value(jn));
    }
    if (!optd_session_name_valid(name)) {
        optd_http_error(req, OPTD_EINVAL,
                        "invalid session name '%.128s': names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", name);
        goto out;
    }

    int sources = !!json_object_get(body, "params") + !!json_object_get(body, "size") +
                  !!json_object_get(body, "from");
    if (sources != 1) {
        optd_http_error(req, OPTD_EINVAL, "give exactly one of 'params', 'size' or 'from'");
        goto out;
    }
    rc = json_object_get(body, "from") ? fork_session(req, body, name, &s, &err)
                                       : new_session(req, &doc, name, &s, &err);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    rc = optd_store_insert(req->srv->store, s, false, NULL, &err);
    if (rc) {
        if (rc == OPTD_EEXIST && !err.msg[0])
            optd_err_set(&err, rc, "a session named '%s' exists", name);
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    optd_http_reply_descriptor(req, s, 201);
    if (req->status == 201) {
        char loc[OPTD_NAME_MAX + 32];
        snprintf(loc, sizeof loc, "/v1/sessions/%s", name);
        optd_http_header(req, MHD_HTTP_HEADER_LOCATION, loc);
    }
    optd_log(&req->srv->log, OPTD_LOG_DEBUG, "created session %s", name);
out:
    if (s)
        optd_session_release(s);
    optd_doc_free(&doc);
}

/* ---- get, patch, delete --------------------------------------------------- */

void optd_route_session_get(optd_req_t *req)
{
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    optd_http_reply_descriptor(req, s, 200);
    optd_session_release(s);
}

static const char *const patch_fields[] = {"hyperparameters", "schedule", "max_grad_norm", "labels",
                                           "ttl_seconds", "optimizer", "dtype", "groups", "aggregate", NULL};

/* The hyperparameters object v onto hp, with the bit of each key given
 * (kind's table order) in *set. */
static int read_hp_set(const json_t *v, optd_optim_kind_t kind, optd_hparams_t *hp, uint32_t *set,
                       optd_err_t *err)
{
    int rc = optd_codec_hparams_apply(v, kind, hp, err);
    if (rc)
        return rc;
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        const optd_hparam_desc_t *hd = optd_hparam_find(kind, key);
        *set |= 1u << (size_t)(hd - d->hparams);
    }
    return 0;
}

/* A PATCH's "groups": one {"hyperparameters"?, "size"?} per group, checked
 * against the session's groups when merged. */
static int read_patch_groups(const json_t *v, optd_optim_kind_t kind, optd_session_patch_t *p, optd_err_t *err)
{
    size_t n = json_array_size(v);
    if (!json_is_array(v) || n < 1 || n > OPTD_GROUPS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "'groups' must be an array of 1 to %d groups", OPTD_GROUPS_MAX);
    if (!(p->groups = calloc(n, sizeof *p->groups)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu groups", n);
    p->n_groups = n;
    for (size_t g = 0; g < n; g++) {
        const json_t *e = json_array_get(v, g), *x;
        const char *key;
        json_t *val;
        if (!json_is_object(e))
            return optd_err_set(err, OPTD_EINVAL, "groups[%zu] must be an object", g);
        json_object_foreach((json_t *)e, key, val) {
            if (strcmp(key, "size") != 0 && strcmp(key, "hyperparameters") != 0)
                return optd_err_set(err, OPTD_EINVAL,
                                    "unknown field '%.64s' in groups[%zu] (known: size, hyperparameters)", key, g);
        }
        char field[48];
        snprintf(field, sizeof field, "groups[%zu].size", g);
        uint64_t u;
        int rc;
        if ((x = json_object_get(e, "size"))) {
            if ((rc = optd_codec_u64_decode(x, field, &u, err)))
                return rc;
            if (u < 1 || u > (uint64_t)1 << 40)
                return optd_err_set(err, OPTD_EINVAL, "'%s' must be an integer >= 1", field);
            p->groups[g].size = (size_t)u;
        }
        optd_err_t e2 = {0};
        if ((x = json_object_get(e, "hyperparameters")) &&
            read_hp_set(x, kind, &p->groups[g].hp, &p->groups[g].hp_set, &e2))
            return optd_err_set(err, e2.code, "groups[%zu]: %s", g, e2.msg);
    }
    return 0;
}

/* The PATCH body read for an optimizer of kind into *p (p->kind set):
 * which fields and hyperparameters it sets, nothing merged yet.  0 or an
 * error for the client. */
static int read_patch(const json_t *body, optd_optim_kind_t kind, optd_dtype_t dtype,
                      optd_session_patch_t *p, optd_err_t *err)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    const json_t *v;
    int rc = 0;
    if ((v = json_object_get(body, "optimizer"))) {
        p->check_kind = true;
        if (!json_is_string(v) || optd_optim_lookup(json_string_value(v), &p->want_kind, NULL) ||
            p->want_kind != kind)
            return optd_err_set(err, OPTD_EINVAL, "the optimizer of a session cannot change (it is %s)",
                                optd_optim_desc(kind)->name);
    }
    p->dtype = dtype;
    if ((v = json_object_get(body, "dtype"))) {
        p->check_dtype = true;
        if (!json_is_string(v) || optd_dtype_parse(json_string_value(v), &p->dtype) || p->dtype != dtype)
            return optd_err_set(err, OPTD_EINVAL, "the dtype of a session cannot change (it is %s)",
                                optd_dtype_name(dtype));
    }
    if ((v = json_object_get(body, "hyperparameters")) && (rc = read_hp_set(v, kind, &p->hp, &p->hp_set, err)))
        return rc;
    if ((v = json_object_get(body, "groups")) && (rc = read_patch_groups(v, kind, p, err)))
        return rc;
    if ((v = json_object_get(body, "schedule"))) {
        p->set_schedule = true;
        if ((rc = optd_codec_schedule_decode(v, &p->has_schedule, &p->schedule, err)))
            return rc;
    }
    if ((v = json_object_get(body, "max_grad_norm"))) {
        p->set_max_grad_norm = true;
        if ((rc = optd_codec_max_grad_norm_decode(v, &p->max_grad_norm, err)))
            return rc;
    }
    if ((v = json_object_get(body, "labels"))) {
        optd_session_config_t holder = {0};
        rc = optd_codec_labels_decode(v, &holder, err);
        p->set_labels = true;
        p->labels = holder.labels;
        p->n_labels = holder.n_labels;
        if (rc)
            return rc;
    }
    if ((v = json_object_get(body, "ttl_seconds"))) {
        p->set_ttl = true;
        if ((rc = optd_codec_ttl_decode(v, &p->ttl_seconds, err)))
            return rc;
    }
    if ((v = json_object_get(body, "aggregate"))) {
        p->set_aggregate = true;
        if ((rc = optd_codec_aggregate_decode(v, &p->aggregate, err)))
            return rc;
    }
    return 0;
}

/* The patch is read for the session's optimizer, then merged under the
 * session's lock (optd_session_patch), so concurrent PATCHes of different
 * fields never undo each other, and the answer is the session as this
 * PATCH left it.  An import may change the optimizer between the read and
 * the merge: then the body is read again. */
void optd_route_session_patch(optd_req_t *req)
{
    const optd_doc_spec_t spec = {.what = "a patch request", .fields = patch_fields};
    optd_doc_t doc;
    optd_session_t *s = NULL;
    optd_session_patch_t p = {0};
    optd_session_desc_t d = {0};
    optd_err_t err = {0};
    int rc = optd_req_doc(req, &spec, &doc, &err);
    const json_t *body = doc.obj;
    if (rc) {
        optd_http_error_from(req, &err);
        goto out;
    }
    if (!(s = optd_req_session(req)))
        goto out;
    for (int attempt = 0; attempt < 8; attempt++) {
        optd_session_desc_t now = {0};
        rc = optd_session_copy_descriptor(s, &now, &err);
        optd_optim_kind_t kind = now.cfg.kind;
        optd_dtype_t dtype = now.cfg.dtype;
        size_t size = now.size;
        optd_session_desc_free(&now);
        optd_session_patch_free(&p);
        if (!rc)
            rc = read_patch(body, kind, dtype, &p, &err);
        if (!rc && p.set_aggregate)
            rc = optd_http_round_fits(req, &p.aggregate, size, &err);
        if (!rc)
            rc = optd_session_patch(s, &p, &d, &err);
        if (rc == OPTD_ENOTFOUND) {
            /* An import of another shape put a new session in this one's
             * place after we found it: the PATCH applies to that one. */
            optd_session_t *now = optd_store_get(req->srv->store, s->name);
            if (now && now != s) {
                optd_session_release(s);
                s = now;
                rc = 1;
                continue;
            }
            optd_session_release(now);
        }
        if (rc != 1)
            break;
    }
    if (rc == 1)
        rc = optd_err_set(&err, OPTD_EUNAVAIL, "the session's optimizer kept changing; try again");
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    if (d.round_applied_ns >= 0) { /* fewer workers: the round it held was applied */
        optd_metrics_step(&req->srv->metrics, d.cfg.kind);
        optd_metrics_round(&req->srv->metrics, (double)d.round_applied_ns / 1e9);
    }
    json_t *desc = optd_codec_descriptor(s->name, &d);
    if (!desc) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory encoding the descriptor");
        goto out;
    }
    optd_http_reply_json(req, 200, desc);
    json_decref(desc);
out:
    optd_session_patch_free(&p);
    optd_session_desc_free(&d);
    if (s)
        optd_session_release(s);
    optd_doc_free(&doc);
}

void optd_route_session_delete(optd_req_t *req)
{
    if (req->name_too_long || !optd_session_name_valid(req->name)) {
        optd_http_error(req, OPTD_EINVAL,
                        "invalid session name: names match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
        return;
    }
    optd_err_t err = {0};
    int rc = optd_store_remove(req->srv->store, req->name, &err);
    if (rc == OPTD_ENOTFOUND) {
        optd_http_error(req, OPTD_ENOTFOUND, "no session named '%s'", req->name);
        return;
    }
    if (rc) {
        optd_http_store_error(req, rc, &err);
        return;
    }
    optd_http_reply_empty(req, 204);
}

/* ---- list ------------------------------------------------------------------ */

typedef struct label_args {
    optd_label_t labels[OPTD_LABELS_MAX];
    char *copies[OPTD_LABELS_MAX];
    size_t n;
    int bad; /* 1: malformed, 2: too many, 3: out of memory */
} label_args_t;

static enum MHD_Result collect_label(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    label_args_t *la = cls;
    if (strcmp(key, "label") != 0)
        return MHD_YES;
    if (la->n == OPTD_LABELS_MAX) {
        la->bad = 2;
        return MHD_NO;
    }
    const char *colon = value ? strchr(value, ':') : NULL;
    if (!colon || colon == value) {
        la->bad = 1;
        return MHD_NO;
    }
    char *copy = strdup(value);
    if (!copy) {
        la->bad = 3;
        return MHD_NO;
    }
    copy[colon - value] = '\0';
    la->copies[la->n] = copy;
    la->labels[la->n].key = copy;
    la->labels[la->n].value = copy + (colon - value) + 1;
    la->n++;
    return MHD_YES;
}

/* The list's `sort`: false (answered 400) when it names no order. */
static bool list_sort(optd_req_t *req, optd_store_sort_t *out)
{
    static const struct {
        const char *name;
        optd_store_sort_t sort;
    } sorts[] = {{"name", OPTD_SORT_NAME}, {"best_loss", OPTD_SORT_BEST_LOSS}, {"last_loss", OPTD_SORT_LAST_LOSS}};
    const char *v = optd_req_query(req, "sort");
    *out = OPTD_SORT_NAME;
    if (!v)
        return true;
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++)
        if (strcmp(v, sorts[i].name) == 0) {
            *out = sorts[i].sort;
            return true;
        }
    optd_http_error(req, OPTD_EINVAL, "query 'sort' must be name, best_loss or last_loss");
    return false;
}

void optd_route_sessions_list(optd_req_t *req)
{
    uint64_t limit, offset;
    optd_store_sort_t sort;
    if (!optd_req_query_u64(req, "limit", 1, 1000, 100, &limit) ||
        !optd_req_query_u64(req, "offset", 0, (uint64_t)1 << 40, 0, &offset) || !list_sort(req, &sort))
        return;
    if (sort != OPTD_SORT_NAME && optd_req_query(req, "after")) {
        optd_http_error(req, OPTD_EINVAL, "query 'after' pages the name order; with sort=%s page with 'offset'",
                        optd_req_query(req, "sort"));
        return;
    }
    label_args_t la;
    memset(&la, 0, sizeof la);
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, collect_label, &la);
    optd_session_t **list = NULL;
    size_t n = 0;
    bool more = false;
    json_t *arr = NULL;
    if (la.bad) {
        if (la.bad == 3)
            optd_http_error(req, OPTD_ENOMEM, "out of memory reading the query");
        else if (la.bad == 2)
            optd_http_error(req, OPTD_EINVAL, "at most %d 'label' filters", OPTD_LABELS_MAX);
        else
            optd_http_error(req, OPTD_EINVAL, "query 'label' must be key:value");
        goto out;
    }
    optd_store_query_t q = {
        .sort = sort,
        .offset = (size_t)offset,
        .after = optd_req_query(req, "after"),
        .prefix = optd_req_query(req, "prefix"),
        .n_labels = la.n,
        .labels = la.labels,
        .limit = (size_t)limit,
    };
    optd_err_t err = {0};
    int rc = optd_store_list(req->srv->store, &q, &list, &n, &more, &err);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto out;
    }
    arr = json_array();
    int bad = !arr;
    for (size_t i = 0; i < n && !bad; i++) {
        optd_session_desc_t desc = {0};
        if (optd_session_copy_descriptor(list[i], &desc, &err)) {
            bad = 1;
            break;
        }
        bad |= json_array_append_new(arr, optd_codec_descriptor(list[i]->name, &desc));
        optd_session_desc_free(&desc);
    }
    json_t *doc = bad ? NULL
                      : json_pack("{sOsoso}", "sessions", arr, "next_after",
                                  more && n && sort == OPTD_SORT_NAME ? json_string(list[n - 1]->name)
                                                                     : json_null(),
                                  "next_offset",
                                  more ? json_integer((json_int_t)(offset + n)) : json_null());
    if (!doc) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory listing sessions");
        goto out;
    }
    optd_http_reply_json(req, 200, doc);
    json_decref(doc);
out:
    json_decref(arr);
    for (size_t i = 0; i < n; i++)
        optd_session_release(list[i]);
    free(list);
    for (size_t i = 0; i < la.n; i++)
        free(la.copies[i]);
}
