/* test_doc.c: the document reader (daemon/http/doc.c): which path a body
 * takes, and that both answer the same (the errors are the daemon's
 * answers: code and message). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "http/doc.h"

/* The huge allocation of test_rows_out_of_memory must fail with NULL under
 * ASan too, not abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static const char *const step_fields[] = {"gradient", "step", "loss", "worker", NULL};

static optd_doc_spec_t fixed_spec(double *out, size_t n)
{
    return (optd_doc_spec_t){.what = "a step request", .fields = step_fields, .size = OPTD_DOC_FIXED,
                             .array = "gradient", .dtype = OPTD_FLOAT64, .into = out, .n = n};
}

static int read_str(const char *body, const optd_doc_spec_t *spec, optd_doc_t *doc, optd_err_t *err)
{
    *err = (optd_err_t){0};
    return optd_doc_read(body, strlen(body), spec, doc, err);
}

START_TEST(test_fixed_fast_alone)
{
    /* The usual small step: no Jansson at all. */
    double g[3] = {0};
    optd_doc_spec_t spec = fixed_spec(g, 3);
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str(" {\"gradient\": [1, 2.5, -3e2]} ", &spec, &doc, &err), 0);
    ck_assert(doc.fast);
    ck_assert(doc.has_array);
    ck_assert_ptr_null(doc.obj);
    ck_assert(g[0] == 1 && g[1] == 2.5 && g[2] == -300);
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_fixed_fast_with_rest)
{
    double g[2] = {0};
    optd_doc_spec_t spec = fixed_spec(g, 2);
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str("{\"step\": 4, \"gradient\": [1, 2], \"loss\": 0.5}", &spec, &doc, &err), 0);
    ck_assert(doc.fast);
    ck_assert(doc.has_array);
    ck_assert(json_is_null(json_object_get(doc.obj, "gradient")));
    ck_assert_int_eq(json_integer_value(json_object_get(doc.obj, "step")), 4);
    ck_assert(g[0] == 1 && g[1] == 2);
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_fixed_fallback_words_errors)
{
    double g[2] = {0};
    optd_doc_spec_t spec = fixed_spec(g, 2);
    optd_doc_t doc;
    optd_err_t err;
    /* Wrong length: the fast path declines, Jansson's path says so. */
    ck_assert_int_eq(read_str("{\"gradient\": [1, 2, 3]}", &spec, &doc, &err), OPTD_ESIZE);
    ck_assert(!doc.fast);
    optd_doc_free(&doc);
    /* A string among the numbers: a wrong type, named. */
    ck_assert_int_eq(read_str("{\"gradient\": [1, \"x\"]}", &spec, &doc, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "gradient") != NULL, "%s", err.msg);
    optd_doc_free(&doc);
    /* Not an array at all. */
    ck_assert_int_eq(read_str("{\"gradient\": {}}", &spec, &doc, &err), OPTD_EINVAL);
    optd_doc_free(&doc);
    /* Broken JSON: worded at its true line and column. */
    ck_assert_int_eq(read_str("{\"gradient\": [1, 2,\n ]}", &spec, &doc, &err), OPTD_EJSON);
    ck_assert_msg(strstr(err.msg, "line 2") != NULL, "%s", err.msg);
    optd_doc_free(&doc);
    /* Not an object. */
    ck_assert_int_eq(read_str("[1, 2]", &spec, &doc, &err), OPTD_EJSON);
    ck_assert_str_eq(err.msg, "the body must be a JSON object");
    optd_doc_free(&doc);
    /* A number past a double's range is an invalid argument. */
    ck_assert_int_eq(read_str("{\"gradient\": [1e400, 2]}", &spec, &doc, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "out of range") != NULL, "%s", err.msg);
    optd_doc_free(&doc);
    /* The array absent: no error here, the handler says what it wants. */
    ck_assert_int_eq(read_str("{\"step\": 1}", &spec, &doc, &err), 0);
    ck_assert(!doc.has_array);
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_duplicate_keys_at_depth)
{
    double g[2] = {0};
    optd_doc_spec_t spec = fixed_spec(g, 2);
    static const char *const dup[] = {
        "{\"gradient\": [1, 2], \"gradient\": [1, 2]}",
        "{\"gradient\": [1, 2], \"step\": 1, \"step\": 1}",
        "{\"gradient\": [1, 2], \"worker\": {\"a\": {\"k\": 1, \"k\": 2}}}",
        "{\"gradient\": null, \"gradient\": [1, 2]}",
    };
    for (size_t i = 0; i < sizeof dup / sizeof *dup; i++) {
        optd_doc_t doc;
        optd_err_t err;
        ck_assert_int_eq(read_str(dup[i], &spec, &doc, &err), OPTD_EJSON);
        ck_assert_msg(strstr(err.msg, "appears twice") != NULL, "%s", err.msg);
        optd_doc_free(&doc);
    }
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str("{\"gradient\": [1, 2], \"worker\": {\"a\": {\"k\": 1, \"k\": 2}}}", &spec, &doc, &err),
                     OPTD_EJSON);
    ck_assert_str_eq(err.msg, "the key \"k\" appears twice in one object (line 1, column 49); every key may appear "
                              "once");
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_unknown_field)
{
    double g[2] = {0};
    optd_doc_spec_t spec = fixed_spec(g, 2);
    /* On the fast path as on Jansson's, the same words. */
    static const char *const bodies[] = {"{\"gradient\": [1, 2], \"bogus\": 1}", "{\"gradient\": [1, \"x\"], \"bogus\": 1}"};
    for (size_t i = 0; i < 2; i++) {
        optd_doc_t doc;
        optd_err_t err;
        ck_assert_int_eq(read_str(bodies[i], &spec, &doc, &err), OPTD_EINVAL);
        ck_assert_str_eq(err.msg, "unknown field 'bogus' in a step request (known: gradient, step, loss, worker)");
        optd_doc_free(&doc);
    }
}
END_TEST

