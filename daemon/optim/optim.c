/* optim.c: the optimizer core around the optimizers: the table of their
 * descriptors, validation, state buffers and the checks of an imported
 * state, and the step split into sumsq / plan / check / apply / commit
 * (include/optd/optim.h), with the O(1) bound that spares almost every
 * step the check that it stays finite.
 *
 * Everything here runs once per step or per session and works in double;
 * what is an optimizer's own (its scalars, plan, bound and kernel) is in
 * its file, opt_NAME.c, reached through its descriptor (optimizer.h). */
#include "optd/optim.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/kernels.h"
#include "optim/optimizer.h"

/* ---- dtypes ------------------------------------------------------------ */

size_t optd_dtype_size(optd_dtype_t dtype)
{
    return dtype == OPTD_FLOAT32 ? sizeof(float) : sizeof(double);
}

const char *optd_dtype_name(optd_dtype_t dtype)
{
    return dtype == OPTD_FLOAT32 ? "float32" : "float64";
}

int optd_dtype_parse(const char *name, optd_dtype_t *out)
{
    if (name && strcmp(name, "float32") == 0) {
        *out = OPTD_FLOAT32;
        return 0;
    }
    if (name && strcmp(name, "float64") == 0) {
        *out = OPTD_FLOAT64;
        return 0;
    }
    return OPTD_EINVAL;
}

/* ---- the table ------------------------------------------------------------ */

#define OPTD_OPTIMIZER_ENTRY_(KIND, name) [OPTD_##KIND] = &optd_optimizer_##name,
static const optd_optimizer_t *const optimizers[OPTD_OPTIM_COUNT] = {
    OPTD_OPTIMIZERS(OPTD_OPTIMIZER_ENTRY_)
};
#undef OPTD_OPTIMIZER_ENTRY_

const optd_optimizer_t *optd_optimizer(optd_optim_kind_t kind)
{
    return optimizers[kind];
}

/* The buffers every step of a kind uses (allocated at init). */
static unsigned required_bufs(optd_optim_kind_t kind)
{
    return optimizers[kind]->desc.required_bufs;
}

static const char *const buf_names[OPTD_BUF_COUNT] = {
    [OPTD_BUF_MOMENTUM_BUFFER] = "momentum_buffer",
    [OPTD_BUF_SUM] = "sum",
    [OPTD_BUF_SQUARE_AVG] = "square_avg",
    [OPTD_BUF_GRAD_AVG] = "grad_avg",
    [OPTD_BUF_EXP_AVG] = "exp_avg",
    [OPTD_BUF_EXP_AVG_SQ] = "exp_avg_sq",
    [OPTD_BUF_MAX_EXP_AVG_SQ] = "max_exp_avg_sq",
    [OPTD_BUF_EXP_INF] = "exp_inf",
    [OPTD_BUF_ACC_DELTA] = "acc_delta",
};

const optd_optim_desc_t *optd_optim_desc(optd_optim_kind_t kind)
{
    return (unsigned)kind < OPTD_OPTIM_COUNT ? &optimizers[kind]->desc : NULL;
}

int optd_optim_lookup(const char *name, optd_optim_kind_t *out, optd_err_t *err)
{
    char list[192];
    size_t len = 0;
    for (int k = 0; k < OPTD_OPTIM_COUNT; k++) {
        const char *kname = optimizers[k]->desc.name;
        if (name && strcmp(name, kname) == 0) {
            *out = (optd_optim_kind_t)k;
            return 0;
        }
        int w = snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "", kname);
        if (w > 0 && (size_t)w < sizeof list - len)
            len += (size_t)w;
    }
    return optd_err_set(err, OPTD_EINVAL, "unknown optimizer \"%.64s\"; expected one of: %s",
                        name ? name : "", list);
}

void optd_hparams_default(optd_optim_kind_t kind, optd_hparams_t *hp)
{
    memset(hp, 0, sizeof *hp);
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    if (!d)
        return;
    for (size_t i = 0; i < d->n_hparams; i++) {
        const optd_hparam_desc_t *h = &d->hparams[i];
        char *field = (char *)hp + h->offset;
        switch (h->type) {
        case OPTD_HP_REAL: *(double *)field = h->def[0]; break;
        case OPTD_HP_BOOL: *(bool *)field = h->def[0] != 0; break;
        case OPTD_HP_PAIR:
            ((double *)field)[0] = h->def[0];
            ((double *)field)[1] = h->def[1];
            break;
        }
    }
}

const optd_hparam_desc_t *optd_hparam_find(optd_optim_kind_t kind, const char *name)
{
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    if (!d || !name)
        return NULL;
    for (size_t i = 0; i < d->n_hparams; i++)
        if (strcmp(d->hparams[i].name, name) == 0)
            return &d->hparams[i];
    return NULL;
}

const char *optd_buf_name(optd_buf_t buf)
{
    return (unsigned)buf < OPTD_BUF_COUNT ? buf_names[buf] : "";
}

int optd_buf_lookup(const char *name)
{
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (name && strcmp(name, buf_names[b]) == 0)
            return b;
    return -1;
}

