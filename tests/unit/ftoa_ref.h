/* ftoa_ref.h: the oracle test_ftoa.c and ftoa_exhaustive.c hold
 * daemon/http/ftoa.c to: what numarray printed for a float32 before ftoa,
 * snprintf("%.9g") then ".0" if the text would read back as an integer.
 * Kept apart from ftoa.c's own snprintf fallback on purpose: a test's
 * oracle should not be the code under test. */
#ifndef OPTD_TEST_FTOA_REF_H
#define OPTD_TEST_FTOA_REF_H

#include <stddef.h>
#include <stdio.h>

/* o: at least 48 bytes.  Returns the length (not NUL-terminated). */
static inline size_t ftoa_reference(float f, char *o)
{
    int n = snprintf(o, 48, "%.9g", (double)f);
    for (int i = 0; i < n; i++)
        if (o[i] == '.' || o[i] == 'e' || o[i] == 'n' || o[i] == 'i')
            return (size_t)n;
    o[n++] = '.';
    o[n++] = '0';
    return (size_t)n;
}

#endif
