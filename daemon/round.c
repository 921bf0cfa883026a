/* round.c: the pure parts of a round (round.h): the reduction in a fixed
 * order, the contributions' order, the table of each worker's last applied
 * step and the outcome a round's requests share. */
#include "round.h"

#include <stdlib.h>
#include <string.h>

int optd_aggregate_validate(const optd_aggregate_t *a, optd_err_t *err)
{
    if (a->workers < 1 || a->workers > OPTD_ROUND_WORKERS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "aggregate.workers: must be an integer in 1..%d",
                            OPTD_ROUND_WORKERS_MAX);
    if (a->reduce != OPTD_REDUCE_MEAN && a->reduce != OPTD_REDUCE_SUM)
        return optd_err_set(err, OPTD_EINVAL, "aggregate.reduce: must be \"mean\" or \"sum\"");
    return 0;
}

const char *optd_reduce_name(optd_reduce_t r)
{
    return r == OPTD_REDUCE_SUM ? "sum" : "mean";
}

optd_round_outcome_t *optd_round_outcome_new(void)
{
    optd_round_outcome_t *o = calloc(1, sizeof *o);
    if (o) {
        atomic_init(&o->refs, 1);
        atomic_init(&o->done, false);
    }
    return o;
}

void optd_round_outcome_retain(optd_round_outcome_t *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void optd_round_outcome_release(optd_round_outcome_t *o)
{
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) {
        free(o->params);
        free(o);
    }
}

long optd_round_find(const optd_round_t *r, const char *worker)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->in[i].worker, worker) == 0)
            return (long)i;
    return -1;
}

static int by_worker(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: the bytewise order API.md names. */
    return strcmp(((const optd_contribution_t *)a)->worker, ((const optd_contribution_t *)b)->worker);
}

void optd_round_sort(optd_round_t *r)
{
    qsort(r->in, r->n, sizeof *r->in, by_worker);
}

/* Elements reduced per block: the sums of a block stay in a stack array
 * while each gradient's slice is added, so every gradient is read
 * sequentially and nothing is allocated. */
#define REDUCE_BLOCK 512

/* GCC's -O2 vectorizes only loops whose trip count needs no scalar
 * epilogue (kernels_common.h says the same for the kernels): without this
 * the reduction of 4 x 1M float32 took 15 ms. */
#if defined(__GNUC__) && !defined(__clang__) /* clang (the fuzz build) has no such pragma */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#define REDUCE_LOOPS(T)                                                                            \
    static void first_##T(double *restrict acc, const T *restrict g, size_t m)                     \
    {                                                                                              \
        for (size_t i = 0; i < m; i++)                                                             \
            acc[i] = (double)g[i];                                                                 \
    }                                                                                              \
    static void add_##T(double *restrict acc, const T *restrict g, size_t m)                       \
    {                                                                                              \
        for (size_t i = 0; i < m; i++)                                                             \
            acc[i] += (double)g[i];                                                                \
    }                                                                                              \
    static void store_##T(T *restrict o, double *restrict acc, size_t m, bool mean, double n)      \
    {                                                                                              \
        if (mean)                                                                                  \
            for (size_t i = 0; i < m; i++)                                                         \
                acc[i] /= n;                                                                       \
        for (size_t i = 0; i < m; i++)                                                             \
            o[i] = (T)acc[i];                                                                      \
    }                                                                                              \
    static void reduce_##T(size_t size, const T *const *g, size_t n, bool mean, T *o)              \
    {                                                                                              \
        double acc[REDUCE_BLOCK];                                                                  \
        for (size_t at = 0; at < size; at += REDUCE_BLOCK) {                                       \
            size_t m = size - at < REDUCE_BLOCK ? size - at : REDUCE_BLOCK;                        \
            first_##T(acc, g[0] + at, m);                                                          \
            for (size_t k = 1; k < n; k++)                                                         \
                add_##T(acc, g[k] + at, m);                                                        \
            store_##T(o + at, acc, m, mean, (double)n);                                            \
        }                                                                                          \
    }

REDUCE_LOOPS(float)
REDUCE_LOOPS(double)

