/* opt_lion.c: Lion (Chen et al., 2023; OPTIMIZERS.md), with decoupled
 * weight decay. */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct lion_sc {
    double decay, b1, omb1, b2, omb2, lr;
} lion_sc_t;

static const optd_hparam_desc_t hp_lion[] = {
    HP_REAL("lr", lr, 1e-4), HP_BETAS(0.9, 0.99), HP_REAL("weight_decay", weight_decay, 0),
    HP_BOOL("maximize", maximize, 0),
};

/* Decoupled decay: no wd * p in the gradient, so plan->track stays off. */
static void lion_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0], b2 = hp->betas[1];
    lion_sc_t sc = {
        .decay = 1 - in->lr * hp->weight_decay,
        .b1 = b1,
        .omb1 = 1 - b1,
        .b2 = b2,
        .omb2 = 1 - b2,
        .lr = in->lr,
    };
    OPTD_SCALARS_PUT(plan, sc);
}

static bool lion_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    lion_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double m = M(OPTD_BUF_EXP_AVG);
    AVG(m, K(sc.b1), K(sc.omb1), G);
    OUT(OPTD_BUF_EXP_AVG, AVG(m, K(sc.b2), K(sc.omb2), G));
    PNEW(CK(P * K(sc.decay)) + K(sc.lr));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_lion.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_lion = {
    .desc = {.name = "lion", .kind = OPTD_LION, HPARAMS(hp_lion), .bufs = BIT(OPTD_BUF_EXP_AVG),
             .required_bufs = BIT(OPTD_BUF_EXP_AVG)},
    .plan = lion_plan,
    .bound = lion_bound,
    .kernel = OPTD_KERNELS(lion),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(lion_pick)(const optd_step_plan_t *pl, void *const bufs[], T *restrict p,
                   const T *restrict g, size_t n, MAGT *seen, const bool track)
{
    lion_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, decay = (T)sc.decay;
    T b1 = (T)sc.b1, omb1 = (T)sc.omb1;
    T b2 = (T)sc.b2, omb2 = (T)sc.omb2, lr = (T)sc.lr;
    T *restrict m = bufs[OPTD_BUF_EXP_AVG];
    MAGT mp = 0, mm = 0;
    for (size_t i = 0; i < n; i++) {
        T d = g[i] * gs;
        T mv = m[i];
        T c = b1 * mv + omb1 * d;
        T s = c > 0 ? lr : c < 0 ? -lr : (T)0; /* lr*sign(c), sign(0) = 0 */
        T np = p[i] * decay - s;
        T m1 = b2 * mv + omb2 * d;
        p[i] = np;
        m[i] = m1;
        KEEP_MAX(mp, np);
        KEEP_MAX(mm, m1);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_EXP_AVG] = mm;
}

KERNEL_ENTRY(lion)

#endif
