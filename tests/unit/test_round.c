/* test_round.c: the pure parts of a round (round.h): the reduction sums in
 * double in the order given (first value, then each added), divides once
 * for mean and rounds once to the dtype; the contributions sort by
 * bytewise name; the table of workers' last steps stays sorted, bounded
 * and copyable; and a session's round through optd_session_contribute is
 * the same bits as one plain step, whatever the arrival order. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "round.h"
#include "session_internal.h"

START_TEST(reduce_f64_order_and_mean)
{
    /* 1e16 + 1 - 1e16: the order decides (0 in this order, not 1). */
    double a[2] = {1e16, 1.0}, b[2] = {1.0, 2.0}, c[2] = {-1e16, 4.0}, out[2];
    const void *g[3] = {a, b, c};
    optd_round_reduce(OPTD_FLOAT64, 2, g, 3, OPTD_REDUCE_SUM, out);
    ck_assert(out[0] == (1e16 + 1.0) + -1e16);
    ck_assert(out[1] == 7.0);
    optd_round_reduce(OPTD_FLOAT64, 2, g, 3, OPTD_REDUCE_MEAN, out);
    ck_assert(out[1] == 7.0 / 3.0);
    /* In place into the first gradient. */
    optd_round_reduce(OPTD_FLOAT64, 2, g, 3, OPTD_REDUCE_MEAN, a);
    ck_assert(a[1] == 7.0 / 3.0);
}
END_TEST

START_TEST(reduce_f32_rounds_once)
{
    /* In float32 arithmetic 16777216 + 1 + 1 is 16777216; in double, then
     * rounded once, it is 16777218. */
    float a[1] = {16777216.0f}, b[1] = {1.0f}, c[1] = {1.0f}, out[1];
    const void *g[3] = {a, b, c};
    optd_round_reduce(OPTD_FLOAT32, 1, g, 3, OPTD_REDUCE_SUM, out);
    ck_assert(out[0] == 16777218.0f);
    optd_round_reduce(OPTD_FLOAT32, 1, g, 3, OPTD_REDUCE_MEAN, out);
    ck_assert(out[0] == (float)(16777218.0 / 3.0));
}
END_TEST

START_TEST(reduce_blocks)
{
    /* Sizes around the block of 512 elements. */
    size_t sizes[] = {1, 511, 512, 513, 1500};
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        size_t n = sizes[t];
        double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *o = malloc(n * sizeof *o);
        for (size_t i = 0; i < n; i++) {
            x[i] = (double)i * 0.25;
            y[i] = -(double)i;
        }
        const void *g[2] = {x, y};
        optd_round_reduce(OPTD_FLOAT64, n, g, 2, OPTD_REDUCE_MEAN, o);
        for (size_t i = 0; i < n; i++)
            ck_assert(o[i] == (x[i] + y[i]) / 2.0);
        free(x), free(y), free(o);
    }
}
END_TEST

START_TEST(sort_is_bytewise)
{
    optd_contribution_t in[4] = {0};
    const char *names[4] = {"b", "a", "B", "a0"};
    for (int i = 0; i < 4; i++)
        strcpy(in[i].worker, names[i]);
    optd_round_t r = {.n = 4, .cap = 4, .in = in};
    optd_round_sort(&r);
    ck_assert_str_eq(in[0].worker, "B");
    ck_assert_str_eq(in[1].worker, "a");
    ck_assert_str_eq(in[2].worker, "a0");
    ck_assert_str_eq(in[3].worker, "b");
    ck_assert_int_eq(optd_round_find(&r, "a0"), 2);
    ck_assert_int_eq(optd_round_find(&r, "c"), -1);
}
END_TEST

