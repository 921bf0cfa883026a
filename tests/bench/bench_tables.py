#!/usr/bin/python3
"""bench_tables.py: tables (API.md "Tables: sparse rows"; issue 14's
targets), run by tests/bench/run.sh (`make bench`).

Every step here is a binary rows step (uint64 row numbers, then float32
values, Optd-Rows: 64) of 64 rows x 16 values on a sparse_adam table,
?return=none, sent by tests/bench/loadgen.c on one keep-alive connection,
closed loop.  The request bodies are 256 different ones, rotated (loadgen -B
with -M), each with its own 64 random rows, so consecutive steps touch
different rows of the table, as a recommender's minibatches do.

  size     the same step on a table of 1M rows (64 MiB of float32, 192 MiB
           with sparse_adam's two states) and of 1k rows, interleaved round
           by round: time per step, 1M / 1k (target <= 1.2x: a step costs
           the rows it touches, not the table);
  steps/s  the 1M-row table's rows steps/s against plain 10-parameter
           steps/s (adam, float32, binary, ?return=none) on the same daemon
           and connection (target >= 0.7x);
  bytes    a daemon with --data-dir (under build/, a real disk) and --sync
           always: the process's write_bytes from /proc/PID/io over N rows
           steps on the 1M-row table, per step, against the rows' own
           bytes (64 x 16 x 4 = 4,096; target <= 4x).  The runs start once
           the create's own writes are over; everything the daemon writes
           during the steps counts (journal, snapshots).

Ratios are medians of the per-round ratios, all from the same run.

    BUILD=build /usr/bin/python3 tests/bench/bench_tables.py [--quick]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BUILD, Client, ROOT, fmt, log, spread, start_optd, summary_row, write_bytes  # noqa: E402

LOADGEN = os.path.join(BUILD, "bench", "loadgen")
R = 16
ROWS_PER_STEP = 64
BIG, SMALL = 1 << 20, 1000
BODIES = 256
ROW_BYTES = ROWS_PER_STEP * R * 4


def settle(pid, quiet=1.5, limit=120):
    """Waits until the process has written nothing for `quiet` seconds (the
    create's journal record and snapshot of a 200 MB table are not the
    steps' to pay)."""
    last, since, t0 = write_bytes(pid), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
        time.sleep(0.25)
        now = write_bytes(pid)
        if now != last:
            last, since = now, time.monotonic()


def bodies(path, table_rows, seed):
    """BODIES rows-step bodies of equal length, one after another."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        for _ in range(BODIES):
            rows = rng.choice(table_rows, ROWS_PER_STEP, replace=False).astype("<u8")
            grad = (rng.standard_normal(ROWS_PER_STEP * R) * 0.01).astype("<f4")
            f.write(rows.tobytes() + grad.tobytes())
    return path


def loadgen(port, path, body_file, headers, seconds=None, count=None, mod=None):
    """(requests/s, p50 ms) of one closed-loop run on one connection."""
    argv = [LOADGEN, "-c", "1", "-m", "POST", "-p", path, "-B", body_file,
            "-T", "application/octet-stream", "-H", headers]
    argv += ["-d", str(seconds), "-w", "0.3"] if count is None else ["-n", str(count), "-w", "0"]
    if mod:
        argv += ["-M", str(mod)]
    out = subprocess.run(argv + ["127.0.0.1", str(port)], capture_output=True, text=True,
                         timeout=(seconds or 60) + 120)
    m = re.search(r"rate=([\d.]+) p50_ms=([\d.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("loadgen failed: %s %s" % (out.stdout, out.stderr))
    return float(m.group(1)), float(m.group(2))


def create(c, name, body):
    st, _, data = c.request("PUT", "/v1/sessions/" + name, json.dumps(body))
    assert st == 201, data


def table(rows):
    return {"optimizer": "sparse_adam", "dtype": "float32", "size": rows * R, "row_size": R,
            "hyperparameters": {"lr": 0.01}}


def speed(tmp, rounds, secs):
    """Per round: (1M-row step/s, 1k-row step/s, plain step/s, p50s)."""
    optd = start_optd(tmp, os.cpu_count() or 1)
    try:
        c = Client(optd.port)
        create(c, "big", table(BIG))
        create(c, "small", table(SMALL))
        create(c, "plain", {"optimizer": "adam", "dtype": "float32", "size": 10})
        c.close()
        big = bodies(os.path.join(tmp, "big.bin"), BIG, 1)
        small = bodies(os.path.join(tmp, "small.bin"), SMALL, 2)
        plain = os.path.join(tmp, "plain.bin")
        with open(plain, "wb") as f:
            f.write((np.arange(10, dtype="<f4") * 0.01).tobytes())
        hdr = "Optd-Rows: %d" % ROWS_PER_STEP
        res = {k: [] for k in ("big", "small", "plain", "big_p50", "small_p50", "plain_p50")}
        for r in range(rounds):
            log(f"tables round {r + 1}/{rounds}")
            for name, body, h, mod in (("big", big, hdr, BODIES), ("small", small, hdr, BODIES),
                                       ("plain", plain, "Optd-Dtype: float32", None)):
                rate, p50 = loadgen(optd.port, "/v1/sessions/%s/step?return=none" % name, body, h,
                                    seconds=secs, mod=mod)
                res[name].append(rate)
                res[name + "_p50"].append(p50)
        return res
    finally:
        optd.stop()


def durable_bytes(tmp, runs, steps):
    """write_bytes per durable 64-row step, one figure per run."""
    root = tempfile.mkdtemp(prefix="bench-tables-", dir=os.path.join(ROOT, "build"))
    data = os.path.join(root, "data")
    os.mkdir(data)
    optd = start_optd(tmp, 2, ["--data-dir", data, "--sync", "always"])
    try:
        c = Client(optd.port)
        create(c, "big", table(BIG))
        c.close()
        big = bodies(os.path.join(tmp, "durable.bin"), BIG, 3)
        hdr = "Optd-Rows: %d" % ROWS_PER_STEP
        path = "/v1/sessions/big/step?return=none"
        loadgen(optd.port, path, big, hdr, count=50, mod=BODIES)
        settle(optd.pid())
        out = []
        for r in range(runs):
            log(f"tables durable run {r + 1}/{runs}")
            before = write_bytes(optd.pid())
            loadgen(optd.port, path, big, hdr, count=steps, mod=BODIES)
            out.append((write_bytes(optd.pid()) - before) / steps)
        return out
    finally:
        optd.stop()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, secs, runs, steps = (3, 1, 2, 300) if args.quick else (7, 2, 3, 1000)
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as tmp:
        res = speed(tmp, rounds, secs)
        dur = durable_bytes(tmp, runs, steps)
    size_ratio = statistics.median(s / b for s, b in zip(res["small"], res["big"]))
    rate_ratio = statistics.median(b / p for b, p in zip(res["big"], res["plain"]))
    dur_ratio = statistics.median(dur) / ROW_BYTES
    med = {k: statistics.median(v) for k, v in res.items()}
    us = {k: [1e6 / v for v in res[k]] for k in ("big", "small", "plain")}

    print("## Tables: 64-row x 16 rows steps (sparse_adam, float32, binary)\n")
    print("One connection, closed loop, `?return=none`; %d rounds of %d s, interleaved; 256 "
          "different bodies rotated.\n" % (rounds, secs))
    print("| what | steps/s (median) | range | time per step | p50 latency |")
    print("| --- | --- | --- | --- | --- |")
    for k, what in (("big", "rows step, table of 1M rows x 16"),
                    ("small", "rows step, table of 1k rows x 16"),
                    ("plain", "plain step, 10 float32 params (adam, binary)")):
        print(f"| {what} | {fmt(med[k])} | {spread(res[k])} | {fmt(statistics.median(us[k]))} µs "
              f"| {med[k + '_p50']:.3f} ms |")
    print(f"\n1M-row / 1k-row time per step: {size_ratio:.2f}x (median of per-round ratios; "
          "target <= 1.2x)")
    print(f"rows steps/s / plain steps/s: {rate_ratio:.2f}x (target >= 0.7x)\n")
    print("Durable rows steps (`--sync always`, 1M-row table, %d steps a run, data dir on "
          "build/'s disk): write_bytes per step %s bytes (runs: %s), %.2fx the rows' own %s "
          "bytes (target <= 4x)\n" % (steps, fmt(statistics.median(dur)),
                                       ", ".join(fmt(d) for d in dur), dur_ratio, fmt(ROW_BYTES)))
    summary_row("tables: 64x16 rows step on a 1M-row table (time per step)", us["big"], " µs",
                f"1k-row table {fmt(statistics.median(us['small']))} µs", f"{size_ratio:.2f}×",
                "≤ 1.2×", size_ratio <= 1.2)
    summary_row("tables: bytes written per durable 64-row step (--sync always)", dur, " B",
                f"the rows' own {fmt(ROW_BYTES)} B", f"{dur_ratio:.2f}×", "≤ 4×", dur_ratio <= 4)
    summary_row("tables: rows steps/s (64x16, binary, 1M-row table)", res["big"], "/s",
                f"plain 10-param steps {fmt(med['plain'])}/s", f"{rate_ratio:.2f}×", "≥ 0.7×",
                rate_ratio >= 0.7)


if __name__ == "__main__":
    main()
