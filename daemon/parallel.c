/* parallel.c: a small worker pool and the update spread over it (see
 * parallel.h). */
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* The sum of squares is taken over at most this many blocks; it also caps
 * the number of tasks of a run. */
#define MAX_BLOCKS 64
/* Smallest block of the sum of squares, and the alignment of every range
 * (64 elements: whole cache lines and vectors in both dtypes). */
#define MIN_BLOCK ((size_t)1 << 14)
#define ALIGN ((size_t)64)
/* Tasks per thread of each pass (see optd_parallel_step). */
#define TASKS_PER_THREAD 8
/* How long a worker waits awake for the next run before it sleeps. */
#define SPIN_NS 50000L

struct optd_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a run started, or stop */
    pthread_cond_t finished;  /* the last task of a run finished */
    pthread_t *workers;
    unsigned n_workers;
    bool stop;
    bool busy;                /* a run is going on */
    _Atomic uint32_t gen;     /* run number, bumped per run (under mu) */
    void (*fn)(void *arg, unsigned i);
    void *arg;
    unsigned n_tasks;
    unsigned done;            /* tasks of this run finished (under mu) */
    /* The next task to take: run number in the high 32 bits, task index in
     * the low ones, so a worker that wakes late can never take a task of a
     * later run with the function of an earlier one. */
    _Atomic uint64_t next;
};

/* Takes and runs the tasks of run `gen` that are left; returns how many. */
static unsigned take_tasks(optd_pool_t *p, uint32_t gen, unsigned n, void (*fn)(void *, unsigned),
                           void *arg)
{
    unsigned ran = 0;
    uint64_t v = atomic_load(&p->next);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen || (uint32_t)v >= n)
            return ran;
        if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
            continue; /* v reloaded */
        fn(arg, (unsigned)(uint32_t)v);
        ran++;
        v = atomic_load(&p->next);
    }
}

/* Spins up to SPIN_NS for a run after `seen` to start: an update's second
 * pass starts right after its first, and a worker already awake takes its
 * tasks at once instead of after a futex wake-up (tens of microseconds on
 * a VM, a real share of a 1M-parameter update). */
static void spin_for_run(optd_pool_t *p, uint32_t seen)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_relaxed) != seen)
            return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i % 64 == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS)
                return;
        }
    }
}

