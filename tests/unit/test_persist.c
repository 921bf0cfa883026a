/* test_persist.c: persistence: snapshot round trips (every optimizer, both
 * dtypes, all metadata, bit-exact), damaged files (truncated at every
 * offset, every bit flipped, zeroed, unknown version, garbage) set aside
 * while the rest loads, journal replay with a torn tail and stale records,
 * the data directory lock, safe file names, and write failures injected by
 * the LD_PRELOAD shim tests/faults/failio.c (the binary re-executes itself
 * with the shim preloaded). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "journal.h"
#include "persist.h"
#include "session_internal.h"
#include "snapshot.h"

static char failio_ctl[256]; /* exists while faults are on */

/* ---- helpers -------------------------------------------------------------------- */

static void mktemp_dir(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "/tmp/optd-%s-XXXXXX", tag);
    ck_assert_ptr_nonnull(mkdtemp(out));
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

typedef struct world {
    optd_store_t *st;
    optd_persist_t *p;
    optd_persist_stats_t stats;
    optd_logger_t log;
} world_t;

static void world_open(world_t *w, const char *dir, optd_sync_mode_t mode)
{
    optd_err_t err;
    optd_store_limits_t lim = {.max_sessions = 1000, .max_params = 0, .history = 50};
    ck_assert_int_eq(optd_store_new(&lim, &w->st, &err), 0);
    optd_log_init(&w->log);
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s.log", dir);
    ck_assert_int_eq(optd_log_open(&w->log, strdup(logpath)), 0);
    ck_assert_msg(optd_persist_open(dir, mode, 1000, w->st, &w->log, &w->p, &err) == 0, "%s", err.msg);
    ck_assert_msg(optd_persist_load(w->p, &w->stats, &err) == 0, "%s", err.msg);
}

/* Without a flush this is what a crash leaves, as far as files go (the
 * journal writer has already made every acknowledged record durable). */
static void world_close(world_t *w, bool flush)
{
    if (flush) {
        size_t n;
        optd_err_t err;
        ck_assert_msg(optd_persist_flush(w->p, &n, &err) == 0, "%s", err.msg);
    }
    optd_persist_close(w->p);
    optd_store_free(w->st);
    free((char *)w->log.path);
    optd_log_close(&w->log);
}

static optd_session_t *rich_grouped(const char *name, optd_optim_kind_t kind, optd_dtype_t dt,
                                    bool grouped)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = kind, .dtype = dt};
    optd_hparams_default(kind, &cfg.hp);
    /* switch on every optional buffer */
    if (kind == OPTD_SGD)
        cfg.hp.momentum = 0.9;
    if (kind == OPTD_RMSPROP) {
        cfg.hp.centered = true;
        cfg.hp.momentum = 0.5;
    }
    if (kind == OPTD_ADAM || kind == OPTD_ADAMW)
        cfg.hp.amsgrad = true;
    cfg.hp.weight_decay = 0.01;
    cfg.has_schedule = true;
    cfg.schedule = (optd_schedule_t){.type = OPTD_SCHED_COSINE, .t_max = 100, .eta_min = 1e-5,
                                     .warmup_steps = 3};
    cfg.max_grad_norm = 1.5;
    cfg.ttl_seconds = 3600;
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "study", "lr-sweep", &err), 0);
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "trial", "17", &err), 0);
    if (grouped) {
        /* Two groups with values of their own (parameter groups, API 1.1). */
        size_t sizes[2] = {2, 3};
        ck_assert_int_eq(optd_session_config_set_groups(&cfg, sizes, 2, &err), 0);
        cfg.groups[0].hp.weight_decay = 0;
        cfg.groups[1].hp.lr *= 2;
        cfg.groups[1].hp.momentum_decay = 0.01; /* nadam: a mu_product of its own */
    }
    double p64[5] = {0.5, -1.25, 3.0, 1e-300, -7.75};
    float p32[5] = {0.5f, -1.25f, 3.0f, 1e-30f, -7.75f};
    optd_session_t *s;
    ck_assert_int_eq(
        optd_session_create(name, &cfg, 5, dt == OPTD_FLOAT64 ? (void *)p64 : (void *)p32, 50,
                            &s, &err),
        0);
    optd_session_config_free(&cfg);
    return s;
}

static optd_session_t *rich(const char *name, optd_optim_kind_t kind, optd_dtype_t dt)
{
    return rich_grouped(name, kind, dt, false);
}

/* A step as the step handler makes it: with the store's pool and hook. */
static int step_in(world_t *w, optd_session_t *s, const void *g, const double *loss,
                   uint64_t *step, void *out, optd_err_t *err)
{
    optd_step_ctx_t ctx;
    optd_store_step_ctx(w->st, &ctx);
    optd_step_input_t in = {.grad = g, .loss = loss};
    return optd_session_apply(s, &ctx, &in, step, out, err);
}

static void step_n_in(world_t *w, optd_session_t *s, int n)
{
    optd_err_t err;
    for (int i = 0; i < n; i++) {
        double g64[5], loss = 1.0 / (i + 2);
        float g32[5];
        for (int k = 0; k < 5; k++) {
            g64[k] = (k - 2) * 0.3 + 0.01 * i;
            g32[k] = (float)g64[k];
        }
        const void *g = s->cfg.dtype == OPTD_FLOAT64 ? (void *)g64 : (void *)g32;
        ck_assert_msg(step_in(w, s, g, i % 2 ? &loss : NULL, NULL, NULL, &err) == 0, "%s",
                      err.msg);
    }
}

/* The session's whole image as snapshot bytes: equal bytes, equal sessions. */
static uint8_t *image_bytes(optd_session_t *s, size_t *len)
{
    optd_session_image_t img;
    optd_err_t err;
    uint8_t *buf;
    ck_assert_int_eq(optd_session_copy_image(s, &img, &err), 0);
    ck_assert_int_eq(optd_snapshot_encode(&img, 0, &buf, len, &err), 0);
    optd_session_image_free(&img);
    return buf;
}

static uint8_t *image_of(optd_store_t *st, const char *name, size_t *len)
{
    optd_session_t *s = optd_store_get(st, name);
    ck_assert_msg(s != NULL, "session %s missing", name);
    uint8_t *b = image_bytes(s, len);
    optd_session_release(s);
    return b;
}

