"""ttl_seconds: idle expiry.  A session not read or written for ttl seconds
is deleted; one that keeps being read stays; PATCH ttl_seconds null keeps it."""

import os
import re
import shutil
import tempfile
import time
import unittest

from harness import Daemon, DaemonTestCase
from pipeline import pipelined
from test_durability import failio_shim


class Ttl(DaemonTestCase):
    def gone_within(self, name, seconds):
        """Checks without touching the session until it is expected gone: a
        GET would count as a read and restart its clock."""
        time.sleep(seconds)
        return self.d.get("/v1/sessions/" + name).status == 404

    def test_idle_session_expires(self):
        self.d.create("ttl-a", "sgd", size=2, ttl_seconds=1)
        self.assertEqual(self.d.get("/v1/sessions/ttl-a").body["ttl_seconds"], 1)
        self.assertTrue(self.gone_within("ttl-a", 3.5) or self.gone_within("ttl-a", 4),
                        "a session with ttl_seconds 1 was still there after 3.5 s idle")
        for path in ("/params", "/history", "/state"):
            self.assertEqual(self.d.get("/v1/sessions/ttl-a" + path).status, 404)
        # the name is free again
        self.d.create("ttl-a", "sgd", size=1)

    def test_read_and_written_session_stays(self):
        self.d.create("ttl-b", "sgd", size=2, ttl_seconds=2)
        self.d.create("ttl-c", "sgd", size=2, ttl_seconds=2)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            self.assertEqual(self.d.get("/v1/sessions/ttl-b/params").status, 200)
            r = self.d.post("/v1/sessions/ttl-c/step?return=none", {"gradient": [1, 1]})
            self.assertEqual(r.status, 200)
            time.sleep(0.4)
        self.assertEqual(self.d.get("/v1/sessions/ttl-b").status, 200)
        self.assertEqual(self.d.get("/v1/sessions/ttl-c").status, 200)

    def test_patch_ttl_null_keeps_it(self):
        self.d.create("ttl-d", "sgd", size=2, ttl_seconds=1)
        r = self.d.patch("/v1/sessions/ttl-d", {"ttl_seconds": None})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.body["ttl_seconds"])
        time.sleep(3)
        self.assertEqual(self.d.get("/v1/sessions/ttl-d").status, 200)

    def test_no_ttl_no_expiry(self):
        self.d.create("ttl-e", "sgd", size=2)
        self.d.create("ttl-f", "sgd", size=2, ttl_seconds=1)
        time.sleep(3)
        self.assertEqual(self.d.get("/v1/sessions/ttl-e").status, 200)
        self.assertTrue(self.gone_within("ttl-f", 0) or self.gone_within("ttl-f", 4))


def session_gauge(d):
    m = re.search(r"^optd_sessions (\d+)", d.get("/metrics").raw.decode(), re.M)
    return int(m.group(1))


class MassExpiry(unittest.TestCase):
    """2,000 sessions expiring at once on a disk whose every sync takes
    5 ms (--sync always): expiry runs off the event loop in one durable
    batch, so a SIGTERM during it is still handled within API.md's 5 s (on
    the loop, one fsync per expiry, it took 12 s), and what expired stays
    deleted after the restart."""

    def test_sigterm_during_mass_expiry(self):
        tmp = tempfile.mkdtemp(prefix="optd-ttl-")
        self.addCleanup(shutil.rmtree, tmp, True)
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        ctl = os.path.join(tmp, "slow")
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env = {"LD_PRELOAD": failio_shim(tmp), "FAILIO_PATH": data + "/", "FAILIO_CTL": ctl,
               "FAILIO_SYNC_DELAY_MS": "5", "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
        d = Daemon(data_dir=data, flags=["--sync", "always"], env=env, validate=False)
        self.addCleanup(d.cleanup)
        d.start()
        n = 2000
        out = pipelined(d.port, [("PUT", "/v1/sessions/x%04d" % i,
                                  {"optimizer": "sgd", "size": 2, "ttl_seconds": 3})
                                 for i in range(n)])
        self.assertEqual([st for st, _ in out if st != 201], [])
        open(ctl, "w").close()  # every sync takes 5 ms from now on
        deadline = time.monotonic() + 20
        while session_gauge(d) == n and time.monotonic() < deadline:
            time.sleep(0.05)
        left = session_gauge(d)
        self.assertLess(left, n, "nothing expired")
        d.stop()  # asserts exit 0 within 5 s of SIGTERM
        d._stopped = False
        d.start()
        self.assertLessEqual(session_gauge(d), left, "expired sessions came back")
        d.stop()


if __name__ == "__main__":
    unittest.main()
