/* kernels_tmpl.h: the element-wise update rules of OPTIMIZERS.md, written
 * once for both dtypes.  kernels_f32.c and kernels_f64.c include it with
 *     T     the element type (float, double)
 *     SFX   the name suffix (f32, f64)
 *     SQRT  the square root of T (sqrtf, sqrt; -fno-math-errno makes it an
 *           instruction, so the loops vectorize)
 *     MAGT, MAG_MASK  the signed integer type of T's width and the mask that
 *           clears its sign bit (see KN(mag))
 * defined.  No include guard: it is meant to be included once per dtype.
 *
 * Each rule follows PyTorch's single-tensor operation order (torch/optim/
 * *.py, 1.13; nadam as 2.x), e.g. `exp_avg.mul_(b1).add_(g, alpha=1-b1)` is
 * m*b1 + (1-b1)*g and `addcdiv_(a, b, value=v)` is p + (v*a)/b, so a float32
 * session rounds where PyTorch rounds.  The per-step scalars arrive in
 * double (plan->c, see kernels.h) and are rounded to T once here.
 *
 * Every rule is a static always-inline body whose option flags are
 * compile-time constants at each call site, so each combination of options
 * becomes its own branch-free loop that the compiler vectorizes; the public
 * entry point only picks the combination. */

#define KN2(a, b) a##_##b
#define KN1(a, b) KN2(a, b)
#define KN(name) KN1(name, SFX)

#define BODY static inline __attribute__((always_inline)) void

/* Gradient as the rule sees it: clipped, maybe negated (gs), plus coupled
 * weight decay when wd is on (PyTorch: grad.add(param, alpha=wd)). */
#define GRAD_IN(i, pv) (use_wd ? g[i] * gs + wd * (pv) : g[i] * gs)

/* |x| as an integer that orders as |x| does, with +-Inf and NaN above every
 * finite value.  With `track` (a compile-time constant: the update checked
 * aside, see optim.c), each rule keeps the largest magnitude it writes to
 * every array as an integer max, which the compiler vectorizes (a float max
 * it may not reorder, for NaN's sake); without, the loop is the plain
 * update. */
static inline __attribute__((always_inline)) MAGT KN(mag)(T x)
{
    MAGT u;
    memcpy(&u, &x, sizeof u);
    return u & MAG_MASK;
}
#define KEEP_MAX(acc, x)                  \
    do {                                  \
        if (track) {                      \
            MAGT m_ = KN(mag)(x);         \
            acc = acc < m_ ? m_ : acc;    \
        }                                 \
    } while (0)
#define SEEN_P OPTD_BUF_COUNT /* seen[] slot of the parameters */

/* The kernel the dispatcher calls: the body specialised once for a step
 * that records the largest magnitudes it writes (seen non-NULL) and once
 * for one that does not, so the plain loop carries no tracking. */
