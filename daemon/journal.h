/* journal.h: the append-only journal of every change, with group commit.
 *
 * One journal file at a time receives records (a step's input, a session
 * image, a delete), each framed with its sequence number (LSN) and a
 * CRC-32.  A writer thread takes every record waiting and writes them
 * together.  A record appended with optd_journal_append is waited for: its
 * batch is made durable with one fdatasync before its waiter wakes, so
 * concurrent requests share one fsync round (--sync always).  A record
 * appended with optd_journal_append_async is copied and written soon, and
 * made durable by the next periodic sync (every sync_every_ms: --sync
 * interval, Redis's appendfsync everysec) or optd_journal_sync.  When
 * snapshots cover a file's records, the journal is rotated to a new file
 * and the old ones are deleted.  Layout: docs/persistence.md. */
#ifndef OPTD_JOURNAL_H
#define OPTD_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "optd/error.h"

#define OPTD_JOURNAL_MAGIC "OPTDJRNL"
#define OPTD_JOURNAL_MAGIC_LEN 8u   /* the magic's bytes (no NUL) */
#define OPTD_JOURNAL_VERSION 2u     /* written; version 1 files are still read */
#define OPTD_JOURNAL_VERSION_MIN 1u
#define OPTD_JOURNAL_HEADER 24u   /* file: magic, u32 version, u32 flags, u64 sequence */
#define OPTD_JOURNAL_VERSION_AT 8u /* where in the file header each field is */
#define OPTD_JOURNAL_FLAGS_AT 12u
#define OPTD_JOURNAL_SEQ_AT 16u
#define OPTD_JREC_HEADER 24u      /* record: u32 magic, u32 type, u64 lsn, u64 payload length */
#define OPTD_JREC_MAGIC_AT 0u     /* where in the record header each field is */
#define OPTD_JREC_TYPE_AT 4u
#define OPTD_JREC_LSN_AT 8u
#define OPTD_JREC_LEN_AT 16u
#define OPTD_JREC_TRAILER 4u      /* after the payload: CRC-32 of header and payload */
#define OPTD_JREC_MAGIC 0x4A524543u /* "CERJ" little-endian: "JREC" read backwards */

/* Journal file names: "journal-" + 16 lowercase hex digits of the sequence
 * number + ".log" (OPTD_JOURNAL_NAME_LEN bytes); a buffer for one holds
 * OPTD_JOURNAL_NAME_SIZE bytes. */
#define OPTD_JOURNAL_NAME_PREFIX "journal-"
#define OPTD_JOURNAL_NAME_SUFFIX ".log"
#define OPTD_JOURNAL_NAME_DIGITS 16u
#define OPTD_JOURNAL_NAME_LEN \
    (sizeof OPTD_JOURNAL_NAME_PREFIX - 1 + OPTD_JOURNAL_NAME_DIGITS + sizeof OPTD_JOURNAL_NAME_SUFFIX - 1)
#define OPTD_JOURNAL_NAME_SIZE 40

enum {
    OPTD_JREC_IMAGE = 1,  /* payload: a snapshot (snapshot.h) */
    OPTD_JREC_DELETE = 2, /* payload: u16 length + the session name */
    OPTD_JREC_DELTA = 3,  /* payload: a snapshot whose history holds only the
                             entries newer than the session's previous record
                             (written by version 1 only; still replayed) */
    OPTD_JREC_STEP = 4,   /* payload: a step's input (persist.c, version 2) */
    OPTD_JREC_ROWS = 5,   /* payload: a rows step's input: the step head, u64 n_rows,
                             the rows (u64 each), their values (persist.c) */
    OPTD_JREC_ROUND = 6,  /* payload: a round's reduced gradient, with its workers' steps (persist.c) */
    OPTD_JREC_CONFIG = 7  /* payload: a session's configuration after a PATCH (a snapshot with
                             OPTD_SNAP_F_CONFIG: no history, parameters or buffers) */
};

/* A step record's payload (persist.c): u16 name length, the name, then
 * OPTD_JSTEP_FIXED bytes (u64 step, u8 dtype 0 float32 / 1 float64, u8
 * has_loss, f64 loss, i64 time_ms, u64 size), then the gradient.  The
 * offsets are from the start of that fixed part. */
#define OPTD_JSTEP_FIXED (8u + 1u + 1u + 8u + 8u + 8u)
#define OPTD_JSTEP_DTYPE_AT 8u
#define OPTD_JSTEP_HAS_LOSS_AT 9u
#define OPTD_JSTEP_LOSS_AT 10u
#define OPTD_JSTEP_TIME_AT 18u
#define OPTD_JSTEP_SIZE_AT 26u
/* A rows record puts u64 n_rows and the rows (u64 each) between the fixed
 * part and the values; a round record puts u16 n and per worker
 * OPTD_JROUND_WORKER_FIXED bytes plus its name (u16 name length, name, u64
 * step).  A delete's payload is u16 name length and the name. */
#define OPTD_JROUND_COUNT 2u /* a round record's u16 n */
#define OPTD_JROUND_WORKER_FIXED (2u + 8u)
#define OPTD_JNAME_LEN 2u   /* the u16 length before a session's or worker's name */
#define OPTD_JROWS_COUNT 8u /* a rows record's u64 n_rows */
#define OPTD_JROW 8u        /* one row index (u64) */
/* The longest step head (name length, name, fixed part); OPTD_NAME_MAX is
 * session.h's. */
