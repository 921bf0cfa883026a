/* test_config.c: --max-memory, the flag and its default (the cgroup's
 * limit or physical memory, less what is kept for running). */
#include <check.h>
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

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, max_memory_flag);
    tcase_add_test(tc, default_budget_fits_the_machine);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
