/* test_rows.c: the sparse rows step of the core (optd_optim_step_rows,
 * API.md 1.1 Tables, OPTIMIZERS.md Sparse rows).
 *
 * Replays every PyTorch 1.13 reference run in tests/fixtures/rows (made by
 * tests/fixtures/generate_rows.py: SparseAdam, Adagrad and SGD on sparse
 * COO gradients with repeated rows) and checks the whole table after every
 * step and the final state with OPTIMIZERS.md's tolerance; then the rules
 * PyTorch does not test for us: which optimizers and settings take rows,
 * rows out of range, repeats summed in the order given (bit for bit), rows
 * not listed left untouched bit for bit, a non-finite result refused with
 * nothing changed, and t counting every step.  Then the session layer: a
 * rows step through optd_session_apply (the listed rows answered in order,
 * a row out of range refused before anything), and snapshot section tag 4
 * (row_size and the history's rows counts) through encode and decode. */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optd/optim.h"
#include "session_internal.h"
#include "snapshot.h"

static const char *rows_dir(void)
{
    const char *d = getenv("OPTD_ROWS_FIXTURES_DIR");
    return (d && *d) ? d : "tests/fixtures/rows";
}

static double tol(optd_dtype_t dt, double want)
{
    return dt == OPTD_FLOAT32 ? 2e-5 * fabs(want) + 1e-6 : 1e-10 * fabs(want) + 1e-12;
}

static double get(optd_dtype_t dt, const void *v, size_t i)
{
    return dt == OPTD_FLOAT32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

static void put(optd_dtype_t dt, void *v, size_t i, double x)
{
    if (dt == OPTD_FLOAT32)
        ((float *)v)[i] = (float)x;
    else
        ((double *)v)[i] = x;
}

/* The values of a JSON array into a new buffer of dtype. */
static void *array_of(optd_dtype_t dt, const json_t *a, size_t *n)
{
    *n = json_array_size(a);
    void *v = malloc((*n ? *n : 1) * optd_dtype_size(dt));
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < *n; i++)
        put(dt, v, i, json_number_value(json_array_get(a, i)));
    return v;
}

static void hparams_of(optd_optim_kind_t kind, const json_t *o, optd_hparams_t *hp)
{
    optd_hparams_default(kind, hp);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        const optd_hparam_desc_t *h = optd_hparam_find(kind, key);
        if (!h)
            continue; /* sgd's momentum etc.: 0 in the fixture, as the defaults */
        char *f = (char *)hp + h->offset;
        if (h->type == OPTD_HP_BOOL)
            *(bool *)f = json_is_true(v);
        else if (h->type == OPTD_HP_PAIR) {
            ((double *)f)[0] = json_number_value(json_array_get(v, 0));
            ((double *)f)[1] = json_number_value(json_array_get(v, 1));
        } else
            *(double *)f = json_number_value(v);
    }
}

