/* dtoa.c: Grisu2 (see dtoa.h).  The structure follows the paper and
 * RapidJSON's well-tested version (MIT licence): a double is scaled by a
 * cached power of ten into a 64-bit window, its rounding interval narrowed
 * by one unit at each end to cover the error of that arithmetic, and digits
 * are generated until the rest fits in the interval, then the last digit is
 * moved toward the exact value while it stays inside. */
#include "dtoa.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct diyfp {
    uint64_t f;
    int e;
} diyfp_t;

#define SIGNIFICAND_BITS 52
#define HIDDEN_BIT ((uint64_t)1 << SIGNIFICAND_BITS)
#define SIGNIFICAND_MASK (HIDDEN_BIT - 1)
#define EXPONENT_BIAS (0x3FF + SIGNIFICAND_BITS)

/* 10^k for k = -348, -340, ..., 340 as f * 2^e with f normalized (bit 63
 * set), rounded to nearest; computed exactly with Python's fractions. */
static const uint64_t cached_f[87] = {
    0xfa8fd5a0081c0288, 0xbaaee17fa23ebf76, 0x8b16fb203055ac76,
    0xcf42894a5dce35ea, 0x9a6bb0aa55653b2d, 0xe61acf033d1a45df,
    0xab70fe17c79ac6ca, 0xff77b1fcbebcdc4f, 0xbe5691ef416bd60c,
    0x8dd01fad907ffc3c, 0xd3515c2831559a83, 0x9d71ac8fada6c9b5,
    0xea9c227723ee8bcb, 0xaecc49914078536d, 0x823c12795db6ce57,
    0xc21094364dfb5637, 0x9096ea6f3848984f, 0xd77485cb25823ac7,
    0xa086cfcd97bf97f4, 0xef340a98172aace5, 0xb23867fb2a35b28e,
    0x84c8d4dfd2c63f3b, 0xc5dd44271ad3cdba, 0x936b9fcebb25c996,
    0xdbac6c247d62a584, 0xa3ab66580d5fdaf6, 0xf3e2f893dec3f126,
    0xb5b5ada8aaff80b8, 0x87625f056c7c4a8b, 0xc9bcff6034c13053,
    0x964e858c91ba2655, 0xdff9772470297ebd, 0xa6dfbd9fb8e5b88f,
    0xf8a95fcf88747d94, 0xb94470938fa89bcf, 0x8a08f0f8bf0f156b,
    0xcdb02555653131b6, 0x993fe2c6d07b7fac, 0xe45c10c42a2b3b06,
    0xaa242499697392d3, 0xfd87b5f28300ca0e, 0xbce5086492111aeb,
    0x8cbccc096f5088cc, 0xd1b71758e219652c, 0x9c40000000000000,
    0xe8d4a51000000000, 0xad78ebc5ac620000, 0x813f3978f8940984,
    0xc097ce7bc90715b3, 0x8f7e32ce7bea5c70, 0xd5d238a4abe98068,
    0x9f4f2726179a2245, 0xed63a231d4c4fb27, 0xb0de65388cc8ada8,
    0x83c7088e1aab65db, 0xc45d1df942711d9a, 0x924d692ca61be758,
    0xda01ee641a708dea, 0xa26da3999aef774a, 0xf209787bb47d6b85,
    0xb454e4a179dd1877, 0x865b86925b9bc5c2, 0xc83553c5c8965d3d,
    0x952ab45cfa97a0b3, 0xde469fbd99a05fe3, 0xa59bc234db398c25,
    0xf6c69a72a3989f5c, 0xb7dcbf5354e9bece, 0x88fcf317f22241e2,
    0xcc20ce9bd35c78a5, 0x98165af37b2153df, 0xe2a0b5dc971f303a,
    0xa8d9d1535ce3b396, 0xfb9b7cd9a4a7443c, 0xbb764c4ca7a44410,
    0x8bab8eefb6409c1a, 0xd01fef10a657842c, 0x9b10a4e5e9913129,
    0xe7109bfba19c0c9d, 0xac2820d9623bf429, 0x80444b5e7aa7cf85,
    0xbf21e44003acdd2d, 0x8e679c2f5e44ff8f, 0xd433179d9c8cb841,
    0x9e19db92b4e31ba9, 0xeb96bf6ebadf77d9, 0xaf87023b9bf0ee6b,
};
static const int16_t cached_e[87] = {
    -1220, -1193, -1166, -1140, -1113, -1087, -1060, -1034, -1007, -980,
    -954, -927, -901, -874, -847, -821, -794, -768, -741, -715,
    -688, -661, -635, -608, -582, -555, -529, -502, -475, -449,
    -422, -396, -369, -343, -316, -289, -263, -236, -210, -183,
    -157, -130, -103, -77, -50, -24, 3, 30, 56, 83,
    109, 136, 162, 189, 216, 242, 269, 295, 322, 348,
    375, 402, 428, 455, 481, 508, 534, 561, 588, 614,
    641, 667, 694, 720, 747, 774, 800, 827, 853, 880,
    907, 933, 960, 986, 1013, 1039, 1066,
};

