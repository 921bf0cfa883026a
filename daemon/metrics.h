/* metrics.h: the daemon's counters and their Prometheus text rendering.
 *
 * Counters are lock-free atomics bumped from the HTTP worker threads; the
 * gauges (sessions, parameters) are read from the store when /metrics is
 * rendered. */
#ifndef OPTD_METRICS_H
#define OPTD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "optd/optim.h"
#include "store.h"

enum { OPTD_METRICS_METHODS = 7 };   /* GET HEAD POST PUT PATCH DELETE other */
enum { OPTD_METRICS_CODES = 18 };    /* the statuses optd answers, plus "other" */
enum { OPTD_METRICS_BUCKETS = 14 };  /* histogram upper bounds, plus +Inf */

typedef struct optd_metrics {
    int64_t started_ms;
    atomic_ullong steps[OPTD_OPTIM_COUNT];
    atomic_ullong step_errors;
    atomic_ullong requests[OPTD_METRICS_METHODS][OPTD_METRICS_CODES];
    atomic_ullong duration_bucket[OPTD_METRICS_BUCKETS + 1]; /* non-cumulative */
    atomic_ullong duration_count;
    atomic_ullong duration_sum_us;
    atomic_ullong body_too_large;
    atomic_ullong unauthorized;
    atomic_ullong expired_sessions;
    atomic_ullong snapshots_written;
    atomic_ullong snapshot_failures;
    atomic_ullong journal_records;  /* copied from the journal when rendered */
    atomic_ullong journal_syncs;
    atomic_long connections;
    /* Rounds (API.md 1.1): applied, contributions refused by reason
     * (optd_refusal_t: stale, too_late, twice), how long rounds stayed
     * open, and the requests waiting now (contributions and long polls). */
    atomic_ullong rounds_applied;
    atomic_ullong contributions_refused[4];
    atomic_ullong round_open_count;
    atomic_ullong round_open_sum_us;
    atomic_ullong round_open_bucket[OPTD_METRICS_BUCKETS + 1]; /* non-cumulative */
    atomic_long waiting;
} optd_metrics_t;

/* One round applied, after it stayed open `seconds`. */
void optd_metrics_round(optd_metrics_t *m, double seconds);

void optd_metrics_init(optd_metrics_t *m);
/* One finished request: method string, HTTP status, duration in seconds. */
void optd_metrics_request(optd_metrics_t *m, const char *method, int status, double seconds);
void optd_metrics_step(optd_metrics_t *m, optd_optim_kind_t kind);

/* Renders the Prometheus text exposition into *out (malloc'd, caller
 * frees) of *len bytes.  0 or OPTD_ENOMEM. */
int optd_metrics_render(optd_metrics_t *m, optd_store_t *store, char **out, size_t *len);

#endif