#define OPTD_JSTEP_HEAD_MAX (OPTD_JNAME_LEN + OPTD_NAME_MAX + OPTD_JSTEP_FIXED)

/* Zero bytes kept written ahead of the records for deletes only: on a full
 * disk, a delete still fits in space the file already has. */
#define OPTD_JOURNAL_RESERVE ((size_t)64 * 1024)

/* Bytes of async copies that may wait for the writer: beyond, appenders
 * wait, so a disk slower than the steps bounds memory instead of growing it. */
#define OPTD_JOURNAL_QUEUE_MAX ((size_t)64 << 20)

typedef struct optd_journal optd_journal_t;

/* Creates journal file number seq in dirfd (named optd_journal_file_name)
 * and starts the writer thread.  Records get LSNs from next_lsn on.
 * sync_every_ms > 0: records appended without waiting are made durable at
 * least that often; 0: only by a waiting append or optd_journal_sync.
 * 0 or OPTD_EIO / OPTD_ENOMEM. */
int optd_journal_open(int dirfd, uint64_t seq, uint64_t next_lsn, int64_t sync_every_ms,
                      optd_logger_t *log, optd_journal_t **out, optd_err_t *err);

/* Appends one record whose payload is head (head_len bytes) followed by
 * body (len bytes; either may be empty), and waits until it is durable: 0
 * with *lsn set, or OPTD_EIO (nothing of it will be replayed).  Nothing is
 * copied.  Thread-safe. */
int optd_journal_append(optd_journal_t *j, uint32_t type, const uint8_t *head, size_t head_len,
                        const uint8_t *body, size_t len, uint64_t *lsn, optd_err_t *err);

/* The same, but the record is copied and the call returns at once with
 * *lsn set (unless OPTD_JOURNAL_QUEUE_MAX bytes of copies wait already:
 * then it waits for the writer to take them); it is durable after the
 * next periodic sync or optd_journal_sync.  0, or OPTD_ENOMEM / OPTD_EIO
 * (journal stopped). */
int optd_journal_append_async(optd_journal_t *j, uint32_t type, const uint8_t *head,
                              size_t head_len, const uint8_t *body, size_t len, uint64_t *lsn,
                              optd_err_t *err);

/* One record of a group (optd_journal_append_group): its type and payload
 * (head then body, either may be empty), and once appended its LSN. */
typedef struct optd_journal_rec {
    uint32_t type;
    const uint8_t *head;
    size_t head_len;
    const uint8_t *body;
    size_t len;
    uint64_t lsn;
} optd_journal_rec_t;

/* Appends recs[0..n) with consecutive LSNs and waits until they are
 * durable.  They are queued together, so the writer takes them in one
 * batch: one write and one fdatasync for the group (a batch of steps with
 * --sync always), durable or cut off together.  0 with each lsn set, or
 * OPTD_EIO / OPTD_ENOMEM (none of them will be replayed).  Nothing is
 * copied.  Thread-safe. */
int optd_journal_append_group(optd_journal_t *j, optd_journal_rec_t *recs, size_t n,
                              optd_err_t *err);

/* Waits until every record appended before the call is written and
 * synced: 0 or OPTD_EIO.  Thread-safe. */
int optd_journal_sync(optd_journal_t *j, optd_err_t *err);


/* Switches appends to a new file (the next sequence number) once the
 * records in flight are written; *old_seq is the number of the file
 * closed.  0, 1 when the current file holds no record (nothing to do), or
 * OPTD_EIO (appends continue in the old file). */
int optd_journal_rotate(optd_journal_t *j, uint64_t *old_seq, optd_err_t *err);

/* No record in the file receiving appends now has an LSN below this (and
 * every record of the files before it has), whatever was in flight when
 * it was rotated to. */
uint64_t optd_journal_first_lsn(optd_journal_t *j);

/* How many records were made durable so far, and in how many fdatasync
 * rounds (the group commit's measure; /metrics shows both). */
void optd_journal_counts(optd_journal_t *j, uint64_t *records, uint64_t *rounds);

/* The sequence number of the file receiving appends now. */
uint64_t optd_journal_seq(optd_journal_t *j);

/* Stops the writer (after writing and syncing what is queued), logs how many records
 * were made durable in how many fsync rounds, and closes the file. */
void optd_journal_close(optd_journal_t *j);

/* "journal-<16 hex digits>.log"; out holds OPTD_JOURNAL_NAME_SIZE bytes. */
void optd_journal_file_name(uint64_t seq, char *out);
/* Parses such a name: 0 and *seq, or -1. */
int optd_journal_parse_name(const char *name, uint64_t *seq);

/* Reads journal file path and calls fn for each good record in order.  A
 * torn or damaged tail is cut off: the file is truncated after the last
 * good record (when it is damaged other than by a short tail, a copy of the
 * whole file is kept first as <path>.damaged-<time>) and logged.  A file
 * whose header is bad is renamed aside whole.  fn returning non-zero stops
 * the replay with that value.  0, or OPTD_EIO when the file cannot be read. */
int optd_journal_replay(int dirfd, const char *name, optd_logger_t *log,
                        int (*fn)(void *arg, uint32_t type, uint64_t lsn, const uint8_t *payload,
                                  size_t len),
                        void *arg, size_t *set_aside, optd_err_t *err);

#endif
