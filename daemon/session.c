/* session.c: one named optimizer session: validation, creation, the update
 * with its history, configuration changes and the copies taken for encoding.
 *
 * Every field below `mu` in optd_session_t is read and written under the
 * session's mutex.  An update and the copy of its result happen under one
 * hold of the mutex, so no reader sees a torn update and no update is lost.
 * A step's input is journaled (the durability hook) before it is applied,
 * under the mutex: with --sync always nobody may observe a state that is
 * not yet on disk, and a 507 comes before anything changed.  Other changes
 * (config, create, import) call the hook after the change, still under the
 * mutex, and undo it if the hook fails. */
#include "session_internal.h"

#include "parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t optd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool name_char(char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '.' || c == '_' || c == '-');
}

bool optd_session_name_valid(const char *name)
{
    if (!name || !name[0])
        return false;
    size_t i = 0;
    for (; name[i]; i++)
        if (i >= OPTD_NAME_MAX || !name_char(name[i], i == 0))
            return false;
    return true;
}

/* ---- configs and labels ---------------------------------------------------- */

void optd_session_config_free_labels(optd_session_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_labels; i++) {
        free(cfg->labels[i].key);
        free(cfg->labels[i].value);
    }
    free(cfg->labels);
    cfg->labels = NULL;
    cfg->n_labels = 0;
}

void optd_session_config_free(optd_session_config_t *cfg)
{
    if (!cfg)
        return;
    optd_session_config_free_labels(cfg);
    free(cfg->groups);
    cfg->groups = NULL;
    cfg->n_groups = 0;
}

