"""test_client_python.py: the Python client (api/clients/python) against the
real daemon: every endpoint, binary steps, errors, keep-alive, timeouts and
the retry that the step compare-and-swap makes safe."""

import array
import os
import select
import socket
import sys
import threading
import time
import unittest

from harness import REPO, Daemon, DaemonTestCase

sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))
from optd_client import (Client, OptdConnectionError, OptdError, OptdTimeout,  # noqa: E402
                         list_across)

try:
    import numpy as np
except ImportError:  # the client works without numpy; those tests skip
    np = None

try:
    import torch
except ImportError:  # torch tensors are taken as numpy arrays; those tests skip
    torch = None


class FaultProxy:
    """A loopback TCP proxy in front of the daemon that counts connections
    and, when told, lets the next request reach the daemon but closes the
    client's connection as soon as the answer starts (a lost answer)."""

    def __init__(self, port):
        self.upstream = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.drop_answers = 0
        self.lock = threading.Lock()
        self.closed = False
        self.clients = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.clients.append(c)
            threading.Thread(target=self._pump, args=(c,), daemon=True).start()

    def _pump(self, c):
        u = socket.create_connection(("127.0.0.1", self.upstream))
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 30)
                if not r:
                    return
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        return
                    u.sendall(data)
                if u in r:
                    data = u.recv(65536)
                    if not data:
                        return
                    with self.lock:
                        drop = self.drop_answers > 0
                        if drop:
                            self.drop_answers -= 1
                    if drop:
                        return  # the daemon answered; the client never sees it
                    c.sendall(data)
        except OSError:
            return
        finally:
            c.close()
            u.close()

    def hang_up(self):
        """Closes every client connection, as a daemon closes idle ones."""
        with self.lock:
            for c in self.clients:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.clients = []

    def close(self):
        self.closed = True
        self.sock.close()


