/* numparse.h: JSON number text to double, correctly rounded, quickly.
 *
 * glibc's strtod takes ~200 ns on the 17-digit numbers clients send (its
 * exact path works in multi-precision arithmetic), which made it the largest
 * part of a small JSON step's own CPU time.  libstdc++'s std::from_chars
 * (GCC 12 and later: Lemire's fast_float, the Eisel-Lemire algorithm) gives
 * the same correctly rounded double in ~50 ns.  The shim is C++ only because
 * that is where the library is; see numparse.cc. */
#ifndef OPTD_HTTP_NUMPARSE_H
#define OPTD_HTTP_NUMPARSE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest number text optd_parse_double takes, in bytes. */
#define OPTD_NUMPARSE_MAX 127

/* s[0..len) is one JSON number (RFC 8259 grammar) of at most
 * OPTD_NUMPARSE_MAX bytes; the caller has checked both.  Returns exactly what strtod returns for it in the C locale:
 * the nearest double, ±HUGE_VAL past the range, 0 or a subnormal below it.
 * Never fails; reads nothing past s + len. */
double optd_parse_double(const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