#define KERNEL_ENTRY(name)                                                                 \
    OPTD_KERNEL KN(name)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g, \
                         size_t n, MAGT *seen)                                             \
    {                                                                                      \
        if (seen)                                                                          \
            KN(name##_pick)(pl, bufs, p, g, n, seen, true);                                \
        else                                                                               \
            KN(name##_pick)(pl, bufs, p, g, n, seen, false);                               \
    }

/* ---- sgd ----------------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.sgd.wd, mom = (T)pl->sc.sgd.mom;
    T damp1 = (T)pl->sc.sgd.damp1, nlr = (T)pl->sc.sgd.nlr;
    T *buf = bufs[OPTD_BUF_MOMENTUM_BUFFER];
    bool use_wd = pl->sc.sgd.wd != 0.0;
    int mode = !pl->use_momentum ? 0 : pl->first_momentum ? 1 : 2;
#define SGD(w, m, nv) KN(sgd_body)(n, p, g, buf, gs, wd, mom, damp1, nlr, seen, w, m, nv, track)
    if (mode == 0) {
        if (use_wd) SGD(true, 0, false); else SGD(false, 0, false);
    } else if (pl->use_nesterov) {
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

/* ---- adagrad ------------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.adagrad.wd, eps = (T)pl->sc.adagrad.eps;
    T nclr = (T)pl->sc.adagrad.nclr;
    T *sum = bufs[OPTD_BUF_SUM];
    if (pl->rows)
        KN(adagrad_rows_body)(n, p, g, sum, gs, eps, nclr, seen, track);
    else if (pl->sc.adagrad.wd != 0.0)
        KN(adagrad_body)(n, p, g, sum, gs, wd, eps, nclr, seen, true, track);
    else
        KN(adagrad_body)(n, p, g, sum, gs, wd, eps, nclr, seen, false, track);
}

KERNEL_ENTRY(adagrad)

/* ---- rmsprop ------------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.rmsprop.wd, alpha = (T)pl->sc.rmsprop.alpha;
    T oma = (T)pl->sc.rmsprop.oma, eps = (T)pl->sc.rmsprop.eps, mom = (T)pl->sc.rmsprop.mom;
    T nlr = (T)pl->sc.rmsprop.nlr;
    T *sq = bufs[OPTD_BUF_SQUARE_AVG], *ga = bufs[OPTD_BUF_GRAD_AVG];
    T *buf = bufs[OPTD_BUF_MOMENTUM_BUFFER];
    bool use_wd = pl->sc.rmsprop.wd != 0.0;
#define RMS(w, c, m) \
    KN(rmsprop_body)(n, p, g, sq, ga, buf, gs, wd, alpha, oma, eps, mom, nlr, seen, w, c, m, track)
    if (use_wd) {
        if (pl->use_centered) {
            if (pl->use_momentum) RMS(true, true, true); else RMS(true, true, false);
        } else {
            if (pl->use_momentum) RMS(true, false, true); else RMS(true, false, false);
        }
    } else {
        if (pl->use_centered) {
            if (pl->use_momentum) RMS(false, true, true); else RMS(false, true, false);
        } else {
            if (pl->use_momentum) RMS(false, false, true); else RMS(false, false, false);
        }
    }
#undef RMS
}

KERNEL_ENTRY(rmsprop)

/* ---- adam, adamw ----------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.adam.wd, decay = (T)pl->sc.adam.decay;
    T b1 = (T)pl->sc.adam.b1, omb1 = (T)pl->sc.adam.omb1;
    T b2 = (T)pl->sc.adam.b2, omb2 = (T)pl->sc.adam.omb2;
    T sbc2 = (T)pl->sc.adam.sbc2, eps = (T)pl->sc.adam.eps, nss = (T)pl->sc.adam.nss;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    T *vmax = bufs[OPTD_BUF_MAX_EXP_AVG_SQ];
    bool use_wd = pl->sc.adam.wd != 0.0, decoupled = pl->kind == OPTD_ADAMW;
#define ADAM(w, dc, a)                                                                      \
    KN(adam_body)(n, p, g, m, v, vmax, gs, wd, decay, b1, omb1, b2, omb2, sbc2, eps, nss, seen, \
                  w, dc, a, track)
    if (decoupled) {
        if (pl->use_amsgrad) ADAM(false, true, true); else ADAM(false, true, false);
    } else if (use_wd) {
        if (pl->use_amsgrad) ADAM(true, false, true); else ADAM(true, false, false);
    } else {
        if (pl->use_amsgrad) ADAM(false, false, true); else ADAM(false, false, false);
    }
#undef ADAM
}

KERNEL_ENTRY(adam)

/* ---- adamax -------------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.adamax.wd;
    T b1 = (T)pl->sc.adamax.b1, omb1 = (T)pl->sc.adamax.omb1, b2 = (T)pl->sc.adamax.b2;
    T eps = (T)pl->sc.adamax.eps, nclr = (T)pl->sc.adamax.nclr;
    T *m = bufs[OPTD_BUF_EXP_AVG], *ei = bufs[OPTD_BUF_EXP_INF];
    if (pl->sc.adamax.wd != 0.0)
        KN(adamax_body)(n, p, g, m, ei, gs, wd, b1, omb1, b2, eps, nclr, seen, true, track);
    else
        KN(adamax_body)(n, p, g, m, ei, gs, wd, b1, omb1, b2, eps, nclr, seen, false, track);
}

KERNEL_ENTRY(adamax)

/* ---- nadam (PyTorch 2.x) --------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.nadam.wd;
    T b1 = (T)pl->sc.nadam.b1, omb1 = (T)pl->sc.nadam.omb1;
    T b2 = (T)pl->sc.nadam.b2, omb2 = (T)pl->sc.nadam.omb2;
    T bc2 = (T)pl->sc.nadam.bc2, eps = (T)pl->sc.nadam.eps;
    T cg = (T)pl->sc.nadam.cg, cm = (T)pl->sc.nadam.cm;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    if (pl->sc.nadam.wd != 0.0)
        KN(nadam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc2, eps, cg, cm, seen, true, track);
    else
        KN(nadam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc2, eps, cg, cm, seen, false, track);
}

KERNEL_ENTRY(nadam)

/* ---- radam --------------------------------------------------------------- */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.radam.wd;
    T b1 = (T)pl->sc.radam.b1, omb1 = (T)pl->sc.radam.omb1;
    T b2 = (T)pl->sc.radam.b2, omb2 = (T)pl->sc.radam.omb2;
    T bc1 = (T)pl->sc.radam.bc1, lr = (T)pl->sc.radam.lr, rect = (T)pl->sc.radam.rect;
    T sbc2 = (T)pl->sc.radam.sbc2, eps = (T)pl->sc.radam.eps;
    T *m = bufs[OPTD_BUF_EXP_AVG], *v = bufs[OPTD_BUF_EXP_AVG_SQ];
    bool use_wd = pl->sc.radam.wd != 0.0;
#define RADAM(w, r) \
    KN(radam_body)(n, p, g, m, v, gs, wd, b1, omb1, b2, omb2, bc1, lr, rect, sbc2, eps, seen, w, r, track)
    if (use_wd) {
        if (pl->radam_rect) RADAM(true, true); else RADAM(true, false);
    } else {
        if (pl->radam_rect) RADAM(false, true); else RADAM(false, false);
    }
#undef RADAM
}

KERNEL_ENTRY(radam)

/* ---- adadelta ------------------------------------------------------------ */

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
    T gs = (T)pl->gscale, wd = (T)pl->sc.adadelta.wd, rho = (T)pl->sc.adadelta.rho;
    T omr = (T)pl->sc.adadelta.omr, eps = (T)pl->sc.adadelta.eps, nlr = (T)pl->sc.adadelta.nlr;
    T *sq = bufs[OPTD_BUF_SQUARE_AVG], *acc = bufs[OPTD_BUF_ACC_DELTA];
    if (pl->sc.adadelta.wd != 0.0)
        KN(adadelta_body)(n, p, g, sq, acc, gs, wd, rho, omr, eps, nlr, seen, true, track);
    else
        KN(adadelta_body)(n, p, g, sq, acc, gs, wd, rho, omr, eps, nlr, seen, false, track);
}

