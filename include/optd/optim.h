/* optd/optim.h: the optimizer core, a pure library with no I/O and no locks.
 *
 * Eleven optimizers following PyTorch's torch.optim rules (OPTIMIZERS.md; within its
 * tolerance of PyTorch 1.13, not bit for bit: README, Exactness), for
 * float32 and float64 parameters, with learning-rate schedules and gradient
 * clipping by global L2 norm.  The daemon is built on it; it is usable
 * in-process too (link build/liboptd.a).
 *
 * Every optimizer, its hyperparameters, their defaults and their state
 * buffers come from one table (optd_optim_desc), so what the API lists is
 * what is implemented.
 *
 * Typical use:
 *     optd_hparams_t hp; optd_hparams_default(OPTD_ADAM, &hp); hp.lr = 1e-3;
 *     optd_optim_state_t st;
 *     optd_optim_state_init(&st, OPTD_ADAM, OPTD_FLOAT32, n, &hp, &err);
 *     optd_optim_step(&st, &hp, NULL, 0.0, params, grad, &info, &err);
 *     optd_optim_state_free(&st);
 *
 * A step never leaves a NaN or an infinity behind: one that would is refused
 * and changes nothing.  Params and buffers change only through steps (else
 * call optd_optim_forget_bounds: see optd_optim_state_t.bound).
 */
#ifndef OPTD_OPTIM_H
#define OPTD_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "optd/error.h"

/* ---- dtypes ------------------------------------------------------------ */

typedef enum optd_dtype {
    OPTD_FLOAT32 = 0,
    OPTD_FLOAT64 = 1
} optd_dtype_t;

size_t optd_dtype_size(optd_dtype_t dtype);            /* 4 or 8 */
const char *optd_dtype_name(optd_dtype_t dtype);       /* "float32", "float64" */
int optd_dtype_parse(const char *name, optd_dtype_t *out); /* 0 or OPTD_EINVAL */

/* ---- optimizers and their hyperparameters ------------------------------ */

/* Every optimizer, as X(KIND, name): its kind is OPTD_KIND and its
 * descriptor optd_optimizer_name, defined in daemon/optim/opt_*.c with
 * all that is its own (see daemon/optim/optimizer.h).  The kinds are
 * numbered in this order (snapshots name the optimizer, so the order is
 * not stored anywhere). */
#define OPTD_OPTIMIZERS(X)  \
    X(SGD, sgd)             \
    X(ADAGRAD, adagrad)     \
    X(RMSPROP, rmsprop)     \
    X(ADAM, adam)           \
    X(ADAMW, adamw)         \
    X(ADAMAX, adamax)       \
    X(NADAM, nadam)         \
    X(RADAM, radam)         \
    X(ADADELTA, adadelta)   \
    X(LION, lion)           \
    X(SPARSE_ADAM, sparse_adam) /* torch.optim.SparseAdam: for tables stepped by rows */

#define OPTD_OPTIM_KIND_(KIND, name) OPTD_##KIND,
typedef enum optd_optim_kind {
    OPTD_OPTIMIZERS(OPTD_OPTIM_KIND_)
    OPTD_OPTIM_COUNT
} optd_optim_kind_t;
#undef OPTD_OPTIM_KIND_

/* The union of every optimizer's hyperparameters, under PyTorch's keyword
 * names.  Each optimizer reads only the fields its descriptor lists. */
typedef struct optd_hparams {
    double lr;
    double momentum;
    double dampening;
    double weight_decay;
    double lr_decay;
    double initial_accumulator_value;
    double eps;
    double alpha;
    double momentum_decay;
    double rho;
    double betas[2];
    bool nesterov;
    bool centered;
    bool amsgrad;
    bool maximize;
} optd_hparams_t;

typedef enum optd_hparam_type {
    OPTD_HP_REAL = 0, /* a double field */
    OPTD_HP_BOOL,     /* a bool field */
    OPTD_HP_PAIR      /* a double[2] field (betas) */
} optd_hparam_type_t;

