/* test_http_codec.c: the HTTP layer's pure pieces: flags (config.c), the
 * number-array codec and its fast path (numarray.c), the JSON writer
 * (sbuf.c) and the document codecs (codec.c). */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fmt.h"
#include "http/codec.h"
#include "http/numarray.h"
#include "http/sbuf.h"
#include "parallel.h"
#include "rng.h"

static int parse(optd_config_t *cfg, int argc, char **argv, optd_err_t *err)
{
    optd_config_defaults(cfg);
    FILE *devnull = fopen("/dev/null", "w");
    int rc = optd_config_parse(cfg, argc, argv, devnull, err);
    fclose(devnull);
    return rc;
}

START_TEST(test_config_defaults_and_flags)
{
    optd_config_t cfg;
    optd_err_t err = {0};
    char *argv[] = {"optd", "--listen", "[::1]:9000", "--threads", "3", "--sync", "always",
                    "--max-body-bytes", "1000", "--history", "0", "--log-level", "debug", NULL};
    ck_assert_int_eq(parse(&cfg, 13, argv, &err), OPTD_CONFIG_RUN);
    ck_assert_str_eq(cfg.listen, "[::1]:9000");
    ck_assert_uint_eq(cfg.threads, 3);
    ck_assert_int_eq(cfg.sync, OPTD_SYNC_ALWAYS);
    ck_assert_uint_eq(cfg.max_body_bytes, 1000);
    ck_assert_uint_eq(cfg.history, 0);
    ck_assert_uint_eq(cfg.max_sessions, 100000);
    ck_assert_uint_eq(cfg.connection_timeout, 30);
    ck_assert_int_eq(cfg.log_level, OPTD_LOG_DEBUG);
}
END_TEST

START_TEST(test_config_errors)
{
    optd_config_t cfg;
    optd_err_t err = {0};
    char *bad1[] = {"optd", "--bogus", NULL};
    ck_assert_int_eq(parse(&cfg, 2, bad1, &err), OPTD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "--bogus"));
    char *bad2[] = {"optd", "--threads", "0", NULL};
    ck_assert_int_eq(parse(&cfg, 3, bad2, &err), OPTD_EINVAL);
    char *bad3[] = {"optd", "--tls-cert", "x.pem", NULL};
    ck_assert_int_eq(parse(&cfg, 3, bad3, &err), OPTD_EINVAL);
    char *bad4[] = {"optd", "--listen", "::1:80", NULL};
    ck_assert_int_eq(parse(&cfg, 3, bad4, &err), OPTD_EINVAL);
    char *bad5[] = {"optd", "--metrics-auth", NULL};
    ck_assert_int_eq(parse(&cfg, 2, bad5, &err), OPTD_EINVAL);
    char *bad6[] = {"optd", "--sync", "sometimes", NULL};
    ck_assert_int_eq(parse(&cfg, 3, bad6, &err), OPTD_EINVAL);
    ck_assert_ptr_null(strchr(err.msg, '\n'));
    char *help[] = {"optd", "--help", NULL};
    ck_assert_int_eq(parse(&cfg, 2, help, &err), OPTD_CONFIG_EXIT);
}
END_TEST

START_TEST(test_config_env_then_flags)
{
    optd_config_t cfg;
    optd_err_t err = {0};
    setenv("OPTD_MAX_SESSIONS", "7", 1);
    setenv("OPTD_LISTEN", "0.0.0.0:1", 1);
    char *argv[] = {"optd", "--listen", "127.0.0.1:2", NULL};
    ck_assert_int_eq(parse(&cfg, 3, argv, &err), OPTD_CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_sessions, 7);
    ck_assert_str_eq(cfg.listen, "127.0.0.1:2"); /* the flag wins */
    setenv("OPTD_MAX_SESSIONS", "lots", 1);
    char *none[] = {"optd", NULL};
    ck_assert_int_eq(parse(&cfg, 1, none, &err), OPTD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "OPTD_MAX_SESSIONS"));
    unsetenv("OPTD_MAX_SESSIONS");
    unsetenv("OPTD_LISTEN");
}
END_TEST