/* ---- validation ------------------------------------------------------------ */

/* The shortest %g form of v that reads back as v, so a message quotes the
 * client's number as they wrote it ("got 1", "got 0.1"). */
static const char *fmt_num(char *buf, size_t cap, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v || v != v)
            break;
    }
    return buf;
}

/* lo <= v (lo_open: lo < v), and v <= hi or v < hi per hi_open; hi = INFINITY
 * for no upper bound. */
static int check_range(const char *name, double v, double lo, bool lo_open, double hi,
                       bool hi_open, optd_err_t *err)
{
    bool ok = isfinite(v) && (lo_open ? v > lo : v >= lo) &&
              (isinf(hi) || (hi_open ? v < hi : v <= hi));
    if (ok)
        return 0;
    char got[32], l[32], h[32];
    fmt_num(got, sizeof got, v);
    if (isinf(hi))
        return optd_err_set(err, OPTD_EINVAL, "%s must be a finite number %s %s, got %s", name,
                            lo_open ? ">" : ">=", fmt_num(l, sizeof l, lo), got);
    return optd_err_set(err, OPTD_EINVAL, "%s must be in %c%s, %s%c, got %s", name,
                        lo_open ? '(' : '[', fmt_num(l, sizeof l, lo), fmt_num(h, sizeof h, hi),
                        hi_open ? ')' : ']', got);
}

int optd_hparams_validate(optd_optim_kind_t kind, const optd_hparams_t *hp, optd_err_t *err)
{
    const optd_optim_desc_t *d = optd_optim_desc(kind);
    if (!d)
        return optd_err_set(err, OPTD_EINVAL, "unknown optimizer kind %d", (int)kind);
    for (size_t i = 0; i < d->n_hparams; i++) {
        const optd_hparam_desc_t *h = &d->hparams[i];
        const double *v = (const double *)((const char *)hp + h->offset);
        int rc = 0;
        if (h->type == OPTD_HP_PAIR) {
            rc = check_range("betas[0]", v[0], 0, false, 1, true, err);
            if (rc == 0)
                rc = check_range("betas[1]", v[1], 0, false, 1, true, err);
        } else if (h->type == OPTD_HP_REAL) {
            if (strcmp(h->name, "rho") == 0)
                rc = check_range(h->name, *v, 0, false, 1, false, err);
            else if (strcmp(h->name, "dampening") == 0) {
                if (!isfinite(*v)) {
                    char got[32];
                    rc = optd_err_set(err, OPTD_EINVAL, "dampening must be a finite number, got %s",
                                      fmt_num(got, sizeof got, *v));
                }
            } else
                rc = check_range(h->name, *v, 0, false, INFINITY, false, err);
        }
        if (rc)
            return rc;
    }
    const optd_optimizer_t *o = optd_optimizer(kind);
    return o->validate ? o->validate(hp, err) : 0;
}

int optd_clip_validate(double max_grad_norm, optd_err_t *err)
{
    return check_range("max_grad_norm", max_grad_norm, 0, false, INFINITY, false, err);
}

/* ---- state ----------------------------------------------------------------- */

/* Bytes of one buffer of st, or 0 on overflow. */
static size_t buf_bytes(optd_dtype_t dtype, size_t size)
{
    size_t es = optd_dtype_size(dtype);
    return size > SIZE_MAX / es ? 0 : size * es;
}

/* Sets n elements of dtype at v (calloc'd) to x. */
static void fill_value(optd_dtype_t dtype, void *v, size_t n, double x)
{
    if (x == 0.0)
        return;
    if (dtype == OPTD_FLOAT32) {
        float *f = v, xf = (float)x;
        for (size_t i = 0; i < n; i++)
            f[i] = xf;
    } else {
        double *d = v;
        for (size_t i = 0; i < n; i++)
            d[i] = x;
    }
}

int optd_optim_state_init(optd_optim_state_t *st, optd_optim_kind_t kind, optd_dtype_t dtype,
                          size_t size, const optd_hparams_t *hp, optd_err_t *err)
{
    memset(st, 0, sizeof *st);
    if ((unsigned)kind >= OPTD_OPTIM_COUNT)
        return optd_err_set(err, OPTD_EINVAL, "unknown optimizer kind %d", (int)kind);
    if (dtype != OPTD_FLOAT32 && dtype != OPTD_FLOAT64)
        return optd_err_set(err, OPTD_EINVAL, "unknown dtype %d", (int)dtype);
    if (size == 0)
        return optd_err_set(err, OPTD_EINVAL, "size must be at least 1");
    size_t bytes = buf_bytes(dtype, size);
    if (bytes == 0)
        return optd_err_set(err, OPTD_ENOMEM, "%zu parameters do not fit in memory", size);
    st->kind = kind;
    st->dtype = dtype;
    st->size = size;
    st->mu_product = 1.0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (!(required_bufs(kind) & BIT(b)))
            continue;
        st->buf[b] = calloc(size, optd_dtype_size(dtype));
        if (!st->buf[b]) {
            optd_optim_state_free(st);
            return optd_err_set(err, OPTD_ENOMEM, "cannot allocate %zu bytes for %s", bytes,
                                buf_names[b]);
        }
    }
    /* adagrad's sum starts at initial_accumulator_value. */
    if (st->buf[OPTD_BUF_SUM])
        fill_value(dtype, st->buf[OPTD_BUF_SUM], size, hp ? hp->initial_accumulator_value : 0.0);
    return 0;
}

