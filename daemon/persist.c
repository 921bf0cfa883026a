/* persist.c: sessions on disk under --data-dir (persist.h).
 *
 * Files in the data directory (flock'ed through its own descriptor while a
 * daemon uses it, so no file can be unlinked to defeat the lock):
 *   s-<base32 name>.snap      one snapshot per session (snapshot.h)
 *   journal-<seq>.log         every change since the snapshots (journal.h)
 *   *.damaged-<time>          files found damaged, set aside, never read
 *
 * Log what came in, not what it made (Redis's AOF with RDB images): a step
 * is journaled as its input (step record) before it is applied, and replay
 * applies it through the same session code; creates, imports and patches
 * are journaled as images, deletes as delete records.  --sync always waits
 * for each record's fsync round (group commit); --sync interval lets the
 * journal writer sync once per interval whatever the number of sessions.
 * Snapshots are the compaction: in the background a flush rotates the
 * journal, writes the snapshots of the changed sessions that are due and
 * deletes the journals no session needs any more.  A big session changed a
 * little (rows of a table) is left to its journal records since its
 * snapshot, its deltas, until they are worth rewriting it (the policy
 * below).  A session whose snapshot cannot be written is journaled
 * whole into the new journal instead, and a delete whose unlink failed is
 * journaled again there, so one bad file never keeps the others' journals.
 * Each snapshot carries the LSN of the session's last journal record, so
 * replay applies only records newer than the snapshot.
 *
 * Ordering between a snapshot being written and a delete: the store marks
 * the session deleted before calling the remove hook, which unlinks the
 * file under p->mu; a flush renames its new file into place under p->mu only
 * if the session is not marked deleted.  Either the rename comes first and
 * the unlink removes it, or the flush sees the mark and drops its file. */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bytes.h"
#include "clock.h"
#include "fileio.h"
#include "journal.h"
#include "session_internal.h"
#include "snapshot.h"

/* Names whose delete is journaled but whose snapshot file may still be
 * there: the unlink failed (retried by each flush, and the delete record
 * carried into the new journal) or waits for a batch's sync (ttl). */
typedef struct unlink_list {
    char **names;
    size_t n, cap;
} unlink_list_t;

/* A journal file no longer appended to, kept while some session's
 * snapshot does not yet hold a record in it. */
typedef struct kept_journal {
    uint64_t seq;
    uint64_t end_lsn; /* every record in it has a smaller LSN */
    uint64_t bytes;   /* its size on disk */
} kept_journal_t;

struct optd_persist {
    char *dir;
    int dirfd;               /* flock'ed: the directory itself is the lock */
    optd_sync_mode_t mode;
    int64_t interval_ms;
    optd_store_t *store;
    optd_logger_t *log;
    optd_durability_t dur;
    atomic_bool loading;     /* load in progress: hooks do not journal */
    atomic_llong deadline_ms; /* a flush gives up at this CLOCK_MONOTONIC time (0: never):
                                 at a stop the journal has it all */
    pthread_mutex_t mu;      /* leaf lock: snapshot renames vs. unlinks; dir_dirty; unlinks */
    bool dir_dirty;          /* a file was unlinked since the last directory fsync */
    unlink_list_t unlinks;
    pthread_rwlock_t removing; /* held shared by a delete from its journal record to
                                  its unlink; a flush passes it exclusively after
                                  rotating, so old journals never outlive an unlink */
    pthread_mutex_t flush_mu; /* one flush at a time; guards the fields below */
    optd_journal_t *journal; /* after load */
    kept_journal_t *kept;    /* journal files to delete once snapshots cover them, oldest first */
    size_t n_kept, cap_kept;
    uint64_t big_images;     /* bytes of the big sessions' images, as of the last flush */
    uint64_t file_max_lsn;   /* while loading: the largest LSN in the file being replayed */
    uint64_t max_lsn;
    uint64_t max_journal_seq;
    size_t set_aside;
};

/* ---- the step and delete records (layout: journal.h) ------------------------- */

/* The bytes a record of payload len takes in the journal file. */
static uint64_t record_bytes(size_t len)
{
    return OPTD_JREC_HEADER + (uint64_t)len + OPTD_JREC_TRAILER;
}


static size_t step_head_encode(const optd_step_record_t *rec, uint8_t *out)
{
    size_t n = strlen(rec->name);
    uint8_t *p = optd_le_put(out, n, 2);
    memcpy(p, rec->name, n);
    p += n;
    p = optd_le_put(p, rec->step, 8);
    *p++ = rec->dtype == OPTD_FLOAT64 ? 1 : 0;
    *p++ = rec->has_loss ? 1 : 0;
    uint64_t bits;
    memcpy(&bits, &rec->loss, 8);
    p = optd_le_put(p, bits, 8);
    p = optd_le_put(p, (uint64_t)rec->time_ms, 8);
    p = optd_le_put(p, rec->size, 8);
    return (size_t)(p - out);
}

/* A round's record (OPTD_JREC_ROUND) is a step record whose fixed part is
 * followed by u16 n, then per worker u16 name length, name, u64 step,
 * before the gradient.  The head is malloc'd (1024 names do not belong on
 * a stack): *out, its length returned, or 0 when out of memory. */
static size_t round_head_encode(const optd_step_record_t *rec, uint8_t **out)
{
    size_t cap = OPTD_JSTEP_HEAD_MAX + OPTD_JROUND_COUNT + rec->n_workers * (OPTD_JROUND_WORKER_FIXED + OPTD_WORKER_NAME_MAX);
    uint8_t *h = malloc(cap);
    if (!(*out = h))
        return 0;
    size_t hl = step_head_encode(rec, h);
    uint8_t *p = optd_le_put(h + hl, rec->n_workers, OPTD_JROUND_COUNT);
    for (size_t i = 0; i < rec->n_workers; i++) {
        size_t n = strlen(rec->workers[i].worker);
        p = optd_le_put(p, n, 2);
        memcpy(p, rec->workers[i].worker, n);
        p = optd_le_put(p + n, rec->workers[i].step, 8);
    }
    return (size_t)(p - h);
}

/* The workers of a round record at b (len bytes left) into *ws (malloc'd,
 * caller frees): the bytes they took, or 0 when malformed or out of
 * memory. */
static size_t round_workers_decode(const uint8_t *b, size_t len, optd_step_record_t *rec,
                                   optd_contribution_t **ws)
{
    *ws = NULL;
    if (len < OPTD_JROUND_COUNT)
        return 0;
    size_t n = (size_t)optd_le_get(b, OPTD_JROUND_COUNT), off = OPTD_JROUND_COUNT;
    if (n == 0 || n > OPTD_ROUND_WORKERS_MAX || !(*ws = calloc(n, sizeof **ws)))
        return 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = len - off >= OPTD_JNAME_LEN ? (size_t)optd_le_get(b + off, 2) : 0;
        if (k == 0 || k > OPTD_WORKER_NAME_MAX || len - off < OPTD_JROUND_WORKER_FIXED + k) {
            free(*ws);
            *ws = NULL;
            return 0;
        }
        memcpy((*ws)[i].worker, b + off + OPTD_JNAME_LEN, k);
        (*ws)[i].step = optd_le_get(b + off + OPTD_JNAME_LEN + k, 8);
        off += OPTD_JROUND_WORKER_FIXED + k;
    }
    rec->n_workers = n;
    rec->workers = *ws;
    return off;
}

