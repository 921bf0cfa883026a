/* test_log.c: the logger (daemon/log.c): buffered request lines kept
 * whole and in order, line breaks in messages neutralized, long lines cut
 * to one line, levels.  (Its timestamps are test_fmt's.) */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    tcase_add_test(tc, messages_cannot_forge_lines);
    tcase_add_test(tc, levels_filter_buffered_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
