/* route_history.c: GET /v1/sessions/{name}/history, the last steps of a
 * session (lr, grad_norm, loss, time), oldest first. */
#include <stdlib.h>

#include "codec.h"
#include "http.h"

void optd_route_history_get(optd_req_t *req)
{
    uint64_t limit, after;
    if (!optd_req_query_u64(req, "limit", 1, 1000000000, 0, &limit) ||
        !optd_req_query_u64(req, "after_step", 0, UINT64_MAX, 0, &after))
        return;
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    optd_history_entry_t *h = NULL;
    size_t n = 0;
    optd_err_t err = {0};
    int rc = optd_session_copy_history(s, after, (size_t)limit, &h, &n, &err);
    optd_session_release(s);
    if (rc) {
        optd_http_store_error(req, rc, &err);
        return;
    }
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_codec_history_encode(&b, h, n);
    free(h);
    optd_http_reply_sbuf(req, 200, &b);
}
