"""POST /v1/steps with --sync always: one group commit for the batch.

The 200 means every applied item is on disk, and the whole batch cost one
fdatasync round (counted by the daemon's own optd_journal_syncs_total, the
journal's rounds, not by timing).  A kill -9 right after the 200 loses none
of it (compared with twin sessions stepped one request at a time); a disk
that fails the group's write or sync gets 507 for the journaled items and
changes nothing; items on one session within a batch apply in order, by the
same rules the journal is replayed with."""
import os
import re
import threading
import unittest

from harness import Daemon
from test_durability import shim_daemon


def metric(d, name):
    text = d.get("/metrics").raw.decode()
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, "no %s in /metrics" % name
    return int(m.group(1))


def state(d, name):
    """The state to compare with a twin's: without the name and times."""
    doc = d.get("/v1/sessions/%s/state" % name).body
    for k in ("name", "created_at", "updated_at"):
        doc.pop(k, None)
    return doc


def history(d, name):
    """The history's entries without their times (a twin steps later)."""
    doc = d.get("/v1/sessions/%s/history" % name).body
    return [{k: v for k, v in e.items() if k != "time"} for e in doc["history"]]


def without_session(item):
    return {k: v for k, v in item.items() if k not in ("session", "step")}


class GroupCommit(unittest.TestCase):
    K = 8

    def daemon(self, *flags):
        d = Daemon(flags=["--sync", "always", *flags], data_dir=True)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def items(self, prefix, rounds=1):
        """K sessions, each stepped `rounds` times, in a batch's order."""
        return [{"session": "%s%d" % (prefix, k % self.K), "gradient": [0.5 + k, -1.0 - k, 0.25],
                 "loss": 1.0 / (k + 1)} for k in range(self.K * rounds)]

    def make(self, d, prefix, optimizer="adam"):
        for k in range(self.K):
            r = d.post("/v1/sessions", {"name": "%s%d" % (prefix, k), "optimizer": optimizer,
                                        "params": [1.0, 2.0, 3.0]})
            self.assertEqual(r.status, 201, r)

    def one_by_one(self, d, items, prefix):
        for it in items:
            body = {"gradient": it["gradient"], "loss": it["loss"]}
            name = prefix + it["session"][1:]
            r = d.post("/v1/sessions/%s/step" % name, body)
            self.assertEqual(r.status, 200, r)

    def test_a_batch_costs_one_fsync_round(self):
        d = self.daemon()
        self.make(d, "b")
        self.make(d, "t")
        syncs, records = metric(d, "optd_journal_syncs_total"), metric(d, "optd_journal_records_total")
        r = d.post("/v1/steps?return=none", {"steps": self.items("b")})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(all("error" not in x for x in r.body["results"]), r.body)
        self.assertEqual(metric(d, "optd_journal_records_total") - records, self.K)
        self.assertEqual(metric(d, "optd_journal_syncs_total") - syncs, 1,
                         "a batch of %d items should be made durable by one fsync round" % self.K)
        # the same items as single steps, one after the other: a round each
        syncs = metric(d, "optd_journal_syncs_total")
        self.one_by_one(d, self.items("b"), "t")
        self.assertEqual(metric(d, "optd_journal_syncs_total") - syncs, self.K)
        # a batch stepping each session three times: still one round
        syncs = metric(d, "optd_journal_syncs_total")
        r = d.post("/v1/steps?return=none", {"steps": self.items("b", 3)})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(metric(d, "optd_journal_syncs_total") - syncs, 1)

    def test_kill9_right_after_the_200_loses_nothing(self):
        d = self.daemon()
        self.make(d, "b")
        self.make(d, "t")
        items = self.items("b", 3)
        items[5]["step"] = 0        # b5's first: at step 0, applies
        items[5 + self.K]["step"] = 1  # b5's second: at the step the first led to
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual(r.status, 200, r)
        steps = [x.get("step") for x in r.body["results"]]
        self.assertEqual(steps, [1] * self.K + [2] * self.K + [3] * self.K)
        d.kill9()
        d.start()
        self.one_by_one(d, items, "t")
        for k in range(self.K):
            self.assertEqual(state(d, "b%d" % k), state(d, "t%d" % k), k)
            self.assertEqual(history(d, "b%d" % k), history(d, "t%d" % k), k)

    def test_items_on_one_session_apply_in_order(self):
        d = self.daemon()
        self.make(d, "b", "sgd")
        self.make(d, "t", "sgd")
        items = [
            {"session": "b0", "gradient": [1, 2, 3]},
            {"session": "b1", "gradient": [1, 1, 1]},
            {"session": "b0", "gradient": [-1, 0, 4], "step": 1},   # follows the first
            {"session": "b0", "gradient": [9, 9, 9], "step": 1},    # stale by now
            {"session": "b0", "gradient": [0.5, 0.5, 0.5], "loss": 2.0},
            {"session": "b1", "gradient": [2, 2, 2], "step": 5},    # wrong
        ]
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual(r.status, 200, r)
        res = r.body["results"]
        self.assertEqual([x.get("step") for x in res], [1, 1, 2, None, 3, None])
        self.assertEqual((res[3]["error"]["code"], res[3]["error"]["current_step"]), ("step_mismatch", 2))
        self.assertEqual((res[5]["error"]["code"], res[5]["error"]["current_step"]), ("step_mismatch", 1))
        for it in (items[0], items[2], items[4]):
            self.assertEqual(d.post("/v1/sessions/t0/step", without_session(it)).status, 200)
        self.assertEqual(d.post("/v1/sessions/t1/step", {"gradient": [1, 1, 1]}).status, 200)
        self.assertEqual(res[4]["params"], d.get("/v1/sessions/t0/params").body["params"])
        d.kill9()
        d.start()
        for k in (0, 1):
            self.assertEqual(state(d, "b%d" % k), state(d, "t%d" % k), k)

    def test_an_item_refused_after_journaling_holds_back_its_sessions_later_items(self):
        """A step that would overflow float32 is refused after its record is
        journaled (replay refuses it the same way); the next item on that
        session was journaled to follow it, so it is refused too, with
        step_mismatch, and a restart replays to the same states."""
        d = self.daemon()
        r = d.post("/v1/sessions", {"name": "o", "optimizer": "sgd", "dtype": "float32",
                                    "params": [3e38], "hyperparameters": {"lr": 1.0}})
        self.assertEqual(r.status, 201, r)
        self.make(d, "b", "sgd")
        r = d.post("/v1/steps", {"steps": [
            {"session": "o", "gradient": [-3e38]},
            {"session": "b0", "gradient": [1, 1, 1]},
            {"session": "o", "gradient": [1]},
            {"session": "b0", "gradient": [1, 1, 1]},
        ]})
        self.assertEqual(r.status, 200, r)
        res = r.body["results"]
        self.assertEqual(res[0]["error"]["code"], "non_finite", res)
        self.assertEqual((res[2]["error"]["code"], res[2]["error"]["current_step"]), ("step_mismatch", 0))
        self.assertEqual([res[1]["step"], res[3]["step"]], [1, 2])
        before = {n: state(d, n) for n in ("o", "b0")}
        d.kill9()
        d.start()
        for n, doc in before.items():
            self.assertEqual(state(d, n), doc, n)
        # the session takes steps again as usual
        self.assertEqual(d.post("/v1/steps", {"steps": [{"session": "o", "gradient": [1]}]})
                         .body["results"][0]["step"], 1)

    def test_crossing_batches_and_single_steps_all_finish(self):
        """Batches naming the same sessions in opposite orders, and single
        steps beside them: a batch locks its sessions in one global order,
        so none waits on another for good, and every step counts once."""
        d = self.daemon("--threads", "2")
        self.make(d, "b", "sgd")
        names = ["b%d" % k for k in range(self.K)]
        errors = []

        def batches(order):
            try:
                for _ in range(15):
                    r = d.post("/v1/steps?return=none", {"steps": [
                        {"session": n, "gradient": [0.0, 0.0, 0.0]} for n in order]}, timeout=60)
                    assert r.status == 200 and all("step" in x for x in r.body["results"]), r
            except Exception as e:  # reported below
                errors.append(e)

        def singles():
            try:
                for i in range(30):
                    r = d.post("/v1/sessions/%s/step" % names[i % self.K],
                               {"gradient": [0.0, 0.0, 0.0]}, timeout=60)
                    assert r.status == 200, r
            except Exception as e:
                errors.append(e)

        ts = [threading.Thread(target=batches, args=(names,)),
              threading.Thread(target=batches, args=(names[::-1],)),
              threading.Thread(target=batches, args=(names[3:] + names[:3],)),
              threading.Thread(target=singles)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        total = sum(d.get("/v1/sessions/" + n).body["step"] for n in names)
        self.assertEqual(total, 3 * 15 * self.K + 30)

    def test_rows_items_in_the_group_replay_after_kill9(self):
        """Rows steps of a table journal as rows records in the batch's one
        group, beside dense steps; a restart replays them to the same state."""
        d = self.daemon()
        r = d.post("/v1/sessions", {"name": "t", "optimizer": "sparse_adam", "size": 12, "row_size": 3})
        self.assertEqual(r.status, 201, r)
        self.make(d, "b")
        syncs = metric(d, "optd_journal_syncs_total")
        r = d.post("/v1/steps", {"steps": [
            {"session": "t", "rows": [1, 3], "gradient": [1, 2, 3, 4, 5, 6]},
            {"session": "b0", "gradient": [1, 1, 1]},
            {"session": "t", "rows": [3], "gradient": [0.5, 0.5, 0.5], "loss": 1.5}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x.get("step") for x in r.body["results"]], [1, 1, 2])
        self.assertEqual(r.body["results"][2]["rows"], [3])
        self.assertEqual(metric(d, "optd_journal_syncs_total") - syncs, 1)
        want = {n: state(d, n) for n in ("t", "b0")}
        d.kill9()
        d.start()
        for n, doc in want.items():
            self.assertEqual(state(d, n), doc, n)

    def test_items_follow_a_session_an_import_replaced(self):
        """Imports that change a session's shape put a new session in its
        place; a batch item that raced onto the old one follows the new
        one (or is size_mismatch when its gradient no longer fits), as a
        single step does: never not_found, never a 5xx.  Three importers
        race each other, so the session an item follows is often replaced
        again before the item gets it: one turn of following is not
        enough (it was, until a CI run under load got not_found)."""
        d = self.daemon()
        for name, size in (("r2", 2), ("r3", 3), ("r", 2), ("other", 2)):
            r = d.post("/v1/sessions", {"name": name, "optimizer": "sgd", "params": [1.0] * size})
            self.assertEqual(r.status, 201, r)
        shapes = [d.get("/v1/sessions/r3/state").body, d.get("/v1/sessions/r2/state").body]
        errors, seen = [], set()
        done = threading.Event()

        def imports(k):
            try:
                i = k
                while not done.is_set():
                    r = d.put("/v1/sessions/r/state", shapes[i % 2], timeout=60)
                    assert r.status == 200, r
                    i += 1
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=imports, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        try:
            # the items on "other" between make the window in which an
            # import may replace "r" after its item was prepared
            item = {"session": "r", "gradient": [0.5, 0.5]}
            for _ in range(40):
                r = d.post("/v1/steps?return=none",
                           {"steps": ([item] + [{"session": "other", "gradient": [0, 0]}] * 300) * 10 + [item]},
                           timeout=60)
                self.assertEqual(r.status, 200, r)
                res = r.body["results"]
                for x in res:
                    seen.add("step" if "step" in x else x["error"]["code"])
        finally:
            done.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertLessEqual(seen, {"step", "size_mismatch"})


class IntervalMode(unittest.TestCase):
    def test_a_batch_survives_a_clean_restart(self):
        """With --sync interval a batch's records are queued, not waited
        for; a SIGTERM syncs them, and the restart has them all."""
        d = Daemon(flags=["--sync", "interval"], data_dir=True)
        self.addCleanup(d.cleanup)
        d.start()
        for name in ("a", "b"):
            self.assertEqual(d.post("/v1/sessions", {"name": name, "optimizer": "adam",
                                                     "params": [1.0, 2.0]}).status, 201)
        r = d.post("/v1/steps", {"steps": [{"session": "ab"[k % 2], "gradient": [k, 1.0], "loss": k}
                                           for k in range(9)]})
        self.assertEqual([x["step"] for x in r.body["results"]], [1, 1, 2, 2, 3, 3, 4, 4, 5])
        want = {n: (state(d, n), history(d, n)) for n in ("a", "b")}
        d.restart()
        for n, (st, hist) in want.items():
            self.assertEqual((state(d, n), history(d, n)), (st, hist), n)


class GroupCommitFailure(unittest.TestCase):
    """The disk fails the batch's write or sync: the journaled items get
    507 insufficient_storage and nothing changes; items refused before
    journaling keep their own errors."""

    def check(self, env):
        d, ctl = shim_daemon(self, "always", env)
        for name in ("a", "b", "ta", "tb"):
            r = d.post("/v1/sessions", {"name": name, "optimizer": "adam", "params": [1.0, 2.0]})
            self.assertEqual(r.status, 201, r)
        for name in ("a", "ta"):
            self.assertEqual(d.post("/v1/sessions/%s/step" % name, {"gradient": [1, 1]}).status, 200)
        before = {n: (state(d, n), d.get("/v1/sessions/%s/history" % n).body) for n in ("a", "b")}
        items = [
            {"session": "a", "gradient": [0.5, -0.5], "loss": 1.0},
            {"session": "nope", "gradient": [1, 1]},
            {"session": "b", "gradient": [1, 2], "step": 3},
            {"session": "b", "gradient": [1, 2], "step": 0},
            {"session": "a", "gradient": [1, 2]},
            {"session": "b", "gradient": [1, 2, 3]},
        ]
        open(ctl, "w").close()
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual(r.status, 200, r)
        codes = [x.get("error", {}).get("code") for x in r.body["results"]]
        self.assertEqual(codes, ["insufficient_storage", "not_found", "step_mismatch",
                                 "insufficient_storage", "insufficient_storage", "size_mismatch"])
        for n, (st, hist) in before.items():
            self.assertEqual(state(d, n), st, n)
            self.assertEqual(d.get("/v1/sessions/%s/history" % n).body, hist, n)
        os.unlink(ctl)
        d.kill9()  # nothing of the refused batch may come back
        d._stopped = False
        d.start()
        for n, (st, _) in before.items():
            self.assertEqual(state(d, n), st, n)
        # the disk recovered: the same batch goes through, as single steps would
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual([x.get("step") for x in r.body["results"]], [2, None, None, 1, 3, None])
        for it in (items[0], items[4]):
            self.assertEqual(d.post("/v1/sessions/ta/step", without_session(it)).status, 200)
        self.assertEqual(d.post("/v1/sessions/tb/step", {"gradient": [1, 2]}).status, 200)
        self.assertEqual(state(d, "a"), state(d, "ta"))
        self.assertEqual(state(d, "b"), state(d, "tb"))

    def test_the_write_fails(self):
        self.check({})

    def test_the_sync_fails(self):
        # the first write in the data directory (the batch's records) goes
        # through, the fdatasync after it fails
        self.check({"FAILIO_AFTER": "1", "FAILIO_ERRNO": "5"})


if __name__ == "__main__":
    unittest.main()
