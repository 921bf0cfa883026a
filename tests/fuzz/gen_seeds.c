/* gen_seeds.c: writes the seed corpora of the fuzz targets (make fuzz-seeds).
 *
 *   gen_seeds DIR     writes DIR/step/, DIR/document/, DIR/snapshot/, DIR/load/
 *
 * Realistic seeds come from the daemon itself, built normally: sessions of
 * every optimizer and both dtypes are created and stepped through the real
 * handlers (tests/fuzz/harness.c), then exported (GET .../state, for the
 * document corpus) and encoded with optd_snapshot_encode (for the snapshot
 * corpus).  Timestamps are fixed so the output is the same on every run.
 * Hostile inputs (deep nesting, huge numbers, NaN text, truncation, wrong
 * types) are written alongside as literals.  Only the journal seeds (load/)
 * differ between runs: the daemon writes them with the clock's times. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include "harness.h"
#include "fileio.h"
#include "journal.h"
#include "persist.h"
#include "snapshot.h"

static char root[512];

/* Snapshots kept for the load corpus (see load_seeds). */
static uint8_t *kept[3];
static size_t kept_len[3];

static void put_file(const char *target, const char *name, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        fz_fail("mkdir %s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        fz_fail("writing %s failed", path);
}

static void put_text(const char *target, const char *name, const char *text)
{
    put_file(target, name, text, strlen(text));
}

/* A step seed: the control byte of fuzz_step.c, then the body. */
static void put_step(const char *name, unsigned ctl, const void *body, size_t len)
{
    uint8_t *buf = malloc(len + 1);
    if (!buf)
        fz_fail("out of memory");
    buf[0] = (uint8_t)ctl;
    memcpy(buf + 1, body, len);
    put_file("step", name, buf, len + 1);
    free(buf);
}

static unsigned request(optd_server_t *srv, const char *method, const char *url, const char *body, char **resp)
{
    fz_http_t r = {.method = method, .url = url, .body = (const uint8_t *)body, .body_len = body ? strlen(body) : 0};
    fz_request(srv, &r);
    unsigned status = r.status;
    if (resp)
        *resp = r.resp;
    else
        fz_http_done(&r);
    return status;
}

/* ---- sessions of every optimizer ------------------------------------------------- */

static const struct {
    const char *optimizer;
    const char *hp;
} kinds[] = {
    {"sgd", "{\"lr\":0.1,\"momentum\":0.9,\"dampening\":0,\"nesterov\":true,\"weight_decay\":0.01}"},
    {"adagrad", "{\"lr\":0.1,\"lr_decay\":0.01,\"initial_accumulator_value\":0.1}"},
    {"rmsprop", "{\"lr\":0.01,\"alpha\":0.9,\"momentum\":0.5,\"centered\":true}"},
    {"adam", "{\"lr\":0.01,\"betas\":[0.8,0.99],\"amsgrad\":true}"},
    {"adamw", "{\"lr\":0.01,\"weight_decay\":0.1}"},
    {"adamax", "{\"lr\":0.01}"},
    {"nadam", "{\"lr\":0.01,\"momentum_decay\":0.004}"},
    {"radam", "{\"lr\":0.01}"},
    {"adadelta", "{\"lr\":1.0,\"rho\":0.9}"},
    {"lion", "{\"lr\":0.001,\"betas\":[0.9,0.99]}"},
};

static const char *const schedules[] = {
    "null",
    "{\"type\":\"constant\",\"warmup_steps\":2}",
    "{\"type\":\"step\",\"step_size\":2,\"gamma\":0.5}",
    "{\"type\":\"exponential\",\"gamma\":0.9}",
    "{\"type\":\"cosine\",\"t_max\":10,\"eta_min\":0.001,\"warmup_steps\":1}",
};

/* A session made by create_doc and one step, with fixed times, as the
 * snapshot file `file`. */
static void made_snapshot(optd_server_t *srv, const char *name, const char *create_doc, const char *step_doc,
                          const char *file)
{
    char path[OPTD_NAME_MAX + 32];
    snprintf(path, sizeof path, "/v1/sessions/%s/step", name);
    if (request(srv, "POST", "/v1/sessions", create_doc, NULL) != 201 ||
        request(srv, "POST", path, step_doc, NULL) != 200)
        fz_fail("gen_seeds: could not make the session %s", name);
    optd_session_t *s = optd_store_get(srv->store, name);
    pthread_mutex_lock(&s->mu);
    s->created_ms = 1795867200000;
    s->updated_ms = 1795867260000;
    for (size_t i = 0; i < s->history_len; i++)
        s->history[i].time_ms = 1795867200000 + (int64_t)i * 1000;
    pthread_mutex_unlock(&s->mu);
    optd_session_image_t img;
    optd_err_t err = {0};
    if (optd_session_copy_image(s, &img, &err) != 0)
        fz_fail("gen_seeds: copying %s: %s", name, err.msg);
    optd_session_release(s);
    uint8_t *snap;
    size_t len;
    if (optd_snapshot_encode(&img, 3, &snap, &len, &err) != 0)
        fz_fail("gen_seeds: encoding %s: %s", name, err.msg);
    put_file("snapshot", file, snap, len);
    free(snap);
    optd_session_image_free(&img);
}

/* A session with parameter groups (the snapshot's groups section), and a
 * table stepped by rows (the table section: row_size, the history's rows). */
static void section_snapshots(optd_server_t *srv)
{
    made_snapshot(srv, "grouped",
                  "{\"name\":\"grouped\",\"optimizer\":\"nadam\",\"params\":[0.5,-1.25,3.0],"
                  "\"groups\":[{\"size\":1},{\"size\":2,\"hyperparameters\":{\"momentum_decay\":0.01}}]}",
                  "{\"gradient\":[0.1,-0.2,0.3]}", "groups-nadam.snap");
    made_snapshot(srv, "table",
                  "{\"name\":\"table\",\"optimizer\":\"sparse_adam\",\"params\":[0.5,-1.25,3.0,1,2,3],"
                  "\"row_size\":2,\"dtype\":\"float32\"}",
                  "{\"rows\":[2,0,2],\"gradient\":[0.1,-0.2,0.3,0.4,0.5,0.6]}", "table-sparse_adam.snap");
}

static void sessions(optd_server_t *srv)
{
    size_t nk = sizeof kinds / sizeof kinds[0];
    for (size_t k = 0; k < nk; k++) {
        for (int dt = 0; dt < 2; dt++) {
            const char *dtype = dt ? "float32" : "float64";
            char name[64], url[128], doc[1024];
            snprintf(name, sizeof name, "%s-%s", kinds[k].optimizer, dtype);
            snprintf(doc, sizeof doc,
                     "{\"name\":\"%s\",\"optimizer\":\"%s\",\"dtype\":\"%s\",\"hyperparameters\":%s,"
                     "\"params\":[0.5,-1.25,3.0],\"schedule\":%s,\"max_grad_norm\":%s,"
                     "\"labels\":{\"study\":\"fuzz\",\"trial\":\"%zu\"},\"ttl_seconds\":%s}",
                     name, kinds[k].optimizer, dtype, kinds[k].hp, schedules[(k + (size_t)dt) % 5],
                     dt ? "1.5" : "null", k, dt ? "3600" : "null");
            if (request(srv, "POST", "/v1/sessions", doc, NULL) != 201)
                fz_fail("gen_seeds: could not create %s: %s", name, doc);
            if (dt == 0) {
                char fname[96];
                snprintf(fname, sizeof fname, "create-%s", kinds[k].optimizer);
                put_text("document", fname, doc);
            }
            snprintf(url, sizeof url, "/v1/sessions/%s/step", name);
            static const char *const grads[] = {
                "{\"gradient\":[0.1,-0.2,0.3],\"loss\":2.0}",
                "{\"gradient\":[1e-3,2.5,-4],\"step\":1}",
                "{\"gradient\":[-0.5,0.0,0.75],\"step\":2,\"loss\":0.5}",
            };
            for (int i = 0; i < 3; i++)
                if (request(srv, "POST", url, grads[i], NULL) != 200)
                    fz_fail("gen_seeds: step %d of %s failed", i, name);

            /* Fixed times, so the output does not depend on the clock. */
            optd_session_t *fs = optd_store_get(srv->store, name);
            pthread_mutex_lock(&fs->mu);
            fs->created_ms = 1795867200000;
            fs->updated_ms = 1795867260000;
            for (size_t i = 0; i < fs->history_len; i++)
                fs->history[i].time_ms = 1795867200000 + (int64_t)i * 1000;
            pthread_mutex_unlock(&fs->mu);
            optd_session_release(fs);

            /* The export, as a state document seed. */
            snprintf(url, sizeof url, "/v1/sessions/%s/state", name);
            char *state;
            if (request(srv, "GET", url, NULL, &state) != 200)
                fz_fail("gen_seeds: GET %s failed", url);
            char fname[96];
            snprintf(fname, sizeof fname, "state-%s", name);
            put_text("document", fname, state);
            free(state);

            /* The snapshot, with fixed times. */
            optd_session_t *s = optd_store_get(srv->store, name);
            optd_session_image_t img;
            optd_err_t err = {0};
            if (!s || optd_session_copy_image(s, &img, &err) != 0)
                fz_fail("gen_seeds: copying %s: %s", name, err.msg);
            optd_session_release(s);
            uint8_t *snap;
            size_t len;
            if (optd_snapshot_encode(&img, 7 + k, &snap, &len, &err) != 0)
                fz_fail("gen_seeds: encoding %s: %s", name, err.msg);
            snprintf(fname, sizeof fname, "%s.snap", name);
            put_file("snapshot", fname, snap, len);
            if (k == 3 && dt == 0) {
                /* Damaged copies: truncated, a flipped bit, a future version. */
                put_file("snapshot", "truncated.snap", snap, len / 2);
                snap[len / 3] ^= 0x10;
                put_file("snapshot", "bitflip.snap", snap, len);
                snap[len / 3] ^= 0x10;
                snap[8] = 2;
                put_file("snapshot", "version2.snap", snap, len);
                snap[8] = 1;
            }
            int keep = k == 3 && dt == 0 ? 0 : k == 0 && dt == 1 ? 1 : k == 6 && dt == 0 ? 2 : -1;
            if (keep >= 0) {
                kept[keep] = snap;
                kept_len[keep] = len;
                /* The journal's image records carry LSN 0 inside. */
                snap = NULL;
            }
            free(snap);
            optd_session_image_free(&img);
        }
    }
    section_snapshots(srv);
}

/* ---- step bodies --------------------------------------------------------------- */

static void step_seeds(void)
{
    static const size_t sizes[4] = {1, 2, 3, 5};
    static const char *const nums[5] = {"0.5", "-1.25e-3", "3", "1E+2", "-0.0"};
    char body[512], name[64];
    for (unsigned ctl = 0; ctl < 256; ctl++) {
        /* Every size, dtype, ?return= and optimizer for JSON; binary below. */
        if ((ctl & 8) || ((ctl >> 4) & 3) == 3)
            continue;
        if (ctl % 5 != 0 && ctl >= 8) /* a spread, not all 96 */
            continue;
        size_t n = sizes[ctl & 3], o = 0;
        o += (size_t)snprintf(body + o, sizeof body - o, "{\"gradient\":[");
        for (size_t i = 0; i < n; i++)
            o += (size_t)snprintf(body + o, sizeof body - o, "%s%s", i ? ", " : "", nums[(i + ctl) % 5]);
        snprintf(body + o, sizeof body - o, "]%s}", ctl & 16 ? ",\"step\":0,\"loss\":1.5" : "");
        snprintf(name, sizeof name, "json-%02x", ctl);
        put_step(name, ctl, body, strlen(body));
    }
    /* Gradient last, extra whitespace, escaped key, other members first. */
    const char *b = "{ \"loss\" : 0.25 , \"step\" : 0 ,\n \"gradient\" : [ 1 , 2 , 3 ] }";
    put_step("json-order", 2, b, strlen(b));
    b = "{\"gradi\\u0065nt\":[1,2,3]}";
    put_step("json-escaped-key", 2, b, strlen(b));
    b = "{\"x\":\"\\\"]}\",\"gradient\":[1,2,3]}";
    put_step("json-unknown-field", 2, b, strlen(b));
    /* Rows steps (API.md 1.1, Tables) on sgd, adagrad, and refused on adam. */
    b = "{\"rows\":[0,2,0],\"gradient\":[1,2,3],\"step\":0,\"loss\":0.5}";
    put_step("rows-sgd", 0x42, b, strlen(b));
    b = "{\"rows\":[2],\"gradient\":[-1.5]}";
    put_step("rows-adagrad", 0xc2, b, strlen(b));
    b = "{\"rows\":[1],\"gradient\":[1]}";
    put_step("rows-adam-refused", 0x02, b, strlen(b));

    /* Binary: "expect NUL loss NUL" then raw values. */
    for (unsigned ctl = 8; ctl < 256; ctl += 16 + 5) {
        if (!(ctl & 8))
            continue;
        size_t n = sizes[ctl & 3];
        uint8_t buf[128];
        size_t o = 0;
        if (ctl & 1) {
            memcpy(buf, "0\0" "0.5\0", 6);
            o = 6;
        }
        for (size_t i = 0; i < n; i++) {
            if (ctl & 4) {
                float f = (float)i - 0.5f;
                memcpy(buf + o, &f, 4);
                o += 4;
            } else {
                double d = (double)i * 0.25 - 1.0;
                memcpy(buf + o, &d, 8);
                o += 8;
            }
        }
        snprintf(name, sizeof name, "binary-%02x", ctl);
        put_step(name, ctl, buf, o);
    }

    /* Hostile bodies. */
    static const struct {
        const char *name;
        const char *body;
    } bad[] = {
        {"huge-number", "{\"gradient\":[1e999,2,3]}"},
        {"huge-integer", "{\"gradient\":[123456789012345678901234567890,2,3]}"},
        {"float32-overflow", "{\"gradient\":[3.5e38,2,3]}"},
        {"nan-text", "{\"gradient\":[NaN,2,3]}"},
        {"infinity-text", "{\"gradient\":[Infinity,-Infinity,3]}"},
        {"truncated", "{\"gradient\":[1,2,"},
        {"truncated-number", "{\"gradient\":[1,2,3e"},
        {"wrong-type-string", "{\"gradient\":\"1,2,3\"}"},
        {"wrong-type-object", "{\"gradient\":{\"0\":1}}"},
        {"wrong-type-elements", "{\"gradient\":[true,null,\"3\"]}"},
        {"nested-arrays", "{\"gradient\":[[1],[2],[3]]}"},
        {"top-level-array", "[1,2,3]"},
        {"empty", ""},
        {"step-negative", "{\"gradient\":[1,2,3],\"step\":-1}"},
        {"step-real", "{\"gradient\":[1,2,3],\"step\":0.5}"},
        {"step-huge", "{\"gradient\":[1,2,3],\"step\":18446744073709551616}"},
        {"loss-string", "{\"gradient\":[1,2,3],\"loss\":\"NaN\"}"},
        {"leading-zero", "{\"gradient\":[01,2,3]}"},
        {"plus-sign", "{\"gradient\":[+1,2,3]}"},
        {"bare-dot", "{\"gradient\":[.5,1.,3]}"},
        {"hex", "{\"gradient\":[0x10,2,3]}"},
        {"long-number", "{\"gradient\":[1.00000000000000000000000000000000000000000000000000000000000000000001,2,3]}"},
        {"duplicate-key", "{\"gradient\":[1,2,3],\"gradient\":[4,5,6]}"},
        {"bom", "\xef\xbb\xbf{\"gradient\":[1,2,3]}"},
        {"invalid-utf8", "{\"gradient\":[1,2,3],\"\xff\xfe\":1}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        put_step(bad[i].name, 2, bad[i].body, strlen(bad[i].body));
    /* Deep nesting, past Jansson's depth limit. */
    size_t depth = 5000, o = 0;
    char *deep = malloc(depth * 2 + 32);
    if (!deep)
        fz_fail("out of memory");
    o += (size_t)sprintf(deep, "{\"gradient\":");
    for (size_t i = 0; i < depth; i++)
        deep[o++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[o++] = ']';
    deep[o++] = '}';
    put_step("deep-nesting", 2, deep, o);
    /* Binary: NaN and wrong length. */
    uint8_t nanbody[24];
    double vals[3] = {1.0, 0.0 / 0.0, 2.0};
    memcpy(nanbody, vals, 24);
    put_step("binary-nan", 2 | 8, nanbody, 24);
    put_step("binary-short", 2 | 8, nanbody, 23);
    put_step("binary-bad-headers", 2 | 8, "-1\0inf\0" "12345678abcdefgh01234567", 31);
    free(deep);
}

/* ---- other document seeds ---------------------------------------------------------- */

static void document_seeds(void)
{
    static const struct {
        const char *name;
        const char *body;
    } docs[] = {
        {"create-size", "{\"name\":\"z\",\"optimizer\":\"sgd\",\"size\":4,\"dtype\":\"float32\"}"},
        {"create-table", "{\"name\":\"t\",\"optimizer\":\"sparse_adam\",\"size\":8,\"row_size\":4,"
                         "\"dtype\":\"float32\"}"},
        {"create-groups", "{\"name\":\"g\",\"optimizer\":\"adamw\",\"size\":5,\"hyperparameters\":{\"lr\":0.01},"
                          "\"groups\":[{\"size\":2},{\"size\":3,\"hyperparameters\":{\"weight_decay\":0}}]}"},
        {"patch-groups", "{\"hyperparameters\":{\"lr\":0.5},\"groups\":[{},{\"hyperparameters\":{\"eps\":1e-6}}]}"},
        {"import-groups", "{\"optimizer\":\"nadam\",\"params\":[1,2,3],\"step\":2,\"groups\":[{\"size\":1},"
                          "{\"size\":2,\"hyperparameters\":{\"momentum_decay\":0.01}}],\"state\":{\"exp_avg\":[0,0,0],"
                          "\"exp_avg_sq\":[1,1,1],\"mu_product\":[0.5,0.25]}}"},
        {"fork", "{\"name\":\"f\",\"from\":\"a\",\"hyperparameters\":{\"lr\":0.5},\"labels\":{\"k\":\"v\"}}"},
        {"fork-float32", "{\"name\":\"f\",\"from\":\"b\",\"optimizer\":\"sgd\",\"dtype\":\"float32\"}"},
        {"patch", "{\"hyperparameters\":{\"lr\":0.02,\"betas\":[0.5,0.6]},\"schedule\":{\"type\":\"step\","
                  "\"step_size\":3,\"gamma\":0.1},\"max_grad_norm\":null,\"labels\":{},\"ttl_seconds\":null}"},
        {"patch-sgd", "{\"hyperparameters\":{\"momentum\":0.9,\"nesterov\":true},\"ttl_seconds\":10}"},
        {"import-minimal", "{\"optimizer\":\"adam\",\"params\":[1,2,3],\"step\":5,\"state\":{\"exp_avg\":[0,0,0],"
                           "\"exp_avg_sq\":[1,1,1]}}"},
        {"import-times", "{\"optimizer\":\"nadam\",\"params\":[1],\"created_at\":\"2026-11-28T12:00:00.250Z\","
                         "\"updated_at\":\"2026-11-28T12:00:00+00:00\",\"state\":{\"mu_product\":0.5}}"},
        {"huge-numbers", "{\"name\":\"h\",\"optimizer\":\"adam\",\"params\":[1e308,-1e308],\"hyperparameters\":"
                         "{\"lr\":1e999}}"},
        {"huge-size", "{\"name\":\"h\",\"optimizer\":\"adam\",\"size\":99999999999999999999}"},
        {"nan-text", "{\"name\":\"h\",\"optimizer\":\"adam\",\"params\":[NaN],\"max_grad_norm\":NaN}"},
        {"wrong-types", "{\"name\":7,\"optimizer\":[\"adam\"],\"params\":{},\"labels\":[1],\"ttl_seconds\":\"1\","
                        "\"schedule\":\"cosine\",\"hyperparameters\":{\"amsgrad\":1,\"betas\":0.9}}"},
        {"labels-hostile", "{\"name\":\"l\",\"optimizer\":\"sgd\",\"size\":1,\"labels\":{\"\":\"x\",\"k\":null}}"},
        {"schedule-hostile", "{\"name\":\"s\",\"optimizer\":\"sgd\",\"size\":1,\"schedule\":{\"type\":\"step\","
                             "\"step_size\":9223372036854775807,\"gamma\":1e-300,\"warmup_steps\":-1}}"},
        {"time-hostile", "{\"optimizer\":\"sgd\",\"params\":[1],\"created_at\":\"9999-99-99T99:99:99Z\"}"},
        {"truncated", "{\"name\":\"t\",\"optimizer\":\"adam\",\"params\":[1,2"},
        {"empty-object", "{}"},
        {"not-object", "\"adam\""},
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        put_text("document", docs[i].name, docs[i].body);
    size_t depth = 3000, o = 0;
    char *deep = malloc(depth * 6 + 64);
    if (!deep)
        fz_fail("out of memory");
    o += (size_t)sprintf(deep, "{\"name\":\"d\",\"optimizer\":\"sgd\",\"size\":1,\"labels\":");
    for (size_t i = 0; i < depth; i++)
        o += (size_t)sprintf(deep + o, "{\"a\":");
    deep[o++] = '1';
    for (size_t i = 0; i <= depth; i++)
        deep[o++] = '}';
    put_file("document", "deep-nesting", deep, o);
    free(deep);
}

/* ---- data directories (fuzz_load) ------------------------------------------------ */

typedef struct chunks {
    uint8_t buf[65536];
    size_t len;
} chunks_t;

static void chunk(chunks_t *c, unsigned kind, const uint8_t *b, size_t len)
{
    if (len > 0xffff || c->len + 3 + len > sizeof c->buf)
        fz_fail("gen_seeds: chunk too big");
    c->buf[c->len++] = (uint8_t)kind;
    c->buf[c->len++] = (uint8_t)(len & 0xff);
    c->buf[c->len++] = (uint8_t)(len >> 8);
    memcpy(c->buf + c->len, b, len);
    c->len += len;
}

/* A journal written by the daemon's own --sync always path: sessions
 * created (image records), stepped (step records; j-nadam has parameter
 * groups) and one deleted. */
static void journal_bytes(uint8_t **out, size_t *out_len)
{
    char tmp[] = "/tmp/optd-gen-seeds-XXXXXX";
    if (!mkdtemp(tmp))
        fz_fail("mkdtemp: %s", strerror(errno));
    optd_logger_t log;
    optd_log_init(&log);
    atomic_store(&log.level, OPTD_LOG_ERROR);
    optd_store_limits_t lim = {.max_sessions = 16, .max_params = 0, .history = 16};
    optd_store_t *store;
    optd_persist_t *p;
    optd_persist_stats_t stats;
    optd_err_t err = {0};
    if (optd_store_new(&lim, &store, &err) != 0 ||
        optd_persist_open(tmp, OPTD_SYNC_ALWAYS, 0, store, &log, &p, &err) != 0 ||
        optd_persist_load(p, &stats, &err) != 0)
        fz_fail("gen_seeds: persistence: %s", err.msg);
    static const char *const names[3] = {"j-adam", "j-sgd", "j-nadam"};
    static const char *const opts[3] = {"adam", "sgd", "nadam"};
    for (int i = 0; i < 3; i++) {
        optd_session_config_t cfg = {0};
        if (optd_optim_lookup(opts[i], &cfg.kind, &err) != 0)
            fz_fail("%s", err.msg);
        cfg.dtype = i == 1 ? OPTD_FLOAT32 : OPTD_FLOAT64;
        optd_hparams_default(cfg.kind, &cfg.hp);
        if (i == 2) {
            /* Grouped: its step records replay through the groups' update. */
            size_t sizes[2] = {1, 2};
            if (optd_session_config_set_groups(&cfg, sizes, 2, &err) != 0)
                fz_fail("%s", err.msg);
            cfg.groups[1].hp.momentum_decay = 0.01;
        }
        optd_session_t *s;
        if (optd_session_create(names[i], &cfg, 3, NULL, 16, &s, &err) != 0 ||
            optd_store_insert(store, s, false, NULL, &err) != 0)
            fz_fail("gen_seeds: journal session: %s", err.msg);
        optd_session_config_free(&cfg);
        double g64[3] = {0.5, -0.25, 1.0};
        float g32[3] = {0.5f, -0.25f, 1.0f};
        for (int k = 0; k < 2; k++) {
            uint64_t step;
            double loss = 1.0 / (k + 1);
            optd_step_ctx_t ctx; /* as the step handler runs it: journaled */
            optd_store_step_ctx(store, &ctx);
            optd_step_input_t in = {.grad = i == 1 ? (void *)g32 : (void *)g64, .loss = &loss};
            if (optd_session_apply(s, &ctx, &in, &step, NULL, &err) != 0)
                fz_fail("gen_seeds: journal step: %s", err.msg);
        }
        optd_session_release(s);
    }
    if (optd_store_remove(store, "j-sgd", &err) != 0)
        fz_fail("gen_seeds: journal delete: %s", err.msg);

    int dfd = open(tmp, O_RDONLY | O_DIRECTORY);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    *out = NULL;
    while (d && (e = readdir(d)) != NULL) {
        uint64_t seq;
        if (optd_journal_parse_name(e->d_name, &seq) == 0 &&
            optd_file_read_all(dirfd(d), e->d_name, out, out_len) != 0)
            fz_fail("gen_seeds: reading the journal back");
    }
    if (!*out)
        fz_fail("gen_seeds: --sync always wrote no journal in %s", tmp);
    /* The journal is zero-filled ahead of its records (journal.c): the
     * seed is the records, which fit a chunk. */
    while (*out_len > OPTD_JOURNAL_HEADER && (*out)[*out_len - 1] == 0)
        (*out_len)--;
    optd_persist_close(p);
    optd_store_free(store);
    if (d)
        closedir(d);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fz_fail("gen_seeds: could not remove %s", tmp);
}

static void load_seeds(void)
{
    static chunks_t c;
    uint8_t *jb;
    size_t jlen;
    journal_bytes(&jb, &jlen);

    c.len = 0;
    for (int i = 0; i < 3; i++)
        chunk(&c, 0, kept[i], kept_len[i]);
    put_file("load", "snapshots", c.buf, c.len);

    c.len = 0;
    chunk(&c, 1, jb, jlen);
    put_file("load", "journal", c.buf, c.len);

    c.len = 0;
    chunk(&c, 0, kept[0], kept_len[0]);
    chunk(&c, 1, jb, jlen);
    chunk(&c, 2, kept[1], kept_len[1]);
    chunk(&c, 3, (const uint8_t *)"junk", 4);
    put_file("load", "mixed", c.buf, c.len);

    /* A torn journal tail and a damaged record. */
    c.len = 0;
    chunk(&c, 1, jb, jlen - 7);
    put_file("load", "journal-torn", c.buf, c.len);
    jb[OPTD_JOURNAL_HEADER + 40] ^= 1;
    c.len = 0;
    chunk(&c, 1, jb, jlen);
    put_file("load", "journal-damaged", c.buf, c.len);
    chunk(&c, 5, jb, jlen); /* the same, checksums fixed */
    put_file("load", "journal-fixed", c.buf, c.len);
    free(jb);
    for (int i = 0; i < 3; i++)
        free(kept[i]);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR\n");
        return 2;
    }
    snprintf(root, sizeof root, "%s", argv[1]);
    if (mkdir(root, 0755) != 0 && errno != EEXIST)
        fz_fail("mkdir %s: %s", root, strerror(errno));
    optd_server_t srv;
    fz_server_open(&srv);
    sessions(&srv);
    fz_server_close(&srv);
    step_seeds();
    document_seeds();
    load_seeds();
    return 0;
}
