/* store.c: the session registry, name -> session, its name index and
 * its limits (sessions, parameters, memory).
 *
 * Locking rules (they keep the registry from ever waiting on I/O):
 *   - the table rwlock is held only to find, insert or remove entries (in
 *     the hash table and the name index together) and to take references;
 *     never while a session mutex is acquired, never across the
 *     durability hook;
 *   - a session mutex may be held while taking the table lock (insert and its
 *     undo do that on a session nobody else can reach yet, or to put one
 *     back), never the reverse;
 *   - replacing a session locks the new one, then the old one: sessions are
 *     only ever locked newest first, so two imports cannot deadlock.
 * Counts (sessions, parameters) are kept under the table lock; reserved
 * memory is an atomic counter, so a session may reserve under its own lock. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index.h"
#include "session_internal.h"

struct optd_store {
    pthread_rwlock_t lock;
    optd_session_t *table; /* uthash head */
    optd_index_t *by_name; /* the same sessions in name order */
    size_t count;
    size_t params;
    _Atomic size_t bytes;  /* reserved against limits.max_memory */
    optd_mem_account_t account;
    optd_store_limits_t limits;
    const optd_durability_t *dur;
    struct optd_pool *pool;
};

static int by_name_cmp(const void *a, const void *b)
{
    return strcmp(((const optd_session_t *)a)->name, ((const optd_session_t *)b)->name);
}

static int name_key_cmp(const void *item, const void *key)
{
    return strcmp(((const optd_session_t *)item)->name, key);
}

static int account_reserve(void *ctx, size_t bytes, optd_err_t *err)
{
    return optd_store_reserve(ctx, bytes, err);
}

static void account_unreserve(void *ctx, size_t bytes)
{
    optd_store_unreserve(ctx, bytes);
}

int optd_store_new(const optd_store_limits_t *limits, optd_store_t **out, optd_err_t *err)
{
    *out = NULL;
    optd_store_t *st = calloc(1, sizeof *st);
    if (!st)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory creating the session store");
    st->by_name = optd_index_new(by_name_cmp, (uint64_t)(uintptr_t)st);
    if (!st->by_name) {
        free(st);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory creating the session store");
    }
    if (pthread_rwlock_init(&st->lock, NULL) != 0) {
        optd_index_free(st->by_name);
        free(st);
        return optd_err_set(err, OPTD_ENOMEM, "could not create the store lock");
    }
    st->limits = *limits;
    st->account = (optd_mem_account_t){st, account_reserve, account_unreserve};
    *out = st;
    return 0;
}

void optd_store_free(optd_store_t *store)
{
    if (!store)
        return;
    optd_session_t *s, *tmp;
    HASH_ITER(hh, store->table, s, tmp) {
        HASH_DEL(store->table, s);
        /* A session outliving the store must not return memory to it. */
        pthread_mutex_lock(&s->mu);
        s->mem = NULL;
        pthread_mutex_unlock(&s->mu);
        optd_session_release(s);
    }
    optd_index_free(store->by_name);
    pthread_rwlock_destroy(&store->lock);
    free(store);
}

void optd_store_set_durability(optd_store_t *store, const optd_durability_t *dur)
{
    store->dur = dur;
}

void optd_store_set_pool(optd_store_t *store, struct optd_pool *pool)
{
    store->pool = pool;
}

const optd_store_limits_t *optd_store_limits(const optd_store_t *store)
{
    return &store->limits;
}

void optd_store_step_ctx(const optd_store_t *store, optd_step_ctx_t *ctx)
{
    ctx->pool = store->pool;
    ctx->dur = store->dur;
}

/* How many imports in a row an operation follows before it gives up with
 * not_found.  Each turn means another import completed meanwhile, so the
 * bound is only reached under a storm of imports of one name; a few turns
 * were not enough with three importers on two cores. */
#define FOLLOW_TURNS 64

/* After an operation found *sp deleted: moves *sp (the caller's
 * reference) to the session an import put in its place, if one did and it
 * has the same shape (0); else OPTD_ENOTFOUND (rc, err as they were), or
 * OPTD_ESIZE when the replacement's shape differs. */
