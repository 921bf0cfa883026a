/* test_ftoa.c: daemon/http/ftoa.c writes every float as snprintf("%.9g")
 * does (plus ".0" after an integral rendering), byte for byte: special
 * values, exact ties (where the fast path hands over to snprintf), a
 * stride over all 2^32 bit patterns, and random gradients.  (Run over all
 * 2^32 once: see the commit that added ftoa.c.) */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#include "ftoa_ref.h"
#include "http/ftoa.h"

static void check_one(float f)
{
    char got[OPTD_FTOA_MAX + 8], want[48];
    memset(got, 'X', sizeof got);
    size_t n = optd_ftoa(f, got), m = ftoa_reference(f, want);
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    /* Plain ifs: check's ck_assert marks its place through a pipe, a
     * system call per value. */
    if (n > OPTD_FTOA_MAX)
        ck_abort_msg("%08x: %zu bytes", bits, n);
    if (n != m || memcmp(got, want, n) != 0)
        ck_abort_msg("%08x: '%.*s', snprintf '%.*s'", bits, (int)n, got, (int)m, want);
}

START_TEST(special_values)
{
    const float v[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, 0.1f, 0.5f, 1e-4f, 1e-5f, 9.99999e-5f, 1e8f, 1e9f,
                       123456789.0f, 999999999.0f, 99999999.0f, 16777216.0f, 16777215.0f, 3.0e38f,
                       FLT_MAX, -FLT_MAX, FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_EPSILON, 1.0f / 3.0f,
                       (float)M_PI, 1e-38f, 1e-45f, 0.000123456789f, 12345.6789f};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_one(v[i]);
    char out[OPTD_FTOA_MAX];
    ck_assert_int_eq((int)optd_ftoa(1.0f, out), 3);
    ck_assert_int_eq(memcmp(out, "1.0", 3), 0);
    size_t n = optd_ftoa(INFINITY, out);
    ck_assert(n == 3 && memcmp(out, "inf", 3) == 0);
    n = optd_ftoa(-NAN, out);
    ck_assert(n == 4 && memcmp(out, "-nan", 4) == 0);
}
END_TEST

START_TEST(exact_ties)
{
    /* m / 2^(k+1) for odd m with m * 5^k in [2e8, 2e9) sits exactly half
     * way between two 9-digit decimals (1000000.125, 100000.0625, ...):
     * rounding goes to the even one, as glibc does. */
    unsigned k_shift[] = {3, 4, 5, 6};   /* k + 1 for k = 2..5 */
    double lo5[] = {8e6, 1.6e6, 3.2e5, 6.4e4}; /* 2e8 / 5^k */
    for (int t = 0; t < 4; t++) {
        for (uint32_t m = (uint32_t)lo5[t] | 1u; m < (1u << 24) && m < 10 * lo5[t]; m += 2 * 97)
            check_one(ldexpf((float)m, -(int)k_shift[t]));
    }
}
END_TEST

START_TEST(stride_over_all_bits)
{
    /* Every 4099th bit pattern: all exponents, both signs, NaNs and
     * subnormals included. */
    for (uint64_t b = 0; b < ((uint64_t)1 << 32); b += 4099) {
        uint32_t u = (uint32_t)b;
        float f;
        memcpy(&f, &u, sizeof f);
        check_one(f);
    }
}
END_TEST

START_TEST(random_gradients)
{
    test_rng_t r = {0xf10a7ull};
    for (int i = 0; i < 300000; i++) {
        double u = ((double)(test_rng_next(&r) >> 11) + 0.5) / 9007199254740992.0;
        check_one((float)((u - 0.5) * pow(10.0, (double)(int)(test_rng_next(&r) % 16) - 10)));
    }
}
END_TEST

int main(void)
{
    Suite *su = suite_create("ftoa");
    TCase *tc = tcase_create("ftoa");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, special_values);
    tcase_add_test(tc, exact_ties);
    tcase_add_test(tc, stride_over_all_bits);
    tcase_add_test(tc, random_gradients);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