static void replay(const char *path)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    ck_assert_msg(doc != NULL, "%s: %s", path, jerr.text);
    optd_optim_kind_t kind;
    optd_dtype_t dt;
    ck_assert_int_eq(optd_optim_lookup(json_string_value(json_object_get(doc, "optimizer")), &kind, NULL), 0);
    ck_assert_int_eq(optd_dtype_parse(json_string_value(json_object_get(doc, "dtype")), &dt), 0);
    optd_hparams_t hp;
    hparams_of(kind, json_object_get(doc, "hyperparameters"), &hp);
    size_t R = (size_t)json_integer_value(json_object_get(doc, "row_size")), size;
    void *params = array_of(dt, json_object_get(doc, "params0"), &size);
    optd_optim_state_t st;
    optd_err_t err;
    ck_assert_int_eq(optd_optim_state_init(&st, kind, dt, size, &hp, &err), 0);
    const json_t *steps = json_object_get(doc, "steps");
    ck_assert_uint_ge(json_array_size(steps), 100);
    for (size_t k = 0; k < json_array_size(steps); k++) {
        const json_t *s = json_array_get(steps, k);
        const json_t *jr = json_object_get(s, "rows");
        size_t n_rows = json_array_size(jr), ng, nw;
        uint64_t *rows = malloc(n_rows * sizeof *rows);
        for (size_t i = 0; i < n_rows; i++)
            rows[i] = (uint64_t)json_integer_value(json_array_get(jr, i));
        void *grad = array_of(dt, json_object_get(s, "grad"), &ng);
        ck_assert_uint_eq(ng, n_rows * R);
        optd_step_info_t info;
        int rc = optd_optim_step_rows(&st, &hp, NULL, 0, R, params, rows, n_rows, grad, &info, &err);
        ck_assert_msg(rc == 0, "%s step %zu: %s", path, k + 1, err.msg);
        ck_assert_uint_eq(st.step, k + 1);
        void *want = array_of(dt, json_object_get(s, "params"), &nw);
        ck_assert_uint_eq(nw, size);
        for (size_t i = 0; i < size; i++) {
            double g = get(dt, params, i), w = get(dt, want, i);
            ck_assert_msg(fabs(g - w) <= tol(dt, w), "%s step %zu params[%zu]: got %.17g, PyTorch %.17g", path,
                          k + 1, i, g, w);
        }
        free(rows);
        free(grad);
        free(want);
    }
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(doc, "state"), key, v) {
        int b = optd_buf_lookup(key);
        ck_assert_msg(b >= 0 && st.buf[b], "%s: state %s", path, key);
        size_t n;
        void *want = array_of(dt, v, &n);
        ck_assert_uint_eq(n, size);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(fabs(get(dt, st.buf[b], i) - get(dt, want, i)) <= tol(dt, get(dt, want, i)),
                          "%s: state.%s[%zu]", path, key, i);
        free(want);
    }
    optd_optim_state_free(&st);
    free(params);
    json_decref(doc);
}

START_TEST(test_pytorch_fixtures)
{
    DIR *d = opendir(rows_dir());
    ck_assert_msg(d != NULL, "cannot open %s (run from the repository root)", rows_dir());
    struct dirent *e;
    int n = 0;
    bool kinds[OPTD_OPTIM_COUNT][2] = {{false}};
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", rows_dir(), e->d_name);
        replay(path);
        kinds[OPTD_SPARSE_ADAM][strstr(e->d_name, "sparse_adam") && strstr(e->d_name, "f64")] |=
            strstr(e->d_name, "sparse_adam") != NULL;
        kinds[OPTD_ADAGRAD][strstr(e->d_name, "f64") != NULL] |= strncmp(e->d_name, "adagrad", 7) == 0;
        kinds[OPTD_SGD][strstr(e->d_name, "f64") != NULL] |= strncmp(e->d_name, "sgd", 3) == 0;
        n++;
    }
    closedir(d);
    ck_assert_int_ge(n, 6);
    /* Every sparse rule in both dtypes, so an empty directory fails. */
    for (int k = 0; k < 2; k++) {
        ck_assert(kinds[OPTD_SPARSE_ADAM][k]);
        ck_assert(kinds[OPTD_ADAGRAD][k]);
        ck_assert(kinds[OPTD_SGD][k]);
    }
}
END_TEST

/* ---- the rules PyTorch's runs do not pin down ------------------------------- */

START_TEST(test_which_optimizers)
{
    optd_hparams_t hp;
    optd_err_t err;
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        optd_hparams_default((optd_optim_kind_t)k, &hp);
        bool sparse = k == OPTD_SPARSE_ADAM || k == OPTD_ADAGRAD || k == OPTD_SGD;
        ck_assert_int_eq(optd_optim_rows_supported((optd_optim_kind_t)k, &hp, 0, &err),
                         sparse ? 0 : OPTD_EINVAL);
        if (!sparse)
            ck_assert_msg(strstr(err.msg, "no sparse rule"), "%s", err.msg);
    }
    optd_hparams_default(OPTD_SGD, &hp);
    hp.momentum = 0.9;
    ck_assert_int_eq(optd_optim_rows_supported(OPTD_SGD, &hp, 0, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "momentum"), "%s", err.msg);
    optd_hparams_default(OPTD_ADAGRAD, &hp);
    hp.weight_decay = 0.1;
    ck_assert_int_eq(optd_optim_rows_supported(OPTD_ADAGRAD, &hp, 0, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "weight_decay"), "%s", err.msg);
    optd_hparams_default(OPTD_SPARSE_ADAM, &hp);
    ck_assert_int_eq(optd_optim_rows_supported(OPTD_SPARSE_ADAM, &hp, 2, &err), OPTD_EINVAL);
}
END_TEST

