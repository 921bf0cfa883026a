/* log.c: leveled, line-oriented logging to stderr or a file.
 *
 * Each line is formatted into one buffer and written with a single write(2),
 * so lines from different threads never interleave (O_APPEND makes that hold
 * for a shared file too).  Nothing here allocates, so logging works when
 * memory is exhausted. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void optd_log_init(optd_logger_t *lg)
{
    atomic_init(&lg->level, OPTD_LOG_INFO);
    atomic_init(&lg->fd, STDERR_FILENO);
    lg->path = NULL;
}

int optd_log_level_parse(const char *name, optd_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *out = (optd_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

static int open_append(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int optd_log_open(optd_logger_t *lg, const char *path)
{
    if (!path) {
        int old = atomic_exchange(&lg->fd, STDERR_FILENO);
        if (old != STDERR_FILENO)
            close(old);
        lg->path = NULL;
        return 0;
    }
    int fd = open_append(path);
    if (fd < 0)
        return fd;
    int old = atomic_exchange(&lg->fd, fd);
    if (old != STDERR_FILENO)
        close(old);
    lg->path = path;
    return 0;
}

/* After logrotate moved the file away: open the path anew and swap the
 * descriptor in, so lines go to the new file.  A thread that loaded the old
 * descriptor just before the swap may still write one line to the old file,
 * which is what logrotate's copy semantics expect anyway. */
int optd_log_reopen(optd_logger_t *lg)
{
    if (!lg->path)
        return 0;
    int fd = open_append(lg->path);
    if (fd < 0)
        return fd;
    int old = atomic_exchange(&lg->fd, fd);
    if (old != STDERR_FILENO)
        close(old);
    return 0;
}

void optd_log_close(optd_logger_t *lg)
{
    int old = atomic_exchange(&lg->fd, STDERR_FILENO);
    if (old != STDERR_FILENO)
        close(old);
    lg->path = NULL;
}

void optd_log(optd_logger_t *lg, optd_log_level_t level, const char *fmt, ...)
{
    if (!lg || (int)level > atomic_load(&lg->level) || (int)level < 0 || level > OPTD_LOG_DEBUG)
        return;

    char line[LOG_LINE_MAX];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
    if (n < 0)
        return;

    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: still one whole line */
    /* A message must not forge extra log lines. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';

    int fd = atomic_load(&lg->fd);
    const char *p = line;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report it */
        }
        p += w;
        len -= (size_t)w;
    }
}
