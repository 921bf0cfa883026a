/* optd/error.h: the error codes and the error carrier shared by every layer.
 *
 * Functions that can fail return int: 0 (OPTD_OK) or one of the negative
 * codes below, and fill an optd_err_t (when the caller passed one) with a
 * sentence a client can read.  Each code maps to one row of API.md's error
 * table; optd_err_name() gives that row's "code" string. */
#ifndef OPTD_ERROR_H
#define OPTD_ERROR_H

#include <stddef.h>

enum {
    OPTD_OK = 0,
    OPTD_EINVAL = -1,      /* 400 invalid_argument */
    OPTD_ESIZE = -2,       /* 400 size_mismatch */
    OPTD_ENONFINITE = -3,  /* 400 non_finite */
    OPTD_ENOTFOUND = -4,   /* 404 not_found */
    OPTD_EEXIST = -5,      /* 409 already_exists */
    OPTD_ESTEP = -6,       /* 409 step_mismatch */
    OPTD_ELIMIT = -7,      /* 429 resource_exhausted */
    OPTD_ENOMEM = -8,      /* 500 internal: allocation failed */
    OPTD_EIO = -9,         /* 507 insufficient_storage: could not make durable */
    OPTD_EUNAVAIL = -10,   /* 503 unavailable: shutting down */
    OPTD_EINTERNAL = -11,  /* 500 internal: a bug */
    OPTD_ECORRUPT = -12,   /* a damaged file on disk (persistence only) */
    OPTD_EJSON = -13       /* 400 invalid_json */
};

#define OPTD_ERR_MSG_MAX 256

typedef struct optd_err {
    int code;
    char msg[OPTD_ERR_MSG_MAX];
} optd_err_t;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so a failing path can say `return optd_err_set(...)`. */
int optd_err_set(optd_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* API.md's code string for an error code ("invalid_argument", ...). */
const char *optd_err_name(int code);

/* The HTTP status API.md gives an error code (400, 404, ...). */
int optd_err_status(int code);

#endif
