/* opt_nadam.c: torch.optim.NAdam (PyTorch 2.x), whose momentum schedule
 * keeps a scalar state, mu_product. */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct nadam_sc {
    double wd, b1, omb1, b2, omb2, bc2, eps, cg, cm;
} nadam_sc_t;

static const optd_hparam_desc_t hp_nadam[] = {
    HP_REAL("lr", lr, 2e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 0), HP_REAL("momentum_decay", momentum_decay, 4e-3),
    HP_BOOL("maximize", maximize, 0),
};

/* The scalars at step td: the momentum schedule mu, and the product of the
 * mus so far (in->mu_product, rounded to the session's dtype) taken one
 * step on into plan->mu_product_next. */
static void nadam_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0], b2 = hp->betas[1], lr = in->lr, td = in->td;
    double md = hp->momentum_decay;
    double mu = b1 * (1. - 0.5 * pow(0.96, td * md));
    double mu_next = b1 * (1. - 0.5 * pow(0.96, (td + 1) * md));
    /* mu_product is a tensor of the session's dtype: mu_product *= mu
     * rounds mu and the product to it. */
    double mp = in->st->dtype == OPTD_FLOAT32 ? (double)((float)in->mu_product * (float)mu)
                                              : in->mu_product * mu;
    double mp_next = mp * mu_next;
    plan->mu_product_next = mp;
    nadam_sc_t sc = {
        .wd = hp->weight_decay,
        .b1 = b1,
        .omb1 = 1 - b1,
        .b2 = b2,
        .omb2 = 1 - b2,
        .bc2 = 1 - pow(b2, td),
        .eps = hp->eps,
        .cg = -lr * (1. - mu) / (1. - mp),
        .cm = (-lr * mu_next) / (1. - mp_next),
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool nadam_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    nadam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps);
    double m = OUT(OPTD_BUF_EXP_AVG, AVG(M(OPTD_BUF_EXP_AVG), K(sc.b1), K(sc.omb1), D));
    double v = OUT(OPTD_BUF_EXP_AVG_SQ, AVG(M(OPTD_BUF_EXP_AVG_SQ), K(sc.b2), CK(K(sc.omb2) * D), D));
    CK(sqrt(DV(v, K(sc.bc2))) + eps);
    double p1 = CK(P + DV(CK(K(sc.cg) * D), eps));
    PNEW(p1 + DV(CK(K(sc.cm) * m), eps));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_nadam.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_nadam = {
    .desc = {.name = "nadam", .kind = OPTD_NADAM, HPARAMS(hp_nadam),
             .bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ),
             .required_bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ),
             .has_mu_product = true},
    .plan = nadam_plan,
    .bound = nadam_bound,
    .kernel = OPTD_KERNELS(nadam),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(nadam_body)(size_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict v,
                    T gs, T wd, T b1, T omb1, T b2, T omb2, T bc2, T eps, T cg, T cm,
                    MAGT *restrict seen, const bool use_wd, const bool track)
{
    MAGT mp = 0, mm = 0, mv = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T m1 = m[i] * b1 + omb1 * d;
        T vv = v[i] * b2 + (omb2 * d) * d;
        m[i] = m1;
        v[i] = vv;
        T den = SQRT(vv / bc2) + eps;
        pv = pv + (cg * d) / den;
        T np = pv + (cm * m1) / den;
        p[i] = np;
        KEEP_MAX(mm, m1);
        KEEP_MAX(mv, vv);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_EXP_AVG] = mm;
    if (track)
        seen[OPTD_BUF_EXP_AVG_SQ] = mv;
}

BODY KN(nadam_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, size_t n,
                    MAGT *seen, const bool track)
{
    nadam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd;
    T b1 = (T)sc.b1, omb1 = (T)sc.omb1;
    T b2 = (T)sc.b2, omb2 = (T)sc.omb2;
    T bc2 = (T)sc.bc2, eps = (T)sc.eps;
    T cg = (T)sc.cg, cm = (T)sc.cm;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    if (sc.wd != 0.0)
        KN(nadam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc2, eps, cg, cm, seen, true, track);
    else
        KN(nadam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc2, eps, cg, cm, seen, false, track);
}

KERNEL_ENTRY(nadam)

#endif
