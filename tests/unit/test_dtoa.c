/* test_dtoa.c: daemon/http/dtoa.c prints every double so that strtod reads
 * back the same bits, as a valid JSON number in %.17g's layout, with at most
 * 17 significant digits and (almost always) the fewest that round-trip. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#include "http/dtoa.h"

static test_rng_t rng = {88172645463325252ULL};
static uint64_t next64(void)
{
    return test_rng_next(&rng);
}

/* RFC 8259 number grammar; returns the number of significant digits, or -1. */
static int json_number_digits(const char *s)
{
    const char *p = s;
    int sig = 0, seen_nonzero = 0, trailing_zeros = 0;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (*p >= '0' && *p <= '9') {
            seen_nonzero |= *p != '0';
            if (seen_nonzero)
                sig++;
            trailing_zeros = *p == '0' && seen_nonzero ? trailing_zeros + 1 : 0;
            p++;
        }
    else
        return -1;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9') {
            seen_nonzero |= *p != '0';
            if (seen_nonzero)
                sig++;
            trailing_zeros = *p == '0' && seen_nonzero ? trailing_zeros + 1 : 0;
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return -1;
    return sig - trailing_zeros;
}

static int shortest_digits(double v)
{
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, v);
        if (strtod(s, NULL) == v)
            return prec;
    }
    return 17;
}

static void check_one(double v, int *not_shortest, int check_shortest)
{
    char s[OPTD_DTOA_MAX + 1];
    size_t n = optd_dtoa(v, s);
    ck_assert_uint_le(n, OPTD_DTOA_MAX);
    s[n] = '\0';
    double back = strtod(s, NULL);
    if (memcmp(&back, &v, sizeof v) != 0)
        ck_abort_msg("%.17g printed as %s reads back as %.17g", v, s, back);
    int digits = json_number_digits(s);
    if (digits < 0)
        ck_abort_msg("%.17g printed as %s: not a JSON number", v, s);
    ck_assert_int_le(digits, 17);
    /* Reads back as a real, not an integer. */
    ck_assert(strpbrk(s, ".e") != NULL);
    if (check_shortest && v != 0 && digits > shortest_digits(v))
        (*not_shortest)++;
}

START_TEST(special_values)
{
    int ns = 0;
    double vals[] = {0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 2.0 / 3.0, 1e-5, 1e-4, 9.9999e-5, 1e16, 1e17,
                     123456789012345678.0, 5e-324, -5e-324, DBL_MIN, DBL_MAX, -DBL_MAX, 1e-300,
                     1e300, 0.49000000000000005, 2.9900000000000002, 4.35, 1e22, 1e23, 9007199254740993.0,
                     9007199254740992.0, 1.7976931348623157e308, 2.2250738585072009e-308};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        check_one(vals[i], &ns, 1);
    /* 1e23 is Grisu2's textbook miss: 9.999999999999999e+22 (reads back
     * exactly, one digit longer than needed). */
    ck_assert_int_le(ns, 1);
    /* Every power of two and of ten in range, and their neighbours. */
    for (int e = -1074; e <= 1023; e++) {
        double p = ldexp(1.0, e);
        check_one(p, &ns, 0);
        check_one(nextafter(p, 0), &ns, 0);
        check_one(nextafter(p, INFINITY), &ns, 0);
    }
    for (int e = -323; e <= 308; e++) {
        char s[16];
        snprintf(s, sizeof s, "1e%d", e);
        double p = strtod(s, NULL);
        check_one(p, &ns, 0);
        check_one(nextafter(p, 0), &ns, 0);
        check_one(nextafter(p, INFINITY), &ns, 0);
    }
}
END_TEST

START_TEST(layout)
{
    char s[OPTD_DTOA_MAX + 1];
    struct {
        double v;
        const char *text;
    } cases[] = {
        {0.0, "0.0"},        {-0.0, "-0.0"},       {1.0, "1.0"},     {-2.5, "-2.5"},
        {0.1, "0.1"},        {1e-4, "0.0001"},     {1e-5, "1e-05"},  {1e16, "10000000000000000.0"},
        {1e17, "1e+17"},     {1.5e300, "1.5e+300"}, {5e-324, "5e-324"},
        {0.3, "0.3"},        {123.456, "123.456"}, {-1.25e-7, "-1.25e-07"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = optd_dtoa(cases[i].v, s);
        s[n] = '\0';
        ck_assert_str_eq(s, cases[i].text);
    }
}
END_TEST

START_TEST(random_bits)
{
    int ns = 0, checked = 0;
    for (int i = 0; i < 1000000; i++) {
        uint64_t b = next64();
        double v;
        memcpy(&v, &b, sizeof v);
        if (!isfinite(v))
            continue;
        int cs = i % 50 == 0;
        check_one(v, &ns, cs);
        checked += cs;
    }
    /* Grisu2 is shortest for all but a tiny fraction. */
    ck_assert_int_le(ns, checked / 100);
}
END_TEST

START_TEST(random_gradients)
{
    /* Values like a training loop sends: normal-ish, small, and floats
     * widened to double. */
    int ns = 0;
    for (int i = 0; i < 1000000; i++) {
        double u = ((double)(next64() >> 11) + 0.5) / 9007199254740992.0;
        double v = (u - 0.5) * pow(10.0, (double)(int)(next64() % 12) - 8);
        check_one(v, &ns, i % 50 == 0);
        check_one((double)(float)v, &ns, 0);
    }
    ck_assert_int_le(ns, 200);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("dtoa");
    TCase *tc = tcase_create("dtoa");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, special_values);
    tcase_add_test(tc, layout);
    tcase_add_test(tc, random_bits);
    tcase_add_test(tc, random_gradients);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
