"""test_fleet.py: what a tuning service ranks its trials by (API.md 1.1,
"Fleets"): the descriptor's loss summary, kept since creation and durable,
and the list's sort=best_loss / last_loss with offset paging."""

import json
import re
import unittest

from harness import Daemon, DaemonTestCase


def step(d, name, loss=None, n=3):
    body = {"gradient": [0.1] * n}
    if loss is not None:
        body["loss"] = loss
    r = d.post("/v1/sessions/%s/step?return=none" % name, body)
    assert r.status == 200, r
    return r.body["step"]


class LossSummary(DaemonTestCase):
    FLAGS = ["--history", "2"]

    def test_null_until_a_step_carries_a_loss(self):
        n = self.uname()
        self.assertIsNone(self.d.create(n, "sgd", size=3)["loss"])
        step(self.d, n)
        self.assertIsNone(self.d.get("/v1/sessions/" + n).body["loss"])

    def test_best_and_last_beyond_the_history_window(self):
        n = self.uname()
        self.d.create(n, "adam", size=3)
        for loss in (3.0, 0.5, 2.0, None, 0.5, 4.0):
            step(self.d, n, loss)
        # --history 2 keeps steps 5 and 6 only; the summary saw them all.
        hist = self.d.get("/v1/sessions/%s/history" % n).body["history"]
        self.assertEqual([h["step"] for h in hist], [5, 6])
        self.assertEqual(self.d.get("/v1/sessions/" + n).body["loss"],
                         {"last": 4.0, "last_step": 6, "best": 0.5, "best_step": 2})

    def test_fork_starts_at_null_and_state_carries_it(self):
        n = self.uname()
        self.d.create(n, "sgd", size=3)
        step(self.d, n, 1.25)
        f = self.uname("fork")
        r = self.d.put("/v1/sessions/" + f, {"from": n})
        self.assertEqual(r.status, 201, r)
        self.assertIsNone(r.body["loss"])
        doc = self.d.get("/v1/sessions/%s/state" % n).body
        self.assertEqual(doc["loss"], {"last": 1.25, "last_step": 1, "best": 1.25, "best_step": 1})
        c = self.uname("copy")
        r = self.d.put("/v1/sessions/%s/state" % c, doc)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.d.get("/v1/sessions/" + c).body["loss"], doc["loss"])

    def test_import_refuses_a_summary_no_run_makes(self):
        n = self.uname()
        self.d.create(n, "sgd", size=3)
        step(self.d, n, 1.0)
        doc = self.d.get("/v1/sessions/%s/state" % n).body
        for bad in ({"last": 1.0, "last_step": 9, "best": 1.0, "best_step": 1},   # after the step
                    {"last": 0.5, "last_step": 1, "best": 1.0, "best_step": 1},   # last < best
                    {"last": 1.0, "last_step": 1},                                # incomplete
                    "low"):
            doc["loss"] = bad
            r = self.d.put("/v1/sessions/%s/state" % self.uname("bad"), doc)
            self.assertError(r, 400, "invalid_argument")