/* A table of 6 rows of 2 float64 values for the tests below. */
static void table(optd_optim_kind_t kind, optd_optim_state_t *st, optd_hparams_t *hp, double *p)
{
    optd_err_t err;
    optd_hparams_default(kind, hp);
    hp->lr = 0.1;
    ck_assert_int_eq(optd_optim_state_init(st, kind, OPTD_FLOAT64, 12, hp, &err), 0);
    for (int i = 0; i < 12; i++)
        p[i] = 0.25 * (i - 5);
}

START_TEST(test_rows_out_of_range_change_nothing)
{
    optd_optim_state_t st;
    optd_hparams_t hp;
    double p[12], before[12], g[4] = {1, 2, 3, 4};
    table(OPTD_SPARSE_ADAM, &st, &hp, p);
    memcpy(before, p, sizeof p);
    optd_err_t err;
    uint64_t bad[2] = {1, 6};
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, bad, 2, g, NULL, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "rows[1] is 6"), "%s", err.msg);
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, bad, 0, g, NULL, &err), OPTD_EINVAL);
    ck_assert_int_eq(memcmp(p, before, sizeof p), 0);
    ck_assert_uint_eq(st.step, 0);
    optd_optim_state_free(&st);
}
END_TEST

/* Repeats are summed in the order given, then one update: the same bits as
 * the step with the sum listed once; rows not listed keep their bits, in
 * the parameters and in every buffer. */
START_TEST(test_repeats_summed_and_others_untouched)
{
    for (int kind = 0; kind < OPTD_OPTIM_COUNT; kind++) {
        if (kind != OPTD_SPARSE_ADAM && kind != OPTD_ADAGRAD && kind != OPTD_SGD)
            continue;
        optd_optim_state_t a, b;
        optd_hparams_t hp;
        double pa[12], pb[12], before[12];
        table((optd_optim_kind_t)kind, &a, &hp, pa);
        table((optd_optim_kind_t)kind, &b, &hp, pb);
        memcpy(before, pa, sizeof pa);
        optd_err_t err;
        uint64_t rows_a[3] = {4, 1, 4}, rows_b[2] = {1, 4};
        double ga[6] = {0.1, 0.2, 0.3, 0.4, 0.7, 1.1};
        double gb[4] = {0.3, 0.4, 0.1 + 0.7, 0.2 + 1.1};
        optd_step_info_t ia, ib;
        ck_assert_int_eq(optd_optim_step_rows(&a, &hp, NULL, 0, 2, pa, rows_a, 3, ga, &ia, &err), 0);
        ck_assert_int_eq(optd_optim_step_rows(&b, &hp, NULL, 0, 2, pb, rows_b, 2, gb, &ib, &err), 0);
        ck_assert_int_eq(memcmp(pa, pb, sizeof pa), 0);
        ck_assert(ia.grad_norm == ib.grad_norm);
        for (int buf = 0; buf < OPTD_BUF_COUNT; buf++) {
            ck_assert((a.buf[buf] == NULL) == (b.buf[buf] == NULL));
            if (a.buf[buf])
                ck_assert_int_eq(memcmp(a.buf[buf], b.buf[buf], 12 * sizeof(double)), 0);
        }
        for (int i = 0; i < 12; i++) {
            bool listed = i / 2 == 1 || i / 2 == 4;
            if (listed)
                ck_assert(pa[i] != before[i]);
            else
                ck_assert(pa[i] == before[i]);
            for (int buf = 0; buf < OPTD_BUF_COUNT; buf++)
                if (a.buf[buf] && !listed)
                    ck_assert(((double *)a.buf[buf])[i] == 0.0);
        }
        optd_optim_state_free(&a);
        optd_optim_state_free(&b);
    }
}
END_TEST

