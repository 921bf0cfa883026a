"""test_tables_attack.py: API.md 1.1 "Tables" and the batch's group commit
under hostile input: row numbers at and past every bound, Optd-Rows that
does not match the body, ?rows= lists malformed every way, non-finite
results on one row of many, and batches mixing rows and dense items on
one table with --sync always on a failing disk and across kill -9.
Every refusal leaves the session exactly as it was.
"""

import json
import os
import random
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, DaemonTestCase  # noqa: E402
from test_durability import shim_daemon  # noqa: E402

BIN = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}


def rows_body(rows, values, fmt="<f"):
    return (b"".join(struct.pack("<Q", r) for r in rows) +
            b"".join(struct.pack(fmt, v) for v in values))


def state(d, name):
    doc = d.get("/v1/sessions/%s/state" % name).body
    for k in ("name", "created_at", "updated_at"):
        doc.pop(k, None)
    return doc


class Hostile(DaemonTestCase):
    def table(self, optimizer="sgd", hp=None, dtype="float32", rows=8, R=4, **kw):
        n = self.uname()
        params = [0.25 * (i - 3) for i in range(rows * R)]
        self.d.create(n, optimizer, params=params, row_size=R, dtype=dtype,
                      hyperparameters=hp or {"lr": 0.5}, **kw)
        return n

    def unchanged(self, n, before):
        self.assertEqual(state(self.d, n), before)
        self.assertEqual(self.d.get("/v1/sessions/%s/history" % n).body["history"], [])

    def test_a_worker_named_rows_takes_a_plain_step(self):
        # The string "rows" as a value is no "rows" key: this is one
        # worker's contribution, not a rows step missing its rows.
        n = self.uname()
        r = self.d.put("/v1/sessions/" + n, {"optimizer": "sgd", "params": [1.0, 2.0],
                                             "aggregate": {"workers": 1}})
        self.assertEqual(r.status, 201, r)
        r = self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1, 1], "worker": "rows", "step": 0})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["step"], 1)
        # A "rows" key with space before its colon is still a rows step.
        t = self.table()
        r = self.d.post("/v1/sessions/%s/step" % t, b'{"rows" \n: [1], "gradient": [1, 1, 1, 1]}',
                        headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["rows"], [1])

    def test_a_rows_step_is_no_contribution(self):
        # Optd-Worker on a rows step is refused, as the field "worker" is,
        # on a plain table (where it was ignored and the step applied) and
        # on an aggregating one.
        body = rows_body([1], [1, 1, 1, 1])
        hdr = dict(BIN, **{"Optd-Rows": "1", "Optd-Worker": "w1", "Optd-Expect-Step": "0"})
        for agg in (None, {"workers": 2}):
            n = self.table(**({"aggregate": agg} if agg else {}))
            before = state(self.d, n)
            r = self.d.post("/v1/sessions/%s/step" % n, body, headers=hdr)
            self.assertIn("Optd-Worker", self.assertError(r, 400, "invalid_argument")["message"])
            r = self.d.post("/v1/sessions/%s/step" % n, {"rows": [1], "gradient": [1, 1, 1, 1]},
                            headers={"Optd-Worker": "w1"})
            self.assertIn("Optd-Worker", self.assertError(r, 400, "invalid_argument")["message"])
            self.unchanged(n, before)

    def test_json_row_numbers_out_of_every_range(self):
        n = self.table()
        before = state(self.d, n)
        for rows in ("18446744073709551615", "9223372036854775808", "9223372036854775807",
                     "-1", "1.0", "1e0", '"1"', "true", "null", "8", "[1]"):
            body = ('{"rows": [%s], "gradient": [1, 1, 1, 1]}' % rows).encode()
            r = self.d.post("/v1/sessions/%s/step" % n, body, headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (rows, r))
        self.unchanged(n, before)

    def test_binary_optd_rows_against_the_body(self):
        n = self.table()
        before = state(self.d, n)
        one = rows_body([1], [1, 1, 1, 1])  # 24 bytes: one row of 4 float32
        cases = [("1", one[:-4], "size_mismatch"), ("1", one + b"\0\0\0\0", "size_mismatch"),
                 ("2", one, "size_mismatch"), ("0", b"", "size_mismatch"), ("0", one, "size_mismatch"),
                 ("18446744073709551615", one, "size_mismatch"),
                 ("2305843009213693952", one, "size_mismatch"),   # n * 8 wraps to 0
                 ("768614336404564651", one, "size_mismatch"),    # n * 24 wraps to 24 + ...
                 ("18446744073709551616", one, "invalid_argument"),
                 ("-1", one, "invalid_argument"), ("1.0", one, "invalid_argument"),
                 ("0x1", one, "invalid_argument"), ("", one, "invalid_argument"),
                 ("1", rows_body([2 ** 64 - 1], [1, 1, 1, 1]), "invalid_argument"),
                 ("1", rows_body([2 ** 63], [1, 1, 1, 1]), "invalid_argument"),
                 ("1", rows_body([8], [1, 1, 1, 1]), "invalid_argument"),
                 ("1", rows_body([1], [float("nan"), 1, 1, 1]), "non_finite")]
        for hdr, body, code in cases:
            r = self.d.post("/v1/sessions/%s/step" % n, body, headers=dict(BIN, **{"Optd-Rows": hdr}))
            self.assertError(r, 400, code)
        self.unchanged(n, before)
        # a thousand repeats of one row: summed, one row changes
        r = self.d.post("/v1/sessions/%s/step" % n, rows_body([3] * 5000, [0.001] * 20000),
                        headers=dict(BIN, **{"Optd-Rows": "5000"}))
        self.assertEqual(r.status, 200, r)
        after = self.d.get("/v1/sessions/%s/params" % n).body["params"]
        changed = [i // 4 for i, (a, b) in enumerate(zip(before["params"], after)) if a != b]
        self.assertEqual(sorted(set(changed)), [3])

    def test_optd_rows_on_a_dense_session(self):
        # A session without row_size is a table of rows of one value: sgd
        # takes the rows step, adam refuses it, naming why.
        n = self.uname()
        self.d.create(n, "sgd", params=[1.0, 2.0, 3.0], hyperparameters={"lr": 1.0})
        r = self.d.post("/v1/sessions/%s/step" % n, rows_body([2], [0.5], "<d"),
                        headers=dict(BIN, **{"Optd-Rows": "1"}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.d.get("/v1/sessions/%s/params" % n).body["params"], [1.0, 2.0, 2.5])
        a = self.uname()
        self.d.create(a, "adam", params=[1.0, 2.0])
        before = state(self.d, a)
        r = self.d.post("/v1/sessions/%s/step" % a, rows_body([1], [0.5], "<d"),
                        headers=dict(BIN, **{"Optd-Rows": "1"}))
        self.assertIn("sparse", self.assertError(r, 400, "invalid_argument")["message"])
        r = self.d.post("/v1/steps", {"steps": [{"session": a, "rows": [0], "gradient": [1]},
                                                {"session": n, "rows": [0], "gradient": [1]}]})
        self.assertEqual(r.body["results"][0]["error"]["code"], "invalid_argument", r)
        self.assertEqual(r.body["results"][1]["step"], 2, r)
        self.unchanged(a, before)
        # reading rows of a dense session reads its values
        r = self.d.get("/v1/sessions/%s/params?rows=2,0" % n)
        self.assertEqual(r.body["params"], [2.5, 0.0])
        r = self.d.post("/v1/sessions/%s/rows" % n, {"rows": [1]})
        self.assertEqual(r.body["params"], [2.0])

    def test_rows_query_malformed(self):
        n = self.table()
        good = self.d.get("/v1/sessions/%s/params?rows=1" % n).body
        self.assertEqual(self.d.get("/v1/sessions/%s/params?rows=01" % n).body, good)
        self.assertEqual(len(self.d.get("/v1/sessions/%s/params?rows=%s" % (n, ",".join(["7"] * 1000))).body["rows"]),
                         1000)
        for q in [",".join(["7"] * 1001), "", ",", "1,", ",1", "1,,2", "%201", "1%20", "+1", "-1", "1.0",
                  "0x1", "8", "18446744073709551615", "18446744073709551616", "99999999999999999999999",
                  "1a", "%00"]:
            r = self.d.get("/v1/sessions/%s/params?rows=%s" % (n, q))
            self.assertError(r, 400, "invalid_argument")

    def test_max_grad_norm_and_one_row_overflowing(self):
        # Clipping in force; row 5 overflows float32, rows 0 and 7 do not:
        # nothing of any row changes, nor the step, nor the history.
        n = self.table("adagrad", {"lr": 1e30}, max_grad_norm=1e30)
        before = state(self.d, n)
        r = self.d.post("/v1/sessions/%s/step" % n,
                        {"rows": [0, 5, 7], "gradient": [1e-3] * 4 + [1e20, 1, 1, 1] + [1e-3] * 4})
        self.assertEqual(r.status, 400, r)
        self.unchanged(n, before)
        s = self.table("sgd", {"lr": 1e30}, max_grad_norm=1e30)
        before = state(self.d, s)
        r = self.d.post("/v1/sessions/%s/step" % s,
                        {"rows": [0, 5, 7], "gradient": [1e-3] * 4 + [1e20, 1, 1, 1] + [1e-3] * 4})
        self.assertIn("params[20]", self.assertError(r, 400, "non_finite")["message"])
        self.unchanged(s, before)

    def test_sparse_adam_dense_step_non_finite(self):
        n = self.table("sparse_adam", {"lr": 1e39})
        before = state(self.d, n)
        r = self.d.post("/v1/sessions/%s/step" % n, {"gradient": [1.0] * 32})
        self.assertError(r, 400, "non_finite")
        body = b"".join(struct.pack("<f", v) for v in [1.0] * 31 + [float("inf")])
        r = self.d.post("/v1/sessions/%s/step" % n, body, headers=BIN)
        self.assertError(r, 400, "non_finite")
        self.unchanged(n, before)

    def test_import_with_a_wrong_row_size_or_size(self):
        n = self.table("sparse_adam")
        self.assertEqual(self.d.post("/v1/sessions/%s/step" % n, {"rows": [1], "gradient": [1] * 4}).status, 200)
        doc = self.d.get("/v1/sessions/%s/state" % n).body
        for change in ({"row_size": 3}, {"row_size": 0}, {"row_size": -4}, {"row_size": 64},
                       {"row_size": 2 ** 64}, {"row_size": "4"}, {"size": 28}, {"size": 36}):
            bad = dict(doc, **change)
            r = self.d.put("/v1/sessions/%s/state" % self.uname(), json.dumps(bad).encode(),
                           headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (change, r))
        # PATCH cannot change row_size
        r = self.d.patch("/v1/sessions/" + n, {"row_size": 2})
        self.assertIn("row_size", self.assertError(r, 400, "invalid_argument")["message"])
        self.assertEqual(self.d.get("/v1/sessions/" + n).body["row_size"], 4)

    def test_batch_of_ten_thousand_with_repeats(self):
        n = self.table("sparse_adam", rows=16)
        twin = self.table("sparse_adam", rows=16)
        items = []
        for i in range(10000):
            if i % 3 == 2:
                items.append({"session": n, "gradient": [0.001 * (i % 7)] * 64})
            else:
                items.append({"session": n, "rows": [i % 16, (i * 5) % 16, i % 16],
                              "gradient": [0.01 * (i % 11 - 5)] * 12})
        r = self.d.post("/v1/steps?return=none", {"steps": items})
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x.get("step") for x in r.body["results"]], list(range(1, 10001)))
        for it in items[:300]:
            body = {k: v for k, v in it.items() if k != "session"}
            self.assertEqual(self.d.post("/v1/sessions/%s/step?return=none" % twin, body).status, 200)
        a = state(self.d, n)
        self.assertEqual(a["step"], 10000)
        # the first 300 agree with the twin: replay them on a third session
        third = self.table("sparse_adam", rows=16)
        r = self.d.post("/v1/steps?return=none", {"steps": [dict(it, session=third) for it in items[:300]]})
        self.assertEqual(state(self.d, third), state(self.d, twin))