void optd_round_reduce(optd_dtype_t dtype, size_t size, const void *const *grads, size_t n,
                       optd_reduce_t reduce, void *out)
{
    bool mean = reduce == OPTD_REDUCE_MEAN;
    /* One gradient: (T)((double)g / 1) is g, bit for bit. */
    if (n == 0 || (n == 1 && out == grads[0]))
        return;
    if (dtype == OPTD_FLOAT32)
        reduce_float(size, (const float *const *)grads, n, mean, out);
    else
        reduce_double(size, (const double *const *)grads, n, mean, out);
}

/* ---- each worker's last applied step ------------------------------------------ */

static size_t lower_bound(const optd_worker_steps_t *ws, const char *worker)
{
    size_t lo = 0, hi = ws->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ws->v[mid].worker, worker) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool optd_worker_steps_get(const optd_worker_steps_t *ws, const char *worker, uint64_t *step)
{
    size_t i = lower_bound(ws, worker);
    if (i < ws->n && strcmp(ws->v[i].worker, worker) == 0) {
        *step = ws->v[i].step;
        return true;
    }
    return false;
}

int optd_worker_steps_set(optd_worker_steps_t *ws, const char *worker, uint64_t step, size_t keep,
                          optd_err_t *err)
{
    size_t i = lower_bound(ws, worker);
    if (i < ws->n && strcmp(ws->v[i].worker, worker) == 0) {
        ws->v[i].step = step;
        return 0;
    }
    if (ws->n >= keep && ws->n > 0) {
        size_t old = 0;
        for (size_t k = 1; k < ws->n; k++)
            if (ws->v[k].step < ws->v[old].step)
                old = k;
        if (!ws->forgot || ws->v[old].step > ws->forgot_step)
            ws->forgot_step = ws->v[old].step;
        ws->forgot = true;
        memmove(ws->v + old, ws->v + old + 1, (ws->n - old - 1) * sizeof *ws->v);
        ws->n--;
        i = lower_bound(ws, worker);
    }
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 8;
        optd_worker_step_t *v = realloc(ws->v, cap * sizeof *v);
        if (!v)
            return optd_err_set(err, OPTD_ENOMEM, "out of memory for the workers' steps");
        ws->v = v;
        ws->cap = cap;
    }
    memmove(ws->v + i + 1, ws->v + i, (ws->n - i) * sizeof *ws->v);
    memset(&ws->v[i], 0, sizeof ws->v[i]);
    strncpy(ws->v[i].worker, worker, OPTD_WORKER_NAME_MAX);
    ws->v[i].step = step;
    ws->n++;
    return 0;
}

void optd_worker_steps_free(optd_worker_steps_t *ws)
{
    free(ws->v);
    memset(ws, 0, sizeof *ws);
}

int optd_worker_steps_copy(optd_worker_steps_t *dst, const optd_worker_steps_t *src, optd_err_t *err)
{
    memset(dst, 0, sizeof *dst);
    dst->forgot = src->forgot;
    dst->forgot_step = src->forgot_step;
    if (src->n == 0)
        return 0;
    if (!(dst->v = malloc(src->n * sizeof *dst->v)))
        return optd_err_set(err, OPTD_ENOMEM, "out of memory copying the workers' steps");
    memcpy(dst->v, src->v, src->n * sizeof *dst->v);
    dst->n = dst->cap = src->n;
    return 0;
}

bool optd_worker_steps_maybe_forgotten(const optd_worker_steps_t *ws, uint64_t step, size_t keep)
{
    if (ws->forgot && step <= ws->forgot_step)
        return true;
    if (ws->n == 0 || ws->n < keep)
        return false;
    uint64_t oldest = ws->v[0].step;
    for (size_t k = 1; k < ws->n; k++)
        if (ws->v[k].step < oldest)
            oldest = ws->v[k].step;
    return step <= oldest;
}

size_t optd_worker_steps_keep(uint32_t workers)
{
    /* Room for every worker of a round, its backups and a turnover of
     * names (restarted workers) before anything is forgotten. */
    size_t k = (size_t)workers * 4;
    return k < 64 ? 64 : k;
}
