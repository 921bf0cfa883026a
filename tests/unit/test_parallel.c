/* test_parallel.c: the update pool and the update spread over it
 * (daemon/parallel.h): every task of a run runs exactly once, concurrent
 * runs do not wait for each other, and an update gives the same bits with
 * no pool and with 1, 2 or 3 threads, the same bits as optd_optim_step
 * where the norm does not enter, and refuses a non-finite gradient with
 * nothing changed. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

/* ---- the pool ------------------------------------------------------------------ */

typedef struct count_job {
    atomic_int hits[64];
} count_job_t;

static void count_task(void *arg, unsigned i)
{
    count_job_t *j = arg;
    atomic_fetch_add(&j->hits[i], 1);
}

START_TEST(every_task_once)
{
    optd_err_t err;
    for (unsigned threads = 1; threads <= 4; threads++) {
        optd_pool_t *p;
        ck_assert_int_eq(optd_pool_new(threads, &p, &err), 0);
        ck_assert_uint_eq(optd_pool_threads(p), threads);
        for (int round = 0; round < 2000; round++) {
            count_job_t j;
            unsigned n = 1 + (unsigned)round % 64;
            for (unsigned i = 0; i < 64; i++)
                atomic_init(&j.hits[i], 0);
            optd_pool_run(p, n, count_task, &j);
            for (unsigned i = 0; i < 64; i++)
                ck_assert_int_eq(atomic_load(&j.hits[i]), i < n ? 1 : 0);
        }
        optd_pool_free(p);
    }
    /* No pool: the caller runs everything. */
    count_job_t j;
    for (unsigned i = 0; i < 64; i++)
        atomic_init(&j.hits[i], 0);
    optd_pool_run(NULL, 5, count_task, &j);
    for (unsigned i = 0; i < 5; i++)
        ck_assert_int_eq(atomic_load(&j.hits[i]), 1);
    ck_assert_uint_eq(optd_pool_threads(NULL), 1);
}
END_TEST

typedef struct racer {
    optd_pool_t *pool;
    int bad;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    for (int round = 0; round < 2000; round++) {
        count_job_t j;
        for (unsigned i = 0; i < 64; i++)
            atomic_init(&j.hits[i], 0);
        optd_pool_run(r->pool, 7, count_task, &j);
        for (unsigned i = 0; i < 7; i++)
            if (atomic_load(&j.hits[i]) != 1)
                r->bad++;
    }
    return NULL;
}

START_TEST(concurrent_runs)
{
    optd_err_t err;
    optd_pool_t *p;
    ck_assert_int_eq(optd_pool_new(3, &p, &err), 0);
    racer_t r[3] = {{p, 0}, {p, 0}, {p, 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].bad, 0);
    }
    optd_pool_free(p);
}
END_TEST

/* ---- the update ---------------------------------------------------------------- */

/* Not a multiple of any block or alignment. */
#define N (OPTD_PARALLEL_MIN_SIZE * 3 + 77)

typedef struct run {
    optd_optim_state_t st;
    void *params;
} run_t;

static void fill(optd_dtype_t dt, void *v, size_t n, unsigned seed, double scale)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        double x = ((double)(seed >> 8) / (double)(1u << 24) - 0.5) * scale;
        if (dt == OPTD_FLOAT32)
            ((float *)v)[i] = (float)x;
        else
            ((double *)v)[i] = x;
    }
}

static void run_init(run_t *r, optd_optim_kind_t kind, optd_dtype_t dt, size_t n,
                     const optd_hparams_t *hp)
{
    optd_err_t err;
    ck_assert_int_eq(optd_optim_state_init(&r->st, kind, dt, n, hp, &err), 0);
    r->params = malloc(n * optd_dtype_size(dt));
    ck_assert_ptr_nonnull(r->params);
    fill(dt, r->params, n, 1, 2.0);
}

static void run_free(run_t *r)
{
    optd_optim_state_free(&r->st);
    free(r->params);
}

static void assert_same(const run_t *a, const run_t *b)
{
    size_t bytes = a->st.size * optd_dtype_size(a->st.dtype);
    ck_assert_uint_eq(a->st.step, b->st.step);
    ck_assert_mem_eq(a->params, b->params, bytes);
    for (int k = 0; k < OPTD_BUF_COUNT; k++) {
        ck_assert((a->st.buf[k] == NULL) == (b->st.buf[k] == NULL));
        if (a->st.buf[k])
            ck_assert_mem_eq(a->st.buf[k], b->st.buf[k], bytes);
    }
    ck_assert(memcmp(&a->st.mu_product, &b->st.mu_product, sizeof(double)) == 0);
}

