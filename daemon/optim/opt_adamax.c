/* opt_adamax.c: torch.optim.Adamax (Adam with the infinity norm). */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct adamax_sc {
    double wd, b1, omb1, b2, eps, nclr;
} adamax_sc_t;

static const optd_hparam_desc_t hp_adamax[] = {
    HP_REAL("lr", lr, 2e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 0), HP_BOOL("maximize", maximize, 0),
};

static void adamax_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0];
    adamax_sc_t sc = {
        .wd = hp->weight_decay,
        .b1 = b1,
        .omb1 = 1 - b1,
        .b2 = hp->betas[1],
        .eps = hp->eps,
        .nclr = -(in->lr / (1 - pow(b1, in->td))),
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool adamax_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    adamax_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps);
    double m = OUT(OPTD_BUF_EXP_AVG, AVG(M(OPTD_BUF_EXP_AVG), K(sc.b1), K(sc.omb1), D));
    OUT(OPTD_BUF_EXP_INF, CK(CK(M(OPTD_BUF_EXP_INF) * K(sc.b2)) + CK(D + eps)));
    PNEW(P + DV(CK(K(sc.nclr) * m), eps));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_adamax.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_adamax = {
    .desc = {.name = "adamax", .kind = OPTD_ADAMAX, HPARAMS(hp_adamax),
             .bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_INF),
             .required_bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_INF)},
    .plan = adamax_plan,
    .bound = adamax_bound,
    .kernel = OPTD_KERNELS(adamax),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(adamax_body)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                     T *restrict ei, T gs, T wd, T b1, T omb1, T b2, T eps, T nclr,
                     MAGT *restrict seen, const bool use_wd, const bool track)
{
    MAGT mp = 0, mm = 0, me = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T m1 = m[i] * b1 + omb1 * d;
        m[i] = m1;
        T e = ei[i] * b2;
        T a = (d < 0 ? -d : d) + eps;
        e = e < a ? a : e; /* amax over (exp_inf*b2, |g|+eps) */
        ei[i] = e;
        T np = pv + (nclr * m1) / e;
        p[i] = np;
        KEEP_MAX(mm, m1);
        KEEP_MAX(me, e);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_EXP_AVG] = mm;
    if (track)
        seen[OPTD_BUF_EXP_INF] = me;
}

BODY KN(adamax_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, size_t n,
                     MAGT *seen, const bool track)
{
    adamax_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd;
    T b1 = (T)sc.b1, omb1 = (T)sc.omb1, b2 = (T)sc.b2;
    T eps = (T)sc.eps, nclr = (T)sc.nclr;
    T *m = bufs[OPTD_BUF_EXP_AVG], *ei = bufs[OPTD_BUF_EXP_INF];
    if (sc.wd != 0.0)
        KN(adamax_body)(n, p, g, m, ei, gs, wd, b1, omb1, b2, eps, nclr, seen, true, track);
    else
        KN(adamax_body)(n, p, g, m, ei, gs, wd, b1, omb1, b2, eps, nclr, seen, false, track);
}

KERNEL_ENTRY(adamax)

#endif
