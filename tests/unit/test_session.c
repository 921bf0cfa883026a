/* test_session.c: one session on its own: names, config validation and
 * labels, the update with compare-and-swap and loss, the history ring, image
 * copies, and undoing a change whose durability failed. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_internal.h"

static optd_session_config_t adam_cfg(optd_dtype_t dtype)
{
    optd_session_config_t cfg = {0};
    cfg.kind = OPTD_ADAM;
    cfg.dtype = dtype;
    optd_hparams_default(OPTD_ADAM, &cfg.hp);
    return cfg;
}

START_TEST(names)
{
    ck_assert(optd_session_name_valid("a"));
    ck_assert(optd_session_name_valid("exp-1.run_2"));
    ck_assert(!optd_session_name_valid(""));
    ck_assert(!optd_session_name_valid("-a"));
    ck_assert(!optd_session_name_valid(".a"));
    ck_assert(!optd_session_name_valid("a/b"));
    ck_assert(!optd_session_name_valid("a b"));
    ck_assert(!optd_session_name_valid(".."));
    char n[200];
    memset(n, 'x', sizeof n);
    n[128] = 0;
    ck_assert(optd_session_name_valid(n));
    n[128] = 'x';
    n[129] = 0;
    ck_assert(!optd_session_name_valid(n));
}
END_TEST

START_TEST(labels_and_validation)
{
    optd_err_t err;
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT64);
    ck_assert_int_eq(optd_session_config_validate(&cfg, &err), 0);
    char key[80], val[300];
    for (int i = 0; i < OPTD_LABELS_MAX; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ck_assert_int_eq(optd_session_config_add_label(&cfg, key, "v", &err), 0);
    }
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "one-too-many", "v", &err), OPTD_EINVAL);
    /* Same key replaces, even when full. */
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "k3", "new", &err), 0);
    ck_assert_uint_eq(cfg.n_labels, OPTD_LABELS_MAX);
    ck_assert_str_eq(cfg.labels[3].value, "new");
    ck_assert_int_eq(optd_session_config_validate(&cfg, &err), 0);

    optd_session_config_t copy;
    ck_assert_int_eq(optd_session_config_copy(&copy, &cfg, &err), 0);
    ck_assert_ptr_ne(copy.labels, cfg.labels);
    ck_assert_str_eq(copy.labels[31].key, "k31");
    optd_session_config_free(&cfg);
    ck_assert_uint_eq(cfg.n_labels, 0);

    optd_session_config_t c2 = adam_cfg(OPTD_FLOAT64);
    memset(key, 'k', 64);
    key[64] = 0;
    ck_assert_int_eq(optd_session_config_add_label(&c2, key, "", &err), 0);
    key[64] = 'k';
    key[65] = 0;
    ck_assert_int_eq(optd_session_config_add_label(&c2, key, "", &err), OPTD_EINVAL);
    memset(val, 'v', 256);
    val[256] = 0;
    ck_assert_int_eq(optd_session_config_add_label(&c2, "v", val, &err), 0);
    val[256] = 'v';
    val[257] = 0;
    ck_assert_int_eq(optd_session_config_add_label(&c2, "w", val, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_session_config_add_label(&c2, "", "x", &err), OPTD_EINVAL);
    optd_session_config_free(&c2);
    optd_session_config_free(&copy);

    optd_session_config_t bad = adam_cfg(OPTD_FLOAT64);
    bad.hp.lr = -1;
    ck_assert_int_eq(optd_session_config_validate(&bad, &err), OPTD_EINVAL);
    bad = adam_cfg(OPTD_FLOAT64);
    bad.max_grad_norm = -0.5;
    ck_assert_int_eq(optd_session_config_validate(&bad, &err), OPTD_EINVAL);
    ck_assert(strstr(err.msg, "max_grad_norm"));
    bad = adam_cfg(OPTD_FLOAT64);
    bad.ttl_seconds = -1;
    ck_assert_int_eq(optd_session_config_validate(&bad, &err), OPTD_EINVAL);
    ck_assert(strstr(err.msg, "ttl_seconds"));
    bad = adam_cfg(OPTD_FLOAT64);
    bad.has_schedule = true;
    bad.schedule.type = OPTD_SCHED_COSINE;
    bad.schedule.t_max = 0;
    ck_assert_int_eq(optd_session_config_validate(&bad, &err), OPTD_EINVAL);
}
END_TEST

