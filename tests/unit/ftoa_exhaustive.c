/* ftoa_exhaustive.c: optd_ftoa against snprintf("%.9g") + ".0" for every
 * one of the 2^32 float bit patterns (both signs, NaNs, subnormals), on
 * two threads.  ~18 minutes on 2 cores, so not part of `make check`
 * (test_ftoa.c keeps a stride of it); run with `make ftoa-exhaustive`
 * after any change to daemon/http/ftoa.c.  Exits 1 on any mismatch. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ftoa_ref.h"
#include "http/ftoa.h"

#define THREADS 2

static void *check_share(void *arg)
{
    uint64_t first = (uint64_t)(uintptr_t)arg, bad = 0;
    char got[OPTD_FTOA_MAX], want[48];
    for (uint64_t b = first; b < ((uint64_t)1 << 32); b += THREADS) {
        uint32_t u = (uint32_t)b;
        float f;
        memcpy(&f, &u, sizeof f);
        size_t n = optd_ftoa(f, got), m = ftoa_reference(f, want);
        if (n != m || memcmp(got, want, n) != 0) {
            if (bad++ < 10)
                printf("mismatch %08x: '%.*s', snprintf '%.*s'\n", u, (int)n, got, (int)m, want);
        }
    }
    return (void *)(uintptr_t)bad;
}

int main(void)
{
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, check_share, (void *)i);
    uint64_t bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad += (uintptr_t)r;
    }
    printf("ftoa-exhaustive: %llu mismatches in 2^32 floats\n", (unsigned long long)bad);
    return bad != 0;
}
