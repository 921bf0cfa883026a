/* main.c: the optd process.
 *
 * Parses the flags, opens the log, builds the store, restores sessions from
 * --data-dir, starts the HTTP workers, then runs the libuv loop on the main
 * thread until SIGTERM/SIGINT: signals, the ttl expiry timer and the
 * snapshot timer (whose work goes to the libuv work queue, off the loop and
 * the request path) and the graceful stop all happen here.  This is the only file that decides
 * the process's exit status. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <uv.h>

#include "clock.h"
#include "config.h"
#include "http/http.h"
#include "log.h"
#include "metrics.h"
#include "persist.h"
#include "server.h"
#include "parallel.h"
#include "store.h"

/* Requests still running this long after SIGTERM are cut, so the process
 * exits within API.md's 5 seconds with time left for the final flush. */
#define DRAIN_MAX_MS 3500
#define DRAIN_POLL_MS 10
/* After the journal's final sync, a stop writes snapshots for at most
 * STOP_SNAPSHOT_MS and not past STOP_SNAPSHOT_BY_MS after SIGTERM (the
 * journal already holds everything; snapshots only shorten the next
 * start's replay). */
#define STOP_SNAPSHOT_MS 1000
#define STOP_SNAPSHOT_BY_MS 3500

/* ---- ttl expiry ------------------------------------------------------------ */

static void on_expired(const char *name, void *arg)
{
    optd_server_t *srv = arg;
    atomic_fetch_add_explicit(&srv->metrics.expired_sessions, 1, memory_order_relaxed);
    optd_log(&srv->log, OPTD_LOG_INFO, "session %s expired (idle longer than its ttl_seconds); deleted", name);
}

/* Expiry deletes files and syncs the journal: on the work queue, never on
 * the loop (signals, timers and the slow-request reaper would wait). */
static void expire_work(uv_work_t *w)
{
    optd_server_t *srv = w->data;
    optd_store_expire(srv->store, optd_now_ms(), on_expired, srv);
}

static void expire_done(uv_work_t *w, int status)
{
    (void)status;
    optd_server_t *srv = w->data;
    srv->expire_running = false;
}

static void on_ttl_timer(uv_timer_t *t)
{
    optd_server_t *srv = t->data;
    if (srv->expire_running || srv->stopping)
        return;
    srv->expire_running = true;
    srv->expire_work.data = srv;
    if (uv_queue_work(srv->loop, &srv->expire_work, expire_work, expire_done) != 0)
        srv->expire_running = false;
}

static void on_reap_timer(uv_timer_t *t)
{
    optd_server_t *srv = t->data;
    optd_http_reap_slow(srv);
    optd_log_flush(&srv->log); /* request lines wait at most this long */
}

/* ---- snapshots ----------------------------------------------------------- */

static void flush_work(uv_work_t *w)
{
    optd_server_t *srv = w->data;
    srv->flush_written = 0;
    memset(&srv->flush_err, 0, sizeof srv->flush_err);
    srv->flush_rc = optd_persist_flush(srv->persist, &srv->flush_written, &srv->flush_err);
}

static void finish_stop(optd_server_t *srv);

static void flush_done(uv_work_t *w, int status)
{
    optd_server_t *srv = w->data;
    srv->flush_running = false;
    if (status == 0) {
        atomic_fetch_add_explicit(&srv->metrics.snapshots_written, srv->flush_written, memory_order_relaxed);
        if (srv->flush_rc < 0) {
            atomic_fetch_add_explicit(&srv->metrics.snapshot_failures, 1, memory_order_relaxed);
            optd_log(&srv->log, OPTD_LOG_ERROR, "snapshot: %s (will retry)",
                     srv->flush_err.msg[0] ? srv->flush_err.msg : "a write failed");
        } else if (srv->flush_written) {
            optd_log(&srv->log, OPTD_LOG_DEBUG, "snapshot: wrote %zu sessions", srv->flush_written);
        }
    }
    if (srv->stop_after_flush)
        finish_stop(srv);
}

