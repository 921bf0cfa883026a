/* optimizer.h: what one optimizer is to the core (optim.c, rows.c), and
 * what its file (daemon/optim/opt_NAME.c) needs to say it.
 *
 * Each optimizer is one descriptor, optd_optimizer_NAME, defined in its
 * file next to everything that is its own: its hyperparameters and
 * defaults, its buffers, the struct of its per-step scalars, the plan that
 * computes them, the O(1) bound of its step and its kernel (the second
 * half of the file, built once per dtype by optim/kernel_rule.h).  The core
 * reaches them through optd_optimizer(kind) and names none of them; the
 * kinds come from OPTD_OPTIMIZERS (optd/optim.h). */
#ifndef OPTD_OPTIM_OPTIMIZER_H
#define OPTD_OPTIM_OPTIMIZER_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "optd/optim.h"

#define BIT(b) (1u << (b))

/* Hyperparameter descriptors, each in PyTorch's keyword order. */
#define HP_REAL(name, field, d) {name, OPTD_HP_REAL, offsetof(optd_hparams_t, field), {d, 0}}
#define HP_BOOL(name, field, d) {name, OPTD_HP_BOOL, offsetof(optd_hparams_t, field), {d, 0}}
#define HP_BETAS(d0, d1) {"betas", OPTD_HP_PAIR, offsetof(optd_hparams_t, betas), {d0, d1}}
#define HPARAMS(list) .n_hparams = sizeof list / sizeof list[0], .hparams = list

/* What a plan starts from (one update, or one group's part of it). */
typedef struct optd_plan_in {
    const optd_optim_state_t *st;
    const optd_hparams_t *hp;
    double lr;             /* the scheduled lr of this step */
    double td;             /* the step number being applied, as a double */
    double mu_product;     /* nadam: the product so far (the group's) */
    bool momentum_fresh;   /* the momentum buffer (the group's part) starts this step */
} optd_plan_in_t;

/* The O(1) finiteness bound (optim.c, "the O(1) finiteness bound"): an
 * optimizer's bound function follows its kernel's operations on
 * magnitudes with the helpers below. */
typedef struct optd_bound {
    optd_dtype_t dtype;
    const optd_optim_state_t *st;
    unsigned fresh;
    double worst;
    bool bad;
    double out[OPTD_BUF_COUNT + 1]; /* the bound of what the step writes to k */
    unsigned out_set;               /* bit per k of out[] */
    double P;                       /* the parameters' bound (NaN if unknown) */
    double G;                       /* |g * gscale|'s bound */
} optd_bound_t;

double optd_bound_chk(optd_bound_t *b, double x);              /* notes x, returns it */
double optd_bound_k(const optd_bound_t *b, double c);          /* |c| rounded to the dtype */
double optd_bound_max(const optd_bound_t *b, int k);           /* buffer k's bound, NaN if unknown */
double optd_bound_div(optd_bound_t *b, double num, double den_least);
double optd_bound_out(optd_bound_t *b, int k, double v);       /* v bounds what k gets */
double optd_bound_avg(optd_bound_t *b, double m, double k1, double k2, double d); /* m*k1 + k2*d */

/* Shorthands of a bound function whose optd_bound_t * is named b. */
#define CK(x) optd_bound_chk(b, (x))
#define K(x) optd_bound_k(b, (x))
#define M(k) optd_bound_max(b, (k))
#define DV(num, den) optd_bound_div(b, (num), (den))
#define OUT(k, v) optd_bound_out(b, (k), (v))
#define PNEW(v) OUT(OPTD_BUF_COUNT, CK(v))
#define AVG(m, k1, k2, d) optd_bound_avg(b, (m), (k1), (k2), (d))

/* A kernel: one update of n elements (see optim/kernel_rule.h). */
typedef void optd_kernel_fn(const optd_step_plan_t *plan, void *const buf[OPTD_BUF_COUNT], void *p,
                            const void *g, size_t n, double seen[OPTD_BUF_COUNT + 1]);

typedef struct optd_optimizer {
    optd_optim_desc_t desc; /* what the API lists (optd/optim.h) */
    /* The buffers beyond desc.required_bufs that hp's options switch on
     * (NULL: none). */
    unsigned (*option_bufs)(const optd_hparams_t *hp);
    /* Rules between hyperparameters beyond each one's range: 0 or
     * OPTD_EINVAL (NULL: none). */
    int (*validate)(const optd_hparams_t *hp, optd_err_t *err);
    /* With desc.sparse_rows: the options its sparse rule does not take,
     * 0 or OPTD_EINVAL (NULL: it takes them all). */
    int (*rows_options)(const optd_hparams_t *hp, optd_err_t *err);
    const char *rows_note; /* what rows_options asks, for messages: "weight_decay 0" */
    /* sgd: momentum_buffer starts as the gradient, on each group's first
     * step with momentum (optd_group_state_t.momentum_started). */
    bool momentum_from_grad;
    /* Fills plan->sc with its scalars (OPTD_SCALARS_PUT) and, when its
     * gradient takes coupled weight decay (wd * p), sets plan->track. */
    void (*plan)(const optd_plan_in_t *in, optd_step_plan_t *plan);
    /* Bounds the step (OPTD_SCALARS_GET from plan->sc); false when it
     * cannot (the step then takes the careful path: slower, never wrong). */
    bool (*bound)(optd_bound_t *b, const optd_step_plan_t *plan);
    optd_kernel_fn *kernel[2]; /* by optd_dtype_t: OPTD_KERNELS(name) */
} optd_optimizer_t;

/* kind's descriptor (kind < OPTD_OPTIM_COUNT). */
const optd_optimizer_t *optd_optimizer(optd_optim_kind_t kind);

#define OPTD_OPTIMIZER_DECL_(KIND, name) extern const optd_optimizer_t optd_optimizer_##name;
OPTD_OPTIMIZERS(OPTD_OPTIMIZER_DECL_)
#undef OPTD_OPTIMIZER_DECL_

/* An optimizer's scalars are its own struct of doubles, kept in the plan's
 * opaque sc: these copy one in and out (memcpy: no aliasing question), and
 * refuse at compile time a struct that does not fit. */
#define OPTD_SCALARS_PUT(plan, s)                                                  \
    do {                                                                           \
        _Static_assert(sizeof(s) <= sizeof((plan)->sc), "scalars do not fit sc"); \
        memcpy(&(plan)->sc, &(s), sizeof(s));                                      \
    } while (0)
#define OPTD_SCALARS_GET(s, plan)                                                  \
    do {                                                                           \
        _Static_assert(sizeof(s) <= sizeof((plan)->sc), "scalars do not fit sc"); \
        memcpy(&(s), &(plan)->sc, sizeof(s));                                      \
    } while (0)

/* The kernel entry points kernel_rule.h made of KERNEL_ENTRY(name). */
#define OPTD_KERNELS(name) {[OPTD_FLOAT32] = name##_apply_f32, [OPTD_FLOAT64] = name##_apply_f64}

#endif
