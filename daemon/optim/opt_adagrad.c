/* opt_adagrad.c: torch.optim.Adagrad, with PyTorch's sparse rule for rows
 * steps (weight_decay 0). */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct adagrad_sc {
    double wd, eps, nclr;
} adagrad_sc_t;

static const optd_hparam_desc_t hp_adagrad[] = {
    HP_REAL("lr", lr, 1e-2), HP_REAL("lr_decay", lr_decay, 0),
    HP_REAL("weight_decay", weight_decay, 0),
    HP_REAL("initial_accumulator_value", initial_accumulator_value, 0),
    HP_REAL("eps", eps, 1e-10), HP_BOOL("maximize", maximize, 0),
};

static int adagrad_rows_options(const optd_hparams_t *hp, optd_err_t *err)
{
    if (hp->weight_decay != 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "a rows step on adagrad needs weight_decay 0 (PyTorch's sparse "
                            "Adagrad has none); this session has weight_decay %g",
                            hp->weight_decay);
    return 0;
}

static void adagrad_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    adagrad_sc_t sc = {
        .wd = hp->weight_decay,
        .eps = hp->eps,
        .nclr = -(in->lr / (1 + (in->td - 1) * hp->lr_decay)),
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool adagrad_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    adagrad_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps);
    double S = OUT(OPTD_BUF_SUM, CK(M(OPTD_BUF_SUM) + CK(D * D)));
    CK(sqrt(S) + eps);
    PNEW(P + DV(CK(K(sc.nclr) * D), eps));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_adagrad.c"
#include "optim/kernel_rule.h"

/* sum starts at initial_accumulator_value (optim.c fills it). */
const optd_optimizer_t optd_optimizer_adagrad = {
    .desc = {.name = "adagrad", .kind = OPTD_ADAGRAD, HPARAMS(hp_adagrad),
             .bufs = BIT(OPTD_BUF_SUM), .required_bufs = BIT(OPTD_BUF_SUM), .sparse_rows = true},
    .rows_options = adagrad_rows_options,
    .rows_note = "weight_decay 0",
    .plan = adagrad_plan,
    .bound = adagrad_bound,
    .kernel = OPTD_KERNELS(adagrad),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(adagrad_body)(size_t n, T *restrict p, const T *restrict g, T *restrict sum, T gs, T wd,
                      T eps, T nclr, MAGT *restrict seen, const bool use_wd, const bool track)
{
    MAGT mp = 0, ms = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T s = sum[i] + d * d;
        sum[i] = s;
        T np = pv + (nclr * d) / (SQRT(s) + eps);
        p[i] = np;
        KEEP_MAX(ms, s);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_SUM] = ms;
}

/* The rows rule (PyTorch's sparse path, weight_decay 0): p + (-clr)*(g/std),
 * where the dense one is p + ((-clr)*g)/std (addcdiv). */
BODY KN(adagrad_rows_body)(size_t n, T *restrict p, const T *restrict g, T *restrict sum, T gs,
                           T eps, T nclr, MAGT *restrict seen, const bool track)
{
    MAGT mp = 0, ms = 0;
    for (size_t i = 0; i < n; i++) {
        T d = g[i] * gs;
        T s = sum[i] + d * d;
        sum[i] = s;
        T np = p[i] + nclr * (d / (SQRT(s) + eps));
        p[i] = np;
        KEEP_MAX(ms, s);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_SUM] = ms;
}

BODY KN(adagrad_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g,
                      size_t n, MAGT *seen, const bool track)
{
    adagrad_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd, eps = (T)sc.eps;
    T nclr = (T)sc.nclr;
    T *sum = bufs[OPTD_BUF_SUM];
    if (pl->rows)
        KN(adagrad_rows_body)(n, p, g, sum, gs, eps, nclr, seen, track);
    else if (sc.wd != 0.0)
        KN(adagrad_body)(n, p, g, sum, gs, wd, eps, nclr, seen, true, track);
    else
        KN(adagrad_body)(n, p, g, sum, gs, wd, eps, nclr, seen, false, track);
}

KERNEL_ENTRY(adagrad)

#endif
