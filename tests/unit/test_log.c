/* test_log.c: the logger (daemon/log.c): buffered request lines kept
 * whole and in order, line breaks in messages neutralized, long lines cut
 * to one line, levels, and the time on buffered lines (formatted by
 * optd_fmt_time, tested in test_fmt). */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "fmt.h"
#include "log.h"

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

static void close_temp(optd_logger_t *lg, char *path)
{
    optd_log_close(lg);
    unlink(path);
    free(path);
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
    close_temp(&lg, path);
}
END_TEST

/* The date and time of a buffered line is formatted once a second and
 * kept: every line must still carry the time it was written, across
 * second boundaries, the same text a line written without the buffer gets. */
START_TEST(buffered_lines_carry_their_own_time)
{
    optd_logger_t lg;
    char *path = open_temp(&lg);
    enum { N = 60 };
    int64_t before[N], after[N];
    for (int i = 0; i < N; i++) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        before[i] = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
        optd_log_buffered(&lg, OPTD_LOG_INFO, "tick", 4);
        gettimeofday(&tv, NULL);
        after[i] = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
        usleep(37000); /* 60 lines over about 2.2 s: several seconds change */
    }
    optd_log_flush(&lg);
    const char *p = slurp(path);
    for (int i = 0; i < N; i++) {
        const char *nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_int_eq((int)(nl - p), 35);
        /* the same text as optd_fmt_time for some ms within the call */
        bool seen = false;
        for (int64_t ms = before[i]; ms <= after[i] && !seen; ms++) {
            char want[32];
            size_t n = optd_fmt_time(want, ms, true);
            seen = n == 24 && memcmp(p, want, 24) == 0;
        }
        ck_assert_msg(seen, "line %d: %.24s not within [%lld, %lld]", i, p, (long long)before[i],
                      (long long)after[i]);
        ck_assert(strncmp(p + 24, " info  tick", 11) == 0);
        p = nl + 1;
    }
    ck_assert_int_eq(*p, '\0');
    close_temp(&lg, path);
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
    close_temp(&lg, path);
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
    close_temp(&lg, path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, buffered_lines_whole_and_in_order);
    tcase_add_test(tc, buffered_lines_carry_their_own_time);
    tcase_add_test(tc, messages_cannot_forge_lines);
    tcase_add_test(tc, levels_filter_buffered_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
