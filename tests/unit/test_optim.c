/* test_optim.c: unit tests of the optimizer core (include/optd/optim.h).
 *
 * What the PyTorch trajectories (test_fixtures.c) do not pin down on their
 * own: the table (names, order, defaults), first steps worked out by hand
 * for every optimizer in both dtypes, every validation refusal and its
 * boundaries, refusal of NaN/Inf gradients and of updates that would
 * overflow with nothing changed, the O(1) bound that spares ordinary steps
 * the careful path, lazily
 * created buffers, state copies that continue bit for bit, the plan/apply
 * split over ranges equal to one whole step bit for bit, clipping and
 * maximize, and the out-of-memory paths. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optd/optim.h"
#include "optim/optimizer.h"

/* Huge allocations below must fail with NULL under ASan too, not abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

static const optd_dtype_t dtypes[2] = {OPTD_FLOAT32, OPTD_FLOAT64};

/* ---- helpers ----------------------------------------------------------------- */

static void *vec_new(optd_dtype_t dt, const double *v, size_t n)
{
    void *p = malloc(n * optd_dtype_size(dt));
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++) {
        if (dt == OPTD_FLOAT32)
            ((float *)p)[i] = (float)v[i];
        else
            ((double *)p)[i] = v[i];
    }
    return p;
}

static double vget(optd_dtype_t dt, const void *v, size_t i)
{
    return dt == OPTD_FLOAT32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

static void vset(optd_dtype_t dt, void *v, size_t i, double x)
{
    if (dt == OPTD_FLOAT32)
        ((float *)v)[i] = (float)x;
    else
        ((double *)v)[i] = x;
}

/* Within a few roundings of the dtype. */
static void expect_close(optd_dtype_t dt, double got, double want, const char *what, size_t i)
{
    double tol = dt == OPTD_FLOAT32 ? 1e-6 * fabs(want) + 1e-6 : 1e-12 * fabs(want) + 1e-15;
    ck_assert_msg(fabs(got - want) <= tol, "%s[%zu] (%s): got %.17g, want %.17g", what, i,
                  optd_dtype_name(dt), got, want);
}

/* Runs nsteps updates of kind from p0 with grads g[step][i]; returns the
 * parameters (caller frees) and leaves the state in *st. */
static void *run(optd_optim_kind_t kind, optd_dtype_t dt, const optd_hparams_t *hp,
                 const optd_schedule_t *sched, double mgn, size_t n, const double *p0, int nsteps,
                 const double *g, optd_optim_state_t *st)
{
    optd_err_t err;
    void *p = vec_new(dt, p0, n);
    ck_assert_msg(optd_optim_state_init(st, kind, dt, n, hp, &err) == 0, "%s", err.msg);
    for (int s = 0; s < nsteps; s++) {
        void *gv = vec_new(dt, g + (size_t)s * n, n);
        ck_assert_msg(optd_optim_step(st, hp, sched, mgn, p, gv, NULL, &err) == 0, "%s", err.msg);
        free(gv);
    }
    ck_assert_uint_eq(st->step, (uint64_t)nsteps);
    return p;
}

/* Runs and compares the parameters with want[] in both dtypes. */
static void check_traj(optd_optim_kind_t kind, const optd_hparams_t *hp, size_t n,
                       const double *p0, int nsteps, const double *g, const double *want)
{
    for (int d = 0; d < 2; d++) {
        optd_optim_state_t st;
        void *p = run(kind, dtypes[d], hp, NULL, 0.0, n, p0, nsteps, g, &st);
        for (size_t i = 0; i < n; i++)
            expect_close(dtypes[d], vget(dtypes[d], p, i), want[i], optd_optim_desc(kind)->name, i);
        optd_optim_state_free(&st);
        free(p);
    }
}

static double sgn(double x)
{
    return (x > 0) - (x < 0);
}

/* ---- the table ------------------------------------------------------------------ */

/* Every kind of OPTD_OPTIMIZERS has a complete descriptor: what the
 * compiler cannot check of a designated initializer (a member left out is
 * NULL or 0, silently). */
START_TEST(test_descriptors)
{
#define NAME_(KIND, name) [OPTD_##KIND] = #name,
    static const char *const names[OPTD_OPTIM_COUNT] = {OPTD_OPTIMIZERS(NAME_)};
#undef NAME_
    optd_hparams_t all;
    memset(&all, 0, sizeof all);
    all.momentum = 0.9, all.centered = all.amsgrad = all.nesterov = true;
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        const optd_optimizer_t *o = optd_optimizer((optd_optim_kind_t)k);
        ck_assert_ptr_nonnull(o);
        ck_assert_ptr_eq(&o->desc, optd_optim_desc((optd_optim_kind_t)k));
        ck_assert_int_eq(o->desc.kind, k);
        ck_assert_ptr_nonnull(o->desc.name);
        ck_assert_str_eq(o->desc.name, names[k]);
        ck_assert_uint_gt(o->desc.n_hparams, 0);
        ck_assert_ptr_nonnull(o->desc.hparams);
        ck_assert_msg(o->plan && o->bound, "%s: plan and bound", names[k]);
        ck_assert_msg(o->kernel[OPTD_FLOAT32] && o->kernel[OPTD_FLOAT64], "%s: kernels", names[k]);
        unsigned bufs = o->desc.bufs;
        ck_assert_msg((o->desc.required_bufs & ~bufs) == 0, "%s: required_bufs", names[k]);
        ck_assert_msg(!o->option_bufs || (o->option_bufs(&all) & ~bufs) == 0, "%s: option_bufs",
                      names[k]);
        ck_assert_msg(o->desc.sparse_rows || (!o->rows_options && !o->rows_note), "%s: rows_options",
                      names[k]);
        ck_assert_msg(!o->rows_options == !o->rows_note, "%s: rows_note says what rows_options asks",
                      names[k]);
        ck_assert_msg(!o->momentum_from_grad || (bufs & (1u << OPTD_BUF_MOMENTUM_BUFFER)),
                      "%s: momentum_from_grad", names[k]);
    }
}
END_TEST

START_TEST(test_table)
{
    static const char *names[OPTD_OPTIM_COUNT] = {"sgd",   "adagrad", "rmsprop", "adam",
                                                  "adamw", "adamax",  "nadam",   "radam",
                                                  "adadelta", "lion", "sparse_adam"};
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        const optd_optim_desc_t *d = optd_optim_desc((optd_optim_kind_t)k);
        ck_assert_ptr_nonnull(d);
        ck_assert_str_eq(d->name, names[k]);
        ck_assert_int_eq(d->kind, k);
        ck_assert_str_eq(d->hparams[0].name, "lr");
        ck_assert_str_eq(d->hparams[d->n_hparams - 1].name, "maximize");
        ck_assert(d->has_mu_product == (k == OPTD_NADAM));
        optd_optim_kind_t got;
        ck_assert_int_eq(optd_optim_lookup(names[k], &got, NULL), 0);
        ck_assert_int_eq(got, k);
        for (size_t i = 0; i < d->n_hparams; i++)
            ck_assert_ptr_eq(optd_hparam_find((optd_optim_kind_t)k, d->hparams[i].name),
                             &d->hparams[i]);
        ck_assert_ptr_null(optd_hparam_find((optd_optim_kind_t)k, "nope"));
    }
    ck_assert_ptr_null(optd_optim_desc(OPTD_OPTIM_COUNT));
    optd_err_t err;
    optd_optim_kind_t got;
    ck_assert_int_eq(optd_optim_lookup("adamm", &got, &err), OPTD_EINVAL);
    ck_assert_int_eq(err.code, OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "adamm") && strstr(err.msg, "sgd") && strstr(err.msg, "lion"),
                  "%s", err.msg);

    /* Hyperparameters per API.md's table, in that order. */
    static const char *lists[OPTD_OPTIM_COUNT] = {
        "lr momentum dampening weight_decay nesterov maximize",
        "lr lr_decay weight_decay initial_accumulator_value eps maximize",
        "lr alpha eps weight_decay momentum centered maximize",
        "lr betas eps weight_decay amsgrad maximize",
        "lr betas eps weight_decay amsgrad maximize",
        "lr betas eps weight_decay maximize",
        "lr betas eps weight_decay momentum_decay maximize",
        "lr betas eps weight_decay maximize",
        "lr rho eps weight_decay maximize",
        "lr betas weight_decay maximize",
        "lr betas eps maximize",
    };
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        const optd_optim_desc_t *d = optd_optim_desc((optd_optim_kind_t)k);
        char buf[256] = "";
        for (size_t i = 0; i < d->n_hparams; i++) {
            strcat(buf, i ? " " : "");
            strcat(buf, d->hparams[i].name);
        }
        ck_assert_str_eq(buf, lists[k]);
    }

    /* Buffers under PyTorch's state_dict names, and back. */
    static const char *bufs[OPTD_BUF_COUNT] = {"momentum_buffer", "sum",      "square_avg",
                                               "grad_avg",        "exp_avg",  "exp_avg_sq",
                                               "max_exp_avg_sq",  "exp_inf",  "acc_delta"};
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        ck_assert_str_eq(optd_buf_name((optd_buf_t)b), bufs[b]);
        ck_assert_int_eq(optd_buf_lookup(bufs[b]), b);
    }
    ck_assert_int_eq(optd_buf_lookup("mu_product"), -1);

    optd_dtype_t dt;
    ck_assert_int_eq(optd_dtype_parse("float32", &dt), 0);
    ck_assert_int_eq(dt, OPTD_FLOAT32);
    ck_assert_int_eq(optd_dtype_parse("float64", &dt), 0);
    ck_assert_int_eq(dt, OPTD_FLOAT64);
    ck_assert_int_eq(optd_dtype_parse("float16", &dt), OPTD_EINVAL);
    ck_assert_str_eq(optd_dtype_name(OPTD_FLOAT32), "float32");
    ck_assert_uint_eq(optd_dtype_size(OPTD_FLOAT32), 4);
    ck_assert_uint_eq(optd_dtype_size(OPTD_FLOAT64), 8);
}
END_TEST

