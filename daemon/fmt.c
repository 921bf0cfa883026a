/* fmt.c: numbers and times without printf (see fmt.h). */
#include "fmt.h"

char *optd_fmt_uint(char *o, unsigned long long v, int min_digits)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || n < min_digits);
    while (n)
        *o++ = tmp[--n];
    return o;
}

/* The proleptic Gregorian date of a day count since 1970-01-01 (Howard
 * Hinnant's civil_from_days): arithmetic instead of gmtime_r. */
static void civil_from_days(long long z, unsigned *year, unsigned *month, unsigned *day)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                          /* [0, 146096] */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    long long y = (long long)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    unsigned mp = (5 * doy + 2) / 153;                                    /* [0, 11] */
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (unsigned)(y + (*month <= 2));
}

size_t optd_fmt_time(char *out, int64_t unix_ms, bool with_ms)
{
    long long days = unix_ms / 86400000, ms = unix_ms % 86400000;
    if (ms < 0) {
        ms += 86400000;
        days--;
    }
    unsigned year, month, day;
    civil_from_days(days, &year, &month, &day);
    char *o = out;
    o = optd_fmt_uint(o, year % 10000, 4);
    *o++ = '-';
    o = optd_fmt_uint(o, month, 2);
    *o++ = '-';
    o = optd_fmt_uint(o, day, 2);
    *o++ = 'T';
    o = optd_fmt_uint(o, (unsigned long long)(ms / 3600000), 2);
    *o++ = ':';
    o = optd_fmt_uint(o, (unsigned long long)(ms / 60000 % 60), 2);
    *o++ = ':';
    o = optd_fmt_uint(o, (unsigned long long)(ms / 1000 % 60), 2);
    if (with_ms) {
        *o++ = '.';
        o = optd_fmt_uint(o, (unsigned long long)(ms % 1000), 3);
    }
    *o++ = 'Z';
    return (size_t)(o - out);
}