START_TEST(test_split_listen)
{
    char host[64];
    unsigned port;
    ck_assert_int_eq(optd_config_split_listen("[::1]:8080", host, sizeof host, &port, NULL), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_uint_eq(port, 8080);
    ck_assert_int_eq(optd_config_split_listen(":80", host, sizeof host, &port, NULL), 0);
    ck_assert_str_eq(host, "");
    ck_assert_int_eq(optd_config_split_listen("host", host, sizeof host, &port, NULL), OPTD_EINVAL);
    ck_assert_int_eq(optd_config_split_listen("h:65536", host, sizeof host, &port, NULL), OPTD_EINVAL);
}
END_TEST

/* Encoding then decoding gives back the same bits, for both dtypes. */
START_TEST(test_numarray_roundtrip)
{
    double d[] = {0.1, -1.25, 3.0, 1e-300, 5e-324, DBL_MAX, -0.0, 123456789.123456789};
    float f[] = {0.1f, -1.25f, 3.0f, 1e-38f, 1e-45f, FLT_MAX, 16777217.0f};
    size_t nd = sizeof d / sizeof d[0], nf = sizeof f / sizeof f[0];
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_numarray_encode(&b, OPTD_FLOAT64, d, nd, NULL);
    ck_assert(!b.failed);
    json_t *v = json_loads(b.p, 0, NULL);
    ck_assert_ptr_nonnull(v);
    double d2[8];
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT64, "x", d2, nd, NULL), 0);
    ck_assert_int_eq(memcmp(d, d2, sizeof d), 0);
    json_decref(v);
    optd_sbuf_free(&b);

    optd_sbuf_init(&b);
    optd_numarray_encode(&b, OPTD_FLOAT32, f, nf, NULL);
    v = json_loads(b.p, 0, NULL);
    ck_assert_ptr_nonnull(v);
    float f2[7];
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT32, "x", f2, nf, NULL), 0);
    ck_assert_int_eq(memcmp(f, f2, sizeof f), 0);
    json_decref(v);
    optd_sbuf_free(&b);
}
END_TEST

START_TEST(test_numarray_errors)
{
    optd_err_t err = {0};
    double out[3];
    json_t *v = json_loads("[1, \"a\", 3]", 0, NULL);
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT64, "g", out, 3, &err), OPTD_EINVAL);
    json_decref(v);
    v = json_loads("[1, 2]", 0, NULL);
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT64, "g", out, 3, &err), OPTD_ESIZE);
    json_decref(v);
    v = json_loads("[1e39]", 0, NULL);
    float fo[1];
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT32, "g", fo, 1, &err), OPTD_EINVAL);
    json_decref(v);
    void *buf = NULL;
    size_t n = 0;
    v = json_loads("[]", 0, NULL);
    ck_assert_int_eq(optd_numarray_decode(v, OPTD_FLOAT64, "p", &buf, &n, &err), OPTD_EINVAL);
    json_decref(v);
}
END_TEST

/* The fast path agrees with Jansson, and declines whatever it cannot take. */
START_TEST(test_numarray_fast_member)
{
    const char *body = " { \"loss\": {\"a\": [1, \"]\"]}, \"gradient\" : [ 0.1 , -2e-3,3 ] , \"step\": 6 } ";
    double out[3];
    char *rest = NULL;
    size_t rest_len = 0;
    ck_assert_int_eq(optd_numarray_fast_member(body, strlen(body), "gradient", OPTD_FLOAT64, out, 3, NULL, &rest,
                                               &rest_len),
                     1);
    ck_assert(out[0] == 0.1 && out[1] == -2e-3 && out[2] == 3.0);
    json_t *v = json_loadb(rest, rest_len, 0, NULL);
    ck_assert_ptr_nonnull(v);
    ck_assert(json_is_null(json_object_get(v, "gradient")));
    ck_assert_int_eq(json_integer_value(json_object_get(v, "step")), 6);
    json_decref(v);
    free(rest);

    const char *declined[] = {
        "{\"gradient\": [1, 2]}",          /* wrong length */
        "{\"gradient\": [1, 2, \"3\"]}",   /* not a number */
        "{\"gradient\": [1, 2, 01]}",      /* not JSON */
        "{\"gradient\": [1, 2, 1e999]}",   /* out of range */
        "{\"gradient\": [1, 2, 3,]}",      /* trailing comma */
        "{\"gradient\": [1, 2, .5]}",
        "{\"gradient\": [1, 2, NaN]}",
        "[1, 2, 3]",
        "{\"grad\": [1, 2, 3]}",
    };
    for (size_t i = 0; i < sizeof declined / sizeof declined[0]; i++) {
        rest = NULL;
        ck_assert_int_eq(optd_numarray_fast_member(declined[i], strlen(declined[i]), "gradient", OPTD_FLOAT64,
                                                   out, 3, NULL, &rest, &rest_len),
                         0);
        ck_assert_ptr_null(rest);
    }
}
END_TEST

