"""test_fleet.py: what a tuning service ranks its trials by (API.md 1.1,
"Fleets"): the descriptor's loss summary, kept since creation and durable,
and the list's sort=best_loss / last_loss with offset paging."""

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


class DurableSummary(unittest.TestCase):
    """The summary survives a clean restart and, with --sync always, kill -9."""

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