/* Decodes a step record of type OPTD_JREC_STEP, OPTD_JREC_ROUND or
 * OPTD_JREC_ROWS (rec->name points into name; a round's workers into *ws,
 * malloc'd; a rows record's rows stay in the payload, little-endian at any
 * offset, for the caller to read): 0 or -1. */
static int step_decode(const uint8_t *b, size_t len, uint32_t type, optd_step_record_t *rec, char *name,
                       optd_contribution_t **ws)
{
    bool round = type == OPTD_JREC_ROUND, rows = type == OPTD_JREC_ROWS;
    *ws = NULL;
    rec->n_workers = 0;
    rec->workers = NULL;
    if (len < OPTD_JNAME_LEN)
        return -1;
    size_t n = (size_t)optd_le_get(b, 2);
    if (n == 0 || n > OPTD_NAME_MAX || len < OPTD_JNAME_LEN + n + OPTD_JSTEP_FIXED)
        return -1;
    memcpy(name, b + OPTD_JNAME_LEN, n);
    name[n] = 0;
    const uint8_t *p = b + OPTD_JNAME_LEN + n;
    rec->name = name;
    rec->step = optd_le_get(p, 8);
    if (p[OPTD_JSTEP_DTYPE_AT] > 1 || p[OPTD_JSTEP_HAS_LOSS_AT] > 1)
        return -1;
    rec->dtype = p[OPTD_JSTEP_DTYPE_AT] ? OPTD_FLOAT64 : OPTD_FLOAT32;
    rec->has_loss = p[OPTD_JSTEP_HAS_LOSS_AT];
    uint64_t bits = optd_le_get(p + OPTD_JSTEP_LOSS_AT, 8);
    memcpy(&rec->loss, &bits, 8);
    rec->time_ms = (int64_t)optd_le_get(p + OPTD_JSTEP_TIME_AT, 8);
    rec->size = (size_t)optd_le_get(p + OPTD_JSTEP_SIZE_AT, 8);
    size_t left = len - OPTD_JNAME_LEN - n - OPTD_JSTEP_FIXED;
    if (round) {
        size_t used = round_workers_decode(p + OPTD_JSTEP_FIXED, left, rec, ws);
        if (!used)
            return -1;
        left -= used;
        p += used;
    }
    size_t esz = optd_dtype_size(rec->dtype);
    rec->rows = NULL;
    rec->n_rows = 0;
    if (rows) {
        /* rows_encode's layout; the values are n_rows * row_size of the
         * session's dtype, which replay checks against the session. */
        if (left < OPTD_JROWS_COUNT)
            return -1;
        uint64_t nr = optd_le_get(p + OPTD_JSTEP_FIXED, 8);
        left -= OPTD_JROWS_COUNT;
        if (nr == 0 || nr > left / OPTD_JROW || (left - nr * OPTD_JROW) % esz != 0 ||
            ((left - nr * OPTD_JROW) / esz) % nr != 0 || rec->size == 0)
            return -1;
        rec->n_rows = (size_t)nr;
        rec->row_size = (left - nr * OPTD_JROW) / esz / nr;
        rec->rows = (const uint64_t *)(const void *)(p + OPTD_JSTEP_FIXED + OPTD_JROWS_COUNT);
        rec->grad = p + OPTD_JSTEP_FIXED + OPTD_JROWS_COUNT + nr * OPTD_JROW;
        return 0;
    }
    if (rec->size == 0 || rec->size > left / esz || rec->size * esz != left)
        return -1;
    rec->grad = p + OPTD_JSTEP_FIXED;
    return 0;
}

/* ---- the unlink list (with p->mu held) ---------------------------------------- */

static void unlinks_drop(optd_persist_t *p, const char *name)
{
    for (size_t i = 0; i < p->unlinks.n; i++) {
        if (strcmp(p->unlinks.names[i], name) == 0) {
            free(p->unlinks.names[i]);
            p->unlinks.names[i] = p->unlinks.names[--p->unlinks.n];
            return;
        }
    }
}

static int unlinks_add(optd_persist_t *p, const char *name)
{
    unlinks_drop(p, name);
    if (p->unlinks.n == p->unlinks.cap) {
        size_t cap = p->unlinks.cap ? p->unlinks.cap * 2 : 16;
        char **g = realloc(p->unlinks.names, cap * sizeof *g);
        if (!g)
            return OPTD_ENOMEM;
        p->unlinks.names = g;
        p->unlinks.cap = cap;
    }
    char *c = strdup(name);
    if (!c)
        return OPTD_ENOMEM;
    p->unlinks.names[p->unlinks.n++] = c;
    return 0;
}

/* Unlinks name's snapshot file (with p->mu held): 0 (also when there is
 * none), or errno. */
