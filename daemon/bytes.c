/* bytes.c: the little-endian codec and CRC-32 of the on-disk formats
 * (bytes.h). */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* crc32() takes a uInt length: larger buffers go in pieces of this. */
#define CRC_PIECE ((size_t)1 << 30)

/* The writer's first allocation; it doubles from there. */
#define WBUF_FIRST_CAP 256

uint8_t *optd_le_put(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + bytes;
}

uint64_t optd_le_get(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint32_t optd_crc32(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t k = n > CRC_PIECE ? CRC_PIECE : n;
        crc = (uint32_t)crc32(crc, b, (uInt)k);
        b += k;
        n -= k;
    }
    return crc;
}

/* ---- writer ---- */

void optd_w_reserve(optd_wbuf_t *w, size_t more)
{
    if (w->oom || w->len + more <= w->cap)
        return;
    size_t cap = w->cap ? w->cap : WBUF_FIRST_CAP;
    while (cap < w->len + more)
        cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return;
    }
    w->p = p;
    w->cap = cap;
}

void optd_w_bytes(optd_wbuf_t *w, const void *src, size_t n)
{
    optd_w_reserve(w, n);
    if (w->oom || n == 0)
        return;
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

void optd_w_u(optd_wbuf_t *w, uint64_t v, int bytes)
{
    uint8_t b[8];
    optd_le_put(b, v, bytes);
    optd_w_bytes(w, b, (size_t)bytes);
}

void optd_w_f64(optd_wbuf_t *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    optd_w_u64(w, v);
}

void optd_w_str(optd_wbuf_t *w, const char *s)
{
    size_t n = strlen(s);
    optd_w_u16(w, (unsigned)n);
    optd_w_bytes(w, s, n);
}

void optd_w_array(optd_wbuf_t *w, const void *v, size_t n, size_t esz)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    optd_w_bytes(w, v, n * esz);
#else
    for (size_t i = 0; i < n; i++) {
        uint64_t x = 0;
        if (esz == 4) {
            uint32_t y;
            memcpy(&y, (const uint8_t *)v + i * 4, 4);
            x = y;
        } else {
            memcpy(&x, (const uint8_t *)v + i * 8, 8);
        }
        optd_w_u(w, x, (int)esz);
    }
#endif
}

size_t optd_w_hole32(optd_wbuf_t *w)
{
    size_t at = w->len;
    optd_w_u32(w, 0);
    return at;
}

void optd_w_patch32(optd_wbuf_t *w, size_t at, uint32_t v)
{
    if (!w->oom)
        optd_le_put32(w->p + at, v);
}

void optd_w_patch_len32(optd_wbuf_t *w, size_t at)
{
    optd_w_patch32(w, at, (uint32_t)(w->len - at - sizeof(uint32_t)));
}

/* ---- reader ---- */

const uint8_t *optd_r_take(optd_rbuf_t *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

uint64_t optd_r_u(optd_rbuf_t *r, int bytes)
{
    const uint8_t *p = optd_r_take(r, (size_t)bytes);
    return p ? optd_le_get(p, bytes) : 0;
}

double optd_r_f64(optd_rbuf_t *r)
{
    uint64_t v = optd_r_u(r, 8);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

char *optd_r_str(optd_rbuf_t *r, size_t max, bool *oom)
{
    size_t n = (size_t)optd_r_u(r, 2);
    if (n > max)
        r->bad = true;
    const uint8_t *p = optd_r_take(r, n);
    if (!p)
        return NULL;
    if (memchr(p, 0, n)) {
        r->bad = true;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        *oom = true;
        r->bad = true;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

bool optd_r_str_into(optd_rbuf_t *r, char *out, size_t cap)
{
    size_t n = (size_t)optd_r_u(r, 2);
    const uint8_t *p = n < cap ? optd_r_take(r, n) : NULL;
    if (!p || memchr(p, 0, n)) {
        r->bad = true;
        return false;
    }
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

void *optd_r_array(optd_rbuf_t *r, size_t n, size_t esz, bool *oom)
{
    if (n > optd_r_left(r) / esz) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = optd_r_take(r, n * esz);
    void *v = p ? malloc(n * esz) : NULL;
    if (p && !v) {
        *oom = true;
        r->bad = true;
        return NULL;
    }
    if (!v)
        return NULL;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(v, p, n * esz);
#else
    for (size_t i = 0; i < n; i++) {
        uint64_t x = optd_le_get(p + i * esz, (int)esz);
        if (esz == 4) {
            uint32_t y = (uint32_t)x;
            memcpy((uint8_t *)v + i * 4, &y, 4);
        } else {
            memcpy((uint8_t *)v + i * 8, &x, 8);
        }
    }
#endif
    return v;
}
