/* server.h: THE server struct, the one place that holds the process's
 * mutable state (configuration, logger, store, persistence, the HTTP
 * daemon, the libuv loop and its handles, metrics, the shutting-down flag).
 *
 * main.c owns it; the HTTP layer gets a pointer to it as the `cls` of every
 * libmicrohttpd callback, so there is no global mutable state anywhere. */
#ifndef OPTD_SERVER_H
#define OPTD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "persist.h"
#include "store.h"

struct MHD_Daemon;
struct optd_conn;
struct optd_wait;

typedef struct optd_server {
    optd_config_t cfg;
    optd_logger_t log;
    optd_store_t *store;
    struct optd_pool *pool;      /* threads big updates are split over (parallel.h) */
    optd_persist_t *persist;     /* NULL without --data-dir */
    optd_metrics_t metrics;

    /* Auth: the tokens of --auth-token-file (NULL/0 when auth is off). */
    char **tokens;
    size_t n_tokens;
    /* TLS: PEM text of --tls-cert / --tls-key, kept until MHD stops. */
    char *tls_cert_pem;
    char *tls_key_pem;
    /* The page's chart library, read at start (route_ui.c); NULL: none. */
    char *ui_lib;
    size_t ui_lib_len;
    char ui_lib_etag[48];

    struct MHD_Daemon *mhd;
    char listen_desc[160];       /* "127.0.0.1:8080", for logs */
    /* Open connections, watched for requests that arrive too slowly
     * (slowloris): libmicrohttpd's own timeout only sees idle time. */
    pthread_mutex_t conns_mu;
    bool conns_mu_ready;
    struct optd_conn *conns;
    /* Bytes of request-body buffers held now, and the most they may hold
     * (--max-body-memory, or its default worked out at start). */
    atomic_size_t body_mem;
    size_t body_mem_max;

    /* Set once SIGTERM/SIGINT arrives: new requests get 503. */
    atomic_bool shutting_down;
    /* Requests begun and not yet completed (graceful stop waits for 0). */
    atomic_long in_flight;

    /* Requests waiting (a contribution for its round, a long poll), under
     * wait_mu: suspended in libmicrohttpd, or with a thread per connection
     * blocked on their own condition variable.  One timer thread answers
     * those whose time is up (daemon/http/wait.c). */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;      /* the timer thread sleeps on it */
    bool wait_ready, wait_quit, per_connection;
    pthread_t wait_thread;
    int64_t wait_next_ms;        /* when the timer thread wakes next */
    struct optd_wait *waits;

    /* libuv: the process runs on the main thread's loop. */
    uv_loop_t *loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t ttl_timer;        /* idle expiry, every second */
    uv_timer_t snapshot_timer;   /* --snapshot-interval with --data-dir */
    uv_timer_t drain_timer;      /* graceful stop: waits for in-flight requests */
    uv_timer_t reap_timer;       /* closes connections whose request is too slow */
    uv_work_t flush_work;        /* one optd_persist_flush at a time, off the loop */
    bool flush_running;
    uv_work_t expire_work;       /* one ttl expiry sweep at a time, off the loop */
    bool expire_running;
    bool stopping;
    bool stop_after_flush;       /* stop is waiting for a background flush */
    int64_t stop_started_ms;
    size_t flush_written;        /* result of the background flush */
    int flush_rc;
    optd_err_t flush_err;
} optd_server_t;

#endif