static int unlink_snapshot(optd_persist_t *p, const char *name)
{
    char file[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name(name, file);
    if (unlinkat(p->dirfd, file, 0) != 0 && errno != ENOENT)
        return errno;
    p->dir_dirty = true;
    return 0;
}

/* Retries every pending unlink (with p->mu held); the names that still
 * fail stay.  Returns how many are left. */
static size_t unlinks_retry(optd_persist_t *p)
{
    for (size_t i = 0; i < p->unlinks.n;) {
        int e = unlink_snapshot(p, p->unlinks.names[i]);
        if (e == 0) {
            free(p->unlinks.names[i]);
            p->unlinks.names[i] = p->unlinks.names[--p->unlinks.n];
            continue;
        }
        optd_log(p->log, OPTD_LOG_ERROR,
                 "persist: cannot remove the snapshot of deleted session '%s' from %s: %s (its "
                 "delete stays journaled; will retry)", p->unlinks.names[i], p->dir, strerror(e));
        i++;
    }
    return p->unlinks.n;
}

/* ---- the durability hooks ------------------------------------------------------ */

/* A record of the mode's kind: waited for with --sync always, queued for
 * the interval's sync otherwise (or when async). */
static int journal_put(optd_persist_t *p, bool async, uint32_t type, const uint8_t *head,
                       size_t head_len, const uint8_t *body, size_t len, uint64_t *lsn,
                       optd_err_t *err)
{
    if (!p->journal)
        return optd_err_set(err, OPTD_EIO, "persistence is not ready (journal not open)");
    if (async || p->mode == OPTD_SYNC_INTERVAL)
        return optd_journal_append_async(p->journal, type, head, head_len, body, len, lsn, err);
    return optd_journal_append(p->journal, type, head, head_len, body, len, lsn, err);
}

/* A delete record for name: waited for (durable in both modes), or queued
 * when async. */
static int journal_delete(optd_persist_t *p, const char *name, bool async, optd_err_t *err)
{
    if (!p->journal)
        return optd_err_set(err, OPTD_EIO, "persistence is not ready (journal not open)");
    size_t n = strlen(name);
    uint8_t len[OPTD_JNAME_LEN];
    optd_le_put(len, n, OPTD_JNAME_LEN);
    uint64_t lsn;
    if (async)
        return optd_journal_append_async(p->journal, OPTD_JREC_DELETE, len, sizeof len,
                                         (const uint8_t *)name, n, &lsn, err);
    return optd_journal_append(p->journal, OPTD_JREC_DELETE, len, sizeof len, (const uint8_t *)name, n,
                               &lsn, err);
}

/* A rows step's record (OPTD_JREC_ROWS): the step head, u64 n_rows, the
 * rows (u64 little-endian each) and their values: the bytes of the rows
 * touched, never the table's. */
static int journal_rows(optd_persist_t *p, const optd_step_record_t *rec, const uint8_t *head,
                        size_t hl, uint64_t *lsn, optd_err_t *err)
{
    size_t n = rec->n_rows;
    uint8_t *buf = malloc(hl + OPTD_JROWS_COUNT + n * OPTD_JROW);
    if (!buf)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory journaling a step of %zu rows", n);
    memcpy(buf, head, hl);
    uint8_t *q = optd_le_put(buf + hl, n, 8);
    for (size_t i = 0; i < n; i++)
        q = optd_le_put(q, rec->rows[i], 8);
    int rc = journal_put(p, false, OPTD_JREC_ROWS, buf, hl + OPTD_JROWS_COUNT + n * OPTD_JROW, rec->grad,
                         n * rec->row_size * optd_dtype_size(rec->dtype), lsn, err);
    free(buf);
    return rc;
}

/* With the session's mutex held, before the step is applied: its input. */
static int dur_step(void *ctx, optd_session_t *s, const optd_step_record_t *rec, uint64_t *lsn,
                    optd_err_t *err)
{
    optd_persist_t *p = ctx;
    *lsn = 0;
    if (atomic_load(&p->loading))
        return 0;
    uint8_t fixed[OPTD_JSTEP_HEAD_MAX], *head = fixed, *round_head = NULL;
    size_t hl;
    int rc;
    if (rec->n_workers) {
        if (!(hl = round_head_encode(rec, &round_head)))
            return optd_err_set(err, OPTD_ENOMEM, "out of memory journaling a round");
        head = round_head;
    } else {
        hl = step_head_encode(rec, head);
    }
    /* What the record holds beside its head: a rows step's rows and their
     * values (journal_rows), else the whole gradient. */
    size_t esz = optd_dtype_size(rec->dtype);
    size_t gl = rec->rows ? OPTD_JROWS_COUNT + rec->n_rows * OPTD_JROW + rec->n_rows * rec->row_size * esz : rec->size * esz;
    if (rec->rows)
        rc = journal_rows(p, rec, head, hl, lsn, err);
    else
        rc = journal_put(p, false, rec->n_workers ? OPTD_JREC_ROUND : OPTD_JREC_STEP, head, hl, rec->grad, gl,
                         lsn, err);
    free(round_head);
    if (rc && p->mode == OPTD_SYNC_INTERVAL) {
        /* Interval mode promises the interval, not each step: the session
         * stays dirty and its next snapshot holds this step. */
        optd_log(p->log, OPTD_LOG_ERROR, "persist: step of '%s' not journaled: %s", rec->name,
                 err->msg);
        *lsn = 0;
        optd_session_add_delta_locked(s, 0, 0, false);
        return 0;
    }
    if (rc == 0)
        optd_session_add_delta_locked(s, *lsn, record_bytes(hl + gl), false);
    return rc;
}

/* A batch step's record head into a malloc'd buffer: the step head, and
 * for a rows step its rows (as journal_rows writes them); *type and
 * *body_len set.  NULL when out of memory. */
static uint8_t *batch_head(const optd_step_record_t *rec, size_t *hl, uint32_t *type, size_t *body_len)
{
    size_t esz = optd_dtype_size(rec->dtype), n = rec->rows ? rec->n_rows : 0;
    uint8_t *h = malloc(OPTD_JSTEP_HEAD_MAX + (rec->rows ? OPTD_JROWS_COUNT + n * OPTD_JROW : 0));
    if (!h)
        return NULL;
    *hl = step_head_encode(rec, h);
    *type = OPTD_JREC_STEP;
    *body_len = rec->size * esz;
    if (rec->rows) {
        uint8_t *q = optd_le_put(h + *hl, n, 8);
        for (size_t k = 0; k < n; k++)
            q = optd_le_put(q, rec->rows[k], 8);
        *hl += OPTD_JROWS_COUNT + n * OPTD_JROW;
        *type = OPTD_JREC_ROWS;
        *body_len = n * rec->row_size * esz;
    }
    return h;
}

/* With the mutexes of the batch's sessions held, before any of its steps
 * is applied: their inputs, as one group (--sync always: one fsync round
 * for the batch, all durable or none), or queued one by one (interval).
 * Each record counts as a delta of its session, as dur_step's do. */
static int dur_steps(void *ctx, optd_session_t *const *ss, const optd_step_record_t *recs, size_t n,
                     uint64_t *lsns, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    memset(lsns, 0, n * sizeof *lsns);
    if (atomic_load(&p->loading) || n == 0)
        return 0;
    if (p->mode == OPTD_SYNC_INTERVAL) {
        for (size_t i = 0; i < n; i++)
            dur_step(ctx, ss[i], &recs[i], &lsns[i], err); /* never fails in interval mode */
        return 0;
    }
    if (!p->journal)
        return optd_err_set(err, OPTD_EIO, "persistence is not ready (journal not open)");
    optd_journal_rec_t *jr = calloc(n, sizeof *jr);
    int rc = jr ? 0 : optd_err_set(err, OPTD_ENOMEM, "out of memory journaling %zu steps", n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (recs[i].n_workers) { /* a batch takes no round's contributions */
            rc = optd_err_set(err, OPTD_EINTERNAL, "a round's step reached the batch journal");
            break;
        }
        size_t hl, bl;
        uint32_t type;
        uint8_t *h = batch_head(&recs[i], &hl, &type, &bl);
        if (!h) {
            rc = optd_err_set(err, OPTD_ENOMEM, "out of memory journaling %zu steps", n);
            break;
        }
        jr[i] = (optd_journal_rec_t){.type = type, .head = h, .head_len = hl, .body = recs[i].grad,
                                     .len = bl};
    }
    if (rc == 0)
        rc = optd_journal_append_group(p->journal, jr, n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        lsns[i] = jr[i].lsn;
        optd_session_add_delta_locked(ss[i], lsns[i], record_bytes(jr[i].head_len + jr[i].len), false);
    }
    for (size_t i = 0; jr && i < n; i++)
        free((void *)jr[i].head);
    free(jr);
    return rc;
}

/* With s->mu held, after s changed as a whole (create, import, patch; or a
 * flush carrying a session it could not snapshot): its image. */
static int dur_commit(void *ctx, struct optd_session *s, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    if (atomic_load(&p->loading))
        return 0;
    pthread_mutex_lock(&p->mu);
    unlinks_drop(p, s->name); /* its new snapshot replaces the old file */
    pthread_mutex_unlock(&p->mu);
    optd_session_image_t img;
    int rc = optd_session_copy_image_locked(s, &img, err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = optd_snapshot_encode(&img, 0, &buf, &len, err);
    optd_session_image_free(&img);
    if (rc)
        return rc;
    uint64_t lsn;
    rc = journal_put(p, false, OPTD_JREC_IMAGE, NULL, 0, buf, len, &lsn, err);
    free(buf);
    if (rc == 0) {
        optd_session_set_lsn_locked(s, lsn);
        optd_session_add_delta_locked(s, lsn, record_bytes(len), true);
    }
    return rc;
}

/* With s->mu held, after only s's configuration changed (a PATCH): the
 * configuration, a record of a few hundred bytes whatever the session's
 * size, replayed onto the session its earlier records rebuild. */
static int dur_commit_config(void *ctx, struct optd_session *s, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    if (atomic_load(&p->loading))
        return 0;
    optd_session_image_t img;
    int rc = optd_session_config_image_locked(s, &img, err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = optd_snapshot_encode_config(&img, &buf, &len, err);
    optd_session_image_free(&img);
    if (rc)
        return rc;
    uint64_t lsn;
    rc = journal_put(p, false, OPTD_JREC_CONFIG, NULL, 0, buf, len, &lsn, err);
    free(buf);
    if (rc == 0) {
        optd_session_set_lsn_locked(s, lsn);
        optd_session_add_delta_locked(s, lsn, record_bytes(len), false);
    }
    return rc;
}

/* The session was marked deleted (with its mutex held): journal the delete
 * (durably, unless batched), then remove its snapshot file; if that fails
 * the delete stays journaled and the unlink is retried by each flush. */
static int dur_remove(void *ctx, const char *name, bool batch, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    pthread_rwlock_rdlock(&p->removing);
    if (!atomic_load(&p->loading)) {
        int rc = journal_delete(p, name, batch, err);
        if (rc) {
            pthread_rwlock_unlock(&p->removing);
            return rc;
        }
    }
    pthread_mutex_lock(&p->mu);
    int e = batch ? EAGAIN : unlink_snapshot(p, name);
    if (e) {
        if (!batch)
            optd_log(p->log, OPTD_LOG_ERROR,
                     "persist: cannot remove the snapshot of deleted session '%s' from %s: %s (its "
                     "delete stays journaled; will retry)", name, p->dir, strerror(e));
        if (unlinks_add(p, name) != 0)
            optd_log(p->log, OPTD_LOG_ERROR, "persist: out of memory remembering '%s'", name);
    }
    pthread_mutex_unlock(&p->mu);
    pthread_rwlock_unlock(&p->removing);
    return 0;
}

/* After batched removes: their delete records durable, then their files
 * gone. */
static int dur_sync(void *ctx, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    int rc = p->journal ? optd_journal_sync(p->journal, err) : 0;
    if (rc) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: deletes not made durable: %s (the next flush "
                 "journals them again)", err->msg);
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    unlinks_retry(p);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* ---- open / close ------------------------------------------------------------------ */

int optd_persist_open(const char *dir, optd_sync_mode_t mode, int64_t interval_ms,
                      optd_store_t *store, optd_logger_t *log, optd_persist_t **out,
                      optd_err_t *err)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return optd_err_set(err, OPTD_EIO, "cannot create data directory %s: %s", dir,
                            strerror(errno));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return optd_err_set(err, OPTD_EIO, "cannot open data directory %s: %s", dir,
                            strerror(errno));
    /* The directory itself is locked: a lock file could be unlinked, and a
     * second daemon would then lock a new one. */
    if (flock(dirfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(dirfd);
        if (e == EWOULDBLOCK)
            return optd_err_set(err, OPTD_EIO,
                                "data directory %s is in use by another optd process", dir);
        return optd_err_set(err, OPTD_EIO, "cannot lock %s: %s", dir, strerror(e));
    }
    optd_persist_t *p = calloc(1, sizeof *p);
    char *dcopy = strdup(dir);
    if (!p || !dcopy) {
        free(p);
        free(dcopy);
        close(dirfd);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory opening persistence");
    }
    p->dir = dcopy;
    p->dirfd = dirfd;
    p->mode = mode;
    p->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    p->store = store;
    p->log = log;
    atomic_init(&p->loading, false);
    atomic_init(&p->deadline_ms, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->flush_mu, NULL);
    pthread_rwlock_init(&p->removing, NULL);
    p->dur.ctx = p;
    p->dur.step = dur_step;
    p->dur.steps = dur_steps;
    p->dur.commit = dur_commit;
    p->dur.commit_config = dur_commit_config;
    p->dur.remove = dur_remove;
    p->dur.sync = dur_sync;
    optd_store_set_durability(store, &p->dur);
    *out = p;
    return 0;
}

void optd_persist_journal_counts(optd_persist_t *p, uint64_t *records, uint64_t *syncs)
{
    *records = *syncs = 0;
    if (p->journal) /* opened by the load, before requests are served */
        optd_journal_counts(p->journal, records, syncs);
}

int optd_persist_stop(optd_persist_t *p, double budget_s, size_t *written, optd_err_t *err)
{
    *written = 0;
    int rc = p->journal ? optd_journal_sync(p->journal, err) : 0;
    if (rc || budget_s <= 0)
        return rc;
    /* Nothing can be lost any more; what time is left goes to snapshots,
     * so the next start has less to replay. */
    atomic_store(&p->deadline_ms, optd_mono_ms() + (long long)(budget_s * 1000.0));
    optd_err_t ferr;
    optd_persist_flush(p, written, &ferr);
    return 0;
}

void optd_persist_abort_flush(optd_persist_t *p)
{
    atomic_store(&p->deadline_ms, 1);
}

void optd_persist_close(optd_persist_t *p)
{
    if (!p)
        return;
    optd_journal_close(p->journal);
    close(p->dirfd); /* releases the flock */
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->flush_mu);
    pthread_rwlock_destroy(&p->removing);
    for (size_t i = 0; i < p->unlinks.n; i++)
        free(p->unlinks.names[i]);
    free(p->unlinks.names);
    free(p->kept);
    free(p->dir);
    free(p);
}

/* ---- the journal files kept ------------------------------------------------------ */

/* Journal file seq, whose records all have LSNs below end_lsn, joins the
 * kept ones (the newest).  Out of memory it is simply never deleted:
 * replay skips what snapshots hold. */
static void kept_add(optd_persist_t *p, uint64_t seq, uint64_t end_lsn)
{
    if (p->n_kept == p->cap_kept) {
        size_t cap = p->cap_kept ? p->cap_kept * 2 : 8;
        kept_journal_t *g = realloc(p->kept, cap * sizeof *g);
        if (!g)
            return;
        p->kept = g;
        p->cap_kept = cap;
    }
    char name[OPTD_JOURNAL_NAME_SIZE];
    optd_journal_file_name(seq, name);
    struct stat st;
    uint64_t bytes = fstatat(p->dirfd, name, &st, 0) == 0 ? (uint64_t)st.st_size : 0;
    p->kept[p->n_kept++] = (kept_journal_t){seq, end_lsn, bytes};
}

/* Deletes the kept journal files whose every record is older than
 * need_lsn, the oldest record a session still needs (the rest stay, in
 * order). */
static void kept_drop(optd_persist_t *p, uint64_t need_lsn)
{
    size_t n = 0, dropped = 0;
    for (size_t i = 0; i < p->n_kept; i++) {
        kept_journal_t *k = &p->kept[i];
        if (k->end_lsn > need_lsn) {
            p->kept[n++] = *k;
            continue;
        }
        char name[OPTD_JOURNAL_NAME_SIZE];
        optd_journal_file_name(k->seq, name);
        if (unlinkat(p->dirfd, name, 0) != 0 && errno != ENOENT) {
            /* Kept on the list, to be retried: left behind, its records
             * could bring back a session deleted in a file dropped since. */
            optd_log(p->log, OPTD_LOG_WARN, "persist: cannot remove %s/%s: %s (will retry)",
                     p->dir, name, strerror(errno));
            p->kept[n++] = *k;
            continue;
        }
        dropped++;
    }
    p->n_kept = n;
    if (dropped)
        optd_dir_sync(p->dirfd);
}

/* ---- the policy: which changed sessions a flush snapshots ----
 *
 * A snapshot rewrites a session whole; its journal records since its last
 * snapshot (the deltas) cost what changed.  A big session changed a little
 * (a few rows of a table) is therefore left to its deltas until they are
 * worth a rewrite, and the journal files holding them are kept until then:
 * a file is deleted once every record in it is older than the oldest one a
 * session still needs.  Replay already applies only the records newer than
 * each snapshot. */

/* Smaller sessions are snapshotted whenever they changed, as before: a
 * snapshot costs them little, and the journal files can go at once. */
#define DELTA_MIN_IMAGE ((size_t)1 << 20)
/* A big session is snapshotted once its deltas reach this many times its
 * image (Redis rewrites its AOF once it has grown by a set percentage the
 * same way): its snapshots then add a quarter to the bytes its journal
 * records cost, which the records themselves cannot go below (at 1 they
 * would double them).  The price: the disk holds up to five times its
 * image, and a restart replays up to four images' worth of records. */
#define DELTA_MAX_RATIO 4
/* Journal files kept at most, however little they hold. */
#define KEPT_MAX 256

/* Whether a dirty session is snapshotted now: its deltas, its image's
 * bytes (about), and cut_lsn (deltas older than it hold journal files
 * beyond the budget). */
static bool snapshot_due(const optd_session_deltas_t *d, size_t image, uint64_t cut_lsn)
{
    if (image < DELTA_MIN_IMAGE)
        return true;
    /* Its record is its image anyway (create, patch, import: rewriting it
     * costs no more), or a change is in no record at all. */
    if (d->images > 0 || d->unjournaled > 0 || d->first_lsn == 0)
        return true;
    if (d->bytes >= (uint64_t)image * DELTA_MAX_RATIO)
        return true;
    return d->first_lsn < cut_lsn;
}

/* The kept journal files may hold DELTA_MAX_RATIO times the big sessions'
 * images (as the last flush counted them) and KEPT_MAX files: a session
 * changed little but long (a table stepped now and then, beside busy small
 * sessions) holds every file since its first delta, so beyond the budget
 * the sessions whose deltas begin in the oldest files are snapshotted,
 * and those files go.  Returns the LSN deltas older than which are due (0:
 * none). */
static uint64_t cut_lsn(const optd_persist_t *p)
{
    uint64_t budget = p->big_images * DELTA_MAX_RATIO, sum = 0;
    for (size_t i = p->n_kept; i-- > 0;) {
        sum += p->kept[i].bytes;
        if (sum > budget || p->n_kept - i > KEPT_MAX)
            return p->kept[i].end_lsn;
    }
    return 0;
}

static int add_big_image(optd_session_t *s, void *arg)
{
    size_t image = optd_session_image_bytes(s);
    if (image >= DELTA_MIN_IMAGE)
        *(uint64_t *)arg += image;
    return 0;
}

/* ---- load ------------------------------------------------------------------------- */

static void set_aside(optd_persist_t *p, const char *file, const char *why)
{
    char newname[OPTD_ASIDE_NAME_SIZE];
    int e = optd_file_set_aside(p->dirfd, file, newname, sizeof newname);
    if (e == 0) {
        p->set_aside++;
        optd_log(p->log, OPTD_LOG_ERROR, "persist: %s/%s is damaged (%s); renamed to %s", p->dir,
                 file, why, newname);
    } else {
        optd_log(p->log, OPTD_LOG_ERROR,
                 "persist: %s/%s is damaged (%s) and could not be renamed aside (%s); ignored",
                 p->dir, file, why, strerror(-e));
    }
}

static void load_snapshot(optd_persist_t *p, const char *file)
{
    uint8_t *buf;
    size_t len;
    int rc = optd_file_read_all(p->dirfd, file, &buf, &len);
    if (rc) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: cannot read %s/%s: %s; left in place", p->dir,
                 file, strerror(-rc));
        return;
    }
    optd_session_image_t img;
    uint64_t lsn;
    optd_err_t err;
    rc = optd_snapshot_decode(buf, len, &img, &lsn, &err);
    free(buf);
    if (rc == OPTD_ENOMEM) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: out of memory loading %s/%s; left in place",
                 p->dir, file);
        return;
    }
    if (rc) {
        set_aside(p, file, err.msg);
        return;
    }
    char want[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name(img.name, want);
    if (strcmp(want, file) != 0) {
        optd_session_image_free(&img);
        set_aside(p, file, "the session name inside does not match the file name");
        return;
    }
    optd_session_t *s;
    rc = optd_session_from_image_take(&img, optd_store_limits(p->store)->history, &s, &err);
    optd_session_image_free(&img);
    if (rc == OPTD_ENOMEM) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: out of memory loading %s/%s; left in place",
                 p->dir, file);
        return;
    }
    if (rc) {
        char why[OPTD_ERR_MSG_MAX + 32];
        snprintf(why, sizeof why, "invalid session: %s", err.msg);
        set_aside(p, file, why);
        return;
    }
    optd_session_mark_loaded(s, lsn); /* clean: this is what is on disk */
    if (lsn > p->max_lsn)
        p->max_lsn = lsn;
    rc = optd_store_insert(p->store, s, false, NULL, &err);
    if (rc)
        optd_log(p->log, OPTD_LOG_ERROR, "persist: session '%s' from %s/%s not loaded: %s; file "
                 "left in place", s->name, p->dir, file, err.msg);
    optd_session_release(s);
}

