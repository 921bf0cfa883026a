#!/usr/bin/python3
"""figures.py: the optimizer-path pictures (docs/figures/*.png).

SGD, SGD with momentum, AdaGrad, RMSProp and Adam each walk a 2-D test
surface -- Rosenbrock's valley, Beale's function and a saddle point -- from
the same start.  Every path is driven through optd: the session holds the
point (x, y), this script computes the gradient there and posts it, the
answer is the next point.  The paths are drawn over the surface's contour
plot with matplotlib (Agg, no display).

    make figures                                  # starts build/optd itself
    /usr/bin/python3 examples/figures.py [--url URL] [--out docs/figures] [--steps N]
"""
import argparse
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import optd_local  # noqa: E402


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_grad(x, y):
    return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


def beale(x, y):
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2
            + (2.625 - x + x * y ** 3) ** 2)


def beale_grad(x, y):
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y ** 3
    return np.array([2 * a * (y - 1) + 2 * b * (y * y - 1) + 2 * c * (y ** 3 - 1),
                     2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y * y])


def saddle(x, y):
    return x * x - y * y


def saddle_grad(x, y):
    return np.array([2 * x, -2 * y])


# name: (f, grad, start, minimum or None, view box, log-spaced levels?, steps,
#        {optimizer label: (optimizer, hyperparameters)})
SURFACES = {
    "rosenbrock": (rosenbrock, rosenbrock_grad, (-1.5, 2.0), (1.0, 1.0),
                   (-2.0, 2.0, -1.0, 3.0), True, 2000, {
                       "sgd": ("sgd", {"lr": 0.001}),
                       "sgd+momentum": ("sgd", {"lr": 0.0003, "momentum": 0.9}),
                       "adagrad": ("adagrad", {"lr": 0.3}),
                       "rmsprop": ("rmsprop", {"lr": 0.003}),
                       "adam": ("adam", {"lr": 0.03}),
                   }),
    "beale": (beale, beale_grad, (1.0, 1.4), (3.0, 0.5),
              (-0.5, 4.0, -1.0, 2.0), True, 600, {
                  "sgd": ("sgd", {"lr": 0.01}),
                  "sgd+momentum": ("sgd", {"lr": 0.002, "momentum": 0.9}),
                  "adagrad": ("adagrad", {"lr": 0.5}),
                  "rmsprop": ("rmsprop", {"lr": 0.01}),
                  "adam": ("adam", {"lr": 0.05}),
              }),
    "saddle": (saddle, saddle_grad, (-1.5, 0.001), None,
               (-2.0, 2.0, -2.0, 2.0), False, 120, {
                   "sgd": ("sgd", {"lr": 0.02}),
                   "sgd+momentum": ("sgd", {"lr": 0.01, "momentum": 0.9}),
                   "adagrad": ("adagrad", {"lr": 0.1}),
                   "rmsprop": ("rmsprop", {"lr": 0.01}),
                   "adam": ("adam", {"lr": 0.05}),
               }),
}

LEGEND = {"rosenbrock": "lower left", "beale": "upper right", "saddle": "lower left"}

COLORS = {"sgd": "#1f77b4", "sgd+momentum": "#ff7f0e", "adagrad": "#2ca02c",
          "rmsprop": "#d62728", "adam": "#9467bd"}


def walk(client, name, optimizer, hyperparameters, grad, start, steps, box):
    """The path of one optimizer through optd, as an (n, 2) array.  Stops
    early if the point leaves a generous margin around the view box (the
    saddle is unbounded below)."""
    client.create(name, optimizer, params=list(start), hyperparameters=hyperparameters)
    try:
        path = [np.array(start, dtype=float)]
        x0, x1, y0, y1 = box
        w, h = x1 - x0, y1 - y0
        for k in range(steps):
            g = grad(*path[-1])
            r = client.step(name, g.tolist(), expect_step=k)
            p = np.array(r.params)
            path.append(p)
            if not (x0 - w < p[0] < x1 + w and y0 - h < p[1] < y1 + h) or not np.isfinite(p).all():
                break
        return np.array(path)
    finally:
        client.delete(name)


def draw(surface, paths, out, steps):
    f, _, start, minimum, box, logscale, _, _ = SURFACES[surface]
    x0, x1, y0, y1 = box
    X, Y = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    Z = f(X, Y)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=90)
    if logscale:
        levels = np.logspace(np.log10(max(Z.min(), 1e-3)), np.log10(Z.max()), 25)
        ax.contour(X, Y, Z, levels=levels, norm=matplotlib.colors.LogNorm(), cmap="Greys", linewidths=0.6)
    else:
        ax.contour(X, Y, Z, levels=25, cmap="Greys", linewidths=0.6)
    for label, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], "-", color=COLORS[label], lw=1.4,
                label="%s (%d steps)" % (label, len(path) - 1))
        ax.plot(path[-1, 0], path[-1, 1], "o", color=COLORS[label], ms=4)
    ax.plot(*start, "ks", ms=5)
    if minimum:
        ax.plot(*minimum, "k*", ms=12)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title("%s: %d steps per optimizer, each through optd" % (surface, steps))
    ax.legend(loc=LEGEND[surface], fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def make(client, outdir, steps=None):
    """Writes one PNG per surface into outdir; returns {surface: {label:
    (final point, final value)}} for printing and tests."""
    os.makedirs(outdir, exist_ok=True)
    summary = {}
    for surface, (f, grad, start, _, box, _, n, optimizers) in SURFACES.items():
        n = steps or n
        paths = {}
        for label, (opt, hp) in optimizers.items():
            paths[label] = walk(client, "path-%s-%s" % (surface, label.replace("+", "-")),
                                opt, hp, grad, start, n, box)
        out = os.path.join(outdir, "paths-%s.png" % surface)
        draw(surface, paths, out, n)
        summary[surface] = {l: (p[-1], float(f(*p[-1])), len(p) - 1) for l, p in paths.items()}
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--out", default=os.path.join(optd_local.REPO, "docs", "figures"))
    ap.add_argument("--steps", type=int, help="steps per path (default: per surface)")
    args = ap.parse_args()
    with optd_local.connect(args.url) as client:
        summary = make(client, args.out, args.steps)
    for surface, rows in summary.items():
        print("%s:" % surface)
        for label, (p, v, n) in rows.items():
            print("  %-13s %4d steps  ends at (%8.4f, %8.4f)  f = %.4g" % (label, n, p[0], p[1], v))
    print("wrote %s" % ", ".join(os.path.join(args.out, "paths-%s.png" % s) for s in summary))


if __name__ == "__main__":
    main()
