/* codec.c: JSON documents <-> session structs (see codec.h). */
#include "codec.h"

#include "dtoa.h"
#include "fmt.h"
#include "numarray.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Lists kind's hyperparameter names ("lr, betas, ...") for messages. */
static void hparam_names(optd_optim_kind_t kind, char *buf, size_t cap)
{
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->n_hparams && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", d->hparams[i].name);
}

int optd_codec_hparams_apply(const json_t *v, optd_optim_kind_t kind, optd_hparams_t *hp,
                             optd_err_t *err)
{
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "'hyperparameters' must be an object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        const optd_hparam_desc_t *hd = optd_hparam_find(kind, key);
        if (!hd) {
            char names[200];
            hparam_names(kind, names, sizeof names);
            return optd_err_set(err, OPTD_EINVAL, "unknown hyperparameter '%.64s' for %s (it takes: %s)",
                                key, optd_optim_desc(kind)->name, names);
        }
        char *field = (char *)hp + hd->offset;
        switch (hd->type) {
        case OPTD_HP_REAL:
            if (!json_is_number(val) || !isfinite(json_number_value(val)))
                return optd_err_set(err, OPTD_EINVAL, "hyperparameter '%s' must be a finite number",
                                    key);
            *(double *)field = json_number_value(val);
            break;
        case OPTD_HP_BOOL:
            if (!json_is_boolean(val))
                return optd_err_set(err, OPTD_EINVAL, "hyperparameter '%s' must be true or false", key);
            *(bool *)field = json_is_true(val);
            break;
        case OPTD_HP_PAIR: {
            if (!json_is_array(val) || json_array_size(val) != 2 ||
                !json_is_number(json_array_get(val, 0)) || !json_is_number(json_array_get(val, 1)))
                return optd_err_set(err, OPTD_EINVAL, "hyperparameter '%s' must be an array of two numbers",
                                    key);
            double a = json_number_value(json_array_get(val, 0));
            double b = json_number_value(json_array_get(val, 1));
            if (!isfinite(a) || !isfinite(b))
                return optd_err_set(err, OPTD_EINVAL, "hyperparameter '%s' must hold finite numbers", key);
            ((double *)field)[0] = a;
            ((double *)field)[1] = b;
            break;
        }
        }
    }
    return 0;
}

/* One entry of "groups" onto group g (its hyperparameters over what it
 * holds); with_size: the entry must carry "size" (a create), else a given
 * "size" must equal the group's. */
static int group_apply(const json_t *e, size_t g, optd_optim_kind_t kind, optd_group_t *grp,
                       bool with_size, optd_err_t *err)
{
    if (!json_is_object(e))
        return optd_err_set(err, OPTD_EINVAL, "groups[%zu] must be an object", g);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)e, key, val) {
        if (strcmp(key, "size") != 0 && strcmp(key, "hyperparameters") != 0)
            return optd_err_set(err, OPTD_EINVAL,
                                "unknown field '%.64s' in groups[%zu] (known: size, hyperparameters)", key, g);
    }
    const json_t *jsize = json_object_get(e, "size");
    if (with_size || jsize) {
        char field[48];
        snprintf(field, sizeof field, "groups[%zu].size", g);
        uint64_t u;
        int rc = optd_codec_u64_decode(jsize, field, &u, err);
        if (rc)
            return rc;
        if (u < 1 || u > (uint64_t)1 << 40)
            return optd_err_set(err, OPTD_EINVAL, "'%s' must be an integer >= 1", field);
        if (!with_size && u != grp->size)
            return optd_err_set(err, OPTD_EINVAL,
                                "'%s' is %llu but the group holds %zu parameters (group sizes cannot change)",
                                field, (unsigned long long)u, grp->size);
        grp->size = (size_t)u;
    }
    const json_t *jhp = json_object_get(e, "hyperparameters");
    if (!jhp)
        return 0;
    optd_err_t e2 = {0};
    if (optd_codec_hparams_apply(jhp, kind, &grp->hp, &e2))
        return optd_err_set(err, e2.code, "groups[%zu]: %s", g, e2.msg);
    return 0;
}

