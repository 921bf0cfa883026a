"""Rounds (API.md 1.1 "Rounds: many workers, one session") and long polls
("Waiting for parameters"), with real concurrent clients: every rule of the
section; a round is bit for bit one plain step with the reduced gradient
(summed in double in worker-name order, computed here) whatever the arrival
order; retries, double counting, backup workers, staleness; 202 and a later
completion; DELETE, PATCH and SIGTERM answering the waiting requests; long
polls woken by a step; a restart with a round pending and the durability of
applied rounds."""

import json
import random
import re
import struct
import threading
import time
import unittest

from harness import Daemon, DaemonTestCase

BIN = {"Content-Type": "application/octet-stream"}
RAW = {"Accept": "application/octet-stream"}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def reduce_ref(grads_by_worker, dtype, mean=True):
    """API.md's reduction: sum in double in ascending bytewise name order
    (the first value, then each added), / N for mean, rounded once."""
    names = sorted(grads_by_worker, key=lambda s: s.encode())
    n = len(grads_by_worker[names[0]])
    out = []
    for i in range(n):
        acc = float(grads_by_worker[names[0]][i])
        for w in names[1:]:
            acc += float(grads_by_worker[w][i])
        if mean:
            acc /= len(names)
        out.append(f32(acc) if dtype == "float32" else acc)
    return out


