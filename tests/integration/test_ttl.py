"""ttl_seconds: idle expiry.  A session not read or written for ttl seconds
is deleted; one that keeps being read stays; PATCH ttl_seconds null keeps it."""

import time
import unittest

from harness import DaemonTestCase


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


if __name__ == "__main__":
    unittest.main()