START_TEST(test_defaults)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    ck_assert(hp.lr == 1e-3 && hp.momentum == 0 && hp.dampening == 0 && hp.weight_decay == 0 &&
              !hp.nesterov && !hp.maximize && hp.eps == 0 && hp.betas[0] == 0);
    optd_hparams_default(OPTD_ADAGRAD, &hp);
    ck_assert(hp.lr == 1e-2 && hp.lr_decay == 0 && hp.initial_accumulator_value == 0 &&
              hp.eps == 1e-10);
    optd_hparams_default(OPTD_RMSPROP, &hp);
    ck_assert(hp.lr == 1e-2 && hp.alpha == 0.99 && hp.eps == 1e-8 && hp.momentum == 0 &&
              !hp.centered);
    optd_hparams_default(OPTD_ADAM, &hp);
    ck_assert(hp.lr == 1e-3 && hp.betas[0] == 0.9 && hp.betas[1] == 0.999 && hp.eps == 1e-8 &&
              hp.weight_decay == 0 && !hp.amsgrad);
    optd_hparams_default(OPTD_ADAMW, &hp);
    ck_assert(hp.lr == 1e-3 && hp.weight_decay == 1e-2 && hp.betas[1] == 0.999);
    optd_hparams_default(OPTD_ADAMAX, &hp);
    ck_assert(hp.lr == 2e-3 && hp.betas[0] == 0.9 && hp.eps == 1e-8);
    optd_hparams_default(OPTD_NADAM, &hp);
    ck_assert(hp.lr == 2e-3 && hp.momentum_decay == 4e-3 && hp.betas[1] == 0.999);
    optd_hparams_default(OPTD_RADAM, &hp);
    ck_assert(hp.lr == 1e-3 && hp.eps == 1e-8);
    optd_hparams_default(OPTD_ADADELTA, &hp);
    ck_assert(hp.lr == 1.0 && hp.rho == 0.9 && hp.eps == 1e-6);
    optd_hparams_default(OPTD_LION, &hp);
    ck_assert(hp.lr == 1e-4 && hp.betas[0] == 0.9 && hp.betas[1] == 0.99 && hp.eps == 0);
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        optd_hparams_default((optd_optim_kind_t)k, &hp);
        optd_err_t err;
        ck_assert_msg(optd_hparams_validate((optd_optim_kind_t)k, &hp, &err) == 0, "%s", err.msg);
    }
}
END_TEST

/* ---- hand-computed first steps ---------------------------------------------------- */

START_TEST(test_sgd_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    hp.lr = 0.1;
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, 0.25, 0.5, 0.25};
    double want[2] = {1.0 - 0.05, -2.0 - 0.025};
    check_traj(OPTD_SGD, &hp, 2, p0, 1, g, want);

    /* momentum: buf = g, then 0.9*g + g */
    hp.momentum = 0.9;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * g[i] - 0.1 * 1.9 * g[i];
    check_traj(OPTD_SGD, &hp, 2, p0, 2, g, want);

    /* dampening 0.5: buf = g, then 0.9*g + 0.5*g */
    hp.dampening = 0.5;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * g[i] - 0.1 * 1.4 * g[i];
    check_traj(OPTD_SGD, &hp, 2, p0, 2, g, want);

    /* nesterov: d = g + 0.9*buf; buf = g then 1.9 g */
    hp.dampening = 0;
    hp.nesterov = true;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * 1.9 * g[i] - 0.1 * (g[i] + 0.9 * 1.9 * g[i]);
    check_traj(OPTD_SGD, &hp, 2, p0, 2, g, want);

    /* weight decay and maximize, no momentum */
    optd_hparams_default(OPTD_SGD, &hp);
    hp.lr = 0.1;
    hp.weight_decay = 0.5;
    hp.maximize = true;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * (-g[i] + 0.5 * p0[i]);
    check_traj(OPTD_SGD, &hp, 2, p0, 1, g, want);
}
END_TEST

START_TEST(test_adagrad_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAGRAD, &hp);
    hp.lr = 0.1;
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, -0.25, 0.5, -0.25};
    double want[2];
    /* sum = g^2 then 2 g^2: p -= 0.1 g/|g| then 0.1 g/(sqrt2 |g|) */
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * g[i] / (fabs(g[i]) + 1e-10) -
                  0.1 * g[i] / (sqrt(2) * fabs(g[i]) + 1e-10);
    check_traj(OPTD_ADAGRAD, &hp, 2, p0, 2, g, want);

    /* lr_decay 0.5: clr(2) = 0.1/1.5; initial accumulator 1 */
    hp.lr_decay = 0.5;
    hp.initial_accumulator_value = 1.0;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.1 * g[i] / (sqrt(1 + g[i] * g[i]) + 1e-10) -
                  0.1 / 1.5 * g[i] / (sqrt(1 + 2 * g[i] * g[i]) + 1e-10);
    check_traj(OPTD_ADAGRAD, &hp, 2, p0, 2, g, want);
}
END_TEST

START_TEST(test_rmsprop_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_RMSPROP, &hp);
    hp.lr = 0.01;
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, -0.25, 0.5, -0.25};
    double want[2];
    /* sq = 0.01 g^2: p -= lr g/(0.1|g| + eps) */
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.01 * g[i] / (0.1 * fabs(g[i]) + 1e-8);
    check_traj(OPTD_RMSPROP, &hp, 2, p0, 1, g, want);

    /* centered: sq - ga^2 = 0.01 g^2 - 0.0001 g^2 */
    hp.centered = true;
    for (int i = 0; i < 2; i++)
        want[i] = p0[i] - 0.01 * g[i] / (sqrt(0.0099) * fabs(g[i]) + 1e-8);
    check_traj(OPTD_RMSPROP, &hp, 2, p0, 1, g, want);

    /* momentum 0.9 over two steps: buf = g/a1, then 0.9 buf + g/a2 */
    hp.centered = false;
    hp.momentum = 0.9;
    for (int i = 0; i < 2; i++) {
        double a1 = 0.1 * fabs(g[i]) + 1e-8, a2 = sqrt(0.0199) * fabs(g[i]) + 1e-8;
        double b1 = g[i] / a1, b2 = 0.9 * b1 + g[i] / a2;
        want[i] = p0[i] - 0.01 * b1 - 0.01 * b2;
    }
    check_traj(OPTD_RMSPROP, &hp, 2, p0, 2, g, want);
}
END_TEST

