/* kernels_f32.c: the float32 instance of the update kernels (kernels_tmpl.h). */
#include "optim/kernels_common.h"

#define T float
#define SFX f32
#define SQRT sqrtf
#define MAGT int32_t
#define MAG_MASK 0x7fffffff
#include "optim/kernels_tmpl.h"
