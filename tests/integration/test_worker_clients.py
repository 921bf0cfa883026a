"""test_worker_clients.py: the clients' worker helpers (optd_client.Worker,
Client.contribute, Client.params(min_step=, wait=); API.md 1.1, "Rounds" and
"Waiting for parameters") with real concurrent workers (threads).

- WorkerLogic runs the Python Worker against fake_rounds.py, a tiny stand-in
  that can apply a round and then lose its answer, or lose a pending round
  as a restart does, on demand: the loop's branches, each forced.
- WorkersOnOptd runs the same loops against the real daemon: rounds of 4
  give exactly the plain steps of the mean gradient; backups; the 202 path;
  long polls; a lost answer retried (nothing counted twice); a restart with
  a round pending (the workers' repeats rebuild it).
"""

import array
import os
import sys
import threading
import time
import unittest

from harness import REPO, DaemonTestCase

sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))
from optd_client import Client, OptdError  # noqa: E402
from fake_rounds import FakeRounds  # noqa: E402
from test_client_python import FaultProxy  # noqa: E402


def run_threads(fns):
    """Runs each fn in its own thread; re-raises the first exception."""
    errors = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
        if t.is_alive():
            raise AssertionError("a worker thread did not finish within 120 s")
    if errors:
        raise errors[0]


def wait_until(pred, what, limit=30.0):
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("never happened: " + what)
        time.sleep(0.01)


def grad_of(rank, step, size):
    """A worker's gradient: exact in binary, different per worker and step."""
    return [(rank + 1) * 0.25 + step * 0.125 + i * 0.5 for i in range(size)]


def mean_sgd(params, lr, grads):
    """What one SGD round of the mean does, in double, in worker order."""
    n = len(grads)
    return [p - lr * (sum(g[i] for g in grads) / n) for i, p in enumerate(params)]


class WorkerLogic(unittest.TestCase):
    """The Python Worker's branches against the fake."""

    def setUp(self):
        self.fake = FakeRounds().start()
        self.c = Client(self.fake.url, timeout=10, retries=3, backoff=0.01)

    def tearDown(self):
        self.c.close()
        self.fake.stop()

    def test_rounds_in_threads(self):
        self.c.create("m", "sgd", params=[1.0, 2.0], hyperparameters={"lr": 0.5},
                      aggregate={"workers": 3})
        out = {}

        def worker(rank):
            w = self.c.worker("m", "w%d" % rank)
            while w.step < 4:
                w.push(grad_of(rank, w.step, 2))
            out[rank] = (w.step, w.params, w.applied, w.refused)

        run_threads([lambda r=r: worker(r) for r in range(3)])
        want = [1.0, 2.0]
        for k in range(4):
            want = mean_sgd(want, 0.5, [grad_of(r, k, 2) for r in range(3)])
        for rank in range(3):
            self.assertEqual(out[rank], (4, want, 4, 0))

    def test_lost_answer_of_an_applied_round_is_not_counted_twice(self):
        self.c.create("m", "sgd", params=[1.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 1})
        w = self.c.worker("m", "w0")
        self.fake.drop_next_answer = 1  # the round is applied, its answer lost
        self.assertTrue(w.push([0.5]))
        self.assertEqual((w.step, w.params, w.applied, w.refused), (1, [0.5], 1, 0))
        self.assertEqual(self.fake.contributions, 2)  # the retry, refused as a repeat
        self.assertEqual(self.fake.refused, 1)
        self.assertEqual(self.c.params("m"), (1, [0.5]))

    def test_round_lost_in_a_restart_is_rebuilt_by_the_repeat(self):
        self.c.create("m", "sgd", params=[0.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 2})
        w0 = self.c.worker("m", "w0")
        w0.wait = 1  # the poll after the 202 ends within a second
        t = threading.Thread(target=w0.push, args=([2.0],))
        t.start()
        wait_until(lambda: self.fake.sessions["m"].round, "w0's contribution in the round")
        self.fake.forget_rounds()
        wait_until(lambda: self.fake.contributions >= 2 and self.fake.sessions["m"].round,
                   "w0's repeat rebuilding the round")
        w1 = self.c.worker("m", "w1")
        self.assertTrue(w1.push([4.0]))
        t.join(30)
        self.assertEqual((w0.step, w0.params, w0.applied), (1, [-3.0], 1))
        self.assertGreaterEqual(w0.pending, 1)
        self.assertEqual(w1.params, [-3.0])

    def test_stale_gradient_is_refused_and_the_worker_goes_on(self):
        self.c.create("m", "sgd", params=[0.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 1})
        w0, w1 = self.c.worker("m", "w0"), self.c.worker("m", "w1")
        self.assertTrue(w0.push([1.0]))
        self.assertFalse(w1.push([100.0]))  # computed from step 0; the session is at 1
        self.assertEqual((w1.step, w1.params, w1.refused, w1.applied), (1, [-1.0], 1, 0))
        self.assertTrue(w1.push([1.0]))
        self.assertEqual((w1.step, w1.params), (2, [-2.0]))


