/* session_internal.h: the parts of a session only the store
 * (store.c), persistence (persist.c, snapshot.c) and the session's own
 * files (session.c, session_round.c) use: how a change is made durable and
 * counted, journal replay and dirty tracking, and the steps that run with
 * the session's lock held.  The HTTP layer includes session.h alone and
 * reaches these through the store. */
#ifndef OPTD_SESSION_INTERNAL_H
#define OPTD_SESSION_INTERNAL_H

#include "session.h"

/* A step as it is made durable: its input, made definite (the step count
 * it applies at, the time it is recorded with).  Replaying it through the
 * same apply gives the same bits and the same history (the kernels are
 * deterministic), so a journal holds these instead of the state they made. */
typedef struct optd_step_record {
    const char *name;
    uint64_t step;        /* the session's step before it */
    optd_dtype_t dtype;
    size_t size;
    const void *grad;     /* size elements of dtype; a rows step: n_rows * row_size */
    const uint64_t *rows; /* a rows step: the rows listed (NULL: dense) */
    size_t n_rows;
    size_t row_size;      /* a rows step: the session's row size */
    bool has_loss;
    double loss;
    int64_t time_ms;      /* history time and updated_ms */
    /* A round's reduced gradient: the workers it reduced and the step each
     * contributed at (replay restores their last applied steps); 0: a
     * plain step. */
    size_t n_workers;
    const optd_contribution_t *workers; /* n_workers entries (their grad unused) */
} optd_step_record_t;

/* How a change is made durable; installed by the persistence layer, absent
 * when sessions live in memory only.  The store knows no files. */
typedef struct optd_durability {
    void *ctx;
    /* Called with s->mu held before a step of s is applied, with its input.
     * --sync always: returns 0 once the record is durable, or OPTD_EIO
     * (the step is then not applied).  --sync interval: queues it and
     * returns.  *lsn: the record's sequence number. */
    int (*step)(void *ctx, struct optd_session *s, const optd_step_record_t *rec, uint64_t *lsn,
                optd_err_t *err);
    /* The same for a batch of steps (optd_session_apply_batch), called
     * with all their sessions' mutexes held (ss[i]: record i's session):
     * --sync always: the records are made durable together, in one fsync
     * round: 0 once all are, or OPTD_EIO / OPTD_ENOMEM (none is; none is
     * applied).  --sync interval: each is queued.  lsns[i]: record i's
     * sequence number (0: not journaled). */
    int (*steps)(void *ctx, struct optd_session *const *ss, const optd_step_record_t *recs, size_t n,
                 uint64_t *lsns, optd_err_t *err);
    /* Called with s->mu held after s changed as a whole (create, patch,
     * import); --sync always: 0 once durable, or OPTD_EIO (the caller then
     * undoes the change). */
    int (*commit)(void *ctx, struct optd_session *s, optd_err_t *err);
    /* The same after only s's configuration changed (a PATCH): what it
     * journals is the configuration, not the parameters and buffers.  NULL:
     * commit serves. */
    int (*commit_config)(void *ctx, struct optd_session *s, optd_err_t *err);
    /* The session named name was deleted (or expired): forget it on disk.
     * batch: may return before the deletion is durable; the caller then
     * calls sync once for all of them (ttl expiry). */
    int (*remove)(void *ctx, const char *name, bool batch, optd_err_t *err);
    /* Makes the batched removes durable and finishes them. */
    int (*sync)(void *ctx, optd_err_t *err);
} optd_durability_t;

/* Where the memory sessions hold is counted against --max-memory;
 * installed by the store (session.h knows no store).  reserve: 0, or
 * OPTD_ELIMIT with a sentence saying how much is left. */
typedef struct optd_mem_account {
    void *ctx;
    int (*reserve)(void *ctx, size_t bytes, optd_err_t *err);
    void (*unreserve)(void *ctx, size_t bytes);
} optd_mem_account_t;

/* ---- steps (called by the store, which passes the step context) ---- */