int optd_codec_groups_apply(const json_t *v, optd_session_config_t *cfg, optd_err_t *err)
{
    bool creating = cfg->n_groups == 0;
    if (creating && json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return optd_err_set(err, OPTD_EINVAL, "'groups' must be an array of groups");
    size_t n = json_array_size(v);
    if (creating) {
        if (n < 1 || n > OPTD_GROUPS_MAX)
            return optd_err_set(err, OPTD_EINVAL, "'groups' must hold 1 to %d groups, got %zu",
                                OPTD_GROUPS_MAX, n);
        size_t *sizes = calloc(n, sizeof *sizes);
        if (!sizes)
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu groups", n);
        int rc = optd_session_config_set_groups(cfg, sizes, n, err);
        free(sizes);
        if (rc)
            return rc;
    } else if (n != cfg->n_groups) {
        return optd_err_set(err, OPTD_EINVAL, "'groups' must hold one entry per group (%zu), got %zu",
                            cfg->n_groups, n);
    }
    for (size_t g = 0; g < n; g++) {
        int rc = group_apply(json_array_get(v, g), g, cfg->kind, &cfg->groups[g], creating, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* The largest integral JSON real taken as an integer: a double below
 * 2^63 (about 9.223e18) with a margin, so its conversion to int64_t (or
 * uint64_t) cannot overflow. */
#define REAL_INT_LIMIT 9.2e18

int optd_codec_u64_decode(const json_t *v, const char *field, uint64_t *out, optd_err_t *err)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return optd_err_set(err, OPTD_EINVAL, "'%s' must be an integer >= 0", field);
        *out = (uint64_t)i;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= 0 && d < REAL_INT_LIMIT && d == floor(d)) {
            *out = (uint64_t)d;
            return 0;
        }
    }
    return optd_err_set(err, OPTD_EINVAL, "'%s' must be an integer >= 0", field);
}

int optd_codec_number_decode(const json_t *v, const char *field, double *out, optd_err_t *err)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return optd_err_set(err, OPTD_EINVAL, "'%s' must be a finite number", field);
    *out = json_number_value(v);
    return 0;
}

/* An integer field of a schedule, >= 0 here (ranges are checked by
 * optd_schedule_validate so the message is the core's). */
static int sched_int(const json_t *v, const char *field, int64_t *out, optd_err_t *err)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d) && fabs(d) < REAL_INT_LIMIT) {
            *out = (int64_t)d;
            return 0;
        }
    }
    return optd_err_set(err, OPTD_EINVAL, "schedule '%s' must be an integer", field);
}

