#!/usr/bin/python3
"""digits.py: train a small neural network on the handwritten digits remotely.

The model (64 inputs -> 32 tanh -> 10 softmax, 2410 parameters) and its
gradients are numpy, here in the client; the parameters and the optimizer
live in optd: every mini-batch gradient is one POST .../step, whose answer
is the updated parameters.  The data is scikit-learn's load_digits (1797
8x8 images, shipped with Debian's python3-sklearn, no download).

    /usr/bin/python3 examples/digits.py              # starts build/optd itself
    /usr/bin/python3 examples/digits.py --url http://127.0.0.1:8080
    /usr/bin/python3 examples/digits.py --optimizers adam --epochs 15

Prints each optimizer's test accuracy side by side.
"""
import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optd_local

HIDDEN = 32

# Learning rates picked per optimizer for this model (the same for all runs).
OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.1}),
    "sgd+momentum": ("sgd", {"lr": 0.05, "momentum": 0.9}),
    "adagrad": ("adagrad", {"lr": 0.05}),
    "rmsprop": ("rmsprop", {"lr": 0.001}),
    "adam": ("adam", {"lr": 0.003}),
}


def load(seed=0):
    """Standardized (train, validation, test) splits: 60/15/25."""
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    Xtr, Xva, ytr, yva = train_test_split(Xtr, ytr, test_size=0.2, random_state=seed, stratify=ytr)
    return (Xtr, ytr), (Xva, yva), (Xte, yte)


def init_params(rng, hidden=HIDDEN):
    W1 = rng.normal(0, 1 / np.sqrt(64), (64, hidden))
    W2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, 10))
    return np.concatenate([W1.ravel(), np.zeros(hidden), W2.ravel(), np.zeros(10)])


def unpack(p, hidden=HIDDEN):
    i = 64 * hidden
    W1 = p[:i].reshape(64, hidden)
    b1 = p[i:i + hidden]
    i += hidden
    W2 = p[i:i + hidden * 10].reshape(hidden, 10)
    b2 = p[i + hidden * 10:]
    return W1, b1, W2, b2


def loss_and_grad(p, X, y):
    """Mean cross-entropy and its gradient with respect to the flat params."""
    W1, b1, W2, b2 = unpack(p)
    a = np.tanh(X @ W1 + b1)
    z = a @ W2 + b2
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    P = e / e.sum(1, keepdims=True)
    n = len(X)
    loss = -np.log(P[np.arange(n), y]).mean()
    d = P
    d[np.arange(n), y] -= 1
    d /= n
    da = (d @ W2.T) * (1 - a * a)
    return loss, np.concatenate([(X.T @ da).ravel(), da.sum(0), (a.T @ d).ravel(), d.sum(0)])


def accuracy(p, X, y):
    W1, b1, W2, b2 = unpack(p)
    return float(((np.tanh(X @ W1 + b1) @ W2 + b2).argmax(1) == y).mean())


def batches(rng, n, size=64):
    idx = rng.permutation(n)
    for i in range(0, n, size):
        yield idx[i:i + size]


def train_steps(client, name, train, rng, steps, params=None):
    """Runs `steps` mini-batch steps of session `name` through optd; returns
    the parameters after them.  Uses the binary step path (float64 bytes)
    and the step compare-and-swap, so a lost answer is retried safely."""
    X, y = train
    if params is None:
        step, params = client.params(name, binary=True)
    step = client.get(name)["step"]
    done = 0
    while done < steps:
        for b in batches(rng, len(X)):
            loss, g = loss_and_grad(params, X[b], y[b])
            r = client.step(name, g, expect_step=step, loss=loss)
            step, params = r.step, r.params
            done += 1
            if done == steps:
                break
    return params


def train(client, name, optimizer, hyperparameters, data, epochs=15, seed=0):
    """Trains one model from scratch in session `name`; returns test accuracy."""
    train_set, _, (Xte, yte) = data
    rng = np.random.default_rng(seed)
    p0 = init_params(rng)
    client.create(name, optimizer, params=p0, hyperparameters=hyperparameters)
    try:
        steps_per_epoch = -(-len(train_set[0]) // 64)
        p = train_steps(client, name, train_set, rng, epochs * steps_per_epoch, params=p0)
        return accuracy(p, Xte, yte)
    finally:
        client.delete(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="an optd to use (default: start build/optd)")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                    help="comma-separated, from: " + ", ".join(OPTIMIZERS))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load(args.seed)
    results = []
    with optd_local.connect(args.url) as client:
        for label in args.optimizers.split(","):
            opt, hp = OPTIMIZERS[label]
            t0 = time.monotonic()
            acc = train(client, "digits-%s-%d" % (label.replace("+", "-"), args.seed), opt, hp,
                        data, epochs=args.epochs, seed=args.seed)
            results.append((label, hp, acc, time.monotonic() - t0))
    steps = args.epochs * -(-len(data[0][0]) // 64)
    print("digits: MLP 64-32-10 (2410 params), %d epochs = %d steps through optd, "
          "%d test images" % (args.epochs, steps, len(data[2][1])))
    print("%-14s %-28s %9s %8s" % ("optimizer", "hyperparameters", "test acc", "seconds"))
    for label, hp, acc, secs in results:
        hps = ", ".join("%s=%g" % kv for kv in hp.items())
        print("%-14s %-28s %8.2f%% %8.1f" % (label, hps, 100 * acc, secs))


if __name__ == "__main__":
    main()
