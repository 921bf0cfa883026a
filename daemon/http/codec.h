/* codec.h: JSON documents of API.md <-> the session layer's structs.
 *
 * Decoding: hyperparameters (partial, onto a base), schedules, labels,
 * max_grad_norm, ttl_seconds, timestamps.  Encoding: the session
 * descriptor, hyperparameters, schedule, history entries, RFC 3339 times.
 * Every decode error is OPTD_EINVAL with a message that names the field. */
#ifndef OPTD_HTTP_CODEC_H
#define OPTD_HTTP_CODEC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "optd/error.h"
#include "optd/optim.h"
#include "session.h"
#include "sbuf.h"

/* Applies the keys of the object v to hp (keys not given keep hp's value).
 * Unknown keys, wrong types and non-finite values are OPTD_EINVAL. */
int optd_codec_hparams_apply(const json_t *v, optd_optim_kind_t kind, optd_hparams_t *hp,
                             optd_err_t *err);
/* "groups" onto cfg.  Without groups yet (a create, or a fork of a
 * session without them): an array of 1..OPTD_GROUPS_MAX objects
 * {"size", "hyperparameters"?} (null: none), each group starting from
 * cfg->hp.  With groups (a patch, a fork): one entry per group, with
 * partial "hyperparameters" and an optional "size" that must equal the
 * group's.  Sizes are checked against the session's size later. */
int optd_codec_groups_apply(const json_t *v, optd_session_config_t *cfg, optd_err_t *err);
/* v is null (no schedule) or a schedule object. */
int optd_codec_schedule_decode(const json_t *v, bool *has, optd_schedule_t *s, optd_err_t *err);
/* Replaces cfg's labels with the object v. */
int optd_codec_labels_decode(const json_t *v, optd_session_config_t *cfg, optd_err_t *err);
/* null or 0 turns clipping off; else a number > 0. */
int optd_codec_max_grad_norm_decode(const json_t *v, double *out, optd_err_t *err);
/* null removes; else an integer >= 1 (seconds). */
int optd_codec_ttl_decode(const json_t *v, int64_t *out, optd_err_t *err);
/* An integer >= 0 (a JSON integer, or a real with an integral value). */
int optd_codec_u64_decode(const json_t *v, const char *field, uint64_t *out, optd_err_t *err);
/* "row_size": an integer >= 1 (API.md 1.1, Tables). */
int optd_codec_row_size_decode(const json_t *v, size_t *out, optd_err_t *err);
/* "rows" (API.md 1.1, Tables): an array of 1 to max (0: any number) row
 * numbers, each an integer below n_table; *out malloc'd (caller frees), *n
 * of them.  OPTD_EINVAL naming the first bad entry, or OPTD_ENOMEM. */
/* The same from the text of the array, arr[0, len) from its '[' to its
 * ']', read without a JSON value per entry (Jansson's are some 25 times the
 * text's bytes: a body of row numbers would be held many times over, outside
 * --max-memory).  An entry that is no plain integer below n_table is
 * OPTD_EINVAL naming it, as above (the caller tells invalid JSON apart). */
int optd_codec_rows_parse(const char *arr, size_t len, uint64_t n_table, uint64_t **out, size_t *n,
                          optd_err_t *err);
int optd_codec_rows_decode(const json_t *v, uint64_t n_table, size_t max, uint64_t **out, size_t *n,
                           optd_err_t *err);
/* A rows step's values count (API.md 1.1, Tables): got values for n_rows
 * rows of row_size: 0, or OPTD_ESIZE saying what the rows need (not what
 * the session holds, which a table's step never sends). */
int optd_codec_rows_values_check(size_t got, const char *field, size_t n_rows, size_t row_size,
                                 optd_err_t *err);
/* A finite number. */
int optd_codec_number_decode(const json_t *v, const char *field, double *out, optd_err_t *err);
/* "2026-11-28T12:00:00Z" (fractional seconds and +00:00 also taken). */
int optd_codec_time_decode(const json_t *v, const char *field, int64_t *ms, optd_err_t *err);

/* (Times are written with optd_fmt_time, fmt.h.) */

json_t *optd_codec_hparams_encode(optd_optim_kind_t kind, const optd_hparams_t *hp);
json_t *optd_codec_schedule_encode(bool has, const optd_schedule_t *s);
/* null without groups, else [{"size", "hyperparameters"}, ...]. */
json_t *optd_codec_groups_encode(const optd_session_config_t *cfg);
/* The session descriptor of API.md.  NULL when out of memory. */
json_t *optd_codec_descriptor(const char *name, const optd_session_desc_t *d);
/* "aggregate": null (workers 0) or the object API.md 1.1 "Rounds" names:
 * 0 or OPTD_EINVAL naming the field. */
int optd_codec_aggregate_decode(const json_t *v, optd_aggregate_t *a, optd_err_t *err);
/* The descriptor's "loss" object, or JSON null when no step carried one. */
json_t *optd_codec_loss_encode(const optd_loss_summary_t *ls);
/* Reads a "loss" object (as encoded above, or null) into *ls: 0 or
 * OPTD_EINVAL. */
int optd_codec_loss_decode(const json_t *v, optd_loss_summary_t *ls, optd_err_t *err);
/* The members of a step answer, the one printer of every answer that
 * carries a step and its parameters (a step, a rows step, a round's
 * outcome, a batch item, GET and PUT params): "step":N, then, when params
 * is not NULL, "rows":[...] (when rows is not NULL) and "params":[...]
 * (n values of dtype, printed over pool when long; NULL: this thread).
 * The caller writes the braces around them. */
struct optd_pool;
void optd_codec_step_members(optd_sbuf_t *b, uint64_t step, const uint64_t *rows, size_t n_rows,
                             optd_dtype_t dtype, const void *params, size_t n, struct optd_pool *pool);
/* Room for those members, reserved at once: growing the buffer as it is
 * written cost a realloc and a copy per small step. */
size_t optd_codec_step_answer_bytes(size_t n_rows, size_t n, bool with_params);
/* {"history": [...]} appended to b. */
void optd_codec_history_encode(optd_sbuf_t *b, const optd_history_entry_t *h, size_t n);

#endif