def peak_rss_kib(d):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


class RowsStepAfterStep0ImportWithoutBuffers(DaemonTestCase):
    """A state import at step 0 may leave out the optimizer's buffers (the
    first step starts them).  A dense step then starts them, but a rows
    step on sparse_adam or adagrad read the missing buffer (NULL) and
    killed the daemon (SIGSEGV; UBSan: kernels_tmpl.h, load of null
    pointer): found by the differential tester, in every binary since
    tables.  The rows step starts them as the dense step does, answering
    what the same rows step on a freshly created twin answers."""

    def check(self, optimizer, state, hyperparameters=None):
        n = self.uname()
        twin = self.uname()
        doc = {"name": n, "optimizer": optimizer, "dtype": "float64", "size": 12, "row_size": 3,
               "step": 0, "params": [0.25] * 12, "state": state}
        if hyperparameters:
            doc["hyperparameters"] = hyperparameters
        r = self.d.put("/v1/sessions/%s/state" % n, doc)
        self.assertEqual(r.status, 201, r)
        self.d.create(twin, optimizer, params=[0.25] * 12, row_size=3,
                      **({"hyperparameters": hyperparameters} if hyperparameters else {}))
        step = {"rows": [1, 3, 1], "gradient": [0.1, -0.2, 0.3, 0.5, 0.0, -1.0, 0.1, 0.1, 0.1]}
        got = self.d.post("/v1/sessions/%s/step" % n, step)
        want = self.d.post("/v1/sessions/%s/step" % twin, step)
        self.assertEqual(want.status, 200, want)
        self.assertEqual((got.status, got.raw), (want.status, want.raw))
        self.d.assert_alive()
        # and the state it started is the twin's
        a = self.d.get("/v1/sessions/%s/state" % n).body
        b = self.d.get("/v1/sessions/%s/state" % twin).body
        self.assertEqual(a["state"], b["state"])

    def test_sparse_adam_no_state(self):
        self.check("sparse_adam", {})

    def test_sparse_adam_only_exp_avg(self):
        self.check("sparse_adam", {"exp_avg": [0.0] * 12})

    def test_sparse_adam_only_exp_avg_sq(self):
        self.check("sparse_adam", {"exp_avg_sq": [0.0] * 12})

    def test_adagrad_no_state(self):
        self.check("adagrad", {})

    def test_adagrad_no_state_with_initial_accumulator(self):
        self.check("adagrad", {}, {"initial_accumulator_value": 0.5})