typedef struct optd_hparam_desc {
    const char *name;        /* PyTorch keyword: "lr", "betas", ... */
    optd_hparam_type_t type;
    size_t offset;           /* offsetof(optd_hparams_t, field) */
    double def[2];           /* default; bools 0/1; def[1] only for pairs */
} optd_hparam_desc_t;

/* State buffers, named as in PyTorch's state_dict. */
typedef enum optd_buf {
    OPTD_BUF_MOMENTUM_BUFFER = 0,
    OPTD_BUF_SUM,
    OPTD_BUF_SQUARE_AVG,
    OPTD_BUF_GRAD_AVG,
    OPTD_BUF_EXP_AVG,
    OPTD_BUF_EXP_AVG_SQ,
    OPTD_BUF_MAX_EXP_AVG_SQ,
    OPTD_BUF_EXP_INF,
    OPTD_BUF_ACC_DELTA,
    OPTD_BUF_COUNT
} optd_buf_t;

typedef struct optd_optim_desc {
    const char *name;                  /* "adam" */
    optd_optim_kind_t kind;
    size_t n_hparams;
    const optd_hparam_desc_t *hparams; /* in the order the API prints them */
    unsigned bufs;                     /* bit (1u << optd_buf_t) per buffer it may keep */
    unsigned required_bufs;            /* those every step uses (allocated at init); the
                                          rest of bufs an option switches on */
    bool has_mu_product;               /* nadam's scalar state */
    bool sparse_rows;                  /* has PyTorch's sparse rule: takes rows steps
                                          (within optd_optim_rows_supported's options) */
} optd_optim_desc_t;

/* The descriptor of kind (never NULL for kind < OPTD_OPTIM_COUNT). */
const optd_optim_desc_t *optd_optim_desc(optd_optim_kind_t kind);
/* Finds an optimizer by API name: 0, or OPTD_EINVAL (message lists the names). */
int optd_optim_lookup(const char *name, optd_optim_kind_t *out, optd_err_t *err);
/* Fills hp with kind's defaults (fields kind does not use are zero). */
void optd_hparams_default(optd_optim_kind_t kind, optd_hparams_t *hp);
/* The hyperparameter of kind called name, or NULL. */
const optd_hparam_desc_t *optd_hparam_find(optd_optim_kind_t kind, const char *name);
/* API.md's Validation: 0, or OPTD_EINVAL with a message naming the field and
 * its allowed range.  Checks only the fields kind uses. */
int optd_hparams_validate(optd_optim_kind_t kind, const optd_hparams_t *hp, optd_err_t *err);

const char *optd_buf_name(optd_buf_t buf);  /* "exp_avg", ... */
int optd_buf_lookup(const char *name);      /* the optd_buf_t, or -1 */

/* API.md's Validation for max_grad_norm (finite, >= 0; 0 = no clipping):
 * 0 or OPTD_EINVAL with a message. */
int optd_clip_validate(double max_grad_norm, optd_err_t *err);

/* ---- schedules ----------------------------------------------------------- */

typedef enum optd_sched_type {
    OPTD_SCHED_NONE = 0,
    OPTD_SCHED_CONSTANT,
    OPTD_SCHED_STEP,
    OPTD_SCHED_EXPONENTIAL,
    OPTD_SCHED_COSINE
} optd_sched_type_t;

typedef struct optd_schedule {
    optd_sched_type_t type;
    int64_t step_size;    /* step */
    double gamma;         /* step, exponential */
    int64_t t_max;        /* cosine */
    double eta_min;       /* cosine */
    int64_t warmup_steps; /* any type; 0 = no warmup */
} optd_schedule_t;

