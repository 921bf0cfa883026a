/* test_config.c: --max-memory, the flag and its default (the cgroup's
 * limit or physical memory, less what is kept for running). */
#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static int parse(optd_config_t *cfg, int argc, char **argv, optd_err_t *err)
{
    optd_config_defaults(cfg);
    optind = 0; /* getopt_long starts over */
    return optd_config_parse(cfg, argc, argv, stdout, err);
}

START_TEST(max_memory_flag)
{
    optd_config_t cfg;
    optd_err_t err;
    char *ok[] = {"optd", "--max-memory", "123456789", NULL};
    ck_assert_int_eq(parse(&cfg, 3, ok, &err), OPTD_CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_memory, 123456789);
    char *zero[] = {"optd", "--max-memory", "0", NULL};
    ck_assert_int_eq(parse(&cfg, 3, zero, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "--max-memory") != NULL, "%s", err.msg);
    char *none[] = {"optd", NULL};
    ck_assert_int_eq(parse(&cfg, 1, none, &err), OPTD_CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_memory, 0); /* resolved at start */
}
END_TEST

START_TEST(default_budget_fits_the_machine)
{
    char how[200] = "";
    size_t budget = optd_config_memory_default(how, sizeof how);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t phys = (size_t)pages * (size_t)page;
    ck_assert_uint_gt(budget, 0);
    ck_assert_uint_le(budget, phys / 2 + 1); /* at most half the machine */
    ck_assert_msg(strstr(how, "half") != NULL, "%s", how);
}
END_TEST

/* The two defaults come from one reading of the limit: the body budget is
 * half the session budget (a quarter of the limit against a half), and
 * never below one largest body. */
START_TEST(body_budget_is_a_quarter_of_the_same_limit)
{
    char how[200];
    size_t sessions = optd_config_memory_default(how, sizeof how);
    size_t bodies = optd_config_body_memory_default(1);
    ck_assert_uint_le(bodies, sessions / 2 + 1);
    ck_assert_uint_ge(bodies + 1, sessions / 2);
    ck_assert_uint_eq(optd_config_body_memory_default(sessions * 4), sessions * 4);
}
END_TEST

/* Every numeric flag: its bounds are taken, one past them is refused with
 * a message naming the flag and the range, and the value lands in its own
 * field (a wrong offset in the flag table would show here). */
START_TEST(numeric_flags_bounds_and_fields)
{
    static const struct {
        const char *flag, *lo, *hi, *over;
        size_t offset;
        bool is_unsigned;
    } cases[] = {
        {"--threads", "1", "1024", "1025", offsetof(optd_config_t, threads), true},
        {"--snapshot-interval", "1", "86400", "86401", offsetof(optd_config_t, snapshot_interval), true},
        {"--history", "0", "100000000", "100000001", offsetof(optd_config_t, history), false},
        {"--max-connections", "1", "1000000", "1000001", offsetof(optd_config_t, max_connections), true},
        {"--connection-timeout", "0", "86400", "86401", offsetof(optd_config_t, connection_timeout), true},
        {"--max-sessions", "1", "7", "x", offsetof(optd_config_t, max_sessions), false},
        {"--max-params", "1", "9", "-1", offsetof(optd_config_t, max_params), false},
        {"--max-body-bytes", "1", "4096", "", offsetof(optd_config_t, max_body_bytes), false},
        {"--max-body-memory", "268435456", "268435457", "0", offsetof(optd_config_t, max_body_memory), false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        optd_config_t cfg;
        optd_err_t err;
        const char *vals[] = {cases[i].lo, cases[i].hi};
        for (int k = 0; k < 2; k++) {
            char *argv[] = {"optd", (char *)cases[i].flag, (char *)vals[k], NULL};
            ck_assert_msg(parse(&cfg, 3, argv, &err) == OPTD_CONFIG_RUN, "%s %s: %s", cases[i].flag, vals[k],
                          err.msg);
            unsigned long long got = cases[i].is_unsigned ? *(unsigned *)((char *)&cfg + cases[i].offset)
                                                          : *(size_t *)((char *)&cfg + cases[i].offset);
            ck_assert_msg(got == strtoull(vals[k], NULL, 10), "%s %s landed as %llu", cases[i].flag, vals[k], got);
        }
        char *bad[] = {"optd", (char *)cases[i].flag, (char *)cases[i].over, NULL};
        ck_assert_int_eq(parse(&cfg, 3, bad, &err), OPTD_EINVAL);
        ck_assert_msg(strstr(err.msg, cases[i].flag) && strstr(err.msg, "is not"), "%s", err.msg);
    }
}
END_TEST

START_TEST(path_flags_refuse_empty)
{
    static const char *flags[] = {"--data-dir", "--auth-token-file", "--log-file", "--ui-assets"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        optd_config_t cfg;
        optd_err_t err;
        char *argv[] = {"optd", (char *)flags[i], "", NULL};
        ck_assert_int_eq(parse(&cfg, 3, argv, &err), OPTD_EINVAL);
        ck_assert_msg(strstr(err.msg, "empty"), "%s", err.msg);
    }
    optd_config_t cfg;
    optd_err_t err;
    char *ok[] = {"optd", "--data-dir", "/tmp/x", "--log-file", "/tmp/y", "--ui-assets", "/tmp/z", NULL};
    ck_assert_int_eq(parse(&cfg, 7, ok, &err), OPTD_CONFIG_RUN);
    ck_assert_str_eq(cfg.data_dir, "/tmp/x");
    ck_assert_str_eq(cfg.log_file, "/tmp/y");
    ck_assert_str_eq(cfg.ui_assets, "/tmp/z");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, max_memory_flag);
    tcase_add_test(tc, default_budget_fits_the_machine);
    tcase_add_test(tc, numeric_flags_bounds_and_fields);
    tcase_add_test(tc, body_budget_is_a_quarter_of_the_same_limit);
    tcase_add_test(tc, path_flags_refuse_empty);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
