/* log.h: leveled, line-oriented logging.
 *
 * One logger lives in the server struct and is passed to the layers that
 * log (persistence, HTTP, process).  Each line is written with one write(2)
 * so lines from different threads never interleave:
 *     2026-11-28T12:00:00.123Z info  listening on 127.0.0.1:8080
 * Secrets (auth tokens) are never passed to it.
 *
 * The one line per request (optd_log_buffered) is the exception that makes
 * info logging cheap: a write(2) per request cost about as much as the rest
 * of a small step.  Those lines gather in a buffer written whole (still
 * only whole lines per write) when it fills, when its oldest line is
 * OPTD_LOG_FLUSH_MS old, before any other line (so order is kept), and by
 * optd_log_flush, which the daemon's loop calls twice a second; like
 * nginx's `access_log ... buffer=`, a crash can lose the last of them. */
#ifndef OPTD_LOG_H
#define OPTD_LOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define OPTD_LOG_BUF_BYTES 32768
#define OPTD_LOG_FLUSH_MS 200

typedef enum optd_log_level {
    OPTD_LOG_ERROR = 0,
    OPTD_LOG_WARN,
    OPTD_LOG_INFO,
    OPTD_LOG_DEBUG
} optd_log_level_t;

typedef struct optd_logger {
    atomic_int level; /* lines above this level are dropped */
    atomic_int fd;    /* stderr by default; swapped by optd_log_reopen */
    const char *path; /* NULL: stderr */
    pthread_mutex_t mu; /* guards the buffer, and orders writes with it */
    size_t buf_len;
    int64_t buf_since_ms; /* when the oldest buffered line was added */
    int64_t stamp_sec;    /* the second stamp holds, under mu (-1: none yet) */
    char stamp[24];       /* "2026-11-28T12:00:00" of that second */
    char buf[OPTD_LOG_BUF_BYTES];
} optd_logger_t;

/* stderr at level info. */
void optd_log_init(optd_logger_t *lg);
/* Parses "error", "warn", "info", "debug": 0 or -1. */
int optd_log_level_parse(const char *name, optd_log_level_t *out);
/* Opens path for appending (NULL: stderr): 0 or -errno. */
int optd_log_open(optd_logger_t *lg, const char *path);
/* Reopens the file after rotation (SIGHUP); no-op for stderr. */
int optd_log_reopen(optd_logger_t *lg);
void optd_log_close(optd_logger_t *lg);
void optd_log(optd_logger_t *lg, optd_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A line of already formatted text (text_len bytes, no newline needed),
 * buffered (see above): for the per-request lines, which the HTTP layer
 * writes without printf. */
void optd_log_buffered(optd_logger_t *lg, optd_log_level_t level, const char *text, size_t text_len);
/* Writes the buffered lines now. */
void optd_log_flush(optd_logger_t *lg);

#endif
