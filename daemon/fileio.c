/* fileio.c: careful file operations for persistence (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The most one write(2) is asked for (Linux writes at most about 2 GiB at
 * a time anyway). */
#define WRITE_PIECE ((size_t)1 << 30)
/* How much more a read buffer grows than doubling, when a file grew since
 * its fstat. */
#define READ_GROW 4096
/* How many "-N" names optd_file_set_aside tries within one second. */
#define ASIDE_TRIES 1000

int optd_file_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n > WRITE_PIECE ? WRITE_PIECE : n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int optd_file_read_all(int dirfd, const char *name, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = S_ISREG(sb.st_mode) ? -errno : -EINVAL;
        close(fd);
        return e;
    }
    size_t cap = (size_t)sb.st_size;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    for (;;) {
        if (got == cap) {
            /* The file grew since fstat (it should not; read it anyway). */
            uint8_t *b = realloc(buf, cap * 2 + READ_GROW);
            if (!b) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = b;
            cap = cap * 2 + READ_GROW;
        }
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            free(buf);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

int optd_file_write_synced(int dirfd, const char *name, const void *buf, size_t n)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    int rc = optd_file_write_all(fd, buf, n);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlinkat(dirfd, name, 0);
    return rc;
}

int optd_dir_sync(int dirfd)
{
    return fsync(dirfd) == 0 ? 0 : -errno;
}

int optd_file_set_aside(int dirfd, const char *name, char *newname, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int i = 0; i < ASIDE_TRIES; i++) {
        if (i == 0)
            snprintf(newname, cap, "%s.damaged-%s", name, stamp);
        else
            snprintf(newname, cap, "%s.damaged-%s-%d", name, stamp, i);
        struct stat sb;
        if (fstatat(dirfd, newname, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        if (renameat(dirfd, name, dirfd, newname) != 0)
            return -errno;
        return 0;
    }
    return -EEXIST;
}
