/* numarray.c: JSON number arrays <-> dtype buffers (see numarray.h). */
#include "numarray.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int optd_numarray_decode_into(const json_t *v, optd_dtype_t dtype, const char *field, void *out,
                              size_t n, optd_err_t *err)
{
    if (!json_is_array(v))
        return optd_err_set(err, OPTD_EINVAL, "'%s' must be an array of numbers", field);
    size_t len = json_array_size(v);
    if (len != n)
        return optd_err_set(err, OPTD_ESIZE, "'%s' has %zu elements; the session has %zu", field,
                            len, n);
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_number(e))
            return optd_err_set(err, OPTD_EINVAL, "'%s'[%zu] is not a number", field, i);
        double d = json_number_value(e);
        if (!isfinite(d))
            return optd_err_set(err, OPTD_ENONFINITE, "'%s'[%zu] is not finite", field, i);
        if (dtype == OPTD_FLOAT32) {
            if (fabs(d) > FLT_MAX)
                return optd_err_set(err, OPTD_EINVAL,
                                    "'%s'[%zu] = %g is out of float32 range", field, i, d);
            ((float *)out)[i] = (float)d;
        } else {
            ((double *)out)[i] = d;
        }
    }
    return 0;
}

int optd_numarray_decode(const json_t *v, optd_dtype_t dtype, const char *field, void **out,
                         size_t *n, optd_err_t *err)
{
    if (!json_is_array(v))
        return optd_err_set(err, OPTD_EINVAL, "'%s' must be an array of numbers", field);
    size_t len = json_array_size(v);
    if (len == 0)
        return optd_err_set(err, OPTD_EINVAL, "'%s' must hold at least one number", field);
    void *buf = malloc(len * optd_dtype_size(dtype));
    if (!buf)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for %zu values of '%s'", len, field);
    int rc = optd_numarray_decode_into(v, dtype, field, buf, len, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *n = len;
    return 0;
}

/* Appends ".0" to an integral rendering so the value reads back as a real. */
static size_t keep_real(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'n' || s[i] == 'i')
            return n;
    s[n++] = '.';
    s[n++] = '0';
    return n;
}

void optd_numarray_encode(optd_sbuf_t *b, optd_dtype_t dtype, const void *v, size_t n)
{
    /* At most 26 bytes per element ("-1.2345678901234567e-308" + ".0" + ","). */
    if (!optd_sbuf_reserve(b, n * 28 + 3))
        return;
    char *o = b->p + b->len;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        int k;
        if (dtype == OPTD_FLOAT32)
            k = snprintf(o, 32, "%.9g", (double)((const float *)v)[i]);
        else
            k = snprintf(o, 32, "%.17g", ((const double *)v)[i]);
        o += keep_real(o, (size_t)k);
    }
    *o++ = ']';
    *o = '\0';
    b->len = (size_t)(o - b->p);
}
