/* harness.c: the in-process optd and the stand-in libmicrohttpd calls the
 * fuzz targets use (see harness.h). */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"

void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz finding: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

char *fz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        fz_fail("out of memory");
    if (len)
        memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

/* ---- the stand-in libmicrohttpd ---------------------------------------------- */

/* A "connection" is the request being run: its query and headers. */
struct MHD_Connection {
    const fz_http_t *r;
};

struct MHD_Response {
    void *buf;
    size_t len;
    bool must_free;
    MHD_ContentReaderFreeCallback free_cb; /* with its cls, instead of must_free */
    void *free_cls;
    char content_type[64];
};

const char *MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
                                        const char *key)
{
    const char *(*tab)[2] = kind == MHD_GET_ARGUMENT_KIND ? (const char *(*)[2])c->r->query
                            : kind == MHD_HEADER_KIND      ? (const char *(*)[2])c->r->header
                                                           : NULL;
    if (!tab)
        return NULL;
    for (int i = 0; i < 4 && tab[i][0]; i++)
        if (strcasecmp(tab[i][0], key) == 0)
            return tab[i][1];
    return NULL;
}

int MHD_get_connection_values(struct MHD_Connection *c, enum MHD_ValueKind kind,
                              MHD_KeyValueIterator it, void *cls)
{
    const char *(*tab)[2] = kind == MHD_GET_ARGUMENT_KIND ? (const char *(*)[2])c->r->query
                            : kind == MHD_HEADER_KIND      ? (const char *(*)[2])c->r->header
                                                           : NULL;
    int n = 0;
    for (int i = 0; tab && i < 4 && tab[i][0]; i++) {
        n++;
        if (it && it(cls, kind, tab[i][0], tab[i][1]) != MHD_YES)
            break;
    }
    return n;
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
                                                     enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->buf = buffer;
    r->len = size;
    r->must_free = mode == MHD_RESPMEM_MUST_FREE;
    if (mode == MHD_RESPMEM_MUST_COPY && size) {
        if (!(r->buf = malloc(size))) {
            free(r);
            return NULL;
        }
        memcpy(r->buf, buffer, size);
        r->must_free = true;
    }
    return r;
}

/* A body charged to the memory budget (respond.c) comes with a callback
 * that frees it; without this stand-in the real library's response would
 * reach the fake MHD_destroy_response below. */
struct MHD_Response *MHD_create_response_from_buffer_with_free_callback_cls(size_t size, void *buffer,
                                                                          MHD_ContentReaderFreeCallback crfc,
                                                                          void *crfc_cls)
{
    struct MHD_Response *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->buf = buffer;
    r->len = size;
    r->free_cb = crfc;
    r->free_cls = crfc_cls;
    return r;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *r, const char *header, const char *content)
{
    if (strcasecmp(header, MHD_HTTP_HEADER_CONTENT_TYPE) == 0)
        snprintf(r->content_type, sizeof r->content_type, "%s", content);
    return MHD_YES;
}

void MHD_destroy_response(struct MHD_Response *r)
{
    if (!r)
        return;
    if (r->must_free)
        free(r->buf);
    if (r->free_cb)
        r->free_cb(r->free_cls);
    free(r);
}

/* ---- the server ------------------------------------------------------------------ */

void fz_server_open(optd_server_t *srv)
{
    memset(srv, 0, sizeof *srv);
    optd_config_defaults(&srv->cfg);
    srv->cfg.history = 16;
    srv->cfg.max_params = 4096; /* big sessions only slow the fuzzer down */
    optd_log_init(&srv->log);
    atomic_store(&srv->log.level, OPTD_LOG_ERROR);
    optd_metrics_init(&srv->metrics);
    optd_store_limits_t lim = {.max_sessions = 64, .max_params = srv->cfg.max_params, .history = 16};
    optd_err_t err = {0};
    if (optd_store_new(&lim, &srv->store, &err) != 0)
        fz_fail("optd_store_new: %s", err.msg);
}

void fz_server_close(optd_server_t *srv)
{
    optd_store_free(srv->store);
    srv->store = NULL;
}

