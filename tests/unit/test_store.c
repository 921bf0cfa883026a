/* test_store.c: the registry: insert/get/remove, limits, replace, list
 * ordering and pagination with prefix and label filters, ttl expiry, the
 * durability hook's failure paths, and all of it under threads. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_internal.h"
#include "store.h"

static optd_session_t *mk(const char *name, size_t size, optd_optim_kind_t kind)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = kind, .dtype = OPTD_FLOAT64};
    optd_hparams_default(kind, &cfg.hp);
    optd_session_t *s = NULL;
    ck_assert_msg(optd_session_create(name, &cfg, size, NULL, 16, &s, &err) == 0, "%s", err.msg);
    return s;
}

static optd_store_t *mkstore(size_t max_sessions, size_t max_params)
{
    optd_store_limits_t lim = {.max_sessions = max_sessions, .max_params = max_params,
                               .history = 16};
    optd_store_t *st;
    optd_err_t err;
    ck_assert_int_eq(optd_store_new(&lim, &st, &err), 0);
    return st;
}

/* Inserts a fresh session and drops the caller's reference. */
static int put(optd_store_t *st, const char *name, size_t size)
{
    optd_err_t err;
    optd_session_t *s = mk(name, size, OPTD_SGD);
    int rc = optd_store_insert(st, s, false, NULL, &err);
    optd_session_release(s);
    return rc;
}

START_TEST(basic_and_limits)
{
    optd_err_t err;
    optd_store_t *st = mkstore(3, 25);
    ck_assert_int_eq(put(st, "a", 10), 0);
    ck_assert_int_eq(put(st, "a", 1), OPTD_EEXIST);
    ck_assert_int_eq(put(st, "b", 10), 0);
    ck_assert_int_eq(put(st, "c", 6), OPTD_ELIMIT); /* 26 params > 25 */
    ck_assert_int_eq(put(st, "c", 5), 0);
    ck_assert_int_eq(put(st, "d", 1), OPTD_ELIMIT); /* 4 sessions > 3 */
    ck_assert_uint_eq(optd_store_count(st), 3);
    ck_assert_uint_eq(optd_store_params(st), 25);

    optd_session_t *a = optd_store_get(st, "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(optd_store_get(st, "zz"));
    ck_assert_int_eq(optd_store_remove(st, "a", &err), 0);
    ck_assert_int_eq(optd_store_remove(st, "a", &err), OPTD_ENOTFOUND);
    ck_assert_ptr_null(optd_store_get(st, "a"));
    /* a user still holding it sees it deleted */
    double g[10] = {0};
    ck_assert_int_eq(optd_session_step(a, g, NULL, NULL, NULL, NULL, &err), OPTD_ENOTFOUND);
    ck_assert(optd_session_is_deleted(a));
    optd_session_release(a);
    ck_assert_uint_eq(optd_store_count(st), 2);
    ck_assert_uint_eq(optd_store_params(st), 15);

    /* replace (import) adjusts the parameter count by the difference */
    bool replaced = true;
    optd_session_t *b2 = mk("b", 20, OPTD_ADAM);
    ck_assert_int_eq(optd_store_insert(st, b2, true, &replaced, &err), 0);
    ck_assert(replaced);
    ck_assert_uint_eq(optd_store_params(st), 25);
    optd_session_release(b2);
    optd_session_t *b3 = mk("b", 21, OPTD_ADAM);
    ck_assert_int_eq(optd_store_insert(st, b3, true, &replaced, &err), OPTD_ELIMIT);
    optd_session_release(b3);
    optd_session_t *n = mk("new", 3, OPTD_ADAM);
    ck_assert_int_eq(optd_store_insert(st, n, true, &replaced, &err), OPTD_ELIMIT); /* 28 */
    optd_session_release(n);
    ck_assert_int_eq(optd_store_remove(st, "c", &err), 0);
    n = mk("new", 5, OPTD_ADAM);
    ck_assert_int_eq(optd_store_insert(st, n, true, &replaced, &err), 0);
    ck_assert(!replaced);
    optd_session_release(n);
    ck_assert_uint_eq(optd_store_count(st), 2);
    ck_assert_uint_eq(optd_store_params(st), 25);
    optd_store_free(st);
}
END_TEST

static void names_of(optd_session_t **v, size_t n, char *buf, size_t cap)
{
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        strncat(buf, v[i]->name, cap - strlen(buf) - 2);
        strncat(buf, " ", cap - strlen(buf) - 1);
    }
}