void optd_optim_state_free(optd_optim_state_t *st)
{
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        free(st->buf[b]);
        st->buf[b] = NULL;
    }
    free(st->groups);
    st->groups = NULL;
    st->n_groups = 0;
}

int optd_optim_state_copy(optd_optim_state_t *dst, const optd_optim_state_t *src, optd_err_t *err)
{
    *dst = *src;
    memset(dst->buf, 0, sizeof dst->buf);
    dst->groups = NULL;
    if (src->n_groups > 0) {
        dst->groups = malloc(src->n_groups * sizeof *dst->groups);
        if (!dst->groups) {
            memset(dst, 0, sizeof *dst);
            return optd_err_set(err, OPTD_ENOMEM, "cannot allocate the state of %zu groups",
                                src->n_groups);
        }
        memcpy(dst->groups, src->groups, src->n_groups * sizeof *dst->groups);
    }
    size_t bytes = buf_bytes(src->dtype, src->size);
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (!src->buf[b])
            continue;
        dst->buf[b] = malloc(bytes);
        if (!dst->buf[b]) {
            optd_optim_state_free(dst);
            memset(dst, 0, sizeof *dst);
            return optd_err_set(err, OPTD_ENOMEM, "cannot allocate %zu bytes to copy %s", bytes,
                                buf_names[b]);
        }
        memcpy(dst->buf[b], src->buf[b], bytes);
    }
    return 0;
}

size_t optd_optim_state_bytes(const optd_optim_state_t *st)
{
    size_t n = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (st->buf[b])
            n += buf_bytes(st->dtype, st->size);
    return n;
}

/* ---- one update -------------------------------------------------------------- */

double optd_grad_sumsq(optd_dtype_t dtype, const void *grad, size_t lo, size_t hi, bool *finite)
{
    if (hi <= lo)
        return 0.0;
    if (dtype == OPTD_FLOAT32)
        return optd_kernel_sumsq_f32((const float *)grad + lo, hi - lo, finite);
    return optd_kernel_sumsq_f64((const double *)grad + lo, hi - lo, finite);
}

bool optd_all_finite(optd_dtype_t dtype, const void *v, size_t n)
{
    if (dtype == OPTD_FLOAT32)
        return optd_kernel_finite_f32(v, n);
    return optd_kernel_finite_f64(v, n);
}

unsigned optd_optim_step_bufs(optd_optim_kind_t kind, const optd_hparams_t *hp)
{
    const optd_optimizer_t *o = optd_optimizer(kind);
    return o->desc.required_bufs | (o->option_bufs ? o->option_bufs(hp) : 0);
}

/* Rounds v to the session's dtype (a value PyTorch holds in a tensor). */
static double to_dtype(optd_dtype_t dtype, double v)
{
    return dtype == OPTD_FLOAT32 ? (double)(float)v : v;
}

/* ---- the O(1) finiteness bound ------------------------------------------------ */

/* A step's values are bounded from what the last step left (st->bound: the
 * largest magnitude of the parameters and of every buffer), the gradient's
 * L2 norm (which bounds its largest element) and the plan's scalars rounded
 * to the dtype, by each optimizer's bound function (in its file), which
 * follows its kernel's operations in order with
 * |a + b| <= |a| + |b|, |a * b| = |a| |b| and |a / b| <= |a| / (the least
 * the divisor can be: eps, as every divisor is a non-negative value plus
 * eps, or a scalar).  If every intermediate stays below half the dtype's
 * largest value (room for the rounding of a dozen operations), no value the
 * step computes can be infinite, and none can be NaN: NaN needs an
 * infinity, 0/0 (excluded by eps > 0) or the root of a negative number (the
 * buffers under roots hold sums of squares, which import keeps
 * non-negative).  A rule it cannot bound (rmsprop's centered variant takes
 * a root of a difference) has its bound function answer false: such steps
 * always take the careful path. */
double optd_bound_out(optd_bound_t *b, int k, double v)
{
    /* Handed on, v is raised by 2^-20, more than a dozen roundings of
     * float32 (2^-24 each) can add to the value computed, so it stays a
     * bound step after step. */
    b->out[k] = v * (1 + 0x1p-20);
    b->out_set |= BIT(k);
    return v;
}

double optd_bound_chk(optd_bound_t *b, double x)
{
    if (x != x)
        b->bad = true;
    else if (x > b->worst)
        b->worst = x;
    return x;
}

double optd_bound_k(const optd_bound_t *b, double c)
{
    return fabs(to_dtype(b->dtype, c));
}

