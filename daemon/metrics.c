/* metrics.c: counters and the Prometheus text exposition format
 * (https://prometheus.io/docs/instrumenting/exposition_formats/). */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

static const char *const method_names[OPTD_METRICS_METHODS] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "other"};
static const int code_values[OPTD_METRICS_CODES - 1] = {
    200, 201, 204, 400, 401, 404, 405, 409, 413, 415, 429, 431, 500, 501, 503, 505, 507};
static const double bucket_bounds[OPTD_METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

void optd_metrics_init(optd_metrics_t *m)
{
    memset(m, 0, sizeof *m);
    m->started_ms = optd_now_ms();
}

static int method_index(const char *method)
{
    for (int i = 0; i < OPTD_METRICS_METHODS - 1; i++)
        if (method && strcmp(method, method_names[i]) == 0)
            return i;
    return OPTD_METRICS_METHODS - 1;
}

static int code_index(int status)
{
    for (int i = 0; i < OPTD_METRICS_CODES - 1; i++)
        if (code_values[i] == status)
            return i;
    return OPTD_METRICS_CODES - 1;
}

void optd_metrics_request(optd_metrics_t *m, const char *method, int status, double seconds)
{
    atomic_fetch_add_explicit(&m->requests[method_index(method)][code_index(status)], 1,
                              memory_order_relaxed);
    int b = 0;
    while (b < OPTD_METRICS_BUCKETS && seconds > bucket_bounds[b])
        b++;
    atomic_fetch_add_explicit(&m->duration_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->duration_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->duration_sum_us, (unsigned long long)(seconds * 1e6),
                              memory_order_relaxed);
}

void optd_metrics_step(optd_metrics_t *m, optd_optim_kind_t kind)
{
    if ((int)kind >= 0 && kind < OPTD_OPTIM_COUNT)
        atomic_fetch_add_explicit(&m->steps[kind], 1, memory_order_relaxed);
}

/* A growable text buffer whose failure is sticky. */
typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
} text_t;

__attribute__((format(printf, 2, 3))) static void put(text_t *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n + 1;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->failed = 1;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
}