class SortedLists(DaemonTestCase):
    @classmethod
    def prepare(cls):
        # best losses: a 0.3, b 0.1, c none, d 0.1 (tie with b), e 0.9;
        # last losses: a 0.3, b 0.8, c none, d 0.2, e 0.9.
        cls.losses = {"a": [0.3], "b": [0.1, 0.8], "c": [], "d": [0.5, 0.1, 0.2], "e": [0.9]}
        for k, ls in cls.losses.items():
            cls.d.create("fl-" + k, "sgd", size=3, labels={"study": "fl"})
            for loss in ls:
                step(cls.d, "fl-" + k, loss)
        cls.d.create("other", "sgd", size=3)
        step(cls.d, "other", -5.0)

    def names(self, query):
        r = self.d.get("/v1/sessions?prefix=fl-&" + query)
        self.assertEqual(r.status, 200, r)
        return [s["name"][3:] for s in r.body["sessions"]], r.body

    def test_best_loss_order_ties_by_name_missing_last(self):
        self.assertEqual(self.names("sort=best_loss")[0], ["b", "d", "a", "e", "c"])

    def test_last_loss_order(self):
        self.assertEqual(self.names("sort=last_loss")[0], ["d", "a", "b", "e", "c"])

    def test_offset_pages_cover_every_match_once(self):
        seen, offset = [], 0
        while True:
            got, body = self.names("sort=best_loss&limit=2&offset=%d" % offset)
            self.assertIsNone(body["next_after"])
            seen += got
            if body["next_offset"] is None:
                break
            self.assertEqual(body["next_offset"], offset + 2)
            offset = body["next_offset"]
        self.assertEqual(seen, ["b", "d", "a", "e", "c"])

    def test_label_filter_applies_to_loss_orders(self):
        r = self.d.get("/v1/sessions?sort=best_loss&label=study:fl")
        self.assertEqual([s["name"] for s in r.body["sessions"]][:2], ["fl-b", "fl-d"])
        self.assertNotIn("other", [s["name"] for s in r.body["sessions"]])

    def test_name_order_takes_offset_too(self):
        got, body = self.names("limit=2&offset=1")
        self.assertEqual(got, ["b", "c"])
        self.assertEqual(body["next_offset"], 3)
        self.assertEqual(body["next_after"], "fl-c")

    def test_bad_queries(self):
        self.assertError(self.d.get("/v1/sessions?sort=loss"), 400, "invalid_argument")
        self.assertError(self.d.get("/v1/sessions?sort=best_loss&after=fl-a"), 400,
                         "invalid_argument")
        self.assertError(self.d.get("/v1/sessions?offset=-1"), 400, "invalid_argument")


