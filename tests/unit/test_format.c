/* test_format.c: the on-disk formats, byte for byte.
 *
 * The snapshot and journal encoders are compared with golden copies
 * (tests/unit/golden/, made by the encoders of optd 1.1 before they were
 * refactored onto daemon/bytes.c): a change to either format, deliberate or
 * not, fails here and has to come with a new format version and new golden
 * files.  Old data directories must keep loading, so every golden image is
 * also decoded and encoded again.
 *
 * OPTD_GOLDEN_WRITE=1 writes the golden files instead of comparing (only
 * for a deliberate format change). */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "journal.h"
#include "session_internal.h"
#include "snapshot.h"

#ifndef GOLDEN_DIR
#define GOLDEN_DIR "tests/unit/golden"
#endif

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    ck_assert(b != NULL);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Compares buf with golden file name (or writes it, OPTD_GOLDEN_WRITE=1). */
static void golden(const char *name, const uint8_t *buf, size_t len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", GOLDEN_DIR, name);
    if (getenv("OPTD_GOLDEN_WRITE")) {
        FILE *f = fopen(path, "wb");
        ck_assert_msg(f != NULL, "cannot write %s", path);
        ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
        fclose(f);
        return;
    }
    size_t glen;
    uint8_t *g = slurp(path, &glen);
    ck_assert_msg(glen == len, "%s: %zu bytes, golden copy has %zu", name, len, glen);
    for (size_t i = 0; i < len; i++)
        ck_assert_msg(buf[i] == g[i], "%s: byte %zu is %02x, golden copy has %02x", name, i,
                      buf[i], g[i]);
    free(g);
}

/* A session with every part of format 1 in use: labels, schedule, clipping,
 * state buffers, parameter groups, loss summary, history with losses. */
static optd_session_t *rich(void)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = OPTD_NADAM, .dtype = OPTD_FLOAT64};
    optd_hparams_default(cfg.kind, &cfg.hp);
    cfg.hp.weight_decay = 0.01;
    cfg.has_schedule = true;
    cfg.schedule = (optd_schedule_t){.type = OPTD_SCHED_COSINE, .t_max = 100, .eta_min = 1e-5,
                                     .warmup_steps = 3};
    cfg.max_grad_norm = 1.5;
    cfg.ttl_seconds = 3600;
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "study", "lr-sweep", &err), 0);
    ck_assert_int_eq(optd_session_config_add_label(&cfg, "trial", "17", &err), 0);
    size_t sizes[2] = {2, 3};
    ck_assert_int_eq(optd_session_config_set_groups(&cfg, sizes, 2, &err), 0);
    cfg.groups[1].hp.lr *= 2;
    cfg.groups[1].hp.momentum_decay = 0.01;
    double p[5] = {0.5, -1.25, 3.0, 1e-300, -7.75};
    optd_session_t *s;
    ck_assert_int_eq(optd_session_create("golden-rich", &cfg, 5, p, 50, &s, &err), 0);
    optd_session_config_free(&cfg);
    for (int i = 0; i < 3; i++) {
        double g[5], loss = 1.0 / (i + 2);
        for (int k = 0; k < 5; k++)
            g[k] = (k - 2) * 0.3 + 0.01 * i;
        optd_step_input_t in = {.grad = g, .loss = i % 2 ? &loss : NULL};
        ck_assert_msg(optd_session_apply(s, NULL, &in, NULL, NULL, &err) == 0, "%s", err.msg);
    }
    return s;
}

