/* respond.c: building responses (JSON documents, raw bytes, errors).
 *
 * A handler's answer is held in the request until the server queues it, so
 * a handler may add headers after choosing the body. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "fmt.h"
#include "http.h"

static void set_response(optd_req_t *req, unsigned status, struct MHD_Response *resp, size_t len)
{
    if (req->resp)
        MHD_destroy_response(req->resp);
    req->resp = resp;
    req->status = status;
    req->resp_bytes = len;
}

/* The last-resort answer when even building a response failed. */
static void reply_static_500(optd_req_t *req)
{
    static const char body[] =
        "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory building the response\"}}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    set_response(req, 500, r, sizeof body - 1);
}

/* A body whose memory is counted against --max-memory until MHD frees it. */
typedef struct charged_body {
    void *body;
    optd_store_t *store;
    size_t bytes;
} charged_body_t;

static void free_charged(void *cls)
{
    charged_body_t *cb = cls;
    free(cb->body);
    optd_store_unreserve(cb->store, cb->bytes);
    free(cb);
}

void optd_http_charge_drop(optd_req_t *req)
{
    if (req->charge)
        optd_store_unreserve(req->srv->store, req->charge);
    req->charge = 0;
}

/* body (malloc'd) as a response that frees it, taking req's charge along. */
static struct MHD_Response *buffer_response(optd_req_t *req, char *body, size_t len)
{
    charged_body_t *cb = req->charge ? malloc(sizeof *cb) : NULL;
    if (!cb) {
        optd_http_charge_drop(req);
        return MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    }
    *cb = (charged_body_t){body, req->srv->store, req->charge};
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback_cls(len, body, free_charged, cb);
    if (!r) {
        free(cb);
        optd_http_charge_drop(req);
    }
    req->charge = 0;
    return r;
}

void optd_http_reply_buf(optd_req_t *req, unsigned status, const char *content_type, char *body,
                         size_t len)
{
    struct MHD_Response *r = buffer_response(req, body, len);
    if (!r) {
        free(body);
        reply_static_500(req);
        return;
    }
    if (content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    set_response(req, status, r, len);
}

void optd_http_reply_static(optd_req_t *req, unsigned status, const char *content_type, const void *body,
                            size_t len)
{
    /* MHD_RESPMEM_PERSISTENT never writes to or frees the buffer. */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        reply_static_500(req);
        return;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    set_response(req, status, r, len);
}

void optd_http_reply_sbuf(optd_req_t *req, unsigned status, optd_sbuf_t *b)
{
    if (b->failed) {
        optd_sbuf_free(b);
        reply_static_500(req);
        return;
    }
    optd_sbuf_put(b, "\n", 1);
    if (b->failed) {
        optd_sbuf_free(b);
        reply_static_500(req);
        return;
    }
    char *p = b->p;
    size_t len = b->len;
    optd_sbuf_init(b);
    optd_http_reply_buf(req, status, "application/json", p ? p : strdup(""), len);
}

void optd_http_reply_json(optd_req_t *req, unsigned status, const json_t *doc)
{
    if (!doc) {
        reply_static_500(req);
        return;
    }
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_put_json(&b, doc);
    optd_http_reply_sbuf(req, status, &b);
}

void optd_http_reply_empty(optd_req_t *req, unsigned status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        reply_static_500(req);
        return;
    }
    set_response(req, status, r, 0);
}

void optd_http_put_error_object(optd_sbuf_t *b, int code, const char *msg,
                                const uint64_t *current_step)
{
    optd_sbuf_puts(b, "{\"code\":");
    optd_sbuf_put_jstring(b, optd_err_name(code));
    optd_sbuf_puts(b, ",\"message\":");
    optd_sbuf_put_jstring(b, msg && *msg ? msg : optd_err_name(code));
    if (current_step)
        optd_sbuf_printf(b, ",\"current_step\":%llu", (unsigned long long)*current_step);
    optd_sbuf_puts(b, "}");
}

static void reply_error(optd_req_t *req, int code, const char *msg, const uint64_t *current_step)
{
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_puts(&b, "{\"error\":");
    optd_http_put_error_object(&b, code, msg, current_step);
    optd_sbuf_puts(&b, "}");
    int status = optd_err_status(code);
    if (code == OPTD_ENOMEM || code == OPTD_EINTERNAL || code == OPTD_ECORRUPT)
        optd_log(&req->srv->log, OPTD_LOG_ERROR, "%s %s: %s", req->method_str, req->url,
                 msg ? msg : "internal error");
    optd_http_reply_sbuf(req, (unsigned)status, &b);
}

void optd_http_error(optd_req_t *req, int code, const char *fmt, ...)
{
    char msg[OPTD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_error(req, code, msg, NULL);
}

void optd_http_error_from(optd_req_t *req, const optd_err_t *err)
{
    reply_error(req, err->code ? err->code : OPTD_EINTERNAL, err->msg, NULL);
}

void optd_http_error_step(optd_req_t *req, uint64_t current_step, const optd_err_t *err)
{
    char msg[OPTD_ERR_MSG_MAX];
    if (err && err->msg[0])
        snprintf(msg, sizeof msg, "%s", err->msg);
    else
        snprintf(msg, sizeof msg, "the session is at step %llu", (unsigned long long)current_step);
    reply_error(req, OPTD_ESTEP, msg, &current_step);
}

void optd_http_error_status(optd_req_t *req, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[OPTD_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_puts(&b, "{\"error\":{\"code\":");
    optd_sbuf_put_jstring(&b, code);
    optd_sbuf_puts(&b, ",\"message\":");
    optd_sbuf_put_jstring(&b, msg);
    optd_sbuf_puts(&b, "}}");
    optd_http_reply_sbuf(req, status, &b);
}

void optd_http_header(optd_req_t *req, const char *name, const char *value)
{
    if (req->resp)
        MHD_add_response_header(req->resp, name, value);
}

void optd_http_reply_step(optd_req_t *req, bool binary, const optd_step_answer_t *a)
{
    char stepstr[24];
    *optd_fmt_uint(stepstr, a->step, 1) = '\0';
    size_t bytes = a->n * optd_dtype_size(a->dtype);
    if (binary) {
        optd_http_reply_buf(req, 200, "application/octet-stream", a->params, a->params ? bytes : 0);
        optd_http_header(req, "Optd-Dtype", optd_dtype_name(a->dtype));
    } else {
        optd_sbuf_t b;
        optd_sbuf_init(&b);
        optd_sbuf_reserve(&b, optd_codec_step_answer_bytes(a->rows ? a->n_rows : 0, a->n, a->params != NULL));
        optd_sbuf_puts(&b, "{");
        optd_codec_step_members(&b, a->step, a->rows, a->n_rows, a->dtype, a->params, a->n, req->srv->pool);
        optd_sbuf_puts(&b, "}");
        free(a->params);
        if (a->params && a->release_copy && req->charge >= bytes) {
            /* The copy is gone; the text stays counted while the answer is held. */
            optd_store_unreserve(req->srv->store, bytes);
            req->charge -= bytes;
        }
        optd_http_reply_sbuf(req, 200, &b);
    }
    optd_http_header(req, "Optd-Step", stepstr);
}
