/* rows.c: the sparse rows step (API.md 1.1, Tables; OPTIMIZERS.md, Sparse
 * rows): an update that touches only the rows a gradient lists, as
 * PyTorch's sparse paths do (SparseAdam, Adagrad and SGD on a coalesced
 * COO gradient).
 *
 * Everything here is in proportion to the rows listed: the rows are sorted
 * to find repeats, the touched rows of the parameters and of each state
 * buffer are copied side by side into scratch, one kernel call updates the
 * scratch (so the finiteness of every value written is known before
 * anything of the table changes), and the rows are copied back.  The table
 * itself is never walked. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optd/optim.h"
#include "optim/optimizer.h"

/* "sparse_adam, adagrad (weight_decay 0) or sgd (momentum 0, weight_decay
 * 0)": the optimizers with a sparse rule, the last kind first, each with
 * the options its rule needs. */
static const char *sparse_list(char *buf, size_t cap)
{
    size_t len = 0, n = 0, total = 0;
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++)
        total += optd_optimizer((optd_optim_kind_t)k)->desc.sparse_rows;
    buf[0] = '\0';
    for (int k = OPTD_OPTIM_COUNT - 1; k >= 0; k--) {
        const optd_optimizer_t *o = optd_optimizer((optd_optim_kind_t)k);
        if (!o->desc.sparse_rows)
            continue;
        n++;
        const char *sep = n == 1 ? "" : n == total ? " or " : ", ";
        int w = o->rows_note ? snprintf(buf + len, cap - len, "%s%s (%s)", sep, o->desc.name, o->rows_note)
                             : snprintf(buf + len, cap - len, "%s%s", sep, o->desc.name);
        if (w > 0 && (size_t)w < cap - len)
            len += (size_t)w;
    }
    return buf;
}

int optd_optim_rows_supported(optd_optim_kind_t kind, const optd_hparams_t *hp, size_t n_groups,
                              optd_err_t *err)
{
    if (n_groups > 0)
        return optd_err_set(err, OPTD_EINVAL,
                            "a rows step needs a session without parameter groups");
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    if (!d || !d->sparse_rows) {
        char list[256];
        return optd_err_set(err, OPTD_EINVAL, "%s has no sparse rule: a rows step takes %s",
                            d ? d->name : "this optimizer", sparse_list(list, sizeof list));
    }
    /* The options PyTorch's sparse paths do not have. */
    const optd_optimizer_t *o = optd_optimizer(kind);
    return o->rows_options ? o->rows_options(hp, err) : 0;
}

/* A listed row and where it was listed, sorted by row, then by place. */
typedef struct row_at {
    uint64_t row;
    size_t at;
} row_at_t;

static inline bool row_at_less(row_at_t x, row_at_t y)
{
    return x.row < y.row || (x.row == y.row && x.at < y.at);
}

/* Sorts v[0, n) by row, then place: a quicksort typed for row_at_t (qsort's
 * calls through a comparator and its byte-wise moves of 16-byte elements
 * were most of a 64-row step), insertion below 24 elements.  Every key is
 * distinct (the places are), so no run of equal keys can degrade it; the
 * smaller side recurses, the larger loops, so the depth is O(log n). */