START_TEST(test_numarray_fast_member_only)
{
    /* A body that is the gradient and nothing else: 2, no rest to read. */
    const char *only[] = {
        "{\"gradient\":[1,2,3]}",
        " \t{ \"gradient\" :\r\n[1, 2, 3] } \n",
    };
    double out[3];
    for (size_t i = 0; i < sizeof only / sizeof only[0]; i++) {
        char *rest = (char *)"unset";
        size_t rest_len = 99;
        ck_assert_int_eq(optd_numarray_fast_member(only[i], strlen(only[i]), "gradient", OPTD_FLOAT64, out, 3,
                                                   NULL, &rest, &rest_len),
                         2);
        ck_assert_ptr_null(rest);
        ck_assert_uint_eq(rest_len, 0);
        ck_assert(out[0] == 1.0 && out[1] == 2.0 && out[2] == 3.0);
    }
    /* Anything else leaves a rest for Jansson (1) or declines (0): other
     * members before or after, a second gradient, trailing text, a NUL
     * byte, a BOM, a cut body. */
    struct { const char *body; size_t len; int want; } other[] = {
        {"{\"gradient\":[1,2,3],\"step\":3}", 0, 1},
        {"{\"step\":3,\"gradient\":[1,2,3]}", 0, 1},
        {"{\"gradient\":[1,2,3],\"gradient\":null}", 0, 1},
        {"{\"gradient\":[1,2,3]}}", 0, 1},
        {"{\"gradient\":[1,2,3]} x", 0, 1},
        {"{\"gradient\":[1,2,3]", 0, 1},
        {"{\"gradient\":[1,2,3]}\0", 21, 1},
        {"\xef\xbb\xbf{\"gradient\":[1,2,3]}", 0, 0},
        {"{\"gradientx\":[1,2,3]}", 0, 0},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        size_t len = other[i].len ? other[i].len : strlen(other[i].body);
        char *rest = NULL;
        size_t rest_len = 0;
        ck_assert_msg(optd_numarray_fast_member(other[i].body, len, "gradient", OPTD_FLOAT64, out, 3, NULL, &rest,
                                                &rest_len) == other[i].want,
                      "%s", other[i].body);
        ck_assert(other[i].want == 1 ? rest != NULL : rest == NULL);
        free(rest);
    }
}
END_TEST

/* ---- long arrays, split over a pool ------------------------------------------- */

/* Long enough to be split (numarray.c splits from 1 << 15 numbers). */
#define LONG_N ((size_t)(1 << 15) + 1234)

static double rand_value(test_rng_t *r)
{
    uint64_t u = test_rng_next(r);
    double mant = (double)(u >> 11) / 9007199254740992.0 - 0.5;
    switch (u % 5) {
    case 0: return (double)((int64_t)(u % 2001) - 1000);   /* integral */
    case 1: return mant * 1e-30;
    case 2: return mant * 3e12;
    default: return mant;
    }
}

/* {"gradient":[...]} of n numbers as a client might write them: %.17g,
 * short forms and exponents, whitespace of every kind around the commas. */
static char *long_body(test_rng_t *r, size_t n, size_t *len)
{
    static const char *const ws[] = {"", "", "", " ", "\n", "\t ", "\r\n  "};
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_puts(&b, "{\"gradient\": [");
    for (size_t i = 0; i < n; i++) {
        double v = rand_value(r);
        uint64_t u = test_rng_next(r);
        if (i)
            optd_sbuf_printf(&b, "%s,%s", ws[u % 7], ws[(u >> 8) % 7]);
        optd_sbuf_printf(&b, (u >> 16) % 3 == 0 ? "%.17g" : (u >> 16) % 3 == 1 ? "%.6e" : "%.9G", v);
    }
    optd_sbuf_puts(&b, " ]}");
    ck_assert(!b.failed);
    *len = b.len;
    return b.p;
}

/* The split parse must do exactly what the serial one does on the same
 * body: same answer (took it, or declined it), and the same bits. */
static int fast_agrees(const char *body, size_t len, optd_dtype_t dtype, size_t n, optd_pool_t *const *pools,
                       int n_pools)
{
    size_t sz = optd_dtype_size(dtype);
    void *want = calloc(n, sz), *got = calloc(n, sz);
    char *rest = NULL;
    size_t rest_len = 0;
    int rc = optd_numarray_fast_member(body, len, "gradient", dtype, want, n, NULL, &rest, &rest_len);
    ck_assert_int_ge(rc, 0);
    free(rest);
    for (int k = 0; k < n_pools; k++) {
        memset(got, 0, n * sz);
        rest = NULL;
        int rk = optd_numarray_fast_member(body, len, "gradient", dtype, got, n, pools[k], &rest, &rest_len);
        free(rest);
        ck_assert_msg(rk == rc, "split parse (%u threads) gave %d, serial %d", optd_pool_threads(pools[k]), rk,
                      rc);
        if (rc > 0)
            ck_assert_msg(memcmp(want, got, n * sz) == 0, "split parse (%u threads) read other values",
                          optd_pool_threads(pools[k]));
    }
    free(want);
    free(got);
    return rc;
}

