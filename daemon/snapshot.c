/* snapshot.c: encode and decode one session image in snapshot format 1.
 *
 * All integers and floats are little-endian; floats are IEEE 754 bit
 * patterns, so values round-trip bit-exactly.  Layout: docs/persistence.md. */
#include "snapshot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- writer ------------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf_t;

static void w_reserve(wbuf_t *w, size_t more)
{
    if (w->oom || w->len + more <= w->cap)
        return;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + more)
        cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return;
    }
    w->p = p;
    w->cap = cap;
}

static void w_bytes(wbuf_t *w, const void *src, size_t n)
{
    w_reserve(w, n);
    if (w->oom || n == 0)
        return;
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void w_u(wbuf_t *w, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, (size_t)bytes);
}

static void w_u8(wbuf_t *w, unsigned v) { w_u(w, v, 1); }
static void w_u16(wbuf_t *w, unsigned v) { w_u(w, v, 2); }
static void w_u32(wbuf_t *w, uint32_t v) { w_u(w, v, 4); }
static void w_u64(wbuf_t *w, uint64_t v) { w_u(w, v, 8); }
static void w_i64(wbuf_t *w, int64_t v) { w_u(w, (uint64_t)v, 8); }

static void w_f64(wbuf_t *w, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    w_u64(w, v);
}

static void w_str(wbuf_t *w, const char *s)
{
    size_t n = strlen(s);
    w_u16(w, (unsigned)n);
    w_bytes(w, s, n);
}

/* An array of n values of dtype in little-endian order. */
static void w_array(wbuf_t *w, optd_dtype_t dtype, const void *v, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    w_bytes(w, v, n * optd_dtype_size(dtype));
#else
    size_t esz = optd_dtype_size(dtype);
    for (size_t i = 0; i < n; i++) {
        uint64_t x = 0;
        memcpy(&x, (const uint8_t *)v + i * esz, esz); /* host order */
        w_u(w, esz == 4 ? (uint64_t)(uint32_t)x : x, (int)esz);
    }
#endif
}

/* Hyperparameters: a count, then name, type and two f64 values each. */
static void w_hparams(wbuf_t *w, const optd_optim_desc_t *d, const optd_hparams_t *hp)
{
    w_u16(w, (unsigned)d->n_hparams);
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
        w_str(w, h->name);
        w_u8(w, (unsigned)h->type);
        w_f64(w, v[0]);
        w_f64(w, v[1]);
    }
}

/* The groups section's payload (OPTD_SNAP_SEC_GROUPS): a u32 count, then
 * per group its size, its own state and its hyperparameters.  An image
 * whose state lacks the groups' own state writes what a new group holds. */
static void w_groups(wbuf_t *w, const optd_session_image_t *img)
{
    const optd_session_config_t *cfg = &img->cfg;
    const optd_optim_desc_t *d = optd_optim_desc(cfg->kind);
    w_u32(w, (uint32_t)cfg->n_groups);
    for (size_t g = 0; g < cfg->n_groups; g++) {
        bool have = img->st.n_groups == cfg->n_groups;
        w_u64(w, cfg->groups[g].size);
        w_f64(w, have ? img->st.groups[g].mu_product : img->st.mu_product);
        w_u8(w, have && img->st.groups[g].momentum_started ? 1 : 0);
        w_hparams(w, d, &cfg->groups[g].hp);
    }
}

