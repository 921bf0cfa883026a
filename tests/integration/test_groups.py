"""Parameter groups (API.md 1.1) and PUT .../params over HTTP: a grouped
session steps exactly as one session per group would (the same bits), with
clipping over all groups and the schedule on every group's lr; PATCH of one
group or of all; forks, state export/import and restarts carry the groups and
what each group keeps of its own; PUT .../params replaces the parameters and
keeps the state and the step, in JSON and binary, durably."""

import math
import random
import unittest

from harness import Daemon, DaemonTestCase
import optref

BIN = {"Content-Type": "application/octet-stream"}


def strip(doc, *keys):
    return {k: v for k, v in doc.items() if k not in keys}


class Create:
    def create(self, name, optimizer, **fields):
        """POST /v1/sessions; the Response, whatever its status."""
        return self.d.post("/v1/sessions", dict(name=name, optimizer=optimizer, **fields))


class Groups(Create, DaemonTestCase):
    def setUp(self):
        self.rnd = random.Random(self._testMethodName)

    def vec(self, n):
        return [self.rnd.uniform(-1, 1) for _ in range(n)]

    def step(self, name, g, **body):
        r = self.d.post("/v1/sessions/%s/step" % name, dict(gradient=g, **body))
        self.assertEqual(r.status, 200, r)
        return r.body["params"]

    def test_descriptor_lists_every_value_of_every_group(self):
        n = self.uname()
        r = self.create(n, "adamw", params=self.vec(5), hyperparameters={"lr": 0.01},
                          groups=[{"size": 3}, {"size": 2, "hyperparameters": {"weight_decay": 0.0}}])
        self.assertEqual(r.status, 201, r)
        g = r.body["groups"]
        self.assertEqual([x["size"] for x in g], [3, 2])
        self.assertEqual(g[0]["hyperparameters"], r.body["hyperparameters"])
        self.assertEqual(g[1]["hyperparameters"], dict(r.body["hyperparameters"], weight_decay=0.0))
        self.assertEqual(g[0]["hyperparameters"]["lr"], 0.01)
        plain = self.create(self.uname(), "adam", size=2)
        self.assertIsNone(plain.body["groups"])

    def test_refused_groups_change_nothing(self):
        n = self.uname()
        bad = [
            [{"size": 2}, {"size": 2}],                                    # sums to 4 of 5
            [{"size": 5}, {"size": 0}],
            [],
            [{"size": 1}] * 1025,
            [{"size": 5, "hyperparameters": {"lr": -1}}],
            [{"size": 5, "hyperparameters": {"nope": 1}}],
            [{"size": 5, "extra": 1}],
            [{"hyperparameters": {}}],                                    # no size at create
            "two",
        ]
        for groups in bad:
            with self.subTest(groups=str(groups)[:60]):
                r = self.create(n, "adam", params=self.vec(5), groups=groups)
                self.assertError(r, 400, "invalid_argument")
                self.assertError(self.d.get("/v1/sessions/" + n), 404, "not_found")
        r = self.create(n, "adam", params=self.vec(5), groups=[{"size": 5, "hyperparameters": {"lr": -1}}])
        self.assertIn("groups[0]", r.body["error"]["message"])

    def test_each_group_steps_as_a_session_of_its_own(self):
        """Without clipping, a grouped session gives the bits of one session
        per group (same optimizer, that group's values, the same schedule)."""
        for opt, hp0, hp1 in (("adamw", {"lr": 0.01, "weight_decay": 0.1}, {"weight_decay": 0.0, "lr": 0.03}),
                              ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, {"momentum": 0.0, "nesterov": False}),
                              ("nadam", {"lr": 0.01}, {"momentum_decay": 0.01, "betas": [0.8, 0.99]}),
                              ("rmsprop", {"lr": 0.01, "centered": True}, {"alpha": 0.9})):
            with self.subTest(opt=opt):
                p = self.vec(7)
                sched = {"type": "cosine", "t_max": 20, "eta_min": 0.001, "warmup_steps": 3}
                g, a, b = self.uname(opt), self.uname(opt), self.uname(opt)
                self.assertEqual(self.create(g, opt, params=p, hyperparameters=hp0, schedule=sched,
                                               groups=[{"size": 4}, {"size": 3, "hyperparameters": hp1}]).status, 201)
                self.assertEqual(self.create(a, opt, params=p[:4], hyperparameters=hp0, schedule=sched).status, 201)
                self.assertEqual(self.create(b, opt, params=p[4:], hyperparameters=dict(hp0, **hp1),
                                               schedule=sched).status, 201)
                for _ in range(25):
                    grad = self.vec(7)
                    got = self.step(g, grad)
                    want = self.step(a, grad[:4]) + self.step(b, grad[4:])
                    self.assertEqual(got, want)
                ha = self.d.get("/v1/sessions/%s/history?limit=1" % a).body["history"][0]
                hg = self.d.get("/v1/sessions/%s/history?limit=1" % g).body["history"][0]
                self.assertEqual(hg["lr"], ha["lr"])

    def test_clipping_uses_the_norm_over_all_groups(self):
        p = self.vec(6)
        g, a, b = self.uname(), self.uname(), self.uname()
        self.create(g, "sgd", params=p, hyperparameters={"lr": 0.1}, max_grad_norm=0.5,
                      groups=[{"size": 2}, {"size": 4, "hyperparameters": {"lr": 0.2}}])
        self.create(a, "sgd", params=p[:2], hyperparameters={"lr": 0.1})
        self.create(b, "sgd", params=p[2:], hyperparameters={"lr": 0.2})
        grad = [3.0, -4.0, 1.0, 2.0, -2.0, 0.5]
        norm = math.sqrt(sum(x * x for x in grad))
        coef = 0.5 / (norm + 1e-6)
        clipped = [x * coef for x in grad]
        got = self.step(g, grad)
        want = self.step(a, clipped[:2]) + self.step(b, clipped[2:])
        self.assertEqual(got, want)

    def test_patch_one_group_or_all(self):
        n = self.uname()
        self.create(n, "adam", size=4, hyperparameters={"lr": 0.01},
                      groups=[{"size": 1}, {"size": 3, "hyperparameters": {"eps": 1e-6}}])
        r = self.d.patch("/v1/sessions/" + n, {"groups": [{}, {"hyperparameters": {"lr": 0.5}}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["hyperparameters"]["lr"] for x in r.body["groups"]], [0.01, 0.5])
        r = self.d.patch("/v1/sessions/" + n, {"hyperparameters": {"amsgrad": True}})
        self.assertEqual([x["hyperparameters"]["amsgrad"] for x in r.body["groups"]], [True, True])
        # Other fields leave the groups as they are (labels are replaced whole).
        r = self.d.patch("/v1/sessions/" + n, {"labels": {"k": "v"}, "max_grad_norm": 1.0})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["size"] for x in r.body["groups"]], [1, 3])
        self.assertEqual(r.body["groups"][1]["hyperparameters"]["lr"], 0.5)
        r = self.d.patch("/v1/sessions/" + n, {"groups": [{"size": 1}, {"size": 3, "hyperparameters": {"lr": 0.25}}]})
        self.assertEqual([x["hyperparameters"]["lr"] for x in r.body["groups"]], [0.01, 0.25])
        self.assertEqual(r.body["groups"][1]["hyperparameters"]["eps"], 1e-6)
        before = self.d.get("/v1/sessions/" + n).body
        for body in ({"groups": [{}]}, {"groups": [{}, {"size": 2}]}, {"groups": [{}, {"hyperparameters": {"lr": -1}}]},
                     {"groups": [{"size": 1}, {"size": 3}, {"size": 1}]}):
            with self.subTest(body=body):
                self.assertError(self.d.patch("/v1/sessions/" + n, body), 400, "invalid_argument")
        self.assertEqual(strip(self.d.get("/v1/sessions/" + n).body, "updated_at"), strip(before, "updated_at"))
        plain = self.uname()
        self.create(plain, "adam", size=2)
        self.assertError(self.d.patch("/v1/sessions/" + plain, {"groups": [{"size": 2}]}), 400, "invalid_argument")

    def test_sgd_group_momentum_started_later_starts_as_the_gradient(self):
        """PyTorch keeps a momentum buffer per parameter: a group that turns
        momentum on later starts its buffer as g, while the other group's
        buffer goes on.  Checked across a fork and a state round trip."""
        p = self.vec(4)
        g, a, b = self.uname(), self.uname(), self.uname()
        self.create(g, "sgd", params=p, hyperparameters={"lr": 0.1},
                      groups=[{"size": 2, "hyperparameters": {"momentum": 0.9}}, {"size": 2}])
        self.create(a, "sgd", params=p[:2], hyperparameters={"lr": 0.1, "momentum": 0.9})
        self.create(b, "sgd", params=p[2:], hyperparameters={"lr": 0.1})
        for _ in range(3):
            grad = self.vec(4)
            self.assertEqual(self.step(g, grad), self.step(a, grad[:2]) + self.step(b, grad[2:]))
        doc = self.d.get("/v1/sessions/%s/state" % g).body
        g2 = self.uname()
        self.assertEqual(self.d.put("/v1/sessions/%s/state" % g2, doc).status, 201)
        g3 = self.uname()
        self.assertEqual(self.d.post("/v1/sessions", {"name": g3, "from": g}).status, 201)
        patch = {"groups": [{}, {"hyperparameters": {"momentum": 0.5, "dampening": 0.3}}]}
        for s in (g, g2, g3):
            self.assertEqual(self.d.patch("/v1/sessions/" + s, patch).status, 200)
        self.d.patch("/v1/sessions/" + b, {"hyperparameters": {"momentum": 0.5, "dampening": 0.3}})
        for _ in range(3):
            grad = self.vec(4)
            want = self.step(a, grad[:2]) + self.step(b, grad[2:])
            for s in (g, g2, g3):
                self.assertEqual(self.step(s, grad), want, s)

    def test_state_round_trip_and_fork_carry_groups(self):
        n = self.uname()
        self.create(n, "nadam", params=self.vec(5), hyperparameters={"lr": 0.01},
                      groups=[{"size": 2, "hyperparameters": {"momentum_decay": 0.01}}, {"size": 3}])
        for _ in range(4):
            self.step(n, self.vec(5))
        doc = self.d.get("/v1/sessions/%s/state" % n).body
        mu = doc["state"]["mu_product"]
        self.assertEqual(len(mu), 2)
        self.assertNotEqual(mu[0], mu[1])
        m = self.uname()
        self.assertEqual(self.d.put("/v1/sessions/%s/state" % m, doc).status, 201)
        again = self.d.get("/v1/sessions/%s/state" % m).body
        skip = ("name", "created_at", "updated_at")
        self.assertEqual(strip(again, *skip), strip(doc, *skip))
        f = self.uname()
        r = self.d.post("/v1/sessions", {"name": f, "from": n, "hyperparameters": {"lr": 0.5}})
        self.assertEqual(r.status, 201, r)
        self.assertEqual([x["hyperparameters"]["lr"] for x in r.body["groups"]], [0.5, 0.5])
        self.assertEqual(self.d.get("/v1/sessions/%s/state" % f).body["state"], doc["state"])
        grad = self.vec(5)
        self.assertEqual(self.step(m, grad), self.step(n, grad))


