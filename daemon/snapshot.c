/* snapshot.c: encode and decode one session image in snapshot format 1.
 *
 * All integers and floats are little-endian; floats are IEEE 754 bit
 * patterns, so values round-trip bit-exactly.  Layout: docs/persistence.md. */
#include "snapshot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

/* ---- writer ------------------------------------------------------------------- */

typedef optd_wbuf_t wbuf_t;
typedef optd_rbuf_t rbuf_t;

/* Room reserved up front beyond the arrays and the history: the metadata,
 * labels and sections of a usual session (the writer grows past it). */
#define ENCODE_SLACK 1024

/* An array of n values of dtype in little-endian order. */
static void w_array(wbuf_t *w, optd_dtype_t dtype, const void *v, size_t n)
{
    optd_w_array(w, v, n, optd_dtype_size(dtype));
}

/* Hyperparameters: a count, then name, type and two f64 values each. */
static void w_hparams(wbuf_t *w, const optd_optim_desc_t *d, const optd_hparams_t *hp)
{
    optd_w_u16(w, (unsigned)d->n_hparams);
    for (size_t i = 0; i < d->n_hparams; i++) {
        const optd_hparam_desc_t *h = &d->hparams[i];
        const char *field = (const char *)hp + h->offset;
        double v[2] = {0, 0};
        if (h->type == OPTD_HP_BOOL)
            v[0] = *(const bool *)field ? 1.0 : 0.0;
        else if (h->type == OPTD_HP_PAIR)
            memcpy(v, field, sizeof v);
        else
            memcpy(v, field, sizeof v[0]);
        optd_w_str(w, h->name);
        optd_w_u8(w, (unsigned)h->type);
        optd_w_f64(w, v[0]);
        optd_w_f64(w, v[1]);
    }
}

/* The groups section's payload (OPTD_SNAP_SEC_GROUPS): a u32 count, then
 * per group its size, its own state and its hyperparameters.  An image
 * whose state lacks the groups' own state writes what a new group holds. */
static void w_groups(wbuf_t *w, const optd_session_image_t *img)
{
    const optd_session_config_t *cfg = &img->cfg;
    const optd_optim_desc_t *d = optd_optim_desc(cfg->kind);
    optd_w_u32(w, (uint32_t)cfg->n_groups);
    for (size_t g = 0; g < cfg->n_groups; g++) {
        bool have = img->st.n_groups == cfg->n_groups;
        optd_w_u64(w, cfg->groups[g].size);
        optd_w_f64(w, have ? img->st.groups[g].mu_product : img->st.mu_product);
        optd_w_u8(w, have && img->st.groups[g].momentum_started ? 1 : 0);
        w_hparams(w, d, &cfg->groups[g].hp);
    }
}

/* The rounds section's payload (OPTD_SNAP_SEC_ROUNDS). */
static void w_rounds(wbuf_t *w, const optd_session_image_t *img)
{
    const optd_aggregate_t *a = &img->cfg.aggregate;
    optd_w_u32(w, a->workers);
    optd_w_u8(w, (unsigned)a->reduce);
    optd_w_u64(w, a->max_staleness);
    const optd_worker_steps_t *ws = &img->worker_steps;
    optd_w_u32(w, (uint32_t)ws->n);
    for (size_t i = 0; i < ws->n; i++) {
        optd_w_str(w, ws->v[i].worker);
        optd_w_u64(w, ws->v[i].step);
    }
    uint32_t n = 0;
    for (size_t i = 0; i < img->n_history; i++)
        n += img->history[i].contributions > 0;
    optd_w_u32(w, n);
    for (size_t i = 0; i < img->n_history; i++)
        if (img->history[i].contributions > 0) {
            optd_w_u64(w, img->history[i].step);
            optd_w_u32(w, img->history[i].contributions);
        }
}

static bool has_rounds(const optd_session_image_t *img)
{
    if (img->cfg.aggregate.workers || img->worker_steps.n)
        return true;
    for (size_t i = 0; i < img->n_history; i++)
        if (img->history[i].contributions)
            return true;
    return false;
}