class BatchSteps(DaemonTestCase):
    """POST /v1/steps: items applied in order, one result each, a failing
    item changing nothing and stopping nothing else."""

    def batch(self, items, query=""):
        r = self.d.post("/v1/steps" + query, {"steps": items})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body["results"]), len(items))
        return r.body["results"]

    def test_same_bits_as_single_steps(self):
        a, b = self.uname("a"), self.uname("b")
        for n in (a, b):
            self.d.create(n, "adam", params=[0.5, -1.25, 3.0], dtype="float32",
                          hyperparameters={"lr": 0.1})
        grads = [[0.1, -0.2, 0.3], [1e-3, 7.0, -2.5], [0.0, 0.25, 1.0]]
        for k, g in enumerate(grads):
            single = self.d.post("/v1/sessions/%s/step" % a, {"gradient": g, "loss": k + 0.5}).body
            [res] = self.batch([{"session": b, "gradient": g, "step": k, "loss": k + 0.5}])
            self.assertEqual(res, {"session": b, "step": k + 1, "params": single["params"]})
        self.assertEqual(self.d.get("/v1/sessions/%s/state" % a).body["state"],
                         self.d.get("/v1/sessions/%s/state" % b).body["state"])
        hist = self.d.get("/v1/sessions/%s/history" % b).body["history"]
        self.assertEqual([h["loss"] for h in hist], [0.5, 1.5, 2.5])
        self.assertEqual(self.d.get("/v1/sessions/" + b).body["loss"]["best"], 0.5)

    def test_failures_change_nothing_and_stop_nothing(self):
        a, b = self.uname("a"), self.uname("b")
        self.d.create(a, "sgd", params=[1.0, 2.0])
        self.d.create(b, "sgd", params=[1.0, 2.0, 3.0])
        before = self.d.get("/v1/sessions/%s/state" % b).body
        res = self.batch([
            {"session": b, "gradient": [1, 1, 1], "step": 5},        # stale compare-and-swap
            {"session": a, "gradient": [1, 1]},                      # applied
            {"session": "no-such-session", "gradient": [1]},
            {"session": b, "gradient": [1, 1]},                      # wrong size
            {"session": b, "gradient": [1, 1, "x"]},
            {"session": b, "gradient": [1, 1, 1], "loss": None},
            {"session": b, "gradient": [1], "rows": [7]},            # row out of range
            {"session": b, "gradient": [1, 1, 1], "worker": "w1"},
            {"session": b, "gradient": [1, 1, 1], "extra": 1},
            {"session": "bad/name", "gradient": [1]},
            7,
            {"session": a, "gradient": [1, 1], "step": 1},           # applied, after the first
        ])
        codes = [r.get("error", {}).get("code") for r in res]
        self.assertEqual(codes, ["step_mismatch", None, "not_found", "size_mismatch",
                                 "invalid_argument", "invalid_argument", "invalid_argument",
                                 "invalid_argument", "invalid_argument", "invalid_argument",
                                 "invalid_argument", None])
        self.assertEqual(res[0]["error"]["current_step"], 0)
        self.assertEqual([r["session"] for r in res][:4], [b, a, "no-such-session", b])
        self.assertIsNone(res[10]["session"])
        self.assertEqual((res[1]["step"], res[11]["step"]), (1, 2))
        for r in res:
            if "error" in r:
                self.assertTrue(r["error"]["message"])
        after = self.d.get("/v1/sessions/%s/state" % b).body
        self.assertEqual(after, before)

    def test_return_none_and_repeated_sessions_in_order(self):
        n = self.uname()
        self.d.create(n, "sgd", params=[0.0], hyperparameters={"lr": 1.0})
        res = self.batch([{"session": n, "gradient": [1.0], "step": k} for k in range(5)],
                         "?return=none")
        self.assertEqual(res, [{"session": n, "step": k + 1} for k in range(5)])
        self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body["params"], [-5.0])

    def test_bad_bodies_are_refused_whole(self):
        n = self.uname()
        self.d.create(n, "sgd", params=[0.0])
        item = {"session": n, "gradient": [1.0]}
        for body, code in (({"steps": []}, "invalid_argument"),
                           ({"steps": [item] * 10001}, "invalid_argument"),
                           ({"steps": item}, "invalid_argument"),
                           ({}, "invalid_argument"),
                           ({"steps": [item], "more": 1}, "invalid_argument"),
                           ([item], "invalid_json"),
                           ('{"steps": [', "invalid_json")):
            self.assertError(self.d.post("/v1/steps", body), 400, code)
        self.assertError(self.d.post("/v1/steps?return=all", {"steps": [item]}), 400,
                         "invalid_argument")
        self.assertError(self.d.get("/v1/steps"), 405, "method_not_allowed")
        self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body["step"], 0)

    def test_ten_thousand_items(self):
        names = [self.uname("many") for _ in range(10)]
        for n in names:
            self.d.create(n, "sgd", size=2)
        items = [{"session": names[k % 10], "gradient": [0.5, -0.5]} for k in range(10000)]
        res = self.batch(items, "?return=none")
        self.assertTrue(all("step" in r for r in res))
        for n in names:
            self.assertEqual(self.d.get("/v1/sessions/" + n).body["step"], 1000)


