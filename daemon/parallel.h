/* parallel.h: big updates spread over threads.
 *
 * One update of a large session is bound by memory bandwidth, of which
 * one core does not get all: a second core adds what the machine has left
 * (bench_threads measures it beside a streaming floor on the same
 * threads).  optd_parallel_step
 * is optd_optim_step split the way the core allows (optim.h: sum of squares
 * over ranges, plan once, apply over disjoint ranges, commit once), with the
 * ranges run by a small pool of worker threads plus the calling thread.
 *
 * The result never depends on the number of threads: the update is
 * element-wise, and the gradient's sum of squares is summed over fixed
 * blocks whose bounds depend only on the size, in block order, whatever
 * thread computed each block.  So --threads 1 and --threads 2 give the
 * same bits. */
#ifndef OPTD_PARALLEL_H
#define OPTD_PARALLEL_H

#include <stddef.h>

#include "optd/error.h"
#include "optd/optim.h"

/* Sessions smaller than this take optd_optim_step as it is (waking a
 * thread costs more than it saves below ~100 µs of work). */
#define OPTD_PARALLEL_MIN_SIZE ((size_t)1 << 17)

typedef struct optd_pool optd_pool_t;

/* A pool that, with the calling thread, runs work on `threads` threads
 * (threads - 1 workers are started; threads <= 1 starts none).  0,
 * OPTD_ENOMEM or OPTD_EINTERNAL (a thread could not be started). */
int optd_pool_new(unsigned threads, optd_pool_t **out, optd_err_t *err);
/* Stops and joins the workers; pool may be NULL.  No run may be going on. */
void optd_pool_free(optd_pool_t *pool);
/* Threads a run uses, the caller's included (1 for a NULL pool). */
unsigned optd_pool_threads(const optd_pool_t *pool);

/* Calls fn(arg, i) once for every i in [0, n_tasks), spread over the
 * pool's threads and the caller, and returns when all calls returned.  If
 * another run is going on (two big updates at once) or pool is NULL, the
 * caller runs every task itself: runs never wait for each other. */
void optd_pool_run(optd_pool_t *pool, unsigned n_tasks, void (*fn)(void *arg, unsigned i), void *arg);

/* optd_optim_step (same arguments, same errors, nothing changed on error),
 * spread over pool (may be NULL) when st->size >= OPTD_PARALLEL_MIN_SIZE. */
int optd_parallel_step(optd_pool_t *pool, optd_optim_state_t *st, const optd_hparams_t *hp,
                       const optd_schedule_t *sched, double max_grad_norm, void *params,
                       const void *grad, optd_step_info_t *info, optd_err_t *err);

/* The same for a vector cut into parameter groups
 * (optd_optim_step_groups); n_groups 0 is optd_parallel_step with hp. */
int optd_parallel_step_groups(optd_pool_t *pool, optd_optim_state_t *st, const optd_hparams_t *hp,
                              const optd_group_t *groups, size_t n_groups,
                              const optd_schedule_t *sched, double max_grad_norm, void *params,
                              const void *grad, optd_step_info_t *info, optd_err_t *err);

#endif