/* Puts old's history entries older than img's first entry in front of
 * img's (a delta record's) history.  0 or OPTD_ENOMEM. */
static int merge_history(optd_session_t *old, optd_session_image_t *img)
{
    optd_history_entry_t *prev;
    size_t n_prev;
    int rc = optd_session_copy_history(old, 0, 0, &prev, &n_prev, NULL);
    if (rc)
        return rc;
    uint64_t first = img->n_history ? img->history[0].step : UINT64_MAX;
    size_t keep = 0;
    while (keep < n_prev && prev[keep].step < first)
        keep++;
    if (keep == 0) {
        free(prev);
        return 0;
    }
    optd_history_entry_t *h = realloc(prev, (keep + img->n_history) * sizeof *h);
    if (!h) {
        free(prev);
        return OPTD_ENOMEM;
    }
    if (img->n_history)
        memcpy(h + keep, img->history, img->n_history * sizeof *h);
    free(img->history);
    img->history = h;
    img->n_history += keep;
    return 0;
}

/* A step record: applied through the session's own step if it follows
 * what was loaded so far (newer LSN, same step count). */
static void replay_step(optd_persist_t *p, uint64_t lsn, const uint8_t *payload, size_t len,
                        uint32_t type)
{
    optd_step_record_t rec;
    char name[OPTD_NAME_MAX + 1];
    optd_contribution_t *ws = NULL;
    bool rows = type == OPTD_JREC_ROWS;
    if (step_decode(payload, len, type, &rec, name, &ws) != 0) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: malformed step record %llu in journal",
                 (unsigned long long)lsn);
        return;
    }
    optd_session_t *s = optd_store_get(p->store, name);
    if (!s) {
        free(ws);
        return; /* deleted later, or created in a record that was lost */
    }
    /* The gradient sits in the file's bytes at any offset: the kernels
     * want it aligned for its dtype. */
    size_t bytes = (rows ? rec.n_rows * rec.row_size : rec.size) * optd_dtype_size(rec.dtype);
    void *aligned = NULL;
    uint64_t *row_list = NULL;
    if (rows) {
        /* The rows are little-endian in the file, at any offset. */
        const uint8_t *at = (const uint8_t *)(const void *)rec.rows;
        if ((row_list = malloc(rec.n_rows * sizeof *row_list)))
            for (size_t i = 0; i < rec.n_rows; i++)
                row_list[i] = optd_le_get(at + OPTD_JROW * i, 8);
        rec.rows = row_list;
    }
    if ((rows && !row_list) || (uintptr_t)rec.grad % optd_dtype_size(rec.dtype) != 0) {
        if (!(aligned = malloc(bytes)) || (rows && !row_list)) {
            free(aligned);
            free(row_list);
            optd_log(p->log, OPTD_LOG_ERROR, "persist: out of memory replaying record %llu",
                     (unsigned long long)lsn);
            optd_session_release(s);
            free(ws);
            return;
        }
        memcpy(aligned, rec.grad, bytes);
        rec.grad = aligned;
    }
    optd_err_t err;
    int rc = optd_session_replay_step(s, &rec, lsn, &err);
    free(aligned);
    free(ws);
    free(row_list);
    if (rc < 0 && rc != OPTD_ENONFINITE)
        optd_log(p->log, OPTD_LOG_ERROR, "persist: step record %llu of '%s' not replayed: %s",
                 (unsigned long long)lsn, name, err.msg);
    if (rc <= 0) /* applied or refused as it was: a delta beside its snapshot */
        optd_session_add_delta(s, lsn, record_bytes(len), false);
    optd_session_release(s);
}

