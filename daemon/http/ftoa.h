/* ftoa.h: float32 values to the text printf("%.9g") gives, quickly.
 *
 * API.md prints float32 values with 9 significant digits, which read back
 * exactly.  glibc's snprintf takes ~300 ns a number for that (it works in
 * multi-precision arithmetic), four times what a float64 costs with Grisu2,
 * so a float32 session's JSON answers were the slow ones.  A float has 24
 * significant bits, so scaling it by a power of ten in double arithmetic
 * (53 bits) leaves an error far below the half unit the rounding to 9
 * digits looks at; only when the scaled value lies within that error of a
 * rounding boundary does this fall back to snprintf.  The result is the
 * same bytes as snprintf's, for every float (the unit test compares them;
 * an exhaustive run over all 2^32 is in the commit that added this). */
#ifndef OPTD_HTTP_FTOA_H
#define OPTD_HTTP_FTOA_H

#include <stddef.h>

/* Longest text optd_ftoa writes ("-1.17549435e-38", ".0" never with an
 * exponent; "-nan" for a NaN). */
#define OPTD_FTOA_MAX 24

/* Writes f to out (at least OPTD_FTOA_MAX bytes, not NUL-terminated) as
 * snprintf("%.9g", (double)f) does, with ".0" after a rendering that would
 * read back as an integer (as optd_dtoa does); returns the length. */
size_t optd_ftoa(float f, char *out);

#endif
