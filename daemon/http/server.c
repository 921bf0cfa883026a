/* server.c: libmicrohttpd setup and the request life cycle.
 *
 * MHD runs its own worker threads (internal polling thread pool with
 * epoll; a thread per connection with --sync always, see
 * optd_http_start).  For each request the access handler is called first with the
 * headers only: that is where the framing (RFC 9112: where the body ends),
 * auth, routing, the shutting-down check, the body limit (from
 * Content-Length), the Content-Type and the body-memory budget are decided,
 * and a refusal is queued at once, before any body is read (MHD then closes
 * the connection instead of reading the body).  Body chunks are copied into
 * one buffer that grows as they come; a chunked body that grows past the
 * limit or the budget is no longer stored and gets 413 or 503 at its end.
 * The last call runs the route's handler.  A watchdog (optd_http_reap_slow)
 * cuts requests that arrive too slowly, never one whose handler started. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fmt.h"
#include "http.h"

/* A chunked body past --max-body-bytes (or past the body-memory budget) is
 * discarded up to this many bytes so the client can read its 413 (or 503);
 * beyond it the connection is cut. */
#define DISCARD_MAX ((size_t)64 << 20)

/* The slowest a body may arrive, as Apache's mod_reqtimeout MinRate: bytes
 * per second over each --connection-timeout window after the first. */
#define MIN_BODY_RATE 1024
/* A request (headers and body) still arriving after this many
 * --connection-timeouts is cut, however steadily it trickles. */
#define MAX_REQUEST_TIMEOUTS 10
/* A connection still inside an incomplete request line this long after
 * libmicrohttpd's idle timeout is a slowloris on the request line. */
#define IDLE_GRACE_MS 1000

/* A body declared up to this size gets its whole buffer at once (the
 * common small step: one malloc); a larger one starts at BODY_FIRST and
 * doubles as data comes, so memory follows what arrived, not what was
 * promised. */
#define BODY_WHOLE_MAX ((size_t)1 << 20)
#define BODY_FIRST ((size_t)64 << 10)
#define BODY_FIRST_CHUNKED ((size_t)4096)

/* Retry-After of the 503 that refuses a body while the budget is full:
 * bodies in flight either finish fast or are cut by the watchdog. */
#define BUSY_RETRY_AFTER "1"

/* "/v1" or "/v1/...": every such path needs the token when auth is on. */
static bool is_v1_path(const char *url)
{
    return strncmp(url, "/v1", 3) == 0 && (url[3] == '\0' || url[3] == '/');
}

/* The media type of Content-Type, lowercased, without parameters. */
static void media_type(const char *ct, char *out, size_t cap)
{
    size_t n = 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && n + 1 < cap; ct++)
        out[n++] = (char)((*ct >= 'A' && *ct <= 'Z') ? *ct - 'A' + 'a' : *ct);
    out[n] = '\0';
}

/* Moves the connection to ANSWER (the watchdog no longer cuts it): false
 * when the watchdog cut it first, and then nothing may run or be queued. */
static bool enter_answer(optd_req_t *req)
{
    if (!req->c)
        return true;
    int p = atomic_load(&req->c->phase);
    while (p != OPTD_CONN_CUT) {
        if (p == OPTD_CONN_ANSWER || atomic_compare_exchange_weak(&req->c->phase, &p, OPTD_CONN_ANSWER))
            return true;
    }
    return false;
}

