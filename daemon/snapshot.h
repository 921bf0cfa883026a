/* snapshot.h: the on-disk encoding of one session (format version 1).
 *
 * A snapshot is a self-contained byte string: magic, format version, body
 * length, the body (metadata, history, params, state buffers) and a zlib
 * CRC-32 of everything before it.  The same bytes are a session's snapshot
 * file and the payload of a journal image record.  docs/persistence.md
 * describes the layout field by field.  Decoding is paranoid: it checks
 * every length against the bytes present and validates the result, so it
 * is safe to run on any input (it is fuzzed). */
#ifndef OPTD_SNAPSHOT_H
#define OPTD_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "optd/error.h"
#include "session.h"

#define OPTD_SNAP_MAGIC "OPTDSNAP"
#define OPTD_SNAP_MAGIC_LEN 8u   /* the magic's bytes (no NUL) */
#define OPTD_SNAP_VERSION 1u
#define OPTD_SNAP_HEADER 24u     /* magic, u32 version, u32 flags, u64 body length */
#define OPTD_SNAP_BODY_LEN_AT 16u /* where in the header the body length is */
#define OPTD_SNAP_TRAILER 4u     /* CRC-32 of header and body */
/* One history entry: u64 step, f64 lr, f64 grad_norm, f64 loss, u8 has_loss,
 * i64 time_ms. */
#define OPTD_SNAP_HISTORY_ENTRY (8u + 8u + 8u + 8u + 1u + 8u)

/* Header flag: tagged sections follow the state buffers (u16 count, then
 * per section u16 tag, u32 length, payload).  Written only when a session
 * has something to put there, so files of sessions that use none of the
 * 1.1 fields stay readable by 1.0; a tag this optd does not know is
 * refused as a file from a newer optd. */
#define OPTD_SNAP_F_SECTIONS 1u
/* Header flag: a configuration only (a journal config record, written for
 * a PATCH): the metadata, labels and sections, with no history entries,
 * parameters or state buffers.  Never a file: optd_snapshot_decode refuses
 * it, optd_snapshot_decode_config takes only it. */
#define OPTD_SNAP_F_CONFIG 2u
enum {
    OPTD_SNAP_SEC_LOSS = 1,   /* u8 1, f64 last, u64 last_step, f64 best, u64 best_step */
    OPTD_SNAP_SEC_GROUPS = 2, /* parameter groups: u32 count, then per group u64 size,
                                 f64 mu_product, u8 momentum started, hyperparameters */
    OPTD_SNAP_SEC_ROUNDS = 3, /* rounds: u32 workers (0: off), u8 reduce, u64 max_staleness;
                                 u32 n, then per worker str name, u64 last applied step;
                                 u32 m, then per round in the history u64 step, u32 contributions */
    OPTD_SNAP_SEC_TABLE = 4,  /* tables (API.md 1.1): u64 row_size, u32 count, then per
                                 history entry of a rows step u32 index, u64 rows */
};
/* The loss section's payload length: u8 1, f64, u64, f64, u64. */
#define OPTD_SNAP_SEC_LOSS_LEN (1u + 8u + 8u + 8u + 8u)
/* The table section's payload: OPTD_SNAP_TABLE_FIXED bytes (u64 row_size,
 * u32 count), then OPTD_SNAP_TABLE_ENTRY bytes an entry (u32 index, u64 rows). */
#define OPTD_SNAP_TABLE_FIXED (8u + 4u)
#define OPTD_SNAP_TABLE_ENTRY (4u + 8u)

/* Snapshot file names: OPTD_SNAP_FILE_PREFIX + base32 of the session name
 * + OPTD_SNAP_FILE_SUFFIX; a snapshot being written has OPTD_SNAP_TMP_SUFFIX
 * appended until its rename. */
#define OPTD_SNAP_FILE_PREFIX "s-"
#define OPTD_SNAP_FILE_SUFFIX ".snap"
#define OPTD_SNAP_TMP_SUFFIX ".tmp"
/* Longest snapshot file name: "s-" + base32 of a 128-byte name + ".snap". */
#define OPTD_SNAP_FILE_MAX 224
/* A buffer for the name of a snapshot being written (name, ".tmp", NUL). */
#define OPTD_SNAP_TMP_SIZE (OPTD_SNAP_FILE_MAX + 8)

/* Encodes img with journal sequence number lsn into a malloc'd buffer
 * (*out, *len; caller frees).  0 or OPTD_ENOMEM. */
int optd_snapshot_encode(const optd_session_image_t *img, uint64_t lsn, uint8_t **out,
                         size_t *len, optd_err_t *err);

/* The same with OPTD_SNAP_F_CONFIG: img's history, parameters and
 * buffers are not written (img may have none: its st.buf[] say nothing
 * then).  The bytes of a journal config record. */
int optd_snapshot_encode_config(const optd_session_image_t *img, uint8_t **out, size_t *len,
                                optd_err_t *err);

/* Decodes buf into img (owned by the caller afterwards: free with
 * optd_session_image_free) and *lsn.  0, OPTD_ECORRUPT with the reason in
 * err ("truncated", "bad checksum", "unknown format version 7", ...), or
 * OPTD_ENOMEM.  On error img is left empty. */
int optd_snapshot_decode(const uint8_t *buf, size_t len, optd_session_image_t *img, uint64_t *lsn,
                         optd_err_t *err);
/* The same for a configuration (OPTD_SNAP_F_CONFIG, and only that): img
 * gets the name, configuration, size, step, times and sections' contents;
 * no history, parameters or buffers (img->params NULL). */
int optd_snapshot_decode_config(const uint8_t *buf, size_t len, optd_session_image_t *img,
                                optd_err_t *err);

/* The file name of session name: "s-" + lowercase RFC 4648 base32 of the
 * name (no padding) + ".snap".  Only [a-z2-7] from the name reach the disk,
 * so "..", "/" and names that differ only in case can neither escape the
 * directory nor collide on a case-insensitive file system.  (Hex would not
 * fit a 128-byte name in 255-byte file names.)  out holds at least
 * OPTD_SNAP_FILE_MAX + 1 bytes. */
void optd_snapshot_file_name(const char *name, char *out);

#endif