/* A config record: onto the session the earlier records rebuilt. */
static void replay_config(optd_persist_t *p, uint64_t lsn, const uint8_t *payload, size_t len)
{
    optd_session_image_t img;
    optd_err_t err;
    if (optd_snapshot_decode_config(payload, len, &img, &err)) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: config record %llu in journal not loaded: %s",
                 (unsigned long long)lsn, err.msg);
        return;
    }
    optd_session_t *s = optd_store_get(p->store, img.name);
    if (s) { /* else deleted later, or created in a record that was lost */
        int rc = optd_session_replay_config(s, &img, lsn, &err);
        if (rc < 0)
            optd_log(p->log, OPTD_LOG_ERROR, "persist: config record %llu of '%s' not replayed: %s",
                     (unsigned long long)lsn, img.name, err.msg);
        if (rc == 0) /* a delta beside its snapshot */
            optd_session_add_delta(s, lsn, record_bytes(len), false);
        optd_session_release(s);
    }
    optd_session_image_free(&img);
}

static int replay_record(void *arg, uint32_t type, uint64_t lsn, const uint8_t *payload,
                         size_t len)
{
    optd_persist_t *p = arg;
    optd_err_t err;
    if (lsn > p->file_max_lsn)
        p->file_max_lsn = lsn;
    if (lsn > p->max_lsn)
        p->max_lsn = lsn;
    if (type == OPTD_JREC_STEP || type == OPTD_JREC_ROUND || type == OPTD_JREC_ROWS) {
        replay_step(p, lsn, payload, len, type);
        return 0;
    }
    if (type == OPTD_JREC_CONFIG) {
        replay_config(p, lsn, payload, len);
        return 0;
    }
    if (type == OPTD_JREC_DELETE) {
        char name[OPTD_NAME_MAX + 1];
        size_t n = len >= OPTD_JNAME_LEN ? (size_t)optd_le_get(payload, OPTD_JNAME_LEN) : 0;
        if (len < OPTD_JNAME_LEN || n != len - OPTD_JNAME_LEN || n > OPTD_NAME_MAX) {
            optd_log(p->log, OPTD_LOG_ERROR, "persist: malformed delete record %llu in journal",
                     (unsigned long long)lsn);
            return 0;
        }
        memcpy(name, payload + OPTD_JNAME_LEN, n);
        name[n] = 0;
        optd_session_t *s = optd_store_get(p->store, name);
        bool newer = s && optd_session_lsn(s) < lsn;
        optd_session_release(s);
        if (newer)
            optd_store_remove(p->store, name, &err); /* also removes its file */
        return 0;
    }
    optd_session_image_t img;
    uint64_t unused;
    int rc = optd_snapshot_decode(payload, len, &img, &unused, &err);
    if (rc) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: journal record %llu not loaded: %s",
                 (unsigned long long)lsn, err.msg);
        return 0;
    }
    optd_session_t *old = optd_store_get(p->store, img.name);
    if (old && optd_session_lsn(old) >= lsn) {
        optd_session_release(old);
        optd_session_image_free(&img);
        return 0;
    }
    if (type == OPTD_JREC_DELTA && old) {
        /* The earlier history comes from the state this record follows. */
        rc = merge_history(old, &img);
        if (rc) {
            optd_session_release(old);
            optd_session_image_free(&img);
            optd_log(p->log, OPTD_LOG_ERROR, "persist: out of memory replaying record %llu",
                     (unsigned long long)lsn);
            return 0;
        }
    }
    optd_session_release(old);
    optd_session_t *s;
    rc = optd_session_from_image_take(&img, optd_store_limits(p->store)->history, &s, &err);
    optd_session_image_free(&img);
    if (rc) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: journal record %llu not loaded: %s",
                 (unsigned long long)lsn, err.msg);
        return 0;
    }
    /* Not shared yet; dirty, and whole: the next flush snapshots it. */
    optd_session_set_lsn_locked(s, lsn);
    optd_session_add_delta_locked(s, lsn, record_bytes(len), true);
    rc = optd_store_insert(p->store, s, true, NULL, &err);
    if (rc)
        optd_log(p->log, OPTD_LOG_ERROR, "persist: session '%s' from the journal not loaded: %s",
                 s->name, err.msg);
    optd_session_release(s);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* What the directory holds: the snapshot files' names (*snaps, malloc'd
 * strings) and the journals' sequence numbers; leftover temporary files
 * are removed on the way.  0, OPTD_EIO (unreadable) or OPTD_ENOMEM. */