START_TEST(test_adam_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    hp.lr = 0.01;
    /* A constant gradient: m/bc1 = g and v/bc2 = g^2 at every step, so each
     * step moves by lr*g/(|g| + eps). */
    const double p0[3] = {1.0, -2.0, 0.5}, g[3 * 3] = {0.5, -0.25, 2.0, 0.5, -0.25, 2.0,
                                                       0.5, -0.25, 2.0};
    double want[3];
    for (int i = 0; i < 3; i++)
        want[i] = p0[i] - 3 * 0.01 * g[i] / (fabs(g[i]) + 1e-8);
    check_traj(OPTD_ADAM, &hp, 3, p0, 3, g, want);

    /* adamw: p *= 1 - lr*wd before the same move */
    optd_hparams_default(OPTD_ADAMW, &hp);
    hp.lr = 0.01;
    hp.weight_decay = 0.5;
    for (int i = 0; i < 3; i++) {
        double p = p0[i];
        for (int s = 0; s < 3; s++)
            p = p * (1 - 0.005) - 0.01 * g[i] / (fabs(g[i]) + 1e-8);
        want[i] = p;
    }
    check_traj(OPTD_ADAMW, &hp, 3, p0, 3, g, want);

    /* adam with coupled weight decay, one step: g' = g + wd p */
    optd_hparams_default(OPTD_ADAM, &hp);
    hp.lr = 0.01;
    hp.weight_decay = 0.5;
    for (int i = 0; i < 3; i++) {
        double gg = g[i] + 0.5 * p0[i];
        want[i] = p0[i] - 0.01 * gg / (fabs(gg) + 1e-8);
    }
    check_traj(OPTD_ADAM, &hp, 3, p0, 1, g, want);

    /* amsgrad: g = 1 then 0: v2 = 0.999e-3 < v1 = 1e-3, the max keeps v1 */
    optd_hparams_default(OPTD_ADAM, &hp);
    hp.lr = 0.01;
    hp.amsgrad = true;
    const double p1[1] = {1.0}, ga[2] = {1.0, 0.0};
    double w1 = 1.0 - 0.01 * 1.0 / (1.0 + 1e-8);
    double m2 = 0.09, bc1 = 1 - 0.81, bc2 = 1 - 0.999 * 0.999;
    double den = sqrt(1e-3) / sqrt(bc2) + 1e-8;
    w1 -= 0.01 / bc1 * m2 / den;
    check_traj(OPTD_ADAM, &hp, 1, p1, 2, ga, &w1);
    /* without amsgrad the denominator uses v2 */
    hp.amsgrad = false;
    double w2 = 1.0 - 0.01 * 1.0 / (1.0 + 1e-8);
    w2 -= 0.01 / bc1 * m2 / (sqrt(0.999e-3) / sqrt(bc2) + 1e-8);
    check_traj(OPTD_ADAM, &hp, 1, p1, 2, ga, &w2);
}
END_TEST

START_TEST(test_adamax_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAMAX, &hp);
    hp.lr = 0.01;
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, -0.25, 0.25, -0.5};
    double want[2];
    for (int i = 0; i < 2; i++) {
        double p = p0[i] - 0.01 * (0.1 * g[i] / 0.1) / (fabs(g[i]) + 1e-8);
        double m = 0.09 * g[i] + 0.1 * g[2 + i];
        double u = fmax(0.999 * (fabs(g[i]) + 1e-8), fabs(g[2 + i]) + 1e-8);
        want[i] = p - 0.01 / (1 - 0.81) * m / u;
    }
    check_traj(OPTD_ADAMAX, &hp, 2, p0, 2, g, want);
}
END_TEST

START_TEST(test_nadam_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_NADAM, &hp);
    hp.lr = 0.01;
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, -0.25, 0.5, -0.25};
    double mu1 = 0.9 * (1 - 0.5 * pow(0.96, 0.004)), mu2 = 0.9 * (1 - 0.5 * pow(0.96, 0.008));
    double mu3 = 0.9 * (1 - 0.5 * pow(0.96, 0.012));
    double want[2];
    for (int i = 0; i < 2; i++) {
        /* step 1: m = 0.1 g, v/bc2 = g^2 */
        double den = fabs(g[i]) + 1e-8;
        double p = p0[i] - 0.01 * (1 - mu1) / (1 - mu1) * g[i] / den -
                   0.01 * mu2 / (1 - mu1 * mu2) * 0.1 * g[i] / den;
        /* step 2: m = 0.19 g, v/bc2 = g^2, mu_product = mu1 mu2 */
        p = p - 0.01 * (1 - mu2) / (1 - mu1 * mu2) * g[i] / den -
            0.01 * mu3 / (1 - mu1 * mu2 * mu3) * 0.19 * g[i] / den;
        want[i] = p;
    }
    check_traj(OPTD_NADAM, &hp, 2, p0, 2, g, want);
    for (int d = 0; d < 2; d++) {
        optd_optim_state_t st;
        void *p = run(OPTD_NADAM, dtypes[d], &hp, NULL, 0, 2, p0, 2, g, &st);
        expect_close(dtypes[d], st.mu_product, mu1 * mu2, "mu_product", 0);
        optd_optim_state_free(&st);
        free(p);
    }
}
END_TEST

START_TEST(test_radam_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_RADAM, &hp);
    hp.lr = 0.01;
    enum { S = 7 };
    const double p0[2] = {1.0, -2.0};
    double g[S * 2];
    for (int s = 0; s < S; s++)
        g[2 * s] = 0.5, g[2 * s + 1] = -0.25;
    /* Constant g: m/bc1 = g.  Steps with rho_t <= 5 move by lr*g; later ones
     * by lr*g*rect*sqrt(bc2)/(sqrt(v) + eps) with v = bc2 g^2. */
    double want[2] = {p0[0], p0[1]};
    int rectified = 0;
    for (int t = 1; t <= S; t++) {
        double bc2 = 1 - pow(0.999, t), rho_inf = 2 / (1 - 0.999) - 1;
        double rho_t = rho_inf - 2 * t * pow(0.999, t) / bc2;
        for (int i = 0; i < 2; i++) {
            if (rho_t > 5) {
                double rect = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                                   ((rho_inf - 4) * (rho_inf - 2) * rho_t));
                want[i] -= 0.01 * g[i] * rect * sqrt(bc2) / (sqrt(bc2) * fabs(g[i]) + 1e-8);
            } else {
                want[i] -= 0.01 * g[i];
            }
        }
        rectified += rho_t > 5;
    }
    ck_assert_msg(rectified > 0 && rectified < S, "the test must cover both branches");
    check_traj(OPTD_RADAM, &hp, 2, p0, S, g, want);
}
END_TEST

START_TEST(test_adadelta_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADADELTA, &hp);
    const double p0[2] = {1.0, -2.0}, g[2 * 2] = {0.5, -0.25, 0.25, 0.5};
    double want[2];
    for (int i = 0; i < 2; i++) {
        double sq = 0.1 * g[i] * g[i];
        double d1 = sqrt(0 + 1e-6) / sqrt(sq + 1e-6) * g[i];
        double acc = 0.1 * d1 * d1;
        sq = 0.9 * sq + 0.1 * g[2 + i] * g[2 + i];
        double d2 = sqrt(acc + 1e-6) / sqrt(sq + 1e-6) * g[2 + i];
        want[i] = p0[i] - d1 - d2;
    }
    check_traj(OPTD_ADADELTA, &hp, 2, p0, 2, g, want);
}
END_TEST

START_TEST(test_lion_steps)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_LION, &hp);
    hp.lr = 0.01;
    hp.weight_decay = 0.5;
    /* third element: g = 0 at step 1 (sign 0: only the decay moves it) */
    const double p0[3] = {1.0, -2.0, 0.5}, g[2 * 3] = {0.5, -0.25, 0.0, -0.01, -0.25, 1.0};
    double want[3];
    for (int i = 0; i < 3; i++) {
        double m = 0, p = p0[i];
        for (int s = 0; s < 2; s++) {
            double c = 0.9 * m + 0.1 * g[3 * s + i];
            p = p * (1 - 0.005) - 0.01 * sgn(c);
            m = 0.99 * m + 0.01 * g[3 * s + i];
        }
        want[i] = p;
    }
    /* step 2, element 0: c = 0.9*0.005 - 0.001 > 0 although g < 0 */
    ck_assert(0.9 * 0.005 + 0.1 * -0.01 > 0);
    check_traj(OPTD_LION, &hp, 3, p0, 2, g, want);
}
END_TEST

/* Clipping by global norm (pre-clipping norm reported), then maximize. */
START_TEST(test_clip_maximize)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    hp.lr = 1.0;
    const double p0[2] = {0.0, 0.0}, g[2] = {3.0, 4.0};
    for (int d = 0; d < 2; d++) {
        optd_dtype_t dt = dtypes[d];
        for (int mx = 0; mx < 2; mx++) {
            hp.maximize = mx;
            for (int c = 0; c < 3; c++) {
                double mgn = c == 0 ? 0.0 : c == 1 ? 1.0 : 10.0;
                optd_optim_state_t st;
                optd_err_t err;
                void *p = vec_new(dt, p0, 2), *gv = vec_new(dt, g, 2);
                ck_assert_int_eq(optd_optim_state_init(&st, OPTD_SGD, dt, 2, &hp, &err), 0);
                optd_step_info_t info;
                ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, mgn, p, gv, &info, &err), 0);
                ck_assert(info.grad_norm == 5.0 && info.lr == 1.0);
                double coef = mgn > 0 ? fmin(1.0, mgn / (5.0 + 1e-6)) : 1.0;
                double sign = mx ? 1.0 : -1.0;
                for (int i = 0; i < 2; i++) {
                    expect_close(dt, vget(dt, p, i), sign * coef * g[i], "clipped", (size_t)i);
                    ck_assert(vget(dt, gv, i) == g[i]); /* grad untouched */
                }
                optd_optim_state_free(&st);
                free(p);
                free(gv);
            }
        }
    }
}
END_TEST