static enum MHD_Result queue(optd_req_t *req)
{
    req->queued = true;
    if (!enter_answer(req)) {
        if (req->resp)
            MHD_destroy_response(req->resp);
        req->resp = NULL;
        return MHD_NO;
    }
    if (!req->resp)
        optd_http_error(req, OPTD_EINTERNAL, "the handler produced no response");
    if (atomic_load(&req->srv->shutting_down))
        MHD_add_response_header(req->resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (optd_ui_path(req->url))
        optd_ui_headers(req); /* on every answer under /ui/, errors too */
    enum MHD_Result r = req->resp ? MHD_queue_response(req->conn, req->status, req->resp) : MHD_NO;
    if (req->resp)
        MHD_destroy_response(req->resp);
    req->resp = NULL;
    return r;
}

/* ---- the body-memory budget ------------------------------------------------ */

static size_t budget_used(optd_server_t *srv)
{
    return atomic_load(&srv->body_mem);
}

static bool budget_take(optd_server_t *srv, size_t n)
{
    if (atomic_fetch_add(&srv->body_mem, n) + n <= srv->body_mem_max)
        return true;
    atomic_fetch_sub(&srv->body_mem, n);
    return false;
}

/* Bytes a buffer of cap bytes counts for (its terminating NUL is free, so
 * a body of exactly --max-body-bytes fits a budget of that size). */
static size_t budget_of(size_t cap)
{
    return cap ? cap - 1 : 0;
}

/* Frees the body and gives its bytes back to the budget. */
static void body_release(optd_req_t *req)
{
    if (req->body_cap)
        atomic_fetch_sub(&req->srv->body_mem, budget_of(req->body_cap));
    free(req->body);
    req->body = NULL;
    req->body_len = req->body_cap = 0;
}

/* 503 while the bodies in flight hold the whole budget; closes the
 * connection, since its body (if any) is not read. */
static void busy(optd_req_t *req)
{
    optd_http_error_status(req, MHD_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                           "request bodies in flight hold %zu of the %zu bytes --max-body-memory allows; "
                           "retry shortly",
                           budget_used(req->srv), req->srv->body_mem_max);
    optd_http_header(req, MHD_HTTP_HEADER_RETRY_AFTER, BUSY_RETRY_AFTER);
    optd_http_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* 413 that also closes the connection, so an unread body is never taken
 * for the next request.  413, 415, 401 and 405 have no optd_err code (the
 * layers below never see a body, a credential or a method): they are
 * worded here and encoded by respond.c like every other error. */
static void too_large(optd_req_t *req)
{
    atomic_fetch_add_explicit(&req->srv->metrics.body_too_large, 1, memory_order_relaxed);
    optd_http_error_status(req, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                           "the body is over --max-body-bytes (%zu bytes)", req->srv->cfg.max_body_bytes);
    optd_http_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
}

/* 415 for a Content-Type the route does not take. */
static void bad_media(optd_req_t *req, const char *ct)
{
    optd_http_error_status(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                           "Content-Type '%.64s' is not taken here (use application/json%s)", ct,
                           optd_router_takes_binary(req->def) ? " or application/octet-stream" : "");
}

static void unauthorized(optd_req_t *req)
{
    atomic_fetch_add_explicit(&req->srv->metrics.unauthorized, 1, memory_order_relaxed);
    optd_http_error_status(req, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                           "a valid 'Authorization: Bearer <token>' header is required");
    optd_http_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"optd\"");
}

static void method_not_allowed(optd_req_t *req, unsigned allowed)
{
    char allow[64];
    optd_router_allow_header(allowed, allow, sizeof allow);
    optd_http_error_status(req, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                           "%.16s is not allowed on %.100s (allowed: %.63s)", req->method_str, req->url, allow);
    optd_http_header(req, MHD_HTTP_HEADER_ALLOW, allow);
}

/* ---- framing (RFC 9112) --------------------------------------------------- */

/* What the headers say about where the body ends, from one pass over every
 * header MHD parsed.  MHD 0.9.75 looks at the first Content-Length or
 * Transfer-Encoding only and takes "Content-Length : 5" for an unknown
 * header, so it would read that body as the next request. */
typedef struct framing {
    const char *cl;          /* the first Content-Length value */
    const char *te;          /* the first Transfer-Encoding value */
    const char *bad_name;    /* a field name that is not a token */
    unsigned n_cl, n_te, n_host, n_chunked;
    bool cl_differ;          /* two Content-Length values differ */
    bool te_other;           /* a transfer coding other than chunked */
    bool bare_cr;            /* a CR inside a field value */
} framing_t;

/* RFC 9110 5.6.2's tchar: what a field name is made of. */
static bool is_tchar(unsigned char ch)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && memchr(extra, ch, sizeof extra - 1));
}

static void te_codings(framing_t *f, const char *v)
{
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *t = v;
        while (*v && *v != ',')
            v++;
        const char *e = v;
        while (e > t && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e - t == 7 && strncasecmp(t, "chunked", 7) == 0)
            f->n_chunked++;
        else if (e > t)
            f->te_other = true;
    }
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                   const char *value, size_t value_size)
{
    (void)kind;
    framing_t *f = cls;
    bool token = key_size > 0;
    for (size_t i = 0; token && i < key_size; i++)
        token = is_tchar((unsigned char)key[i]);
    if (!token) {
        if (!f->bad_name)
            f->bad_name = key;
        return MHD_YES;
    }
    if (value && memchr(value, '\r', value_size))
        f->bare_cr = true;
    if (!value)
        value = "";
    if (key_size == 14 && strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_cl++ == 0)
            f->cl = value;
        else if (strcmp(f->cl, value) != 0)
            f->cl_differ = true;
    } else if (key_size == 17 && strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (f->n_te++ == 0)
            f->te = value;
        te_codings(f, value);
    } else if (key_size == 4 && strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->n_host++;
    }
    return MHD_YES;
}

