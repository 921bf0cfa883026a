/* opt_sparse_adam.c: torch.optim.SparseAdam, for tables stepped by rows
 * (API.md 1.1, Tables); a dense step is a step of every row. */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct sparse_adam_sc {
    double omb1, omb2, eps, nss;
} sparse_adam_sc_t;

/* torch.optim.SparseAdam's keywords (it has no weight_decay or amsgrad). */
static const optd_hparam_desc_t hp_sparse_adam[] = {
    HP_REAL("lr", lr, 1e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_BOOL("maximize", maximize, 0),
};

static void sparse_adam_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0], b2 = hp->betas[1], td = in->td;
    sparse_adam_sc_t sc = {
        .omb1 = 1 - b1,
        .omb2 = 1 - b2,
        .eps = hp->eps,
        .nss = -(in->lr * sqrt(1 - pow(b2, td)) / (1 - pow(b1, td))),
    };
    OPTD_SCALARS_PUT(plan, sc);
}

/* m + (g - m)*omb1 and v + (g*g - v)*omb2; numer = dm + m. */
static bool sparse_adam_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    sparse_adam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double eps = K(sc.eps), m = M(OPTD_BUF_EXP_AVG), v = M(OPTD_BUF_EXP_AVG_SQ);
    double dm = CK(CK(G + m) * K(sc.omb1));
    OUT(OPTD_BUF_EXP_AVG, CK(m + dm));
    double dv = CK(CK(CK(G * G) + v) * K(sc.omb2));
    OUT(OPTD_BUF_EXP_AVG_SQ, CK(v + dv));
    CK(sqrt(CK(dv + v)) + eps);
    PNEW(P + CK(K(sc.nss) * DV(CK(dm + m), eps)));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_sparse_adam.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_sparse_adam = {
    .desc = {.name = "sparse_adam", .kind = OPTD_SPARSE_ADAM, HPARAMS(hp_sparse_adam),
             .bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ),
             .required_bufs = BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ),
             .sparse_rows = true},
    .plan = sparse_adam_plan,
    .bound = sparse_adam_bound,
    .kernel = OPTD_KERNELS(sparse_adam),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

/* On the rows given (a dense step: every element): the moments move by
 * their update values dm and dv, and numer and denom are rebuilt from
 * those and the old moments, in PyTorch's order. */
BODY KN(sparse_adam_body)(size_t n, T *restrict p, const T *restrict g, T *restrict m,
                          T *restrict v, T gs, T omb1, T omb2, T eps, T nss, MAGT *restrict seen,
                          const bool track)
{
    MAGT mp = 0, mm = 0, mv = 0;
    for (size_t i = 0; i < n; i++) {
        T d = g[i] * gs;
        T m0 = m[i], v0 = v[i];
        T dm = (d - m0) * omb1;
        T m1 = m0 + dm;
        m[i] = m1;
        T dv = (d * d - v0) * omb2;
        T v1 = v0 + dv;
        v[i] = v1;
        T numer = dm + m0;
        T denom = SQRT(dv + v0) + eps;
        T np = p[i] + nss * (numer / denom);
        p[i] = np;
        KEEP_MAX(mm, m1);
        KEEP_MAX(mv, v1);
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_EXP_AVG] = mm;
    if (track)
        seen[OPTD_BUF_EXP_AVG_SQ] = mv;
}

BODY KN(sparse_adam_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g,
                          size_t n, MAGT *seen, const bool track)
{
    sparse_adam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, omb1 = (T)sc.omb1, omb2 = (T)sc.omb2;
    T eps = (T)sc.eps, nss = (T)sc.nss;
    KN(sparse_adam_body)(n, p, g, bufs[OPTD_BUF_EXP_AVG], bufs[OPTD_BUF_EXP_AVG_SQ], gs, omb1, omb2,
                         eps, nss, seen, track);
}

KERNEL_ENTRY(sparse_adam)

#endif