static void on_snapshot_timer(uv_timer_t *t)
{
    optd_server_t *srv = t->data;
    if (srv->flush_running || srv->stopping)
        return; /* never two flushes at once */
    srv->flush_running = true;
    srv->flush_work.data = srv;
    if (uv_queue_work(srv->loop, &srv->flush_work, flush_work, flush_done) != 0)
        srv->flush_running = false;
}

/* ---- graceful stop --------------------------------------------------------- */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Step three: no request runs any more and no flush is in progress: make
 * the journal durable (one sync: every change is in it, and the next start
 * replays it), then close the loop's handles so uv_run returns. */
static void finish_stop(optd_server_t *srv)
{
    srv->stop_after_flush = false;
    if (srv->persist) {
        double t0 = optd_mono_s();
        optd_err_t err = {0};
        size_t written = 0;
        /* Snapshots get what is left of API.md's 5 s, less a margin. */
        double budget = STOP_SNAPSHOT_BY_MS / 1000.0 - (double)(optd_now_ms() - srv->stop_started_ms) / 1000.0;
        if (budget > STOP_SNAPSHOT_MS / 1000.0)
            budget = STOP_SNAPSHOT_MS / 1000.0;
        int rc = optd_persist_stop(srv->persist, srv->stopping ? budget : 0, &written, &err);
        if (rc < 0)
            optd_log(&srv->log, OPTD_LOG_ERROR, "final journal sync failed: %s",
                     err.msg[0] ? err.msg : "a write failed");
        else
            optd_log(&srv->log, OPTD_LOG_INFO,
                     "stop: journal synced, %zu snapshots written in %.3f s", written, optd_mono_s() - t0);
    }
    close_handle((uv_handle_t *)&srv->sig_term);
    close_handle((uv_handle_t *)&srv->sig_int);
    close_handle((uv_handle_t *)&srv->sig_hup);
    close_handle((uv_handle_t *)&srv->ttl_timer);
    close_handle((uv_handle_t *)&srv->snapshot_timer);
    close_handle((uv_handle_t *)&srv->drain_timer);
    close_handle((uv_handle_t *)&srv->reap_timer);
}

/* Step two: waits (polling) until requests in flight are done, then stops
 * the HTTP workers. */
static void on_drain_timer(uv_timer_t *t)
{
    optd_server_t *srv = t->data;
    long busy = atomic_load(&srv->in_flight);
    int64_t waited = optd_now_ms() - srv->stop_started_ms;
    if (busy > 0 && waited < DRAIN_MAX_MS)
        return;
    uv_timer_stop(t);
    if (busy > 0)
        optd_log(&srv->log, OPTD_LOG_WARN, "stop: %ld requests still running after %lld ms; closing them",
                 busy, (long long)waited);
    optd_http_stop(srv);
    optd_log(&srv->log, OPTD_LOG_INFO, "stop: HTTP closed after %lld ms", (long long)waited);
    if (srv->flush_running)
        srv->stop_after_flush = true; /* flush_done finishes the stop */
    else
        finish_stop(srv);
}

/* Step one (SIGTERM/SIGINT): stop accepting, answer 503 to new requests on
 * open connections, and let the requests in flight finish. */
static void on_stop_signal(uv_signal_t *h, int signum)
{
    optd_server_t *srv = h->data;
    if (srv->stopping) {
        optd_log(&srv->log, OPTD_LOG_INFO, "%s again: already stopping", strsignal(signum));
        return;
    }
    srv->stopping = true;
    srv->stop_started_ms = optd_now_ms();
    atomic_store(&srv->shutting_down, true);
    optd_log(&srv->log, OPTD_LOG_INFO, "%s: stopping (no new connections; finishing %ld requests in flight)",
             strsignal(signum), atomic_load(&srv->in_flight));
    optd_http_quiesce(srv);
    optd_wait_stop_all(srv); /* waiting requests are answered 503 now, not at their timeout */
    if (srv->persist)
        optd_persist_abort_flush(srv->persist); /* the journal has it all */
    uv_timer_stop(&srv->ttl_timer);
    uv_timer_stop(&srv->snapshot_timer);
    uv_timer_stop(&srv->reap_timer);
    uv_timer_start(&srv->drain_timer, on_drain_timer, 0, DRAIN_POLL_MS);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    optd_server_t *srv = h->data;
    if (optd_log_reopen(&srv->log) < 0)
        optd_log(&srv->log, OPTD_LOG_ERROR, "SIGHUP: cannot reopen the log file");
    else
        optd_log(&srv->log, OPTD_LOG_INFO, "SIGHUP: log file reopened");
}

