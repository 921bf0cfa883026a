/* kernel_dtype.h: one dtype's pass of kernel_rule.h over an optimizer
 * file's kernel (no include guard: read once per dtype). */

/* |x| as an integer that orders as |x| does, with +-Inf and NaN above every
 * finite value (KEEP_MAX). */
static inline __attribute__((always_inline)) MAGT KN(mag)(T x)
{
    MAGT u;
    memcpy(&u, &x, sizeof u);
    return u & MAG_MASK;
}

#include OPTD_RULE_FILE
