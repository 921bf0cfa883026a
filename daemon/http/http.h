/* http.h: the HTTP layer's internals, shared by the server, the router and
 * the per-resource handlers.
 *
 * One optd_req_t lives for one request (libmicrohttpd's con_cls): the route
 * it matched, its body as it accumulates, and the response the handler
 * chose.  Handlers run once the whole body is in, on an MHD worker thread,
 * and answer through optd_http_reply_* / optd_http_error; they never block
 * beyond a session's own update. */
#ifndef OPTD_HTTP_H
#define OPTD_HTTP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "doc.h"
#include "optd/error.h"
#include "server.h"
#include "session.h"
#include "sbuf.h"

typedef enum optd_method {
    OPTD_M_GET = 1 << 0,
    OPTD_M_HEAD = 1 << 1,
    OPTD_M_POST = 1 << 2,
    OPTD_M_PUT = 1 << 3,
    OPTD_M_PATCH = 1 << 4,
    OPTD_M_DELETE = 1 << 5,
    OPTD_M_OTHER = 1 << 6
} optd_method_t;

typedef enum optd_route {
    OPTD_R_NONE = 0,
    OPTD_R_HEALTHZ,
    OPTD_R_METRICS,
    OPTD_R_OPTIMIZERS,
    OPTD_R_SESSIONS,       /* /v1/sessions */
    OPTD_R_SESSION,        /* /v1/sessions/{name} */
    OPTD_R_PARAMS,         /* .../params */
    OPTD_R_STEP,           /* .../step */
    OPTD_R_HISTORY,        /* .../history */
    OPTD_R_STATE,          /* .../state */
    OPTD_R_ROWS,           /* .../rows: read a table's rows (API.md 1.1, Tables) */
    OPTD_R_STEPS,          /* /v1/steps: a batch of steps over many sessions */
    OPTD_R_ROOT,           /* / (redirects to the page) */
    OPTD_R_UI              /* /ui and /ui/... (the page, route_ui.c) */
} optd_route_t;

typedef enum optd_body_kind {
    OPTD_BODY_NONE = 0,
    OPTD_BODY_JSON,
    OPTD_BODY_BINARY
} optd_body_kind_t;

/* Where a connection's current request is, for the slow-request watchdog
 * (server.c).  Workers move it forward with compare-and-swap; the watchdog
 * cuts only IDLE, HEAD and BODY, and CUT is final: a request whose handler
 * has started is always answered, and a request cut before its handler
 * never runs. */
typedef enum optd_conn_phase {
    OPTD_CONN_IDLE = 0,  /* between requests (keep-alive), or a request line not yet complete */
    OPTD_CONN_HEAD,      /* the request line is in, headers arriving */
    OPTD_CONN_BODY,      /* headers in, body arriving */
    OPTD_CONN_ANSWER,    /* the handler runs or the answer is queued: never cut */
    OPTD_CONN_CUT        /* the watchdog shut the socket down */
} optd_conn_phase_t;

/* One open connection, for the slow-request watchdog (server.c). */
typedef struct optd_conn {
    struct optd_conn *prev, *next; /* srv->conns, under srv->conns_mu */
    int fd;
    atomic_int phase;              /* optd_conn_phase_t */
    atomic_llong since_ms;         /* IDLE: when the last request ended; else when this one began */
    atomic_size_t received;        /* body bytes of the current request so far */
    /* The watchdog's own, under srv->conns_mu: the body-rate window. */
    int64_t win_of;                /* since_ms of the request the window belongs to */
    int64_t win_start_ms;
    size_t win_bytes;
    char addr[INET6_ADDRSTRLEN];   /* the client's address, for the log */
} optd_conn_t;

/* A row of router.c's route table (opaque outside it). */
typedef struct optd_route_def optd_route_def_t;