static void rows_sort(row_at_t *v, size_t n)
{
    while (n > 24) {
        size_t mid = n / 2;
        /* the median of the first, middle and last to v[mid] */
        if (row_at_less(v[mid], v[0])) { row_at_t t = v[mid]; v[mid] = v[0]; v[0] = t; }
        if (row_at_less(v[n - 1], v[mid])) {
            row_at_t t = v[mid]; v[mid] = v[n - 1]; v[n - 1] = t;
            if (row_at_less(v[mid], v[0])) { t = v[mid]; v[mid] = v[0]; v[0] = t; }
        }
        row_at_t pivot = v[mid];
        size_t i = 0, j = n - 1;
        for (;;) { /* Hoare: v[0] <= pivot <= v[n - 1] bound both scans */
            while (row_at_less(v[i], pivot))
                i++;
            while (row_at_less(pivot, v[j]))
                j--;
            if (i >= j)
                break;
            row_at_t t = v[i]; v[i] = v[j]; v[j] = t;
            i++;
            j--;
        }
        size_t left = j + 1; /* v[0, left) <= pivot <= v[left, n) */
        if (left < n - left) {
            rows_sort(v, left);
            v += left;
            n -= left;
        } else {
            rows_sort(v + left, n - left);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++) {
        row_at_t x = v[i];
        size_t j = i;
        for (; j > 0 && row_at_less(x, v[j - 1]); j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* dst[i] += src[i] in the dtype, i < n. */
static void add_into(optd_dtype_t dtype, void *dst, const void *src, size_t n)
{
    if (dtype == OPTD_FLOAT32) {
        float *d = dst;
        const float *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = d[i] + s[i];
    } else {
        double *d = dst;
        const double *s = src;
        for (size_t i = 0; i < n; i++)
            d[i] = d[i] + s[i];
    }
}

/* The coalesced gradient: the distinct rows in ascending order (uniq,
 * *n_uniq) and their values (vals, row after row), each the sum of that
 * row's values in the order given.  order, uniq and vals have room for
 * n_rows each. */
static void coalesce(optd_dtype_t dtype, size_t row_size, const uint64_t *rows, size_t n_rows,
                     const void *grad, row_at_t *order, uint64_t *uniq, void *vals, size_t *n_uniq)
{
    size_t rb = row_size * optd_dtype_size(dtype);
    for (size_t i = 0; i < n_rows; i++)
        order[i] = (row_at_t){.row = rows[i], .at = i};
    rows_sort(order, n_rows);
    size_t u = 0;
    for (size_t i = 0; i < n_rows; i++) {
        const char *src = (const char *)grad + order[i].at * rb;
        if (i > 0 && order[i].row == order[i - 1].row) {
            add_into(dtype, (char *)vals + (u - 1) * rb, src, row_size);
            continue;
        }
        uniq[u] = order[i].row;
        memcpy((char *)vals + u * rb, src, rb);
        u++;
    }
    *n_uniq = u;
}

/* The scratch copies of the touched rows: slot k (OPTD_BUF_COUNT: the
 * params) holds n_uniq rows side by side; direction in copies the table's
 * rows in, else copies the scratch back out. */
static void rows_copy(optd_optim_state_t *st, void *params, void *slot[OPTD_BUF_COUNT + 1],
                      const uint64_t *uniq, size_t n_uniq, size_t row_size, bool in)
{
    size_t rb = row_size * optd_dtype_size(st->dtype);
    if (in) {
        /* On a big table every row is a cache (and TLB) miss: asking for
         * them all before the first copy waits for them together rather
         * than one after another. */
        for (int k = 0; k <= OPTD_BUF_COUNT; k++) {
            const char *table = k == OPTD_BUF_COUNT ? params : st->buf[k];
            for (size_t j = 0; slot[k] && j < n_uniq; j++)
                __builtin_prefetch(table + (size_t)uniq[j] * rb);
        }
    }
    for (int k = 0; k <= OPTD_BUF_COUNT; k++) {
        if (!slot[k])
            continue;
        char *table = k == OPTD_BUF_COUNT ? params : st->buf[k];
        for (size_t j = 0; j < n_uniq; j++) {
            char *t = table + (size_t)uniq[j] * rb, *s = (char *)slot[k] + j * rb;
            if (in)
                memcpy(s, t, rb);
            else
                memcpy(t, s, rb);
        }
    }
}

/* The first non-finite value in the scratch, as an OPTD_ENONFINITE naming
 * its place in the table. */
static int refuse_first(const optd_optim_state_t *st, void *const slot[OPTD_BUF_COUNT + 1],
                        const uint64_t *uniq, size_t n, size_t row_size, optd_err_t *err)
{
    for (size_t i = 0; i < n; i++)
        for (int k = OPTD_BUF_COUNT; k >= 0; k--) { /* params first */
            if (!slot[k])
                continue;
            double x = st->dtype == OPTD_FLOAT32 ? (double)((const float *)slot[k])[i]
                                                 : ((const double *)slot[k])[i];
            if (isfinite(x))
                continue;
            size_t index = (size_t)uniq[i / row_size] * row_size + i % row_size;
            const char *what = k == OPTD_BUF_COUNT ? "params" : optd_buf_name((optd_buf_t)k);
            return optd_err_set(err, OPTD_ENONFINITE,
                                "this step would make %s[%zu] %s (an overflow of %s); nothing was "
                                "applied",
                                what, index, isnan(x) ? "NaN" : "infinite",
                                optd_dtype_name(st->dtype));
        }
    return optd_err_set(err, OPTD_ENONFINITE, "this step would make a value non-finite; nothing was applied");
}

/* The bounds after a rows step: rows not touched kept what was known of
 * them, the touched ones hold at most seen. */
static void rows_bounds(optd_optim_state_t *st, const double seen[OPTD_BUF_COUNT + 1])
{
    for (int k = 0; k <= OPTD_BUF_COUNT; k++) {
        if (seen[k] == -1.0 || !(st->bound_known & BIT(k)))
            continue;
        if (seen[k] > st->bound[k])
            st->bound[k] = seen[k];
    }
}

/* Checks the listed rows: 0 or OPTD_EINVAL naming the first bad one. */
static int rows_check(const uint64_t *rows, size_t n_rows, uint64_t n_table, optd_err_t *err)
{
    if (n_rows == 0)
        return optd_err_set(err, OPTD_EINVAL, "rows: a rows step lists at least one row");
    for (size_t i = 0; i < n_rows; i++)
        if (rows[i] >= n_table)
            return optd_err_set(err, OPTD_EINVAL,
                                "rows[%zu] is %llu; the session has %llu rows (0 to %llu)", i,
                                (unsigned long long)rows[i], (unsigned long long)n_table,
                                (unsigned long long)(n_table - 1));
    return 0;
}

int optd_optim_step_rows(optd_optim_state_t *st, const optd_hparams_t *hp,
                         const optd_schedule_t *sched, double max_grad_norm, size_t row_size,
                         void *params, const uint64_t *rows, size_t n_rows, const void *grad,
                         optd_step_info_t *info, optd_err_t *err)
{
    int rc = optd_optim_rows_supported(st->kind, hp, st->n_groups, err);
    if (rc)
        return rc;
    if (row_size == 0 || st->size % row_size != 0)
        return optd_err_set(err, OPTD_EINVAL, "row_size %zu does not divide the size %zu", row_size,
                            st->size);
    if ((rc = rows_check(rows, n_rows, st->size / row_size, err)))
        return rc;
    if (!optd_all_finite(st->dtype, grad, n_rows * row_size))
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient contains NaN or infinite values");
    /* One block per step for all its scratch: the sort's pairs, the
     * distinct rows, their summed values, and the copies of the touched
     * rows of the parameters and of each state buffer (room for n_rows
     * rows each: repeats only make it larger than needed). */
    size_t es = optd_dtype_size(st->dtype), rb = row_size * es;
    /* The buffers the step will have: those held, and those its plan
     * starts (an import at step 0 may leave them all out). */
    unsigned kept = BIT(OPTD_BUF_COUNT) | optd_optim_step_bufs(st->kind, hp);
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (st->buf[b])
            kept |= BIT(b);
    size_t n_slots = (size_t)__builtin_popcount(kept);
    if (n_rows > SIZE_MAX / (sizeof(row_at_t) + sizeof(uint64_t) + (1 + n_slots) * rb))
        return optd_err_set(err, OPTD_ENOMEM, "a gradient of %zu rows does not fit in memory", n_rows);
    /* The 8-byte parts first, so that every part is aligned for its type. */
    char *block = malloc(n_rows * ((1 + n_slots) * rb + sizeof(row_at_t) + sizeof(uint64_t)));
    if (!block)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for the %zu rows of a step", n_rows);
    row_at_t *order = (row_at_t *)block;
    uint64_t *uniq = (uint64_t *)(order + n_rows);
    void *vals = uniq + n_rows;
    char *scratch = (char *)vals + n_rows * rb;
    size_t n_uniq = 0;
    coalesce(st->dtype, row_size, rows, n_rows, grad, order, uniq, vals, &n_uniq);
    size_t n = n_uniq * row_size;
    bool finite = true;
    double sumsq = optd_grad_sumsq(st->dtype, vals, 0, n, &finite);
    void *slot[OPTD_BUF_COUNT + 1] = {0};
    optd_step_plan_t plan;
    if (!finite) {
        /* Finite values whose sum overflows. */
        rc = optd_err_set(err, OPTD_ENONFINITE, "the summed gradient of a repeated row overflows %s",
                          optd_dtype_name(st->dtype));
        goto out;
    }
    if ((rc = optd_optim_plan(st, hp, sched, max_grad_norm, sumsq, &plan, err)))
        goto out;
    plan.rows = true;
    size_t used = 0;
    for (int k = 0; k <= OPTD_BUF_COUNT; k++)
        if (kept & BIT(k))
            slot[k] = scratch + (used++) * n * es;
    rows_copy(st, params, slot, uniq, n_uniq, row_size, true);
    double seen[OPTD_BUF_COUNT + 1];
    optd_optimizer(st->kind)->kernel[st->dtype](&plan, slot, slot[OPTD_BUF_COUNT], vals, n, seen);
    bool ok = true;
    for (int k = 0; k <= OPTD_BUF_COUNT; k++)
        ok &= seen[k] == -1.0 || isfinite(seen[k]);
    if (!ok) {
        optd_optim_abort(st, &plan);
        rc = refuse_first(st, slot, uniq, n, row_size, err);
        goto out;
    }
    rows_copy(st, params, slot, uniq, n_uniq, row_size, false);
    st->step = plan.t;
    rows_bounds(st, seen);
    if (info) {
        info->lr = plan.lr;
        info->grad_norm = plan.grad_norm;
    }
out:
    free(block);
    return rc;
}