/* Scans the headers into f and answers what RFC 9112 says a server must
 * not guess at: 400 (501 for a transfer coding optd does not know), and
 * the connection closes, since where this request ends is unknown.  False
 * when it answered. */
static bool framing_ok(optd_req_t *req, const char *version, framing_t *f)
{
    memset(f, 0, sizeof *f);
    MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, scan_header, f);
    bool http11 = strncmp(version, "HTTP/1.", 7) == 0 && version[7] >= '1';
    char msg[200];
    if (f->bad_name)
        snprintf(msg, sizeof msg, "the header name '%.40s' is not a token (whitespace before the colon?)",
                 f->bad_name);
    else if (f->bare_cr)
        snprintf(msg, sizeof msg, "a header value holds a bare CR");
    else if (f->n_host > 1 || (f->n_host == 0 && http11))
        snprintf(msg, sizeof msg, "an HTTP/1.1 request needs exactly one Host header");
    else if (f->cl_differ)
        snprintf(msg, sizeof msg, "Content-Length headers that disagree");
    else if (f->n_te && f->n_cl)
        snprintf(msg, sizeof msg, "both Content-Length and Transfer-Encoding");
    else if (f->n_te && !http11)
        snprintf(msg, sizeof msg, "Transfer-Encoding in an HTTP/1.0 request");
    else if (f->te_other) {
        optd_http_error_status(req, MHD_HTTP_NOT_IMPLEMENTED, "not_implemented",
                               "Transfer-Encoding '%.60s' is not taken here (only chunked)", f->te);
        optd_http_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
        return false;
    } else if (f->n_te && f->n_chunked != 1)
        snprintf(msg, sizeof msg, "Transfer-Encoding must name chunked exactly once");
    else
        return true;
    optd_http_error(req, OPTD_EINVAL, "malformed request framing: %s (RFC 9112)", msg);
    optd_http_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
    return false;
}

/* Whether the request says a body follows (a Content-Length above 0, or a
 * Transfer-Encoding). */
static bool declares_body(const framing_t *f)
{
    if (f->n_te)
        return true;
    if (!f->cl)
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(f->cl, &end, 10);
    return errno || *end || end == f->cl || n > 0;
}

/* ---- the request ------------------------------------------------------------ */

/* The first call: headers only.  Leaves a response in req when the request
 * is refused before its body. */
static void begin(optd_req_t *req, const framing_t *f)
{
    optd_server_t *srv = req->srv;
    optd_router_match(req);

    bool needs_auth = srv->n_tokens > 0 &&
                      (is_v1_path(req->url) || (srv->cfg.metrics_auth && req->route == OPTD_R_METRICS));
    if (needs_auth && !optd_auth_check(srv, req->conn)) {
        unauthorized(req);
        return;
    }
    if (atomic_load(&srv->shutting_down)) {
        optd_http_error(req, OPTD_EUNAVAIL, "the daemon is shutting down");
        return;
    }
    if (req->route == OPTD_R_NONE) {
        optd_http_error(req, OPTD_ENOTFOUND, "no route %.100s", req->url);
        return;
    }
    unsigned allowed = optd_router_allowed(req->def);
    if (!(allowed & req->method)) {
        method_not_allowed(req, allowed);
        return;
    }

    if (f->cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(f->cl, &end, 10);
        if (errno || *end || n > srv->cfg.max_body_bytes) {
            too_large(req);
            return;
        }
        req->body_expected = (size_t)n;
    }

    if (req->method & (OPTD_M_POST | OPTD_M_PUT | OPTD_M_PATCH)) {
        const char *ct = optd_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
        char mt[80];
        media_type(ct ? ct : "", mt, sizeof mt);
        if (mt[0] == '\0' || strcmp(mt, "application/json") == 0)
            req->body_kind = OPTD_BODY_JSON;
        else if (strcmp(mt, "application/octet-stream") == 0 && optd_router_takes_binary(req->def))
            req->body_kind = OPTD_BODY_BINARY;
        else {
            bad_media(req, ct);
            return;
        }
    }
    /* Refused now, before the client sends it, rather than half-way: the
     * budget is only checked here, and taken as the body arrives. */
    size_t used = budget_used(srv);
    if (req->body_expected > (used < srv->body_mem_max ? srv->body_mem_max - used : 0))
        busy(req);
}