int optd_codec_schedule_decode(const json_t *v, bool *has, optd_schedule_t *s, optd_err_t *err)
{
    memset(s, 0, sizeof *s);
    *has = false;
    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "'schedule' must be an object or null");
    const json_t *type = json_object_get(v, "type");
    if (!json_is_string(type))
        return optd_err_set(err, OPTD_EINVAL,
                            "'schedule.type' is required: constant, step, exponential or cosine");
    if (optd_sched_type_parse(json_string_value(type), &s->type) || s->type == OPTD_SCHED_NONE)
        return optd_err_set(err, OPTD_EINVAL,
                            "'schedule.type' '%.32s' is not one of constant, step, exponential, cosine",
                            json_string_value(type));
    /* Defaults of PyTorch's schedulers where they have one. */
    if (s->type == OPTD_SCHED_STEP)
        s->gamma = 0.1;
    bool got_step_size = false, got_gamma = false, got_t_max = false;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        int rc = 0;
        if (strcmp(key, "type") == 0)
            continue;
        if (strcmp(key, "warmup_steps") == 0) {
            rc = sched_int(val, key, &s->warmup_steps, err);
        } else if (strcmp(key, "step_size") == 0 && s->type == OPTD_SCHED_STEP) {
            rc = sched_int(val, key, &s->step_size, err);
            got_step_size = true;
        } else if (strcmp(key, "gamma") == 0 &&
                   (s->type == OPTD_SCHED_STEP || s->type == OPTD_SCHED_EXPONENTIAL)) {
            rc = optd_codec_number_decode(val, "schedule.gamma", &s->gamma, err);
            got_gamma = true;
        } else if (strcmp(key, "t_max") == 0 && s->type == OPTD_SCHED_COSINE) {
            rc = sched_int(val, key, &s->t_max, err);
            got_t_max = true;
        } else if (strcmp(key, "eta_min") == 0 && s->type == OPTD_SCHED_COSINE) {
            rc = optd_codec_number_decode(val, "schedule.eta_min", &s->eta_min, err);
        } else {
            return optd_err_set(err, OPTD_EINVAL, "unknown field '%.64s' for a '%s' schedule", key,
                                optd_sched_type_name(s->type));
        }
        if (rc)
            return rc;
    }
    if (s->type == OPTD_SCHED_STEP && !got_step_size)
        return optd_err_set(err, OPTD_EINVAL, "a 'step' schedule needs 'step_size' (integer >= 1)");
    if (s->type == OPTD_SCHED_EXPONENTIAL && !got_gamma)
        return optd_err_set(err, OPTD_EINVAL, "an 'exponential' schedule needs 'gamma' (> 0)");
    if (s->type == OPTD_SCHED_COSINE && !got_t_max)
        return optd_err_set(err, OPTD_EINVAL, "a 'cosine' schedule needs 't_max' (integer >= 1)");
    int rc = optd_schedule_validate(s, err);
    if (rc)
        return rc;
    *has = true;
    return 0;
}

int optd_codec_labels_decode(const json_t *v, optd_session_config_t *cfg, optd_err_t *err)
{
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "'labels' must be an object of strings ({} for none)");
    optd_session_config_free_labels(cfg);
    if (json_object_size(v) > OPTD_LABELS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "'labels' holds %zu labels; at most %d are allowed",
                            json_object_size(v), OPTD_LABELS_MAX);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        if (!json_is_string(val))
            return optd_err_set(err, OPTD_EINVAL, "label '%.64s' must be a string", key);
        int rc = optd_session_config_add_label(cfg, key, json_string_value(val), err);
        if (rc)
            return rc;
    }
    return 0;
}

int optd_codec_max_grad_norm_decode(const json_t *v, double *out, optd_err_t *err)
{
    if (json_is_null(v)) {
        *out = 0;
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "'max_grad_norm' must be a number >= 0 or null (0 or null: no clipping)");
    *out = json_number_value(v);
    return 0;
}

int optd_codec_ttl_decode(const json_t *v, int64_t *out, optd_err_t *err)
{
    if (json_is_null(v)) {
        *out = 0;
        return 0;
    }
    uint64_t u;
    if (optd_codec_u64_decode(v, "ttl_seconds", &u, NULL) || u < 1 || u > (uint64_t)1 << 40)
        return optd_err_set(err, OPTD_EINVAL, "'ttl_seconds' must be an integer >= 1 or null");
    *out = (int64_t)u;
    return 0;
}

int optd_codec_time_decode(const json_t *v, const char *field, int64_t *ms, optd_err_t *err)
{
    const char *s = json_string_value(v);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p)
        goto bad;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        if (digits == 0)
            goto bad;
        for (; digits < 3; digits++)
            frac *= 10;
    }
    if (!(strcmp(p, "Z") == 0 || strcmp(p, "z") == 0 || strcmp(p, "+00:00") == 0))
        goto bad;
    time_t t = timegm(&tm);
    *ms = (int64_t)t * 1000 + frac;
    return 0;
