/* test_fixtures.c: proves the optimizer core exact to PyTorch.
 *
 * Replays each reference trajectory tests/fixtures/optim/NAME.json (made
 * by tests/fixtures/generate.py with torch 1.13; format in
 * tests/fixtures/README.md) through optd_optim_step, building the
 * hyperparameters and the schedule only through optim.h's table
 * (optd_optim_lookup, optd_hparam_find + offsets, optd_sched_type_parse), and
 * compares after every step:
 *   - the parameters, within OPTIMIZERS.md's tolerance
 *     (float64: 1e-10*|want| + 1e-12, float32: 2e-5*|want| + 1e-6),
 *   - the scheduled lr, within 1e-12 relative, and the gradient norm;
 * and at the end the optimizer state under its state_dict names, with the
 * same tolerance, and that no buffer PyTorch lacks is kept.  A failure names
 * the case, the step, the index, got and want.  Each case is replayed twice:
 * through optd_optim_step, and through optd_grad_sumsq/optd_optim_plan/
 * optd_optim_apply/optd_optim_commit with the vector split in two ranges.
 *
 * A case with "groups" (parameter groups, API.md 1.1) is replayed through
 * optd_optim_step_groups and its split form, each group built from the
 * fixture's own hyperparameters, PATCHes applied to all groups (top-level
 * "hyperparameters") or to one ("groups").
 *
 * A separate test checks that the fixture set covers every optimizer of the
 * table in both dtypes, so an empty or truncated directory cannot pass.
 *
 * Run from the repository root (the Makefile does), or point
 * OPTD_FIXTURES_DIR at the directory of JSON files.  OPTD_FIXTURES_VERBOSE=1
 * prints, per case, how much of the tolerance the worst element used, the
 * largest distance in units in the last place (ulp) of the dtype and the
 * first step at which any value differs from PyTorch's at all.
 */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optd/optim.h"

#define MSG_MAX 1024

/* ---- the fixture directory ------------------------------------------------ */

static const char *fixtures_dir(void)
{
    const char *d = getenv("OPTD_FIXTURES_DIR");
    return (d && *d) ? d : "tests/fixtures/optim";
}

typedef struct name_list {
    char **names; /* owned, sorted file names ending in .json */
    size_t n;
} name_list_t;

static void name_list_free(name_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists dir's *.json files, sorted, so that loop index i names the same case
 * in the parent (which counts them) and in each forked test.  0 or -1. */
static int list_fixtures(const char *dir, name_list_t *out)
{
    out->names = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (out->n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = realloc(out->names, ncap * sizeof *nn);
            if (!nn)
                goto fail;
            out->names = nn;
            cap = ncap;
        }
        out->names[out->n] = strdup(e->d_name);
        if (!out->names[out->n])
            goto fail;
        out->n++;
    }
    closedir(d);
    if (out->n > 1)
        qsort(out->names, out->n, sizeof *out->names, cmp_str);
    return 0;
fail:
    closedir(d);
    name_list_free(out);
    return -1;
}

/* ---- small helpers -------------------------------------------------------- */

/* Formats a failure message into msg and returns -1. */
static int failf(char *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, MSG_MAX, fmt, ap);
    va_end(ap);
    return -1;
}

static void store(optd_dtype_t dt, void *buf, size_t i, double x)
{
    if (dt == OPTD_FLOAT32)
        ((float *)buf)[i] = (float)x; /* exact: fixtures hold float32 values */
    else
        ((double *)buf)[i] = x;
}

static double load(optd_dtype_t dt, const void *buf, size_t i)
{
    return dt == OPTD_FLOAT32 ? (double)((const float *)buf)[i] : ((const double *)buf)[i];
}

/* |got - want| as a fraction of OPTIMIZERS.md's tolerance: <= 1 passes. */
static double tol_ratio(optd_dtype_t dt, double got, double want)
{
    double rel = dt == OPTD_FLOAT32 ? 2e-5 : 1e-10;
    double abs_ = dt == OPTD_FLOAT32 ? 1e-6 : 1e-12;
    if (!isfinite(got))
        return INFINITY;
    return fabs(got - want) / (rel * fabs(want) + abs_);
}

/* Copies the JSON array a of n numbers into buf (dtype dt).  0 or -1. */
static int load_array(json_t *a, size_t n, optd_dtype_t dt, void *buf)
{
    if (!json_is_array(a) || json_array_size(a) != n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v))
            return -1;
        store(dt, buf, i, json_number_value(v));
    }
    return 0;
}