static int list_dir(optd_persist_t *p, char ***snaps_out, size_t *n_snaps_out,
                    uint64_t **journals_out, size_t *n_j_out)
{
    int fd = dup(p->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno; /* for the caller's message */
        if (fd >= 0)
            close(fd);
        errno = e;
        return OPTD_EIO;
    }
    rewinddir(d);
    char **snaps = NULL;
    size_t n_snaps = 0, cap_snaps = 0;
    uint64_t *journals = NULL;
    size_t n_j = 0, cap_j = 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        uint64_t seq;
        bool snap = strncmp(n, OPTD_SNAP_FILE_PREFIX, sizeof OPTD_SNAP_FILE_PREFIX - 1) == 0;
        if (snap && has_suffix(n, OPTD_SNAP_FILE_SUFFIX OPTD_SNAP_TMP_SUFFIX)) {
            /* A write that never reached its rename: not data, just debris. */
            if (unlinkat(p->dirfd, n, 0) == 0)
                optd_log(p->log, OPTD_LOG_INFO, "persist: removed unfinished %s/%s", p->dir, n);
        } else if (snap && has_suffix(n, OPTD_SNAP_FILE_SUFFIX)) {
            if (n_snaps == cap_snaps) {
                cap_snaps = cap_snaps ? cap_snaps * 2 : 64;
                char **g = realloc(snaps, cap_snaps * sizeof *g);
                if (!g) {
                    rc = OPTD_ENOMEM;
                    break;
                }
                snaps = g;
            }
            if (!(snaps[n_snaps] = strdup(n)))
                rc = OPTD_ENOMEM;
            else
                n_snaps++;
        } else if (optd_journal_parse_name(n, &seq) == 0) {
            if (n_j == cap_j) {
                cap_j = cap_j ? cap_j * 2 : 8;
                uint64_t *g = realloc(journals, cap_j * sizeof *g);
                if (!g) {
                    rc = OPTD_ENOMEM;
                    break;
                }
                journals = g;
            }
            journals[n_j++] = seq;
        }
    }
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n_snaps; i++)
            free(snaps[i]);
        free(snaps);
        free(journals);
        return rc;
    }
    *snaps_out = snaps;
    *n_snaps_out = n_snaps;
    *journals_out = journals;
    *n_j_out = n_j;
    return 0;
}