/* How many history entries carry a rows step's row count (section 4). */
static size_t rows_entries(const optd_session_image_t *img)
{
    size_t n = 0;
    for (size_t i = 0; i < img->n_history; i++)
        n += img->history[i].rows > 0;
    return n;
}

/* Whether img needs the table section: a row size, or rows steps. */
static bool has_table(const optd_session_image_t *img)
{
    return optd_session_row_size(&img->cfg) > 1 || rows_entries(img) > 0;
}

/* How many tagged sections img writes (0: no OPTD_SNAP_F_SECTIONS). */
static unsigned count_sections(const optd_session_image_t *img)
{
    return (img->loss.has ? 1u : 0u) + (img->cfg.n_groups > 0 ? 1u : 0u) +
           (has_rounds(img) ? 1u : 0u) + (has_table(img) ? 1u : 0u);
}

/* The header: magic, version, flags and a body length patched in by
 * w_finish. */
static void w_header(wbuf_t *w, unsigned n_sections, uint32_t flags)
{
    optd_w_bytes(w, OPTD_SNAP_MAGIC, OPTD_SNAP_MAGIC_LEN);
    optd_w_u32(w, OPTD_SNAP_VERSION);
    optd_w_u32(w, flags | (n_sections ? OPTD_SNAP_F_SECTIONS : 0));
    optd_w_u64(w, 0); /* body length, filled in by w_finish */
}

/* The metadata: lsn, name, optimizer, dtype, hyperparameters, schedule,
 * clipping, ttl, times, size, step, mu_product and the buffer mask. */
static void w_meta(wbuf_t *w, const optd_session_image_t *img, uint64_t lsn)
{
    const optd_session_config_t *cfg = &img->cfg;
    const optd_optim_desc_t *d = optd_optim_desc(cfg->kind);
    optd_w_u64(w, lsn);
    optd_w_str(w, img->name);
    optd_w_str(w, d->name);
    optd_w_u8(w, cfg->dtype == OPTD_FLOAT32 ? 0 : 1);
    optd_w_u8(w, cfg->has_schedule ? 1 : 0);
    w_hparams(w, d, &cfg->hp);
    const optd_schedule_t *sc = &cfg->schedule;
    optd_w_u8(w, (unsigned)sc->type);
    optd_w_i64(w, sc->step_size);
    optd_w_f64(w, sc->gamma);
    optd_w_i64(w, sc->t_max);
    optd_w_f64(w, sc->eta_min);
    optd_w_i64(w, sc->warmup_steps);
    optd_w_f64(w, cfg->max_grad_norm);
    optd_w_i64(w, cfg->ttl_seconds);
    optd_w_i64(w, img->created_ms);
    optd_w_i64(w, img->updated_ms);
    optd_w_u64(w, img->size);
    optd_w_u64(w, img->st.step);
    optd_w_f64(w, img->st.mu_product);
    uint32_t mask = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (img->st.buf[b])
            mask |= 1u << b;
    optd_w_u32(w, mask);
}

/* The labels, then the history (OPTD_SNAP_HISTORY_ENTRY bytes each). */
static void w_labels_history(wbuf_t *w, const optd_session_image_t *img)
{
    const optd_session_config_t *cfg = &img->cfg;
    optd_w_u16(w, (unsigned)cfg->n_labels);
    for (size_t i = 0; i < cfg->n_labels; i++) {
        optd_w_str(w, cfg->labels[i].key);
        optd_w_str(w, cfg->labels[i].value);
    }
    optd_w_u32(w, (uint32_t)img->n_history);
    for (size_t i = 0; i < img->n_history; i++) {
        const optd_history_entry_t *h = &img->history[i];
        optd_w_u64(w, h->step);
        optd_w_f64(w, h->lr);
        optd_w_f64(w, h->grad_norm);
        optd_w_f64(w, h->loss);
        optd_w_u8(w, h->has_loss ? 1 : 0);
        optd_w_i64(w, h->time_ms);
    }
}

/* The parameters, then each state buffer present, in buffer order. */
static void w_state(wbuf_t *w, const optd_session_image_t *img)
{
    w_array(w, img->cfg.dtype, img->params, img->size);
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (img->st.buf[b])
            w_array(w, img->cfg.dtype, img->st.buf[b], img->size);
}

