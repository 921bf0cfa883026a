/* fuzz_document.c: libFuzzer target for the JSON documents that configure
 * a session: create (POST /v1/sessions, PUT /v1/sessions/{name}, and fork
 * with "from"), PATCH /v1/sessions/{name}, and the state import
 * PUT /v1/sessions/{name}/state.
 *
 * The input is one request body.  Each input runs against a fresh store
 * holding "a" (adam, float64, 3 parameters) and "b" (sgd, float32, 2), and
 * is sent as every one of: POST /v1/sessions, PUT /v1/sessions/n1,
 * PATCH a, PATCH b, PUT n2/state, PUT a/state.  Besides the sanitizers and
 * the answer checks of harness.c, every session left in the store must
 * survive a state round trip: GET .../state, PUT of that document back,
 * GET again gives the same bytes (export and import agree on every field,
 * numbers included). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

typedef struct names {
    char name[64][OPTD_NAME_MAX + 1];
    size_t n;
} names_t;

static int collect(optd_session_t *s, void *arg)
{
    names_t *nm = arg;
    if (nm->n < 64)
        snprintf(nm->name[nm->n++], OPTD_NAME_MAX + 1, "%s", s->name);
    return 0;
}

static void send_doc(optd_server_t *srv, const char *method, const char *url, const uint8_t *body, size_t len)
{
    fz_http_t r = {.method = method, .url = url, .body = body, .body_len = len};
    fz_request(srv, &r);
    fz_http_done(&r);
}

static void state_round_trip(optd_server_t *srv, const char *name)
{
    char url[OPTD_NAME_MAX + 32];
    snprintf(url, sizeof url, "/v1/sessions/%s/state", name);
    fz_http_t get1 = {.method = "GET", .url = url};
    fz_request(srv, &get1);
    if (get1.status != 200)
        fz_fail("GET %s answered %u: %s", url, get1.status, get1.resp);
    fz_http_t put = {.method = "PUT", .url = url, .body = (const uint8_t *)get1.resp, .body_len = get1.resp_len};
    fz_request(srv, &put);
    if (put.status != 200)
        fz_fail("re-importing the export of %s answered %u: %s\nexport: %s", name, put.status, put.resp,
                get1.resp);
    fz_http_t get2 = {.method = "GET", .url = url};
    fz_request(srv, &get2);
    if (get2.status != 200 || get1.resp_len != get2.resp_len || memcmp(get1.resp, get2.resp, get1.resp_len) != 0)
        fz_fail("the state of %s changed in an export/import round trip:\n%s\n%s", name, get1.resp, get2.resp);
    fz_http_done(&get1);
    fz_http_done(&put);
    fz_http_done(&get2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    optd_server_t srv;
    fz_server_open(&srv);
    fz_add_session(&srv, "a", "adam", OPTD_FLOAT64, 3);
    fz_add_session(&srv, "b", "sgd", OPTD_FLOAT32, 2);

    send_doc(&srv, "POST", "/v1/sessions", data, size);
    send_doc(&srv, "PUT", "/v1/sessions/n1", data, size);
    send_doc(&srv, "PATCH", "/v1/sessions/a", data, size);
    send_doc(&srv, "PATCH", "/v1/sessions/b", data, size);
    send_doc(&srv, "PUT", "/v1/sessions/n2/state", data, size);
    send_doc(&srv, "PUT", "/v1/sessions/a/state", data, size);

    names_t nm = {.n = 0};
    optd_store_foreach(srv.store, collect, &nm);
    for (size_t i = 0; i < nm.n; i++)
        state_round_trip(&srv, nm.name[i]);
    fz_server_close(&srv);
    return 0;
}