/* Three steps of kind with hp on every pool size; returns nothing, asserts. */
static void check_kind(optd_optim_kind_t kind, optd_dtype_t dt, size_t n, double max_grad_norm,
                       const optd_hparams_t *hp)
{
    optd_err_t err;
    optd_pool_t *pools[4] = {NULL};
    for (unsigned t = 1; t <= 3; t++)
        ck_assert_int_eq(optd_pool_new(t, &pools[t], &err), 0);
    void *g = malloc(n * optd_dtype_size(dt));
    ck_assert_ptr_nonnull(g);
    run_t ref, r[4];
    run_init(&ref, kind, dt, n, hp);
    for (int i = 0; i < 4; i++)
        run_init(&r[i], kind, dt, n, hp);
    optd_schedule_t sched = {.type = OPTD_SCHED_COSINE, .t_max = 10, .eta_min = 0.0, .warmup_steps = 1};
    for (unsigned step = 0; step < 3; step++) {
        fill(dt, g, n, 100 + step, 0.5);
        optd_step_info_t i0, i1;
        ck_assert_int_eq(optd_parallel_step(pools[0], &r[0].st, hp, &sched, max_grad_norm, r[0].params,
                                            g, &i0, &err),
                         0);
        for (int p = 1; p < 4; p++) {
            ck_assert_int_eq(optd_parallel_step(pools[p], &r[p].st, hp, &sched, max_grad_norm,
                                                r[p].params, g, &i1, &err),
                             0);
            ck_assert(i0.lr == i1.lr && i0.grad_norm == i1.grad_norm);
        }
        ck_assert_int_eq(optd_optim_step(&ref.st, hp, &sched, max_grad_norm, ref.params, g, &i1, &err), 0);
        /* The norm is summed by blocks; it may differ from one whole-range
         * sum in the last bits only. */
        ck_assert(fabs(i0.grad_norm - i1.grad_norm) <= 1e-12 * i1.grad_norm);
    }
    for (int p = 1; p < 4; p++)
        assert_same(&r[0], &r[p]);
    /* Without clipping the norm does not enter the update: optd_optim_step's
     * bits exactly.  (Small sizes take optd_optim_step itself.) */
    if (max_grad_norm == 0 || n < OPTD_PARALLEL_MIN_SIZE)
        assert_same(&r[0], &ref);
    run_free(&ref);
    for (int i = 0; i < 4; i++)
        run_free(&r[i]);
    free(g);
    for (unsigned t = 1; t <= 3; t++)
        optd_pool_free(pools[t]);
}

START_TEST(same_bits_every_thread_count)
{
    optd_optim_kind_t kind = (optd_optim_kind_t)(_i / 2);
    optd_dtype_t dt = _i % 2 ? OPTD_FLOAT64 : OPTD_FLOAT32;
    optd_hparams_t hp;
    optd_hparams_default(kind, &hp);
    /* Options that make the lazily created buffers appear. */
    if (kind == OPTD_SGD || kind == OPTD_RMSPROP)
        hp.momentum = 0.9;
    if (kind == OPTD_RMSPROP)
        hp.centered = true;
    if (kind == OPTD_ADAM)
        hp.amsgrad = true;
    check_kind(kind, dt, N, 0.0, &hp);
    check_kind(kind, dt, N, 1.0, &hp); /* clipping on: the norm matters */
    check_kind(kind, dt, 1000, 1.0, &hp);
}
END_TEST

START_TEST(non_finite_changes_nothing)
{
    optd_err_t err;
    optd_pool_t *p;
    ck_assert_int_eq(optd_pool_new(2, &p, &err), 0);
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    run_t r, copy;
    run_init(&r, OPTD_ADAM, OPTD_FLOAT64, N, &hp);
    run_init(&copy, OPTD_ADAM, OPTD_FLOAT64, N, &hp);
    double *g = malloc(N * sizeof *g);
    ck_assert_ptr_nonnull(g);
    fill(OPTD_FLOAT64, g, N, 3, 1.0);
    ck_assert_int_eq(optd_parallel_step(p, &r.st, &hp, NULL, 0.0, r.params, g, NULL, &err), 0);
    ck_assert_int_eq(optd_parallel_step(NULL, &copy.st, &hp, NULL, 0.0, copy.params, g, NULL, &err), 0);
    size_t where[] = {0, N / 2, N - 1};
    for (int k = 0; k < 3; k++) {
        double keep = g[where[k]];
        g[where[k]] = k == 1 ? INFINITY : NAN;
        ck_assert_int_eq(optd_parallel_step(p, &r.st, &hp, NULL, 0.0, r.params, g, NULL, &err),
                         OPTD_ENONFINITE);
        g[where[k]] = keep;
        assert_same(&r, &copy);
    }
    run_free(&r);
    run_free(&copy);
    free(g);
    optd_pool_free(p);
}
END_TEST

/* A vector cut into groups whose bounds fall inside the threads' ranges:
 * the grouped update on 1..3 threads gives the same bits as
 * optd_optim_step_groups on one (clipping off, so the blockwise norm does
 * not enter), with each group's own values (sgd's third group starts its
 * momentum at the second step). */