static int follow_replacement(optd_store_t *store, optd_session_t **sp, int rc, optd_err_t *err)
{
    optd_session_t *now = optd_store_get(store, (*sp)->name);
    if (!now || now == *sp) {
        if (now)
            optd_session_release(now);
        return rc;
    }
    if (now->size != (*sp)->size || now->cfg.dtype != (*sp)->cfg.dtype) {
        rc = optd_err_set(err, OPTD_ESIZE, "session '%s' was replaced meanwhile by one of %zu %s parameters",
                          now->name, now->size, optd_dtype_name(now->cfg.dtype));
        optd_session_release(now);
        return rc;
    }
    optd_session_release(*sp);
    *sp = now;
    return 0;
}

int optd_store_step(optd_store_t *store, optd_session_t **sp, const optd_step_input_t *in,
                    uint64_t *step_out, void *params_out, optd_err_t *err)
{
    optd_step_ctx_t ctx;
    optd_store_step_ctx(store, &ctx);
    int rc = optd_session_apply(*sp, &ctx, in, step_out, params_out, err);
    for (int turn = 0; turn < FOLLOW_TURNS && rc == OPTD_ENOTFOUND; turn++) {
        if ((rc = follow_replacement(store, sp, rc, err)))
            return rc;
        rc = optd_session_apply(*sp, &ctx, in, step_out, params_out, err);
    }
    return rc;
}

int optd_store_contribute(optd_store_t *store, optd_session_t **sp, const optd_contribution_t *c,
                          optd_contrib_result_t *out, optd_err_t *err)
{
    optd_step_ctx_t ctx;
    optd_store_step_ctx(store, &ctx);
    int rc = optd_session_contribute(*sp, &ctx, c, out, err);
    for (int turn = 0; turn < FOLLOW_TURNS && rc == OPTD_ENOTFOUND; turn++) {
        if ((rc = follow_replacement(store, sp, rc, err)))
            return rc;
        rc = optd_session_contribute(*sp, &ctx, c, out, err);
    }
    return rc;
}

/* Applies the items idx[0..m) of b again, in their order, as a batch of
 * their own (a second group commit, only in an import race). */
static void apply_again(optd_batch_step_t *b, const size_t *idx, size_t m, const optd_step_ctx_t *ctx)
{
    optd_batch_step_t *again = malloc(m * sizeof *again);
    if (!again) {
        for (size_t k = 0; k < m; k++)
            b[idx[k]].rc = optd_err_set(&b[idx[k]].err, OPTD_ENOMEM, "out of memory applying the batch");
        return;
    }
    for (size_t k = 0; k < m; k++)
        again[k] = b[idx[k]];
    optd_session_apply_batch(again, m, ctx);
    for (size_t k = 0; k < m; k++)
        b[idx[k]] = again[k];
    free(again);
}

void optd_store_step_batch(optd_store_t *store, optd_batch_step_t *b, size_t n)
{
    optd_step_ctx_t ctx;
    optd_store_step_ctx(store, &ctx);
    optd_session_apply_batch(b, n, &ctx);
    /* Items that raced onto a session an import replaced follow it, as
     * optd_store_step does, and go again; while imports keep replacing,
     * for a few turns. */
    size_t *idx = NULL;
    for (int turn = 0; turn < FOLLOW_TURNS; turn++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (b[i].rc != OPTD_ENOTFOUND || !b[i].s)
                continue;
            if (!idx && !(idx = malloc(n * sizeof *idx)))
                return; /* they keep their not_found */
            if (!(b[i].rc = follow_replacement(store, &b[i].s, b[i].rc, &b[i].err)))
                idx[m++] = i;
        }
        if (!m)
            break;
        apply_again(b, idx, m, &ctx);
    }
    free(idx);
}

/* ---- memory ------------------------------------------------------------------ */

/* "1.5 GiB", "12.0 MiB", "512 bytes": for sentences a client reads. */
static void human_bytes(size_t n, char *buf, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (n < 1024) {
        snprintf(buf, cap, "%zu bytes", n);
        return;
    }
    double v = (double)n / 1024;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, units[u]);
}