typedef struct optd_req {
    optd_server_t *srv;
    struct MHD_Connection *conn;
    optd_conn_t *c;          /* NULL if the connection is not watched */
    const char *method_str;
    optd_method_t method;
    const char *url;         /* path without the query, as MHD decoded it */
    optd_route_t route;
    const optd_route_def_t *def; /* the route table's row; NULL when no route */
    char name[OPTD_NAME_MAX + 1]; /* the {name} segment, when the route has one */
    bool name_too_long;
    int64_t start_ns;

    optd_body_kind_t body_kind;
    char *body;              /* malloc'd, NUL-terminated, one buffer grown as chunks come */
    size_t body_len, body_cap; /* body_cap - 1 bytes are counted in srv->body_mem */
    size_t body_expected;    /* Content-Length, or 0 when chunked/absent */
    bool body_too_large;     /* over --max-body-bytes: the rest is discarded */
    bool body_over_budget;   /* over --max-body-memory: the rest is discarded, then 503 */
    size_t body_discarded;

    /* Bytes of --max-memory reserved for the body being built: the next
     * optd_http_reply_buf hands them to its response, and they are
     * returned when libmicrohttpd frees it (a big answer is counted for as
     * long as it is held); optd_http_charge_drop returns what is left. */
    size_t charge;

    /* Waiting (wait.c): set while a handler waits for an event, and
     * when the handler is called again to answer after it. */
    struct optd_wait *wait;
    bool suspended;          /* the handler suspended the connection: no answer yet */
    bool peer_gone;          /* its wait ended as the client closed: closed without an answer */

    /* The response, built by a handler and queued by the server. */
    struct MHD_Response *resp;
    unsigned status;
    size_t resp_bytes;
    bool queued;
} optd_req_t;

/* ---- router.c ------------------------------------------------------------ */

/* Matches req->url against the route table: sets req->def and req->route
 * (NULL and OPTD_R_NONE when no route) and req->name. */
void optd_router_match(optd_req_t *req);
/* The methods a route takes (a mask of optd_method_t; 0 for NULL). */
unsigned optd_router_allowed(const optd_route_def_t *def);
/* Whether a route takes application/octet-stream bodies. */
bool optd_router_takes_binary(const optd_route_def_t *def);
/* "GET, HEAD, POST" for an Allow header; buf of at least 64 bytes. */
void optd_router_allow_header(unsigned mask, char *buf, size_t cap);
optd_method_t optd_method_parse(const char *method);
/* libmicrohttpd's unescape callback (MHD_OPTION_UNESCAPE_CALLBACK): decodes
 * %XX in place as MHD does, except in a /v1/sessions/ path, where %00 and
 * %2F stay as they are: decoded, they would cut the {name} short or move
 * it to another resource; kept, the name is invalid (400).  Returns the new
 * length. */
size_t optd_router_unescape(void *cls, struct MHD_Connection *conn, char *s);
/* Runs the handler of req's route and method. */
void optd_router_dispatch(optd_req_t *req);

/* ---- auth.c -------------------------------------------------------------- */

/* Reads --auth-token-file into srv->tokens: 0, or OPTD_EINVAL when the file
 * is missing, unreadable or holds no token. */
int optd_auth_load(optd_server_t *srv, const char *path, optd_err_t *err);
void optd_auth_free(optd_server_t *srv);
/* True when the request carries "Authorization: Bearer <one of the tokens>".
 * The comparison takes the same time wherever the tokens differ. */
bool optd_auth_check(optd_server_t *srv, struct MHD_Connection *conn);

/* ---- respond.c ----------------------------------------------------------- */

/* Each sets req->resp/status; a later call replaces an earlier one. */
void optd_http_reply_buf(optd_req_t *req, unsigned status, const char *content_type, char *body,
                         size_t len);                    /* takes ownership of body (malloc'd) */
/* body stays the caller's and must outlive the response (a static or
 * process-long buffer). */
void optd_http_reply_static(optd_req_t *req, unsigned status, const char *content_type, const void *body,
                            size_t len);
void optd_http_reply_sbuf(optd_req_t *req, unsigned status, optd_sbuf_t *b); /* JSON; takes b */
/* Returns req->charge to the budget (a handler's way out without a body). */
void optd_http_charge_drop(optd_req_t *req);
void optd_http_reply_json(optd_req_t *req, unsigned status, const json_t *doc);
void optd_http_reply_empty(optd_req_t *req, unsigned status);
/* What a step answers (and every request answered as one: a rows step, a
 * round's outcome, a read of rows, GET and PUT params). */
typedef struct optd_step_answer {
    uint64_t step;
    const uint64_t *rows;  /* a rows step's or read's rows, or NULL */
    size_t n_rows;
    optd_dtype_t dtype;
    void *params;          /* n values of dtype, malloc'd, taken; NULL: none (?return=none, a PUT) */
    size_t n;
    bool release_copy;     /* params' bytes are in req->charge: returned once the JSON text is built */
} optd_step_answer_t;
/* The one encoder of step answers: JSON {"step"[, "rows"], "params"} (the
 * members printed by optd_codec_step_members), or in binary the values
 * alone with Optd-Dtype; Optd-Step either way. */
