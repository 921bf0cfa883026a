/* wait.c: requests that wait for an event (a contribution for its round,
 * a long poll for a step) without holding an HTTP worker thread.
 *
 * The handler suspends its connection in libmicrohttpd and registers a
 * watch on the session; the change that satisfies it (a step, a round
 * resolved, the session gone) wakes it, with the session's lock held, by
 * resuming the connection; libmicrohttpd then calls the handler again,
 * which answers.  Timeouts come from one timer thread over every waiting
 * request; a stop wakes them all at once.  With a thread per connection
 * (--data-dir with --sync always) libmicrohttpd 0.9.75 makes each
 * suspended connection's thread poll the daemon's one wake-up pipe, which
 * every resume empties and so may leave some waiting: there the handler's
 * own thread waits on a condition variable instead, which costs nothing
 * more in that mode (the thread is the connection's anyway).
 *
 * Locks: a session's mutex, then srv->wait_mu (the wake comes with the
 * session's mutex held).  The timer and a stop take wait_mu alone, mark
 * the waits they end, and take each session's mutex only after letting
 * wait_mu go, to unlink the watch before the request is resumed and its
 * wait freed.
 *
 * A suspended connection is out of libmicrohttpd's poll set, so it would
 * not see its client close it (CLOSE_WAIT) before the wait ends, and the
 * connection would keep its place in --max-connections until then (a
 * client could fill the limit by opening and closing long polls).  So the
 * timer also looks, once every PROBE_MS, at the sockets of every waiting
 * request with one poll(2) for POLLRDHUP (the peer's FIN or reset): each
 * found closed ends as OPTD_WAIT_GONE, and the server closes it without an
 * answer.  One syscall per second whatever the number waiting, so waiting
 * requests cost the others nothing measurable; the socket stays valid
 * while its wait is listed (its connection suspended, or its thread here),
 * which is why the poll runs under wait_mu. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"

/* With srv->wait_mu held: the wait ends for `why`, if it has not already;
 * its request is resumed (or its thread woken).  The watch must be
 * unlinked from the session by now.  False when it had ended before. */
static bool fire_locked(optd_wait_t *w, int why)
{
    optd_server_t *srv = w->srv;
    if (w->why)
        return false;
    w->why = why;
    if (why == OPTD_WAIT_GONE)
        w->req->peer_gone = true;
    if (w->listed) {
        if (w->prev)
            w->prev->next = w->next;
        else
            srv->waits = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->prev = w->next = NULL;
        w->listed = false;
    }
    atomic_fetch_sub_explicit(&srv->metrics.waiting, 1, memory_order_relaxed);
    if (w->blocking)
        pthread_cond_signal(&w->cv);
    else
        MHD_resume_connection(w->req->conn);
    return true;
}

/* The session's wake (its mutex held; the watch already unlinked). */
static void on_wake(optd_watch_t *watch, int why)
{
    optd_wait_t *w = (optd_wait_t *)watch;
    pthread_mutex_lock(&w->srv->wait_mu);
    fire_locked(w, why);
    pthread_mutex_unlock(&w->srv->wait_mu);
}

/* With wait_mu held: marks w as ended for why without resuming it yet
 * and puts it on *ended; the caller finishes it with finish_ended. */
static void end_later_locked(optd_wait_t *w, int why, optd_wait_t **ended)
{
    w->why = -why; /* ended, not yet resumed: keeps fire_locked away */
    if (w->prev)
        w->prev->next = w->next;
    else
        w->srv->waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->listed = false;
    w->expired = *ended;
    *ended = w;
}

/* Unlinks each ended wait from its session, then resumes it. */
static void finish_ended(optd_server_t *srv, optd_wait_t *ended)
{
    while (ended) {
        optd_wait_t *w = ended;
        ended = w->expired;
        optd_session_unwatch(w->s, &w->watch);
        pthread_mutex_lock(&srv->wait_mu);
        int why = -w->why;
        w->why = 0;
        w->listed = false;
        fire_locked(w, why);
        pthread_mutex_unlock(&srv->wait_mu);
    }
}

/* How often the sockets of waiting requests are looked at (ms). */
#define PROBE_MS 1000