KERNEL_ENTRY(adadelta)

/* ---- lion ---------------------------------------------------------------- */

BODY KN(lion_pick)(const optd_step_plan_t *pl, void *const bufs[], T *restrict p,
                     const T *restrict g, size_t n, MAGT *seen, const bool track)
{
    T gs = (T)pl->gscale, decay = (T)pl->sc.lion.decay;
    T b1 = (T)pl->sc.lion.b1, omb1 = (T)pl->sc.lion.omb1;
    T b2 = (T)pl->sc.lion.b2, omb2 = (T)pl->sc.lion.omb2, lr = (T)pl->sc.lion.lr;
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

/* ---- sparse_adam ---------------------------------------------------------- */

/* torch.optim.SparseAdam on the rows given (a dense step: every element):
 * the moments move by their update values dm and dv, and numer and denom
 * are rebuilt from those and the old moments, in PyTorch's order. */
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
    T gs = (T)pl->gscale, omb1 = (T)pl->sc.sparse_adam.omb1, omb2 = (T)pl->sc.sparse_adam.omb2;
    T eps = (T)pl->sc.sparse_adam.eps, nss = (T)pl->sc.sparse_adam.nss;
    KN(sparse_adam_body)(n, p, g, bufs[OPTD_BUF_EXP_AVG], bufs[OPTD_BUF_EXP_AVG_SQ], gs, omb1, omb2,
                         eps, nss, seen, track);
}

KERNEL_ENTRY(sparse_adam)

/* ---- entry points ---------------------------------------------------------- */