/* How close a replay came to PyTorch: for the README's claims. */
typedef struct closeness {
    double worst;         /* largest tol_ratio: <= 1 passes */
    uint64_t max_ulp;     /* largest distance in ulp of the dtype */
    uint64_t first_diff;  /* first step with any difference (0: none) */
} closeness_t;

/* Distance in ulp between two finite values of dtype dt (as doubles). */
static uint64_t ulp_distance(optd_dtype_t dt, double a, double b)
{
    if (dt == OPTD_FLOAT32) {
        float fa = (float)a, fb = (float)b;
        int32_t ia, ib;
        memcpy(&ia, &fa, sizeof ia);
        memcpy(&ib, &fb, sizeof ib);
        int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia; /* monotonic order */
        int64_t ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
        return (uint64_t)(oa > ob ? oa - ob : ob - oa);
    }
    int64_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    __int128 oa = ia < 0 ? (__int128)INT64_MIN - ia : ia;
    __int128 ob = ib < 0 ? (__int128)INT64_MIN - ib : ib;
    __int128 d = oa > ob ? oa - ob : ob - oa;
    return d > (__int128)UINT64_MAX ? UINT64_MAX : (uint64_t)d;
}

/* Compares buf (n of dt) with the JSON array want.  0 or -1 with a
 * message; c records how close the values came. */
static int compare_array(const char *cas, const char *what, uint64_t step, optd_dtype_t dt,
                         const void *buf, json_t *want, size_t n, closeness_t *c, char *msg)
{
    if (!json_is_array(want) || json_array_size(want) != n)
        return failf(msg, "%s: %s at step %llu: fixture array is not %zu numbers", cas, what,
                     (unsigned long long)step, n);
    for (size_t i = 0; i < n; i++) {
        double w = json_number_value(json_array_get(want, i));
        double g = load(dt, buf, i);
        double ratio = tol_ratio(dt, g, w);
        if (ratio > c->worst)
            c->worst = ratio;
        if (isfinite(g) && g != w) {
            uint64_t u = ulp_distance(dt, g, w);
            if (u > c->max_ulp)
                c->max_ulp = u;
            if (u > 0 && (c->first_diff == 0 || step < c->first_diff))
                c->first_diff = step;
        }
        if (!(ratio <= 1.0))
            return failf(msg, "%s: %s differ at step %llu, index %zu: got %.17g, want %.17g (diff %.3g)",
                         cas, what, (unsigned long long)step, i, g, w, fabs(g - w));
    }
    return 0;
}

/* Sets one hyperparameter through the table's offsets.  0 or -1. */
static int set_hparam(const char *cas, optd_optim_kind_t kind, optd_hparams_t *hp, const char *key,
                      json_t *v, char *msg)
{
    const optd_hparam_desc_t *d = optd_hparam_find(kind, key);
    if (!d)
        return failf(msg, "%s: optd does not know hyperparameter \"%s\" of %s", cas, key,
                     optd_optim_desc(kind)->name);
    char *base = (char *)hp + d->offset;
    switch (d->type) {
    case OPTD_HP_REAL: {
        if (!json_is_number(v))
            return failf(msg, "%s: hyperparameter %s is not a number", cas, key);
        double x = json_number_value(v);
        memcpy(base, &x, sizeof x);
        return 0;
    }
    case OPTD_HP_BOOL: {
        if (!json_is_boolean(v))
            return failf(msg, "%s: hyperparameter %s is not a boolean", cas, key);
        bool b = json_is_true(v);
        memcpy(base, &b, sizeof b);
        return 0;
    }
    case OPTD_HP_PAIR: {
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(json_array_get(v, 0)) ||
            !json_is_number(json_array_get(v, 1)))
            return failf(msg, "%s: hyperparameter %s is not a pair of numbers", cas, key);
        double p[2] = {json_number_value(json_array_get(v, 0)), json_number_value(json_array_get(v, 1))};
        memcpy(base, p, sizeof p);
        return 0;
    }
    }
    return failf(msg, "%s: hyperparameter %s has an unknown type in the table", cas, key);
}

static int set_hparams(const char *cas, optd_optim_kind_t kind, optd_hparams_t *hp, json_t *obj,
                       char *msg)
{
    if (!json_is_object(obj))
        return failf(msg, "%s: hyperparameters is not an object", cas);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (set_hparam(cas, kind, hp, key, v, msg) != 0)
            return -1;
    }
    return 0;
}

