/* kernels.h: the private interface between the optimizer core (optim.c) and
 * its element-wise kernels (kernels_f32.c, kernels_f64.c, both instances of
 * kernels_tmpl.h).
 *
 * optim.c computes every per-step scalar in double and stores it in
 * optd_step_plan_t.c[] at the index named below for the plan's optimizer;
 * the kernels round each one once to the session's dtype and then do all
 * element-wise arithmetic in that dtype. */
#ifndef OPTD_OPTIM_KERNELS_H
#define OPTD_OPTIM_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "optd/optim.h"

/* Indices into optd_step_plan_t.c, one list per optimizer.  "wd" is the
 * coupled weight decay added to g (0 skips it), "nlr" a negated step size
 * (PyTorch's alpha/value arguments), "decay" a decoupled 1 - lr*wd. */
enum { SGD_WD, SGD_MOM, SGD_DAMP1, SGD_NLR };
enum { ADAGRAD_WD, ADAGRAD_EPS, ADAGRAD_NCLR };
enum { RMSPROP_WD, RMSPROP_ALPHA, RMSPROP_OMA, RMSPROP_EPS, RMSPROP_MOM, RMSPROP_NLR };
enum { ADAM_WD, ADAM_DECAY, ADAM_B1, ADAM_OMB1, ADAM_B2, ADAM_OMB2, ADAM_SBC2, ADAM_EPS,
       ADAM_NSS };
enum { ADAMAX_WD, ADAMAX_B1, ADAMAX_OMB1, ADAMAX_B2, ADAMAX_EPS, ADAMAX_NCLR };
enum { NADAM_WD, NADAM_B1, NADAM_OMB1, NADAM_B2, NADAM_OMB2, NADAM_BC2, NADAM_EPS, NADAM_CG,
       NADAM_CM };
enum { RADAM_WD, RADAM_B1, RADAM_OMB1, RADAM_B2, RADAM_OMB2, RADAM_BC1, RADAM_LR, RADAM_RECT,
       RADAM_SBC2, RADAM_EPS };
enum { ADADELTA_WD, ADADELTA_RHO, ADADELTA_OMR, ADADELTA_EPS, ADADELTA_NLR };
enum { LION_DECAY, LION_B1, LION_OMB1, LION_B2, LION_OMB2, LION_LR };
enum { SPADAM_OMB1, SPADAM_OMB2, SPADAM_EPS, SPADAM_NSS };

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
