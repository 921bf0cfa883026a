/* loadgen.c: a small HTTP/1.1 load generator for `make bench`.
 *
 * wrk measures the most requests per second a server answers; it cannot
 * say what latency a client sees at a given, lower rate (wrk2 does that,
 * but is not in Debian).  loadgen does both, on keep-alive connections:
 *
 *   -R RATE   open loop: requests are scheduled at RATE per second over all
 *             connections, whether or not the server keeps up; a request's
 *             latency runs from the moment it was scheduled (not the moment
 *             a free connection sent it), so a stalled server shows up in
 *             the tail instead of slowing the client down (the correction
 *             for "coordinated omission" that wrk2 makes);
 *   -R 0      closed loop: every connection sends its next request as soon
 *             as the previous answer arrived (used to create sessions as
 *             fast as the server takes them).
 *
 * The path and the body may hold one "%d", replaced by a request counter
 * (modulo -M when given), e.g. -p /v1/sessions/s%d/step -M 1000 walks 1000
 * sessions round-robin; with -C it is the connection's index instead
 * (0..CONNS-1), so each connection steps a session of its own, as one
 * client per session would.  One thread, epoll; the timer is epoll_pwait2's
 * nanosecond timeout, so an open-loop client waits without spinning (on a
 * 2-core machine a spinning client would steal the server's CPU).
 *
 * Usage: loadgen [-c CONNS] [-d SECONDS | -n COUNT] [-R RATE] [-w WARMUP_S]
 *                [-m METHOD] [-p PATH] [-b BODY|@FILE] [-B FILE] [-T CONTENT_TYPE]
 *                [-H 'NAME: VALUE'] [-M MOD] [-C] HOST PORT
 * -B FILE: a binary body (a rows step's uint64 row numbers and values),
 * sent byte for byte, no "%d"; with -M MOD the file is MOD bodies of equal
 * length and request v sends body v mod MOD (so that steps touch different
 * rows, not the same cached ones).  -H: one more request header.
 * Prints one line: requests=N errors=N seconds=S rate=R p50_ms=.. p90_ms=..
 * p99_ms=.. p999_ms=.. max_ms=..  (errors: answers >= 400, broken
 * connections).  Exits 1 if any request failed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    bool busy;
    char *out;
    size_t out_len, out_off, out_cap;
    char *in;
    size_t in_len, in_cap;
    size_t head_len;      /* header bytes incl. the blank line; 0 until seen */
    size_t content_length;
    int status;
    int64_t intended_ns;  /* when this request was scheduled */
} conn_t;

typedef struct opts {
    const char *host, *port, *method, *path, *body, *ctype;
    const char *bin_body, *header; /* -B (bin_len bytes, NULs allowed), -H */
    size_t bin_len;
    int conns;
    double duration, warmup, rate;
    long long count;
    long long mod;
    bool per_conn; /* -C: "%d" is the connection's index */
} opts_t;

typedef struct run {
    opts_t o;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int ep;
    conn_t *c;
    long long counter;   /* requests started */
    long long done, errors;
    double *lat;         /* latencies recorded (ms) */
    size_t n_lat, cap_lat;
    int64_t t0, warm_end, stop_at;
} run_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *msg)
{
    perror(msg);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("loadgen: out of memory");
    return q;
}

/* Copies the template with its first "%d" replaced by v. */
static size_t fill(char *dst, const char *tmpl, long long v)
{
    const char *m = strstr(tmpl, "%d");
    if (!m) {
        size_t n = strlen(tmpl);
        memcpy(dst, tmpl, n);
        return n;
    }
    size_t a = (size_t)(m - tmpl);
    memcpy(dst, tmpl, a);
    int k = sprintf(dst + a, "%lld", v);
    size_t b = strlen(m + 2);
    memcpy(dst + a + (size_t)k, m + 2, b);
    return a + (size_t)k + b;
}

static void connect_one(run_t *r, conn_t *c)
{
    c->fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("loadgen: socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&r->addr, r->addrlen) < 0 && errno != EINPROGRESS)
        die("loadgen: connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("loadgen: epoll_ctl");
    c->busy = false;
    c->in_len = c->head_len = c->out_len = c->out_off = 0;
}

static void try_write(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k < 0)
            return; /* EAGAIN: EPOLLOUT resumes; an error shows on the read side */
        c->out_off += (size_t)k;
    }
}