/* One update, the one apply every step goes through, run as ctx says
 * (NULL: memory only, the caller's thread; a stored session's context
 * comes from optd_store_step_ctx).  in->grad holds size elements of the
 * session's dtype.  If in->expect_step differs from the step, nothing is
 * applied and OPTD_ESTEP is returned with *step_out = the current step.
 * On success *step_out is the new step and, if params_out is non-NULL, the
 * updated params are copied there atomically with the update (a rows step:
 * the values of the rows listed, in the order listed, n_rows * row_size).  With
 * ctx->dur the input is journaled before it is applied: a refusal after
 * that (non_finite) is deterministic, so replay refuses it the same way,
 * and there is nothing to undo.  Errors change nothing: OPTD_ESTEP,
 * OPTD_ENONFINITE, OPTD_ENOMEM, OPTD_ENOTFOUND (deleted meanwhile),
 * OPTD_EIO (sync always: not durable). */
int optd_session_apply(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_step_input_t *in,
                       uint64_t *step_out, void *params_out, optd_err_t *err);

/* Applies b[0..n) in order, each as optd_session_apply would, but made
 * durable together: the batch's sessions are locked (in address order, so
 * batches and single steps never deadlock), every step that passes its
 * checks (deleted, expected step, loss; a session's later steps are
 * checked against the step its earlier ones lead to) is journaled through
 * ctx->dur->steps in one group (with --sync always one fsync round), then
 * each is applied by the rules of replay: a record applies only at the step
 * it was journaled for, so a step that follows, on its session, one refused
 * after journaling (non_finite) is refused too, with OPTD_ESTEP.  If the
 * group cannot be made durable none of it is applied and each of its steps
 * gets OPTD_EIO.  Each step's outcome is in b[i].rc, err, step. */
void optd_session_apply_batch(optd_batch_step_t *b, size_t n, const optd_step_ctx_t *ctx);

/* One worker's contribution c (c->grad: size elements of the session's
 * dtype, copied) to s's pending round, under s's lock.  When it makes the
 * round whole, the round is reduced and applied as one step (with ctx, as
 * optd_session_apply) and its waiters woken.  Errors, which change
 * nothing: OPTD_EINVAL (s does not aggregate), OPTD_ESTEP (out->step,
 * out->refused), OPTD_ELIMIT (--max-memory), OPTD_ENOMEM, OPTD_ENOTFOUND.
 * A failed apply is no error here: the outcome says it. */
int optd_session_contribute(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_contribution_t *c,
                            optd_contrib_result_t *out, optd_err_t *err);

/* ---- under the session's lock ---- */

/* With s->mu held: drops the pending round (its requests get rc with msg)
 * and wakes every watcher with why (deleted, replaced: OPTD_WATCH_GONE). */
void optd_session_drop_round_locked(optd_session_t *s, int rc, const char *msg);
void optd_session_wake_all_locked(optd_session_t *s, int why);
/* With s->mu held, after its aggregate changed (PATCH): off drops the
 * round (409 to its requests); fewer workers than are in applies it now,
 * and then returns how long it stayed open (ns, and the outcome's rc in
 * *rc); otherwise -1. */
int64_t optd_session_aggregate_changed_locked(optd_session_t *s, int *rc);
/* With s->mu held, after the step changed: wakes the watchers it reaches. */
void optd_session_wake_step_locked(optd_session_t *s);
/* The round as the descriptor shows it (with s->mu held). */
int optd_session_round_view_locked(optd_session_t *s, optd_session_desc_t *d, optd_err_t *err);

/* With s->mu held: journals (ctx->dur) and applies in, as optd_session_apply
 * does after its checks (for a round's reduced gradient). */
int optd_session_apply_locked(optd_session_t *s, const optd_step_ctx_t *ctx, const optd_step_input_t *in,
                              optd_err_t *err);

/* The same for what s holds now; with s->mu held (or s not yet shared). */
size_t optd_session_bytes_locked(const optd_session_t *s);

/* The same with s->mu already held by the caller (persistence, which reads
 * the version under the same hold). */
int optd_session_copy_image_locked(optd_session_t *s, optd_session_image_t *img, optd_err_t *err);

/* The same without history, parameters or buffers (img->params NULL):
 * the configuration, size, step and times, for a config record. */