static void put(world_t *w, optd_session_t *s)
{
    optd_err_t err;
    ck_assert_msg(optd_store_insert(w->st, s, false, NULL, &err) == 0, "%s", err.msg);
}

static size_t count_files(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

static void remove_files(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[800];
    while ((e = readdir(d)))
        if (strstr(e->d_name, needle)) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Where a journal's records end: its zero-filled tail (journal.c) left out. */
static size_t records_end(const uint8_t *b, size_t len)
{
    while (len > OPTD_JOURNAL_HEADER && b[len - 1] == 0)
        len--;
    return len;
}

static void write_file(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

static bool file_contains(const char *path, const char *needle)
{
    size_t n;
    char *b = (char *)read_file(path, &n);
    b[n] = 0;
    bool found = strstr(b, needle) != NULL;
    free(b);
    return found;
}

static void snap_path(const char *dir, const char *name, char *out, size_t cap)
{
    char f[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name(name, f);
    snprintf(out, cap, "%s/%s", dir, f);
}

/* ---- tests ------------------------------------------------------------------------- */

START_TEST(file_names)
{
    char a[OPTD_SNAP_FILE_MAX + 1], b[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name("run", a);
    optd_snapshot_file_name("RUN", b);
    ck_assert_str_ne(a, b);
    ck_assert_str_eq(a, "s-oj2w4.snap"); /* base32("run") = OJ2W4=== */
    for (const char *p = a + 2; *p != '.'; p++)
        ck_assert(strchr("abcdefghijklmnopqrstuvwxyz234567", *p));
    char longname[129];
    memset(longname, 'Z', 128);
    longname[128] = 0;
    optd_snapshot_file_name(longname, a);
    ck_assert_uint_le(strlen(a), OPTD_SNAP_FILE_MAX);
    ck_assert_uint_le(strlen(a) + strlen(".damaged-20261128T120000Z-999"), 255);
}
END_TEST

START_TEST(round_trip_every_optimizer)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "rt");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    uint8_t *want[OPTD_OPTIM_COUNT][2];
    size_t wlen[OPTD_OPTIM_COUNT][2];
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        for (int d = 0; d < 2; d++) {
            char name[32];
            snprintf(name, sizeof name, "%s-%d", optd_optim_desc(k)->name, d);
            optd_session_t *s = rich(name, (optd_optim_kind_t)k, d ? OPTD_FLOAT64 : OPTD_FLOAT32);
            put(&w, s);
            step_n_in(&w, s, 7);
            want[k][d] = image_bytes(s, &wlen[k][d]);
            optd_session_release(s);
        }
    world_close(&w, true);

    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2 * OPTD_OPTIM_COUNT);
    ck_assert_uint_eq(w.stats.params_loaded, 10 * OPTD_OPTIM_COUNT);
    ck_assert_uint_eq(w.stats.files_set_aside, 0);
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        for (int d = 0; d < 2; d++) {
            char name[32];
            snprintf(name, sizeof name, "%s-%d", optd_optim_desc(k)->name, d);
            size_t len;
            uint8_t *got = image_of(w.st, name, &len);
            ck_assert_uint_eq(len, wlen[k][d]);
            ck_assert_msg(memcmp(got, want[k][d], len) == 0, "%s differs after reload", name);
            free(got);
            free(want[k][d]);
            /* every optional buffer really was there to be compared */
            optd_session_t *s = optd_store_get(w.st, name);
            for (int b = 0; b < OPTD_BUF_COUNT; b++)
                if (optd_optim_desc(k)->bufs & (1u << b))
                    ck_assert_msg(s->st.buf[b] != NULL, "%s lacks %s", name,
                                  optd_buf_name((optd_buf_t)b));
            ck_assert_uint_eq(s->st.step, 7);
            ck_assert_uint_eq(s->history_len, 7);
            /* the loss summary (a snapshot section): losses at steps 2, 4, 6 */
            ck_assert(s->loss.has && s->loss.last_step == 6 && s->loss.best_step == 6);
            ck_assert(s->loss.last == 1.0 / 7 && s->loss.best == 1.0 / 7);
            ck_assert_uint_eq(s->version, s->saved_version); /* clean after load */
            optd_session_release(s);
        }
    /* nothing dirty: a flush writes nothing */
    size_t n;
    optd_err_t err;
    ck_assert_int_eq(optd_persist_flush(w.p, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    world_close(&w, false);
    rm_rf(dir);
}
END_TEST

/* Parameter groups go into the snapshot's optional section (header flag
 * bit 0) and come back bit for bit, with each group's own state; a session
 * without groups is written with flags 0, as before groups existed; any
 * other flag bit is refused. */
START_TEST(groups_round_trip_and_flags)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "grp");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    uint8_t *want[OPTD_OPTIM_COUNT];
    size_t wlen[OPTD_OPTIM_COUNT];
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        char name[32];
        snprintf(name, sizeof name, "g-%s", optd_optim_desc(k)->name);
        optd_session_t *s = rich_grouped(name, (optd_optim_kind_t)k, OPTD_FLOAT32, true);
        put(&w, s);
        step_n_in(&w, s, 7);
        want[k] = image_bytes(s, &wlen[k]);
        ck_assert_uint_eq(want[k][12], OPTD_SNAP_F_SECTIONS);
        optd_session_release(s);
    }
    optd_session_t *plain = rich("plain", OPTD_NADAM, OPTD_FLOAT64);
    size_t plen;
    uint8_t *pb = image_bytes(plain, &plen);
    ck_assert_uint_eq(pb[12] | pb[13] | pb[14] | pb[15], 0);
    optd_session_release(plain);
    world_close(&w, true);

    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    ck_assert_uint_eq(w.stats.files_set_aside, 0);
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        char name[32];
        snprintf(name, sizeof name, "g-%s", optd_optim_desc(k)->name);
        size_t len;
        uint8_t *got = image_of(w.st, name, &len);
        ck_assert_uint_eq(len, wlen[k]);
        ck_assert_msg(memcmp(got, want[k], len) == 0, "%s differs after reload", name);
        free(got);
        optd_session_t *s = optd_store_get(w.st, name);
        ck_assert_uint_eq(s->cfg.n_groups, 2);
        ck_assert_uint_eq(s->st.n_groups, 2);
        ck_assert(s->cfg.groups[1].hp.lr == 2 * s->cfg.hp.lr);
        if (k == OPTD_NADAM)
            ck_assert(s->st.groups[0].mu_product != s->st.groups[1].mu_product);
        if (k == OPTD_SGD)
            ck_assert(s->st.groups[0].momentum_started && s->st.groups[1].momentum_started);
        optd_session_release(s);
    }
    world_close(&w, false);

    /* An unknown flag bit (with a right checksum) is refused; bit 1, a
     * PATCH's config record, is never a snapshot. */
    optd_session_image_t img;
    uint64_t lsn;
    optd_err_t err;
    const struct {
        uint8_t bit;
        const char *why;
    } flags[] = {{4, "unknown flags"}, {2, "a configuration record, not a snapshot"}};
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        uint8_t *b = malloc(wlen[OPTD_NADAM]);
        memcpy(b, want[OPTD_NADAM], wlen[OPTD_NADAM]);
        b[12] |= flags[f].bit;
        uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(wlen[OPTD_NADAM] - 4));
        for (int i = 0; i < 4; i++)
            b[wlen[OPTD_NADAM] - 4 + i] = (uint8_t)(crc >> (8 * i));
        ck_assert_int_eq(optd_snapshot_decode(b, wlen[OPTD_NADAM], &img, &lsn, &err), OPTD_ECORRUPT);
        ck_assert_str_eq(err.msg, flags[f].why);
        free(b);
    }
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        free(want[k]);
    free(pb);
    rm_rf(dir);
}
END_TEST