double optd_bound_max(const optd_bound_t *b, int k)
{
    if (k < OPTD_BUF_COUNT && (b->fresh & BIT(k)))
        return k == OPTD_BUF_SUM ? NAN : 0.0; /* adagrad's starts at a value */
    return (b->st->bound_known & BIT(k)) ? b->st->bound[k] : NAN;
}

double optd_bound_div(optd_bound_t *b, double num, double den_least)
{
    if (!(den_least > 0))
        b->bad = true;
    return optd_bound_chk(b, num / den_least);
}

double optd_bound_avg(optd_bound_t *b, double m, double k1, double k2, double d)
{
    return CK(CK(m * k1) + CK(k2 * d));
}

static bool provably_finite(const optd_optim_state_t *st, optd_step_plan_t *pl)
{
    optd_bound_t bound = {.dtype = st->dtype, .st = st, .fresh = pl->fresh}, *b = &bound;
    b->P = M(OPTD_BUF_COUNT);
    b->G = CK(pl->grad_norm * K(pl->gscale)); /* |g * gs| */
    if (!optd_optimizer(pl->kind)->bound(b, pl))
        return false;
    double limit = (st->dtype == OPTD_FLOAT32 ? FLT_MAX : DBL_MAX) * 0.5;
    if (b->bad || !(b->worst < limit))
        return false;
    /* What this step leaves is bounded by what it was proved with: the
     * next step's bound, with no pass over the values. */
    memcpy(pl->next_bound, b->out, sizeof b->out);
    pl->next_known = b->out_set;
    return true;
}

/* 0, or OPTD_ENONFINITE when the scheduled lr of hp for the next step or
 * the gradient's squared norm is not finite. */
static int plan_inputs_finite(const optd_optim_state_t *st, const optd_hparams_t *hp,
                              const optd_schedule_t *sched, double grad_sumsq, optd_err_t *err)
{
    const uint64_t t = st->step + 1;
    if (!isfinite(optd_schedule_lr(sched, hp->lr, t)))
        return optd_err_set(err, OPTD_ENONFINITE,
                            "the schedule's lr for step %llu is not finite; nothing was applied",
                            (unsigned long long)t);
    if (!isfinite(grad_sumsq))
        return optd_err_set(err, OPTD_ENONFINITE,
                            "the gradient's L2 norm overflows a double; nothing was applied");
    return 0;
}

/* Allocates the buffers in `need` that st does not keep yet (at 0; sgd's
 * is set to g by the kernel; adagrad's sum, missing only from a state
 * imported at step 0, at each group's initial_accumulator_value: groups
 * NULL means one group, hp), all or nothing, and installs them; *fresh gets
 * their bits, which optd_optim_abort frees again.  0 or OPTD_ENOMEM (st
 * unchanged). */
static int alloc_missing(optd_optim_state_t *st, unsigned need, const optd_hparams_t *hp,
                         const optd_group_t *groups, size_t n_groups, unsigned *fresh_bits,
                         optd_err_t *err)
{
    void *fresh[OPTD_BUF_COUNT] = {0};
    *fresh_bits = 0;
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        if (!(need & BIT(b)) || st->buf[b])
            continue;
        fresh[b] = calloc(st->size, optd_dtype_size(st->dtype));
        if (!fresh[b]) {
            for (int j = 0; j < b; j++)
                free(fresh[j]);
            return optd_err_set(err, OPTD_ENOMEM, "cannot allocate the %s buffer (%zu elements)",
                                buf_names[b], st->size);
        }
    }
    if (fresh[OPTD_BUF_SUM]) {
        size_t es = optd_dtype_size(st->dtype), lo = 0;
        if (!groups)
            fill_value(st->dtype, fresh[OPTD_BUF_SUM], st->size, hp->initial_accumulator_value);
        for (size_t g = 0; groups && g < n_groups; lo += groups[g].size, g++)
            fill_value(st->dtype, (char *)fresh[OPTD_BUF_SUM] + lo * es, groups[g].size,
                       groups[g].hp.initial_accumulator_value);
    }
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (fresh[b]) {
            st->buf[b] = fresh[b];
            *fresh_bits |= BIT(b);
        }
    return 0;
}

/* The per-step scalars of one update (or of one group's) with hp, in
 * double; mu_product is nadam's product so far (the group's),
 * momentum_fresh whether the (group's) momentum buffer starts now. */
