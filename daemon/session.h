/* session.h: one named optimizer session: its configuration, parameters,
 * optimizer state, schedule, labels, timestamps and step history.
 *
 * A session is shared between request threads through the store and
 * reference counted; its own mutex guards every field below `mu` and is
 * held for an update and for copying data out, never across network I/O.
 * Encoding (JSON, snapshot files) works on copies taken with
 * optd_session_copy_* so no lock is held while encoding.
 *
 * This header is what the HTTP layer and the codecs use.  The store, the
 * persistence layer and the session's own files also include
 * session_internal.h: the durability and memory hooks, journal replay,
 * dirty tracking, and the locked steps of a round and of a batch.  The
 * struct's fields marked "store", "persistence" or "rounds" below are
 * theirs (libuv's private fields): nothing else reads or writes them. */
#ifndef OPTD_SESSION_H
#define OPTD_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "optd/error.h"
#include "optd/optim.h"
#include "round.h"
#include "uthash.h"

#define OPTD_NAME_MAX 128
#define OPTD_LABELS_MAX 32
#define OPTD_LABEL_KEY_MAX 64
#define OPTD_LABEL_VALUE_MAX 256

/* One label; key and value are malloc'd strings owned by the config (or
 * query) holding them.  Kept on the heap, not in fixed arrays, because 32
 * labels of 64 + 256 bytes in every session would cost ~10 KB each. */
typedef struct optd_label {
    char *key;   /* 1..OPTD_LABEL_KEY_MAX bytes */
    char *value; /* 0..OPTD_LABEL_VALUE_MAX bytes */
} optd_label_t;

/* Everything a client sets: what create takes and PATCH changes.  A config
 * owns its labels and groups arrays: copy one with optd_session_config_copy,
 * free it with optd_session_config_free (a plain struct assignment shares
 * them). */
typedef struct optd_session_config {
    optd_optim_kind_t kind;
    optd_dtype_t dtype;
    optd_hparams_t hp;
    bool has_schedule;
    optd_schedule_t schedule;
    double max_grad_norm; /* 0: clipping off */
    size_t n_labels;
    optd_label_t *labels; /* n_labels entries (malloc'd), or NULL */
    int64_t ttl_seconds;  /* 0: no idle expiry */
    size_t n_groups;      /* 0: no parameter groups (every parameter uses hp) */
    optd_group_t *groups; /* n_groups entries (malloc'd), each with every value in force */
    optd_aggregate_t aggregate; /* workers 0: a plain session (round.h) */
    size_t row_size;      /* a table of size / row_size rows (API.md 1.1, Tables); 0 means 1.
                             Set at create only: PATCH keeps it */
} optd_session_config_t;

/* The row size of cfg's sessions: 1 unless create gave one. */
static inline size_t optd_session_row_size(const optd_session_config_t *cfg)
{
    return cfg->row_size > 1 ? cfg->row_size : 1;
}

typedef struct optd_history_entry {
    uint64_t step;
    double lr;
    double grad_norm;
    double loss;
    bool has_loss;
    int64_t time_ms; /* Unix time in milliseconds */
    uint32_t contributions; /* a round's step: how many workers it reduced; 0: a plain step */
    uint64_t rows;   /* a rows step: the rows it listed; 0: a dense step */
} optd_history_entry_t;

/* The losses the session's steps reported, kept since creation (not only
 * over the history window): what a tuning service ranks trials by. */
typedef struct optd_loss_summary {
    bool has;             /* false until a step carries a loss */
    double last, best;    /* best: the lowest; the first of equal ones */
    uint64_t last_step, best_step;
} optd_loss_summary_t;

/* Folds the loss of the step that made the session's step count `step`
 * into *ls. */
void optd_loss_summary_add(optd_loss_summary_t *ls, uint64_t step, double loss);

/* What a descriptor shows, copied out under the session's lock.  cfg is a
 * deep copy: free it with optd_session_config_free. */