/* The tagged sections, in tag order, each only when img has something
 * for it (n_sections of them). */
static void w_sections(wbuf_t *w, const optd_session_image_t *img, unsigned n_sections)
{
    if (n_sections)
        optd_w_u16(w, n_sections);
    if (img->loss.has) {
        optd_w_u16(w, OPTD_SNAP_SEC_LOSS);
        optd_w_u32(w, OPTD_SNAP_SEC_LOSS_LEN);
        optd_w_u8(w, 1);
        optd_w_f64(w, img->loss.last);
        optd_w_u64(w, img->loss.last_step);
        optd_w_f64(w, img->loss.best);
        optd_w_u64(w, img->loss.best_step);
    }
    if (img->cfg.n_groups > 0) {
        optd_w_u16(w, OPTD_SNAP_SEC_GROUPS);
        size_t at = optd_w_hole32(w);
        w_groups(w, img);
        optd_w_patch_len32(w, at);
    }
    if (has_rounds(img)) {
        optd_w_u16(w, OPTD_SNAP_SEC_ROUNDS);
        size_t at = optd_w_hole32(w);
        w_rounds(w, img);
        optd_w_patch_len32(w, at);
    }
    if (has_table(img)) {
        size_t n = rows_entries(img);
        optd_w_u16(w, OPTD_SNAP_SEC_TABLE);
        optd_w_u32(w, (uint32_t)(OPTD_SNAP_TABLE_FIXED + OPTD_SNAP_TABLE_ENTRY * n));
        optd_w_u64(w, optd_session_row_size(&img->cfg));
        optd_w_u32(w, (uint32_t)n);
        for (size_t i = 0; i < img->n_history; i++)
            if (img->history[i].rows > 0) {
                optd_w_u32(w, (uint32_t)i);
                optd_w_u64(w, img->history[i].rows);
            }
    }
}

/* The body length into the header, then the CRC-32 of everything. */
static void w_finish(wbuf_t *w)
{
    if (w->oom)
        return;
    optd_le_put64(w->p + OPTD_SNAP_BODY_LEN_AT, w->len - OPTD_SNAP_HEADER);
    optd_w_u32(w, optd_crc32(0, w->p, w->len));
}

/* A snapshot of img, or with config only its configuration (no
 * history, parameters or buffers). */
static int encode(const optd_session_image_t *img, uint64_t lsn, bool config, uint8_t **out, size_t *len,
                  optd_err_t *err)
{
    *out = NULL;
    *len = 0;
    size_t esz = optd_dtype_size(img->cfg.dtype);
    unsigned nbufs = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        nbufs += img->st.buf[b] != NULL;
    optd_session_image_t head;
    if (config) { /* the sections' per-entry parts (table) follow the history: none */
        head = *img;
        head.n_history = 0;
        img = &head;
    }
    wbuf_t w = {0};
    optd_w_reserve(&w, ENCODE_SLACK + (config ? 0 : img->size * esz * (1 + nbufs)) +
                           img->n_history * OPTD_SNAP_HISTORY_ENTRY);
    unsigned n_sections = count_sections(img);
    w_header(&w, n_sections, config ? OPTD_SNAP_F_CONFIG : 0);
    w_meta(&w, img, lsn);
    w_labels_history(&w, img);
    if (!config)
        w_state(&w, img);
    w_sections(&w, img, n_sections);
    w_finish(&w);
    if (w.oom) {
        free(w.p);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory encoding session '%s'", img->name);
    }
    *out = w.p;
    *len = w.len;
    return 0;
}

int optd_snapshot_encode(const optd_session_image_t *img, uint64_t lsn, uint8_t **out,
                         size_t *len, optd_err_t *err)
{
    return encode(img, lsn, false, out, len, err);
}

int optd_snapshot_encode_config(const optd_session_image_t *img, uint8_t **out, size_t *len,
                                optd_err_t *err)
{
    return encode(img, 0, true, out, len, err);
}

/* ---- reader ---------------------------------------------------------------------- */

