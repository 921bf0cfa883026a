#!/usr/bin/python3
"""bench_ui.py: how fast the page /ui/ shows a big daemon (issue 15).

optd holds 10,000 sessions; three of them have 1000 steps of history with a
loss.  Debian's headless Chromium opens the deep link comparing those three,
with its cache off (every file fetched again, as on a first visit), RUNS
times; each load reports, from navigation start (Chromium's own
performance timings): the first contentful paint, the list of sessions
shown (the page's "optd-list" mark) and the chart of 3 x 1000 points drawn
(the "optd-chart" mark, set once Chart.js has drawn every picked session's
curve).  The last is the summary figure (target: under 1 s).

    BUILD=build /usr/bin/python3 tests/bench/bench_ui.py      (make bench runs it)
"""

import http.client
import json
import os
import sys
import tempfile
import time

import benchlib

sys.path.insert(0, os.path.join(benchlib.ROOT, "tests", "integration"))
from browser import chromium  # noqa: E402

SESSIONS = 10000
CHART = ["chart-a", "chart-b", "chart-c"]
POINTS = 1000
RUNS = 7

TIMINGS = """
const nav = performance.getEntriesByType('navigation')[0];
const paint = performance.getEntriesByName('first-contentful-paint')[0];
const mark = (n) => { const m = performance.getEntriesByName(n)[0]; return m ? m.startTime : null; };
return {fcp: paint ? paint.startTime : null, list: mark('optd-list'), chart: mark('optd-chart'),
        dom: nav ? nav.domContentLoadedEventEnd : null,
        bytes: performance.getEntriesByType('resource').reduce((s, e) => s + e.transferSize, 0)};"""


def fill(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def req(method, path, body):
        c.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError("%s %s: %d %s" % (method, path, r.status, data[:200]))

    t0 = time.monotonic()
    for i in range(SESSIONS - len(CHART)):
        req("POST", "/v1/sessions", {"name": "trial-%05d" % i, "optimizer": "adam", "size": 10,
                                     "labels": {"study": "bench", "trial": str(i)}})
    for k, name in enumerate(CHART):
        req("POST", "/v1/sessions", {"name": name, "optimizer": "adam", "size": 10,
                                     "labels": {"study": "bench"}})
        for s in range(POINTS):
            req("POST", "/v1/sessions/%s/step?return=none" % name,
                {"gradient": [0.01 * (j + 1) for j in range(10)], "step": s,
                 "loss": (k + 1) / (1.0 + 0.01 * s)})
    c.close()
    benchlib.log("bench_ui: %d sessions, %d x %d steps in %.1f s"
                 % (SESSIONS, len(CHART), POINTS, time.monotonic() - t0))


def load(driver, url):
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = driver.execute_script(TIMINGS)
        if t["chart"] is not None and t["list"] is not None:
            points = driver.execute_script(
                "const c = Chart.getChart(document.getElementById('chart'));"
                "return c.data.datasets.map(d => d.data.length);")
            if points != [POINTS] * len(CHART):
                raise RuntimeError("the chart holds %r points, want %d each" % (points, POINTS))
            return t
        time.sleep(0.05)
    raise RuntimeError("the page did not draw its chart within 60 s")


def main():
    tmp = tempfile.mkdtemp(prefix="optd-bench-ui-")
    srv = benchlib.start_optd(tmp, 2, ["--log-level", "warn"])
    driver = None
    try:
        fill(srv.port)
        driver = chromium(1280, 900)
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        url = "http://127.0.0.1:%d/ui/?%s" % (srv.port, "&".join("session=" + n for n in CHART))
        load(driver, url)  # warm-up: Chromium's own start-up is not the page's
        runs = [load(driver, url) for _ in range(RUNS)]
    finally:
        if driver is not None:
            driver.quit()
        srv.stop()
    fcp = [r["fcp"] for r in runs]
    lst = [r["list"] for r in runs]
    chart = [r["chart"] for r in runs]
    kib = runs[-1]["bytes"] / 1024
    print("## The page /ui/: first paint of a big daemon\n")
    print("optd with %d sessions; the deep link compares %d of them, %d steps of history each "
          "(loss curves, %d points in all). Headless Chromium, cache off (every file fetched, "
          "%.0f KiB), %d loads after one warm-up; times from navigation start, Chromium's "
          "performance timings.\n" % (SESSIONS, len(CHART), POINTS, len(CHART) * POINTS, kib, RUNS))
    print("| figure | median | min–max | runs |")
    print("| --- | ---: | ---: | --- |")
    for name, vals in (("first contentful paint", fcp), ("list of sessions shown", lst),
                       ("chart of 3 × 1000 points drawn", chart)):
        med, lo, hi = benchlib.stats(vals)
        print("| %s | %.1f ms | %.1f–%.1f ms | %s |"
              % (name, med, lo, hi, ", ".join("%.0f" % v for v in vals)))
    print()
    med_chart = benchlib.stats(chart)[0]
    benchlib.summary_row("page /ui/ with %s sessions: chart of 3 × 1000 points drawn (from navigation)"
                         % format(SESSIONS, ","), chart, " ms",
                         "first contentful paint %.1f ms" % benchlib.stats(fcp)[0], "—", "< 1000 ms",
                         med_chart < 1000, digits=1)


if __name__ == "__main__":
    main()
