/* mhd_floor.c: the libmicrohttpd floor for `make bench`.
 *
 * The least a libmicrohttpd server can do per request, set up the way optd
 * sets up its server (internal polling thread, epoll, a thread pool of
 * --threads workers when more than one, the same connection limit), so that
 * optd's steps/s can be given as a fraction of what the library itself
 * allows on this machine in the same run:
 *
 *   any path      reads the body (if any) and answers a fixed JSON body of
 *                 the size of a 10-element step answer;
 *   POST /echo    answers the request body back as application/octet-stream
 *                 (the floor of a binary step: the same bytes in and out).
 *
 * Usage: mhd_floor PORT THREADS   (PORT 0: any free port).  Prints
 * "port N" on stdout once it listens, serves until SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

/* The size of optd's answer to a 10-element float64 step. */
static const char FIXED[] =
    "{\"step\":1,\"params\":[0.49000000000000005,-1.24,2.9900000000000002,0.12345678901234568,"
    "-0.98765432109876543,1.5,0.25,-0.125,3.1415926535897931,2.7182818284590451]}";

typedef struct req {
    char *body;
    size_t len, cap;
    int echo;
} req_t;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    req_t *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        r->echo = strcmp(method, "POST") == 0 && strcmp(url, "/echo") == 0;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->echo) {
            if (r->len + *upload_size > r->cap) {
                size_t cap = r->cap ? r->cap * 2 : 65536;
                while (cap < r->len + *upload_size)
                    cap *= 2;
                char *p = realloc(r->body, cap);
                if (!p)
                    return MHD_NO;
                r->body = p;
                r->cap = cap;
            }
            memcpy(r->body + r->len, upload, *upload_size);
            r->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *resp;
    if (r->echo) {
        resp = MHD_create_response_from_buffer_with_free_callback(r->len, r->body, free);
        r->body = NULL;
        if (resp)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    } else {
        resp = MHD_create_response_from_buffer(sizeof FIXED - 1, (void *)FIXED,
                                               MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    if (!resp)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_t *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mhd_floor PORT THREADS\n");
        return 2;
    }
    unsigned port = (unsigned)atoi(argv[1]);
    unsigned threads = (unsigned)atoi(argv[2]);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* MHD's threads inherit the mask */

    /* optd: MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC,
     * a pool when --threads > 1, connection limit 1024, timeout 30 s. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0,
                         MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mhd_floor: cannot start on port %u\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", info ? (unsigned)info->port : port);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