/* ---- validation ------------------------------------------------------------------ */

static void expect_refused(optd_optim_kind_t k, const optd_hparams_t *hp, const char *needle)
{
    optd_err_t err = {0, ""};
    ck_assert_msg(optd_hparams_validate(k, hp, &err) == OPTD_EINVAL, "%s: accepted (%s)",
                  optd_optim_desc(k)->name, needle);
    ck_assert_int_eq(err.code, OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"",
                  optd_optim_desc(k)->name, err.msg, needle);
}

static void expect_accepted(optd_optim_kind_t k, const optd_hparams_t *hp)
{
    optd_err_t err = {0, ""};
    ck_assert_msg(optd_hparams_validate(k, hp, &err) == 0, "%s: refused: %s",
                  optd_optim_desc(k)->name, err.msg);
}

/* Every real field of every optimizer: below 0 and non-finite refused with
 * the field's name, 0 accepted (rho, betas and dampening have their own). */
START_TEST(test_validate_reals)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        const optd_optim_desc_t *d = optd_optim_desc((optd_optim_kind_t)k);
        for (size_t i = 0; i < d->n_hparams; i++) {
            const optd_hparam_desc_t *h = &d->hparams[i];
            if (h->type != OPTD_HP_REAL)
                continue;
            optd_hparams_t hp;
            optd_hparams_default(d->kind, &hp);
            double *f = (double *)((char *)&hp + h->offset);
            const double bad[] = {NAN, INFINITY, -INFINITY};
            for (size_t j = 0; j < 3; j++) {
                *f = bad[j];
                expect_refused(d->kind, &hp, h->name);
            }
            if (strcmp(h->name, "dampening") == 0)
                continue;
            *f = -1e-300;
            expect_refused(d->kind, &hp, h->name);
            *f = 0.0;
            expect_accepted(d->kind, &hp);
            if (strcmp(h->name, "rho") != 0) {
                *f = 1e6;
                expect_accepted(d->kind, &hp);
            }
        }
    }
    /* The message names the range. */
    optd_hparams_t hp;
    optd_err_t err;
    optd_hparams_default(OPTD_ADAM, &hp);
    hp.lr = -1;
    ck_assert_int_eq(optd_hparams_validate(OPTD_ADAM, &hp, &err), OPTD_EINVAL);
    ck_assert_str_eq(err.msg, "lr must be a finite number >= 0, got -1");
}
END_TEST

START_TEST(test_validate_betas_rho)
{
    static const optd_optim_kind_t with_betas[] = {OPTD_ADAM,  OPTD_ADAMW, OPTD_ADAMAX,
                                                   OPTD_NADAM, OPTD_RADAM, OPTD_LION};
    for (size_t j = 0; j < sizeof with_betas / sizeof with_betas[0]; j++) {
        optd_optim_kind_t k = with_betas[j];
        for (int b = 0; b < 2; b++) {
            optd_hparams_t hp;
            optd_hparams_default(k, &hp);
            const char *name = b ? "betas[1]" : "betas[0]";
            hp.betas[b] = 1.0;
            expect_refused(k, &hp, name);
            hp.betas[b] = -0.1;
            expect_refused(k, &hp, name);
            hp.betas[b] = NAN;
            expect_refused(k, &hp, name);
            hp.betas[b] = 0.0;
            expect_accepted(k, &hp);
            hp.betas[b] = nextafter(1.0, 0.0);
            expect_accepted(k, &hp);
        }
    }
    optd_hparams_t hp;
    optd_err_t err;
    optd_hparams_default(OPTD_ADAM, &hp);
    hp.betas[1] = 1;
    ck_assert_int_eq(optd_hparams_validate(OPTD_ADAM, &hp, &err), OPTD_EINVAL);
    ck_assert_str_eq(err.msg, "betas[1] must be in [0, 1), got 1");

    optd_hparams_default(OPTD_ADADELTA, &hp);
    hp.rho = 1.0;
    expect_accepted(OPTD_ADADELTA, &hp);
    hp.rho = 0.0;
    expect_accepted(OPTD_ADADELTA, &hp);
    hp.rho = 1.5;
    expect_refused(OPTD_ADADELTA, &hp, "rho must be in [0, 1], got 1.5");
    hp.rho = -0.5;
    expect_refused(OPTD_ADADELTA, &hp, "rho");

    /* Fields an optimizer does not use are not its business. */
    optd_hparams_default(OPTD_SGD, &hp);
    hp.betas[0] = 7;
    hp.rho = -3;
    hp.eps = NAN;
    expect_accepted(OPTD_SGD, &hp);
}
END_TEST

START_TEST(test_validate_nesterov)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_SGD, &hp);
    hp.nesterov = true;
    expect_refused(OPTD_SGD, &hp, "nesterov"); /* momentum 0 */
    hp.momentum = 0.9;
    expect_accepted(OPTD_SGD, &hp);
    hp.dampening = 0.1;
    expect_refused(OPTD_SGD, &hp, "nesterov");
    hp.nesterov = false;
    expect_accepted(OPTD_SGD, &hp); /* dampening without nesterov is fine */
    hp.dampening = -0.5;            /* PyTorch does not bound dampening */
    expect_accepted(OPTD_SGD, &hp);

    optd_err_t err;
    ck_assert_int_eq(optd_clip_validate(0.0, &err), 0);
    ck_assert_int_eq(optd_clip_validate(2.5, &err), 0);
    ck_assert_int_eq(optd_clip_validate(-1.0, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "max_grad_norm"), "%s", err.msg);
    ck_assert_int_eq(optd_clip_validate(NAN, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_clip_validate(INFINITY, &err), OPTD_EINVAL);
}
END_TEST

/* ---- state ---------------------------------------------------------------------- */

/* Hyperparameters that switch every option (and buffer) of kind on. */
static void all_options(optd_optim_kind_t k, optd_hparams_t *hp)
{
    optd_hparams_default(k, hp);
    hp->weight_decay = 0.01;
    switch (k) {
    case OPTD_SGD: hp->momentum = 0.9, hp->nesterov = true; break;
    case OPTD_RMSPROP: hp->momentum = 0.5, hp->centered = true; break;
    case OPTD_ADAM:
    case OPTD_ADAMW: hp->amsgrad = true; break;
    case OPTD_ADAGRAD: hp->lr_decay = 0.01, hp->initial_accumulator_value = 0.1; break;
    default: break;
    }
}

START_TEST(test_state_init)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            const optd_optim_desc_t *desc = optd_optim_desc((optd_optim_kind_t)k);
            optd_hparams_t hp;
            optd_hparams_default(desc->kind, &hp);
            hp.initial_accumulator_value = 0.25;
            optd_optim_state_t st;
            optd_err_t err;
            ck_assert_int_eq(optd_optim_state_init(&st, desc->kind, dtypes[d], 5, &hp, &err), 0);
            ck_assert_uint_eq(st.step, 0);
            ck_assert(st.mu_product == 1.0);
            size_t held = 0;
            for (int b = 0; b < OPTD_BUF_COUNT; b++) {
                if (!st.buf[b])
                    continue;
                held++;
                ck_assert_msg(desc->bufs & (1u << b), "%s keeps %s", desc->name,
                              optd_buf_name((optd_buf_t)b));
                for (size_t i = 0; i < 5; i++)
                    ck_assert(vget(dtypes[d], st.buf[b], i) ==
                              (b == OPTD_BUF_SUM ? 0.25 : 0.0));
            }
            ck_assert_uint_eq(optd_optim_state_bytes(&st), held * 5 * optd_dtype_size(dtypes[d]));
            /* options off: nothing optional; sgd keeps nothing at all */
            ck_assert(k != OPTD_SGD || held == 0);
            ck_assert_ptr_null(st.buf[OPTD_BUF_MAX_EXP_AVG_SQ]);
            ck_assert_ptr_null(st.buf[OPTD_BUF_GRAD_AVG]);
            optd_optim_state_free(&st);
            optd_optim_state_free(&st); /* twice is fine */
        }
    }
    optd_optim_state_t st;
    optd_err_t err;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT32, 0, NULL, &err),
                     OPTD_EINVAL);
}
END_TEST

/* Buffers an option turns on appear at the first step using it: sgd's
 * momentum_buffer as that step's g, the others starting from 0. */