typedef struct optd_session_desc {
    optd_session_config_t cfg;
    size_t size;
    uint64_t step;
    int64_t created_ms, updated_ms;
    optd_loss_summary_t loss;
    /* The pending round (aggregating sessions): round_on says whether the
     * session aggregates; round_workers holds round_n names (malloc'd). */
    bool round_on;
    uint64_t round_step;
    size_t round_n;
    char (*round_workers)[OPTD_WORKER_NAME_MAX + 1];
    int64_t round_applied_ns;      /* optd_session_patch: a round it applied stayed open
                                      this long (ns); -1: none */
} optd_session_desc_t;

/* Frees what a descriptor copy holds (its cfg and round names). */
void optd_session_desc_free(optd_session_desc_t *d);

/* A complete, unshared copy of a session: what GET .../state exports, PUT
 * .../state imports and a snapshot file holds.  Owns params, state buffers
 * and history. */
typedef struct optd_session_image {
    char name[OPTD_NAME_MAX + 1];
    optd_session_config_t cfg;
    size_t size;
    void *params;                  /* size elements of cfg.dtype */
    optd_optim_state_t st;         /* st.step is the session's step */
    int64_t created_ms, updated_ms;
    optd_loss_summary_t loss;
    size_t n_history;              /* oldest first */
    optd_history_entry_t *history;
    optd_worker_steps_t worker_steps; /* aggregating: each worker's last applied step */
} optd_session_image_t;

struct optd_session;
struct optd_pool;
struct optd_durability;   /* session_internal.h */
struct optd_mem_account;  /* session_internal.h */

/* Where a step runs, passed with each step rather than kept in the
 * session: the threads it may be spread over and how it is made durable. */
typedef struct optd_step_ctx {
    struct optd_pool *pool;        /* NULL: the caller's thread */
    const struct optd_durability *dur; /* NULL: memory only (and journal replay) */
} optd_step_ctx_t;

/* One step's input. */
typedef struct optd_step_input {
    const void *grad;              /* size elements of the session's dtype, or with rows
                                      n_rows * row_size of them, row after row */
    const uint64_t *rows;          /* a rows step (API.md 1.1, Tables): the rows listed,
                                      each below size / row_size; NULL: a dense step */
    size_t n_rows;
    const uint64_t *expect_step;   /* NULL: whatever the step */
    const double *loss;            /* NULL: none */
    int64_t time_ms;               /* 0: now; replay passes the recorded time */
    size_t n_workers;              /* a round's reduced gradient: its contributions */
    const optd_contribution_t *workers;
} optd_step_input_t;

/* Someone waiting on a session (a long poll, a contribution's request),
 * registered with optd_session_watch.  The session calls wake, with its
 * mutex held, once: when the step reaches min_step, when the round of
 * `outcome` is resolved, or when the session goes (deleted, replaced,
 * its round dropped: why says which).  wake must not block or take the
 * session's lock; the watch is unlinked before it is called. */
enum { OPTD_WATCH_STEP = 1, OPTD_WATCH_ROUND = 2, OPTD_WATCH_GONE = 3 };
typedef struct optd_watch {
    struct optd_watch *prev, *next;
    bool linked;
    uint64_t min_step;             /* UINT64_MAX: not woken by steps */
    const optd_round_outcome_t *outcome; /* NULL: not a contribution */
    void (*wake)(struct optd_watch *w, int why);
} optd_watch_t;

/* The journal records that a session's snapshot on disk does not hold
 * yet: the deltas beside that base image.  Kept by the persistence layer
 * (optd_session_add_delta_locked, from its hooks and from replay) so that
 * it can leave a big session whose changes are small to its journal
 * records instead of rewriting it whole every flush. */
typedef struct optd_session_deltas {
    uint64_t first_lsn;   /* the oldest such record (0: none) */
    uint64_t bytes;       /* their bytes in the journal */
    uint64_t images;      /* how many of them are whole images (create, patch, import) */
    uint64_t unjournaled; /* changes that no record holds (a failed append with
                             --sync interval): only a snapshot can hold them */
} optd_session_deltas_t;

