/* opt_adadelta.c: torch.optim.Adadelta. */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct adadelta_sc {
    double wd, rho, omr, eps, nlr;
} adadelta_sc_t;

static const optd_hparam_desc_t hp_adadelta[] = {
    HP_REAL("lr", lr, 1.0), HP_REAL("rho", rho, 0.9), HP_REAL("eps", eps, 1e-6),
    HP_REAL("weight_decay", weight_decay, 0), HP_BOOL("maximize", maximize, 0),
};

static void adadelta_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    adadelta_sc_t sc = {
        .wd = hp->weight_decay,
        .rho = hp->rho,
        .omr = 1 - hp->rho,
        .eps = hp->eps,
        .nlr = -in->lr,
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool adadelta_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    adadelta_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps), rho = K(sc.rho), omr = K(sc.omr);
    double s = OUT(OPTD_BUF_SQUARE_AVG, AVG(M(OPTD_BUF_SQUARE_AVG), rho, CK(omr * D), D));
    CK(s + eps);
    double a = M(OPTD_BUF_ACC_DELTA);
    double delta = CK(DV(sqrt(CK(a + eps)), sqrt(eps)) * D);
    OUT(OPTD_BUF_ACC_DELTA, AVG(a, rho, CK(omr * delta), delta));
    PNEW(P + CK(K(sc.nlr) * delta));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_adadelta.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_adadelta = {
    .desc = {.name = "adadelta", .kind = OPTD_ADADELTA, HPARAMS(hp_adadelta),
             .bufs = BIT(OPTD_BUF_SQUARE_AVG) | BIT(OPTD_BUF_ACC_DELTA),
             .required_bufs = BIT(OPTD_BUF_SQUARE_AVG) | BIT(OPTD_BUF_ACC_DELTA)},
    .plan = adadelta_plan,
    .bound = adadelta_bound,
    .kernel = OPTD_KERNELS(adadelta),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(adadelta_body)(size_t n, T *restrict p, const T *restrict g, T *restrict sq,
                       T *restrict acc, T gs, T wd, T rho, T omr, T eps, T nlr,
                       MAGT *restrict seen, const bool use_wd, const bool track)
{
    MAGT mp = 0, ms = 0, ma = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T s = sq[i] * rho + (omr * d) * d;
        sq[i] = s;
        T a = acc[i];
        T delta = SQRT(a + eps) / SQRT(s + eps) * d;
        a = a * rho + (omr * delta) * delta;
        acc[i] = a;
        T np = pv + nlr * delta;
        p[i] = np;
        KEEP_MAX(ms, s);
        KEEP_MAX(ma, a);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_SQUARE_AVG] = ms;
    if (track)
        seen[OPTD_BUF_ACC_DELTA] = ma;
}

BODY KN(adadelta_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g,
                       size_t n, MAGT *seen, const bool track)
{
    adadelta_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd, rho = (T)sc.rho;
    T omr = (T)sc.omr, eps = (T)sc.eps, nlr = (T)sc.nlr;
    T *sq = bufs[OPTD_BUF_SQUARE_AVG], *acc = bufs[OPTD_BUF_ACC_DELTA];
    if (sc.wd != 0.0)
        KN(adadelta_body)(n, p, g, sq, acc, gs, wd, rho, omr, eps, nlr, seen, true, track);
    else
        KN(adadelta_body)(n, p, g, sq, acc, gs, wd, rho, omr, eps, nlr, seen, false, track);
}

KERNEL_ENTRY(adadelta)

#endif
