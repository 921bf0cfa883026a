#!/usr/bin/python3
"""pbt.py: population-based training of the digits model over optd sessions.

16 sessions (Adam, learning rates drawn log-uniformly from 1e-4..1e-1)
train the digits MLP of digits.py.  Every K steps each member is scored on
the validation split; the worst quarter is replaced by copies of the best
quarter -- a create with "from" (a fork: parameters, Adam's moments and the
step count are copied atomically inside optd) -- and the copy's learning
rate is perturbed (x0.8 or x1.25) with a PATCH, which keeps the optimizer
state as PyTorch does when a param group's lr is edited.  The population
trains in lockstep: each step of all 16 members is one POST /v1/steps.

The same 16 starting learning rates trained without exploitation give the
baseline: the best fixed learning rate.  Prints the best schedule found and
both test accuracies.

    /usr/bin/python3 examples/pbt.py [--url URL] [--rounds 12] [--interval 20]
"""
import argparse

import numpy as np

import digits
import optd_local


def train_population(client, names, params, steps, train, rng, k):
    """k steps of every member, the whole population in one POST /v1/steps
    per step (a fleet's step: one request instead of one per member).
    params and steps (dicts by name) are updated from the answers."""
    X, y = train
    for _ in range(k):
        items = []
        for n in names:
            b = rng.choice(len(X), 64, replace=False)
            loss, g = digits.loss_and_grad(params[n], X[b], y[b])
            items.append({"session": n, "gradient": g, "step": steps[n], "loss": float(loss)})
        for n, res in zip(names, client.steps(items)):
            if "error" in res:
                raise SystemExit("step of %s refused: %s" % (n, res["error"]["message"]))
            params[n], steps[n] = np.asarray(res["params"]), res["step"]


def run(client, data, members=16, rounds=12, interval=20, seed=0, exploit=True, tag="pbt"):
    """Returns (best validation accuracy, test accuracy, schedule) where
    schedule is [(from_step, lr), ...] of the best member's lineage."""
    train_set, (Xva, yva), (Xte, yte) = data
    rng = np.random.default_rng(seed)
    lrs = 10 ** rng.uniform(-4, -1, members)
    p0 = digits.init_params(np.random.default_rng(seed))  # same start for all
    names = ["%s-%d-%02d" % (tag, seed, i) for i in range(members)]
    schedules = {}
    generation = {n: 0 for n in names}
    for n, lr in zip(names, lrs):
        client.create(n, "adam", params=p0, hyperparameters={"lr": float(lr)},
                      labels={"study": tag})
        schedules[n] = [(0, float(lr))]
    try:
        scores = {}
        params = {n: p0 for n in names}
        steps = {n: 0 for n in names}
        for r in range(rounds):
            train_population(client, names, params, steps, train_set, rng, interval)
            for n in names:
                scores[n] = digits.accuracy(params[n], Xva, yva)
            if not exploit or r == rounds - 1:
                continue
            ranked = sorted(names, key=lambda n: scores[n], reverse=True)
            q = members // 4
            for loser, winner in zip(ranked[-q:], ranked[:q]):
                # The loser's slot becomes a fork of the winner under a new
                # name (names are never reused, so no client can mistake the
                # copy for the old member).
                slot = loser.split("-g")[0]
                generation[slot] += 1
                new = "%s-g%d" % (slot, generation[slot])
                client.delete(loser)
                d = client.create(new, from_=winner, labels={"study": tag})
                lr = client.get(winner)["hyperparameters"]["lr"] * float(rng.choice([0.8, 1.25]))
                client.patch(new, hyperparameters={"lr": lr})
                schedules[new] = schedules[winner] + [(d["step"], lr)]
                scores[new] = scores[winner]
                params[new], steps[new] = params[winner], d["step"]
                names[names.index(loser)] = new
        best = max(names, key=lambda n: scores[n])
        _, p = client.params(best, binary=True)
        return scores[best], digits.accuracy(p, Xte, yte), schedules[best]
    finally:
        for n in names:
            client.delete(n)


def compact(schedule):
    """Drops entries that do not change the lr."""
    out = []
    for step, lr in schedule:
        if not out or abs(out[-1][1] - lr) > 1e-15:
            out.append((step, lr))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--interval", type=int, default=20, help="steps between exploit rounds (K)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = digits.load(args.seed)
    kw = dict(members=args.members, rounds=args.rounds, interval=args.interval, seed=args.seed)
    with optd_local.connect(args.url) as client:
        pbt_val, pbt_test, schedule = run(client, data, exploit=True, tag="pbt", **kw)
        fix_val, fix_test, fixed = run(client, data, exploit=False, tag="fixed", **kw)
    total = args.rounds * args.interval
    print("PBT: %d Adam sessions, %d steps each, exploit/explore every %d steps "
          "(worst quarter forks the best quarter, lr x0.8 or x1.25)"
          % (args.members, total, args.interval))
    print("best PBT schedule (from step: lr): " +
          ", ".join("%d: %.3g" % e for e in compact(schedule)))
    print("%-26s %9s %9s" % ("", "val acc", "test acc"))
    print("%-26s %8.2f%% %8.2f%%" % ("PBT (best member)", 100 * pbt_val, 100 * pbt_test))
    print("%-26s %8.2f%% %8.2f%%" % ("best fixed lr = %.3g" % fixed[0][1], 100 * fix_val,
                                     100 * fix_test))


if __name__ == "__main__":
    main()
