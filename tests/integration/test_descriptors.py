"""File descriptors: optd raises its soft RLIMIT_NOFILE to the hard limit at
start, keeps descriptors for persistence, and clamps --max-connections
(with a log line) to what fits beside them, so idle connections can never
make snapshot writes fail with "Too many open files".

The daemon runs under `prlimit --nofile=SOFT:HARD` (util-linux)."""

import os
import re
import shutil
import subprocess
import time
import unittest

from harness import Daemon


class LimitedDaemon(Daemon):
    def __init__(self, nofile, **kw):
        super().__init__(**kw)
        self.nofile = nofile

    def argv(self):
        return ["prlimit", "--nofile=%d:%d" % self.nofile, "--"] + super().argv()


def open_files_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return [int(x) for x in line.split()[3:5]]
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


@unittest.skipUnless(shutil.which("prlimit"), "prlimit (util-linux) is not installed")
class Descriptors(unittest.TestCase):

    def test_idle_connections_cannot_starve_persistence(self):
        """ulimit -n 256 and the default --max-connections 1024: 300 idle
        connections, then steps: every acknowledged step survives kill -9."""
        d = LimitedDaemon((256, 256), data_dir=True, flags=["--threads", "2", "--snapshot-interval", "1"])
        held = []
        try:
            d.start()
            err = d.stderr_text()
            m = re.search(r"--max-connections 1024 does not fit in RLIMIT_NOFILE 256 .*"
                          r"serving at most (\d+) connections", err)
            self.assertIsNotNone(m, "no clamp line in the log:\n" + err)
            self.assertLess(int(m.group(1)), 256)
            names = ["fd-%d" % i for i in range(10)]
            for n in names:
                d.create(n, "sgd", size=4)
            for _ in range(300):
                try:
                    held.append(d.raw_socket(timeout=5))
                except OSError:
                    break  # the backlog is full: enough
            for n in names:
                r = d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1, 1]})
                self.assertEqual(r.status, 200, r)
            # let --snapshot-interval 1 write them; then poll /healthz on the
            # kept connection until a later round has certainly run
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                self.assertEqual(d.get("/healthz").status, 200)
                time.sleep(0.25)
            err = d.stderr_text()
            self.assertFalse("Too many open files" in err, "descriptors ran out:\n" + err[-3000:])
            for s in held:
                s.close()
            held = []
            d.kill9()
            d._stopped = False
            d.start()
            for n in names:
                self.assertEqual(d.get("/v1/sessions/" + n).body["step"], 1, n)
            d.stop()
        finally:
            for s in held:
                s.close()
            d.cleanup()

    def test_soft_limit_raised_to_hard(self):
        d = LimitedDaemon((256, 4096))
        try:
            d.start()
            self.assertEqual(open_files_limit(d.proc.pid), [4096, 4096])
            self.assertNotIn("does not fit", d.stderr_text())
            d.stop()
        finally:
            d.cleanup()

    def test_no_room_for_connections_is_refused(self):
        d = LimitedDaemon((60, 60))
        try:
            d.port = 1
            p = subprocess.run(d.argv(), capture_output=True, text=True, timeout=20,
                               env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("RLIMIT_NOFILE 60 leaves room for", p.stderr)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