static diyfp_t mul(diyfp_t x, diyfp_t y)
{
    unsigned __int128 p = (unsigned __int128)x.f * y.f;
    uint64_t h = (uint64_t)(p >> 64), l = (uint64_t)p;
    if (l & ((uint64_t)1 << 63)) /* round */
        h++;
    return (diyfp_t){h, x.e + y.e + 64};
}

static diyfp_t normalize(diyfp_t x)
{
    int s = __builtin_clzll(x.f);
    return (diyfp_t){x.f << s, x.e - s};
}

/* The cached power c = 10^-K such that the exponent of w * c lands in
 * [-60, -32] (where the digit generation below works). */
static diyfp_t cached_power(int e, int *K)
{
    double dk = (-61 - e) * 0.30102999566398114 + 347; /* ceil, done on a positive value */
    int k = (int)dk;
    if (dk - k > 0.0)
        k++;
    unsigned index = (unsigned)((k >> 3) + 1);
    *K = -(-348 + (int)(index << 3));
    return (diyfp_t){cached_f[index], cached_e[index]};
}

static void round_weed(char *buf, int len, uint64_t delta, uint64_t rest, uint64_t ten_kappa, uint64_t wp_w)
{
    while (rest < wp_w && delta - rest >= ten_kappa &&
           (rest + ten_kappa < wp_w || wp_w - rest > rest + ten_kappa - wp_w)) {
        buf[len - 1]--;
        rest += ten_kappa;
    }
}

static const uint32_t pow10_32[] = {1,      10,      100,      1000,      10000,
                                    100000, 1000000, 10000000, 100000000, 1000000000};

/* 10^0 .. 10^19, for scaling wp_w to the fractional digits' unit. */
static const uint64_t pow10_64[] = {
    1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
    1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
    100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
    1000000000000000000ull, 10000000000000000000ull};

static int count_digits(uint32_t n)
{
    int k = 1;
    while (k < 10 && n >= pow10_32[k])
        k++;
    return k;
}

/* Digits of W (scaled) into buf; *K becomes the exponent of the last. */
static void digit_gen(diyfp_t W, diyfp_t Mp, uint64_t delta, char *buf, int *len, int *K)
{
    const diyfp_t one = {(uint64_t)1 << -Mp.e, Mp.e};
    const uint64_t wp_w = Mp.f - W.f;
    uint32_t p1 = (uint32_t)(Mp.f >> -one.e);
    uint64_t p2 = Mp.f & (one.f - 1);
    int kappa = count_digits(p1);
    *len = 0;
    while (kappa > 0) {
        uint32_t div = pow10_32[kappa - 1];
        uint32_t d = p1 / div;
        p1 %= div;
        if (d || *len)
            buf[(*len)++] = (char)('0' + d);
        kappa--;
        uint64_t tmp = ((uint64_t)p1 << -one.e) + p2;
        if (tmp <= delta) {
            *K += kappa;
            round_weed(buf, *len, delta, tmp, (uint64_t)pow10_32[kappa] << -one.e, wp_w);
            return;
        }
    }
    for (;;) {
        p2 *= 10;
        delta *= 10;
        char d = (char)(p2 >> -one.e);
        if (d || *len)
            buf[(*len)++] = (char)('0' + d);
        p2 &= one.f - 1;
        kappa--;
        if (p2 < delta) {
            *K += kappa;
            int index = -kappa;
            round_weed(buf, *len, delta, p2, one.f, wp_w * (index < 20 ? pow10_64[index] : 0));
            return;
        }
    }
}