/* A table session (row size 2) after a rows step and a dense one. */
static optd_session_t *table(void)
{
    optd_err_t err;
    optd_session_config_t cfg = {.kind = OPTD_SPARSE_ADAM, .dtype = OPTD_FLOAT32, .row_size = 2};
    optd_hparams_default(cfg.kind, &cfg.hp);
    optd_session_t *s;
    ck_assert_int_eq(optd_session_create("golden-table", &cfg, 8, NULL, 10, &s, &err), 0);
    uint64_t rows[3] = {3, 0, 3};
    float g[6] = {1, 2, 3, 4, 5, 6};
    optd_step_input_t in = {.grad = g, .rows = rows, .n_rows = 3};
    ck_assert_int_eq(optd_session_apply(s, NULL, &in, NULL, NULL, &err), 0);
    optd_step_input_t dense = {.grad = (float[8]){0.5f, -1, 0, 0, 2, 0, 0, 1}};
    ck_assert_int_eq(optd_session_apply(s, NULL, &dense, NULL, NULL, &err), 0);
    return s;
}

/* s's image with its clock readings made fixed (they are the only inputs
 * that differ from run to run). */
static void fixed_image(optd_session_t *s, optd_session_image_t *img)
{
    optd_err_t err;
    ck_assert_int_eq(optd_session_copy_image(s, img, &err), 0);
    img->created_ms = 1700000000000;
    img->updated_ms = 1700000000500;
    for (size_t i = 0; i < img->n_history; i++)
        img->history[i].time_ms = 1700000000000 + 100 * (int64_t)i;
}

/* Encodes img, compares with the golden copy, decodes it again and checks
 * that the decoded image encodes to the same bytes. */
