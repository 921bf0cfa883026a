/* persist.h: sessions on disk under --data-dir.
 *
 * Snapshot files (one per session, atomically replaced: tmp + fsync +
 * rename + fsync of the directory, checksummed and versioned) plus, with
 * --sync always, a journal shared by all sessions whose appends are made
 * durable in group commits (one fsync round for every request waiting).
 * The store knows nothing of files: persistence installs an
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
    OPTD_SYNC_INTERVAL = 0, /* dirty sessions written every --snapshot-interval */
    OPTD_SYNC_ALWAYS        /* a change is acknowledged once on disk */
} optd_sync_mode_t;

typedef struct optd_persist optd_persist_t;

typedef struct optd_persist_stats {
    size_t sessions_loaded;
    size_t params_loaded;
    size_t files_set_aside; /* damaged files renamed aside */
    double seconds;         /* time the load took */
} optd_persist_stats_t;

/* Opens (creating if needed) dir, takes an exclusive lock on it so two
 * daemons cannot share it, and installs the durability hook in store.
 * 0, OPTD_EIO (with a message naming the path and the reason). */
int optd_persist_open(const char *dir, optd_sync_mode_t mode, optd_store_t *store,
                      optd_logger_t *log, optd_persist_t **out, optd_err_t *err);

/* Loads every session on disk into the store; damaged files are logged with
 * their name and reason and renamed aside, the rest load.  0 or OPTD_EIO
 * (the directory itself could not be read). */
int optd_persist_load(optd_persist_t *p, optd_persist_stats_t *stats, optd_err_t *err);

/* Writes every session changed since it was last written.  Runs off the
 * request path (a libuv work-queue thread) every --snapshot-interval and
 * once at stop; safe while requests run.  A failed write is logged and the
 * session stays dirty, to be retried next time.  Returns how many sessions
 * were written, or OPTD_EIO if any write failed. */
int optd_persist_flush(optd_persist_t *p, size_t *written, optd_err_t *err);

/* Flushes nothing; releases the lock and frees p (call flush first). */
void optd_persist_close(optd_persist_t *p);

#endif
