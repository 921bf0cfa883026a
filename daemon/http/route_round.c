/* route_round.c: a step request on an aggregating session is one worker's
 * contribution to the pending round (API.md 1.1 "Rounds"): it joins the
 * round, and waits (wait.c) until the round is applied, then is answered
 * as a plain step would be, like every other request of that round; or
 * 202 with the round when ?wait runs out first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtoa.h"
#include "fmt.h"
#include "http.h"
#include "numarray.h"

/* ?wait's default and bounds (seconds). */
#define CONTRIBUTION_WAIT_DEFAULT 60
#define WAIT_MAX 300

int optd_route_worker_name(const char *v, char *out, optd_err_t *err)
{
    if (!v || !optd_session_name_valid(v))
        return optd_err_set(err, OPTD_EINVAL,
                            "worker: a name matching ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ is required");
    snprintf(out, OPTD_WORKER_NAME_MAX + 1, "%s", v);
    return 0;
}

/* The round's answer: what a plain step with the reduced gradient answers
 * (200 with the step and the parameters, raw or JSON, or no parameters),
 * or the error that step met. */
static void answer_outcome(optd_req_t *req, const optd_round_outcome_t *o, optd_dtype_t dtype, size_t n,
                           bool binary, bool return_none)
{
    if (o->rc == OPTD_ESTEP) {
        optd_http_error_step(req, o->step, &o->err);
        return;
    }
    if (o->rc) {
        optd_http_store_error(req, o->rc, &o->err);
        return;
    }
    size_t bytes = n * optd_dtype_size(dtype);
    void *copy = return_none ? NULL : malloc(bytes ? bytes : 1);
    if (!return_none && !copy) {
        optd_http_error(req, OPTD_ENOMEM, "out of memory for %zu parameters", n);
        return;
    }
    if (copy)
        memcpy(copy, o->params, bytes);
    optd_http_reply_step(req, binary, &(optd_step_answer_t){.step = o->step, .dtype = dtype, .params = copy, .n = n});
}

/* 202 {"step": c, "round": {...}}: the round is still gathering; this
 * request's contribution stays in it. */
static void answer_pending(optd_req_t *req, optd_session_t *s)
{
    optd_session_desc_t d = {0};
    optd_err_t err = {0};
    int rc = optd_session_copy_descriptor(s, &d, &err);
    if (rc) {
        optd_session_desc_free(&d);
        optd_http_store_error(req, rc, &err);
        return;
    }
    json_t *names = json_array();
    for (size_t i = 0; names && i < d.round_n; i++)
        json_array_append_new(names, json_string(d.round_workers[i]));
    json_t *doc = names ? json_pack("{s:I, s:{s:I, s:I, s:o}}", "step", (json_int_t)d.step, "round", "step",
                                    (json_int_t)d.round_step, "contributions", (json_int_t)d.round_n,
                                    "workers", names)
                        : NULL;
    optd_session_desc_free(&d);
    optd_http_reply_json(req, 202, doc);
    json_decref(doc);
}

void optd_route_contribute(optd_req_t *req, optd_session_t **sp, const optd_step_input_t *in, const char *worker,
                           bool return_none)
{
    optd_server_t *srv = req->srv;
    uint64_t secs;
    if (!optd_req_query_u64(req, "wait", 0, WAIT_MAX, CONTRIBUTION_WAIT_DEFAULT, &secs))
        goto fail_answered;
    optd_err_t err = {0};
    if (!in->expect_step) {
        optd_http_error(req, OPTD_EINVAL,
                        "a contribution needs 'step' (or the header Optd-Expect-Step): the step of the "
                        "parameters its gradient was computed from");
        goto fail_answered;
    }
    optd_contribution_t c = {.step = *in->expect_step, .has_loss = in->loss != NULL,
                             .loss = in->loss ? *in->loss : 0, .grad = (void *)in->grad,
                             .want_params = !return_none};
    snprintf(c.worker, sizeof c.worker, "%s", worker);
    optd_contrib_result_t res;
    int rc = optd_store_contribute(srv->store, sp, &c, &res, &err);
    optd_session_t *s = *sp; /* the session applied to: an import may have replaced the first */
    if (rc == OPTD_ESTEP) {
        atomic_fetch_add_explicit(&srv->metrics.contributions_refused[res.refused], 1, memory_order_relaxed);
        optd_http_error_step(req, res.step, &err);
        goto fail_answered;
    }
    if (rc) {
        optd_http_store_error(req, rc, &err);
        goto fail_answered;
    }
    if (res.state == 1) { /* this one made the round whole */
        if (res.outcome->rc == 0) {
            optd_metrics_step(&srv->metrics, s->cfg.kind);
            optd_metrics_round(&srv->metrics, (double)res.open_ns / 1e9);
        }
    }
    bool binary = req->body_kind == OPTD_BODY_BINARY;
    bool waiting = optd_wait_begin(req, s, UINT64_MAX, res.outcome,
                                   atomic_load(&res.outcome->done) ? 0 : secs);
    if (req->wait) {
        req->wait->binary = binary;
        req->wait->return_none = return_none;
        if (!waiting)
            optd_route_contribute_finish(req);
    } else if (atomic_load_explicit(&res.outcome->done, memory_order_acquire)) {
        answer_outcome(req, res.outcome, s->cfg.dtype, s->size, binary, return_none);
    } else { /* no memory to wait: answered as a wait of 0 */
        answer_pending(req, s);
    }
    optd_round_outcome_release(res.outcome);
    return; /* when waiting: answered once resumed */
fail_answered:
    atomic_fetch_add_explicit(&srv->metrics.step_errors, 1, memory_order_relaxed);
}

void optd_route_contribute_finish(optd_req_t *req)
{
    optd_wait_t *w = req->wait;
    optd_session_t *s = w->s;
    if (atomic_load_explicit(&w->outcome->done, memory_order_acquire))
        answer_outcome(req, w->outcome, s->cfg.dtype, s->size, w->binary, w->return_none);
    else if (w->why == OPTD_WAIT_STOP)
        optd_http_error(req, OPTD_EUNAVAIL, "the daemon is shutting down; the round was not completed "
                                            "(a pending round lives in memory only: contribute again)");
    else
        answer_pending(req, s);
    optd_wait_end(req);
}