/* v > 0, finite: its digits (no leading zeros) and the exponent of the last. */
static void grisu2(double v, char *buf, int *len, int *K)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int biased = (int)((bits >> SIGNIFICAND_BITS) & 0x7FF);
    uint64_t sig = bits & SIGNIFICAND_MASK;
    diyfp_t w = biased ? (diyfp_t){sig + HIDDEN_BIT, biased - EXPONENT_BIAS}
                       : (diyfp_t){sig, 1 - EXPONENT_BIAS};
    /* The rounding interval's ends m- and m+ (halfway to the neighbours),
     * with m+ normalized and m- on the same exponent. */
    diyfp_t plus = {(w.f << 1) + 1, w.e - 1};
    while (!(plus.f & (HIDDEN_BIT << 1))) {
        plus.f <<= 1;
        plus.e--;
    }
    plus.f <<= 64 - SIGNIFICAND_BITS - 2;
    plus.e -= 64 - SIGNIFICAND_BITS - 2;
    diyfp_t minus = w.f == HIDDEN_BIT ? (diyfp_t){(w.f << 2) - 1, w.e - 2}
                                      : (diyfp_t){(w.f << 1) - 1, w.e - 1};
    minus.f <<= minus.e - plus.e;
    minus.e = plus.e;

    diyfp_t c = cached_power(plus.e, K);
    diyfp_t W = mul(normalize(w), c);
    diyfp_t Wp = mul(plus, c), Wm = mul(minus, c);
    Wm.f++; /* narrow the interval by the error of the products */
    Wp.f--;
    digit_gen(W, Wp, Wp.f - Wm.f, buf, len, K);
}

size_t optd_dtoa(double v, char *out)
{
    if (!isfinite(v))
        return (size_t)snprintf(out, OPTD_DTOA_MAX, "%.17g", v);
    char *o = out;
    if (signbit(v)) {
        *o++ = '-';
        v = -v;
    }
    if (v == 0) {
        memcpy(o, "0.0", 3);
        return (size_t)(o + 3 - out);
    }
    char d[24];
    int len, K;
    grisu2(v, d, &len, &K);
    int x = len + K - 1; /* exponent of the first digit */
    if (x >= -4 && x < 17) {
        if (x >= len - 1) { /* integral: digits, zeros, ".0" */
            memcpy(o, d, (size_t)len);
            o += len;
            for (int i = len; i <= x; i++)
                *o++ = '0';
            memcpy(o, ".0", 2);
            o += 2;
        } else if (x >= 0) { /* d.ddd */
            memcpy(o, d, (size_t)x + 1);
            o += x + 1;
            *o++ = '.';
            memcpy(o, d + x + 1, (size_t)(len - x - 1));
            o += len - x - 1;
        } else { /* 0.000ddd */
            *o++ = '0';
            *o++ = '.';
            for (int i = -1; i > x; i--)
                *o++ = '0';
            memcpy(o, d, (size_t)len);
            o += len;
        }
    } else { /* d.ddde+XX, as printf writes it */
        *o++ = d[0];
        if (len > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)len - 1);
            o += len - 1;
        }
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        int a = x < 0 ? -x : x;
        if (a >= 100)
            *o++ = (char)('0' + a / 100);
        *o++ = (char)('0' + a / 10 % 10);
        *o++ = (char)('0' + a % 10);
    }
    return (size_t)(o - out);
}