/* n values of dtype into a new malloc'd array; NULL when short or oom. */
static void *r_array(rbuf_t *r, optd_dtype_t dtype, size_t n, bool *oom)
{
    return optd_r_array(r, n, optd_dtype_size(dtype), oom);
}


/* Reads what w_hparams wrote onto hp: NULL, or why the bytes are wrong. */
static const char *r_hparams(rbuf_t *r, optd_optim_kind_t kind, optd_hparams_t *hp)
{
    unsigned nhp = (unsigned)optd_r_u(r, 2);
    for (unsigned i = 0; i < nhp && !r->bad; i++) {
        char hname[64];
        if (!optd_r_str_into(r, hname, sizeof hname))
            break;
        unsigned type = (unsigned)optd_r_u(r, 1);
        double v0 = optd_r_f64(r), v1 = optd_r_f64(r);
        const optd_hparam_desc_t *h = optd_hparam_find(kind, hname);
        if (!h || (unsigned)h->type != type)
            return "unknown hyperparameter";
        char *field = (char *)hp + h->offset;
        if (h->type == OPTD_HP_BOOL) {
            if (v0 != 0.0 && v0 != 1.0)
                return "malformed boolean hyperparameter";
            *(bool *)field = v0 == 1.0;
        } else if (h->type == OPTD_HP_PAIR) {
            double v[2] = {v0, v1};
            memcpy(field, v, sizeof v);
        } else {
            memcpy(field, &v0, sizeof v0);
        }
    }
    return NULL;
}

/* The groups section's payload into img's config and state: NULL, or why
 * the bytes are wrong (*oom on an allocation failure). */
static const char *r_groups(rbuf_t *r, optd_session_image_t *img, bool *oom)
{
    optd_session_config_t *cfg = &img->cfg;
    uint32_t n = (uint32_t)optd_r_u(r, 4);
    if (r->bad || n < 1 || n > OPTD_GROUPS_MAX || cfg->groups)
        return "malformed groups";
    cfg->groups = calloc(n, sizeof *cfg->groups);
    img->st.groups = calloc(n, sizeof *img->st.groups);
    if (!cfg->groups || !img->st.groups) {
        *oom = true;
        return "out of memory";
    }
    cfg->n_groups = img->st.n_groups = n;
    for (uint32_t g = 0; g < n; g++) {
        cfg->groups[g].size = (size_t)optd_r_u(r, 8);
        img->st.groups[g].mu_product = optd_r_f64(r);
        unsigned started = (unsigned)optd_r_u(r, 1);
        if (started > 1)
            return "malformed groups";
        img->st.groups[g].momentum_started = started == 1;
        optd_hparams_default(cfg->kind, &cfg->groups[g].hp);
        const char *why = r_hparams(r, cfg->kind, &cfg->groups[g].hp);
        if (why)
            return why;
        if (r->bad)
            return "malformed groups";
    }
    optd_err_t gerr;
    if (optd_groups_validate(cfg->kind, cfg->groups, cfg->n_groups, img->size, &gerr) != 0)
        return "invalid groups";
    for (uint32_t g = 0; g < n; g++)
        if (!isfinite(img->st.groups[g].mu_product) ||
            (img->st.groups[g].momentum_started && !img->st.buf[OPTD_BUF_MOMENTUM_BUFFER]))
            return "malformed group state";
    return NULL;
}

/* The loss summary section's payload (OPTD_SNAP_SEC_LOSS) into img. */
static const char *r_loss(rbuf_t *r, optd_session_image_t *img)
{
    optd_loss_summary_t *ls = &img->loss;
    ls->has = optd_r_u(r, 1) == 1;
    ls->last = optd_r_f64(r);
    ls->last_step = optd_r_u(r, 8);
    ls->best = optd_r_f64(r);
    ls->best_step = optd_r_u(r, 8);
    if (!ls->has || !isfinite(ls->last) || !isfinite(ls->best) || ls->last < ls->best ||
        ls->last_step > img->st.step || ls->best_step > img->st.step)
        return "malformed loss summary";
    return NULL;
}

