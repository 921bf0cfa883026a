#!/usr/bin/python3
"""ui_screenshot.py: docs/figures/ui.png, the page /ui/ showing a small study.

Five sessions train a softmax classifier on scikit-learn's handwritten
digits (Debian's python3-sklearn, no download), each with another optimizer
or learning rate, labelled study=digits-sweep; every minibatch step goes
through optd with its loss.  Then Debian's headless Chromium opens the page
with a deep link comparing three of them and saves a screenshot.

    make figures                                      # starts build/optd itself
    /usr/bin/python3 examples/ui_screenshot.py [--url URL] [--out docs/figures/ui.png]
"""
import argparse
import os
import sys
import time

import numpy as np

import optd_local

sys.path.insert(0, os.path.join(optd_local.REPO, "tests", "integration"))
from browser import chromium  # noqa: E402

# name: (optimizer, hyperparameters)
STUDY = {
    "sweep-adam-lr0.01": ("adam", {"lr": 0.01}),
    "sweep-adam-lr0.001": ("adam", {"lr": 0.001}),
    "sweep-sgd-momentum": ("sgd", {"lr": 0.05, "momentum": 0.9}),
    "sweep-rmsprop": ("rmsprop", {"lr": 0.001}),
    "sweep-adagrad": ("adagrad", {"lr": 0.05}),
}
COMPARE = ["sweep-adam-lr0.01", "sweep-sgd-momentum", "sweep-adam-lr0.001"]


def data():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.data / 16.0
    return np.hstack([x, np.ones((len(x), 1))]), d.target


def loss_and_grad(w, x, y):
    """Softmax cross-entropy of weights w (65x10, flat) on (x, y)."""
    w = w.reshape(x.shape[1], 10)
    z = x @ w
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    p[np.arange(len(y)), y] -= 1
    return float(loss), (x.T @ p / len(y)).ravel()


def train(client, steps, batch):
    x, y = data()
    rng = np.random.default_rng(7)
    w0 = rng.normal(0, 0.01, x.shape[1] * 10)
    for name, (opt, hp) in STUDY.items():
        try:
            client.delete(name)
        except optd_local.OptdError:
            pass
        client.create(name, opt, params=w0.tolist(), hyperparameters=hp,
                      labels={"study": "digits-sweep", "optimizer": opt})
    w = {name: w0 for name in STUDY}
    order = np.random.default_rng(1)
    for k in range(steps):
        idx = order.choice(len(y), batch, replace=False)
        for name in STUDY:
            loss, g = loss_and_grad(w[name], x[idx], y[idx])
            w[name] = np.array(client.step(name, g.tolist(), expect_step=k, loss=loss).params)


def shoot(url, out, width, height):
    driver = chromium(width, height)
    try:
        query = "&".join("session=" + n for n in COMPARE) + "&sort=best_loss"
        driver.get(url + "/ui/?" + query)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            drawn = driver.execute_script(
                "const c = window.Chart && Chart.getChart(document.getElementById('chart'));"
                "return c ? c.data.datasets.filter(d => d.data.length > 0).length : 0;")
            if drawn == len(COMPARE) and driver.execute_script(
                    "return document.querySelectorAll('#detail th').length > 5"):
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the page did not draw its chart within 30 s")
        time.sleep(0.3)  # one more frame for the canvas
        tmp = out + ".tmp.png"
        driver.save_screenshot(tmp)
        os.replace(tmp, out)
    finally:
        driver.quit()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--out", default=os.path.join(optd_local.REPO, "docs", "figures", "ui.png"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", default="1360x900", help="window WIDTHxHEIGHT")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with optd_local.connect(args.url) as client:
        train(client, args.steps, args.batch)
        shoot(client.base_url, args.out, width, height)
    print("wrote %s (%d bytes)" % (args.out, os.path.getsize(args.out)))


if __name__ == "__main__":
    main()