static void plan_scalars(const optd_optim_state_t *st, const optd_hparams_t *hp,
                         const optd_schedule_t *sched, double max_grad_norm, double grad_sumsq,
                         double mu_product, bool momentum_fresh, optd_step_plan_t *plan)
{
    const uint64_t t = st->step + 1;
    const double lr = optd_schedule_lr(sched, hp->lr, t);

    plan->kind = st->kind;
    plan->dtype = st->dtype;
    plan->t = t;
    plan->lr = lr;
    plan->grad_norm = sqrt(grad_sumsq);
    /* clip_grad_norm_: g *= min(1, M/(n + 1e-6)); then maximize negates,
     * which commutes exactly with the (rounded) multiplication. */
    double gs = 1.0;
    if (max_grad_norm > 0) {
        double coef = max_grad_norm / (plan->grad_norm + 1e-6);
        if (coef < 1.0)
            gs = coef;
    }
    plan->gscale = hp->maximize ? -gs : gs;
    plan->mu_product_next = mu_product;
    optd_plan_in_t in = {.st = st, .hp = hp, .lr = lr, .td = (double)t,
                         .mu_product = mu_product, .momentum_fresh = momentum_fresh};
    optd_optimizer(st->kind)->plan(&in, plan);

    plan->mu_product_next = to_dtype(st->dtype, plan->mu_product_next);
    plan->writes = optd_optim_step_bufs(st->kind, hp) | BIT(OPTD_BUF_COUNT);
}

int optd_optim_plan(optd_optim_state_t *st, const optd_hparams_t *hp, const optd_schedule_t *sched,
                    double max_grad_norm, double grad_sumsq, optd_step_plan_t *plan, optd_err_t *err)
{
    memset(plan, 0, sizeof *plan);
    int rc = plan_inputs_finite(st, hp, sched, grad_sumsq, err);
    if (rc)
        return rc;
    /* Buffers an option switched on start now; optd_optim_abort undoes a
     * plan that succeeded. */
    rc = alloc_missing(st, optd_optim_step_bufs(st->kind, hp), hp, NULL, 0, &plan->fresh, err);
    if (rc)
        return rc;
    plan_scalars(st, hp, sched, max_grad_norm, grad_sumsq, st->mu_product,
                 (plan->fresh & BIT(OPTD_BUF_MOMENTUM_BUFFER)) != 0, plan);
    plan->careful = !provably_finite(st, plan);
    /* Coupled weight decay (the plan set track) adds wd * p to the
     * gradient, so a bound carried over on the parameters feeds itself
     * (through exp_avg and the like) and loosens geometrically: such steps
     * measure what they write. */
    plan->track = plan->track && !plan->careful;
    return 0;
}

void optd_step_seen_init(optd_step_seen_t *seen)
{
    for (int k = 0; k <= OPTD_BUF_COUNT; k++)
        seen->max[k] = -1.0;
}

void optd_step_seen_merge(optd_step_seen_t *into, const optd_step_seen_t *from)
{
    for (int k = 0; k <= OPTD_BUF_COUNT; k++) {
        double a = into->max[k], b = from->max[k];
        if (a == a && (b != b || b > a))
            into->max[k] = b; /* NaN sticks */
    }
}

/* The buffers of st at offset lo (NULL where not kept). */
static void bufs_at(const optd_optim_state_t *st, size_t lo, void *bufs[OPTD_BUF_COUNT])
{
    size_t es = optd_dtype_size(st->dtype);
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        bufs[b] = st->buf[b] ? (char *)st->buf[b] + lo * es : NULL;
}

static void kernel(const optd_step_plan_t *plan, optd_dtype_t dtype, void *const bufs[OPTD_BUF_COUNT],
                   void *params, const void *grad, size_t n, double seen[OPTD_BUF_COUNT + 1])
{
    optd_optimizer(plan->kind)->kernel[dtype](plan, bufs, params, grad, n, seen);
}

void optd_optim_apply(const optd_step_plan_t *plan, optd_optim_state_t *st, void *params,
                      const void *grad, size_t lo, size_t hi, optd_step_seen_t *seen)
{
    if (hi <= lo)
        return;
    size_t es = optd_dtype_size(st->dtype);
    void *bufs[OPTD_BUF_COUNT];
    bufs_at(st, lo, bufs);
    optd_step_seen_t here;
    kernel(plan, st->dtype, bufs, (char *)params + lo * es, (const char *)grad + lo * es, hi - lo,
           seen ? here.max : NULL);
    if (seen)
        optd_step_seen_merge(seen, &here);
}

/* Elements per block of optd_optim_check: its copies live on the stack. */
#define CHECK_BLOCK 256

/* The first non-finite value among the n elements of the arrays a[k]
 * (k <= OPTD_BUF_COUNT, NULL where absent): true and *fault set. */
static bool first_fault(optd_dtype_t dtype, void *const a[OPTD_BUF_COUNT + 1], size_t n, size_t base,
                        optd_step_fault_t *fault)
{
    for (size_t i = 0; i < n; i++)
        for (int k = OPTD_BUF_COUNT; k >= 0; k--) { /* params first */
            if (!a[k])
                continue;
            double x = dtype == OPTD_FLOAT32 ? (double)((const float *)a[k])[i] : ((const double *)a[k])[i];
            if (!isfinite(x)) {
                *fault = (optd_step_fault_t){.index = base + i, .buf = k, .nan = isnan(x)};
                return true;
            }
        }
    return false;
}

