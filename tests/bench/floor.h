/* floor.h: the memory-bandwidth floor of the benchmarks: plain streaming
 * loops that read and write as many arrays of the dtype as an update does
 * (adam: reads p, g, m, v and writes p, m, v), over a range [lo, hi), so
 * the figure says how far an update is from what the memory system allows
 * with one thread (bench_optim) or with several (bench_threads).
 *
 * Header-only for the benchmark programs.  The loops get the same
 * vectorizer settings as the kernels (daemon/optim/kernels_common.h), so
 * the floor is the best plain loop: include this before anything else. */
#ifndef OPTD_BENCH_FLOOR_H
#define OPTD_BENCH_FLOOR_H

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <stddef.h>

#include "optd/optim.h"

#define FLOOR_LOOPS(T, SFX)                                                                  \
    static void floor_2r1w_##SFX(size_t n, T *restrict p, const T *restrict g)              \
    {                                                                                        \
        for (size_t i = 0; i < n; i++)                                                       \
            p[i] = p[i] + g[i];                                                              \
    }                                                                                        \
    static void floor_3r2w_##SFX(size_t n, T *restrict p, const T *restrict g,              \
                                 T *restrict a)                                              \
    {                                                                                        \
        for (size_t i = 0; i < n; i++) {                                                     \
            T x = a[i] + g[i];                                                               \
            a[i] = x;                                                                        \
            p[i] = p[i] + x;                                                                 \
        }                                                                                    \
    }                                                                                        \
    static void floor_4r3w_##SFX(size_t n, T *restrict p, const T *restrict g,              \
                                 T *restrict a, T *restrict b)                               \
    {                                                                                        \
        for (size_t i = 0; i < n; i++) {                                                     \
            T x = a[i] + g[i], y = b[i] + g[i];                                              \
            a[i] = x;                                                                        \
            b[i] = y;                                                                        \
            p[i] = p[i] + x + y;                                                             \
        }                                                                                    \
    }

FLOOR_LOOPS(float, f32)
FLOOR_LOOPS(double, f64)

/* Runs the floor loop with nbufs state arrays (0, 1 or 2) over [lo, hi). */
static inline void run_floor(optd_dtype_t dt, size_t lo, size_t hi, void *p, const void *g, void *a,
                             void *b, int nbufs)
{
    size_t n = hi - lo;
    if (dt == OPTD_FLOAT32) {
        float *P = (float *)p + lo, *A = (float *)a + lo, *B = (float *)b + lo;
        const float *G = (const float *)g + lo;
        if (nbufs == 0)
            floor_2r1w_f32(n, P, G);
        else if (nbufs == 1)
            floor_3r2w_f32(n, P, G, A);
        else
            floor_4r3w_f32(n, P, G, A, B);
    } else {
        double *P = (double *)p + lo, *A = (double *)a + lo, *B = (double *)b + lo;
        const double *G = (const double *)g + lo;
        if (nbufs == 0)
            floor_2r1w_f64(n, P, G);
        else if (nbufs == 1)
            floor_3r2w_f64(n, P, G, A);
        else
            floor_4r3w_f64(n, P, G, A, B);
    }
}

#endif
