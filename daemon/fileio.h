/* fileio.h: the careful file operations persistence is built from: whole
 * reads and writes that survive short writes and EINTR, directory fsync,
 * atomic replacement, and setting a damaged file aside. */
#ifndef OPTD_FILEIO_H
#define OPTD_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Writes all n bytes: 0 or -errno. */
int optd_file_write_all(int fd, const void *buf, size_t n);
/* Reads all of dirfd/name into a malloc'd buffer: 0 or -errno. */
int optd_file_read_all(int dirfd, const char *name, uint8_t **out, size_t *len);
/* Creates (or truncates) dirfd/name, writes buf, fsyncs and closes it:
 * the first half of an atomic replacement (the caller renames it into
 * place and fsyncs the directory).  On failure the file is removed.
 * 0 or -errno. */
int optd_file_write_synced(int dirfd, const char *name, const void *buf, size_t n);
/* fsync of a directory: 0 or -errno. */
int optd_dir_sync(int dirfd);
/* Renames dirfd/name to "<name>.damaged-<UTC time>" (with -N appended if
 * that exists), never deleting anything; newname receives the new name.
 * 0 or -errno. */
/* Room for such a new name (or a copy's "<name>.damaged-copy"): a file
 * name (at most 255 bytes) and the suffix. */
#define OPTD_ASIDE_NAME_SIZE 400
int optd_file_set_aside(int dirfd, const char *name, char *newname, size_t cap);

#endif