int optd_persist_load(optd_persist_t *p, optd_persist_stats_t *stats, optd_err_t *err)
{
    double t0 = optd_mono_s();
    memset(stats, 0, sizeof *stats);
    char **snaps;
    size_t n_snaps, n_j;
    uint64_t *journals;
    int rc = list_dir(p, &snaps, &n_snaps, &journals, &n_j);
    if (rc == OPTD_EIO)
        return optd_err_set(err, OPTD_EIO, "cannot read data directory %s: %s", p->dir,
                            strerror(errno));
    if (rc)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing %s", p->dir);

    atomic_store(&p->loading, true);
    if (n_snaps > 1)
        qsort(snaps, n_snaps, sizeof *snaps, cmp_str);
    for (size_t i = 0; i < n_snaps; i++) {
        load_snapshot(p, snaps[i]);
        free(snaps[i]);
    }
    free(snaps);

    if (n_j > 1)
        qsort(journals, n_j, sizeof *journals, cmp_u64);
    for (size_t i = 0; i < n_j && rc == 0; i++) {
        char name[OPTD_JOURNAL_NAME_SIZE];
        optd_journal_file_name(journals[i], name);
        size_t aside = 0;
        p->file_max_lsn = 0;
        int r = optd_journal_replay(p->dirfd, name, p->log, replay_record, p, &aside, err);
        p->set_aside += aside;
        if (r) {
            rc = r;
            break;
        }
        if (journals[i] > p->max_journal_seq)
            p->max_journal_seq = journals[i];
        /* The replayed journals stay until the sessions' snapshots hold
         * what they need of them. */
        kept_add(p, journals[i], p->file_max_lsn + 1);
    }
    atomic_store(&p->loading, false);
    free(journals);
    if (rc)
        return rc;
    /* The budget of the kept journals from the start: a restart does not
     * make every big session's snapshot due. */
    optd_store_foreach(p->store, add_big_image, &p->big_images);

    rc = optd_journal_open(p->dirfd, p->max_journal_seq + 1, p->max_lsn + 1,
                           p->mode == OPTD_SYNC_INTERVAL ? p->interval_ms : 0, p->log, &p->journal,
                           err);
    if (rc)
        return rc;
    if (p->set_aside > 0)
        optd_dir_sync(p->dirfd);
    stats->sessions_loaded = optd_store_count(p->store);
    stats->params_loaded = optd_store_params(p->store);
    stats->files_set_aside = p->set_aside;
    stats->seconds = optd_mono_s() - t0;
    return 0;
}

/* ---- flush: snapshots as the journal's compaction ------------------------------- */

/* What a snapshot holds of its session: the state as of version, the
 * journal records up to lsn, the deltas it makes moot. */
typedef struct covered {
    uint64_t version, lsn;
    optd_session_deltas_t deltas;
} covered_t;

typedef struct flushed {
    optd_session_t *s;
    covered_t cov;
} flushed_t;

/* A snapshot written to its temporary file, not yet synced or renamed. */
typedef struct pending {
    optd_session_t *s; /* a reference */
    covered_t cov;
    int fd;
} pending_t;

/* Temporary files written before they are synced together: the first
 * fsync commits the file system journal for all of them and their data is
 * already on its way, so a flush of many sessions costs far less than one
 * full sync round per file. */
#define FLUSH_CHUNK 128

typedef struct flush_ctx {
    optd_persist_t *p;
    pending_t pend[FLUSH_CHUNK];
    size_t n_pend;
    flushed_t *done;
    size_t n, cap;
    optd_session_t **failed; /* references: carried into the journal instead */
    size_t n_failed, cap_failed;
    size_t lost;             /* failed and not even remembered (out of memory) */
    bool aborted;            /* stopped at the deadline: the old journals stay */
    uint64_t cut_lsn;        /* sessions with deltas older than this are snapshotted */
    uint64_t need_lsn;       /* the oldest record a session left to its deltas needs */
    uint64_t big_images;     /* bytes of the big sessions' images */
    size_t deferred;         /* sessions left to their deltas */
} flush_ctx_t;

static void tmp_names(const char *name, char *file, char *tmp)
{
    optd_snapshot_file_name(name, file);
    snprintf(tmp, OPTD_SNAP_TMP_SIZE, "%s" OPTD_SNAP_TMP_SUFFIX, file);
}

static void push_ref(optd_session_t ***v, size_t *n, size_t *cap, optd_session_t *s, size_t *lost)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        optd_session_t **g = realloc(*v, c * sizeof *g);
        if (!g) {
            (*lost)++;
            optd_session_release(s);
            return;
        }
        *v = g;
        *cap = c;
    }
    (*v)[(*n)++] = s;
}