START_TEST(worker_steps_table)
{
    optd_worker_steps_t ws = {0};
    optd_err_t err;
    uint64_t v;
    ck_assert(!optd_worker_steps_get(&ws, "x", &v));
    for (int i = 0; i < 10; i++) {
        char name[8];
        snprintf(name, sizeof name, "w%d", 9 - i);
        ck_assert_int_eq(optd_worker_steps_set(&ws, name, (uint64_t)i, 100, &err), 0);
    }
    ck_assert_int_eq(optd_worker_steps_set(&ws, "w3", 77, 100, &err), 0);
    ck_assert_uint_eq(ws.n, 10);
    for (size_t i = 1; i < ws.n; i++)
        ck_assert(strcmp(ws.v[i - 1].worker, ws.v[i].worker) < 0);
    ck_assert(optd_worker_steps_get(&ws, "w3", &v) && v == 77);
    /* Bounded: past keep, the oldest step goes (w9 had step 0). */
    ck_assert_int_eq(optd_worker_steps_set(&ws, "new", 50, 10, &err), 0);
    ck_assert_uint_eq(ws.n, 10);
    ck_assert(!optd_worker_steps_get(&ws, "w9", &v));
    ck_assert(optd_worker_steps_get(&ws, "new", &v) && v == 50);
    /* w9 (step 0) is forgotten: a name not held, at or before the oldest
     * step kept (w8's 1), may be it; after that step it cannot be; with
     * room left (keep above n) nothing was forgotten. */
    ck_assert(optd_worker_steps_maybe_forgotten(&ws, 0, 10));
    ck_assert(optd_worker_steps_maybe_forgotten(&ws, 1, 10));
    ck_assert(!optd_worker_steps_maybe_forgotten(&ws, 2, 10));
    /* A larger keep (a PATCH raised workers) still remembers what went. */
    ck_assert(optd_worker_steps_maybe_forgotten(&ws, 0, 11));
    ck_assert(!optd_worker_steps_maybe_forgotten(&ws, 1, 11));
    optd_worker_steps_t copy;
    ck_assert_int_eq(optd_worker_steps_copy(&copy, &ws, &err), 0);
    ck_assert_uint_eq(copy.n, ws.n);
    ck_assert_mem_eq(copy.v, ws.v, ws.n * sizeof *ws.v);
    optd_worker_steps_free(&copy);
    optd_worker_steps_free(&ws);
}
END_TEST

static optd_session_t *new_session(const char *name, uint32_t workers)
{
    optd_session_config_t cfg = {.kind = OPTD_ADAM, .dtype = OPTD_FLOAT32};
    optd_hparams_default(cfg.kind, &cfg.hp);
    cfg.aggregate.workers = workers;
    float init[3] = {0.5f, -1.0f, 2.0f};
    optd_session_t *s;
    optd_err_t err;
    ck_assert_int_eq(optd_session_create(name, &cfg, 3, init, 10, &s, &err), 0);
    return s;
}

START_TEST(round_is_one_plain_step_whatever_the_order)
{
    float g[3][3] = {{0.1f, -2.0f, 3.5f}, {1e-7f, 0.25f, -1.0f}, {7.0f, 0.0f, 1e3f}};
    const char *names[3] = {"c", "a", "b"};
    int orders[2][3] = {{0, 1, 2}, {2, 0, 1}};
    float results[2][3];
    for (int o = 0; o < 2; o++) {
        optd_session_t *s = new_session("r", 3);
        optd_err_t err;
        for (int k = 0; k < 3; k++) {
            int i = orders[o][k];
            optd_contribution_t c = {.step = 0, .grad = g[i]};
            strcpy(c.worker, names[i]);
            optd_contrib_result_t res;
            ck_assert_int_eq(optd_session_contribute(s, NULL, &c, &res, &err), 0);
            ck_assert_int_eq(res.state, k == 2 ? 1 : 0);
            ck_assert_int_eq(atomic_load(&res.outcome->done), k == 2);
            optd_round_outcome_release(res.outcome);
        }
        ck_assert_uint_eq(optd_session_copy_params(s, results[o]), 1);
        /* A retry of an applied contribution. */
        optd_contribution_t again = {.step = 0, .grad = g[0]};
        strcpy(again.worker, "c");
        optd_contrib_result_t res;
        ck_assert_int_eq(optd_session_contribute(s, NULL, &again, &res, &err), OPTD_ESTEP);
        optd_session_release(s);
    }
    ck_assert_mem_eq(results[0], results[1], sizeof results[0]);
    /* The plain step with the gradient reduced in name order a, b, c. */
    optd_session_t *p = new_session("p", 0);
    float red[3];
    for (int i = 0; i < 3; i++)
        red[i] = (float)((((double)g[1][i] + (double)g[2][i]) + (double)g[0][i]) / 3.0);
    optd_err_t err;
    uint64_t step;
    float after[3];
    ck_assert_int_eq(optd_session_step(p, red, NULL, NULL, &step, after, &err), 0);
    ck_assert_mem_eq(after, results[0], sizeof after);
    optd_session_release(p);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("round");
    TCase *tc = tcase_create("round");
    tcase_add_test(tc, reduce_f64_order_and_mean);
    tcase_add_test(tc, reduce_f32_rounds_once);
    tcase_add_test(tc, reduce_blocks);
    tcase_add_test(tc, sort_is_bytewise);
    tcase_add_test(tc, worker_steps_table);
    tcase_add_test(tc, round_is_one_plain_step_whatever_the_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
