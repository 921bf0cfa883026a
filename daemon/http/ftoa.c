/* ftoa.c: float32 to "%.9g" text (see ftoa.h). */
#include "ftoa.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* 10^k as the nearest double (exact up to 10^22): the scale factors for
 * every float, whose decimal exponents run from -45 to 38. */
static const double pow10_tab[54] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5,
    1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17,
    1e18, 1e19, 1e20, 1e21, 1e22, 1e23,
    1e24, 1e25, 1e26, 1e27, 1e28, 1e29,
    1e30, 1e31, 1e32, 1e33, 1e34, 1e35,
    1e36, 1e37, 1e38, 1e39, 1e40, 1e41,
    1e42, 1e43, 1e44, 1e45, 1e46, 1e47,
    1e48, 1e49, 1e50, 1e51, 1e52, 1e53,
};

/* The scaled value's error is below 2^-52 of it (one rounding in the
 * table's entry, one in the product or quotient), under 3e-7 at 1e9; the
 * margin asked of a rounding decision is three times that. */
#define MARGIN 1e-6

/* snprintf and the ".0", for the rare values too close to call. */
static size_t slow(double v, char *out)
{
    int n = snprintf(out, OPTD_FTOA_MAX, "%.9g", v);
    for (int i = 0; i < n; i++)
        if (out[i] == '.' || out[i] == 'e' || out[i] == 'n' || out[i] == 'i')
            return (size_t)n;
    out[n++] = '.';
    out[n++] = '0';
    return (size_t)n;
}

/* v * 10^k, k in [-31, 53]. */
static double scale(double v, int k)
{
    return k >= 0 ? v * pow10_tab[k] : v / pow10_tab[-k];
}

/* Drops the trailing zeros of the n digits at d (at least one stays). */
static int trim(const char *d, int n)
{
    while (n > 1 && d[n - 1] == '0')
        n--;
    return n;
}

size_t optd_ftoa(float f, char *out)
{
    double v = f;
    if (!isfinite(v))
        return slow(v, out);
    char *o = out;
    if (signbit(v)) {
        *o++ = '-';
        v = -v;
    }
    if (v == 0) {
        memcpy(o, "0.0", 3);
        return (size_t)(o + 3 - out);
    }
    /* x: the decimal exponent of v's first digit.  From the binary one,
     * v in [2^(e-1), 2^e) puts it at floor((e - 1) log10 2) or one more. */
    int e;
    frexp(v, &e);
    int x = (int)floor((e - 1) * 0.30102999566398119521);
    double y = scale(v, 8 - x);
    if (y >= 1e9) {
        x++;
        y = scale(v, 8 - x);
    }
    /* y in [1e8, 1e9): its nearest integer is the 9 digits, unless y lies
     * within the error of a half (an exact tie, or too close to call). */
    double fl = floor(y), frac = y - fl;
    if (fabs(frac - 0.5) < MARGIN || y < 1e8 - MARGIN)
        return (size_t)(o - out) + slow(v, o);
    uint32_t D = (uint32_t)fl + (frac > 0.5);
    if (D >= 1000000000u) { /* 999999999.5 and up: one digit more */
        D /= 10;
        x++;
    } else if (D < 100000000u) { /* just under 1e8, rounded up to it */
        D = 100000000u;
    }
    char d[9];
    for (int i = 8; i >= 0; i--) {
        d[i] = (char)('0' + D % 10);
        D /= 10;
    }
    if (x < -4 || x >= 9) { /* d.dddde+XX */
        int n = trim(d, 9);
        *o++ = d[0];
        if (n > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)n - 1);
            o += n - 1;
        }
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        int a = x < 0 ? -x : x;
        *o++ = (char)('0' + a / 10);
        *o++ = (char)('0' + a % 10);
    } else if (x >= 0) { /* ddd.ddd, or ddd.0 when integral */
        int n = trim(d, 9);
        memcpy(o, d, (size_t)x + 1);
        o += x + 1;
        *o++ = '.';
        if (n > x + 1) {
            memcpy(o, d + x + 1, (size_t)(n - x - 1));
            o += n - x - 1;
        } else {
            *o++ = '0';
        }
    } else { /* 0.000ddd */
        int n = trim(d, 9);
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > x; i--)
            *o++ = '0';
        memcpy(o, d, (size_t)n);
        o += n;
    }
    return (size_t)(o - out);
}