def run_threads(fns):
    """Runs each fn in its own thread, all started together; their results in order."""
    out = [None] * len(fns)
    start = threading.Barrier(len(fns))

    def body(i, fn):
        start.wait()
        out[i] = fn()
    ts = [threading.Thread(target=body, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def waiting(d):
    """optd_requests_waiting from /metrics."""
    return int(re.search(r"\noptd_requests_waiting (\d+)", d.get("/metrics").raw.decode()).group(1))


class RoundsBase:
    def assertError(self, r, status, code):
        """As DaemonTestCase's, for the classes that start their own daemons."""
        self.assertEqual(r.status, status, "want %d %s, got %r" % (status, code, r))
        err = r.body.get("error") if isinstance(r.body, dict) else None
        self.assertIsInstance(err, dict, r)
        self.assertEqual(err.get("code"), code, r)
        self.assertTrue(isinstance(err.get("message"), str) and err["message"].strip(), r)
        return err

    def make(self, name, workers=2, params=(1.0, -2.0, 0.5), optimizer="adam", **fields):
        agg = {"workers": workers}
        agg.update(fields.pop("agg", {}))
        r = self.d.post("/v1/sessions", dict(name=name, optimizer=optimizer, params=list(params),
                                             aggregate=agg, **fields))
        self.assertEqual(r.status, 201, r)
        return r.body

    def contribute(self, name, worker, step, grad, wait=None, loss=None, **kw):
        body = {"gradient": grad, "worker": worker, "step": step}
        if loss is not None:
            body["loss"] = loss
        q = "" if wait is None else "?wait=%d" % wait
        return self.d.post("/v1/sessions/%s/step%s" % (name, q), body, **kw)

    def round_of(self, name):
        return self.d.get("/v1/sessions/%s" % name).body["round"]

    def wait_contributions(self, name, k):
        """Until the pending round holds k contributions (a condition, not a time)."""
        for _ in range(2000):
            r = self.round_of(name)
            if r and r["contributions"] >= k:
                return r
            time.sleep(0.005)
        self.fail("the round never held %d contributions" % k)

    def raw_params(self, name):
        r = self.d.get("/v1/sessions/%s/params" % name, headers=RAW)
        self.assertEqual(r.status, 200, r)
        return r.raw


class Rounds(RoundsBase, DaemonTestCase):
    FLAGS = ["--threads", "4"]

    def test_descriptor_shows_aggregate_and_round(self):
        n = self.uname()
        d = self.make(n, workers=3, agg={"reduce": "sum", "max_staleness": 2})
        self.assertEqual(d["aggregate"], {"workers": 3, "reduce": "sum", "max_staleness": 2})
        self.assertEqual(d["round"], {"step": 0, "contributions": 0, "workers": []})
        plain = self.d.create(self.uname(), "sgd", size=2)
        self.assertIsNone(plain["aggregate"])
        self.assertIsNone(plain["round"])
        self.assertEqual(self.contribute(n, "wb", 0, [1, 1, 1], wait=0).status, 202)
        self.assertEqual(self.contribute(n, "wa", 0, [1, 1, 1], wait=0).status, 202)
        self.assertEqual(self.round_of(n), {"step": 0, "contributions": 2, "workers": ["wa", "wb"]})
        # PUT create takes it too; defaults filled in.
        r = self.d.put("/v1/sessions/" + self.uname(), {"optimizer": "sgd", "size": 2, "aggregate": {"workers": 1}})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["aggregate"], {"workers": 1, "reduce": "mean", "max_staleness": 0})

    def test_invalid_aggregate_refused(self):
        for agg in [{"workers": 0}, {"workers": 1025}, {"workers": 2.5}, {}, {"workers": 2, "reduce": "max"},
                    {"workers": 2, "max_staleness": -1}, {"workers": 2, "extra": 1}, [2], "yes"]:
            n = self.uname()
            r = self.d.post("/v1/sessions", {"name": n, "optimizer": "sgd", "size": 2, "aggregate": agg})
            self.assertError(r, 400, "invalid_argument")
            self.assertEqual(self.d.get("/v1/sessions/" + n).status, 404)

    def test_worker_rules(self):
        n = self.uname()
        self.make(n)
        # A plain step on an aggregating session, and a worker on a plain one.
        self.assertError(self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1]}), 400, "invalid_argument")
        self.assertError(self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1], "step": 0}),
                         400, "invalid_argument")
        self.assertError(self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1], "step": 5}),
                         400, "invalid_argument")
        p = self.uname()
        self.d.create(p, "sgd", size=3)
        self.assertError(self.contribute(p, "w1", 0, [1, 1, 1]), 400, "invalid_argument")
        # worker needs step; names follow the session-name rule.
        self.assertError(self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1], "worker": "w1"}),
                         400, "invalid_argument")
        for bad in ["", "-x", "a/b", "x" * 129, 7, None]:
            r = self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1], "worker": bad, "step": 0})
            self.assertError(r, 400, "invalid_argument")
        self.assertError(self.contribute(n, "w1", 0, [1, 1, 1], wait=301), 400, "invalid_argument")
        # Header and field must agree.
        r = self.d.post("/v1/sessions/%s/step?wait=0" % n, {"gradient": [1, 1, 1], "worker": "w1", "step": 0},
                        headers={"Optd-Worker": "w2"})
        self.assertError(r, 400, "invalid_argument")
        self.assertEqual(self.round_of(n)["contributions"], 0)
        # A batch item on an aggregating session.
        r = self.d.post("/v1/steps", {"steps": [{"session": n, "gradient": [1, 1, 1], "step": 0}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["results"][0]["error"]["code"], "invalid_argument")

    def check_order_independent(self, dtype, workers, rounds):
        rnd = random.Random(dtype)
        size = 7
        init = [rnd.uniform(-1, 1) for _ in range(size)]
        if dtype == "float32":
            init = [f32(x) for x in init]
        agg_name, plain = self.uname("agg"), self.uname("plain")
        self.make(agg_name, workers=len(workers), params=init, dtype=dtype, max_grad_norm=2.0,
                  schedule={"type": "step", "step_size": 2, "gamma": 0.5})
        self.d.create(plain, "adam", params=init, dtype=dtype, max_grad_norm=2.0,
                      schedule={"type": "step", "step_size": 2, "gamma": 0.5})
        for k in range(rounds):
            grads = {w: [rnd.uniform(-3, 3) * 10 ** rnd.randint(-8, 2) for _ in range(size)] for w in workers}
            if dtype == "float32":
                grads = {w: [f32(x) for x in g] for w, g in grads.items()}
            losses = {w: rnd.uniform(0, 2) for w in workers}
            order = list(workers)
            rnd.shuffle(order)
            res = run_threads([(lambda w=w: self.contribute(agg_name, w, k, grads[w], loss=losses[w]))
                               for w in order])
            for r in res:
                self.assertEqual(r.status, 200, r)
            self.assertEqual(len({str(r.body) for r in res}), 1, "every request of a round gets the same answer")
            red = reduce_ref(grads, dtype)
            mean_loss = sum(losses[w] for w in sorted(workers, key=str.encode)) / len(workers)
            r = self.d.post("/v1/sessions/%s/step" % plain, {"gradient": red, "loss": mean_loss})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(res[0].body, r.body)
            self.assertEqual(self.raw_params(agg_name), self.raw_params(plain))
        ha = self.d.get("/v1/sessions/%s/history" % agg_name).body["history"]
        hp = self.d.get("/v1/sessions/%s/history" % plain).body["history"]
        self.assertEqual([h.pop("contributions") for h in ha], [len(workers)] * rounds)
        for a, b in zip(ha, hp):
            a.pop("time"), b.pop("time")
        self.assertEqual(ha, hp)

    def test_round_is_bit_for_bit_a_plain_step_float64(self):
        self.check_order_independent("float64", ["w3", "W1", "w10", "w2"], 6)

    def test_round_is_bit_for_bit_a_plain_step_float32(self):
        self.check_order_independent("float32", ["b", "a", "c"], 6)

    def test_binary_contributions(self):
        n, plain = self.uname(), self.uname()
        self.make(n, workers=2, params=[0.0, 0.0], dtype="float32", optimizer="sgd",
                  hyperparameters={"lr": 0.5})
        self.d.create(plain, "sgd", params=[0.0, 0.0], dtype="float32", hyperparameters={"lr": 0.5})
        g = {"x1": [f32(0.1), f32(-0.3)], "x2": [f32(0.7), f32(1e-3)]}

        def send(w):
            return self.d.post("/v1/sessions/%s/step" % n, struct.pack("<2f", *g[w]),
                               headers=dict(BIN, **{"Optd-Worker": w, "Optd-Expect-Step": "0"}))
        res = run_threads([lambda: send("x2"), lambda: send("x1")])
        for r in res:
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.headers["Optd-Step"], "1")
            self.assertEqual(r.headers["Optd-Dtype"], "float32")
        self.assertEqual(res[0].raw, res[1].raw)
        self.d.post("/v1/sessions/%s/step" % plain, {"gradient": reduce_ref(g, "float32")})
        self.assertEqual(res[0].raw, self.raw_params(plain))
        # Without Optd-Expect-Step: refused.
        r = self.d.post("/v1/sessions/%s/step" % n, struct.pack("<2f", 1, 1), headers=dict(BIN, **{"Optd-Worker": "x1"}))
        self.assertError(r, 400, "invalid_argument")

    def test_sum_and_return_none(self):
        n = self.uname()
        self.make(n, workers=2, params=[0.0], optimizer="sgd", hyperparameters={"lr": 1.0}, agg={"reduce": "sum"})
        res = run_threads([lambda: self.d.post("/v1/sessions/%s/step?return=none" % n,
                                               {"gradient": [1.5], "worker": "a", "step": 0}),
                           lambda: self.contribute(n, "b", 0, [2.0])])
        self.assertEqual(res[0].body, {"step": 1})
        self.assertEqual(res[1].body, {"step": 1, "params": [-3.5]})

    def test_retry_replaces_its_first_contribution(self):
        n, plain = self.uname(), self.uname()
        self.make(n, workers=2)
        self.d.create(plain, "adam", params=[1.0, -2.0, 0.5])
        r = self.contribute(n, "w1", 0, [9.0, 9.0, 9.0], wait=0)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.body, {"step": 0, "round": {"step": 0, "contributions": 1, "workers": ["w1"]}})
        self.assertEqual(self.contribute(n, "w1", 0, [1.0, 2.0, 3.0], wait=0).status, 202)
        self.assertEqual(self.round_of(n)["contributions"], 1)
        r = self.contribute(n, "w2", 0, [3.0, 2.0, 1.0])
        self.assertEqual(r.status, 200, r)
        p = self.d.post("/v1/sessions/%s/step" % plain, {"gradient": [2.0, 2.0, 2.0]})
        self.assertEqual(r.body, p.body)

    def test_never_counted_twice(self):
        n = self.uname()
        self.make(n, workers=2, agg={"max_staleness": 3})
        res = run_threads([lambda: self.contribute(n, "w1", 0, [1, 1, 1]),
                           lambda: self.contribute(n, "w2", 0, [1, 1, 1])])
        self.assertEqual([r.status for r in res], [200, 200])
        # A retry of an applied contribution lies in the window but would count twice.
        for w in ("w1", "w2"):
            r = self.contribute(n, w, 0, [1, 1, 1], wait=0)
            self.assertError(r, 409, "step_mismatch")
            self.assertEqual(r.body["error"]["current_step"], 1)
        self.assertEqual(self.round_of(n)["contributions"], 0)
        # A stale-but-new contribution is fine: w3 computed at step 0.
        self.assertEqual(self.contribute(n, "w3", 0, [1, 1, 1], wait=0).status, 202)
        m = self.d.get("/metrics").raw.decode()
        self.assertRegex(m, r'optd_contributions_refused_total\{reason="twice"\} [1-9]')

    def test_staleness_window(self):
        n = self.uname()
        self.make(n, workers=1, agg={"max_staleness": 1})
        self.assertEqual(self.contribute(n, "a", 0, [1, 1, 1]).body["step"], 1)
        self.assertEqual(self.contribute(n, "b", 0, [1, 1, 1]).body["step"], 2)   # c - 1: in
        for step in (0, 3, 99):                                                  # c - 2, ahead
            r = self.contribute(n, "c", step, [1, 1, 1])
            self.assertError(r, 409, "step_mismatch")
            self.assertEqual(r.body["error"]["current_step"], 2)
        s = self.uname()
        self.make(s, workers=1)
        self.contribute(s, "a", 0, [1, 1, 1])
        r = self.contribute(s, "b", 0, [1, 1, 1])
        self.assertError(r, 409, "step_mismatch")
        m = self.d.get("/metrics").raw.decode()
        self.assertRegex(m, r'optd_contributions_refused_total\{reason="stale"\} [1-9]')
        self.assertRegex(m, r'optd_contributions_refused_total\{reason="too_late"\} [1-9]')

    def test_backup_workers_late_ones_get_409(self):
        n = self.uname()
        self.make(n, workers=2)
        res = run_threads([(lambda w=w: self.contribute(n, w, 0, [1, 1, 1])) for w in ("b1", "b2", "b3")])
        self.assertEqual(sorted(r.status for r in res), [200, 200, 409], res)
        late = [r for r in res if r.status == 409][0]
        self.assertEqual(late.body["error"]["current_step"], 1)
        self.assertEqual(self.d.get("/v1/sessions/" + n).body["step"], 1)

    def test_202_then_the_round_completes(self):
        n = self.uname()
        self.make(n, workers=2)
        r = self.contribute(n, "w1", 0, [1, 1, 1], wait=0)
        self.assertEqual(r.status, 202)
        got = {}
        t = threading.Thread(target=lambda: got.update(
            p=self.d.get("/v1/sessions/%s/params?min_step=1&wait=60" % n)))
        t.start()
        r2 = self.contribute(n, "w2", 0, [1, 1, 1])
        t.join(60)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(got["p"].status, 200)
        self.assertEqual(got["p"].body, r2.body)

    def test_wait_expiry_answers_202_and_the_contribution_stays(self):
        n = self.uname()
        self.make(n, workers=3)
        r = self.contribute(n, "w1", 0, [1, 1, 1], wait=1)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.body["round"]["workers"], ["w1"])
        self.assertEqual(self.round_of(n)["workers"], ["w1"])

    def test_delete_answers_waiting_requests_404(self):
        n = self.uname()
        self.make(n, workers=3)
        got = []
        ts = [threading.Thread(target=lambda w=w: got.append(self.contribute(n, w, 0, [1, 1, 1])))
              for w in ("a", "b")]
        for t in ts:
            t.start()
        self.wait_contributions(n, 2)
        self.assertEqual(self.d.delete("/v1/sessions/" + n).status, 204)
        for t in ts:
            t.join(60)
        for r in got:
            self.assertError(r, 404, "not_found")

    def test_patch_off_answers_409_and_drops_the_round(self):
        n = self.uname()
        self.make(n, workers=3)
        got = []
        t = threading.Thread(target=lambda: got.append(self.contribute(n, "a", 0, [1, 1, 1])))
        t.start()
        self.wait_contributions(n, 1)
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": None})
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.body["aggregate"])
        self.assertIsNone(r.body["round"])
        t.join(60)
        self.assertError(got[0], 409, "step_mismatch")
        self.assertEqual(got[0].body["error"]["current_step"], 0)
        # Now a plain session: plain steps go, workers are refused.
        self.assertEqual(self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1, 1]}).status, 200)
        self.assertError(self.contribute(n, "a", 1, [1, 1, 1]), 400, "invalid_argument")
        # And on again.
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": {"workers": 2}})
        self.assertEqual(r.body["round"], {"step": 1, "contributions": 0, "workers": []})

    def test_patch_lowering_workers_applies_the_round(self):
        n, plain = self.uname(), self.uname()
        self.make(n, workers=3)
        self.d.create(plain, "adam", params=[1.0, -2.0, 0.5])
        got = []
        ts = [threading.Thread(target=lambda w=w, g=g: got.append(self.contribute(n, w, 0, g)))
              for w, g in (("a", [1.0, 0.0, 2.0]), ("b", [3.0, 1.0, 0.0]))]
        for t in ts:
            t.start()
        self.wait_contributions(n, 2)
        before = self.d.get("/metrics").raw.decode()
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": {"workers": 2}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["step"], 1)
        count = lambda m: int(re.search(r"\noptd_rounds_applied_total (\d+)", m).group(1))
        self.assertEqual(count(self.d.get("/metrics").raw.decode()), count(before) + 1)
        for t in ts:
            t.join(60)
        p = self.d.post("/v1/sessions/%s/step" % plain, {"gradient": [2.0, 0.5, 1.0]})
        self.assertEqual([x.body for x in got], [p.body, p.body])

    def test_fork_copies_aggregate_not_the_round(self):
        n = self.uname()
        self.make(n, workers=2)
        self.contribute(n, "a", 0, [1, 1, 1], wait=0)
        f = self.uname()
        r = self.d.post("/v1/sessions", {"name": f, "from": n})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["aggregate"], {"workers": 2, "reduce": "mean", "max_staleness": 0})
        self.assertEqual(r.body["round"]["contributions"], 0)
        # State export and import carry the aggregate.
        st = self.d.get("/v1/sessions/%s/state" % n).body
        self.assertEqual(st["round"]["workers"], ["a"])
        imp = self.uname()
        r = self.d.put("/v1/sessions/%s/state" % imp, st)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body["aggregate"], st["aggregate"])
        self.assertEqual(r.body["round"]["contributions"], 0)

    def test_contribution_racing_an_import_of_another_shape_follows(self):
        """An import that changes the shape puts a new session in the old
        one's place: a contribution that found the old one follows the new
        one as a plain step does (applied when it fits, 400 size_mismatch
        when it does not), never 404: the name never stopped existing."""
        n = self.uname()
        self.make(n, workers=1, params=(1.0, 2.0, 3.0), optimizer="sgd", agg={"max_staleness": 1 << 40})
        a = self.d.get("/v1/sessions/%s/state" % n).body
        other = self.uname()
        self.make(other, workers=1, params=(1.0, 2.0, 3.0, 4.0), optimizer="sgd", agg={"max_staleness": 1 << 40})
        b = self.d.get("/v1/sessions/%s/state" % other).body
        done = threading.Event()
        statuses = {}

        def importer():
            conn = self.d.new_connection()
            try:
                while not done.is_set():
                    for st in (b, a):
                        conn.request("PUT", "/v1/sessions/%s/state" % n, json.dumps(st),
                                     {"Content-Type": "application/json"})
                        r = conn.getresponse()
                        r.read()
                        assert r.status in (200, 201), r.status
            finally:
                conn.close()

        def contributor(k):
            conn = self.d.new_connection()
            try:
                for i in range(1500):
                    body = {"gradient": [0.0, 0.0, 0.0], "worker": "w%d-%d" % (k, i), "step": 0}
                    conn.request("POST", "/v1/sessions/%s/step?return=none&wait=0" % n, json.dumps(body),
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    code = json.loads(data)["error"]["code"] if r.status >= 400 else ""
                    statuses[(r.status, code)] = statuses.get((r.status, code), 0) + 1
            finally:
                conn.close()

        t = threading.Thread(target=importer)
        t.start()
        try:
            run_threads([lambda: contributor(0), lambda: contributor(1)])
        finally:
            done.set()
            t.join(60)
        self.assertLessEqual(set(statuses), {(200, ""), (202, ""), (409, "step_mismatch"),
                                             (400, "size_mismatch")}, statuses)

    def test_forgotten_worker_cannot_count_twice(self):
        """The session keeps the last applied step of at most
        max(64, 4 x workers) worker names; with a large max_staleness a
        forgotten worker's retry of an applied contribution is still in the
        window, and must not be applied a second time."""
        n = self.uname()
        self.make(n, workers=1, params=(0.0,), optimizer="sgd", hyperparameters={"lr": 1.0}, agg={"max_staleness": 1 << 40})
        r = self.contribute(n, "a", 0, [1.0])
        self.assertEqual((r.status, r.body["step"]), (200, 1), r)
        for i in range(64):  # 64 other names: "a", the oldest, is forgotten
            r = self.contribute(n, "w%02d" % i, i + 1, [0.0])
            self.assertEqual((r.status, r.body["step"]), (200, i + 2), r)
        r = self.contribute(n, "a", 0, [1.0])  # a retry of its applied contribution
        self.assertError(r, 409, "step_mismatch")
        self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body, {"step": 65, "params": [-1.0]})
        # More workers keep more names, and still refuse the forgotten one.
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": {"workers": 100, "max_staleness": 1 << 40}})
        self.assertEqual(r.status, 200, r)
        self.assertError(self.contribute(n, "a", 0, [1.0], wait=0), 409, "step_mismatch")
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": {"workers": 1, "max_staleness": 1 << 40}})
        self.assertEqual(r.status, 200, r)
        # A new worker at the current step is not refused.
        r = self.contribute(n, "new", 65, [0.0])
        self.assertEqual((r.status, r.body["step"]), (200, 66), r)

    def test_patch_raising_workers_keeps_room_in_the_pending_round(self):
        """The pending round was sized for the workers of its opening: after
        a PATCH raised them, the new workers' contributions were 500 "the
        round is full"."""
        n = self.uname()
        self.make(n, workers=2, params=(0.0,), optimizer="sgd", hyperparameters={"lr": 1.0}, agg={"reduce": "sum"})
        self.assertEqual(self.contribute(n, "a", 0, [1.0], wait=0).status, 202)
        r = self.d.patch("/v1/sessions/" + n, {"aggregate": {"workers": 4, "reduce": "sum"}})
        self.assertEqual(r.status, 200, r)
        for w in ("b", "c"):
            r = self.contribute(n, w, 0, [1.0], wait=0)
            self.assertEqual(r.status, 202, r)
        self.assertEqual(self.round_of(n)["workers"], ["a", "b", "c"])
        r = self.contribute(n, "d", 0, [1.0])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"step": 1, "params": [-4.0]})

    def test_patch_delete_and_polls_racing_contributions(self):
        """Hostile interleavings: contributions (some waiting) and long
        polls while PATCHes change the aggregate (workers up and down, off
        and on) and the session is deleted and created again.  Every
        answer is one the API allows, none hangs, and nothing is left
        waiting after."""
        n = self.uname()
        self.make(n, workers=3, params=(0.0, 0.0), optimizer="sgd")
        stop = threading.Event()
        seen = {}
        lock = threading.Lock()

        def note(kind, r):
            code = r.body["error"]["code"] if r.status >= 400 and isinstance(r.body, dict) else ""
            if r.status >= 500:
                code += ": " + r.body["error"]["message"]
            with lock:
                seen[(kind, r.status, code)] = seen.get((kind, r.status, code), 0) + 1

        def admin():
            k = 0
            while not stop.is_set():
                k += 1
                agg = [{"workers": 2}, None, {"workers": 5, "max_staleness": 3}, {"workers": 1}][k % 4]
                note("patch", self.d.patch("/v1/sessions/" + n, {"aggregate": agg}))
                if k % 7 == 0:
                    note("delete", self.d.delete("/v1/sessions/" + n))
                    note("create", self.d.post("/v1/sessions", {"name": n, "optimizer": "sgd", "params": [0.0, 0.0],
                                                               "aggregate": {"workers": 3}}))

        def worker(w):
            for i in range(60):
                r = self.d.get("/v1/sessions/%s/params" % n)
                step = r.body["step"] if r.status == 200 else 0
                note("contrib", self.contribute(n, "w%d" % w, step, [0.5, -0.5], wait=i % 3))
                if i % 10 == 0:
                    note("poll", self.d.get("/v1/sessions/%s/params?min_step=%d&wait=1" % (n, step + 1)))

        t = threading.Thread(target=admin)
        t.start()
        try:
            run_threads([lambda w=w: worker(w) for w in range(6)])
        finally:
            stop.set()
            t.join(60)
        allowed = {("contrib", 200, ""), ("contrib", 202, ""), ("contrib", 409, "step_mismatch"),
                   ("contrib", 404, "not_found"), ("contrib", 400, "invalid_argument"),
                   ("poll", 200, ""), ("poll", 404, "not_found"),
                   ("patch", 200, ""), ("patch", 404, "not_found"), ("delete", 200, ""), ("delete", 204, ""),
                   ("create", 201, "")}
        self.assertLessEqual(set(seen), allowed, seen)
        self.assertEqual(waiting(self.d), 0)
        self.d.assert_alive()

    def test_min_step_long_poll(self):
        n = self.uname()
        self.d.create(n, "sgd", params=[1.0])
        # Already there: at once.  Not there and no wait: at once with the current step.
        self.assertEqual(self.d.get("/v1/sessions/%s/params?min_step=0&wait=60" % n).body["step"], 0)
        self.assertEqual(self.d.get("/v1/sessions/%s/params?min_step=5" % n).body["step"], 0)
        self.assertEqual(self.d.get("/v1/sessions/%s/params?min_step=5&wait=1" % n).body["step"], 0)
        self.assertError(self.d.get("/v1/sessions/%s/params?min_step=1&wait=301" % n), 400, "invalid_argument")
        self.assertError(self.d.get("/v1/sessions/%s/params?min_step=x&wait=1" % n), 400, "invalid_argument")
        polls = run_threads([(lambda: self.d.get("/v1/sessions/%s/params?min_step=2&wait=120" % n))] * 8 +
                            [lambda: [self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1.0]})
                                      for _ in range(2)]])
        for p in polls[:8]:
            self.assertEqual(p.status, 200, p)
            self.assertGreaterEqual(p.body["step"], 2)

    def test_many_long_polls_hold_no_worker_thread(self):
        """64 long polls on a daemon of 4 threads: steps still go through
        and wake them all (a poll holding a thread would starve the step)."""
        n = self.uname()
        self.d.create(n, "sgd", params=[1.0])
        fns = [(lambda: self.d.get("/v1/sessions/%s/params?min_step=1&wait=120" % n, timeout=130))] * 64
        out = {}

        def stepper():
            for _ in range(500):
                if waiting(self.d) >= 64:
                    break
                time.sleep(0.01)
            return self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1.0]})
        res = run_threads(fns + [stepper])
        self.assertEqual(res[-1].status, 200)
        for p in res[:-1]:
            self.assertEqual((p.status, p.body["step"]), (200, 1))

    def test_limits(self):
        d = Daemon(flags=["--max-params", "100"])
        d.start()
        try:
            r = d.post("/v1/sessions", {"name": "a", "optimizer": "sgd", "size": 40, "aggregate": {"workers": 3}})
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.body["error"]["code"], "resource_exhausted")
            self.assertIn("--max-params", r.body["error"]["message"])
            self.assertEqual(d.post("/v1/sessions", {"name": "b", "optimizer": "sgd", "size": 40,
                                                     "aggregate": {"workers": 2}}).status, 201)
            r = d.patch("/v1/sessions/b", {"aggregate": {"workers": 3}})
            self.assertEqual(r.status, 429, r)
            self.assertEqual(d.get("/v1/sessions/b").body["aggregate"]["workers"], 2)
        finally:
            d.stop()

    def test_contributions_are_reserved_under_max_memory(self):
        d = Daemon(flags=["--max-memory", "2000000"])
        d.start()
        try:
            self.d = d
            r = d.post("/v1/sessions", {"name": "m", "optimizer": "sgd", "size": 100000, "aggregate": {"workers": 2}})
            self.assertEqual(r.status, 201, r)
            g = struct.pack("<100000d", *([0.5] * 100000))

            def send(w):
                return d.post("/v1/sessions/m/step?wait=0&return=none", g,
                              headers=dict(BIN, **{"Optd-Worker": w, "Optd-Expect-Step": "0"}))
            self.assertEqual(send("a").status, 202)
            r = send("b")
            self.assertError(r, 429, "resource_exhausted")
            self.assertEqual(self.round_of("m")["workers"], ["a"])
            # A DELETE gives the round's memory back with the session's.
            self.assertEqual(d.delete("/v1/sessions/m").status, 204)
            r = d.post("/v1/sessions", {"name": "m2", "optimizer": "sgd", "size": 200000})
            self.assertEqual(r.status, 201, r)
        finally:
            d.stop()

    def test_many_workers_with_retries_and_backups(self):
        """6 worker threads on rounds of 4 (2 backups), each retrying some
        contributions and waiting briefly on others, for 15 rounds: every
        answer is a 200, a 202 or a 409; every round reduced exactly 4;
        the step count is the number of rounds; nobody counted twice."""
        n = self.uname()
        self.make(n, workers=4, params=[0.0, 0.0], optimizer="sgd", agg={"max_staleness": 1})
        rounds = 15
        statuses = []
        lock = threading.Lock()

        def worker(i):
            rnd = random.Random(i)
            name = "w%d" % i
            while True:
                p = self.d.get("/v1/sessions/%s/params" % n).body
                if p["step"] >= rounds:
                    return
                for attempt in range(rnd.choice([1, 1, 2])):   # sometimes a retry
                    r = self.contribute(n, name, p["step"], [1.0, float(i)], wait=rnd.choice([0, 1, 5]))
                    with lock:
                        statuses.append(r.status)
                if r.status == 202:
                    self.d.get("/v1/sessions/%s/params?min_step=%d&wait=5" % (n, p["step"] + 1))
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        h = self.d.get("/v1/sessions/%s/history" % n).body["history"]
        self.assertGreaterEqual(len(h), rounds)
        self.assertEqual([x["step"] for x in h], list(range(1, len(h) + 1)))
        self.assertTrue(all(x["contributions"] == 4 for x in h), h)
        self.assertIn(200, statuses)
        self.assertLessEqual(set(statuses), {200, 202, 409}, statuses)
        # The pending round (if any) holds distinct workers only.
        r = self.round_of(n)
        self.assertEqual(len(set(r["workers"])), r["contributions"])

    def test_metrics(self):
        n = self.uname()
        self.make(n, workers=1)
        self.contribute(n, "a", 0, [1, 1, 1])
        m = self.d.get("/metrics").raw.decode()
        self.assertRegex(m, r"optd_rounds_applied_total [1-9]")
        self.assertRegex(m, r"optd_round_open_seconds_count [1-9]")
        self.assertIn("optd_requests_waiting", m)