/* ---- start ------------------------------------------------------------------ */

/* A start-up failure goes to the log, and also to stderr when the log is a
 * file, so whoever started the daemon sees why it did not start. */
static void startup_error(optd_server_t *srv, const char *msg)
{
    optd_log(&srv->log, OPTD_LOG_ERROR, "%s", msg);
    if (srv->cfg.log_file)
        fprintf(stderr, "optd: %s\n", msg);
}

/* Descriptors kept out of --max-connections' reach: stdio, the log, the
 * listening socket, the event loop's own, the data directory, its lock, the
 * journal (two while it rotates), a snapshot's tmp file and directory
 * syncs, with room to spare; plus, per HTTP thread, an epoll fd and a
 * wake-up pipe (two ends).  Running out of them fails snapshot writes and loses
 * acknowledged changes, so connections give way, not persistence. */
#define FD_RESERVE 64
#define FD_PER_THREAD 3
/* Fewer connections than this is not a daemon worth starting. */
#define FD_MIN_CONNECTIONS 16

/* Raises the soft RLIMIT_NOFILE to the hard one and clamps
 * --max-connections to what then fits beside FD_RESERVE: 0, or -1 after
 * logging why nothing sensible fits. */
static int fit_descriptors(optd_server_t *srv)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        optd_log(&srv->log, OPTD_LOG_WARN, "cannot read RLIMIT_NOFILE (%s); --max-connections %u is not checked",
                 strerror(errno), srv->cfg.max_connections);
        return 0;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        /* An unlimited hard limit is still bounded by fs.nr_open. */
        if (want.rlim_cur == RLIM_INFINITY)
            want.rlim_cur = 1 << 20;
        while (setrlimit(RLIMIT_NOFILE, &want) != 0 && want.rlim_cur > rl.rlim_cur * 2)
            want.rlim_cur /= 2;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
            return 0;
    }
    rlim_t reserve = FD_RESERVE + (rlim_t)FD_PER_THREAD * srv->cfg.threads;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= reserve + srv->cfg.max_connections)
        return 0;
    rlim_t fit = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0;
    if (fit < FD_MIN_CONNECTIONS) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "RLIMIT_NOFILE %llu leaves room for %llu connections beside the %llu descriptors kept for "
                 "persistence and the daemon's own; raise it (ulimit -n)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)fit, (unsigned long long)reserve);
        startup_error(srv, msg);
        return -1;
    }
    optd_log(&srv->log, OPTD_LOG_WARN,
             "--max-connections %u does not fit in RLIMIT_NOFILE %llu (%llu descriptors are kept for "
             "persistence and the daemon's own); serving at most %llu connections",
             srv->cfg.max_connections, (unsigned long long)rl.rlim_cur, (unsigned long long)reserve,
             (unsigned long long)fit);
    srv->cfg.max_connections = (unsigned)fit;
    return 0;
}