/* The rounds section's payload (OPTD_SNAP_SEC_ROUNDS). */
static void w_rounds(wbuf_t *w, const optd_session_image_t *img)
{
    const optd_aggregate_t *a = &img->cfg.aggregate;
    w_u32(w, a->workers);
    w_u8(w, (unsigned)a->reduce);
    w_u64(w, a->max_staleness);
    const optd_worker_steps_t *ws = &img->worker_steps;
    w_u32(w, (uint32_t)ws->n);
    for (size_t i = 0; i < ws->n; i++) {
        w_str(w, ws->v[i].worker);
        w_u64(w, ws->v[i].step);
    }
    uint32_t n = 0;
    for (size_t i = 0; i < img->n_history; i++)
        n += img->history[i].contributions > 0;
    w_u32(w, n);
    for (size_t i = 0; i < img->n_history; i++)
        if (img->history[i].contributions > 0) {
            w_u64(w, img->history[i].step);
            w_u32(w, img->history[i].contributions);
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

static void w_put_u32_at(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void w_put_u64_at(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int optd_snapshot_encode(const optd_session_image_t *img, uint64_t lsn, uint8_t **out,
                         size_t *len, optd_err_t *err)
{
    *out = NULL;
    *len = 0;
    const optd_session_config_t *cfg = &img->cfg;
    const optd_optim_desc_t *d = optd_optim_desc(cfg->kind);
    size_t esz = optd_dtype_size(cfg->dtype);
    unsigned nbufs = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        nbufs += img->st.buf[b] != NULL;

    wbuf_t w = {0};
    w_reserve(&w, 1024 + img->size * esz * (1 + nbufs) + img->n_history * 41);
    bool rounds = has_rounds(img);
    size_t n_rows_entries = 0;
    for (size_t i = 0; i < img->n_history; i++)
        n_rows_entries += img->history[i].rows > 0;
    bool table = optd_session_row_size(cfg) > 1 || n_rows_entries > 0;
    unsigned n_sections = (img->loss.has ? 1 : 0) + (cfg->n_groups > 0 ? 1 : 0) + (rounds ? 1 : 0) +
                          (table ? 1 : 0);
    w_bytes(&w, OPTD_SNAP_MAGIC, 8);
    w_u32(&w, OPTD_SNAP_VERSION);
    w_u32(&w, n_sections ? OPTD_SNAP_F_SECTIONS : 0); /* flags */
    w_u64(&w, 0);   /* body length, filled in below */

    w_u64(&w, lsn);
    w_str(&w, img->name);
    w_str(&w, d->name);
    w_u8(&w, cfg->dtype == OPTD_FLOAT32 ? 0 : 1);
    w_u8(&w, cfg->has_schedule ? 1 : 0);
    w_hparams(&w, d, &cfg->hp);
    const optd_schedule_t *sc = &cfg->schedule;
    w_u8(&w, (unsigned)sc->type);
    w_i64(&w, sc->step_size);
    w_f64(&w, sc->gamma);
    w_i64(&w, sc->t_max);
    w_f64(&w, sc->eta_min);
    w_i64(&w, sc->warmup_steps);
    w_f64(&w, cfg->max_grad_norm);
    w_i64(&w, cfg->ttl_seconds);
    w_i64(&w, img->created_ms);
    w_i64(&w, img->updated_ms);
    w_u64(&w, img->size);
    w_u64(&w, img->st.step);
    w_f64(&w, img->st.mu_product);
    uint32_t mask = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (img->st.buf[b])
            mask |= 1u << b;
    w_u32(&w, mask);
    w_u16(&w, (unsigned)cfg->n_labels);
    for (size_t i = 0; i < cfg->n_labels; i++) {
        w_str(&w, cfg->labels[i].key);
        w_str(&w, cfg->labels[i].value);
    }
    w_u32(&w, (uint32_t)img->n_history);
    for (size_t i = 0; i < img->n_history; i++) {
        const optd_history_entry_t *h = &img->history[i];
        w_u64(&w, h->step);
        w_f64(&w, h->lr);
        w_f64(&w, h->grad_norm);
        w_f64(&w, h->loss);
        w_u8(&w, h->has_loss ? 1 : 0);
        w_i64(&w, h->time_ms);
    }
    w_array(&w, cfg->dtype, img->params, img->size);
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (img->st.buf[b])
            w_array(&w, cfg->dtype, img->st.buf[b], img->size);
    if (n_sections)
        w_u16(&w, n_sections);
    if (img->loss.has) {
        w_u16(&w, OPTD_SNAP_SEC_LOSS);
        w_u32(&w, 33);
        w_u8(&w, 1);
        w_f64(&w, img->loss.last);
        w_u64(&w, img->loss.last_step);
        w_f64(&w, img->loss.best);
        w_u64(&w, img->loss.best_step);
    }
    if (cfg->n_groups > 0) {
        w_u16(&w, OPTD_SNAP_SEC_GROUPS);
        size_t at = w.len;
        w_u32(&w, 0); /* length, filled in below */
        w_groups(&w, img);
        if (!w.oom)
            w_put_u32_at(w.p + at, (uint32_t)(w.len - at - 4));
    }
    if (rounds) {
        w_u16(&w, OPTD_SNAP_SEC_ROUNDS);
        size_t at = w.len;
        w_u32(&w, 0); /* length, filled in below */
        w_rounds(&w, img);
        if (!w.oom)
            w_put_u32_at(w.p + at, (uint32_t)(w.len - at - 4));
    }
    if (table) {
        w_u16(&w, OPTD_SNAP_SEC_TABLE);
        w_u32(&w, (uint32_t)(8 + 4 + 12 * n_rows_entries));
        w_u64(&w, optd_session_row_size(cfg));
        w_u32(&w, (uint32_t)n_rows_entries);
        for (size_t i = 0; i < img->n_history; i++)
            if (img->history[i].rows > 0) {
                w_u32(&w, (uint32_t)i);
                w_u64(&w, img->history[i].rows);
            }
    }

    if (w.oom) {
        free(w.p);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory encoding session '%s'", img->name);
    }
    w_put_u64_at(w.p + 16, w.len - OPTD_SNAP_HEADER);
    uint32_t crc = (uint32_t)crc32(0L, w.p, (uInt)0);
    /* crc32 takes uInt lengths: feed large buffers in pieces. */
    for (size_t off = 0; off < w.len;) {
        size_t n = w.len - off > (1u << 30) ? (1u << 30) : w.len - off;
        crc = (uint32_t)crc32(crc, w.p + off, (uInt)n);
        off += n;
    }
    w_u32(&w, crc);
    if (w.oom) {
        free(w.p);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory encoding session '%s'", img->name);
    }
    *out = w.p;
    *len = w.len;
    return 0;
}

/* ---- reader ---------------------------------------------------------------------- */

typedef struct rbuf {
    const uint8_t *p;
    size_t len, off;
    bool bad;
} rbuf_t;

static const uint8_t *r_take(rbuf_t *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint64_t r_u(rbuf_t *r, int bytes)
{
    const uint8_t *p = r_take(r, (size_t)bytes);
    uint64_t v = 0;
    if (p)
        for (int i = 0; i < bytes; i++)
            v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static double r_f64(rbuf_t *r)
{
    uint64_t v = r_u(r, 8);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* A string of at most max bytes into a malloc'd NUL-terminated copy, or
 * NULL (r->bad set when malformed, *oom when allocation failed). */
static char *r_str(rbuf_t *r, size_t max, bool *oom)
{
    size_t n = (size_t)r_u(r, 2);
    if (n > max)
        r->bad = true;
    const uint8_t *p = r_take(r, n);
    if (!p)
        return NULL;
    if (memchr(p, 0, n)) {
        r->bad = true;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        *oom = true;
        r->bad = true;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static bool r_str_into(rbuf_t *r, char *out, size_t cap)
{
    size_t n = (size_t)r_u(r, 2);
    const uint8_t *p = n < cap ? r_take(r, n) : NULL;
    if (!p || memchr(p, 0, n)) {
        r->bad = true;
        return false;
    }
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

/* n values of dtype into a new malloc'd array; NULL when short or oom. */
static void *r_array(rbuf_t *r, optd_dtype_t dtype, size_t n, bool *oom)
{
    size_t esz = optd_dtype_size(dtype);
    if (n > (r->len - r->off) / esz) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r_take(r, n * esz);
    void *v = p ? malloc(n * esz) : NULL;
    if (p && !v) {
        *oom = true;
        r->bad = true;
        return NULL;
    }
    if (!v)
        return NULL;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(v, p, n * esz);
#else
    for (size_t i = 0; i < n; i++) {
        uint64_t x = 0;
        for (size_t k = 0; k < esz; k++)
            x |= (uint64_t)p[i * esz + k] << (8 * k);
        if (esz == 4) {
            uint32_t y = (uint32_t)x;
            memcpy((uint8_t *)v + i * 4, &y, 4);
        } else {
            memcpy((uint8_t *)v + i * 8, &x, 8);
        }
    }
#endif
    return v;
}

/* Reads what w_hparams wrote onto hp: NULL, or why the bytes are wrong. */
static const char *r_hparams(rbuf_t *r, optd_optim_kind_t kind, optd_hparams_t *hp)
{
    unsigned nhp = (unsigned)r_u(r, 2);
    for (unsigned i = 0; i < nhp && !r->bad; i++) {
        char hname[64];
        if (!r_str_into(r, hname, sizeof hname))
            break;
        unsigned type = (unsigned)r_u(r, 1);
        double v0 = r_f64(r), v1 = r_f64(r);
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
    uint32_t n = (uint32_t)r_u(r, 4);
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
        cfg->groups[g].size = (size_t)r_u(r, 8);
        img->st.groups[g].mu_product = r_f64(r);
        unsigned started = (unsigned)r_u(r, 1);
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
    ls->has = r_u(r, 1) == 1;
    ls->last = r_f64(r);
    ls->last_step = r_u(r, 8);
    ls->best = r_f64(r);
    ls->best_step = r_u(r, 8);
    if (!ls->has || !isfinite(ls->last) || !isfinite(ls->best) || ls->last < ls->best ||
        ls->last_step > img->st.step || ls->best_step > img->st.step)
        return "malformed loss summary";
    return NULL;
}

/* The rounds section's payload into img: NULL, or why the bytes are wrong. */
static const char *r_rounds(rbuf_t *r, optd_session_image_t *img, bool *oom)
{
    optd_aggregate_t *a = &img->cfg.aggregate;
    a->workers = (uint32_t)r_u(r, 4);
    a->reduce = (optd_reduce_t)r_u(r, 1);
    a->max_staleness = r_u(r, 8);
    if (r->bad || (a->workers && optd_aggregate_validate(a, NULL)))
        return "malformed rounds";
    uint32_t n = (uint32_t)r_u(r, 4);
    optd_err_t e;
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        char name[OPTD_WORKER_NAME_MAX + 1];
        if (!r_str_into(r, name, sizeof name))
            return "malformed rounds";
        uint64_t step = r_u(r, 8);
        if (optd_worker_steps_set(&img->worker_steps, name, step, SIZE_MAX, &e)) {
            *oom = true;
            return "out of memory";
        }
    }
    uint32_t h = (uint32_t)r_u(r, 4);
    for (uint32_t i = 0; i < h && !r->bad; i++) {
        uint64_t step = r_u(r, 8);
        uint32_t k = (uint32_t)r_u(r, 4);
        for (size_t j = 0; j < img->n_history; j++)
            if (img->history[j].step == step)
                img->history[j].contributions = k;
    }
    return r->bad ? "malformed rounds" : NULL;
}

/* The table section's payload (OPTD_SNAP_SEC_TABLE) into img. */
static const char *r_table(rbuf_t *r, optd_session_image_t *img)
{
    uint64_t row_size = r_u(r, 8);
    uint32_t n = (uint32_t)r_u(r, 4);
    if (r->bad || row_size < 1 || row_size > img->size || img->size % row_size != 0 ||
        n > img->n_history)
        return "malformed table section";
    img->cfg.row_size = (size_t)row_size;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (uint32_t)r_u(r, 4);
        uint64_t rows = r_u(r, 8);
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
    unsigned n = (unsigned)r_u(r, 2);
    for (unsigned i = 0; i < n && !r->bad; i++) {
        unsigned tag = (unsigned)r_u(r, 2);
        uint32_t len = (uint32_t)r_u(r, 4);
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

int optd_snapshot_decode(const uint8_t *buf, size_t len, optd_session_image_t *img, uint64_t *lsn,
                         optd_err_t *err)
{
    memset(img, 0, sizeof *img);
    *lsn = 0;
    if (len < 8)
        return corrupt(img, err, len == 0 ? "empty file" : "truncated (no complete header)");
    if (memcmp(buf, OPTD_SNAP_MAGIC, 8) != 0)
        return corrupt(img, err, "wrong magic (not an optd snapshot)");
    if (len < OPTD_SNAP_HEADER + OPTD_SNAP_TRAILER)
        return corrupt(img, err, "truncated (no complete header)");
    rbuf_t r = {.p = buf, .len = len, .off = 8};
    uint32_t version = (uint32_t)r_u(&r, 4);
    if (version != OPTD_SNAP_VERSION) {
        optd_err_set(err, OPTD_ECORRUPT, "unknown format version %u (this optd reads %u)",
                     version, OPTD_SNAP_VERSION);
        return OPTD_ECORRUPT;
    }
    uint32_t flags = (uint32_t)r_u(&r, 4);
    uint64_t body = r_u(&r, 8);
    if (body > len - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER)
        return corrupt(img, err, "truncated (shorter than its header says)");
    if (body < len - OPTD_SNAP_HEADER - OPTD_SNAP_TRAILER)
        return corrupt(img, err, "trailing garbage after the checksum");
    size_t end = OPTD_SNAP_HEADER + (size_t)body;
    uint32_t crc = (uint32_t)crc32(0L, NULL, 0);
    for (size_t off = 0; off < end;) {
        size_t n = end - off > (1u << 30) ? (1u << 30) : end - off;
        crc = (uint32_t)crc32(crc, buf + off, (uInt)n);
        off += n;
    }
    uint32_t want = (uint32_t)buf[end] | (uint32_t)buf[end + 1] << 8 |
                    (uint32_t)buf[end + 2] << 16 | (uint32_t)buf[end + 3] << 24;
    if (crc != want)
        return corrupt(img, err, "bad checksum");
    if (flags & ~OPTD_SNAP_F_SECTIONS)
        return corrupt(img, err, "unknown flags");

    /* From here on the bytes are what was written; anything wrong means a
     * writer bug or a deliberate forgery, and is refused the same way. */
    r.len = end;
    bool oom = false;
    *lsn = r_u(&r, 8);
    if (!r_str_into(&r, img->name, sizeof img->name))
        return corrupt(img, err, "malformed session name");
    char kind_name[32];
    if (!r_str_into(&r, kind_name, sizeof kind_name))
        return corrupt(img, err, "malformed optimizer name");
    optd_session_config_t *cfg = &img->cfg;
    if (optd_optim_lookup(kind_name, &cfg->kind, NULL) != 0)
        return corrupt(img, err, "unknown optimizer");
    unsigned dt = (unsigned)r_u(&r, 1);
    if (dt > 1)
        return corrupt(img, err, "unknown dtype");
    cfg->dtype = dt == 0 ? OPTD_FLOAT32 : OPTD_FLOAT64;
    unsigned sflags = (unsigned)r_u(&r, 1);
    if (sflags > 1)
        return corrupt(img, err, "malformed schedule flag");
    cfg->has_schedule = sflags == 1;
    optd_hparams_default(cfg->kind, &cfg->hp);
    const char *why = r_hparams(&r, cfg->kind, &cfg->hp);
    if (why)
        return corrupt(img, err, why);
    optd_schedule_t *sc = &cfg->schedule;
    unsigned stype = (unsigned)r_u(&r, 1);
    if (stype > OPTD_SCHED_COSINE)
        return corrupt(img, err, "unknown schedule type");
    sc->type = (optd_sched_type_t)stype;
    sc->step_size = (int64_t)r_u(&r, 8);
    sc->gamma = r_f64(&r);
    sc->t_max = (int64_t)r_u(&r, 8);
    sc->eta_min = r_f64(&r);
    sc->warmup_steps = (int64_t)r_u(&r, 8);
    cfg->max_grad_norm = r_f64(&r);
    cfg->ttl_seconds = (int64_t)r_u(&r, 8);
    img->created_ms = (int64_t)r_u(&r, 8);
    img->updated_ms = (int64_t)r_u(&r, 8);
    uint64_t size = r_u(&r, 8);
    uint64_t step = r_u(&r, 8);
    double mu_product = r_f64(&r);
    uint32_t mask = (uint32_t)r_u(&r, 4);
    if (r.bad)
        return corrupt(img, err, "malformed metadata");
    const optd_optim_desc_t *d = optd_optim_desc(cfg->kind);
    if (mask & ~d->bufs)
        return corrupt(img, err, "state buffer the optimizer does not keep");
    if (size == 0 || size > SIZE_MAX / 8)
        return corrupt(img, err, "bad size");

    unsigned nlabels = (unsigned)r_u(&r, 2);
    if (nlabels > OPTD_LABELS_MAX)
        return corrupt(img, err, "too many labels");
    if (nlabels > 0) {
        cfg->labels = calloc(nlabels, sizeof *cfg->labels);
        if (!cfg->labels)
            goto nomem;
    }
    for (unsigned i = 0; i < nlabels && !r.bad; i++) {
        char *k = r_str(&r, OPTD_LABEL_KEY_MAX, &oom);
        char *v = k ? r_str(&r, OPTD_LABEL_VALUE_MAX, &oom) : NULL;
        if (!k || !v) {
            free(k);
            break;
        }
        cfg->labels[i].key = k;
        cfg->labels[i].value = v;
        cfg->n_labels = i + 1;
    }
    if (oom)
        goto nomem;
    if (r.bad)
        return corrupt(img, err, "malformed labels");

    uint32_t nh = (uint32_t)r_u(&r, 4);
    if (r.bad || nh > (r.len - r.off) / 41)
        return corrupt(img, err, "malformed history");
    if (nh > 0) {
        img->history = calloc((size_t)nh, sizeof *img->history);
        if (!img->history)
            goto nomem;
        img->n_history = nh;
    }
    for (uint32_t i = 0; i < nh; i++) {
        optd_history_entry_t *h = &img->history[i];
        h->step = r_u(&r, 8);
        h->lr = r_f64(&r);
        h->grad_norm = r_f64(&r);
        h->loss = r_f64(&r);
        unsigned hl = (unsigned)r_u(&r, 1);
        h->has_loss = hl == 1;
        h->time_ms = (int64_t)r_u(&r, 8);
        h->rows = 0; /* a rows step's count comes in section tag 4 */
        if (hl > 1 || (i > 0 && h->step <= img->history[i - 1].step))
            return corrupt(img, err, "malformed history");
    }

    img->size = (size_t)size;
    img->params = r_array(&r, cfg->dtype, img->size, &oom);
    if (oom)
        goto nomem;
    if (!img->params)
        return corrupt(img, err, "malformed parameters");
    img->st.kind = cfg->kind;
    img->st.dtype = cfg->dtype;
    img->st.size = img->size;
    img->st.step = step;
    img->st.mu_product = mu_product;
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (!(mask & (1u << b)))
            continue;
        img->st.buf[b] = r_array(&r, cfg->dtype, img->size, &oom);
        if (oom)
            goto nomem;
        if (!img->st.buf[b])
            return corrupt(img, err, "malformed state buffer");
    }
    const char *why_sections = (flags & OPTD_SNAP_F_SECTIONS) ? read_sections(&r, img, &oom) : NULL;
    if (oom)
        goto nomem;
    if (why_sections)
        return corrupt(img, err, why_sections);
    if (r.off != r.len)
        return corrupt(img, err, "unexpected bytes after the state");
    if (!optd_session_name_valid(img->name))
        return corrupt(img, err, "invalid session name");
    optd_err_t verr;
    if (optd_session_config_validate(cfg, &verr) != 0) {
        char why[OPTD_ERR_MSG_MAX + 32];
        snprintf(why, sizeof why, "invalid configuration: %s", verr.msg);
        return corrupt(img, err, why);
    }
    if (!isfinite(mu_product))
        return corrupt(img, err, "non-finite mu_product");
    return 0;
nomem:
    optd_session_image_free(img);
    memset(img, 0, sizeof *img);
    return optd_err_set(err, OPTD_ENOMEM, "out of memory decoding a snapshot");
}

/* ---- file names ------------------------------------------------------------------ */

void optd_snapshot_file_name(const char *name, char *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    size_t n = strnlen(name, OPTD_NAME_MAX);
    char *o = out;
    *o++ = 's';
    *o++ = '-';
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
    memcpy(o, ".snap", 6);
}
