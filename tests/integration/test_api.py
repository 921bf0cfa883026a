"""Every endpoint of API.md on its happy path: bodies, codes and headers."""

import re
import unittest

from harness import DaemonTestCase
import optref

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

DEFAULTS = {
    "sgd": {"lr": 0.001, "momentum": 0, "dampening": 0, "weight_decay": 0,
            "nesterov": False, "maximize": False},
    "adagrad": {"lr": 0.01, "lr_decay": 0, "weight_decay": 0,
                "initial_accumulator_value": 0, "eps": 1e-10, "maximize": False},
    "rmsprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0,
                "momentum": 0, "centered": False, "maximize": False},
    "adam": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0,
             "amsgrad": False, "maximize": False},
    "adamw": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
              "amsgrad": False, "maximize": False},
    "adamax": {"lr": 0.002, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0,
               "maximize": False},
    "nadam": {"lr": 0.002, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0,
              "momentum_decay": 0.004, "maximize": False},
    "radam": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0,
              "maximize": False},
    "adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0, "maximize": False},
    "lion": {"lr": 0.0001, "betas": [0.9, 0.99], "weight_decay": 0, "maximize": False},
    "sparse_adam": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "maximize": False},
}

BIN = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def as_dtype(values, dtype):
    """JSON numbers as the session's dtype holds them: float32 values print
    with 9 significant digits, which round back to the exact float32."""
    return [optref.f32(x) for x in values] if dtype == "float32" else list(values)