/* Thousands of rows with repeats, in every order the sort meets (random,
 * ascending, descending, all one row): the same bits as the gradient
 * coalesced by hand, summed in the order given, listing each row once. */
START_TEST(test_many_repeats_coalesced_in_order)
{
    enum { N = 5000, ROWS = 50, R = 3 };
    static uint64_t rows[N], once[ROWS];
    static float g[N * R], sum[ROWS * R];
    for (int shape = 0; shape < 4; shape++) {
        unsigned seed = 7;
        for (int i = 0; i < N; i++) {
            seed = seed * 1103515245u + 12345u;
            rows[i] = shape == 0 ? (seed >> 8) % ROWS : shape == 1 ? (uint64_t)i * ROWS / N
                      : shape == 2 ? (uint64_t)(N - 1 - i) * ROWS / N : 17;
            for (int j = 0; j < R; j++)
                g[i * R + j] = (float)((int)((seed >> (4 + j)) % 2001) - 1000) * 1e-3f;
        }
        bool seen[ROWS] = {0};
        size_t n_once = 0;
        memset(sum, 0, sizeof sum);
        for (int i = 0; i < N; i++) {
            uint64_t r = rows[i];
            for (int j = 0; j < R; j++)
                sum[r * R + j] = seen[r] ? sum[r * R + j] + g[i * R + j] : g[i * R + j];
            if (!seen[r])
                once[n_once++] = r;
            seen[r] = true;
        }
        static float gonce[ROWS * R];
        for (size_t k = 0; k < n_once; k++)
            memcpy(gonce + k * R, sum + once[k] * R, R * sizeof(float));
        optd_hparams_t hp;
        optd_hparams_default(OPTD_SPARSE_ADAM, &hp);
        optd_optim_state_t a, b;
        optd_err_t err;
        ck_assert_int_eq(optd_optim_state_init(&a, OPTD_SPARSE_ADAM, OPTD_FLOAT32, ROWS * R, &hp, &err), 0);
        ck_assert_int_eq(optd_optim_state_init(&b, OPTD_SPARSE_ADAM, OPTD_FLOAT32, ROWS * R, &hp, &err), 0);
        float pa[ROWS * R], pb[ROWS * R];
        for (int i = 0; i < ROWS * R; i++)
            pa[i] = pb[i] = (float)i * 0.01f;
        optd_step_info_t ia, ib;
        ck_assert_int_eq(optd_optim_step_rows(&a, &hp, NULL, 0, R, pa, rows, N, g, &ia, &err), 0);
        ck_assert_int_eq(optd_optim_step_rows(&b, &hp, NULL, 0, R, pb, once, n_once, gonce, &ib, &err), 0);
        ck_assert_int_eq(memcmp(pa, pb, sizeof pa), 0);
        for (int buf = 0; buf < OPTD_BUF_COUNT; buf++)
            if (a.buf[buf])
                ck_assert_int_eq(memcmp(a.buf[buf], b.buf[buf], sizeof pa), 0);
        optd_optim_state_free(&a);
        optd_optim_state_free(&b);
    }
}
END_TEST

/* sparse_adam's dense step is the rows step with every row listed once. */
START_TEST(test_dense_sparse_adam_is_every_row)
{
    optd_optim_state_t a, b;
    optd_hparams_t hp;
    double pa[12], pb[12], g[12];
    table(OPTD_SPARSE_ADAM, &a, &hp, pa);
    table(OPTD_SPARSE_ADAM, &b, &hp, pb);
    uint64_t all[6] = {0, 1, 2, 3, 4, 5};
    optd_err_t err;
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 12; i++)
            g[i] = sin(1.0 + i * 0.7 + k);
        ck_assert_int_eq(optd_optim_step(&a, &hp, NULL, 0, pa, g, NULL, &err), 0);
        ck_assert_int_eq(optd_optim_step_rows(&b, &hp, NULL, 0, 2, pb, all, 6, g, NULL, &err), 0);
    }
    ck_assert_int_eq(memcmp(pa, pb, sizeof pa), 0);
    ck_assert_int_eq(memcmp(a.buf[OPTD_BUF_EXP_AVG], b.buf[OPTD_BUF_EXP_AVG], sizeof pa), 0);
    ck_assert_int_eq(memcmp(a.buf[OPTD_BUF_EXP_AVG_SQ], b.buf[OPTD_BUF_EXP_AVG_SQ], sizeof pa), 0);
    optd_optim_state_free(&a);
    optd_optim_state_free(&b);
}
END_TEST