static const char *const rows_fields[] = {"rows", "gradient", "step", "loss", NULL};

static optd_doc_spec_t rows_spec(uint64_t n_table, size_t row_size)
{
    return (optd_doc_spec_t){.what = "a rows step", .fields = rows_fields, .size = OPTD_DOC_ROWS,
                             .array = "gradient", .dtype = OPTD_FLOAT64, .rows_key = "rows", .n_table = n_table,
                             .row_size = row_size};
}

START_TEST(test_rows_both_paths)
{
    optd_doc_spec_t spec = rows_spec(4, 2);
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str("{\"rows\": [3, 1], \"gradient\": [1, 2, 3, 4]}", &spec, &doc, &err), 0);
    ck_assert(doc.fast);
    ck_assert_uint_eq(doc.n_rows, 2);
    ck_assert_uint_eq(doc.rows[0], 3);
    ck_assert_uint_eq(doc.n_values, 4);
    ck_assert(((double *)doc.values)[3] == 4);
    optd_doc_free(&doc);
    /* A row out of the table: Jansson's path names it. */
    ck_assert_int_eq(read_str("{\"rows\": [3, 9], \"gradient\": [1, 2, 3, 4]}", &spec, &doc, &err), OPTD_EINVAL);
    ck_assert(!doc.fast);
    optd_doc_free(&doc);
    /* Values of the wrong count for the rows. */
    ck_assert_int_eq(read_str("{\"rows\": [3], \"gradient\": [1, 2, 3, 4]}", &spec, &doc, &err), OPTD_ESIZE);
    optd_doc_free(&doc);
    /* No gradient: for the handler to say. */
    ck_assert_int_eq(read_str("{\"rows\": [3]}", &spec, &doc, &err), 0);
    ck_assert(!doc.has_array);
    ck_assert_uint_eq(doc.n_rows, 1);
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_rows_out_of_memory)
{
    /* A row of 2^57 values: the values' count is checked before room for
     * them is asked for, so a body of one value never allocates 2^60
     * bytes, on either path, and nothing crashes. */
    optd_doc_spec_t spec = rows_spec(1, (size_t)1 << 57);
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str("{\"rows\": [0], \"gradient\": [1]}", &spec, &doc, &err), OPTD_ESIZE);
    ck_assert_str_eq(err.msg, "'gradient' has 1 elements; 1 rows of row_size 144115188075855872 need "
                              "144115188075855872");
    optd_doc_free(&doc);
}
END_TEST