START_TEST(test_lazy_buffers)
{
    for (int d = 0; d < 2; d++) {
        optd_dtype_t dt = dtypes[d];
        optd_err_t err;
        const double p0[2] = {1.0, -1.0}, g[2] = {0.5, -0.25};
        void *gv = vec_new(dt, g, 2);

        /* sgd: no buffer without momentum; switched on later, buf = g */
        optd_hparams_t hp;
        optd_hparams_default(OPTD_SGD, &hp);
        optd_optim_state_t st;
        void *p = run(OPTD_SGD, dt, &hp, NULL, 0, 2, p0, 1, g, &st);
        ck_assert_ptr_null(st.buf[OPTD_BUF_MOMENTUM_BUFFER]);
        hp.momentum = 0.9;
        hp.dampening = 0.5;
        ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err), 0);
        ck_assert_ptr_nonnull(st.buf[OPTD_BUF_MOMENTUM_BUFFER]);
        for (int i = 0; i < 2; i++)
            ck_assert(vget(dt, st.buf[OPTD_BUF_MOMENTUM_BUFFER], (size_t)i) == vget(dt, gv, (size_t)i));
        /* momentum off again: the buffer is kept, untouched */
        hp.momentum = 0;
        ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err), 0);
        ck_assert(vget(dt, st.buf[OPTD_BUF_MOMENTUM_BUFFER], 0) == vget(dt, gv, 0));
        optd_optim_state_free(&st);
        free(p);

        /* rmsprop: grad_avg from 0 when centered is switched on */
        optd_hparams_default(OPTD_RMSPROP, &hp);
        p = run(OPTD_RMSPROP, dt, &hp, NULL, 0, 2, p0, 1, g, &st);
        ck_assert_ptr_null(st.buf[OPTD_BUF_GRAD_AVG]);
        ck_assert_ptr_null(st.buf[OPTD_BUF_MOMENTUM_BUFFER]);
        hp.centered = true;
        hp.momentum = 0.5;
        ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err), 0);
        for (int i = 0; i < 2; i++) {
            expect_close(dt, vget(dt, st.buf[OPTD_BUF_GRAD_AVG], (size_t)i), 0.01 * g[i],
                         "grad_avg", (size_t)i);
            double sq = vget(dt, st.buf[OPTD_BUF_SQUARE_AVG], (size_t)i);
            double avg = sqrt(sq - 1e-4 * g[i] * g[i]) + 1e-8;
            expect_close(dt, vget(dt, st.buf[OPTD_BUF_MOMENTUM_BUFFER], (size_t)i), g[i] / avg,
                         "momentum_buffer", (size_t)i);
        }
        optd_optim_state_free(&st);
        free(p);

        /* adam: max_exp_avg_sq from 0 when amsgrad is switched on */
        optd_hparams_default(OPTD_ADAM, &hp);
        p = run(OPTD_ADAM, dt, &hp, NULL, 0, 2, p0, 1, g, &st);
        ck_assert_ptr_null(st.buf[OPTD_BUF_MAX_EXP_AVG_SQ]);
        hp.amsgrad = true;
        ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err), 0);
        for (int i = 0; i < 2; i++)
            ck_assert(vget(dt, st.buf[OPTD_BUF_MAX_EXP_AVG_SQ], (size_t)i) ==
                      vget(dt, st.buf[OPTD_BUF_EXP_AVG_SQ], (size_t)i));
        optd_optim_state_free(&st);
        free(p);
        free(gv);
    }
}
END_TEST

/* A snapshot of everything a step may change. */
typedef struct snap {
    optd_optim_state_t st;
    void *p;
} snap_t;

static void snap_take(snap_t *s, const optd_optim_state_t *st, const void *p)
{
    ck_assert_int_eq(optd_optim_state_copy(&s->st, st, NULL), 0);
    size_t bytes = st->size * optd_dtype_size(st->dtype);
    s->p = malloc(bytes);
    ck_assert_ptr_nonnull(s->p);
    memcpy(s->p, p, bytes);
}

static void snap_expect_same(const snap_t *s, const optd_optim_state_t *st, const void *p,
                             const char *what)
{
    size_t bytes = st->size * optd_dtype_size(st->dtype);
    ck_assert_msg(st->step == s->st.step, "%s: step %llu vs %llu", what,
                  (unsigned long long)st->step, (unsigned long long)s->st.step);
    ck_assert_msg(memcmp(&st->mu_product, &s->st.mu_product, sizeof(double)) == 0, "%s: mu_product",
                  what);
    ck_assert_msg(memcmp(p, s->p, bytes) == 0, "%s: params differ", what);
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        ck_assert_msg((st->buf[b] == NULL) == (s->st.buf[b] == NULL), "%s: %s presence", what,
                      optd_buf_name((optd_buf_t)b));
        if (st->buf[b])
            ck_assert_msg(memcmp(st->buf[b], s->st.buf[b], bytes) == 0, "%s: %s differs", what,
                          optd_buf_name((optd_buf_t)b));
    }
}

static void snap_free(snap_t *s)
{
    optd_optim_state_free(&s->st);
    free(s->p);
}

#define NBIG 83 /* not a multiple of any vector width or lane count */

static void fill_grad(double *g, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        g[i] = sin((double)(i + 1) * 0.7 + seed) * (1 + (double)(i % 5));
}

/* NaN or Inf anywhere in the gradient: refused, nothing changed, also not a
 * buffer that would have been created. */
START_TEST(test_nonfinite)
{
    const double bad[3] = {NAN, INFINITY, -INFINITY};
    const size_t where[3] = {0, 40, NBIG - 1};
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            optd_hparams_t hp;
            optd_hparams_default((optd_optim_kind_t)k, &hp);
            double p0[NBIG], g[2 * NBIG];
            fill_grad(p0, NBIG, 7);
            fill_grad(g, NBIG, 1);
            fill_grad(g + NBIG, NBIG, 2);
            optd_optim_state_t st;
            void *p = run((optd_optim_kind_t)k, dt, &hp, NULL, 0, NBIG, p0, 2, g, &st);
            all_options((optd_optim_kind_t)k, &hp); /* would create buffers */
            snap_t s;
            snap_take(&s, &st, p);
            for (int b = 0; b < 3; b++)
                for (int w = 0; w < 3; w++) {
                    void *gv = vec_new(dt, g, NBIG);
                    vset(dt, gv, where[w], bad[b]);
                    optd_err_t err;
                    optd_step_info_t info = {-1, -1};
                    ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 1.0, p, gv, &info, &err),
                                     OPTD_ENONFINITE);
                    ck_assert_int_eq(err.code, OPTD_ENONFINITE);
                    ck_assert(info.lr == -1); /* info untouched */
                    snap_expect_same(&s, &st, p, optd_optim_desc((optd_optim_kind_t)k)->name);
                    bool fin = true;
                    (void)optd_grad_sumsq(dt, gv, 0, NBIG, &fin);
                    ck_assert(!fin);
                    ck_assert(!optd_all_finite(dt, gv, NBIG));
                    vset(dt, gv, where[w], 1.0);
                    ck_assert(optd_all_finite(dt, gv, NBIG));
                    free(gv);
                }
            snap_free(&s);
            optd_optim_state_free(&st);
            free(p);
        }
    }
    /* Finite values whose squares overflow are finite. */
    double big[3] = {1e200, -1e300, 1.0};
    bool fin = true;
    double ss = optd_grad_sumsq(OPTD_FLOAT64, big, 0, 3, &fin);
    ck_assert(fin && isinf(ss));
    ck_assert(optd_all_finite(OPTD_FLOAT64, big, 3));
}
END_TEST

/* The dtype's largest finite value. */
static double dtype_max(optd_dtype_t dt)
{
    return dt == OPTD_FLOAT32 ? (double)FLT_MAX : DBL_MAX;
}

/* An update that would overflow: refused with OPTD_ENONFINITE naming the
 * index it would spoil, nothing changed (params, every buffer, the step, no
 * buffer created), and the next good step gives the same bits as a twin
 * that never saw the refused one.  Every optimizer, both dtypes, every
 * option on: parameter 5, at 0.99 of the dtype's largest value, has had a
 * gradient of -1 all along, and the update pushes it up by about an lr of
 * 5% of that largest value (adadelta, whose steps are ~3e-3 lr: all of
 * it, from 0.9995); the other gradients are 0 in that step. */