class RowsByTheMillion(DaemonTestCase):
    """POST .../rows takes any number of rows: five million of them (a 10
    MB body) are read from the text, 8 bytes each, not as a Jansson value
    each (some 250 MB, outside --max-memory), and the answer that does not
    fit the budget is 429."""
    FLAGS = ["--max-memory", "100000000"]

    def test_five_million_rows(self):
        n = self.uname()
        self.d.create(n, "sgd", size=64, row_size=4)
        base = peak_rss_kib(self.d)
        body = b'{"rows": [' + b"0," * 4999999 + b"0]}"
        r = self.d.post("/v1/sessions/%s/rows" % n, body, headers={"Content-Type": "application/json"},
                        timeout=120)
        self.assertIn("5000000 rows", self.assertError(r, 429, "resource_exhausted")["message"])
        # the body, its rows and the daemon's own: well under Jansson's 250 MB
        self.assertLess(peak_rss_kib(self.d) - base, 120 * 1024)

    def test_the_text_read_as_jansson_would(self):
        n = self.uname()
        self.d.create(n, "sgd", params=[float(i) for i in range(8)], row_size=2)
        url = "/v1/sessions/%s/rows" % n
        for text, rows in (('{"rows":[3,0,3]}', [3, 0, 3]), ('{ "rows" : [ 1 ,\n2 ] }', [1, 2]),
                           ('{"rows": [0]}', [0])):
            r = self.d.post(url, text.encode(), headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 200, (text, r))
            self.assertEqual(r.body["rows"], rows)
        for text, code in (('{"rows": []}', "invalid_argument"), ('{"rows": [4]}', "invalid_argument"),
                           ('{"rows": [-1]}', "invalid_argument"), ('{"rows": [1.0]}', "invalid_argument"),
                           ('{"rows": [1e0]}', "invalid_argument"), ('{"rows": ["1"]}', "invalid_argument"),
                           ('{"rows": [18446744073709551615]}', "invalid_argument"),
                           ('{"rows": [01]}', "invalid_json"), ('{"rows": [1,,2]}', "invalid_json"),
                           ('{"rows": [1,]}', "invalid_json"), ('{"rows": [1 2]}', "invalid_json"),
                           ('{"rows": [1], "x": 1}', "invalid_argument"),
                           ('{"rows": [1], "rows": [2]}', "invalid_json"), ('{"rows": [1]', "invalid_json"),
                           ('{"rows": 1}', "invalid_argument"), ('{}', "invalid_argument")):
            r = self.d.post(url, text.encode(), headers={"Content-Type": "application/json"})
            self.assertError(r, 400, code)


