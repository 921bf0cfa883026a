/* opt_sgd.c: torch.optim.SGD (momentum, dampening, nesterov, weight decay),
 * with PyTorch's sparse rule for rows steps (momentum 0, weight_decay 0). */
#ifndef T /* ---- the descriptor, the plan and the bound ------------------------- */
#include "optim/optimizer.h"

typedef struct sgd_sc {
    double wd, mom, damp1, nlr;
    bool use_momentum, use_nesterov, first_momentum;
} sgd_sc_t;

static const optd_hparam_desc_t hp_sgd[] = {
    HP_REAL("lr", lr, 1e-3), HP_REAL("momentum", momentum, 0),
    HP_REAL("dampening", dampening, 0), HP_REAL("weight_decay", weight_decay, 0),
    HP_BOOL("nesterov", nesterov, 0), HP_BOOL("maximize", maximize, 0),
};

static unsigned sgd_option_bufs(const optd_hparams_t *hp)
{
    return hp->momentum != 0 ? BIT(OPTD_BUF_MOMENTUM_BUFFER) : 0;
}

static int sgd_validate(const optd_hparams_t *hp, optd_err_t *err)
{
    if (hp->nesterov && !(hp->momentum > 0 && hp->dampening == 0))
        return optd_err_set(err, OPTD_EINVAL,
                            "nesterov requires momentum > 0 and dampening = 0 "
                            "(momentum is %g, dampening %g)",
                            hp->momentum, hp->dampening);
    return 0;
}

static int sgd_rows_options(const optd_hparams_t *hp, optd_err_t *err)
{
    if (hp->momentum != 0 || hp->weight_decay != 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "a rows step on sgd needs momentum 0 and weight_decay 0 (PyTorch's "
                            "sparse SGD); this session has momentum %g, weight_decay %g",
                            hp->momentum, hp->weight_decay);
    return 0;
}

static void sgd_plan(const optd_plan_in_t *in, optd_step_plan_t *plan)
{
    const optd_hparams_t *hp = in->hp;
    bool use_momentum = hp->momentum != 0;
    sgd_sc_t sc = {
        .wd = hp->weight_decay,
        .mom = hp->momentum,
        .damp1 = 1 - hp->dampening,
        .nlr = -in->lr,
        .use_momentum = use_momentum,
        .use_nesterov = hp->nesterov,
        .first_momentum = use_momentum && in->momentum_fresh,
    };
    OPTD_SCALARS_PUT(plan, sc);
    plan->track = sc.wd != 0;
}

static bool sgd_bound(optd_bound_t *b, const optd_step_plan_t *pl)
{
    sgd_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    double P = b->P, G = b->G;
    double D = sc.wd != 0 ? CK(G + CK(K(sc.wd) * P)) : G, d = D;
    if (sc.use_momentum) {
        double mom = K(sc.mom);
        double B = OUT(OPTD_BUF_MOMENTUM_BUFFER,
                       sc.first_momentum ? D : AVG(M(OPTD_BUF_MOMENTUM_BUFFER), mom, K(sc.damp1), D));
        d = sc.use_nesterov ? CK(D + CK(mom * B)) : B;
    }
    PNEW(P + CK(K(sc.nlr) * d));
    return true;
}

#define OPTD_RULE_FILE "optim/opt_sgd.c"
#include "optim/kernel_rule.h"

const optd_optimizer_t optd_optimizer_sgd = {
    .desc = {.name = "sgd", .kind = OPTD_SGD, HPARAMS(hp_sgd),
             .bufs = BIT(OPTD_BUF_MOMENTUM_BUFFER), .required_bufs = 0, .sparse_rows = true},
    .option_bufs = sgd_option_bufs,
    .validate = sgd_validate,
    .rows_options = sgd_rows_options,
    .rows_note = "momentum 0, weight_decay 0",
    .momentum_from_grad = true,
    .plan = sgd_plan,
    .bound = sgd_bound,
    .kernel = OPTD_KERNELS(sgd),
};

#else /* ---- the kernel, once per dtype (kernel_rule.h) ---------------------- */

/* mode 0: no momentum; 1: first momentum step (buf = d); 2: momentum. */
BODY KN(sgd_body)(size_t n, T *restrict p, const T *restrict g, T *restrict buf, T gs, T wd,
                  T mom, T damp1, T nlr, MAGT *restrict seen, const bool use_wd, const int mode,
                  const bool nest, const bool track)
{
    MAGT mp = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        T pv = p[i];
        T d = GRAD_IN(i, pv);
        if (mode == 1) {
            buf[i] = d;
            KEEP_MAX(mb, d);
            if (nest)
                d = d + mom * d;
        } else if (mode == 2) {
            T b = buf[i] * mom + damp1 * d;
            buf[i] = b;
            KEEP_MAX(mb, b);
            d = nest ? d + mom * b : b;
        }
        T np = pv + nlr * d;
        p[i] = np;
        KEEP_MAX(mp, np);
    }
    if (track)
        seen[SEEN_P] = mp;
    if (track && mode != 0)
        seen[OPTD_BUF_MOMENTUM_BUFFER] = mb;
}

BODY KN(sgd_pick)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, size_t n,
                  MAGT *seen, const bool track)
{
    sgd_sc_t sc;
    OPTD_SCALARS_GET(sc, pl);
    T gs = (T)pl->gscale, wd = (T)sc.wd, mom = (T)sc.mom;
    T damp1 = (T)sc.damp1, nlr = (T)sc.nlr;
    T *buf = bufs[OPTD_BUF_MOMENTUM_BUFFER];
    bool use_wd = sc.wd != 0.0;
    int mode = !sc.use_momentum ? 0 : sc.first_momentum ? 1 : 2;
#define SGD(w, m, nv) KN(sgd_body)(n, p, g, buf, gs, wd, mom, damp1, nlr, seen, w, m, nv, track)
    if (mode == 0) {
        if (use_wd) SGD(true, 0, false); else SGD(false, 0, false);
    } else if (sc.use_nesterov) {
        if (mode == 1) {
            if (use_wd) SGD(true, 1, true); else SGD(false, 1, true);
        } else {
            if (use_wd) SGD(true, 2, true); else SGD(false, 2, true);
        }
    } else {
        if (mode == 1) {
            if (use_wd) SGD(true, 1, false); else SGD(false, 1, false);
        } else {
            if (use_wd) SGD(true, 2, false); else SGD(false, 2, false);
        }
    }
#undef SGD
}

KERNEL_ENTRY(sgd)

#endif