/* The table's default of d, as the fixture's JSON would write it. */
static bool default_matches(const optd_hparam_desc_t *d, json_t *v)
{
    switch (d->type) {
    case OPTD_HP_REAL:
        return json_is_number(v) && json_number_value(v) == d->def[0];
    case OPTD_HP_BOOL:
        return json_is_boolean(v) && (json_is_true(v) ? 1.0 : 0.0) == d->def[0];
    case OPTD_HP_PAIR:
        return json_is_array(v) && json_array_size(v) == 2 &&
               json_number_value(json_array_get(v, 0)) == d->def[0] &&
               json_number_value(json_array_get(v, 1)) == d->def[1];
    }
    return false;
}

static int get_int(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int get_real(json_t *obj, const char *key, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 0;
}

static int parse_schedule(const char *cas, json_t *js, optd_schedule_t *s, char *msg)
{
    memset(s, 0, sizeof *s);
    if (!json_is_object(js))
        return failf(msg, "%s: schedule is neither null nor an object", cas);
    const char *key;
    json_t *v;
    json_object_foreach(js, key, v) {
        if (strcmp(key, "type") && strcmp(key, "step_size") && strcmp(key, "gamma") &&
            strcmp(key, "t_max") && strcmp(key, "eta_min") && strcmp(key, "warmup_steps"))
            return failf(msg, "%s: unknown schedule field %s", cas, key);
    }
    json_t *type = json_object_get(js, "type");
    if (!json_is_string(type) || optd_sched_type_parse(json_string_value(type), &s->type) != 0)
        return failf(msg, "%s: optd does not parse schedule type %s", cas,
                     json_is_string(type) ? json_string_value(type) : "(missing)");
    if (get_int(js, "step_size", &s->step_size) || get_real(js, "gamma", &s->gamma) ||
        get_int(js, "t_max", &s->t_max) || get_real(js, "eta_min", &s->eta_min) ||
        get_int(js, "warmup_steps", &s->warmup_steps))
        return failf(msg, "%s: a schedule field has the wrong type", cas);
    optd_err_t err = {0};
    if (optd_schedule_validate(s, &err) != 0)
        return failf(msg, "%s: optd refuses the schedule: %s", cas, err.msg);
    return 0;
}

/* ---- one trajectory ----------------------------------------------------- */

/* How a step is applied: optd_optim_step, or the split form the daemon uses
 * to spread a large update over threads (sum of squares and apply over
 * disjoint ranges, here the upper half first, then plan and commit once). */
typedef enum step_mode { MODE_WHOLE = 0, MODE_SPLIT = 1 } step_mode_t;

/* do_step for a vector cut into groups. */
static int do_step_groups(step_mode_t mode, optd_optim_state_t *st, const optd_group_t *groups, size_t ng,
                          const optd_schedule_t *sched, double mgn, void *params, const void *grad,
                          optd_step_info_t *info, optd_err_t *err)
{
    if (mode == MODE_WHOLE)
        return optd_optim_step_groups(st, groups, ng, sched, mgn, params, grad, info, err);
    size_t n = st->size, h = n / 2;
    bool finite = true;
    double sumsq = optd_grad_sumsq(st->dtype, grad, h, n, &finite);
    sumsq += optd_grad_sumsq(st->dtype, grad, 0, h, &finite);
    if (!finite)
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient is not finite");
    optd_step_plan_t plans[8];
    if (ng > 8)
        return optd_err_set(err, OPTD_EINVAL, "this test replays at most 8 groups");
    int rc = optd_optim_plan_groups(st, groups, ng, sched, mgn, sumsq, plans, err);
    if (rc != 0)
        return rc;
    optd_step_fault_t fault;
    optd_step_seen_t seen;
    optd_step_seen_init(&seen);
    if (!optd_optim_check_groups(plans, groups, ng, st, params, grad, h, n, &fault, &seen) ||
        !optd_optim_check_groups(plans, groups, ng, st, params, grad, 0, h, &fault, &seen))
        return optd_optim_refuse(st, &plans[0], &fault, err);
    optd_optim_apply_groups(plans, groups, ng, st, params, grad, h, n, NULL);
    optd_optim_apply_groups(plans, groups, ng, st, params, grad, 0, h, NULL);
    optd_optim_commit_groups(st, plans, ng);
    info->lr = plans[0].lr;
    info->grad_norm = plans[0].grad_norm;
    return 0;
}

static int do_step(step_mode_t mode, optd_optim_state_t *st, const optd_hparams_t *hp,
                   const optd_schedule_t *sched, double mgn, void *params, const void *grad,
                   optd_step_info_t *info, optd_err_t *err)
{
    if (mode == MODE_WHOLE)
        return optd_optim_step(st, hp, sched, mgn, params, grad, info, err);
    size_t n = st->size, h = n / 2;
    bool finite = true;
    double sumsq = optd_grad_sumsq(st->dtype, grad, h, n, &finite);
    sumsq += optd_grad_sumsq(st->dtype, grad, 0, h, &finite);
    if (!finite)
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient is not finite");
    optd_step_plan_t plan;
    int rc = optd_optim_plan(st, hp, sched, mgn, sumsq, &plan, err);
    if (rc != 0)
        return rc;
    optd_step_fault_t fault;
    optd_step_seen_t s1, s2;
    optd_step_seen_init(&s1);
    optd_step_seen_init(&s2);
    if (plan.careful && (!optd_optim_check(&plan, st, params, grad, h, n, &fault, &s1) ||
                         !optd_optim_check(&plan, st, params, grad, 0, h, &fault, &s2)))
        return optd_optim_refuse(st, &plan, &fault, err);
    optd_step_seen_merge(&s1, &s2);
    optd_optim_apply(&plan, st, params, grad, h, n, plan.track ? &s1 : NULL);
    optd_optim_apply(&plan, st, params, grad, 0, h, plan.track ? &s1 : NULL);
    optd_optim_commit(st, &plan, plan.careful || plan.track ? &s1 : NULL);
    info->lr = plan.lr;
    info->grad_norm = plan.grad_norm;
    return 0;
}

typedef struct replay {
    json_t *doc;
    void *params;
    void *grad;
    optd_optim_state_t st;
    optd_group_t *groups; /* NULL: no groups */
    size_t n_groups;
} replay_t;

static void replay_free(replay_t *r)
{
    free(r->groups);
    optd_optim_state_free(&r->st);
    free(r->params);
    free(r->grad);
    json_decref(r->doc);
}

static int check_state(const char *cas, replay_t *r, json_t *state, size_t n, closeness_t *c,
                       char *msg)
{
    optd_dtype_t dt = r->st.dtype;
    const optd_optim_desc_t *desc = optd_optim_desc(r->st.kind);
    uint64_t step = r->st.step;
    if (!json_is_object(state))
        return failf(msg, "%s: state is not an object", cas);
    const char *key;
    json_t *v;
    json_object_foreach(state, key, v) {
        if (strcmp(key, "mu_product") == 0) {
            if (!desc->has_mu_product)
                return failf(msg, "%s: fixture has mu_product, optd's %s has none", cas, desc->name);
            /* Relative only: mu_product shrinks towards 0 (0.9^t), where
             * the absolute term would accept anything, yet it enters the
             * update as 1 - mu_product. */
            double w = json_number_value(v);
            double rel = dt == OPTD_FLOAT32 ? 2e-5 : 1e-10;
            if (!(fabs(r->st.mu_product - w) <= rel * fabs(w)))
                return failf(msg, "%s: state mu_product differs after step %llu: got %.17g, want %.17g",
                             cas, (unsigned long long)step, r->st.mu_product, w);
            continue;
        }
        int b = optd_buf_lookup(key);
        if (b < 0)
            return failf(msg, "%s: optd has no state buffer named %s", cas, key);
        if (!(desc->bufs & (1u << b)))
            return failf(msg, "%s: optd's table says %s keeps no %s", cas, desc->name, key);
        if (!r->st.buf[b])
            return failf(msg, "%s: optd keeps no %s after step %llu, PyTorch does", cas, key,
                         (unsigned long long)step);
        char what[64];
        snprintf(what, sizeof what, "state %s", key);
        if (compare_array(cas, what, step, dt, r->st.buf[b], v, n, c, msg) != 0)
            return -1;
    }
    if (desc->has_mu_product && !json_object_get(state, "mu_product"))
        return failf(msg, "%s: fixture lacks mu_product", cas);
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (r->st.buf[b] && !json_object_get(state, optd_buf_name((optd_buf_t)b)))
            return failf(msg, "%s: optd keeps %s after step %llu, PyTorch's state has none", cas,
                         optd_buf_name((optd_buf_t)b), (unsigned long long)step);
    }
    return 0;
}

