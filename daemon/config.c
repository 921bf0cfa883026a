/* config.c: command-line flags with getopt_long, with OPTD_* environment
 * variables as defaults.  Nothing here exits: main.c decides what a parse
 * result means for the process. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    OPT_LISTEN = 256,
    OPT_THREADS,
    OPT_DATA_DIR,
    OPT_SYNC,
    OPT_SNAPSHOT_INTERVAL,
    OPT_AUTH_TOKEN_FILE,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_MAX_BODY_BYTES,
    OPT_MAX_BODY_MEMORY,
    OPT_MAX_SESSIONS,
    OPT_MAX_PARAMS,
    OPT_MAX_MEMORY,
    OPT_HISTORY,
    OPT_MAX_CONNECTIONS,
    OPT_CONNECTION_TIMEOUT,
    OPT_METRICS_AUTH,
    OPT_LOG_LEVEL,
    OPT_LOG_FILE,
    OPT_UI,
    OPT_UI_ASSETS,
    OPT_HELP = 'h',
    OPT_VERSION = 'V'
};

static const struct option long_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"data-dir", required_argument, NULL, OPT_DATA_DIR},
    {"sync", required_argument, NULL, OPT_SYNC},
    {"snapshot-interval", required_argument, NULL, OPT_SNAPSHOT_INTERVAL},
    {"auth-token-file", required_argument, NULL, OPT_AUTH_TOKEN_FILE},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY_BYTES},
    {"max-body-memory", required_argument, NULL, OPT_MAX_BODY_MEMORY},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"max-params", required_argument, NULL, OPT_MAX_PARAMS},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"history", required_argument, NULL, OPT_HISTORY},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"connection-timeout", required_argument, NULL, OPT_CONNECTION_TIMEOUT},
    {"metrics-auth", no_argument, NULL, OPT_METRICS_AUTH},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"ui", required_argument, NULL, OPT_UI},
    {"ui-assets", required_argument, NULL, OPT_UI_ASSETS},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

void optd_config_defaults(optd_config_t *cfg)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = "127.0.0.1:8080";
    cfg->threads = cpus > 0 ? (unsigned)cpus : 1;
    cfg->sync = OPTD_SYNC_INTERVAL;
    cfg->snapshot_interval = 1;
    cfg->max_body_bytes = 268435456;
    cfg->max_sessions = 100000;
    cfg->max_params = 0;
    cfg->history = 1000;
    cfg->max_connections = 1024;
    cfg->connection_timeout = 30;
    cfg->log_level = OPTD_LOG_INFO;
    cfg->ui = true;
}

void optd_config_usage(FILE *out)
{
    fputs("usage: optd [FLAGS]\n"
          "Serves named optimizer sessions (Adam, SGD, ... PyTorch's update rules) over HTTP.\n"
          "\n"
          "  --listen HOST:PORT         address to serve on ([::1]:PORT for IPv6)  [127.0.0.1:8080]\n"
          "  --threads N                HTTP worker threads, and threads per big update  [number of CPUs]\n"
          "                             (--sync always: a thread per connection)\n"
          "  --data-dir DIR             persist sessions under DIR  [none: memory only]\n"
          "  --sync interval|always     durability mode with --data-dir  [interval]\n"
          "  --snapshot-interval SECS   with --sync interval, sync the journal every SECS  [1]\n"
          "  --auth-token-file FILE     require 'Authorization: Bearer TOKEN' on /v1 (one token a line)  [off]\n"
          "  --tls-cert FILE            PEM certificate: serve HTTPS (needs --tls-key)  [off]\n"
          "  --tls-key FILE             PEM private key for --tls-cert  [off]\n"
          "  --max-body-bytes N         larger request bodies get 413  [268435456]\n"
          "  --max-body-memory N        bytes all request bodies in flight may hold; beyond it 503\n"
          "                             [a quarter of the memory, at least --max-body-bytes]\n"
          "  --max-sessions N           beyond it create gets 429  [100000]\n"
          "  --max-params N             total parameters over all sessions; beyond it 429  [unlimited]\n"
          "  --max-memory BYTES         memory sessions may hold in all; beyond it 429\n"
          "                             [half the cgroup's memory limit, else of physical memory]\n"
          "  --history N                steps of history kept per session  [1000]\n"
          "  --max-connections N        concurrent connections (clamped to what RLIMIT_NOFILE allows)  [1024]\n"
          "  --connection-timeout SECS  close idle or too-slow connections after SECS (0: never)  [30]\n"
          "  --metrics-auth             with --auth-token-file, /metrics needs the token too  [off]\n"
          "  --log-level LEVEL          error, warn, info (one line per request) or debug  [info]\n"
          "  --log-file FILE            append the log to FILE, reopened on SIGHUP  [stderr]\n"
          "  --ui on|off                serve the page /ui/ (GET / redirects to it)  [on]\n"
          "  --ui-assets DIR            where the page's chart library (Chart.js) is  [/usr/share/javascript/chart.js]\n"
          "  --help                     print this and exit\n"
          "  --version                  print the version and exit\n"
          "\n"
          "Every flag can also be given as an environment variable OPTD_<FLAG>, e.g.\n"
          "OPTD_LISTEN=0.0.0.0:8080 or OPTD_METRICS_AUTH=1; the command line wins.\n",
          out);
}

/* Parses a decimal unsigned integer in [lo, hi]. */
static int parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off", ""};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (strcasecmp(s, yes[i]) == 0)
            return *out = true, 0;
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (strcasecmp(s, no[i]) == 0)
            return *out = false, 0;
    return -1;
}

