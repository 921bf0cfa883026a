/* test_numparse.c: optd_parse_double (daemon/http/numparse.cc) gives the
 * same bits as glibc's strtod for every JSON number: edge cases, random
 * bit patterns at every precision, long and odd spellings. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#include "http/numparse.h"

static test_rng_t rng = {0x9E3779B97F4A7C15ULL};
static uint64_t next64(void)
{
    return test_rng_next(&rng);
}

/* Both parsers on s; fails with s in the message when the bits differ. */
static void same_as_strtod(const char *s)
{
    double want = strtod(s, NULL);
    double got = optd_parse_double(s, strlen(s));
    uint64_t wb, gb;
    memcpy(&wb, &want, sizeof wb);
    memcpy(&gb, &got, sizeof gb);
    ck_assert_msg(wb == gb, "'%s': strtod %a, optd_parse_double %a", s, want, got);
}

START_TEST(edge_cases)
{
    static const char *const cases[] = {
        "0", "-0", "0.0", "-0.0", "0e0", "0E+5", "-0e-400", "1", "-1", "10", "1e0", "1E1", "1e+1",
        "0.1", "0.2", "0.3", "123456789012345678901234567890", "9007199254740993",
        "9007199254740992.5", "1.7976931348623157e308", "1.7976931348623158e308",
        "1.7976931348623159e308", "1e308", "1e309", "-1e400", "1e-400", "-1e-400",
        "2.2250738585072011e-308", "2.2250738585072014e-308", "2.225073858507201136057409796709131975934819546351645648e-308",
        "4.9406564584124654e-324", "5e-324", "2.4703282292062327e-324", "2.4703282292062328e-324",
        "1e-323", "4.4501477170144023e-308", "0.500000000000000166533453693773481063544750213623046875",
        "3.0000000000000004", "0.012345678901234567", "-0.23456789012345678", "0.90123456789012345",
        "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
        "0.000000000000000000000000000000000000000000000000000000000000000000000000000001",
        "100000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        same_as_strtod(cases[i]);
    ck_assert(isinf(optd_parse_double("1e309", 5)));
    ck_assert(signbit(optd_parse_double("-0", 2)));
}
END_TEST

/* Reads only s[0..len): the same number followed by more digits. */
START_TEST(reads_only_len)
{
    ck_assert(optd_parse_double("1.5999", 3) == 1.5);
    ck_assert(optd_parse_double("12e3456", 4) == 12e3);
    ck_assert(optd_parse_double("1e999", 3) == 1e9);
}
END_TEST

START_TEST(random_bits_every_precision)
{
    char s[64];
    static const char *const fmts[] = {"%.17g", "%.16g", "%.15g", "%.9g", "%.3g", "%.20e", "%.25g"};
    for (int i = 0; i < 300000; i++) {
        uint64_t b = next64();
        double v;
        memcpy(&v, &b, sizeof v);
        if (!isfinite(v))
            continue;
        snprintf(s, sizeof s, fmts[i % 7], v);
        same_as_strtod(s);
    }
}
END_TEST

START_TEST(random_gradients)
{
    /* As training loops send them: Python's repr of normal-ish values. */
    char s[64];
    for (int i = 0; i < 300000; i++) {
        double u = ((double)(next64() >> 11) + 0.5) / 9007199254740992.0;
        double v = (u - 0.5) * pow(10.0, (double)(int)(next64() % 16) - 10);
        snprintf(s, sizeof s, "%.17g", v);
        same_as_strtod(s);
        snprintf(s, sizeof s, "%.8g", (double)(float)v);
        same_as_strtod(s);
    }
}
END_TEST

START_TEST(random_digit_strings)
{
    /* Up to 40 random digits around a random decimal point and exponent:
     * the halfway and many-digit cases where fast parsers go wrong. */
    char s[OPTD_NUMPARSE_MAX + 1];
    for (int i = 0; i < 300000; i++) {
        size_t n = 0;
        if (next64() & 1)
            s[n++] = '-';
        int digits = 1 + (int)(next64() % 40);
        s[n++] = (char)('1' + next64() % 9);
        int point = (int)(next64() % (uint64_t)(digits + 1));
        for (int d = 1; d < digits; d++) {
            if (d == point)
                s[n++] = '.';
            s[n++] = (char)('0' + next64() % 10);
        }
        if (next64() & 1)
            n += (size_t)snprintf(s + n, sizeof s - n, "e%d", (int)(next64() % 700) - 350);
        s[n] = '\0';
        same_as_strtod(s);
    }
}
END_TEST

int main(void)
{
    Suite *su = suite_create("numparse");
    TCase *tc = tcase_create("numparse");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, edge_cases);
    tcase_add_test(tc, reads_only_len);
    tcase_add_test(tc, random_bits_every_precision);
    tcase_add_test(tc, random_gradients);
    tcase_add_test(tc, random_digit_strings);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
