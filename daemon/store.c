/* store.c: the session registry, name -> session, and its limits.
 *
 * Locking rules (they keep the registry from ever waiting on I/O):
 *   - the table rwlock is held only to find, insert or remove entries and to
 *     take references; never while a session mutex is acquired, never across
 *     the durability hook;
 *   - a session mutex may be held while taking the table lock (insert and its
 *     undo do that on a session nobody else can reach yet, or to put one
 *     back), never the reverse;
 *   - replacing a session locks the new one, then the old one: sessions are
 *     only ever locked newest first, so two imports cannot deadlock.
 * Counts (sessions, parameters) are kept under the table lock. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

struct optd_store {
    pthread_rwlock_t lock;
    optd_session_t *table; /* uthash head */
    size_t count;
    size_t params;
    optd_store_limits_t limits;
    const optd_durability_t *dur;
    struct optd_pool *pool;
};

int optd_store_new(const optd_store_limits_t *limits, optd_store_t **out, optd_err_t *err)
{
    *out = NULL;
    optd_store_t *st = calloc(1, sizeof *st);
    if (!st)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory creating the session store");
    if (pthread_rwlock_init(&st->lock, NULL) != 0) {
        free(st);
        return optd_err_set(err, OPTD_ENOMEM, "could not create the store lock");
    }
    st->limits = *limits;
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
        optd_session_release(s);
    }
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

static optd_session_t *find_locked(optd_store_t *store, const char *name)
{
    optd_session_t *s = NULL;
    HASH_FIND_STR(store->table, name, s);
    return s;
}

static void set_deleted(optd_session_t *s, bool v)
{
    __atomic_store_n(&s->deleted, v, __ATOMIC_RELEASE);
}

/* Puts old back in place of s after s's create could not be made durable
 * (old may be NULL: then s is just taken out).  Only if s is still the
 * table's entry for the name: someone may have replaced it meanwhile. */
static void insert_undo(optd_store_t *store, optd_session_t *s, optd_session_t *old)
{
    bool dropped = false;
    pthread_rwlock_wrlock(&store->lock);
    if (find_locked(store, s->name) == s) {
        HASH_DEL(store->table, s);
        store->params -= s->size;
        store->count--;
        dropped = true;
        if (old) {
            HASH_ADD_STR(store->table, name, old);
            store->params += old->size;
            store->count++;
            set_deleted(old, false);
            optd_session_retain(old); /* the table's reference again */
        }
    }
    pthread_rwlock_unlock(&store->lock);
    if (dropped)
        optd_session_release(s); /* the table's reference */
}

int optd_store_insert(optd_store_t *store, optd_session_t *s, bool replace, bool *replaced,
                      optd_err_t *err)
{
    if (replaced)
        *replaced = false;
    /* Nobody else can reach s yet; locking it now means that as soon as it
     * is in the table, others wait until it is durable (or taken back). */
    pthread_mutex_lock(&s->mu);
    s->dur = store->dur;
    s->pool = store->pool;

    pthread_rwlock_wrlock(&store->lock);
    optd_session_t *old = find_locked(store, s->name);
    if (old && !replace) {
        pthread_rwlock_unlock(&store->lock);
        pthread_mutex_unlock(&s->mu);
        return optd_err_set(err, OPTD_EEXIST, "session '%s' already exists", s->name);
    }
    size_t count = store->count + (old ? 0 : 1);
    size_t params = store->params - (old ? old->size : 0);
    if (count > store->limits.max_sessions) {
        pthread_rwlock_unlock(&store->lock);
        pthread_mutex_unlock(&s->mu);
        return optd_err_set(err, OPTD_ELIMIT, "the daemon holds its maximum of %zu sessions",
                            store->limits.max_sessions);
    }
    if (store->limits.max_params &&
        (s->size > store->limits.max_params || params > store->limits.max_params - s->size)) {
        pthread_rwlock_unlock(&store->lock);
        pthread_mutex_unlock(&s->mu);
        return optd_err_set(err, OPTD_ELIMIT,
                            "adding %zu parameters would exceed the limit of %zu in all sessions",
                            s->size, store->limits.max_params);
    }
    if (old)
        HASH_DEL(store->table, old); /* the table's reference moves to us */
    HASH_ADD_STR(store->table, name, s);
    optd_session_retain(s);
    store->count = count;
    store->params = params + s->size;
    pthread_rwlock_unlock(&store->lock);

    if (old) {
        /* Waits for a change in flight on old (its record lands before
         * ours); from now on old refuses changes. */
        pthread_mutex_lock(&old->mu);
        set_deleted(old, true);
    }
    int rc = 0;
    if (s->dur && s->dur->commit) {
        rc = s->dur->commit(s->dur->ctx, s, err);
        if (rc) {
            set_deleted(s, true);
            insert_undo(store, s, old);
        }
    }
    if (old) {
        pthread_mutex_unlock(&old->mu);
        optd_session_release(old);
    }
    pthread_mutex_unlock(&s->mu);
    if (!rc) {
        optd_session_touch(s);
        if (replaced)
            *replaced = old != NULL;
    }
    return rc;
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
        int rc = s->dur->remove(s->dur->ctx, s->name, err);
        if (rc) {
            set_deleted(s, false);
            pthread_mutex_unlock(&s->mu);
            return rc;
        }
    }
    pthread_mutex_unlock(&s->mu);

    bool dropped = false;
    pthread_rwlock_wrlock(&store->lock);
    if (find_locked(store, s->name) == s) {
        HASH_DEL(store->table, s);
        store->count--;
        store->params -= s->size;
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

static int by_name(const void *a, const void *b)
{
    const optd_session_t *x = *(optd_session_t *const *)a, *y = *(optd_session_t *const *)b;
    return strcmp(x->name, y->name);
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
        optd_session_t *s = v[i];
        pthread_mutex_lock(&s->mu);
        bool ok = !s->deleted && labels_match(s, q);
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

int optd_store_list(optd_store_t *store, const optd_store_query_t *q, optd_session_t ***out,
                    size_t *n, bool *more, optd_err_t *err)
{
    *out = NULL;
    *n = 0;
    *more = false;
    if (q->sort != OPTD_SORT_NAME)
        return list_by_loss(store, q, out, n, more, err);
    optd_session_t **v;
    size_t k;
    if (snapshot_all(store, q, &v, &k))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing sessions");
    if (k > 1)
        qsort(v, k, sizeof *v, by_name);

    /* Labels and the deleted flag need each session's lock, taken without
     * the table lock; walk in name order until one match past the limit. */
    size_t limit = q->limit ? q->limit : 100;
    size_t kept = 0, i = 0, skip = q->offset;
    for (; i < k; i++) {
        optd_session_t *s = v[i];
        pthread_mutex_lock(&s->mu);
        bool ok = !s->deleted && labels_match(s, q);
        pthread_mutex_unlock(&s->mu);
        if (ok && skip > 0) {
            skip--;
            ok = false;
        }
        if (!ok) {
            optd_session_release(s);
            continue;
        }
        if (kept == limit) {
            *more = true;
            break;
        }
        v[kept++] = s;
    }
    for (; i < k; i++)
        optd_session_release(v[i]);
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
