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

TableSharding: one table (API.md "Tables: sparse rows") split by the
client's ShardedTable over the sessions NAME.0 .. NAME.k-1 (row r in shard
r mod k as local row r div k) on the same three daemons, either through a
list of their URLs (shard j on daemon j mod 3) or through nginx (one base
URL, the proxy's hash placing each shard).  Every push is also applied to
one unsharded session of the same table, and the sharded table's values
must equal it bit for bit: pushes with rows repeated within them, in binary
float32 (sparse_adam) and JSON float64 (adagrad with lr_decay, whose rule
reads the step count), pushes that leave shards untouched, and pushes and
pulls from several threads at once.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

from harness import REPO, Daemon, free_port

sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))
from optd_client import Client, OptdError, ShardedTable, shard_rows  # noqa: E402

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


class TableSharding(unittest.TestCase):
    """A table sharded over three daemons equals one unsharded session."""

    ROWS = 1000
    R = 8

    @classmethod
    def setUpClass(cls):
        cls.daemons = [Daemon(validate=False, flags=["--log-level", "warn"]) for _ in range(3)]
        cls.nginx = None
        try:
            for d in cls.daemons:
                d.start()
            if shutil.which("nginx"):
                cls.nginx = Nginx([d.port for d in cls.daemons])
                cls.nginx.start()
        except BaseException:
            cls.tearDownClass()
            raise
        cls.urls = ["http://127.0.0.1:%d" % d.port for d in cls.daemons]
        cls.ref = Client(cls.urls[0])

    @classmethod
    def tearDownClass(cls):
        Sharding.tearDownClass.__func__(cls)

    def where(self, name):
        """{shard name: indexes of the daemons holding it}, asked directly."""
        found = {}
        for i, url in enumerate(self.urls):
            c = Client(url)
            for desc in c.iter_sessions(prefix=name + "."):
                found.setdefault(desc["name"], []).append(i)
            c.close()
        return found

    def make(self, urls, name, k, optimizer, dtype, hyper, seed):
        """A sharded table and its unsharded twin, both from the same
        random initial values."""
        init = np.random.default_rng(seed).standard_normal((self.ROWS, self.R)).astype(dtype)
        table = ShardedTable(urls, name, shards=k)
        table.create(self.ROWS, self.R, optimizer, hyperparameters=hyper, dtype=dtype, init=init)
        self.addCleanup(table.close)
        self.addCleanup(table.delete)
        ref = name + "-unsharded"
        self.ref.create(ref, optimizer, size=self.ROWS * self.R, row_size=self.R,
                        hyperparameters=hyper, dtype=dtype)
        self.addCleanup(self.ref.delete, ref)
        self.ref.set_params(ref, init.ravel())
        return table, ref

    def assert_same(self, table, ref, rows=None):
        """The table's rows and the unsharded session's, bit for bit."""
        rows = np.arange(self.ROWS) if rows is None else np.asarray(rows)
        step, got = table.pull(rows)
        ref_step, want = self.ref.read_rows(ref, rows, binary=True, numpy=True)
        self.assertEqual(step, ref_step)
        self.assertEqual(got.dtype, want.dtype)
        self.assertEqual(got.shape, (len(rows) * self.R,))
        if got.tobytes() != want.tobytes():
            bad = np.nonzero(got.reshape(-1, self.R) != want.reshape(-1, self.R))[0]
            self.fail("%d of %d rows differ, first: row %d: %r != %r" % (
                len(bad), len(rows), rows[bad[0]], got.reshape(-1, self.R)[bad[0]],
                want.reshape(-1, self.R)[bad[0]]))

    def push_both(self, table, ref, rows, grad, step, binary=True):
        got = table.push(rows, grad if binary else grad.ravel().tolist(), expect_step=step)
        self.assertEqual(got, step + 1)
        want = self.ref.step_rows(ref, rows if binary else [int(r) for r in rows],
                                  grad.ravel() if binary else grad.ravel().tolist(),
                                  expect_step=step, return_params=False)
        self.assertEqual(want.step, step + 1)

    def test_urls_sparse_adam_binary(self):
        k = 6
        table, ref = self.make(self.urls, "tbl-adam", k, "sparse_adam", "float32",
                               {"lr": 0.01}, seed=1)
        # Shard j on daemon j mod 3, nowhere else, with its share of the rows.
        self.assertEqual(self.where("tbl-adam"),
                         {"tbl-adam.%d" % j: [j % 3] for j in range(k)})
        for j in range(k):
            desc = Client(self.urls[j % 3]).get("tbl-adam.%d" % j)
            self.assertEqual((desc["size"], desc["row_size"]),
                             ((shard_rows(self.ROWS, k, j) + 1) * self.R, self.R))  # + spare
        self.assertEqual(sum(shard_rows(self.ROWS, k, j) for j in range(k)), self.ROWS)
        self.assert_same(table, ref)
        rng = np.random.default_rng(2)
        for step in range(30):
            n = int(rng.integers(1, 65))
            rows = rng.integers(0, self.ROWS, n)
            if step % 3 == 0:       # rows repeated within a push, scattered
                rows[n // 2:] = rows[: n - n // 2]
            if step % 5 == 1:       # all rows in one shard: the others get no rows
                rows = (rows // k) * k + 4
                rows = rows[rows < self.ROWS]
            grad = rng.standard_normal((len(rows), self.R)).astype(np.float32)
            self.push_both(table, ref, rows, grad, step)
        self.assert_same(table, ref)
        # Pulls in any order, repeats included, answer the caller's order.
        self.assert_same(table, ref, [999, 0, 5, 5, 6, 999, 1, 500, 5])
        # A row past the end is refused by the client (it would reach a
        # shard's spare row), and nothing is sent.
        for bad in (self.ROWS, -1):
            with self.assertRaises(ValueError):
                table.push([3, bad], np.zeros(2 * self.R, dtype=np.float32))
            with self.assertRaises(ValueError):
                table.pull([bad])
        self.assertEqual(table.open(), 30)
        # Creating it again fails on the shards that exist and deletes
        # nothing of the table that is there.
        again = ShardedTable(self.urls, "tbl-adam", shards=k + 1)
        with self.assertRaises(OptdError) as cm:
            again.create(self.ROWS, self.R, "sparse_adam", dtype="float32")
        self.assertEqual(cm.exception.code, "already_exists")
        again.close()
        self.assertEqual(sorted(self.where("tbl-adam")), ["tbl-adam.%d" % j for j in range(k)])
        self.assertEqual(table.pull([5])[0], 30)
        self.assertEqual((table.rows, table.row_size, table.dtype), (self.ROWS, self.R, "float32"))

    def test_repeated_rows_summed_in_order(self):
        table, ref = self.make(self.urls, "tbl-rep", 3, "sparse_adam", "float32",
                               {"lr": 0.1}, seed=3)
        rows = np.array([7, 7, 10, 7, 4, 10, 7], dtype=np.int64)
        grad = np.random.default_rng(4).standard_normal((len(rows), self.R)).astype(np.float32)
        for step in range(3):
            self.push_both(table, ref, rows, grad * (step + 1), step)
        self.assert_same(table, ref, [7, 10, 4, 8])
        self.assertEqual(table.pull([7])[0], 3)

    def test_urls_adagrad_json(self):
        hyper = {"lr": 0.05, "lr_decay": 0.01}
        table, ref = self.make(self.urls, "tbl-ada", 3, "adagrad", "float64", hyper, seed=5)
        rng = np.random.default_rng(6)
        for step in range(20):
            rows = rng.integers(0, self.ROWS, int(rng.integers(1, 40)))
            grad = rng.standard_normal((len(rows), self.R))
            self.push_both(table, ref, rows, grad, step, binary=False)
        self.assert_same(table, ref)
        step, vals = table.pull([3, 1, 3], binary=False)
        self.assertEqual(step, 20)
        self.assertEqual(len(vals), 3 * self.R)
        self.assertEqual(vals[: self.R], vals[2 * self.R:])

    def test_proxy(self):
        """One base URL, nginx's: each shard is on exactly one replica,
        every request for it reaches that one, and the values are the
        unsharded session's."""
        if not self.nginx:
            self.skipTest("nginx is not installed (deploy/install-deps.sh test)")
        proxy = "http://127.0.0.1:%d" % self.nginx.port
        k = 9
        table, ref = self.make(proxy, "tbl-proxy", k, "sparse_adam", "float32", {"lr": 0.01}, seed=7)
        where = self.where("tbl-proxy")
        self.assertEqual(sorted(where), sorted("tbl-proxy.%d" % j for j in range(k)))
        for name, held in where.items():
            self.assertEqual(len(held), 1, "%s is on replicas %s" % (name, held))
        rng = np.random.default_rng(8)
        for step in range(15):
            rows = rng.integers(0, self.ROWS, 64)
            grad = rng.standard_normal((64, self.R)).astype(np.float32)
            self.push_both(table, ref, rows, grad, step)
        self.assert_same(table, ref)
        table.delete()
        self.assertEqual(self.where("tbl-proxy"), {})
        table.delete()  # again: nothing left, nothing refused
        print("\ntable sharding through nginx: %d shards on replicas %s" % (
            k, sorted(held[0] for held in where.values())))

    def test_concurrent_pushes_and_pulls(self):
        """Four threads push their own rows (sgd, so each row's value
        depends only on its own pushes) while two more pull; every row ends
        as the same pushes applied one by one to the unsharded session."""
        table, ref = self.make(self.urls, "tbl-conc", 6, "sgd", "float32", {"lr": 0.1}, seed=9)
        threads_n, pushes = 4, 25
        plans = []
        rng = np.random.default_rng(10)
        for t in range(threads_n):
            mine = np.arange(t, self.ROWS, threads_n)     # disjoint rows per thread
            plans.append([(rng.choice(mine, 48), rng.standard_normal((48, self.R)).astype(np.float32))
                          for _ in range(pushes)])
        errors = []
        stop = threading.Event()

        def pusher(plan):
            try:
                for rows, grad in plan:
                    table.push(rows, grad)
            except BaseException as e:  # reported below
                errors.append(e)

        def puller():
            try:
                while not stop.is_set():
                    _, vals = table.pull(np.arange(0, self.ROWS, 7))
                    if vals.shape != (len(range(0, self.ROWS, 7)) * self.R,):
                        raise AssertionError("pull shape %r" % (vals.shape,))
            except BaseException as e:
                errors.append(e)

        workers = [threading.Thread(target=pusher, args=(p,)) for p in plans]
        readers = [threading.Thread(target=puller) for _ in range(2)]
        for w in workers + readers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        for r in readers:
            r.join()
        self.assertEqual(errors, [])
        for plan in plans:
            for rows, grad in plan:
                self.ref.step_rows(ref, rows, grad.ravel(), return_params=False)
        # Every shard was stepped by every push (all_shards), so its step
        # count is the number of pushes, like the unsharded session's.
        for j in range(6):
            self.assertEqual(Client(self.urls[j % 3]).get("tbl-conc.%d" % j)["step"],
                             threads_n * pushes)
        self.assert_same(table, ref)


if __name__ == "__main__":
    unittest.main()
