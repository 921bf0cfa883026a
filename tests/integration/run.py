"""run.py: runs the black-box integration tests (tests/integration/test_*.py).

    /usr/bin/python3 tests/integration/run.py [-j N] [-v] [NAME...]

Each test module runs in its own process (unittest), at most N at a time
(default 2: the machines have 2 cores); a module's output is printed whole
when it finishes, so parallel modules never interleave.  NAME selects
modules (test_basics or basics) or single tests (test_basics.Create.test_x).
The LAST line printed is exactly "N passed, N failed" (", N skipped" when
any were skipped): CI parses it.  Exit status 1 on any failure or error.

Env: OPTD_BIN (daemon binary, default build/optd), OPTD_MODULE_TIMEOUT
(seconds a module may run, default 600).
"""

import glob
import json
import os
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT_TAG = "@@optd-itest-result@@ "
# Slow modules first so two workers finish together.
SLOW_FIRST = ["test_deltas", "test_examples", "test_durability", "test_crash", "test_store_faults",
              "test_ui", "test_torch", "test_concurrency", "test_slow_requests", "test_rounds",
              "test_tables_attack", "test_limits", "test_ttl", "test_trajectory",
              "test_curl_examples", "test_state", "test_auth_tls", "test_errors"]


class CountingResult(unittest.TextTestResult):
    """Counts passed tests directly: errors in setUpClass/tearDownClass are
    failures that belong to no test, so testsRun minus failures is wrong."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def run_one(names, verbose):
    """Child mode: run the given module/test names, print the result line."""
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    errors = 0
    for n in names:
        try:
            suite.addTests(loader.loadTestsFromName(n))
        except Exception as e:  # an import error is a failure, not a crash
            print("ERROR loading %s: %r" % (n, e))
            import traceback
            traceback.print_exc(file=sys.stdout)
            errors += 1
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2 if verbose else 1,
                                     resultclass=CountingResult)
    res = runner.run(suite)
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses) + errors
    skipped = len(res.skipped)
    passed = res.passed + len(res.expectedFailures)
    print(RESULT_TAG + json.dumps({"passed": passed, "failed": failed,
                                   "skipped": skipped}))
    sys.stdout.flush()
    return 1 if failed else 0


def main(argv):
    jobs = 2
    verbose = False
    names = []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "-j":
            jobs = int(args.pop(0))
        elif a == "-v":
            verbose = True
        elif a == "--child":
            return run_one(args, verbose)
        else:
            names.append(a)
    mods = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "test_*.py")))
    if names:
        units = []
        for n in names:
            n = n if n.startswith("test_") else "test_" + n
            units.append(n)
    else:
        units = sorted(mods, key=lambda m: (SLOW_FIRST.index(m) if m in SLOW_FIRST
                                            else len(SLOW_FIRST), m))
    timeout = float(os.environ.get("OPTD_MODULE_TIMEOUT", "600"))
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    lock = threading.Lock()
    queue = list(units)
    summary = []
    t0 = time.monotonic()

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                unit = queue.pop(0)
            start = time.monotonic()
            cmd = [sys.executable, os.path.abspath(__file__)] + (["-v"] if verbose else []) \
                + ["--child", unit]
            try:
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=timeout, cwd=HERE)
                out = p.stdout.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode("utf-8", "replace") + \
                    "\n%s: TIMED OUT after %gs\n" % (unit, timeout)
            res = None
            lines = []
            for line in out.splitlines():
                if line.startswith(RESULT_TAG):
                    res = json.loads(line[len(RESULT_TAG):])
                else:
                    lines.append(line)
            if res is None:
                res = {"passed": 0, "failed": 1, "skipped": 0}
                lines.append("%s: the test process ended without a result" % unit)
            with lock:
                for k in totals:
                    totals[k] += res[k]
                status = "FAILED" if res["failed"] else "ok"
                print("==== %s: %s (%d passed, %d failed, %d skipped, %.1fs)"
                      % (unit, status, res["passed"], res["failed"], res["skipped"],
                         time.monotonic() - start))
                if res["failed"] or verbose:
                    print("\n".join(lines))
                sys.stdout.flush()
                summary.append((unit, res))

    threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("==== integration suite with OPTD_BIN=%s took %.1fs"
          % (os.environ.get("OPTD_BIN", "build/optd"), time.monotonic() - t0))
    for unit, res in sorted(summary):
        if res["failed"]:
            print("FAILED module: %s (%d failed)" % (unit, res["failed"]))
    line = "%d passed, %d failed" % (totals["passed"], totals["failed"])
    if totals["skipped"]:
        line += ", %d skipped" % totals["skipped"]
    print(line)
    return 1 if totals["failed"] or not (totals["passed"] or totals["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