static void *worker_main(void *vp)
{
    optd_pool_t *p = vp;
    pthread_mutex_lock(&p->mu);
    uint32_t seen = p->gen;
    for (;;) {
        if (!p->stop && p->gen == seen) {
            pthread_mutex_unlock(&p->mu);
            spin_for_run(p, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        void (*fn)(void *, unsigned) = p->fn;
        void *arg = p->arg;
        unsigned n = p->n_tasks;
        pthread_mutex_unlock(&p->mu);
        unsigned ran = take_tasks(p, seen, n, fn, arg);
        pthread_mutex_lock(&p->mu);
        if (ran && p->gen == seen) {
            p->done += ran;
            if (p->done == n)
                pthread_cond_signal(&p->finished);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int optd_pool_new(unsigned threads, optd_pool_t **out, optd_err_t *err)
{
    optd_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for the thread pool");
    unsigned want = threads > 1 ? threads - 1 : 0;
    if (want > MAX_BLOCKS - 1)
        want = MAX_BLOCKS - 1;
    if (want && !(p->workers = calloc(want, sizeof *p->workers))) {
        free(p);
        return optd_err_set(err, OPTD_ENOMEM, "out of memory for the thread pool");
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->finished, NULL);
    for (unsigned i = 0; i < want; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
            optd_pool_free(p);
            return optd_err_set(err, OPTD_EINTERNAL, "cannot start update thread %u of %u", i + 1, want);
        }
        p->n_workers++;
    }
    *out = p;
    return 0;
}

void optd_pool_free(optd_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->finished);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

unsigned optd_pool_threads(const optd_pool_t *p)
{
    return p ? p->n_workers + 1 : 1;
}

void optd_pool_run(optd_pool_t *p, unsigned n, void (*fn)(void *arg, unsigned i), void *arg)
{
    bool alone = !p || p->n_workers == 0 || n <= 1;
    if (!alone) {
        pthread_mutex_lock(&p->mu);
        if (p->busy) {
            alone = true; /* another big update has the workers: do it here */
        } else {
            p->busy = true;
            p->gen++;
            p->fn = fn;
            p->arg = arg;
            p->n_tasks = n;
            p->done = 0;
            atomic_store(&p->next, (uint64_t)p->gen << 32);
            pthread_cond_broadcast(&p->wake);
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (alone) {
        for (unsigned i = 0; i < n; i++)
            fn(arg, i);
        return;
    }
    uint32_t gen = (uint32_t)(atomic_load(&p->next) >> 32);
    unsigned ran = take_tasks(p, gen, n, fn, arg);
    pthread_mutex_lock(&p->mu);
    p->done += ran;
    while (p->done < n)
        pthread_cond_wait(&p->finished, &p->mu);
    p->busy = false;
    pthread_mutex_unlock(&p->mu);
}

/* ---- the update ---------------------------------------------------------------- */

typedef struct step_job {
    optd_optim_state_t *st;
    const optd_step_plan_t *plan;  /* one plan, or n_groups plans with groups */
    const optd_group_t *groups;    /* NULL: no groups */
    size_t n_groups;
    void *params;
    const void *grad;
    size_t n;
    unsigned n_tasks;
    size_t block;               /* sum of squares: elements per block */
    unsigned n_blocks;
    double part[MAX_BLOCKS];    /* sum of squares of each block */
    bool finite[MAX_BLOCKS];    /* per task */
    bool ok[MAX_BLOCKS];        /* per task of the check: no fault */
    optd_step_fault_t fault[MAX_BLOCKS];
    optd_step_seen_t seen[MAX_BLOCKS]; /* per task of the check, or of a tracked update */
} step_job_t;

/* Task i of the sum of squares: blocks [i*nb/T, (i+1)*nb/T). */
static void sumsq_task(void *vj, unsigned i)
{
    step_job_t *j = vj;
    unsigned b0 = (unsigned)((size_t)i * j->n_blocks / j->n_tasks);
    unsigned b1 = (unsigned)((size_t)(i + 1) * j->n_blocks / j->n_tasks);
    bool finite = true;
    for (unsigned b = b0; b < b1; b++) {
        size_t lo = (size_t)b * j->block, hi = lo + j->block < j->n ? lo + j->block : j->n;
        j->part[b] = optd_grad_sumsq(j->st->dtype, j->grad, lo, hi, &finite);
    }
    j->finite[i] = finite;
}

/* Task i's share of [0, n): contiguous and aligned. */
static void task_range(const step_job_t *j, unsigned i, size_t *lo, size_t *hi)
{
    size_t units = (j->n + ALIGN - 1) / ALIGN;
    *lo = units * i / j->n_tasks * ALIGN;
    *hi = units * (i + 1) / j->n_tasks * ALIGN;
    if (*hi > j->n)
        *hi = j->n;
}

/* Task i of the check of a careful plan, or of every group's plan
 * (nothing written). */
static void check_task(void *vj, unsigned i)
{
    step_job_t *j = vj;
    size_t lo, hi;
    task_range(j, i, &lo, &hi);
    optd_step_seen_init(&j->seen[i]);
    if (lo >= hi)
        j->ok[i] = true;
    else if (j->groups)
        j->ok[i] = optd_optim_check_groups(j->plan, j->groups, j->n_groups, j->st, j->params, j->grad,
                                           lo, hi, &j->fault[i], &j->seen[i]);
    else
        j->ok[i] = optd_optim_check(j->plan, j->st, j->params, j->grad, lo, hi, &j->fault[i], &j->seen[i]);
}

/* Task i of the update. */
static void apply_task(void *vj, unsigned i)
{
    step_job_t *j = vj;
    size_t lo, hi;
    task_range(j, i, &lo, &hi);
    if (j->groups) {
        /* Grouped plans are careful and hand no bound on: nothing to track. */
        optd_optim_apply_groups(j->plan, j->groups, j->n_groups, j->st, j->params, j->grad, lo, hi,
                                NULL);
        return;
    }
    if (j->plan->track)
        optd_step_seen_init(&j->seen[i]);
    if (lo < hi)
        optd_optim_apply(j->plan, j->st, j->params, j->grad, lo, hi, j->plan->track ? &j->seen[i] : NULL);
}

/* The gradient's sum of squares over the pool into *sumsq, with j set up
 * for the update's tasks: 0 or OPTD_ENONFINITE. */
static int parallel_sumsq(optd_pool_t *pool, step_job_t *j, double *sumsq, optd_err_t *err)
{
    size_t n = j->n;
    /* Blocks depend on n alone, so the sum does not depend on the threads. */
    size_t block = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
    if (block < MIN_BLOCK)
        block = MIN_BLOCK;
    block = (block + ALIGN - 1) / ALIGN * ALIGN;
    j->block = block;
    j->n_blocks = (unsigned)((n + block - 1) / block);
    /* Several tasks per thread: a worker that wakes late takes what is
     * left instead of leaving the caller waiting on a half of its own. */
    unsigned tasks = optd_pool_threads(pool) * TASKS_PER_THREAD;
    j->n_tasks = tasks < j->n_blocks ? tasks : j->n_blocks;

    optd_pool_run(pool, j->n_tasks, sumsq_task, j);
    *sumsq = 0.0;
    for (unsigned b = 0; b < j->n_blocks; b++)
        *sumsq += j->part[b];
    for (unsigned i = 0; i < j->n_tasks; i++)
        if (!j->finite[i])
            return optd_err_set(err, OPTD_ENONFINITE, "the gradient contains NaN or infinite values");
    return 0;
}

/* The check of j's plan(s) over the pool: the first fault in index order,
 * or -1 when there is none. */
static int parallel_check(optd_pool_t *pool, step_job_t *j)
{
    optd_pool_run(pool, j->n_tasks, check_task, j);
    for (unsigned i = 0; i < j->n_tasks; i++) /* ranges in order: the first fault */
        if (!j->ok[i])
            return (int)i;
    return -1;
}

int optd_parallel_step(optd_pool_t *pool, optd_optim_state_t *st, const optd_hparams_t *hp,
                       const optd_schedule_t *sched, double max_grad_norm, void *params,
                       const void *grad, optd_step_info_t *info, optd_err_t *err)
{
    size_t n = st->size;
    if (n < OPTD_PARALLEL_MIN_SIZE)
        return optd_optim_step(st, hp, sched, max_grad_norm, params, grad, info, err);

    step_job_t j = {.st = st, .params = params, .grad = grad, .n = n};
    double sumsq;
    int rc = parallel_sumsq(pool, &j, &sumsq, err);
    if (rc)
        return rc;
    optd_step_plan_t plan;
    rc = optd_optim_plan(st, hp, sched, max_grad_norm, sumsq, &plan, err);
    if (rc)
        return rc;
    j.plan = &plan;
    if (plan.careful) {
        int bad = parallel_check(pool, &j);
        if (bad >= 0)
            return optd_optim_refuse(st, &plan, &j.fault[bad], err);
    }
    optd_pool_run(pool, j.n_tasks, apply_task, &j);
    for (unsigned i = 1; (plan.careful || plan.track) && i < j.n_tasks; i++)
        optd_step_seen_merge(&j.seen[0], &j.seen[i]);
    optd_optim_commit(st, &plan, plan.careful || plan.track ? &j.seen[0] : NULL);
    if (info) {
        info->lr = plan.lr;
        info->grad_norm = plan.grad_norm;
    }
    return 0;
}

int optd_parallel_step_groups(optd_pool_t *pool, optd_optim_state_t *st, const optd_hparams_t *hp,
                              const optd_group_t *groups, size_t n_groups,
                              const optd_schedule_t *sched, double max_grad_norm, void *params,
                              const void *grad, optd_step_info_t *info, optd_err_t *err)
{
    if (n_groups == 0)
        return optd_parallel_step(pool, st, hp, sched, max_grad_norm, params, grad, info, err);
    size_t n = st->size;
    if (n < OPTD_PARALLEL_MIN_SIZE)
        return optd_optim_step_groups(st, groups, n_groups, sched, max_grad_norm, params, grad, info,
                                      err);

    step_job_t j = {.st = st, .params = params, .grad = grad, .n = n, .groups = groups,
                    .n_groups = n_groups};
    double sumsq;
    int rc = parallel_sumsq(pool, &j, &sumsq, err);
    if (rc)
        return rc;
    optd_step_plan_t *plans = malloc(n_groups * sizeof *plans);
    if (!plans)
        return optd_err_set(err, OPTD_ENOMEM, "cannot allocate the plans of %zu groups", n_groups);
    rc = optd_optim_plan_groups(st, groups, n_groups, sched, max_grad_norm, sumsq, plans, err);
    if (rc == 0) {
        j.plan = plans;
        /* Every group's range is checked before anything is written. */
        int bad = parallel_check(pool, &j);
        if (bad >= 0) {
            rc = optd_optim_refuse(st, &plans[0], &j.fault[bad], err);
        } else {
            optd_pool_run(pool, j.n_tasks, apply_task, &j);
            optd_optim_commit_groups(st, plans, n_groups);
            if (info) {
                info->lr = plans[0].lr;
                info->grad_norm = plans[0].grad_norm;
            }
        }
    }
    free(plans);
    return rc;
}