class Stop(RoundsBase, unittest.TestCase):
    def test_sigterm_answers_waiting_requests_503(self):
        self.check(Daemon())

    def test_sigterm_answers_waiting_requests_503_thread_per_connection(self):
        self.check(Daemon(data_dir=True, flags=["--sync", "always"]))

    def check(self, d):
        self.d = d
        self.d.start()
        self.make("s", workers=3)
        self.d.create("p", "sgd", size=1)
        got = []
        ts = [threading.Thread(target=lambda: got.append(self.contribute("s", "a", 0, [1, 1, 1]))),
              threading.Thread(target=lambda: got.append(
                  self.d.get("/v1/sessions/p/params?min_step=5&wait=120")))]
        for t in ts:
            t.start()
        self.wait_contributions("s", 1)
        for _ in range(500):
            if waiting(self.d) >= 2:
                break
            time.sleep(0.01)
        self.d.stop()   # asserts exit 0 within the 5 s stop promise
        for t in ts:
            t.join(30)
        self.assertEqual(sorted(r.status for r in got), [503, 503], got)


class Timeouts(RoundsBase, unittest.TestCase):
    """A waiting request outlives --connection-timeout: neither the
    slow-request watchdog nor libmicrohttpd's idle timeout cuts it, in the
    thread-pool mode (suspended) and in the thread-per-connection mode of
    --sync always (blocked on its own thread)."""

    def check(self, **kw):
        self.d = Daemon(flags=["--connection-timeout", "1"] + kw.pop("flags", []), **kw)
        self.d.start()
        try:
            self.make("t", workers=2)
            r = self.contribute("t", "a", 0, [1, 1, 1], wait=3)
            self.assertEqual(r.status, 202, r)
            self.d.create("p", "sgd", size=1)
            r = self.d.get("/v1/sessions/p/params?min_step=1&wait=3")
            self.assertEqual((r.status, r.body["step"]), (200, 0))
            # The same connection goes on serving.
            self.assertEqual(self.d.get("/v1/sessions/t").status, 200)
        finally:
            self.d.stop()

    def test_pool_mode(self):
        self.check()

    def test_thread_per_connection_mode(self):
        self.check(data_dir=True, flags=["--sync", "always"])


