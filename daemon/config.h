/* config.h: the daemon's command-line flags (API.md's "Running the daemon").
 *
 * Each flag --foo-bar may also come from the environment as OPTD_FOO_BAR
 * (what the container deployment uses); a flag on the command line wins.
 * String values point into argv or the environment and are not copied. */
#ifndef OPTD_CONFIG_H
#define OPTD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"
#include "optd/error.h"
#include "persist.h"

typedef struct optd_config {
    const char *listen;            /* "host:port" or "[v6]:port" */
    unsigned threads;              /* HTTP worker threads */
    const char *data_dir;          /* NULL: memory only */
    optd_sync_mode_t sync;
    unsigned snapshot_interval;    /* seconds */
    const char *auth_token_file;   /* NULL: no auth */
    const char *tls_cert;
    const char *tls_key;
    size_t max_body_bytes;
    size_t max_body_memory;        /* bodies in flight, bytes; 0: not given (main resolves it
                                      with optd_config_body_memory_default) */
    size_t max_sessions;
    size_t max_params;             /* 0: unlimited */
    size_t max_memory;             /* --max-memory; 0: not given (optd_config_memory_default) */
    size_t history;
    unsigned max_connections;
    unsigned connection_timeout;   /* seconds; 0: none */
    bool metrics_auth;
    optd_log_level_t log_level;
    const char *log_file;          /* NULL: stderr */
    bool ui;                       /* serve the page /ui/ */
    const char *ui_assets;         /* the chart library's directory; NULL: Debian's */
} optd_config_t;

enum {
    OPTD_CONFIG_RUN = 0,  /* flags parsed: run the daemon */
    OPTD_CONFIG_EXIT = 1  /* --help or --version printed: exit 0 */
};

/* Fills cfg with the defaults.  threads defaults to the number of CPUs. */
void optd_config_defaults(optd_config_t *cfg);

/* Parses the environment (OPTD_*) and then argv over cfg's defaults.
 * Returns OPTD_CONFIG_RUN, OPTD_CONFIG_EXIT (usage or version written to
 * out), or OPTD_EINVAL with a one-line message in err. */
int optd_config_parse(optd_config_t *cfg, int argc, char **argv, FILE *out, optd_err_t *err);

/* Writes the usage text (every flag with its default) to out. */
void optd_config_usage(FILE *out);

/* The memory budget when --max-memory is not given: half the memory limit
 * of this process's cgroup (the lowest of v2 memory.max, or v1
 * memory.limit_in_bytes, over the cgroup and its ancestors), or of the
 * machine's physical memory when there is none.  The other half is for
 * request bodies in flight (--max-body-memory, a quarter by default),
 * answers in flight (optd_store_borrow) and the process itself.  how (cap
 * bytes) says where the figure came from, for the log. */
size_t optd_config_memory_default(char *how, size_t cap);

/* The --max-body-memory default: a quarter of the same limit
 * optd_config_memory_default halves, but at least max_body_bytes (the
 * largest allowed body always fits when it is alone). */
size_t optd_config_body_memory_default(size_t max_body_bytes);

/* Splits "host:port", "[v6]:port" or ":port" into host (cap bytes; "" for
 * all interfaces) and port: 0 or OPTD_EINVAL with a message. */
int optd_config_split_listen(const char *listen, char *host, size_t cap, unsigned *port,
                             optd_err_t *err);

#endif