/* The rounds section's payload into img: NULL, or why the bytes are wrong. */
static const char *r_rounds(rbuf_t *r, optd_session_image_t *img, bool *oom)
{
    optd_aggregate_t *a = &img->cfg.aggregate;
    a->workers = (uint32_t)optd_r_u(r, 4);
    a->reduce = (optd_reduce_t)optd_r_u(r, 1);
    a->max_staleness = optd_r_u(r, 8);
    if (r->bad || (a->workers && optd_aggregate_validate(a, NULL)))
        return "malformed rounds";
    uint32_t n = (uint32_t)optd_r_u(r, 4);
    optd_err_t e;
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        char name[OPTD_WORKER_NAME_MAX + 1];
        if (!optd_r_str_into(r, name, sizeof name))
            return "malformed rounds";
        uint64_t step = optd_r_u(r, 8);
        if (optd_worker_steps_set(&img->worker_steps, name, step, SIZE_MAX, &e)) {
            *oom = true;
            return "out of memory";
        }
    }
    uint32_t h = (uint32_t)optd_r_u(r, 4);
    for (uint32_t i = 0; i < h && !r->bad; i++) {
        uint64_t step = optd_r_u(r, 8);
        uint32_t k = (uint32_t)optd_r_u(r, 4);
        for (size_t j = 0; j < img->n_history; j++)
            if (img->history[j].step == step)
                img->history[j].contributions = k;
    }
    return r->bad ? "malformed rounds" : NULL;
}

/* The table section's payload (OPTD_SNAP_SEC_TABLE) into img. */
static const char *r_table(rbuf_t *r, optd_session_image_t *img)
{
    uint64_t row_size = optd_r_u(r, 8);
    uint32_t n = (uint32_t)optd_r_u(r, 4);
    if (r->bad || row_size < 1 || row_size > img->size || img->size % row_size != 0 ||
        n > img->n_history)
        return "malformed table section";
    img->cfg.row_size = (size_t)row_size;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (uint32_t)optd_r_u(r, 4);
        uint64_t rows = optd_r_u(r, 8);
        if (r->bad || i >= img->n_history || rows == 0)
            return "malformed table section";
        img->history[i].rows = rows;
    }
    return NULL;
}

/* The tagged sections (OPTD_SNAP_F_SECTIONS) into img: NULL, or why they
 * are refused (*oom on an allocation failure). */
static const char *read_sections(rbuf_t *r, optd_session_image_t *img, bool *oom)
{
    unsigned n = (unsigned)optd_r_u(r, 2);
    for (unsigned i = 0; i < n && !r->bad; i++) {
        unsigned tag = (unsigned)optd_r_u(r, 2);
        uint32_t len = (uint32_t)optd_r_u(r, 4);
        if (r->bad || len > r->len - r->off)
            break;
        size_t start = r->off;
        const char *why;
        if (tag == OPTD_SNAP_SEC_LOSS)
            why = r_loss(r, img);
        else if (tag == OPTD_SNAP_SEC_GROUPS)
            why = r_groups(r, img, oom);
        else if (tag == OPTD_SNAP_SEC_ROUNDS)
            why = r_rounds(r, img, oom);
        else if (tag == OPTD_SNAP_SEC_TABLE)
            why = r_table(r, img);
        else
            return "unknown section (written by a newer optd?)";
        if (why)
            return why;
        if (r->off - start != len)
            return tag == OPTD_SNAP_SEC_LOSS     ? "malformed loss summary"
                   : tag == OPTD_SNAP_SEC_ROUNDS ? "malformed rounds"
                   : tag == OPTD_SNAP_SEC_TABLE  ? "malformed table section"
                                                 : "malformed groups";
    }
    return r->bad ? "malformed sections" : NULL;
}

static int corrupt(optd_session_image_t *img, optd_err_t *err, const char *why)
{
    optd_session_image_free(img);
    memset(img, 0, sizeof *img);
    return optd_err_set(err, OPTD_ECORRUPT, "%s", why);
}

/* The frame around the body: magic, version, flags, body length against
 * the bytes present, and the CRC-32.  0 with *flags and *end (where the
 * body ends and the checksum begins), or OPTD_ECORRUPT with the reason. */
