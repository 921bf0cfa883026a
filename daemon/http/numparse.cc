// numparse.cc: optd_parse_double (numparse.h) over std::from_chars.
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "numparse.h"

double optd_parse_double(const char *s, size_t len)
{
    double d;
    std::from_chars_result r = std::from_chars(s, s + len, d);
    if (r.ec == std::errc() && r.ptr == s + len)
        return d;
    // Out of range (overflow to ±inf, underflow to 0) or anything else
    // unexpected: strtod decides, so every edge case stays as it was.  It
    // needs a NUL-terminated copy.
    char tmp[OPTD_NUMPARSE_MAX + 1];
    if (len > OPTD_NUMPARSE_MAX)
        len = OPTD_NUMPARSE_MAX; // outside the contract; never read past the buffer
    std::memcpy(tmp, s, len);
    tmp[len] = '\0';
    d = std::strtod(tmp, nullptr);
    return d;
}