const char *optd_sched_type_name(optd_sched_type_t type); /* "cosine", ... */
int optd_sched_type_parse(const char *name, optd_sched_type_t *out); /* 0 or OPTD_EINVAL */
/* API.md's Validation for schedules: 0 or OPTD_EINVAL with a message. */
int optd_schedule_validate(const optd_schedule_t *s, optd_err_t *err);
/* The learning rate of step k (k = 1 for the first update), given the lr
 * hyperparameter in force; s may be NULL (no schedule).  In double. */
double optd_schedule_lr(const optd_schedule_t *s, double lr, uint64_t k);

/* ---- optimizer state ------------------------------------------------------ */

/* What each parameter group keeps of its own (PyTorch keeps it per
 * parameter, the same for every parameter of a group). */
typedef struct optd_group_state {
    double mu_product;     /* nadam: a value of the dtype, starts at 1 */
    bool momentum_started; /* sgd: the group's part of momentum_buffer holds a buffer */
} optd_group_state_t;

typedef struct optd_optim_state {
    optd_optim_kind_t kind;
    optd_dtype_t dtype;
    size_t size;               /* elements in params and every buffer */
    uint64_t step;             /* updates applied so far */
    void *buf[OPTD_BUF_COUNT]; /* NULL where not kept (yet); else size elements of dtype */
    double mu_product;         /* nadam only; a value of the dtype, starts at 1 */
    /* At least the largest magnitude in each buffer (index OPTD_BUF_COUNT:
     * in the parameters) as the last step left it, for the indices whose
     * bit is set in bound_known.  Carried by every step, it lets the next
     * one prove in O(1) that it stays finite (optd_optim_plan).  A zeroed
     * state knows nothing; whoever changes params or a buffer other than
     * by a step calls optd_optim_forget_bounds. */
    double bound[OPTD_BUF_COUNT + 1];
    unsigned bound_known;
    size_t n_groups;           /* 0: no parameter groups (groups is NULL) */
    optd_group_state_t *groups; /* n_groups entries (malloc'd, owned by the state) */
} optd_optim_state_t;

/* Sets st up for kind with step 0 and allocates the buffers every step of
 * kind needs (zeros; adagrad's sum at initial_accumulator_value).  Buffers
 * an option turns on (momentum, centered, amsgrad) are allocated by the
 * first step that uses them.  0, OPTD_ENOMEM, or OPTD_EINVAL (size 0). */
int optd_optim_state_init(optd_optim_state_t *st, optd_optim_kind_t kind, optd_dtype_t dtype,
                          size_t size, const optd_hparams_t *hp, optd_err_t *err);
/* Frees st's buffers; st may be zeroed or already freed. */
void optd_optim_state_free(optd_optim_state_t *st);
/* Deep copy: dst must not hold buffers.  0 or OPTD_ENOMEM (dst left empty). */
int optd_optim_state_copy(optd_optim_state_t *dst, const optd_optim_state_t *src, optd_err_t *err);
/* The buffers (bit 1u << optd_buf_t each) a step of kind allocates, if
 * missing, with these options: what a session must budget for. */
unsigned optd_optim_step_bufs(optd_optim_kind_t kind, const optd_hparams_t *hp);
/* Bytes held by st's buffers (for memory accounting). */
size_t optd_optim_state_bytes(const optd_optim_state_t *st);
/* Forgets st's bounds (see optd_optim_state_t.bound): the next step checks
 * every value it would write before writing any. */
void optd_optim_forget_bounds(optd_optim_state_t *st);
/* Checks that st could come from a run of kind with hp (API.md 1.1, "State
 * import checks the state"): every buffer each step of kind needs is there
 * once st->step > 0 (buffers an option switches on may be missing at any
 * step: the first step using one starts it), only buffers kind has,
 * finite values, no negative value in a buffer of squares or maxima
 * (exp_avg_sq, max_exp_avg_sq, sum, square_avg, acc_delta, exp_inf), and
 * nadam's mu_product in [0, 1] (0 once the product underflows, as a long
 * float32 run's does; NaN stands for missing, allowed at step 0 only).
 * 0 or OPTD_EINVAL / OPTD_ENONFINITE naming the field and index. */
