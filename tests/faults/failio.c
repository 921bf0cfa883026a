/* failio.c: an LD_PRELOAD shim that makes writes and syncs fail, to test
 * what optd does when the disk is full or broken.
 *
 *   FAILIO_PATH=substr  only descriptors whose path (/proc/self/fd) contains
 *                       substr are affected (default: every regular file)
 *   FAILIO_CTL=file     faults are active only while this file exists (so a
 *                       test can switch them on and off in a running daemon)
 *   FAILIO_AFTER=N      while active, the first N affected calls succeed and
 *                       every later one fails (default 0: all fail)
 *   FAILIO_ERRNO=n      the errno to fail with (default ENOSPC)
 *   FAILIO_SYNC_DELAY_MS=n  a slow disk instead: affected fsync and
 *                       fdatasync calls sleep n ms, then succeed, and
 *                       nothing fails
 *   FAILIO_FULL=1       a full disk as it really is: only writes that
 *                       would grow the file fail (overwriting blocks the
 *                       file already has works), and syncs do not fail
 *   FAILIO_UNLINK=1     unlink and unlinkat of a path containing
 *                       FAILIO_PATH fail instead (with FAILIO_ERRNO,
 *                       default EACCES), while FAILIO_CTL exists; writes
 *                       and syncs then work
 *
 * Intercepts write, pwrite, pwrite64, writev, fsync, fdatasync, unlink and
 * unlinkat. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static atomic_long calls;

static long sync_delay_ms(void)
{
    const char *d = getenv("FAILIO_SYNC_DELAY_MS");
    return d ? atol(d) : 0;
}

/* True when fd is one the faults apply to (FAILIO_CTL, FAILIO_PATH). */
static int affected(int fd)
{
    const char *ctl = getenv("FAILIO_CTL");
    struct stat sb;
    if (ctl && *ctl && stat(ctl, &sb) != 0)
        return 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    const char *want = getenv("FAILIO_PATH");
    if (want && *want) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n < 0)
            return 0;
        path[n] = 0;
        if (!strstr(path, want))
            return 0;
    }
    return 1;
}

static int unlink_mode(void)
{
    const char *on = getenv("FAILIO_UNLINK");
    return on && *on == '1';
}

static int full_disk(void)
{
    const char *f = getenv("FAILIO_FULL");
    return f && *f == '1';
}

/* FAILIO_FULL: a write of n bytes at off (-1: the file position) fails
 * only if it would grow the file. */
static int grows(int fd, size_t n, off_t off)
{
    struct stat sb;
    if (off < 0)
        off = lseek(fd, 0, SEEK_CUR);
    if (off < 0 || fstat(fd, &sb) != 0)
        return 1;
    return (off_t)(off + (off_t)n) > sb.st_size;
}

static int should_fail_write(int fd, size_t n, off_t off)
{
    if (unlink_mode() || (full_disk() && affected(fd) && !grows(fd, n, off)))
        return 0;
    if (sync_delay_ms() > 0 || !affected(fd))
        return 0;
    const char *after = getenv("FAILIO_AFTER");
    long allowed = after ? atol(after) : 0;
    if (atomic_fetch_add(&calls, 1) < allowed)
        return 0;
    const char *e = getenv("FAILIO_ERRNO");
    errno = e ? atoi(e) : ENOSPC;
    return 1;
}

static int should_fail(int fd)
{
    if (unlink_mode() || full_disk() || sync_delay_ms() > 0 || !affected(fd))
        return 0;
    const char *after = getenv("FAILIO_AFTER");
    long allowed = after ? atol(after) : 0;
    if (atomic_fetch_add(&calls, 1) < allowed)
        return 0;
    const char *e = getenv("FAILIO_ERRNO");
    errno = e ? atoi(e) : ENOSPC;
    return 1;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n)
{
    if (should_fail_write(fd, n, -1))
        return -1;
    return NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (should_fail_write(fd, n, off))
        return -1;
    return NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    if (should_fail_write(fd, n, off))
        return -1;
    return NEXT(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    size_t n = 0;
    for (int i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    if (should_fail_write(fd, n, -1))
        return -1;
    return NEXT(writev)(fd, iov, cnt);
}

/* FAILIO_UNLINK: path (relative to dirfd) is one whose unlink fails. */
static int unlink_fails(int dirfd, const char *path)
{
    const char *ctl = getenv("FAILIO_CTL");
    struct stat sb;
    if (!unlink_mode() || (ctl && *ctl && stat(ctl, &sb) != 0))
        return 0;
    char full[PATH_MAX * 2] = "";
    if (path[0] != '/' && dirfd != AT_FDCWD) {
        char link[64], dir[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, dir, sizeof dir - 1);
        if (n < 0)
            return 0;
        dir[n] = 0;
        snprintf(full, sizeof full, "%s/%s", dir, path);
    } else {
        snprintf(full, sizeof full, "%s", path);
    }
    const char *want = getenv("FAILIO_PATH");
    if (want && *want && !strstr(full, want))
        return 0;
    const char *e = getenv("FAILIO_ERRNO");
    errno = e ? atoi(e) : EACCES;
    return 1;
}

int unlinkat(int dirfd, const char *path, int flags)
{
    if (unlink_fails(dirfd, path))
        return -1;
    return NEXT(unlinkat)(dirfd, path, flags);
}

int unlink(const char *path)
{
    if (unlink_fails(AT_FDCWD, path))
        return -1;
    return NEXT(unlink)(path);
}

/* FAILIO_SYNC_DELAY_MS: a sync on an affected fd takes that long. */
static void slow_sync(int fd)
{
    long ms = sync_delay_ms();
    if (ms > 0 && affected(fd)) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

int fsync(int fd)
{
    slow_sync(fd);
    if (should_fail(fd))
        return -1;
    return NEXT(fsync)(fd);
}

int fdatasync(int fd)
{
    slow_sync(fd);
    if (should_fail(fd))
        return -1;
    return NEXT(fdatasync)(fd);
}
