#!/usr/bin/python3
"""data_parallel.py: four worker processes train one model on the handwritten
digits through one optd session, each on its own quarter of the training
data, in four ways, next to one process training on all of it:

  baseline   one process, plain steps with 4x the batch: each step's batch is
             the four batches the workers take at that step (the run the
             others try to match);
  async      4 workers, plain steps applied on arrival (Hogwild-style: a
             gradient may come from parameters a few steps old);
  cas        4 workers, each step carries the step its parameters came from
             (compare-and-swap); on 409 step_mismatch the worker fetches the
             parameters and computes that batch's gradient again;
  rounds     aggregate {"workers": 4}: each worker contributes its gradient
             for the step and the daemon applies their mean as one step, the
             same step the baseline takes with 4x the batch (API.md, Rounds);
  slow       rounds of 4 while one worker is made slow: every round waits
             for it;
  backup     aggregate {"workers": 3} with 4 workers while one of them is made
             slow: every round takes the first 3 gradients, the late ones are
             refused (409) and that worker fetches the parameters and goes on.

The workers use optd_client's Worker (rounds) and Client.step (async, cas).
The model is a small MLP in PyTorch (Debian's python3-torch); the data is
scikit-learn's load_digits (python3-sklearn, no download).

    /usr/bin/python3 examples/data_parallel.py                  # starts build/optd
    /usr/bin/python3 examples/data_parallel.py --url http://127.0.0.1:8080 --epochs 10

Prints one row a mode: test accuracy, optimizer steps applied, gradients
computed, gradients wasted (computed and never applied: refused by the
compare-and-swap or by a round) and wall time.
"""
import argparse
import multiprocessing
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optd_local
from optd_client import Client, OptdError

WORKERS = 4
MODES = ("async", "cas", "rounds", "slow", "backup")


def load(seed):
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    t = lambda a: torch.tensor(a / 16.0, dtype=torch.float32)
    return (t(Xtr), torch.tensor(ytr)), (t(Xte), torch.tensor(yte))


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def to_vector(tensors):
    return torch.nn.utils.parameters_to_vector(tensors).detach().numpy().astype(np.float32)


class Learner:
    """The model a worker computes gradients with, and its share of the
    data, walked in full batches in a fixed order (reshuffled each epoch;
    the remainder is left out, as DataLoader's drop_last does, so that
    every step's gradient is the mean of the same number of examples)."""

    def __init__(self, data, batch, seed):
        self.model = make_model(0)
        self.X, self.y = data
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order, self.pos = None, len(self.X)

    def next_batch(self):
        if self.pos + self.batch > len(self.X):
            self.order, self.pos = torch.randperm(len(self.X), generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return self.X[idx], self.y[idx]

    def gradient(self, params, xb, yb):
        """(gradient, loss) of the mean cross-entropy of the batch at params."""
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(params, dtype=np.float32)),
                                            self.model.parameters())
        self.model.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(xb), yb)
        loss.backward()
        return to_vector(p.grad for p in self.model.parameters()), loss.item()


def run_worker(url, session, mode, rank, data, batch, batches, target, slow, seed, out):
    """One worker process: pushes gradients of its own data until its
    batches are done (async, cas) or the session reached `target` steps
    (rounds, backup); puts (gradients computed, gradients wasted) on out."""
    torch.set_num_threads(1)
    client = Client(url, timeout=120)
    learner = Learner(data, batch, seed * 100 + rank)
    computed = wasted = 0
    delay = slow if (mode in ("slow", "backup") and rank == WORKERS - 1) else 0.0
    if mode in ("rounds", "slow", "backup"):
        w = client.worker(session, "w%d" % rank, binary=True)
        while w.step < target:
            xb, yb = learner.next_batch()
            grad, loss = learner.gradient(w.params, xb, yb)
            time.sleep(delay)
            computed += 1
            w.push(grad, loss=loss)        # waits for the round; w.params are the next ones
        out.put((computed, w.refused))
        return
    step, params = client.params(session, binary=True)
    for _ in range(batches):
        xb, yb = learner.next_batch()
        while True:
            grad, loss = learner.gradient(params, xb, yb)
            computed += 1
            if mode == "async":
                r = client.step(session, grad, loss=loss)
                step, params = r.step, r.params
                break
            try:
                r = client.step(session, grad, expect_step=step, loss=loss)
                step, params = r.step, r.params
                break
            except OptdError as e:
                if e.code != "step_mismatch":
                    raise
                wasted += 1        # another worker stepped first: fetch and compute again
                step, params = client.params(session, binary=True)
    out.put((computed, wasted))


