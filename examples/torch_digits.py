#!/usr/bin/python3
"""torch_digits.py: a small CNN on the handwritten digits, trained twice from
the same weights: once with torch.optim.AdamW, once with
optd_client.torch.RemoteOptimizer (the updates made by optd), both with two
param groups (no weight decay on biases) and torch's OneCycleLR.

The data is scikit-learn's load_digits (1797 8x8 images, Debian's
python3-sklearn, no download); torch is Debian's python3-torch.

    /usr/bin/python3 examples/torch_digits.py            # starts build/optd itself
    /usr/bin/python3 examples/torch_digits.py --url http://127.0.0.1:8080 --epochs 10

Prints both runs' test accuracy, the largest difference between their
parameters after the run, and how many requests optd answered (one a step,
plus one PATCH whenever OneCycleLR changed the lr, plus the create and the
binary write of the initial parameters).  The two runs agree to the last
bits or nearly at first (README, Exactness: optd and PyTorch round a few
operations differently) and training amplifies that over the steps, as it
would between two PyTorch builds; the accuracy is what to compare.
"""
import argparse
import re
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optd_local
from optd_client.torch import RemoteOptimizer


def load(seed=0):
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    t = lambda a: torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return (t(Xtr), torch.tensor(ytr)), (t(Xte), torch.tensor(yte))


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def groups(model):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]


def train(model, opt, train_set, epochs, batch, seed):
    X, y = train_set
    steps = epochs * ((len(X) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=steps, cycle_momentum=False)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return steps


def accuracy(model, test_set):
    X, y = test_set
    with torch.no_grad():
        return (model(X).argmax(1) == y).float().mean().item()


def requests(client):
    text = client.metrics()
    return sum(int(n) for m, n in re.findall(r'optd_http_requests_total\{method="(\w+)",code="2\d\d"\} (\d+)', text)
               if m != "GET")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an optd daemon (default: start build/optd)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the same arithmetic order in both runs
    train_set, test_set = load(args.seed)
    hp = {"lr": 0.01, "weight_decay": 0.01}

    local = make_model(args.seed)
    t = time.perf_counter()
    steps = train(local, torch.optim.AdamW(groups(local), **hp), train_set, args.epochs, args.batch, args.seed)
    t_local = time.perf_counter() - t

    with optd_local.connect(args.url) as client:
        name = "torch-digits-%d" % time.time_ns()
        remote = make_model(args.seed)
        before = requests(client)
        t = time.perf_counter()
        opt = RemoteOptimizer(groups(remote), "adamw", url=client.base_url, name=name, **hp)
        train(remote, opt, train_set, args.epochs, args.batch, args.seed)
        t_remote = time.perf_counter() - t
        n_req = requests(client) - before
        client.delete(name)

    diff = max((a - b).abs().max().item() for a, b in zip(local.parameters(), remote.parameters()))
    n = sum(p.numel() for p in local.parameters())
    print("CNN on the digits: %d parameters, 2 param groups, AdamW, OneCycleLR, %d epochs (%d steps)"
          % (n, args.epochs, steps))
    print("%-20s %8s %10s" % ("run", "test acc", "time"))
    print("%-20s %7.2f%% %9.2fs" % ("torch.optim.AdamW", 100 * accuracy(local, test_set), t_local))
    print("%-20s %7.2f%% %9.2fs" % ("RemoteOptimizer", 100 * accuracy(remote, test_set), t_remote))
    print("largest parameter difference after the run: %.3g" % diff)
    print("optd requests (create, params, steps, PATCHes for the schedule): %d" % n_req)


if __name__ == "__main__":
    main()