typedef struct optd_session {
    char name[OPTD_NAME_MAX + 1];
    atomic_int refs;               /* the store's reference plus one per user */
    atomic_llong accessed_ms;      /* last read or write, for ttl expiry */
    UT_hash_handle hh;             /* store: its table; guarded by its lock */

    const struct optd_durability *dur; /* store: set on insert, for whole-session
                                      changes (config); NULL: memory only.  A step
                                      gets its hook in its optd_step_ctx_t. */
    const struct optd_mem_account *mem; /* store: where `charged` was reserved; NULL: not counted */
    pthread_mutex_t mu;            /* guards everything below */
    size_t charged;                /* bytes reserved for this session, returned to mem
                                      when the session is freed (optd_session_bytes) */
    bool deleted;                  /* removed from the store; refuse further changes
                                      (read and written with __atomic builtins so
                                      persistence may peek without the mutex) */
    optd_session_config_t cfg;
    size_t size;
    void *params;
    optd_optim_state_t st;
    int64_t created_ms, updated_ms;
    optd_loss_summary_t loss;
    optd_history_entry_t *history; /* ring of history_alloc entries, grown on demand */
    size_t history_cap;            /* the most kept (--history) */
    size_t history_alloc;          /* entries allocated, <= history_cap */
    size_t history_head;           /* index of the oldest entry */
    size_t history_len;
    uint64_t version;              /* persistence: bumped by every change (dirty tracking) */
    uint64_t saved_version;        /* persistence: version last made durable */
    uint64_t lsn;                  /* persistence: sequence number of the last
                                      journal record of this session (0: none) */
    optd_round_t *round;           /* rounds: the pending round, or NULL (memory only) */
    optd_worker_steps_t worker_steps; /* rounds: each worker's last applied contribution step */
    optd_watch_t *watchers;        /* rounds: waiting requests (optd_session_watch) */
    optd_session_deltas_t deltas;  /* persistence: the records since its snapshot */
} optd_session_t;

/* Current wall-clock time in Unix milliseconds. */
int64_t optd_now_ms(void);

/* Checks a session name against ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$. */
bool optd_session_name_valid(const char *name);

/* Deep copy of src into dst (dst's previous contents are not freed):
 * 0 or OPTD_ENOMEM (dst then holds no labels). */
int optd_session_config_copy(optd_session_config_t *dst, const optd_session_config_t *src,
                             optd_err_t *err);
/* Frees cfg's labels (n_labels becomes 0); cfg may be zeroed. */
void optd_session_config_free(optd_session_config_t *cfg);
/* Frees cfg's labels only (n_labels becomes 0). */
void optd_session_config_free_labels(optd_session_config_t *cfg);
/* Appends key = value to cfg's labels, copying both; replaces the value if
 * key is already there.  0, OPTD_EINVAL (too many labels, key empty or over
 * 64 bytes, value over 256 bytes) or OPTD_ENOMEM. */
int optd_session_config_add_label(optd_session_config_t *cfg, const char *key, const char *value,
                                  optd_err_t *err);

/* Validates cfg as a whole (hyperparameters, schedule, max_grad_norm >= 0,
 * labels, ttl >= 0, each group's hyperparameters): 0 or OPTD_EINVAL naming
 * the field.  Group sizes are checked against a session's size where one
 * is created or changed. */
int optd_session_config_validate(const optd_session_config_t *cfg, optd_err_t *err);

/* Gives cfg n parameter groups (replacing any), of these sizes, each with
 * cfg->hp: 0 or OPTD_ENOMEM. */
int optd_session_config_set_groups(optd_session_config_t *cfg, const size_t *sizes, size_t n,
                                   optd_err_t *err);

