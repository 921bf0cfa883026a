/* route_metrics.c: GET /metrics, Prometheus text exposition. */
#include "http.h"

void optd_route_metrics(optd_req_t *req)
{
    char *text;
    size_t len;
    if (req->srv->persist) {
        uint64_t records, syncs;
        optd_persist_journal_counts(req->srv->persist, &records, &syncs);
        atomic_store_explicit(&req->srv->metrics.journal_records, records, memory_order_relaxed);
        atomic_store_explicit(&req->srv->metrics.journal_syncs, syncs, memory_order_relaxed);
    }
    if (optd_metrics_render(&req->srv->metrics, req->srv->store, &text, &len)) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory rendering the metrics");
        return;
    }
    optd_http_reply_buf(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}