START_TEST(dir_lock)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "lock");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    optd_store_limits_t lim = {.max_sessions = 10, .history = 10};
    optd_store_t *st2;
    optd_persist_t *p2;
    optd_err_t err;
    ck_assert_int_eq(optd_store_new(&lim, &st2, &err), 0);
    ck_assert_int_eq(optd_persist_open(dir, OPTD_SYNC_INTERVAL, 1000, st2, &w.log, &p2, &err), OPTD_EIO);
    ck_assert(strstr(err.msg, "in use"));
    world_close(&w, false);
    ck_assert_int_eq(optd_persist_open(dir, OPTD_SYNC_INTERVAL, 1000, st2, NULL, &p2, &err), 0);
    optd_persist_close(p2);
    optd_store_free(st2);
    rm_rf(dir);
}
END_TEST

/* Three sessions on disk; "victim" is then damaged by the caller. */
static void three_sessions(const char *dir)
{
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    const char *names[] = {"a", "victim", "z"};
    for (int i = 0; i < 3; i++) {
        optd_session_t *s = rich(names[i], OPTD_SGD, OPTD_FLOAT32);
        put(&w, s);
        step_n_in(&w, s, 2);
        optd_session_release(s);
    }
    world_close(&w, true);
}

/* Loads dir with the victim damaged: it must be set aside and reported,
 * the others loaded; then clears the set-aside file. */
static void expect_victim_set_aside(const char *dir, const char *reason)
{
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    ck_assert_uint_eq(w.stats.files_set_aside, 1);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2);
    optd_session_t *v = optd_store_get(w.st, "victim");
    ck_assert_ptr_null(v);
    optd_session_t *a = optd_store_get(w.st, "a"), *z = optd_store_get(w.st, "z");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(z);
    ck_assert_uint_eq(a->st.step, 2);
    optd_session_release(a);
    optd_session_release(z);
    const char *logpath = w.log.path;
    char logcopy[600];
    snprintf(logcopy, sizeof logcopy, "%s", logpath);
    world_close(&w, false);
    ck_assert_uint_eq(count_files(dir, ".damaged-"), 1);
    char vf[OPTD_SNAP_FILE_MAX + 1];
    optd_snapshot_file_name("victim", vf);
    ck_assert_uint_eq(count_files(dir, vf), 1); /* only the damaged copy */
    if (reason)
        ck_assert_msg(file_contains(logcopy, reason) && file_contains(logcopy, vf),
                      "log lacks '%s'", reason);
    remove_files(dir, ".damaged-");
    unlink(logcopy);
}

START_TEST(truncated_at_every_offset)
{
    char dir[64], vpath[400];
    mktemp_dir(dir, sizeof dir, "trunc");
    three_sessions(dir);
    snap_path(dir, "victim", vpath, sizeof vpath);
    size_t len;
    uint8_t *orig = read_file(vpath, &len);
    ck_assert_uint_gt(len, 100);
    for (size_t cut = 0; cut < len; cut++) {
        write_file(vpath, orig, cut);
        expect_victim_set_aside(dir, cut == 0 ? "empty file" : (cut < 28 ? NULL : "truncated"));
    }
    /* and whole again, it loads */
    write_file(vpath, orig, len);
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    ck_assert_uint_eq(w.stats.sessions_loaded, 3);
    world_close(&w, false);
    free(orig);
    rm_rf(dir);
}
END_TEST

START_TEST(every_bit_flip_and_other_damage)
{
    char dir[64], vpath[400];
    mktemp_dir(dir, sizeof dir, "flip");
    three_sessions(dir);
    snap_path(dir, "victim", vpath, sizeof vpath);
    size_t len;
    uint8_t *orig = read_file(vpath, &len);
    uint8_t *b = malloc(len);
    for (size_t i = 0; i < len; i++) {
        memcpy(b, orig, len);
        b[i] ^= (uint8_t)(1u << (i % 8));
        write_file(vpath, b, len);
        expect_victim_set_aside(dir, NULL);
    }
    /* bad checksum, reported as such */
    memcpy(b, orig, len);
    b[len / 2] ^= 0x10;
    write_file(vpath, b, len);
    expect_victim_set_aside(dir, "bad checksum");
    /* zeroed */
    memset(b, 0, len);
    write_file(vpath, b, len);
    expect_victim_set_aside(dir, "wrong magic");
    /* garbage */
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 131 + 7);
    write_file(vpath, b, len);
    expect_victim_set_aside(dir, "wrong magic");
    /* an unknown format version, with a checksum that matches */
    memcpy(b, orig, len);
    b[8] = 2;
    uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(len - 4));
    for (int k = 0; k < 4; k++)
        b[len - 4 + k] = (uint8_t)(crc >> (8 * k));
    write_file(vpath, b, len);
    expect_victim_set_aside(dir, "unknown format version 2");
    /* trailing garbage */
    uint8_t *longer = malloc(len + 3);
    memcpy(longer, orig, len);
    memcpy(longer + len, "abc", 3);
    write_file(vpath, longer, len + 3);
    expect_victim_set_aside(dir, "trailing garbage");
    /* another session's valid file under the victim's name */
    char apath[400];
    snap_path(dir, "a", apath, sizeof apath);
    size_t alen;
    uint8_t *a = read_file(apath, &alen);
    write_file(vpath, a, alen);
    expect_victim_set_aside(dir, "does not match");
    free(a);
    free(longer);
    free(b);
    free(orig);
    rm_rf(dir);
}
END_TEST