/* Replays the fixture at path in mode.  0, or -1 with a message naming
 * case, step, index, got and want. */
static int replay_fixture(const char *path, const char *file, step_mode_t mode, char *msg)
{
    replay_t r;
    memset(&r, 0, sizeof r);
    json_error_t jerr;
    r.doc = json_load_file(path, 0, &jerr);
    if (!r.doc)
        return failf(msg, "%s: not JSON: %s (line %d)", path, jerr.text, jerr.line);

    int rc = -1;
    optd_err_t err = {0};
    json_t *doc = r.doc;
    const char *cas = json_string_value(json_object_get(doc, "name"));
    const char *opt = json_string_value(json_object_get(doc, "optimizer"));
    const char *dts = json_string_value(json_object_get(doc, "dtype"));
    json_t *jhp = json_object_get(doc, "hyperparameters");
    json_t *jsched = json_object_get(doc, "schedule");
    json_t *jmgn = json_object_get(doc, "max_grad_norm");
    json_t *jp0 = json_object_get(doc, "params0");
    json_t *jpatches = json_object_get(doc, "patches");
    json_t *jsteps = json_object_get(doc, "steps");
    json_t *jstate = json_object_get(doc, "state");
    if (!cas || !opt || !dts || !jhp || !jsched || !jmgn || !json_is_array(jp0) || !json_is_array(jsteps) ||
        !jstate) {
        failf(msg, "%s: a required field is missing or of the wrong type", file);
        goto out;
    }
    size_t flen = strlen(file);
    if (strlen(cas) + 5 != flen || strncmp(cas, file, flen - 5) != 0) {
        failf(msg, "%s: name \"%s\" is not the file name", file, cas);
        goto out;
    }

    optd_optim_kind_t kind;
    optd_dtype_t dt;
    if (optd_optim_lookup(opt, &kind, &err) != 0) {
        failf(msg, "%s: %s", cas, err.msg);
        goto out;
    }
    if (optd_dtype_parse(dts, &dt) != 0) {
        failf(msg, "%s: optd does not parse dtype %s", cas, dts);
        goto out;
    }
    const optd_optim_desc_t *desc = optd_optim_desc(kind);

    /* Every hyperparameter is listed, and the table knows each of them. */
    optd_hparams_t hp;
    optd_hparams_default(kind, &hp);
    if (json_object_size(jhp) != desc->n_hparams) {
        failf(msg, "%s: fixture lists %zu hyperparameters, optd's %s has %zu", cas, json_object_size(jhp),
              desc->name, desc->n_hparams);
        goto out;
    }
    /* A "<opt>-defaults-*" case holds API.md's defaults: the table must agree. */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s-defaults-", desc->name);
    if (strncmp(cas, prefix, strlen(prefix)) == 0) {
        for (size_t i = 0; i < desc->n_hparams; i++) {
            const optd_hparam_desc_t *d = &desc->hparams[i];
            if (!default_matches(d, json_object_get(jhp, d->name))) {
                failf(msg, "%s: optd's default for %s differs from API.md's (%.17g)", cas, d->name,
                      d->def[0]);
                goto out;
            }
        }
    }
    if (set_hparams(cas, kind, &hp, jhp, msg) != 0)
        goto out;
    if (optd_hparams_validate(kind, &hp, &err) != 0) {
        failf(msg, "%s: optd refuses the hyperparameters: %s", cas, err.msg);
        goto out;
    }

    json_t *jgroups = json_object_get(doc, "groups");
    if (jgroups) {
        r.n_groups = json_array_size(jgroups);
        if (!json_is_array(jgroups) || r.n_groups == 0 || !(r.groups = calloc(r.n_groups, sizeof *r.groups))) {
            failf(msg, "%s: groups is not a non-empty array", cas);
            goto out;
        }
        for (size_t g = 0; g < r.n_groups; g++) {
            json_t *jg = json_array_get(jgroups, g);
            r.groups[g].size = (size_t)json_integer_value(json_object_get(jg, "size"));
            optd_hparams_default(kind, &r.groups[g].hp);
            if (set_hparams(cas, kind, &r.groups[g].hp, json_object_get(jg, "hyperparameters"), msg) != 0)
                goto out;
        }
    }

    optd_schedule_t sched;
    const optd_schedule_t *sp = NULL;
    if (!json_is_null(jsched)) {
        if (parse_schedule(cas, jsched, &sched, msg) != 0)
            goto out;
        sp = &sched;
    }
    double mgn = 0.0;
    if (!json_is_null(jmgn)) {
        if (!json_is_number(jmgn)) {
            failf(msg, "%s: max_grad_norm is not a number", cas);
            goto out;
        }
        mgn = json_number_value(jmgn);
    }

    size_t n = json_array_size(jp0);
    size_t esz = optd_dtype_size(dt);
    r.params = malloc(n * esz);
    r.grad = malloc(n * esz);
    if (!r.params || !r.grad) {
        failf(msg, "%s: out of memory", cas);
        goto out;
    }
    if (load_array(jp0, n, dt, r.params) != 0) {
        failf(msg, "%s: params0 is not an array of numbers", cas);
        goto out;
    }
    if (optd_optim_state_init(&r.st, kind, dt, n, &hp, &err) != 0) {
        failf(msg, "%s: optd_optim_state_init: %s", cas, err.msg);
        goto out;
    }
    if (r.groups && (optd_groups_validate(kind, r.groups, r.n_groups, n, &err) != 0 ||
                     optd_optim_state_set_groups(&r.st, r.groups, r.n_groups, &err) != 0)) {
        failf(msg, "%s: optd refuses the groups: %s", cas, err.msg);
        goto out;
    }

    closeness_t close = {0};
    size_t nsteps = json_array_size(jsteps);
    for (size_t s = 0; s < nsteps; s++) {
        uint64_t k = (uint64_t)s + 1;
        /* PATCHes due before this step: the new values, the old state. */
        if (jpatches && json_is_array(jpatches)) {
            size_t pi;
            json_t *pt;
            json_array_foreach(jpatches, pi, pt) {
                json_int_t before = json_integer_value(json_object_get(pt, "before_step"));
                if ((uint64_t)before != k)
                    continue;
                json_t *jph = json_object_get(pt, "hyperparameters");
                if (jph && set_hparams(cas, kind, &hp, jph, msg) != 0)
                    goto out;
                for (size_t g = 0; g < r.n_groups; g++) {
                    json_t *jpg = json_object_get(json_array_get(json_object_get(pt, "groups"), g),
                                                  "hyperparameters");
                    if ((jph && set_hparams(cas, kind, &r.groups[g].hp, jph, msg) != 0) ||
                        (jpg && set_hparams(cas, kind, &r.groups[g].hp, jpg, msg) != 0))
                        goto out;
                }
                if (optd_hparams_validate(kind, &hp, &err) != 0 ||
                    (r.groups && optd_groups_validate(kind, r.groups, r.n_groups, n, &err) != 0)) {
                    failf(msg, "%s: optd refuses the patch before step %llu: %s", cas,
                          (unsigned long long)k, err.msg);
                    goto out;
                }
            }
        }
        json_t *js = json_array_get(jsteps, s);
        if (load_array(json_object_get(js, "grad"), n, dt, r.grad) != 0) {
            failf(msg, "%s: step %llu: grad is not %zu numbers", cas, (unsigned long long)k, n);
            goto out;
        }
        double sumsq = 0.0;
        for (size_t i = 0; i < n; i++) {
            double g = load(dt, r.grad, i);
            sumsq += g * g;
        }
        optd_step_info_t info = {0};
        if ((r.groups ? do_step_groups(mode, &r.st, r.groups, r.n_groups, sp, mgn, r.params, r.grad, &info, &err)
                      : do_step(mode, &r.st, &hp, sp, mgn, r.params, r.grad, &info, &err)) != 0) {
            failf(msg, "%s: step %llu: the step failed: %s", cas, (unsigned long long)k, err.msg);
            goto out;
        }
        if (r.st.step != k) {
            failf(msg, "%s: step count is %llu after step %llu", cas, (unsigned long long)r.st.step,
                  (unsigned long long)k);
            goto out;
        }
        double want_lr = json_number_value(json_object_get(js, "lr"));
        if (!(fabs(info.lr - want_lr) <= 1e-12 * fabs(want_lr))) {
            failf(msg, "%s: lr differs at step %llu: got %.17g, want %.17g", cas, (unsigned long long)k,
                  info.lr, want_lr);
            goto out;
        }
        double want_norm = sqrt(sumsq);
        if (!(fabs(info.grad_norm - want_norm) <= 1e-12 * want_norm)) {
            failf(msg, "%s: grad_norm differs at step %llu: got %.17g, want %.17g", cas,
                  (unsigned long long)k, info.grad_norm, want_norm);
            goto out;
        }
        if (compare_array(cas, "params", k, dt, r.params, json_object_get(js, "params"), n, &close,
                          msg) != 0)
            goto out;
    }
    if (check_state(cas, &r, jstate, n, &close, msg) != 0)
        goto out;
    /* How much of the tolerance the closest call used: a value near 1
     * would mean a fragile pass. */
    if (getenv("OPTD_FIXTURES_VERBOSE"))
        printf("%-40s %s worst |got - want| = %.3g of the tolerance, %llu ulp, first "
               "difference at step %llu\n", cas, mode == MODE_WHOLE ? "step " : "split", close.worst,
               (unsigned long long)close.max_ulp, (unsigned long long)close.first_diff);
    rc = 0;
out:
    replay_free(&r);
    return rc;
}

