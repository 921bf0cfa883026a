"""test_deltas.py: big sessions left to their journal records (--sync interval).

A session whose image is 1 MiB or more is not rewritten whole by every flush:
its journal records since its snapshot (the deltas) stay beside the snapshot,
in the journal files kept for them, until they reach four times its image.
These tests check what the README promises of that, against a twin daemon
that never crashed (memory only, fed the same inputs), bit for bit:

- a big dense session stepped once per interval keeps its snapshot file and
  its journal files; kill -9 and the restart replays snapshot + kept
  journals to the same state; once the deltas outgrow four images it is
  snapshotted and the files go;
- a kept journal damaged in the middle is set aside (a copy) and cut where
  the damage begins; the session comes back at the consistent earlier step,
  and records in later kept files that no longer follow are never applied,
  not even after the next crash;
- a name deleted, or deleted and created again, while kept journals still
  hold its old records comes back as it last was;
- with tables (when the daemon knows "row_size"): rows steps killed at
  random moments come back at a consistent earlier state, and the table's
  snapshot is left to its deltas.

Waiting is on what the daemon logs at --log-level debug after a flush that
left a session to its records, never on time.
"""

import array
import glob
import os
import random
import threading
import http.client
import json
import time
import unittest

from harness import Daemon

LEFT = "left to their journal records"
N = 100000  # amsgrad adam, float32: params 0.4 MB, image 1.6 MB (over the 1 MiB
            # below which a session is always snapshotted): a step's record is a quarter
DUE = 17     # steps whose records outgrow four images: its snapshot is due
FLAGS = ["--sync", "interval", "--snapshot-interval", "1", "--log-level", "debug"]


