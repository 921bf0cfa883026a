/* round.h: rounds of a parameter-server session (API.md 1.1 "Rounds"):
 * the aggregate configuration, a pending round's contributions, the
 * outcome its waiting requests share, each worker's last applied step,
 * and the reduction, a pure function of the contributions.
 *
 * The session owns a round and runs it under its own mutex
 * (session_round.c); this file knows no session and no lock. */
#ifndef OPTD_ROUND_H
#define OPTD_ROUND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "optd/error.h"
#include "optd/optim.h"

#define OPTD_ROUND_WORKERS_MAX 1024
#define OPTD_WORKER_NAME_MAX 128

typedef enum optd_reduce { OPTD_REDUCE_MEAN = 0, OPTD_REDUCE_SUM = 1 } optd_reduce_t;

/* "aggregate" of create and PATCH; workers 0: off (a plain session). */
typedef struct optd_aggregate {
    uint32_t workers;        /* 1..OPTD_ROUND_WORKERS_MAX, or 0 */
    optd_reduce_t reduce;
    uint64_t max_staleness;
} optd_aggregate_t;

/* 0, or OPTD_EINVAL naming the field and its range. */
int optd_aggregate_validate(const optd_aggregate_t *a, optd_err_t *err);
const char *optd_reduce_name(optd_reduce_t r);

/* One worker's contribution to the pending round. */
typedef struct optd_contribution {
    char worker[OPTD_WORKER_NAME_MAX + 1];
    uint64_t step;           /* the step of the parameters it was computed from */
    bool has_loss;
    double loss;
    void *grad;              /* size elements of the session's dtype (malloc'd) */
    bool want_params;        /* its request answers with the parameters (not ?return=none) */
} optd_contribution_t;

/* What every request of one round is answered with, shared by reference
 * (the round, each waiting request).  Written once by whoever resolves the
 * round, then `done` is set (release); readers check `done` (acquire). */
typedef struct optd_round_outcome {
    atomic_int refs;
    atomic_bool done;
    int rc;                  /* 0: applied; else the error all requests get */
    optd_err_t err;
    uint64_t step;           /* applied: the new step; else the session's step then */
    void *params;            /* applied: the parameters after it (malloc'd), or NULL when
                                no request of the round asked for them */
} optd_round_outcome_t;

/* A new outcome with one reference, or NULL (out of memory). */
optd_round_outcome_t *optd_round_outcome_new(void);
void optd_round_outcome_retain(optd_round_outcome_t *o);
void optd_round_outcome_release(optd_round_outcome_t *o);

/* The pending round of a session: contributions from distinct workers, at
 * most `workers` of them. */
typedef struct optd_round {
    uint64_t step;           /* the session's step it is gathered at */
    size_t n;                /* contributions in */
    size_t cap;              /* entries of `in` allocated */
    optd_contribution_t *in; /* in arrival order */
    size_t charged;          /* bytes reserved for it (--max-memory) */
    bool want_params;        /* a request of it answers with the parameters */
    int64_t opened_ns;       /* monotonic, for the open-time metric */
    optd_round_outcome_t *outcome; /* the round's; waiting requests hold references */
} optd_round_t;

/* The index of worker's contribution in r, or -1. */
long optd_round_find(const optd_round_t *r, const char *worker);

/* Sorts the contributions in ascending bytewise order of worker name. */
void optd_round_sort(optd_round_t *r);

/* The reduction: out[i] = (g_0[i] + g_1[i] + ... + g_{n-1}[i]) summed in
 * double in the order given (g_0[i] first, then each added), divided by n
 * for mean, rounded once to dtype.  out may be grads[0] (each element is
 * read from every gradient before it is written). */
void optd_round_reduce(optd_dtype_t dtype, size_t size, const void *const *grads, size_t n,
                       optd_reduce_t reduce, void *out);

/* Each worker's step of its last applied contribution: a contribution at
 * or below it would count twice.  Sorted by name; bounded (see
 * optd_worker_steps_set). */
typedef struct optd_worker_step {
    char worker[OPTD_WORKER_NAME_MAX + 1];
    uint64_t step;
} optd_worker_step_t;

typedef struct optd_worker_steps {
    size_t n, cap;
    optd_worker_step_t *v;   /* sorted by worker (strcmp) */
    /* The greatest step forgotten since this table was made (memory only:
     * after a restart the rule on a full table stands in for it), so a
     * PATCH raising `workers`, and with it `keep`, forgets nothing. */
    bool forgot;
    uint64_t forgot_step;
} optd_worker_steps_t;

/* The last applied step of worker: true and *step, or false. */
bool optd_worker_steps_get(const optd_worker_steps_t *ws, const char *worker, uint64_t *step);
/* Records step for worker.  Past `keep` entries the one with the oldest
 * step goes (a contribution that old is outside any useful window).  0 or
 * OPTD_ENOMEM (nothing changed). */
int optd_worker_steps_set(optd_worker_steps_t *ws, const char *worker, uint64_t step, size_t keep,
                          optd_err_t *err);
void optd_worker_steps_free(optd_worker_steps_t *ws);
/* Deep copy: 0 or OPTD_ENOMEM. */
int optd_worker_steps_copy(optd_worker_steps_t *dst, const optd_worker_steps_t *src, optd_err_t *err);
/* Whether a worker absent from ws may have been forgotten with a step of
 * at least `step`: step is not after the greatest step forgotten, or ws
 * holds `keep` entries or more (some may have gone, before a restart) and
 * step is not after the oldest step it still holds, which is at least
 * every forgotten one's.  The caller refuses such a contribution: it
 * might be a retry of one applied (it would count twice). */
bool optd_worker_steps_maybe_forgotten(const optd_worker_steps_t *ws, uint64_t step, size_t keep);
/* How many entries a session of `workers` keeps. */
size_t optd_worker_steps_keep(uint32_t workers);

#endif