def create(client, name, params, lr, aggregate=None):
    client.create(name, "adam", size=len(params), dtype="float32", hyperparameters={"lr": lr},
                  aggregate=aggregate)
    client.set_params(name, params, expect_step=0)


def accuracy(params, test_set):
    model = make_model(0)
    torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(params, dtype=np.float32)),
                                        model.parameters())
    X, y = test_set
    with torch.no_grad():
        return (model(X).argmax(1) == y).float().mean().item()


def quarters(train_set):
    X, y = train_set
    return [(X[i::WORKERS], y[i::WORKERS]) for i in range(WORKERS)]


def baseline(client, name, train_set, batch, steps, seed):
    """One process, plain steps of WORKERS x batch examples: each step's
    batch is the four batches the four workers take at that step (the same
    examples in the same order), so it sees exactly the data they see."""
    learners = [Learner(q, batch, seed * 100 + rank) for rank, q in enumerate(quarters(train_set))]
    step, params = client.params(name, binary=True)
    t = time.perf_counter()
    for _ in range(steps):
        parts = [lr.next_batch() for lr in learners]
        xb, yb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        grad, loss = learners[0].gradient(params, xb, yb)
        r = client.step(name, grad, expect_step=step, loss=loss)
        step, params = r.step, r.params
    return params, steps, 0, time.perf_counter() - t


def parallel(client, name, mode, train_set, batch, batches, slow, seed):
    qs = quarters(train_set)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=run_worker,
                         args=(client.base_url, name, mode, i, qs[i], batch, batches, batches, slow,
                               seed, out))
             for i in range(WORKERS)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit("a %s worker failed (exit %s)" % (mode, p.exitcode))
    wall = time.perf_counter() - t
    step, params = client.params(name, binary=True)
    return params, step, sum(r[0] for r in results), sum(r[1] for r in results), wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an optd daemon (default: start build/optd)")
    ap.add_argument("--epochs", type=int, default=10, help="passes of each worker over its quarter")
    ap.add_argument("--batch", type=int, default=16, help="a worker's batch (the baseline's is 4x)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--slow-ms", type=float, default=20.0, help="the slow worker's extra time a gradient")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise SystemExit("unknown mode %r (modes: %s)" % (m, ", ".join(MODES)))
    torch.set_num_threads(1)
    train_set, test_set = load(args.seed)
    batches = args.epochs * (len(train_set[0]) // WORKERS // args.batch)
    init = to_vector(make_model(args.seed).parameters())
    rows = []
    with optd_local.connect(args.url) as client:
        prefix = "data-parallel-%d-" % time.time_ns()
        name = prefix + "baseline"
        create(client, name, init, args.lr)
        params, steps, wasted, wall = baseline(client, name, train_set, args.batch, batches, args.seed)
        rows.append(("baseline (1 process, batch %d)" % (WORKERS * args.batch),
                     accuracy(params, test_set), steps, steps, wasted, wall))
        base_params, diff = np.asarray(params), None
        for mode in modes:
            name = prefix + mode
            aggregate = {"rounds": {"workers": WORKERS}, "slow": {"workers": WORKERS},
                         "backup": {"workers": WORKERS - 1}}.get(mode)
            create(client, name, init, args.lr, aggregate)
            params, steps, computed, wasted, wall = parallel(client, name, mode, train_set, args.batch,
                                                             batches, args.slow_ms / 1000, args.seed)
            label = {"async": "async (plain steps)", "cas": "cas (Optd-Expect-Step)",
                     "rounds": "rounds of 4", "slow": "rounds of 4, 1 slow",
                     "backup": "rounds of 3 + 1 backup, 1 slow"}[mode]
            rows.append((label, accuracy(params, test_set), steps, computed, wasted, wall))
            if mode == "rounds":
                diff = float(np.abs(np.asarray(params) - base_params).max())
        for mode in ["baseline"] + modes:
            client.delete(prefix + mode)
    print("digits, MLP 64-64-10 (%d parameters, float32), adam lr %g; %d workers x batch %d, "
          "%d epochs of each quarter" % (len(init), args.lr, WORKERS, args.batch, args.epochs))
    print("%-32s %9s %7s %9s %13s %8s" % ("mode", "test acc", "steps", "gradients", "wasted", "wall"))
    for label, acc, steps, computed, wasted, wall in rows:
        print("%-32s %8.2f%% %7d %9d %6d (%3.0f%%) %7.2fs" % (label, 100 * acc, steps, computed, wasted,
                                                             100.0 * wasted / max(computed, 1), wall))
    if diff is not None:
        print("largest parameter difference, rounds of 4 against the baseline: %.3g" % diff)


if __name__ == "__main__":
    main()