bad:
    return optd_err_set(err, OPTD_EINVAL, "'%s' must be an RFC 3339 UTC time like 2026-11-28T12:00:00Z",
                        field);
}

json_t *optd_codec_hparams_encode(optd_optim_kind_t kind, const optd_hparams_t *hp)
{
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (size_t i = 0; i < d->n_hparams; i++) {
        const optd_hparam_desc_t *hd = &d->hparams[i];
        const char *field = (const char *)hp + hd->offset;
        json_t *v = NULL;
        if (hd->type == OPTD_HP_REAL)
            v = json_real(*(const double *)field);
        else if (hd->type == OPTD_HP_BOOL)
            v = json_boolean(*(const bool *)field);
        else
            v = json_pack("[ff]", ((const double *)field)[0], ((const double *)field)[1]);
        if (!v || json_object_set_new(o, hd->name, v)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *optd_codec_groups_encode(const optd_session_config_t *cfg)
{
    if (cfg->n_groups == 0)
        return json_null();
    json_t *a = json_array();
    for (size_t g = 0; a && g < cfg->n_groups; g++) {
        json_t *e = json_object();
        int bad = !e;
        bad |= json_object_set_new(e, "size", json_integer((json_int_t)cfg->groups[g].size));
        bad |= json_object_set_new(e, "hyperparameters", optd_codec_hparams_encode(cfg->kind, &cfg->groups[g].hp));
        if (bad || json_array_append_new(a, e)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *optd_codec_schedule_encode(bool has, const optd_schedule_t *s)
{
    if (!has || s->type == OPTD_SCHED_NONE)
        return json_null();
    json_t *o = json_pack("{ss}", "type", optd_sched_type_name(s->type));
    if (!o)
        return NULL;
    int bad = 0;
    switch (s->type) {
    case OPTD_SCHED_STEP:
        bad |= json_object_set_new(o, "step_size", json_integer(s->step_size));
        bad |= json_object_set_new(o, "gamma", json_real(s->gamma));
        break;
    case OPTD_SCHED_EXPONENTIAL:
        bad |= json_object_set_new(o, "gamma", json_real(s->gamma));
        break;
    case OPTD_SCHED_COSINE:
        bad |= json_object_set_new(o, "t_max", json_integer(s->t_max));
        bad |= json_object_set_new(o, "eta_min", json_real(s->eta_min));
        break;
    default:
        break;
    }
    if (s->warmup_steps > 0 || s->type == OPTD_SCHED_CONSTANT)
        bad |= json_object_set_new(o, "warmup_steps", json_integer(s->warmup_steps));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *optd_codec_loss_encode(const optd_loss_summary_t *ls)
{
    if (!ls->has)
        return json_null();
    return json_pack("{sfsIsfsI}", "last", ls->last, "last_step", (json_int_t)ls->last_step, "best",
                     ls->best, "best_step", (json_int_t)ls->best_step);
}

int optd_codec_loss_decode(const json_t *v, optd_loss_summary_t *ls, optd_err_t *err)
{
    memset(ls, 0, sizeof *ls);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v) || json_object_size(v) != 4)
        return optd_err_set(err, OPTD_EINVAL,
                            "'loss' must be null or {\"last\", \"last_step\", \"best\", \"best_step\"}");
    int rc = optd_codec_number_decode(json_object_get(v, "last"), "loss.last", &ls->last, err);
    if (!rc)
        rc = optd_codec_number_decode(json_object_get(v, "best"), "loss.best", &ls->best, err);
    if (!rc)
        rc = optd_codec_u64_decode(json_object_get(v, "last_step"), "loss.last_step", &ls->last_step,
                                   err);
    if (!rc)
        rc = optd_codec_u64_decode(json_object_get(v, "best_step"), "loss.best_step", &ls->best_step,
                                   err);
    ls->has = rc == 0;
    return rc;
}

int optd_codec_aggregate_decode(const json_t *v, optd_aggregate_t *a, optd_err_t *err)
{
    memset(a, 0, sizeof *a);
    if (json_is_null(v))
        return 0;
    static const char *const msg =
        "'aggregate' must be null or {\"workers\": 1..1024, \"reduce\": \"mean\"|\"sum\", \"max_staleness\": >= 0}";
    if (!json_is_object(v))
        return optd_err_set(err, OPTD_EINVAL, "%s", msg);
    const char *key;
    const json_t *f;
    json_object_foreach((json_t *)v, key, f) {
        if (strcmp(key, "workers") && strcmp(key, "reduce") && strcmp(key, "max_staleness"))
            return optd_err_set(err, OPTD_EINVAL,
                                "unknown field '%.64s' in aggregate (known: workers, reduce, max_staleness)", key);
    }
    f = json_object_get(v, "workers");
    if (!json_is_integer(f) || json_integer_value(f) < 1 || json_integer_value(f) > OPTD_ROUND_WORKERS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "aggregate.workers: required, an integer in 1..%d",
                            OPTD_ROUND_WORKERS_MAX);
    a->workers = (uint32_t)json_integer_value(f);
    if ((f = json_object_get(v, "reduce"))) {
        const char *r = json_string_value(f);
        if (r && strcmp(r, "mean") == 0)
            a->reduce = OPTD_REDUCE_MEAN;
        else if (r && strcmp(r, "sum") == 0)
            a->reduce = OPTD_REDUCE_SUM;
        else
            return optd_err_set(err, OPTD_EINVAL, "aggregate.reduce: must be \"mean\" (the default) or \"sum\"");
    }
    if ((f = json_object_get(v, "max_staleness"))) {
        if (!json_is_integer(f) || json_integer_value(f) < 0)
            return optd_err_set(err, OPTD_EINVAL, "aggregate.max_staleness: must be an integer >= 0 (default 0)");
        a->max_staleness = (uint64_t)json_integer_value(f);
    }
    return 0;
}

/* "aggregate" and "round" of a descriptor (both null when off). */
static int put_rounds(json_t *o, const optd_session_desc_t *d)
{
    const optd_aggregate_t *a = &d->cfg.aggregate;
    if (!a->workers)
        return json_object_set_new(o, "aggregate", json_null()) |
               json_object_set_new(o, "round", json_null());
    json_t *names = json_array();
    for (size_t i = 0; names && i < d->round_n; i++)
        json_array_append_new(names, json_string(d->round_workers[i]));
    return json_object_set_new(o, "aggregate",
                               json_pack("{s:i, s:s, s:I}", "workers", (int)a->workers, "reduce",
                                         optd_reduce_name(a->reduce), "max_staleness",
                                         (json_int_t)a->max_staleness)) |
           json_object_set_new(o, "round",
                               names ? json_pack("{s:I, s:I, s:o}", "step", (json_int_t)d->round_step,
                                                 "contributions", (json_int_t)d->round_n, "workers", names)
                                     : NULL);
}

json_t *optd_codec_descriptor(const char *name, const optd_session_desc_t *d)
{
    const optd_session_config_t *cfg = &d->cfg;
    char created[OPTD_FMT_TIME_MAX + 1], updated[OPTD_FMT_TIME_MAX + 1];
    created[optd_fmt_time(created, d->created_ms, false)] = '\0';
    updated[optd_fmt_time(updated, d->updated_ms, false)] = '\0';
    json_t *o = json_object();
    json_t *labels = json_object();
    if (!o || !labels) {
        json_decref(o);
        json_decref(labels);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < cfg->n_labels; i++)
        bad |= json_object_set_new(labels, cfg->labels[i].key, json_string(cfg->labels[i].value));
    /* json_object_set_new takes the value even on failure, and refuses a
     * NULL value (an allocation that failed) with -1. */
    bad |= json_object_set_new(o, "name", json_string(name));
    bad |= json_object_set_new(o, "optimizer", json_string(optd_optim_desc(cfg->kind)->name));
    bad |= json_object_set_new(o, "dtype", json_string(optd_dtype_name(cfg->dtype)));
    bad |= json_object_set_new(o, "size", json_integer((json_int_t)d->size));
    bad |= json_object_set_new(o, "row_size", json_integer((json_int_t)optd_session_row_size(cfg)));
    bad |= json_object_set_new(o, "step", json_integer((json_int_t)d->step));
    bad |= json_object_set_new(o, "hyperparameters", optd_codec_hparams_encode(cfg->kind, &cfg->hp));
    bad |= json_object_set_new(o, "groups", optd_codec_groups_encode(cfg));
    bad |= json_object_set_new(o, "schedule",
                               optd_codec_schedule_encode(cfg->has_schedule, &cfg->schedule));
    bad |= json_object_set_new(o, "max_grad_norm",
                               cfg->max_grad_norm > 0 ? json_real(cfg->max_grad_norm) : json_null());
    bad |= json_object_set_new(o, "labels", labels);
    bad |= json_object_set_new(o, "ttl_seconds",
                               cfg->ttl_seconds > 0 ? json_integer(cfg->ttl_seconds) : json_null());
    bad |= json_object_set_new(o, "created_at", json_string(created));
    bad |= json_object_set_new(o, "updated_at", json_string(updated));
    bad |= json_object_set_new(o, "loss", optd_codec_loss_encode(&d->loss));
    bad |= put_rounds(o, d);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int optd_codec_rows_values_check(size_t got, const char *field, size_t n_rows, size_t row_size,
                                 optd_err_t *err)
{
    if (got == n_rows * row_size)
        return 0;
    return optd_err_set(err, OPTD_ESIZE, "'%s' has %zu elements; %zu rows of row_size %zu need %zu", field, got,
                        n_rows, row_size, n_rows * row_size);
}

int optd_codec_rows_decode(const json_t *v, uint64_t n_table, size_t max, uint64_t **out, size_t *n,
                           optd_err_t *err)
{
    *out = NULL;
    *n = 0;
    size_t len = json_array_size(v);
    if (!json_is_array(v) || len == 0 || (max && len > max))
        return max ? optd_err_set(err, OPTD_EINVAL, "'rows' must be an array of 1 to %zu row numbers", max)
                   : optd_err_set(err, OPTD_EINVAL, "'rows' must be a non-empty array of row numbers");
    uint64_t *rows = malloc(len * sizeof *rows);
    if (!rows)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu rows", len);
    for (size_t i = 0; i < len; i++) {
        const json_t *x = json_array_get(v, i);
        json_int_t r = json_is_integer(x) ? json_integer_value(x) : -1;
        if (r < 0 || (uint64_t)r >= n_table) {
            free(rows);
            return optd_err_set(err, OPTD_EINVAL,
                                "rows[%zu] must be a row number from 0 to %llu (the session has %llu rows)",
                                i, (unsigned long long)(n_table - 1), (unsigned long long)n_table);
        }
        rows[i] = (uint64_t)r;
    }
    *out = rows;
    *n = len;
    return 0;
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

int optd_codec_rows_parse(const char *arr, size_t len, uint64_t n_table, uint64_t **out, size_t *n,
                          optd_err_t *err)
{
    *out = NULL;
    *n = 0;
    const char *p = arr, *end = arr + len;
    if (len < 2 || *p != '[' || end[-1] != ']')
        return optd_err_set(err, OPTD_EINVAL, "'rows' must be a non-empty array of row numbers");
    size_t cap = 1; /* one more entry than commas: counted first, allocated once */
    for (const char *c = arr; c < end; c++)
        cap += *c == ',';
    if (skip_ws(p + 1, end - 1) == end - 1)
        return optd_err_set(err, OPTD_EINVAL, "'rows' must be a non-empty array of row numbers");
    uint64_t *rows = malloc(cap * sizeof *rows);
    if (!rows)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu rows", cap);
    p++;
    size_t i = 0;
    for (;; i++) {
        p = skip_ws(p, end);
        const char *start = p;
        uint64_t r = 0;
        while (p < end && *p >= '0' && *p <= '9' && p - start < 20)
            r = r * 10 + (uint64_t)(*p++ - '0');
        /* 19 digits at most (no wrap), no leading zero (not JSON) */
        bool ok = p > start && p - start <= 19 && !(*start == '0' && p - start > 1) && r < n_table;
        p = skip_ws(p, end);
        if (!ok || i >= cap || (*p != ',' && p != end - 1)) {
            free(rows);
            return optd_err_set(err, OPTD_EINVAL,
                                "rows[%zu] must be a row number from 0 to %llu (the session has %llu rows)",
                                i, (unsigned long long)(n_table - 1), (unsigned long long)n_table);
        }
        rows[i] = r;
        if (p == end - 1)
            break;
        p++;
    }
    *out = rows;
    *n = i + 1;
    return 0;
}

int optd_codec_row_size_decode(const json_t *v, size_t *out, optd_err_t *err)
{
    uint64_t u;
    int rc = optd_codec_u64_decode(v, "row_size", &u, err);
    if (!rc && (u < 1 || u > (uint64_t)1 << 40))
        rc = optd_err_set(err, OPTD_EINVAL, "'row_size' must be an integer >= 1");
    if (!rc)
        *out = (size_t)u;
    return rc;
}

void optd_codec_history_encode(optd_sbuf_t *b, const optd_history_entry_t *h, size_t n)
{
    optd_sbuf_puts(b, "{\"history\":[");
    for (size_t i = 0; i < n; i++) {
        char t[OPTD_FMT_TIME_MAX + 1];
        t[optd_fmt_time(t, h[i].time_ms, true)] = '\0';
        optd_sbuf_printf(b, "%s{\"step\":%llu,\"lr\":", i ? "," : "", (unsigned long long)h[i].step);
        optd_sbuf_put_double(b, h[i].lr);
        optd_sbuf_puts(b, ",\"grad_norm\":");
        optd_sbuf_put_double(b, h[i].grad_norm);
        if (h[i].has_loss) {
            optd_sbuf_puts(b, ",\"loss\":");
            optd_sbuf_put_double(b, h[i].loss);
        }
        if (h[i].contributions)
            optd_sbuf_printf(b, ",\"contributions\":%u", (unsigned)h[i].contributions);
        if (h[i].rows)
            optd_sbuf_printf(b, ",\"rows\":%llu", (unsigned long long)h[i].rows);
        optd_sbuf_printf(b, ",\"time\":\"%s\"}", t);
    }
    optd_sbuf_puts(b, "]}");
}

/* ---- step answers ---------------------------------------------------------- */

void optd_codec_step_members(optd_sbuf_t *b, uint64_t step, const uint64_t *rows, size_t n_rows,
                             optd_dtype_t dtype, const void *params, size_t n, struct optd_pool *pool)
{
    char num[24];
    *optd_fmt_uint(num, step, 1) = '\0';
    optd_sbuf_puts(b, "\"step\":");
    optd_sbuf_puts(b, num);
    if (!params)
        return;
    if (rows) {
        optd_sbuf_puts(b, ",\"rows\":[");
        for (size_t i = 0; i < n_rows; i++) {
            *optd_fmt_uint(num, rows[i], 1) = '\0';
            if (i)
                optd_sbuf_puts(b, ",");
            optd_sbuf_puts(b, num);
        }
        optd_sbuf_puts(b, "]");
    }
    optd_sbuf_puts(b, ",\"params\":");
    optd_numarray_encode(b, dtype, params, n, pool);
}

size_t optd_codec_step_answer_bytes(size_t n_rows, size_t n, bool with_params)
{
    return 64 + (with_params ? n_rows * 21 + n * (OPTD_DTOA_MAX + 1) : 0);
}
