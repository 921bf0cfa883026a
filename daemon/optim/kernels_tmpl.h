/* kernels_tmpl.h: the passes over a gradient or a vector that are not an
 * optimizer's rule (the sum of squares, the finiteness check), written once
 * for both dtypes.  kernels_f32.c and kernels_f64.c include it with T (the
 * element type) and SFX (the name suffix: f32, f64) defined.  No include
 * guard: it is meant to be included once per dtype.  (Each optimizer's
 * rule is in its own file: see kernel_rule.h.) */

#define KN2(a, b) a##_##b
#define KN1(a, b) KN2(a, b)
#define KN(name) KN1(name, SFX)

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
#undef KN
#undef KN1
#undef KN2