static int check_frame(const uint8_t *buf, size_t len, uint32_t *flags, size_t *end,
                       optd_err_t *err)
{
    if (len < OPTD_SNAP_MAGIC_LEN)
        return optd_err_set(err, OPTD_ECORRUPT, "%s",
                            len == 0 ? "empty file" : "truncated (no complete header)");
    if (memcmp(buf, OPTD_SNAP_MAGIC, OPTD_SNAP_MAGIC_LEN) != 0)
        return optd_err_set(err, OPTD_ECORRUPT, "wrong magic (not an optd snapshot)");
    if (len < OPTD_SNAP_HEADER + OPTD_SNAP_TRAILER)
        return optd_err_set(err, OPTD_ECORRUPT, "truncated (no complete header)");
    rbuf_t r = {.p = buf, .len = len, .off = OPTD_SNAP_MAGIC_LEN};
    uint32_t version = (uint32_t)optd_r_u(&r, 4);
    if (version != OPTD_SNAP_VERSION)
        return optd_err_set(err, OPTD_ECORRUPT, "unknown format version %u (this optd reads %u)",
                            version, OPTD_SNAP_VERSION);
    *flags = (uint32_t)optd_r_u(&r, 4);
    uint64_t body = optd_r_u(&r, 8);
    if (body > len - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER)
        return optd_err_set(err, OPTD_ECORRUPT, "truncated (shorter than its header says)");
    if (body < len - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER)
        return optd_err_set(err, OPTD_ECORRUPT, "trailing garbage after the checksum");
    *end = OPTD_SNAP_HEADER + (size_t)body;
    if (optd_crc32(0, buf, *end) != optd_le_get32(buf + *end))
        return optd_err_set(err, OPTD_ECORRUPT, "bad checksum");
    if (*flags & ~(OPTD_SNAP_F_SECTIONS | OPTD_SNAP_F_CONFIG))
        return optd_err_set(err, OPTD_ECORRUPT, "unknown flags");
    return 0;
}

/* The metadata fields that size what follows them. */
typedef struct meta {
    uint64_t size, step;
    double mu_product;
    uint32_t mask; /* state buffers present */
} meta_t;

/* The schedule and the numbers after it, up to the buffer mask. */
static const char *r_schedule_and_sizes(rbuf_t *r, optd_session_image_t *img, meta_t *m)
{
    optd_session_config_t *cfg = &img->cfg;
    optd_schedule_t *sc = &cfg->schedule;
    unsigned stype = (unsigned)optd_r_u(r, 1);
    if (stype > OPTD_SCHED_COSINE)
        return "unknown schedule type";
    sc->type = (optd_sched_type_t)stype;
    sc->step_size = (int64_t)optd_r_u(r, 8);
    sc->gamma = optd_r_f64(r);
    sc->t_max = (int64_t)optd_r_u(r, 8);
    sc->eta_min = optd_r_f64(r);
    sc->warmup_steps = (int64_t)optd_r_u(r, 8);
    cfg->max_grad_norm = optd_r_f64(r);
    cfg->ttl_seconds = (int64_t)optd_r_u(r, 8);
    img->created_ms = (int64_t)optd_r_u(r, 8);
    img->updated_ms = (int64_t)optd_r_u(r, 8);
    m->size = optd_r_u(r, 8);
    m->step = optd_r_u(r, 8);
    m->mu_product = optd_r_f64(r);
    m->mask = (uint32_t)optd_r_u(r, 4);
    if (r->bad)
        return "malformed metadata";
    if (m->mask & ~optd_optim_desc(cfg->kind)->bufs)
        return "state buffer the optimizer does not keep";
    if (m->size == 0 || m->size > SIZE_MAX / 8)
        return "bad size";
    return NULL;
}

/* Room for an optimizer's name: longer than any (a longer one is refused
 * as malformed). */
#define OPTIM_NAME_SIZE 32