/* Offset of the first comma at or after the array text's k/chunks point:
 * where the split parse cuts it. */
static size_t cut_comma(const char *body, size_t len, unsigned k, unsigned chunks)
{
    const char *text = strchr(body, '[') + 1, *close = strrchr(body, ']');
    (void)len;
    const char *c = memchr(text + (size_t)(close - text) * k / chunks, ',', (size_t)(close - text));
    ck_assert_ptr_nonnull(c);
    return (size_t)(c - body);
}

/* body with [at, at + cut) replaced by ins; malloc'd. */
static char *splice(const char *body, size_t len, size_t at, size_t cut, const char *ins, size_t *out_len)
{
    size_t il = strlen(ins);
    char *s = malloc(len - cut + il + 1);
    memcpy(s, body, at);
    memcpy(s + at, ins, il);
    memcpy(s + at + il, body + at + cut, len - at - cut);
    *out_len = len - cut + il;
    s[*out_len] = '\0';
    return s;
}

START_TEST(test_numarray_split_parse)
{
    test_rng_t r = {0x5eed51177u};
    optd_pool_t *pools[2];
    ck_assert_int_eq(optd_pool_new(2, &pools[0], NULL), 0);
    ck_assert_int_eq(optd_pool_new(3, &pools[1], NULL), 0);
    size_t len;
    char *body = long_body(&r, LONG_N, &len);
    ck_assert_int_eq(fast_agrees(body, len, OPTD_FLOAT64, LONG_N, pools, 2), 2);
    ck_assert_int_eq(fast_agrees(body, len, OPTD_FLOAT32, LONG_N, pools, 2), 2);
    /* Other members around it, and a size that does not match. */
    size_t l2;
    char *more = splice(body, len, 1, 0, "\"step\": 3, ", &l2);
    ck_assert_int_eq(fast_agrees(more, l2, OPTD_FLOAT64, LONG_N, pools, 2), 1);
    free(more);
    ck_assert_int_eq(fast_agrees(body, len, OPTD_FLOAT64, LONG_N - 1, pools, 2), 0);
    ck_assert_int_eq(fast_agrees(body, len, OPTD_FLOAT64, LONG_N + 1, pools, 2), 0);

    /* Damage at every place the 2- and 3-thread pools cut the text (8 and
     * 12 chunks), and a few bytes either side: each must be declined, or
     * read as serially, whichever chunk it falls in. */
    struct { size_t shift, cut; const char *ins; bool declined; } damage[] = {
        {0, 1, " ", true},          /* "1 2": a comma gone */
        {0, 0, ",", true},          /* ",,": one too many */
        {0, 1, "]", true},          /* the array ends early */
        {1, 0, "x", true},
        {1, 0, "1e999,", true},     /* one number more, and out of range */
        {0, 1, "\n,\t", false},     /* whitespace: same values */
        {1, 0, "-0.0,", false},     /* one number more: with size n + 1 below */
        {1, 0, " ", false},
    };
    unsigned chunk_counts[] = {8, 12};
    for (size_t c = 0; c < 2; c++) {
        for (unsigned k = 1; k < chunk_counts[c]; k++) {
            size_t comma = cut_comma(body, len, k, chunk_counts[c]);
            for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
                for (int back = 0; back <= 2; back += 2) { /* at the cut, and just before it */
                    size_t at = comma + damage[d].shift - (size_t)back;
                    size_t dl;
                    char *bad = splice(body, len, at, damage[d].cut, damage[d].ins, &dl);
                    size_t n = strchr(damage[d].ins, ',') && damage[d].cut == 0 && strlen(damage[d].ins) > 1
                                   ? LONG_N + 1
                                   : LONG_N;
                    int rc = fast_agrees(bad, dl, OPTD_FLOAT64, n, pools, 2);
                    if (back == 0 && damage[d].declined)
                        ck_assert_msg(rc == 0, "damage %zu at cut %u/%u was taken", d, k, chunk_counts[c]);
                    if (!damage[d].declined && back == 0)
                        ck_assert_msg(rc == 2, "harmless change %zu at cut %u/%u declined", d, k,
                                      chunk_counts[c]);
                    free(bad);
                }
            }
        }
    }
    /* Something after the last number: a number without its comma (the
     * count of commas is what the chunks go by), or a letter. */
    size_t close_at = (size_t)(strrchr(body, ']') - body);
    const char *tails[] = {" 1", " x", "1"};
    for (size_t t = 0; t < 3; t++) {
        size_t bl;
        char *bad = splice(body, len, close_at - 1, 0, tails[t], &bl);
        ck_assert_int_eq(fast_agrees(bad, bl, OPTD_FLOAT64, LONG_N, pools, 2), t == 2 ? 2 : 0);
        free(bad);
    }
    /* A stretch of whitespace longer than a chunk: cuts that meet in it
     * make empty chunks, and the values stay where they were. */
    char *wide = malloc(len / 4 + 1);
    memset(wide, ' ', len / 4);
    wide[len / 4] = '\0';
    size_t wl;
    char *spread_out = splice(body, len, cut_comma(body, len, 3, 8) + 1, 0, wide, &wl);
    ck_assert_int_eq(fast_agrees(spread_out, wl, OPTD_FLOAT64, LONG_N, pools, 2), 2);
    free(spread_out);
    spread_out = splice(body, len, close_at, 0, wide, &wl); /* the last chunks empty */
    ck_assert_int_eq(fast_agrees(spread_out, wl, OPTD_FLOAT64, LONG_N, pools, 2), 2);
    free(spread_out);
    free(wide);
    /* A trailing comma, with the count of commas kept (the first number
     * gone): the last chunk ends in a comma, and that is no number. */
    const char *first_comma = strchr(body, ',');
    size_t open = (size_t)(strchr(body, '[') - body) + 1, close = (size_t)(strrchr(body, ']') - body);
    size_t tl;
    char *trail = splice(body, len, close, 0, ",", &tl);
    char *trail2 = splice(trail, tl, open, (size_t)(first_comma - body) + 1 - open, "", &tl);
    ck_assert_int_eq(fast_agrees(trail2, tl, OPTD_FLOAT64, LONG_N - 1, pools, 2), 0);
    free(trail);
    free(trail2);
    free(body);
    optd_pool_free(pools[0]);
    optd_pool_free(pools[1]);
}
END_TEST

