/* binary.c: raw little-endian bodies (see binary.h). */
#include "binary.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "optd's binary bodies are little-endian; this host would need a byte swap"
#endif

int optd_binary_gradient_check(const void *body, size_t len, optd_dtype_t dtype, size_t n,
                               optd_err_t *err)
{
    size_t esz = optd_dtype_size(dtype);
    if (len != n * esz)
        return optd_err_set(err, OPTD_ESIZE,
                            "the binary gradient is %zu bytes; the session needs %zu %s values (%zu bytes)",
                            len, n, optd_dtype_name(dtype), n * esz);
    if (!optd_all_finite(dtype, body, n)) {
        for (size_t i = 0; i < n; i++) {
            double v = dtype == OPTD_FLOAT32 ? (double)((const float *)body)[i] : ((const double *)body)[i];
            if (!isfinite(v))
                return optd_err_set(err, OPTD_ENONFINITE, "gradient element %zu is %s", i,
                                    isnan(v) ? "NaN" : "infinite");
        }
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient holds a non-finite value");
    }
    return 0;
}

int optd_binary_dtype_check(const char *value, optd_dtype_t session_dtype, optd_err_t *err)
{
    if (!value)
        return 0;
    optd_dtype_t d;
    if (optd_dtype_parse(value, &d) != 0)
        return optd_err_set(err, OPTD_EINVAL, "header Optd-Dtype must be float32 or float64, got \"%.32s\"",
                            value);
    if (d != session_dtype)
        return optd_err_set(err, OPTD_EINVAL, "the body is %s (Optd-Dtype) but the session's dtype is %s",
                            optd_dtype_name(d), optd_dtype_name(session_dtype));
    return 0;
}

int optd_binary_header_u64(const char *value, const char *header, uint64_t *out, optd_err_t *err)
{
    char *end;
    errno = 0;
    if (!value || *value < '0' || *value > '9')
        return optd_err_set(err, OPTD_EINVAL, "header %s must be an integer >= 0", header);
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || *end)
        return optd_err_set(err, OPTD_EINVAL, "header %s must be an integer >= 0", header);
    *out = v;
    return 0;
}

int optd_binary_header_double(const char *value, const char *header, double *out, optd_err_t *err)
{
    char *end;
    errno = 0;
    double v = value && *value ? strtod(value, &end) : NAN;
    if (!value || !*value || *end || !isfinite(v))
        return optd_err_set(err, OPTD_EINVAL, "header %s must be a finite number", header);
    *out = v;
    return 0;
}
