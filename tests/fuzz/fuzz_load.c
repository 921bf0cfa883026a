/* fuzz_load.c: libFuzzer target for start-up loading of a data directory
 * (optd_persist_load): snapshot files, journal replay, leftovers.
 *
 * The loader reads files, so each input is unpacked into a scratch data
 * directory (under /dev/shm when it exists: no disk I/O per run) that is
 * emptied before every run.  Input: chunks of
 *     u8 kind, u16 length (little-endian), length bytes
 * kind bits 0-1: 0 a snapshot file (named after the session name inside it,
 * as the loader expects, or s-aaaa.snap when none can be read), 1 a journal
 * file (journal-<chunk index>.log), 2 a leftover .snap.tmp, 3 a file with
 * another name.  kind bit 2: fix checksums and lengths first (snapshot
 * body length and CRC; each journal record's CRC, and the snapshot inside
 * an image or delta record), so mutations reach the parsers behind the checksums.
 *
 * Checks, besides the sanitizers: the load succeeds (damage is set aside,
 * never fatal), and every session it restored encodes to a snapshot that
 * decodes again. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"
#include "journal.h"
#include "persist.h"
#include "snapshot.h"

static char dir[256];

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void fix_snapshot(uint8_t *b, size_t len)
{
    if (len < OPTD_SNAP_HEADER + OPTD_SNAP_TRAILER || memcmp(b, OPTD_SNAP_MAGIC, 8) != 0)
        return;
    put_le(b + 16, len - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER, 8);
    put_le(b + len - 4, crc32(0L, b, (uInt)(len - 4)), 4);
}

static void fix_journal(uint8_t *b, size_t len)
{
    size_t off = OPTD_JOURNAL_HEADER;
    while (off + OPTD_JREC_HEADER + 4 <= len) {
        uint64_t plen = get_le(b + off + 16, 8);
        if (plen > len - off - OPTD_JREC_HEADER - 4)
            return;
        uint64_t type = get_le(b + off + 4, 4);
        if (type == OPTD_JREC_IMAGE || type == OPTD_JREC_DELTA) /* these hold a snapshot */
            fix_snapshot(b + off + OPTD_JREC_HEADER, (size_t)plen);
        size_t end = off + OPTD_JREC_HEADER + (size_t)plen;
        put_le(b + end, crc32(0L, b + off, (uInt)(end - off)), 4);
        off = end + 4;
    }
}

/* The file name the loader wants for a snapshot: from the name inside. */
static void snapshot_file_name(const uint8_t *b, size_t len, char *out)
{
    char name[OPTD_NAME_MAX + 1] = "a";
    if (len >= 34) {
        size_t n = (size_t)get_le(b + 32, 2);
        if (n >= 1 && n <= OPTD_NAME_MAX && 34 + n <= len && !memchr(b + 34, 0, n) &&
            !memchr(b + 34, '/', n)) {
            memcpy(name, b + 34, n);
            name[n] = '\0';
        }
    }
    optd_snapshot_file_name(name, out);
}

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        fz_fail("opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void write_file(const char *name, const uint8_t *b, size_t len)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fz_fail("open %s: %s", path, strerror(errno));
    if (len && write(fd, b, len) != (ssize_t)len)
        fz_fail("write %s: %s", path, strerror(errno));
    close(fd);
}

static int check_session(optd_session_t *s, void *arg)
{
    (void)arg;
    optd_session_image_t img, back;
    optd_err_t err = {0};
    if (optd_session_copy_image(s, &img, &err) != 0)
        fz_fail("copy_image: %s", err.msg);
    uint8_t *b;
    size_t len;
    uint64_t lsn;
    if (optd_snapshot_encode(&img, s->lsn, &b, &len, &err) != 0)
        fz_fail("encode: %s", err.msg);
    if (optd_snapshot_decode(b, len, &back, &lsn, &err) != 0)
        fz_fail("a session the loader restored does not survive its own snapshot: %s", err.msg);
    free(b);
    optd_session_image_free(&img);
    optd_session_image_free(&back);
    return 0;
}

static void remove_dir(void)
{
    empty_dir();
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/optd-fuzz-load-%d", base, (int)getpid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        fz_fail("mkdir %s: %s", dir, strerror(errno));
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    empty_dir();
    size_t off = 0;
    for (unsigned idx = 0; off + 3 <= size && idx < 16; idx++) {
        unsigned kind = data[off];
        size_t len = (size_t)get_le(data + off + 1, 2);
        off += 3;
        if (len > size - off)
            len = size - off;
        uint8_t *b = malloc(len ? len : 1);
        if (!b)
            fz_fail("out of memory");
        memcpy(b, data + off, len);
        off += len;
        char name[OPTD_SNAP_FILE_MAX + 16];
        switch (kind & 3) {
        case 0:
            if (kind & 4)
                fix_snapshot(b, len);
            snapshot_file_name(b, len, name);
            break;
        case 1:
            if (kind & 4)
                fix_journal(b, len);
            optd_journal_file_name(idx, name);
            break;
        case 2:
            snapshot_file_name(b, len, name);
            strcat(name, ".tmp");
            break;
        default:
            snprintf(name, sizeof name, "other-%u", idx);
            break;
        }
        write_file(name, b, len);
        free(b);
    }

    optd_logger_t log;
    optd_log_init(&log);
    if (!getenv("OPTD_FUZZ_VERBOSE") && optd_log_open(&log, "/dev/null") != 0)
        fz_fail("cannot open /dev/null for the log");
    optd_store_limits_t lim = {.max_sessions = 64, .max_params = 1u << 16, .history = 16};
    optd_store_t *store;
    optd_persist_t *p;
    optd_persist_stats_t stats;
    optd_err_t err = {0};
    if (optd_store_new(&lim, &store, &err) != 0)
        fz_fail("optd_store_new: %s", err.msg);
    if (optd_persist_open(dir, OPTD_SYNC_INTERVAL, 1000, store, &log, &p, &err) != 0)
        fz_fail("optd_persist_open: %s", err.msg);
    int rc = optd_persist_load(p, &stats, &err);
    if (rc != 0)
        fz_fail("optd_persist_load failed on a damaged directory: %d %s", rc, err.msg);
    optd_store_foreach(store, check_session, NULL);
    if (getenv("OPTD_FUZZ_VERBOSE")) /* to see what a seed reaches */
        fprintf(stderr, "load: %zu sessions restored, %zu files set aside\n", optd_store_count(store),
                stats.files_set_aside);
    optd_persist_close(p);
    optd_store_free(store);
    optd_log_close(&log);
    return 0;
}