static void start(run_t *r, conn_t *c, int64_t intended)
{
    const opts_t *o = &r->o;
    long long v = o->per_conn ? (long long)(c - r->c) : o->mod > 0 ? r->counter % o->mod : r->counter;
    r->counter++;
    size_t chunk = o->mod > 0 ? o->bin_len / (size_t)o->mod : o->bin_len;
    size_t blen = o->bin_body ? chunk : o->body ? strlen(o->body) + 24 : 0;
    size_t need = strlen(o->method) + strlen(o->path) + 24 + strlen(o->host) + 16 + 256 + blen
                  + (o->header ? strlen(o->header) + 2 : 0);
    if (need > c->out_cap) {
        c->out = xrealloc(c->out, need);
        c->out_cap = need;
    }
    char *body = NULL;
    size_t body_len = 0;
    if (o->bin_body) {
        body = malloc(blen ? blen : 1);
        if (!body)
            die("loadgen: out of memory");
        memcpy(body, o->bin_body + (size_t)(v % (o->mod > 0 ? o->mod : 1)) * chunk, chunk);
        body_len = chunk;
    } else if (o->body) {
        body = malloc(blen);
        if (!body)
            die("loadgen: out of memory");
        body_len = fill(body, o->body, v);
    }
    char *p = c->out;
    p += sprintf(p, "%s ", o->method);
    p += fill(p, o->path, v);
    p += sprintf(p, " HTTP/1.1\r\nHost: %s:%s\r\n", o->host, o->port);
    if (o->header)
        p += sprintf(p, "%s\r\n", o->header);
    if (body)
        p += sprintf(p, "Content-Type: %s\r\nContent-Length: %zu\r\n", o->ctype, body_len);
    p += sprintf(p, "\r\n");
    if (body) {
        memcpy(p, body, body_len);
        p += body_len;
        free(body);
    }
    c->out_len = (size_t)(p - c->out);
    c->out_off = 0;
    c->in_len = c->head_len = 0;
    c->busy = true;
    c->intended_ns = intended;
    try_write(c);
}

static void record(run_t *r, conn_t *c, int64_t now)
{
    r->done++;
    if (c->status >= 400 || c->status == 0)
        r->errors++;
    if (c->intended_ns >= r->warm_end) {
        if (r->n_lat == r->cap_lat) {
            r->cap_lat = r->cap_lat ? r->cap_lat * 2 : 65536;
            r->lat = xrealloc(r->lat, r->cap_lat * sizeof *r->lat);
        }
        r->lat[r->n_lat++] = (double)(now - c->intended_ns) / 1e6;
    }
    c->busy = false;
}

/* Reads what arrived; returns true when the answer is complete. */
static bool try_read(run_t *r, conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
            c->in = xrealloc(c->in, c->in_cap + 1);
        }
        ssize_t k = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (k <= 0) { /* closed or broken: count it, open a new connection */
            bool was_busy = c->busy;
            epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            if (was_busy) {
                c->status = 0;
                record(r, c, now_ns());
            }
            connect_one(r, c);
            return false;
        }
        c->in_len += (size_t)k;
    }
    c->in[c->in_len] = '\0';
    if (!c->head_len) {
        char *e = strstr(c->in, "\r\n\r\n");
        if (!e)
            return false;
        c->head_len = (size_t)(e - c->in) + 4;
        c->status = atoi(c->in + 9); /* "HTTP/1.1 200" */
        c->content_length = 0;
        for (char *l = strstr(c->in, "\r\n"); l && l < e; l = strstr(l + 2, "\r\n"))
            if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
                c->content_length = strtoull(l + 17, NULL, 10);
    }
    return c->in_len >= c->head_len + c->content_length;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen [-c CONNS] [-d SECONDS | -n COUNT] [-R RATE] [-w WARMUP] [-m METHOD]\n"
                    "               [-p PATH] [-b BODY|@FILE] [-B FILE] [-T CONTENT_TYPE] [-H HEADER]\n"
                    "               [-M MOD] [-C] HOST PORT\n");
    exit(2);
}

