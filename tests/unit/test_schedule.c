/* test_schedule.c: learning-rate schedules and their validation (API.md,
 * Schedules and Validation), worked out by hand, and that a step uses the
 * scheduled lr. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optd/optim.h"

static void expect_lr(const optd_schedule_t *s, double lr, uint64_t k, double want)
{
    double got = optd_schedule_lr(s, lr, k);
    ck_assert_msg(fabs(got - want) <= 1e-15 * fabs(want) + 1e-300,
                  "%s schedule, step %llu: got %.17g, want %.17g",
                  s ? optd_sched_type_name(s->type) : "no", (unsigned long long)k, got, want);
}

static optd_schedule_t sched(optd_sched_type_t type)
{
    optd_schedule_t s;
    memset(&s, 0, sizeof s);
    s.type = type;
    return s;
}

START_TEST(test_none_constant)
{
    for (uint64_t k = 1; k < 1000000; k = k * 7 + 1)
        expect_lr(NULL, 0.1, k, 0.1);
    optd_schedule_t s = sched(OPTD_SCHED_NONE);
    expect_lr(&s, 0.1, 5, 0.1);
    s = sched(OPTD_SCHED_CONSTANT);
    expect_lr(&s, 0.1, 1, 0.1);
    expect_lr(&s, 0.1, 99, 0.1);
    s.warmup_steps = 4;
    expect_lr(&s, 0.1, 1, 0.025);
    expect_lr(&s, 0.1, 2, 0.05);
    expect_lr(&s, 0.1, 3, 0.075);
    expect_lr(&s, 0.1, 4, 0.1);
    expect_lr(&s, 0.1, 5, 0.1);
    expect_lr(&s, 0.1, 1000, 0.1);
}
END_TEST

START_TEST(test_step_exponential)
{
    optd_schedule_t s = sched(OPTD_SCHED_STEP);
    s.step_size = 3;
    s.gamma = 0.5;
    expect_lr(&s, 0.1, 1, 0.1);
    expect_lr(&s, 0.1, 3, 0.1);
    expect_lr(&s, 0.1, 4, 0.05);
    expect_lr(&s, 0.1, 6, 0.05);
    expect_lr(&s, 0.1, 7, 0.025);
    expect_lr(&s, 0.1, 31, 0.1 * pow(0.5, 10));
    /* warmup 2 then the schedule from its own step 1 */
    s.warmup_steps = 2;
    expect_lr(&s, 0.1, 1, 0.05);
    expect_lr(&s, 0.1, 2, 0.1);
    expect_lr(&s, 0.1, 3, 0.1);
    expect_lr(&s, 0.1, 5, 0.1);
    expect_lr(&s, 0.1, 6, 0.05);

    s = sched(OPTD_SCHED_EXPONENTIAL);
    s.gamma = 0.9;
    expect_lr(&s, 0.1, 1, 0.1);
    expect_lr(&s, 0.1, 2, 0.1 * 0.9);
    expect_lr(&s, 0.1, 3, 0.1 * pow(0.9, 2));
    expect_lr(&s, 0.1, 101, 0.1 * pow(0.9, 100));
    s.warmup_steps = 10;
    expect_lr(&s, 0.1, 5, 0.05);
    expect_lr(&s, 0.1, 11, 0.1);
    expect_lr(&s, 0.1, 12, 0.1 * 0.9);
}
END_TEST

START_TEST(test_cosine)
{
    optd_schedule_t s = sched(OPTD_SCHED_COSINE);
    s.t_max = 10;
    s.eta_min = 0.01;
    const double lr = 0.1, e = 0.01;
    expect_lr(&s, lr, 1, lr);
    expect_lr(&s, lr, 6, e + (lr - e) / 2);
    expect_lr(&s, lr, 3, e + (lr - e) * (1 + cos(M_PI * 2 / 10)) / 2);
    expect_lr(&s, lr, 11, e);
    /* after T it stays at eta_min (PyTorch's closed form would climb) */
    for (uint64_t k = 12; k < 100000; k = k * 3 + 1)
        ck_assert(optd_schedule_lr(&s, lr, k) == e);
    /* eta_min 0 ends at exactly 0 */
    s.eta_min = 0;
    ck_assert(optd_schedule_lr(&s, lr, 11) == 0.0);
    ck_assert(optd_schedule_lr(&s, lr, 500) == 0.0);
    /* warmup, then the cosine from its own step 1 */
    s.eta_min = e;
    s.warmup_steps = 5;
    expect_lr(&s, lr, 1, lr / 5);
    expect_lr(&s, lr, 5, lr);
    expect_lr(&s, lr, 6, lr);
    expect_lr(&s, lr, 11, e + (lr - e) / 2);
    expect_lr(&s, lr, 16, e);
    expect_lr(&s, lr, 1000, e);
    /* t_max 1: lr at step 1, eta_min from step 2 */
    s.warmup_steps = 0;
    s.t_max = 1;
    expect_lr(&s, lr, 1, lr);
    expect_lr(&s, lr, 2, e);
}
END_TEST

