/* session_round.c: a session's rounds (API.md 1.1 "Rounds") and the
 * requests waiting on a session.
 *
 * Everything here runs under the session's mutex: a contribution joins
 * the pending round, and the one that makes it whole reduces it (round.c,
 * in worker-name order, so the bits never depend on arrival) and applies
 * the result through the one apply every step takes (journal, clipping,
 * schedule, history).  Waiting requests are optd_watch_t entries, woken by
 * the change itself: a step, a round resolved, the session gone. */
#include "session_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

/* ---- watchers ---------------------------------------------------------------- */

static void unlink_watch(optd_session_t *s, optd_watch_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->linked = false;
}

/* Wakes (and unlinks) the watchers `match` picks. */
static void wake_where(optd_session_t *s, bool (*match)(const optd_session_t *, const optd_watch_t *, const void *),
                       const void *arg, int why)
{
    optd_watch_t *w = s->watchers, *next;
    for (; w; w = next) {
        next = w->next;
        if (match(s, w, arg)) {
            unlink_watch(s, w);
            w->wake(w, why);
        }
    }
}

static bool match_step(const optd_session_t *s, const optd_watch_t *w, const void *arg)
{
    (void)arg;
    return w->min_step != UINT64_MAX && s->st.step >= w->min_step;
}

static bool match_outcome(const optd_session_t *s, const optd_watch_t *w, const void *arg)
{
    (void)s;
    return w->outcome == arg;
}

static bool match_all(const optd_session_t *s, const optd_watch_t *w, const void *arg)
{
    (void)s, (void)w, (void)arg;
    return true;
}

void optd_session_wake_step_locked(optd_session_t *s)
{
    if (s->watchers)
        wake_where(s, match_step, NULL, OPTD_WATCH_STEP);
}

void optd_session_wake_all_locked(optd_session_t *s, int why)
{
    if (s->watchers)
        wake_where(s, match_all, NULL, why);
}