class PythonClient(DaemonTestCase):
    def setUp(self):
        self.c = Client("http://127.0.0.1:%d" % self.d.port, timeout=10)

    def tearDown(self):
        self.c.close()

    def test_health_metrics_optimizers(self):
        self.assertEqual(self.c.health(), {"status": "ok"})
        self.assertIn("optd_sessions", self.c.metrics())
        names = {o["name"]: o for o in self.c.optimizers()}
        self.assertEqual(names["adam"]["hyperparameters"]["lr"], 0.001)
        self.assertIn("sgd", names)

    def test_create_get_patch_delete(self):
        n = self.uname()
        d = self.c.create(n, "adam", params=[1.0, 2.0], hyperparameters={"lr": 0.01},
                          labels={"study": "client"})
        self.assertEqual((d["name"], d["optimizer"], d["size"], d["step"]), (n, "adam", 2, 0))
        self.assertEqual(d["hyperparameters"]["lr"], 0.01)
        self.assertEqual(self.c.get(n)["labels"], {"study": "client"})
        p = self.c.patch(n, hyperparameters={"lr": 0.5}, schedule={"type": "exponential", "gamma": 0.9})
        self.assertEqual(p["hyperparameters"]["lr"], 0.5)
        self.assertEqual(p["schedule"]["type"], "exponential")
        p = self.c.patch(n, schedule=None)
        self.assertIsNone(p["schedule"])
        self.assertEqual(p["hyperparameters"]["lr"], 0.5)
        self.c.delete(n)
        with self.assertRaises(OptdError) as cm:
            self.c.get(n)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_found"))
        self.assertTrue(cm.exception.message)

    def test_create_post_and_errors(self):
        n = self.uname()
        d = self.c.create(n, "sgd", size=3, use_post=True)
        self.assertEqual(d["size"], 3)
        with self.assertRaises(OptdError) as cm:
            self.c.create(n, "sgd", size=3)
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "already_exists"))
        with self.assertRaises(OptdError) as cm:
            self.c.create(self.uname(), "adam", params=[1.0], hyperparameters={"lr": -1})
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_argument"))
        with self.assertRaises(OptdError) as cm:
            self.c.step(n, [1.0, 2.0])
        self.assertEqual(cm.exception.code, "size_mismatch")

    def test_step_json_matches_sgd(self):
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0, -2.0, 0.5], hyperparameters={"lr": 0.25})
        r = self.c.step(n, [1.0, 2.0, -4.0], expect_step=0, loss=3.5)
        self.assertEqual(r.step, 1)
        self.assertEqual(r.params, [0.75, -2.5, 1.5])
        r = self.c.step(n, [0.0, 0.0, 0.0], return_params=False)
        self.assertEqual((r.step, r.params), (2, None))
        self.assertEqual(self.c.params(n), (2, [0.75, -2.5, 1.5]))
        h = self.c.history(n)
        self.assertEqual([e["step"] for e in h], [1, 2])
        self.assertEqual(h[0]["loss"], 3.5)
        self.assertEqual(self.c.history(n, after_step=1)[0]["step"], 2)

    def test_step_mismatch(self):
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0])
        self.c.step(n, [1.0], expect_step=0)
        with self.assertRaises(OptdError) as cm:
            self.c.step(n, [1.0], expect_step=0)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.current_step), (409, "step_mismatch", 1))
        self.assertEqual(self.c.get(n)["step"], 1)

    def test_binary_array_module(self):
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0, 2.0], hyperparameters={"lr": 0.5})
        r = self.c.step(n, array.array("d", [2.0, -2.0]), expect_step=0)
        self.assertEqual(r.step, 1)
        self.assertIsInstance(r.params, array.array)
        self.assertEqual(list(r.params), [0.0, 3.0])
        step, p = self.c.params(n, binary=True, numpy=False)
        self.assertEqual((step, list(p)), (1, [0.0, 3.0]))
        f = self.uname()
        self.c.create(f, "sgd", params=[1.0, 2.0], dtype="float32", hyperparameters={"lr": 0.5})
        r = self.c.step(f, array.array("f", [0.5, 1.0]), loss=1.25)
        self.assertEqual(r.params.typecode, "f")
        self.assertEqual(list(r.params), [0.75, 1.5])
        self.assertEqual(self.c.history(f)[0]["loss"], 1.25)
        with self.assertRaises(OptdError) as cm:
            self.c.step(f, array.array("d", [0.5, 1.0]))
        # the client names the dtype it sends: a differing Optd-Dtype is
        # invalid_argument whatever the length (API.md 1.1)
        self.assertEqual(cm.exception.code, "invalid_argument")
        self.assertIn("float64", str(cm.exception))

    def test_binary_dtype_named(self):
        """8 float32 values are the 32 bytes of 4 float64: the client says
        which it sends (Optd-Dtype), and the daemon refuses the wrong one
        instead of stepping with garbage."""
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0, 2.0, 3.0, 4.0])
        with self.assertRaises(OptdError) as cm:
            self.c.step(n, array.array("f", [0.5] * 8))
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_argument"))
        self.assertEqual(self.c.params(n), (0, [1.0, 2.0, 3.0, 4.0]))
        r = self.c.step(n, array.array("d", [0.5] * 4))
        self.assertEqual((r.step, r.params.typecode), (1, "d"))

        class Answer:  # an answer in another dtype than the request's
            status = 200

            def getheader(self, key):
                return {"Optd-Dtype": "float32"}.get(key)
        with self.assertRaises(OptdError) as cm:
            self.c._binary_dtype(Answer(), b"", n, expected="float64")
        self.assertEqual(cm.exception.code, "dtype_mismatch")

    @unittest.skipIf(np is None, "numpy not installed")
    def test_binary_numpy(self):
        n = self.uname()
        x0 = np.linspace(-1, 1, 1000)
        self.c.create(n, "adam", params=x0, hyperparameters={"lr": 0.01})
        g = np.cos(x0)
        r = self.c.step(n, g, expect_step=0)
        self.assertIsInstance(r.params, np.ndarray)
        # Adam's first step (bias-corrected) is lr * g / (|g| + eps).
        expect = x0 - 0.01 * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(r.params, expect, rtol=1e-12, atol=1e-15)
        step, p = self.c.params(n, binary=True)
        self.assertEqual(step, 1)
        np.testing.assert_array_equal(p, r.params)
        with self.assertRaises(OptdError) as cm:
            self.c.step(n, np.array([np.nan] * 1000))
        self.assertEqual(cm.exception.code, "non_finite")

    def test_list_and_iterate(self):
        prefix = self.uname("list") + "-"
        for i in range(5):
            self.c.create("%s%d" % (prefix, i), "sgd", size=1,
                          labels={"parity": "even" if i % 2 == 0 else "odd"})
        page = self.c.list_sessions(limit=2, prefix=prefix)
        self.assertEqual([s["name"] for s in page["sessions"]], [prefix + "0", prefix + "1"])
        self.assertEqual(page["next_after"], prefix + "1")
        names = [s["name"] for s in self.c.iter_sessions(prefix=prefix, page_size=2)]
        self.assertEqual(names, ["%s%d" % (prefix, i) for i in range(5)])
        even = [s["name"] for s in self.c.iter_sessions(prefix=prefix, labels={"parity": "even"})]
        self.assertEqual(even, [prefix + "0", prefix + "2", prefix + "4"])
        odd = [s["name"] for s in self.c.iter_sessions(prefix=prefix, labels=["parity:odd"])]
        self.assertEqual(odd, [prefix + "1", prefix + "3"])
        # A label without its value said so (it was "not enough values to unpack").
        for bad in (["parity"], "parity:odd"):
            with self.assertRaisesRegex(ValueError, "key:value"):
                self.c.list_sessions(prefix=prefix, labels=bad)

    def test_state_fork(self):
        n = self.uname()
        self.c.create(n, "adam", params=[1.0, 2.0, 3.0])
        for k in range(3):
            self.c.step(n, [0.1, -0.2, 0.3], expect_step=k)
        doc = self.c.export_state(n)
        self.assertIn("exp_avg", doc["state"])
        copy = self.uname()
        created, _ = self.c.import_state(copy, doc)
        self.assertTrue(created)
        created, _ = self.c.import_state(copy, doc)
        self.assertFalse(created)
        a = self.c.export_state(copy)
        self.assertEqual((a["params"], a["state"], a["step"]), (doc["params"], doc["state"], 3))
        f = self.uname()
        d = self.c.fork(n, f, hyperparameters={"lr": 0.05})
        self.assertEqual((d["step"], d["hyperparameters"]["lr"]), (3, 0.05))
        self.assertEqual(self.c.export_state(f)["state"], doc["state"])
        with self.assertRaises(OptdError) as cm:
            self.c.fork(self.uname("missing"), self.uname())
        self.assertEqual(cm.exception.code, "not_found")

    def test_keep_alive(self):
        proxy = FaultProxy(self.d.port)
        try:
            c = Client("http://127.0.0.1:%d" % proxy.port, timeout=10)
            n = self.uname()
            c.create(n, "sgd", size=4)
            for k in range(20):
                c.step(n, [1.0, 1.0, 1.0, 1.0], expect_step=k)
            c.get(n)
            self.assertEqual(proxy.connections, 1)
            c.close()
        finally:
            proxy.close()

    def test_closed_idle_connection_is_replaced(self):
        proxy = FaultProxy(self.d.port)
        try:
            c = Client("http://127.0.0.1:%d" % proxy.port, timeout=10, retries=0)
            self.assertEqual(c.health(), {"status": "ok"})
            proxy.hang_up()
            time.sleep(0.05)  # let the FIN arrive (no timing is asserted)
            # Not retried (retries=0, and a create never is): it must go out
            # on a new connection because the old one was seen closed.
            n = self.uname()
            self.assertEqual(c.create(n, "sgd", size=1)["name"], n)
            self.assertEqual(proxy.connections, 2)
            c.close()
        finally:
            proxy.close()

    def test_retry_after_lost_answer_is_applied_once(self):
        proxy = FaultProxy(self.d.port)
        try:
            c = Client("http://127.0.0.1:%d" % proxy.port, timeout=10, retries=2)
            n = self.uname()
            c.create(n, "sgd", params=[1.0, 1.0], hyperparameters={"lr": 0.5})
            proxy.drop_answers = 1
            r = c.step(n, [1.0, 2.0], expect_step=0)
            self.assertEqual(r.step, 1)
            self.assertEqual(r.params, [0.5, 0.0])
            self.assertEqual(self.c.get(n)["step"], 1)  # applied once, not twice
            self.assertEqual(proxy.drop_answers, 0)
            self.assertGreaterEqual(proxy.connections, 2)
            # Without expect_step the client cannot know: it does not retry.
            proxy.drop_answers = 1
            with self.assertRaises(OptdConnectionError):
                c.step(n, [1.0, 2.0])
            self.assertEqual(self.c.get(n)["step"], 2)
            # Reads are retried freely.
            proxy.drop_answers = 1
            self.assertEqual(c.get(n)["step"], 2)
            c.close()
        finally:
            proxy.close()

    def test_table_rows(self):
        """create(row_size=), step_rows in JSON and binary (array and
        numpy), read_rows and params(rows=) in JSON and binary, and the
        retry of a rows step whose answer was lost."""
        n = self.uname()
        d = self.c.create(n, "sgd", size=12, row_size=3, hyperparameters={"lr": 0.5})
        self.assertEqual((d["size"], d["row_size"]), (12, 3))
        # Row 1 twice (summed), row 3 once; JSON answers the rows' values.
        r = self.c.step_rows(n, [1, 3, 1], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 0.0, -1.0],
                             expect_step=0)
        self.assertEqual(r.step, 1)
        r = self.c.step_rows(n, [0], array.array("d", [2.0, 4.0, 8.0]), expect_step=1,
                             return_params=False)
        self.assertEqual((r.step, r.params), (2, None))
        want = {0: [-1.0, -2.0, -4.0], 1: [-1.0, -0.5, 0.0], 2: [0.0, 0.0, 0.0], 3: [-1.0, -1.0, -1.0]}
        rows = [3, 0, 1, 2, 3]
        self.assertEqual(self.c.read_rows(n, rows), (2, [v for i in rows for v in want[i]]))
        self.assertEqual(self.c.params(n, rows=rows), (2, [v for i in rows for v in want[i]]))
        step, vals = self.c.read_rows(n, [1], binary=True, numpy=False)
        self.assertEqual((step, list(vals)), (2, want[1]))
        step, vals = self.c.params(n, binary=True, numpy=False, rows=[2, 1])
        self.assertEqual((step, list(vals)), (2, want[2] + want[1]))
        with self.assertRaises(OptdError) as cm:
            self.c.step_rows(n, [4], [1.0, 1.0, 1.0])
        self.assertEqual(cm.exception.status, 400)
        if np is not None:
            r = self.c.step_rows(n, np.array([2]), np.array([2.0, 2.0, 2.0]), expect_step=2)
            self.assertEqual(r.step, 3)
            self.assertEqual(self.c.read_rows(n, np.array([2]))[1], [-1.0, -1.0, -1.0])
        # A lost answer: retried under expect_step, applied once.
        proxy = FaultProxy(self.d.port)
        try:
            c = Client("http://127.0.0.1:%d" % proxy.port, timeout=10, retries=2)
            at = self.c.get(n)["step"]
            proxy.drop_answers = 1
            r = c.step_rows(n, [0], array.array("d", [0.0, 0.0, 2.0]), expect_step=at,
                            return_params=False)
            self.assertEqual(r.step, at + 1)
            self.assertEqual(self.c.get(n)["step"], at + 1)
            self.assertEqual(self.c.read_rows(n, [0])[1], [-1.0, -2.0, -5.0])
            c.close()
        finally:
            proxy.close()

    @unittest.skipUnless(torch is not None and np is not None, "needs python3-torch and numpy")
    def test_torch_tensors_go_in_as_numpy(self):
        """An nn.Embedding(sparse=True) user hands the gradient's own
        tensors to step_rows, ShardedTable and step: they go out in binary
        as numpy would (before, a 2-D tensor was "2 gradient values for 2
        rows of 4" in ShardedTable.push and "Tensor is not JSON
        serializable" in step_rows), and the table follows
        torch.optim.SparseAdam."""
        from optd_client import ShardedTable
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 4, sparse=True)
        ref = torch.nn.Embedding(10, 4, sparse=True)
        ref.weight.data.copy_(emb.weight.data)
        opt = torch.optim.SparseAdam(ref.parameters(), lr=0.1)
        n = self.uname()
        self.c.create(n, "sparse_adam", size=40, row_size=4, dtype="float32", hyperparameters={"lr": 0.1})
        self.c.set_params(n, emb.weight)  # a Parameter that requires grad
        table = ShardedTable("http://127.0.0.1:%d" % self.d.port, self.uname(), shards=3)
        table.create(10, 4, "sparse_adam", hyperparameters={"lr": 0.1}, dtype="float32", init=emb.weight)
        try:
            for k in range(3):
                ids = torch.tensor([[1, 7, 1], [k, 9, 2]])
                opt.zero_grad()
                ref(ids).pow(2).sum().backward()
                opt.step()
                emb.zero_grad()
                emb(ids).pow(2).sum().backward()
                g = emb.weight.grad
                r = self.c.step_rows(n, g._indices()[0], g._values(), expect_step=k)
                self.assertEqual(r.step, k + 1)
                self.assertEqual(table.push(g._indices()[0], g._values(), expect_step=k), k + 1)
                with torch.no_grad():
                    emb.weight.copy_(torch.from_numpy(self.c.params(n, binary=True)[1].reshape(10, 4)))
            want = ref.weight.detach().numpy()
            self.assertTrue(np.allclose(self.c.params(n, binary=True)[1].reshape(10, 4), want,
                                        rtol=2e-5, atol=1e-6))
            self.assertTrue(np.allclose(table.pull(torch.arange(10))[1].reshape(10, 4), want,
                                        rtol=2e-5, atol=1e-6))
        finally:
            table.delete()
            table.close()
        dense = self.uname()
        self.c.create(dense, "sgd", params=torch.tensor([1.0, 2.0]), hyperparameters={"lr": 0.5})
        r = self.c.step(dense, torch.tensor([2.0, 2.0], dtype=torch.float64), expect_step=0)
        self.assertEqual(list(r.params), [0.0, 1.0])

    def test_timeout_and_refused(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        try:
            c = Client("http://127.0.0.1:%d" % silent.getsockname()[1], timeout=0.3, retries=0)
            with self.assertRaises(OptdTimeout) as cm:
                c.health()
            self.assertEqual(cm.exception.code, "timeout")
        finally:
            silent.close()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(OptdConnectionError):
            Client("http://127.0.0.1:%d" % port, timeout=2, retries=1, backoff=0.01).health()


class PythonClientEarlyAnswer(DaemonTestCase):
    """A body over --max-body-bytes is refused from its headers (413) and
    the connection closed before the body is read: the client used to die
    of EPIPE while still sending and raise connection_error (Broken pipe),
    every time for a 8 MB body, instead of the daemon's answer."""
    FLAGS = ["--max-body-bytes", "100000", "--max-body-memory", "100000"]

    def test_413_is_read_after_a_broken_pipe(self):
        c = Client("http://127.0.0.1:%d" % self.d.port, timeout=10)
        n = self.uname()
        c.create(n, "sgd", size=10)
        big = array.array("d", bytes(8 * 1000000))
        for _ in range(3):
            for call in (lambda: c.set_params(n, big), lambda: c.step(n, big, expect_step=0)):
                with self.assertRaises(OptdError) as cm:
                    call()
                self.assertEqual((cm.exception.status, cm.exception.code), (413, "payload_too_large"))
        self.assertEqual(c.get(n)["step"], 0)  # and the connection after it works
        c.close()


class PythonClientAuth(DaemonTestCase):
    TOKEN = "s3cret-token"

    def test_token(self):
        base = "http://127.0.0.1:%d" % self.d.port
        with self.assertRaises(OptdError) as cm:
            Client(base).optimizers()
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))
        with self.assertRaises(OptdError):
            Client(base, token="wrong").optimizers()
        c = Client(base, token=self.TOKEN)
        self.assertTrue(c.optimizers())
        self.assertEqual(Client(base).health(), {"status": "ok"})