class FailingDisk(unittest.TestCase):
    """A batch mixing rows and dense items on one table, --sync always:
    the disk fails, every journaled item is 507 and nothing changes, even
    across kill -9; the disk recovers, the same batch gives the bits of a
    twin stepped one request at a time."""

    def test_mixed_batch_on_a_failing_disk(self):
        d, ctl = shim_daemon(self, "always", {})
        for name in ("t", "twin"):
            r = d.put("/v1/sessions/" + name, {"optimizer": "sparse_adam", "size": 24, "row_size": 3,
                                               "dtype": "float32"})
            self.assertEqual(r.status, 201, r)
        items = [{"session": "t", "rows": [1, 7, 1], "gradient": [0.5] * 9},
                 {"session": "t", "gradient": [0.25] * 24, "loss": 2.0},
                 {"session": "t", "rows": [8], "gradient": [1, 1, 1]},
                 {"session": "t", "rows": [0], "gradient": [-1, 2, 3], "step": 2}]
        before = state(d, "t")
        open(ctl, "w").close()
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual(r.status, 200, r)
        codes = [x.get("error", {}).get("code") for x in r.body["results"]]
        self.assertEqual(codes, ["insufficient_storage", "insufficient_storage", "invalid_argument",
                                 "insufficient_storage"])
        self.assertEqual(state(d, "t"), before)
        os.unlink(ctl)
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(state(d, "t"), before)
        r = d.post("/v1/steps", {"steps": items})
        self.assertEqual([x.get("step") for x in r.body["results"]], [1, 2, None, 3], r)
        for it in (items[0], items[1], items[3]):
            body = {k: v for k, v in it.items() if k not in ("session", "step")}
            self.assertEqual(d.post("/v1/sessions/twin/step", body).status, 200)
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(state(d, "t")["params"], state(d, "twin")["params"])
        self.assertEqual(state(d, "t")["state"], state(d, "twin")["state"])