static int setup_loop(optd_server_t *srv)
{
    uv_signal_init(srv->loop, &srv->sig_term);
    uv_signal_init(srv->loop, &srv->sig_int);
    uv_signal_init(srv->loop, &srv->sig_hup);
    uv_timer_init(srv->loop, &srv->ttl_timer);
    uv_timer_init(srv->loop, &srv->snapshot_timer);
    uv_timer_init(srv->loop, &srv->drain_timer);
    uv_timer_init(srv->loop, &srv->reap_timer);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    srv->ttl_timer.data = srv->snapshot_timer.data = srv->drain_timer.data = srv;
    srv->reap_timer.data = srv;
    int rc = uv_signal_start(&srv->sig_term, on_stop_signal, SIGTERM);
    if (!rc)
        rc = uv_signal_start(&srv->sig_int, on_stop_signal, SIGINT);
    if (!rc)
        rc = uv_signal_start(&srv->sig_hup, on_hup, SIGHUP);
    if (!rc)
        rc = uv_timer_start(&srv->ttl_timer, on_ttl_timer, 1000, 1000);
    if (!rc)
        rc = uv_timer_start(&srv->reap_timer, on_reap_timer, 500, 500);
    if (!rc && srv->persist) {
        uint64_t ms = (uint64_t)srv->cfg.snapshot_interval * 1000;
        rc = uv_timer_start(&srv->snapshot_timer, on_snapshot_timer, ms, ms);
    }
    return rc;
}

/* The session store under its memory budget, and the threads big updates
 * are split over (as many as serve HTTP, --threads).  0, or -1 logged. */
static int open_store(optd_server_t *srv)
{
    optd_err_t err = {0};
    char budget_how[200] = "--max-memory";
    if (!srv->cfg.max_memory)
        srv->cfg.max_memory = optd_config_memory_default(budget_how, sizeof budget_how);
    optd_log(&srv->log, OPTD_LOG_INFO, "memory budget for sessions: %zu bytes (%.1f MiB), from %s",
             srv->cfg.max_memory, (double)srv->cfg.max_memory / 1048576.0, budget_how);
    bool body_default = !srv->cfg.max_body_memory;
    if (body_default)
        srv->cfg.max_body_memory = optd_config_body_memory_default(srv->cfg.max_body_bytes);
    optd_log(&srv->log, OPTD_LOG_INFO, "request bodies in flight may hold %zu bytes%s", srv->cfg.max_body_memory,
             body_default ? " (the default: a quarter of the memory, at least --max-body-bytes)" : "");
    optd_store_limits_t limits = {
        .max_sessions = srv->cfg.max_sessions,
        .max_params = srv->cfg.max_params,
        .history = srv->cfg.history,
        .max_memory = srv->cfg.max_memory,
    };
    if (optd_store_new(&limits, &srv->store, &err) < 0) {
        optd_log(&srv->log, OPTD_LOG_ERROR, "cannot create the session store: %s", err.msg);
        return -1;
    }
    if (optd_pool_new(srv->cfg.threads, &srv->pool, &err) < 0) {
        optd_log(&srv->log, OPTD_LOG_ERROR, "cannot start the update threads: %s", err.msg);
        return -1;
    }
    optd_store_set_pool(srv->store, srv->pool);
    return 0;
}

/* --data-dir: takes the directory and loads its sessions, saying what was
 * restored and how much of the budget it holds.  0, or -1 logged. */
static int open_data_dir(optd_server_t *srv)
{
    optd_err_t err = {0};
    char msg[OPTD_ERR_MSG_MAX + 64];
    if (optd_persist_open(srv->cfg.data_dir, srv->cfg.sync, (int64_t)srv->cfg.snapshot_interval * 1000,
                          srv->store, &srv->log, &srv->persist, &err) < 0) {
        snprintf(msg, sizeof msg, "cannot use --data-dir: %s", err.msg);
        startup_error(srv, msg);
        return -1;
    }
    optd_persist_stats_t stats;
    memset(&stats, 0, sizeof stats);
    if (optd_persist_load(srv->persist, &stats, &err) < 0) {
        snprintf(msg, sizeof msg, "cannot load --data-dir: %s", err.msg);
        startup_error(srv, msg);
        return -1;
    }
    optd_log(&srv->log, OPTD_LOG_INFO, "restored %zu sessions (%zu parameters) from %s in %.3f s%s",
             stats.sessions_loaded, stats.params_loaded, srv->cfg.data_dir, stats.seconds,
             stats.files_set_aside ? "; damaged files were set aside (see above)" : "");
    size_t used, max;
    optd_store_memory(srv->store, &used, &max);
    /* Loaded sessions are never refused: say so when they leave no room. */
    optd_log(&srv->log, used > max ? OPTD_LOG_WARN : OPTD_LOG_INFO,
             "the restored sessions hold %zu bytes of the %zu-byte memory budget%s", used, max,
             used > max ? ": over it, so every create, fork and import gets 429 until some are deleted" : "");
    return 0;
}