bool optd_session_watch(optd_session_t *s, optd_watch_t *w)
{
    pthread_mutex_lock(&s->mu);
    bool ok = !s->deleted && !(w->outcome && atomic_load_explicit(&w->outcome->done, memory_order_acquire)) &&
              !(w->min_step != UINT64_MAX && s->st.step >= w->min_step);
    if (ok) {
        w->prev = NULL;
        w->next = s->watchers;
        if (s->watchers)
            s->watchers->prev = w;
        s->watchers = w;
        w->linked = true;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void optd_session_unwatch(optd_session_t *s, optd_watch_t *w)
{
    pthread_mutex_lock(&s->mu);
    if (w->linked)
        unlink_watch(s, w);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the round ----------------------------------------------------------------- */

static size_t grad_bytes(const optd_session_t *s)
{
    return s->size * optd_dtype_size(s->cfg.dtype);
}

/* Frees r's contributions and returns their memory. */
static void round_free(optd_session_t *s, optd_round_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->in[i].grad);
    free(r->in);
    if (s->mem && r->charged)
        s->mem->unreserve(s->mem->ctx, r->charged);
    optd_round_outcome_release(r->outcome);
    free(r);
}

/* Resolves the round: its outcome is final, its requests are woken. */
static void round_resolve(optd_session_t *s, optd_round_t *r)
{
    atomic_store_explicit(&r->outcome->done, true, memory_order_release);
    s->round = NULL;
    if (s->watchers)
        wake_where(s, match_outcome, r->outcome, OPTD_WATCH_ROUND);
    round_free(s, r);
}

void optd_session_drop_round_locked(optd_session_t *s, int rc, const char *msg)
{
    optd_round_t *r = s->round;
    if (!r)
        return;
    optd_round_outcome_t *o = r->outcome;
    o->rc = optd_err_set(&o->err, rc, "%s", msg);
    o->step = s->st.step;
    round_resolve(s, r);
}

/* The round is whole: reduced in worker-name order and applied as one
 * step; every request of it gets the same outcome.  Returns how long it
 * stayed open. */
static int64_t round_apply(optd_session_t *s, const optd_step_ctx_t *ctx)
{
    optd_round_t *r = s->round;
    optd_round_outcome_t *o = r->outcome;
    optd_round_sort(r);
    const void **grads = malloc(r->n * sizeof *grads);
    /* The parameters after the step are copied out only for requests that
     * answer with them (a 1M-parameter copy per round otherwise). */
    void *params = r->want_params ? malloc(grad_bytes(s)) : NULL;
    if (!grads || (r->want_params && !params)) {
        free(grads);
        free(params);
        o->rc = optd_err_set(&o->err, OPTD_ENOMEM, "out of memory reducing a round of %zu", r->n);
    } else {
        double loss_sum = 0;
        size_t n_loss = 0;
        for (size_t i = 0; i < r->n; i++) {
            grads[i] = r->in[i].grad;
            if (r->in[i].has_loss) {
                loss_sum += r->in[i].loss;
                n_loss++;
            }
        }
        optd_round_reduce(s->cfg.dtype, s->size, grads, r->n, s->cfg.aggregate.reduce, r->in[0].grad);
        free(grads);
        double loss = n_loss ? loss_sum / (double)n_loss : 0;
        optd_step_input_t in = {
            .grad = r->in[0].grad, .loss = n_loss ? &loss : NULL, .n_workers = r->n, .workers = r->in,
        };
        o->rc = optd_session_apply_locked(s, ctx, &in, &o->err);
        if (!o->rc && params) {
            memcpy(params, s->params, grad_bytes(s));
            o->params = params;
        } else {
            free(params);
        }
    }
    o->step = s->st.step;
    int64_t open_ns = optd_mono_ns() - r->opened_ns;
    round_resolve(s, r);
    return open_ns;
}

int64_t optd_session_aggregate_changed_locked(optd_session_t *s, int *rc)
{
    if (!s->round)
        return -1;
    if (s->cfg.aggregate.workers == 0) {
        optd_session_drop_round_locked(s, OPTD_ESTEP,
                                       "the session no longer aggregates (PATCH turned 'aggregate' off); "
                                       "the pending round was dropped");
        return -1;
    }
    if (s->round->n < s->cfg.aggregate.workers)
        return -1;
    optd_step_ctx_t ctx = {.pool = NULL, .dur = s->dur};
    optd_round_outcome_t *o = s->round->outcome;
    optd_round_outcome_retain(o);
    int64_t open_ns = round_apply(s, &ctx);
    *rc = o->rc;
    optd_round_outcome_release(o);
    return open_ns;
}

/* Refuses a contribution whose step is outside [c - max_staleness, c] or
 * not after the worker's last applied one: OPTD_ESTEP, or 0. */
static int contribution_check(optd_session_t *s, const optd_contribution_t *c, optd_contrib_result_t *out,
                              optd_err_t *err)
{
    uint64_t cur = s->st.step, ms = s->cfg.aggregate.max_staleness, last;
    out->step = cur;
    if (c->step > cur || cur - c->step > ms) {
        out->refused = c->step < cur && cur - c->step - 1 == ms ? OPTD_REFUSED_TOO_LATE : OPTD_REFUSED_STALE;
        return optd_err_set(err, OPTD_ESTEP,
                            "worker '%s' contributed at step %llu but the session is at step %llu "
                            "(max_staleness %llu): fetch the parameters and compute again",
                            c->worker, (unsigned long long)c->step, (unsigned long long)cur,
                            (unsigned long long)ms);
    }
    if (optd_worker_steps_get(&s->worker_steps, c->worker, &last) && c->step <= last) {
        out->refused = OPTD_REFUSED_TWICE;
        return optd_err_set(err, OPTD_ESTEP,
                            "worker '%s' already had a contribution at step %llu applied; one at step %llu "
                            "would count twice",
                            c->worker, (unsigned long long)last, (unsigned long long)c->step);
    }
    /* A worker forgotten (past optd_worker_steps_keep names) must not
     * count twice either: with a large max_staleness its retry of an
     * applied contribution would otherwise be in the window again.  Only a
     * stale contribution (before the oldest step kept) can be refused so. */
    size_t keep = optd_worker_steps_keep(s->cfg.aggregate.workers);
    if (!optd_worker_steps_get(&s->worker_steps, c->worker, &last) &&
        optd_worker_steps_maybe_forgotten(&s->worker_steps, c->step, keep)) {
        out->refused = OPTD_REFUSED_TWICE;
        return optd_err_set(err, OPTD_ESTEP,
                            "worker '%s' is not among the last %zu workers whose applied steps are kept, and "
                            "its step %llu is not after the oldest of those: it may have been applied already",
                            c->worker, keep, (unsigned long long)c->step);
    }
    return 0;
}

/* A new pending round at the session's step, with room for every worker. */
static int round_open(optd_session_t *s, optd_err_t *err)
{
    size_t n = s->cfg.aggregate.workers;
    size_t bytes = n * sizeof(optd_contribution_t) + sizeof(optd_round_t);
    if (s->mem) {
        int rc = s->mem->reserve(s->mem->ctx, bytes, err);
        if (rc)
            return rc;
    }
    optd_round_t *r = calloc(1, sizeof *r);
    if (r) {
        r->in = calloc(n, sizeof *r->in);
        r->outcome = optd_round_outcome_new();
    }
    if (!r || !r->in || !r->outcome) {
        if (r) {
            free(r->in);
            optd_round_outcome_release(r->outcome);
        }
        free(r);
        if (s->mem)
            s->mem->unreserve(s->mem->ctx, bytes);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory opening a round");
    }
    r->cap = n;
    r->charged = bytes;
    r->step = s->st.step;
    r->opened_ns = optd_mono_ns();
    s->round = r;
    return 0;
}

/* Room for one more contribution: a PATCH that raised `workers` keeps
 * the pending round, whose array was sized for the old number. */
static int round_grow(optd_session_t *s, optd_round_t *r, optd_err_t *err)
{
    size_t cap = s->cfg.aggregate.workers > r->n ? s->cfg.aggregate.workers : r->n + 1;
    size_t extra = (cap - r->cap) * sizeof(optd_contribution_t);
    int rc = s->mem ? s->mem->reserve(s->mem->ctx, extra, err) : 0;
    if (rc)
        return optd_err_set(err, rc, "a contribution to the round of '%s': %s", s->name, err->msg);
    optd_contribution_t *in = realloc(r->in, cap * sizeof *in);
    if (!in) {
        if (s->mem)
            s->mem->unreserve(s->mem->ctx, extra);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for the round of '%s'", s->name);
    }
    r->in = in;
    r->cap = cap;
    r->charged += extra;
    return 0;
}

/* Puts c into the round: a worker already in has its contribution
 * replaced; a new one gets a buffer reserved against --max-memory. */
static int round_put(optd_session_t *s, const optd_contribution_t *c, optd_err_t *err)
{
    optd_round_t *r = s->round;
    long at = optd_round_find(r, c->worker);
    optd_contribution_t *slot;
    if (at >= 0) {
        slot = &r->in[at];
    } else {
        int rc = r->n >= r->cap ? round_grow(s, r, err) : 0;
        if (rc)
            return rc;
        size_t bytes = grad_bytes(s);
        rc = s->mem ? s->mem->reserve(s->mem->ctx, bytes, err) : 0;
        if (rc)
            return optd_err_set(err, rc, "a contribution to the round of '%s': %s", s->name, err->msg);
        void *g = malloc(bytes);
        if (!g) {
            if (s->mem)
                s->mem->unreserve(s->mem->ctx, bytes);
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for a contribution of %zu values", s->size);
        }
        r->charged += s->mem ? bytes : 0;
        slot = &r->in[r->n++];
        memset(slot, 0, sizeof *slot);
        snprintf(slot->worker, sizeof slot->worker, "%s", c->worker);
        slot->grad = g;
    }
    memcpy(slot->grad, c->grad, grad_bytes(s));
    slot->step = c->step;
    slot->has_loss = c->has_loss;
    slot->loss = c->loss;
    r->want_params |= c->want_params;
    return 0;
}

int optd_session_contribute(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_contribution_t *c,
                            optd_contrib_result_t *out, optd_err_t *err)
{
    memset(out, 0, sizeof *out);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (s->deleted) {
        rc = optd_err_set(err, OPTD_ENOTFOUND, "session '%s' was deleted", s->name);
        goto out;
    }
    if (s->cfg.aggregate.workers == 0) {
        rc = optd_err_set(err, OPTD_EINVAL,
                          "session '%s' does not aggregate: a step with 'worker' needs a session "
                          "created (or patched) with 'aggregate'", s->name);
        goto out;
    }
    if (c->has_loss && !isfinite(c->loss)) {
        rc = optd_err_set(err, OPTD_EINVAL, "loss: must be a finite number");
        goto out;
    }
    if ((rc = contribution_check(s, c, out, err)))
        goto out;
    if (s->round && s->round->step != s->st.step) /* the step moved under it (an import): start over */
        optd_session_drop_round_locked(s, OPTD_ESTEP, "the session's step changed under the round");
    if (!s->round && (rc = round_open(s, err)))
        goto out;
    if ((rc = round_put(s, c, err))) {
        if (s->round->n == 0)
            round_free(s, s->round), s->round = NULL;
        goto out;
    }
    out->outcome = s->round->outcome;
    optd_round_outcome_retain(out->outcome);
    if (s->round->n >= s->cfg.aggregate.workers) {
        out->open_ns = round_apply(s, ctx);
        out->state = 1;
    }
    /* A pending contribution changes nothing durable (updated_at stays):
     * the round lives in memory only until it is applied. */
out:
    pthread_mutex_unlock(&s->mu);
    optd_session_touch(s);
    return rc;
}

int optd_session_round_view_locked(optd_session_t *s, optd_session_desc_t *d, optd_err_t *err)
{
    d->round_on = s->cfg.aggregate.workers != 0;
    d->round_step = s->st.step;
    d->round_n = 0;
    d->round_workers = NULL;
    const optd_round_t *r = s->round;
    if (!d->round_on || !r || r->n == 0)
        return 0;
    d->round_workers = malloc(r->n * sizeof *d->round_workers);
    if (!d->round_workers)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory copying the round");
    for (size_t i = 0; i < r->n; i++)
        memcpy(d->round_workers[i], r->in[i].worker, sizeof d->round_workers[i]);
    /* Shown in the order the round is reduced in, not in arrival order. */
    qsort(d->round_workers, r->n, sizeof *d->round_workers, (int (*)(const void *, const void *))strcmp);
    d->round_n = r->n;
    return 0;
}