int optd_session_config_set_groups(optd_session_config_t *cfg, const size_t *sizes, size_t n,
                                   optd_err_t *err)
{
    optd_group_t *g = NULL;
    if (n > 0 && !(g = malloc(n * sizeof *g)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu groups", n);
    for (size_t i = 0; i < n; i++) {
        g[i].size = sizes[i];
        g[i].hp = cfg->hp;
    }
    free(cfg->groups);
    cfg->groups = g;
    cfg->n_groups = n;
    return 0;
}

int optd_session_config_copy(optd_session_config_t *dst, const optd_session_config_t *src,
                             optd_err_t *err)
{
    *dst = *src;
    dst->labels = NULL;
    dst->n_labels = 0;
    dst->groups = NULL;
    dst->n_groups = 0;
    if (src->n_groups > 0) {
        dst->groups = malloc(src->n_groups * sizeof *dst->groups);
        if (!dst->groups)
            return optd_err_set(err, OPTD_ENOMEM, "out of memory copying groups");
        memcpy(dst->groups, src->groups, src->n_groups * sizeof *dst->groups);
        dst->n_groups = src->n_groups;
    }
    if (src->n_labels == 0)
        return 0;
    dst->labels = calloc(src->n_labels, sizeof *dst->labels);
    if (!dst->labels)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory copying labels");
    for (size_t i = 0; i < src->n_labels; i++) {
        dst->labels[i].key = strdup(src->labels[i].key);
        dst->labels[i].value = strdup(src->labels[i].value);
        dst->n_labels = i + 1;
        if (!dst->labels[i].key || !dst->labels[i].value) {
            optd_session_config_free(dst);
            return optd_err_set(err, OPTD_ENOMEM, "out of memory copying labels");
        }
    }
    return 0;
}

int optd_session_config_add_label(optd_session_config_t *cfg, const char *key, const char *value,
                                  optd_err_t *err)
{
    size_t klen = strlen(key), vlen = strlen(value);
    if (klen == 0 || klen > OPTD_LABEL_KEY_MAX)
        return optd_err_set(err, OPTD_EINVAL, "labels: a key must be 1 to %d characters long",
                            OPTD_LABEL_KEY_MAX);
    if (vlen > OPTD_LABEL_VALUE_MAX)
        return optd_err_set(err, OPTD_EINVAL,
                            "labels: the value of '%s' must be at most %d characters long", key,
                            OPTD_LABEL_VALUE_MAX);
    char *v = strdup(value);
    if (!v)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory storing a label");
    for (size_t i = 0; i < cfg->n_labels; i++) {
        if (strcmp(cfg->labels[i].key, key) == 0) {
            free(cfg->labels[i].value);
            cfg->labels[i].value = v;
            return 0;
        }
    }
    if (cfg->n_labels >= OPTD_LABELS_MAX) {
        free(v);
        return optd_err_set(err, OPTD_EINVAL, "labels: at most %d labels are allowed",
                            OPTD_LABELS_MAX);
    }
    char *k = strdup(key);
    optd_label_t *grown = realloc(cfg->labels, (cfg->n_labels + 1) * sizeof *grown);
    if (!k || !grown) {
        free(k);
        free(v);
        if (grown)
            cfg->labels = grown;
        return optd_err_set(err, OPTD_ENOMEM, "out of memory storing a label");
    }
    cfg->labels = grown;
    cfg->labels[cfg->n_labels].key = k;
    cfg->labels[cfg->n_labels].value = v;
    cfg->n_labels++;
    return 0;
}

/* ttl_seconds * 1000 must not overflow when expiry is computed. */
#define TTL_MAX ((int64_t)1 << 40)

int optd_session_config_validate(const optd_session_config_t *cfg, optd_err_t *err)
{
    if ((unsigned)cfg->kind >= OPTD_OPTIM_COUNT)
        return optd_err_set(err, OPTD_EINVAL, "optimizer: unknown optimizer");
    if (cfg->dtype != OPTD_FLOAT32 && cfg->dtype != OPTD_FLOAT64)
        return optd_err_set(err, OPTD_EINVAL, "dtype: must be \"float32\" or \"float64\"");
    int rc = optd_hparams_validate(cfg->kind, &cfg->hp, err);
    if (rc)
        return rc;
    if (cfg->has_schedule && (rc = optd_schedule_validate(&cfg->schedule, err)))
        return rc;
    if (!isfinite(cfg->max_grad_norm) || cfg->max_grad_norm < 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "max_grad_norm: must be a finite number >= 0 (0 turns clipping off)");
    if (cfg->n_labels > OPTD_LABELS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "labels: at most %d labels are allowed",
                            OPTD_LABELS_MAX);
    if (cfg->n_labels > 0 && !cfg->labels)
        return optd_err_set(err, OPTD_EINVAL, "labels: missing");
    for (size_t i = 0; i < cfg->n_labels; i++) {
        const optd_label_t *l = &cfg->labels[i];
        if (!l->key || !l->value)
            return optd_err_set(err, OPTD_EINVAL, "labels: missing key or value");
        size_t klen = strlen(l->key);
        if (klen == 0 || klen > OPTD_LABEL_KEY_MAX)
            return optd_err_set(err, OPTD_EINVAL, "labels: a key must be 1 to %d characters long",
                                OPTD_LABEL_KEY_MAX);
        if (strlen(l->value) > OPTD_LABEL_VALUE_MAX)
            return optd_err_set(err, OPTD_EINVAL,
                                "labels: the value of '%s' must be at most %d characters long",
                                l->key, OPTD_LABEL_VALUE_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->labels[j].key, l->key) == 0)
                return optd_err_set(err, OPTD_EINVAL, "labels: key '%s' appears twice", l->key);
    }
    if (cfg->n_groups > OPTD_GROUPS_MAX || (cfg->n_groups > 0 && !cfg->groups))
        return optd_err_set(err, OPTD_EINVAL, "groups: at most %d groups are allowed", OPTD_GROUPS_MAX);
    for (size_t g = 0; g < cfg->n_groups; g++) {
        optd_err_t e = {0};
        if (optd_hparams_validate(cfg->kind, &cfg->groups[g].hp, &e))
            return optd_err_set(err, OPTD_EINVAL, "groups[%zu].%s", g, e.msg);
    }
    if (cfg->aggregate.workers != 0 && (rc = optd_aggregate_validate(&cfg->aggregate, err)))
        return rc;
    if (cfg->row_size > 1 && cfg->n_groups > 0)
        return optd_err_set(err, OPTD_EINVAL, "groups: a session with row_size > 1 takes no groups");
    if (cfg->ttl_seconds < 0 || cfg->ttl_seconds > TTL_MAX)
        return optd_err_set(err, OPTD_EINVAL,
                            "ttl_seconds: must be between 0 and %lld (0 or null: no expiry)",
                            (long long)TTL_MAX);
    return 0;
}

/* ---- life cycle -------------------------------------------------------------- */

/* An empty session with everything but the data set up. */
static optd_session_t *session_alloc(const char *name, size_t history_cap)
{
    optd_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    /* Adaptive: a step holds the lock for a microsecond or two, and a
     * second worker stepping the same session spins that long instead of
     * sleeping in the kernel and being woken (a context switch each way). */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    int rc = pthread_mutex_init(&s->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    if (rc != 0) {
        free(s);
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    atomic_init(&s->refs, 1);
    atomic_init(&s->accessed_ms, optd_now_ms());
    s->history_cap = history_cap;
    s->version = 1; /* saved_version 0: a new session is dirty */
    return s;
}

static void session_destroy(optd_session_t *s)
{
    optd_session_drop_round_locked(s, OPTD_ENOTFOUND, "the session is gone");
    optd_worker_steps_free(&s->worker_steps);
    if (s->mem && s->charged)
        s->mem->unreserve(s->mem->ctx, s->charged);
    optd_session_config_free(&s->cfg);
    free(s->params);
    optd_optim_state_free(&s->st);
    free(s->history);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int optd_session_create(const char *name, const optd_session_config_t *cfg, size_t size,
                        const void *params, size_t history_cap, optd_session_t **out,
                        optd_err_t *err)
{
    *out = NULL;
    if (!optd_session_name_valid(name))
        return optd_err_set(err, OPTD_EINVAL,
                            "name: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
    int rc = optd_session_config_validate(cfg, err);
    if (rc)
        return rc;
    if (size == 0)
        return optd_err_set(err, OPTD_EINVAL, "size: a session needs at least one parameter");
    size_t esz = optd_dtype_size(cfg->dtype);
    if (size > SIZE_MAX / esz)
        return optd_err_set(err, OPTD_EINVAL, "size: too large");
    if (params && !optd_all_finite(cfg->dtype, params, size))
        return optd_err_set(err, OPTD_ENONFINITE, "params: every value must be finite");
    if (cfg->n_groups > 0 && (rc = optd_groups_validate(cfg->kind, cfg->groups, cfg->n_groups, size, err)))
        return rc;
    if (size % optd_session_row_size(cfg) != 0)
        return optd_err_set(err, OPTD_EINVAL, "size: %zu is not a multiple of row_size (%zu)", size,
                            optd_session_row_size(cfg));

    optd_session_t *s = session_alloc(name, history_cap);
    if (!s)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory creating session '%s'", name);
    s->size = size;
    s->params = params ? malloc(size * esz) : calloc(size, esz);
    if (!s->params) {
        session_destroy(s);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu parameters", size);
    }
    if (params)
        memcpy(s->params, params, size * esz);
    if ((rc = optd_session_config_copy(&s->cfg, cfg, err)) ||
        (rc = optd_optim_state_init(&s->st, cfg->kind, cfg->dtype, size, &cfg->hp, err)) ||
        (rc = optd_optim_state_set_groups(&s->st, cfg->groups, cfg->n_groups, err))) {
        session_destroy(s);
        return rc;
    }
    s->created_ms = s->updated_ms = optd_now_ms();
    *out = s;
    return 0;
}

void optd_session_image_free(optd_session_image_t *img)
{
    if (!img)
        return;
    optd_session_config_free(&img->cfg);
    optd_worker_steps_free(&img->worker_steps);
    free(img->params);
    img->params = NULL;
    optd_optim_state_free(&img->st);
    free(img->history);
    img->history = NULL;
    img->n_history = 0;
}

/* Checks that an image (from a client or a file) is whole and consistent. */
static int image_validate(const optd_session_image_t *img, optd_err_t *err)
{
    if (!optd_session_name_valid(img->name))
        return optd_err_set(err, OPTD_EINVAL,
                            "name: must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$");
    int rc = optd_session_config_validate(&img->cfg, err);
    if (rc)
        return rc;
    if (img->size == 0 || !img->params)
        return optd_err_set(err, OPTD_EINVAL, "params: a session needs at least one parameter");
    if (img->size % optd_session_row_size(&img->cfg) != 0)
        return optd_err_set(err, OPTD_EINVAL, "size: %zu is not a multiple of row_size (%zu)",
                            img->size, optd_session_row_size(&img->cfg));
    if (img->st.kind != img->cfg.kind || img->st.dtype != img->cfg.dtype ||
        img->st.size != img->size)
        return optd_err_set(err, OPTD_EINVAL,
                            "state: does not match the optimizer, dtype or size of the session");
    if (!optd_all_finite(img->cfg.dtype, img->params, img->size))
        return optd_err_set(err, OPTD_ENONFINITE, "params: every value must be finite");
    if ((rc = optd_optim_state_validate(&img->st, err)))
        return rc;
    if (img->cfg.n_groups > 0 &&
        (rc = optd_groups_validate(img->cfg.kind, img->cfg.groups, img->cfg.n_groups, img->size, err)))
        return rc;
    if (img->st.n_groups != img->cfg.n_groups)
        return optd_err_set(err, OPTD_EINVAL, "state: holds %zu groups, the session %zu", img->st.n_groups,
                            img->cfg.n_groups);
    for (size_t g = 0; g < img->st.n_groups; g++) {
        if (!isfinite(img->st.groups[g].mu_product))
            return optd_err_set(err, OPTD_ENONFINITE, "state.mu_product[%zu]: must be finite", g);
        if (img->st.groups[g].momentum_started && !img->st.buf[OPTD_BUF_MOMENTUM_BUFFER])
            return optd_err_set(err, OPTD_EINVAL, "state: group %zu has momentum but no momentum_buffer", g);
    }
    if (img->n_history > 0 && !img->history)
        return optd_err_set(err, OPTD_EINVAL, "history: missing");
    const optd_loss_summary_t *ls = &img->loss;
    if (ls->has && (!isfinite(ls->last) || !isfinite(ls->best) || ls->last_step > img->st.step ||
                    ls->best_step > img->st.step || ls->last < ls->best))
        return optd_err_set(err, OPTD_EINVAL,
                            "loss: finite values with last >= best and steps no later than the "
                            "session's step");
    return 0;
}

int optd_session_from_image_take(optd_session_image_t *img, size_t history_cap,
                                 optd_session_t **out, optd_err_t *err)
{
    *out = NULL;
    int rc;
    /* An image from a client or an older file may lack the groups' own
     * state: derive it from the buffers. */
    if (img->st.n_groups != img->cfg.n_groups && img->st.size == img->size &&
        optd_groups_validate(img->cfg.kind, img->cfg.groups, img->cfg.n_groups, img->size, NULL) == 0 &&
        (rc = optd_optim_state_set_groups(&img->st, img->cfg.groups, img->cfg.n_groups, err)))
        return rc;
    rc = image_validate(img, err);
    if (rc)
        return rc;
    optd_session_t *s = session_alloc(img->name, history_cap);
    if (!s)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory creating session '%s'", img->name);

    /* Keep only the newest history_cap entries. */
    size_t keep = img->n_history < history_cap ? img->n_history : history_cap;
    if (keep > 0) {
        s->history = malloc(keep * sizeof *s->history);
        if (!s->history) {
            session_destroy(s);
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for the history");
        }
        memcpy(s->history, img->history + (img->n_history - keep), keep * sizeof *s->history);
        s->history_alloc = s->history_len = keep;
    }

    s->cfg = img->cfg;
    img->cfg.labels = NULL;
    img->cfg.n_labels = 0;
    img->cfg.groups = NULL;
    img->cfg.n_groups = 0;
    s->size = img->size;
    s->params = img->params;
    img->params = NULL;
    s->st = img->st;
    memset(&img->st, 0, sizeof img->st);
    s->created_ms = img->created_ms;
    s->updated_ms = img->updated_ms;
    s->loss = img->loss;
    s->worker_steps = img->worker_steps;
    memset(&img->worker_steps, 0, sizeof img->worker_steps);
    free(img->history);
    img->history = NULL;
    img->n_history = 0;
    *out = s;
    return 0;
}

void optd_session_retain(optd_session_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void optd_session_release(optd_session_t *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        session_destroy(s);
}

bool optd_session_is_deleted(optd_session_t *s)
{
    return __atomic_load_n(&s->deleted, __ATOMIC_ACQUIRE);
}

void optd_session_touch(optd_session_t *s)
{
    atomic_store_explicit(&s->accessed_ms, optd_now_ms(), memory_order_relaxed);
}

/* ---- copies ------------------------------------------------------------------ */

int optd_session_copy_descriptor(optd_session_t *s, optd_session_desc_t *d, optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = optd_session_config_copy(&d->cfg, &s->cfg, err);
    d->size = s->size;
    d->step = s->st.step;
    d->created_ms = s->created_ms;
    d->updated_ms = s->updated_ms;
    d->loss = s->loss;
    if (!rc)
        rc = optd_session_round_view_locked(s, d, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void optd_session_desc_free(optd_session_desc_t *d)
{
    optd_session_config_free(&d->cfg);
    free(d->round_workers);
    d->round_workers = NULL;
    d->round_n = 0;
}

void optd_loss_summary_add(optd_loss_summary_t *ls, uint64_t step, double loss)
{
    if (!ls->has || loss < ls->best) {
        ls->best = loss;
        ls->best_step = step;
    }
    ls->last = loss;
    ls->last_step = step;
    ls->has = true;
}

static const optd_history_entry_t *history_at(const optd_session_t *s, size_t i)
{
    return &s->history[(s->history_head + i) % s->history_alloc];
}

int optd_session_copy_image_locked(optd_session_t *s, optd_session_image_t *img, optd_err_t *err)
{
    memset(img, 0, sizeof *img);
    memcpy(img->name, s->name, sizeof img->name);
    size_t bytes = s->size * optd_dtype_size(s->cfg.dtype);
    int rc = optd_session_config_copy(&img->cfg, &s->cfg, err);
    if (rc)
        return rc;
    img->size = s->size;
    img->params = malloc(bytes);
    if (!img->params)
        goto nomem;
    memcpy(img->params, s->params, bytes);
    if ((rc = optd_optim_state_copy(&img->st, &s->st, err))) {
        optd_session_image_free(img);
        return rc;
    }
    img->created_ms = s->created_ms;
    img->updated_ms = s->updated_ms;
    img->loss = s->loss;
    if ((rc = optd_worker_steps_copy(&img->worker_steps, &s->worker_steps, err))) {
        optd_session_image_free(img);
        return rc;
    }
    if (s->history_len > 0) {
        img->history = malloc(s->history_len * sizeof *img->history);
        if (!img->history)
            goto nomem;
        for (size_t i = 0; i < s->history_len; i++)
            img->history[i] = *history_at(s, i);
        img->n_history = s->history_len;
    }
    return 0;
nomem:
    optd_session_image_free(img);
    return optd_err_set(err, OPTD_ENOMEM, "out of memory copying session '%s'", s->name);
}

int optd_session_config_image_locked(optd_session_t *s, optd_session_image_t *img, optd_err_t *err)
{
    memset(img, 0, sizeof *img);
    memcpy(img->name, s->name, sizeof img->name);
    int rc = optd_session_config_copy(&img->cfg, &s->cfg, err);
    if (rc)
        return rc;
    img->size = s->size;
    img->st.kind = s->cfg.kind;
    img->st.dtype = s->cfg.dtype;
    img->st.size = s->size;
    img->st.step = s->st.step;
    img->st.mu_product = s->st.mu_product;
    img->created_ms = s->created_ms;
    img->updated_ms = s->updated_ms;
    img->loss = s->loss;
    return 0;
}

int optd_session_copy_image(optd_session_t *s, optd_session_image_t *img, optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = optd_session_copy_image_locked(s, img, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t optd_session_copy_params(optd_session_t *s, void *out)
{
    pthread_mutex_lock(&s->mu);
    memcpy(out, s->params, s->size * optd_dtype_size(s->cfg.dtype));
    uint64_t step = s->st.step;
    pthread_mutex_unlock(&s->mu);
    return step;
}

int optd_session_copy_history(optd_session_t *s, uint64_t after_step, size_t limit,
                              optd_history_entry_t **out, size_t *n, optd_err_t *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    /* Steps grow along the ring, so the entries after after_step are a tail. */
    size_t first = s->history_len;
    while (first > 0 && history_at(s, first - 1)->step > after_step)
        first--;
    size_t count = s->history_len - first;
    if (limit > 0 && count > limit) {
        first += count - limit;
        count = limit;
    }
    if (count > 0) {
        optd_history_entry_t *h = malloc(count * sizeof *h);
        if (!h) {
            pthread_mutex_unlock(&s->mu);
            return optd_err_set(err, OPTD_ENOMEM, "out of memory copying the history");
        }
        for (size_t i = 0; i < count; i++)
            h[i] = *history_at(s, first + i);
        *out = h;
        *n = count;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- the update ---------------------------------------------------------------- */

/* Makes room for one more history entry without losing any, growing the
 * ring geometrically up to history_cap.  Done before the update so a failed
 * allocation changes nothing.  With s->mu held. */
static int history_reserve(optd_session_t *s, optd_err_t *err)
{
    if (s->history_len < s->history_alloc || s->history_alloc >= s->history_cap)
        return 0;
    size_t alloc = s->history_alloc ? s->history_alloc * 2 : 4;
    if (alloc > s->history_cap)
        alloc = s->history_cap;
    optd_history_entry_t *h = malloc(alloc * sizeof *h);
    if (!h)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory growing the history");
    for (size_t i = 0; i < s->history_len; i++)
        h[i] = *history_at(s, i);
    free(s->history);
    s->history = h;
    s->history_alloc = alloc;
    s->history_head = 0;
    return 0;
}

static void history_push(optd_session_t *s, const optd_history_entry_t *e)
{
    if (s->history_alloc == 0)
        return;
    if (s->history_len < s->history_alloc) {
        s->history[(s->history_head + s->history_len) % s->history_alloc] = *e;
        s->history_len++;
    } else {
        s->history[s->history_head] = *e;
        s->history_head = (s->history_head + 1) % s->history_alloc;
    }
}

/* With s->mu held and the input checked: the update, its history entry
 * and the bookkeeping, at time now.  Changes nothing on error. */
static int apply_locked(optd_session_t *s, struct optd_pool *pool, const optd_step_input_t *in,
                        int64_t now, optd_err_t *err)
{
    const void *grad = in->grad;
    const double *loss = in->loss;
    optd_step_info_t info;
    /* The workers' last steps are recorded before the update, which
     * changes nothing on error: the table is then put back. */
    optd_worker_steps_t saved = {0};
    int rc;
    if (in->n_workers) {
        if ((rc = optd_worker_steps_copy(&saved, &s->worker_steps, err)))
            return rc;
        size_t keep = optd_worker_steps_keep(s->cfg.aggregate.workers);
        for (size_t i = 0; i < in->n_workers && !rc; i++)
            rc = optd_worker_steps_set(&s->worker_steps, in->workers[i].worker, in->workers[i].step, keep, err);
        if (rc) {
            optd_worker_steps_free(&s->worker_steps);
            s->worker_steps = saved;
            return rc;
        }
    }
    const optd_schedule_t *sched = s->cfg.has_schedule ? &s->cfg.schedule : NULL;
    rc = in->rows ? optd_optim_step_rows(&s->st, &s->cfg.hp, sched, s->cfg.max_grad_norm,
                                         optd_session_row_size(&s->cfg), s->params, in->rows, in->n_rows,
                                         grad, &info, err)
                  : optd_parallel_step_groups(pool, &s->st, &s->cfg.hp, s->cfg.groups, s->cfg.n_groups,
                                              sched, s->cfg.max_grad_norm, s->params, grad, &info, err);
    if (rc) {
        if (in->n_workers) {
            optd_worker_steps_free(&s->worker_steps);
            s->worker_steps = saved;
        }
        return rc;
    }
    optd_worker_steps_free(&saved);
    optd_history_entry_t e = {
        .step = s->st.step,
        .lr = info.lr,
        .grad_norm = info.grad_norm,
        .loss = loss ? *loss : 0.0,
        .has_loss = loss != NULL,
        .time_ms = now,
        .contributions = (uint32_t)in->n_workers,
        .rows = in->rows ? in->n_rows : 0,
    };
    history_push(s, &e);
    if (loss)
        optd_loss_summary_add(&s->loss, s->st.step, *loss);
    s->updated_ms = now;
    s->version++;
    return 0;
}

/* With s->mu held: the values of rows[0, n_rows) (each below the number of
 * rows), in the order listed, into out. */
static void copy_rows_locked(const optd_session_t *s, const uint64_t *rows, size_t n_rows, void *out)
{
    size_t rb = optd_session_row_size(&s->cfg) * optd_dtype_size(s->cfg.dtype);
    for (size_t i = 0; i < n_rows; i++)
        memcpy((char *)out + i * rb, (const char *)s->params + (size_t)rows[i] * rb, rb);
}

/* With s->mu held: what must hold before a step is journaled, the
 * session being at step `at` by then (a batch's later steps on a session
 * are checked against the step its earlier ones lead to). */
static int step_check_locked(optd_session_t *s, const optd_step_input_t *in, uint64_t at,
                             uint64_t *step_out, optd_err_t *err)
{
    if (s->deleted)
        return optd_err_set(err, OPTD_ENOTFOUND, "session '%s' was deleted", s->name);
    if (in->expect_step && *in->expect_step != at) {
        if (step_out)
            *step_out = at;
        return optd_err_set(err, OPTD_ESTEP, "expected step %llu but the session is at step %llu",
                            (unsigned long long)*in->expect_step, (unsigned long long)at);
    }
    if (in->loss && !isfinite(*in->loss))
        return optd_err_set(err, OPTD_EINVAL, "loss: must be a finite number");
    /* A rows step that cannot run is refused before it is journaled. */
    int rc;
    if (in->rows && (rc = optd_optim_rows_supported(s->cfg.kind, &s->cfg.hp, s->cfg.n_groups, err)))
        return rc;
    size_t n_table = s->size / optd_session_row_size(&s->cfg);
    if (in->rows && in->n_rows == 0)
        return optd_err_set(err, OPTD_EINVAL, "rows: a rows step lists at least one row");
    for (size_t i = 0; in->rows && i < in->n_rows; i++)
        if (in->rows[i] >= n_table)
            return optd_err_set(err, OPTD_EINVAL, "rows[%zu] is %llu; the session has %zu rows (0 to %zu)",
                                i, (unsigned long long)in->rows[i], n_table, n_table - 1);
    return 0;
}

/* A plain or batched step on a session that aggregates workers' rounds:
 * refused before anything else, whatever its step. */
static int aggregating_refusal(const optd_session_t *s, optd_err_t *err)
{
    return optd_err_set(err, OPTD_EINVAL,
                        "session '%s' aggregates the gradients of %u workers: a step is one worker's "
                        "contribution to .../step, with 'worker' and 'step' (or the headers Optd-Worker "
                        "and Optd-Expect-Step), never a plain or batched step",
                        s->name, s->cfg.aggregate.workers);
}

/* The record that journals step input in, applying at step `at`, at time
 * now (what replay gets back: single and batch steps alike). */
static optd_step_record_t step_record(const optd_session_t *s, const optd_step_input_t *in,
                                      uint64_t at, int64_t now)
{
    return (optd_step_record_t){
        .name = s->name, .step = at, .dtype = s->cfg.dtype, .size = s->size,
        .grad = in->grad, .rows = in->rows, .n_rows = in->n_rows,
        .row_size = optd_session_row_size(&s->cfg),
        .has_loss = in->loss != NULL, .loss = in->loss ? *in->loss : 0.0,
        .time_ms = now, .n_workers = in->n_workers, .workers = in->workers,
    };
}

int optd_session_apply_locked(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_step_input_t *in,
                              optd_err_t *err)
{
    int rc = history_reserve(s, err);
    if (rc)
        return rc;
    int64_t now = in->time_ms ? in->time_ms : optd_now_ms();
    const optd_durability_t *dur = ctx ? ctx->dur : NULL;
    if (dur && dur->step) {
        /* The input goes to the journal first (with --sync always it is
         * durable when this returns); the mutex stays held, so no other
         * request may observe a state that is not yet on disk. */
        optd_step_record_t rec = step_record(s, in, s->st.step, now);
        uint64_t lsn;
        if ((rc = dur->step(dur->ctx, s, &rec, &lsn, err)))
            return rc;
        if (lsn) /* 0: not journaled (interval mode); the next snapshot covers it */
            s->lsn = lsn;
    }
    rc = apply_locked(s, ctx ? ctx->pool : NULL, in, now, err);
    if (rc && rc != OPTD_ENONFINITE && rc != OPTD_EINVAL && dur && dur->commit) {
        /* Refused for a reason replay would not meet (out of memory): the
         * journal must not hold a step that did not happen, so the
         * unchanged session is journaled whole after it. */
        optd_err_t ignored;
        dur->commit(dur->ctx, s, &ignored);
    }
    if (!rc)
        optd_session_wake_step_locked(s);
    return rc;
}

int optd_session_apply(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_step_input_t *in,
                       uint64_t *step_out, void *params_out, optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    /* Refused before anything else: it is no plain step, whatever its step. */
    int rc = s->cfg.aggregate.workers && !in->n_workers && !s->deleted
                 ? aggregating_refusal(s, err)
                 : step_check_locked(s, in, s->st.step, step_out, err);
    if (rc)
        goto out;
    if ((rc = optd_session_apply_locked(s, ctx, in, err)))
        goto out;
    if (step_out)
        *step_out = s->st.step;
    if (params_out && in->rows)
        copy_rows_locked(s, in->rows, in->n_rows, params_out);
    else if (params_out)
        memcpy(params_out, s->params, s->size * optd_dtype_size(s->cfg.dtype));
out:
    pthread_mutex_unlock(&s->mu);
    optd_session_touch(s);
    return rc;
}

uint64_t optd_session_copy_rows(optd_session_t *s, const uint64_t *rows, size_t n_rows, void *out)
{
    pthread_mutex_lock(&s->mu);
    copy_rows_locked(s, rows, n_rows, out);
    uint64_t step = s->st.step;
    pthread_mutex_unlock(&s->mu);
    optd_session_touch(s);
    return step;
}

/* ---- a batch of steps ---------------------------------------------------------- */

/* A session of a batch and the step its next record applies at. */
typedef struct batch_sess {
    optd_session_t *s;
    uint64_t next;
} batch_sess_t;

static int batch_sess_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const batch_sess_t *)a)->s, y = (uintptr_t)((const batch_sess_t *)b)->s;
    return x < y ? -1 : x > y;
}

/* The batch's distinct sessions sorted by address: *ns of them. */
static batch_sess_t *batch_sessions(const optd_batch_step_t *b, size_t n, size_t *ns)
{
    batch_sess_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!b[i].rc && b[i].s)
            v[k++] = (batch_sess_t){.s = b[i].s};
    qsort(v, k, sizeof *v, batch_sess_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || v[u - 1].s != v[i].s)
            v[u++] = v[i];
    *ns = u;
    return v;
}

/* The journal step: records through dur->steps (or one by one through
 * dur->step where a durability has no group hook). */
static int batch_journal(const optd_durability_t *dur, const optd_batch_step_t *b, const size_t *who,
                         const optd_step_record_t *recs, size_t n, uint64_t *lsns, optd_err_t *err)
{
    memset(lsns, 0, n * sizeof *lsns);
    if (!dur || !dur->step)
        return 0;
    optd_session_t **ss = malloc(n * sizeof *ss);
    if (!ss)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory journaling the batch");
    for (size_t r = 0; r < n; r++)
        ss[r] = b[who[r]].s;
    int rc = 0;
    if (dur->steps)
        rc = dur->steps(dur->ctx, ss, recs, n, lsns, err);
    for (size_t r = 0; !dur->steps && r < n && !rc; r++)
        rc = dur->step(dur->ctx, ss[r], &recs[r], &lsns[r], err);
    free(ss);
    return rc;
}

/* With the batch's sessions locked: the checks before journaling, for each
 * step in order; the ones that pass go into recs (who[r]: their index in
 * b).  Returns how many. */
static size_t batch_check(optd_batch_step_t *b, size_t n, batch_sess_t *ss, size_t ns,
                          optd_step_record_t *recs, size_t *who)
{
    int64_t now = optd_now_ms();
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i].rc || !b[i].s)
            continue;
        batch_sess_t key = {.s = b[i].s};
        batch_sess_t *bs = bsearch(&key, ss, ns, sizeof *ss, batch_sess_cmp);
        optd_session_t *s = bs->s;
        const optd_step_input_t *in = &b[i].in;
        if (s->cfg.aggregate.workers && !s->deleted)
            b[i].rc = aggregating_refusal(s, &b[i].err);
        else
            b[i].rc = step_check_locked(s, in, bs->next, &b[i].step, &b[i].err);
        if (b[i].rc)
            continue;
        recs[nr] = step_record(s, in, bs->next++, in->time_ms ? in->time_ms : now);
        who[nr++] = i;
    }
    return nr;
}

/* With the batch's sessions locked and its records journaled: step x's
 * record rec applied by the rules of replay. */
static void batch_apply_one(optd_batch_step_t *x, const optd_step_record_t *rec, uint64_t lsn,
                            const optd_step_ctx_t *ctx)
{
    optd_session_t *s = x->s;
    if (s->st.step != rec->step) {
        x->step = s->st.step;
        x->rc = optd_err_set(&x->err, OPTD_ESTEP,
                             "this item was journaled to apply at step %llu, after an earlier item of "
                             "the batch on '%s' that was refused; the session is at step %llu",
                             (unsigned long long)rec->step, s->name, (unsigned long long)s->st.step);
        return;
    }
    if (lsn)
        s->lsn = lsn;
    const optd_durability_t *dur = ctx ? ctx->dur : NULL;
    int rc = history_reserve(s, &x->err);
    if (!rc)
        rc = apply_locked(s, ctx ? ctx->pool : NULL, &x->in, rec->time_ms, &x->err);
    if (rc && rc != OPTD_ENONFINITE && rc != OPTD_EINVAL && dur && dur->commit) {
        /* Refused for a reason replay would not meet: the unchanged
         * session is journaled whole after the batch's records, as in
         * optd_session_apply. */
        optd_err_t ignored;
        dur->commit(dur->ctx, s, &ignored);
    }
    x->rc = rc;
    if (rc)
        return;
    optd_session_wake_step_locked(s);
    x->step = s->st.step;
    if (x->params_out && x->in.rows)
        copy_rows_locked(s, x->in.rows, x->in.n_rows, x->params_out);
    else if (x->params_out)
        memcpy(x->params_out, s->params, s->size * optd_dtype_size(s->cfg.dtype));
}

void optd_session_apply_batch(optd_batch_step_t *b, size_t n, const optd_step_ctx_t *ctx)
{
    size_t ns = 0;
    batch_sess_t *ss = batch_sessions(b, n, &ns);
    optd_step_record_t *recs = malloc((n ? n : 1) * sizeof *recs);
    uint64_t *lsns = malloc((n ? n : 1) * sizeof *lsns);
    size_t *who = malloc((n ? n : 1) * sizeof *who);
    if (!ss || !recs || !lsns || !who) {
        for (size_t i = 0; i < n; i++)
            if (!b[i].rc)
                b[i].rc = optd_err_set(&b[i].err, OPTD_ENOMEM, "out of memory applying the batch");
        goto out;
    }
    for (size_t k = 0; k < ns; k++) {
        pthread_mutex_lock(&ss[k].s->mu);
        ss[k].next = ss[k].s->st.step;
    }
    size_t nr = batch_check(b, n, ss, ns, recs, who);
    optd_err_t jerr = {0};
    if (nr && batch_journal(ctx ? ctx->dur : NULL, b, who, recs, nr, lsns, &jerr)) {
        for (size_t r = 0; r < nr; r++) {
            b[who[r]].rc = jerr.code ? jerr.code : OPTD_EIO;
            b[who[r]].err = jerr;
        }
        nr = 0;
    }
    for (size_t r = 0; r < nr; r++)
        batch_apply_one(&b[who[r]], &recs[r], lsns[r], ctx);
    for (size_t k = 0; k < ns; k++)
        pthread_mutex_unlock(&ss[k].s->mu);
    for (size_t k = 0; k < ns; k++)
        optd_session_touch(ss[k].s);
out:
    free(ss);
    free(recs);
    free(lsns);
    free(who);
}

int optd_session_set_params(optd_session_t *s, const void *params, const uint64_t *expect_step,
                            uint64_t *step_out, optd_err_t *err)
{
    size_t bytes = s->size * optd_dtype_size(s->cfg.dtype);
    if (!optd_all_finite(s->cfg.dtype, params, s->size))
        return optd_err_set(err, OPTD_ENONFINITE, "params: every value must be finite");
    int rc = 0;
    void *old = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->deleted) {
        rc = optd_err_set(err, OPTD_ENOTFOUND, "session '%s' was deleted", s->name);
        goto out;
    }
    if (step_out)
        *step_out = s->st.step;
    if (expect_step && *expect_step != s->st.step) {
        rc = optd_err_set(err, OPTD_ESTEP, "expected step %llu but the session is at step %llu",
                          (unsigned long long)*expect_step, (unsigned long long)s->st.step);
        goto out;
    }
    bool durable = s->dur && s->dur->commit;
    /* The new values go into a buffer of their own, so that a change that
     * cannot be made durable is undone by swapping back. */
    void *fresh = malloc(bytes);
    if (!fresh) {
        rc = optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu parameters", s->size);
        goto out;
    }
    memcpy(fresh, params, bytes);
    old = s->params;
    s->params = fresh;
    int64_t old_updated = s->updated_ms;
    s->updated_ms = optd_now_ms();
    s->version++;
    /* The parameters changed other than by a step: what the last step
     * proved about their magnitude no longer holds.  The size is the same,
     * so the memory charged is too.  dur->commit journals the session
     * whole (an image record), as a PATCH or an import is. */
    unsigned old_known = s->st.bound_known;
    optd_optim_forget_bounds(&s->st);
    if (durable && (rc = s->dur->commit(s->dur->ctx, s, err))) {
        s->params = old;
        old = fresh;
        s->updated_ms = old_updated;
        s->version--;
        s->st.bound_known = old_known;
    }
out:
    pthread_mutex_unlock(&s->mu);
    free(old);
    optd_session_touch(s);
    return rc;
}

static int patch_install_locked(optd_session_t *s, optd_session_config_t *merged, optd_err_t *err);

int optd_session_step(optd_session_t *s, const void *grad, const uint64_t *expect_step,
                      const double *loss, uint64_t *step_out, void *params_out, optd_err_t *err)
{
    optd_step_input_t in = {.grad = grad, .expect_step = expect_step, .loss = loss};
    return optd_session_apply(s, NULL, &in, step_out, params_out, err);
}

int optd_session_replay_step(optd_session_t *s, const optd_step_record_t *rec, uint64_t lsn,
                             optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 1;
    if (lsn <= s->lsn || rec->step != s->st.step)
        goto out;
    if (rec->dtype != s->cfg.dtype || rec->size != s->size ||
        (rec->rows && rec->row_size != optd_session_row_size(&s->cfg))) {
        rc = optd_err_set(err, OPTD_EINVAL, "the record's dtype or size is not the session's");
        goto out;
    }
    optd_step_input_t in = {.grad = rec->grad, .rows = rec->rows, .n_rows = rec->n_rows,
                            .loss = rec->has_loss ? &rec->loss : NULL, .time_ms = rec->time_ms,
                            .n_workers = rec->n_workers, .workers = rec->workers};
    if ((rc = step_check_locked(s, &in, s->st.step, NULL, err)) || (rc = history_reserve(s, err)))
        goto out;
    rc = apply_locked(s, NULL, &in, in.time_ms, err);
    s->lsn = lsn; /* applied or refused, the record is accounted for */
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static bool same_group_sizes(const optd_session_config_t *a, const optd_session_config_t *b);

int optd_session_replay_config(optd_session_t *s, const optd_session_image_t *img, uint64_t lsn,
                               optd_err_t *err)
{
    optd_session_config_t fresh;
    int rc = optd_session_config_copy(&fresh, &img->cfg, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->mu);
    rc = 1;
    if (lsn <= s->lsn)
        goto out;
    if (img->st.step != s->st.step || img->size != s->size || img->cfg.kind != s->cfg.kind ||
        img->cfg.dtype != s->cfg.dtype || !same_group_sizes(&img->cfg, &s->cfg)) {
        rc = optd_err_set(err, OPTD_EINVAL, "the record is of a session at step %llu of %zu %s parameters; "
                          "'%s' is at step %llu of %zu %s parameters",
                          (unsigned long long)img->st.step, img->size, optd_dtype_name(img->cfg.dtype), s->name,
                          (unsigned long long)s->st.step, s->size, optd_dtype_name(s->cfg.dtype));
        goto out;
    }
    if ((rc = patch_install_locked(s, &fresh, err)))
        goto out;
    s->updated_ms = img->updated_ms;
    s->lsn = lsn;
out:
    pthread_mutex_unlock(&s->mu);
    if (rc)
        optd_session_config_free(&fresh);
    return rc;
}

int optd_session_commit(optd_session_t *s, const optd_durability_t *dur, optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = s->deleted ? 0 : dur->commit(dur->ctx, s, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t optd_session_lsn(optd_session_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t lsn = s->lsn;
    pthread_mutex_unlock(&s->mu);
    return lsn;
}

void optd_session_set_lsn_locked(optd_session_t *s, uint64_t lsn)
{
    s->lsn = lsn;
}

void optd_session_add_delta_locked(optd_session_t *s, uint64_t lsn, uint64_t bytes, bool whole)
{
    optd_session_deltas_t *d = &s->deltas;
    if (lsn == 0) {
        d->unjournaled++;
        return;
    }
    if (whole) /* the image holds everything before it */
        *d = (optd_session_deltas_t){.first_lsn = lsn};
    if (d->first_lsn == 0)
        d->first_lsn = lsn;
    d->bytes += bytes;
    d->images += whole;
}

void optd_session_add_delta(optd_session_t *s, uint64_t lsn, uint64_t bytes, bool whole)
{
    pthread_mutex_lock(&s->mu);
    optd_session_add_delta_locked(s, lsn, bytes, whole);
    pthread_mutex_unlock(&s->mu);
}

/* The buffers st holds now (bit 1u << optd_buf_t each). */
static unsigned kept_bufs(const optd_optim_state_t *st)
{
    unsigned kept = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (st->buf[b])
            kept |= 1u << b;
    return kept;
}

static bool dirty_locked(const optd_session_t *s)
{
    return !s->deleted && s->version != s->saved_version;
}

/* What a snapshot of s takes, about: what it holds counted as
 * optd_session_bytes does, with the history it has rather than all it may
 * come to (a long --history would make every session look big). */
static size_t image_bytes_locked(const optd_session_t *s)
{
    return optd_session_bytes(&s->cfg, s->size, kept_bufs(&s->st), s->history_len);
}

size_t optd_session_image_bytes(optd_session_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = image_bytes_locked(s);
    pthread_mutex_unlock(&s->mu);
    return n;
}

bool optd_session_peek_dirty(optd_session_t *s, optd_session_deltas_t *deltas,
                             size_t *image_bytes)
{
    pthread_mutex_lock(&s->mu);
    bool dirty = dirty_locked(s);
    if (!dirty)
        s->deltas = (optd_session_deltas_t){0};
    *deltas = s->deltas;
    *image_bytes = image_bytes_locked(s);
    pthread_mutex_unlock(&s->mu);
    return dirty;
}

int optd_session_copy_if_dirty(optd_session_t *s, optd_session_image_t *img, uint64_t *version,
                               uint64_t *lsn, optd_session_deltas_t *deltas, optd_err_t *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (dirty_locked(s)) {
        *version = s->version;
        *lsn = s->lsn;
        *deltas = s->deltas;
        rc = optd_session_copy_image_locked(s, img, err);
        if (rc == 0)
            rc = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void optd_session_mark_saved(optd_session_t *s, uint64_t version, uint64_t lsn,
                             const optd_session_deltas_t *covered, uint64_t later_from)
{
    pthread_mutex_lock(&s->mu);
    if (version > s->saved_version)
        s->saved_version = version;
    optd_session_deltas_t *d = &s->deltas;
    /* A whole image journaled since the copy started the deltas afresh;
     * otherwise the covered records drop out and what came after stays. */
    if (d->first_lsn == covered->first_lsn) {
        d->bytes -= covered->bytes < d->bytes ? covered->bytes : d->bytes;
        d->images -= covered->images < d->images ? covered->images : d->images;
        d->unjournaled -= covered->unjournaled < d->unjournaled ? covered->unjournaled
                                                                : d->unjournaled;
        uint64_t next = lsn + 1 > later_from ? lsn + 1 : later_from;
        d->first_lsn = s->lsn > lsn ? next : 0;
    }
    pthread_mutex_unlock(&s->mu);
}

void optd_session_mark_loaded(optd_session_t *s, uint64_t lsn)
{
    s->lsn = lsn;
    s->saved_version = s->version;
}

/* True when a and b cut the parameters into the same groups. */
static bool same_group_sizes(const optd_session_config_t *a, const optd_session_config_t *b)
{
    if (a->n_groups != b->n_groups)
        return false;
    for (size_t g = 0; g < a->n_groups; g++)
        if (a->groups[g].size != b->groups[g].size)
            return false;
    return true;
}

int optd_session_set_config(optd_session_t *s, const optd_session_config_t *cfg, optd_err_t *err)
{
    int rc = optd_session_config_validate(cfg, err);
    if (rc)
        return rc;
    optd_session_config_t fresh;
    if ((rc = optd_session_config_copy(&fresh, cfg, err)))
        return rc;

    pthread_mutex_lock(&s->mu);
    if (s->deleted)
        rc = optd_err_set(err, OPTD_ENOTFOUND, "session '%s' was deleted", s->name);
    else if (cfg->kind != s->cfg.kind || cfg->dtype != s->cfg.dtype)
        rc = optd_err_set(err, OPTD_EINVAL, "the optimizer and dtype of a session cannot change");
    else if (!same_group_sizes(cfg, &s->cfg))
        rc = optd_err_set(err, OPTD_EINVAL, "the groups of a session (their number and sizes) cannot change");
    else /* the same installation as a PATCH: memory charged, durable, or undone */
        rc = patch_install_locked(s, &fresh, err);
    pthread_mutex_unlock(&s->mu);
    if (rc)
        optd_session_config_free(&fresh);
    optd_session_touch(s);
    return rc;
}

/* ---- memory and PATCH ------------------------------------------------------- */

static size_t add_sat(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t mul_sat(size_t a, size_t b)
{
    size_t r;
    return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

size_t optd_session_bytes(const optd_session_config_t *cfg, size_t size, unsigned kept_bufs,
                          size_t history_cap)
{
    unsigned bufs = kept_bufs | optd_optim_step_bufs(cfg->kind, &cfg->hp);
    for (size_t g = 0; g < cfg->n_groups; g++)
        bufs |= optd_optim_step_bufs(cfg->kind, &cfg->groups[g].hp);
    size_t arrays = 1 + (size_t)__builtin_popcount(bufs);
    size_t n = mul_sat(mul_sat(size, optd_dtype_size(cfg->dtype)), arrays);
    n = add_sat(n, mul_sat(history_cap, sizeof(optd_history_entry_t)));
    n = add_sat(n, sizeof(optd_session_t));
    /* Each label is two malloc'd strings; 32 bytes stands for the
     * allocator's overhead and the optd_label_t. */
    for (size_t i = 0; i < cfg->n_labels; i++)
        n = add_sat(n, strlen(cfg->labels[i].key) + strlen(cfg->labels[i].value) + 2 + 32);
    return n;
}

size_t optd_session_bytes_locked(const optd_session_t *s)
{
    return optd_session_bytes(&s->cfg, s->size, kept_bufs(&s->st), s->history_cap);
}

size_t optd_session_bytes_now(optd_session_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = optd_session_bytes_locked(s);
    pthread_mutex_unlock(&s->mu);
    return n;
}

void optd_session_patch_free(optd_session_patch_t *p)
{
    optd_session_config_t holder = {.n_labels = p->n_labels, .labels = p->labels};
    optd_session_config_free(&holder);
    p->labels = NULL;
    p->n_labels = 0;
    free(p->groups);
    p->groups = NULL;
    p->n_groups = 0;
}

/* The keys of src that hp_set names, copied onto dst (kind's table order). */
static void hp_merge(optd_optim_kind_t kind, optd_hparams_t *dst, const optd_hparams_t *src, uint32_t hp_set)
{
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    for (size_t i = 0; i < d->n_hparams && i < 32; i++) {
        if (!(hp_set & (1u << i)))
            continue;
        const optd_hparam_desc_t *hd = &d->hparams[i];
        size_t len = hd->type == OPTD_HP_BOOL ? sizeof(bool)
                     : hd->type == OPTD_HP_PAIR ? 2 * sizeof(double)
                                                : sizeof(double);
        memcpy((char *)dst + hd->offset, (const char *)src + hd->offset, len);
    }
}

/* p's "groups" onto cfg's groups (after the top-level keys went into
 * every group): one entry per group, sizes unchanged. */
static int patch_merge_groups(optd_session_config_t *cfg, const optd_session_patch_t *p, optd_err_t *err)
{
    if (cfg->n_groups == 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "this session has no groups ('groups' are given when a session is created)");
    if (p->n_groups != cfg->n_groups)
        return optd_err_set(err, OPTD_EINVAL, "'groups' must hold one entry per group (%zu), got %zu",
                            cfg->n_groups, p->n_groups);
    for (size_t g = 0; g < p->n_groups; g++) {
        if (p->groups[g].size && p->groups[g].size != cfg->groups[g].size)
            return optd_err_set(err, OPTD_EINVAL,
                                "'groups[%zu].size' is %zu but the group holds %zu parameters "
                                "(group sizes cannot change)",
                                g, p->groups[g].size, cfg->groups[g].size);
        hp_merge(cfg->kind, &cfg->groups[g].hp, &p->groups[g].hp, p->groups[g].hp_set);
    }
    return 0;
}

/* cfg with p's fields over it (cfg is s->cfg's deep copy, of p->kind). */
static int patch_merge(optd_session_config_t *cfg, const optd_session_patch_t *p, optd_err_t *err)
{
    /* Top-level keys set the same keys in every group, then each group's own. */
    hp_merge(cfg->kind, &cfg->hp, &p->hp, p->hp_set);
    for (size_t g = 0; g < cfg->n_groups; g++)
        hp_merge(cfg->kind, &cfg->groups[g].hp, &p->hp, p->hp_set);
    int rc;
    if (p->n_groups > 0 && (rc = patch_merge_groups(cfg, p, err)))
        return rc;
    if (p->set_schedule) {
        cfg->has_schedule = p->has_schedule;
        cfg->schedule = p->schedule;
    }
    if (p->set_max_grad_norm)
        cfg->max_grad_norm = p->max_grad_norm;
    if (p->set_ttl)
        cfg->ttl_seconds = p->ttl_seconds;
    if (p->set_aggregate)
        cfg->aggregate = p->aggregate;
    if (p->set_labels) {
        optd_session_config_free_labels(cfg); /* the groups stay */
        for (size_t i = 0; i < p->n_labels; i++) {
            int rc = optd_session_config_add_label(cfg, p->labels[i].key, p->labels[i].value, err);
            if (rc)
                return rc;
        }
    }
    return optd_session_config_validate(cfg, err);
}

/* The merged configuration goes in with its memory charged and durable,
 * or nothing changes.  With s->mu held; takes merged over on success. */
static int patch_install_locked(optd_session_t *s, optd_session_config_t *merged, optd_err_t *err)
{
    optd_session_config_t old = s->cfg;
    size_t old_charge = s->charged;
    s->cfg = *merged;
    size_t charge = optd_session_bytes_locked(s);
    int rc = 0;
    if (s->mem && charge > old_charge)
        rc = s->mem->reserve(s->mem->ctx, charge - old_charge, err);
    if (rc) {
        s->cfg = old;
        return rc;
    }
    int64_t old_updated = s->updated_ms;
    s->charged = s->mem ? charge : 0;
    s->updated_ms = optd_now_ms();
    s->version++;
    /* Only the configuration changed: a config record, not the image. */
    int (*commit)(void *, struct optd_session *, optd_err_t *) =
        !s->dur ? NULL : s->dur->commit_config ? s->dur->commit_config : s->dur->commit;
    if (commit && (rc = commit(s->dur->ctx, s, err))) {
        s->cfg = old;
        s->updated_ms = old_updated;
        s->version--;
        s->charged = old_charge;
        if (s->mem && charge > old_charge)
            s->mem->unreserve(s->mem->ctx, charge - old_charge);
        return rc;
    }
    if (s->mem && charge < old_charge)
        s->mem->unreserve(s->mem->ctx, old_charge - charge);
    optd_session_config_free(&old);
    memset(merged, 0, sizeof *merged);
    return 0;
}

int optd_session_patch(optd_session_t *s, const optd_session_patch_t *p, optd_session_desc_t *out,
                       optd_err_t *err)
{
    memset(out, 0, sizeof *out);
    out->round_applied_ns = -1;
    optd_session_config_t merged = {0};
    int rc;
    pthread_mutex_lock(&s->mu);
    if (s->deleted) {
        rc = optd_err_set(err, OPTD_ENOTFOUND, "session '%s' was deleted", s->name);
        goto out;
    }
    const char *kind_name = optd_optim_desc(s->cfg.kind)->name;
    if (p->check_kind && p->want_kind != s->cfg.kind) {
        rc = optd_err_set(err, OPTD_EINVAL, "the optimizer of a session cannot change (it is %s)",
                          kind_name);
        goto out;
    }
    if (p->check_dtype && p->dtype != s->cfg.dtype) {
        rc = optd_err_set(err, OPTD_EINVAL, "the dtype of a session cannot change (it is %s)",
                          optd_dtype_name(s->cfg.dtype));
        goto out;
    }
    if (p->kind != s->cfg.kind) {
        rc = 1;
        goto out;
    }
    if ((rc = optd_session_config_copy(&merged, &s->cfg, err)))
        goto out;
    if ((rc = patch_merge(&merged, p, err)) || (rc = patch_install_locked(s, &merged, err)))
        goto out;
    int round_rc = 0;
    out->round_applied_ns = optd_session_aggregate_changed_locked(s, &round_rc);
    if (round_rc)
        out->round_applied_ns = -1;
    if ((rc = optd_session_config_copy(&out->cfg, &s->cfg, err)))
        goto out;
    out->size = s->size;
    out->step = s->st.step;
    out->created_ms = s->created_ms;
    out->updated_ms = s->updated_ms;
    out->loss = s->loss;
    rc = optd_session_round_view_locked(s, out, err);
out:
    pthread_mutex_unlock(&s->mu);
    optd_session_config_free(&merged);
    if (rc <= 0)
        optd_session_touch(s);
    return rc;
}
