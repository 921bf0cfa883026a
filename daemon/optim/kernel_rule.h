/* kernel_rule.h: builds the kernel of one optimizer file for both dtypes.
 *
 * An optimizer file (opt_NAME.c) holds its element-wise rule in a second
 * half guarded by `#ifdef T`; after the first half it defines
 * OPTD_RULE_FILE as its own name and includes this header, which reads
 * that second half once with each of
 *     T     the element type (float, double)
 *     SFX   the name suffix (f32, f64)
 *     SQRT  the square root of T (sqrtf, sqrt; -fno-math-errno makes it an
 *           instruction, so the loops vectorize)
 *     MAGT, MAG_MASK  the signed integer type of T's width and the mask that
 *           clears its sign bit (see KN(mag))
 * defined.  KERNEL_ENTRY(name) in that half makes name_apply_f32 and
 * name_apply_f64, which OPTD_KERNELS(name) (optimizer.h) puts in the
 * descriptor.
 *
 * Each rule follows PyTorch's single-tensor operation order (torch/optim/
 * *.py, 1.13; nadam as 2.x), e.g. `exp_avg.mul_(b1).add_(g, alpha=1-b1)` is
 * m*b1 + (1-b1)*g and `addcdiv_(a, b, value=v)` is p + (v*a)/b, so a float32
 * session rounds where PyTorch rounds.  The per-step scalars arrive in
 * double (the optimizer's scalars struct in plan->sc) and are rounded to T
 * once in the kernel.
 *
 * Every rule is a static always-inline body whose option flags are
 * compile-time constants at each call site, so each combination of options
 * becomes its own branch-free loop that the compiler vectorizes; the entry
 * point only picks the combination. */
#ifndef OPTD_RULE_FILE
#error "define OPTD_RULE_FILE (the optimizer file's own name) before including kernel_rule.h"
#endif

#include "optim/kernels_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#define KN2(a, b) a##_##b
#define KN1(a, b) KN2(a, b)
#define KN(name) KN1(name, SFX)

#define BODY static inline __attribute__((always_inline)) void

/* Gradient as the rule sees it: clipped, maybe negated (gs), plus coupled
 * weight decay when wd is on (PyTorch: grad.add(param, alpha=wd)). */
#define GRAD_IN(i, pv) (use_wd ? g[i] * gs + wd * (pv) : g[i] * gs)

/* With `track` (a compile-time constant: the update checked aside, see
 * optim.c), each rule keeps the largest magnitude it writes to every array
 * as an integer max (KN(mag)), which the compiler vectorizes (a float max
 * it may not reorder, for NaN's sake); without, the loop is the plain
 * update. */
#define KEEP_MAX(acc, x)                  \
    do {                                  \
        if (track) {                      \
            MAGT m_ = KN(mag)(x);         \
            acc = acc < m_ ? m_ : acc;    \
        }                                 \
    } while (0)
#define SEEN_P OPTD_BUF_COUNT /* seen[] slot of the parameters */

/* The kernel of name: name_pick(pl, bufs, p, g, n, seen, track) specialised
 * once for a step that records the largest magnitudes it writes (seen
 * non-NULL) and once for one that does not, so the plain loop carries no
 * tracking; and name_apply, its optd_kernel_fn, which turns what it kept
 * into seen_out[b]: the largest magnitude written to buffer b
 * (seen_out[OPTD_BUF_COUNT]: to p), +Inf or NaN if it wrote a non-finite
 * value, and -1 for a buffer it did not write. */
#define KERNEL_ENTRY(name)                                                                    \
    OPTD_KERNEL KN(name)(const optd_step_plan_t *pl, void *const bufs[], T *p, const T *g,    \
                         size_t n, MAGT *seen)                                                \
    {                                                                                         \
        if (seen)                                                                             \
            KN(name##_pick)(pl, bufs, p, g, n, seen, true);                                   \
        else                                                                                  \
            KN(name##_pick)(pl, bufs, p, g, n, seen, false);                                  \
    }                                                                                         \
    static void KN(name##_apply)(const optd_step_plan_t *plan, void *const buf[OPTD_BUF_COUNT], \
                                 void *p, const void *g, size_t n,                            \
                                 double seen_out[OPTD_BUF_COUNT + 1])                         \
    {                                                                                         \
        MAGT track[OPTD_BUF_COUNT + 1], *seen = seen_out ? track : NULL;                      \
        for (int k = 0; k <= OPTD_BUF_COUNT; k++)                                             \
            track[k] = -1; /* not written */                                                  \
        KN(name)(plan, buf, p, g, n, seen);                                                   \
        for (int k = 0; seen && k <= OPTD_BUF_COUNT; k++) {                                   \
            T x;                                                                              \
            memcpy(&x, &track[k], sizeof x);                                                  \
            seen_out[k] = track[k] < 0 ? -1.0 : (double)x;                                    \
        }                                                                                     \
    }

#define T float
#define SFX f32
#define SQRT sqrtf
#define MAGT int32_t
#define MAG_MASK 0x7fffffff
#include "optim/kernel_dtype.h"
#undef T
#undef SFX
#undef SQRT
#undef MAGT
#undef MAG_MASK

#define T double
#define SFX f64
#define SQRT sqrt
#define MAGT int64_t
#define MAG_MASK 0x7fffffffffffffff
#include "optim/kernel_dtype.h"
#undef T
#undef SFX
#undef SQRT
#undef MAGT
#undef MAG_MASK

#undef GRAD_IN
#undef KEEP_MAX
#undef SEEN_P
#undef BODY
#undef KN
#undef KN1
#undef KN2
#undef KERNEL_ENTRY
#undef OPTD_RULE_FILE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
