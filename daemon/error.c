/* error.c: the error carrier and the mapping from codes to API.md's table. */
#include "optd/error.h"

#include <stdarg.h>
#include <stdio.h>

int optd_err_set(optd_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const struct {
    int code;
    int status;
    const char *name;
} err_table[] = {
    {OPTD_OK, 200, "ok"},
    {OPTD_EINVAL, 400, "invalid_argument"},
    {OPTD_ESIZE, 400, "size_mismatch"},
    {OPTD_ENONFINITE, 400, "non_finite"},
    {OPTD_EJSON, 400, "invalid_json"},
    {OPTD_ENOTFOUND, 404, "not_found"},
    {OPTD_EEXIST, 409, "already_exists"},
    {OPTD_ESTEP, 409, "step_mismatch"},
    {OPTD_ELIMIT, 429, "resource_exhausted"},
    {OPTD_ENOMEM, 500, "internal"},
    {OPTD_EINTERNAL, 500, "internal"},
    {OPTD_ECORRUPT, 500, "internal"},
    {OPTD_EIO, 507, "insufficient_storage"},
    {OPTD_EUNAVAIL, 503, "unavailable"},
};

const char *optd_err_name(int code)
{
    for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
        if (err_table[i].code == code)
            return err_table[i].name;
    return "internal";
}

int optd_err_status(int code)
{
    for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
        if (err_table[i].code == code)
            return err_table[i].status;
    return 500;
}
