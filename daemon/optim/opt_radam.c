/* opt_radam.c: torch.optim.RAdam (rectified Adam). */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct radam_sc {
    double wd, b1, omb1, b2, omb2, bc1, lr, rect, sbc2, eps;
    bool use_rect; /* the variance is tractable (rho_t > 5) */
} radam_sc_t;

static const optd_hparam_desc_t hp_radam[] = {
    HP_REAL("lr", lr, 1e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 0), HP_BOOL("maximize", maximize, 0),
};

/* The scalars at step td: whether the variance is tractable yet
 * (rho_t > 5) and, if so, the rectification term. */
static void radam_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0], b2 = hp->betas[1], td = in->td;
    double bc1 = 1 - pow(b1, td), bc2 = 1 - pow(b2, td);
    double rho_inf = 2 / (1 - b2) - 1;
    double rho_t = rho_inf - 2 * td * pow(b2, td) / bc2;
    bool use_rect = rho_t > 5.;
    radam_sc_t sc = {
        .wd = hp->weight_decay,
        .b1 = b1,
        .omb1 = 1 - b1,
        .b2 = b2,
        .omb2 = 1 - b2,
        .bc1 = bc1,
        .lr = in->lr,
        .rect = use_rect ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                                ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                         : 0.0,
        .sbc2 = sqrt(bc2),
        .eps = hp->eps,
        .use_rect = use_rect,
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool radam_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    radam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps);
    double m = OUT(OPTD_BUF_EXP_AVG, AVG(M(OPTD_BUF_EXP_AVG), K(sc.b1), K(sc.omb1), D));
    OUT(OPTD_BUF_EXP_AVG_SQ, AVG(M(OPTD_BUF_EXP_AVG_SQ), K(sc.b2), CK(K(sc.omb2) * D), D));
    double bcm = DV(m, K(sc.bc1));
    double step = CK(bcm * K(sc.lr));
    if (sc.use_rect) {
        double ad = CK(DV(1.0, eps) * K(sc.sbc2));
        step = CK(CK(step * ad) * K(sc.rect));
    }
    PNEW(P + step);
    return true;
}

#define OPTD_RULE_FILE "optim/opt_radam.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_radam = {
    .desc = {.name = "radam", .kind = OPTD_RADAM, HPARAMS(hp_radam),
             .bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ),
             .required_bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ)},
    .plan = radam_plan,
    .bound = radam_bound,
    .kernel = OPTD_KERNELS(radam),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(radam_body)(size_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict v,
                    T gs, T wd, T b1, T omb1, T b2, T omb2, T bc1, T lr, T rect, T sbc2, T eps,
                    MAGT *restrict seen, const bool use_wd, const bool use_rect, const bool track)
{
    MAGT mp = 0, mm = 0, mv = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T m1 = m[i] * b1 + omb1 * d;
        T vv = v[i] * b2 + (omb2 * d) * d;
        m[i] = m1;
        v[i] = vv;
        T bcm = m1 / bc1;
        T np;
        if (use_rect) {
            /* sqrt(bc2) / (sqrt(v)+eps) is Tensor.__rtruediv__: reciprocal * sqrt(bc2) */
            T ad = ((T)1 / (SQRT(vv) + eps)) * sbc2;
            np = pv - ((bcm * lr) * ad) * rect;
        } else {
            np = pv - bcm * lr;
        }
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

BODY KN(radam_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, size_t n,
                    MAGT *seen, const bool track)
{
    radam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd;
    T b1 = (T)sc.b1, omb1 = (T)sc.omb1;
    T b2 = (T)sc.b2, omb2 = (T)sc.omb2;
    T bc1 = (T)sc.bc1, lr = (T)sc.lr, rect = (T)sc.rect;
    T sbc2 = (T)sc.sbc2, eps = (T)sc.eps;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    bool use_wd = sc.wd != 0.0;
#define RADAM(w, r) \
    KN(radam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc1, lr, rect, sbc2, eps, seen, w, r, track)
    if (use_wd) {
        if (sc.use_rect) RADAM(true, true); else RADAM(true, false);
    } else {
        if (sc.use_rect) RADAM(false, true); else RADAM(false, false);
    }
#undef RADAM
}

KERNEL_ENTRY(radam)

#endif