START_TEST(test_rows_only)
{
    static const char *const fields[] = {"rows", NULL};
    optd_doc_spec_t spec = {.what = "a rows request", .fields = fields, .size = OPTD_DOC_ROWS, .rows_key = "rows",
                            .n_table = 10};
    optd_doc_t doc;
    optd_err_t err;
    ck_assert_int_eq(read_str("{\"rows\": [9, 0, 9]}", &spec, &doc, &err), 0);
    ck_assert_uint_eq(doc.n_rows, 3);
    ck_assert_ptr_null(doc.values);
    optd_doc_free(&doc);
    ck_assert_int_eq(read_str("{\"rows\": [1, 2,]}", &spec, &doc, &err), OPTD_EJSON);
    optd_doc_free(&doc);
    ck_assert_int_eq(read_str("{\"rows\": [1, 10]}", &spec, &doc, &err), OPTD_EINVAL);
    optd_doc_free(&doc);
    ck_assert_int_eq(read_str("{\"rows\": [1], \"x\": 2}", &spec, &doc, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "unknown field 'x'") != NULL, "%s", err.msg);
    optd_doc_free(&doc);
}
END_TEST

static const char *const create_fields[] = {"name", "optimizer", "dtype", "params", "size", "from", NULL};
static const char *const create_slow_if[] = {"size", "from", NULL};

static optd_doc_spec_t create_spec(void)
{
    return (optd_doc_spec_t){.what = "a create request", .fields = create_fields, .size = OPTD_DOC_BY_DOC,
                             .array = "params", .dtype = OPTD_FLOAT64, .dtype_member = "dtype",
                             .slow_if = create_slow_if};
}