class Durable(RoundsBase, unittest.TestCase):
    def tearDown(self):
        self.d.cleanup() if hasattr(self.d, "cleanup") else None

    def run_restart(self, flags, crash):
        self.d = Daemon(data_dir=True, flags=flags)
        self.d.start()
        self.make("r", workers=2, agg={"max_staleness": 2})
        res = run_threads([lambda: self.contribute("r", "w1", 0, [1.0, 2.0, 3.0], loss=0.5),
                           lambda: self.contribute("r", "w2", 0, [3.0, 2.0, 1.0], loss=1.5)])
        self.assertEqual([r.status for r in res], [200, 200])
        params = self.raw_params("r")
        self.assertEqual(self.contribute("r", "w1", 1, [5.0, 5.0, 5.0], wait=0).status, 202)
        if crash and "always" not in flags:
            time.sleep(2.0)  # --sync interval promises what is older than the interval (1 s), and one more
        if crash:
            self.d.kill9()
            self.d.start()
        else:
            self.d.restart()
        desc = self.d.get("/v1/sessions/r").body
        self.assertEqual(desc["step"], 1)
        self.assertEqual(desc["aggregate"], {"workers": 2, "reduce": "mean", "max_staleness": 2})
        self.assertEqual(desc["round"], {"step": 1, "contributions": 0, "workers": []})   # the pending one is gone
        self.assertEqual(self.raw_params("r"), params)
        h = self.d.get("/v1/sessions/r/history").body["history"]
        self.assertEqual([(x["step"], x["contributions"], x["loss"]) for x in h], [(1, 2, 1.0)])
        # Retries of what was applied are refused (never counted twice)...
        for w in ("w1", "w2"):
            self.assertError(self.contribute("r", w, 0, [1, 1, 1], wait=0), 409, "step_mismatch")
        # ...and the retries of the lost pending contribution rebuild the round.
        self.assertEqual(self.contribute("r", "w1", 1, [5.0, 5.0, 5.0], wait=0).status, 202)
        r = self.contribute("r", "w2", 1, [1.0, 1.0, 1.0])
        self.assertEqual((r.status, r.body["step"]), (200, 2))
        self.d.stop()

    def test_restart_with_a_round_pending(self):
        self.run_restart([], crash=False)

    def test_crash_with_a_round_pending_sync_interval(self):
        self.run_restart(["--snapshot-interval", "1"], crash=True)

    def test_sync_always_applied_round_survives_kill9(self):
        self.run_restart(["--sync", "always"], crash=True)