START_TEST(groups_same_bits_every_thread_count)
{
    optd_optim_kind_t kinds[3] = {OPTD_ADAMW, OPTD_SGD, OPTD_NADAM};
    for (int ki = 0; ki < 3; ki++) {
        optd_optim_kind_t kind = kinds[ki];
        optd_err_t err;
        optd_group_t g[3];
        for (int i = 0; i < 3; i++)
            optd_hparams_default(kind, &g[i].hp);
        g[0].size = 1001;
        g[1].size = N / 2;
        g[2].size = N - 1001 - N / 2;
        g[0].hp.lr = 0.05;
        g[1].hp.weight_decay = 0.0;
        g[2].hp.momentum_decay = 0.01;
        if (kind == OPTD_SGD)
            g[0].hp.momentum = 0.9;
        run_t ref, r[4];
        run_init(&ref, kind, OPTD_FLOAT32, N, &g[0].hp);
        ck_assert_int_eq(optd_optim_state_set_groups(&ref.st, g, 3, &err), 0);
        optd_pool_t *pools[4] = {NULL};
        for (unsigned t = 0; t < 4; t++) {
            if (t > 0)
                ck_assert_int_eq(optd_pool_new(t, &pools[t], &err), 0);
            run_init(&r[t], kind, OPTD_FLOAT32, N, &g[0].hp);
            ck_assert_int_eq(optd_optim_state_set_groups(&r[t].st, g, 3, &err), 0);
        }
        float *gr = malloc(N * sizeof *gr);
        ck_assert_ptr_nonnull(gr);
        for (unsigned step = 0; step < 3; step++) {
            if (step == 1 && kind == OPTD_SGD)
                g[2].hp.momentum = 0.5;
            fill(OPTD_FLOAT32, gr, N, 200 + step, 0.5);
            ck_assert_int_eq(optd_optim_step_groups(&ref.st, g, 3, NULL, 0.0, ref.params, gr, NULL, &err), 0);
            for (unsigned t = 0; t < 4; t++)
                ck_assert_int_eq(optd_parallel_step_groups(pools[t], &r[t].st, &g[0].hp, g, 3, NULL, 0.0,
                                                           r[t].params, gr, NULL, &err),
                                 0);
        }
        for (unsigned t = 0; t < 4; t++) {
            assert_same(&ref, &r[t]);
            for (int i = 0; i < 3; i++)
                ck_assert(ref.st.groups[i].mu_product == r[t].st.groups[i].mu_product &&
                          ref.st.groups[i].momentum_started == r[t].st.groups[i].momentum_started);
            run_free(&r[t]);
            optd_pool_free(pools[t]);
        }
        run_free(&ref);
        free(gr);
    }
}
END_TEST

/* An update spread over the pool that would overflow at two indices of the
 * last range is refused naming the first, with nothing changed; float32
 * sgd with momentum, whose first momentum step would also create its
 * buffer. */
START_TEST(non_finite_result_changes_nothing)
{
    optd_err_t err;
    optd_pool_t *p;
    ck_assert_int_eq(optd_pool_new(2, &p, &err), 0);
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    run_t r, copy;
    run_init(&r, OPTD_SGD, OPTD_FLOAT32, N, &hp);
    run_init(&copy, OPTD_SGD, OPTD_FLOAT32, N, &hp);
    float *g = malloc(N * sizeof *g);
    ck_assert_ptr_nonnull(g);
    fill(OPTD_FLOAT32, g, N, 3, 1.0);
    ck_assert_int_eq(optd_parallel_step(p, &r.st, &hp, NULL, 0.0, r.params, g, NULL, &err), 0);
    ck_assert_int_eq(optd_parallel_step(NULL, &copy.st, &hp, NULL, 0.0, copy.params, g, NULL, &err), 0);
    ((float *)r.params)[N - 3] = ((float *)copy.params)[N - 3] = 3e38f;
    ((float *)r.params)[N - 1] = ((float *)copy.params)[N - 1] = -3e38f;
    optd_optim_forget_bounds(&r.st);
    g[N - 3] = -1e37f;
    g[N - 1] = 1e37f;
    hp.lr = 10;
    hp.momentum = 0.5;
    ck_assert_int_eq(optd_parallel_step(p, &r.st, &hp, NULL, 0.0, r.params, g, NULL, &err), OPTD_ENONFINITE);
    char want[64];
    snprintf(want, sizeof want, "params[%zu] infinite", (size_t)(N - 3));
    ck_assert_msg(strstr(err.msg, want) != NULL, "%s", err.msg);
    assert_same(&r, &copy); /* also: no momentum_buffer */
    run_free(&r);
    run_free(&copy);
    free(g);
    optd_pool_free(p);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("parallel");
    TCase *tc = tcase_create("parallel");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_task_once);
    tcase_add_test(tc, concurrent_runs);
    tcase_add_loop_test(tc, same_bits_every_thread_count, 0, 2 * OPTD_OPTIM_COUNT);
    tcase_add_test(tc, non_finite_changes_nothing);
    tcase_add_test(tc, non_finite_result_changes_nothing);
    tcase_add_test(tc, groups_same_bits_every_thread_count);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