bool optd_optim_check(const optd_step_plan_t *plan, const optd_optim_state_t *st, const void *params,
                      const void *grad, size_t lo, size_t hi, optd_step_fault_t *fault,
                      optd_step_seen_t *seen)
{
    /* The same kernel on copies of a block at a time: the same operations
     * on the same values, so the same results as the real update will
     * have, and nothing of st or params is written. */
    double scratch[OPTD_BUF_COUNT + 1][CHECK_BLOCK];
    size_t es = optd_dtype_size(st->dtype);
    for (size_t at = lo; at < hi; at += CHECK_BLOCK) {
        size_t n = hi - at < CHECK_BLOCK ? hi - at : CHECK_BLOCK;
        void *bufs[OPTD_BUF_COUNT], *all[OPTD_BUF_COUNT + 1];
        bufs_at(st, at, bufs);
        for (int b = 0; b < OPTD_BUF_COUNT; b++) {
            all[b] = bufs[b] ? memcpy(scratch[b], bufs[b], n * es) : NULL;
            bufs[b] = all[b];
        }
        all[OPTD_BUF_COUNT] = memcpy(scratch[OPTD_BUF_COUNT], (const char *)params + at * es, n * es);
        optd_step_seen_t here;
        kernel(plan, st->dtype, bufs, all[OPTD_BUF_COUNT], (const char *)grad + at * es, n, here.max);
        bool finite = true;
        for (int k = 0; k <= OPTD_BUF_COUNT; k++)
            finite &= isfinite(here.max[k]) || here.max[k] == -1.0;
        if (!finite && first_fault(st->dtype, all, n, at, fault))
            return false;
        optd_step_seen_merge(seen, &here);
    }
    return true;
}

void optd_optim_abort(optd_optim_state_t *st, const optd_step_plan_t *plan)
{
    for (int b = 0; b < OPTD_BUF_COUNT; b++)
        if (plan->fresh & BIT(b)) {
            free(st->buf[b]);
            st->buf[b] = NULL;
        }
}

int optd_optim_refuse(optd_optim_state_t *st, const optd_step_plan_t *plan,
                      const optd_step_fault_t *fault, optd_err_t *err)
{
    optd_optim_abort(st, plan);
    const char *what = fault->buf == OPTD_BUF_COUNT ? "params" : optd_buf_name((optd_buf_t)fault->buf);
    return optd_err_set(err, OPTD_ENONFINITE,
                        "this step would make %s[%zu] %s (an overflow of %s); nothing was applied",
                        what, fault->index, fault->nan ? "NaN" : "infinite",
                        optd_dtype_name(st->dtype));
}

void optd_optim_commit(optd_optim_state_t *st, const optd_step_plan_t *plan,
                       const optd_step_seen_t *seen)
{
    st->step = plan->t;
    if (optd_optimizer(st->kind)->desc.has_mu_product)
        st->mu_product = plan->mu_product_next;
    if (!seen) {
        /* Proved finite and not measured: what it wrote is bounded by the
         * plan's bounds (a written array without one is no longer known). */
        unsigned known = plan->careful ? 0 : plan->next_known & plan->writes;
        for (int k = 0; k <= OPTD_BUF_COUNT; k++)
            if (known & BIT(k))
                st->bound[k] = plan->next_bound[k];
        st->bound_known = (st->bound_known & ~plan->writes) | known;
        return;
    }
    for (int k = 0; k <= OPTD_BUF_COUNT; k++) {
        double m = seen->max[k];
        if (m == -1.0)
            continue; /* not written: what was known of it holds */
        st->bound[k] = m;
        if (isfinite(m))
            st->bound_known |= BIT(k);
        else
            st->bound_known &= ~BIT(k);
    }
}

void optd_optim_forget_bounds(optd_optim_state_t *st)
{
    st->bound_known = 0;
}

int optd_optim_step(optd_optim_state_t *st, const optd_hparams_t *hp, const optd_schedule_t *sched,
                    double max_grad_norm, void *params, const void *grad, optd_step_info_t *info,
                    optd_err_t *err)
{
    bool finite = true;
    double sumsq = optd_grad_sumsq(st->dtype, grad, 0, st->size, &finite);
    if (!finite)
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient contains NaN or infinite values");
    optd_step_plan_t plan;
    int rc = optd_optim_plan(st, hp, sched, max_grad_norm, sumsq, &plan, err);
    if (rc)
        return rc;
    optd_step_fault_t fault;
    optd_step_seen_t seen;
    optd_step_seen_init(&seen);
    if (plan.careful && !optd_optim_check(&plan, st, params, grad, 0, st->size, &fault, &seen))
        return optd_optim_refuse(st, &plan, &fault, err);
    optd_optim_apply(&plan, st, params, grad, 0, st->size, plan.track ? &seen : NULL);
    optd_optim_commit(st, &plan, plan.careful || plan.track ? &seen : NULL);
    if (info) {
        info->lr = plan.lr;
        info->grad_norm = plan.grad_norm;
    }
    return 0;
}

/* ---- state import checks ------------------------------------------------------ */

/* Buffers that hold squares, sums of squares or maxima of magnitudes: no
 * run leaves a negative value in them, and a root is taken of them. */
