/* clock.h: the one monotonic clock, for every timeout, deadline and
 * duration in the daemon (wall-clock times for clients come from
 * optd_now_ms in session.h).  Header-only: a vDSO call each. */
#ifndef OPTD_CLOCK_H
#define OPTD_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t optd_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t optd_mono_ms(void)
{
    return optd_mono_ns() / 1000000;
}

static inline double optd_mono_s(void)
{
    return (double)optd_mono_ns() / 1e9;
}

#endif
