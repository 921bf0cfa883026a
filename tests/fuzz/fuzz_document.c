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
 * numbers included).  And two differential checks of the fast paths that
 * read big arrays without Jansson: the create's "params" against Jansson's
 * reading (check_fast_params), and the create and the state import against
 * themselves with the fast paths defeated (check_fast_paths_by_escaping). */
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

/* Whenever the create's fast path would take "params" (doc.c, BY_DOC:
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

/* data with every "params" spelled "p\u0061rams" and every "state"
 * "st\u0061te": the same document to Jansson (an escape inside a string
 * means its letter, wherever the string is), but keys the fast paths' scan
 * does not recognise.  NULL when there is neither. */
static char *escaped_variant(const uint8_t *data, size_t size, size_t *out_len)
{
    static const char *const from[2] = {"\"params\"", "\"state\""};
    static const char *const to[2] = {"\"p\\u0061rams\"", "\"st\\u0061te\""};
    char *out = malloc(size * 2 + 1), *o = out;
    if (!out)
        fz_fail("out of memory");
    bool changed = false;
    for (size_t i = 0; i < size;) {
        int k = -1;
        for (int j = 0; j < 2; j++)
            if (size - i >= strlen(from[j]) && memcmp(data + i, from[j], strlen(from[j])) == 0)
                k = j;
        if (k < 0) {
            *o++ = (char)data[i++];
            continue;
        }
        memcpy(o, to[k], strlen(to[k]));
        o += strlen(to[k]);
        i += strlen(from[k]);
        changed = true;
    }
    *o = '\0';
    *out_len = (size_t)(o - out);
    if (!changed) {
        free(out);
        return NULL;
    }
    return out;
}

static char *error_code_of(const fz_http_t *r)
{
    json_t *doc = json_loadb(r->resp, r->resp_len, 0, NULL);
    const char *c = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
    char *code = strdup(c ? c : "");
    json_decref(doc);
    return code;
}

/* The create and the state import answer a document the same whether or
 * not their fast paths read it (by its escaped variant, which they do
 * not): same status, same error code (messages may name other columns),
 * and on success the same params.  Integers beyond int64, which only the
 * fast paths read (fuzz_step.c), and NUL bytes are set aside. */
static void check_fast_paths_by_escaping(const uint8_t *data, size_t size)
{
    if (memchr(data, 0, size))
        return;
    json_error_t jerr;
    json_t *plain = json_loadb((const char *)data, size, 0, &jerr);
    if (!plain && json_error_code(&jerr) == json_error_numeric_overflow) {
        json_t *as_real = json_loadb((const char *)data, size, JSON_DECODE_INT_AS_REAL, NULL);
        bool big_int = as_real != NULL;
        json_decref(as_real);
        if (big_int)
            return;
    }
    json_decref(plain);
    size_t vlen;
    char *variant = escaped_variant(data, size, &vlen);
    if (!variant)
        return;
    static const char *const what[2][2] = {{"POST", "/v1/sessions"}, {"PUT", "/v1/sessions/n3/state"}};
    for (int w = 0; w < 2; w++) {
        optd_server_t srv[2];
        fz_http_t r[2];
        for (int v = 0; v < 2; v++) {
            fz_server_open(&srv[v]);
            fz_add_session(&srv[v], "a", "adam", OPTD_FLOAT64, 3);
            fz_add_session(&srv[v], "b", "sgd", OPTD_FLOAT32, 2);
            r[v] = (fz_http_t){.method = what[w][0], .url = what[w][1],
                               .body = v ? (const uint8_t *)variant : data, .body_len = v ? vlen : size};
            fz_request(&srv[v], &r[v]);
        }
        if (r[0].status != r[1].status)
            fz_fail("%s %s: %u as sent, %u with the keys escaped:\n%s\n%s\nbody: %.*s", what[w][0], what[w][1],
                    r[0].status, r[1].status, r[0].resp, r[1].resp, (int)size, (const char *)data);
        if (r[0].status >= 400) {
            char *c0 = error_code_of(&r[0]), *c1 = error_code_of(&r[1]);
            if (strcmp(c0, c1) != 0)
                fz_fail("%s %s: error %s as sent, %s with the keys escaped: %.*s", what[w][0], what[w][1], c0, c1,
                        (int)size, (const char *)data);
            free(c0);
            free(c1);
        } else {
            names_t nm[2] = {{.n = 0}, {.n = 0}};
            for (int v = 0; v < 2; v++)
                optd_store_foreach(srv[v].store, collect, &nm[v]);
            if (nm[0].n != nm[1].n)
                fz_fail("%s %s: %zu sessions as sent, %zu escaped", what[w][0], what[w][1], nm[0].n, nm[1].n);
            for (size_t i = 0; i < nm[0].n; i++) {
                char url[OPTD_NAME_MAX + 32];
                snprintf(url, sizeof url, "/v1/sessions/%s/params", nm[0].name[i]);
                fz_http_t g[2] = {{.method = "GET", .url = url}, {.method = "GET", .url = url}};
                for (int v = 0; v < 2; v++)
                    fz_request(&srv[v], &g[v]);
                if (g[0].status != g[1].status || g[0].resp_len != g[1].resp_len ||
                    memcmp(g[0].resp, g[1].resp, g[0].resp_len) != 0)
                    fz_fail("%s %s: session %s differs: %s vs %s", what[w][0], what[w][1], nm[0].name[i], g[0].resp,
                            g[1].resp);
                fz_http_done(&g[0]);
                fz_http_done(&g[1]);
            }
        }
        for (int v = 0; v < 2; v++) {
            fz_http_done(&r[v]);
            fz_server_close(&srv[v]);
        }
    }
    free(variant);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_fast_params(data, size);
    check_fast_paths_by_escaping(data, size);

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