/* The capacity for a body that needs `need` bytes (its NUL included). */
static size_t next_cap(const optd_req_t *req, size_t need)
{
    size_t exp = req->body_expected;
    size_t cap;
    if (exp && exp < BODY_WHOLE_MAX)
        cap = exp + 1;
    else if (req->body_cap)
        cap = req->body_cap * 2;
    else
        cap = exp ? BODY_FIRST : BODY_FIRST_CHUNKED;
    while (cap < need)
        cap *= 2;
    if (exp && cap > exp + 1 && need <= exp + 1)
        cap = exp + 1;
    if (cap > req->srv->cfg.max_body_bytes + 1)
        cap = req->srv->cfg.max_body_bytes + 1;
    return cap;
}

/* The budget is full: the body is dropped and the rest discarded, to
 * answer 503 at its end (a declared body is read to its end, which
 * --max-body-bytes bounds; a chunked one up to DISCARD_MAX); false (cut
 * now) when a chunked body is already past that. */
static bool over_budget(optd_req_t *req, size_t n)
{
    size_t got = req->body_len + n;
    body_release(req);
    req->body_over_budget = true;
    req->body_discarded = got;
    return req->body_expected || got <= DISCARD_MAX;
}

/* Copies one chunk of the body (or counts it once over the limit). */
static bool take_chunk(optd_req_t *req, const char *data, size_t n)
{
    size_t max = req->srv->cfg.max_body_bytes;
    if (req->body_too_large || req->body_over_budget) {
        req->body_discarded += n;
        return req->body_expected || req->body_discarded <= DISCARD_MAX;
    }
    if (n > max - req->body_len) {
        size_t got = req->body_len + n;
        body_release(req);
        req->body_too_large = true;
        req->body_discarded = got;
        return true;
    }
    if (req->body_len + n + 1 > req->body_cap) {
        size_t cap = next_cap(req, req->body_len + n + 1);
        size_t more = budget_of(cap) - budget_of(req->body_cap);
        if (!budget_take(req->srv, more))
            return over_budget(req, n);
        char *p = realloc(req->body, cap);
        if (!p) {
            atomic_fetch_sub(&req->srv->body_mem, more);
            return false;
        }
        req->body = p;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return true;
}

/* The first call of a request: framing, then the checks of begin. */
static enum MHD_Result first_call(optd_req_t *req, const char *version)
{
    framing_t f;
    bool framed = framing_ok(req, version, &f);
    if (framed)
        begin(req, &f);
    if (!req->resp) {
        if (req->c && declares_body(&f)) {
            int head = OPTD_CONN_HEAD;
            atomic_compare_exchange_strong(&req->c->phase, &head, OPTD_CONN_BODY);
        }
        return MHD_YES;
    }
    /* A response queued now, before the body, makes MHD close the
     * connection so it never reads a body nobody asked for.  A request
     * with no body loses nothing by waiting for the final call, and so
     * keeps its keep-alive connection (a client probing for a session
     * that does not exist should not pay a new connection per 404).  A
     * framing error always closes: where the request ends is unknown. */
    if (framed && !declares_body(&f))
        return MHD_YES;
    return queue(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    optd_server_t *srv = cls;
    optd_req_t *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->srv = srv;
        req->conn = conn;
        req->url = url;
        req->method_str = method;
        req->method = optd_method_parse(method);
        req->start_ns = optd_mono_ns();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        req->c = ci ? ci->socket_context : NULL;
        *con_cls = req;
        atomic_fetch_add(&srv->in_flight, 1);
        return first_call(req, version);
    }
    if (req->queued) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (req->c)
            atomic_fetch_add(&req->c->received, *upload_data_size);
        bool ok = take_chunk(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ok ? MHD_YES : MHD_NO;
    }
    if (req->resp) /* refused at the headers; see first_call */
        return queue(req);
    /* Once the handler starts, the request is answered whatever its time;
     * one the watchdog cut before never runs. */
    if (!enter_answer(req))
        return MHD_NO;
    if (req->body_too_large)
        too_large(req);
    else if (req->body_over_budget)
        busy(req);
    else {
        /* A wait ended as its client closed (wait.c): no one to answer;
         * MHD_NO has libmicrohttpd close the connection now. */
        if (req->peer_gone)
            return MHD_NO;
        req->suspended = false;
        optd_router_dispatch(req);
        if (req->suspended) /* waiting (wait.c): called again once resumed */
            return MHD_YES;
        if (req->peer_gone) /* it waited on this thread (thread per connection) */
            return MHD_NO;
    }
    return queue(req);
}

/* MHD calls this as soon as a request line is in, before its headers: the
 * request's clock starts here, not when the previous request on the
 * connection ended (keep-alive idle time is libmicrohttpd's business). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    optd_conn_t *c = ci ? ci->socket_context : NULL;
    if (c) {
        atomic_store(&c->received, 0);
        atomic_store(&c->since_ms, optd_mono_ms());
        int idle = OPTD_CONN_IDLE;
        atomic_compare_exchange_strong(&c->phase, &idle, OPTD_CONN_HEAD);
    }
    return NULL; /* the access handler's *con_cls starts as NULL */
}