int optd_optim_state_validate(const optd_optim_state_t *st, optd_err_t *err);

/* ---- one update ------------------------------------------------------------ */

typedef struct optd_step_info {
    double lr;        /* the scheduled lr this step used */
    double grad_norm; /* L2 norm of the gradient as given (before clipping) */
} optd_step_info_t;

/* Applies one update of st's optimizer to params with grad (both st->size
 * elements of st->dtype; grad is not modified), in this order: refuse a
 * non-finite gradient (OPTD_ENONFINITE, nothing changed), clip to
 * max_grad_norm (> 0 turns clipping on), negate if maximize, then the rule of
 * OPTIMIZERS.md with lr = optd_schedule_lr(sched, hp->lr, st->step + 1).
 * An update that would make any parameter or state value NaN or infinite
 * (an overflow, eps 0 on a zero gradient, a diverging lr), or whose
 * gradient norm or lr is not finite, is refused with OPTD_ENONFINITE naming
 * the first such index.  On success st->step is incremented and info (may
 * be NULL) filled.  Errors change nothing: OPTD_ENONFINITE, OPTD_ENOMEM (a
 * lazily created buffer could not be allocated). */
int optd_optim_step(optd_optim_state_t *st, const optd_hparams_t *hp, const optd_schedule_t *sched,
                    double max_grad_norm, void *params, const void *grad, optd_step_info_t *info,
                    optd_err_t *err);

/* The same update split in parts, so a large one can be spread over threads:
 *   optd_grad_sumsq over disjoint ranges, summed  (also detects non-finite)
 *   optd_optim_plan once   (per-step scalars in double, lazily created buffers,
 *                           and whether the O(1) bound proves the step finite)
 *   only when plan.careful: optd_optim_check over disjoint ranges, in any
 *                           threads, each into its own optd_step_seen_t; if
 *                           one finds a fault, optd_optim_refuse once and
 *                           stop (nothing has changed); else merge them
 *   optd_optim_apply over disjoint ranges [lo, hi), in any threads (when
 *                           plan.track, each into its own optd_step_seen_t)
 *   optd_optim_commit once (step count, nadam's mu_product, the bounds)
 * optd_optim_step is exactly these on the whole range.  A plan that is
 * dropped without commit is undone with optd_optim_abort. */
/* The scalars of one step, computed in double by optd_optim_plan and
 * rounded once to the dtype by the kernel: each optimizer's own struct,
 * private to its file (a scalar read for the wrong optimizer does not
 * compile), kept here as opaque bytes. */
typedef struct optd_plan_scalars {
    unsigned char opaque[128];
} optd_plan_scalars_t;

typedef struct optd_step_plan {
    optd_optim_kind_t kind;
    optd_dtype_t dtype;
    uint64_t t;           /* the step number being applied (st->step + 1) */
    double lr;
    double grad_norm;
    double gscale;        /* clip coefficient, negated when maximize */
    optd_plan_scalars_t sc; /* the optimizer's own scalars and options */
    double mu_product_next;
    unsigned fresh;       /* buffers this plan created (bit per optd_buf_t) */
    unsigned writes;      /* what the step writes (bit per optd_buf_t, OPTD_BUF_COUNT: params) */
    bool rows;            /* a rows step (optd_optim_step_rows): the sparse rules */
    bool careful;         /* the bound could not prove the step finite: check first */
    bool track;           /* keep what apply writes (see optd_optim_apply) */
    double next_bound[OPTD_BUF_COUNT + 1]; /* when not careful: bounds of what it writes, */
    unsigned next_known;                   /* for these bits */
} optd_step_plan_t;

/* What a checked update would write: max[b] the largest magnitude written
 * to buffer b (max[OPTD_BUF_COUNT]: to the parameters), -1 where nothing. */