/* t counts every step: sparse_adam's bias correction of step 3 is used by
 * a row first touched at step 3 (PyTorch keeps one step per tensor). */
START_TEST(test_t_counts_every_step)
{
    optd_optim_state_t st;
    optd_hparams_t hp;
    double p[12], g[2] = {1.0, -1.0};
    table(OPTD_SPARSE_ADAM, &st, &hp, p);
    optd_err_t err;
    uint64_t r0 = 0, r5 = 5;
    optd_step_info_t info;
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, &r0, 1, g, NULL, &err), 0);
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, &r0, 1, g, NULL, &err), 0);
    double before = p[10];
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, &r5, 1, g, &info, &err), 0);
    ck_assert_uint_eq(st.step, 3);
    /* By hand: m = 0.1, v = 0.001, step_size = lr sqrt(1-b2^3)/(1-b1^3). */
    double ss = 0.1 * sqrt(1 - pow(0.999, 3)) / (1 - pow(0.9, 3));
    double want = before + (-ss) * ((0.0 + (1.0 - 0.0) * (1 - 0.9)) / (sqrt(0.0 + (1.0 - 0.0) * (1 - 0.999)) + 1e-8));
    ck_assert_msg(fabs(p[10] - want) <= 1e-15, "got %.17g, want %.17g", p[10], want);
    optd_optim_state_free(&st);
}
END_TEST

START_TEST(test_non_finite_refused_nothing_changed)
{
    optd_optim_state_t st;
    optd_hparams_t hp;
    double p[12], before[12];
    table(OPTD_SGD, &st, &hp, p);
    hp.lr = 1e300;
    memcpy(before, p, sizeof p);
    optd_err_t err;
    uint64_t rows[2] = {2, 3};
    double g[4] = {1, 1e10, 1, 1};
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, rows, 2, g, NULL, &err), OPTD_ENONFINITE);
    ck_assert_msg(strstr(err.msg, "params[5]"), "%s", err.msg);
    ck_assert_int_eq(memcmp(p, before, sizeof p), 0);
    ck_assert_uint_eq(st.step, 0);
    double nan_g[4] = {1, NAN, 1, 1};
    hp.lr = 0.1;
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 0, 2, p, rows, 2, nan_g, NULL, &err), OPTD_ENONFINITE);
    ck_assert_int_eq(memcmp(p, before, sizeof p), 0);
    optd_optim_state_free(&st);
}
END_TEST

/* Clipping uses the norm of the summed values: rows {0, 0} with [3, 0]
 * and [0, 4] sum to [3, 4], norm 5; with max_grad_norm 1 the update is
 * g * 1/(5 + 1e-6). */
START_TEST(test_clip_by_summed_norm)
{
    optd_optim_state_t st;
    optd_hparams_t hp;
    double p[12];
    table(OPTD_SGD, &st, &hp, p);
    optd_err_t err;
    uint64_t rows[2] = {0, 0};
    double g[4] = {3, 0, 0, 4};
    double p0 = p[0], p1 = p[1];
    optd_step_info_t info;
    ck_assert_int_eq(optd_optim_step_rows(&st, &hp, NULL, 1.0, 2, p, rows, 2, g, &info, &err), 0);
    ck_assert(info.grad_norm == 5.0);
    double c = 1.0 / (5.0 + 1e-6);
    ck_assert(p[0] == p0 + (-0.1) * (3.0 * c));
    ck_assert(p[1] == p1 + (-0.1) * (4.0 * c));
    optd_optim_state_free(&st);
}
END_TEST

