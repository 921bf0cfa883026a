/* fuzz_snapshot.c: libFuzzer target for optd_snapshot_decode, the reader
 * of snapshot files and of the journal's image records (format:
 * docs/persistence.md).
 *
 * Each input is decoded twice: as it is (so damaged headers, lengths and
 * checksums are exercised), and with its body length and CRC-32 trailer
 * rewritten to match, so mutations get past the checksum and reach the
 * field parser.  Whatever decodes must then behave like a snapshot:
 *   - encode(decode(x)) decodes again, and encoding that gives the same
 *     bytes (the encoding is canonical after one round);
 *   - optd_session_from_image_take accepts it or refuses it with a
 *     validation error (what the loader does with it), and a session it
 *     accepts can take a step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "harness.h"
#include "snapshot.h"

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void check_decoded(optd_session_image_t *img, uint64_t lsn)
{
    optd_err_t err = {0};
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (optd_snapshot_encode(img, lsn, &b1, &n1, &err) != 0)
        fz_fail("re-encoding a decoded snapshot: %s", err.msg);
    optd_session_image_t again;
    uint64_t lsn2;
    if (optd_snapshot_decode(b1, n1, &again, &lsn2, &err) != 0)
        fz_fail("a re-encoded snapshot does not decode: %s", err.msg);
    if (lsn2 != lsn)
        fz_fail("the LSN changed in a round trip");
    if (optd_snapshot_encode(&again, lsn2, &b2, &n2, &err) != 0)
        fz_fail("re-encoding a decoded snapshot: %s", err.msg);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0)
        fz_fail("snapshot encoding is not stable over a round trip (%zu vs %zu bytes)", n1, n2);
    free(b1);
    free(b2);
    optd_session_image_free(&again);

    /* What the loader does next. */
    size_t size = img->size;
    optd_dtype_t dtype = img->cfg.dtype;
    optd_session_t *s = NULL;
    int rc = optd_session_from_image_take(img, 16, &s, &err);
    if (rc == OPTD_EINVAL || rc == OPTD_ENONFINITE)
        return;
    if (rc != 0)
        fz_fail("optd_session_from_image_take: %d %s", rc, err.msg);
    /* One step with a small gradient: the optimizer on restored state. */
    if (size <= 4096) {
        void *grad = calloc(size, optd_dtype_size(dtype));
        void *out = malloc(size * optd_dtype_size(dtype));
        if (!grad || !out)
            fz_fail("out of memory");
        for (size_t i = 0; i < size; i++) {
            if (dtype == OPTD_FLOAT32)
                ((float *)grad)[i] = 0.25f;
            else
                ((double *)grad)[i] = 0.25;
        }
        uint64_t step;
        double loss = 1.0;
        rc = optd_session_step(s, grad, NULL, &loss, &step, out, &err);
        if (rc != 0 && rc != OPTD_ENONFINITE && rc != OPTD_EINVAL)
            fz_fail("a step on a loaded session: %d %s", rc, err.msg);
        free(grad);
        free(out);
    }
    optd_session_release(s);
}

static void decode_one(const uint8_t *buf, size_t len)
{
    optd_session_image_t img;
    uint64_t lsn;
    optd_err_t err = {0};
    int rc = optd_snapshot_decode(buf, len, &img, &lsn, &err);
    if (rc == 0) {
        check_decoded(&img, lsn);
    } else if (rc != OPTD_ECORRUPT) {
        fz_fail("optd_snapshot_decode returned %d (%s)", rc, err.msg);
    } else if (!err.msg[0]) {
        fz_fail("optd_snapshot_decode refused without a reason");
    }
    optd_session_image_free(&img);
    /* The same bytes as a PATCH's config record (flag bit 1): refused with
     * a reason, or a configuration whose encoding is stable over a round
     * trip (as a snapshot's: missing hyperparameters take defaults). */
    rc = optd_snapshot_decode_config(buf, len, &img, &err);
    if (rc == 0) {
        optd_session_image_t again;
        uint8_t *b1 = NULL, *b2 = NULL;
        size_t n1 = 0, n2 = 0;
        if (img.params || img.n_history)
            fz_fail("a config record decoded with parameters or history");
        if (optd_snapshot_encode_config(&img, &b1, &n1, &err) != 0)
            fz_fail("cannot encode a decoded config record: %s", err.msg);
        if (optd_snapshot_decode_config(b1, n1, &again, &err) != 0)
            fz_fail("a re-encoded config record does not decode: %s", err.msg);
        if (optd_snapshot_encode_config(&again, &b2, &n2, &err) != 0)
            fz_fail("cannot encode a decoded config record: %s", err.msg);
        if (n1 != n2 || memcmp(b1, b2, n1) != 0)
            fz_fail("config record encoding is not stable over a round trip (%zu vs %zu bytes)", n1, n2);
        free(b1);
        free(b2);
        optd_session_image_free(&again);
    } else if (rc != OPTD_ECORRUPT) {
        fz_fail("optd_snapshot_decode_config returned %d (%s)", rc, err.msg);
    } else if (!err.msg[0]) {
        fz_fail("optd_snapshot_decode_config refused without a reason");
    }
    optd_session_image_free(&img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_one(data, size);
    if (size < OPTD_SNAP_HEADER + OPTD_SNAP_TRAILER)
        return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    put_le(fixed + 16, size - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER, 8);
    uLong crc = crc32(0L, fixed, (uInt)(size - OPTD_SNAP_TRAILER));
    put_le(fixed + size - OPTD_SNAP_TRAILER, crc, 4);
    if (size != 0 && memcmp(fixed, data, size) != 0)
        decode_one(fixed, size);
    free(fixed);
    return 0;
}
