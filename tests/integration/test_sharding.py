"""test_sharding.py: sessions sharded by name across three daemons by nginx
with deploy/nginx/optd-shards.conf (consistent hash of the session name
taken from the URL).

Three real daemons and Debian's nginx (a non-daemon child with a temporary
prefix, config, pid and logs) on loopback.  1000 sessions are created (PUT
/v1/sessions/{name}) and stepped through nginx; then each replica is asked
directly: every session is on exactly one replica with every one of its
steps, no replica holds more than 45%, and nginx's Optd-Shard header agrees.
Then one replica is taken out of the upstream (config rewritten, nginx
reloaded by SIGHUP): the other replicas' sessions still route to where they
are, only the removed replica's sessions route elsewhere, and moving them
(GET .../state from the old replica, PUT .../state through nginx) puts them
on the remaining two without disturbing anyone else.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from harness import REPO, Daemon, free_port

sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))
from optd_client import Client, OptdError  # noqa: E402

N_SESSIONS = 1000
STEPS = 2
CONF = os.path.join(REPO, "deploy", "nginx", "optd-shards.conf")


class Nginx:
    """nginx with deploy/nginx/optd-shards.conf, upstreams set to `ports`."""

    def __init__(self, ports):
        self.dir = tempfile.mkdtemp(prefix="optd-nginx-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.write(ports)
        self.proc = None

    def write(self, ports):
        text = open(CONF).read()
        servers = "".join("    server 127.0.0.1:%d max_fails=0;\n" % p for p in ports)
        text, n = re.subn(r"(upstream optd_shards \{\n    hash \$optd_session consistent;\n)"
                          r"(    server [^\n]*\n)+", lambda m: m.group(1) + servers, text)
        assert n == 1, "optd-shards.conf: upstream block not found"
        text, n = re.subn(r"listen 127\.0\.0\.1:\d+;", "listen 127.0.0.1:%d;" % self.port, text)
        assert n == 1, "optd-shards.conf: listen line not found"
        with open(os.path.join(self.dir, "optd-shards.conf"), "w") as f:
            f.write(text)
        d = self.dir
        with open(self.conf, "w") as f:
            f.write("daemon off;\nmaster_process on;\nworker_processes 1;\n"
                    + ("user root root;\n" if os.geteuid() == 0 else "")
                    + "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n" % (d, d)
                    + "events { worker_connections 1024; }\n"
                    + "http {\n  access_log off;\n"
                    + "".join("  %s_temp_path %s/%s;\n" % (t, d, t)
                              for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                    + "  include %s/optd-shards.conf;\n}\n" % d)

    def start(self):
        self.proc = subprocess.Popen(["nginx", "-p", self.dir, "-c", self.conf, "-e",
                                      os.path.join(self.dir, "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited: %s\n%s" % (self.proc.returncode, self.log()))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("nginx did not come up:\n" + self.log())

    def reload(self, ports):
        self.write(ports)
        r = subprocess.run(["nginx", "-t", "-p", self.dir, "-c", self.conf, "-e",
                            os.path.join(self.dir, "error.log")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert r.returncode == 0, r.stdout.decode()
        self.proc.send_signal(signal.SIGHUP)

    def log(self):
        try:
            return open(os.path.join(self.dir, "error.log")).read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def raw_get(port, path):
    """(status, Optd-Shard header) on a fresh connection."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("Optd-Shard")
    finally:
        c.close()


