/* kernels_common.h: what every kernel file needs (kernels_f32.c and
 * kernels_f64.c before kernels_tmpl.h; each optimizer file's rule through
 * kernel_rule.h).
 *
 * OPTD_KERNEL marks the hot loops.  On x86-64 with GCC each is built three
 * times (AVX-512F, AVX2 and the baseline SSE2), one chosen once at load
 * time, so the portable build still uses wider vectors where the CPU has
 * them (the arithmetic is the same IEEE operations in each: no FMA
 * contraction in ISO C mode, so all three give identical bits).
 *
 * GCC's -O2 vectorizes only loops whose trip count needs no scalar
 * epilogue ("very cheap" cost model), which excludes every update loop;
 * the dynamic model vectorizes them with an epilogue: the kernel files say
 * `#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")`
 * around their loops. */
#ifndef OPTD_OPTIM_KERNELS_COMMON_H
#define OPTD_OPTIM_KERNELS_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "optim/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(OPTD_NO_CLONES)
#define OPTD_KERNEL static __attribute__((target_clones("avx512f", "avx2", "default"))) void
#else
#define OPTD_KERNEL static void
#endif

#endif
