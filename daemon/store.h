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
    size_t max_memory;   /* bytes sessions may hold in all (--max-memory); 0: unlimited */
} optd_store_limits_t;

/* 0 or OPTD_ENOMEM. */
int optd_store_new(const optd_store_limits_t *limits, optd_store_t **out, optd_err_t *err);
/* Drops the store's references (sessions still held by users live on). */
void optd_store_free(optd_store_t *store);
void optd_store_set_durability(optd_store_t *store, const struct optd_durability *dur);
/* The pool big updates of the sessions inserted from now on are spread
 * over (parallel.h); NULL (the default): each update on its caller's thread.
 * Set it before sessions are inserted; the store does not own it. */
void optd_store_set_pool(optd_store_t *store, struct optd_pool *pool);
const optd_store_limits_t *optd_store_limits(const optd_store_t *store);
/* What a step on one of the store's sessions runs with: the pool and the
 * durability hook (session.h, optd_session_apply). */
void optd_store_step_ctx(const optd_store_t *store, optd_step_ctx_t *ctx);
/* optd_session_apply on *sp (one of the store's, the caller's reference)
 * with that context: what a step request does.  An import that changed the
 * session's shape puts a new session in the old one's place; a step that
 * raced onto the old one finds it deleted and is then applied to the new
 * one, as if it came after the import (*sp is then the new one, whose
 * reference the caller now holds), or refused with OPTD_ESIZE when the
 * gradient no longer fits.  Results and errors as optd_session_apply. */
int optd_store_step(optd_store_t *store, optd_session_t **sp, const optd_step_input_t *in,
                    uint64_t *step_out, void *params_out, optd_err_t *err);
/* optd_session_contribute on *sp, following an import that replaced it
 * meanwhile exactly as optd_store_step does (a contribution is a step
 * request too): *sp may then be the new session. */
int optd_store_contribute(optd_store_t *store, optd_session_t **sp, const optd_contribution_t *c,
                          optd_contrib_result_t *out, optd_err_t *err);

/* optd_session_apply_batch with the store's context: what POST /v1/steps
 * does.  Each b[i].s is one of the store's sessions (the caller's
 * reference); an item that raced onto a session an import replaced
 * follows it as optd_store_step does (b[i].s is then the new one, whose
 * reference the caller holds). */
void optd_store_step_batch(optd_store_t *store, optd_batch_step_t *b, size_t n);

/* ---- the memory budget (--max-memory) ----
 * Every byte a session can come to hold is reserved before it is
 * allocated (optd_session_bytes: params, the state buffers its options
 * use, a full history, labels), so a 201 never leads to a later
 * out-of-memory.  The reservation moves into the session and is returned
 * when the session is freed.  Other holders of memory (rounds, tables)
 * reserve and unreserve the same way. */

/* Reserves bytes: 0, or OPTD_ELIMIT with a sentence saying how much of
 * the budget is left. */
int optd_store_reserve(optd_store_t *store, size_t bytes, optd_err_t *err);
/* The same for memory held while a request is answered (a copy, an
 * encoded answer): it may take the total a sixth beyond --max-memory
 * (a twelfth of the memory by default), so reads still work when
 * sessions fill the budget.  Returned with optd_store_unreserve. */
int optd_store_borrow(optd_store_t *store, size_t bytes, optd_err_t *err);
void optd_store_unreserve(optd_store_t *store, size_t bytes);
/* Bytes reserved now, and the budget (0: unlimited). */
void optd_store_memory(optd_store_t *store, size_t *used, size_t *max);
/* Hands a reservation of `reserved` bytes (made with optd_store_reserve
 * before s's buffers were allocated) over to s, which is not yet in the
 * store, adjusted to what s holds: 0, or OPTD_ELIMIT (more was needed and
 * is not left; the reservation is returned, s is unchanged). */
int optd_store_charge(optd_store_t *store, optd_session_t *s, size_t reserved, optd_err_t *err);

/* Adds s under s->name; the store takes its own reference.  With replace
 * and a session of that name in the store: of the same shape (size, dtype,
 * optimizer) that session takes s's contents in place, in one change under
 * its lock (readers holding it see the old contents or the new, never a
 * deleted session) and s is left with the old contents; of another shape
 * s takes its place in the table in one change and the old one is marked
 * deleted (handlers read the shape without the lock, so it never changes
 * under them).  *replaced (may be NULL) says whether one was replaced.  A session not yet charged (optd_store_charge) is charged here
 * without the budget check: this is how persistence loads what is on
 * disk.  Errors: OPTD_EEXIST, OPTD_ELIMIT (max sessions or max params),
 * OPTD_EIO (not durable; nothing changed). */
int optd_store_insert(optd_store_t *store, optd_session_t *s, bool replace, bool *replaced,
                      optd_err_t *err);

/* The import of a client: as optd_store_insert with replace, but within
 * the memory budget (a replace counts the difference), and *live is the
 * session now holding the contents (s itself, or the one replaced in
 * place), with a reference for the caller.  Errors as insert's. */
int optd_store_import(optd_store_t *store, optd_session_t *s, optd_session_t **live,
                      bool *replaced, optd_err_t *err);

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

/* Sessions matching q in q->sort's order (the name order is kept in an
 * index, so a page by name costs O(log n + page), not a sort of every
 * name), each with a reference for the caller
 * (*out malloc'd; release each, then free the array).  *more says whether
 * further matches exist beyond the last returned.  0 or OPTD_ENOMEM. */
int optd_store_list(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                    size_t *n, bool *more, optd_err_t *err);

/* Calls fn on every session (with a reference held during the call, the
 * table lock not held): for snapshots and metrics.  Stops early when fn
 * returns non-zero and returns that value. */
int optd_store_foreach(optd_store_t *store, int (*fn)(optd_session_t *s, void *arg), void *arg);

/* Removes sessions idle for longer than their ttl at time now_ms; returns
 * how many, and logs each through the callback (may be NULL).  Their
 * deletions are made durable together, in one batch.  Blocks on I/O: call
 * it off the event loop. */
size_t optd_store_expire(optd_store_t *store, int64_t now_ms,
                         void (*on_expire)(const char *name, void *arg), void *arg);

/* Gauges for /metrics. */
size_t optd_store_count(optd_store_t *store);
size_t optd_store_params(optd_store_t *store);

#endif