static char *journal_path(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char best[256] = "";
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "journal-", 8) == 0 && strlen(e->d_name) == 28 &&
            strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    closedir(d);
    ck_assert_msg(best[0], "no journal in %s", dir);
    snprintf(out, cap, "%s/%s", dir, best);
    return out;
}

START_TEST(journal_replay_torn_tail_and_stale_records)
{
    char dir[64], jpath[400];
    mktemp_dir(dir, sizeof dir, "jrnl");
    optd_err_t err;
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    optd_session_t *x = rich("x", OPTD_ADAM, OPTD_FLOAT64);
    optd_session_t *y = rich("y", OPTD_NADAM, OPTD_FLOAT32);
    put(&w, x);
    put(&w, y);
    step_n_in(&w, x, 5);
    step_n_in(&w, y, 2);
    ck_assert_int_eq(optd_store_remove(w.st, "y", &err), 0);
    optd_session_t *z = rich("z", OPTD_LION, OPTD_FLOAT32);
    put(&w, z);
    step_n_in(&w, z, 1);
    size_t xl, zl;
    uint8_t *xw = image_bytes(x, &xl), *zw = image_bytes(z, &zl);
    step_n_in(&w, x, 1); /* the last record: torn off below */
    size_t x6l;
    uint8_t *x6 = image_bytes(x, &x6l);
    optd_session_release(x);
    optd_session_release(y);
    optd_session_release(z);
    world_close(&w, false); /* crash: no snapshot was ever written */
    ck_assert_uint_eq(count_files(dir, ".snap"), 0);

    /* replay: everything acknowledged is back, the delete too */
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2);
    size_t l;
    uint8_t *got = image_of(w.st, "x", &l);
    ck_assert(l == x6l && memcmp(got, x6, l) == 0);
    free(got);
    got = image_of(w.st, "z", &l);
    ck_assert(l == zl && memcmp(got, zw, l) == 0);
    free(got);
    ck_assert_ptr_null(optd_store_get(w.st, "y"));
    /* the zeros after the last record are its end, not damage */
    ck_assert(!file_contains(w.log.path, "torn record"));
    ck_assert(!file_contains(w.log.path, "bad record"));
    world_close(&w, false);

    char first_journal[400];
    snprintf(first_journal, sizeof first_journal, "%s/journal-0000000000000001.log", dir);
    size_t jl;
    uint8_t *jb = read_file(first_journal, &jl);
    size_t re = records_end(jb, jl);
    ck_assert_uint_gt(jl, re); /* zero-filled ahead */

    /* a torn tail (the last record half written) is cut off; the record
     * before it stands: as a crash mid-write leaves it (its last bytes
     * never came, the zeros ahead of it are still there) ... */
    uint8_t *torn = malloc(jl);
    memcpy(torn, jb, jl);
    memset(torn + re - 10, 0, 10);
    write_file(first_journal, torn, jl);
    free(torn);
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    got = image_of(w.st, "x", &l);
    ck_assert(l == xl && memcmp(got, xw, l) == 0); /* step 5, not 6 */
    free(got);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2);
    ck_assert(file_contains(w.log.path, "torn record"));
    ck_assert_uint_eq(w.stats.files_set_aside, 0);
    struct stat sb;
    ck_assert_int_eq(stat(first_journal, &sb), 0);
    ck_assert_int_lt(sb.st_size, (off_t)re - 10); /* cut at the last good record */
    world_close(&w, false);
    ck_assert_uint_eq(count_files(dir, ".damaged-"), 0);

    /* ... and as a file that was not zero-filled ahead ends */
    write_file(first_journal, jb, re - 10);
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    got = image_of(w.st, "x", &l);
    ck_assert(l == xl && memcmp(got, xw, l) == 0);
    free(got);
    ck_assert_int_eq(stat(first_journal, &sb), 0);
    ck_assert_int_lt(sb.st_size, (off_t)re - 10);

    /* a flush covers the journals with snapshots and deletes them ... */
    optd_session_t *xs = optd_store_get(w.st, "x");
    step_n_in(&w, xs, 2);
    size_t n;
    ck_assert_int_eq(optd_persist_flush(w.p, &n, &err), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_ne(stat(first_journal, &sb), 0);
    size_t x7l;
    uint8_t *x7 = image_bytes(xs, &x7l);
    optd_session_release(xs);
    world_close(&w, false);

    /* ... and an old journal put back is not replayed over newer snapshots */
    write_file(first_journal, jb, jl);
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    got = image_of(w.st, "x", &l);
    ck_assert(l == x7l && memcmp(got, x7, l) == 0);
    free(got);
    ck_assert_ptr_null(optd_store_get(w.st, "y"));
    world_close(&w, true);

    /* garbage in the middle of a journal: a copy is kept, the rest cut.
     * Two records, the first damaged: the last one could end in a zero
     * byte, and damage there looks like a torn tail (handled as one). */
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    xs = optd_store_get(w.st, "x");
    step_n_in(&w, xs, 2);
    optd_session_release(xs);
    journal_path(dir, jpath, sizeof jpath);
    world_close(&w, false);
    jb = (free(jb), read_file(jpath, &jl));
    jb[OPTD_JOURNAL_HEADER + 30] ^= 0xff;
    write_file(jpath, jb, jl);
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    ck_assert(file_contains(w.log.path, "bad record checksum"));
    ck_assert_uint_eq(w.stats.files_set_aside, 1);
    got = image_of(w.st, "x", &l);
    ck_assert(l == x7l && memcmp(got, x7, l) == 0); /* the damaged record is not applied */
    free(got);
    world_close(&w, false);
    ck_assert_uint_eq(count_files(dir, ".damaged-"), 1);

    free(jb);
    free(xw);
    free(zw);
    free(x6);
    free(x7);
    rm_rf(dir);
}
END_TEST

