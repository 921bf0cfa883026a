/* harness.h: what the libFuzzer targets share: an in-process optd (server
 * struct with a store, no sockets) and a way to run one HTTP request
 * through the real router and handlers.
 *
 * libmicrohttpd is not started.  The five MHD calls the handlers make
 * (header/query lookup, building and destroying a response) are defined in
 * harness.c, and since an executable's own definitions win over a shared
 * library's, the handlers talk to those: the fuzzer reaches the request
 * decoding without a network round trip per input, and the harness can
 * read the answer (status, body) to check it. */
#ifndef OPTD_FUZZ_HARNESS_H
#define OPTD_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "server.h"

/* A server with an empty store (history 16, no persistence); the logger
 * writes errors only, to stderr.  Aborts when out of memory. */
void fz_server_open(optd_server_t *srv);
void fz_server_close(optd_server_t *srv);

/* Adds a session made with the daemon's own create path; aborts on error. */
void fz_add_session(optd_server_t *srv, const char *name, const char *optimizer, optd_dtype_t dtype,
                    size_t size);

/* One request and its answer. */
typedef struct fz_http {
    const char *method;        /* "POST", ... */
    const char *url;           /* path only */
    const char *query[4][2];   /* key, value pairs; unused entries NULL */
    const char *header[4][2];
    bool binary;               /* Content-Type: application/octet-stream */
    const uint8_t *body;
    size_t body_len;
    /* filled by fz_request: */
    unsigned status;
    char *resp;                /* malloc'd copy of the response body (NUL-terminated) */
    size_t resp_len;
    char content_type[64];
} fz_http_t;

/* Routes and runs r through optd_router_dispatch and checks the answer:
 * aborts (a fuzzer finding) on a 5xx other than out of memory, on a JSON
 * answer that is not valid JSON, or on an error body without a code.
 * Free r->resp with fz_http_done. */
void fz_request(optd_server_t *srv, fz_http_t *r);
void fz_http_done(fz_http_t *r);

/* Prints a message and aborts: libFuzzer reports it as a crash. */
void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Copies data into a malloc'd NUL-terminated string (for headers). */
char *fz_strndup(const uint8_t *data, size_t len);

#endif