typedef struct optd_step_seen {
    double max[OPTD_BUF_COUNT + 1];
} optd_step_seen_t;

/* Where a checked update would first go non-finite. */
typedef struct optd_step_fault {
    size_t index;  /* element index */
    int buf;       /* the optd_buf_t written, or OPTD_BUF_COUNT for the parameters */
    bool nan;      /* NaN, else infinite */
} optd_step_fault_t;

void optd_step_seen_init(optd_step_seen_t *seen);            /* nothing written */
void optd_step_seen_merge(optd_step_seen_t *into, const optd_step_seen_t *from);

/* Sum of squares of grad[lo, hi) in double.  *finite is set false if any
 * element is NaN or +-Inf (it is never set true). */
double optd_grad_sumsq(optd_dtype_t dtype, const void *grad, size_t lo, size_t hi, bool *finite);
/* grad_sumsq is the whole gradient's sum of squares, from optd_grad_sumsq.
 * 0, OPTD_ENOMEM, or OPTD_ENONFINITE (the norm overflows a double, or the
 * scheduled lr is not finite); nothing in st's values changes here. */
int optd_optim_plan(optd_optim_state_t *st, const optd_hparams_t *hp, const optd_schedule_t *sched,
                    double max_grad_norm, double grad_sumsq, optd_step_plan_t *plan, optd_err_t *err);
/* Computes the update of [lo, hi) aside, writing nothing: true when every
 * value it would write is finite (and merges their largest magnitudes into
 * *seen), else false with *fault the first. */
bool optd_optim_check(const optd_step_plan_t *plan, const optd_optim_state_t *st, const void *params,
                      const void *grad, size_t lo, size_t hi, optd_step_fault_t *fault,
                      optd_step_seen_t *seen);
/* Undoes plan (frees the buffers it created) and returns OPTD_ENONFINITE
 * with a message naming fault's index and value. */
int optd_optim_refuse(optd_optim_state_t *st, const optd_step_plan_t *plan,
                      const optd_step_fault_t *fault, optd_err_t *err);
void optd_optim_abort(optd_optim_state_t *st, const optd_step_plan_t *plan);
/* Updates [lo, hi) in place.  With seen (may be NULL), also merges the
 * largest magnitudes it writes into *seen: worth it when plan.track (coupled
 * weight decay feeds the parameters back into the gradient, so bounds
 * carried over without measuring would loosen geometrically), else the
 * plain loop runs. */
void optd_optim_apply(const optd_step_plan_t *plan, optd_optim_state_t *st, void *params,
                      const void *grad, size_t lo, size_t hi, optd_step_seen_t *seen);
/* seen: what the checks of a careful plan, or the applies of a tracked one,
 * merged over all ranges; NULL otherwise (the plan's own bounds then carry
 * over, looser). */
void optd_optim_commit(optd_optim_state_t *st, const optd_step_plan_t *plan,
                       const optd_step_seen_t *seen);

/* ---- sparse rows (API.md 1.1, Tables; OPTIMIZERS.md, Sparse rows) ---------- */

/* 0 when a rows step may run on st's optimizer with hp and n_groups
 * groups (sparse_adam; adagrad with weight_decay 0; sgd with momentum 0 and
 * weight_decay 0; no groups), else OPTD_EINVAL saying why. */
int optd_optim_rows_supported(optd_optim_kind_t kind, const optd_hparams_t *hp, size_t n_groups,
                              optd_err_t *err);

/* One update that touches only the rows listed: the vector is st->size /
 * row_size rows of row_size elements; rows[0, n_rows) are row numbers
 * (each below st->size / row_size, repeats allowed) and grad holds
 * n_rows * row_size values of st->dtype, row after row.  Repeated rows are
 * summed in the order given, then, as optd_optim_step does: refuse a
 * non-finite gradient, clip by the norm of the summed values, negate if
 * maximize, and the sparse rule of st's optimizer on those rows only
 * (params and state alike); st->step counts the step.  Cost and scratch
 * memory are in proportion to n_rows * row_size, never to st->size.
 * info->grad_norm is the norm of the summed values.  Errors change
 * nothing: OPTD_EINVAL (optimizer or options without a sparse rule, a row
 * out of range, no rows), OPTD_ENONFINITE, OPTD_ENOMEM. */