static void expect_refused(const optd_schedule_t *s, const char *needle)
{
    optd_err_t err = {0, ""};
    ck_assert_int_eq(optd_schedule_validate(s, &err), OPTD_EINVAL);
    ck_assert_int_eq(err.code, OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void expect_accepted(const optd_schedule_t *s)
{
    optd_err_t err = {0, ""};
    ck_assert_msg(optd_schedule_validate(s, &err) == 0, "refused: %s", err.msg);
}

START_TEST(test_validate)
{
    optd_schedule_t s = sched(OPTD_SCHED_STEP);
    s.step_size = 1;
    s.gamma = 0.5;
    expect_accepted(&s);
    s.step_size = 0;
    expect_refused(&s, "step_size must be >= 1, got 0");
    s.step_size = -4;
    expect_refused(&s, "step_size");
    s.step_size = 2;
    s.gamma = 0;
    expect_refused(&s, "gamma");
    s.gamma = -1;
    expect_refused(&s, "gamma");
    s.gamma = NAN;
    expect_refused(&s, "gamma");
    s.gamma = INFINITY;
    expect_refused(&s, "gamma");
    s.gamma = 2.0; /* growth is allowed */
    expect_accepted(&s);
    s.warmup_steps = -1;
    expect_refused(&s, "warmup_steps must be >= 0, got -1");

    s = sched(OPTD_SCHED_EXPONENTIAL);
    s.gamma = 0;
    expect_refused(&s, "gamma must be a finite number > 0");
    s.gamma = 1e-300;
    expect_accepted(&s);

    s = sched(OPTD_SCHED_COSINE);
    s.t_max = 0;
    expect_refused(&s, "t_max must be >= 1, got 0");
    s.t_max = 1;
    expect_accepted(&s);
    s.eta_min = -0.1;
    expect_refused(&s, "eta_min");
    s.eta_min = NAN;
    expect_refused(&s, "eta_min");
    s.eta_min = 0;
    s.warmup_steps = 3;
    expect_accepted(&s);

    s = sched(OPTD_SCHED_CONSTANT);
    expect_accepted(&s);
    s.warmup_steps = -2;
    expect_refused(&s, "warmup_steps");
    s = sched(OPTD_SCHED_NONE);
    expect_accepted(&s);
    s.type = (optd_sched_type_t)42;
    expect_refused(&s, "type");
}
END_TEST

START_TEST(test_names)
{
    static const char *names[] = {"none", "constant", "step", "exponential", "cosine"};
    for (int i = 0; i < 5; i++) {
        optd_sched_type_t t;
        ck_assert_int_eq(optd_sched_type_parse(names[i], &t), 0);
        ck_assert_int_eq(t, i);
        ck_assert_str_eq(optd_sched_type_name(t), names[i]);
    }
    optd_sched_type_t t;
    ck_assert_int_eq(optd_sched_type_parse("linear", &t), OPTD_EINVAL);
    ck_assert_int_eq(optd_sched_type_parse(NULL, &t), OPTD_EINVAL);
}
END_TEST

/* A step uses (and reports) lr(k) for k = the step being applied. */
START_TEST(test_step_uses_schedule)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    hp.lr = 0.5;
    optd_schedule_t s = sched(OPTD_SCHED_STEP);
    s.step_size = 1;
    s.gamma = 0.5;
    s.warmup_steps = 2;
    optd_optim_state_t st;
    optd_err_t err;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_SGD, OPTD_FLOAT64, 1, &hp, &err), 0);
    double p = 0, g = 1;
    const double want_lr[5] = {0.25, 0.5, 0.5, 0.25, 0.125};
    double want_p = 0;
    for (int k = 0; k < 5; k++) {
        optd_step_info_t info;
        ck_assert_int_eq(optd_optim_step(&st, &hp, &s, 0, &p, &g, &info, &err), 0);
        want_p -= want_lr[k];
        ck_assert_msg(info.lr == want_lr[k], "step %d: lr %.17g", k + 1, info.lr);
        ck_assert(p == want_p);
    }
    optd_optim_state_free(&st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("schedule");
    tcase_add_test(tc, test_none_constant);
    tcase_add_test(tc, test_step_exponential);
    tcase_add_test(tc, test_cosine);
    tcase_add_test(tc, test_validate);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_step_uses_schedule);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
