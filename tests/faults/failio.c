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
 *
 * Intercepts write, pwrite, pwrite64, writev, fsync and fdatasync. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
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

static int should_fail(int fd)
{
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

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

ssize_t write(int fd, const void *buf, size_t n)
{
    if (should_fail(fd))
        return -1;
    return NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (should_fail(fd))
        return -1;
    return NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    if (should_fail(fd))
        return -1;
    return NEXT(pwrite64)(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (should_fail(fd))
        return -1;
    return NEXT(writev)(fd, iov, cnt);
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