static void free_list(optd_session_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        optd_session_release(v[i]);
    free(v);
}

START_TEST(list_pagination_and_filters)
{
    optd_err_t err;
    optd_store_t *st = mkstore(1000, 0);
    const char *names[] = {"run-3", "run-10", "alpha", "run-1", "beta", "Zeta", "run-2"};
    for (size_t i = 0; i < 7; i++) {
        optd_session_t *s = mk(names[i], 1, OPTD_SGD);
        char v[8];
        snprintf(v, sizeof v, "%zu", i % 2);
        ck_assert_int_eq(optd_session_config_add_label(&s->cfg, "odd", v, &err), 0);
        ck_assert_int_eq(optd_session_config_add_label(&s->cfg, "study", "x", &err), 0);
        ck_assert_int_eq(optd_store_insert(st, s, false, NULL, &err), 0);
        optd_session_release(s);
    }
    optd_session_t **v;
    size_t n;
    bool more;
    char buf[256];
    optd_store_query_t q = {.limit = 3};
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    names_of(v, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "Zeta alpha beta ");
    ck_assert(more);
    q.after = "beta";
    free_list(v, n);
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    names_of(v, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "run-1 run-10 run-2 ");
    ck_assert(more);
    free_list(v, n);
    q.after = "run-2";
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    names_of(v, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "run-3 ");
    ck_assert(!more);
    free_list(v, n);
    /* exactly limit matches left: no more */
    q.after = "run-10";
    q.limit = 2;
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(!more);
    free_list(v, n);

    optd_store_query_t p = {.prefix = "run-", .limit = 100};
    ck_assert_int_eq(optd_store_list(st, &p, &v, &n, &more, &err), 0);
    names_of(v, n, buf, sizeof buf);
    ck_assert_str_eq(buf, "run-1 run-10 run-2 run-3 ");
    free_list(v, n);

    optd_label_t want[2] = {{"odd", "1"}, {"study", "x"}};
    optd_store_query_t l = {.labels = want, .n_labels = 2, .limit = 2};
    ck_assert_int_eq(optd_store_list(st, &l, &v, &n, &more, &err), 0);
    names_of(v, n, buf, sizeof buf); /* odd: run-10 (1), run-1 (3), Zeta (5) */
    ck_assert_str_eq(buf, "Zeta run-1 ");
    ck_assert(more);
    free_list(v, n);
    optd_label_t none[1] = {{"study", "y"}};
    l.labels = none;
    l.n_labels = 1;
    ck_assert_int_eq(optd_store_list(st, &l, &v, &n, &more, &err), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert(!more);
    free_list(v, n);
    optd_store_free(st);
}
END_TEST

static void count_expired(const char *name, void *arg)
{
    (void)name;
    (*(int *)arg)++;
}

START_TEST(ttl_expiry)
{
    optd_err_t err;
    optd_store_t *st = mkstore(10, 0);
    optd_session_t *a = mk("a", 1, OPTD_SGD), *b = mk("b", 1, OPTD_SGD), *c = mk("c", 1, OPTD_SGD);
    a->cfg.ttl_seconds = 10;
    b->cfg.ttl_seconds = 10;
    ck_assert_int_eq(optd_store_insert(st, a, false, NULL, &err), 0);
    ck_assert_int_eq(optd_store_insert(st, b, false, NULL, &err), 0);
    ck_assert_int_eq(optd_store_insert(st, c, false, NULL, &err), 0);
    int64_t now = optd_now_ms();
    int calls = 0;
    ck_assert_uint_eq(optd_store_expire(st, now + 5000, count_expired, &calls), 0);
    /* a was used at now+8s, so it is idle only 7 s at now+15s */
    atomic_store(&a->accessed_ms, now + 8000);
    ck_assert_uint_eq(optd_store_expire(st, now + 15000, count_expired, &calls), 1);
    ck_assert_int_eq(calls, 1);
    ck_assert_ptr_null(optd_store_get(st, "b"));
    ck_assert(optd_session_is_deleted(b));
    /* c has no ttl: never expires */
    ck_assert_uint_eq(optd_store_expire(st, now + 10000000, NULL, NULL), 1);
    ck_assert_uint_eq(optd_store_count(st), 1);
    optd_session_t *g = optd_store_get(st, "c");
    ck_assert_ptr_eq(g, c);
    optd_session_release(g);
    optd_session_release(a);
    optd_session_release(b);
    optd_session_release(c);
    optd_store_free(st);
}
END_TEST

/* ---- durability hook failures -------------------------------------------- */

typedef struct fake_dur {
    int fail_commit, fail_remove;
    int commits, removes;
} fake_dur_t;

static int fake_commit(void *ctx, struct optd_session *s, optd_err_t *err)
{
    (void)s;
    fake_dur_t *f = ctx;
    f->commits++;
    return f->fail_commit ? optd_err_set(err, OPTD_EIO, "disk full") : 0;
}

static int fake_remove(void *ctx, const char *name, bool batch, optd_err_t *err)
{
    (void)name;
    (void)batch;
    fake_dur_t *f = ctx;
    f->removes++;
    return f->fail_remove ? optd_err_set(err, OPTD_EIO, "disk full") : 0;
}

START_TEST(durable_insert_and_remove)
{
    optd_err_t err;
    fake_dur_t f = {0};
    optd_durability_t dur = {.ctx = &f, .commit = fake_commit, .remove = fake_remove};
    optd_store_t *st = mkstore(10, 0);
    optd_store_set_durability(st, &dur);
    ck_assert_int_eq(put(st, "a", 4), 0);
    ck_assert_int_eq(f.commits, 1);

    f.fail_commit = 1;
    ck_assert_int_eq(put(st, "b", 4), OPTD_EIO);
    ck_assert_ptr_null(optd_store_get(st, "b"));
    ck_assert_uint_eq(optd_store_count(st), 1);
    ck_assert_uint_eq(optd_store_params(st), 4);

    /* a failed import leaves the old session in place and usable */
    optd_session_t *old = optd_store_get(st, "a");
    optd_session_t *imp = mk("a", 7, OPTD_ADAM);
    bool replaced = true;
    ck_assert_int_eq(optd_store_insert(st, imp, true, &replaced, &err), OPTD_EIO);
    ck_assert(!replaced);
    optd_session_release(imp);
    optd_session_t *now = optd_store_get(st, "a");
    ck_assert_ptr_eq(now, old);
    ck_assert(!optd_session_is_deleted(old));
    ck_assert_uint_eq(optd_store_params(st), 4);
    optd_session_release(now);
    f.fail_commit = 0;
    double g[4] = {1, 1, 1, 1};
    ck_assert_int_eq(optd_session_step(old, g, NULL, NULL, NULL, NULL, &err), 0);

    /* a delete that cannot be made durable removes nothing */
    f.fail_remove = 1;
    ck_assert_int_eq(optd_store_remove(st, "a", &err), OPTD_EIO);
    ck_assert(!optd_session_is_deleted(old));
    ck_assert_uint_eq(optd_store_count(st), 1);
    f.fail_remove = 0;
    ck_assert_int_eq(optd_store_remove(st, "a", &err), 0);
    ck_assert_int_eq(f.removes, 2);
    ck_assert(optd_session_is_deleted(old));
    optd_session_release(old);
    optd_store_free(st);
}
END_TEST

/* ---- threads ------------------------------------------------------------------ */

#define THREADS 8
#define STEPS 1000

typedef struct step_arg {
    optd_store_t *st;
    int failures;
    uint64_t last_step;
} step_arg_t;

static void *stepper(void *p)
{
    step_arg_t *a = p;
    double g[5] = {0.1, -0.2, 0.3, -0.4, 0.5}, out[5];
    optd_err_t err;
    uint64_t prev = 0;
    for (int i = 0; i < STEPS; i++) {
        optd_session_t *s = optd_store_get(a->st, "shared");
        uint64_t step;
        if (!s || optd_session_step(s, g, NULL, NULL, &step, out, &err) != 0 || step <= prev)
            a->failures++;
        prev = step;
        optd_session_release(s);
    }
    a->last_step = prev;
    return NULL;
}

START_TEST(many_threads_one_session)
{
    optd_err_t err;
    optd_store_t *st = mkstore(10, 0);
    optd_session_t *s = mk("shared", 5, OPTD_ADAM);
    ck_assert_int_eq(optd_store_insert(st, s, false, NULL, &err), 0);
    pthread_t th[THREADS];
    step_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (step_arg_t){.st = st};
        ck_assert_int_eq(pthread_create(&th[i], NULL, stepper, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    double got[5];
    ck_assert_uint_eq(optd_session_copy_params(s, got), THREADS * STEPS);

    /* every gradient was the same, so the result equals a serial run */
    optd_session_t *ref = mk("ref", 5, OPTD_ADAM);
    double g[5] = {0.1, -0.2, 0.3, -0.4, 0.5}, want[5];
    for (int i = 0; i < THREADS * STEPS; i++)
        ck_assert_int_eq(optd_session_step(ref, g, NULL, NULL, NULL, want, &err), 0);
    ck_assert_mem_eq(got, want, sizeof got);
    optd_session_release(ref);
    optd_session_release(s);
    optd_store_free(st);
}
END_TEST

typedef struct churn_arg {
    optd_store_t *st;
    int id;
    int errors;
} churn_arg_t;

/* Creates, steps, lists and removes sessions of its own and of a shared
 * pool of names, so inserts, removes and lists race on the same names. */
static void *churner(void *p)
{
    churn_arg_t *a = p;
    optd_err_t err;
    double g[3] = {1, 2, 3};
    unsigned seed = (unsigned)a->id * 7919u + 1;
    for (int i = 0; i < 2000; i++) {
        char name[32];
        snprintf(name, sizeof name, "pool-%d", rand_r(&seed) % 16);
        int op = rand_r(&seed) % 4;
        if (op == 0) {
            optd_session_t *s = mk(name, 3, OPTD_SGD);
            int rc = optd_store_insert(a->st, s, rand_r(&seed) % 2, NULL, &err);
            if (rc != 0 && rc != OPTD_EEXIST && rc != OPTD_ELIMIT)
                a->errors++;
            optd_session_release(s);
        } else if (op == 1) {
            int rc = optd_store_remove(a->st, name, &err);
            if (rc != 0 && rc != OPTD_ENOTFOUND)
                a->errors++;
        } else if (op == 2) {
            optd_session_t *s = optd_store_get(a->st, name);
            if (s) {
                int rc = optd_session_step(s, g, NULL, NULL, NULL, NULL, &err);
                if (rc != 0 && rc != OPTD_ENOTFOUND)
                    a->errors++;
                optd_session_release(s);
            }
        } else {
            optd_store_query_t q = {.prefix = "pool-", .limit = 5};
            optd_session_t **v;
            size_t n;
            bool more;
            if (optd_store_list(a->st, &q, &v, &n, &more, &err) != 0)
                a->errors++;
            for (size_t k = 1; k < n; k++)
                if (strcmp(v[k - 1]->name, v[k]->name) >= 0)
                    a->errors++;
            free_list(v, n);
        }
    }
    return NULL;
}

START_TEST(racing_inserts_removes_lists)
{
    optd_store_t *st = mkstore(12, 0);
    pthread_t th[THREADS];
    churn_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (churn_arg_t){.st = st, .id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, churner, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(args[i].errors, 0);
    }
    /* the counters agree with what is in the table */
    optd_session_t **v;
    size_t n;
    bool more;
    optd_err_t err;
    optd_store_query_t q = {.limit = 1000};
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    ck_assert_uint_eq(n, optd_store_count(st));
    ck_assert_uint_le(n, 12);
    ck_assert_uint_eq(optd_store_params(st), 3 * n);
    free_list(v, n);
    optd_store_free(st);
}
END_TEST

/* ---- memory budget, replace in place, PATCH ------------------------------------- */

static optd_store_t *mkstore_mem(size_t max_memory)
{
    optd_store_limits_t lim = {.max_sessions = 100, .history = 16, .max_memory = max_memory};
    optd_store_t *st;
    optd_err_t err;
    ck_assert_int_eq(optd_store_new(&lim, &st, &err), 0);
    return st;
}

static size_t used_bytes(optd_store_t *st)
{
    size_t used, max;
    optd_store_memory(st, &used, &max);
    return used;
}

/* Imports a fresh adam session of size n under name: the import's rc. */
static int import_adam(optd_store_t *st, const char *name, size_t n, optd_err_t *err)
{
    optd_session_t *s = mk(name, n, OPTD_ADAM), *live = NULL;
    bool replaced;
    int rc = optd_store_import(st, s, &live, &replaced, err);
    optd_session_release(s);
    if (live)
        optd_session_release(live);
    return rc;
}

static int patch_amsgrad(optd_session_t *s, bool on, optd_err_t *err)
{
    const optd_optim_desc_t *d = optd_optim_desc(OPTD_ADAM);
    optd_session_patch_t p = {.kind = OPTD_ADAM};
    for (size_t i = 0; i < d->n_hparams; i++)
        if (strcmp(d->hparams[i].name, "amsgrad") == 0)
            p.hp_set |= 1u << i;
    p.hp.amsgrad = on;
    optd_session_desc_t out;
    int rc = optd_session_patch(s, &p, &out, err);
    optd_session_config_free(&out.cfg);
    return rc;
}

START_TEST(memory_budget)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = OPTD_ADAM, .dtype = OPTD_FLOAT64};
    optd_hparams_default(OPTD_ADAM, &cfg.hp);
    size_t one = optd_session_bytes(&cfg, 1000, 0, 16);
    /* params and two buffers; amsgrad adds a third */
    ck_assert_uint_ge(one, 3 * 8000);
    cfg.hp.amsgrad = true;
    ck_assert_uint_eq(optd_session_bytes(&cfg, 1000, 0, 16), one + 8000);

    optd_store_t *st = mkstore_mem(2 * one + 4000);
    ck_assert_int_eq(import_adam(st, "a", 1000, &err), 0);
    ck_assert_uint_eq(used_bytes(st), one);
    ck_assert_int_eq(import_adam(st, "b", 1000, &err), 0);
    ck_assert_int_eq(import_adam(st, "c", 1000, &err), OPTD_ELIMIT);
    ck_assert_msg(strstr(err.msg, "left") != NULL, "%s", err.msg);
    ck_assert_ptr_null(optd_store_get(st, "c"));
    ck_assert_uint_eq(used_bytes(st), 2 * one);

    /* a replace counts the difference: the same size fits a full budget */
    ck_assert_int_eq(import_adam(st, "a", 1000, &err), 0);
    ck_assert_uint_eq(used_bytes(st), 2 * one);
    ck_assert_int_eq(import_adam(st, "a", 2000, &err), OPTD_ELIMIT);

    /* turning amsgrad on reserves its buffer, before any step allocates it */
    optd_session_t *a = optd_store_get(st, "a");
    ck_assert_int_eq(patch_amsgrad(a, true, &err), OPTD_ELIMIT);
    ck_assert(!a->cfg.hp.amsgrad);
    ck_assert_int_eq(optd_store_remove(st, "b", &err), 0);
    ck_assert_uint_eq(used_bytes(st), one);
    ck_assert_int_eq(patch_amsgrad(a, true, &err), 0);
    ck_assert_uint_eq(used_bytes(st), one + 8000);
    double g[1000] = {0};
    ck_assert_int_eq(optd_session_step(a, g, NULL, NULL, NULL, NULL, &err), 0);
    /* the buffer stays once made: turning amsgrad off returns nothing */
    ck_assert_int_eq(patch_amsgrad(a, false, &err), 0);
    ck_assert_uint_eq(used_bytes(st), one + 8000);

    /* a reservation is returned when the session is freed, not before */
    ck_assert_int_eq(optd_store_remove(st, "a", &err), 0);
    ck_assert_uint_eq(used_bytes(st), one + 8000);
    optd_session_release(a);
    ck_assert_uint_eq(used_bytes(st), 0);

    /* reserve/unreserve for other holders, and charge's settling */
    ck_assert_int_eq(optd_store_reserve(st, 2 * one + 4001, &err), OPTD_ELIMIT);
    ck_assert_int_eq(optd_store_reserve(st, 100, &err), 0);
    optd_session_t *s = mk("d", 1000, OPTD_ADAM);
    ck_assert_int_eq(optd_store_charge(st, s, 100, &err), 0);
    ck_assert_uint_eq(used_bytes(st), one);
    ck_assert_int_eq(optd_store_insert(st, s, false, NULL, &err), 0);
    ck_assert_uint_eq(used_bytes(st), one);
    optd_session_release(s);
    optd_store_free(st);
}
END_TEST

START_TEST(replace_keeps_the_session)
{
    optd_err_t err;
    optd_store_t *st = mkstore(10, 0);
    ck_assert_int_eq(put(st, "a", 4), 0);
    ck_assert_int_eq(put(st, "b", 4), 0);
    optd_session_t *held = optd_store_get(st, "a");
    /* same shape (size, dtype, optimizer): changed in place */
    optd_session_t *imp = mk("a", 4, OPTD_SGD), *live = NULL;
    imp->cfg.hp.lr = 0.5;
    bool replaced = false;
    ck_assert_int_eq(optd_store_import(st, imp, &live, &replaced, &err), 0);
    ck_assert(replaced);
    /* readers holding the session see the new contents, not a deleted one */
    ck_assert_ptr_eq(live, held);
    ck_assert(!optd_session_is_deleted(held));
    ck_assert(held->cfg.hp.lr == 0.5);
    ck_assert(imp->cfg.hp.lr != 0.5); /* the old contents, freed with imp */
    double g[7] = {1, 1, 1, 1, 1, 1, 1};
    uint64_t step;
    ck_assert_int_eq(optd_session_step(held, g, NULL, NULL, &step, NULL, &err), 0);
    ck_assert_uint_eq(step, 1);
    optd_session_release(imp);
    optd_session_release(live);

    /* another shape: a new session in its place, in one change (handlers
     * read size and dtype without the lock, so they never change) */
    imp = mk("a", 7, OPTD_ADAM);
    ck_assert_int_eq(optd_store_import(st, imp, &live, &replaced, &err), 0);
    ck_assert(replaced);
    ck_assert_ptr_eq(live, imp);
    ck_assert(optd_session_is_deleted(held));
    ck_assert_uint_eq(held->size, 4);
    ck_assert_uint_eq(optd_store_params(st), 11);
    ck_assert_uint_eq(optd_store_count(st), 2);
    optd_session_t *now = optd_store_get(st, "a");
    ck_assert_ptr_eq(now, imp);
    optd_session_release(now);
    optd_session_release(live);
    optd_session_release(imp);
    optd_session_release(held);
    held = optd_store_get(st, "a");

    /* an import racing a delete: the delete first, then a fresh create */
    ck_assert_int_eq(optd_store_remove(st, "a", &err), 0);
    imp = mk("a", 3, OPTD_SGD);
    ck_assert_int_eq(optd_store_import(st, imp, &live, &replaced, &err), 0);
    ck_assert(!replaced);
    ck_assert_ptr_eq(live, imp);
    ck_assert(optd_session_is_deleted(held));
    optd_session_release(live);
    optd_session_release(imp);
    optd_session_release(held);
    ck_assert_uint_eq(optd_store_count(st), 2);
    optd_store_query_t q = {.limit = 10};
    optd_session_t **v;
    size_t n;
    bool more;
    ck_assert_int_eq(optd_store_list(st, &q, &v, &n, &more, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(v[0]->name, "a");
    free_list(v, n);
    optd_store_free(st);
}
END_TEST

typedef struct replace_arg {
    optd_store_t *st;
    bool reshape; /* every third import changes the size */
    atomic_bool stop;
    int missing, step_deleted, listed_without, errors;
} replace_arg_t;

static void *replacer(void *p)
{
    replace_arg_t *a = p;
    optd_err_t err;
    for (int i = 0; i < 3000; i++) {
        size_t size = a->reshape && i % 3 == 0 ? 2 : 3;
        optd_session_t *s = mk("r", size, a->reshape && i % 2 ? OPTD_ADAM : OPTD_SGD), *live = NULL;
        bool replaced;
        if (optd_store_import(a->st, s, &live, &replaced, &err) != 0 || !replaced)
            a->errors++;
        optd_session_release(s);
        if (live)
            optd_session_release(live);
    }
    atomic_store(&a->stop, true);
    return NULL;
}

/* Steps and lists while "r" is replaced over and over: never a missing
 * or deleted session (the issue saw 404s and listings without it). */
static void *reader(void *p)
{
    replace_arg_t *a = p;
    optd_err_t err;
    double g[3] = {1, 2, 3};
    while (!atomic_load(&a->stop)) {
        optd_session_t *s = optd_store_get(a->st, "r");
        if (!s) {
            a->missing++;
            continue;
        }
        if (optd_session_step(s, g, NULL, NULL, NULL, NULL, &err) == OPTD_ENOTFOUND)
            a->step_deleted++;
        optd_session_release(s);
        optd_store_query_t q = {.limit = 10};
        optd_session_t **v;
        size_t n;
        bool more;
        if (optd_store_list(a->st, &q, &v, &n, &more, &err) == 0) {
            bool seen = false;
            for (size_t k = 0; k < n; k++)
                seen |= strcmp(v[k]->name, "r") == 0;
            a->listed_without += !seen;
            free_list(v, n);
        }
    }
    return NULL;
}

static void run_replace_under_readers(bool reshape, replace_arg_t *a)
{
    optd_err_t err;
    optd_store_t *st = mkstore(10, 0);
    optd_session_t *s = mk("r", 3, OPTD_SGD);
    ck_assert_int_eq(optd_store_insert(st, s, false, NULL, &err), 0);
    optd_session_release(s);
    a->st = st;
    a->reshape = reshape;
    pthread_t w, r[3];
    ck_assert_int_eq(pthread_create(&w, NULL, replacer, a), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&r[i], NULL, reader, a), 0);
    pthread_join(w, NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(r[i], NULL);
    optd_store_free(st);
}

START_TEST(replace_under_readers)
{
    /* same shape: changed in place, never seen deleted */
    replace_arg_t a = {0};
    run_replace_under_readers(false, &a);
    ck_assert_int_eq(a.errors, 0);
    ck_assert_int_eq(a.missing, 0);
    ck_assert_int_eq(a.step_deleted, 0);
    ck_assert_int_eq(a.listed_without, 0);
    /* new shapes: a new session takes the name in one change, so the name
     * is never missing from lookups or listings (a step already holding
     * the retired one is refused as deleted) */
    replace_arg_t b = {0};
    run_replace_under_readers(true, &b);
    ck_assert_int_eq(b.errors, 0);
    ck_assert_int_eq(b.missing, 0);
    ck_assert_int_eq(b.listed_without, 0);
}
END_TEST

/* Two writers of different fields never undo each other's PATCH. */
typedef struct patch_arg {
    optd_session_t *s;
    int which; /* 0: lr, 1: weight_decay */
    int errors;
} patch_arg_t;

static void *patcher(void *p)
{
    patch_arg_t *a = p;
    const optd_optim_desc_t *d = optd_optim_desc(OPTD_ADAM);
    const char *field = a->which ? "weight_decay" : "lr";
    uint32_t bit = 0;
    for (size_t i = 0; i < d->n_hparams; i++)
        if (strcmp(d->hparams[i].name, field) == 0)
            bit = 1u << i;
    for (int i = 1; i <= 2000; i++) {
        optd_session_patch_t pt = {.kind = OPTD_ADAM, .hp_set = bit};
        double v = i * 1e-4;
        if (a->which)
            pt.hp.weight_decay = v;
        else
            pt.hp.lr = v;
        optd_session_desc_t out;
        optd_err_t err;
        if (optd_session_patch(a->s, &pt, &out, &err) != 0) {
            a->errors++;
            continue;
        }
        /* the answer shows this patch's own value */
        if ((a->which ? out.cfg.hp.weight_decay : out.cfg.hp.lr) != v)
            a->errors++;
        optd_session_config_free(&out.cfg);
    }
    return NULL;
}

START_TEST(patches_merge_under_the_lock)
{
    optd_session_t *s = mk("p", 3, OPTD_ADAM);
    patch_arg_t a[2] = {{.s = s, .which = 0}, {.s = s, .which = 1}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, patcher, &a[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(a[i].errors, 0);
    }
    ck_assert(s->cfg.hp.lr == 2000 * 1e-4);
    ck_assert(s->cfg.hp.weight_decay == 2000 * 1e-4);
    optd_session_release(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, basic_and_limits);
    tcase_add_test(tc, list_pagination_and_filters);
    tcase_add_test(tc, ttl_expiry);
    tcase_add_test(tc, durable_insert_and_remove);
    tcase_add_test(tc, many_threads_one_session);
    tcase_add_test(tc, racing_inserts_removes_lists);
    tcase_add_test(tc, memory_budget);
    tcase_add_test(tc, replace_keeps_the_session);
    tcase_add_test(tc, replace_under_readers);
    tcase_add_test(tc, patches_merge_under_the_lock);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