/* Reserves bytes if the total stays within max (0: unlimited). */
static int reserve_within(optd_store_t *store, size_t bytes, size_t max, optd_err_t *err)
{
    size_t cur = atomic_load(&store->bytes);
    for (;;) {
        if (max && (bytes > max || cur > max - bytes)) {
            char need[32], left[32], all[32];
            human_bytes(bytes, need, sizeof need);
            human_bytes(cur < max ? max - cur : 0, left, sizeof left);
            human_bytes(max, all, sizeof all);
            return optd_err_set(err, OPTD_ELIMIT,
                                "this needs %s of memory and only %s of the daemon's %s %s is left",
                                need, left, all,
                                max == store->limits.max_memory
                                    ? "budget (--max-memory)"
                                    : "limit for sessions and answers in flight (--max-memory and a sixth)");
        }
        if (atomic_compare_exchange_weak(&store->bytes, &cur, cur + bytes))
            return 0;
    }
}

int optd_store_reserve(optd_store_t *store, size_t bytes, optd_err_t *err)
{
    return reserve_within(store, bytes, store->limits.max_memory, err);
}

int optd_store_borrow(optd_store_t *store, size_t bytes, optd_err_t *err)
{
    size_t max = store->limits.max_memory;
    return reserve_within(store, bytes, max > SIZE_MAX / 7 * 6 ? max : max + max / 6, err);
}

void optd_store_unreserve(optd_store_t *store, size_t bytes)
{
    atomic_fetch_sub(&store->bytes, bytes);
}

void optd_store_memory(optd_store_t *store, size_t *used, size_t *max)
{
    *used = atomic_load(&store->bytes);
    *max = store->limits.max_memory;
}

int optd_store_charge(optd_store_t *store, optd_session_t *s, size_t reserved, optd_err_t *err)
{
    size_t need = optd_session_bytes_locked(s);
    if (need > reserved) {
        int rc = optd_store_reserve(store, need - reserved, err);
        if (rc) {
            optd_store_unreserve(store, reserved);
            return rc;
        }
    } else if (need < reserved) {
        optd_store_unreserve(store, reserved - need);
    }
    s->mem = &store->account;
    s->charged = need;
    return 0;
}

/* Charges s (not in the store yet, its lock held) if it is not charged. */
static int charge_new(optd_store_t *store, optd_session_t *s, bool enforce, optd_err_t *err)
{
    if (s->mem)
        return 0;
    size_t need = optd_session_bytes_locked(s);
    if (enforce) {
        int rc = optd_store_reserve(store, need, err);
        if (rc)
            return rc;
    } else {
        atomic_fetch_add(&store->bytes, need);
    }
    s->mem = &store->account;
    s->charged = need;
    return 0;
}

/* ---- insert and replace ---------------------------------------------------- */

static optd_session_t *find_locked(optd_store_t *store, const char *name)
{
    optd_session_t *s = NULL;
    HASH_FIND_STR(store->table, name, s);
    return s;
}

/* Adds s to the table and the name index: 0 or OPTD_ENOMEM. */
static int add_locked(optd_store_t *store, optd_session_t *s)
{
    if (optd_index_insert(store->by_name, s))
        return OPTD_ENOMEM;
    HASH_ADD_STR(store->table, name, s);
    store->count++;
    store->params += s->size;
    return 0;
}

static void del_locked(optd_store_t *store, optd_session_t *s)
{
    optd_index_remove(store->by_name, s);
    HASH_DEL(store->table, s);
    store->count--;
    store->params -= s->size;
}

static void set_deleted(optd_session_t *s, bool v)
{
    __atomic_store_n(&s->deleted, v, __ATOMIC_RELEASE);
}

/* Takes s out after its create could not be made durable, if it is still
 * the table's entry for the name. */
static void insert_undo(optd_store_t *store, optd_session_t *s)
{
    bool dropped = false;
    pthread_rwlock_wrlock(&store->lock);
    if (find_locked(store, s->name) == s) {
        del_locked(store, s);
        dropped = true;
    }
    pthread_rwlock_unlock(&store->lock);
    if (dropped)
        optd_session_release(s); /* the table's reference */
}

static int check_limits_locked(optd_store_t *store, size_t add_sessions, size_t drop_params,
                               size_t add_params, optd_err_t *err)
{
    if (store->count + add_sessions > store->limits.max_sessions)
        return optd_err_set(err, OPTD_ELIMIT, "the daemon holds its maximum of %zu sessions",
                            store->limits.max_sessions);
    size_t params = store->params - drop_params;
    if (store->limits.max_params &&
        (add_params > store->limits.max_params || params > store->limits.max_params - add_params))
        return optd_err_set(err, OPTD_ELIMIT,
                            "adding %zu parameters would exceed the limit of %zu in all sessions",
                            add_params, store->limits.max_params);
    return 0;
}

