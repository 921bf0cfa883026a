#!/usr/bin/python3
"""recommender.py: matrix factorisation with its embedding tables in optd.

The script makes its own data (fixed seed, no download): a low-rank
"true" model, user factors P* and item factors Q* with N(0, rank^-1/4)
entries (so that a rating has variance 1 before noise), and ratings r = P*[u].Q*[i] + noise of standard deviation
--noise for a random sample of (user, item) pairs, split into training and
held-out ratings.  The best any model can do on the held-out ratings is the
noise itself: the generating model's RMSE there is the noise floor.

The model learns P and Q: two tables in optd (API.md "Tables: sparse rows"),
`users` (one row of --rank float32 values per user) and `items`, each
split over --shards sessions by the client's ShardedTable (row r in session
NAME.{r mod k}), stepped by sparse_adam.  Each minibatch of ratings pulls
the rows of its users and items (POST .../rows, binary), computes the
squared-error gradient for those rows only, and pushes it (binary rows
steps, Optd-Rows): a user rated twice in the batch is listed twice and the
daemon sums the two gradients, as PyTorch coalesces a sparse gradient.  A
step moves len(batch) rows of each table, never the whole table.  After
each epoch the held-out RMSE is printed beside the noise floor.

    /usr/bin/python3 examples/recommender.py [--url URL[,URL...]] [--epochs 10]
        [--shards 2] [--users 4000] [--items 2000] [--ratings 400000]

--url: one optd (or the sharding proxy of deploy/nginx), or a
comma-separated list of daemons to spread the shards over; without it a
daemon is started from build/optd.
"""
import argparse
import time

import numpy as np

import optd_local
from optd_client import ShardedTable


def make_data(args):
    """(train, test, floor): rating triples (users, items, ratings) and the
    generating model's RMSE on the held-out ratings."""
    rng = np.random.default_rng(args.seed)
    scale = args.rank ** -0.25  # so that P*[u].Q*[i] has variance 1
    P = rng.normal(0, scale, (args.users, args.rank))
    Q = rng.normal(0, scale, (args.items, args.rank))
    pairs = rng.choice(args.users * args.items, args.ratings, replace=False)
    u, i = pairs // args.items, pairs % args.items
    noise = rng.normal(0, args.noise, args.ratings)
    r = np.einsum("nk,nk->n", P[u], Q[i]) + noise
    n_test = args.ratings // 10
    test = (u[:n_test], i[:n_test], r[:n_test])
    train = (u[n_test:], i[n_test:], r[n_test:])
    floor = float(np.sqrt(np.mean(noise[:n_test] ** 2)))
    return train, test, floor


def rmse(users, items, test):
    u, i, r = test
    pred = np.einsum("nk,nk->n", users[u], items[i])
    return float(np.sqrt(np.mean((pred - r) ** 2)))


def train(args, urls, data):
    (tu, ti, tr), test, floor = data
    rng = np.random.default_rng(args.seed + 1)
    hyper = {"lr": args.lr}
    tables = {}
    for name, n in (("users", args.users), ("items", args.items)):
        t = ShardedTable(urls, "%s-%s" % (args.prefix, name), shards=args.shards)
        init = rng.normal(0, args.init, (n, args.model_rank)).astype(np.float32)
        t.create(n, args.model_rank, "sparse_adam", hyperparameters=hyper, dtype="float32",
                 init=init)
        tables[name] = t
    U, V = tables["users"], tables["items"]
    try:
        print("%d users x %d items, %d training and %d held-out ratings, rank %d, noise %.3f"
              % (args.users, args.items, len(tr), len(test[0]), args.rank, args.noise))
        print("tables: %s and %s, %d x %d float32 and %d x %d, sparse_adam lr %g, %d shard(s) "
              "each, minibatches of %d ratings" % (U.name, V.name, args.users, args.model_rank,
                                                   args.items, args.model_rank, args.lr,
                                                   args.shards, args.batch))
        print("held-out RMSE of predicting 0 (the ratings' mean): %.4f; noise floor "
              "(the generating model's RMSE): %.4f" % (float(np.sqrt(np.mean(test[2] ** 2))), floor))
        step, t0, pushed = 0, time.monotonic(), 0
        for epoch in range(args.epochs):
            order = rng.permutation(len(tr))
            for start in range(0, len(order), args.batch):
                b = order[start:start + args.batch]
                u, i, r = tu[b], ti[b], tr[b]
                _, pu = U.pull(u)
                _, qi = V.pull(i)
                pu = pu.reshape(-1, args.model_rank)
                qi = qi.reshape(-1, args.model_rank)
                err = (np.einsum("nk,nk->n", pu, qi) - r).astype(np.float32)[:, None]
                # Gradient of the batch's mean squared error (plus L2 on the
                # rows it touches), row by row, repeats left to the daemon.
                gu = (err * qi + args.l2 * pu) * (2.0 / len(b))
                gi = (err * pu + args.l2 * qi) * (2.0 / len(b))
                U.push(u, gu.astype(np.float32), expect_step=step)
                V.push(i, gi.astype(np.float32), expect_step=step)
                step += 1
                pushed += 2 * len(b)
            _, users = U.pull(np.arange(args.users))
            _, items = V.pull(np.arange(args.items))
            print("epoch %2d: held-out RMSE %.4f (noise floor %.4f, ratio %.3f), %d steps, %.1f s"
                  % (epoch + 1, rmse(users.reshape(-1, args.model_rank),
                                     items.reshape(-1, args.model_rank), test),
                     floor, rmse(users.reshape(-1, args.model_rank),
                                 items.reshape(-1, args.model_rank), test) / floor,
                     step, time.monotonic() - t0))
        final = rmse(users.reshape(-1, args.model_rank), items.reshape(-1, args.model_rank), test)
        print("final held-out RMSE %.4f against the noise floor %.4f: %.3fx, after %d steps "
              "pushing %d rows (%.0f rows/s)" % (final, floor, final / floor, step, pushed,
                                                 pushed / (time.monotonic() - t0)))
        return final, floor
    finally:
        if not args.keep:
            U.delete()
            V.delete()
        U.close()
        V.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="optd URL, or a comma-separated list of daemons "
                                  "(default: start build/optd)")
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--ratings", type=int, default=400000)
    ap.add_argument("--rank", type=int, default=8, help="rank of the generating model")
    ap.add_argument("--model-rank", type=int, default=8, help="row size of the tables")
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.003)
    ap.add_argument("--init", type=float, default=0.1)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefix", default="mf")
    ap.add_argument("--keep", action="store_true", help="keep the tables afterwards")
    args = ap.parse_args()
    data = make_data(args)
    if args.url and "," in args.url:
        train(args, args.url.split(","), data)
        return
    with optd_local.connect(args.url) as client:
        train(args, client.base_url, data)


if __name__ == "__main__":
    main()
