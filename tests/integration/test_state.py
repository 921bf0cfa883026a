"""State export/import round trips and forks (create with `from`)."""

import json
import random
import unittest

from harness import DaemonTestCase
import optref

# Options that make every optimizer keep every buffer it can have.
FULL = {
    "sgd": ({"momentum": 0.9, "lr": 0.01}, {"momentum_buffer"}),
    "adagrad": ({"initial_accumulator_value": 0.1}, {"sum"}),
    "rmsprop": ({"centered": True, "momentum": 0.5}, {"square_avg", "grad_avg", "momentum_buffer"}),
    "adam": ({"amsgrad": True}, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    "adamw": ({"amsgrad": True}, {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    "adamax": ({}, {"exp_avg", "exp_inf"}),
    "nadam": ({}, {"exp_avg", "exp_avg_sq", "mu_product"}),
    "radam": ({}, {"exp_avg", "exp_avg_sq"}),
    "adadelta": ({}, {"square_avg", "acc_delta"}),
    "lion": ({}, {"exp_avg"}),
}
PLAIN = {
    "sgd": set(), "rmsprop": {"square_avg"}, "adam": {"exp_avg", "exp_avg_sq"},
}


def strip(doc, *keys):
    return {k: v for k, v in doc.items() if k not in keys}


class StateRoundTrip(DaemonTestCase):
    def setUp(self):
        self.rnd = random.Random(self._testMethodName)

    def vec(self, n, dtype):
        v = [self.rnd.uniform(-1, 1) for _ in range(n)]
        return [optref.f32(x) for x in v] if dtype == "float32" else v

    def step(self, name, g):
        r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": g})
        self.assertEqual(r.status, 200, r)
        return r.body

    def test_export_import_one_more_step_identical(self):
        for dtype in ("float64", "float32"):
            for opt, (hp, keys) in FULL.items():
                with self.subTest(optimizer=opt, dtype=dtype):
                    a, b = self.uname(opt + "a"), self.uname(opt + "b")
                    self.d.create(a, opt, params=self.vec(6, dtype), dtype=dtype, hyperparameters=hp,
                                  schedule={"type": "exponential", "gamma": 0.99}, max_grad_norm=5.0,
                                  labels={"k": opt}, ttl_seconds=3600)
                    for _ in range(4):
                        self.step(a, self.vec(6, dtype))
                    doc = self.d.state(a)
                    self.assertEqual(doc["step"], 4)
                    self.assertEqual(set(doc["state"]), keys)
                    for k, v in doc["state"].items():
                        if k == "mu_product":
                            self.assertIsInstance(v, float)
                        else:
                            self.assertEqual(len(v), 6, k)
                    self.assertEqual(len(doc["params"]), 6)
                    # the descriptor part equals GET of the descriptor
                    desc = self.d.get("/v1/sessions/" + a).body
                    self.assertEqual(strip(doc, "params", "state"), desc)
                    r = self.d.put("/v1/sessions/%s/state" % b, doc)
                    self.assertEqual(r.status, 201, r)
                    self.assertEqual(r.body["name"], b)
                    got = self.d.state(b)
                    self.assertEqual(got["name"], b)
                    self.assertEqual(strip(got, "name", "updated_at"), strip(doc, "name", "updated_at"))
                    g = self.vec(6, dtype)
                    ra, rb = self.step(a, g), self.step(b, g)
                    self.assertEqual(ra, rb)
                    self.assertEqual(ra["step"], 5)
                    sa, sb = self.d.state(a), self.d.state(b)
                    self.assertEqual(sa["state"], sb["state"])
                    self.assertEqual(sa["params"], sb["params"])

    def test_plain_options_have_only_their_buffers(self):
        for opt, keys in PLAIN.items():
            name = self.uname(opt)
            self.d.create(name, opt, params=self.vec(3, "float64"))
            self.step(name, self.vec(3, "float64"))
            self.assertEqual(set(self.d.state(name)["state"]), keys, opt)

    def test_import_replaces_with_200(self):
        a, c = self.uname("a"), self.uname("c")
        self.d.create(a, "nadam", params=self.vec(4, "float64"))
        for _ in range(3):
            self.step(a, self.vec(4, "float64"))
        self.d.create(c, "sgd", size=9, dtype="float32", labels={"x": "y"})
        doc = self.d.state(a)
        r = self.d.put("/v1/sessions/%s/state" % c, doc)
        self.assertEqual(r.status, 200, r)
        got = self.d.state(c)
        self.assertEqual(strip(got, "name", "updated_at"), strip(doc, "name", "updated_at"))
        self.assertEqual(got["optimizer"], "nadam")
        self.assertEqual(got["size"], 4)
        # importing the document it returned changes nothing
        r = self.d.put("/v1/sessions/%s/state" % c, got)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(strip(self.d.state(c), "updated_at"), strip(got, "updated_at"))

    def test_name_in_url_wins(self):
        a, b = self.uname("a"), self.uname("b")
        self.d.create(a, "adam")
        doc = self.d.state(a)
        r = self.d.put("/v1/sessions/%s/state" % b, doc)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.d.get("/v1/sessions/" + b).body["name"], b)
        self.assertEqual(self.d.get("/v1/sessions/" + a).body["name"], a)

    def test_float64_state_values_identical(self):
        a, b = self.uname("a"), self.uname("b")
        self.d.create(a, "adam", params=[1 / 3, 2 / 3, 1e-300, 123456789.123456789])
        self.step(a, [1 / 7, 1e-310, -2 / 9, 5.0])
        doc = self.d.state(a)
        self.d.put("/v1/sessions/%s/state" % b, doc)
        d2 = self.d.state(b)
        self.assertEqual(d2["params"], doc["params"])
        self.assertEqual(d2["state"], doc["state"])
        raw_a = self.d.get("/v1/sessions/%s/params" % a, headers={"Accept": "application/octet-stream"}).raw
        raw_b = self.d.get("/v1/sessions/%s/params" % b, headers={"Accept": "application/octet-stream"}).raw
        self.assertEqual(raw_a, raw_b)


class ImportAsTheWholeDocumentSays(DaemonTestCase):
    """The import reads "params" and the state's arrays straight from the
    text and the rest with Jansson; whatever that cannot vouch for (an
    error, a repeated key, an escaped name) is read again whole, so the
    answer is the one the whole document gives."""

    @classmethod
    def prepare(cls):
        cls.d.create("src", "adam", params=[0.5, -1.0, 2.0])
        cls.d.post("/v1/sessions/src/step", {"gradient": [0.1, 0.2, -0.3]})
        cls.doc = cls.d.state("src")
        cls.text = json.dumps(cls.doc)

    def put(self, text):
        name = self.uname("imp")
        r = self.d.put("/v1/sessions/%s/state" % name, text.encode(),
                       headers={"Content-Type": "application/json"})
        return name, r

    def refused(self, text, code, words):
        name, r = self.put(text)
        self.assertError(r, 400, code)
        self.assertIn(words, r.body["error"]["message"])
        self.assertEqual(self.d.get("/v1/sessions/" + name).status, 404)

    def test_errors_in_the_arrays(self):
        avg = json.dumps(self.doc["state"]["exp_avg"])
        self.refused(self.text.replace(avg, '[0.1, "x", 0.3]'), "invalid_argument",
                     "'state.exp_avg'[1] is not a number")
        self.refused(self.text.replace(avg, "[0.1, 0.2]"), "size_mismatch", "'state.exp_avg' has 2 elements")
        self.refused(self.text.replace('"exp_avg":', '"foo": [1, 2, 3], "exp_avg":'), "invalid_argument",
                     "adam keeps no state 'foo'")
        bad = self.text.replace(avg, "[0.1, 0.2, }]")
        name, r = self.put(bad)
        self.assertError(r, 400, "invalid_json")
        self.assertIn("column %d)" % (bad.index("}]") + 1), r.body["error"]["message"])

    def test_an_array_where_none_belongs(self):
        self.refused(self.text.replace('"ttl_seconds": null', '"ttl_seconds": [1]'), "invalid_argument",
                     "ttl_seconds")

    def test_repeated_keys_are_refused(self):
        # API.md 1.1: a repeated key, in "state" or at the top, is 400
        # invalid_json naming it (in 1.0 the last one won), whichever of
        # the two is the array the fast path reads.
        state = json.dumps(self.doc["state"])
        nulls = json.dumps({k: None for k in self.doc["state"]})
        self.refused(self.text.replace('"state": ' + state, '"state": %s, "state": %s' % (state, nulls)),
                     "invalid_json", '"state"')
        self.refused(self.text.replace('"params": ', '"params": [7.0, 8.0, 9.0], "params": ', 1),
                     "invalid_json", '"params"')
        self.refused(self.text.replace('"params": ', '"params": [7.0, 8.0, 9.0], "params": ', 1)
                     .replace('"params": [7.0, 8.0, 9.0], "params": ' + json.dumps(self.doc["params"]),
                              '"params": %s, "params": [7.0, 8.0, 9.0]' % json.dumps(self.doc["params"])),
                     "invalid_json", '"params"')
        exp_avg = json.dumps(self.doc["state"]["exp_avg"])
        self.refused(self.text.replace('"exp_avg": ' + exp_avg, '"exp_avg": %s, "exp_avg": %s' % (exp_avg, exp_avg)),
                     "invalid_json", '"exp_avg"')

    def test_escaped_names(self):
        text = self.text.replace('"params":', '"p\\u0061rams":').replace('"exp_avg":', '"exp\\u005favg":')
        self.assertIn("\\u005f", text)
        name, r = self.put(text)
        self.assertIn(r.status, (200, 201), r)
        got = self.d.state(name)
        self.assertEqual(got["params"], self.doc["params"])
        self.assertEqual(got["state"], self.doc["state"])


class Fork(DaemonTestCase):
    def test_fork_copies_everything_then_steps_identically(self):
        for dtype in ("float64", "float32"):
            a, b = self.uname("src" + dtype), self.uname("fork" + dtype)
            self.d.create(a, "rmsprop", params=[0.5, -0.25, 2.0], dtype=dtype,
                          hyperparameters={"centered": True, "momentum": 0.9, "lr": 0.05},
                          schedule={"type": "step", "step_size": 3, "gamma": 0.5}, max_grad_norm=2.0,
                          labels={"who": "src"}, ttl_seconds=900)
            for g in ([0.1, 0.2, -0.3], [1.0, -2.0, 0.5], [0.25, 0.25, 0.25]):
                self.d.post("/v1/sessions/%s/step" % a, {"gradient": g, "loss": 1.0})
            src = self.d.state(a)
            r = self.d.post("/v1/sessions", {"name": b, "from": a})
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.headers.get("Location"), "/v1/sessions/" + b)
            d = r.body
            for k in ("optimizer", "dtype", "size", "step", "hyperparameters", "schedule", "max_grad_norm"):
                self.assertEqual(d[k], src[k], k)
            self.assertEqual(d["labels"], {})
            self.assertIsNone(d["ttl_seconds"])
            fork = self.d.state(b)
            self.assertEqual(fork["params"], src["params"])
            self.assertEqual(fork["state"], src["state"])
            self.assertEqual(self.d.get("/v1/sessions/%s/history" % b).body, {"history": []})
            self.assertEqual(len(self.d.get("/v1/sessions/%s/history" % a).body["history"]), 3)
            g = [0.3, -0.1, 0.2]
            ra = self.d.post("/v1/sessions/%s/step" % a, {"gradient": g})
            rb = self.d.post("/v1/sessions/%s/step" % b, {"gradient": g})
            self.assertEqual(ra.body, rb.body)
            self.assertEqual(rb.body["step"], 4)
            self.assertEqual(self.d.state(a)["state"], self.d.state(b)["state"])

    def test_fork_overrides_key_by_key(self):
        a, b = self.uname("src"), self.uname("fork")
        self.d.create(a, "adam", hyperparameters={"lr": 0.01, "eps": 1e-6, "amsgrad": True},
                      schedule={"type": "cosine", "t_max": 100}, max_grad_norm=1.0,
                      labels={"a": "1"}, ttl_seconds=500)
        self.d.post("/v1/sessions/%s/step" % a, {"gradient": [0.1, 0.2, 0.3]})
        r = self.d.post("/v1/sessions", {"name": b, "from": a, "optimizer": "adam", "dtype": "float64",
                                         "hyperparameters": {"lr": 0.02},
                                         "schedule": {"type": "exponential", "gamma": 0.5},
                                         "max_grad_norm": 3.0, "labels": {"b": "2"}, "ttl_seconds": 60})
        self.assertEqual(r.status, 201, r)
        hp = r.body["hyperparameters"]
        self.assertEqual(hp["lr"], 0.02)
        self.assertEqual(hp["eps"], 1e-6)
        self.assertIs(hp["amsgrad"], True)
        self.assertEqual(hp["betas"], [0.9, 0.999])
        self.assertEqual(r.body["schedule"]["type"], "exponential")
        self.assertEqual(r.body["schedule"]["gamma"], 0.5)
        self.assertNotIn("t_max", r.body["schedule"])
        self.assertEqual(r.body["max_grad_norm"], 3.0)
        self.assertEqual(r.body["labels"], {"b": "2"})
        self.assertEqual(r.body["ttl_seconds"], 60)
        self.assertEqual(r.body["step"], 1)
        # the source is untouched
        src = self.d.get("/v1/sessions/" + a).body
        self.assertEqual(src["hyperparameters"]["lr"], 0.01)
        self.assertEqual(src["schedule"]["type"], "cosine")
        self.assertEqual(src["labels"], {"a": "1"})
        # the override is used from the next step on, with the copied moments
        sa = self.d.state(a)
        self.assertEqual(self.d.state(b)["state"], sa["state"])

    def test_fork_via_put_create(self):
        a, b = self.uname("src"), self.uname("fork")
        self.d.create(a, "lion", params=[1.0, 2.0])
        self.d.post("/v1/sessions/%s/step" % a, {"gradient": [0.5, -0.5]})
        r = self.d.put("/v1/sessions/" + b, {"from": a})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.d.state(b)["params"], self.d.state(a)["params"])
        self.assertEqual(self.d.state(b)["state"], self.d.state(a)["state"])


if __name__ == "__main__":
    unittest.main()
