#!/usr/bin/python3
"""summary.py: the one table at the top of the `make bench` report.

  summary.py optim REPORT SUMMARY   reads bench_optim's Markdown table from
                                    REPORT and appends the optimizer-kernel
                                    rows (the worst kernel/floor ratio of each
                                    target group and dtype) to SUMMARY
  summary.py sync REPORT SUMMARY    the same for bench_sync.py's table
                                    (--sync always vs interval, 16 clients)
  summary.py table SUMMARY          prints SUMMARY (tab-separated rows written
                                    by benchlib.summary_row) as Markdown

Standard library only."""

import os
import sys

GROUP1 = ("sgd", "sgd (momentum 0.9)", "adam", "adamw", "rmsprop", "adagrad")
HEADER = ("figure", "median", "min–max", "floor or peer (median)", "ratio", "target", "met")


def optim_rows(report, summary):
    rows = []
    with open(report, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            # | optimizer | dtype | kernel | min–max | step | min–max | bytes | floor | kernel/floor | step/floor |
            if len(cells) != 10 or not cells[8].endswith("×"):
                continue
            try:
                rows.append({"opt": cells[0], "dtype": cells[1], "kernel": float(cells[2]),
                             "spread": cells[3], "floor": float(cells[7]),
                             "ratio": float(cells[8].rstrip("×"))})
            except ValueError:
                continue
    if not rows:
        print("summary.py: no bench_optim table found in " + report, file=sys.stderr)
        return 1
    out = []
    for dtype in ("float32", "float64"):
        for name, members, limit in (("adam, adamw, sgd, rmsprop, adagrad", GROUP1, 1.3),
                                     ("adamax, nadam, radam, adadelta, lion", None, 2.0)):
            g = [r for r in rows if r["dtype"] == dtype
                 and ((r["opt"] in members) if members else (r["opt"] not in GROUP1))]
            if not g:
                continue
            w = max(g, key=lambda r: r["ratio"])
            out.append("\t".join([
                f"10M {dtype} update, one thread, worst of {name} ({w['opt']})",
                f"{w['kernel']:.3f} ns/param", w["spread"] + " ns/param",
                f"streaming floor {w['floor']:.3f} ns/param", f"{w['ratio']:.2f}×",
                f"≤ {limit}×", "yes" if w["ratio"] <= limit else "**no**"]) + "\n")
    with open(summary, "a", encoding="utf-8") as f:
        f.writelines(out)
    return 0


def sync_rows(report, summary):
    """bench_sync.py prints | `--sync MODE` | clients | median | run, run, ... | ... |."""
    found = {}
    with open(report, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and cells[0].startswith("`--sync "):
                try:
                    runs = [float(x) for x in cells[3].split(",")]
                    key = (cells[0].strip("`").split()[1], int(cells[1]))
                    found.setdefault(key, (float(cells[2]), runs))
                except ValueError:
                    continue
    pairs = [(k, v) for k, v in found.items() if k[0] == "always" and ("interval", k[1]) in found]
    if not pairs:
        print("summary.py: no always/interval rows found in " + report, file=sys.stderr)
        return 1
    (_, clients), (med, runs) = max(pairs, key=lambda kv: kv[0][1])
    imed = found[("interval", clients)][0]
    r = med / imed
    with open(summary, "a", encoding="utf-8") as f:
        f.write("\t".join([
            f"steps/s with --sync always, {clients} clients on {clients} sessions", f"{med:,.0f}/s",
            f"{min(runs):,.0f}–{max(runs):,.0f}/s", f"--sync interval {imed:,.0f}/s", f"{r:.2f}×",
            "≥ 0.3×", "yes" if r >= 0.3 else "**no**"]) + "\n")
    return 0


def table(summary):
    rows = []
    if os.path.exists(summary):
        with open(summary, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    print("## Summary: issue 5's targets\n")
    print("Each figure is the median of several runs; the floor or peer was measured in the same "
          "run, interleaved with it.  Details of every figure follow in the sections below.\n")
    print("| " + " | ".join(HEADER) + " |")
    print("| --- | ---: | ---: | --- | ---: | --- | --- |")
    for r in rows:
        r = (r + [""] * len(HEADER))[:len(HEADER)]
        print("| " + " | ".join(r) + " |")
    print()
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "optim":
        return optim_rows(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "sync":
        return sync_rows(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "table":
        return table(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