TABLE = {"optimizer": "sparse_adam", "size": 64, "row_size": 4, "dtype": "float32"}


def mixed_items(session, n, seed):
    rng = random.Random(seed)
    items = []
    for i in range(n):
        if i % 4 == 3:
            items.append({"session": session, "gradient": [0.001 * (i % 9)] * 64})
        else:
            k = rng.randint(1, 4)
            items.append({"session": session, "rows": [rng.randrange(16) for _ in range(k)],
                          "gradient": [0.01 * (i % 13 - 6)] * (4 * k)})
    return items


class Races(unittest.TestCase):
    """Batches mixing rows and dense items, single rows steps, reads of
    rows, and deletes with re-creates, all at once on --threads 2 with
    --sync always; then kill -9 and restart."""

    def test_batches_steps_and_deletes_at_once(self):
        d = Daemon(flags=["--sync", "always", "--threads", "2"], data_dir=True)
        self.addCleanup(d.cleanup)
        d.start()
        names = ["t%d" % i for i in range(4)]
        for n in names:
            self.assertEqual(d.put("/v1/sessions/" + n, TABLE).status, 201)
        bad = []

        def batcher(seed):
            rng = random.Random(seed)
            for _ in range(20):
                items = [dict(it, session=rng.choice(names)) for it in mixed_items("x", rng.randint(1, 200), seed)]
                r = d.post("/v1/steps", {"steps": items})
                if r.status != 200:
                    bad.append(r)
                    continue
                bad.extend(x for x in r.body["results"] if x.get("error", {}).get("code", "not_found") != "not_found")

        def single(seed):
            rng = random.Random(seed)
            for _ in range(150):
                r = d.post("/v1/sessions/%s/step" % rng.choice(names), {"rows": [rng.randrange(16)], "gradient": [1, 2, 3, 4]})
                if r.status not in (200, 404):
                    bad.append(r)

        def deleter(seed):
            rng = random.Random(seed)
            for _ in range(40):
                n = rng.choice(names)
                d.delete("/v1/sessions/" + n)
                r = d.put("/v1/sessions/" + n, TABLE)
                if r.status not in (201, 409):
                    bad.append(r)
                r = d.get("/v1/sessions/%s/params?rows=1,2,3" % n)
                if r.status not in (200, 404):
                    bad.append(r)

        threads = [threading.Thread(target=f, args=(i,)) for i, f in enumerate([batcher, batcher, single, single, deleter])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(bad, [])
        before = {n: state(d, n) for n in names}
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual({n: state(d, n) for n in names}, before)

    def test_kill9_during_a_big_batch(self):
        # Whatever moment the kill lands, the table comes back as a replay
        # of whole batches: the group commit is all of a batch or none.
        d = Daemon(flags=["--sync", "always"], data_dir=True)
        self.addCleanup(d.cleanup)
        d.start()
        self.assertEqual(d.put("/v1/sessions/t", TABLE).status, 201)
        items = mixed_items("t", 10000, 3)
        body = json.dumps({"steps": items}).encode()
        applied = []

        def send():
            try:
                d.post("/v1/steps?return=none", body, headers={"Content-Type": "application/json"}, timeout=60)
            except Exception:  # noqa: BLE001 - the kill cuts the connection
                pass
        for delay in (0.05, 0.15, 0.3, 0.5):
            th = threading.Thread(target=send)
            th.start()
            time.sleep(delay)
            d.kill9()
            th.join()
            d._stopped = False
            d.start()
            k = d.get("/v1/sessions/t").body["step"]
            self.assertEqual((k - sum(applied)) % len(items), 0, k)
            applied.append(k - sum(applied))
        self.assertEqual(d.put("/v1/sessions/twin", TABLE).status, 201)
        for a in applied:
            if a:
                r = d.post("/v1/steps?return=none", {"steps": [dict(it, session="twin") for it in items]})
                self.assertEqual(r.status, 200)
        a, b = state(d, "t"), state(d, "twin")
        self.assertEqual((a["step"], a["params"], a["state"]), (b["step"], b["params"], b["state"]))


if __name__ == "__main__":
    unittest.main()