class WorkersOnOptd(DaemonTestCase):
    DATA_DIR = True

    def setUp(self):
        self.url = "http://127.0.0.1:%d" % self.d.port
        self.c = Client(self.url, timeout=10)

    def tearDown(self):
        self.c.close()

    def test_create_and_patch_aggregate(self):
        n = self.uname()
        d = self.c.create(n, "sgd", size=3, aggregate={"workers": 4, "reduce": "sum", "max_staleness": 1})
        self.assertEqual(d["aggregate"], {"workers": 4, "reduce": "sum", "max_staleness": 1})
        d = self.c.patch(n, aggregate={"workers": 2})
        self.assertEqual(d["aggregate"]["workers"], 2)
        self.assertIsNone(self.c.patch(n, aggregate=None)["aggregate"])
        self.assertIsNone(self.c.get(n)["aggregate"])

    def test_rounds_of_four_are_the_plain_steps_of_the_mean(self):
        n, twin = self.uname(), self.uname("twin")
        start = [0.5, -1.0, 2.0]
        self.c.create(n, "sgd", params=start, hyperparameters={"lr": 0.25}, aggregate={"workers": 4})
        self.c.create(twin, "sgd", params=start, hyperparameters={"lr": 0.25})
        out = {}

        def worker(rank):
            c = Client(self.url, timeout=30)
            w = c.worker(n, "w%d" % rank)
            while w.step < 5:
                w.push(grad_of(rank, w.step, 3), loss=rank)
            out[rank] = (w.step, w.params, w.applied, w.refused)
            c.close()

        run_threads([lambda r=r: worker(r) for r in range(4)])
        for k in range(5):
            grads = [grad_of(r, k, 3) for r in range(4)]
            self.c.step(twin, [sum(g[i] for g in grads) / 4 for i in range(3)], expect_step=k)
        step, want = self.c.params(twin)
        for rank in range(4):
            self.assertEqual(out[rank], (5, want, 5, 0))
        self.assertEqual(self.c.params(n), (5, want))
        h = self.c.history(n)
        self.assertEqual([e["step"] for e in h], [1, 2, 3, 4, 5])
        self.assertEqual({e.get("contributions") for e in h}, {4})
        self.assertEqual({e.get("loss") for e in h}, {1.5})

    def test_backup_workers(self):
        """Rounds of 2 with 3 workers: every round has exactly 2 gradients;
        the rest were refused and their workers went on."""
        n = self.uname()
        self.c.create(n, "sgd", params=[0.0], hyperparameters={"lr": 1.0},
                      aggregate={"workers": 2, "reduce": "sum"})
        ws = {}

        def worker(rank):
            c = Client(self.url, timeout=30)
            w = ws[rank] = c.worker(n, "w%d" % rank)
            while w.step < 10:
                w.push([1.0])
            c.close()

        run_threads([lambda r=r: worker(r) for r in range(3)])
        self.assertEqual(self.c.params(n), (10, [-20.0]))  # 10 rounds x 2 gradients of 1
        self.assertEqual(sum(w.applied for w in ws.values()), 20)
        self.assertEqual(sum(w.pushes for w in ws.values()), 20 + sum(w.refused for w in ws.values()))

    def test_pending_round_then_long_poll(self):
        """wait=0: the first worker's contribution is answered 202 at once
        and stays in the round; its Worker long-polls and repeats until the
        second worker completes the round."""
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0, 1.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 2})
        # Binary: the 202 is JSON whatever the request's body was.
        first = self.c.contribute(n, "w0", 0, array.array("d", [1.0, 3.0]), wait=0)
        self.assertFalse(first.applied)
        self.assertEqual(first.step, 0)
        self.assertEqual(first.round["contributions"], 1)
        self.assertEqual(self.c.get(n)["round"]["contributions"], 1)
        c0 = Client(self.url, timeout=30)
        w0 = c0.worker(n, "w0")
        w0.wait = 1
        t = threading.Thread(target=w0.push, args=([1.0, 3.0],))
        t.start()
        wait_until(lambda: w0.pending >= 2, "w0 answered 202 twice")
        self.assertEqual(self.c.params(n), (0, [1.0, 1.0]))
        w1 = self.c.worker(n, "w1")
        self.assertTrue(w1.push([3.0, 1.0]))
        t.join(30)
        self.assertEqual((w0.step, w0.params, w0.applied, w0.refused), (1, [-1.0, -1.0], 1, 0))
        self.assertEqual((w1.step, w1.params), (1, [-1.0, -1.0]))
        c0.close()

    def test_params_long_poll(self):
        n = self.uname()
        self.c.create(n, "sgd", params=[1.0], hyperparameters={"lr": 1.0})
        self.assertEqual(self.c.params(n, min_step=3, wait=0), (0, [1.0]))   # not yet: at once
        self.assertEqual(self.c.params(n, min_step=0, wait=30), (0, [1.0]))  # already: at once
        got = {}
        c2 = Client(self.url, timeout=10)
        t = threading.Thread(target=lambda: got.update(r=c2.params(n, min_step=2, wait=60, binary=True,
                                                                   numpy=False)))
        t.start()
        self.c.step(n, [1.0], expect_step=0)
        self.c.step(n, [1.0], expect_step=1)
        t.join(30)
        self.assertEqual(got["r"][0], 2)
        self.assertEqual(list(got["r"][1]), [-1.0])
        c2.close()

    def test_lost_answer_retried_counts_once(self):
        proxy = FaultProxy(self.d.port)
        try:
            c = Client("http://127.0.0.1:%d" % proxy.port, timeout=10, retries=2)
            n = self.uname()
            c.create(n, "sgd", params=[1.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 1})
            w = c.worker(n, "w0")
            proxy.drop_answers = 1
            self.assertTrue(w.push([0.5]))
            self.assertEqual((w.step, w.params, w.applied, w.refused), (1, [0.5], 1, 0))
            self.assertEqual(proxy.drop_answers, 0)
            self.assertEqual(self.c.get(n)["step"], 1)
            self.assertEqual(len(self.c.history(n)), 1)
            c.close()
        finally:
            proxy.close()

    def test_restart_with_a_round_pending(self):
        """A pending round lives in memory only: after a restart, w0's
        repeat (after its poll fails or ends) rebuilds it, and the round
        applies both gradients once."""
        n = self.uname()
        self.c.create(n, "sgd", params=[0.0], hyperparameters={"lr": 1.0}, aggregate={"workers": 2})
        c0 = Client(self.url, timeout=10, retries=100, backoff=0.05)
        w0 = c0.worker(n, "w0")
        w0.wait = 1
        t = threading.Thread(target=w0.push, args=([2.0],))
        t.start()
        wait_until(lambda: (self.c.get(n).get("round") or {}).get("contributions") == 1, "w0 in the round")
        self.c.close()
        self.d.restart()
        wait_until(lambda: (self.c.get(n).get("round") or {}).get("contributions") == 1,
                   "w0's repeat rebuilding the round after the restart")
        w1 = self.c.worker(n, "w1")
        self.assertTrue(w1.push([4.0]))
        t.join(30)
        self.assertEqual((w0.step, w0.params, w0.applied), (1, [-3.0], 1))
        self.assertEqual(self.c.params(n), (1, [-3.0]))
        self.assertEqual(len(self.c.history(n)), 1)
        c0.close()


if __name__ == "__main__":
    unittest.main()