START_TEST(test_nonfinite_result)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            const char *name = optd_optim_desc((optd_optim_kind_t)k)->name;
            optd_hparams_t hp;
            optd_hparams_default((optd_optim_kind_t)k, &hp);
            double p0[NBIG], g[3 * NBIG];
            fill_grad(p0, NBIG, 7);
            for (int s = 0; s < 3; s++) {
                fill_grad(g + s * NBIG, NBIG, 1 + s);
                g[s * NBIG + 5] = -1.0;
            }
            optd_optim_state_t st, twin;
            void *p = run((optd_optim_kind_t)k, dt, &hp, NULL, 0, NBIG, p0, 2, g, &st);
            void *pt = run((optd_optim_kind_t)k, dt, &hp, NULL, 0, NBIG, p0, 2, g, &twin);
            optd_hparams_t big = hp;
            all_options((optd_optim_kind_t)k, &big);
            big.lr = (k == OPTD_ADADELTA ? 1 : 0.05) * dtype_max(dt);
            big.weight_decay = 0;
            double keep = vget(dt, p, 5);
            double at = k == OPTD_ADADELTA ? 0.9995 : 0.99;
            vset(dt, p, 5, at * dtype_max(dt));
            vset(dt, pt, 5, at * dtype_max(dt));
            optd_optim_forget_bounds(&st);
            optd_optim_forget_bounds(&twin);
            snap_t s;
            snap_take(&s, &st, p);
            double zero[NBIG] = {0};
            zero[5] = -1.0;
            void *gv = vec_new(dt, zero, NBIG);
            optd_err_t err = {0};
            optd_step_info_t info = {-1, -1};
            ck_assert_msg(optd_optim_step(&st, &big, NULL, 0, p, gv, &info, &err) == OPTD_ENONFINITE,
                          "%s %s: not refused", name, optd_dtype_name(dt));
            ck_assert_msg(strstr(err.msg, "[5]") != NULL, "%s %s: %s", name, optd_dtype_name(dt), err.msg);
            ck_assert(info.lr == -1);
            snap_expect_same(&s, &st, p, name);
            /* The same good step on both: the same bits. */
            vset(dt, p, 5, keep);
            vset(dt, pt, 5, keep);
            ck_assert_msg(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err) == 0, "%s", err.msg);
            ck_assert_int_eq(optd_optim_step(&twin, &hp, NULL, 0, pt, gv, NULL, &err), 0);
            snap_t t;
            snap_take(&t, &twin, pt);
            snap_expect_same(&t, &st, p, name);
            snap_free(&t);
            snap_free(&s);
            free(gv);
            optd_optim_state_free(&st);
            optd_optim_state_free(&twin);
            free(p);
            free(pt);
        }
    }
}
END_TEST

/* Float32 adam with a gradient of 1e30: exp_avg_sq overflows (1e60) while
 * the parameters would not; eps 0 on a zero gradient is 0/0.  Both refused,
 * naming the buffer and NaN or infinity. */
START_TEST(test_nonfinite_state)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    optd_optim_state_t st;
    optd_err_t err;
    float p[3] = {1, 2, 3}, g[3] = {0.5f, 1e30f, 0.25f};
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT32, 3, &hp, &err), 0);
    ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, g, NULL, &err), OPTD_ENONFINITE);
    ck_assert_msg(strstr(err.msg, "exp_avg_sq[1] infinite") != NULL, "%s", err.msg);
    ck_assert_uint_eq(st.step, 0);
    ck_assert(p[1] == 2.0f && ((float *)st.buf[OPTD_BUF_EXP_AVG_SQ])[1] == 0.0f &&
              ((float *)st.buf[OPTD_BUF_EXP_AVG])[1] == 0.0f);
    /* Clipping makes the same gradient fine. */
    ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 1.0, p, g, NULL, &err), 0);
    ck_assert_uint_eq(st.step, 1);
    optd_optim_state_free(&st);

    hp.eps = 0;
    double pd[2] = {1, 2}, gd[2] = {0, 1};
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT64, 2, &hp, &err), 0);
    ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, pd, gd, NULL, &err), OPTD_ENONFINITE);
    ck_assert_msg(strstr(err.msg, "params[0] NaN") != NULL, "%s", err.msg);
    ck_assert(pd[0] == 1 && pd[1] == 2 && st.step == 0);
    optd_optim_state_free(&st);

    /* A schedule whose lr overflows, and a float64 gradient whose norm does. */
    optd_hparams_default(OPTD_SGD, &hp);
    optd_schedule_t sched = {.type = OPTD_SCHED_EXPONENTIAL, .gamma = 1e300};
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_SGD, OPTD_FLOAT64, 2, &hp, &err), 0);
    gd[0] = 1;
    ck_assert_int_eq(optd_optim_step(&st, &hp, &sched, 0, pd, gd, NULL, &err), 0);
    ck_assert_int_eq(optd_optim_step(&st, &hp, &sched, 0, pd, gd, NULL, &err), 0);
    ck_assert_int_eq(optd_optim_step(&st, &hp, &sched, 0, pd, gd, NULL, &err), OPTD_ENONFINITE);
    ck_assert_uint_eq(st.step, 2);
    double huge[2] = {1e200, 1e200};
    ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, pd, huge, NULL, &err), OPTD_ENONFINITE);
    ck_assert_uint_eq(st.step, 2);
    optd_optim_state_free(&st);
}
END_TEST

/* The O(1) bound proves ordinary steps finite: after the first step (whose
 * parameters are not known yet) no plan needs the careful path, for every
 * optimizer in both dtypes (rmsprop centered aside, which always checks),
 * also thousands of steps later. */
START_TEST(test_bound_fast_path)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        for (int d = 0; d < 4; d++) {
            optd_dtype_t dt = dtypes[d % 2];
            optd_hparams_t hp;
            if (d < 2)
                all_options((optd_optim_kind_t)k, &hp); /* weight decay: measured steps */
            else
                optd_hparams_default((optd_optim_kind_t)k, &hp); /* bounds carried over */
            hp.centered = false;
            double p0[NBIG], g[3 * NBIG];
            fill_grad(p0, NBIG, 5);
            for (int s = 0; s < 3; s++)
                fill_grad(g + s * NBIG, NBIG, 9 + s);
            optd_optim_state_t st;
            optd_err_t err;
            void *p = run((optd_optim_kind_t)k, dt, &hp, NULL, 0, NBIG, p0, 3, g, &st);
            optd_step_plan_t plan;
            ck_assert_int_eq(optd_optim_plan(&st, &hp, NULL, 0, 10.0, &plan, &err), 0);
            ck_assert_msg(!plan.careful, "%s %s: careful", optd_optim_desc((optd_optim_kind_t)k)->name,
                          optd_dtype_name(dt));
            optd_optim_abort(&st, &plan);
            /* The bounds each step carries over to the next loosen a
             * little every step; 3000 steps on still prove it. */
            void *gv = vec_new(dt, g, NBIG);
            for (int s = 0; s < 3000; s++)
                ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, gv, NULL, &err), 0);
            free(gv);
            ck_assert_int_eq(optd_optim_plan(&st, &hp, NULL, 0, 10.0, &plan, &err), 0);
            ck_assert_msg(!plan.careful, "%s %s: careful after 3000 steps",
                          optd_optim_desc((optd_optim_kind_t)k)->name, optd_dtype_name(dt));
            optd_optim_abort(&st, &plan);
            optd_optim_forget_bounds(&st);
            ck_assert_int_eq(optd_optim_plan(&st, &hp, NULL, 0, 10.0, &plan, &err), 0);
            ck_assert(plan.careful);
            optd_optim_abort(&st, &plan);
            optd_optim_state_free(&st);
            free(p);
        }
}
END_TEST

/* A step close to the largest value that stays finite takes the careful
 * path and is applied. */
START_TEST(test_bound_near_max_applies)
{
    for (int d = 0; d < 2; d++) {
        optd_dtype_t dt = dtypes[d];
        optd_hparams_t hp;
        optd_hparams_default(OPTD_SGD, &hp);
        hp.lr = 1e-3 * dtype_max(dt) / 1e10;
        optd_optim_state_t st;
        optd_err_t err;
        ck_assert_int_eq(optd_optim_state_init(&st, OPTD_SGD, dt, 2, &hp, &err), 0);
        double pv[2] = {0.9 * dtype_max(dt), 1}, gv[2] = {-1e10, 1};
        void *p = vec_new(dt, pv, 2), *g = vec_new(dt, gv, 2);
        for (int s = 0; s < 3; s++)
            ck_assert_int_eq(optd_optim_step(&st, &hp, NULL, 0, p, g, NULL, &err), 0);
        ck_assert(vget(dt, p, 0) > 0.9 * dtype_max(dt) && isfinite(vget(dt, p, 0)));
        optd_optim_state_free(&st);
        free(p);
        free(g);
    }
}
END_TEST