/* The flags that take a number: the range and the noun for the message,
 * and where the value goes (a size_t or an unsigned field of the config).
 * One table so a new numeric flag is one line, and a message always says
 * the range that is checked. */
typedef struct uint_flag {
    int opt;
    uint64_t lo, hi;
    const char *what;   /* "'%s' is not <what>" */
    size_t offset;      /* into optd_config_t */
    bool is_unsigned;   /* unsigned field, else size_t */
} uint_flag_t;

#define SZ(field) offsetof(optd_config_t, field), false
#define UN(field) offsetof(optd_config_t, field), true
static const uint_flag_t uint_flags[] = {
    {OPT_THREADS, 1, 1024, "a thread count in 1..1024", UN(threads)},
    {OPT_SNAPSHOT_INTERVAL, 1, 86400, "a number of seconds in 1..86400", UN(snapshot_interval)},
    {OPT_MAX_BODY_BYTES, 1, SIZE_MAX / 2, "a byte count >= 1", SZ(max_body_bytes)},
    {OPT_MAX_BODY_MEMORY, 1, SIZE_MAX / 2, "a byte count >= 1", SZ(max_body_memory)},
    {OPT_MAX_SESSIONS, 1, SIZE_MAX / 2, "a session count >= 1", SZ(max_sessions)},
    {OPT_MAX_PARAMS, 1, SIZE_MAX / 2, "a parameter count >= 1", SZ(max_params)},
    {OPT_MAX_MEMORY, 1, SIZE_MAX / 2, "a byte count >= 1", SZ(max_memory)},
    {OPT_HISTORY, 0, 100000000, "a step count in 0..100000000", SZ(history)},
    {OPT_MAX_CONNECTIONS, 1, 1000000, "a connection count in 1..1000000", UN(max_connections)},
    {OPT_CONNECTION_TIMEOUT, 0, 86400, "a number of seconds in 0..86400", UN(connection_timeout)},
};
#undef SZ
#undef UN

/* The flags that take a file or directory name (never empty). */
typedef struct path_flag {
    int opt;
    const char *what;   /* "empty <what>" */
    size_t offset;      /* of a const char * in optd_config_t */
} path_flag_t;

static const path_flag_t path_flags[] = {
    {OPT_DATA_DIR, "directory name", offsetof(optd_config_t, data_dir)},
    {OPT_AUTH_TOKEN_FILE, "file name", offsetof(optd_config_t, auth_token_file)},
    {OPT_TLS_CERT, "file name", offsetof(optd_config_t, tls_cert)},
    {OPT_TLS_KEY, "file name", offsetof(optd_config_t, tls_key)},
    {OPT_LOG_FILE, "file name", offsetof(optd_config_t, log_file)},
    {OPT_UI_ASSETS, "directory name", offsetof(optd_config_t, ui_assets)},
};

/* Applies a flag of either table: 1 if opt is not in them, else 0 or
 * OPTD_EINVAL. */
static int apply_tabled(optd_config_t *cfg, int opt, const char *val, const char *src, optd_err_t *err)
{
    for (size_t i = 0; i < sizeof uint_flags / sizeof uint_flags[0]; i++) {
        const uint_flag_t *f = &uint_flags[i];
        uint64_t u;
        if (f->opt != opt)
            continue;
        if (parse_uint(val, f->lo, f->hi, &u))
            return optd_err_set(err, OPTD_EINVAL, "%s: '%s' is not %s", src, val, f->what);
        if (f->is_unsigned)
            *(unsigned *)((char *)cfg + f->offset) = (unsigned)u;
        else
            *(size_t *)((char *)cfg + f->offset) = (size_t)u;
        return 0;
    }
    for (size_t i = 0; i < sizeof path_flags / sizeof path_flags[0]; i++) {
        if (path_flags[i].opt != opt)
            continue;
        if (!*val)
            return optd_err_set(err, OPTD_EINVAL, "%s: empty %s", src, path_flags[i].what);
        *(const char **)((char *)cfg + path_flags[i].offset) = val;
        return 0;
    }
    return 1;
}

