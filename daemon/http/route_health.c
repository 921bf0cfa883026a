/* route_health.c: GET /healthz, the readiness probe (never needs auth). */
#include "http.h"

void optd_route_healthz(optd_req_t *req)
{
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_puts(&b, "{\"status\":\"ok\"}");
    optd_http_reply_sbuf(req, 200, &b);
}
