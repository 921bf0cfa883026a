/* test_journal_records.c: the payloads persist.c journals for a step, a
 * rows step and a delete, byte for byte against golden copies
 * (tests/unit/golden/journal_records.bin, made by optd 1.1's persist.c
 * before its records went through daemon/bytes.c).  Session images in the
 * journal are snapshots (test_format.c); everything else in a record is
 * fixed here (the step's time is given), so equal bytes mean an unchanged
 * format.  OPTD_GOLDEN_WRITE=1 writes the golden file instead. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "persist.h"
#include "session_internal.h"
#include "store.h"

#define GOLDEN "tests/unit/golden/journal_records.bin"

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Each non-image record of the journal files in dir, as u32 type, u32
 * payload length, payload, appended to out (*len bytes). */
static uint8_t *collect(const char *dir, size_t *len)
{
    uint8_t *out = NULL;
    *len = 0;
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "journal-", 8) != 0)
            continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        ck_assert_ptr_nonnull(f);
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *b = malloc(n);
        ck_assert_uint_eq(fread(b, 1, n, f), n);
        fclose(f);
        for (size_t off = OPTD_JOURNAL_HEADER; off + OPTD_JREC_HEADER <= n;) {
            if (le(b + off, 4) != OPTD_JREC_MAGIC)
                break; /* the zeros ahead */
            uint32_t type = (uint32_t)le(b + off + 4, 4);
            size_t plen = (size_t)le(b + off + 16, 8);
            if (type != OPTD_JREC_IMAGE) {
                out = realloc(out, *len + 8 + plen);
                ck_assert_ptr_nonnull(out);
                for (int i = 0; i < 4; i++) {
                    out[*len + i] = (uint8_t)(type >> (8 * i));
                    out[*len + 4 + i] = (uint8_t)(plen >> (8 * i));
                }
                memcpy(out + *len + 8, b + off + OPTD_JREC_HEADER, plen);
                *len += 8 + plen;
            }
            off += OPTD_JREC_HEADER + plen + 4;
        }
        free(b);
    }
    closedir(d);
    return out;
}

static void step(optd_store_t *st, optd_session_t *s, optd_step_input_t *in)
{
    optd_err_t err;
    optd_step_ctx_t ctx;
    optd_store_step_ctx(st, &ctx);
    ck_assert_msg(optd_session_apply(s, &ctx, in, NULL, NULL, &err) == 0, "%s", err.msg);
}

START_TEST(test_step_rows_delete_records)
{
    char dir[] = "/tmp/optd-records-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    optd_err_t err;
    optd_store_limits_t lim = {.max_sessions = 10, .max_params = 0, .history = 10};
    optd_store_t *st;
    ck_assert_int_eq(optd_store_new(&lim, &st, &err), 0);
    optd_logger_t log;
    optd_log_init(&log);
    optd_persist_t *p;
    ck_assert_msg(optd_persist_open(dir, OPTD_SYNC_ALWAYS, 1000, st, &log, &p, &err) == 0, "%s",
                  err.msg);
    optd_persist_stats_t stats;
    ck_assert_msg(optd_persist_load(p, &stats, &err) == 0, "%s", err.msg);

    optd_session_config_t cfg = {.kind = OPTD_ADAM, .dtype = OPTD_FLOAT64};
    optd_hparams_default(cfg.kind, &cfg.hp);
    optd_session_t *s;
    double params[3] = {1, -2, 3};
    ck_assert_int_eq(optd_session_create("dense-one", &cfg, 3, params, 10, &s, &err), 0);
    ck_assert_msg(optd_store_insert(st, s, false, NULL, &err) == 0, "%s", err.msg);
    double g[3] = {0.25, -0.5, 1e-3}, loss = 0.75;
    optd_step_input_t in = {.grad = g, .loss = &loss, .time_ms = 1700000000123};
    step(st, s, &in);
    in.loss = NULL;
    in.time_ms = 1700000000456;
    step(st, s, &in);
    optd_session_release(s);

    optd_session_config_t tcfg = {.kind = OPTD_SPARSE_ADAM, .dtype = OPTD_FLOAT32, .row_size = 2};
    optd_hparams_default(tcfg.kind, &tcfg.hp);
    optd_session_t *t;
    ck_assert_int_eq(optd_session_create("table-two", &tcfg, 8, NULL, 10, &t, &err), 0);
    ck_assert_msg(optd_store_insert(st, t, false, NULL, &err) == 0, "%s", err.msg);
    uint64_t rows[3] = {3, 0, 3};
    float vals[6] = {1, 2, 3, 4, 5, 6};
    optd_step_input_t rin = {.grad = vals, .rows = rows, .n_rows = 3, .time_ms = 1700000000789};
    step(st, t, &rin);
    optd_session_release(t);
    ck_assert_msg(optd_store_remove(st, "dense-one", &err) == 0, "%s", err.msg);

    size_t written;
    optd_persist_stop(p, 0, &written, &err);
    optd_persist_close(p);
    optd_store_free(st);
    size_t len;
    uint8_t *got = collect(dir, &len);
    if (getenv("OPTD_GOLDEN_WRITE")) {
        FILE *f = fopen(GOLDEN, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(got, 1, len, f), len);
        fclose(f);
    } else {
        FILE *f = fopen(GOLDEN, "rb");
        ck_assert_msg(f != NULL, "cannot open %s", GOLDEN);
        uint8_t *want = malloc(len + 1);
        size_t wl = fread(want, 1, len + 1, f);
        fclose(f);
        ck_assert_uint_eq(wl, len);
        for (size_t i = 0; i < len; i++)
            ck_assert_msg(got[i] == want[i], "byte %zu is %02x, golden copy has %02x", i, got[i],
                          want[i]);
        free(want);
    }
    free(got);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("journal_records");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 120); /* fdatasync on a loaded machine */
    tcase_add_test(tc, test_step_rows_delete_records);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
