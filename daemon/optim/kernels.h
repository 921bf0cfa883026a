/* kernels.h: the passes over a whole gradient or vector that are no
 * optimizer's own (kernels_f32.c, kernels_f64.c, both instances of
 * kernels_tmpl.h).  Each optimizer's update kernel is in its own file and
 * reached through its descriptor (optimizer.h). */
#ifndef OPTD_OPTIM_KERNELS_H
#define OPTD_OPTIM_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "optd/optim.h"

/* Sum of squares of g[0, n) in double; *finite set false on NaN/Inf. */
double optd_kernel_sumsq_f32(const float *g, size_t n, bool *finite);
double optd_kernel_sumsq_f64(const double *g, size_t n, bool *finite);

/* True when every element of v[0, n) is finite. */
bool optd_kernel_finite_f32(const float *v, size_t n);
bool optd_kernel_finite_f64(const double *v, size_t n);

#endif