/* optd_optim_state_validate: what an import may and may not bring. */
START_TEST(test_state_validate)
{
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    optd_optim_state_t st;
    optd_err_t err;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT64, 3, &hp, &err), 0);
    ck_assert_int_eq(optd_optim_state_validate(&st, &err), 0);
    ((double *)st.buf[OPTD_BUF_EXP_AVG])[1] = -5; /* a signed buffer: fine */
    ck_assert_int_eq(optd_optim_state_validate(&st, &err), 0);
    ((double *)st.buf[OPTD_BUF_EXP_AVG_SQ])[2] = -1e-300;
    ck_assert_int_eq(optd_optim_state_validate(&st, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "state.exp_avg_sq[2]") != NULL, "%s", err.msg);
    ((double *)st.buf[OPTD_BUF_EXP_AVG_SQ])[2] = 0;
    free(st.buf[OPTD_BUF_EXP_AVG_SQ]);
    st.buf[OPTD_BUF_EXP_AVG_SQ] = NULL;
    ck_assert_int_eq(optd_optim_state_validate(&st, &err), 0); /* step 0: the first step starts it */
    st.step = 3;
    ck_assert_int_eq(optd_optim_state_validate(&st, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "state.exp_avg_sq is missing") != NULL, "%s", err.msg);
    optd_optim_state_free(&st);

    optd_hparams_default(OPTD_NADAM, &hp);
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_NADAM, OPTD_FLOAT32, 2, &hp, &err), 0);
    st.step = 4;
    const double mus[] = {1.5, -0.1, NAN, 0.0, 1.0, 0.25};
    const int want[] = {OPTD_EINVAL, OPTD_EINVAL, OPTD_EINVAL, 0, 0, 0};
    for (int i = 0; i < 6; i++) {
        st.mu_product = mus[i];
        ck_assert_int_eq(optd_optim_state_validate(&st, &err), want[i]);
    }
    optd_optim_state_free(&st);
}
END_TEST

/* Copy the state, drop the original, continue: bit for bit what never
 * copying gives. */
START_TEST(test_copy_continue)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            optd_hparams_t hp;
            all_options((optd_optim_kind_t)k, &hp);
            enum { S = 6 };
            double p0[NBIG], g[S * NBIG];
            fill_grad(p0, NBIG, 3);
            for (int s = 0; s < S; s++)
                fill_grad(g + s * NBIG, NBIG, 10 + s);
            optd_schedule_t sched = {OPTD_SCHED_COSINE, 0, 0, 10, 1e-4, 2};

            optd_optim_state_t a;
            void *pa = run((optd_optim_kind_t)k, dt, &hp, &sched, 2.0, NBIG, p0, S, g, &a);

            optd_optim_state_t b, c;
            void *pb = run((optd_optim_kind_t)k, dt, &hp, &sched, 2.0, NBIG, p0, S / 2, g, &b);
            optd_err_t err;
            ck_assert_int_eq(optd_optim_state_copy(&c, &b, &err), 0);
            ck_assert_uint_eq(optd_optim_state_bytes(&c), optd_optim_state_bytes(&b));
            optd_optim_state_free(&b);
            for (int s = S / 2; s < S; s++) {
                void *gv = vec_new(dt, g + s * NBIG, NBIG);
                ck_assert_int_eq(optd_optim_step(&c, &hp, &sched, 2.0, pb, gv, NULL, &err), 0);
                free(gv);
            }
            snap_t sa;
            snap_take(&sa, &a, pa);
            snap_expect_same(&sa, &c, pb, optd_optim_desc((optd_optim_kind_t)k)->name);
            snap_free(&sa);
            optd_optim_state_free(&a);
            optd_optim_state_free(&c);
            free(pa);
            free(pb);
        }
    }
}
END_TEST

/* sumsq over two ranges, plan once, apply over [0, m) and [m, n): the same
 * bits as one whole step, for every optimizer with every option on. */
START_TEST(test_split_apply)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            for (int opts = 0; opts < 2; opts++) {
                optd_hparams_t hp;
                if (opts)
                    all_options((optd_optim_kind_t)k, &hp);
                else
                    optd_hparams_default((optd_optim_kind_t)k, &hp);
                hp.maximize = opts;
                enum { S = 8 };
                double p0[NBIG], g[S * NBIG];
                fill_grad(p0, NBIG, 5);
                for (int s = 0; s < S; s++)
                    fill_grad(g + s * NBIG, NBIG, 20 + s);
                optd_optim_state_t whole, split;
                void *pw = run((optd_optim_kind_t)k, dt, &hp, NULL, 3.0, NBIG, p0, S, g, &whole);

                void *ps = vec_new(dt, p0, NBIG);
                optd_err_t err;
                ck_assert_int_eq(
                    optd_optim_state_init(&split, (optd_optim_kind_t)k, dt, NBIG, &hp, &err), 0);
                for (int s = 0; s < S; s++) {
                    void *gv = vec_new(dt, g + s * NBIG, NBIG);
                    size_t m = (size_t)(17 + 9 * s) % NBIG;
                    bool fin = true;
                    double ss1 = optd_grad_sumsq(dt, gv, 0, m, &fin);
                    double ss2 = optd_grad_sumsq(dt, gv, m, NBIG, &fin);
                    double whole_ss = optd_grad_sumsq(dt, gv, 0, NBIG, &fin);
                    ck_assert(fin);
                    ck_assert(fabs(ss1 + ss2 - whole_ss) <= 1e-12 * whole_ss);
                    optd_step_plan_t plan;
                    ck_assert_int_eq(optd_optim_plan(&split, &hp, NULL, 3.0, whole_ss, &plan, &err),
                                     0);
                    ck_assert_uint_eq(split.step, (uint64_t)s); /* plan changes no value */
                    optd_step_fault_t fault;
                    optd_step_seen_t seen;
                    optd_step_seen_init(&seen);
                    ck_assert(!plan.careful || (optd_optim_check(&plan, &split, ps, gv, 0, m, &fault, &seen) &&
                                                optd_optim_check(&plan, &split, ps, gv, m, NBIG, &fault, &seen)));
                    optd_step_seen_t *ts = plan.track ? &seen : NULL;
                    optd_optim_apply(&plan, &split, ps, gv, m, NBIG, ts); /* any order */
                    optd_optim_apply(&plan, &split, ps, gv, 0, m, ts);
                    optd_optim_apply(&plan, &split, ps, gv, m, m, ts); /* empty range */
                    optd_optim_commit(&split, &plan, plan.careful || plan.track ? &seen : NULL);
                    free(gv);
                }
                snap_t sw;
                snap_take(&sw, &whole, pw);
                snap_expect_same(&sw, &split, ps, optd_optim_desc((optd_optim_kind_t)k)->name);
                snap_free(&sw);
                optd_optim_state_free(&whole);
                optd_optim_state_free(&split);
                free(pw);
                free(ps);
            }
        }
    }
}
END_TEST

/* Allocation failures: refused with OPTD_ENOMEM and nothing changed. */
START_TEST(test_enomem)
{
    optd_optim_state_t st;
    optd_err_t err;
    optd_hparams_t hp;
    optd_hparams_default(OPTD_ADAM, &hp);
    /* size * 8 overflows */
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT64, SIZE_MAX / 4, &hp, &err),
                     OPTD_ENOMEM);
    /* fits size_t, not memory */
    size_t huge = (size_t)1 << 58;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT32, huge, &hp, &err),
                     OPTD_ENOMEM);
    ck_assert_int_eq(err.code, OPTD_ENOMEM);
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        ck_assert_ptr_null(st.buf[b]);

    /* sgd keeps no buffer until momentum: a huge session initializes, and
     * the step that needs its momentum_buffer fails before changing st. */
    optd_hparams_default(OPTD_SGD, &hp);
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_SGD, OPTD_FLOAT32, huge, &hp, &err), 0);
    hp.momentum = 0.9;
    optd_step_plan_t plan;
    ck_assert_int_eq(optd_optim_plan(&st, &hp, NULL, 0, 1.0, &plan, &err), OPTD_ENOMEM);
    ck_assert_msg(strstr(err.msg, "momentum_buffer"), "%s", err.msg);
    ck_assert_ptr_null(st.buf[OPTD_BUF_MOMENTUM_BUFFER]);
    ck_assert_uint_eq(st.step, 0);
    optd_optim_state_free(&st);
}
END_TEST

/* ---- parameter groups ---------------------------------------------------------- */

/* One group over the whole vector is optd_optim_step, bit for bit, for
 * every optimizer with every option on, both dtypes, with clipping and a
 * schedule; the copy of a grouped state carries the groups' own state. */