def same_value(a, b):
    """JSON values equal, with True != 1 (bool is not a number here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


class Service(DaemonTestCase):
    def test_healthz(self):
        r = self.d.get("/healthz")
        self.assertEqual(r.status, 200)
        self.assertIn("application/json", r.headers["Content-Type"])
        self.assertEqual(r.body, {"status": "ok"})

    def test_optimizers_lists_all_eleven_with_api_defaults(self):
        r = self.d.get("/v1/optimizers")
        self.assertEqual(r.status, 200, r)
        opts = r.body["optimizers"]
        names = [o["name"] for o in opts]
        self.assertEqual(sorted(names), sorted(DEFAULTS))
        self.assertEqual(len(names), len(set(names)))
        for o in opts:
            want = DEFAULTS[o["name"]]
            got = o["hyperparameters"]
            self.assertEqual(set(got), set(want), o["name"])
            for k, v in want.items():
                self.assertTrue(same_value(got[k], v), "%s.%s: got %r want %r"
                                % (o["name"], k, got[k], v))


class Sessions(DaemonTestCase):
    def check_descriptor(self, desc, name, optimizer, dtype, size, step):
        self.assertEqual(desc["name"], name)
        self.assertEqual(desc["optimizer"], optimizer)
        self.assertEqual(desc["dtype"], dtype)
        self.assertEqual(desc["size"], size)
        self.assertEqual(desc["step"], step)
        for k in ("created_at", "updated_at"):
            self.assertRegex(desc[k], TS)
        self.assertEqual(set(desc["hyperparameters"]), set(DEFAULTS[optimizer]))

    def test_create_post_full_descriptor(self):
        name = self.uname()
        body = {"name": name, "optimizer": "adam", "hyperparameters": {"lr": 0.01, "betas": [0.8, 0.99]},
                "dtype": "float64", "params": [0.5, -1.25, 3.0],
                "schedule": {"type": "cosine", "t_max": 1000, "eta_min": 0.0},
                "max_grad_norm": 1.0, "labels": {"study": "lr-sweep", "trial": "17"},
                "ttl_seconds": 3600}
        r = self.d.post("/v1/sessions", body)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.headers.get("Location"), "/v1/sessions/" + name)
        d = r.body
        self.check_descriptor(d, name, "adam", "float64", 3, 0)
        want_hp = dict(DEFAULTS["adam"], lr=0.01, betas=[0.8, 0.99])
        for k, v in want_hp.items():
            self.assertTrue(same_value(d["hyperparameters"][k], v), (k, d["hyperparameters"]))
        self.assertEqual(d["schedule"]["type"], "cosine")
        self.assertEqual(d["schedule"]["t_max"], 1000)
        self.assertEqual(d["schedule"]["eta_min"], 0.0)
        self.assertEqual(d["max_grad_norm"], 1.0)
        self.assertEqual(d["labels"], {"study": "lr-sweep", "trial": "17"})
        self.assertEqual(d["ttl_seconds"], 3600)
        g = self.d.get("/v1/sessions/" + name)
        self.assertEqual(g.status, 200)
        self.assertEqual(g.body, d)
        p = self.d.get("/v1/sessions/%s/params" % name)
        self.assertEqual(p.body, {"step": 0, "params": [0.5, -1.25, 3.0]})

    def test_create_defaults(self):
        name = self.uname()
        r = self.d.post("/v1/sessions", {"name": name, "optimizer": "sgd", "params": [1, 2]})
        self.assertEqual(r.status, 201, r)
        d = r.body
        self.check_descriptor(d, name, "sgd", "float64", 2, 0)
        for k, v in DEFAULTS["sgd"].items():
            self.assertTrue(same_value(d["hyperparameters"][k], v), (k, d))
        self.assertIsNone(d["schedule"])
        self.assertIn(d["max_grad_norm"], (None, 0))
        self.assertEqual(d["labels"], {})
        self.assertIsNone(d["ttl_seconds"])
        self.assertEqual(self.d.get("/v1/sessions/%s/params" % name).body["params"], [1.0, 2.0])

    def test_create_every_optimizer_has_its_defaults(self):
        for opt in DEFAULTS:
            name = self.uname(opt)
            d = self.d.create(name, opt, size=2)
            self.check_descriptor(d, name, opt, "float64", 2, 0)
            for k, v in DEFAULTS[opt].items():
                self.assertTrue(same_value(d["hyperparameters"][k], v), (opt, k, d))

    def test_create_size_gives_zeros(self):
        name = self.uname()
        d = self.d.create(name, "adam", size=5)
        self.assertEqual(d["size"], 5)
        r = self.d.get("/v1/sessions/%s/params" % name)
        self.assertEqual(r.body, {"step": 0, "params": [0.0] * 5})

    def test_create_float32_rounds_params(self):
        name = self.uname()
        d = self.d.create(name, "adam", params=[0.1, 1e-3, -2.5], dtype="float32")
        self.assertEqual(d["dtype"], "float32")
        got = self.d.get("/v1/sessions/%s/params" % name).body["params"]
        self.assertEqual(as_dtype(got, "float32"), [optref.f32(0.1), optref.f32(1e-3), -2.5])
        raw = self.d.get("/v1/sessions/%s/params" % name, headers={"Accept": "application/octet-stream"})
        self.assertEqual(raw.raw, optref.pack([0.1, 1e-3, -2.5], "float32"))

    def test_float64_round_trips_exactly(self):
        name = self.uname()
        vals = [0.1, 1 / 3, 2.0 ** -1074, 1.7976931348623157e308, -123456.789e-300, 5e-324 * 3]
        self.d.create(name, "sgd", params=vals)
        got = self.d.get("/v1/sessions/%s/params" % name).body["params"]
        self.assertEqual(got, vals)

    def test_put_create_at_named_url(self):
        name = self.uname()
        r = self.d.put("/v1/sessions/" + name, {"optimizer": "adam", "params": [1.0, 2.0]})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.headers.get("Location"), "/v1/sessions/" + name)
        self.check_descriptor(r.body, name, "adam", "float64", 2, 0)
        self.assertEqual(self.d.get("/v1/sessions/" + name).body, r.body)
        # a name in the body that equals the URL's is fine
        name2 = self.uname()
        r = self.d.put("/v1/sessions/" + name2, {"name": name2, "optimizer": "sgd", "size": 1})
        self.assertEqual(r.status, 201, r)
        # a create at an existing name is refused
        r = self.d.put("/v1/sessions/" + name, {"optimizer": "sgd", "size": 4})
        self.assertError(r, 409, "already_exists")
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["optimizer"], "adam")

    def test_put_create_name_mismatch_refused(self):
        name = self.uname()
        r = self.d.put("/v1/sessions/" + name, {"name": name + "x", "optimizer": "adam", "size": 2})
        self.assertError(r, 400, "invalid_argument")
        self.assertEqual(self.d.get("/v1/sessions/" + name).status, 404)
        self.assertEqual(self.d.get("/v1/sessions/" + name + "x").status, 404)

    def test_delete(self):
        name = self.uname()
        self.d.create(name)
        r = self.d.delete("/v1/sessions/" + name)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.raw, b"")
        for path in ("", "/params", "/history", "/state"):
            self.assertError(self.d.get("/v1/sessions/" + name + path), 404, "not_found")
        self.assertError(self.d.delete("/v1/sessions/" + name), 404, "not_found")
        # the name is free again
        self.d.create(name, "sgd", size=1)


class ListSessions(DaemonTestCase):
    @classmethod
    def prepare(cls):
        cls.names = ["lst-%02d" % i for i in range(23)]
        for i, n in enumerate(reversed(cls.names)):  # created out of order
            j = len(cls.names) - 1 - i
            cls.d.create(n, "sgd", size=1, labels={"study": "s%d" % (j % 2), "trial": str(j % 3)})
        cls.d.create("other-1", "sgd", size=1)

    def page_all(self, query, limit):
        got, after, pages = [], None, 0
        while True:
            q = "limit=%d&%s" % (limit, query) + ("&after=" + after if after else "")
            r = self.d.get("/v1/sessions?" + q)
            self.assertEqual(r.status, 200, r)
            names = [s["name"] for s in r.body["sessions"]]
            self.assertLessEqual(len(names), limit)
            got += names
            pages += 1
            self.assertLess(pages, 100)
            after = r.body["next_after"]
            if after is None:
                return got, pages
            self.assertEqual(after, names[-1])

    def test_prefix_pagination_sorted(self):
        got, pages = self.page_all("prefix=lst-", 5)
        self.assertEqual(got, self.names)
        self.assertEqual(pages, 5)

    def test_default_page_and_full_list_sorted(self):
        r = self.d.get("/v1/sessions")
        self.assertEqual(r.status, 200)
        names = [s["name"] for s in r.body["sessions"]]
        self.assertEqual(names, sorted(names))
        self.assertIn("other-1", names)
        self.assertTrue(set(self.names) <= set(names))
        self.assertIsNone(r.body["next_after"])
        desc = [s for s in r.body["sessions"] if s["name"] == "lst-03"][0]
        self.assertEqual(desc, self.d.get("/v1/sessions/lst-03").body)

    def test_after(self):
        r = self.d.get("/v1/sessions?prefix=lst-&after=lst-20")
        self.assertEqual([s["name"] for s in r.body["sessions"]], ["lst-21", "lst-22"])
        r = self.d.get("/v1/sessions?after=lst-225")
        self.assertEqual([s["name"] for s in r.body["sessions"]], ["other-1"])

    def test_limit_edges(self):
        r = self.d.get("/v1/sessions?limit=1&prefix=lst-")
        self.assertEqual([s["name"] for s in r.body["sessions"]], ["lst-00"])
        self.assertEqual(r.body["next_after"], "lst-00")
        r = self.d.get("/v1/sessions?limit=1000&prefix=lst-")
        self.assertEqual(len(r.body["sessions"]), 23)
        self.assertIsNone(r.body["next_after"])
        r = self.d.get("/v1/sessions?limit=23&prefix=lst-")
        self.assertEqual(len(r.body["sessions"]), 23)
        # 23 exactly fit: a next page may be offered but must then be empty
        if r.body["next_after"] is not None:
            r2 = self.d.get("/v1/sessions?limit=23&prefix=lst-&after=" + r.body["next_after"])
            self.assertEqual(r2.body["sessions"], [])
        for bad in ("0", "1001", "-1", "abc", "1.5"):
            self.assertError(self.d.get("/v1/sessions?limit=" + bad), 400, "invalid_argument")

    def test_prefix_no_match(self):
        r = self.d.get("/v1/sessions?prefix=zzz")
        self.assertEqual(r.body, {"sessions": [], "next_after": None, "next_offset": None})

    def test_label_filters_and(self):
        r = self.d.get("/v1/sessions?label=study:s1")
        want = [n for j, n in enumerate(self.names) if j % 2 == 1]
        self.assertEqual([s["name"] for s in r.body["sessions"]], want)
        r = self.d.get("/v1/sessions?label=study:s1&label=trial:0")
        want = [n for j, n in enumerate(self.names) if j % 2 == 1 and j % 3 == 0]
        self.assertEqual([s["name"] for s in r.body["sessions"]], want)
        for s in r.body["sessions"]:
            self.assertEqual(s["labels"]["study"], "s1")
        r = self.d.get("/v1/sessions?label=study:nope")
        self.assertEqual(r.body["sessions"], [])
        # with pagination
        got, _ = self.page_all("label=study:s0&prefix=lst-", 3)
        self.assertEqual(got, [n for j, n in enumerate(self.names) if j % 2 == 0])


class Patch(DaemonTestCase):
    def test_partial_hyperparameters(self):
        name = self.uname()
        self.d.create(name, "adam", hyperparameters={"lr": 0.01, "eps": 1e-6})
        r = self.d.patch("/v1/sessions/" + name, {"hyperparameters": {"betas": [0.5, 0.6]}})
        self.assertEqual(r.status, 200, r)
        hp = r.body["hyperparameters"]
        self.assertEqual(hp["lr"], 0.01)
        self.assertEqual(hp["eps"], 1e-6)
        self.assertEqual(hp["betas"], [0.5, 0.6])
        self.assertIs(hp["amsgrad"], False)
        self.assertEqual(self.d.get("/v1/sessions/" + name).body, r.body)

    def test_schedule_replace_and_remove(self):
        name = self.uname()
        self.d.create(name, "sgd", schedule={"type": "step", "step_size": 2, "gamma": 0.5})
        r = self.d.patch("/v1/sessions/" + name, {"schedule": {"type": "exponential", "gamma": 0.9}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["schedule"]["type"], "exponential")
        self.assertEqual(r.body["schedule"]["gamma"], 0.9)
        self.assertNotIn("step_size", r.body["schedule"])
        r = self.d.patch("/v1/sessions/" + name, {"schedule": None})
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.body["schedule"])

    def test_max_grad_norm_off_by_null_and_zero(self):
        for off in (None, 0):
            name = self.uname()
            self.d.create(name, "sgd", params=[0.0, 0.0], max_grad_norm=0.5,
                          hyperparameters={"lr": 1.0})
            r = self.d.patch("/v1/sessions/" + name, {"max_grad_norm": off})
            self.assertEqual(r.status, 200, r)
            self.assertIn(r.body["max_grad_norm"], (None, 0))
            # unclipped: p = -lr*g exactly
            s = self.d.post("/v1/sessions/%s/step" % name, {"gradient": [3.0, 4.0]})
            self.assertEqual(s.body["params"], [-3.0, -4.0])

    def test_clipping_applies(self):
        name = self.uname()
        self.d.create(name, "sgd", params=[0.0, 0.0], hyperparameters={"lr": 1.0})
        self.d.patch("/v1/sessions/" + name, {"max_grad_norm": 1.0})
        s = self.d.post("/v1/sessions/%s/step" % name, {"gradient": [3.0, 4.0]})
        c = 1.0 / (5.0 + 1e-6)
        want = [-3.0 * c, -4.0 * c]
        for g, w in zip(s.body["params"], want):
            self.assertTrue(optref.close64(g, w), (g, w))

    def test_labels_replace_and_ttl_null(self):
        name = self.uname()
        self.d.create(name, "sgd", labels={"a": "1", "b": "2"}, ttl_seconds=600)
        r = self.d.patch("/v1/sessions/" + name, {"labels": {"c": "3"}})
        self.assertEqual(r.body["labels"], {"c": "3"})
        self.assertEqual(r.body["ttl_seconds"], 600)
        r = self.d.patch("/v1/sessions/" + name, {"ttl_seconds": None})
        self.assertIsNone(r.body["ttl_seconds"])
        self.assertEqual(r.body["labels"], {"c": "3"})
        r = self.d.patch("/v1/sessions/" + name, {"ttl_seconds": 30, "labels": {}})
        self.assertEqual(r.body["ttl_seconds"], 30)
        self.assertEqual(r.body["labels"], {})

    def test_empty_patch_changes_nothing(self):
        name = self.uname()
        d = self.d.create(name, "adam")
        r = self.d.patch("/v1/sessions/" + name, {})
        self.assertEqual(r.status, 200, r)
        for k in d:
            if k != "updated_at":
                self.assertEqual(r.body[k], d[k], k)

    def test_optimizer_and_dtype_cannot_change(self):
        name = self.uname()
        self.d.create(name, "adam")
        before = self.d.state(name)
        for body in ({"optimizer": "sgd"}, {"dtype": "float32"}):
            r = self.d.patch("/v1/sessions/" + name, body)
            self.assertError(r, 400, "invalid_argument")
        self.assertEqual(self.d.state(name), before)

    def test_state_kept_next_step_uses_new_lr_with_old_moments(self):
        name = self.uname()
        p0 = [0.5, -1.25, 3.0]
        ref = optref.Adam(p0, lr=0.01)
        self.d.create(name, "adam", params=p0, hyperparameters={"lr": 0.01})
        grads = [[0.1, -0.2, 0.05], [0.3, 0.1, -0.4], [-0.2, 0.2, 0.1]]
        for g in grads[:2]:
            self.d.post("/v1/sessions/%s/step" % name, {"gradient": g})
            ref.step(g)
        r = self.d.patch("/v1/sessions/" + name, {"hyperparameters": {"lr": 0.05}})
        self.assertEqual(r.body["step"], 2)
        st = self.d.state(name)
        for a, b in zip(st["state"]["exp_avg"], ref.m):
            self.assertTrue(optref.close64(a, b), (a, b))
        ref.lr = 0.05
        s = self.d.post("/v1/sessions/%s/step" % name, {"gradient": grads[2]})
        ref.step(grads[2])
        self.assertEqual(s.body["step"], 3)
        for a, b in zip(s.body["params"], ref.p):
            self.assertTrue(optref.close64(a, b), (s.body["params"], ref.p))
        # and not what a reset state would give
        fresh = optref.Adam(st["params"], lr=0.05)
        fresh.step(grads[2])
        self.assertFalse(all(optref.close64(a, b) for a, b in zip(s.body["params"], fresh.p)))


class Training(DaemonTestCase):
    FLAGS = ["--history", "1000"]

    def test_params_json_and_binary(self):
        for dtype in ("float64", "float32"):
            name = self.uname(dtype)
            self.d.create(name, "sgd", params=[0.25, -8.5, 1e-3], dtype=dtype,
                          hyperparameters={"lr": 0.5})
            self.d.post("/v1/sessions/%s/step" % name, {"gradient": [1.0, 1.0, 1.0]})
            j = self.d.get("/v1/sessions/%s/params" % name)
            self.assertEqual(j.status, 200)
            self.assertEqual(j.body["step"], 1)
            b = self.d.get("/v1/sessions/%s/params" % name, headers={"Accept": "application/octet-stream"})
            self.assertEqual(b.status, 200)
            self.assertEqual(b.headers["Content-Type"].split(";")[0], "application/octet-stream")
            self.assertEqual(b.headers.get("Optd-Step"), "1")
            self.assertEqual(len(b.raw), 3 * (8 if dtype == "float64" else 4))
            self.assertEqual(optref.unpack(b.raw, dtype), as_dtype(j.body["params"], dtype))
            if dtype == "float32":
                want = [optref.f32(optref.f32(0.25) - optref.f32(0.5)),
                        -9.0, optref.f32(optref.f32(1e-3) - 0.5)]
            else:
                want = [0.25 - 0.5, -9.0, 1e-3 - 0.5]
            self.assertEqual(as_dtype(j.body["params"], dtype), want)

    def test_step_json_matches_reference_adam(self):
        name = self.uname()
        p0 = [0.5, -1.25, 3.0]
        self.d.create(name, "adam", params=p0)
        ref = optref.Adam(p0)
        for k in range(1, 6):
            g = [0.1 * k, -0.2, 0.05 * (-1) ** k]
            r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": g})
            self.assertEqual(r.status, 200, r)
            ref.step(g)
            self.assertEqual(r.body["step"], k)
            for a, b in zip(r.body["params"], ref.p):
                self.assertTrue(optref.close64(a, b), (k, r.body["params"], ref.p))
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["step"], 5)

    def test_step_json_and_binary_identical(self):
        import random
        rnd = random.Random(7)
        for dtype in ("float64", "float32"):
            for opt in ("adam", "rmsprop", "lion"):
                a, b = self.uname("j" + dtype + opt), self.uname("b" + dtype + opt)
                p0 = [rnd.uniform(-2, 2) for _ in range(17)]
                if dtype == "float32":
                    p0 = [optref.f32(x) for x in p0]
                self.d.create(a, opt, params=p0, dtype=dtype)
                self.d.create(b, opt, params=p0, dtype=dtype)
                for k in range(1, 9):
                    g = [rnd.uniform(-1, 1) for _ in range(17)]
                    if dtype == "float32":
                        g = [optref.f32(x) for x in g]
                    rj = self.d.post("/v1/sessions/%s/step" % a, {"gradient": g})
                    rb = self.d.post("/v1/sessions/%s/step" % b, optref.pack(g, dtype), headers=BIN)
                    self.assertEqual(rj.status, 200, rj)
                    self.assertEqual(rb.status, 200, rb)
                    self.assertEqual(rb.headers["Content-Type"].split(";")[0], "application/octet-stream")
                    self.assertEqual(rb.headers.get("Optd-Step"), str(k))
                    self.assertEqual(optref.unpack(rb.raw, dtype), as_dtype(rj.body["params"], dtype),
                                     (dtype, opt, k))
                sa, sb = self.d.state(a), self.d.state(b)
                self.assertEqual(sa["state"], sb["state"])
                self.assertEqual(sa["params"], sb["params"])

    def test_return_none(self):
        name = self.uname()
        self.d.create(name, "adam")
        r = self.d.post("/v1/sessions/%s/step?return=none" % name, {"gradient": [1, 2, 3]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"step": 1})
        r = self.d.post("/v1/sessions/%s/step?return=none" % name, optref.pack([1, 2, 3], "float64"),
                        headers=BIN)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.raw, b"")
        self.assertEqual(r.headers.get("Optd-Step"), "2")
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["step"], 2)

    def test_compare_and_swap_json(self):
        name = self.uname()
        self.d.create(name, "adam")
        r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": [1, 2, 3], "step": 0})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["step"], 1)
        before = self.d.state(name)
        for stale in (0, 2, 100):
            r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": [1, 2, 3], "step": stale})
            err = self.assertError(r, 409, "step_mismatch")
            self.assertEqual(err.get("current_step"), 1)
        self.assertEqual(self.d.state(name), before)
        r = self.d.post("/v1/sessions/%s/step" % name, {"gradient": [1, 2, 3], "step": 1})
        self.assertEqual(r.body["step"], 2)

    def test_compare_and_swap_binary(self):
        name = self.uname()
        self.d.create(name, "adam")
        g = optref.pack([1, 2, 3], "float64")
        r = self.d.post("/v1/sessions/%s/step" % name, g, headers=dict(BIN, **{"Optd-Expect-Step": "0"}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.headers.get("Optd-Step"), "1")
        before = self.d.state(name)
        r = self.d.post("/v1/sessions/%s/step" % name, g, headers=dict(BIN, **{"Optd-Expect-Step": "0"}))
        err = self.assertError(r, 409, "step_mismatch")
        self.assertEqual(err.get("current_step"), 1)
        self.assertEqual(self.d.state(name), before)

    def test_history_loss_lr_grad_norm(self):
        name = self.uname()
        self.d.create(name, "sgd", params=[0.0, 0.0], hyperparameters={"lr": 0.1},
                      schedule={"type": "step", "step_size": 2, "gamma": 0.5})
        grads = [[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [6.0, 8.0], [1.0, 1.0]]
        for k, g in enumerate(grads, 1):
            body = {"gradient": g}
            if k != 3:
                body["loss"] = 1.0 / k
            if k == 5:
                r = self.d.post("/v1/sessions/%s/step" % name, optref.pack(g, "float64"),
                                headers=dict(BIN, **{"Optd-Loss": "0.2"}))
            else:
                r = self.d.post("/v1/sessions/%s/step" % name, body)
            self.assertEqual(r.status, 200, r)
        h = self.d.get("/v1/sessions/%s/history" % name)
        self.assertEqual(h.status, 200, h)
        hist = h.body["history"]
        self.assertEqual([e["step"] for e in hist], [1, 2, 3, 4, 5])
        for e, g in zip(hist, grads):
            k = e["step"]
            self.assertTrue(optref.close64(e["lr"], 0.1 * 0.5 ** ((k - 1) // 2)), e)
            self.assertTrue(optref.close64(e["grad_norm"], optref.norm(g)), e)
            self.assertRegex(e["time"], TS)
            if k == 3:
                self.assertNotIn("loss", e)
            elif k == 5:
                self.assertEqual(e["loss"], 0.2)
            else:
                self.assertEqual(e["loss"], 1.0 / k)
        r = self.d.get("/v1/sessions/%s/history?limit=2" % name)
        self.assertEqual([e["step"] for e in r.body["history"]], [4, 5])
        r = self.d.get("/v1/sessions/%s/history?after_step=3" % name)
        self.assertEqual([e["step"] for e in r.body["history"]], [4, 5])
        r = self.d.get("/v1/sessions/%s/history?after_step=1&limit=2" % name)
        self.assertEqual([e["step"] for e in r.body["history"]], [4, 5])
        r = self.d.get("/v1/sessions/%s/history?after_step=5" % name)
        self.assertEqual(r.body["history"], [])
        self.assertEqual(r.body, {"history": []})

    def test_schedules_lr_in_history(self):
        import math
        cases = [
            ({"type": "exponential", "gamma": 0.9}, lambda k: 0.1 * 0.9 ** (k - 1)),
            ({"type": "cosine", "t_max": 4, "eta_min": 0.01},
             lambda k: 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * min(k - 1, 4) / 4)) / 2),
            ({"type": "constant", "warmup_steps": 3}, lambda k: 0.1 * k / 3 if k <= 3 else 0.1),
            ({"type": "step", "step_size": 2, "gamma": 0.5, "warmup_steps": 2},
             lambda k: 0.1 * k / 2 if k <= 2 else 0.1 * 0.5 ** ((k - 2 - 1) // 2)),
        ]
        for sched, f in cases:
            name = self.uname(sched["type"])
            self.d.create(name, "sgd", params=[0.0], hyperparameters={"lr": 0.1}, schedule=sched)
            for _ in range(8):
                self.d.post("/v1/sessions/%s/step?return=none" % name, {"gradient": [1.0]})
            hist = self.d.get("/v1/sessions/%s/history" % name).body["history"]
            self.assertEqual(len(hist), 8)
            for e in hist:
                self.assertTrue(optref.close64(e["lr"], f(e["step"])), (sched, e, f(e["step"])))
            p = self.d.get("/v1/sessions/%s/params" % name).body["params"][0]
            self.assertTrue(optref.close64(p, -sum(f(k) for k in range(1, 9))), (sched, p))


class Large(DaemonTestCase):
    def test_million_params_binary_and_json(self):
        n = 1000000
        name = self.uname()
        d = self.d.create(name, "sgd", size=n, hyperparameters={"lr": 0.5})
        self.assertEqual(d["size"], n)
        r = self.d.post("/v1/sessions/%s/step" % name, optref.pack([1.0] * n, "float64"), headers=BIN)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.raw, optref.pack([-0.5] * n, "float64"))
        r = self.d.post("/v1/sessions/%s/step?return=none" % name, {"gradient": [0.25] * n})
        self.assertEqual(r.body, {"step": 2})
        r = self.d.get("/v1/sessions/%s/params" % name)
        self.assertEqual(r.body["step"], 2)
        self.assertEqual(len(r.body["params"]), n)
        self.assertTrue(all(x == -0.625 for x in r.body["params"]))
        self.assertEqual(self.d.delete("/v1/sessions/" + name).status, 204)


class HistoryLimit(DaemonTestCase):
    FLAGS = ["--history", "5"]

    def test_keeps_last_n(self):
        name = self.uname()
        self.d.create(name, "sgd", size=1)
        for k in range(8):
            self.d.post("/v1/sessions/%s/step" % name, {"gradient": [1.0], "loss": float(k)})
        hist = self.d.get("/v1/sessions/%s/history" % name).body["history"]
        self.assertEqual([e["step"] for e in hist], [4, 5, 6, 7, 8])
        self.assertEqual([e["loss"] for e in hist], [3.0, 4.0, 5.0, 6.0, 7.0])


if __name__ == "__main__":
    unittest.main()