int optd_optim_step_rows(optd_optim_state_t *st, const optd_hparams_t *hp,
                         const optd_schedule_t *sched, double max_grad_norm, size_t row_size,
                         void *params, const uint64_t *rows, size_t n_rows, const void *grad,
                         optd_step_info_t *info, optd_err_t *err);

/* ---- parameter groups (PyTorch's param_groups) ------------------------------ */

/* One group: the next `size` parameters of the vector, updated with `hp`. */
typedef struct optd_group {
    size_t size;
    optd_hparams_t hp;
} optd_group_t;

#define OPTD_GROUPS_MAX 1024

/* Checks that groups cut a vector of size elements (each >= 1, summing to
 * size, 1..OPTD_GROUPS_MAX of them) and validates every group's
 * hyperparameters: 0 or OPTD_EINVAL naming the group ("groups[1].lr ..."). */
int optd_groups_validate(optd_optim_kind_t kind, const optd_group_t *groups, size_t n_groups,
                         size_t size, optd_err_t *err);

/* Gives st per-group state for n_groups groups (replacing any): each
 * group's mu_product starts at st->mu_product, and an sgd group's momentum
 * counts as started when its part of momentum_buffer exists and is not all
 * zeros.  n_groups 0 drops the group state.  0 or OPTD_ENOMEM (st unchanged). */
int optd_optim_state_set_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                                optd_err_t *err);

/* One update of a vector cut into groups, each with its own
 * hyperparameters (st must have group state for these n_groups, from
 * optd_optim_state_set_groups): gradient clipping by the norm over all
 * groups, every group's lr scaled by the same schedule, then each group's
 * rule with its own values.  info->lr is group 0's scheduled lr.  The same
 * errors as optd_optim_step (OPTD_ENONFINITE when any value the update
 * would write is not finite), and nothing changed on error.  In pieces for
 * threads: optd_optim_plan_groups fills plans[n_groups] (every plan
 * careful: a grouped step has no O(1) bound); optd_optim_check_groups over
 * disjoint ranges, all of them before any apply (on a fault,
 * optd_optim_refuse(st, &plans[0], ...) undoes the plans);
 * optd_optim_apply_groups over the same ranges; optd_optim_commit_groups,
 * which forgets the bounds. */
int optd_optim_step_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                           const optd_schedule_t *sched, double max_grad_norm, void *params,
                           const void *grad, optd_step_info_t *info, optd_err_t *err);
int optd_optim_plan_groups(optd_optim_state_t *st, const optd_group_t *groups, size_t n_groups,
                           const optd_schedule_t *sched, double max_grad_norm, double grad_sumsq,
                           optd_step_plan_t *plans, optd_err_t *err);
bool optd_optim_check_groups(const optd_step_plan_t *plans, const optd_group_t *groups,
                             size_t n_groups, const optd_optim_state_t *st, const void *params,
                             const void *grad, size_t lo, size_t hi, optd_step_fault_t *fault,
                             optd_step_seen_t *seen);
void optd_optim_apply_groups(const optd_step_plan_t *plans, const optd_group_t *groups,
                             size_t n_groups, optd_optim_state_t *st, void *params,
                             const void *grad, size_t lo, size_t hi, optd_step_seen_t *seen);
void optd_optim_commit_groups(optd_optim_state_t *st, const optd_step_plan_t *plans,
                              size_t n_groups);

/* True when every element of v (n of dtype) is finite. */
bool optd_all_finite(optd_dtype_t dtype, const void *v, size_t n);

#endif
