#!/usr/bin/python3
"""bench_fleet.py: a tuning fleet's step (issue 15's target), run by
tests/bench/run.sh (`make bench`).

1000 sessions x 10 float64 parameters (sgd).  On ONE keep-alive connection
(tests/bench/loadgen.c, closed loop), interleaved round by round:

  single   plain 10-element JSON steps, one session per request, walking
           the 1000 sessions round-robin;
  batch    POST /v1/steps with 1000 items (every session once), ?return=none
           and with the parameters returned;
  nginx    `return 200` on one connection (the request-rate ceiling of a
           well-kept server on this machine), when nginx is installed;
  always   the batch (?return=none) on a daemon with --sync always and a
           data directory: one fsync round per batch (group commit);
  threads  the batch with its parameters returned (1000 items, and 10000:
           each session ten times) on a daemon with --threads 1 beside the
           one with --threads <CPUs>: the batch is read, prepared and printed
           over the threads, so the ratio is what they add (per-round ratio,
           median).

The figure is session-steps per second; the ratio is batch / single, the
median of the per-round ratios (target >= 20x).

Usage: bench_fleet.py [--quick]   (BUILD=dir in the environment)"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BUILD, Client, fmt, log, spread, start_optd, summary_row  # noqa: E402
import bench_http  # noqa: E402  (nginx helper)

LOADGEN = os.path.join(BUILD, "bench", "loadgen")
SESSIONS = 1000
SIZE = 10


def loadgen(port, seconds, path, body_file, mod=None):
    argv = [LOADGEN, "-c", "1", "-d", str(seconds), "-w", "0.3", "-m", "POST", "-p", path,
            "-b", "@" + body_file if body_file else "", "-T", "application/json"]
    if not body_file:
        argv = [LOADGEN, "-c", "1", "-d", str(seconds), "-w", "0.3", "-p", path]
    if mod:
        argv += ["-M", str(mod)]
    out = subprocess.run(argv + ["127.0.0.1", str(port)], capture_output=True, text=True,
                         timeout=seconds + 60)
    m = re.search(r"rate=([\d.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("loadgen failed: %s %s" % (out.stdout, out.stderr))
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, secs = (3, 1) if args.quick else (7, 2)
    with tempfile.TemporaryDirectory() as tmp:
        threads = os.cpu_count() or 1
        optd = start_optd(tmp, threads)
        optd1 = start_optd(tmp, 1)
        always = start_optd(tmp, threads,
                            ["--sync", "always", "--data-dir", os.path.join(tmp, "data")])
        nginx = bench_http.start_nginx(tmp, 1)
        try:
            for port in (always.port, optd1.port, optd.port):
                c = Client(port)
                for i in range(SESSIONS):
                    st, _, data = c.request("PUT", "/v1/sessions/f%d" % i,
                                            json.dumps({"optimizer": "sgd", "size": SIZE}))
                    assert st == 201, data
                if port != optd.port:
                    c.close()
            grad = [0.001 * (k + 1) for k in range(SIZE)]
            batch10k = os.path.join(tmp, "batch10k.json")
            with open(batch10k, "w") as f:
                json.dump({"steps": [{"session": "f%d" % (i % SESSIONS), "gradient": grad}
                                     for i in range(10 * SESSIONS)]}, f)
            single = os.path.join(tmp, "single.json")
            with open(single, "w") as f:
                json.dump({"gradient": grad}, f)
            batch = os.path.join(tmp, "batch.json")
            with open(batch, "w") as f:
                json.dump({"steps": [{"session": "f%d" % i, "gradient": grad}
                                     for i in range(SESSIONS)]}, f)
            st, _, data = c.request("POST", "/v1/steps", open(batch).read())
            assert st == 200 and b'"error"' not in data, data[:300]
            c.close()
            res = {"single": [], "batch": [], "batch_params": [], "nginx": [], "ratio": [],
                   "always": [], "t1": [], "tn": [], "t1_10k": [], "tn_10k": [], "tratio": [],
                   "tratio_10k": []}
            for r in range(rounds):
                log(f"fleet round {r + 1}/{rounds}")
                s = loadgen(optd.port, secs, "/v1/sessions/f%d/step?return=none", single, SESSIONS)
                b = loadgen(optd.port, secs, "/v1/steps?return=none", batch) * SESSIONS
                bp = loadgen(optd.port, secs, "/v1/steps", batch) * SESSIONS
                res["single"].append(s)
                res["batch"].append(b)
                res["batch_params"].append(bp)
                res["ratio"].append(b / s)
                if nginx:
                    res["nginx"].append(loadgen(nginx.port, secs, "/", None))
                res["always"].append(loadgen(always.port, secs, "/v1/steps?return=none", batch) * SESSIONS)
                for body, k, n in ((batch, "", SESSIONS), (batch10k, "_10k", 10 * SESSIONS)):
                    one = loadgen(optd1.port, secs, "/v1/steps", body) * n
                    many = loadgen(optd.port, secs, "/v1/steps", body) * n
                    res["t1" + k].append(one)
                    res["tn" + k].append(many)
                    res["tratio" + k].append(many / one)
        finally:
            optd.stop()
            optd1.stop()
            always.stop()
            if nginx:
                nginx.stop()
    med = {k: statistics.median(v) for k, v in res.items() if v}
    ratio = med["ratio"]
    print("## Fleets: 1000 sessions x 10 params on one connection\n")
    print("| what | session-steps/s (median) | range |")
    print("| --- | --- | --- |")
    print(f"| plain step requests, round-robin | {fmt(med['single'])} | {spread(res['single'])} |")
    print(f"| POST /v1/steps, 1000 items, ?return=none | {fmt(med['batch'])} | {spread(res['batch'])} |")
    print(f"| POST /v1/steps, 1000 items, with params | {fmt(med['batch_params'])} | "
          f"{spread(res['batch_params'])} |")
    print(f"| POST /v1/steps, 1000 items, ?return=none, --sync always (one fsync a batch) | "
          f"{fmt(med['always'])} | {spread(res['always'])} |")
    if res["nginx"]:
        print(f"| nginx `return 200` requests/s, same connection count | {fmt(med['nginx'])} | "
              f"{spread(res['nginx'])} |")
    print(f"\nbatch / single: {ratio:.1f}x (median of {rounds} per-round ratios; target >= 20x)\n")
    print(f"| batch with params, read/prepared/printed over threads | --threads 1 | --threads {threads} "
          f"| ratio (median of per-round) |")
    print("| --- | --- | --- | --- |")
    for k, what in (("", "1000 items"), ("_10k", "10000 items")):
        print(f"| {what} | {fmt(med['t1' + k])} ({spread(res['t1' + k])}) | "
              f"{fmt(med['tn' + k])} ({spread(res['tn' + k])}) | {med['tratio' + k]:.2f}x |")
    print()
    peer = f"single steps {fmt(med['single'])}/s"
    if res["nginx"]:
        peer += f"; nginx {fmt(med['nginx'])} req/s"
    summary_row("fleet: session-steps/s, batches of 1000 (1 connection)", res["batch"], "/s", peer,
                f"{ratio:.1f}×", "≥ 20×", ratio >= 20)
    summary_row(f"fleet: batch of 10000 with params, --threads {threads}", res["tn_10k"], "/s",
                f"--threads 1 {fmt(med['t1_10k'])}/s", f"{med['tratio_10k']:.2f}×", "—", None)


if __name__ == "__main__":
    main()
