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
    optd_numarray_encode(&b, OPTD_FLOAT64, d, nd);
    ck_assert(!b.failed);
    json_t *v = json_loads(b.p, 0, NULL);
    ck_assert_ptr_nonnull(v);
    double d2[8];
    ck_assert_int_eq(optd_numarray_decode_into(v, OPTD_FLOAT64, "x", d2, nd, NULL), 0);
    ck_assert_int_eq(memcmp(d, d2, sizeof d), 0);
    json_decref(v);
    optd_sbuf_free(&b);

    optd_sbuf_init(&b);
    optd_numarray_encode(&b, OPTD_FLOAT32, f, nf);
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
    ck_assert_int_eq(optd_numarray_fast_member(body, strlen(body), "gradient", OPTD_FLOAT64, out, 3, &rest,
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
                                                   out, 3, &rest, &rest_len),
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
                                                   &rest, &rest_len),
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
        ck_assert_msg(optd_numarray_fast_member(other[i].body, len, "gradient", OPTD_FLOAT64, out, 3, &rest,
                                                &rest_len) == other[i].want,
                      "%s", other[i].body);
        ck_assert(other[i].want == 1 ? rest != NULL : rest == NULL);
        free(rest);
    }
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
    tcase_add_test(tc, test_config_defaults_and_flags);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_config_env_then_flags);
    tcase_add_test(tc, test_split_listen);
    tcase_add_test(tc, test_numarray_roundtrip);
    tcase_add_test(tc, test_numarray_errors);
    tcase_add_test(tc, test_numarray_fast_member);
    tcase_add_test(tc, test_numarray_fast_member_only);
    tcase_add_test(tc, test_sbuf_json_writer);
    tcase_add_test(tc, test_codec_schedule_and_time);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
