/* fmt.h: numbers and times written without printf, for the hot paths
 * (the per-request log line, step answers, history), where printf's
 * machinery and gmtime_r (which takes glibc's time-zone lock on every
 * call) cost more than the rest of the work.  Used by the log and by the
 * HTTP layer's codecs; depends on nothing. */
#ifndef OPTD_FMT_H
#define OPTD_FMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest text optd_fmt_time writes ("2026-11-28T12:00:00.123Z"). */
#define OPTD_FMT_TIME_MAX 24

/* Writes v in decimal at o, zero-padded to at least min_digits (<= 20),
 * not NUL-terminated; returns the end. */
char *optd_fmt_uint(char *o, unsigned long long v, int min_digits);

/* Writes unix_ms as RFC 3339 UTC, "2026-11-28T12:00:00.123Z" with
 * milliseconds or "2026-11-28T12:00:00Z" without, not NUL-terminated;
 * returns the length.  Years past 9999 wrap (never seen in practice). */
size_t optd_fmt_time(char *out, int64_t unix_ms, bool with_ms);

#endif