/* Applies one flag's value; `src` names where it came from for messages
 * ("--threads" or "OPTD_THREADS"). */
static int apply(optd_config_t *cfg, int opt, const char *val, const char *src, optd_err_t *err)
{
    int rc = apply_tabled(cfg, opt, val, src, err);
    if (rc <= 0)
        return rc;
    switch (opt) {
    case OPT_LISTEN:
        if (!*val)
            return optd_err_set(err, OPTD_EINVAL, "%s: empty address (want HOST:PORT)", src);
        cfg->listen = val;
        return 0;
    case OPT_SYNC:
        if (strcmp(val, "interval") == 0)
            cfg->sync = OPTD_SYNC_INTERVAL;
        else if (strcmp(val, "always") == 0)
            cfg->sync = OPTD_SYNC_ALWAYS;
        else
            return optd_err_set(err, OPTD_EINVAL, "%s: '%s' is not a sync mode (interval or always)", src, val);
        return 0;
    case OPT_METRICS_AUTH:
        if (!val) {
            cfg->metrics_auth = true;
            return 0;
        }
        if (parse_bool(val, &cfg->metrics_auth))
            return optd_err_set(err, OPTD_EINVAL, "%s: '%s' is not a boolean (1/0, true/false)", src, val);
        return 0;
    case OPT_LOG_LEVEL:
        if (optd_log_level_parse(val, &cfg->log_level))
            return optd_err_set(err, OPTD_EINVAL, "%s: '%s' is not a log level (error, warn, info, debug)", src, val);
        return 0;
    case OPT_UI:
        if (parse_bool(val, &cfg->ui) || !*val)
            return optd_err_set(err, OPTD_EINVAL, "%s: '%s' is not on or off", src, val);
        return 0;
    default:
        return optd_err_set(err, OPTD_EINVAL, "%s: unexpected flag", src);
    }
}

/* OPTD_FOO_BAR for the long option "foo-bar". */
static void env_name(const char *flag, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "OPTD_");
    for (const char *p = flag; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

int optd_config_parse(optd_config_t *cfg, int argc, char **argv, FILE *out, optd_err_t *err)
{
    for (const struct option *o = long_options; o->name; o++) {
        if (o->val == OPT_HELP || o->val == OPT_VERSION)
            continue;
        char name[64];
        env_name(o->name, name, sizeof name);
        const char *v = getenv(name);
        if (!v)
            continue;
        int rc = apply(cfg, o->val, v, name, err);
        if (rc)
            return rc;
    }

    opterr = 0; /* we word the one-line messages ourselves */
    optind = 1;
    for (;;) {
        int idx = -1;
        int c = getopt_long(argc, argv, ":hV", long_options, &idx);
        if (c == -1)
            break;
        if (c == OPT_HELP) {
            optd_config_usage(out);
            return OPTD_CONFIG_EXIT;
        }
        if (c == OPT_VERSION) {
            fprintf(out, "optd %s\n", OPTD_VERSION);
            return OPTD_CONFIG_EXIT;
        }
        if (c == '?') {
            const char *bad = argv[optind - 1];
            if (optopt)
                return optd_err_set(err, OPTD_EINVAL, "unknown flag '-%c' (see --help)", optopt);
            return optd_err_set(err, OPTD_EINVAL, "unknown flag '%s' (see --help)", bad);
        }
        if (c == ':')
            return optd_err_set(err, OPTD_EINVAL, "flag '%s' needs a value (see --help)", argv[optind - 1]);
        char src[64];
        snprintf(src, sizeof src, "--%s", idx >= 0 ? long_options[idx].name : "?");
        int rc = apply(cfg, c, c == OPT_METRICS_AUTH ? NULL : optarg, src, err);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return optd_err_set(err, OPTD_EINVAL, "unexpected argument '%s' (see --help)", argv[optind]);

    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL))
        return optd_err_set(err, OPTD_EINVAL, "--tls-cert and --tls-key must be given together");
    char host[256];
    unsigned port;
    int rc = optd_config_split_listen(cfg->listen, host, sizeof host, &port, err);
    if (rc)
        return rc;
    if (cfg->max_body_memory && cfg->max_body_memory < cfg->max_body_bytes)
        return optd_err_set(err, OPTD_EINVAL,
                            "--max-body-memory %zu is less than --max-body-bytes %zu: the largest body could never "
                            "be taken",
                            cfg->max_body_memory, cfg->max_body_bytes);
    if (cfg->metrics_auth && !cfg->auth_token_file)
        return optd_err_set(err, OPTD_EINVAL, "--metrics-auth needs --auth-token-file");
    return OPTD_CONFIG_RUN;
}