START_TEST(test_numarray_split_encode)
{
    test_rng_t r = {0xe7c0de5u};
    optd_pool_t *pools[2];
    ck_assert_int_eq(optd_pool_new(2, &pools[0], NULL), 0);
    ck_assert_int_eq(optd_pool_new(3, &pools[1], NULL), 0);
    size_t sizes[] = {LONG_N, (size_t)1 << 15, 2 * LONG_N + 7};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        double *d = malloc(n * sizeof *d);
        float *f = malloc(n * sizeof *f);
        for (size_t i = 0; i < n; i++) {
            d[i] = rand_value(&r);
            f[i] = (float)rand_value(&r);
        }
        for (int t = 0; t < 2; t++) {
            optd_dtype_t dtype = t ? OPTD_FLOAT32 : OPTD_FLOAT64;
            const void *v = t ? (const void *)f : (const void *)d;
            optd_sbuf_t want, got;
            optd_sbuf_init(&want);
            optd_sbuf_puts(&want, "{\"params\":");
            optd_numarray_encode(&want, dtype, v, n, NULL);
            ck_assert(!want.failed);
            for (int k = 0; k < 2; k++) {
                optd_sbuf_init(&got);
                optd_sbuf_puts(&got, "{\"params\":");
                optd_numarray_encode(&got, dtype, v, n, pools[k]);
                ck_assert(!got.failed);
                ck_assert_uint_eq(got.len, want.len);
                ck_assert_msg(strcmp(got.p, want.p) == 0, "split print (%u threads) of %zu differs",
                              optd_pool_threads(pools[k]), n);
                optd_sbuf_free(&got);
            }
            /* And it reads back, through the split parse too. */
            optd_sbuf_puts(&want, "}");
            char *rest = NULL;
            size_t rest_len;
            void *back = malloc(n * optd_dtype_size(dtype));
            ck_assert_int_eq(optd_numarray_fast_member(want.p, want.len, "params", dtype, back, n, pools[0], &rest,
                                                       &rest_len),
                             2);
            ck_assert(memcmp(back, v, n * optd_dtype_size(dtype)) == 0);
            free(back);
            optd_sbuf_free(&want);
        }
        free(d);
        free(f);
    }
    optd_pool_free(pools[0]);
    optd_pool_free(pools[1]);
}
END_TEST

/* The create's fast path: locate "params", then parse it once the dtype is
 * known; the array's length comes from the text. */