def grad_bytes(k, n=N):
    """Step k's gradient as float32 bytes, varying with k (period 11 in j)."""
    period = array.array("f", [((k * 7 + j * 3) % 11 - 5) / 10.0 for j in range(11)])
    a = period * (n // 11 + 1)
    return a[:n].tobytes()


def journals(d):
    return sorted(glob.glob(os.path.join(d.data_dir, "journal-*.log")))


def snapshots(d):
    return sorted(glob.glob(os.path.join(d.data_dir, "s-*.snap")))


def left_count(d):
    return d.stderr_text(all_runs=True).count(LEFT)


def wait_for(what, cond, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("waited %gs for %s" % (timeout, what))


def wait_flush_left(d):
    """Until a flush that began after now has left a session to its records
    (so it rotated the journal after every change answered so far): the
    first such line may come from a flush already under way."""
    since = left_count(d)
    wait_for("a flush leaving a session to its journal records",
             lambda: left_count(d) >= since + 2)


def wait_rotated(d):
    """Until the journal moved on to a new file: a rotation syncs the file it
    leaves, which holds every change answered so far."""
    newest = journals(d)[-1]
    wait_for("a journal rotation", lambda: journals(d)[-1] > newest)


def step_bin(d, name, body, expect=None):
    h = {"Content-Type": "application/octet-stream"}
    if expect is not None:
        h["Optd-Expect-Step"] = str(expect)
    r = d.post("/v1/sessions/%s/step?return=none" % name, body, headers=h)
    assert r.status == 200, r
    return r


def params_raw(d, name):
    r = d.get("/v1/sessions/%s/params" % name, headers={"Accept": "application/octet-stream"})
    assert r.status == 200, r
    return int(r.headers["Optd-Step"]), r.raw


def core(d, name):
    """Step, params, optimizer buffers, and the history without its times."""
    st = d.state(name)
    h = d.get("/v1/sessions/%s/history" % name).body["history"]
    return (st["step"], st["params"], st.get("state"),
            [(e["step"], e["lr"], e["grad_norm"]) for e in h])


class Twin:
    """A memory-only daemon fed the same creates and steps."""

    def __init__(self):
        self.d = Daemon()
        self.d.start()

    def close(self):
        self.d.stop()
        self.d.cleanup()


def create_big(d, name, n=N, lr=0.01):
    d.create(name, optimizer="adam", size=n, dtype="float32",
             hyperparameters={"lr": lr, "amsgrad": True})


class DenseDeltas(unittest.TestCase):
    """Needs nothing from tables: a big dense session's small changes."""

    def daemons(self):
        d = Daemon(data_dir=True, flags=FLAGS)
        self.addCleanup(d.cleanup)
        d.start()
        twin = Twin()
        self.addCleanup(twin.d.cleanup)
        return d, twin

    def both(self, d, twin, fn):
        fn(d)
        fn(twin.d)

    def test_left_to_journal_then_compacted(self):
        d, twin = self.daemons()
        self.both(d, twin, lambda x: create_big(x, "big"))
        wait_for("the created session's snapshot", lambda: len(snapshots(d)) == 1)
        snap = snapshots(d)[0]
        ino = os.stat(snap).st_ino
        for k in (1, 2):
            self.both(d, twin, lambda x: step_bin(x, "big", grad_bytes(k), expect=k - 1))
            wait_flush_left(d)
            # the snapshot was not rewritten; the journal files stay for it
            self.assertEqual(os.stat(snap).st_ino, ino, k)
        self.assertGreaterEqual(len(journals(d)), 3, journals(d))
        d.kill9()
        d.start()
        self.assertEqual(params_raw(d, "big"), params_raw(twin.d, "big"))
        self.assertEqual(core(d, "big"), core(twin.d, "big"))
        # more steps: the deltas outgrow four images, the session is
        # rewritten, and the journal files holding them go
        for k in range(3, DUE + 1):
            self.both(d, twin, lambda x: step_bin(x, "big", grad_bytes(k), expect=k - 1))
        wait_for("the snapshot rewritten", lambda: os.stat(snap).st_ino != ino)
        wait_for("the kept journals deleted", lambda: len(journals(d)) <= 2)
        d.kill9()
        d.start()
        self.assertEqual(core(d, "big"), core(twin.d, "big"))
        d.stop()
        twin.close()

    def test_damaged_kept_journal(self):
        d, twin = self.daemons()
        create_big(d, "big")
        create_big(twin.d, "big")
        wait_for("the created session's snapshot", lambda: len(snapshots(d)) == 1)
        files = []
        for k in (1, 2, 3):
            step_bin(d, "big", grad_bytes(k), expect=k - 1)
            wait_flush_left(d)
            files.append(journals(d)[-2])  # the file the flush closed holds step k
        self.assertEqual(len(set(files)), 3, files)
        d.kill9()
        # a byte in the middle of step 2's gradient: its record's CRC fails
        with open(files[1], "r+b") as f:
            f.seek(os.path.getsize(files[1]) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x55]))
        d.start()
        self.assertEqual(len(glob.glob(files[1] + ".damaged-*")), 1, os.listdir(d.data_dir))
        self.assertIn("damaged", d.stderr_text())
        # step 1 survives; step 3's record no longer follows and is not applied
        step_bin(twin.d, "big", grad_bytes(1), expect=0)
        self.assertEqual(core(d, "big"), core(twin.d, "big"))
        # the client goes on with other gradients; after the next crash the
        # stale record of the old step 3 (still kept) must not come back
        for k in (2, 3):
            self.both(d, twin, lambda x: step_bin(x, "big", grad_bytes(k + 100), expect=k - 1))
            wait_flush_left(d)
        self.assertTrue(os.path.exists(files[2]), "the stale file was dropped: nothing tested")
        d.kill9()
        d.start()
        self.assertEqual(params_raw(d, "big"), params_raw(twin.d, "big"))
        self.assertEqual(core(d, "big"), core(twin.d, "big"))
        d.stop()
        twin.close()

    def test_delete_and_recreate_between_kept_journals(self):
        d, twin = self.daemons()
        # "pin" is left to its deltas first, so every later file is kept
        for x in (d, twin.d):
            create_big(x, "pin")
            create_big(x, "gone")
            create_big(x, "again")
        wait_for("three snapshots", lambda: len(snapshots(d)) == 3)
        self.both(d, twin, lambda x: step_bin(x, "pin", grad_bytes(1), expect=0))
        wait_flush_left(d)
        for name in ("gone", "again"):
            self.both(d, twin, lambda x: step_bin(x, name, grad_bytes(5), expect=0))
        wait_flush_left(d)
        # deleted (its records stay in kept files), and one created again
        for x in (d, twin.d):
            self.assertEqual(x.delete("/v1/sessions/gone").status, 204)
            self.assertEqual(x.delete("/v1/sessions/again").status, 204)
            x.create("again", optimizer="sgd", params=[1.0, 2.0, 3.0])
            r = x.post("/v1/sessions/again/step", {"gradient": [0.5, 0.25, -1.0], "step": 0})
            self.assertEqual(r.status, 200, r)
        self.both(d, twin, lambda x: step_bin(x, "pin", grad_bytes(2), expect=1))
        wait_flush_left(d)
        self.assertGreaterEqual(len(journals(d)), 3, journals(d))
        d.kill9()
        d.start()
        self.assertEqual(d.get("/v1/sessions/gone").status, 404)
        self.assertEqual(core(d, "again"), core(twin.d, "again"))
        self.assertEqual(core(d, "pin"), core(twin.d, "pin"))
        d.stop()
        twin.close()


