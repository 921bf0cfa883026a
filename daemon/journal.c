/* journal.c: the journal of every change and its group commit (journal.h).
 *
 * Waiting appenders queue a record (on their own stack) under the journal
 * mutex and wait; async appenders queue a heap copy and go on.  The writer
 * thread takes the whole queue, writes it with one write
 * and one fdatasync, and wakes everyone in it.  While one batch is being
 * synced the next one gathers, so under load every fsync carries many
 * records.  Before a round the writer also waits, briefly, for as many
 * records as the last round carried and as came in while it was synced
 * (see gather): clients released together by one
 * fsync come back together a moment later, and without the wait the first
 * of them would start a round alone while the rest waited a whole fsync for
 * the next (clients then settle into two alternating half-size groups).
 *
 * Files grow ahead of their records in steps of zero bytes written for
 * real (fallocate would leave unwritten extents, whose conversion is a
 * metadata change too): an fdatasync with no new size or extent to commit
 * flushes only the data, without a journal commit of the file system's
 * metadata (1 MiB steps when each record waits for its sync; with a
 * periodic sync only the reserve, see zero_ahead).  Replay takes the
 * zeros after the last record as the end.  If a write or sync fails, the file is cut back to where the
 * batch began, so a record whose client was told 507 is never replayed; if
 * even that fails the journal refuses appends until it is rotated (the next
 * flush writes every session into its snapshot and starts a clean file).
 * A failed batch's bytes inside the zeros ahead are zeroed again rather
 * than truncated, so the file keeps that space: the last
 * OPTD_JOURNAL_RESERVE bytes of it take only deletes, which then still fit
 * when the disk is full. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "bytes.h"
#include "clock.h"
#include "fileio.h"

typedef struct jrec {
    struct jrec *next;
    uint8_t hdr[OPTD_JREC_HEADER];
    const uint8_t *head;  /* the payload is head then payload */
    size_t head_len;
    const uint8_t *payload;
    size_t len;
    uint8_t crc[OPTD_JREC_TRAILER];
    uint64_t lsn;
    uint32_t type;
    bool marker;          /* no bytes: optd_journal_sync's place in the queue */
    bool owned;           /* async: the writer frees it (payload follows it) */
    int rc;
    int err_no;
    sem_t durable;        /* waited records: posted by the writer once rc is set */
} jrec_t;

struct optd_journal {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* queue non-empty, or stop */
    pthread_cond_t done;  /* a batch finished */
    jrec_t *head, *tail;  /* waiting records, in LSN order */
    size_t queued;        /* how many */
    size_t queued_bytes;  /* of async copies among them */
    size_t last_batch;    /* records in the last round */
    size_t came_in_sync;  /* records queued while it was written and synced */
    int64_t last_sync_ns; /* how long its write and fdatasync took */
    int64_t sync_every_ns;/* periodic sync of async records (0: none) */
    int64_t synced_at_ns; /* when the file was last synced */
    bool unsynced;        /* async records written since then */
    uint64_t unsynced_records; /* how many */
    bool busy;            /* the writer is writing a batch */
    bool stop;
    bool broken;          /* a failed batch could not be cut off yet: the writer
                             retries the cut before writing anything more */
    int dirfd;
    int fd;
    uint64_t seq;
    uint64_t next_lsn;
    uint64_t file_first_lsn; /* no record of the current file has a smaller LSN */
    uint64_t done_lsn;    /* every record up to this LSN has been through the writer */
    off_t off;            /* end of the last written record */
    off_t zeroed_end;     /* the file holds written zeros from off up to here */
    _Atomic uint64_t records; /* made durable, in all (atomic: counted by the writer
                                 without the mutex, read by /metrics) */
    _Atomic uint64_t rounds;  /* fdatasync rounds that made them so */
    uint64_t async_lost;  /* async records whose write failed */
    optd_logger_t *log;
    pthread_t thread;
};

void optd_journal_file_name(uint64_t seq, char *out)
{
    snprintf(out, OPTD_JOURNAL_NAME_SIZE, OPTD_JOURNAL_NAME_PREFIX "%016llx" OPTD_JOURNAL_NAME_SUFFIX,
             (unsigned long long)seq);
}