@unittest.skipUnless(shutil.which("nginx"), "nginx is not installed (deploy/install-deps.sh test)")
class Sharding(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemons = [Daemon(validate=False, flags=["--log-level", "warn"]) for _ in range(3)]
        cls.nginx = None
        try:
            for d in cls.daemons:
                d.start()
            cls.nginx = Nginx([d.port for d in cls.daemons])
            cls.nginx.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.nginx:
            cls.nginx.stop()
        try:
            for d in cls.daemons:
                if d.proc is not None:
                    d.stop()
        finally:
            for d in cls.daemons:
                d.cleanup()

    def holders(self, names):
        """{name: index of the replica holding it}, asking each replica
        directly; fails if a name is on two replicas."""
        where = {}
        for i, d in enumerate(self.daemons):
            c = Client("http://127.0.0.1:%d" % d.port)
            for s in c.iter_sessions(prefix="shard-"):
                self.assertNotIn(s["name"], where, "%s is on two replicas" % s["name"])
                where[s["name"]] = (i, s["step"])
            c.close()
        self.assertEqual(set(where), set(names))
        return where

    def test_sharding(self):
        proxy = Client("http://127.0.0.1:%d" % self.nginx.port, timeout=20)
        names = ["shard-%04d-%s" % (i, "abcdefghij"[i % 10] * (1 + i % 7)) for i in range(N_SESSIONS)]
        for n in names:
            proxy.create(n, "sgd", params=[1.0, 2.0, 3.0], hyperparameters={"lr": 0.5})
        for k in range(STEPS):
            for n in names:
                r = proxy.step(n, [1.0, 1.0, 1.0], expect_step=k)
                self.assertEqual(r.step, k + 1)
        self.assertEqual(proxy.params(names[0])[1], [1.0 - 0.5 * STEPS, 2.0 - 0.5 * STEPS,
                                                     3.0 - 0.5 * STEPS])

        # A create whose name is only in the body cannot be routed: refused.
        with self.assertRaises(OptdError) as cm:
            proxy.create("shard-by-post", "sgd", size=1, use_post=True)
        self.assertEqual((cm.exception.status, cm.exception.code), (405, "method_not_allowed"))

        # Each session on exactly one replica, with all its steps.
        where = self.holders(names)
        self.assertEqual({step for _, step in where.values()}, {STEPS})
        counts = [sum(1 for i, _ in where.values() if i == r) for r in range(3)]
        self.assertEqual(sum(counts), N_SESSIONS)
        for r, cnt in enumerate(counts):
            self.assertLessEqual(cnt, 0.45 * N_SESSIONS, "replica %d holds %s" % (r, counts))
            self.assertGreater(cnt, 0)
        ports = [d.port for d in self.daemons]
        for n in names[::10]:
            status, shard = raw_get(self.nginx.port, "/v1/sessions/%s" % n)
            self.assertEqual((status, shard), (200, "127.0.0.1:%d" % ports[where[n][0]]))

        # Take replica 2 out of the upstream and reload nginx.
        gone = 2
        self.nginx.reload(ports[:gone] + ports[gone + 1:])
        probe = next(n for n in names if where[n][0] == gone)
        deadline = time.monotonic() + 20
        while raw_get(self.nginx.port, "/v1/sessions/%s" % probe)[0] != 404:
            self.assertLess(time.monotonic(), deadline, "nginx did not reload:\n" + self.nginx.log())
            time.sleep(0.1)

        moved = [n for n in names if where[n][0] == gone]
        stayed = [n for n in names if where[n][0] != gone]
        for n in stayed:  # every other session still routes to its replica
            status, shard = raw_get(self.nginx.port, "/v1/sessions/%s" % n)
            self.assertEqual((status, shard), (200, "127.0.0.1:%d" % ports[where[n][0]]), n)
        for n in moved:   # the removed replica's sessions now route elsewhere
            status, shard = raw_get(self.nginx.port, "/v1/sessions/%s" % n)
            self.assertEqual(status, 404, n)
            self.assertIn(shard, ["127.0.0.1:%d" % p for p in ports if p != ports[gone]])

        # Move them: export from the old replica, import through nginx.
        old = Client("http://127.0.0.1:%d" % ports[gone])
        proxy = Client("http://127.0.0.1:%d" % self.nginx.port, timeout=20)
        for n in moved:
            created, _ = proxy.import_state(n, old.export_state(n))
            self.assertTrue(created)
            old.delete(n)
        after = self.holders(names)
        for n in stayed:
            self.assertEqual(after[n], where[n], n)
        for n in moved:
            self.assertNotEqual(after[n][0], gone)
            self.assertEqual(after[n][1], STEPS)
        # and they keep working where they now are
        for n in moved[:50]:
            self.assertEqual(proxy.step(n, [0.0, 0.0, 0.0], expect_step=STEPS).step, STEPS + 1)
        proxy.close()
        old.close()
        print("\nsharding: %d sessions over 3 replicas: %s; replica %d removed: %d sessions "
              "moved, %d stayed" % (N_SESSIONS, counts, gone, len(moved), len(stayed)))


if __name__ == "__main__":
    unittest.main()