void optd_http_reply_step(optd_req_t *req, bool binary, const optd_step_answer_t *a);
/* An error body {"error":{"code","message"}} for an optd error code. */
void optd_http_error(optd_req_t *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void optd_http_error_from(optd_req_t *req, const optd_err_t *err);
/* 409 step_mismatch with "current_step". */
void optd_http_error_step(optd_req_t *req, uint64_t current_step, const optd_err_t *err);
void optd_http_header(optd_req_t *req, const char *name, const char *value);
/* An error body with a status and code name of its own, for the answers
 * the HTTP layer gives itself (413, 501, 503 busy) that no optd_err code
 * maps to; the message is one sentence. */
void optd_http_error_status(optd_req_t *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- request helpers (request.c) ----------------------------------------- */

/* Reads the body as the document spec describes (doc.h): 0, or the error
 * to answer in err (a binary body too: invalid_argument).  Always
 * optd_doc_free doc. */
int optd_req_doc(optd_req_t *req, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err);
/* A query argument, or NULL. */
const char *optd_req_query(optd_req_t *req, const char *key);
const char *optd_req_header(optd_req_t *req, const char *key);
/* The session named by the URL with a reference (release it), or NULL after
 * answering 404 (or 400 for an invalid name).  Touches it (ttl). */
optd_session_t *optd_req_session(optd_req_t *req);
/* Parses a query integer in [lo, hi] (def when absent): false after 400. */
bool optd_req_query_u64(optd_req_t *req, const char *key, uint64_t lo, uint64_t hi, uint64_t def,
                        uint64_t *out);

/* ---- handlers (route_*.c) ------------------------------------------------ */

/* Answers status with s's descriptor (copied under its lock, encoded
 * outside it). */
void optd_http_reply_descriptor(optd_req_t *req, optd_session_t *s, unsigned status);
/* Applies the optional fields create, fork, patch and import share
 * (hyperparameters, groups, schedule, max_grad_norm, labels, ttl_seconds)
 * when present in body; top-level hyperparameters also go into every group. */
int optd_http_apply_config_fields(const json_t *body, optd_session_config_t *cfg, optd_err_t *err);
/* 0, or OPTD_ELIMIT when a round of a->workers gradients of size values
 * would be more than --max-params. */
int optd_http_round_fits(optd_req_t *req, const optd_aggregate_t *a, size_t size, optd_err_t *err);
/* The answer for an error returned by the store or a session. */
void optd_http_store_error(optd_req_t *req, int rc, const optd_err_t *err);

void optd_route_healthz(optd_req_t *req);
void optd_route_metrics(optd_req_t *req);
void optd_route_optimizers(optd_req_t *req);
void optd_route_sessions_list(optd_req_t *req);
void optd_route_sessions_create(optd_req_t *req);   /* POST /v1/sessions, PUT /v1/sessions/{name} */
void optd_route_session_get(optd_req_t *req);
void optd_route_session_patch(optd_req_t *req);
void optd_route_session_delete(optd_req_t *req);
void optd_route_params_get(optd_req_t *req);
void optd_route_rows_post(optd_req_t *req);
void optd_route_params_put(optd_req_t *req);
void optd_route_step(optd_req_t *req);
/* route_round.c: a step with a worker, on an aggregating session: its
 * input in, *sp the session (the caller's reference, moved to the session
 * that replaced it when an import did meanwhile: optd_store_contribute).
 * Answers, or waits (req->wait) and answers in
 * optd_route_contribute_finish. */
void optd_route_contribute(optd_req_t *req, optd_session_t **sp, const optd_step_input_t *in, const char *worker,
                           bool return_none);
void optd_route_contribute_finish(optd_req_t *req);
/* A worker's name (the session-name rule) into out: 0 or OPTD_EINVAL. */
int optd_route_worker_name(const char *v, char *out, optd_err_t *err);
void optd_route_history_get(optd_req_t *req);
void optd_route_state_get(optd_req_t *req);
void optd_route_state_put(optd_req_t *req);
void optd_route_steps(optd_req_t *req);             /* POST /v1/steps */
void optd_route_root(optd_req_t *req);              /* GET / : 302 to /ui/ */
void optd_route_ui(optd_req_t *req);                /* GET /ui/... : the page's files */

/* Appends API.md's error object {"code", "message"[, "current_step"]} to b
 * (what an error body holds under "error", and a batch item's result). */
void optd_http_put_error_object(optd_sbuf_t *b, int code, const char *msg,
                                const uint64_t *current_step);

/* ---- route_ui.c: the page's set-up ---------------------------------------- */

/* With --ui on, reads the chart library (Chart.js's browser build) from
 * --ui-assets or Debian's libjs-chart.js into srv; when there is none, logs
 * a warning and the page runs without charts.  Always 0: the page is never
 * a reason not to start. */
int optd_ui_load(optd_server_t *srv);
void optd_ui_free(optd_server_t *srv);
/* True for "/", "/ui" and "/ui/...": the paths whose every answer carries
 * optd_ui_headers. */
bool optd_ui_path(const char *url);
/* Adds the page's security headers (CSP, nosniff, ...) to req's answer. */
void optd_ui_headers(optd_req_t *req);

/* ---- wait.c: requests that wait without holding a thread ------------------- */

/* Why a wait ended, beside the session's OPTD_WATCH_* events. */
enum { OPTD_WAIT_TIMEOUT = 16, OPTD_WAIT_STOP = 17, OPTD_WAIT_GONE = 18 /* the client closed */ };

typedef struct optd_wait {
    optd_watch_t watch;            /* on the session */
    optd_server_t *srv;
    optd_req_t *req;
    optd_session_t *s;             /* a reference */
    optd_round_outcome_t *outcome; /* a contribution's round (a reference), or NULL */
    struct optd_wait *prev, *next; /* srv->waits, under srv->wait_mu */
    struct optd_wait *expired;     /* the timer's own list */
    bool listed;
    int64_t deadline_ms;           /* monotonic */
    int fd;                        /* the connection's socket (-1: unknown), probed while listed */
    int why;                       /* 0 while waiting (under srv->wait_mu) */
    bool blocking;                 /* thread per connection: this thread waits on cv */
    pthread_cond_t cv;
    /* What the handler needs to answer afterwards. */
    bool binary, return_none;
} optd_wait_t;

/* Starts / stops the timer thread (optd_http_start / optd_http_stop). */
int optd_wait_init(optd_server_t *srv, optd_err_t *err);
void optd_wait_shutdown(optd_server_t *srv);
/* req waits at most secs seconds on s (referenced here) for its step to
 * reach min_step (UINT64_MAX: not) or for outcome's round (NULL: none).
 * Returns true when the handler must return without an answer (the
 * connection is suspended; the handler is called again once it is
 * resumed, with req->wait set); false when it answers now, with
 * req->wait->why saying why the wait ended (0: it never began, the event
 * had happened; with a thread per connection the wait happened here). */
bool optd_wait_begin(optd_req_t *req, optd_session_t *s, uint64_t min_step, optd_round_outcome_t *outcome,
                     uint64_t secs);
/* Frees req->wait (after the answer, or when the request ends). */
void optd_wait_end(optd_req_t *req);
/* A stop: every waiting request is answered now (503). */
void optd_wait_stop_all(optd_server_t *srv);

/* ---- server.c ------------------------------------------------------------ */

/* Starts libmicrohttpd on srv->cfg.listen with the configured threads,
 * limits and TLS: 0 or OPTD_EINVAL/OPTD_EIO with a message. */
int optd_http_start(optd_server_t *srv, optd_err_t *err);
/* Stops accepting new connections (graceful stop, step one). */
void optd_http_quiesce(optd_server_t *srv);
/* Closes every connection and stops the worker threads. */
void optd_http_stop(optd_server_t *srv);
/* Closes connections whose current request arrives too slowly: headers
 * not in within --connection-timeout of the request line, a body that
 * brings less than 1 KiB/s over a --connection-timeout window (after the
 * first), a request still arriving after 10 x --connection-timeout, or a
 * request line still incomplete a second after the idle timeout.  A
 * client dribbling bytes never looks idle to libmicrohttpd; keep-alive
 * idle time never counts against a request.  Called from a libuv timer;
 * returns how many were closed. */
size_t optd_http_reap_slow(optd_server_t *srv);

#endif