int optd_journal_parse_name(const char *name, uint64_t *seq)
{
    const size_t digits_at = sizeof OPTD_JOURNAL_NAME_PREFIX - 1;
    const size_t suffix_at = digits_at + OPTD_JOURNAL_NAME_DIGITS;
    if (strlen(name) != OPTD_JOURNAL_NAME_LEN ||
        strncmp(name, OPTD_JOURNAL_NAME_PREFIX, digits_at) != 0 ||
        strcmp(name + suffix_at, OPTD_JOURNAL_NAME_SUFFIX) != 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = digits_at; i < suffix_at; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *seq = v;
    return 0;
}

/* Creates journal file seq with its header, durable (file and directory). */
static int create_file(int dirfd, uint64_t seq, int *fd_out, optd_err_t *err)
{
    char name[OPTD_JOURNAL_NAME_SIZE];
    optd_journal_file_name(seq, name);
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return optd_err_set(err, OPTD_EIO, "cannot create journal %s: %s", name, strerror(errno));
    uint8_t hdr[OPTD_JOURNAL_HEADER];
    memcpy(hdr, OPTD_JOURNAL_MAGIC, OPTD_JOURNAL_MAGIC_LEN);
    optd_le_put32(hdr + OPTD_JOURNAL_VERSION_AT, OPTD_JOURNAL_VERSION);
    optd_le_put32(hdr + OPTD_JOURNAL_FLAGS_AT, 0);
    optd_le_put64(hdr + OPTD_JOURNAL_SEQ_AT, seq);
    int rc = optd_file_write_all(fd, hdr, sizeof hdr);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    if (rc == 0)
        rc = optd_dir_sync(dirfd);
    if (rc != 0) {
        close(fd);
        unlinkat(dirfd, name, 0);
        return optd_err_set(err, OPTD_EIO, "cannot write journal %s: %s", name, strerror(-rc));
    }
    *fd_out = fd;
    return 0;
}

/* How far ahead of the records a journal file is zero-filled, at least. */
#define ZERO_AHEAD ((off_t)1 << 20)

/* The most one pwrite is asked for (Linux writes at most about 2 GiB at
 * a time anyway). */
#define WRITE_PIECE ((size_t)1 << 30)

static int pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n > WRITE_PIECE ? WRITE_PIECE : n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Zeros are written a page at a time: the page cache sizes a folio by the
 * write that creates it, and a record landing in a 64 KiB folio of zeros
 * makes the next fdatasync write back the whole folio (Linux 6.x large
 * folios on ext4): a 4.7 KB durable rows step cost 64 KB of disk writes,
 * 13 KB with pages. */
static int write_zeros(int fd, off_t from, off_t to)
{
    static const uint8_t zeros[4096];
    for (off_t o = from; o < to;) {
        size_t k = to - o > (off_t)sizeof zeros ? sizeof zeros : (size_t)(to - o);
        int rc = pwrite_all(fd, zeros, k, o);
        if (rc)
            return rc;
        o += (off_t)k;
    }
    return 0;
}

/* Makes sure written zeros follow the records that will end at `end`, at
 * least OPTD_JOURNAL_RESERVE of them; the batch's fdatasync makes them
 * durable.  0 or -errno (then nothing of the batch is written). */
static int zero_ahead(optd_journal_t *j, off_t end)
{
    off_t need = end + (off_t)OPTD_JOURNAL_RESERVE;
    if (need <= j->zeroed_end)
        return 0;
    /* With a periodic sync (--sync interval) a round's fdatasync is rare,
     * and zeros far ahead would mostly reach the disk before the records
     * overwrite them, twice the bytes: only the reserve is kept ahead. */
    off_t ahead = j->sync_every_ns > 0 ? (off_t)OPTD_JOURNAL_RESERVE : ZERO_AHEAD;
    off_t from, to;
    if (end - j->off > ahead) {
        /* A batch longer than a step is not written twice (a big session's
         * every step would double its I/O): the file grows with it, and
         * only the reserve is written after it. */
        from = j->zeroed_end > end ? j->zeroed_end : end;
        to = need;
    } else {
        /* After a big batch the zeros end before the records do. */
        from = j->zeroed_end > j->off ? j->zeroed_end : j->off;
        to = (need + ahead - 1) / ahead * ahead;
    }
    int rc = write_zeros(j->fd, from, to);
    if (rc == 0)
        j->zeroed_end = to;
    return rc;
}

/* Cuts a failed batch off so it can never be replayed, durably: what it
 * wrote inside the zeros ahead becomes zeros again (space the file keeps,
 * so a delete still fits on a full disk), what it wrote past them is
 * truncated.  0, or -1 when even that failed. */
static int cut_back(optd_journal_t *j)
{
    off_t keep = j->zeroed_end > j->off ? j->zeroed_end : j->off;
    if (ftruncate(j->fd, keep) == 0 && write_zeros(j->fd, j->off, keep) == 0 &&
        fdatasync(j->fd) == 0)
        return 0;
    j->zeroed_end = j->off;
    if (ftruncate(j->fd, j->off) == 0 && fdatasync(j->fd) == 0)
        return 0;
    return -1;
}

/* Only deletes may use the last OPTD_JOURNAL_RESERVE bytes of zeros. */
static bool may_use_reserve(const jrec_t *r)
{
    return r->marker || r->type == OPTD_JREC_DELETE;
}

/* Writes a batch at j->off; makes it durable when `sync` (a record waits)
 * and on failure cuts the file back to j->off.  Records refused for lack
 * of space get rc set here; the rest get the batch's result.  Runs in the
 * writer thread without the mutex; only the writer touches fd and off. */
static int write_batch(optd_journal_t *j, jrec_t *batch, bool sync, int *err_no, bool *broke)
{
    size_t total = 0;
    for (jrec_t *r = batch; r; r = r->next)
        if (!r->marker)
            total += OPTD_JREC_HEADER + r->head_len + r->len + OPTD_JREC_TRAILER;
    int rc = zero_ahead(j, j->off + (off_t)total);
    if (rc) {
        /* No room for more: what may use the reserve goes in it, if it
         * fits; everything else is refused. */
        int e = -rc;
        total = 0;
        for (jrec_t *r = batch; r; r = r->next) {
            if (!may_use_reserve(r)) {
                r->rc = OPTD_EIO;
                r->err_no = e;
            } else if (!r->marker) {
                total += OPTD_JREC_HEADER + r->head_len + r->len + OPTD_JREC_TRAILER;
            }
        }
        if (j->off + (off_t)total > j->zeroed_end) {
            *err_no = e;
            return OPTD_EIO;
        }
        rc = 0;
    }
    uint8_t *buf = total ? malloc(total) : NULL;
    if (total && !buf) {
        *err_no = ENOMEM;
        return OPTD_EIO;
    }
    size_t o = 0;
    size_t n = 0;
    for (jrec_t *r = batch; r; r = r->next) {
        if (r->marker || r->rc)
            continue;
        memcpy(buf + o, r->hdr, OPTD_JREC_HEADER);
        o += OPTD_JREC_HEADER;
        if (r->head_len)
            memcpy(buf + o, r->head, r->head_len);
        o += r->head_len;
        if (r->len)
            memcpy(buf + o, r->payload, r->len);
        o += r->len;
        memcpy(buf + o, r->crc, OPTD_JREC_TRAILER);
        o += OPTD_JREC_TRAILER;
        n++;
    }
    if (total)
        rc = pwrite_all(j->fd, buf, total, j->off);
    free(buf);
    /* A sync asked for with nothing written since the last one (only
     * markers) has nothing to flush. */
    if (total == 0 && !j->unsynced)
        sync = false;
    if (rc == 0 && (sync || (j->unsynced && j->sync_every_ns > 0 &&
                             optd_mono_ns() - j->synced_at_ns >= j->sync_every_ns))) {
        if (fdatasync(j->fd) != 0)
            rc = -errno;
        else {
            j->unsynced = false;
            j->synced_at_ns = optd_mono_ns();
            j->rounds++;
            j->records += n + j->unsynced_records;
            j->unsynced_records = 0;
        }
    } else if (rc == 0 && total) {
        j->unsynced = true;
        j->unsynced_records += n;
    }
    if (rc == 0) {
        j->off += (off_t)total;
        return 0;
    }
    *err_no = -rc;
    if (cut_back(j) != 0) {
        *broke = true;
        optd_log(j->log, OPTD_LOG_ERROR,
                 "journal: cannot cut off a failed write (%s); refusing changes until it can",
                 strerror(errno));
    }
    return OPTD_EIO;
}

/* The longest a round waits to gather records (see the top). */
#define GATHER_MAX_NS ((int64_t)10 * 1000 * 1000)

/* With j->mu held and records queued: waits until as many are queued as
 * the last round carried plus those that came while it was synced, for at
 * most as long as its sync took (so a round is never delayed by more than
 * one sync's time), or until stop.  Counting the latecomers is what joins
 * two groups of clients that alternate (one group's round syncing while
 * the other's gathers) back into one: waiting for the last round's count
 * alone kept such halves apart for good. */
static void gather(optd_journal_t *j)
{
    size_t want = j->last_batch + j->came_in_sync;
    if (want <= 1 || j->queued >= want)
        return;
    int64_t wait = j->last_sync_ns < GATHER_MAX_NS ? j->last_sync_ns : GATHER_MAX_NS;
    int64_t until_ns = optd_mono_ns() + wait;
    struct timespec until = {.tv_sec = until_ns / 1000000000, .tv_nsec = until_ns % 1000000000};
    while (j->queued < want && !j->stop)
        if (pthread_cond_timedwait(&j->work, &j->mu, &until) == ETIMEDOUT)
            break;
}

/* With j->mu held: the periodic sync of async records, when it is due
 * (the mutex is let go during the fdatasync). */
static void periodic_sync(optd_journal_t *j)
{
    j->busy = true;
    pthread_mutex_unlock(&j->mu);
    int rc = fdatasync(j->fd) == 0 ? 0 : errno;
    if (rc)
        optd_log(j->log, OPTD_LOG_ERROR, "journal: periodic sync failed: %s", strerror(rc));
    pthread_mutex_lock(&j->mu);
    if (rc == 0) {
        j->rounds++;
        j->records += j->unsynced_records;
    }
    j->unsynced_records = 0;
    j->busy = false;
    j->unsynced = false; /* a failure is not retried: snapshots cover those sessions */
    j->synced_at_ns = optd_mono_ns();
    pthread_cond_broadcast(&j->done);
}

/* With j->mu held and nothing queued: waits for work, or for the periodic
 * sync to fall due (then does it).  False once stopped. */
static bool wait_for_work(optd_journal_t *j)
{
    while (!j->head) {
        if (j->unsynced && (j->sync_every_ns > 0 || j->stop)) {
            int64_t due = j->synced_at_ns + j->sync_every_ns;
            if (optd_mono_ns() >= due || j->stop) {
                periodic_sync(j);
                continue;
            }
            struct timespec until = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
            pthread_cond_timedwait(&j->work, &j->mu, &until);
        } else if (j->stop) {
            return false;
        } else {
            pthread_cond_wait(&j->work, &j->mu);
        }
    }
    return true;
}

/* Wakes each waited record of a finished batch (each waiter has a
 * semaphore of its own: a broadcast made all of them queue on the mutex to
 * wake, one futex hand-off after the other) and frees the async ones. */
static void finish_batch(optd_journal_t *j, jrec_t *batch, int rc, int err_no)
{
    for (jrec_t *r = batch, *next; r; r = next) {
        next = r->next; /* r may vanish once posted */
        if (r->rc == 0) {
            r->rc = rc;
            r->err_no = err_no;
        }
        if (r->owned) {
            if (r->rc)
                j->async_lost++;
            free(r);
        } else {
            sem_post(&r->durable);
        }
    }
}

static void *writer_main(void *arg)
{
    optd_journal_t *j = arg;
    pthread_mutex_lock(&j->mu);
    while (wait_for_work(j)) {
        bool sync = false;
        for (jrec_t *r = j->head; r && !sync; r = r->next)
            sync = !r->owned;
        if (sync && j->sync_every_ns == 0)
            gather(j);
        jrec_t *batch = j->head;
        size_t n = j->queued;
        for (jrec_t *r = batch; r && !sync; r = r->next)
            sync = !r->owned; /* gathered ones */
        j->head = j->tail = NULL;
        j->queued = 0;
        j->queued_bytes = 0;
        j->busy = true;
        bool broken = j->broken;
        pthread_mutex_unlock(&j->mu);

        /* A file left with a failed batch at its end is cut again first;
         * only once that works do records go after it. */
        if (broken && cut_back(j) == 0) {
            broken = false;
            optd_log(j->log, OPTD_LOG_WARN, "journal: repaired after a failed write");
        }
        int err_no = EIO;
        int rc = OPTD_EIO;
        int64_t t0 = optd_mono_ns();
        if (!broken)
            rc = write_batch(j, batch, sync, &err_no, &broken);
        int64_t took = optd_mono_ns() - t0;
        if (rc != 0)
            optd_log(j->log, OPTD_LOG_ERROR, "journal: write failed: %s", strerror(err_no));

        pthread_mutex_lock(&j->mu);
        j->busy = false;
        j->broken = broken;
        if (sync) {
            j->last_batch = n;
            j->came_in_sync = j->queued;
            j->last_sync_ns = took;
        }
        for (jrec_t *r = batch; r; r = r->next)
            if (r->lsn > j->done_lsn)
                j->done_lsn = r->lsn;
        finish_batch(j, batch, rc, err_no);
        pthread_cond_broadcast(&j->done);
    }
    pthread_cond_broadcast(&j->done); /* an appender waiting for room sees the stop */
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int optd_journal_open(int dirfd, uint64_t seq, uint64_t next_lsn, int64_t sync_every_ms,
                      optd_logger_t *log, optd_journal_t **out, optd_err_t *err)
{
    *out = NULL;
    optd_journal_t *j = calloc(1, sizeof *j);
    if (!j)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory opening the journal");
    j->dirfd = dirfd;
    j->seq = seq;
    j->next_lsn = next_lsn ? next_lsn : 1;
    j->done_lsn = j->next_lsn - 1;
    j->file_first_lsn = j->next_lsn;
    j->sync_every_ns = sync_every_ms * 1000000;
    j->synced_at_ns = optd_mono_ns();
    j->log = log;
    j->off = j->zeroed_end = OPTD_JOURNAL_HEADER;
    int rc = create_file(dirfd, seq, &j->fd, err);
    if (rc) {
        free(j);
        return rc;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca; /* gather() and the periodic sync wait on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->work, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&j->done, NULL);
    if (pthread_create(&j->thread, NULL, writer_main, j) != 0) {
        close(j->fd);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->work);
        pthread_cond_destroy(&j->done);
        free(j);
        return optd_err_set(err, OPTD_ENOMEM, "cannot start the journal writer thread");
    }
    *out = j;
    return 0;
}

/* Frames r (type, payload) outside the lock: its payload's CRC, which
 * stamp_locked combines with the header's once the LSN is known. */
static uint32_t frame(jrec_t *r)
{
    if (r->marker)
        return 0;
    optd_le_put32(r->hdr + OPTD_JREC_MAGIC_AT, OPTD_JREC_MAGIC);
    optd_le_put32(r->hdr + OPTD_JREC_TYPE_AT, r->type);
    optd_le_put64(r->hdr + OPTD_JREC_LEN_AT, (uint64_t)(r->head_len + r->len));
    uint32_t crc = optd_crc32(0, r->head, r->head_len);
    return optd_crc32(crc, r->payload, r->len);
}

/* With j->mu held: gives r the next LSN, finishes its CRC and queues it. */
static void stamp_locked(optd_journal_t *j, jrec_t *r, uint32_t payload_crc)
{
    if (r->owned)
        j->queued_bytes += r->len;
    if (!r->marker) {
        r->lsn = j->next_lsn++;
        optd_le_put64(r->hdr + OPTD_JREC_LSN_AT, r->lsn);
        uint32_t crc = optd_crc32(0, r->hdr, OPTD_JREC_HEADER);
        optd_le_put32(r->crc,
                (uint32_t)crc32_combine(crc, payload_crc, (z_off_t)(r->head_len + r->len)));
    }
    if (j->tail)
        j->tail->next = r;
    else
        j->head = r;
    j->tail = r;
    j->queued++;
}

static int stopped(optd_err_t *err)
{
    return optd_err_set(err, OPTD_EIO, "the change could not be made durable: the journal is unavailable");
}

/* Queues r with the next LSN (also put in *lsn: an async r may be freed by
 * the writer as soon as the lock is let go): 0, or OPTD_EIO once the
 * journal stopped. */
static int enqueue(optd_journal_t *j, jrec_t *r, uint64_t *lsn, optd_err_t *err)
{
    uint32_t payload_crc = frame(r);
    pthread_mutex_lock(&j->mu);
    while (r->owned && j->queued_bytes > OPTD_JOURNAL_QUEUE_MAX && !j->stop)
        pthread_cond_wait(&j->done, &j->mu);
    if (j->stop) {
        pthread_mutex_unlock(&j->mu);
        return stopped(err);
    }
    stamp_locked(j, r, payload_crc);
    *lsn = r->lsn;
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* Queues r (on the caller's stack) and waits for its batch. */
static int append_wait(optd_journal_t *j, jrec_t *r, optd_err_t *err)
{
    if (sem_init(&r->durable, 0, 0) != 0)
        return optd_err_set(err, OPTD_EIO, "the change could not be made durable: %s",
                            strerror(errno));
    uint64_t lsn;
    int rc = enqueue(j, r, &lsn, err);
    if (rc == 0) {
        while (sem_wait(&r->durable) != 0) /* only EINTR */
            ;
        if (r->rc != 0)
            rc = optd_err_set(err, OPTD_EIO, "the change could not be made durable: %s",
                              strerror(r->err_no));
    }
    sem_destroy(&r->durable);
    return rc;
}

int optd_journal_append(optd_journal_t *j, uint32_t type, const uint8_t *head, size_t head_len,
                        const uint8_t *body, size_t len, uint64_t *lsn, optd_err_t *err)
{
    jrec_t r = {.head = head, .head_len = head_len, .payload = body, .len = len, .type = type};
    int rc = append_wait(j, &r, err);
    if (rc == 0)
        *lsn = r.lsn;
    return rc;
}

int optd_journal_append_async(optd_journal_t *j, uint32_t type, const uint8_t *head,
                              size_t head_len, const uint8_t *body, size_t len, uint64_t *lsn,
                              optd_err_t *err)
{
    jrec_t *r = malloc(sizeof *r + head_len + len);
    if (!r)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory journaling a change");
    memset(r, 0, sizeof *r);
    uint8_t *copy = (uint8_t *)(r + 1);
    if (head_len)
        memcpy(copy, head, head_len);
    if (len)
        memcpy(copy + head_len, body, len);
    r->payload = copy;
    r->len = head_len + len;
    r->type = type;
    r->owned = true;
    int rc = enqueue(j, r, lsn, err);
    if (rc)
        free(r);
    return rc;
}

int optd_journal_append_group(optd_journal_t *j, optd_journal_rec_t *recs, size_t n, optd_err_t *err)
{
    if (n == 0)
        return 0;
    jrec_t *rs = calloc(n, sizeof *rs);
    uint32_t *crcs = malloc(n * sizeof *crcs);
    if (!rs || !crcs) {
        free(rs);
        free(crcs);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory journaling %zu changes", n);
    }
    size_t inited = 0;
    int rc = 0;
    for (; inited < n; inited++) {
        jrec_t *r = &rs[inited];
        *r = (jrec_t){.head = recs[inited].head, .head_len = recs[inited].head_len,
                      .payload = recs[inited].body, .len = recs[inited].len, .type = recs[inited].type};
        if (sem_init(&r->durable, 0, 0) != 0) {
            rc = optd_err_set(err, OPTD_EIO, "the changes could not be made durable: %s", strerror(errno));
            break;
        }
        crcs[inited] = frame(r);
    }
    if (rc == 0) {
        /* All under one hold of the lock: the writer takes the queue whole,
         * so the group lands in one write and one fdatasync, all or nothing. */
        pthread_mutex_lock(&j->mu);
        if (j->stop) {
            rc = stopped(err);
        } else {
            for (size_t i = 0; i < n; i++)
                stamp_locked(j, &rs[i], crcs[i]);
            pthread_cond_signal(&j->work);
        }
        pthread_mutex_unlock(&j->mu);
    }
    int err_no = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        while (sem_wait(&rs[i].durable) != 0) /* only EINTR */
            ;
        if (rs[i].rc && !err_no)
            err_no = rs[i].err_no ? rs[i].err_no : EIO;
        recs[i].lsn = rs[i].lsn;
    }
    if (rc == 0 && err_no)
        rc = optd_err_set(err, OPTD_EIO, "the change could not be made durable: %s", strerror(err_no));
    for (size_t i = 0; i < inited; i++)
        sem_destroy(&rs[i].durable);
    free(rs);
    free(crcs);
    return rc;
}

int optd_journal_sync(optd_journal_t *j, optd_err_t *err)
{
    jrec_t r = {.marker = true};
    return append_wait(j, &r, err);
}

int optd_journal_rotate(optd_journal_t *j, uint64_t *old_seq, optd_err_t *err)
{
    pthread_mutex_lock(&j->mu);
    /* Wait until the records appended before the call are written; those
     * appended meanwhile go to the new file. */
    uint64_t upto = j->next_lsn - 1;
    while (j->busy || (j->done_lsn < upto && j->head))
        pthread_cond_wait(&j->done, &j->mu);
    if (j->off == OPTD_JOURNAL_HEADER && !j->broken && !j->head) {
        pthread_mutex_unlock(&j->mu);
        return 1;
    }
    /* The old file's async records are made durable before it is left:
     * it stays until snapshots cover it, and may be all there is. */
    if (j->unsynced && fdatasync(j->fd) != 0) {
        int e = errno;
        pthread_mutex_unlock(&j->mu);
        return optd_err_set(err, OPTD_EIO, "cannot sync journal: %s", strerror(e));
    }
    if (j->unsynced) {
        j->rounds++;
        j->records += j->unsynced_records;
    }
    j->unsynced = false;
    j->unsynced_records = 0;
    int fd;
    int rc = create_file(j->dirfd, j->seq + 1, &fd, err);
    if (rc == 0) {
        /* The zeros ahead were for appends: a file kept for replay needs
         * none (a crash before this reaches the disk leaves zeros, which
         * replay reads as the end anyway). */
        if (!j->broken)
            (void)!ftruncate(j->fd, j->off);
        close(j->fd);
        j->fd = fd;
        *old_seq = j->seq;
        j->seq++;
        /* What is still queued goes to the new file: the boundary between
         * the two is the first queued record's LSN (markers carry none). */
        j->file_first_lsn = j->next_lsn;
        for (jrec_t *r = j->head; r; r = r->next) {
            if (!r->marker) {
                j->file_first_lsn = r->lsn;
                break;
            }
        }
        j->off = j->zeroed_end = OPTD_JOURNAL_HEADER;
        j->broken = false;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

uint64_t optd_journal_first_lsn(optd_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t lsn = j->file_first_lsn;
    pthread_mutex_unlock(&j->mu);
    return lsn;
}

void optd_journal_counts(optd_journal_t *j, uint64_t *records, uint64_t *rounds)
{
    *records = atomic_load(&j->records);
    *rounds = atomic_load(&j->rounds);
}

uint64_t optd_journal_seq(optd_journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    uint64_t s = j->seq;
    pthread_mutex_unlock(&j->mu);
    return s;
}

void optd_journal_close(optd_journal_t *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stop = true;
    pthread_cond_signal(&j->work);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    if (j->rounds > 0)
        optd_log(j->log, OPTD_LOG_INFO,
                 "journal: %llu records made durable in %llu fsync rounds (%.1f per round)",
                 (unsigned long long)j->records, (unsigned long long)j->rounds,
                 (double)j->records / (double)j->rounds);
    if (j->async_lost > 0)
        optd_log(j->log, OPTD_LOG_WARN,
                 "journal: %llu records could not be written; snapshots held those changes",
                 (unsigned long long)j->async_lost);
    close(j->fd);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->done);
    free(j);
}

/* ---- replay ----------------------------------------------------------------------- */

/* Why a journal file's header is refused, or NULL. */
static const char *header_fault(const uint8_t *buf, size_t len)
{
    if (len < OPTD_JOURNAL_HEADER)
        return "truncated header";
    if (memcmp(buf, OPTD_JOURNAL_MAGIC, OPTD_JOURNAL_MAGIC_LEN) != 0)
        return "wrong magic";
    uint32_t version = optd_le_get32(buf + OPTD_JOURNAL_VERSION_AT);
    if (version < OPTD_JOURNAL_VERSION_MIN || version > OPTD_JOURNAL_VERSION)
        return "unknown format version";
    return NULL;
}

/* A file whose header is refused is renamed aside whole. */
static void set_aside_whole(int dirfd, const char *name, const char *why, optd_logger_t *log,
                            size_t *set_aside)
{
    char aside[OPTD_ASIDE_NAME_SIZE];
    int e = optd_file_set_aside(dirfd, name, aside, sizeof aside);
    optd_log(log, OPTD_LOG_ERROR, "journal %s: %s; %s", name, why,
             e ? "could not be renamed aside" : "renamed aside");
    if (e == 0 && set_aside)
        (*set_aside)++;
}

static bool known_type(uint32_t type)
{
    return type == OPTD_JREC_IMAGE || type == OPTD_JREC_DELETE || type == OPTD_JREC_DELTA ||
           type == OPTD_JREC_STEP || type == OPTD_JREC_ROWS || type == OPTD_JREC_ROUND ||
           type == OPTD_JREC_CONFIG;
}

/* Where the records stop, as the scan of a file found it. */
typedef struct scan {
    size_t off;       /* end of the last good record */
    const char *why;  /* what follows it, when not just the zeros ahead */
    bool short_tail;  /* it is a record cut short (a crash mid-append) */
    int stop;         /* fn's non-zero answer, which ended the scan */
} scan_t;

/* Checks the record at off (before zeros_from, where only zeros follow):
 * NULL with *plen, or why it is refused (*short_tail when cut short). */
static const char *record_fault(const uint8_t *buf, size_t len, size_t off, uint64_t *plen,
                                bool *short_tail)
{
    size_t left = len - off;
    if (left < OPTD_JREC_HEADER) {
        *short_tail = true;
        return "torn record header";
    }
    const uint8_t *h = buf + off;
    *plen = optd_le_get64(h + OPTD_JREC_LEN_AT);
    if (optd_le_get32(h + OPTD_JREC_MAGIC_AT) != OPTD_JREC_MAGIC)
        return "bad record magic";
    if (*plen > left - OPTD_JREC_HEADER || left - OPTD_JREC_HEADER - *plen < OPTD_JREC_TRAILER) {
        *short_tail = true;
        return "torn record";
    }
    uint32_t crc = optd_crc32(0, h, OPTD_JREC_HEADER + *plen);
    if (crc != optd_le_get32(h + OPTD_JREC_HEADER + *plen))
        return "bad record checksum";
    if (!known_type(optd_le_get32(h + OPTD_JREC_TYPE_AT)))
        return "unknown record type";
    return NULL;
}

/* Damage found where the zeros written ahead begin inside the record (its
 * header, or before the end its header declares) is a record cut short by
 * a crash mid-write, not damage. */
static bool torn_into_zeros(const uint8_t *buf, size_t len, size_t off, size_t zeros_from)
{
    size_t left = len - off;
    uint64_t plen = left >= OPTD_JREC_HEADER ? optd_le_get64(buf + off + OPTD_JREC_LEN_AT) : 0;
    return off + OPTD_JREC_HEADER > zeros_from ||
           (optd_le_get32(buf + off + OPTD_JREC_MAGIC_AT) == OPTD_JREC_MAGIC && plen <= left &&
            off + OPTD_JREC_HEADER + plen + OPTD_JREC_TRAILER > zeros_from);
}

/* Calls fn for each good record after the header, in order, up to the
 * zeros written ahead or the first bad one. */
static scan_t scan_records(const uint8_t *buf, size_t len,
                           int (*fn)(void *arg, uint32_t type, uint64_t lsn,
                                     const uint8_t *payload, size_t len),
                           void *arg)
{
    /* The writer zero-fills ahead of its records: where they stop, only
     * zeros follow (and a record may itself end in zero bytes). */
    size_t zeros_from = len;
    while (zeros_from > OPTD_JOURNAL_HEADER && buf[zeros_from - 1] == 0)
        zeros_from--;
    scan_t sc = {.off = OPTD_JOURNAL_HEADER};
    while (sc.off < zeros_from) {
        uint64_t plen = 0;
        sc.why = record_fault(buf, len, sc.off, &plen, &sc.short_tail);
        if (sc.why)
            break;
        const uint8_t *h = buf + sc.off;
        sc.stop = fn(arg, optd_le_get32(h + OPTD_JREC_TYPE_AT), optd_le_get64(h + OPTD_JREC_LSN_AT),
                     h + OPTD_JREC_HEADER, (size_t)plen);
        if (sc.stop)
            return sc;
        sc.off += OPTD_JREC_HEADER + (size_t)plen + OPTD_JREC_TRAILER;
    }
    if (sc.why && !sc.short_tail && torn_into_zeros(buf, len, sc.off, zeros_from)) {
        sc.why = "torn record";
        sc.short_tail = true;
    }
    return sc;
}

/* Cuts the file after the last good record.  A short tail is what a crash
 * mid-append leaves; anything else is damage: a copy of the whole file is
 * kept first. */
static void cut_tail(int dirfd, const char *name, const uint8_t *buf, size_t len,
                     const scan_t *sc, optd_logger_t *log, size_t *set_aside)
{
    bool kept = false;
    if (!sc->short_tail) {
        char aside[OPTD_ASIDE_NAME_SIZE];
        snprintf(aside, sizeof aside, "%s.damaged-copy", name);
        if (optd_file_write_synced(dirfd, aside, buf, len) == 0) {
            char final[OPTD_ASIDE_NAME_SIZE];
            kept = optd_file_set_aside(dirfd, aside, final, sizeof final) == 0;
            if (kept && set_aside)
                (*set_aside)++;
        }
    }
    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    bool cut = fd >= 0 && ftruncate(fd, (off_t)sc->off) == 0 && fdatasync(fd) == 0;
    if (fd >= 0)
        close(fd);
    optd_log(log, sc->short_tail ? OPTD_LOG_WARN : OPTD_LOG_ERROR,
             "journal %s: %s at offset %zu of %zu; %s%s", name, sc->why, sc->off, len,
             cut ? "truncated after the last good record" : "could not truncate it",
             sc->short_tail ? "" : (kept ? " (damaged copy kept)" : " (no copy could be kept)"));
}

int optd_journal_replay(int dirfd, const char *name, optd_logger_t *log,
                        int (*fn)(void *arg, uint32_t type, uint64_t lsn, const uint8_t *payload,
                                  size_t len),
                        void *arg, size_t *set_aside, optd_err_t *err)
{
    uint8_t *buf;
    size_t len;
    int rc = optd_file_read_all(dirfd, name, &buf, &len);
    if (rc)
        return optd_err_set(err, OPTD_EIO, "cannot read journal %s: %s", name, strerror(-rc));
    const char *why = header_fault(buf, len);
    if (why) {
        set_aside_whole(dirfd, name, why, log, set_aside);
        free(buf);
        return 0;
    }
    scan_t sc = scan_records(buf, len, fn, arg);
    if (!sc.stop && sc.why)
        cut_tail(dirfd, name, buf, len, &sc, log, set_aside);
    free(buf);
    return sc.stop;
}