/* What w_meta wrote: into img's name and config, *lsn and m. */
static const char *r_meta(rbuf_t *r, optd_session_image_t *img, uint64_t *lsn, meta_t *m)
{
    *lsn = optd_r_u(r, 8);
    if (!optd_r_str_into(r, img->name, sizeof img->name))
        return "malformed session name";
    char kind_name[OPTIM_NAME_SIZE];
    if (!optd_r_str_into(r, kind_name, sizeof kind_name))
        return "malformed optimizer name";
    optd_session_config_t *cfg = &img->cfg;
    if (optd_optim_lookup(kind_name, &cfg->kind, NULL) != 0)
        return "unknown optimizer";
    unsigned dt = (unsigned)optd_r_u(r, 1);
    if (dt > 1)
        return "unknown dtype";
    cfg->dtype = dt == 0 ? OPTD_FLOAT32 : OPTD_FLOAT64;
    unsigned sflags = (unsigned)optd_r_u(r, 1);
    if (sflags > 1)
        return "malformed schedule flag";
    cfg->has_schedule = sflags == 1;
    optd_hparams_default(cfg->kind, &cfg->hp);
    const char *why = r_hparams(r, cfg->kind, &cfg->hp);
    return why ? why : r_schedule_and_sizes(r, img, m);
}

/* The labels into cfg: NULL, or why (*oom on an allocation failure). */
static const char *r_labels(rbuf_t *r, optd_session_config_t *cfg, bool *oom)
{
    unsigned n = (unsigned)optd_r_u(r, 2);
    if (n > OPTD_LABELS_MAX)
        return "too many labels";
    if (n > 0) {
        cfg->labels = calloc(n, sizeof *cfg->labels);
        if (!cfg->labels) {
            *oom = true;
            return "out of memory";
        }
    }
    for (unsigned i = 0; i < n && !r->bad; i++) {
        char *k = optd_r_str(r, OPTD_LABEL_KEY_MAX, oom);
        char *v = k ? optd_r_str(r, OPTD_LABEL_VALUE_MAX, oom) : NULL;
        if (!k || !v) {
            free(k);
            break;
        }
        cfg->labels[i].key = k;
        cfg->labels[i].value = v;
        cfg->n_labels = i + 1;
    }
    return *oom ? "out of memory" : r->bad ? "malformed labels" : NULL;
}

/* The history (OPTD_SNAP_HISTORY_ENTRY bytes an entry, steps rising). */
static const char *r_history(rbuf_t *r, optd_session_image_t *img, bool *oom)
{
    uint32_t nh = (uint32_t)optd_r_u(r, 4);
    if (r->bad || nh > optd_r_left(r) / OPTD_SNAP_HISTORY_ENTRY)
        return "malformed history";
    if (nh > 0) {
        img->history = calloc((size_t)nh, sizeof *img->history);
        if (!img->history) {
            *oom = true;
            return "out of memory";
        }
        img->n_history = nh;
    }
    for (uint32_t i = 0; i < nh; i++) {
        optd_history_entry_t *h = &img->history[i];
        h->step = optd_r_u(r, 8);
        h->lr = optd_r_f64(r);
        h->grad_norm = optd_r_f64(r);
        h->loss = optd_r_f64(r);
        unsigned hl = (unsigned)optd_r_u(r, 1);
        h->has_loss = hl == 1;
        h->time_ms = (int64_t)optd_r_u(r, 8);
        h->rows = 0; /* a rows step's count comes in the table section */
        if (hl > 1 || (i > 0 && h->step <= img->history[i - 1].step))
            return "malformed history";
    }
    return NULL;
}

/* The parameters and the state buffers m->mask names. */
static const char *r_state(rbuf_t *r, optd_session_image_t *img, const meta_t *m, bool *oom)
{
    optd_session_config_t *cfg = &img->cfg;
    img->size = (size_t)m->size;
    img->params = r_array(r, cfg->dtype, img->size, oom);
    if (!img->params)
        return *oom ? "out of memory" : "malformed parameters";
    img->st.kind = cfg->kind;
    img->st.dtype = cfg->dtype;
    img->st.size = img->size;
    img->st.step = m->step;
    img->st.mu_product = m->mu_product;
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (!(m->mask & (1u << b)))
            continue;
        img->st.buf[b] = r_array(r, cfg->dtype, img->size, oom);
        if (!img->st.buf[b])
            return *oom ? "out of memory" : "malformed state buffer";
    }
    return NULL;
}

