/* bytes.h: the little-endian codec and CRC-32 of the on-disk formats.
 *
 * Snapshots (snapshot.c), journal framing (journal.c) and journal record
 * payloads (persist.c) all write integers little-endian and floats as their
 * IEEE 754 bit patterns, and check bytes with zlib's CRC-32.  This is the
 * one implementation of both: a growable writer whose allocation failure
 * is sticky (write everything, check once), a bounds-checked reader whose
 * "bad" is sticky (read everything, check once), fixed-position put/get for
 * headers, and a CRC-32 that feeds buffers over 4 GiB in pieces. */
#ifndef OPTD_BYTES_H
#define OPTD_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- fixed positions ---- */

/* Stores the low `bytes` bytes (1..8) of v at p, little-endian; returns
 * p + bytes. */
uint8_t *optd_le_put(uint8_t *p, uint64_t v, int bytes);
/* Reads `bytes` bytes (1..8) at p, little-endian. */
uint64_t optd_le_get(const uint8_t *p, int bytes);

static inline void optd_le_put32(uint8_t *p, uint32_t v) { optd_le_put(p, v, 4); }
static inline void optd_le_put64(uint8_t *p, uint64_t v) { optd_le_put(p, v, 8); }
static inline uint32_t optd_le_get32(const uint8_t *p) { return (uint32_t)optd_le_get(p, 4); }
static inline uint64_t optd_le_get64(const uint8_t *p) { return optd_le_get(p, 8); }

/* ---- CRC-32 ---- */

/* zlib's CRC-32 of p[0..n) continued from crc (start from 0, zlib's
 * initial value); any n, where crc32() itself takes an uInt.  n == 0
 * returns crc (p may then be NULL). */
uint32_t optd_crc32(uint32_t crc, const void *p, size_t n);

/* ---- growable writer ---- */

typedef struct optd_wbuf {
    uint8_t *p;   /* malloc'd; the caller takes it (or frees it) at the end */
    size_t len, cap;
    bool oom;     /* an allocation failed: every later write is dropped */
} optd_wbuf_t;

/* Makes room for `more` bytes (sets oom when it cannot). */
void optd_w_reserve(optd_wbuf_t *w, size_t more);
void optd_w_bytes(optd_wbuf_t *w, const void *src, size_t n);
/* The low `bytes` bytes of v, little-endian. */
void optd_w_u(optd_wbuf_t *w, uint64_t v, int bytes);
void optd_w_f64(optd_wbuf_t *w, double d);
/* A u16 length, then the bytes of s (no NUL). */
void optd_w_str(optd_wbuf_t *w, const char *s);
/* n values of esz (4 or 8) bytes each, host order in, little-endian out. */
void optd_w_array(optd_wbuf_t *w, const void *v, size_t n, size_t esz);
/* Reserves a u32 to be filled in later (optd_w_patch32): its offset. */
size_t optd_w_hole32(optd_wbuf_t *w);
/* Stores v at offset at (from optd_w_hole32), unless the writer failed. */
void optd_w_patch32(optd_wbuf_t *w, size_t at, uint32_t v);
/* Stores there the length of what was written after the hole: a
 * section's length written before its payload. */
void optd_w_patch_len32(optd_wbuf_t *w, size_t at);

static inline void optd_w_u8(optd_wbuf_t *w, unsigned v) { optd_w_u(w, v, 1); }
static inline void optd_w_u16(optd_wbuf_t *w, unsigned v) { optd_w_u(w, v, 2); }
static inline void optd_w_u32(optd_wbuf_t *w, uint32_t v) { optd_w_u(w, v, 4); }
static inline void optd_w_u64(optd_wbuf_t *w, uint64_t v) { optd_w_u(w, v, 8); }
static inline void optd_w_i64(optd_wbuf_t *w, int64_t v) { optd_w_u(w, (uint64_t)v, 8); }

/* ---- bounds-checked reader ---- */

typedef struct optd_rbuf {
    const uint8_t *p;
    size_t len, off;
    bool bad;     /* a read went past len (or a caller found the bytes wrong):
                     every later read yields zeros */
} optd_rbuf_t;

/* The next n bytes (advancing), or NULL with bad set. */
const uint8_t *optd_r_take(optd_rbuf_t *r, size_t n);
/* `bytes` bytes little-endian (0 once bad). */
uint64_t optd_r_u(optd_rbuf_t *r, int bytes);
double optd_r_f64(optd_rbuf_t *r);
/* A u16-length string of at most max bytes without NUL into a malloc'd
 * NUL-terminated copy, or NULL (bad set; *oom too when malloc failed). */
char *optd_r_str(optd_rbuf_t *r, size_t max, bool *oom);
/* The same into out (cap bytes, so at most cap - 1 of string): false
 * with bad set when it does not fit or is malformed. */
bool optd_r_str_into(optd_rbuf_t *r, char *out, size_t cap);
/* n values of esz (4 or 8) bytes each into a malloc'd host-order array,
 * or NULL (bad set; *oom too when malloc failed; NULL without bad when
 * n is 0). */
void *optd_r_array(optd_rbuf_t *r, size_t n, size_t esz, bool *oom);
/* Bytes not read yet. */
static inline size_t optd_r_left(const optd_rbuf_t *r) { return r->len - r->off; }

#endif
