/* kernels_f64.c: the float64 instance of the update kernels (kernels_tmpl.h). */
#include "optim/kernels_common.h"

#define T double
#define SFX f64
#define SQRT sqrt
#define MAGT int64_t
#define MAG_MASK 0x7fffffffffffffff
#include "optim/kernels_tmpl.h"