/* A new session with refs = 1 (the caller's) and step 0.  params (size
 * elements of cfg->dtype) is copied; NULL means zeros.  history_cap is the
 * --history setting.  Errors: OPTD_EINVAL (name, cfg, size 0, non-finite
 * params), OPTD_ENOMEM. */
int optd_session_create(const char *name, const optd_session_config_t *cfg, size_t size,
                        const void *params, size_t history_cap, optd_session_t **out,
                        optd_err_t *err);

/* A new session (refs = 1) from an image: takes ownership of img's params,
 * state and history (img is left empty).  Used by import and by loading
 * snapshots.  Errors: OPTD_EINVAL, OPTD_ENOMEM. */
int optd_session_from_image_take(optd_session_image_t *img, size_t history_cap,
                                 optd_session_t **out, optd_err_t *err);


/* Frees an image's buffers; img may be zeroed. */
void optd_session_image_free(optd_session_image_t *img);

/* Takes another reference / drops one (the last frees the session). */
void optd_session_retain(optd_session_t *s);
void optd_session_release(optd_session_t *s);

/* Copies of a session's data, taken under its lock.  The descriptor's cfg
 * is a deep copy: free it with optd_session_config_free.  0 or OPTD_ENOMEM
 * (d->cfg then holds no labels). */
int optd_session_copy_descriptor(optd_session_t *s, optd_session_desc_t *d, optd_err_t *err);
/* Full image (for state export, fork and snapshots): 0 or OPTD_ENOMEM. */
int optd_session_copy_image(optd_session_t *s, optd_session_image_t *img, optd_err_t *err);
/* Copies the values of rows[0, n_rows) (each below size / row_size, in the
 * order listed: n_rows * row_size values) into out and returns the step. */
uint64_t optd_session_copy_rows(optd_session_t *s, const uint64_t *rows, size_t n_rows, void *out);
/* Copies params into out (size * dtype bytes) and returns the step. */
uint64_t optd_session_copy_params(optd_session_t *s, void *out);
/* History entries with step > after_step, the newest `limit` of them
 * (limit 0: all), oldest first; *out is malloc'd (caller frees).  0 or
 * OPTD_ENOMEM. */
int optd_session_copy_history(optd_session_t *s, uint64_t after_step, size_t limit,
                              optd_history_entry_t **out, size_t *n, optd_err_t *err);

/* One step of a batch (optd_session_apply_batch). */
typedef struct optd_batch_step {
    struct optd_session *s;    /* its session (a reference the caller holds) */
    optd_step_input_t in;
    void *params_out;          /* NULL, or room for the params after the step */
    int rc;                    /* 0 or the step's error (in err); set on entry: skipped */
    uint64_t step;             /* the step after it; with OPTD_ESTEP the current step */
    optd_err_t err;
} optd_batch_step_t;

/* optd_session_apply in memory only, on the caller's thread, at the time
 * now (for tests and in-process use). */
int optd_session_step(optd_session_t *s, const void *grad, const uint64_t *expect_step,
                      const double *loss, uint64_t *step_out, void *params_out, optd_err_t *err);

/* Replaces the parameters (size elements of the session's dtype), keeping
 * the optimizer state and the step count.  expect_step as in a step; on
 * success *step_out is the step.  Errors change nothing: OPTD_ESTEP,
 * OPTD_ENONFINITE, OPTD_ENOMEM, OPTD_ENOTFOUND, OPTD_EIO. */
int optd_session_set_params(optd_session_t *s, const void *params, const uint64_t *expect_step,
                            uint64_t *step_out, optd_err_t *err);

/* A PATCH as parsed: only the fields marked set change.  Hyperparameters
 * are named by their index in optd_optim_desc(kind)->hparams (bit i of
 * hp_set: hparams[i] takes its value from hp), so they can only be merged
 * into a session of that optimizer.  Owns its labels (free with
 * optd_session_patch_free). */
/* One entry of a PATCH's "groups": the group's keys it sets (hp_set as
 * below) and, when given, the size it must already have. */