/* s's snapshot failed (the caller's reference moves here). */
static void snap_failed(flush_ctx_t *fc, optd_session_t *s, const char *why)
{
    char file[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name(s->name, file);
    optd_log(fc->p->log, OPTD_LOG_ERROR,
             "persist: snapshot of '%s' not written to %s/%s: %s (will retry)", s->name,
             fc->p->dir, file, why);
    push_ref(&fc->failed, &fc->n_failed, &fc->cap_failed, s, &fc->lost);
}

static bool past_deadline(optd_persist_t *p)
{
    long long deadline = atomic_load(&p->deadline_ms);
    return deadline && optd_mono_ms() >= deadline;
}

/* Syncs, closes and renames into place every pending file; past the
 * deadline (a stop) the rest are dropped unsynced, their sessions still
 * dirty (the journal holds them). */
static void finish_chunk(flush_ctx_t *fc)
{
    optd_persist_t *p = fc->p;
    for (size_t i = 0; i < fc->n_pend; i++) {
        pending_t *pd = &fc->pend[i];
        optd_session_t *s = pd->s;
        char file[OPTD_SNAP_FILE_MAX + 1], tmp[OPTD_SNAP_TMP_SIZE];
        tmp_names(s->name, file, tmp);
        if (past_deadline(p)) {
            close(pd->fd);
            unlinkat(p->dirfd, tmp, 0);
            optd_session_release(s);
            fc->aborted = true;
            continue;
        }
        int rc = fsync(pd->fd) == 0 ? 0 : errno;
        if (close(pd->fd) != 0 && rc == 0)
            rc = errno;
        if (rc == 0) {
            pthread_mutex_lock(&p->mu);
            if (optd_session_is_deleted(s)) {
                unlinkat(p->dirfd, tmp, 0);
                pthread_mutex_unlock(&p->mu);
                optd_session_release(s);
                continue;
            }
            rc = renameat(p->dirfd, tmp, p->dirfd, file) == 0 ? 0 : errno;
            pthread_mutex_unlock(&p->mu);
        }
        if (rc) {
            unlinkat(p->dirfd, tmp, 0);
            snap_failed(fc, s, strerror(rc));
            continue;
        }
        if (fc->n == fc->cap) {
            size_t cap = fc->cap ? fc->cap * 2 : 64;
            flushed_t *g = realloc(fc->done, cap * sizeof *g);
            if (!g) {
                /* Written, but it cannot be marked clean: it is written
                 * again next time, which is harmless. */
                optd_session_release(s);
                continue;
            }
            fc->done = g;
            fc->cap = cap;
        }
        fc->done[fc->n++] = (flushed_t){s, pd->cov};
    }
    fc->n_pend = 0;
}

/* Whether s, dirty, is to be snapshotted now or left to its deltas (its
 * journal records beside its snapshot), and on the way what the policy
 * needs to know of it. */
static bool plan_one(flush_ctx_t *fc, optd_session_t *s)
{
    optd_session_deltas_t d;
    size_t image;
    bool dirty = optd_session_peek_dirty(s, &d, &image);
    if (image >= DELTA_MIN_IMAGE)
        fc->big_images += image;
    if (!dirty)
        return false;
    if (snapshot_due(&d, image, fc->cut_lsn))
        return true;
    fc->deferred++;
    if (d.first_lsn < fc->need_lsn)
        fc->need_lsn = d.first_lsn;
    return false;
}

static int flush_one(optd_session_t *s, void *arg)
{
    flush_ctx_t *fc = arg;
    optd_persist_t *p = fc->p;
    if (past_deadline(p))
        return 1; /* a stop: the journal holds everything, the snapshots can wait */
    if (!plan_one(fc, s))
        return 0;
    optd_err_t err;
    optd_session_image_t img;
    covered_t cov;
    int rc = optd_session_copy_if_dirty(s, &img, &cov.version, &cov.lsn, &cov.deltas, &err);
    if (rc == 0)
        return 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rc == 1)
        rc = optd_snapshot_encode(&img, cov.lsn, &buf, &len, &err);
    optd_session_image_free(&img);
    optd_session_retain(s);
    if (rc) {
        snap_failed(fc, s, err.msg);
        return 0;
    }
    char file[OPTD_SNAP_FILE_MAX + 1], tmp[OPTD_SNAP_TMP_SIZE];
    tmp_names(s->name, file, tmp);
    int fd = openat(p->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    rc = fd < 0 ? -errno : optd_file_write_all(fd, buf, len);
    free(buf);
    if (rc) {
        if (fd >= 0) {
            close(fd);
            unlinkat(p->dirfd, tmp, 0);
        }
        snap_failed(fc, s, strerror(-rc));
        return 0;
    }
    /* Start writing it out now; finish_chunk waits for it. */
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    fc->pend[fc->n_pend++] = (pending_t){s, cov, fd};
    if (fc->n_pend == FLUSH_CHUNK)
        finish_chunk(fc);
    return 0;
}

/* Rotates the journal: records from here on go to a new file, and the old
 * one joins the files to delete once covered.  Everything in the old ones
 * is already in memory and is captured by the snapshots taken after this
 * (a change still committing holds its session's lock, so its image is
 * taken after it).  0, or -1 if the rotation failed. */
static int rotate(optd_persist_t *p)
{
    uint64_t old;
    optd_err_t rerr;
    int rc = optd_journal_rotate(p->journal, &old, &rerr);
    if (rc < 0) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: journal rotation failed: %s", rerr.msg);
        return -1;
    }
    if (rc == 0) /* the new file begins where the old one ends */
        kept_add(p, old, optd_journal_first_lsn(p->journal));
    /* Deletes journaled in the old file finish their unlink first. */
    pthread_rwlock_wrlock(&p->removing);
    pthread_rwlock_unlock(&p->removing);
    return 0;
}

/* What the old journals hold that no snapshot does goes into the current
 * journal: the sessions whose snapshot failed (whole) and the deletes
 * whose unlink failed.  Returns how many could not be carried. */
static size_t carry(optd_persist_t *p, flush_ctx_t *fc)
{
    size_t bad = fc->lost;
    for (size_t i = 0; i < fc->n_failed; i++) {
        optd_err_t err;
        if (optd_session_commit(fc->failed[i], &p->dur, &err) != 0) {
            optd_log(p->log, OPTD_LOG_ERROR, "persist: '%s' could not be journaled either: %s",
                     fc->failed[i]->name, err.msg);
            bad++;
        }
        optd_session_release(fc->failed[i]);
    }
    free(fc->failed);
    pthread_mutex_lock(&p->mu);
    unlinks_retry(p);
    for (size_t i = 0; i < p->unlinks.n; i++) {
        optd_err_t err;
        if (journal_delete(p, p->unlinks.names[i], true, &err) != 0)
            bad++;
    }
    pthread_mutex_unlock(&p->mu);
    optd_err_t err;
    if (optd_journal_sync(p->journal, &err) != 0) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: %s", err.msg);
        bad++;
    }
    return bad;
}

int optd_persist_flush(optd_persist_t *p, size_t *written, optd_err_t *err)
{
    *written = 0;
    pthread_mutex_lock(&p->flush_mu);
    size_t failed = 0;
    bool rotated = p->journal && rotate(p) == 0;

    flush_ctx_t fc = {.p = p, .cut_lsn = cut_lsn(p), .need_lsn = UINT64_MAX};
    bool stopped = optd_store_foreach(p->store, flush_one, &fc) != 0;
    if (!stopped)
        p->big_images = fc.big_images;
    /* Records appended since the journal was rotated are in the current
     * file: they are the snapshotted sessions' deltas now. */
    uint64_t later_from = p->journal ? optd_journal_first_lsn(p->journal) : 0;
    finish_chunk(&fc);
    stopped = stopped || fc.aborted;
    failed += fc.n_failed + fc.lost;

    pthread_mutex_lock(&p->mu);
    bool need_sync = fc.n > 0 || p->dir_dirty;
    p->dir_dirty = false;
    pthread_mutex_unlock(&p->mu);
    int src = need_sync ? optd_dir_sync(p->dirfd) : 0;
    if (src) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: fsync of %s failed: %s (will retry)", p->dir,
                 strerror(-src));
        pthread_mutex_lock(&p->mu);
        p->dir_dirty = true;
        pthread_mutex_unlock(&p->mu);
        failed++;
    }
    for (size_t i = 0; i < fc.n; i++) {
        if (!src)
            optd_session_mark_saved(fc.done[i].s, fc.done[i].cov.version, fc.done[i].cov.lsn,
                                    &fc.done[i].cov.deltas, later_from);
        optd_session_release(fc.done[i].s);
    }
    free(fc.done);
    if (!src)
        *written = fc.n;

    /* One session's failure holds back no one's compaction: what only the
     * old journals hold of it is carried into the current one. */
    size_t uncarried = p->journal ? carry(p, &fc) : fc.n_failed + fc.lost;
    if (!p->journal) {
        for (size_t i = 0; i < fc.n_failed; i++)
            optd_session_release(fc.failed[i]);
        free(fc.failed);
    }
    if (rotated && !stopped && !src && uncarried == 0)
        kept_drop(p, fc.need_lsn);
    if (fc.deferred)
        optd_log(p->log, OPTD_LOG_DEBUG, "persist: %zu changed session%s left to their journal "
                 "records; %zu journal file%s kept", fc.deferred, fc.deferred == 1 ? "" : "s",
                 p->n_kept, p->n_kept == 1 ? "" : "s");
    pthread_mutex_unlock(&p->flush_mu);
    if (failed)
        return optd_err_set(err, OPTD_EIO, "%zu snapshot write%s failed; will retry", failed,
                            failed == 1 ? "" : "s");
    return 0;
}