static void check_image(const char *name, optd_session_image_t *img, uint64_t lsn)
{
    optd_err_t err;
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(optd_snapshot_encode(img, lsn, &buf, &len, &err), 0);
    golden(name, buf, len);
    optd_session_image_t back;
    uint64_t back_lsn;
    ck_assert_msg(optd_snapshot_decode(buf, len, &back, &back_lsn, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(back_lsn, lsn);
    uint8_t *again;
    size_t again_len;
    ck_assert_int_eq(optd_snapshot_encode(&back, back_lsn, &again, &again_len, &err), 0);
    ck_assert_uint_eq(again_len, len);
    ck_assert_int_eq(memcmp(again, buf, len), 0);
    free(again);
    optd_session_image_free(&back);
    free(buf);
}

START_TEST(test_snapshot_golden_rich)
{
    optd_session_t *s = rich();
    optd_session_image_t img;
    fixed_image(s, &img);
    ck_assert(img.loss.has);
    check_image("snapshot_rich.bin", &img, 0x0102030405060708ull);
    optd_session_image_free(&img);
    optd_session_release(s);
}
END_TEST

START_TEST(test_snapshot_golden_rounds)
{
    optd_session_t *s = rich();
    optd_session_image_t img;
    fixed_image(s, &img);
    optd_err_t err;
    img.cfg.aggregate = (optd_aggregate_t){.workers = 2, .reduce = OPTD_REDUCE_MEAN,
                                           .max_staleness = 4};
    ck_assert_int_eq(optd_worker_steps_set(&img.worker_steps, "w0", 2, SIZE_MAX, &err), 0);
    ck_assert_int_eq(optd_worker_steps_set(&img.worker_steps, "w1", 3, SIZE_MAX, &err), 0);
    img.history[1].contributions = 2;
    img.history[2].contributions = 1;
    check_image("snapshot_rounds.bin", &img, 77);
    optd_session_image_free(&img);
    optd_session_release(s);
}
END_TEST

START_TEST(test_snapshot_golden_table)
{
    optd_session_t *s = table();
    optd_session_image_t img;
    fixed_image(s, &img);
    ck_assert_uint_eq(img.history[0].rows, 3);
    check_image("snapshot_table.bin", &img, 7);
    optd_session_image_free(&img);
    optd_session_release(s);
}
END_TEST

/* The config record a PATCH journals (OPTD_SNAP_F_CONFIG): golden bytes;
 * decoded, the configuration comes back whole with no arrays; and neither
 * decoder takes the other's bytes (a config record is never a snapshot
 * file, nor a snapshot a config record). */
START_TEST(test_config_record_golden)
{
    optd_session_t *s = rich();
    optd_session_image_t img;
    optd_err_t err;
    pthread_mutex_lock(&s->mu);
    ck_assert_int_eq(optd_session_config_image_locked(s, &img, &err), 0);
    pthread_mutex_unlock(&s->mu);
    img.created_ms = 1700000000000;
    img.updated_ms = 1700000000500;
    ck_assert_ptr_null(img.params);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(optd_snapshot_encode_config(&img, &buf, &len, &err), 0);
    golden("config_rich.bin", buf, len);
    ck_assert_uint_lt(len, 1024); /* whatever the session's size (758 bytes here) */

    optd_session_image_t back;
    ck_assert_msg(optd_snapshot_decode_config(buf, len, &back, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(back.name, "golden-rich");
    ck_assert_ptr_null(back.params);
    ck_assert_uint_eq(back.n_history, 0);
    ck_assert_uint_eq(back.size, 5);
    ck_assert_uint_eq(back.st.step, 3);
    ck_assert_uint_eq(back.cfg.n_groups, 2);
    ck_assert(back.cfg.groups[1].hp.lr == img.cfg.groups[1].hp.lr);
    ck_assert(back.cfg.has_schedule && back.cfg.schedule.t_max == 100);
    ck_assert_uint_eq(back.cfg.n_labels, 2);
    ck_assert_int_eq(back.updated_ms, 1700000000500);
    uint8_t *again;
    size_t again_len;
    ck_assert_int_eq(optd_snapshot_encode_config(&back, &again, &again_len, &err), 0);
    ck_assert_uint_eq(again_len, len);
    ck_assert_int_eq(memcmp(again, buf, len), 0);
    free(again);
    optd_session_image_free(&back);

    uint64_t lsn;
    ck_assert_int_eq(optd_snapshot_decode(buf, len, &back, &lsn, &err), OPTD_ECORRUPT);
    ck_assert_str_eq(err.msg, "a configuration record, not a snapshot");
    free(buf);
    optd_session_image_t whole;
    fixed_image(s, &whole);
    ck_assert_int_eq(optd_snapshot_encode(&whole, 0, &buf, &len, &err), 0);
    ck_assert_int_eq(optd_snapshot_decode_config(buf, len, &back, &err), OPTD_ECORRUPT);
    ck_assert_str_eq(err.msg, "not a configuration record");
    free(buf);
    optd_session_image_free(&whole);
    optd_session_image_free(&img);
    optd_session_release(s);
}
END_TEST

static int replay_one(void *arg, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len)
{
    size_t *seen = arg;
    ck_assert_uint_eq(type, *seen == 0 ? OPTD_JREC_STEP : OPTD_JREC_DELETE);
    ck_assert_uint_eq(lsn, 42 + *seen);
    ck_assert_uint_eq(len, *seen == 0 ? 3 + 5 : 6);
    ck_assert_int_eq(memcmp(payload, *seen == 0 ? "hd\x01" "body!" : "\x04\x00" "gone", len), 0);
    (*seen)++;
    return 0;
}

/* A journal file's header and two records: the framing (magic, type, LSN,
 * length, CRC-32) byte for byte, and replayed back. */
START_TEST(test_journal_golden)
{
    char dir[] = "/tmp/optd-format-XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dirfd, 0);
    optd_logger_t log = {0};
    optd_err_t err;
    optd_journal_t *j;
    ck_assert_msg(optd_journal_open(dirfd, 5, 42, 0, &log, &j, &err) == 0, "%s", err.msg);
    uint64_t lsn;
    ck_assert_int_eq(optd_journal_append(j, OPTD_JREC_STEP, (const uint8_t *)"hd\x01", 3,
                                         (const uint8_t *)"body!", 5, &lsn, &err), 0);
    ck_assert_uint_eq(lsn, 42);
    ck_assert_int_eq(optd_journal_append(j, OPTD_JREC_DELETE, NULL, 0,
                                         (const uint8_t *)"\x04\x00" "gone", 6, &lsn, &err), 0);
    optd_journal_close(j);
    char name[64], path[128];
    optd_journal_file_name(5, name);
    ck_assert_str_eq(name, "journal-0000000000000005.log");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    uint8_t *buf = slurp(path, &len);
    size_t used = OPTD_JOURNAL_HEADER + (OPTD_JREC_HEADER + 8 + 4) + (OPTD_JREC_HEADER + 6 + 4);
    ck_assert_uint_ge(len, used);
    for (size_t i = used; i < len; i++)
        ck_assert_uint_eq(buf[i], 0); /* the zeros written ahead */
    golden("journal_two_records.bin", buf, used);
    size_t seen = 0;
    ck_assert_int_eq(optd_journal_replay(dirfd, name, &log, replay_one, &seen, NULL, &err), 0);
    ck_assert_uint_eq(seen, 2);
    free(buf);
    unlinkat(dirfd, name, 0);
    close(dirfd);
    rmdir(dir);
}
END_TEST

/* bytes.c: the codec's rules that every format relies on. */
START_TEST(test_bytes_codec)
{
    uint8_t b[8];
    ck_assert_ptr_eq(optd_le_put(b, 0x0102030405060708ull, 8), b + 8);
    ck_assert_uint_eq(b[0], 0x08);
    ck_assert_uint_eq(b[7], 0x01);
    ck_assert_uint_eq(optd_le_get64(b), 0x0102030405060708ull);
    ck_assert_uint_eq(optd_le_get(b, 3), 0x060708u);
    /* zlib's CRC-32 check value, continued in pieces, and n == 0. */
    ck_assert_uint_eq(optd_crc32(0, "123456789", 9), 0xCBF43926u);
    ck_assert_uint_eq(optd_crc32(optd_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
    ck_assert_uint_eq(optd_crc32(0x1234, NULL, 0), 0x1234);

    optd_wbuf_t w = {0};
    optd_w_u16(&w, 0xBEEF);
    size_t at = optd_w_hole32(&w);
    optd_w_str(&w, "ab");
    optd_w_f64(&w, -2.5);
    optd_w_patch32(&w, at, 7);
    ck_assert(!w.oom);
    ck_assert_uint_eq(w.len, 2 + 4 + 2 + 2 + 8);

    optd_rbuf_t r = {.p = w.p, .len = w.len};
    ck_assert_uint_eq(optd_r_u(&r, 2), 0xBEEF);
    ck_assert_uint_eq(optd_r_u(&r, 4), 7);
    char s[3];
    ck_assert(optd_r_str_into(&r, s, sizeof s));
    ck_assert_str_eq(s, "ab");
    ck_assert(optd_r_f64(&r) == -2.5);
    ck_assert(!r.bad);
    ck_assert_uint_eq(optd_r_left(&r), 0);
    /* Past the end: bad, and it stays bad (zeros from then on). */
    ck_assert_uint_eq(optd_r_u(&r, 1), 0);
    ck_assert(r.bad);
    r.off = 0;
    ck_assert_uint_eq(optd_r_u(&r, 2), 0);
    /* A string that does not fit its buffer is refused, not cut. */
    optd_rbuf_t r2 = {.p = w.p + 6, .len = 4};
    char tiny[2];
    ck_assert(!optd_r_str_into(&r2, tiny, sizeof tiny));
    ck_assert(r2.bad);
    /* An array longer than the bytes left is refused before any malloc. */
    optd_rbuf_t r3 = {.p = w.p, .len = w.len};
    bool oom = false;
    ck_assert_ptr_null(optd_r_array(&r3, 3, 8, &oom));
    ck_assert(r3.bad && !oom);
    free(w.p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("format");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 120); /* fdatasync on a loaded machine */
    tcase_add_test(tc, test_snapshot_golden_rich);
    tcase_add_test(tc, test_snapshot_golden_rounds);
    tcase_add_test(tc, test_snapshot_golden_table);
    tcase_add_test(tc, test_config_record_golden);
    tcase_add_test(tc, test_journal_golden);
    tcase_add_test(tc, test_bytes_codec);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