static void client_address(struct MHD_Connection *conn, char *buf, size_t cap)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, cap, "-");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)cap);
}

/* Up to max bytes of s at o; returns the end. */
static char *put_str(char *o, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    memcpy(o, s, n);
    return o + n;
}

/* The request's log line into o (at least 400 bytes), as
 * "ADDR METHOD PATH STATUS 1.234ms 567B"; returns its length.  By hand,
 * not printf: formatting was the largest part of a small step's own CPU
 * time.  The path is cut at 200 bytes, the method at 16. */
static size_t request_line(char *o, const char *addr, const char *method, const char *url, unsigned status,
                           long long us, size_t bytes)
{
    char *p = o;
    p = put_str(p, addr, INET6_ADDRSTRLEN);
    *p++ = ' ';
    p = put_str(p, method, 16);
    *p++ = ' ';
    p = put_str(p, url, 200);
    *p++ = ' ';
    p = optd_fmt_uint(p, status, 1);
    *p++ = ' ';
    p = optd_fmt_uint(p, (unsigned long long)(us / 1000), 1);
    *p++ = '.';
    p = optd_fmt_uint(p, (unsigned long long)(us % 1000), 3);
    memcpy(p, "ms ", 3);
    p = optd_fmt_uint(p + 3, bytes, 1);
    *p++ = 'B';
    return (size_t)(p - o);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    optd_server_t *srv = cls;
    optd_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    double secs = (double)(optd_mono_ns() - req->start_ns) / 1e9;
    if (req->queued)
        optd_metrics_request(&srv->metrics, req->method_str, (int)req->status, secs);
    char own_addr[INET6_ADDRSTRLEN];
    const char *addr = req->c ? req->c->addr : own_addr;
    if (!req->c)
        client_address(conn, own_addr, sizeof own_addr);
    /* Whole microseconds printed as ms with three decimals: integers, since
     * %f costs more than the rest of the line. */
    long long us = (long long)(secs * 1e6);
    /* MHD passes the path without the query string, so query values (which
     * are not secrets here anyway) never reach the log. */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) { /* buffered: one write per many requests */
        char line[400];
        size_t len = request_line(line, addr, req->method_str, req->url, req->status, us, req->resp_bytes);
        optd_log_buffered(&srv->log, OPTD_LOG_INFO, line, len);
    } else
        optd_log(&srv->log, req->queued ? OPTD_LOG_INFO : OPTD_LOG_DEBUG,
                 "%s %s %.200s %u %lld.%03lldms %zuB (connection ended early: %s)", addr, req->method_str,
                 req->url, req->status, us / 1000, us % 1000, req->resp_bytes,
                 toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "timeout"
                 : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown"
                 : toe == MHD_REQUEST_TERMINATED_READ_ERROR ? "read error"
                 : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ? "client closed"
                 : "error");
    if (req->c) {
        /* Idle until the next request line (or cut, which stays). */
        atomic_store(&req->c->since_ms, optd_mono_ms());
        int p = atomic_load(&req->c->phase);
        while (p != OPTD_CONN_CUT && !atomic_compare_exchange_weak(&req->c->phase, &p, OPTD_CONN_IDLE))
            ;
    }
    if (req->resp)
        MHD_destroy_response(req->resp);
    optd_wait_end(req);
    body_release(req);
    free(req);
    atomic_fetch_sub(&srv->in_flight, 1);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    optd_server_t *srv = cls;
    atomic_fetch_add_explicit(&srv->metrics.connections, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1,
                              memory_order_relaxed);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        optd_conn_t *c = ci ? calloc(1, sizeof *c) : NULL;
        if (!c)
            return; /* not watched: only the idle timeout applies */
        c->fd = ci->connect_fd;
        client_address(conn, c->addr, sizeof c->addr); /* once, not per request */
        atomic_store(&c->since_ms, optd_mono_ms()); /* phase IDLE (0) from calloc */
        pthread_mutex_lock(&srv->conns_mu);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        pthread_mutex_unlock(&srv->conns_mu);
        *socket_context = c;
        return;
    }
    optd_conn_t *c = *socket_context;
    if (!c)
        return;
    /* MHD closes the socket after this returns, so unlinking here under
     * the lock keeps the watchdog from ever touching a reused fd. */
    pthread_mutex_lock(&srv->conns_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->conns_mu);
    free(c);
    *socket_context = NULL;
}