/* The pollfd array of the timer thread's probes, grown as needed. */
typedef struct {
    struct pollfd *fds;
    optd_wait_t **of;
    size_t cap;
} probe_buf_t;

/* With wait_mu held: ends (onto *ended) every waiting request whose
 * client has closed its connection.  Without memory for the array it
 * probes nothing this time (the waits still end at their deadlines). */
static void probe_locked(optd_server_t *srv, probe_buf_t *pb, optd_wait_t **ended)
{
    size_t n = 0;
    for (optd_wait_t *w = srv->waits; w; w = w->next) {
        if (w->fd < 0)
            continue;
        if (n == pb->cap) {
            size_t cap = pb->cap ? 2 * pb->cap : 256;
            struct pollfd *fds = realloc(pb->fds, cap * sizeof *fds);
            if (fds)
                pb->fds = fds;
            optd_wait_t **of = fds ? realloc(pb->of, cap * sizeof *of) : NULL;
            if (!of)
                break;
            pb->of = of;
            pb->cap = cap;
        }
        pb->fds[n] = (struct pollfd){.fd = w->fd, .events = POLLRDHUP};
        pb->of[n++] = w;
    }
    if (n == 0 || poll(pb->fds, n, 0) <= 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (pb->fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
            end_later_locked(pb->of[i], OPTD_WAIT_GONE, ended);
}

static void *timer_main(void *arg)
{
    optd_server_t *srv = arg;
    probe_buf_t pb = {0};
    int64_t probe_at = 0;
    pthread_mutex_lock(&srv->wait_mu);
    while (!srv->wait_quit) {
        int64_t now = optd_mono_ms(), next = INT64_MAX;
        optd_wait_t *ended = NULL, *w = srv->waits, *nx;
        if (w && now >= probe_at) {
            probe_locked(srv, &pb, &ended);
            probe_at = now + PROBE_MS;
        }
        for (w = srv->waits; w; w = nx) {
            nx = w->next;
            if (w->deadline_ms <= now)
                end_later_locked(w, OPTD_WAIT_TIMEOUT, &ended);
            else if (w->deadline_ms < next)
                next = w->deadline_ms;
        }
        if (srv->waits && probe_at < next)
            next = probe_at;
        srv->wait_next_ms = next;
        if (ended) {
            pthread_mutex_unlock(&srv->wait_mu);
            finish_ended(srv, ended);
            pthread_mutex_lock(&srv->wait_mu);
            continue;
        }
        if (next == INT64_MAX) {
            pthread_cond_wait(&srv->wait_cv, &srv->wait_mu);
        } else {
            /* wait_cv runs on CLOCK_MONOTONIC (optd_wait_init). */
            struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (next % 1000) * 1000000};
            pthread_cond_timedwait(&srv->wait_cv, &srv->wait_mu, &ts);
        }
    }
    pthread_mutex_unlock(&srv->wait_mu);
    free(pb.fds);
    free(pb.of);
    return NULL;
}

int optd_wait_init(optd_server_t *srv, optd_err_t *err)
{
    if (srv->wait_ready)
        return 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&srv->wait_mu, NULL);
    pthread_cond_init(&srv->wait_cv, &ca);
    pthread_condattr_destroy(&ca);
    srv->waits = NULL;
    srv->wait_quit = false;
    srv->wait_next_ms = INT64_MAX;
    if (pthread_create(&srv->wait_thread, NULL, timer_main, srv) != 0) {
        pthread_cond_destroy(&srv->wait_cv);
        pthread_mutex_destroy(&srv->wait_mu);
        return optd_err_set(err, OPTD_EIO, "cannot start the timer thread of waiting requests");
    }
    srv->wait_ready = true;
    return 0;
}

void optd_wait_stop_all(optd_server_t *srv)
{
    if (!srv->wait_ready)
        return;
    pthread_mutex_lock(&srv->wait_mu);
    optd_wait_t *ended = NULL;
    while (srv->waits)
        end_later_locked(srv->waits, OPTD_WAIT_STOP, &ended);
    pthread_mutex_unlock(&srv->wait_mu);
    finish_ended(srv, ended);
}

