/* route_params.c: GET /v1/sessions/{name}/params, as JSON or (with
 * Accept: application/octet-stream) raw little-endian values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dtoa.h"
#include "http.h"
#include "numarray.h"

/* True when the client asked for raw bytes. */
static bool wants_binary(optd_req_t *req)
{
    const char *accept = optd_req_header(req, MHD_HTTP_HEADER_ACCEPT);
    return accept && strcasestr(accept, "application/octet-stream") != NULL;
}

void optd_route_params_get(optd_req_t *req)
{
    optd_session_t *s = optd_req_session(req);
    if (!s)
        return;
    /* size and dtype are fixed for a session's life (import makes a new
     * session), so they are read without its lock. */
    size_t n = s->size;
    optd_dtype_t dtype = s->cfg.dtype;
    size_t bytes = n * optd_dtype_size(dtype);
    bool binary = wants_binary(req);
    /* The copy (and the text of the JSON form) come out of --max-memory
     * too: a session near the budget must not double the daemon's memory
     * when it is read. */
    size_t text = binary ? 0 : n * (OPTD_DTOA_MAX + 1) + 64;
    optd_err_t err = {0};
    if (optd_store_borrow(req->srv->store, bytes + text, &err)) {
        optd_session_release(s);
        optd_http_error(req, OPTD_ELIMIT, "reading %zu parameters: %s", n, err.msg);
        return;
    }
    req->charge = bytes + text;
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        optd_session_release(s);
        optd_http_charge_drop(req);
        optd_http_error(req, OPTD_ENOMEM, "out of memory copying %zu parameters", n);
        return;
    }
    uint64_t step = optd_session_copy_params(s, buf);
    optd_session_release(s);
    char stepstr[24];
    snprintf(stepstr, sizeof stepstr, "%llu", (unsigned long long)step);
    if (binary) {
        optd_http_reply_buf(req, 200, "application/octet-stream", buf, bytes);
        optd_http_header(req, "Optd-Step", stepstr);
        optd_http_header(req, "Optd-Dtype", optd_dtype_name(dtype));
        optd_http_charge_drop(req);
        return;
    }
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_printf(&b, "{\"step\":%s,\"params\":", stepstr);
    optd_numarray_encode(&b, dtype, buf, n, req->srv->pool);
    optd_sbuf_puts(&b, "}");
    free(buf);
    /* The copy is gone; the text stays counted while the answer is held. */
    optd_store_unreserve(req->srv->store, bytes);
    req->charge -= bytes;
    optd_http_reply_sbuf(req, 200, &b);
    optd_http_header(req, "Optd-Step", stepstr);
    optd_http_charge_drop(req);
}