/* s (locked, unreachable) under a name nobody holds: with the table lock
 * held on entry, released here.  The commit runs with s->mu held, so once
 * s is in the table others wait until it is durable (or taken back). */
static int insert_fresh(optd_store_t *store, optd_session_t *s, bool enforce, optd_err_t *err)
{
    int rc = check_limits_locked(store, 1, 0, s->size, err);
    if (!rc)
        rc = charge_new(store, s, enforce, err);
    if (!rc && add_locked(store, s))
        rc = optd_err_set(err, OPTD_ENOMEM, "out of memory indexing session '%s'", s->name);
    if (!rc)
        optd_session_retain(s);
    pthread_rwlock_unlock(&store->lock);
    if (!rc && s->dur && s->dur->commit) {
        rc = s->dur->commit(s->dur->ctx, s, err);
        if (rc) {
            set_deleted(s, true);
            insert_undo(store, s);
        }
    }
    return rc;
}

/* Exchanges the contents of two locked sessions (not their identity:
 * name, references, locks, table links, accounting hooks).  Persistence's
 * position (lsn, durable history) goes with the contents it describes. */
static void swap_contents(optd_session_t *a, optd_session_t *b)
{
#define SWAP(f)                                                                                    \
    do {                                                                                           \
        __typeof__(a->f) t_ = a->f;                                                                \
        a->f = b->f;                                                                               \
        b->f = t_;                                                                                 \
    } while (0)
    SWAP(cfg);
    SWAP(size);
    SWAP(params);
    SWAP(st);
    SWAP(created_ms);
    SWAP(updated_ms);
    SWAP(loss);
    SWAP(history);
    SWAP(history_cap);
    SWAP(history_alloc);
    SWAP(history_head);
    SWAP(history_len);
    SWAP(lsn);
    SWAP(worker_steps);
#undef SWAP
}

/* For a replace: what s needs (*need), what old and s hold already
 * (*avail), and the difference reserved (*extra; without enforce it is
 * counted unchecked: optd_store_insert's callers, such as loading, must not
 * be refused).  0 or OPTD_ELIMIT. */
static int reserve_difference(optd_store_t *store, const optd_session_t *old, const optd_session_t *s,
                              bool enforce, size_t *need, size_t *avail, size_t *extra,
                              optd_err_t *err)
{
    *need = optd_session_bytes_locked(s);
    *avail = old->charged + (s->mem ? s->charged : 0);
    *extra = *need > *avail ? *need - *avail : 0;
    if (*extra && enforce)
        return optd_store_reserve(store, *extra, err);
    if (*extra)
        atomic_fetch_add(&store->bytes, *extra);
    return 0;
}

/* old (referenced, its lock held, not deleted) takes s's contents; s
 * (locked, unreachable) is left with old's, uncounted: they are freed with
 * s.  Memory: only the difference must fit (with enforce). */
static int replace_locked(optd_store_t *store, optd_session_t *old, optd_session_t *s,
                          bool enforce, optd_err_t *err)
{
    size_t need, avail, extra;
    int rc = reserve_difference(store, old, s, enforce, &need, &avail, &extra, err);
    if (rc)
        return rc;

    pthread_rwlock_wrlock(&store->lock);
    rc = check_limits_locked(store, 0, old->size, s->size, err);
    if (!rc)
        store->params = store->params - old->size + s->size;
    pthread_rwlock_unlock(&store->lock);
    uint64_t version = old->version;
    if (!rc) {
        swap_contents(old, s);
        /* Newer than anything a snapshot in flight took of either. */
        old->version = (version > s->version ? version : s->version) + 1;
        if (old->dur && old->dur->commit && (rc = old->dur->commit(old->dur->ctx, old, err))) {
            swap_contents(old, s);
            old->version = version;
            pthread_rwlock_wrlock(&store->lock);
            store->params = store->params - s->size + old->size;
            pthread_rwlock_unlock(&store->lock);
        }
    }
    if (rc) {
        if (extra)
            optd_store_unreserve(store, extra);
        return rc;
    }
    if (need < avail)
        optd_store_unreserve(store, avail - need);
    old->mem = &store->account;
    old->charged = need;
    s->charged = 0;
    /* The contents changed under any round and any long poll. */
    optd_session_drop_round_locked(old, OPTD_ESTEP, "the session was replaced by an import");
    optd_session_wake_step_locked(old);
    return 0;
}