START_TEST(test_numarray_locate_and_parse_new)
{
    const char *body = "{\"name\": \"x\", \"params\" :[0.5, -1e-3 ,2], \"dtype\": \"float32\"}";
    const char *arr;
    size_t arr_len, rest_len;
    char *rest;
    ck_assert_int_eq(optd_numarray_locate_member(body, strlen(body), "params", &arr, &arr_len, &rest, &rest_len), 1);
    ck_assert_int_eq(strncmp(arr, "[0.5, -1e-3 ,2]", arr_len), 0);
    ck_assert_uint_eq(arr_len, strlen("[0.5, -1e-3 ,2]"));
    ck_assert_str_eq(rest, "{\"name\": \"x\", \"params\" :null, \"dtype\": \"float32\"}");
    ck_assert_uint_eq(rest_len, strlen(rest));
    free(rest);
    void *out;
    size_t n;
    ck_assert_int_eq(optd_numarray_parse_new(arr, arr_len, OPTD_FLOAT32, 0, NULL, &out, &n), 1);
    ck_assert_uint_eq(n, 3);
    ck_assert(((float *)out)[0] == 0.5f && ((float *)out)[1] == -1e-3f && ((float *)out)[2] == 2.0f);
    free(out);
    ck_assert_int_eq(optd_numarray_parse_new(arr, arr_len, OPTD_FLOAT64, 3, NULL, &out, &n), 1);
    free(out);
    ck_assert_int_eq(optd_numarray_parse_new(arr, arr_len, OPTD_FLOAT64, 2, NULL, &out, &n), 0); /* > max */

    /* Not located: no such member, not an array, no ']' at all. */
    const char *unlocated[] = {"{\"size\": 3}", "{\"params\": 3}", "{\"params\": [1, 2", "[1, 2]",
                               "{\"params\" 3}"};
    for (size_t i = 0; i < sizeof unlocated / sizeof unlocated[0]; i++)
        ck_assert_int_eq(optd_numarray_locate_member(unlocated[i], strlen(unlocated[i]), "params", &arr,
                                                     &arr_len, &rest, &rest_len),
                         0);
    /* Located but declined by the parse: Jansson reads those bodies whole. */
    const char *declined[] = {"[]", "[ ]", "[1,]", "[,1]", "[[1],2]", "[1,\"2\"]", "[1 2]", "[01]", "[1e999]",
                              "[1,,2]", "[1]x", "[NaN]"};
    for (size_t i = 0; i < sizeof declined / sizeof declined[0]; i++)
        ck_assert_msg(optd_numarray_parse_new(declined[i], strlen(declined[i]), OPTD_FLOAT64, 0, NULL, &out, &n) == 0,
                      "%s", declined[i]);
    ck_assert_int_eq(optd_numarray_parse_new("[1e39]", 6, OPTD_FLOAT32, 0, NULL, &out, &n), 0);

    /* A long array: split over a pool, same values as serially. */
    test_rng_t r = {0xc4ea7e5u};
    size_t len;
    char *big = long_body(&r, LONG_N, &len);
    ck_assert_int_eq(optd_numarray_locate_member(big, len, "gradient", &arr, &arr_len, &rest, &rest_len), 1);
    free(rest);
    optd_pool_t *pool;
    ck_assert_int_eq(optd_pool_new(2, &pool, NULL), 0);
    void *serial, *split;
    size_t n1, n2;
    ck_assert_int_eq(optd_numarray_parse_new(arr, arr_len, OPTD_FLOAT64, 0, NULL, &serial, &n1), 1);
    ck_assert_int_eq(optd_numarray_parse_new(arr, arr_len, OPTD_FLOAT64, 0, pool, &split, &n2), 1);
    ck_assert_uint_eq(n1, LONG_N);
    ck_assert_uint_eq(n2, LONG_N);
    ck_assert(memcmp(serial, split, LONG_N * sizeof(double)) == 0);
    free(serial);
    free(split);
    optd_pool_free(pool);
    free(big);
}
END_TEST

/* The state import's fast path: the arrays of the top level and of one
 * object member, by place; the rest with them as null. */