class BatchFastPathAgreesWithJansson(DaemonTestCase):
    """The batch scanner reads the usual body straight from its text; an
    escaped "steps" key sends the same document through Jansson.  Both must
    answer alike, item by item, and leave twin sessions alike."""

    ITEMS = [
        '{"session": "%s-a", "gradient": [0.5, -1.25], "loss": 0.25}',
        '{"session": "%s-a", "gradient": [1e-3, 2E2], "step": 1}',
        '{"session": "%s-a", "gradient": [1, 2], "step": 7}',             # stale
        '{"session": "%s-b", "gradient": [1, 2]}',                        # wrong size
        '{"session": "%s-a", "gradient": [1e39, 0]}',                      # beyond float32
        '{"session": "%s-b", "gradient": [3, 0, -1], "loss": -0}',
        '{"gradient": [1, 2], "session": "%s-missing"}',
        '{"session": "%s-a"}',                                            # no gradient
        '{"session": "%s-a", "gradient": [], "loss": 1.5}',
        '{"session": "%s-b", "gradient": [0.1, 0.2, 0.3], "step": 2, "loss": 7}',
        '{ "session" : "%s-b" , "gradient" : [ 1 , 2 , 3 ] }',
    ]
    WHOLE = [  # bodies the scanner hands to Jansson whole, or refuses whole
        '{"steps": [{"session": "%s-a", "gradient": [99999999999999999999, 1]}]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1], "loss": 123456789012345678901}]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1], "step": 1.0}]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1], "loss": null}]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1], "gradient": [2, 2]}]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1]}], "steps": []}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1]},]}',
        '{"steps": [{"session": "%s-a", "gradient": [1, 1]}]} x',
        '{"steps": [{"session": "%s-\\u0061", "gradient": [1, 1]}]}',
    ]

    def twins(self, base):
        for p in (base + "f", base + "j"):
            self.d.create(p + "-a", "adam", params=[1.0, 2.0], dtype="float32")
            self.d.create(p + "-b", "sgd", params=[1.0, 2.0, 3.0], hyperparameters={"momentum": 0.9})
        return base + "f", base + "j"

    def send(self, text, escaped):
        if escaped:
            text = text.replace('"steps"', '"st\\u0065ps"', 1)
        return self.d.post("/v1/steps", text.encode(), headers={"Content-Type": "application/json"})

    def same(self, rf, rj, pf, pj):
        self.assertEqual(rf.status, rj.status, (rf, rj))
        # The escape makes the body 5 bytes longer: positions in messages differ.
        norm = lambda b: json.loads(re.sub(r"column \d+", "column N",
                                           json.dumps(b).replace(pf, "P").replace(pj, "P")))
        self.assertEqual(norm(rf.body), norm(rj.body))

    def test_items_one_by_one_and_together(self):
        pf, pj = self.twins(self.uname("t"))
        for item in self.ITEMS:
            body = '{"steps": [%s]}' % item
            self.same(self.send(body % pf, False), self.send(body % pj, True), pf, pj)
        body = '{"steps": [%s]}' % ", ".join(self.ITEMS)
        self.same(self.send(body.replace("%s", pf), False), self.send(body.replace("%s", pj), True),
                  pf, pj)
        for n in ("-a", "-b"):
            sf = self.d.get("/v1/sessions/%s%s/state" % (pf, n)).body
            sj = self.d.get("/v1/sessions/%s%s/state" % (pj, n)).body
            for k in ("params", "state", "step", "loss"):
                self.assertEqual(sf[k], sj[k], k)

    def test_bodies_read_whole_by_jansson(self):
        pf, pj = self.twins(self.uname("w"))
        for body in self.WHOLE:
            self.same(self.send(body % pf, False), self.send(body % pj, True), pf, pj)


class DurableSummary(unittest.TestCase):
    """The summary survives a clean restart and, with --sync always, kill -9;
    so do the steps of a batch."""

    def test_batch_kill9_sync_always(self):
        d = Daemon(flags=["--sync", "always"], data_dir=True)
        try:
            d.start()
            for k in range(3):
                d.create("b%d" % k, "adam", size=2)
            r = d.post("/v1/steps", {"steps": [{"session": "b%d" % (k % 3), "gradient": [k, 1.0],
                                                "loss": float(k)} for k in range(7)]})
            self.assertEqual(r.status, 200, r)
            want = {n: d.get("/v1/sessions/%s/state" % n).body for n in ("b0", "b1", "b2")}
            d.kill9()
            d.start()
            for n, doc in want.items():
                self.assertEqual(d.get("/v1/sessions/%s/state" % n).body, doc)
            d.stop()
        finally:
            d.cleanup()

    def check(self, sync, crash):
        d = Daemon(flags=["--sync", sync], data_dir=True)
        try:
            d.start()
            d.create("dur", "adam", size=3)
            for loss in (2.0, 1.0, 1.5):
                step(d, "dur", loss)
            want = {"last": 1.5, "last_step": 3, "best": 1.0, "best_step": 2}
            if crash:
                d.kill9()
                d.start()
            else:
                d.restart()
            self.assertEqual(d.get("/v1/sessions/dur").body["loss"], want)
            d.stop()
        finally:
            d.cleanup()

    def test_clean_restart_interval(self):
        self.check("interval", crash=False)

    def test_kill9_sync_always(self):
        self.check("always", crash=True)


if __name__ == "__main__":
    unittest.main()