static const unsigned nonneg_bufs = BIT(OPTD_BUF_EXP_AVG_SQ) | BIT(OPTD_BUF_MAX_EXP_AVG_SQ) | BIT(OPTD_BUF_SUM) |
                                    BIT(OPTD_BUF_SQUARE_AVG) | BIT(OPTD_BUF_ACC_DELTA) | BIT(OPTD_BUF_EXP_INF);

int optd_optim_state_validate(const optd_optim_state_t *st, optd_err_t *err)
{
    const optd_optim_desc_t *d = optd_optim_desc(st->kind);
    if (!d)
        return optd_err_set(err, OPTD_EINVAL, "unknown optimizer kind %d", (int)st->kind);
    for (int b = 0; b < OPTD_BUF_COUNT; b++) {
        const char *name = buf_names[b];
        if (!st->buf[b]) {
            if (st->step > 0 && (required_bufs(st->kind) & BIT(b)))
                return optd_err_set(err, OPTD_EINVAL,
                                    "state.%s is missing: %s keeps it from its first step, and this "
                                    "state is at step %llu",
                                    name, d->name, (unsigned long long)st->step);
            continue;
        }
        if (!(d->bufs & BIT(b)))
            return optd_err_set(err, OPTD_EINVAL, "state: %s has no buffer '%s'", d->name, name);
        for (size_t i = 0; i < st->size; i++) {
            double x = st->dtype == OPTD_FLOAT32 ? (double)((const float *)st->buf[b])[i]
                                                 : ((const double *)st->buf[b])[i];
            if (!isfinite(x))
                return optd_err_set(err, OPTD_ENONFINITE, "state.%s[%zu]: every value must be finite", name, i);
            if (x < 0 && (nonneg_bufs & BIT(b))) {
                char got[32];
                return optd_err_set(err, OPTD_EINVAL,
                                    "state.%s[%zu] is %s; no run makes it negative", name, i,
                                    fmt_num(got, sizeof got, x));
            }
        }
    }
    if (d->has_mu_product) {
        double mp = st->mu_product;
        if (mp != mp && st->step > 0)
            return optd_err_set(err, OPTD_EINVAL,
                                "state.mu_product is missing: nadam keeps it from its first step, and "
                                "this state is at step %llu",
                                (unsigned long long)st->step);
        if (mp == mp && !(mp >= 0 && mp <= 1)) {
            char got[32];
            return optd_err_set(err, OPTD_EINVAL,
                                "state.mu_product is %s; a product of momentum factors is in [0, 1]",
                                fmt_num(got, sizeof got, mp));
        }
    }
    return 0;
}

/* ---- parameter groups ----------------------------------------------------------- */

int optd_groups_validate(optd_optim_kind_t kind, const optd_group_t *groups, size_t n_groups,
                         size_t size, optd_err_t *err)
{
    if (n_groups < 1 || n_groups > OPTD_GROUPS_MAX)
        return optd_err_set(err, OPTD_EINVAL, "groups: must hold 1 to %d groups, got %zu",
                            OPTD_GROUPS_MAX, n_groups);
    size_t sum = 0;
    for (size_t g = 0; g < n_groups; g++) {
        if (groups[g].size < 1 || groups[g].size > size - sum)
            return optd_err_set(err, OPTD_EINVAL,
                                "groups[%zu].size: each group holds at least 1 parameter and the "
                                "sizes sum to the session's size (%zu)",
                                g, size);
        sum += groups[g].size;
        optd_err_t e = {0};
        if (optd_hparams_validate(kind, &groups[g].hp, &e))
            return optd_err_set(err, OPTD_EINVAL, "groups[%zu].%s", g, e.msg);
    }
    if (sum != size)
        return optd_err_set(err, OPTD_EINVAL,
                            "groups: the sizes sum to %zu; the session has %zu parameters", sum, size);
    return 0;
}

/* True when v[lo, hi) (of dtype) holds a value other than zero. */
static bool any_nonzero(optd_dtype_t dtype, const void *v, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        if (dtype == OPTD_FLOAT32 ? ((const float *)v)[i] != 0 : ((const double *)v)[i] != 0)
            return true;
    return false;
}

int optd_optim_state_set_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                                optd_err_t *err)
{
    optd_group_state_t *gs = NULL;
    if (n_groups > 0 && !(gs = malloc(n_groups * sizeof *gs)))
        return optd_err_set(err, OPTD_ENOMEM, "cannot allocate the state of %zu groups", n_groups);
    const void *mom = st->buf[OPTD_BUF_MOMENTUM_BUFFER];
    size_t lo = 0;
    for (size_t g = 0; g < n_groups; g++) {
        size_t hi = lo + groups[g].size;
        gs[g].mu_product = st->mu_product;
        gs[g].momentum_started = optd_optimizer(st->kind)->momentum_from_grad && mom && hi <= st->size &&
                                 any_nonzero(st->dtype, mom, lo, hi);
        lo = hi;
    }
    free(st->groups);
    st->groups = gs;
    st->n_groups = n_groups;
    return 0;
}