/* Puts s (locked, unreachable) in the table in old's place, old (locked,
 * not deleted: so still the table's entry) being retired: for an import
 * that changes the shape (size, dtype or optimizer), which handlers read
 * without the lock and so must never change under them.  The swap is one change under
 * the write lock (listings see old or s, never neither); old's charge moves
 * to s, only the difference is reserved. */
static int replace_object_locked(optd_store_t *store, optd_session_t *old, optd_session_t *s,
                                 bool enforce, optd_err_t *err)
{
    size_t need, avail, extra;
    int rc = reserve_difference(store, old, s, enforce, &need, &avail, &extra, err);
    if (rc)
        return rc;
    size_t old_charged = old->charged, s_charged = s->charged;
    const optd_mem_account_t *s_mem = s->mem;

    pthread_rwlock_wrlock(&store->lock);
    rc = check_limits_locked(store, 0, old->size, s->size, err);
    if (!rc) {
        optd_index_replace(store->by_name, old, s);
        HASH_DEL(store->table, old);
        HASH_ADD_STR(store->table, name, s);
        store->params = store->params - old->size + s->size;
        optd_session_retain(s); /* the table's; old's is dropped below */
    }
    pthread_rwlock_unlock(&store->lock);
    if (rc) {
        if (extra)
            optd_store_unreserve(store, extra);
        return rc;
    }
    set_deleted(old, true);
    s->mem = &store->account;
    s->charged = need;
    old->charged = 0;
    if (s->dur && s->dur->commit && (rc = s->dur->commit(s->dur->ctx, s, err))) {
        /* Whoever found s meanwhile waits on its lock: it must then see a
         * session that is gone, not one outside the table. */
        set_deleted(s, true);
        pthread_rwlock_wrlock(&store->lock);
        optd_index_replace(store->by_name, s, old);
        HASH_DEL(store->table, s);
        HASH_ADD_STR(store->table, name, old);
        store->params = store->params - s->size + old->size;
        pthread_rwlock_unlock(&store->lock);
        set_deleted(old, false);
        old->charged = old_charged;
        s->mem = s_mem;
        s->charged = s_charged;
        if (extra)
            optd_store_unreserve(store, extra);
        optd_session_release(s); /* the table's, which s had for a moment */
        return rc;
    }
    if (need < avail)
        optd_store_unreserve(store, avail - need);
    optd_session_drop_round_locked(old, OPTD_ESTEP, "the session was replaced by an import");
    optd_session_wake_all_locked(old, OPTD_WATCH_GONE);
    optd_session_release(old); /* the table's (the caller still holds one) */
    return 0;
}

/* Puts s in the store (see optd_store_insert); *live as optd_store_import. */
static int put(optd_store_t *store, optd_session_t *s, bool replace, bool enforce,
               optd_session_t **live, bool *replaced, optd_err_t *err)
{
    *live = NULL;
    *replaced = false;
    /* Nobody else can reach s yet; locked from here to the end. */
    pthread_mutex_lock(&s->mu);
    s->dur = store->dur;
    int rc;
    for (;;) {
        pthread_rwlock_wrlock(&store->lock);
        optd_session_t *old = find_locked(store, s->name);
        if (!old) {
            rc = insert_fresh(store, s, enforce, err); /* unlocks the table */
            if (!rc) {
                optd_session_retain(s);
                *live = s;
            }
            break;
        }
        if (!replace) {
            pthread_rwlock_unlock(&store->lock);
            rc = optd_err_set(err, OPTD_EEXIST, "session '%s' already exists", s->name);
            break;
        }
        optd_session_retain(old);
        pthread_rwlock_unlock(&store->lock);
        /* Waits for a change in flight on old (its record lands before ours). */
        pthread_mutex_lock(&old->mu);
        if (old->deleted) {
            /* A delete got there first and is about to take it out of the
             * table: do that now, and this import creates the name anew. */
            pthread_rwlock_wrlock(&store->lock);
            bool dropped = find_locked(store, s->name) == old;
            if (dropped)
                del_locked(store, old);
            pthread_rwlock_unlock(&store->lock);
            pthread_mutex_unlock(&old->mu);
            if (dropped)
                optd_session_release(old); /* the table's */
            optd_session_release(old);
            continue;
        }
        /* Same shape: the contents change in place, so a step or PATCH
         * holding old is serialised with the import instead of finding
         * it deleted.  A new shape needs a new session: handlers read
         * size, dtype and optimizer without the lock. */
        bool in_place = old->size == s->size && old->cfg.dtype == s->cfg.dtype &&
                        old->cfg.kind == s->cfg.kind;
        rc = in_place ? replace_locked(store, old, s, enforce, err)
                      : replace_object_locked(store, old, s, enforce, err);
        pthread_mutex_unlock(&old->mu);
        if (!rc) {
            *replaced = true;
            *live = in_place ? old : s;
            if (!in_place) {
                optd_session_retain(s);
                optd_session_release(old);
            }
        } else {
            optd_session_release(old);
        }
        break;
    }
    pthread_mutex_unlock(&s->mu);
    if (!rc)
        optd_session_touch(*live);
    return rc;
}

