/* opt_adam.c: torch.optim.Adam and AdamW (amsgrad; Adam's weight decay
 * is added to the gradient, AdamW's decays the parameters). */
#ifndef T /* ---- the descriptors, the plan and the bound ------------------------ */
#include "optim/optimizer.h"

typedef struct adam_sc {
    double wd, decay, b1, omb1, b2, omb2, sbc2, eps, nss;
    bool decoupled, use_amsgrad;
} adam_sc_t;

static const optd_hparam_desc_t hp_adam[] = {
    HP_REAL("lr", lr, 1e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 0), HP_BOOL("amsgrad", amsgrad, 0),
    HP_BOOL("maximize", maximize, 0),
};
static const optd_hparam_desc_t hp_adamw[] = {
    HP_REAL("lr", lr, 1e-3), HP_BETAS(0.9, 0.999), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 1e-2), HP_BOOL("amsgrad", amsgrad, 0),
    HP_BOOL("maximize", maximize, 0),
};

static unsigned adam_option_bufs(const optd_hparams_t *hp)
{
    return hp->amsgrad ? BIT(OPTD_BUF_MAX_EXP_AVG_SQ) : 0;
}

/* The scalars at step td with learning rate lr: AdamW (decoupled) decays
 * the parameters, Adam adds wd * p to the gradient. */
static void plan_either(const optd_plan_in_t *in, bool decoupled, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    const double b1 = hp->betas[0], b2 = hp->betas[1], wd = hp->weight_decay;
    const double lr = in->lr, td = in->td;
    double bc1 = 1 - pow(b1, td), bc2 = 1 - pow(b2, td);
    adam_sc_t sc = {
        .wd = !decoupled ? wd : 0.0,
        .decay = decoupled ? 1 - lr * wd : 1.0,
        .b1 = b1,
        .omb1 = 1 - b1,
        .b2 = b2,
        .omb2 = 1 - b2,
        .sbc2 = sqrt(bc2),
        .eps = hp->eps,
        .nss = -(lr / bc1),
        .decoupled = decoupled,
        .use_amsgrad = hp->amsgrad,
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static void adam_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    plan_either(in, false, plan);
}

static void adamw_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    plan_either(in, true, plan);
}

static bool adam_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    adam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double pv = sc.decoupled ? CK(P * K(sc.decay)) : P;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * pv)) : G;
    double eps = K(sc.eps);
    double m = OUT(OPTD_BUF_EXP_AVG, AVG(M(OPTD_BUF_EXP_AVG), K(sc.b1), K(sc.omb1), D));
    double v = OUT(OPTD_BUF_EXP_AVG_SQ, AVG(M(OPTD_BUF_EXP_AVG_SQ), K(sc.b2), CK(K(sc.omb2) * D), D));
    if (sc.use_amsgrad) {
        double x = M(OPTD_BUF_MAX_EXP_AVG_SQ);
        v = OUT(OPTD_BUF_MAX_EXP_AVG_SQ, x != x ? x : x > v ? x : v);
    }
    CK(DV(sqrt(CK(v)), K(sc.sbc2)) + eps);
    PNEW(pv + DV(CK(K(sc.nss) * m), eps));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_adam.c"
#include "optim/kernel_rule.h"

#define ADAM_BUFS (BIT(OPTD_BUF_EXP_AVG) | BIT(OPTD_BUF_EXP_AVG_SQ))

const optd_optimizer_t optd_optimizer_adam = {
    .desc = {.name = "adam", .kind = OPTD_ADAM, HPARAMS(hp_adam),
             .bufs = ADAM_BUFS | BIT(OPTD_BUF_MAX_EXP_AVG_SQ), .required_bufs = ADAM_BUFS},
    .option_bufs = adam_option_bufs,
    .plan = adam_plan,
    .bound = adam_bound,
    .kernel = OPTD_KERNELS(adam),
};

const optd_optimizer_t optd_optimizer_adamw = {
    .desc = {.name = "adamw", .kind = OPTD_ADAMW, HPARAMS(hp_adamw),
             .bufs = ADAM_BUFS | BIT(OPTD_BUF_MAX_EXP_AVG_SQ), .required_bufs = ADAM_BUFS},
    .option_bufs = adam_option_bufs,
    .plan = adamw_plan,
    .bound = adam_bound,
    .kernel = OPTD_KERNELS(adam),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(adam_body)(size_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict v,
                   T *restrict vmax, T gs, T wd, T decay, T b1, T omb1, T b2, T omb2, T sbc2,
                   T eps, T nss, MAGT *restrict seen, const bool use_wd, const bool decoupled,
                   const bool ams, const bool track)
{
    MAGT mp = 0, mm = 0, mv = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        if (decoupled)
            pv = pv * decay; /* adamw: param.mul_(1 - lr*wd) */
        T d = GRAD_IN(i, pv);
        T m1 = m[i] * b1 + omb1 * d;
        T vv = v[i] * b2 + (omb2 * d) * d;
        m[i] = m1;
        v[i] = vv;
        KEEP_MAX(mm, m1);
        KEEP_MAX(mv, vv);
        if (ams) {
            T x = vmax[i];
            x = x < vv ? vv : x;
            vmax[i] = x;
            KEEP_MAX(mx, x);
            vv = x;
        }
        T den = SQRT(vv) / sbc2 + eps;
        T np = pv + (nss * m1) / den;
        p[i] = np;
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_EXP_AVG] = mm;
    if (track)
        seen[OPTD_BUF_EXP_AVG_SQ] = mv;
    if (track && ams)
        seen[OPTD_BUF_MAX_EXP_AVG_SQ] = mx;
}

BODY KN(adam_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, size_t n,
                   MAGT *seen, const bool track)
{
    adam_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd, decay = (T)sc.decay;
    T b1 = (T)sc.b1, omb1 = (T)sc.omb1;
    T b2 = (T)sc.b2, omb2 = (T)sc.omb2;
    T sbc2 = (T)sc.sbc2, eps = (T)sc.eps, nss = (T)sc.nss;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    T *vmax = bufs[OPTD_BUF_MAX_EXP_AVG_SQ];
    bool use_wd = sc.wd != 0.0, decoupled = sc.decoupled;
#define ADAM(w, dc, a)                                                                      \
    KN(adam_body)(n, p, g, m, v, vmax, gs, wd, decay, b1, omb1, b2, omb2, sbc2, eps, nss, seen, \
                  w, dc, a, track)
    if (decoupled) {
        if (sc.use_amsgrad) ADAM(false, true, true); else ADAM(false, true, false);
    } else if (use_wd) {
        if (sc.use_amsgrad) ADAM(true, false, true); else ADAM(true, false, false);
    } else {
        if (sc.use_amsgrad) ADAM(false, false, true); else ADAM(false, false, false);
    }
#undef ADAM
}

KERNEL_ENTRY(adam)

#endif