# ---- tables (when the daemon has them) ---------------------------------------

ROWS = 10000  # x 16 float32, sparse_adam: a 1.9 MB image, so a big session
R = 16
BATCH = 64


def has_tables(d):
    r = d.post("/v1/sessions", {"name": "probe-rows", "optimizer": "sgd", "size": 4,
                                "row_size": 2})
    if r.status != 201 or r.body.get("row_size") != 2:
        return False
    d.delete("/v1/sessions/probe-rows")
    return True


def rows_step(k):
    """Step k's rows (some repeated) and gradient."""
    rng = random.Random(k)
    rows = [rng.randrange(ROWS) for _ in range(BATCH)]
    g = [((k * 7 + j * 3) % 11 - 5) / 10.0 for j in range(BATCH * R)]
    return rows, g


class TableCrash(unittest.TestCase):
    """kill -9 while a client sends rows steps, --sync interval: each restart
    finds the table at a consistent earlier step (never past the one in
    flight), equal to the twin's after that many steps, and the table's
    snapshot is left to its deltas meanwhile."""

    def test_kill9_during_rows_steps(self):
        d = Daemon(data_dir=True, flags=FLAGS)
        self.addCleanup(d.cleanup)
        d.start()
        if not has_tables(d):
            self.skipTest("this daemon has no tables (row_size)")
        twin = Twin()
        self.addCleanup(twin.d.cleanup)
        spec = {"name": "emb", "optimizer": "sparse_adam", "size": ROWS * R, "row_size": R,
                "dtype": "float32", "hyperparameters": {"lr": 0.01}}
        for x in (d, twin.d):
            r = x.post("/v1/sessions", spec)
            self.assertEqual(r.status, 201, r)
        wait_for("the table's snapshot", lambda: len(snapshots(d)) == 1)
        rng = random.Random(77)
        last, twin_at = 0, 0
        for rnd in range(int(os.environ.get("OPTD_CRASH_ROUNDS", "3"))):
            stop = threading.Event()
            acked = [last]

            def client():
                c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
                try:
                    while not stop.is_set():
                        k = acked[0] + 1
                        rows, g = rows_step(k)
                        body = json.dumps({"rows": rows, "gradient": g, "step": k - 1})
                        try:
                            c.request("POST", "/v1/sessions/emb/step?return=none", body=body,
                                      headers={"Content-Type": "application/json"})
                            resp = c.getresponse()
                            resp.read()
                        except (OSError, http.client.HTTPException):
                            return
                        assert resp.status == 200, resp.status
                        acked[0] = k
                finally:
                    c.close()

            t = threading.Thread(target=client)
            t.start()
            time.sleep(rng.uniform(0.3, 1.2))
            d.kill9()
            stop.set()
            t.join(10)
            d.start()
            s = d.state("emb")["step"]
            self.assertLessEqual(s, acked[0] + 1, rnd)
            self.assertGreaterEqual(s, twin_at, "went back past an earlier restored state")
            for k in range(twin_at + 1, s + 1):
                rows, g = rows_step(k)
                r = twin.d.post("/v1/sessions/emb/step?return=none", {"rows": rows, "gradient": g})
                self.assertEqual(r.status, 200, r)
            twin_at = last = s
            self.assertEqual(params_raw(d, "emb"), params_raw(twin.d, "emb"), rnd)
            self.assertEqual(core(d, "emb"), core(twin.d, "emb"), rnd)
        self.assertGreater(last, 0)
        self.assertGreater(left_count(d), 0, "the table was never left to its deltas")
        # after the interval nothing acknowledged is lost: steps, the
        # journal's rotation after them, kill -9
        for k in range(last + 1, last + 41):
            rows, g = rows_step(k)
            for x in (d, twin.d):
                r = x.post("/v1/sessions/emb/step?return=none",
                           {"rows": rows, "gradient": g, "step": k - 1})
                self.assertEqual(r.status, 200, r)
        wait_rotated(d)
        d.kill9()
        d.start()
        self.assertEqual(d.state("emb")["step"], last + 40)
        self.assertEqual(params_raw(d, "emb"), params_raw(twin.d, "emb"))
        self.assertEqual(core(d, "emb"), core(twin.d, "emb"))
        d.stop()
        twin.close()


if __name__ == "__main__":
    unittest.main()
