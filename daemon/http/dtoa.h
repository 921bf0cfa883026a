/* dtoa.h: doubles to the shortest-ish decimal text that reads back exactly.
 *
 * snprintf("%.17g") costs ~200 ns a number (glibc works in multi-precision
 * arithmetic), which made printing the params the largest part of a JSON
 * step.  This is Florian Loitsch's Grisu2 ("Printing Floating-Point Numbers
 * Quickly and Accurately with Integers", PLDI 2010) in 64-bit integer
 * arithmetic, as RapidJSON and others ship it: the digits it produces always
 * lie inside the double's rounding interval, so strtod gives back the same
 * bits; they are the shortest such digits for all but a tiny fraction of
 * values (where one digit more, never more than 17), which API.md allows
 * ("17 significant digits, or a shorter string that parses back to the same
 * double"). */
#ifndef OPTD_HTTP_DTOA_H
#define OPTD_HTTP_DTOA_H

#include <stddef.h>

/* Longest text optd_dtoa writes ("-2.2250738585072014e-308" and ".0"). */
#define OPTD_DTOA_MAX 32

/* Writes v to out (at least OPTD_DTOA_MAX bytes, not NUL-terminated) as a
 * JSON number in the layout of %.17g (plain for exponents -4..16, else
 * d.ddde+XX), with ".0" after an integral value so it reads back as a real;
 * returns the length.  Non-finite values are written as %.17g does
 * ("nan", "inf"; never in a JSON answer, as params are always finite). */
size_t optd_dtoa(double v, char *out);

#endif