void fz_add_session(optd_server_t *srv, const char *name, const char *optimizer, optd_dtype_t dtype,
                    size_t size)
{
    optd_session_config_t cfg = {0};
    optd_err_t err = {0};
    if (optd_optim_lookup(optimizer, &cfg.kind, &err) != 0)
        fz_fail("%s", err.msg);
    cfg.dtype = dtype;
    optd_hparams_default(cfg.kind, &cfg.hp);
    if (optd_session_config_add_label(&cfg, "team", "fuzz", &err) != 0)
        fz_fail("%s", err.msg);
    double init[8] = {0.5, -1.25, 3.0, 1e-3, -7.0, 2.5, 0.0, 9.0};
    float initf[8];
    for (int i = 0; i < 8; i++)
        initf[i] = (float)init[i];
    if (size > 8)
        fz_fail("fz_add_session: at most 8 parameters");
    optd_session_t *s = NULL;
    if (optd_session_create(name, &cfg, size, dtype == OPTD_FLOAT32 ? (void *)initf : (void *)init, 16, &s,
                            &err) != 0)
        fz_fail("optd_session_create: %s", err.msg);
    optd_session_config_free(&cfg);
    if (optd_store_insert(srv->store, s, false, NULL, &err) != 0)
        fz_fail("optd_store_insert: %s", err.msg);
    optd_session_release(s);
}

/* ---- one request ------------------------------------------------------------------ */

static void check_answer(const fz_http_t *r)
{
    /* 500 is for out of memory and internal errors: no input may cause one
     * (the fuzzer's allocations are bounded well below any real limit). */
    if (r->status < 200 || r->status >= 500)
        fz_fail("%s %s answered %u: %.*s", r->method, r->url, r->status, (int)(r->resp_len > 400 ? 400 : r->resp_len),
                r->resp);
    if (strncmp(r->content_type, "application/json", 16) != 0)
        return;
    json_error_t jerr;
    json_t *doc = json_loadb(r->resp, r->resp_len, 0, &jerr);
    if (!doc && json_error_code(&jerr) == json_error_invalid_utf8 && r->status >= 400) {
        /* Known, reported: error messages quote the request's bytes (a
         * Jansson error near '...', an unknown field's name) or are cut at
         * OPTD_ERR_MSG_MAX, and optd_sbuf_put_jstring copies bytes >= 0x80
         * unchecked, so the answer can be invalid UTF-8.  Such an answer
         * must still be valid JSON apart from that; regressions/ keeps
         * inputs that show it. */
        char *copy = fz_strndup((const uint8_t *)r->resp, r->resp_len);
        for (size_t i = 0; i < r->resp_len; i++)
            if ((unsigned char)copy[i] >= 0x80)
                copy[i] = '?';
        doc = json_loadb(copy, r->resp_len, 0, &jerr);
        free(copy);
    }
    if (!doc)
        fz_fail("%s %s answered %u with invalid JSON (%s): %.*s", r->method, r->url, r->status, jerr.text,
                (int)(r->resp_len > 400 ? 400 : r->resp_len), r->resp);
    if (r->status >= 400) {
        json_t *e = json_object_get(doc, "error");
        if (!json_is_string(json_object_get(e, "code")) || !json_is_string(json_object_get(e, "message")))
            fz_fail("%s %s answered %u without error.code/message: %.*s", r->method, r->url, r->status,
                    (int)(r->resp_len > 400 ? 400 : r->resp_len), r->resp);
    }
    json_decref(doc);
}

void fz_request(optd_server_t *srv, fz_http_t *r)
{
    struct MHD_Connection conn = {.r = r};
    optd_req_t req;
    memset(&req, 0, sizeof req);
    req.srv = srv;
    req.conn = &conn;
    req.method_str = r->method;
    req.method = optd_method_parse(r->method);
    req.url = r->url;
    optd_router_match(&req);
    if (req.route == OPTD_R_NONE || !(optd_router_allowed(req.def) & req.method))
        fz_fail("harness bug: %s %s is not a route", r->method, r->url);
    /* As server.c hands it over: a malloc'd, NUL-terminated copy. */
    req.body_kind = r->body_len == 0 && !r->binary ? OPTD_BODY_NONE
                    : r->binary                    ? OPTD_BODY_BINARY
                                                   : OPTD_BODY_JSON;
    if (req.body_kind != OPTD_BODY_NONE) {
        req.body = fz_strndup(r->body, r->body_len);
        req.body_len = req.body_cap = r->body_len;
    }
    optd_router_dispatch(&req);
    free(req.body);
    if (!req.resp)
        fz_fail("%s %s: the handler chose no answer", r->method, r->url);
    r->status = req.status;
    r->resp = fz_strndup(req.resp->buf, req.resp->len);
    r->resp_len = req.resp->len;
    snprintf(r->content_type, sizeof r->content_type, "%s", req.resp->content_type);
    MHD_destroy_response(req.resp);
    check_answer(r);
}

void fz_http_done(fz_http_t *r)
{
    free(r->resp);
    r->resp = NULL;
}