/* Whether a body brought less than MIN_BODY_RATE over the last window of
 * t ms; the first window (the request's first t ms) is free. */
static bool body_too_slow(optd_conn_t *c, int64_t now, int64_t since, int64_t t)
{
    size_t got = atomic_load(&c->received);
    if (now - since < t)
        return false;
    if (c->win_of != since || got < c->win_bytes) {
        c->win_of = since;
        c->win_start_ms = now;
        c->win_bytes = got;
        return false;
    }
    if (now - c->win_start_ms < t)
        return false;
    if (got - c->win_bytes < (size_t)(MIN_BODY_RATE * t / 1000))
        return true;
    c->win_start_ms = now;
    c->win_bytes = got;
    return false;
}

size_t optd_http_reap_slow(optd_server_t *srv)
{
    if (!srv->mhd || srv->cfg.connection_timeout == 0)
        return 0;
    int64_t now = optd_mono_ms();
    int64_t t = (int64_t)srv->cfg.connection_timeout * 1000;
    size_t closed = 0;
    pthread_mutex_lock(&srv->conns_mu);
    for (optd_conn_t *c = srv->conns; c; c = c->next) {
        int p = atomic_load(&c->phase);
        int64_t age = now - atomic_load(&c->since_ms);
        bool cut = false;
        if (p == OPTD_CONN_IDLE)
            cut = age > t + IDLE_GRACE_MS;
        else if (p == OPTD_CONN_HEAD)
            cut = age > t;
        else if (p == OPTD_CONN_BODY)
            cut = age > t * MAX_REQUEST_TIMEOUTS || body_too_slow(c, now, now - age, t);
        /* The compare-and-swap loses to a handler that just started. */
        if (cut && atomic_compare_exchange_strong(&c->phase, &p, OPTD_CONN_CUT)) {
            /* shutdown, not close: MHD still owns the fd and sees EOF. */
            shutdown(c->fd, SHUT_RDWR);
            closed++;
        }
    }
    pthread_mutex_unlock(&srv->conns_mu);
    if (closed)
        optd_log(&srv->log, OPTD_LOG_INFO, "closed %zu connections whose request arrived too slowly "
                                          "(--connection-timeout %u s)", closed, srv->cfg.connection_timeout);
    return closed;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    optd_server_t *srv = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    optd_log(&srv->log, OPTD_LOG_WARN, "libmicrohttpd: %s", msg);
}

/* Reads a whole (PEM) file into a NUL-terminated malloc'd string. */
static int read_file(const char *path, const char *flag, char **out, optd_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return optd_err_set(err, OPTD_EINVAL, "cannot read %s %s: %s", flag, path, strerror(errno));
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        optd_sbuf_put(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad || b.failed || b.len == 0) {
        optd_sbuf_free(&b);
        return optd_err_set(err, OPTD_EINVAL, "cannot read %s %s: %s", flag, path,
                            bad ? strerror(errno) : "empty file or out of memory");
    }
    *out = b.p;
    return 0;
}

