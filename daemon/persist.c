/* persist.c: sessions on disk under --data-dir (persist.h).
 *
 * Files in the data directory:
 *   LOCK                      flock'ed while a daemon uses the directory
 *   s-<base32 name>.snap      one snapshot per session (snapshot.h)
 *   journal-<seq>.log         --sync always: records not yet covered by
 *                             snapshots (journal.h)
 *   *.damaged-<time>          files found damaged, set aside, never read
 *
 * Interval mode: a flush writes every session whose version moved since
 * its last snapshot.  Always mode: every change is appended to the journal
 * (group commit) before it is acknowledged; a flush rotates the journal,
 * writes the dirty sessions' snapshots and, once all succeeded, deletes the
 * journals they cover.  Each snapshot carries the LSN of the session's last
 * journal record, so replay applies only records newer than the snapshot.
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

#include "fileio.h"
#include "journal.h"
#include "snapshot.h"

struct optd_persist {
    char *dir;
    int dirfd;
    int lockfd;
    optd_sync_mode_t mode;
    optd_store_t *store;
    optd_logger_t *log;
    optd_durability_t dur;
    atomic_bool loading;     /* load in progress: hooks do not journal */
    pthread_mutex_t mu;      /* leaf lock: snapshot renames vs. unlinks; dir_dirty */
    bool dir_dirty;          /* a file was unlinked since the last directory fsync */
    pthread_rwlock_t removing; /* held shared by a delete from its journal record to
                                  its unlink; a flush passes it exclusively after
                                  rotating, so old journals never outlive an unlink */
    pthread_mutex_t flush_mu; /* one flush at a time; guards the fields below */
    optd_journal_t *journal; /* always mode, after load */
    uint64_t *old_journals;  /* journal files to delete once snapshots cover them */
    size_t n_old, cap_old;
    uint64_t max_lsn;
    uint64_t max_journal_seq;
    size_t set_aside;
};

static double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the durability hook ----------------------------------------------------- */

/* An image of s that borrows its buffers; only the history entries with
 * step > after are copied (in order).  With s->mu held; free with
 * view_free. */
static int view_locked(optd_session_t *s, uint64_t after, optd_session_image_t *v)
{
    memset(v, 0, sizeof *v);
    memcpy(v->name, s->name, sizeof v->name);
    v->cfg = s->cfg;
    v->size = s->size;
    v->params = s->params;
    v->st = s->st;
    v->created_ms = s->created_ms;
    v->updated_ms = s->updated_ms;
    v->loss = s->loss;
    size_t first = s->history_len;
    while (first > 0 &&
           s->history[(s->history_head + first - 1) % s->history_alloc].step > after)
        first--;
    size_t n = s->history_len - first;
    if (n > 0) {
        v->history = malloc(n * sizeof *v->history);
        if (!v->history)
            return OPTD_ENOMEM;
        for (size_t i = 0; i < n; i++)
            v->history[i] = s->history[(s->history_head + first + i) % s->history_alloc];
        v->n_history = n;
    }
    return 0;
}

static uint64_t newest_history_step(const optd_session_t *s)
{
    if (s->history_len == 0)
        return 0;
    return s->history[(s->history_head + s->history_len - 1) % s->history_alloc].step;
}

static void view_free(optd_session_image_t *v)
{
    free(v->history);
}

/* With s->mu held (session.h): the change to s is made durable in the
 * journal before the caller answers.  The lock stays held across the wait
 * on purpose: no other request may read (and answer from) a state that is
 * not yet on disk, and a failure can then be undone unseen. */
static int dur_commit(void *ctx, struct optd_session *s, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    if (atomic_load(&p->loading))
        return 0;
    if (!p->journal)
        return optd_err_set(err, OPTD_EIO, "persistence is not ready (journal not open)");
    /* A session's first record is its whole image; later ones carry only
     * the history entries the previous record (or snapshot) lacks, so a
     * step's record stays small however long the history is. */
    bool delta = s->lsn != 0;
    optd_session_image_t v;
    if (view_locked(s, delta ? s->hist_durable_step : 0, &v))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory making a change durable");
    uint8_t *buf;
    size_t len;
    int rc = optd_snapshot_encode(&v, 0, &buf, &len, err);
    view_free(&v);
    if (rc)
        return rc;
    uint64_t lsn;
    rc = optd_journal_append(p->journal, delta ? OPTD_JREC_DELTA : OPTD_JREC_IMAGE, buf, len, &lsn,
                             err);
    free(buf);
    if (rc == 0) {
        s->lsn = lsn;
        s->hist_durable_step = newest_history_step(s);
    }
    return rc;
}