int optd_store_insert(optd_store_t *store, optd_session_t *s, bool replace, bool *replaced,
                      optd_err_t *err)
{
    optd_session_t *live;
    bool r;
    int rc = put(store, s, replace, false, &live, &r, err);
    if (replaced)
        *replaced = r;
    if (live)
        optd_session_release(live);
    return rc;
}

int optd_store_import(optd_store_t *store, optd_session_t *s, optd_session_t **live,
                      bool *replaced, optd_err_t *err)
{
    return put(store, s, true, true, live, replaced, err);
}

optd_session_t *optd_store_get(optd_store_t *store, const char *name)
{
    pthread_rwlock_rdlock(&store->lock);
    optd_session_t *s = find_locked(store, name);
    if (s)
        optd_session_retain(s);
    pthread_rwlock_unlock(&store->lock);
    return s;
}

/* Removes s (which the caller holds a reference to) if it is not deleted
 * and, when `expired` is given, only if it is idle past its ttl at *expired.
 * 0 when removed, 1 when the condition did not hold, or an error. */
static int remove_session(optd_store_t *store, optd_session_t *s, const int64_t *expired,
                          optd_err_t *err)
{
    if (expired) {
        /* A session whose lock is taken is in use, so not idle: skip it
         * rather than make the expiry sweep wait behind a durable write. */
        if (pthread_mutex_trylock(&s->mu) != 0)
            return 1;
    } else {
        pthread_mutex_lock(&s->mu);
    }
    if (s->deleted) {
        pthread_mutex_unlock(&s->mu);
        return 1;
    }
    if (expired) {
        int64_t ttl = s->cfg.ttl_seconds;
        int64_t idle = *expired - atomic_load(&s->accessed_ms);
        if (ttl <= 0 || idle <= ttl * 1000) {
            pthread_mutex_unlock(&s->mu);
            return 1;
        }
    }
    /* Marked first so a snapshot being written concurrently sees it before
     * it renames its file into place (persistence checks under its lock). */
    set_deleted(s, true);
    if (s->dur && s->dur->remove) {
        /* An expiry is batched: the sweep makes all of them durable at
         * once (dur->sync), so a thousand expiries cost one fsync. */
        int rc = s->dur->remove(s->dur->ctx, s->name, expired != NULL, err);
        if (rc) {
            set_deleted(s, false);
            pthread_mutex_unlock(&s->mu);
            return rc;
        }
    }
    optd_session_drop_round_locked(s, OPTD_ENOTFOUND, "the session was deleted");
    optd_session_wake_all_locked(s, OPTD_WATCH_GONE);
    pthread_mutex_unlock(&s->mu);

    bool dropped = false;
    pthread_rwlock_wrlock(&store->lock);
    if (find_locked(store, s->name) == s) {
        del_locked(store, s);
        dropped = true;
    }
    pthread_rwlock_unlock(&store->lock);
    if (dropped)
        optd_session_release(s);
    return 0;
}

int optd_store_remove(optd_store_t *store, const char *name, optd_err_t *err)
{
    /* A session found deleted was replaced or removed between the lookup
     * and its lock; look again, a few times, for what now has the name. */
    for (int attempt = 0; attempt < 8; attempt++) {
        optd_session_t *s = optd_store_get(store, name);
        if (!s)
            break;
        int rc = remove_session(store, s, NULL, err);
        optd_session_release(s);
        if (rc <= 0)
            return rc;
    }
    return optd_err_set(err, OPTD_ENOTFOUND, "no session named '%s'", name);
}

