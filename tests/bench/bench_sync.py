#!/usr/bin/python3
"""bench_sync.py: what --sync always costs, and what group commit saves.

Starts the daemon (OPTD_BIN, default build/optd) with a fresh --data-dir in
each mode and drives it with tests/bench/loadgen.c ($BUILD/bench/loadgen,
which `make bench` builds): CLIENTS keep-alive connections in closed loop,
each posting steps to its own session (-C: ?return=none, Adam, SIZE
float64 params) for SECONDS, and reports steps/s; each mode is run RUNS
times and the median is shown, with the ratio always/interval, and beside
it one client alone in always mode, which is bounded by one fsync per
step: the ratio of the two always rows is what group commit buys.  (The
clients were Python threads once; they capped both modes at what one
Python process sends, about 3,000 steps/s here, so the ratio said
nothing.)  optd runs with one HTTP worker thread per client (--threads),
since a request waiting for its commit holds its worker thread: with fewer
threads than clients, fewer commits can share a round.  Prints a Markdown
section on stdout.

    BUILD=build /usr/bin/python3 tests/bench/bench_sync.py [--clients 16]
        [--seconds 3] [--runs 3] [--size 100]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOADGEN = os.path.join(REPO, os.environ.get("BUILD", "build"), "bench", "loadgen")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Daemon:
    def __init__(self, mode, data_root, threads):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sync-%s-" % mode, dir=data_root)
        bin_ = os.environ.get("OPTD_BIN", os.path.join(REPO, "build", "optd"))
        self.log_path = os.path.join(data_root, "optd-%s-%d.log" % (mode, self.port))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [bin_, "--listen", "127.0.0.1:%d" % self.port, "--data-dir",
             os.path.join(self.dir, "data"), "--sync", mode,
             "--threads", str(threads)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("bench_sync: optd did not start")

    def stop(self):
        """Stops optd; returns records per fsync round from its last log line
        about the journal (None in interval mode)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        per_round = None
        with open(self.log_path, "rb") as f:
            for line in f:
                if b"fsync rounds (" in line:
                    per_round = float(line.rsplit(b"(", 1)[1].split()[0])
        os.unlink(self.log_path)
        return per_round


def one_run(mode, clients, seconds, size, data_root, threads):
    d = Daemon(mode, data_root, threads)
    try:
        hdr = {"Content-Type": "application/json"}
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        for i in range(clients):
            c.request("POST", "/v1/sessions", json.dumps(
                {"name": "b%d" % i, "optimizer": "adam", "size": size}), hdr)
            r = c.getresponse()
            r.read()
            assert r.status == 201, r.status
        c.close()
        grad = json.dumps({"gradient": [0.001 * (k % 7) for k in range(size)]})
        out = subprocess.run(
            [LOADGEN, "-c", str(clients), "-C", "-R", "0", "-d", str(seconds), "-m", "POST",
             "-p", "/v1/sessions/b%d/step?return=none", "-b", grad, "127.0.0.1", str(d.port)],
            capture_output=True, text=True, timeout=seconds + 60)
        fields = dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)
        if out.returncode != 0 or "rate" not in fields:
            raise SystemExit("bench_sync: loadgen failed: %s%s" % (out.stdout, out.stderr))
        rate = float(fields["rate"])
    finally:
        per_round = d.stop()
    return rate, per_round


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0,
                    help="optd --threads (default: one per client, so every client's "
                         "request can wait for its commit at once)")
    ap.add_argument("--data-root", default=None,
                    help="where the data dirs go (default: a temp dir; put it on the disk "
                         "you want to measure, /tmp may be tmpfs)")
    a = ap.parse_args()
    if not os.access(LOADGEN, os.X_OK):
        raise SystemExit("bench_sync: %s is missing (make bench builds it)" % LOADGEN)
    threads = a.threads or a.clients
    root = a.data_root or tempfile.mkdtemp(prefix="optd-bench-sync-", dir=REPO + "/build")
    os.makedirs(root, exist_ok=True)
    results, batch = {}, {}
    for mode in ("interval", "always"):
        runs = [one_run(mode, a.clients, a.seconds, a.size, root, threads)
                for _ in range(a.runs)]
        results[mode] = [r for r, _ in runs]
        batch[mode] = [b for _, b in runs if b is not None]
        print("bench_sync: %s: %s steps/s" % (mode, ", ".join("%.0f" % x for x in results[mode])),
              file=sys.stderr)
    # one client alone in always mode: one fsync per step, no grouping possible
    single_runs = [one_run("always", 1, a.seconds, a.size, root, threads)
                   for _ in range(a.runs)]
    single = statistics.median(r for r, _ in single_runs)
    if not a.data_root:
        shutil.rmtree(root, ignore_errors=True)

    med = {m: statistics.median(v) for m, v in results.items()}
    print("## Durability: --sync always (group commit) vs interval\n")
    print("%d clients (loadgen connections in closed loop), each stepping its own Adam session "
          "of %d float64 parameters over one keep-alive connection (`?return=none`), "
          "`--threads %d`, %g s per run, median of "
          "%d runs; data directory under `build/` (a real disk, not tmpfs).\n"
          % (a.clients, a.size, threads, a.seconds, a.runs))
    print("| mode | clients | steps/s (median) | runs | records per fsync (median) |")
    print("| --- | ---: | ---: | --- | ---: |")
    for m in ("interval", "always"):
        b = "%.1f" % statistics.median(batch[m]) if batch[m] else "n/a"
        print("| `--sync %s` | %d | %.0f | %s | %s |"
              % (m, a.clients, med[m], ", ".join("%.0f" % x for x in results[m]), b))
    sb = [b for _, b in single_runs if b is not None]
    print("| `--sync always` | 1 | %.0f | %s | %s |"
          % (single, ", ".join("%.0f" % r for r, _ in single_runs),
             "%.1f" % statistics.median(sb) if sb else "n/a"))
    print()
    print("always / interval = **%.2f**; always with %d clients / always with 1 client = "
          "**%.1f×** (what group commit buys: %d concurrent steps share fsync rounds)."
          % (med["always"] / med["interval"], a.clients, med["always"] / single, a.clients))
    print()


if __name__ == "__main__":
    main()