START_TEST(test_numarray_find_arrays_and_without)
{
    const char *body = "{\"params\": [1, 2], \"state\": {\"exp_avg\": [0.5,0.25], \"mu\": 3, \"v\" :[7,8]},"
                       " \"labels\": {\"a\": \"[x]\"}}";
    size_t len = strlen(body), n_top, n_st;
    optd_numarray_span_t top[4], st[4];
    ck_assert_int_eq(optd_numarray_find_arrays(body, len, NULL, top, 4, &n_top), 1);
    ck_assert_uint_eq(n_top, 1);
    ck_assert(top[0].key_len == 6 && memcmp(top[0].key, "params", 6) == 0);
    ck_assert(top[0].len == 6 && memcmp(top[0].arr, "[1, 2]", 6) == 0);
    ck_assert_int_eq(optd_numarray_find_arrays(body, len, "state", st, 4, &n_st), 1);
    ck_assert_uint_eq(n_st, 2);
    ck_assert(st[0].key_len == 7 && memcmp(st[0].key, "exp_avg", 7) == 0);
    ck_assert(st[1].key_len == 1 && st[1].key[0] == 'v' && memcmp(st[1].arr, "[7,8]", 5) == 0);
    ck_assert_int_eq(optd_numarray_find_arrays(body, len, "state", st, 1, &n_st), 0); /* more than max */
    ck_assert_int_eq(optd_numarray_find_arrays(body, len, "nothing", st, 4, &n_st), 0);
    ck_assert_int_eq(optd_numarray_find_arrays("{}", 2, NULL, st, 4, &n_st), 1);
    ck_assert_uint_eq(n_st, 0);
    ck_assert_int_eq(optd_numarray_find_arrays("{\"a\": [1} ", 10, NULL, st, 4, &n_st), 0);

    optd_numarray_span_t all[3] = {top[0], st[0], st[1]};
    char *rest;
    size_t rest_len;
    ck_assert_int_eq(optd_numarray_without(body, len, all, 3, &rest, &rest_len), 1);
    ck_assert_str_eq(rest, "{\"params\": null, \"state\": {\"exp_avg\": null, \"mu\": 3, \"v\" :null},"
                           " \"labels\": {\"a\": \"[x]\"}}");
    ck_assert_uint_eq(rest_len, strlen(rest));
    free(rest);
    optd_numarray_span_t backwards[2] = {st[0], top[0]};
    ck_assert_int_eq(optd_numarray_without(body, len, backwards, 2, &rest, &rest_len), 0);

    double out[2];
    ck_assert_int_eq(optd_numarray_parse_into(st[0].arr, st[0].len, OPTD_FLOAT64, out, 2, NULL), 1);
    ck_assert(out[0] == 0.5 && out[1] == 0.25);
    ck_assert_int_eq(optd_numarray_parse_into(st[0].arr, st[0].len, OPTD_FLOAT64, out, 3, NULL), 0);
    ck_assert_int_eq(optd_numarray_parse_into("[1,2] ", 6, OPTD_FLOAT64, out, 2, NULL), 0);
}
END_TEST

/* optd_json_valid agrees with Jansson (JSON_DECODE_ANY) on what is JSON:
 * hand-picked cases, then every one-byte change and every cut of valid
 * documents.  Inputs are ASCII, as the validator does not check UTF-8. */
static void valid_agrees(const char *s, size_t n)
{
    json_error_t e;
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, &e);
    size_t bad;
    bool ok = optd_json_valid(s, n, &bad);
    ck_assert_msg(ok == (v != NULL), "optd_json_valid says %d, Jansson %d for: %.*s", ok, v != NULL,
                  (int)n, s);
    if (!ok)
        ck_assert_uint_le(bad, n);
    json_decref(v);
}

START_TEST(test_json_valid_against_jansson)
{
    static const char *const cases[] = {
        "{}", "[]", "{\"a\":[1,2,{\"b\":null}],\"c\":\"x\\u00e9\\n\"}", " [ 1 , -2.5e3 , true ] ",
        "[1,]", "{\"a\":1,}", "{\"a\" 1}", "[01]", "[1.]", "[.5]", "[-]", "\"\\x\"", "\"\\u12\"",
        "[\"a\tb\"]", "nul", "[true false]", "{\"a\":1}}", "[[[[]]]]", "[[[[]]]", "{1:2}", "",
        "   ", "[1e]", "[1e+]", "[-0.0e-0]", "\"\\/\"", "[1]x", "{\"k\":{\"k\":{}}}",
        "\"\\u0000\"", "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"",
        "\"\\ud83d\\u0041\"", "\"\\uD83D\\uDE00\\u00e9\"",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        valid_agrees(cases[i], strlen(cases[i]));
    static const char *const docs[] = {
        "{\"steps\": [{\"session\": \"a\", \"gradient\": [0.5, -1e-3], \"loss\": 2}], \"x\": [true, null]}",
        "[{\"a\": \"q\\\"\\\\\"}, 12, -0.25E+2, [], {}]",
    };
    const char alphabet[] = "{}[],:\"\\ 0123456789.-+eEtrufalsn\t";
    test_rng_t rng = {0x9E3779B97F4A7C15u};
    for (size_t d = 0; d < sizeof docs / sizeof docs[0]; d++) {
        size_t n = strlen(docs[d]);
        char buf[256];
        for (size_t cut = 0; cut <= n; cut++)
            valid_agrees(docs[d], cut);
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < 6; k++) {
                memcpy(buf, docs[d], n);
                buf[i] = alphabet[test_rng_next(&rng) % (sizeof alphabet - 1)];
                valid_agrees(buf, n);
            }
    }
    /* Nesting up to Jansson's limit and one past it. */
    char *deep = malloc(2 * 2049 + 1);
    for (int depth = 2047; depth <= 2049; depth++) {
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        valid_agrees(deep, 2 * (size_t)depth);
    }
    free(deep);
}
END_TEST

