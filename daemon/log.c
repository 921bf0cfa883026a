/* log.c: leveled, line-oriented logging to stderr or a file.
 *
 * Each line is formatted into one buffer and written with a single write(2),
 * so lines from different threads never interleave (O_APPEND makes that hold
 * for a shared file too).  Nothing here allocates, so logging works when
 * memory is exhausted.  Per-request lines are buffered (see log.h). */
#include "log.h"

#include "fmt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char level_labels[][7] = {"error ", "warn  ", "info  ", "debug "};

static void flush_locked(optd_logger_t *lg);

/* Puts fd in place of the current descriptor (closing that unless it is
 * stderr), after the buffered lines went to the current one. */
static void swap_fd(optd_logger_t *lg, int fd)
{
    pthread_mutex_lock(&lg->mu);
    flush_locked(lg);
    int old = atomic_exchange(&lg->fd, fd);
    pthread_mutex_unlock(&lg->mu);
    if (old != STDERR_FILENO && old != fd)
        close(old);
}

void optd_log_init(optd_logger_t *lg)
{
    atomic_init(&lg->level, OPTD_LOG_INFO);
    atomic_init(&lg->fd, STDERR_FILENO);
    lg->path = NULL;
    pthread_mutex_init(&lg->mu, NULL);
    lg->buf_len = 0;
    lg->buf_since_ms = 0;
    lg->stamp_sec = -1;
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
        swap_fd(lg, STDERR_FILENO);
        lg->path = NULL;
        return 0;
    }
    int fd = open_append(path);
    if (fd < 0)
        return fd;
    swap_fd(lg, fd);
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
    swap_fd(lg, fd);
    return 0;
}

void optd_log_close(optd_logger_t *lg)
{
    swap_fd(lg, STDERR_FILENO);
    lg->path = NULL;
}

/* Writes "2026-11-28T12:00:00.123Z info  " at line (by hand: snprintf of
 * eight numbers was a fifth of a small request's own CPU time); returns
 * its length, and the wall-clock time in ms in *now_ms. */
static size_t put_prefix(optd_log_level_t level, char *line, int64_t *now_ms)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    *now_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    size_t n = optd_fmt_time(line, *now_ms, true);
    line[n++] = ' ';
    memcpy(line + n, level_labels[level], 6); /* the name padded to 5, and a space */
    return n + 6;
}

/* Ends the line whose message is line[n, len): cut to fit, line breaks in
 * the message made spaces (a message must not forge extra log lines), and
 * the newline.  Returns the whole length. */
static size_t finish_line(char *line, size_t n, size_t len)
{
    if (len > LOG_LINE_MAX - 2)
        len = LOG_LINE_MAX - 2; /* truncated: still one whole line */
    for (size_t i = n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    return len;
}

/* Formats one whole line (with its newline) into line; returns its length,
 * and the wall-clock time in ms in *now_ms. */
static size_t format_line(optd_log_level_t level, const char *fmt, va_list ap, char *line, int64_t *now_ms)
{
    size_t n = put_prefix(level, line, now_ms);
    int m = vsnprintf(line + n, LOG_LINE_MAX - n - 1, fmt, ap);
    return finish_line(line, n, n + (m < 0 ? 0 : (size_t)m));
}

static void write_all(int fd, const char *p, size_t len)
{
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

/* Writes out the buffered lines; lg->mu held. */
static void flush_locked(optd_logger_t *lg)
{
    if (lg->buf_len) {
        write_all(atomic_load(&lg->fd), lg->buf, lg->buf_len);
        lg->buf_len = 0;
    }
}

static bool wanted(optd_logger_t *lg, optd_log_level_t level)
{
    return lg && (int)level <= atomic_load(&lg->level) && (int)level >= 0 && level <= OPTD_LOG_DEBUG;
}

void optd_log(optd_logger_t *lg, optd_log_level_t level, const char *fmt, ...)
{
    if (!wanted(lg, level))
        return;
    char line[LOG_LINE_MAX];
    int64_t now;
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_line(level, fmt, ap, line, &now);
    va_end(ap);
    pthread_mutex_lock(&lg->mu);
    flush_locked(lg); /* earlier request lines first */
    write_all(atomic_load(&lg->fd), line, len);
    pthread_mutex_unlock(&lg->mu);
}

/* put_prefix's text for now_ms at line, with lg->mu held: the date and
 * time up to the second are formatted once a second, not once a line. */
static size_t put_prefix_locked(optd_logger_t *lg, optd_log_level_t level, char *line, int64_t now_ms)
{
    int64_t sec = now_ms / 1000;
    if (sec != lg->stamp_sec) {
        optd_fmt_time(lg->stamp, sec * 1000, false); /* "...T12:00:00Z": the Z is overwritten */
        lg->stamp_sec = sec;
    }
    memcpy(line, lg->stamp, 19);
    line[19] = '.';
    optd_fmt_uint(line + 20, (unsigned long long)(now_ms % 1000), 3);
    line[23] = 'Z';
    line[24] = ' ';
    memcpy(line + 25, level_labels[level], 6);
    return 31;
}

void optd_log_buffered(optd_logger_t *lg, optd_log_level_t level, const char *text, size_t text_len)
{
    if (!wanted(lg, level))
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    pthread_mutex_lock(&lg->mu);
    if (sizeof lg->buf - lg->buf_len < LOG_LINE_MAX) /* room for the longest line */
        flush_locked(lg);
    if (lg->buf_len == 0)
        lg->buf_since_ms = now;
    /* Written in place: no line on the stack to copy over. */
    char *line = lg->buf + lg->buf_len;
    size_t n = put_prefix_locked(lg, level, line, now);
    if (text_len > LOG_LINE_MAX - n)
        text_len = LOG_LINE_MAX - n;
    memcpy(line + n, text, text_len);
    lg->buf_len += finish_line(line, n, n + text_len);
    if (now - lg->buf_since_ms >= OPTD_LOG_FLUSH_MS)
        flush_locked(lg);
    pthread_mutex_unlock(&lg->mu);
}

void optd_log_flush(optd_logger_t *lg)
{
    pthread_mutex_lock(&lg->mu);
    flush_locked(lg);
    pthread_mutex_unlock(&lg->mu);
}
