/* test_fmt.c: numbers and times without printf (daemon/fmt.c): RFC 3339
 * times equal to what gmtime_r and strftime write, with and without
 * milliseconds, and decimal integers equal to printf's. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fmt.h"

/* What gmtime_r and strftime say of the same instant. */
static void reference_stamp(int64_t ms, bool with_ms, char *out)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (with_ms)
        snprintf(out + n, 8, ".%03dZ", (int)(((ms % 1000) + 1000) % 1000));
    else
        snprintf(out + n, 8, "Z");
}

static void check_stamp(int64_t ms)
{
    for (int with_ms = 0; with_ms <= 1; with_ms++) {
        char got[OPTD_FMT_TIME_MAX + 1], want[32];
        size_t n = optd_fmt_time(got, ms, with_ms);
        got[n] = '\0';
        reference_stamp(ms, with_ms, want);
        ck_assert_uint_eq(n, with_ms ? 24 : 20);
        ck_assert_msg(strcmp(got, want) == 0, "%lld ms: got %s, want %s", (long long)ms, got, want);
    }
}

START_TEST(times_match_gmtime)
{
    /* Edges: the epoch, leap days, century rules, ends of months/years. */
    static const char *const dates[] = {
        "1970-01-01T00:00:00", "1972-02-29T12:00:00", "1999-12-31T23:59:59", "2000-02-29T00:00:00",
        "2000-03-01T00:00:00", "2024-02-29T23:59:59", "2026-12-01T07:12:18", "2100-02-28T23:59:59",
        "2100-03-01T00:00:00", "2400-02-29T10:10:10", "9999-12-31T23:59:59", "1969-12-31T23:59:59",
    };
    for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        ck_assert_ptr_nonnull(strptime(dates[i], "%Y-%m-%dT%H:%M:%S", &tm));
        int64_t ms = (int64_t)timegm(&tm) * 1000;
        check_stamp(ms);
        check_stamp(ms + 999);
        char got[OPTD_FMT_TIME_MAX + 1];
        got[optd_fmt_time(got, ms + 7, true)] = '\0';
        ck_assert_msg(strncmp(got, dates[i], 19) == 0 && strcmp(got + 19, ".007Z") == 0, "%s vs %s", got,
                      dates[i]);
    }
    /* A day's every hour across 4 centuries, and random instants. */
    for (int64_t d = 0; d < 146097 * 2; d += 37)
        check_stamp(d * 86400000 + (d % 24) * 3600000 + 59999);
    srand(7);
    for (int i = 0; i < 200000; i++) {
        int64_t ms = ((int64_t)rand() << 20 ^ rand()) % 253402300800000; /* up to 9999-12-31 */
        check_stamp(ms);
    }
}
END_TEST

START_TEST(uints_match_printf)
{
    static const unsigned long long vals[] = {0, 1, 9, 10, 99, 100, 12345, 4294967295ull, 18446744073709551615ull};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        for (int pad = 1; pad <= 20; pad++) {
            char got[32], want[32];
            *optd_fmt_uint(got, vals[i], pad) = '\0';
            snprintf(want, sizeof want, "%0*llu", pad, vals[i]);
            ck_assert_str_eq(got, want);
        }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fmt");
    TCase *tc = tcase_create("fmt");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, times_match_gmtime);
    tcase_add_test(tc, uints_match_printf);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