/* Records bigger than the journal's zero-filled step (1 MiB) between small
 * ones: the big batches grow the file themselves, and the zeros written
 * ahead of the small ones after them must start after the big records,
 * not on top of them. */
START_TEST(journal_big_and_small_records)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "jbig");
    optd_err_t err;
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    optd_session_config_t cfg = {.kind = OPTD_ADAM, .dtype = OPTD_FLOAT64};
    optd_hparams_default(OPTD_ADAM, &cfg.hp);
    enum { BIG = 100000 }; /* params, m and v: 2.4 MB a record */
    double *p = calloc(BIG, sizeof *p), *g = malloc(BIG * sizeof *g);
    for (size_t i = 0; i < BIG; i++)
        g[i] = 1e-3 * (double)(i % 7) - 2e-3;
    optd_session_t *big;
    ck_assert_int_eq(optd_session_create("big", &cfg, BIG, p, 10, &big, &err), 0);
    put(&w, big);
    optd_session_t *x = rich("x", OPTD_ADAM, OPTD_FLOAT64);
    put(&w, x);
    for (int round = 0; round < 3; round++) {
        ck_assert_msg(step_in(&w, big, g, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
        step_n_in(&w, x, 2);
    }
    size_t bl, xl;
    uint8_t *bw = image_bytes(big, &bl), *xw = image_bytes(x, &xl);
    optd_session_release(big);
    optd_session_release(x);
    world_close(&w, false); /* crash: everything is in the journal */

    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2);
    ck_assert_uint_eq(w.stats.files_set_aside, 0);
    size_t l;
    uint8_t *got = image_of(w.st, "big", &l);
    ck_assert(l == bl && memcmp(got, bw, l) == 0);
    free(got);
    got = image_of(w.st, "x", &l);
    ck_assert(l == xl && memcmp(got, xw, l) == 0);
    free(got);
    world_close(&w, true);
    free(bw);
    free(xw);
    free(p);
    free(g);
    optd_session_config_free(&cfg);
    rm_rf(dir);
}
END_TEST

/* A batch of steps with --sync always: one fsync round for the whole
 * batch (the journal's own count), and after a crash the sessions replay
 * to the same bits, the items on one session in their order. */
START_TEST(batch_one_group_replays_same_bits)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "jbatch");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    optd_session_t *x = rich("x", OPTD_ADAM, OPTD_FLOAT64), *y = rich("y", OPTD_SGD, OPTD_FLOAT32);
    put(&w, x);
    put(&w, y);
    double g64[3][5];
    float g32[2][5];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 3; i++)
            g64[i][k] = 0.1 * (k - i) + 0.05;
        for (int i = 0; i < 2; i++)
            g32[i][k] = (float)(0.2 * (i - k));
    }
    double loss = 0.75;
    uint64_t one = 1;
    optd_batch_step_t b[5] = {
        {.s = x, .in = {.grad = g64[0], .loss = &loss}},
        {.s = y, .in = {.grad = g32[0]}},
        {.s = x, .in = {.grad = g64[1], .expect_step = &one}},
        {.s = y, .in = {.grad = g32[1]}},
        {.s = x, .in = {.grad = g64[2]}},
    };
    for (int i = 0; i < 5; i++)
        optd_session_retain(b[i].s); /* the batch holds its own references */
    uint64_t rec0, sync0, rec1, sync1;
    optd_persist_journal_counts(w.p, &rec0, &sync0);
    optd_store_step_batch(w.st, b, 5);
    optd_persist_journal_counts(w.p, &rec1, &sync1);
    for (int i = 0; i < 5; i++) {
        ck_assert_msg(b[i].rc == 0, "item %d: %s", i, b[i].err.msg);
        optd_session_release(b[i].s);
    }
    ck_assert_uint_eq(b[4].step, 3);
    ck_assert_uint_eq(b[3].step, 2);
    ck_assert_uint_eq(rec1 - rec0, 5);
    ck_assert_uint_eq(sync1 - sync0, 1);
    size_t xl, yl, l;
    uint8_t *xw = image_bytes(x, &xl), *yw = image_bytes(y, &yl);
    optd_session_release(x);
    optd_session_release(y);
    world_close(&w, false); /* crash: the batch is in the journal only */

    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    uint8_t *got = image_of(w.st, "x", &l);
    ck_assert(l == xl && memcmp(got, xw, l) == 0);
    free(got);
    got = image_of(w.st, "y", &l);
    ck_assert(l == yl && memcmp(got, yw, l) == 0);
    free(got);
    world_close(&w, true);
    free(xw);
    free(yw);
    rm_rf(dir);
}
END_TEST

typedef struct stepper {
    world_t *w;
    optd_session_t *s;
} stepper_t;

static void *step_thread(void *arg)
{
    stepper_t *st = arg;
    step_n_in(st->w, st->s, 50);
    return NULL;
}

