/* bench_optim.c: one update of every optimizer on 10M float32 and 10M
 * float64 parameters, single-threaded, next to the memory-bandwidth floor
 * measured in the same run.
 *
 * The floor (floor.h) is a plain streaming loop that reads and writes as many arrays
 * of the dtype as the update does (adam: reads p, g, m, v and writes p, m,
 * v), so the ratio says how far each kernel is from what the memory system
 * allows, whatever the machine.  Two figures per optimizer:
 *   kernel  optd_optim_apply over the whole range (the update alone),
 *   step    optd_optim_step (adds the pass over g that sums its squares for
 *           the norm and detects NaN/Inf, and the per-step scalars).
 * Each is the median of RUNS timed runs after one warm-up run (which also
 * faults the pages in); floor, kernel and step runs are interleaved so that
 * noise from a shared machine hits all three alike.
 *
 * Output: a Markdown table on stdout.  Usage: bench_optim [n_params] [runs] */

#include "floor.h" /* first: its vectorizer settings */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "optd/optim.h"

#define MAX_RUNS 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct stats {
    double med, min, max;
} stats_t;

static stats_t summarize(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    stats_t s = {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1]};
    return s;
}

/* ---- the cases ---------------------------------------------------------------- */

typedef struct bench_case {
    const char *label;
    optd_optim_kind_t kind;
    double momentum; /* sgd only */
    int nbufs;       /* state arrays read and written by one step */
} bench_case_t;

static const bench_case_t cases[] = {
    {"sgd", OPTD_SGD, 0, 0},
    {"sgd (momentum 0.9)", OPTD_SGD, 0.9, 1},
    {"adagrad", OPTD_ADAGRAD, 0, 1},
    {"rmsprop", OPTD_RMSPROP, 0, 1},
    {"adam", OPTD_ADAM, 0, 2},
    {"adamw", OPTD_ADAMW, 0, 2},
    {"adamax", OPTD_ADAMAX, 0, 2},
    {"nadam", OPTD_NADAM, 0, 2},
    {"radam", OPTD_RADAM, 0, 2},
    {"adadelta", OPTD_ADADELTA, 0, 2},
    {"lion", OPTD_LION, 0, 1},
};

static void fill(optd_dtype_t dt, void *v, size_t n, uint64_t seed, double scale)
{
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        double r = ((double)(x >> 11) / 9007199254740992.0 - 0.5) * scale;
        if (dt == OPTD_FLOAT32)
            ((float *)v)[i] = (float)r;
        else
            ((double *)v)[i] = r;
    }
}

static int bench_one(const bench_case_t *c, optd_dtype_t dt, size_t n, int runs)
{
    size_t es = optd_dtype_size(dt);
    void *p = malloc(n * es), *g = malloc(n * es);
    void *fp = malloc(n * es), *fa = malloc(n * es), *fb = malloc(n * es);
    optd_optim_state_t st;
    optd_err_t err;
    optd_hparams_t hp;
    optd_hparams_default(c->kind, &hp);
    hp.momentum = c->kind == OPTD_SGD ? c->momentum : hp.momentum;
    if (!p || !g || !fp || !fa || !fb || optd_optim_state_init(&st, c->kind, dt, n, &hp, &err) != 0) {
        fprintf(stderr, "bench_optim: out of memory for %s %s\n", c->label, optd_dtype_name(dt));
        free(p), free(g), free(fp), free(fa), free(fb);
        return -1;
    }
    fill(dt, p, n, 1, 2.0);
    fill(dt, g, n, 2, 0.02);
    fill(dt, fp, n, 5, 1.0);
    fill(dt, fa, n, 3, 1.0);
    fill(dt, fb, n, 4, 1.0);
    /* Steady state: far from the first steps (radam's rectified branch,
     * sgd's momentum buffer exists after the warm-up step). */
    st.step = 1000;

    double tf[MAX_RUNS], tk[MAX_RUNS], ts[MAX_RUNS];
    int rc = 0;
    for (int r = -1; r < runs && rc == 0; r++) {
        double t0 = now_s();
        run_floor(dt, 0, n, fp, g, fa, fb, c->nbufs);
        double t1 = now_s();

        bool finite = true;
        double sumsq = optd_grad_sumsq(dt, g, 0, n, &finite);
        optd_step_plan_t plan;
        rc = optd_optim_plan(&st, &hp, NULL, 0.0, sumsq, &plan, &err);
        if (rc)
            break;
        double t2 = now_s();
        optd_optim_apply(&plan, &st, p, g, 0, n, NULL);
        double t3 = now_s();
        optd_optim_commit(&st, &plan, NULL);

        double t4 = now_s();
        rc = optd_optim_step(&st, &hp, NULL, 0.0, p, g, NULL, &err);
        double t5 = now_s();
        if (r >= 0) {
            tf[r] = (t1 - t0) * 1e9 / (double)n;
            tk[r] = (t3 - t2) * 1e9 / (double)n;
            ts[r] = (t5 - t4) * 1e9 / (double)n;
        }
    }
    if (rc == 0) {
        stats_t f = summarize(tf, runs), k = summarize(tk, runs), s = summarize(ts, runs);
        int bytes = (int)es * (2 + c->nbufs + 1 + c->nbufs);
        printf("| %s | %s | %.3f | %.3f–%.3f | %.3f | %.3f–%.3f | %d | %.3f | %.2f× | %.2f× |\n",
               c->label, optd_dtype_name(dt), k.med, k.min, k.max, s.med, s.min, s.max, bytes, f.med,
               k.med / f.med, s.med / f.med);
        fflush(stdout);
    } else {
        fprintf(stderr, "bench_optim: %s %s: %s\n", c->label, optd_dtype_name(dt), err.msg);
    }
    optd_optim_state_free(&st);
    free(p), free(g), free(fp), free(fa), free(fb);
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    if (n < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_optim [n_params >= 1] [runs 1..%d]\n", MAX_RUNS);
        return 2;
    }
    printf("### Optimizer update, %zu parameters, one thread (median of %d runs)\n\n", n, runs);
    printf("kernel: optd_optim_apply alone; step: optd_optim_step, which also reads the\n"
           "gradient once for its norm and the NaN/Inf check.  floor: a streaming loop\n"
           "reading and writing the same arrays as the update.\n\n");
    printf("| optimizer | dtype | kernel ns/param | min–max | step ns/param | min–max | "
           "bytes/param | floor ns/param | kernel/floor | step/floor |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    int failed = 0;
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            failed |= bench_one(&cases[i], d ? OPTD_FLOAT64 : OPTD_FLOAT32, n, runs) != 0;
    printf("\n");
    return failed ? 1 : 0;
}
