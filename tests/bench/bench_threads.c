/* bench_threads.c: large updates with --threads 2 against --threads 1.
 *
 * Times optd_session_apply, the call the step handler makes under the
 * session's lock, on sessions whose pool has 1 or 2 threads (what optd
 * --threads 1 and --threads 2 set up, daemon/parallel.h).  Measured
 * in-process because over HTTP the update is the small part of a big step:
 * moving the body in and the params out costs more, and is the same
 * whatever --threads (bench_http.py shows that end-to-end figure).  The
 * runs of both pools are interleaved; both sessions take the same
 * gradients, and the params they end with are compared bit for bit.
 *
 * Beside it, the ceiling: the streaming floor of floor.h (the update's
 * bytes, no arithmetic) run over the same pools, split as optd splits an
 * update.  Its 2-thread speed-up is what the memory system gives a second
 * core on this machine; an update that is bandwidth-bound cannot beat it.
 *
 * Output: a Markdown section on stdout; summary rows appended to
 * $OPTD_BENCH_SUMMARY (see benchlib.py).  Usage: bench_threads [runs] */
#include "floor.h" /* first: its vectorizer settings */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parallel.h"
#include "session_internal.h"

#define MAX_RUNS 64

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static optd_session_t *make(const char *name, optd_optim_kind_t kind, optd_dtype_t dt, size_t n)
{
    optd_session_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind;
    cfg.dtype = dt;
    optd_hparams_default(kind, &cfg.hp);
    optd_session_t *s = NULL;
    optd_err_t err;
    if (optd_session_create(name, &cfg, n, NULL, 16, &s, &err) != 0) {
        fprintf(stderr, "bench_threads: %s\n", err.msg);
        exit(1);
    }
    return s;
}

/* The floor split into tasks, as optd_parallel_step splits an update. */
typedef struct floor_job {
    optd_dtype_t dt;
    size_t n;
    unsigned n_tasks;
    int nbufs;
    void *p, *a, *b;
    const void *g;
} floor_job_t;

static void floor_task(void *vj, unsigned i)
{
    floor_job_t *j = vj;
    size_t lo = j->n * i / j->n_tasks, hi = j->n * (i + 1) / j->n_tasks;
    run_floor(j->dt, lo, hi, j->p, j->g, j->a, j->b, j->nbufs);
}