/* The one printer of step answers: the bytes API.md shows. */
START_TEST(test_codec_step_members)
{
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    double p[2] = {0.5, -1.25};
    optd_codec_step_members(&b, 7, NULL, 0, OPTD_FLOAT64, p, 2, NULL);
    ck_assert_str_eq(b.p, "\"step\":7,\"params\":[0.5,-1.25]");
    optd_sbuf_free(&b);
    optd_sbuf_init(&b);
    uint64_t rows[2] = {3, 0};
    float f[4] = {1, 2, 3, 0.1f};
    optd_codec_step_members(&b, 12345678901234ULL, rows, 2, OPTD_FLOAT32, f, 4, NULL);
    ck_assert_str_eq(b.p, "\"step\":12345678901234,\"rows\":[3,0],\"params\":[1.0,2.0,3.0,0.100000001]");
    optd_sbuf_free(&b);
    /* ?return=none, and a PUT: the step alone, rows or not. */
    optd_sbuf_init(&b);
    optd_codec_step_members(&b, 0, rows, 2, OPTD_FLOAT32, NULL, 4, NULL);
    ck_assert_str_eq(b.p, "\"step\":0");
    optd_sbuf_free(&b);
}
END_TEST

START_TEST(test_sbuf_json_writer)
{
    json_t *v = json_pack("{sfsfsssbsn}", "a", 0.1, "b", 1.0, "s", "q\"\\\n\x01", "t", 1, "z");
    optd_sbuf_t b;
    optd_sbuf_init(&b);
    optd_sbuf_put_json(&b, v);
    ck_assert_str_eq(b.p, "{\"a\":0.1,\"b\":1.0,\"s\":\"q\\\"\\\\\\n\\u0001\",\"t\":true,\"z\":null}");
    optd_sbuf_free(&b);
    json_decref(v);
    char buf[40];
    optd_fmt_double(buf, 0.30000000000000004);
    ck_assert_double_eq(strtod(buf, NULL), 0.30000000000000004);
}
END_TEST

START_TEST(test_codec_schedule_and_time)
{
    bool has;
    optd_schedule_t s;
    optd_err_t err = {0};
    json_t *v = json_loads("{\"type\":\"cosine\",\"t_max\":100,\"eta_min\":0.0,\"warmup_steps\":5}", 0, NULL);
    ck_assert_int_eq(optd_codec_schedule_decode(v, &has, &s, &err), 0);
    ck_assert(has && s.type == OPTD_SCHED_COSINE && s.t_max == 100 && s.warmup_steps == 5);
    json_decref(v);
    v = json_loads("{\"type\":\"cosine\",\"t_max\":100,\"gamma\":0.5}", 0, NULL);
    ck_assert_int_eq(optd_codec_schedule_decode(v, &has, &s, &err), OPTD_EINVAL);
    json_decref(v);
    v = json_loads("{\"type\":\"step\"}", 0, NULL);
    ck_assert_int_eq(optd_codec_schedule_decode(v, &has, &s, &err), OPTD_EINVAL);
    json_decref(v);

    char t[OPTD_FMT_TIME_MAX + 1];
    t[optd_fmt_time(t, 1795867201250, true)] = '\0';
    ck_assert_str_eq(t, "2026-11-28T12:00:01.250Z");
    json_t *js = json_string(t); /* reads back to the same instant */
    int64_t ms;
    ck_assert_int_eq(optd_codec_time_decode(js, "time", &ms, &err), 0);
    ck_assert_int_eq(ms, 1795867201250);
    json_decref(js);
    js = json_string("2026-11-28 12:00:01");
    ck_assert_int_eq(optd_codec_time_decode(js, "time", &ms, &err), OPTD_EINVAL);
    json_decref(js);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("http_codec");
    TCase *tc = tcase_create("all");
    tcase_set_timeout(tc, 60); /* the split tests parse ~40 bodies of 34K numbers under ASan */
    tcase_add_test(tc, test_config_defaults_and_flags);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_config_env_then_flags);
    tcase_add_test(tc, test_split_listen);
    tcase_add_test(tc, test_numarray_roundtrip);
    tcase_add_test(tc, test_numarray_errors);
    tcase_add_test(tc, test_numarray_fast_member);
    tcase_add_test(tc, test_numarray_fast_member_only);
    tcase_add_test(tc, test_numarray_split_parse);
    tcase_add_test(tc, test_numarray_split_encode);
    tcase_add_test(tc, test_numarray_locate_and_parse_new);
    tcase_add_test(tc, test_numarray_find_arrays_and_without);
    tcase_add_test(tc, test_json_valid_against_jansson);
    tcase_add_test(tc, test_sbuf_json_writer);
    tcase_add_test(tc, test_codec_step_members);
    tcase_add_test(tc, test_codec_schedule_and_time);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
