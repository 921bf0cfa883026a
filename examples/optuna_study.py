#!/usr/bin/python3
"""optuna_study.py: an Optuna study whose trials are optd sessions.

Optuna (Debian's python3-optuna; TPE sampler, MedianPruner) tunes Adam's lr
and beta1 for the digits MLP of digits.py.  Each trial is one optd session,
labelled with the study and the trial number; every step carries the
model's validation loss, so the session's descriptor keeps the trial's best
and last loss (its `loss` summary).  After each epoch the trial reports its
validation loss to Optuna, and MedianPruner stops the trials that fall
behind the median of the others at the same epoch.  At the end the trials
are ranked by optd itself, in one request:

    GET /v1/sessions?label=study:NAME&sort=best_loss&limit=5

and the script checks that optd's first is Optuna's best trial.

    /usr/bin/python3 examples/optuna_study.py [--url URL] [--trials 20] [--epochs 6]
"""
import argparse
import logging

import numpy as np
import optuna

import digits
import optd_local


def objective(client, study_name, data, epochs, seed):
    train_set, (Xva, yva), _ = data
    X, y = train_set

    def run(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        beta1 = trial.suggest_float("beta1", 0.5, 0.99)
        name = "%s-trial-%03d" % (study_name, trial.number)
        rng = np.random.default_rng(seed + trial.number)
        p = digits.init_params(np.random.default_rng(seed))
        client.create(name, "adam", params=p, hyperparameters={"lr": lr, "betas": [beta1, 0.999]},
                      labels={"study": study_name, "trial": str(trial.number)})
        step, best = 0, float("inf")
        for epoch in range(epochs):
            for b in digits.batches(rng, len(X)):
                _, g = digits.loss_and_grad(p, X[b], y[b])
                val_loss, _ = digits.loss_and_grad(p, Xva, yva)  # of the params this step starts from
                r = client.step(name, g, expect_step=step, loss=float(val_loss))
                step, p = r.step, r.params
            val_loss, _ = digits.loss_and_grad(p, Xva, yva)
            best = min(best, float(val_loss))
            trial.report(float(val_loss), epoch)
            if trial.should_prune():
                client.patch(name, labels={"study": study_name, "trial": str(trial.number),
                                           "state": "pruned"})
                raise optuna.TrialPruned()
        # The objective is the best validation loss any step started from
        # (or the final one): what the session's loss summary holds too.
        return min(best, client.get(name)["loss"]["best"])

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an optd to use (default: start build/optd)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--study", default="digits-adam")
    ap.add_argument("--keep", action="store_true", help="keep the sessions afterwards")
    args = ap.parse_args()
    optuna.logging.set_verbosity(logging.WARNING)
    data = digits.load(args.seed)
    study = optuna.create_study(study_name=args.study, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                   n_warmup_steps=1))
    with optd_local.connect(args.url) as client:
        try:
            study.optimize(objective(client, args.study, data, args.epochs, args.seed),
                           n_trials=args.trials)
            ranked = client.list_sessions(labels={"study": args.study}, sort="best_loss",
                                          limit=5)["sessions"]
            pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
            print("study %s: %d trials (%d pruned by MedianPruner), %d epochs each, "
                  "Adam on the digits MLP" % (args.study, len(study.trials), pruned, args.epochs))
            print("ranked by optd (GET /v1/sessions?label=study:%s&sort=best_loss):" % args.study)
            print("%-28s %10s %8s %12s %8s" % ("session", "lr", "beta1", "best val loss", "at step"))
            for d in ranked:
                hp = d["hyperparameters"]
                print("%-28s %10.3g %8.3f %12.4f %8d  %s" % (
                    d["name"], hp["lr"], hp["betas"][0], d["loss"]["best"], d["loss"]["best_step"],
                    "(pruned)" if d["labels"].get("state") == "pruned" else ""))
            best = study.best_trial
            first = ranked[0]["labels"]["trial"]
            print("Optuna's best trial: %d (lr %.3g, beta1 %.3f, value %.4f); optd's first: trial %s: %s"
                  % (best.number, best.params["lr"], best.params["beta1"], best.value, first,
                     "the same" if int(first) == best.number else "DIFFERENT"))
        finally:
            if not args.keep:
                for d in client.iter_sessions(labels={"study": args.study}):
                    client.delete(d["name"])


if __name__ == "__main__":
    main()
