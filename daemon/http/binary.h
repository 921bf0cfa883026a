/* binary.h: the application/octet-stream bodies of API.md: raw
 * little-endian IEEE 754 values of the session's dtype (gradients in,
 * parameters out), and the Optd-* headers that go with them. */
#ifndef OPTD_HTTP_BINARY_H
#define OPTD_HTTP_BINARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "optd/error.h"
#include "optd/optim.h"

/* Checks that a binary gradient body holds exactly n values of dtype
 * (OPTD_ESIZE) and that all are finite (OPTD_ENONFINITE).  The body can
 * then be used in place: this build refuses to compile on big-endian hosts,
 * where it would need a byte swap. */
int optd_binary_gradient_check(const void *body, size_t len, optd_dtype_t dtype, size_t n,
                               optd_err_t *err);

/* API.md 1.1: a binary body may name its dtype in Optd-Dtype (value, NULL
 * when absent).  0 when absent or equal to the session's dtype, else
 * OPTD_EINVAL (a float64 body of n values and a float32 body of 2n values
 * have the same length: only the header tells them apart). */
int optd_binary_dtype_check(const char *value, optd_dtype_t session_dtype, optd_err_t *err);

/* Parses a header holding a step count (Optd-Expect-Step). */
int optd_binary_header_u64(const char *value, const char *header, uint64_t *out, optd_err_t *err);
/* Parses a header holding a finite number (Optd-Loss). */
int optd_binary_header_double(const char *value, const char *header, double *out, optd_err_t *err);

#endif
