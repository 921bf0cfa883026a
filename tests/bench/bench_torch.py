#!/usr/bin/python3
"""bench_torch.py: what RemoteOptimizer costs a PyTorch user (issue 12).

Two figures, each beside its peer measured in the same rounds (interleaved,
since the machine is shared):
  * RemoteOptimizer.step() on a 1M-parameter float32 model (one binary
    request to the daemon, the answer written into the parameters) against
    torch.optim.AdamW.step() in-process on the same model; target <= 2x.
  * creating a 2M-parameter session from a model (RemoteOptimizer(...):
    create with size and groups, then the parameters in binary) against one
    binary step of that size; target <= 3x.
The daemon runs with --threads 2 (this machine's CPUs), logging to a file;
torch with its default threads, as a user's would.  Each ratio is the median
of the per-round ratios.
Prints a Markdown section on stdout and appends the summary rows.

    BUILD=build /usr/bin/python3 tests/bench/bench_torch.py [--rounds 21]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

sys.path.insert(0, os.path.join(benchlib.ROOT, "api", "clients", "python"))
from optd_client import Client  # noqa: E402
from optd_client.torch import RemoteOptimizer  # noqa: E402


def model(n_in, n_out):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(n_in, n_out))
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return m


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_step(url, rounds):
    """1M float32 parameters (Linear 1000x1000 + bias): remote vs in-process."""
    a, b = model(1000, 1000), model(1000, 1000)
    n = sum(p.numel() for p in a.parameters())
    ta = torch.optim.AdamW(a.parameters(), lr=1e-3)
    rb = RemoteOptimizer(b.parameters(), "adamw", url=url, name="bench-step", lr=1e-3)
    for _ in range(3):  # warm both
        ta.step()
        rb.step()
    remote, local = [], []
    for _ in range(rounds):
        local.append(timed(ta.step) * 1e3)
        remote.append(timed(rb.step) * 1e3)
    return n, remote, local


def bench_create(url, rounds):
    """A 2M-parameter float32 session from a model vs one binary step of it."""
    m = model(2000, 1000)
    n = sum(p.numel() for p in m.parameters())
    c = Client(url, timeout=120)
    grad = torch.randn(n).numpy().tobytes()
    create, step = [], []
    for i in range(rounds):
        name = "bench-create-%d" % i

        def make():
            RemoteOptimizer(m.parameters(), "adamw", url=url, name=name, lr=1e-3)
        create.append(timed(make) * 1e3)
        step.append(timed(lambda: c.step_bytes(name, grad, "float32", expect_step=0)) * 1e3)
        c.delete(name)
    return n, create, step


def ratio(a, b):
    return statistics.median([x / y for x, y in zip(a, b)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = benchlib.start_optd(tmp, 2)
        url = "http://127.0.0.1:%d" % srv.port
        try:
            benchlib.log("bench_torch: RemoteOptimizer.step() vs AdamW.step(), 1M float32")
            n1, remote, local = bench_step(url, args.rounds)
            benchlib.log("bench_torch: a 2M-parameter session from a model vs one binary step")
            n2, create, step = bench_create(url, args.rounds)
        finally:
            srv.stop()
    r1, r2 = ratio(remote, local), ratio(create, step)
    print("## RemoteOptimizer (optd_client.torch)\n")
    print("%d rounds, interleaved; torch %s with its default %d threads; optd --threads 2; ms.\n"
          % (args.rounds, torch.__version__, torch.get_num_threads()))
    print("| figure | median | min–max | peer | peer median | ratio (median of rounds) |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    print("| RemoteOptimizer.step(), %s float32 params | %.2f | %s | torch AdamW.step() in-process | %.2f | %.2f× |"
          % (f"{n1:,}", statistics.median(remote), benchlib.spread(remote), statistics.median(local), r1))
    print("| RemoteOptimizer(...) creating a %s-param session | %.2f | %s | one binary step of that size | %.2f | %.2f× |"
          % (f"{n2:,}", statistics.median(create), benchlib.spread(create), statistics.median(step), r2))
    print()
    benchlib.summary_row("RemoteOptimizer.step(), 1M float32 params", remote, " ms",
                         "torch AdamW.step() %s ms" % benchlib.fmt(statistics.median(local)),
                         "%.2f×" % r1, "≤ 2×", r1 <= 2.0)
    benchlib.summary_row("RemoteOptimizer(...) creating a 2M float32 session", create, " ms",
                         "one binary step %s ms" % benchlib.fmt(statistics.median(step)),
                         "%.2f×" % r2, "≤ 3×", r2 <= 3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