START_TEST(group_commit_many_threads)
{
    /* Many appenders at once share fsync rounds and every one is durable. */
    char dir[64];
    mktemp_dir(dir, sizeof dir, "gc");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    enum { T = 8 };
    optd_session_t *s[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        s[i] = rich(name, i % 2 ? OPTD_SGD : OPTD_ADAMW, OPTD_FLOAT64);
        put(&w, s[i]);
    }
    stepper_t args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (stepper_t){&w, s[i]};
        ck_assert_int_eq(pthread_create(&th[i], NULL, step_thread, &args[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    uint8_t *want[T];
    size_t wl[T];
    for (int i = 0; i < T; i++) {
        want[i] = image_bytes(s[i], &wl[i]);
        optd_session_release(s[i]);
    }
    /* step records carry only the new history entry, not all 50 */
    char jpath[400];
    size_t jl;
    uint8_t *jb = read_file(journal_path(dir, jpath, sizeof jpath), &jl);
    ck_assert_uint_lt(records_end(jb, jl), T * 51 * 700);
    free(jb);
    world_close(&w, false);
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    ck_assert_uint_eq(w.stats.sessions_loaded, T);
    for (int i = 0; i < T; i++) {
        char name[16];
        size_t l;
        snprintf(name, sizeof name, "s%d", i);
        uint8_t *got = image_of(w.st, name, &l);
        ck_assert(l == wl[i] && memcmp(got, want[i], l) == 0);
        free(got);
        free(want[i]);
    }
    world_close(&w, false);
    rm_rf(dir);
}
END_TEST

/* ---- faults ----------------------------------------------------------------------------- */

static void faults(bool on)
{
    if (on)
        write_file(failio_ctl, "", 0);
    else
        unlink(failio_ctl);
}

START_TEST(write_failures_sync_always)
{
    ck_assert_msg(getenv("FAILIO_ACTIVE"), "the failio shim is not preloaded");
    char top[64], dir[96];
    mktemp_dir(top, sizeof top, "fi");
    snprintf(dir, sizeof dir, "%s/failio-zone", top); /* only here do writes fail */
    optd_err_t err;
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    optd_session_t *s = rich("s", OPTD_ADAM, OPTD_FLOAT64);
    put(&w, s);
    step_n_in(&w, s, 3);
    size_t bl;
    uint8_t *before = image_bytes(s, &bl);

    faults(true);
    double g[5] = {1, 2, 3, 4, 5}, out[5] = {0};
    uint64_t step = 0;
    ck_assert_int_eq(step_in(&w, s, g, NULL, &step, out, &err), OPTD_EIO);
    ck_assert(strstr(err.msg, "durable"));
    size_t al;
    uint8_t *after = image_bytes(s, &al);
    ck_assert(al == bl && memcmp(after, before, bl) == 0);
    free(after);
    optd_session_desc_t desc;
    ck_assert_int_eq(optd_session_copy_descriptor(s, &desc, &err), 0);
    desc.cfg.hp.lr = 0.5;
    ck_assert_int_eq(optd_session_set_config(s, &desc.cfg, &err), OPTD_EIO);
    optd_session_config_free(&desc.cfg);
    ck_assert(s->cfg.hp.lr == 1e-3);
    optd_session_t *t = rich("t", OPTD_SGD, OPTD_FLOAT32);
    ck_assert_int_eq(optd_store_insert(w.st, t, false, NULL, &err), OPTD_EIO);
    ck_assert_ptr_null(optd_store_get(w.st, "t"));
    ck_assert_int_eq(optd_store_remove(w.st, "s", &err), OPTD_EIO);
    ck_assert(!optd_session_is_deleted(s));
    after = image_bytes(s, &al);
    ck_assert(al == bl && memcmp(after, before, bl) == 0);
    free(after);

    /* the fault clears: the same step goes through */
    faults(false);
    ck_assert_int_eq(step_in(&w, s, g, NULL, &step, out, &err), 0);
    ck_assert_uint_eq(step, 4);
    ck_assert_int_eq(optd_store_insert(w.st, t, false, NULL, &err), 0);
    size_t wl;
    uint8_t *want = image_bytes(s, &wl);
    optd_session_release(s);
    optd_session_release(t);
    world_close(&w, false);

    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    uint8_t *got = image_of(w.st, "s", &al);
    ck_assert(al == wl && memcmp(got, want, wl) == 0);
    ck_assert_uint_eq(w.stats.sessions_loaded, 2);
    free(got);
    world_close(&w, false);
    free(want);
    free(before);
    rm_rf(top);
}
END_TEST

START_TEST(write_failures_sync_interval)
{
    ck_assert_msg(getenv("FAILIO_ACTIVE"), "the failio shim is not preloaded");
    char top[64], dir[96];
    mktemp_dir(top, sizeof top, "fi");
    snprintf(dir, sizeof dir, "%s/failio-zone", top); /* only here do writes fail */
    optd_err_t err;
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    optd_session_t *s = rich("s", OPTD_RMSPROP, OPTD_FLOAT32);
    put(&w, s);
    size_t n;
    ck_assert_int_eq(optd_persist_flush(w.p, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    size_t l0;
    uint8_t *v0 = read_file(w.log.path, &l0); /* just to have the log exist */
    free(v0);
    char spath[400];
    snap_path(dir, "s", spath, sizeof spath);
    size_t fl;
    uint8_t *file_before = read_file(spath, &fl);

    step_n_in(&w, s, 4);
    faults(true);
    ck_assert_int_eq(optd_persist_flush(w.p, &n, &err), OPTD_EIO);
    ck_assert_uint_eq(n, 0);
    ck_assert(s->version != s->saved_version); /* still dirty: retried later */
    ck_assert(file_contains(w.log.path, "will retry"));
    /* the old snapshot is intact, no temporary file is left */
    size_t fl2;
    uint8_t *file_now = read_file(spath, &fl2);
    ck_assert(fl2 == fl && memcmp(file_now, file_before, fl) == 0);
    free(file_now);
    ck_assert_uint_eq(count_files(dir, ".tmp"), 0);
    /* steps still work in memory */
    step_n_in(&w, s, 1);
    faults(false);
    ck_assert_int_eq(optd_persist_flush(w.p, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert(s->version == s->saved_version);
    size_t wl;
    uint8_t *want = image_bytes(s, &wl);
    optd_session_release(s);
    world_close(&w, false);
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    size_t gl;
    uint8_t *got = image_of(w.st, "s", &gl);
    ck_assert(gl == wl && memcmp(got, want, wl) == 0);
    free(got);
    world_close(&w, false);
    free(want);
    free(file_before);
    rm_rf(top);
}
END_TEST

/* Re-executes this binary with the fault shim preloaded (once). */
static void preload_failio(char **argv)
{
    if (getenv("FAILIO_ACTIVE"))
        return;
    char self[4096], shim[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return;
    self[n] = 0;
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", self);
    snprintf(shim, sizeof shim, "%s/../faults/failio.so", dirname(dirbuf));
    if (access(shim, R_OK) != 0) {
        fprintf(stderr, "test_persist: %s missing: the fault tests will fail\n", shim);
        return;
    }
    setenv("LD_PRELOAD", shim, 1);
    setenv("FAILIO_ACTIVE", "1", 1);
    setenv("FAILIO_PATH", "/failio-zone/", 1);
    char ctl[128];
    snprintf(ctl, sizeof ctl, "/tmp/optd-failio-ctl-%d", (int)getpid());
    setenv("FAILIO_CTL", ctl, 1);
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[1024];
    snprintf(opts, sizeof opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    execv(self, argv);
    fprintf(stderr, "test_persist: cannot re-execute with the shim: %s\n", strerror(errno));
}

/* Steps are journaled as their input and replayed through the same
 * apply: after a crash with nothing but the journal (no flush), every
 * session is the same bytes (params, state, history with its times,
 * updated), also past a step that was refused as non-finite after it was
 * journaled.  Interval mode: the journal is written without waiting. */
START_TEST(step_records_replay_same_bits)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "steps");
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    optd_session_t *a = rich("a", OPTD_ADAM, OPTD_FLOAT32);
    optd_session_t *b = rich("b", OPTD_NADAM, OPTD_FLOAT64);
    put(&w, a);
    put(&w, b);
    step_n_in(&w, a, 9);
    step_n_in(&w, b, 4);
    float bad[5] = {1, 2, NAN, 4, 5};
    optd_err_t err;
    ck_assert_int_eq(step_in(&w, a, bad, NULL, NULL, NULL, &err), OPTD_ENONFINITE);
    step_n_in(&w, a, 3);
    size_t al, bl;
    uint8_t *aw = image_bytes(a, &al), *bw = image_bytes(b, &bl);
    optd_session_release(a);
    optd_session_release(b);
    world_close(&w, false);
    ck_assert_uint_eq(count_files(dir, ".snap"), 0); /* only the journal holds them */

    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    size_t l;
    uint8_t *got = image_of(w.st, "a", &l);
    ck_assert(l == al && memcmp(got, aw, al) == 0);
    free(got);
    got = image_of(w.st, "b", &l);
    ck_assert(l == bl && memcmp(got, bw, bl) == 0);
    free(got);
    world_close(&w, true);
    free(aw);
    free(bw);
    rm_rf(dir);
}
END_TEST

/* Appends one journal record (type, lsn, payload) to buf at *off. */
static void v1_record(uint8_t *buf, size_t *off, uint32_t type, uint64_t lsn, const uint8_t *pl,
                      size_t len)
{
    uint8_t *h = buf + *off;
    for (int i = 0; i < 4; i++) {
        h[i] = (uint8_t)(OPTD_JREC_MAGIC >> (8 * i));
        h[4 + i] = (uint8_t)(type >> (8 * i));
    }
    for (int i = 0; i < 8; i++) {
        h[8 + i] = (uint8_t)(lsn >> (8 * i));
        h[16 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(h + OPTD_JREC_HEADER, pl, len);
    uint32_t crc = (uint32_t)crc32(0L, h, (uInt)(OPTD_JREC_HEADER + len));
    for (int i = 0; i < 4; i++)
        h[OPTD_JREC_HEADER + len + i] = (uint8_t)(crc >> (8 * i));
    *off += OPTD_JREC_HEADER + len + 4;
}

/* A journal written by 1.0 (format version 1: images, deltas carrying only
 * the newer history, deletes) still loads: a 1.0 data directory carries
 * over. */
/* A round's contribution as the step handler makes it. */
static int contribute_in(world_t *w, optd_session_t *s, const char *worker, uint64_t step, const double *g,
                         optd_err_t *err)
{
    optd_step_ctx_t ctx;
    optd_store_step_ctx(w->st, &ctx);
    optd_contribution_t c = {.step = step, .grad = (void *)g, .has_loss = true, .loss = 0.25};
    snprintf(c.worker, sizeof c.worker, "%s", worker);
    optd_contrib_result_t res;
    int rc = optd_session_contribute(s, &ctx, &c, &res, err);
    if (!rc)
        optd_round_outcome_release(res.outcome);
    return rc;
}

/* Rounds: the aggregate, each worker's last applied step and the
 * history's contributions come back from the journal (record type 6,
 * after a crash) and from a snapshot (section 3); a pending round does
 * not, and a retry of an applied contribution is still refused. */
static void check_rounds_back(world_t *w, const uint8_t *want, size_t wl)
{
    optd_err_t err;
    optd_session_t *s = optd_store_get(w->st, "agg");
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(s->st.step, 1);
    ck_assert_ptr_null(s->round);
    ck_assert_uint_eq(s->cfg.aggregate.workers, 2);
    ck_assert_uint_eq(s->cfg.aggregate.max_staleness, 3);
    uint64_t v;
    ck_assert(optd_worker_steps_get(&s->worker_steps, "w1", &v) && v == 0);
    ck_assert(optd_worker_steps_get(&s->worker_steps, "w2", &v) && v == 0);
    ck_assert_uint_eq(s->history_len, 1);
    ck_assert_uint_eq(s->history[s->history_head].contributions, 2);
    size_t l;
    uint8_t *got = image_of(w->st, "agg", &l);
    ck_assert(l == wl && memcmp(got, want, l) == 0);
    free(got);
    double g[5] = {1, 2, 3, 4, 5};
    ck_assert_int_eq(contribute_in(w, s, "w1", 0, g, &err), OPTD_ESTEP);
    optd_session_release(s);
}

START_TEST(rounds_survive_a_crash_and_a_snapshot)
{
    char dir[64];
    mktemp_dir(dir, sizeof dir, "rounds");
    optd_err_t err;
    world_t w;
    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    optd_session_config_t cfg = {.kind = OPTD_ADAM, .dtype = OPTD_FLOAT64};
    optd_hparams_default(cfg.kind, &cfg.hp);
    cfg.aggregate = (optd_aggregate_t){.workers = 2, .reduce = OPTD_REDUCE_MEAN, .max_staleness = 3};
    optd_session_t *s;
    ck_assert_int_eq(optd_session_create("agg", &cfg, 5, NULL, 50, &s, &err), 0);
    put(&w, s);
    double g1[5] = {0.5, -1, 2, 0, 3}, g2[5] = {1, 1, 1, 1, -1};
    ck_assert_int_eq(contribute_in(&w, s, "w2", 0, g2, &err), 0);
    ck_assert_int_eq(contribute_in(&w, s, "w1", 0, g1, &err), 0);
    ck_assert_uint_eq(s->st.step, 1);
    ck_assert_int_eq(contribute_in(&w, s, "w1", 1, g1, &err), 0); /* pending, in memory only */
    size_t wl;
    uint8_t *want = image_bytes(s, &wl);
    optd_session_release(s);
    world_close(&w, false); /* crash: only the journal */
    ck_assert_uint_eq(count_files(dir, ".snap"), 0);

    world_open(&w, dir, OPTD_SYNC_ALWAYS);
    check_rounds_back(&w, want, wl);
    world_close(&w, true); /* a snapshot of it */
    ck_assert_uint_ge(count_files(dir, ".snap"), 1);
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    check_rounds_back(&w, want, wl);
    world_close(&w, false);
    free(want);
    rm_rf(dir);
}
END_TEST
START_TEST(version_1_journal_loads)
{
    char dir[64], dir2[64];
    mktemp_dir(dir, sizeof dir, "v1");
    mktemp_dir(dir2, sizeof dir2, "v1b");
    optd_err_t err;
    optd_session_t *s = rich("old", OPTD_ADAM, OPTD_FLOAT64);
    optd_session_t *g = rich("gone", OPTD_SGD, OPTD_FLOAT32);
    uint8_t *im0, *im2, *delta, *gim;
    size_t l0, l2, ld, lg;
    optd_session_image_t img;
    for (int i = 0; i < 3; i++) {
        if (i == 0 || i == 2) { /* the image at step 0, then at step 2 */
            ck_assert_int_eq(optd_session_copy_image(s, &img, &err), 0);
            ck_assert_int_eq(optd_snapshot_encode(&img, 0, i ? &im2 : &im0, i ? &l2 : &l0, &err), 0);
            optd_session_image_free(&img);
        }
        double gr[5] = {0.1, -0.2, 0.3, 0.05 * i, 1.0}, loss = 0.5;
        ck_assert_int_eq(optd_session_step(s, gr, NULL, &loss, NULL, NULL, &err), 0);
    }
    size_t wl;
    uint8_t *want = image_bytes(s, &wl);
    /* step 3 as 1.0 journaled it: a delta holding only the newest entry */
    ck_assert_int_eq(optd_session_copy_image(s, &img, &err), 0);
    img.history[0] = img.history[img.n_history - 1];
    img.n_history = 1;
    ck_assert_int_eq(optd_snapshot_encode(&img, 0, &delta, &ld, &err), 0);
    optd_session_image_free(&img);
    ck_assert_int_eq(optd_session_copy_image(g, &img, &err), 0);
    ck_assert_int_eq(optd_snapshot_encode(&img, 0, &gim, &lg, &err), 0);
    optd_session_image_free(&img);

    size_t cap = OPTD_JOURNAL_HEADER + 5 * (OPTD_JREC_HEADER + 4) + l0 + l2 + ld + lg + 16;
    uint8_t *buf = calloc(1, cap);
    memcpy(buf, OPTD_JOURNAL_MAGIC, 8);
    buf[8] = 1;  /* version 1 */
    buf[16] = 1; /* sequence 1 */
    uint8_t del[2 + 4] = {4, 0, 'g', 'o', 'n', 'e'};
    char path[128];

    /* create, a delta straight on it, and a delete */
    size_t off = OPTD_JOURNAL_HEADER;
    v1_record(buf, &off, OPTD_JREC_IMAGE, 1, im0, l0);
    v1_record(buf, &off, OPTD_JREC_IMAGE, 2, gim, lg);
    v1_record(buf, &off, OPTD_JREC_DELTA, 3, delta, ld);
    v1_record(buf, &off, OPTD_JREC_DELETE, 4, del, sizeof del);
    snprintf(path, sizeof path, "%s/journal-0000000000000001.log", dir);
    write_file(path, buf, off);
    world_t w;
    world_open(&w, dir, OPTD_SYNC_INTERVAL);
    ck_assert_ptr_null(optd_store_get(w.st, "gone"));
    optd_session_t *o = optd_store_get(w.st, "old");
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_eq(o->st.step, 3);
    ck_assert_uint_eq(o->history_len, 1); /* its base had no history */
    optd_session_release(o);
    world_close(&w, true);

    /* the image at step 2, then the delta: the earlier history is kept */
    off = OPTD_JOURNAL_HEADER;
    memset(buf + off, 0, cap - off);
    v1_record(buf, &off, OPTD_JREC_IMAGE, 1, im2, l2);
    v1_record(buf, &off, OPTD_JREC_DELTA, 2, delta, ld);
    snprintf(path, sizeof path, "%s/journal-0000000000000001.log", dir2);
    write_file(path, buf, off);
    world_open(&w, dir2, OPTD_SYNC_INTERVAL);
    size_t gl;
    uint8_t *got = image_of(w.st, "old", &gl);
    ck_assert(gl == wl && memcmp(got, want, wl) == 0);
    free(got);
    world_close(&w, true);

    free(want);
    free(buf);
    free(im0);
    free(im2);
    free(delta);
    free(gim);
    optd_session_release(s);
    optd_session_release(g);
    rm_rf(dir);
    rm_rf(dir2);
}
END_TEST

int main(int argc, char **argv)
{
    (void)argc;
    preload_failio(argv);
    const char *ctl = getenv("FAILIO_CTL");
    snprintf(failio_ctl, sizeof failio_ctl, "%s", ctl ? ctl : "/tmp/optd-failio-ctl-none");
    unlink(failio_ctl);

    Suite *su = suite_create("persist");
    TCase *tc = tcase_create("persist");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, file_names);
    tcase_add_test(tc, round_trip_every_optimizer);
    tcase_add_test(tc, groups_round_trip_and_flags);
    tcase_add_test(tc, dir_lock);
    tcase_add_test(tc, truncated_at_every_offset);
    tcase_add_test(tc, every_bit_flip_and_other_damage);
    tcase_add_test(tc, journal_replay_torn_tail_and_stale_records);
    tcase_add_test(tc, journal_big_and_small_records);
    tcase_add_test(tc, group_commit_many_threads);
    tcase_add_test(tc, batch_one_group_replays_same_bits);
    tcase_add_test(tc, step_records_replay_same_bits);
    tcase_add_test(tc, version_1_journal_loads);
    tcase_add_test(tc, rounds_survive_a_crash_and_a_snapshot);
    tcase_add_test(tc, write_failures_sync_always);
    tcase_add_test(tc, write_failures_sync_interval);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(failio_ctl);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
