"""Whole trajectories over HTTP against the PyTorch fixtures
(tests/fixtures/optim/*.json, format in tests/fixtures/README.md): create
with params0/hyperparameters/schedule/max_grad_norm, PATCH the fixture's
mid-run changes before their step, post every gradient, and compare the
params of every step (and the history's lr, and the final optimizer state)
within OPTIMIZERS.md's tolerance.  Every third case steps with binary bodies."""

import glob
import json
import os
import unittest

from harness import DaemonTestCase
import optref

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "fixtures", "optim", "*.json")))
BIN = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def close(dtype, got, want):
    return optref.close64(got, want) if dtype == "float64" else optref.close32(got, want)


class Trajectories(DaemonTestCase):
    FLAGS = ["--history", "1000"]

    def test_fixtures_exist(self):
        self.assertGreaterEqual(len(FIXTURES), 20, "no PyTorch fixtures found")
        names = {json.load(open(f))["optimizer"] for f in FIXTURES}
        self.assertEqual(names, {"sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam",
                                 "radam", "adadelta", "lion", "sparse_adam"})

    def run_case(self, path, binary):
        fx = json.load(open(path))
        dtype = fx["dtype"]
        name = "traj-" + fx["name"] + ("-bin" if binary else "")
        body = {"name": name, "optimizer": fx["optimizer"], "dtype": dtype,
                "hyperparameters": fx["hyperparameters"], "params": fx["params0"]}
        if fx.get("schedule") is not None:
            body["schedule"] = fx["schedule"]
        if fx.get("max_grad_norm") is not None:
            body["max_grad_norm"] = fx["max_grad_norm"]
        if fx.get("groups") is not None:  # parameter groups (API.md 1.1)
            body["groups"] = fx["groups"]
        r = self.d.post("/v1/sessions", body)
        self.assertEqual(r.status, 201, r)
        patches = {}
        for p in fx.get("patches", []):
            # A PATCH body as the fixture gives it: hyperparameters for all
            # (groups), and/or "groups" with one entry per group.
            patches.setdefault(p["before_step"], {}).update(
                {k: p[k] for k in ("hyperparameters", "groups") if k in p})
        for k, st in enumerate(fx["steps"], 1):
            if k in patches:
                r = self.d.patch("/v1/sessions/" + name, patches[k])
                self.assertEqual(r.status, 200, r)
                for hk, hv in patches[k].get("hyperparameters", {}).items():
                    self.assertEqual(r.body["hyperparameters"][hk], hv, (name, hk))
                    for g in r.body["groups"] or []:
                        self.assertEqual(g["hyperparameters"][hk], hv, (name, hk))
                for g, pg in zip(r.body["groups"] or [], patches[k].get("groups", [])):
                    for hk, hv in pg.get("hyperparameters", {}).items():
                        self.assertEqual(g["hyperparameters"][hk], hv, (name, hk))
            if binary:
                r = self.d.post("/v1/sessions/%s/step" % name, optref.pack(st["grad"], dtype),
                                headers=dict(BIN, **{"Optd-Expect-Step": str(k - 1)}))
                self.assertEqual(r.status, 200, (name, k, r))
                self.assertEqual(r.headers.get("Optd-Step"), str(k))
                got = optref.unpack(r.raw, dtype)
            else:
                r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": st["grad"], "step": k - 1})
                self.assertEqual(r.status, 200, (name, k, r))
                self.assertEqual(r.body["step"], k)
                got = r.body["params"]
            want = st["params"]
            self.assertEqual(len(got), len(want))
            for i, (g, w) in enumerate(zip(got, want)):
                if not close(dtype, g, w):
                    self.fail("%s step %d index %d: got %r, PyTorch %r (binary=%s)"
                              % (fx["name"], k, i, g, w, binary))
        hist = self.d.get("/v1/sessions/%s/history" % name).body["history"]
        self.assertEqual(len(hist), len(fx["steps"]))
        for e, st in zip(hist, fx["steps"]):
            self.assertTrue(optref.close64(e["lr"], st["lr"]), (fx["name"], e, st["lr"]))
        state = self.d.state(name)
        self.assertEqual(set(state["state"]), set(fx["state"]), fx["name"])
        for key, want in fx["state"].items():
            got = state["state"][key]
            if key == "mu_product":
                self.assertTrue(close(dtype, got, want), (fx["name"], key, got, want))
            else:
                for i, (g, w) in enumerate(zip(got, want)):
                    self.assertTrue(close(dtype, g, w), (fx["name"], key, i, g, w))
        self.assertEqual(self.d.delete("/v1/sessions/" + name).status, 204)

    def test_every_fixture_over_http(self):
        for i, path in enumerate(FIXTURES):
            with self.subTest(fixture=os.path.basename(path)):
                self.run_case(path, binary=(i % 3 == 2))


if __name__ == "__main__":
    unittest.main()