class PutParams(Create, DaemonTestCase):
    def test_json_and_binary_keep_state_and_step(self):
        for dtype in ("float64", "float32"):
            with self.subTest(dtype=dtype):
                n, twin = self.uname(), self.uname()
                p = [0.5, -1.0, 2.0]
                for s in (n, twin):
                    self.create(s, "adam", params=p, dtype=dtype, hyperparameters={"lr": 0.1})
                    self.d.post("/v1/sessions/%s/step" % s, {"gradient": [1.0, 2.0, 3.0]})
                new = [1.5, 0.25, -3.0]
                r = self.d.put("/v1/sessions/%s/params" % n, {"params": new, "step": 1})
                self.assertEqual((r.status, r.body), (200, {"step": 1}))
                self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body, {"step": 1, "params": new})
                r = self.d.put("/v1/sessions/%s/params" % n, optref.pack(new, dtype),
                               headers=dict(BIN, **{"Optd-Expect-Step": "1", "Optd-Dtype": dtype}))
                self.assertEqual((r.status, r.body), (200, {"step": 1}))
                # The moments stayed: the next step equals a twin whose
                # parameters were those from the start of its second step.
                st = self.d.get("/v1/sessions/%s/state" % n).body
                self.assertEqual(st["state"], self.d.get("/v1/sessions/%s/state" % twin).body["state"])
                self.assertEqual(st["step"], 1)

    def test_refusals_change_nothing(self):
        n = self.uname()
        self.create(n, "sgd", params=[1.0, 2.0])
        cases = [
            ({"params": [1.0]}, None, 400, "size_mismatch"),
            ({"params": [1.0, 2.0], "step": 3}, None, 409, "step_mismatch"),
            ({"params": [1.0, 2.0], "extra": 1}, None, 400, "invalid_argument"),
            ({}, None, 400, "invalid_argument"),
            (optref.pack([1.0], "float64"), BIN, 400, "size_mismatch"),
            (optref.pack([1.0, float("nan")], "float64"), BIN, 400, "non_finite"),
            (optref.pack([1.0, 2.0], "float64"), dict(BIN, **{"Optd-Expect-Step": "4"}), 409, "step_mismatch"),
            (optref.pack([1.0, 2.0], "float64"), dict(BIN, **{"Optd-Dtype": "float32"}), 400, "invalid_argument"),
        ]
        for body, headers, status, code in cases:
            with self.subTest(body=body, headers=headers):
                self.assertError(self.d.put("/v1/sessions/%s/params" % n, body, headers=headers), status, code)
                self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body["params"], [1.0, 2.0])
        self.assertError(self.d.put("/v1/sessions/nope/params", {"params": [1.0]}), 404, "not_found")

    def test_create_with_size_then_binary_params(self):
        n = self.uname()
        vals = [float(i) / 7 for i in range(1000)]
        self.create(n, "adamw", size=1000, dtype="float32",
                      groups=[{"size": 600}, {"size": 400, "hyperparameters": {"weight_decay": 0}}])
        r = self.d.put("/v1/sessions/%s/params" % n, optref.pack(vals, "float32"), headers=BIN)
        self.assertEqual(r.status, 200, r)
        got = self.d.get("/v1/sessions/%s/params" % n).body["params"]
        self.assertEqual([optref.f32(x) for x in got], [optref.f32(v) for v in vals])