/* The start-up line a deployment greps for: where, how many threads, which
 * durability, the main limits. */
static void log_listening(optd_server_t *srv)
{
    bool always = srv->cfg.data_dir && srv->cfg.sync == OPTD_SYNC_ALWAYS;
    optd_log(&srv->log, OPTD_LOG_INFO,
             "optd %s listening on %s%s (%u threads%s, %s%s%s, max %zu sessions, body limit %zu bytes)",
             OPTD_VERSION, srv->cfg.tls_cert ? "https://" : "http://", srv->listen_desc, srv->cfg.threads,
             always ? " for big updates, HTTP a thread per connection" : "",
             srv->cfg.data_dir ? "sync " : "memory only",
             srv->cfg.data_dir ? (always ? "always" : "interval") : "", srv->n_tokens ? ", auth on" : "",
             srv->cfg.max_sessions, srv->cfg.max_body_bytes);
}

int main(int argc, char **argv)
{
    static optd_server_t srv; /* main's own; handed to everything by pointer */
    optd_err_t err = {0};
    int status = 1;

    optd_config_defaults(&srv.cfg);
    int rc = optd_config_parse(&srv.cfg, argc, argv, stdout, &err);
    if (rc == OPTD_CONFIG_EXIT)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "optd: %s\n", err.msg);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    optd_log_init(&srv.log);
    if (srv.cfg.log_file && optd_log_open(&srv.log, srv.cfg.log_file) < 0) {
        fprintf(stderr, "optd: cannot open --log-file %s\n", srv.cfg.log_file);
        return 1;
    }
    atomic_store(&srv.log.level, (int)srv.cfg.log_level);
    optd_metrics_init(&srv.metrics);

    if (fit_descriptors(&srv) < 0) {
        optd_log_close(&srv.log);
        return 2;
    }

    if (srv.cfg.auth_token_file && optd_auth_load(&srv, srv.cfg.auth_token_file, &err) < 0) {
        startup_error(&srv, err.msg);
        optd_log_close(&srv.log);
        return 2;
    }

    optd_ui_load(&srv);

    if (open_store(&srv) < 0 || (srv.cfg.data_dir && open_data_dir(&srv) < 0))
        goto out;

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        optd_log(&srv.log, OPTD_LOG_ERROR, "cannot start the event loop");
        goto out;
    }
    srv.loop = &loop;
    if (setup_loop(&srv) != 0) {
        optd_log(&srv.log, OPTD_LOG_ERROR, "cannot install signal handlers or timers");
        goto close_loop;
    }

    if (optd_http_start(&srv, &err) < 0) {
        startup_error(&srv, err.msg);
        status = err.code == OPTD_EINVAL ? 2 : 1;
        finish_stop(&srv);
        uv_run(&loop, UV_RUN_DEFAULT);
        goto close_loop;
    }
    log_listening(&srv);

    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;
    optd_log(&srv.log, OPTD_LOG_INFO, "stopped");

close_loop:
    optd_http_stop(&srv);
    if (uv_loop_close(&loop) != 0)
        optd_log(&srv.log, OPTD_LOG_WARN, "event loop closed with handles still open");
out:
    if (srv.persist)
        optd_persist_close(srv.persist);
    if (srv.store)
        optd_store_free(srv.store);
    optd_pool_free(srv.pool); /* after the store: no update can run any more */
    optd_auth_free(&srv);
    optd_ui_free(&srv);
    optd_log_close(&srv.log);
    return status;
}
