"""bench_list.py: a page of the session listing at 100,000 sessions.

Issue 16 measured 57-97 ms for any page at 100k sessions (every listing
sorted all names), so paging through them was quadratic.  The store keeps
a name index now: a page costs a seek and the page.  Measured from a
keep-alive client on loopback: GET /v1/sessions?limit=100&after=NAME at
cursors spread over the whole range, and the same at 1,000 sessions as the
peer (a page should not cost more because the daemon holds more)."""

import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Client, fmt, log, spread, start_optd, stats, summary_row  # noqa: E402

SESSIONS = 100000
PAGES = 400
TARGET_MS = 2.0


def create_range(port, lo, hi):
    c = Client(port)
    body = json.dumps({"optimizer": "sgd", "size": 1})
    for i in range(lo, hi):
        st, _, data = c.request("PUT", "/v1/sessions/s%06d" % i, body)
        if st != 201:
            raise SystemExit("bench_list: create s%06d: %d %s" % (i, st, data[:200]))
    c.close()


def fill(port, n, threads=4):
    step = (n + threads - 1) // threads
    ts = [threading.Thread(target=create_range, args=(port, k * step, min(n, (k + 1) * step)))
          for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def page_times(port, n, pages):
    """Milliseconds per page of 100, from random cursors."""
    rng = random.Random(16)
    c = Client(port)
    out = []
    for _ in range(pages):
        after = "s%06d" % rng.randrange(n - 100)  # full pages
        t0 = time.perf_counter()
        st, _, data = c.request("GET", "/v1/sessions?limit=100&after=" + after)
        out.append((time.perf_counter() - t0) * 1000)
        if st != 200:
            raise SystemExit("bench_list: list: %d" % st)
    c.close()
    return out


def walk_all(port):
    """Seconds to page through every session, 100 at a time."""
    c = Client(port)
    after, count = None, 0
    t0 = time.perf_counter()
    while True:
        path = "/v1/sessions?limit=100" + ("&after=" + after if after else "")
        st, _, data = c.request("GET", path)
        doc = json.loads(data)
        count += len(doc["sessions"])
        after = doc["next_after"]
        if not after:
            break
    c.close()
    return time.perf_counter() - t0, count


def main():
    with tempfile.TemporaryDirectory(prefix="bench-list-") as tmp:
        results = {}
        for n in (1000, SESSIONS):
            srv = start_optd(tmp, 2, ["--log-level", "warn"])
            try:
                log("creating %d sessions" % n)
                t0 = time.perf_counter()
                fill(srv.port, n)
                log("created in %.1f s" % (time.perf_counter() - t0))
                page_times(srv.port, n, 50)  # warm-up
                results[n] = page_times(srv.port, n, PAGES)
                if n == SESSIONS:
                    walk_s, walked = walk_all(srv.port)
            finally:
                srv.stop()
    big, small = results[SESSIONS], results[1000]
    med, _, _ = stats(big)
    pmed, _, _ = stats(small)
    p99 = sorted(big)[int(len(big) * 0.99) - 1]
    print("## Listing: a page of 100 names\n")
    print("GET /v1/sessions?limit=100&after=NAME from random cursors, %d pages, one keep-alive "
          "client on loopback (the time includes encoding 100 descriptors).\n" % PAGES)
    print("| sessions | median | p99 | min–max |")
    print("| ---: | ---: | ---: | ---: |")
    for n in (1000, SESSIONS):
        v = results[n]
        m, _, _ = stats(v)
        print("| %s | %s ms | %s ms | %s |" % (fmt(n, 0), fmt(m), fmt(sorted(v)[int(len(v) * 0.99) - 1]),
                                              spread(v, " ms")))
    print("\nPaging through all %s sessions (%d pages): %.2f s.\n" % (fmt(walked, 0), (walked + 99) // 100,
                                                                      walk_s))
    summary_row("list: page of 100 at 100k sessions", big, " ms",
                "same at 1k sessions %s ms" % fmt(pmed), "%.2f×" % (med / pmed),
                "< %g ms" % TARGET_MS, med < TARGET_MS)
    log("page median %.3f ms, p99 %.3f ms" % (med, p99))


if __name__ == "__main__":
    main()