/* ---- the session layer: one apply, history, snapshot tag 4 ------------------ */

static optd_session_t *table_session(size_t row_size)
{
    optd_session_config_t cfg = {0};
    cfg.kind = OPTD_SPARSE_ADAM;
    cfg.dtype = OPTD_FLOAT32;
    cfg.row_size = row_size;
    optd_hparams_default(cfg.kind, &cfg.hp);
    optd_session_t *s;
    optd_err_t err;
    ck_assert_int_eq(optd_session_create("tbl", &cfg, 8, NULL, 10, &s, &err), 0);
    return s;
}

START_TEST(test_session_rows_and_snapshot)
{
    optd_err_t err;
    optd_session_config_t cfg = {0};
    cfg.kind = OPTD_SGD;
    cfg.row_size = 3;
    optd_hparams_default(cfg.kind, &cfg.hp);
    optd_session_t *bad;
    ck_assert_int_eq(optd_session_create("bad", &cfg, 8, NULL, 10, &bad, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "multiple"), "%s", err.msg);

    optd_session_t *s = table_session(2);
    uint64_t rows[3] = {3, 0, 3}, step;
    float g[6] = {1, 2, 3, 4, 5, 6}, out[6];
    optd_step_input_t in = {.grad = g, .rows = rows, .n_rows = 3};
    ck_assert_int_eq(optd_session_apply(s, NULL, &in, &step, out, &err), 0);
    ck_assert_uint_eq(step, 1);
    /* The answer is the listed rows, in the order listed. */
    ck_assert(out[0] == out[4] && out[1] == out[5] && out[0] != 0);
    uint64_t over = 4;
    in.rows = &over;
    in.n_rows = 1;
    ck_assert_int_eq(optd_session_apply(s, NULL, &in, &step, NULL, &err), OPTD_EINVAL);
    optd_step_input_t dense = {.grad = (float[8]){0}};
    ck_assert_int_eq(optd_session_apply(s, NULL, &dense, &step, NULL, &err), 0);

    optd_session_image_t img;
    ck_assert_int_eq(optd_session_copy_image(s, &img, &err), 0);
    ck_assert_uint_eq(img.n_history, 2);
    ck_assert_uint_eq(img.history[0].rows, 3);
    ck_assert_uint_eq(img.history[1].rows, 0);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(optd_snapshot_encode(&img, 7, &buf, &len, &err), 0);
    optd_session_image_t back;
    uint64_t lsn;
    ck_assert_int_eq(optd_snapshot_decode(buf, len, &back, &lsn, &err), 0);
    ck_assert_uint_eq(optd_session_row_size(&back.cfg), 2);
    ck_assert_uint_eq(back.history[0].rows, 3);
    ck_assert_uint_eq(back.history[1].rows, 0);
    ck_assert_int_eq(memcmp(back.params, img.params, 8 * sizeof(float)), 0);
    optd_session_image_free(&back);
    free(buf);
    /* A row size that does not divide the size is refused on load. */
    img.cfg.row_size = 3;
    ck_assert_int_eq(optd_snapshot_encode(&img, 7, &buf, &len, &err), 0);
    ck_assert_int_eq(optd_snapshot_decode(buf, len, &back, &lsn, &err), OPTD_ECORRUPT);
    ck_assert_msg(strstr(err.msg, "table"), "%s", err.msg);
    free(buf);
    optd_session_image_free(&img);
    optd_session_release(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rows");
    TCase *tc = tcase_create("rows");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pytorch_fixtures);
    tcase_add_test(tc, test_which_optimizers);
    tcase_add_test(tc, test_rows_out_of_range_change_nothing);
    tcase_add_test(tc, test_repeats_summed_and_others_untouched);
    tcase_add_test(tc, test_many_repeats_coalesced_in_order);
    tcase_add_test(tc, test_dense_sparse_adam_is_every_row);
    tcase_add_test(tc, test_t_counts_every_step);
    tcase_add_test(tc, test_non_finite_refused_nothing_changed);
    tcase_add_test(tc, test_clip_by_summed_norm);
    tcase_add_test(tc, test_session_rows_and_snapshot);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
