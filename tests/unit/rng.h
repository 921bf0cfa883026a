/* rng.h: the unit tests' xorshift64 generator (Marsaglia), deterministic
 * so a failure reproduces; each test file has its own state. */
#ifndef OPTD_TEST_RNG_H
#define OPTD_TEST_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s;
} test_rng_t;

static inline uint64_t test_rng_next(test_rng_t *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

#endif