/* The body budget: --max-body-memory, resolved by main when not given. */
static void set_body_budget(optd_server_t *srv)
{
    srv->body_mem_max = srv->cfg.max_body_memory ? srv->cfg.max_body_memory : SIZE_MAX / 2;
    atomic_store(&srv->body_mem, 0);
}

int optd_http_start(optd_server_t *srv, optd_err_t *err)
{
    set_body_budget(srv);
    if (!srv->conns_mu_ready) {
        pthread_mutex_init(&srv->conns_mu, NULL);
        srv->conns_mu_ready = true;
    }
    char host[256];
    unsigned port;
    int rc = optd_config_split_listen(srv->cfg.listen, host, sizeof host, &port, err);
    if (rc)
        return rc;

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%u", port);
    int gai = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (gai || !res)
        return optd_err_set(err, OPTD_EINVAL, "--listen %s: cannot resolve '%s': %s", srv->cfg.listen,
                            host, gai_strerror(gai));
    struct sockaddr_storage addr;
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    int family = res->ai_family;
    freeaddrinfo(res);

    /* Normally a pool of --threads workers, each serving many connections
     * with epoll: the fastest mode.  With --sync always a step's handler
     * waits for its fsync round, and a pool worker waiting there holds up
     * every other connection it serves (head-of-line blocking), which also
     * keeps their changes out of the round being gathered.  So then each
     * connection gets a thread of its own (poll, not select: no FD_SETSIZE
     * limit), and every waiting client's change joins the next round
     * (README Performance has the figures). */
    bool per_connection = srv->cfg.data_dir && srv->cfg.sync == OPTD_SYNC_ALWAYS;
    srv->per_connection = per_connection;
    if ((rc = optd_wait_init(srv, err)))
        return rc;
    /* Waiting requests (wait.c) are suspended, except with a thread per
     * connection, where they wait on their own thread. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    flags |= per_connection ? MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL : MHD_USE_EPOLL;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;

    struct MHD_OptionItem opts[16];
    size_t k = 0;
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &addr};
    if (srv->cfg.threads > 1 && !per_connection)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, srv->cfg.threads, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, srv->cfg.max_connections, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, srv->cfg.connection_timeout, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)optd_router_unescape, NULL};

    if (srv->cfg.tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return optd_err_set(err, OPTD_EINVAL, "this libmicrohttpd was built without TLS support");
        rc = read_file(srv->cfg.tls_cert, "--tls-cert", &srv->tls_cert_pem, err);
        if (!rc)
            rc = read_file(srv->cfg.tls_key, "--tls-key", &srv->tls_key_pem, err);
        if (rc)
            return rc;
        flags |= MHD_USE_TLS;
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert_pem};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key_pem};
    }
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

    /* The logger goes first so MHD's messages about later options reach it. */
    srv->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, srv,
                                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                                MHD_OPTION_URI_LOG_CALLBACK, on_request_line, srv,
                                MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!srv->mhd)
        return optd_err_set(err, OPTD_EIO, "cannot serve on %s%s (see the libmicrohttpd message above)",
                            srv->cfg.listen, srv->cfg.tls_cert ? " with TLS" : "");

    /* Report the port actually bound (port 0 asks the kernel for one). */
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = di ? di->port : port;
    if (family == AF_INET6)
        snprintf(srv->listen_desc, sizeof srv->listen_desc, "[%.120s]:%u", host, bound);
    else
        snprintf(srv->listen_desc, sizeof srv->listen_desc, "%.120s:%u", host[0] ? host : "0.0.0.0", bound);
    return 0;
}

void optd_http_quiesce(optd_server_t *srv)
{
    if (!srv->mhd)
        return;
    MHD_socket fd = MHD_quiesce_daemon(srv->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void optd_http_stop(optd_server_t *srv)
{
    /* libmicrohttpd must not be stopped with a connection suspended:
     * every waiting request is answered first. */
    optd_wait_stop_all(srv);
    if (srv->mhd)
        MHD_stop_daemon(srv->mhd);
    optd_wait_shutdown(srv);
    srv->mhd = NULL;
    if (srv->conns_mu_ready) {
        pthread_mutex_destroy(&srv->conns_mu);
        srv->conns_mu_ready = false;
    }
    if (srv->tls_key_pem) {
        volatile char *p = srv->tls_key_pem;
        while (*p)
            *p++ = 0;
    }
    free(srv->tls_cert_pem);
    free(srv->tls_key_pem);
    srv->tls_cert_pem = srv->tls_key_pem = NULL;
}