int optd_optim_plan_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                           const optd_schedule_t *sched, double max_grad_norm, double grad_sumsq,
                           optd_step_plan_t *plans, optd_err_t *err)
{
    if (st->n_groups != n_groups || n_groups == 0)
        return optd_err_set(err, OPTD_EINVAL, "the state has %zu groups, the step %zu", st->n_groups,
                            n_groups);
    unsigned need = 0;
    for (size_t g = 0; g < n_groups; g++) {
        int rc = plan_inputs_finite(st, &groups[g].hp, sched, grad_sumsq, err);
        if (rc)
            return rc;
        need |= optd_optim_step_bufs(st->kind, &groups[g].hp);
    }
    unsigned fresh;
    int rc = alloc_missing(st, need, NULL, groups, n_groups, &fresh, err);
    if (rc)
        return rc;
    for (size_t g = 0; g < n_groups; g++) {
        memset(&plans[g], 0, sizeof plans[g]);
        /* A group's momentum buffer starts as g on its own first update
         * with momentum, as PyTorch's per-parameter buffer does. */
        plan_scalars(st, &groups[g].hp, sched, max_grad_norm, grad_sumsq, st->groups[g].mu_product,
                     !st->groups[g].momentum_started, &plans[g]);
        /* The O(1) bound is proved for one set of scalars over the whole
         * vector: a grouped step always checks its values first
         * (optd_optim_check over every group's range) and hands no bound
         * on.  plans[0] alone owns the fresh buffers, so that
         * optd_optim_abort(st, &plans[0]) frees them once. */
        plans[g].careful = true;
        plans[g].track = false;
        plans[g].fresh = g == 0 ? fresh : 0;
    }
    return 0;
}

void optd_optim_apply_groups(const optd_step_plan_t *plans, const optd_group_t *groups,
                             size_t n_groups, optd_optim_state_t *st, void *params,
                             const void *grad, size_t lo, size_t hi, optd_step_seen_t *seen)
{
    size_t start = 0;
    for (size_t g = 0; g < n_groups && start < hi; g++) {
        size_t end = start + groups[g].size;
        size_t a = lo > start ? lo : start, b = hi < end ? hi : end;
        if (a < b)
            optd_optim_apply(&plans[g], st, params, grad, a, b, seen);
        start = end;
    }
}

bool optd_optim_check_groups(const optd_step_plan_t *plans, const optd_group_t *groups,
                             size_t n_groups, const optd_optim_state_t *st, const void *params,
                             const void *grad, size_t lo, size_t hi, optd_step_fault_t *fault,
                             optd_step_seen_t *seen)
{
    size_t start = 0;
    for (size_t g = 0; g < n_groups && start < hi; g++) {
        size_t end = start + groups[g].size;
        size_t a = lo > start ? lo : start, b = hi < end ? hi : end;
        if (a < b && !optd_optim_check(&plans[g], st, params, grad, a, b, fault, seen))
            return false;
        start = end;
    }
    return true;
}

void optd_optim_commit_groups(optd_optim_state_t *st, const optd_step_plan_t *plans,
                              size_t n_groups)
{
    const optd_optimizer_t *o = optd_optimizer(st->kind);
    st->step = plans[0].t;
    for (size_t g = 0; g < n_groups; g++) {
        if (o->desc.has_mu_product)
            st->groups[g].mu_product = plans[g].mu_product_next;
        if (o->momentum_from_grad && (plans[g].writes & BIT(OPTD_BUF_MOMENTUM_BUFFER)))
            st->groups[g].momentum_started = true;
    }
    if (o->desc.has_mu_product)
        st->mu_product = st->groups[0].mu_product;
    /* Groups write parts of a buffer with different scalars: no bound of
     * the whole is handed on, so the next ungrouped step (after the groups
     * are dropped) proves nothing from stale bounds. */
    optd_optim_forget_bounds(st);
}

int optd_optim_step_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                           const optd_schedule_t *sched, double max_grad_norm, void *params,
                           const void *grad, optd_step_info_t *info, optd_err_t *err)
{
    bool finite = true;
    double sumsq = optd_grad_sumsq(st->dtype, grad, 0, st->size, &finite);
    if (!finite)
        return optd_err_set(err, OPTD_ENONFINITE, "the gradient contains NaN or infinite values");
    optd_step_plan_t *plans = malloc((n_groups ? n_groups : 1) * sizeof *plans);
    if (!plans)
        return optd_err_set(err, OPTD_ENOMEM, "cannot allocate the plans of %zu groups", n_groups);
    int rc = optd_optim_plan_groups(st, groups, n_groups, sched, max_grad_norm, sumsq, plans, err);
    if (rc == 0) {
        optd_step_fault_t fault;
        optd_step_seen_t seen;
        optd_step_seen_init(&seen);
        if (!optd_optim_check_groups(plans, groups, n_groups, st, params, grad, 0, st->size, &fault,
                                     &seen)) {
            rc = optd_optim_refuse(st, &plans[0], &fault, err);
        } else {
            optd_optim_apply_groups(plans, groups, n_groups, st, params, grad, 0, st->size, NULL);
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