int optd_config_split_listen(const char *listen, char *host, size_t cap, unsigned *port,
                             optd_err_t *err)
{
    const char *colon;
    const char *h = listen;
    size_t hlen;
    if (*listen == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return optd_err_set(err, OPTD_EINVAL, "--listen '%s': want [IPv6]:PORT", listen);
        h = listen + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            return optd_err_set(err, OPTD_EINVAL, "--listen '%s': want HOST:PORT", listen);
        hlen = (size_t)(colon - listen);
        if (memchr(listen, ':', hlen))
            return optd_err_set(err, OPTD_EINVAL, "--listen '%s': put an IPv6 address in brackets, e.g. [::1]:8080",
                                listen);
    }
    if (hlen >= cap)
        return optd_err_set(err, OPTD_EINVAL, "--listen '%s': host name too long", listen);
    uint64_t p;
    if (parse_uint(colon + 1, 0, 65535, &p))
        return optd_err_set(err, OPTD_EINVAL, "--listen '%s': '%s' is not a port in 0..65535", listen,
                            colon + 1);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (unsigned)p;
    return 0;
}

/* ---- the default memory budget ------------------------------------------------ */

/* The number in file (a cgroup limit), or 0 when absent, "max" or unreadable. */
static uint64_t read_limit(const char *file)
{
    FILE *f = fopen(file, "re");
    if (!f)
        return 0;
    char buf[64] = "";
    bool ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok || strncmp(buf, "max", 3) == 0)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    return errno || end == buf ? 0 : (uint64_t)v;
}

/* This process's cgroup path for controller (v1, e.g. "memory") or the
 * unified hierarchy (controller NULL: the "0::" line), into path. */
static bool cgroup_path(const char *controller, char *path, size_t cap)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctl = c1 + 1;
        if (controller ? strstr(ctl, controller) != NULL : (ctl[0] == '\0' && strcmp(line, "0") == 0)) {
            snprintf(path, cap, "%s", c2 + 1);
            found = true;
        }
    }
    fclose(f);
    return found;
}

/* The lowest limit in file name `leaf` of the cgroup directory root/rel
 * and its ancestors up to root (a parent's limit binds its children too),
 * or 0 when none has one. */
static uint64_t lowest_limit(const char *root, const char *rel, const char *leaf)
{
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s%s", root, strcmp(rel, "/") ? rel : "");
    uint64_t best = 0;
    for (;;) {
        snprintf(file, sizeof file, "%s/%s", dir, leaf);
        uint64_t v = read_limit(file);
        if (v && (!best || v < best))
            best = v;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < strlen(root))
            break;
        *slash = '\0';
    }
    return best;
}

/* The memory limit of this process's cgroup: v2 first, then v1.  Inside a
 * container's cgroup namespace the path is "/" and the mount's root is the
 * container's own cgroup. */
static uint64_t cgroup_limit(const char **how)
{
    char rel[400];
    uint64_t v;
    if (cgroup_path(NULL, rel, sizeof rel) && (v = lowest_limit("/sys/fs/cgroup", rel, "memory.max"))) {
        *how = "the cgroup's memory.max";
        return v;
    }
    if (cgroup_path("memory", rel, sizeof rel) &&
        (v = lowest_limit("/sys/fs/cgroup/memory", rel, "memory.limit_in_bytes"))) {
        *how = "the cgroup's memory.limit_in_bytes";
        return v;
    }
    return 0;
}

/* The memory this process may use: its cgroup's limit, or physical memory
 * when there is none (or a v1 "no limit" above it); *src says which. */
static uint64_t memory_limit(const char **src)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t phys = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    *src = "physical memory";
    uint64_t limit = cgroup_limit(src);
    /* cgroup v1 says "no limit" with a huge number: physical memory is then the limit. */
    if (!limit || (phys && limit >= phys)) {
        limit = phys;
        *src = "physical memory";
    }
    if (!limit) {
        limit = (uint64_t)1 << 30;
        *src = "no known limit, assumed";
    }
    return limit > SIZE_MAX / 2 ? SIZE_MAX / 2 : limit;
}

size_t optd_config_memory_default(char *how, size_t cap)
{
    const char *src;
    uint64_t limit = memory_limit(&src);
    /* Half: a quarter is the default --max-body-memory (bodies in flight),
     * a sixth of the budget may be borrowed by answers in flight
     * (optd_store_borrow), and the rest is the process's own. */
    uint64_t reserve = limit - limit / 2;
    snprintf(how, cap, "%s (%llu bytes), half of it", src, (unsigned long long)limit);
    return (size_t)(limit - reserve);
}

size_t optd_config_body_memory_default(size_t max_body_bytes)
{
    const char *src;
    size_t quarter = (size_t)(memory_limit(&src) / 4);
    return quarter < max_body_bytes ? max_body_bytes : quarter;
}