/* The whole of path as a NUL-terminated string (for -b @FILE: a body too
 * long for one command-line argument); exits on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0) {
        fprintf(stderr, "loadgen: cannot read %s\n", path);
        exit(2);
    }
    long n = ftell(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    rewind(f);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "loadgen: cannot read %s\n", path);
        exit(2);
    }
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    run_t r;
    memset(&r, 0, sizeof r);
    opts_t *o = &r.o;
    *o = (opts_t){.method = "GET", .path = "/", .ctype = "application/json", .conns = 16, .duration = 5};
    int ch;
    while ((ch = getopt(argc, argv, "c:d:n:R:w:m:p:b:B:H:T:M:C")) != -1) {
        switch (ch) {
        case 'c': o->conns = atoi(optarg); break;
        case 'd': o->duration = atof(optarg); break;
        case 'n': o->count = atoll(optarg); break;
        case 'R': o->rate = atof(optarg); break;
        case 'w': o->warmup = atof(optarg); break;
        case 'm': o->method = optarg; break;
        case 'p': o->path = optarg; break;
        case 'b': o->body = optarg[0] == '@' ? read_file(optarg + 1, NULL) : optarg; break;
        case 'B': o->bin_body = read_file(optarg, &o->bin_len); break;
        case 'H': o->header = optarg; break;
        case 'T': o->ctype = optarg; break;
        case 'M': o->mod = atoll(optarg); break;
        case 'C': o->per_conn = true; break;
        default: usage();
        }
    }
    if (argc - optind != 2 || o->conns < 1 || o->rate < 0)
        usage();
    if (o->bin_body && o->mod > 0 && o->bin_len % (size_t)o->mod != 0) {
        fprintf(stderr, "loadgen: -B with -M %lld: the file's %zu bytes are not %lld equal bodies\n",
                o->mod, o->bin_len, o->mod);
        return 2;
    }
    o->host = argv[optind];
    o->port = argv[optind + 1];
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int g = getaddrinfo(o->host, o->port, &hints, &ai);
    if (g) {
        fprintf(stderr, "loadgen: %s: %s\n", o->host, gai_strerror(g));
        return 2;
    }
    memcpy(&r.addr, ai->ai_addr, ai->ai_addrlen);
    r.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    if ((r.ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("loadgen: epoll_create1");
    r.c = calloc((size_t)o->conns, sizeof *r.c);
    if (!r.c)
        die("loadgen: out of memory");
    for (int i = 0; i < o->conns; i++)
        connect_one(&r, &r.c[i]);

    r.t0 = now_ns();
    r.warm_end = r.t0 + (int64_t)(o->warmup * 1e9);
    r.stop_at = o->count > 0 ? INT64_MAX : r.warm_end + (int64_t)(o->duration * 1e9);
    int64_t interval = o->rate > 0 ? (int64_t)(1e9 / o->rate) : 0;
    int64_t next = r.t0;          /* open loop: the next scheduled start */
    int64_t drain_until = INT64_MAX;
    struct epoll_event evs[64];
    for (;;) {
        int64_t now = now_ns();
        bool sending = now < r.stop_at && (o->count == 0 || r.counter < o->count);
        int busy = 0;
        for (int i = 0; i < o->conns; i++) {
            conn_t *c = &r.c[i];
            if (!c->busy && sending) {
                if (o->rate == 0) {
                    start(&r, c, now);
                } else if (next <= now) {
                    start(&r, c, next);
                    next += interval;
                }
                sending = now < r.stop_at && (o->count == 0 || r.counter < o->count);
            }
            busy += c->busy;
        }
        if (!sending) {
            if (!busy)
                break;
            if (drain_until == INT64_MAX)
                drain_until = now + 5000000000LL; /* answers still owed: wait up to 5 s */
            else if (now > drain_until)
                break;
        }
        /* Sleep until an answer arrives or the next request is due. */
        int64_t wake = drain_until != INT64_MAX ? drain_until : r.stop_at;
        /* Only an idle connection can send; with all busy, an answer wakes us
         * (waking for an overdue start would spin and steal the server's CPU). */
        if (o->rate > 0 && sending && busy < o->conns && next < wake)
            wake = next;
        if (wake < now)
            wake = now;
        int64_t d = wake - now;
        if (d > 1000000000)
            d = 1000000000;
        struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
        int n = epoll_pwait2(r.ep, evs, 64, (o->rate > 0 || !sending) ? &ts : NULL, NULL);
        if (n < 0 && errno != EINTR)
            die("loadgen: epoll_pwait2");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                try_write(c);
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                if (try_read(&r, c) && c->busy)
                    record(&r, c, now_ns());
        }
    }
    double secs = (double)(now_ns() - (o->warmup > 0 ? r.warm_end : r.t0)) / 1e9;
    qsort(r.lat, r.n_lat, sizeof *r.lat, cmp_double);
    long long owed = 0;
    for (int i = 0; i < o->conns; i++)
        owed += r.c[i].busy;
    printf("requests=%zu errors=%lld unanswered=%lld seconds=%.3f rate=%.1f p50_ms=%.3f p90_ms=%.3f "
           "p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
           r.n_lat, r.errors, owed, secs, (double)r.n_lat / secs, pct(r.lat, r.n_lat, 0.5),
           pct(r.lat, r.n_lat, 0.9), pct(r.lat, r.n_lat, 0.99), pct(r.lat, r.n_lat, 0.999),
           r.n_lat ? r.lat[r.n_lat - 1] : 0.0);
    return r.errors || owed ? 1 : 0;
}
