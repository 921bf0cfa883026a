/* opt_rmsprop.c: torch.optim.RMSprop (centered, momentum, weight decay). */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct rmsprop_sc {
    double wd, alpha, oma, eps, mom, nlr;
    bool use_momentum, use_centered;
} rmsprop_sc_t;

static const optd_hparam_desc_t hp_rmsprop[] = {
    HP_REAL("lr", lr, 1e-2), HP_REAL("alpha", alpha, 0.99), HP_REAL("eps", eps, 1e-8),
    HP_REAL("weight_decay", weight_decay, 0), HP_REAL("momentum", momentum, 0),
    HP_BOOL("centered", centered, 0), HP_BOOL("maximize", maximize, 0),
};

static unsigned rmsprop_option_bufs(const optd_hparams_t *hp)
{
    return (hp->centered ? BIT(OPTD_BUF_GRAD_AVG) : 0) |
           (hp->momentum > 0 ? BIT(OPTD_BUF_MOMENTUM_BUFFER) : 0);
}

static void rmsprop_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    rmsprop_sc_t sc = {
        .wd = hp->weight_decay,
        .alpha = hp->alpha,
        .oma = 1 - hp->alpha,
        .eps = hp->eps,
        .mom = hp->momentum,
        .nlr = -in->lr,
        .use_momentum = hp->momentum > 0,
        .use_centered = hp->centered,
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

/* The centered variant takes a root of a difference and alpha > 1 makes
 * square_avg's update subtract: those always take the careful path. */
static bool rmsprop_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    rmsprop_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    if (sc.use_centered || sc.oma < 0)
        return false;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G;
    double eps = K(sc.eps);
    double S = OUT(OPTD_BUF_SQUARE_AVG, AVG(M(OPTD_BUF_SQUARE_AVG), K(sc.alpha), CK(K(sc.oma) * D), D));
    CK(sqrt(S) + eps);
    if (sc.use_momentum) {
        double B = OUT(OPTD_BUF_MOMENTUM_BUFFER,
                       CK(CK(M(OPTD_BUF_MOMENTUM_BUFFER) * K(sc.mom)) + DV(D, eps)));
        PNEW(P + CK(K(sc.nlr) * B));
    } else {
        PNEW(P + DV(CK(K(sc.nlr) * D), eps));
    }
    return true;
}

#define OPTD_RULE_FILE "optim/opt_rmsprop.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_rmsprop = {
    .desc = {.name = "rmsprop", .kind = OPTD_RMSPROP, HPARAMS(hp_rmsprop),
             .bufs = BIT(OPTD_BUF_SQUARE_AVG) | BIT(OPTD_BUF_GRAD_AVG) | BIT(OPTD_BUF_MOMENTUM_BUFFER),
             .required_bufs = BIT(OPTD_BUF_SQUARE_AVG)},
    .option_bufs = rmsprop_option_bufs,
    .plan = rmsprop_plan,
    .bound = rmsprop_bound,
    .kernel = OPTD_KERNELS(rmsprop),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

BODY KN(rmsprop_body)(size_t n, T *restrict p, const T *restrict g, T *restrict sq,
                      T *restrict ga, T *restrict buf, T gs, T wd, T alpha, T oma, T eps, T mom,
                      T nlr, MAGT *restrict seen, const bool use_wd, const bool centered,
                      const bool use_mom, const bool track)
{
    MAGT mp = 0, ms = 0, ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        T s = sq[i] * alpha + (oma * d) * d;
        sq[i] = s;
        KEEP_MAX(ms, s);
        T avg;
        if (centered) {
            T a = ga[i] * alpha + oma * d;
            ga[i] = a;
            KEEP_MAX(ma, a);
            avg = SQRT(s - a * a); /* addcmul(ga, ga, value=-1) */
        } else {
            avg = SQRT(s);
        }
        avg = avg + eps;
        T np;
        if (use_mom) {
            T b = buf[i] * mom + d / avg;
            buf[i] = b;
            KEEP_MAX(mb, b);
            np = pv + nlr * b;
        } else {
            np = pv + (nlr * d) / avg;
        }
        p[i] = np;
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track)
        seen[OPTD_BUF_SQUARE_AVG] = ms;
    if (track && centered)
        seen[OPTD_BUF_GRAD_AVG] = ma;
    if (track && use_mom)
        seen[OPTD_BUF_MOMENTUM_BUFFER] = mb;
}

BODY KN(rmsprop_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g,
                      size_t n, MAGT *seen, const bool track)
{
    rmsprop_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd, alpha = (T)sc.alpha;
    T oma = (T)sc.oma, eps = (T)sc.eps, mom = (T)sc.mom;
    T nlr = (T)sc.nlr;
    T *sq = bufs[OPTD_BUF_SQUARE_AVG], *ga = bufs[OPTD_BUF_GRAD_AVG];
    T *buf = bufs[OPTD_BUF_MOMENTUM_BUFFER];
    bool use_wd = sc.wd != 0.0;
#define RMS(w, c, m) \
    KN(rmsprop_body)(n, p, g, sq, ga, buf, gs, wd, alpha, oma, eps, mom, nlr, seen, w, c, m, track)
    if (use_wd) {
        if (sc.use_centered) {
            if (sc.use_momentum) RMS(true, true, true); else RMS(true, true, false);
        } else {
            if (sc.use_momentum) RMS(true, false, true); else RMS(true, false, false);
        }
    } else {
        if (sc.use_centered) {
            if (sc.use_momentum) RMS(false, true, true); else RMS(false, true, false);
        } else {
            if (sc.use_momentum) RMS(false, false, true); else RMS(false, false, false);
        }
    }
#undef RMS
}

KERNEL_ENTRY(rmsprop)

#endif
