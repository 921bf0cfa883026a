/* persist.h: sessions on disk under --data-dir.
 *
 * A journal shared by all sessions holds every change as it came in (a
 * step's input, a create's or import's or patch's image, a delete); with
 * --sync always each append is made durable before it is answered (group
 * commit: one fsync round for every request waiting), with --sync interval
 * the journal is synced once per interval.  Snapshot files (one per
 * session, atomically replaced: tmp + fsync + rename + fsync of the
 * directory, checksummed and versioned) are its compaction, written in the
 * background.  The store knows nothing of files: persistence installs an
 * optd_durability_t hook in it.  The on-disk format is documented in
 * docs/persistence.md. */
#ifndef OPTD_PERSIST_H
#define OPTD_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "optd/error.h"
#include "store.h"

typedef enum optd_sync_mode {
    OPTD_SYNC_INTERVAL = 0, /* the journal is synced every --snapshot-interval */
    OPTD_SYNC_ALWAYS        /* a change is acknowledged once on disk */
} optd_sync_mode_t;

typedef struct optd_persist optd_persist_t;

typedef struct optd_persist_stats {
    size_t sessions_loaded;
    size_t params_loaded;
    size_t files_set_aside; /* damaged files renamed aside */
    double seconds;         /* time the load took */
} optd_persist_stats_t;

/* Opens (creating if needed) dir, takes an exclusive lock on it (flock of
 * the directory itself) so two daemons cannot share it, and installs the
 * durability hook in store.  interval_ms: how often the journal is synced
 * with OPTD_SYNC_INTERVAL.  0, OPTD_EIO (with a message naming the path and
 * the reason). */
int optd_persist_open(const char *dir, optd_sync_mode_t mode, int64_t interval_ms,
                      optd_store_t *store, optd_logger_t *log, optd_persist_t **out,
                      optd_err_t *err);

/* Loads every session on disk into the store; damaged files are logged with
 * their name and reason and renamed aside, the rest load.  0 or OPTD_EIO
 * (the directory itself could not be read). */
int optd_persist_load(optd_persist_t *p, optd_persist_stats_t *stats, optd_err_t *err);

/* The compaction: rotates the journal, writes the snapshot of every
 * session changed since it was last written and deletes the journals they
 * cover.  Runs off the request path (a libuv work-queue thread) every
 * --snapshot-interval; safe while requests run.  A failed write is logged
 * and the session stays dirty, to be retried next time; meanwhile it is
 * journaled whole into the new journal so the old ones can go all the
 * same.  Returns how many sessions were written, or OPTD_EIO if any write
 * failed. */
int optd_persist_flush(optd_persist_t *p, size_t *written, optd_err_t *err);

/* Makes a flush running now give up soon (a stop does not wait for
 * snapshots: the journal holds every change). */
void optd_persist_abort_flush(optd_persist_t *p);

/* At stop, once no request runs: makes everything journaled durable (one
 * sync), so nothing is lost and the next start replays it; then flushes
 * for at most budget_s seconds (*written snapshots), so there is less to
 * replay.  0, or OPTD_EIO when the sync failed. */
int optd_persist_stop(optd_persist_t *p, double budget_s, size_t *written, optd_err_t *err);

/* The journal's records made durable so far and the fdatasync rounds that
 * did it (0 and 0 before the load opened it). */
void optd_persist_journal_counts(optd_persist_t *p, uint64_t *records, uint64_t *syncs);

/* Releases the lock and frees p (call optd_persist_stop first). */
void optd_persist_close(optd_persist_t *p);

#endif