void KN(optd_kernel_apply)(const optd_step_plan_t *plan, void *const buf[OPTD_BUF_COUNT], T *p,
                           const T *g, size_t n, double seen_out[OPTD_BUF_COUNT + 1])
{
    MAGT track[OPTD_BUF_COUNT + 1], *seen = seen_out ? track : NULL;
    for (int k = 0; k <= OPTD_BUF_COUNT; k++)
        track[k] = -1; /* not written */
    switch (plan->kind) {
    case OPTD_SGD: KN(sgd)(plan, buf, p, g, n, seen); break;
    case OPTD_ADAGRAD: KN(adagrad)(plan, buf, p, g, n, seen); break;
    case OPTD_RMSPROP: KN(rmsprop)(plan, buf, p, g, n, seen); break;
    case OPTD_ADAM:
    case OPTD_ADAMW: KN(adam)(plan, buf, p, g, n, seen); break;
    case OPTD_ADAMAX: KN(adamax)(plan, buf, p, g, n, seen); break;
    case OPTD_NADAM: KN(nadam)(plan, buf, p, g, n, seen); break;
    case OPTD_RADAM: KN(radam)(plan, buf, p, g, n, seen); break;
    case OPTD_ADADELTA: KN(adadelta)(plan, buf, p, g, n, seen); break;
    case OPTD_LION: KN(lion)(plan, buf, p, g, n, seen); break;
    case OPTD_SPARSE_ADAM: KN(sparse_adam)(plan, buf, p, g, n, seen); break;
    case OPTD_OPTIM_COUNT: break;
    }
    for (int k = 0; seen && k <= OPTD_BUF_COUNT; k++) {
        T x;
        memcpy(&x, &track[k], sizeof x);
        seen_out[k] = track[k] < 0 ? -1.0 : (double)x;
    }
}

/* Lanes of independent partial sums: a single running sum is one long
 * dependency chain that cannot be vectorized without reordering; with LANES
 * sums the order is fixed (so results are reproducible) and the compiler
 * maps the lanes onto vector registers.  x - x is +0 for every finite x and
 * NaN for NaN and +-Inf, so summing it detects non-finite values in the same
 * pass without a branch, also for float64 values whose square overflows. */
#define LANES 16

/* The lanes are locals of the cloned function, so they live in registers
 * through the loop; the caller gets them at the end. */
OPTD_KERNEL KN(sumsq_lanes)(const T *restrict g, size_t n, double *restrict acc_out,
                            T *restrict bad_out)
{
    double acc[LANES] = {0};
    T bad[LANES] = {0};
    for (size_t i = 0; i + LANES <= n; i += LANES)
        for (size_t j = 0; j < LANES; j++) {
            double x = (double)g[i + j];
            acc[j] += x * x;
            bad[j] += g[i + j] - g[i + j];
        }
    for (size_t j = 0; j < LANES; j++) {
        acc_out[j] = acc[j];
        bad_out[j] = bad[j];
    }
}

double KN(optd_kernel_sumsq)(const T *g, size_t n, bool *finite)
{
    double acc[LANES];
    T bad[LANES];
    size_t body = n - n % LANES;
    KN(sumsq_lanes)(g, body, acc, bad);
    double s = 0;
    T b = 0;
    for (size_t j = 0; j < LANES; j++) {
        s += acc[j];
        b += bad[j];
    }
    for (size_t i = body; i < n; i++) {
        double x = (double)g[i];
        s += x * x;
        b += g[i] - g[i];
    }
    if (!(b == 0))
        *finite = false;
    return s;
}

bool KN(optd_kernel_finite)(const T *v, size_t n)
{
    T bad[LANES] = {0};
    size_t body = n - n % LANES;
    for (size_t i = 0; i < body; i += LANES)
        for (size_t j = 0; j < LANES; j++)
            bad[j] += v[i + j] - v[i + j];
    T b = 0;
    for (size_t j = 0; j < LANES; j++)
        b += bad[j];
    for (size_t i = body; i < n; i++)
        b += v[i] - v[i];
    return b == 0;
}

#undef LANES
#undef GRAD_IN
#undef KEEP_MAX
#undef SEEN_P
#undef BODY
#undef KN
#undef KN1
#undef KN2
#undef KERNEL_ENTRY