static unsigned long long ld(atomic_ullong *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

void optd_metrics_round(optd_metrics_t *m, double seconds)
{
    int b = 0;
    while (b < OPTD_METRICS_BUCKETS && seconds > bucket_bounds[b])
        b++;
    atomic_fetch_add_explicit(&m->round_open_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->round_open_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->round_open_sum_us, (unsigned long long)(seconds * 1e6), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->rounds_applied, 1, memory_order_relaxed);
}

/* The rounds' series. */
static void put_rounds(text_t *t, optd_metrics_t *m)
{
    put(t, "# HELP optd_rounds_applied_total Rounds reduced and applied as one step.\n"
           "# TYPE optd_rounds_applied_total counter\noptd_rounds_applied_total %llu\n",
        ld(&m->rounds_applied));
    put(t, "# HELP optd_contributions_refused_total Contributions refused with 409, by reason.\n"
           "# TYPE optd_contributions_refused_total counter\n"
           "optd_contributions_refused_total{reason=\"stale\"} %llu\n"
           "optd_contributions_refused_total{reason=\"too_late\"} %llu\n"
           "optd_contributions_refused_total{reason=\"twice\"} %llu\n",
        ld(&m->contributions_refused[1]), ld(&m->contributions_refused[2]), ld(&m->contributions_refused[3]));
    put(t, "# HELP optd_round_open_seconds Time from a round's first contribution to its step.\n"
           "# TYPE optd_round_open_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b < OPTD_METRICS_BUCKETS; b++) {
        cum += ld(&m->round_open_bucket[b]);
        put(t, "optd_round_open_seconds_bucket{le=\"%g\"} %llu\n", bucket_bounds[b], cum);
    }
    cum += ld(&m->round_open_bucket[OPTD_METRICS_BUCKETS]);
    put(t, "optd_round_open_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    put(t, "optd_round_open_seconds_sum %.6f\n", (double)ld(&m->round_open_sum_us) / 1e6);
    put(t, "optd_round_open_seconds_count %llu\n", cum);
    put(t, "# HELP optd_requests_waiting Requests waiting now (contributions for their round, long polls).\n"
           "# TYPE optd_requests_waiting gauge\noptd_requests_waiting %ld\n",
        atomic_load_explicit(&m->waiting, memory_order_relaxed));
}

int optd_metrics_render(optd_metrics_t *m, optd_store_t *store, char **out, size_t *len)
{
    text_t t = {malloc(4096), 0, 4096, 0};
    if (!t.p)
        return OPTD_ENOMEM;

    put(&t, "# HELP optd_sessions Sessions held.\n# TYPE optd_sessions gauge\noptd_sessions %zu\n",
        optd_store_count(store));
    put(&t, "# HELP optd_parameters Parameters held over all sessions.\n"
            "# TYPE optd_parameters gauge\noptd_parameters %zu\n",
        optd_store_params(store));
    size_t used, max;
    optd_store_memory(store, &used, &max);
    put(&t, "# HELP optd_memory_reserved_bytes Memory reserved under --max-memory (sessions and answers in flight).\n"
            "# TYPE optd_memory_reserved_bytes gauge\noptd_memory_reserved_bytes %zu\n"
            "# HELP optd_memory_budget_bytes The --max-memory budget for sessions.\n"
            "# TYPE optd_memory_budget_bytes gauge\noptd_memory_budget_bytes %zu\n",
        used, max);
    put(&t, "# HELP optd_steps_total Optimizer updates applied.\n# TYPE optd_steps_total counter\n");
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        put(&t, "optd_steps_total{optimizer=\"%s\"} %llu\n", optd_optim_desc((optd_optim_kind_t)k)->name,
            ld(&m->steps[k]));
    put(&t, "# HELP optd_step_errors_total Step requests refused or failed.\n"
            "# TYPE optd_step_errors_total counter\noptd_step_errors_total %llu\n",
        ld(&m->step_errors));
    put_rounds(&t, m);

    put(&t, "# HELP optd_http_requests_total HTTP requests answered.\n"
            "# TYPE optd_http_requests_total counter\n");
    for (int i = 0; i < OPTD_METRICS_METHODS; i++)
        for (int c = 0; c < OPTD_METRICS_CODES; c++) {
            unsigned long long v = ld(&m->requests[i][c]);
            if (!v)
                continue;
            if (c < OPTD_METRICS_CODES - 1)
                put(&t, "optd_http_requests_total{method=\"%s\",code=\"%d\"} %llu\n", method_names[i],
                    code_values[c], v);
            else
                put(&t, "optd_http_requests_total{method=\"%s\",code=\"other\"} %llu\n",
                    method_names[i], v);
        }

    put(&t, "# HELP optd_http_request_duration_seconds Time from request start to response completion.\n"
            "# TYPE optd_http_request_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b < OPTD_METRICS_BUCKETS; b++) {
        cum += ld(&m->duration_bucket[b]);
        put(&t, "optd_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bucket_bounds[b], cum);
    }
    cum += ld(&m->duration_bucket[OPTD_METRICS_BUCKETS]);
    put(&t, "optd_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    put(&t, "optd_http_request_duration_seconds_sum %.6f\n", (double)ld(&m->duration_sum_us) / 1e6);
    put(&t, "optd_http_request_duration_seconds_count %llu\n", cum);

    put(&t, "# HELP optd_http_body_too_large_total Requests refused with 413.\n"
            "# TYPE optd_http_body_too_large_total counter\noptd_http_body_too_large_total %llu\n",
        ld(&m->body_too_large));
    put(&t, "# HELP optd_http_unauthorized_total Requests refused with 401.\n"
            "# TYPE optd_http_unauthorized_total counter\noptd_http_unauthorized_total %llu\n",
        ld(&m->unauthorized));
    put(&t, "# HELP optd_http_connections Open HTTP connections.\n"
            "# TYPE optd_http_connections gauge\noptd_http_connections %ld\n",
        atomic_load_explicit(&m->connections, memory_order_relaxed));
    put(&t, "# HELP optd_sessions_expired_total Sessions deleted by ttl_seconds idle expiry.\n"
            "# TYPE optd_sessions_expired_total counter\noptd_sessions_expired_total %llu\n",
        ld(&m->expired_sessions));
    put(&t, "# HELP optd_snapshot_sessions_written_total Session snapshots written by the periodic flush.\n"
            "# TYPE optd_snapshot_sessions_written_total counter\n"
            "optd_snapshot_sessions_written_total %llu\n",
        ld(&m->snapshots_written));
    put(&t, "# HELP optd_snapshot_failures_total Periodic flushes in which a write failed.\n"
            "# TYPE optd_snapshot_failures_total counter\noptd_snapshot_failures_total %llu\n",
        ld(&m->snapshot_failures));
    put(&t, "# HELP optd_journal_records_total Journal records made durable.\n"
            "# TYPE optd_journal_records_total counter\noptd_journal_records_total %llu\n"
            "# HELP optd_journal_syncs_total fdatasync rounds that made them durable (group commit: "
            "records per round).\n"
            "# TYPE optd_journal_syncs_total counter\noptd_journal_syncs_total %llu\n",
        ld(&m->journal_records), ld(&m->journal_syncs));
    put(&t, "# HELP optd_uptime_seconds Seconds since the daemon started.\n"
            "# TYPE optd_uptime_seconds gauge\noptd_uptime_seconds %.3f\n",
        (double)(optd_now_ms() - m->started_ms) / 1000.0);
    put(&t, "# HELP optd_build_info Build information.\n# TYPE optd_build_info gauge\n"
            "optd_build_info{version=\"%s\"} 1\n",
        OPTD_VERSION);

    if (t.failed) {
        free(t.p);
        return OPTD_ENOMEM;
    }
    *out = t.p;
    *len = t.len;
    return 0;
}