/* ---- the tests ------------------------------------------------------------ */

START_TEST(test_trajectory)
{
    name_list_t l;
    const char *dir = fixtures_dir();
    ck_assert_msg(list_fixtures(dir, &l) == 0, "cannot list %s", dir);
    ck_assert_msg((size_t)_i < l.n, "fixture %d vanished from %s", _i, dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, l.names[_i]);
    char msg[MSG_MAX] = "";
    int rc = replay_fixture(path, l.names[_i], MODE_WHOLE, msg);
    if (rc == 0) {
        rc = replay_fixture(path, l.names[_i], MODE_SPLIT, msg);
        if (rc != 0) {
            size_t len = strlen(msg);
            snprintf(msg + len, MSG_MAX - len, " (plan/apply over two ranges)");
        }
    }
    name_list_free(&l);
    ck_assert_msg(rc == 0, "%s", msg);
}
END_TEST

/* The set covers every optimizer of the table in both dtypes, so an empty or
 * partial fixture directory fails instead of passing on nothing. */
START_TEST(test_coverage)
{
    name_list_t l;
    const char *dir = fixtures_dir();
    ck_assert_msg(list_fixtures(dir, &l) == 0, "cannot list %s", dir);
    bool seen[OPTD_OPTIM_COUNT][2] = {{false}};
    for (size_t i = 0; i < l.n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, l.names[i]);
        json_error_t jerr;
        json_t *doc = json_load_file(path, 0, &jerr);
        ck_assert_msg(doc != NULL, "%s: not JSON: %s", path, jerr.text);
        optd_optim_kind_t kind;
        optd_dtype_t dt;
        const char *opt = json_string_value(json_object_get(doc, "optimizer"));
        const char *dts = json_string_value(json_object_get(doc, "dtype"));
        ck_assert_msg(opt && optd_optim_lookup(opt, &kind, NULL) == 0, "%s: unknown optimizer", path);
        ck_assert_msg(dts && optd_dtype_parse(dts, &dt) == 0, "%s: unknown dtype", path);
        ck_assert_msg(json_array_size(json_object_get(doc, "steps")) >= 200, "%s: fewer than 200 steps",
                      path);
        seen[kind][dt == OPTD_FLOAT64] = true;
        json_decref(doc);
    }
    size_t count = l.n;
    name_list_free(&l);
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++)
            ck_assert_msg(seen[k][d], "no %s fixture for %s in %s (%zu files)", d ? "float64" : "float32",
                          optd_optim_desc((optd_optim_kind_t)k)->name, dir, count);
    }
}
END_TEST

int main(void)
{
    name_list_t l;
    if (list_fixtures(fixtures_dir(), &l) != 0) {
        fprintf(stderr, "test_fixtures: cannot list %s (run from the repository root or set "
                        "OPTD_FIXTURES_DIR)\n", fixtures_dir());
        return EXIT_FAILURE;
    }
    int n = (int)l.n;
    name_list_free(&l);

    Suite *s = suite_create("fixtures");
    TCase *cov = tcase_create("coverage");
    tcase_add_test(cov, test_coverage);
    suite_add_tcase(s, cov);
    TCase *tc = tcase_create("trajectories");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_trajectory, 0, n);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