class Durable(unittest.TestCase):
    def test_groups_and_params_survive_kill_and_restart(self):
        for mode in ("always", "interval"):
            with self.subTest(mode=mode):
                d = Daemon(flags=["--sync", mode], data_dir=True)
                twin = Daemon()
                try:
                    d.start()
                    twin.start()
                    for x in (d, twin):
                        x.create("g", "sgd", params=[1.0, 2.0, 3.0], hyperparameters={"lr": 0.1},
                                 groups=[{"size": 1, "hyperparameters": {"momentum": 0.9}}, {"size": 2}])
                        x.post("/v1/sessions/g/step", {"gradient": [1.0, 1.0, 1.0]})
                        x.put("/v1/sessions/g/params", {"params": [4.0, 5.0, 6.0]})
                    if mode == "always":
                        d.kill9()
                    else:
                        d.stop()
                    d.start()
                    skip = ("created_at", "updated_at")
                    self.assertEqual(strip(d.get("/v1/sessions/g/state").body, *skip),
                                     strip(twin.get("/v1/sessions/g/state").body, *skip))
                    for x in (d, twin):
                        x.patch("/v1/sessions/g", {"groups": [{}, {"hyperparameters": {"momentum": 0.5,
                                                                                      "dampening": 0.5}}]})
                    for g in ([0.5, -1.0, 2.0], [1.0, 0.25, -0.5]):
                        self.assertEqual(d.post("/v1/sessions/g/step", {"gradient": g}).body,
                                         twin.post("/v1/sessions/g/step", {"gradient": g}).body)
                    d.stop()
                    twin.stop()
                finally:
                    d.cleanup()
                    twin.cleanup()


if __name__ == "__main__":
    unittest.main()
