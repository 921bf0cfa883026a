/* schedule.c: learning-rate schedules (API.md, Schedules): the lr of step k
 * from the lr hyperparameter in force, in double, in closed form so a
 * session can be resumed or its schedule replaced at any step. */
#include "optd/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const sched_names[] = {
    [OPTD_SCHED_NONE] = "none",
    [OPTD_SCHED_CONSTANT] = "constant",
    [OPTD_SCHED_STEP] = "step",
    [OPTD_SCHED_EXPONENTIAL] = "exponential",
    [OPTD_SCHED_COSINE] = "cosine",
};
#define N_SCHED (sizeof sched_names / sizeof sched_names[0])

const char *optd_sched_type_name(optd_sched_type_t type)
{
    return (unsigned)type < N_SCHED ? sched_names[type] : "none";
}

int optd_sched_type_parse(const char *name, optd_sched_type_t *out)
{
    for (size_t i = 0; name && i < N_SCHED; i++)
        if (strcmp(name, sched_names[i]) == 0) {
            *out = (optd_sched_type_t)i;
            return 0;
        }
    return OPTD_EINVAL;
}

int optd_schedule_validate(const optd_schedule_t *s, optd_err_t *err)
{
    if ((unsigned)s->type >= N_SCHED)
        return optd_err_set(err, OPTD_EINVAL,
                            "schedule.type must be one of none, constant, step, exponential, "
                            "cosine");
    if (s->warmup_steps < 0)
        return optd_err_set(err, OPTD_EINVAL, "schedule.warmup_steps must be >= 0, got %lld",
                            (long long)s->warmup_steps);
    switch (s->type) {
    case OPTD_SCHED_STEP:
        if (s->step_size < 1)
            return optd_err_set(err, OPTD_EINVAL, "schedule.step_size must be >= 1, got %lld",
                                (long long)s->step_size);
        if (!(isfinite(s->gamma) && s->gamma > 0))
            return optd_err_set(err, OPTD_EINVAL,
                                "schedule.gamma must be a finite number > 0, got %.17g", s->gamma);
        break;
    case OPTD_SCHED_EXPONENTIAL:
        if (!(isfinite(s->gamma) && s->gamma > 0))
            return optd_err_set(err, OPTD_EINVAL,
                                "schedule.gamma must be a finite number > 0, got %.17g", s->gamma);
        break;
    case OPTD_SCHED_COSINE:
        if (s->t_max < 1)
            return optd_err_set(err, OPTD_EINVAL, "schedule.t_max must be >= 1, got %lld",
                                (long long)s->t_max);
        if (!(isfinite(s->eta_min) && s->eta_min >= 0))
            return optd_err_set(err, OPTD_EINVAL,
                                "schedule.eta_min must be a finite number >= 0, got %.17g",
                                s->eta_min);
        break;
    case OPTD_SCHED_NONE:
    case OPTD_SCHED_CONSTANT: break;
    }
    return 0;
}

double optd_schedule_lr(const optd_schedule_t *s, double lr, uint64_t k)
{
    if (!s || s->type == OPTD_SCHED_NONE)
        return lr;
    if (s->warmup_steps > 0) {
        uint64_t w = (uint64_t)s->warmup_steps;
        if (k <= w)
            return lr * (double)k / (double)w;
        k -= w;
    }
    /* An unvalidated step_size or t_max below 1 means no decay rather
     * than a division by zero. */
    switch (s->type) {
    case OPTD_SCHED_STEP:
        if (s->step_size < 1)
            return lr;
        return lr * pow(s->gamma, (double)((k - 1) / (uint64_t)s->step_size));
    case OPTD_SCHED_EXPONENTIAL:
        return lr * pow(s->gamma, (double)(k - 1));
    case OPTD_SCHED_COSINE: {
        if (s->t_max < 1)
            return lr;
        uint64_t T = (uint64_t)s->t_max, e = k - 1 < T ? k - 1 : T;
        return s->eta_min + (lr - s->eta_min) * (1 + cos(M_PI * (double)e / (double)T)) / 2;
    }
    case OPTD_SCHED_NONE:
    case OPTD_SCHED_CONSTANT: break;
    }
    return lr;
}