/* The session was marked deleted (with its mutex held): journal the delete
 * (always mode) and remove its snapshot file. */
static int dur_remove(void *ctx, const char *name, optd_err_t *err)
{
    optd_persist_t *p = ctx;
    pthread_rwlock_rdlock(&p->removing);
    if (p->mode == OPTD_SYNC_ALWAYS && !atomic_load(&p->loading)) {
        if (!p->journal) {
            pthread_rwlock_unlock(&p->removing);
            return optd_err_set(err, OPTD_EIO, "persistence is not ready (journal not open)");
        }
        size_t n = strlen(name);
        uint8_t rec[2 + OPTD_NAME_MAX];
        rec[0] = (uint8_t)n;
        rec[1] = (uint8_t)(n >> 8);
        memcpy(rec + 2, name, n);
        uint64_t lsn;
        int rc = optd_journal_append(p->journal, OPTD_JREC_DELETE, rec, 2 + n, &lsn, err);
        if (rc) {
            pthread_rwlock_unlock(&p->removing);
            return rc;
        }
    }
    char file[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name(name, file);
    pthread_mutex_lock(&p->mu);
    if (unlinkat(p->dirfd, file, 0) != 0 && errno != ENOENT)
        optd_log(p->log, OPTD_LOG_ERROR, "persist: cannot remove %s/%s of deleted session '%s': %s",
                 p->dir, file, name, strerror(errno));
    p->dir_dirty = true;
    pthread_mutex_unlock(&p->mu);
    pthread_rwlock_unlock(&p->removing);
    return 0;
}

/* ---- open / close ------------------------------------------------------------------ */

int optd_persist_open(const char *dir, optd_sync_mode_t mode, optd_store_t *store,
                      optd_logger_t *log, optd_persist_t **out, optd_err_t *err)
{
    *out = NULL;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return optd_err_set(err, OPTD_EIO, "cannot create data directory %s: %s", dir,
                            strerror(errno));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return optd_err_set(err, OPTD_EIO, "cannot open data directory %s: %s", dir,
                            strerror(errno));
    int lockfd = openat(dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lockfd < 0) {
        int e = errno;
        close(dirfd);
        return optd_err_set(err, OPTD_EIO, "cannot create %s/LOCK: %s", dir, strerror(e));
    }
    if (flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(lockfd);
        close(dirfd);
        if (e == EWOULDBLOCK)
            return optd_err_set(err, OPTD_EIO,
                                "data directory %s is in use by another optd process", dir);
        return optd_err_set(err, OPTD_EIO, "cannot lock %s/LOCK: %s", dir, strerror(e));
    }
    optd_persist_t *p = calloc(1, sizeof *p);
    char *dcopy = strdup(dir);
    if (!p || !dcopy) {
        free(p);
        free(dcopy);
        close(lockfd);
        close(dirfd);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory opening persistence");
    }
    p->dir = dcopy;
    p->dirfd = dirfd;
    p->lockfd = lockfd;
    p->mode = mode;
    p->store = store;
    p->log = log;
    atomic_init(&p->loading, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->flush_mu, NULL);
    pthread_rwlock_init(&p->removing, NULL);
    p->dur.ctx = p;
    p->dur.commit = mode == OPTD_SYNC_ALWAYS ? dur_commit : NULL;
    p->dur.remove = dur_remove;
    optd_store_set_durability(store, &p->dur);
    *out = p;
    return 0;
}

void optd_persist_close(optd_persist_t *p)
{
    if (!p)
        return;
    optd_journal_close(p->journal);
    close(p->lockfd); /* releases the flock */
    close(p->dirfd);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->flush_mu);
    pthread_rwlock_destroy(&p->removing);
    free(p->old_journals);
    free(p->dir);
    free(p);
}

/* ---- load ------------------------------------------------------------------------- */

