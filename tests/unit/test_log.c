/* test_log.c: the logger (daemon/log.c): timestamps without gmtime_r,
 * buffered request lines kept whole and in order, line breaks in messages
 * neutralized, long lines cut to one line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* What gmtime_r and strftime say of the same instant. */
static void reference_stamp(int64_t ms, char *out)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 8, ".%03dZ", (int)(((ms % 1000) + 1000) % 1000));
}

static void check_stamp(int64_t ms)
{
    char got[32], want[32];
    size_t n = optd_log_timestamp(got, ms);
    got[n] = '\0';
    reference_stamp(ms, want);
    ck_assert_uint_eq(n, 24);
    ck_assert_msg(strcmp(got, want) == 0, "%lld ms: got %s, want %s", (long long)ms, got, want);
}

START_TEST(timestamps_match_gmtime)
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
        char got[32];
        got[optd_log_timestamp(got, ms + 7)] = '\0';
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

/* A logger writing to a fresh temporary file; returns its path. */
static char *open_temp(optd_logger_t *lg)
{
    char *path = strdup("/tmp/optd-test-log-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    optd_log_init(lg);
    ck_assert_int_eq(optd_log_open(lg, path), 0);
    return path;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

START_TEST(buffered_lines_whole_and_in_order)
{
    optd_logger_t lg;
    char *path = open_temp(&lg);
    optd_log(&lg, OPTD_LOG_INFO, "first");
    for (int i = 0; i < 2000; i++) { /* several buffers' worth */
        char text[64];
        int n = snprintf(text, sizeof text, "request %d", i);
        optd_log_buffered(&lg, OPTD_LOG_INFO, text, (size_t)n);
    }
    optd_log(&lg, OPTD_LOG_WARN, "last"); /* written after every buffered line */
    const char *text = slurp(path);
    const char *p = text;
    int lines = 0, next = -1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_msg(nl - p > 31 && p[23] == 'Z' && p[24] == ' ', "%.*s", (int)(nl - p), p);
        const char *msg = p + 31;
        int k;
        if (next < 0) {
            ck_assert(strncmp(p + 25, "info  first", 11) == 0);
            next = 0;
        } else if (next < 2000) {
            ck_assert(strncmp(p + 25, "info  ", 6) == 0);
            ck_assert_int_eq(sscanf(msg, "request %d", &k), 1);
            ck_assert_int_eq(k, next);
            next++;
        } else {
            ck_assert(strncmp(p + 25, "warn  last", 10) == 0);
            next++;
        }
        lines++;
        p = nl + 1;
    }
    ck_assert_int_eq(lines, 2002);
    optd_log_close(&lg);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(messages_cannot_forge_lines)
{
    optd_logger_t lg;
    char *path = open_temp(&lg);
    const char evil[] = "GET /a\nfake info  line\r\nmore";
    optd_log_buffered(&lg, OPTD_LOG_INFO, evil, sizeof evil - 1);
    optd_log(&lg, OPTD_LOG_INFO, "x %s y", evil);
    char big[10000];
    memset(big, 'a', sizeof big);
    optd_log_buffered(&lg, OPTD_LOG_INFO, big, sizeof big); /* cut, still one line */
    optd_log_flush(&lg);
    const char *text = slurp(path);
    int lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    ck_assert_int_eq(lines, 3);
    ck_assert_ptr_nonnull(strstr(text, "GET /a fake info  line  more\n"));
    ck_assert_ptr_nonnull(strstr(text, "x GET /a fake info  line  more y\n"));
    ck_assert_ptr_null(strchr(text, '\r'));
    optd_log_close(&lg);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(levels_filter_buffered_lines)
{
    optd_logger_t lg;
    char *path = open_temp(&lg);
    atomic_store(&lg.level, OPTD_LOG_WARN);
    optd_log_buffered(&lg, OPTD_LOG_INFO, "hidden", 6);
    optd_log(&lg, OPTD_LOG_INFO, "hidden too");
    optd_log(&lg, OPTD_LOG_ERROR, "shown");
    optd_log_flush(&lg);
    const char *text = slurp(path);
    ck_assert_ptr_null(strstr(text, "hidden"));
    ck_assert_ptr_nonnull(strstr(text, "error shown\n"));
    optd_log_close(&lg);
    unlink(path);
    free(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, timestamps_match_gmtime);
    tcase_add_test(tc, buffered_lines_whole_and_in_order);
    tcase_add_test(tc, messages_cannot_forge_lines);
    tcase_add_test(tc, levels_filter_buffered_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