/* References to every session in the table, taken under the read lock. */
static int snapshot_all(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                        size_t *n)
{
    pthread_rwlock_rdlock(&store->lock);
    size_t cap = store->count ? store->count : 1;
    optd_session_t **v = malloc(cap * sizeof *v);
    if (!v) {
        pthread_rwlock_unlock(&store->lock);
        return OPTD_ENOMEM;
    }
    size_t plen = q && q->prefix ? strlen(q->prefix) : 0;
    size_t k = 0;
    for (optd_session_t *s = store->table; s; s = s->hh.next) {
        if (q && q->after && strcmp(s->name, q->after) <= 0)
            continue;
        if (plen && strncmp(s->name, q->prefix, plen) != 0)
            continue;
        optd_session_retain(s);
        v[k++] = s;
    }
    pthread_rwlock_unlock(&store->lock);
    *out = v;
    *n = k;
    return 0;
}

/* With s->mu held. */
static bool labels_match(const optd_session_t *s, const optd_store_query_t *q)
{
    for (size_t i = 0; i < q->n_labels; i++) {
        bool found = false;
        for (size_t j = 0; j < s->cfg.n_labels && !found; j++)
            found = strcmp(s->cfg.labels[j].key, q->labels[i].key) == 0 &&
                    strcmp(s->cfg.labels[j].value, q->labels[i].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* s (referenced) or, when an import put a new session in its place
 * since the batch was taken, that one (the reference moves to it); *ok
 * says whether it is live and matches q's labels. */
static optd_session_t *current_match(optd_store_t *store, optd_session_t *s,
                                     const optd_store_query_t *q, bool *ok)
{
    /* Each turn follows an import that completed meanwhile. */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool deleted = s->deleted;
        *ok = !deleted && labels_match(s, q);
        pthread_mutex_unlock(&s->mu);
        if (!deleted)
            break;
        optd_session_t *now = optd_store_get(store, s->name);
        if (!now || now == s) {
            optd_session_release(now);
            break;
        }
        optd_session_release(s);
        s = now;
    }
    return s;
}

/* A session and the key it is ordered by, read once under its lock. */
typedef struct by_loss {
    optd_session_t *s;
    bool has;
    double key;
} by_loss_t;

static int by_loss_cmp(const void *a, const void *b)
{
    const by_loss_t *x = a, *y = b;
    if (x->has != y->has)
        return x->has ? -1 : 1;
    if (x->has && x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return strcmp(x->s->name, y->s->name);
}

/* The loss orders: every match is read and sorted (O(n log n) a request),
 * then the page [offset, offset + limit) is kept. */
static int list_by_loss(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                        size_t *n, bool *more, optd_err_t *err)
{
    optd_session_t **v;
    size_t k;
    if (snapshot_all(store, q, &v, &k))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing sessions");
    by_loss_t *keys = malloc((k ? k : 1) * sizeof *keys);
    if (!keys) {
        for (size_t i = 0; i < k; i++)
            optd_session_release(v[i]);
        free(v);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing sessions");
    }
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        bool ok;
        optd_session_t *s = current_match(store, v[i], q, &ok);
        pthread_mutex_lock(&s->mu);
        by_loss_t e = {s, s->loss.has, q->sort == OPTD_SORT_BEST_LOSS ? s->loss.best : s->loss.last};
        pthread_mutex_unlock(&s->mu);
        if (ok)
            keys[m++] = e;
        else
            optd_session_release(s);
    }
    qsort(keys, m, sizeof *keys, by_loss_cmp);
    size_t limit = q->limit ? q->limit : 100;
    size_t first = q->offset < m ? q->offset : m;
    size_t last = m - first > limit ? first + limit : m;
    for (size_t i = 0; i < m; i++) {
        if (i >= first && i < last)
            v[i - first] = keys[i].s;
        else
            optd_session_release(keys[i].s);
    }
    free(keys);
    *out = v;
    *n = last - first;
    *more = last < m;
    return 0;
}

/* Up to cap sessions in name order after *cursor ("" at first: from the
 * start of the prefix), with references, under the read lock; *cursor
 * becomes the last name taken.  Returns how many; *end says the index (or
 * the prefix) ran out. */
static size_t take_batch(optd_store_t *store, const char *prefix, char *cursor,
                         optd_session_t **v, size_t cap, bool *end)
{
    size_t plen = prefix ? strlen(prefix) : 0, k = 0;
    pthread_rwlock_rdlock(&store->lock);
    const optd_index_node_t *node;
    if (cursor[0])
        node = optd_index_seek(store->by_name, name_key_cmp, cursor, 0);
    else
        node = optd_index_seek(store->by_name, name_key_cmp, plen ? prefix : NULL, 1);
    for (; node && k < cap; node = optd_index_next(node)) {
        optd_session_t *s = optd_index_item(node);
        if (plen && strncmp(s->name, prefix, plen) != 0) {
            node = NULL;
            break;
        }
        optd_session_retain(s);
        v[k++] = s;
    }
    pthread_rwlock_unlock(&store->lock);
    *end = node == NULL;
    if (k)
        memcpy(cursor, v[k - 1]->name, sizeof v[k - 1]->name);
    return k;
}

int optd_store_list(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                    size_t *n, bool *more, optd_err_t *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    if (q->sort != OPTD_SORT_NAME)
        return list_by_loss(store, q, out, n, more, err);
    size_t limit = q->limit ? q->limit : 100;
    /* One past the limit tells whether there are more; with label filters
     * sessions are taken in bigger batches, as many will not match. */
    size_t batch = q->n_labels ? 256 : limit + 1;
    optd_session_t **v = malloc((limit + 1) * sizeof *v), **b = malloc(batch * sizeof *b);
    if (!v || !b) {
        free(v);
        free(b);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing sessions");
    }
    char cursor[OPTD_NAME_MAX + 1] = "";
    if (q->after)
        snprintf(cursor, sizeof cursor, "%s", q->after);
    /* A prefix sorting after the cursor starts the walk at the prefix. */
    if (q->prefix && cursor[0] && strcmp(cursor, q->prefix) < 0)
        cursor[0] = '\0';
    size_t kept = 0, skip = q->offset;
    bool end = false;
    while (!end && !*more) {
        size_t k = take_batch(store, q->prefix, cursor, b, batch, &end);
        /* Labels and the deleted flag need each session's lock, taken
         * without the table lock. */
        for (size_t i = 0; i < k; i++) {
            bool ok = false;
            optd_session_t *s = *more ? b[i] : current_match(store, b[i], q, &ok);
            if (ok && skip > 0) {
                skip--;
                ok = false;
            }
            if (ok && kept == limit) {
                *more = true;
                ok = false;
            }
            if (ok)
                v[kept++] = s;
            else
                optd_session_release(s);
        }
    }
    free(b);
    *out = v;
    *n = kept;
    return 0;
}

int optd_store_foreach(optd_store_t *store, int (*fn)(optd_session_t *s, void *arg), void *arg)
{
    optd_session_t **v;
    size_t k;
    if (snapshot_all(store, NULL, &v, &k))
        return OPTD_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < k; i++) {
        if (!rc)
            rc = fn(v[i], arg);
        optd_session_release(v[i]);
    }
    free(v);
    return rc;
}

size_t optd_store_expire(optd_store_t *store, int64_t now_ms,
                         void (*on_expire)(const char *name, void *arg), void *arg)
{
    optd_session_t **v;
    size_t k;
    if (snapshot_all(store, NULL, &v, &k))
        return 0;
    size_t removed = 0;
    for (size_t i = 0; i < k; i++) {
        optd_err_t err;
        if (remove_session(store, v[i], &now_ms, &err) == 0) {
            removed++;
            if (on_expire)
                on_expire(v[i]->name, arg);
        }
        optd_session_release(v[i]);
    }
    free(v);
    optd_err_t err;
    if (removed > 0 && store->dur && store->dur->sync)
        store->dur->sync(store->dur->ctx, &err); /* a failure is logged there */
    return removed;
}

size_t optd_store_count(optd_store_t *store)
{
    pthread_rwlock_rdlock(&store->lock);
    size_t n = store->count;
    pthread_rwlock_unlock(&store->lock);
    return n;
}

size_t optd_store_params(optd_store_t *store)
{
    pthread_rwlock_rdlock(&store->lock);
    size_t n = store->params;
    pthread_rwlock_unlock(&store->lock);
    return n;
}