static void set_aside(optd_persist_t *p, const char *file, const char *why)
{
    char newname[400];
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
    s->lsn = lsn;
    s->hist_durable_step = newest_history_step(s);
    s->saved_version = s->version; /* what is on disk */
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

static int replay_record(void *arg, uint32_t type, uint64_t lsn, const uint8_t *payload,
                         size_t len)
{
    optd_persist_t *p = arg;
    optd_err_t err;
    if (lsn > p->max_lsn)
        p->max_lsn = lsn;
    if (type == OPTD_JREC_DELETE) {
        char name[OPTD_NAME_MAX + 1];
        size_t n = len >= 2 ? (size_t)payload[0] | (size_t)payload[1] << 8 : 0;
        if (len < 2 || n != len - 2 || n > OPTD_NAME_MAX) {
            optd_log(p->log, OPTD_LOG_ERROR, "persist: malformed delete record %llu in journal",
                     (unsigned long long)lsn);
            return 0;
        }
        memcpy(name, payload + 2, n);
        name[n] = 0;
        optd_session_t *s = optd_store_get(p->store, name);
        bool newer = s && s->lsn < lsn;
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
    if (old && old->lsn >= lsn) {
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
    s->lsn = lsn; /* dirty (saved_version 0): the next flush snapshots it */
    s->hist_durable_step = newest_history_step(s);
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

int optd_persist_load(optd_persist_t *p, optd_persist_stats_t *stats, optd_err_t *err)
{
    double t0 = mono_seconds();
    memset(stats, 0, sizeof *stats);
    int fd = dup(p->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return optd_err_set(err, OPTD_EIO, "cannot read data directory %s: %s", p->dir,
                            strerror(errno));
    }
    rewinddir(d);
    char **snaps = NULL;
    size_t n_snaps = 0, cap_snaps = 0;
    uint64_t *journals = NULL;
    size_t n_j = 0, cap_j = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        uint64_t seq;
        if (strncmp(n, "s-", 2) == 0 && has_suffix(n, ".snap.tmp")) {
            /* A write that never reached its rename: not data, just debris. */
            if (unlinkat(p->dirfd, n, 0) == 0)
                optd_log(p->log, OPTD_LOG_INFO, "persist: removed unfinished %s/%s", p->dir, n);
        } else if (strncmp(n, "s-", 2) == 0 && has_suffix(n, ".snap")) {
            if (n_snaps == cap_snaps) {
                cap_snaps = cap_snaps ? cap_snaps * 2 : 64;
                char **g = realloc(snaps, cap_snaps * sizeof *g);
                if (!g) {
                    rc = OPTD_ENOMEM;
                    break;
                }
                snaps = g;
            }
            if (!(snaps[n_snaps] = strdup(n))) {
                rc = OPTD_ENOMEM;
                break;
            }
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
        return optd_err_set(err, OPTD_ENOMEM, "out of memory listing %s", p->dir);
    }

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
        char name[40];
        optd_journal_file_name(journals[i], name);
        size_t aside = 0;
        int r = optd_journal_replay(p->dirfd, name, p->log, replay_record, p, &aside, err);
        p->set_aside += aside;
        if (r) {
            rc = r;
            break;
        }
        if (journals[i] > p->max_journal_seq)
            p->max_journal_seq = journals[i];
    }
    atomic_store(&p->loading, false);
    if (rc) {
        free(journals);
        return rc;
    }
    /* The replayed journals stay until a flush has covered them. */
    p->old_journals = journals;
    p->n_old = p->cap_old = n_j;

    if (p->mode == OPTD_SYNC_ALWAYS) {
        rc = optd_journal_open(p->dirfd, p->max_journal_seq + 1, p->max_lsn + 1, p->log,
                               &p->journal, err);
        if (rc)
            return rc;
    }
    if (p->set_aside > 0)
        optd_dir_sync(p->dirfd);
    stats->sessions_loaded = optd_store_count(p->store);
    stats->params_loaded = optd_store_params(p->store);
    stats->files_set_aside = p->set_aside;
    stats->seconds = mono_seconds() - t0;
    return 0;
}

/* ---- flush ---------------------------------------------------------------------------- */

typedef struct flushed {
    optd_session_t *s;
    uint64_t version;
} flushed_t;

/* A snapshot written to its temporary file, not yet synced or renamed. */
typedef struct pending {
    optd_session_t *s; /* a reference */
    uint64_t version;
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
    size_t failed;
} flush_ctx_t;

static void tmp_names(const char *name, char *file, char *tmp)
{
    optd_snapshot_file_name(name, file);
    snprintf(tmp, OPTD_SNAP_FILE_MAX + 8, "%s.tmp", file);
}

/* Syncs, closes and renames into place every pending file. */
static void finish_chunk(flush_ctx_t *fc)
{
    optd_persist_t *p = fc->p;
    for (size_t i = 0; i < fc->n_pend; i++) {
        pending_t *pd = &fc->pend[i];
        optd_session_t *s = pd->s;
        char file[OPTD_SNAP_FILE_MAX + 1], tmp[OPTD_SNAP_FILE_MAX + 8];
        tmp_names(s->name, file, tmp);
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
            optd_log(p->log, OPTD_LOG_ERROR,
                     "persist: snapshot of '%s' not written to %s/%s: %s (will retry)", s->name,
                     p->dir, file, strerror(rc));
            fc->failed++;
            optd_session_release(s);
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
        fc->done[fc->n++] = (flushed_t){s, pd->version};
    }
    fc->n_pend = 0;
}

static int flush_one(optd_session_t *s, void *arg)
{
    flush_ctx_t *fc = arg;
    optd_persist_t *p = fc->p;
    optd_err_t err;
    optd_session_image_t img;

    pthread_mutex_lock(&s->mu);
    if (s->deleted || s->version == s->saved_version) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    uint64_t version = s->version, lsn = s->lsn;
    int rc = optd_session_copy_image_locked(s, &img, &err);
    pthread_mutex_unlock(&s->mu);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!rc)
        rc = optd_snapshot_encode(&img, lsn, &buf, &len, &err);
    optd_session_image_free(&img);
    if (rc) {
        optd_log(p->log, OPTD_LOG_ERROR, "persist: snapshot of '%s' not written: %s (will retry)",
                 s->name, err.msg);
        fc->failed++;
        return 0;
    }
    char file[OPTD_SNAP_FILE_MAX + 1], tmp[OPTD_SNAP_FILE_MAX + 8];
    tmp_names(s->name, file, tmp);
    int fd = openat(p->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    rc = fd < 0 ? -errno : optd_file_write_all(fd, buf, len);
    free(buf);
    if (rc) {
        if (fd >= 0) {
            close(fd);
            unlinkat(p->dirfd, tmp, 0);
        }
        optd_log(p->log, OPTD_LOG_ERROR,
                 "persist: snapshot of '%s' not written to %s/%s: %s (will retry)", s->name,
                 p->dir, file, strerror(-rc));
        fc->failed++;
        return 0;
    }
    /* Start writing it out now; finish_chunk waits for it. */
    sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    optd_session_retain(s);
    fc->pend[fc->n_pend++] = (pending_t){s, version, fd};
    if (fc->n_pend == FLUSH_CHUNK)
        finish_chunk(fc);
    return 0;
}

int optd_persist_flush(optd_persist_t *p, size_t *written, optd_err_t *err)
{
    *written = 0;
    pthread_mutex_lock(&p->flush_mu);
    size_t failed = 0;

    /* Records from here on go to a new journal file; everything in the
     * old ones is already in memory and is captured by the snapshots below
     * (a change still committing holds its session's lock, so its image is
     * taken after it). */
    if (p->journal) {
        uint64_t old;
        optd_err_t rerr;
        int rc = optd_journal_rotate(p->journal, &old, &rerr);
        if (rc == 0) {
            if (p->n_old == p->cap_old) {
                size_t cap = p->cap_old ? p->cap_old * 2 : 8;
                uint64_t *g = realloc(p->old_journals, cap * sizeof *g);
                if (g) {
                    p->old_journals = g;
                    p->cap_old = cap;
                }
            }
            if (p->n_old < p->cap_old)
                p->old_journals[p->n_old++] = old;
            /* else the old file is simply kept: replay skips what snapshots cover */
        } else if (rc < 0) {
            optd_log(p->log, OPTD_LOG_ERROR, "persist: journal rotation failed: %s", rerr.msg);
            failed++;
        }
        /* Deletes journaled in the old file finish their unlink first. */
        pthread_rwlock_wrlock(&p->removing);
        pthread_rwlock_unlock(&p->removing);
    }

    flush_ctx_t fc = {.p = p};
    if (optd_store_foreach(p->store, flush_one, &fc) != 0)
        fc.failed++;
    finish_chunk(&fc);
    failed += fc.failed;

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
        optd_session_t *s = fc.done[i].s;
        if (!src) {
            pthread_mutex_lock(&s->mu);
            if (fc.done[i].version > s->saved_version)
                s->saved_version = fc.done[i].version;
            pthread_mutex_unlock(&s->mu);
        }
        optd_session_release(s);
    }
    free(fc.done);
    if (!src)
        *written = fc.n;

    /* Every session is now in its snapshot: the old journals are redundant. */
    if (failed == 0 && p->n_old > 0) {
        for (size_t i = 0; i < p->n_old; i++) {
            char name[40];
            optd_journal_file_name(p->old_journals[i], name);
            if (unlinkat(p->dirfd, name, 0) != 0 && errno != ENOENT)
                optd_log(p->log, OPTD_LOG_WARN, "persist: cannot remove %s/%s: %s", p->dir,
                         name, strerror(errno));
        }
        p->n_old = 0;
        optd_dir_sync(p->dirfd);
    }
    pthread_mutex_unlock(&p->flush_mu);
    if (failed)
        return optd_err_set(err, OPTD_EIO, "%zu snapshot write%s failed; will retry", failed,
                            failed == 1 ? "" : "s");
    return 0;
}