START_TEST(test_one_group_is_a_plain_step)
{
    optd_schedule_t sched = {.type = OPTD_SCHED_COSINE, .t_max = 20, .eta_min = 1e-4, .warmup_steps = 2};
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            optd_err_t err;
            optd_group_t grp = {.size = 6};
            all_options((optd_optim_kind_t)k, &grp.hp);
            optd_optim_state_t a, b;
            ck_assert_int_eq(optd_optim_state_init(&a, (optd_optim_kind_t)k, dt, 6, &grp.hp, &err), 0);
            ck_assert_int_eq(optd_optim_state_init(&b, (optd_optim_kind_t)k, dt, 6, &grp.hp, &err), 0);
            ck_assert_int_eq(optd_optim_state_set_groups(&b, &grp, 1, &err), 0);
            const double p0[6] = {0.5, -1.0, 2.0, 0.0, 3.0, -0.25};
            void *pa = vec_new(dt, p0, 6), *pb = vec_new(dt, p0, 6);
            for (int t = 0; t < 12; t++) {
                double g[6];
                fill_grad(g, 6, t);
                void *gv = vec_new(dt, g, 6);
                optd_step_info_t ia, ib;
                ck_assert_int_eq(optd_optim_step(&a, &grp.hp, &sched, 1.0, pa, gv, &ia, &err), 0);
                ck_assert_int_eq(optd_optim_step_groups(&b, &grp, 1, &sched, 1.0, pb, gv, &ib, &err), 0);
                ck_assert(ia.lr == ib.lr && ia.grad_norm == ib.grad_norm);
                free(gv);
            }
            ck_assert_msg(memcmp(pa, pb, 6 * optd_dtype_size(dt)) == 0, "%s %s",
                          optd_optim_desc((optd_optim_kind_t)k)->name, optd_dtype_name(dt));
            for (int bf = 0; bf < OPTD_BUF_COUNT; bf++) {
                ck_assert((a.buf[bf] == NULL) == (b.buf[bf] == NULL));
                if (a.buf[bf])
                    ck_assert(memcmp(a.buf[bf], b.buf[bf], 6 * optd_dtype_size(dt)) == 0);
            }
            ck_assert(a.mu_product == b.groups[0].mu_product && a.mu_product == b.mu_product);
            optd_optim_state_t c;
            ck_assert_int_eq(optd_optim_state_copy(&c, &b, &err), 0);
            ck_assert_uint_eq(c.n_groups, 1);
            ck_assert_ptr_ne(c.groups, b.groups);
            ck_assert(c.groups[0].mu_product == b.groups[0].mu_product);
            optd_optim_state_free(&c);
            ck_assert_uint_eq(c.n_groups, 0);
            optd_optim_state_free(&a);
            optd_optim_state_free(&b);
            free(pa);
            free(pb);
        }
    }
}
END_TEST

/* A grouped step that would overflow in its second group is refused before
 * any group is written: the first group (with every option on, so its
 * first step would create buffers) keeps its values, and no buffer the
 * step would have created stays behind. */
START_TEST(test_groups_nonfinite_changes_nothing)
{
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        for (int d = 0; d < 2; d++) {
            optd_dtype_t dt = dtypes[d];
            const char *name = optd_optim_desc((optd_optim_kind_t)k)->name;
            optd_err_t err = {0};
            optd_group_t grp[2] = {{.size = 3}, {.size = 3}};
            all_options((optd_optim_kind_t)k, &grp[0].hp);
            optd_hparams_default((optd_optim_kind_t)k, &grp[1].hp);
            grp[1].hp.lr = (k == OPTD_ADADELTA ? 1 : 0.05) * dtype_max(dt);
            optd_optim_state_t st;
            ck_assert_int_eq(optd_optim_state_init(&st, (optd_optim_kind_t)k, dt, 6, &grp[1].hp, &err), 0);
            ck_assert_int_eq(optd_optim_state_set_groups(&st, grp, 2, &err), 0);
            const double p0[6] = {0.5, -1.0, 2.0, 0.0, 3.0, -0.25};
            void *p = vec_new(dt, p0, 6);
            vset(dt, p, 4, (k == OPTD_ADADELTA ? 0.9995 : 0.99) * dtype_max(dt));
            const double g[6] = {0.1, 0.2, -0.3, 0.0, -1.0, 0.0};
            void *gv = vec_new(dt, g, 6);
            snap_t s;
            snap_take(&s, &st, p);
            optd_step_info_t info = {-1, -1};
            ck_assert_msg(optd_optim_step_groups(&st, grp, 2, NULL, 0, p, gv, &info, &err) == OPTD_ENONFINITE,
                          "%s %s: not refused", name, optd_dtype_name(dt));
            ck_assert_msg(strstr(err.msg, "[4]") != NULL, "%s %s: %s", name, optd_dtype_name(dt), err.msg);
            ck_assert(info.lr == -1);
            snap_expect_same(&s, &st, p, name);
            for (int i = 0; i < 2; i++)
                ck_assert(st.groups[i].mu_product == s.st.groups[i].mu_product &&
                          st.groups[i].momentum_started == s.st.groups[i].momentum_started);
            snap_free(&s);
            free(gv);
            free(p);
            optd_optim_state_free(&st);
        }
    }
}
END_TEST

START_TEST(test_groups_validate_and_mismatch)
{
    optd_err_t err;
    optd_group_t g[3];
    for (int i = 0; i < 3; i++) {
        optd_hparams_default(OPTD_ADAM, &g[i].hp);
        g[i].size = 2;
    }
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 3, 6, &err), 0);
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 3, 7, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "sum to 6") && strstr(err.msg, "7"), "%s", err.msg);
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 3, 5, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "groups[2].size"), "%s", err.msg);
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 0, 6, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, OPTD_GROUPS_MAX + 1, 6, &err), OPTD_EINVAL);
    g[1].size = 0;
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 3, 4, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "groups[1].size"), "%s", err.msg);
    g[1].size = 2;
    g[1].hp.betas[0] = 1.0;
    ck_assert_int_eq(optd_groups_validate(OPTD_ADAM, g, 3, 6, &err), OPTD_EINVAL);
    ck_assert_msg(strstr(err.msg, "groups[1].betas[0]"), "%s", err.msg);
    g[1].hp.betas[0] = 0.9;

    /* A state without group state (or with another count) is refused and
     * left as it was. */
    optd_optim_state_t st;
    ck_assert_int_eq(optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT64, 6, &g[0].hp, &err), 0);
    double p[6] = {0}, gr[6] = {1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(optd_optim_step_groups(&st, g, 3, NULL, 0, p, gr, NULL, &err), OPTD_EINVAL);
    ck_assert_uint_eq(st.step, 0);
    ck_assert_int_eq(optd_optim_state_set_groups(&st, g, 2, &err), 0);
    ck_assert_int_eq(optd_optim_step_groups(&st, g, 3, NULL, 0, p, gr, NULL, &err), OPTD_EINVAL);
    ck_assert_int_eq(optd_optim_state_set_groups(&st, g, 3, &err), 0);
    ck_assert_int_eq(optd_optim_step_groups(&st, g, 3, NULL, 0, p, gr, NULL, &err), 0);
    ck_assert_uint_eq(st.step, 1);
    gr[4] = NAN;
    ck_assert_int_eq(optd_optim_step_groups(&st, g, 3, NULL, 0, p, gr, NULL, &err), OPTD_ENONFINITE);
    ck_assert_uint_eq(st.step, 1);
    optd_optim_state_free(&st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, test_descriptors);
    tcase_add_test(tc, test_table);
    tcase_add_test(tc, test_defaults);
    suite_add_tcase(s, tc);

    tc = tcase_create("rules");
    tcase_add_test(tc, test_sgd_steps);
    tcase_add_test(tc, test_adagrad_steps);
    tcase_add_test(tc, test_rmsprop_steps);
    tcase_add_test(tc, test_adam_steps);
    tcase_add_test(tc, test_adamax_steps);
    tcase_add_test(tc, test_nadam_steps);
    tcase_add_test(tc, test_radam_steps);
    tcase_add_test(tc, test_adadelta_steps);
    tcase_add_test(tc, test_lion_steps);
    tcase_add_test(tc, test_clip_maximize);
    suite_add_tcase(s, tc);

    tc = tcase_create("validation");
    tcase_add_test(tc, test_validate_reals);
    tcase_add_test(tc, test_validate_betas_rho);
    tcase_add_test(tc, test_validate_nesterov);
    suite_add_tcase(s, tc);

    tc = tcase_create("state");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_state_init);
    tcase_add_test(tc, test_lazy_buffers);
    tcase_add_test(tc, test_nonfinite);
    tcase_add_test(tc, test_nonfinite_result);
    tcase_add_test(tc, test_nonfinite_state);
    tcase_add_test(tc, test_bound_fast_path);
    tcase_add_test(tc, test_bound_near_max_applies);
    tcase_add_test(tc, test_state_validate);
    tcase_add_test(tc, test_copy_continue);
    tcase_add_test(tc, test_split_apply);
    tcase_add_test(tc, test_enomem);
    suite_add_tcase(s, tc);

    tc = tcase_create("groups");
    tcase_add_test(tc, test_one_group_is_a_plain_step);
    tcase_add_test(tc, test_groups_validate_and_mismatch);
    tcase_add_test(tc, test_groups_nonfinite_changes_nothing);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