START_TEST(create_and_step)
{
    optd_err_t err;
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT64);
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "study", "a", &err), 0);
    double p0[3] = {0.5, -1.25, 3.0};
    optd_session_t *s;
    ck_assert_int_eq(optd_session_create("bad name", &cfg, 3, p0, 10, &s, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_session_create("x", &cfg, 0, NULL, 10, &s, &err), OPTD_EINVAL);
    double nan3[3] = {0, NAN, 0};
    ck_assert_int_eq(optd_session_create("x", &cfg, 3, nan3, 10, &s, &err), OPTD_ENONFINITE);
    ck_assert_int_eq(optd_session_create("x", &cfg, 3, p0, 10, &s, &err), 0);
    optd_session_config_free(&cfg); /* the session holds its own copy */

    /* The same update through the core directly, for comparison. */
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    optd_optim_state_t st;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT64, 3, &hp, &err), 0);
    double ref[3] = {0.5, -1.25, 3.0};

    double g[3] = {0.1, -0.2, 0.05}, out[3];
    uint64_t step = 99;
    for (int i = 0; i < 5; i++) {
        double loss = 1.0 / (i + 1);
        ck_assert_int_eq(optd_session_step(s, g, NULL, &loss, &step, out, &err), 0);
        ck_assert_uint_eq(step, (uint64_t)i + 1);
        ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, ref, g, NULL, &err), 0);
        ck_assert_mem_eq(out, ref, sizeof ref);
    }
    /* compare-and-swap */
    uint64_t expect = 4;
    ck_assert_int_eq(optd_session_step(s, g, &expect, NULL, &step, out, &err), OPTD_ESTEP);
    ck_assert_uint_eq(step, 5);
    expect = 5;
    ck_assert_int_eq(optd_session_step(s, g, &expect, NULL, &step, NULL, &err), 0);
    ck_assert_uint_eq(step, 6);
    /* a non-finite gradient changes nothing */
    double bad[3] = {0, INFINITY, 0};
    ck_assert_int_eq(optd_session_step(s, bad, NULL, NULL, &step, out, &err), OPTD_ENONFINITE);
    ck_assert_uint_eq(optd_session_copy_params(s, out), 6);

    optd_history_entry_t *h;
    size_t n;
    ck_assert_int_eq(optd_session_copy_history(s, 0, 0, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 6);
    ck_assert_uint_eq(h[0].step, 1);
    ck_assert(h[0].has_loss);
    ck_assert(h[0].loss == 1.0);
    ck_assert(!h[5].has_loss);
    ck_assert(h[0].lr == 1e-3);
    ck_assert(fabs(h[0].grad_norm - sqrt(0.01 + 0.04 + 0.0025)) < 1e-15);
    free(h);

    optd_session_desc_t d;
    ck_assert_int_eq(optd_session_copy_descriptor(s, &d, &err), 0);
    ck_assert_uint_eq(d.size, 3);
    ck_assert_uint_eq(d.step, 6);
    ck_assert_uint_eq(d.cfg.n_labels, 1);
    ck_assert_str_eq(d.cfg.labels[0].value, "a");
    ck_assert(d.updated_ms >= d.created_ms);
    /* losses 1, 1/2, ..., 1/5 at steps 1..5; step 6 carried none */
    ck_assert(d.loss.has);
    ck_assert(d.loss.last == 0.2 && d.loss.last_step == 5);
    ck_assert(d.loss.best == 0.2 && d.loss.best_step == 5);
    optd_session_config_free(&d.cfg);

    /* deleted sessions refuse steps */
    s->deleted = true;
    ck_assert_int_eq(optd_session_step(s, g, NULL, NULL, &step, out, &err), OPTD_ENOTFOUND);
    optd_optim_state_free(&st);
    optd_session_release(s);
}
END_TEST