START_TEST(test_by_doc)
{
    optd_doc_spec_t spec = create_spec();
    optd_doc_t doc;
    optd_err_t err;
    void *vals = NULL;
    size_t n = 0;
    /* The dtype the document names, read fast. */
    ck_assert_int_eq(read_str("{\"name\": \"a\", \"params\": [1.5, 2], \"dtype\": \"float32\"}", &spec, &doc, &err), 0);
    ck_assert(doc.fast);
    const json_t *v = json_object_get(doc.obj, "params");
    ck_assert(json_is_null(v));
    ck_assert_int_eq(optd_doc_take_values(&doc, v, OPTD_FLOAT32, &vals, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(((float *)vals)[0] == 1.5f);
    free(vals);
    optd_doc_free(&doc);
    /* Another source given: Jansson's path, the values decoded on demand. */
    ck_assert_int_eq(read_str("{\"params\": [1, 2, 3], \"size\": 3}", &spec, &doc, &err), 0);
    ck_assert(!doc.fast);
    ck_assert_int_eq(optd_doc_take_values(&doc, json_object_get(doc.obj, "params"), OPTD_FLOAT64, &vals, &n, &err), 0);
    ck_assert_uint_eq(n, 3);
    free(vals);
    optd_doc_free(&doc);
    /* A bad dtype: not read fast; the handler words it. */
    ck_assert_int_eq(read_str("{\"params\": [1], \"dtype\": \"float16\"}", &spec, &doc, &err), 0);
    ck_assert(!doc.fast);
    optd_doc_free(&doc);
    /* A value past float32's range, as the handler reads it. */
    ck_assert_int_eq(read_str("{\"params\": [1e39], \"dtype\": \"float32\"}", &spec, &doc, &err), 0);
    ck_assert(!doc.fast);
    ck_assert_int_eq(optd_doc_take_values(&doc, json_object_get(doc.obj, "params"), OPTD_FLOAT32, &vals, &n, &err),
                     OPTD_EINVAL);
    optd_doc_free(&doc);
}
END_TEST

/* ---- lazy documents (a state import) ---------------------------------------- */

static const char *const state_fields[] = {"optimizer", "params", "state", NULL};

typedef struct lazy_ctx {
    int runs, resets;
    bool fast_seen;
    double *params;
    size_t n;
    double buf[4];
} lazy_ctx_t;

static int lazy_decode(optd_doc_t *doc, void *arg, optd_err_t *err)
{
    lazy_ctx_t *c = arg;
    c->runs++;
    c->fast_seen = c->fast_seen || doc->fast;
    int rc = optd_doc_take_values(doc, json_object_get(doc->obj, "params"), OPTD_FLOAT64, (void **)&c->params, &c->n,
                                  err);
    if (rc)
        return rc;
    const json_t *st = json_object_get(doc->obj, "state");
    const json_t *v = json_object_get(st, "exp_avg");
    if (c->n > 4)
        return optd_err_set(err, OPTD_EINVAL, "too big for the test");
    return v ? optd_doc_values_into(doc, "exp_avg", v, OPTD_FLOAT64, "state.exp_avg", c->buf, c->n, err) : 0;
}

static void lazy_reset(void *arg)
{
    lazy_ctx_t *c = arg;
    c->resets++;
    free(c->params);
    c->params = NULL;
}

static int lazy_run(const char *body, lazy_ctx_t *c, optd_err_t *err)
{
    optd_doc_spec_t spec = {.what = "a state document", .fields = state_fields, .size = OPTD_DOC_LAZY,
                            .array = "params", .nested_key = "state"};
    memset(c, 0, sizeof *c);
    *err = (optd_err_t){0};
    int rc = optd_doc_decode(body, strlen(body), &spec, lazy_decode, lazy_reset, c, err);
    free(c->params);
    return rc;
}

START_TEST(test_lazy_decode)
{
    lazy_ctx_t c;
    optd_err_t err;
    /* Read fast, once. */
    ck_assert_int_eq(lazy_run("{\"state\": {\"exp_avg\": [0.5, 0.25]}, \"optimizer\": \"adam\", \"params\": [1, 2]}", &c,
                              &err),
                     0);
    ck_assert_int_eq(c.runs, 1);
    ck_assert(c.fast_seen);
    ck_assert(c.buf[1] == 0.25);
    /* A buffer of the wrong length: the fast run fails, the second run on
     * Jansson's document words it. */
    ck_assert_int_eq(lazy_run("{\"params\": [1, 2], \"state\": {\"exp_avg\": [0.5]}}", &c, &err), OPTD_ESIZE);
    ck_assert_int_eq(c.runs, 2);
    ck_assert_int_eq(c.resets, 1);
    ck_assert_msg(strstr(err.msg, "state.exp_avg") != NULL, "%s", err.msg);
    /* A null where the fast path left none: read again, worded by Jansson's. */
    ck_assert_int_eq(lazy_run("{\"params\": [1, 2], \"state\": {\"exp_avg\": null}}", &c, &err), OPTD_EINVAL);
    ck_assert_int_eq(c.runs, 2);
    /* Duplicates and unknown fields, as everywhere. */
    ck_assert_int_eq(lazy_run("{\"params\": [1, 2], \"state\": {\"exp_avg\": [1, 2], \"exp_avg\": [1, 2]}}", &c, &err),
                     OPTD_EJSON);
    ck_assert_int_eq(lazy_run("{\"params\": [1, 2], \"bogus\": 1}", &c, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "unknown field 'bogus' in a state document") != NULL, "%s", err.msg);
    ck_assert_int_eq(c.runs, 0);
}
END_TEST

START_TEST(test_outside_cap)
{
    /* More than OPTD_JSON_OUTSIDE_MAX bytes outside number arrays: refused
     * unread, or called invalid JSON when it is not JSON. */
    static const char *const fields[] = {"x", NULL};
    optd_doc_spec_t spec = {.what = "a test", .fields = fields};
    size_t len = OPTD_JSON_OUTSIDE_MAX + 100;
    char *body = malloc(len + 1);
    memset(body, ' ', len);
    memcpy(body, "{\"x\": \"", 7);
    memset(body + 7, 'a', len - 10);
    memcpy(body + len - 3, "\"}", 2);
    body[len] = '\0';
    optd_doc_t doc;
    optd_err_t err = {0};
    ck_assert_int_eq(optd_doc_read(body, len, &spec, &doc, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "besides its arrays of numbers") != NULL, "%s", err.msg);
    optd_doc_free(&doc);
    body[len - 3] = 'a'; /* the string never closes */
    ck_assert_int_eq(optd_doc_read(body, len, &spec, &doc, &err), OPTD_EJSON);
    optd_doc_free(&doc);
    free(body);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("doc");
    TCase *tc = tcase_create("doc");
    tcase_add_test(tc, test_fixed_fast_alone);
    tcase_add_test(tc, test_fixed_fast_with_rest);
    tcase_add_test(tc, test_fixed_fallback_words_errors);
    tcase_add_test(tc, test_duplicate_keys_at_depth);
    tcase_add_test(tc, test_unknown_field);
    tcase_add_test(tc, test_rows_both_paths);
    tcase_add_test(tc, test_rows_out_of_memory);
    tcase_add_test(tc, test_rows_only);
    tcase_add_test(tc, test_by_doc);
    tcase_add_test(tc, test_lazy_decode);
    tcase_add_test(tc, test_outside_cap);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
