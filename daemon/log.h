/* log.h: leveled, line-oriented logging.
 *
 * One logger lives in the server struct and is passed to the layers that
 * log (persistence, HTTP, process).  Each line is written with one write(2)
 * so lines from different threads never interleave:
 *     2026-11-28T12:00:00.123Z info  listening on 127.0.0.1:8080
 * Secrets (auth tokens) are never passed to it. */
#ifndef OPTD_LOG_H
#define OPTD_LOG_H

#include <stdatomic.h>

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

#endif