class PythonClientTLS(DaemonTestCase):
    TLS = True

    def test_https_keep_alive(self):
        proxy = FaultProxy(self.d.port)  # TCP pass-through: counts TLS connections
        try:
            c = Client("https://127.0.0.1:%d" % proxy.port, ssl_context=self.d.ssl_context())
            n = self.uname()
            c.create(n, "adam", size=3)
            for k in range(10):
                c.step(n, [0.1, 0.2, 0.3], expect_step=k)
            self.assertEqual(c.get(n)["step"], 10)
            self.assertEqual(proxy.connections, 1)
            c.close()
        finally:
            proxy.close()


class ListAcross(unittest.TestCase):
    def test_merge_two_daemons(self):
        ds = [Daemon(), Daemon()]
        try:
            for d in ds:
                d.start()
            clients = [Client("http://127.0.0.1:%d" % d.port) for d in ds]
            for i in range(6):
                clients[i % 2].create("m-%02d" % i, "sgd", size=1)
            names = [s["name"] for s in list_across(clients, prefix="m-", page_size=2)]
            self.assertEqual(names, ["m-%02d" % i for i in range(6)])
            for c in clients:
                c.close()
            for d in ds:
                d.stop()
        finally:
            for d in ds:
                d.cleanup()


if __name__ == "__main__":
    unittest.main()