START_TEST(history_ring)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = OPTD_SGD, .dtype = OPTD_FLOAT32};
    optd_hparams_default(OPTD_SGD, &cfg.hp);
    optd_session_t *s;
    ck_assert_int_eq(optd_session_create("h", &cfg, 2, NULL, 7, &s, &err), 0);
    ck_assert_uint_eq(s->history_alloc, 0); /* nothing preallocated */
    float g[2] = {1, 1};
    for (int i = 1; i <= 20; i++) {
        double loss = i;
        ck_assert_int_eq(optd_session_step(s, g, NULL, &loss, NULL, NULL, &err), 0);
        ck_assert_uint_le(s->history_alloc, 7);
        ck_assert_uint_eq(s->history_len, i < 7 ? (size_t)i : 7);
    }
    optd_history_entry_t *h;
    size_t n;
    ck_assert_int_eq(optd_session_copy_history(s, 0, 0, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 7);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(h[i].step, 14 + i);
        ck_assert(h[i].loss == (double)(14 + i));
    }
    free(h);
    ck_assert_int_eq(optd_session_copy_history(s, 17, 0, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(h[0].step, 18);
    free(h);
    ck_assert_int_eq(optd_session_copy_history(s, 0, 2, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(h[0].step, 19);
    ck_assert_uint_eq(h[1].step, 20);
    free(h);
    ck_assert_int_eq(optd_session_copy_history(s, 20, 0, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    optd_session_release(s);

    /* --history 0 keeps none */
    ck_assert_int_eq(optd_session_create("h0", &cfg, 2, NULL, 0, &s, &err), 0);
    ck_assert_int_eq(optd_session_step(s, g, NULL, NULL, NULL, NULL, &err), 0);
    ck_assert_int_eq(optd_session_copy_history(s, 0, 0, &h, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    optd_session_release(s);
}
END_TEST

START_TEST(image_round_trip)
{
    optd_err_t err;
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT32);
    cfg.hp.amsgrad = true;
    cfg.ttl_seconds = 60;
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "k", "v", &err), 0);
    optd_session_t *s;
    float p[4] = {1, 2, 3, 4}, g[4] = {0.5f, -0.5f, 0.25f, 1};
    ck_assert_int_eq(optd_session_create("img", &cfg, 4, p, 100, &s, &err), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(optd_session_step(s, g, NULL, NULL, NULL, NULL, &err), 0);
    optd_session_image_t img;
    ck_assert_int_eq(optd_session_copy_image(s, &img, &err), 0);
    snprintf(img.name, sizeof img.name, "img2");
    optd_session_t *t;
    ck_assert_int_eq(optd_session_from_image_take(&img, 100, &t, &err), 0);
    ck_assert_ptr_null(img.params);
    ck_assert_uint_eq(img.cfg.n_labels, 0);
    optd_session_image_free(&img);
    /* one more step on both: identical */
    float a[4], b[4];
    uint64_t sa, sb;
    ck_assert_int_eq(optd_session_step(s, g, NULL, NULL, &sa, a, &err), 0);
    ck_assert_int_eq(optd_session_step(t, g, NULL, NULL, &sb, b, &err), 0);
    ck_assert_uint_eq(sa, 4);
    ck_assert_uint_eq(sb, 4);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert_uint_eq(t->history_len, 4);
    ck_assert_str_eq(t->cfg.labels[0].key, "k");
    ck_assert_int_eq(t->cfg.ttl_seconds, 60);
    optd_session_release(s);
    optd_session_release(t);
    optd_session_config_free(&cfg);
}
END_TEST

/* A durability hook that fails when told to. */
typedef struct fake_dur {
    int fail;
    int commits;
} fake_dur_t;

static int fake_commit(void *ctx, struct optd_session *s, optd_err_t *err)
{
    (void)s;
    fake_dur_t *f = ctx;
    f->commits++;
    if (f->fail)
        return optd_err_set(err, OPTD_EIO, "disk full");
    return 0;
}

/* A step is journaled as its input, before it is applied. */
static int fake_step(void *ctx, optd_session_t *s, const optd_step_record_t *rec, uint64_t *lsn,
                     optd_err_t *err)
{
    (void)s;
    (void)rec;
    *lsn = 0;
    return fake_commit(ctx, NULL, err);
}

START_TEST(failed_commit_changes_nothing)
{
    optd_err_t err;
    fake_dur_t f = {0};
    optd_durability_t dur = {.ctx = &f, .commit = fake_commit, .step = fake_step};
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT64);
    optd_session_t *s;
    double p[3] = {1, 2, 3}, g[3] = {0.3, 0.1, -0.2};
    ck_assert_int_eq(optd_session_create("d", &cfg, 3, p, 3, &s, &err), 0);
    s->dur = &dur;
    optd_step_ctx_t ctx = {.dur = &dur};
    optd_step_input_t in = {.grad = g};
    for (int i = 0; i < 5; i++) /* fill the ring so the next step overwrites */
        ck_assert_int_eq(optd_session_apply(s, &ctx, &in, NULL, NULL, &err), 0);
    ck_assert_int_eq(f.commits, 5);

    optd_session_image_t before;
    ck_assert_int_eq(optd_session_copy_image(s, &before, &err), 0);
    uint64_t version = s->version;

    f.fail = 1;
    double out[3] = {0};
    uint64_t step = 0;
    ck_assert_int_eq(optd_session_apply(s, &ctx, &in, &step, out, &err), OPTD_EIO);
    ck_assert_str_eq(err.msg, "disk full");
    optd_session_image_t after;
    ck_assert_int_eq(optd_session_copy_image(s, &after, &err), 0);
    ck_assert_uint_eq(after.st.step, before.st.step);
    ck_assert_mem_eq(after.params, before.params, 3 * sizeof(double));
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        ck_assert((after.st.buf[b] == NULL) == (before.st.buf[b] == NULL));
        if (before.st.buf[b])
            ck_assert_mem_eq(after.st.buf[b], before.st.buf[b], 3 * sizeof(double));
    }
    ck_assert_uint_eq(after.n_history, before.n_history);
    ck_assert_mem_eq(after.history, before.history, before.n_history * sizeof *before.history);
    ck_assert_int_eq(after.updated_ms, before.updated_ms);
    ck_assert_uint_eq(s->version, version);

    /* patch: also undone */
    optd_session_config_t c2 = adam_cfg(OPTD_FLOAT64);
    c2.hp.lr = 0.5;
    ck_assert_int_eq(optd_session_config_add_label(&c2, "x", "y", &err), 0);
    ck_assert_int_eq(optd_session_set_config(s, &c2, &err), OPTD_EIO);
    ck_assert(s->cfg.hp.lr == 1e-3);
    ck_assert_uint_eq(s->cfg.n_labels, 0);
    ck_assert_uint_eq(s->version, version);
    /* a patch may not change the optimizer */
    f.fail = 0;
    optd_session_config_t c3 = {.kind = OPTD_SGD, .dtype = OPTD_FLOAT64};
    optd_hparams_default(OPTD_SGD, &c3.hp);
    ck_assert_int_eq(optd_session_set_config(s, &c3, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_session_set_config(s, &c2, &err), 0);
    ck_assert(s->cfg.hp.lr == 0.5);
    ck_assert_str_eq(s->cfg.labels[0].value, "y");

    /* once the fault clears, the same step goes through with the same result
     * an undisturbed session would give */
    optd_session_image_t copy;
    ck_assert_int_eq(optd_session_copy_image(s, &copy, &err), 0);
    optd_session_t *t;
    ck_assert_int_eq(optd_session_from_image_take(&copy, 3, &t, &err), 0);
    double o1[3], o2[3];
    ck_assert_int_eq(optd_session_step(s, g, NULL, NULL, &step, o1, &err), 0);
    ck_assert_int_eq(optd_session_step(t, g, NULL, NULL, NULL, o2, &err), 0);
    ck_assert_mem_eq(o1, o2, sizeof o1);
    ck_assert_uint_eq(step, 6);

    optd_session_config_free(&c2);
    optd_session_image_free(&before);
    optd_session_image_free(&after);
    optd_session_release(s);
    optd_session_release(t);
}
END_TEST

/* A durability hook for batches: counts its group calls and the records
 * in them, and fails when told to. */
typedef struct fake_group {
    int fail;
    int groups;
    size_t records;
    uint64_t steps[8]; /* each record's step, in order */
} fake_group_t;

static int fake_group_steps(void *ctx, struct optd_session *const *ss, const optd_step_record_t *recs,
                            size_t n, uint64_t *lsns, optd_err_t *err)
{
    (void)ss;
    fake_group_t *f = ctx;
    f->groups++;
    if (f->fail)
        return optd_err_set(err, OPTD_EIO, "disk full");
    for (size_t i = 0; i < n; i++) {
        if (f->records < 8)
            f->steps[f->records] = recs[i].step;
        f->records++;
        lsns[i] = 0;
    }
    return 0;
}

static int fake_group_step(void *ctx, struct optd_session *s, const optd_step_record_t *rec, uint64_t *lsn,
                           optd_err_t *err)
{
    (void)s;
    (void)ctx;
    (void)rec;
    (void)err;
    *lsn = 0;
    return 0;
}

/* Steps of a batch on two sessions, some on the same one: journaled in one
 * group at the steps they lead to, applied in order, each as a single step
 * would be; when the group fails, nothing is applied. */
START_TEST(batch_in_order_one_group)
{
    optd_err_t err;
    fake_group_t f = {0};
    optd_durability_t dur = {.ctx = &f, .step = fake_group_step, .steps = fake_group_steps};
    optd_step_ctx_t ctx = {.dur = &dur};
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT64);
    optd_session_t *a, *b, *ref;
    double p[2] = {1, 2};
    ck_assert_int_eq(optd_session_create("a", &cfg, 2, p, 10, &a, &err), 0);
    ck_assert_int_eq(optd_session_create("b", &cfg, 2, p, 10, &b, &err), 0);
    ck_assert_int_eq(optd_session_create("r", &cfg, 2, p, 10, &ref, &err), 0);
    double g[4][2] = {{0.5, -1}, {1, 1}, {-2, 0.25}, {3, 3}};
    uint64_t one = 1, zero = 0, five = 5;
    double out[4][2];
    optd_batch_step_t bt[5] = {
        {.s = a, .in = {.grad = g[0]}, .params_out = out[0]},
        {.s = b, .in = {.grad = g[1], .expect_step = &zero}},
        {.s = a, .in = {.grad = g[2], .expect_step = &one}, .params_out = out[2]}, /* after bt[0] */
        {.s = a, .in = {.grad = g[3], .expect_step = &one}},  /* stale by then */
        {.s = b, .in = {.grad = g[3], .expect_step = &five}}, /* wrong */
    };
    f.fail = 1;
    optd_session_apply_batch(bt, 5, &ctx);
    ck_assert_int_eq(f.groups, 1);
    ck_assert_int_eq(bt[0].rc, OPTD_EIO);
    ck_assert_int_eq(bt[1].rc, OPTD_EIO);
    ck_assert_int_eq(bt[2].rc, OPTD_EIO);
    ck_assert_int_eq(bt[3].rc, OPTD_ESTEP); /* refused before journaling: its own error */
    ck_assert_uint_eq(bt[3].step, 2);
    ck_assert_int_eq(bt[4].rc, OPTD_ESTEP);
    ck_assert_uint_eq(bt[4].step, 1);
    ck_assert_uint_eq(a->st.step, 0);
    ck_assert_uint_eq(b->st.step, 0);

    f.fail = 0;
    for (int i = 0; i < 5; i++)
        bt[i].rc = 0;
    optd_session_apply_batch(bt, 5, &ctx);
    ck_assert_int_eq(f.groups, 2);
    ck_assert_uint_eq(f.records, 3);
    ck_assert_uint_eq(f.steps[0], 0); /* a */
    ck_assert_uint_eq(f.steps[1], 0); /* b */
    ck_assert_uint_eq(f.steps[2], 1); /* a again */
    ck_assert_int_eq(bt[0].rc, 0);
    ck_assert_uint_eq(bt[0].step, 1);
    ck_assert_int_eq(bt[1].rc, 0);
    ck_assert_int_eq(bt[2].rc, 0);
    ck_assert_uint_eq(bt[2].step, 2);
    ck_assert_int_eq(bt[3].rc, OPTD_ESTEP);
    ck_assert_int_eq(bt[4].rc, OPTD_ESTEP);
    double r0[2], r2[2];
    ck_assert_int_eq(optd_session_step(ref, g[0], NULL, NULL, NULL, r0, &err), 0);
    ck_assert_int_eq(optd_session_step(ref, g[2], NULL, NULL, NULL, r2, &err), 0);
    ck_assert_mem_eq(out[0], r0, sizeof r0);
    ck_assert_mem_eq(out[2], r2, sizeof r2);
    optd_session_release(a);
    optd_session_release(b);
    optd_session_release(ref);
}
END_TEST

START_TEST(test_loss_summary)
{
    optd_loss_summary_t ls = {0};
    ck_assert(!ls.has);
    optd_loss_summary_add(&ls, 1, 3.0);
    ck_assert(ls.has && ls.last == 3.0 && ls.best == 3.0 && ls.best_step == 1);
    optd_loss_summary_add(&ls, 2, 1.0);
    optd_loss_summary_add(&ls, 4, 2.0);
    ck_assert(ls.last == 2.0 && ls.last_step == 4);
    ck_assert(ls.best == 1.0 && ls.best_step == 2);
    optd_loss_summary_add(&ls, 5, 1.0); /* a tie keeps the first */
    ck_assert(ls.best_step == 2 && ls.last_step == 5);
    optd_loss_summary_add(&ls, 6, -1.0);
    ck_assert(ls.best == -1.0 && ls.best_step == 6);
}
END_TEST

/* The deltas persistence keeps beside a snapshot: records since it, what
 * a snapshot covers drops out, records that came during its write stay
 * (from the new journal file on), a whole image starts them afresh, and a
 * clean session has none. */
START_TEST(deltas_beside_the_snapshot)
{
    optd_err_t err;
    optd_session_config_t cfg = adam_cfg(OPTD_FLOAT64);
    optd_session_t *s;
    double p[3] = {1, 2, 3};
    ck_assert_int_eq(optd_session_create("d", &cfg, 3, p, 3, &s, &err), 0);
    optd_session_set_lsn_locked(s, 11);
    optd_session_add_delta(s, 10, 100, false);
    optd_session_add_delta(s, 11, 50, false);
    optd_session_deltas_t d, cov;
    size_t image;
    ck_assert(optd_session_peek_dirty(s, &d, &image));
    ck_assert(d.first_lsn == 10 && d.bytes == 150 && d.images == 0 && d.unjournaled == 0);
    ck_assert_uint_ge(image, 3 * 3 * sizeof(double));

    /* a flush copies it; a record comes in meanwhile (the journal was
     * rotated at LSN 15), and a change no record holds */
    optd_session_image_t img;
    uint64_t version, lsn;
    ck_assert_int_eq(optd_session_copy_if_dirty(s, &img, &version, &lsn, &cov, &err), 1);
    optd_session_image_free(&img);
    ck_assert(lsn == 11 && cov.first_lsn == 10 && cov.bytes == 150);
    optd_session_set_lsn_locked(s, 20);
    optd_session_add_delta(s, 20, 30, false);
    optd_session_add_delta(s, 0, 0, false);
    s->version++;
    optd_session_mark_saved(s, version, lsn, &cov, 15);
    ck_assert(optd_session_peek_dirty(s, &d, &image));
    ck_assert(d.first_lsn == 15 && d.bytes == 30 && d.unjournaled == 1);

    /* a whole image makes every earlier record moot, also against a copy
     * taken before it */
    ck_assert_int_eq(optd_session_copy_if_dirty(s, &img, &version, &lsn, &cov, &err), 1);
    optd_session_image_free(&img);
    optd_session_set_lsn_locked(s, 25);
    optd_session_add_delta(s, 25, 1000, true);
    s->version++;
    optd_session_mark_saved(s, version, lsn, &cov, 22);
    ck_assert(optd_session_peek_dirty(s, &d, &image));
    ck_assert(d.first_lsn == 25 && d.bytes == 1000 && d.images == 1 && d.unjournaled == 0);

    /* saved with nothing after it: clean, no deltas */
    ck_assert_int_eq(optd_session_copy_if_dirty(s, &img, &version, &lsn, &cov, &err), 1);
    optd_session_image_free(&img);
    optd_session_mark_saved(s, version, lsn, &cov, 30);
    ck_assert(!optd_session_peek_dirty(s, &d, &image));
    ck_assert(d.first_lsn == 0 && d.bytes == 0 && d.images == 0);
    optd_session_release(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("session");
    TCase *tc = tcase_create("session");
    tcase_add_test(tc, names);
    tcase_add_test(tc, labels_and_validation);
    tcase_add_test(tc, create_and_step);
    tcase_add_test(tc, test_loss_summary);
    tcase_add_test(tc, history_ring);
    tcase_add_test(tc, image_round_trip);
    tcase_add_test(tc, failed_commit_changes_nothing);
    tcase_add_test(tc, deltas_beside_the_snapshot);
    tcase_add_test(tc, batch_in_order_one_group);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