class ClosedClients(RoundsBase, unittest.TestCase):
    """A client that closes its connection while its request waits (a long
    poll, a contribution) frees its place in --max-connections: the
    daemon sees the close (its probe of waiting sockets), ends the wait
    and closes the connection, instead of keeping it in CLOSE_WAIT until
    the wait's end (300 s here).  So after N waiting clients closed, N
    new connections are served with a limit below 2N, and a contribution
    whose client left stays in its round.  Both server modes."""
    N = 40

    def tearDown(self):
        self.d.stop()

    def test_closed_waiters_free_their_connections(self):
        self.check(Daemon(flags=["--max-connections", "50"]))

    def test_closed_waiters_free_their_connections_thread_per_connection(self):
        self.check(Daemon(data_dir=True, flags=["--sync", "always", "--max-connections", "50"]))

    def until(self, cond, what):
        for _ in range(3000):  # a condition, not a time
            if cond():
                return
            time.sleep(0.01)
        self.fail(what)

    def check(self, d):
        self.d = d
        d.start()
        self.make("s", workers=2)
        d.create("p", "sgd", size=1)
        body = b'{"gradient":[1,2,3],"worker":"gone","step":0}'
        contribution = (b"POST /v1/sessions/s/step?wait=300 HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        poll = b"GET /v1/sessions/p/params?min_step=1000000&wait=300 HTTP/1.1\r\nHost: x\r\n\r\n"
        for rnd in range(3):  # each time N more: without the fix the second cannot connect
            socks = [d.raw_socket() for _ in range(self.N)]
            for i, s in enumerate(socks):
                s.sendall(contribution if rnd == 0 and i == 0 else poll)
            self.until(lambda: waiting(d) == self.N, "the requests never all waited")
            for s in socks:
                s.close()
            self.until(lambda: waiting(d) == 0, "closed clients' requests still wait")
        # N + N connections at once, more than the limit of 50: served only
        # if the closed ones are gone.
        socks = [d.raw_socket() for _ in range(self.N)]
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks:
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))
            s.close()
        # The contribution stays in its round; its request is gone.
        r = self.round_of("s")
        self.assertEqual((r["contributions"], r["workers"]), (1, ["gone"]), r)
        r = self.contribute("s", "other", 0, [3, 2, 1])
        self.assertEqual((r.status, r.body["step"]), (200, 1), r)
        d.assert_alive()


if __name__ == "__main__":
    unittest.main()
