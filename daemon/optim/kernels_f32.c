/* kernels_f32.c: the float32 instance of the passes of kernels_tmpl.h. */
#include "optim/kernels_common.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#define T float
#define SFX f32
#include "optim/kernels_tmpl.h"