static double floor_ms(optd_pool_t *pool, floor_job_t *j)
{
    j->n_tasks = optd_pool_threads(pool) * 8;
    double t0 = now_ms();
    optd_pool_run(pool, j->n_tasks, floor_task, j);
    return now_ms() - t0;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 9;
    if (runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_threads [runs 1..%d]\n", MAX_RUNS);
        return 2;
    }
    optd_err_t err;
    optd_pool_t *p1, *p2;
    if (optd_pool_new(1, &p1, &err) || optd_pool_new(2, &p2, &err)) {
        fprintf(stderr, "bench_threads: %s\n", err.msg);
        return 1;
    }
    static const struct {
        optd_optim_kind_t kind;
        const char *label;
        optd_dtype_t dt;
        size_t n;
        int nbufs; /* state arrays the update reads and writes */
    } cases[] = {
        {OPTD_ADAM, "adam", OPTD_FLOAT32, 1000000, 2},  {OPTD_ADAM, "adam", OPTD_FLOAT32, 10000000, 2},
        {OPTD_ADAM, "adam", OPTD_FLOAT64, 1000000, 2},  {OPTD_ADAM, "adam", OPTD_FLOAT64, 10000000, 2},
        {OPTD_SGD, "sgd", OPTD_FLOAT32, 10000000, 0},
    };
    const char *summary = getenv("OPTD_BENCH_SUMMARY");
    FILE *sf = summary ? fopen(summary, "a") : NULL;

    printf("### Large updates: --threads 2 against --threads 1\n\n");
    printf("optd_session_apply (the update as the step handler runs it, under the session's lock) on a "
           "session whose update pool has 1 or 2 threads, as optd --threads 1 / 2 sets up; median of "
           "%d interleaved runs after a warm-up.  \"same bits\": both sessions, given the same "
           "gradients, end with identical params.  floor: a streaming loop of the update's bytes "
           "(floor.h) over the same pools, split the same way; its speed-up is the most a second "
           "thread can give a bandwidth-bound update here.\n\n",
           runs);
    printf("| optimizer | dtype | params | 1 thread ms | min–max | 2 threads ms | min–max | speed-up | "
           "floor 1 thread ms | floor 2 threads ms | floor speed-up | same bits |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    int status = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = cases[c].n, es = optd_dtype_size(cases[c].dt);
        optd_session_t *a = make("one", cases[c].kind, cases[c].dt, n);
        optd_session_t *b = make("two", cases[c].kind, cases[c].dt, n);
        /* The step handler's context: the pool, no durability. */
        optd_step_ctx_t ctx1 = {.pool = p1}, ctx2 = {.pool = p2};
        unsigned char *g = malloc(n * es);
        floor_job_t fj = {.dt = cases[c].dt, .n = n, .nbufs = cases[c].nbufs, .g = g,
                          .p = calloc(n, es), .a = calloc(n, es), .b = calloc(n, es)};
        if (!g || !fj.p || !fj.a || !fj.b) {
            fprintf(stderr, "bench_threads: out of memory\n");
            return 1;
        }
        srand(42);
        for (size_t i = 0; i < n; i++) {
            double v = ((double)rand() / RAND_MAX - 0.5) * 0.02;
            if (cases[c].dt == OPTD_FLOAT32)
                ((float *)g)[i] = (float)v;
            else
                ((double *)g)[i] = v;
        }
        double t1[MAX_RUNS], t2[MAX_RUNS], f1[MAX_RUNS], f2[MAX_RUNS];
        uint64_t step;
        for (int r = -1; r < runs; r++) {
            double x0 = now_ms();
            optd_step_input_t in = {.grad = g};
            int rc1 = optd_session_apply(a, &ctx1, &in, &step, NULL, &err);
            double x1 = now_ms();
            int rc2 = optd_session_apply(b, &ctx2, &in, &step, NULL, &err);
            double x2 = now_ms();
            if (rc1 || rc2) {
                fprintf(stderr, "bench_threads: %s\n", err.msg);
                return 1;
            }
            double y1 = floor_ms(p1, &fj), y2 = floor_ms(p2, &fj);
            if (r >= 0) {
                t1[r] = x1 - x0;
                t2[r] = x2 - x1;
                f1[r] = y1;
                f2[r] = y2;
            }
        }
        bool same = memcmp(a->params, b->params, n * es) == 0;
        double lo1 = t1[0], hi1 = t1[0], lo2 = t2[0], hi2 = t2[0];
        for (int r = 1; r < runs; r++) {
            lo1 = t1[r] < lo1 ? t1[r] : lo1, hi1 = t1[r] > hi1 ? t1[r] : hi1;
            lo2 = t2[r] < lo2 ? t2[r] : lo2, hi2 = t2[r] > hi2 ? t2[r] : hi2;
        }
        double m1 = median(t1, runs), m2 = median(t2, runs), sp = m1 / m2;
        double fm1 = median(f1, runs), fm2 = median(f2, runs), fsp = fm1 / fm2;
        printf("| %s | %s | %zu | %.3f | %.3f–%.3f | %.3f | %.3f–%.3f | %.2f× | %.3f | %.3f | %.2f× | %s |\n",
               cases[c].label, optd_dtype_name(cases[c].dt), n, m1, lo1, hi1, m2, lo2, hi2, sp, fm1, fm2,
               fsp, same ? "yes" : "**no**");
        if (!same)
            status = 1;
        if (sf)
            fprintf(sf,
                    "%zuM %s %s update, --threads 2\t%.3f ms\t%.3f–%.3f ms\t--threads 1 %.3f ms "
                    "(streaming floor: %.2f× faster with 2)\t%.2f× faster\t≥ 1.6× faster\t%s\n",
                    n / 1000000, optd_dtype_name(cases[c].dt), cases[c].label, m2, lo2, hi2, m1, fsp, sp,
                    sp >= 1.6 && same ? "yes" : "**no**");
        optd_session_release(a);
        optd_session_release(b);
        free(g);
        free(fj.p), free(fj.a), free(fj.b);
    }
    printf("\n");
    if (sf)
        fclose(sf);
    optd_pool_free(p1);
    optd_pool_free(p2);
    return status;
}