/* The whole image once read: nothing left over, a valid name and
 * configuration, a finite mu_product.  NULL, or why (in buf when it
 * carries the validator's sentence). */
static const char *check_image(const rbuf_t *r, const optd_session_image_t *img, const meta_t *m,
                               char *buf, size_t cap)
{
    if (r->off != r->len)
        return "unexpected bytes after the state";
    if (!optd_session_name_valid(img->name))
        return "invalid session name";
    optd_err_t verr;
    if (optd_session_config_validate(&img->cfg, &verr) != 0) {
        snprintf(buf, cap, "invalid configuration: %s", verr.msg);
        return buf;
    }
    if (!isfinite(m->mu_product))
        return "non-finite mu_product";
    return NULL;
}

/* A snapshot (config false) or a configuration (config true; see
 * optd_snapshot_decode_config); either refuses the other. */
static int decode(const uint8_t *buf, size_t len, bool config, optd_session_image_t *img, uint64_t *lsn,
                  optd_err_t *err)
{
    memset(img, 0, sizeof *img);
    *lsn = 0;
    uint32_t flags = 0;
    size_t end = 0;
    int rc = check_frame(buf, len, &flags, &end, err);
    if (rc)
        return rc;
    if (!(flags & OPTD_SNAP_F_CONFIG) != !config)
        return optd_err_set(err, OPTD_ECORRUPT, "%s",
                            config ? "not a configuration record" : "a configuration record, not a snapshot");
    /* From here on the bytes are what was written; anything wrong means a
     * writer bug or a deliberate forgery, and is refused the same way.
     * Each step reads its part and says why it refuses it, if it does. */
    rbuf_t r = {.p = buf, .len = end, .off = OPTD_SNAP_HEADER};
    bool oom = false;
    meta_t m = {0};
    char why_buf[OPTD_ERR_MSG_MAX + 32];
    const char *why = r_meta(&r, img, lsn, &m);
    if (!why)
        why = r_labels(&r, &img->cfg, &oom);
    if (!why)
        why = r_history(&r, img, &oom);
    if (!why && config && img->n_history)
        why = "a configuration record with history entries";
    if (!why && !config)
        why = r_state(&r, img, &m, &oom);
    if (!why && config) { /* what r_state sets but the arrays */
        img->size = (size_t)m.size;
        img->st.kind = img->cfg.kind;
        img->st.dtype = img->cfg.dtype;
        img->st.size = img->size;
        img->st.step = m.step;
        img->st.mu_product = m.mu_product;
    }
    if (!why && (flags & OPTD_SNAP_F_SECTIONS))
        why = read_sections(&r, img, &oom);
    if (!why)
        why = check_image(&r, img, &m, why_buf, sizeof why_buf);
    if (oom) {
        optd_session_image_free(img);
        memset(img, 0, sizeof *img);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory decoding a snapshot");
    }
    return why ? corrupt(img, err, why) : 0;
}

int optd_snapshot_decode(const uint8_t *buf, size_t len, optd_session_image_t *img, uint64_t *lsn,
                         optd_err_t *err)
{
    return decode(buf, len, false, img, lsn, err);
}

int optd_snapshot_decode_config(const uint8_t *buf, size_t len, optd_session_image_t *img,
                                optd_err_t *err)
{
    uint64_t lsn;
    return decode(buf, len, true, img, &lsn, err);
}

/* ---- file names ------------------------------------------------------------------ */

void optd_snapshot_file_name(const char *name, char *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    size_t n = strnlen(name, OPTD_NAME_MAX);
    char *o = out;
    memcpy(o, OPTD_SNAP_FILE_PREFIX, sizeof OPTD_SNAP_FILE_PREFIX - 1);
    o += sizeof OPTD_SNAP_FILE_PREFIX - 1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | (uint8_t)name[i];
        bits += 8;
        while (bits >= 5) {
            *o++ = alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        *o++ = alphabet[(acc << (5 - bits)) & 31];
    memcpy(o, OPTD_SNAP_FILE_SUFFIX, sizeof OPTD_SNAP_FILE_SUFFIX);
}
