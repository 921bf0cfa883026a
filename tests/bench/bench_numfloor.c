/* bench_numfloor.c: the floor of a big JSON step, for tests/bench/bench_http.py.
 *
 * A JSON step of n float64 values cannot cost less than reading n numbers
 * from text and printing n numbers back as text.  This measures the plainest
 * C that does it: a strtod loop over the numbers of the request body (the
 * same file the benchmark posts to optd), then a snprintf("%.17g") loop that
 * prints them into one buffer, as the answer's "params" would be.  Reading
 * the file and the first touch of the buffers are outside the timing.
 *
 * Usage: bench_numfloor FILE [RUNS]
 *   FILE holds JSON text; every number after the first '[' up to its ']' is
 *   parsed (e.g. {"gradient":[...]}).
 * Prints one line per run: "parse_ms=P print_ms=Q total_ms=T n=N". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (n < cap)
            break;
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    if (b) {
        b[n] = '\0';
        *len = n;
    }
    return b;
}

/* The strtod loop: numbers separated by commas (and blanks) up to ']'. */
static size_t parse(const char *p, double *out, size_t cap)
{
    size_t n = 0;
    while (*p && *p != ']' && n < cap) {
        char *end;
        out[n++] = strtod(p, &end);
        p = end;
        while (*p == ',' || *p == ' ' || *p == '\n')
            p++;
    }
    return n;
}

/* The printing loop: "[v,v,...]" with %.17g, as many bytes as optd may use. */
static size_t print(char *o, const double *v, size_t n)
{
    char *s = o;
    *o++ = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        o += snprintf(o, 32, "%.17g", v[i]);
    }
    *o++ = ']';
    return (size_t)(o - s);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench_numfloor FILE [RUNS]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 1;
    size_t len = 0;
    char *text = read_all(argv[1], &len);
    if (!text) {
        perror(argv[1]);
        return 1;
    }
    const char *start = strchr(text, '[');
    if (!start) {
        fprintf(stderr, "bench_numfloor: %s holds no array\n", argv[1]);
        return 1;
    }
    start++;
    /* At most one number per two bytes ("0,"). */
    size_t cap = len / 2 + 1;
    double *v = malloc(cap * sizeof *v);
    char *out = malloc(cap * 26 + 3);
    if (!v || !out) {
        fprintf(stderr, "bench_numfloor: out of memory\n");
        return 1;
    }
    memset(v, 0, cap * sizeof *v);        /* fault the pages in: the timing is */
    memset(out, 0, cap * 26 + 3);         /* of the arithmetic, not of mmap */
    size_t sink = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = now_ms();
        size_t n = parse(start, v, cap);
        double t1 = now_ms();
        sink += print(out, v, n);
        double t2 = now_ms();
        printf("parse_ms=%.3f print_ms=%.3f total_ms=%.3f n=%zu\n", t1 - t0, t2 - t1, t2 - t0, n);
    }
    fflush(stdout);
    free(text);
    free(v);
    free(out);
    return sink ? 0 : 1;
}