typedef struct optd_session_patch_group {
    uint32_t hp_set;
    optd_hparams_t hp;
    size_t size; /* 0: not given */
} optd_session_patch_group_t;

typedef struct optd_session_patch {
    optd_optim_kind_t kind;        /* the optimizer hp_set was read for */
    bool check_kind;               /* the body named an optimizer: must be want_kind */
    optd_optim_kind_t want_kind;
    bool check_dtype;              /* the body named a dtype: must be dtype */
    optd_dtype_t dtype;
    uint32_t hp_set;
    optd_hparams_t hp;
    bool set_schedule, has_schedule;
    optd_schedule_t schedule;
    bool set_max_grad_norm;
    double max_grad_norm;
    bool set_labels;
    size_t n_labels;
    optd_label_t *labels;
    bool set_ttl;
    int64_t ttl_seconds;
    size_t n_groups;                    /* "groups": one entry per group (0: not given) */
    optd_session_patch_group_t *groups; /* n_groups entries (malloc'd, owned) */
    bool set_aggregate;                 /* "aggregate" given (workers 0: null, off) */
    optd_aggregate_t aggregate;
} optd_session_patch_t;

void optd_session_patch_free(optd_session_patch_t *p);

/* ---- rounds (session_round.c) ---- */

/* Why a contribution was refused with OPTD_ESTEP (for the metrics). */
typedef enum optd_refusal {
    OPTD_REFUSED_NONE = 0,
    OPTD_REFUSED_STALE,    /* its step is ahead of the session, or behind the window by more than a round */
    OPTD_REFUSED_TOO_LATE, /* its step is one behind the window: its round closed without it (a backup) */
    OPTD_REFUSED_TWICE     /* its step is not after the worker's last applied contribution */
} optd_refusal_t;

/* What a contribution came to. */
typedef struct optd_contrib_result {
    int state;                     /* 0 pending, 1 applied now (by this one) */
    optd_round_outcome_t *outcome; /* the round's, with a reference for the caller */
    uint64_t step;                 /* OPTD_ESTEP: the session's step */
    optd_refusal_t refused;
    int64_t open_ns;               /* applied: how long the round stayed open */
} optd_contrib_result_t;

/* Registers w on s (false, not registered, when s is deleted or the wake
 * condition already holds: the step is at min_step, or the outcome is
 * done).  optd_session_unwatch unlinks it if still linked. */
bool optd_session_watch(optd_session_t *s, optd_watch_t *w);
void optd_session_unwatch(optd_session_t *s, optd_watch_t *w);

/* Merges p into s's configuration under s's lock, validates the result as
 * a whole, charges any memory the new options will need (momentum,
 * amsgrad, centered buffers; labels) and makes it durable; *out is the
 * session as it stands right after this change, taken under the same hold.
 * Returns 0; 1 when s's optimizer is no longer p->kind (it was replaced
 * meanwhile: read the body again for the new one, nothing changed); or an
 * error that changed nothing: OPTD_EINVAL, OPTD_ENOMEM, OPTD_ELIMIT,
 * OPTD_ENOTFOUND (deleted), OPTD_EIO. */
int optd_session_patch(optd_session_t *s, const optd_session_patch_t *p, optd_session_desc_t *out,
                       optd_err_t *err);

/* The most memory a session of cfg with size parameters can come to hold:
 * params, the state buffers its options use or already kept (kept_bufs,
 * bit 1u << optd_buf_t each), a full history of history_cap entries and
 * its labels.  Saturates at SIZE_MAX. */
size_t optd_session_bytes(const optd_session_config_t *cfg, size_t size, unsigned kept_bufs,
                          size_t history_cap);
/* The same, taking s's lock: what a copy of s (fork) comes to. */
size_t optd_session_bytes_now(optd_session_t *s);

/* Marks the session used now (ttl). */
void optd_session_touch(optd_session_t *s);

#endif
