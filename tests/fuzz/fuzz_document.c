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
 * numbers included).  And a differential check of the create's fast path
 * for "params" (see check_fast_params). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "http/numarray.h"

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

/* Whenever the create's fast path would take "params" (route_sessions.c:
 * located, the rest an object with "params" null, the array parsed), the
 * body must mean the same to Jansson, value for value, with the
 * differences fuzz_step.c lists let through (integers beyond int64, NUL
 * bytes). */
static void check_fast_params(const uint8_t *data, size_t size)
{
    char *text = fz_strndup(data, size);
    const char *arr;
    size_t arr_len, rest_len;
    char *rest;
    int rc = optd_numarray_locate_member(text, size, "params", &arr, &arr_len, &rest, &rest_len);
    if (rc < 0)
        fz_fail("optd_numarray_locate_member: out of memory");
    if (rc == 0 || memchr(text, 0, size)) {
        if (rc == 1)
            free(rest);
        free(text);
        return;
    }
    json_t *r = json_loadb(rest, rest_len, JSON_REJECT_DUPLICATES, NULL);
    bool used = json_is_object(r) && json_is_null(json_object_get(r, "params"));
    json_decref(r);
    free(rest);
    for (int t = 0; used && t < 2; t++) {
        optd_dtype_t dtype = t ? OPTD_FLOAT32 : OPTD_FLOAT64;
        void *fast = NULL;
        size_t n = 0;
        rc = optd_numarray_parse_new(arr, arr_len, dtype, 0, NULL, &fast, &n);
        if (rc < 0)
            fz_fail("optd_numarray_parse_new: out of memory");
        if (rc == 0)
            continue;
        json_error_t jerr;
        json_t *doc = json_loadb(text, size, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
        if (!doc && json_error_code(&jerr) == json_error_duplicate_key) {
            free(fast);
            break;
        }
        if (!doc)
            fz_fail("the fast path took params from a body Jansson refuses (%s): %s", jerr.text, text);
        void *slow = NULL;
        size_t m = 0;
        optd_err_t err = {0};
        if (optd_numarray_decode(json_object_get(doc, "params"), dtype, "params", &slow, &m, &err) != 0)
            fz_fail("the fast path took params Jansson's reading refuses (%s): %s", err.msg, text);
        if (m != n || memcmp(fast, slow, n * optd_dtype_size(dtype)) != 0) {
            /* -0 is the integer 0 to Jansson: compare as values. */
            for (size_t i = 0; i < n && m == n; i++) {
                double a = t ? ((float *)fast)[i] : ((double *)fast)[i];
                double b = t ? ((float *)slow)[i] : ((double *)slow)[i];
                if (a != b)
                    fz_fail("params[%zu]: fast path %.17g, Jansson %.17g: %s", i, a, b, text);
            }
            if (m != n)
                fz_fail("params: fast path %zu values, Jansson %zu: %s", n, m, text);
        }
        free(slow);
        free(fast);
        json_decref(doc);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_fast_params(data, size);

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