int optd_session_config_image_locked(optd_session_t *s, optd_session_image_t *img, optd_err_t *err);

/* Replaces the configuration (optimizer, dtype and the group sizes must be
 * unchanged; cfg is copied): 0, OPTD_EINVAL, OPTD_ENOMEM, OPTD_ENOTFOUND
 * (deleted), OPTD_EIO. */
int optd_session_set_config(optd_session_t *s, const optd_session_config_t *cfg, optd_err_t *err);

/* ---- for persistence ---- */

/* True once the session was removed from the store (or replaced). */
bool optd_session_is_deleted(optd_session_t *s);


/* Journal replay of one step record with sequence number lsn: applied
 * only if lsn is newer than the session's last record and the record
 * applies at the session's step.  0 applied, 1 skipped (stale or not at
 * this step), or the step's error (OPTD_ENONFINITE: refused, as it was). */
int optd_session_replay_step(optd_session_t *s, const optd_step_record_t *rec, uint64_t lsn,
                             optd_err_t *err);
/* Journal replay of a config record (img from
 * optd_snapshot_decode_config) with sequence number lsn: s takes img's
 * configuration and updated time, only if lsn is newer than its last
 * record.  0 applied, 1 skipped (stale), OPTD_EINVAL when the record is not
 * at s's step or not of its shape (optimizer, dtype, size, groups), or the
 * installation's error (OPTD_ENOMEM, OPTD_ELIMIT). */
int optd_session_replay_config(optd_session_t *s, const optd_session_image_t *img, uint64_t lsn,
                               optd_err_t *err);
/* Journals the session whole again through dur->commit (its snapshot could
 * not be written, and the journal holding its records is to go): 0
 * (also when it is deleted) or the hook's error. */
int optd_session_commit(optd_session_t *s, const optd_durability_t *dur, optd_err_t *err);
/* The sequence number of the session's last journal record (0: none). */
uint64_t optd_session_lsn(optd_session_t *s);
/* With s->mu held: records that the session's last change is journal
 * record lsn. */
void optd_session_set_lsn_locked(optd_session_t *s, uint64_t lsn);
/* With s->mu held: journal record lsn (bytes long) holds a change of s;
 * whole: the record is s's image, which makes every earlier record of s
 * moot (a create, patch or import).  lsn 0: no record holds the change. */
void optd_session_add_delta_locked(optd_session_t *s, uint64_t lsn, uint64_t bytes, bool whole);
/* The same, taking s->mu (journal replay). */
void optd_session_add_delta(optd_session_t *s, uint64_t lsn, uint64_t bytes, bool whole);
/* About how many bytes a snapshot of the session takes: its parameters,
 * optimizer buffers and the history it has (optd_session_bytes). */
size_t optd_session_image_bytes(optd_session_t *s);
/* Whether the session changed since its last optd_session_mark_saved (and
 * is not deleted), with its deltas and optd_session_image_bytes.  A clean
 * session's deltas are forgotten: what its records did is in its snapshot. */
bool optd_session_peek_dirty(optd_session_t *s, optd_session_deltas_t *deltas,
                             size_t *image_bytes);
/* If the session changed since optd_session_mark_saved(version) (and is
 * not deleted): a full copy into img with its version, LSN and deltas,
 * and 1; 0 when clean; OPTD_ENOMEM. */
int optd_session_copy_if_dirty(optd_session_t *s, optd_session_image_t *img, uint64_t *version,
                               uint64_t *lsn, optd_session_deltas_t *deltas, optd_err_t *err);
/* Its state as of version, with the records up to lsn (the deltas a copy
 * reported), is on disk: a snapshot was written.  Records appended since
 * the copy have sequence numbers of at least later_from (the journal was
 * rotated before the copy); they are the deltas now. */
void optd_session_mark_saved(optd_session_t *s, uint64_t version, uint64_t lsn,
                             const optd_session_deltas_t *covered, uint64_t later_from);
/* Loaded from a snapshot with that LSN: clean.  Before it is shared. */
void optd_session_mark_loaded(optd_session_t *s, uint64_t lsn);

#endif
