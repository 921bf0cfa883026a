/* kernels.h: the private interface between the optimizer core (optim.c) and
 * its element-wise kernels (kernels_f32.c, kernels_f64.c, both instances of
 * kernels_tmpl.h).
 *
 * optim.c computes every per-step scalar in double and stores it in the
 * plan's optd_plan_scalars_t (optd/optim.h), in its optimizer's struct;
 * the kernels round each one once to the session's dtype and then do all
 * element-wise arithmetic in that dtype. */
#ifndef OPTD_OPTIM_KERNELS_H
#define OPTD_OPTIM_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "optd/optim.h"

/* One update of plan's optimizer on n elements: p, g and the state buffers
 * buf[] (indexed by optd_buf_t, already offset to the range's start; NULL
 * where not kept).  The plan says which optional buffers are in use.
 * With seen (else NULL: the plain loop, nothing kept), seen[b] is set to
 * the largest magnitude the update wrote to buffer b (seen[OPTD_BUF_COUNT]:
 * to p), +Inf or NaN if it wrote a non-finite value, and -1 for a buffer it
 * did not write. */
void optd_kernel_apply_f32(const optd_step_plan_t *plan, void *const buf[OPTD_BUF_COUNT],
                           float *p, const float *g, size_t n, double seen[OPTD_BUF_COUNT + 1]);
void optd_kernel_apply_f64(const optd_step_plan_t *plan, void *const buf[OPTD_BUF_COUNT],
                           double *p, const double *g, size_t n, double seen[OPTD_BUF_COUNT + 1]);

/* Sum of squares of g[0, n) in double; *finite set false on NaN/Inf. */
double optd_kernel_sumsq_f32(const float *g, size_t n, bool *finite);
double optd_kernel_sumsq_f64(const double *g, size_t n, bool *finite);

/* True when every element of v[0, n) is finite. */
bool optd_kernel_finite_f32(const float *v, size_t n);
bool optd_kernel_finite_f64(const double *v, size_t n);

#endif
