/* store.h: the session registry, name -> session.
 *
 * A uthash table under a rwlock held only to find, insert or remove; the
 * caller gets a reference to the session and works on it under the
 * session's own mutex.  The store enforces --max-sessions and --max-params,
 * and calls the durability hook (persistence) so that with --sync always a
 * change is acknowledged only once it is on disk. */
#ifndef OPTD_STORE_H
#define OPTD_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

typedef struct optd_store optd_store_t;

typedef struct optd_store_limits {
    size_t max_sessions; /* default 100000 */
    size_t max_params;   /* 0: unlimited */
    size_t history;      /* history entries kept per session, default 1000 */
} optd_store_limits_t;

/* 0 or OPTD_ENOMEM. */
int optd_store_new(const optd_store_limits_t *limits, optd_store_t **out, optd_err_t *err);
/* Drops the store's references (sessions still held by users live on). */
void optd_store_free(optd_store_t *store);
void optd_store_set_durability(optd_store_t *store, const optd_durability_t *dur);
/* The pool big updates of the sessions inserted from now on are spread
 * over (parallel.h); NULL (the default): each update on its caller's thread.
 * Set it before sessions are inserted; the store does not own it. */
void optd_store_set_pool(optd_store_t *store, struct optd_pool *pool);
const optd_store_limits_t *optd_store_limits(const optd_store_t *store);

/* Adds s under s->name.  The store takes its own reference.  With replace,
 * an existing session of that name is removed first (import); *replaced
 * (may be NULL) says whether one was.  Errors: OPTD_EEXIST, OPTD_ELIMIT
 * (max sessions or max params), OPTD_EIO (not durable; nothing added). */
int optd_store_insert(optd_store_t *store, optd_session_t *s, bool replace, bool *replaced,
                      optd_err_t *err);

/* The session called name with a reference for the caller (release it with
 * optd_session_release), or NULL. */
optd_session_t *optd_store_get(optd_store_t *store, const char *name);

/* Removes name (and, through the durability hook, its file): 0,
 * OPTD_ENOTFOUND, or OPTD_EIO (--sync always: the delete could not be made
 * durable; nothing removed). */
int optd_store_remove(optd_store_t *store, const char *name, optd_err_t *err);

typedef enum optd_store_sort {
    OPTD_SORT_NAME = 0, /* by name; paged with `after` */
    OPTD_SORT_BEST_LOSS, /* by the loss summary's best, ascending; then by name */
    OPTD_SORT_LAST_LOSS  /* by its last; sessions without a loss come last */
} optd_store_sort_t;

typedef struct optd_store_query {
    optd_store_sort_t sort;
    size_t offset;      /* matches skipped first */
    const char *after;  /* names greater than this, or NULL (name order) */
    const char *prefix; /* or NULL */
    size_t n_labels;    /* every key:value must match */
    const optd_label_t *labels;
    size_t limit;       /* 1..1000 */
} optd_store_query_t;

/* Sessions matching q in q->sort's order, each with a reference for the caller
 * (*out malloc'd; release each, then free the array).  *more says whether
 * further matches exist beyond the last returned.  0 or OPTD_ENOMEM. */
int optd_store_list(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                    size_t *n, bool *more, optd_err_t *err);

/* Calls fn on every session (with a reference held during the call, the
 * table lock not held): for snapshots and metrics.  Stops early when fn
 * returns non-zero and returns that value. */
int optd_store_foreach(optd_store_t *store, int (*fn)(optd_session_t *s, void *arg), void *arg);

/* Removes sessions idle for longer than their ttl at time now_ms; returns
 * how many, and logs each through the callback (may be NULL). */
size_t optd_store_expire(optd_store_t *store, int64_t now_ms,
                         void (*on_expire)(const char *name, void *arg), void *arg);

/* Gauges for /metrics. */
size_t optd_store_count(optd_store_t *store);
size_t optd_store_params(optd_store_t *store);

#endif