void optd_wait_shutdown(optd_server_t *srv)
{
    if (!srv->wait_ready)
        return;
    optd_wait_stop_all(srv);
    pthread_mutex_lock(&srv->wait_mu);
    srv->wait_quit = true;
    pthread_cond_signal(&srv->wait_cv);
    pthread_mutex_unlock(&srv->wait_mu);
    pthread_join(srv->wait_thread, NULL);
    pthread_cond_destroy(&srv->wait_cv);
    pthread_mutex_destroy(&srv->wait_mu);
    srv->wait_ready = false;
}

/* Thread per connection: waits here; then libmicrohttpd's own idle clock
 * is restarted, so the time spent waiting never counts as the connection
 * being idle (0.9.75 restarts it only when the timeout goes from 0 to a
 * value, hence the two calls). */
static void block_here(optd_wait_t *w)
{
    optd_server_t *srv = w->srv;
    pthread_mutex_lock(&srv->wait_mu);
    while (w->why == 0 || w->why < 0)
        pthread_cond_wait(&w->cv, &srv->wait_mu);
    pthread_mutex_unlock(&srv->wait_mu);
    MHD_set_connection_option(w->req->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(w->req->conn, MHD_CONNECTION_OPTION_TIMEOUT, srv->cfg.connection_timeout);
}

bool optd_wait_begin(optd_req_t *req, optd_session_t *s, uint64_t min_step, optd_round_outcome_t *outcome,
                     uint64_t secs)
{
    optd_server_t *srv = req->srv;
    optd_wait_t *w = calloc(1, sizeof *w);
    if (!w)
        return false; /* the caller answers with what it has: a wait of 0 */
    w->srv = srv;
    w->req = req;
    w->s = s;
    optd_session_retain(s);
    if ((w->outcome = outcome))
        optd_round_outcome_retain(outcome);
    w->watch.min_step = min_step;
    w->watch.outcome = outcome;
    w->watch.wake = on_wake;
    w->deadline_ms = optd_mono_ms() + (int64_t)secs * 1000;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    w->fd = ci ? ci->connect_fd : -1;
    req->wait = w;
    if (secs == 0 || !srv->wait_ready) {
        w->why = OPTD_WAIT_TIMEOUT;
        return false;
    }
    w->blocking = srv->per_connection;
    if (w->blocking)
        pthread_cond_init(&w->cv, NULL);
    else
        MHD_suspend_connection(req->conn); /* before anyone can resume it */

    pthread_mutex_lock(&srv->wait_mu);
    atomic_fetch_add_explicit(&srv->metrics.waiting, 1, memory_order_relaxed);
    if (atomic_load(&srv->shutting_down)) {
        fire_locked(w, OPTD_WAIT_STOP);
    } else {
        w->next = srv->waits;
        if (srv->waits)
            srv->waits->prev = w;
        srv->waits = w;
        w->listed = true;
        if (w->deadline_ms < srv->wait_next_ms)
            pthread_cond_signal(&srv->wait_cv);
    }
    pthread_mutex_unlock(&srv->wait_mu);
    /* Registered after it is listed, so a stop or the timer finds it; not
     * registered when what it waits for has happened already. */
    if (!w->why && !optd_session_watch(s, &w->watch))
        on_wake(&w->watch, OPTD_WATCH_STEP);
    if (w->blocking) {
        block_here(w);
        return false;
    }
    req->suspended = true;
    return true;
}

void optd_wait_end(optd_req_t *req)
{
    optd_wait_t *w = req->wait;
    if (!w)
        return;
    req->wait = NULL;
    optd_session_unwatch(w->s, &w->watch);
    if (w->listed) { /* only when the request ended without being woken */
        pthread_mutex_lock(&w->srv->wait_mu);
        if (w->listed)
            fire_locked(w, OPTD_WAIT_STOP);
        pthread_mutex_unlock(&w->srv->wait_mu);
    }
    if (w->blocking)
        pthread_cond_destroy(&w->cv);
    optd_session_release(w->s);
    optd_round_outcome_release(w->outcome);
    free(w);
}
