/* kernels_f64.c: the float64 instance of the passes of kernels_tmpl.h. */
#include "optim/kernels_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#define T double
#define SFX f64
#include "optim/kernels_tmpl.h"
