"""test_durability.py: --data-dir against the real daemon.

A clean stop restores every session exactly (both sync modes); DELETE
removes the file; damaged snapshot files are set aside and reported while
the rest loads; a second daemon cannot share the directory, even with a
file in it deleted; and with a full disk (an LD_PRELOAD shim making
write/fsync fail with ENOSPC inside the data directory) --sync always
answers 507 and changes nothing, while --sync interval keeps serving and
writes once the disk recovers.  A DELETE answered 204 stays deleted across
restarts even when its file could not be unlinked, and works on a full
disk; one unwritable snapshot does not keep journals from being removed;
a step's journal record holds its input, not the state it made.
"""

import glob
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, REPO, optd_bin


def snap_name(name):
    """The snapshot file of a session: s-<lowercase base32, no padding>.snap."""
    import base64
    return "s-" + base64.b32encode(name.encode()).decode().rstrip("=").lower() + ".snap"


def failio_shim(tmp):
    """The fault shim built next to the daemon, or built here with cc."""
    bin_dir = os.path.dirname(os.path.abspath(os.path.join(REPO, optd_bin())))
    so = os.path.join(bin_dir, "faults", "failio.so")
    if os.path.exists(so):
        return so
    so = os.path.join(tmp, "failio.so")
    subprocess.check_call(["cc", "-O2", "-fPIC", "-shared", "-o", so,
                           os.path.join(REPO, "tests", "faults", "failio.c"), "-ldl"])
    return so


def rich_sessions(d):
    """A few sessions covering optimizers, dtypes, options and metadata."""
    specs = [
        ("adam-a", "adam", {"amsgrad": True, "lr": 0.01}, "float64"),
        ("sgd-b", "sgd", {"momentum": 0.9, "nesterov": True}, "float32"),
        ("rms-c", "rmsprop", {"centered": True, "momentum": 0.5}, "float64"),
        ("nadam-d", "nadam", {}, "float32"),
        ("Case", "adadelta", {}, "float64"),
        ("case", "lion", {}, "float64"),
    ]
    for i, (name, opt, hp, dtype) in enumerate(specs):
        r = d.post("/v1/sessions", {
            "name": name, "optimizer": opt, "hyperparameters": hp, "dtype": dtype,
            "params": [0.5 * (k - 1) + i for k in range(4)],
            "schedule": {"type": "cosine", "t_max": 50, "eta_min": 0.0001, "warmup_steps": 2},
            "max_grad_norm": 2.5, "labels": {"study": "dur", "i": str(i)},
            "ttl_seconds": 86400})
        assert r.status == 201, r
        for k in range(5):
            body = {"gradient": [0.1 * (j + 1) * (-1) ** k for j in range(4)]}
            if k % 2:
                body["loss"] = 1.0 / (k + 1)
            r = d.post("/v1/sessions/%s/step" % name, body)
            assert r.status == 200, r
    r = d.patch("/v1/sessions/adam-a", {"hyperparameters": {"lr": 0.002}, "labels": {"x": "y"}})
    assert r.status == 200, r
    return [s[0] for s in specs]


def mk(d, name, optimizer, **fields):
    """POST /v1/sessions; the Response whatever its status."""
    body = {"name": name, "optimizer": optimizer}
    body.update(fields)
    return d.post("/v1/sessions", body)


def snapshot_all(d, names):
    out = {}
    for n in names:
        st = d.get("/v1/sessions/%s/state" % n)
        hist = d.get("/v1/sessions/%s/history" % n)
        assert st.status == 200 and hist.status == 200, (st, hist)
        out[n] = (st.body, hist.body)
    return out


class CleanRestart(unittest.TestCase):
    def check_mode(self, mode):
        d = Daemon(data_dir=True, flags=["--sync", mode])
        try:
            d.start()
            names = rich_sessions(d)
            want = snapshot_all(d, names)
            d.restart()
            self.assertEqual(snapshot_all(d, names), want)
            self.assertIn("restored 6 sessions (24 parameters)", d.stderr_text())
            # one more step on the restored session equals one on a fork made
            # before the restart would: check against a fork made now
            r = d.post("/v1/sessions", {"name": "fork", "from": "adam-a"})
            self.assertEqual(r.status, 201, r)
            a = d.post("/v1/sessions/adam-a/step", {"gradient": [1, 2, 3, 4]})
            b = d.post("/v1/sessions/fork/step", {"gradient": [1, 2, 3, 4]})
            self.assertEqual(a.body, b.body)
            # names differing only in case are different files
            files = os.listdir(d.data_dir)
            self.assertIn(snap_name("Case"), files)
            self.assertIn(snap_name("case"), files)
            # DELETE removes the file
            self.assertEqual(d.delete("/v1/sessions/sgd-b").status, 204)
            self.assertNotIn(snap_name("sgd-b"), os.listdir(d.data_dir))
            d.restart()
            self.assertEqual(d.get("/v1/sessions/sgd-b").status, 404)
            self.assertEqual(d.get("/v1/sessions/fork").status, 200)
            d.stop()
        finally:
            d.cleanup()

    def test_interval(self):
        self.check_mode("interval")

    def test_always(self):
        self.check_mode("always")


class Damaged(unittest.TestCase):
    def test_damaged_files_set_aside(self):
        d = Daemon(data_dir=True)
        try:
            d.start()
            for n in ["good", "trunc", "flip", "zero", "version", "garbage"]:
                self.assertEqual(mk(d, n, "adam", params=[1.0, 2.0, 3.0]).status, 201)
                self.assertEqual(d.post("/v1/sessions/%s/step" % n,
                                        {"gradient": [0.5, 0.5, 0.5]}).status, 200)
            want = d.get("/v1/sessions/good/state").body
            d.stop()

            def path(n):
                return os.path.join(d.data_dir, snap_name(n))

            with open(path("trunc"), "r+b") as f:
                f.truncate(os.path.getsize(path("trunc")) // 2)
            with open(path("flip"), "r+b") as f:
                f.seek(100)
                b = f.read(1)
                f.seek(100)
                f.write(bytes([b[0] ^ 0x04]))
            size = os.path.getsize(path("zero"))
            with open(path("zero"), "wb") as f:
                f.write(b"\0" * size)
            with open(path("version"), "r+b") as f:
                f.seek(8)
                f.write(b"\x09")
            with open(path("garbage"), "wb") as f:
                f.write(os.urandom(300))
            d._stopped = False
            d.start()
            self.assertEqual(d.get("/v1/sessions/good/state").body, want)
            for n in ["trunc", "flip", "zero", "version", "garbage"]:
                self.assertEqual(d.get("/v1/sessions/%s" % n).status, 404, n)
                self.assertFalse(os.path.exists(path(n)), n)
                aside = glob.glob(path(n) + ".damaged-*")
                self.assertEqual(len(aside), 1, n)
            err = d.stderr_text()
            for n, why in [("trunc", "truncated"), ("flip", "bad checksum"),
                           ("zero", "wrong magic"), ("version", "unknown format version 9"),
                           ("garbage", "wrong magic")]:
                self.assertTrue(any(snap_name(n) in line and why in line
                                    for line in err.splitlines()), (n, why, err[-3000:]))
            self.assertIn("restored 1 sessions", err)
            # the service goes on; a new session of a damaged one's name works
            self.assertEqual(mk(d, "flip", "sgd", size=2).status, 201)
            d.restart()
            self.assertEqual(d.get("/v1/sessions/flip").status, 200)
            # files set aside are never touched again
            self.assertEqual(len(glob.glob(path("flip") + ".damaged-*")), 1)
            d.stop()
        finally:
            d.cleanup()

    def test_two_daemons_cannot_share_a_dir(self):
        d = Daemon(data_dir=True)
        try:
            d.start()
            p = subprocess.run([os.path.join(REPO, optd_bin()), "--listen", "127.0.0.1:0",
                                "--data-dir", d.data_dir], capture_output=True, timeout=20,
                               cwd=REPO)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"in use by another optd", p.stderr)
            d.stop()
        finally:
            d.cleanup()


def slow_disk_daemon(case, delay_ms, *flags):
    """A started --sync always daemon (cleaned up with case) whose every
    sync takes delay_ms once the returned control file exists (the failio
    shim's FAILIO_SYNC_DELAY_MS); returns (daemon, control file path)."""
    tmp = tempfile.mkdtemp(prefix="optd-slowdisk-")
    case.addCleanup(shutil.rmtree, tmp, True)
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    ctl = os.path.join(tmp, "slow")
    env = {"LD_PRELOAD": failio_shim(tmp), "FAILIO_PATH": data + "/", "FAILIO_CTL": ctl,
           "FAILIO_SYNC_DELAY_MS": str(delay_ms), "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
    d = Daemon(data_dir=data, flags=["--sync", "always", *flags], env=env)
    case.addCleanup(d.cleanup)
    d.start()
    return d, ctl


class GroupCommit(unittest.TestCase):
    """--sync always with 8 clients, each stepping its own session, on a
    disk whose every sync takes 40 ms: clients released together by one
    fsync come back together, and the next round must carry them all, not
    only the first to arrive (the others then waited a whole fsync more, and
    the rounds settled into two alternating halves)."""

    def test_rounds_carry_every_waiting_client(self):
        d, ctl = slow_disk_daemon(self, 40)
        clients, steps = 8, 12
        for i in range(clients):
            self.assertEqual(mk(d, "g%d" % i, "sgd", params=[1.0]).status, 201)
        open(ctl, "w").close()  # from now on every sync takes 40 ms
        errors = []

        def client(i):
            for _ in range(steps):
                r = d.post("/v1/sessions/g%d/step" % i, {"gradient": [1.0]}, timeout=60)
                if r.status != 200:
                    errors.append(r)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.unlink(ctl)
        self.assertEqual(errors, [])
        for i in range(clients):
            self.assertEqual(d.get("/v1/sessions/g%d/params" % i).body["step"], steps)
        d.stop()
        m = re.search(r"journal: (\d+) records made durable in (\d+) fsync rounds", d.stderr_text())
        self.assertIsNotNone(m, d.stderr_text()[-2000:])
        records, rounds = int(m.group(1)), int(m.group(2))
        # The creates went one at a time, a round each, before the disk slowed.
        before = records - clients * steps
        self.assertGreaterEqual(before, clients)
        per_round = clients * steps / (rounds - before)
        # Nearly every round carries all 8 (the first rounds gather them, the
        # last ones as clients finish); with rounds started by whoever came
        # first it was 4.0 (in five runs of five).
        self.assertGreaterEqual(per_round, 5.0, "%d steps in %d rounds" % (clients * steps, rounds - before))


class SlowDisk(unittest.TestCase):
    """--sync always on a disk whose every sync takes a second (the shim's
    FAILIO_SYNC_DELAY_MS): a request waiting for its fsync must not hold up
    another connection's request, even with --threads 1 (a pool worker
    waiting there would block every connection it serves)."""

    def test_a_waiting_commit_does_not_block_other_connections(self):
        d, ctl = slow_disk_daemon(self, 1500, "--threads", "1")
        self.assertEqual(mk(d, "a", "sgd", params=[1.0]).status, 201)
        self.assertEqual(mk(d, "b", "sgd", params=[2.0]).status, 201)
        open(ctl, "w").close()  # from now on every sync takes 1.5 s

        done = []
        lock = threading.Lock()

        def step_a():
            r = d.post("/v1/sessions/a/step", {"gradient": [1.0]}, timeout=60)
            with lock:
                done.append(("step a", r.status))

        t = threading.Thread(target=step_a)
        t.start()
        time.sleep(0.3)  # step a is now waiting for its fsync
        r = d.get("/v1/sessions/b", timeout=60)
        with lock:
            done.append(("get b", r.status))
        t.join()
        os.unlink(ctl)
        self.assertEqual(done, [("get b", 200), ("step a", 200)],
                         "a read on another connection waited for an fsync it has nothing to do with")
        self.assertEqual(d.get("/v1/sessions/a/params").body["step"], 1)
        d.stop()


class FullDisk(unittest.TestCase):
    def daemon(self, mode):
        tmp = tempfile.mkdtemp(prefix="optd-fulldisk-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.ctl = os.path.join(tmp, "disk-full")
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env = {"LD_PRELOAD": failio_shim(tmp), "FAILIO_PATH": data + "/",
               "FAILIO_CTL": self.ctl, "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
        d = Daemon(data_dir=data, flags=["--sync", mode, "--snapshot-interval", "1"], env=env)
        self.addCleanup(d.cleanup)
        d.start()
        return d

    def disk_full(self, on):
        if on:
            open(self.ctl, "w").close()
        elif os.path.exists(self.ctl):
            os.unlink(self.ctl)

    def test_always_answers_507_and_changes_nothing(self):
        d = self.daemon("always")
        self.assertEqual(mk(d, "s", "adam", params=[1.0, 2.0, 3.0]).status, 201)
        self.assertEqual(d.post("/v1/sessions/s/step", {"gradient": [1, 1, 1]}).status, 200)
        before = d.get("/v1/sessions/s/state").body
        hist = d.get("/v1/sessions/s/history").body

        self.disk_full(True)
        r = d.post("/v1/sessions/s/step", {"gradient": [3, 2, 1], "loss": 0.5})
        self.assertEqual((r.status, r.error_code()), (507, "insufficient_storage"), r)
        r = d.post("/v1/sessions/s/step", b"\0" * 24,
                   headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 507, r)
        self.assertEqual(d.patch("/v1/sessions/s", {"hyperparameters": {"lr": 0.5}}).status, 507)
        self.assertEqual(mk(d, "t", "sgd", size=2).status, 507)
        self.assertEqual(d.get("/v1/sessions/t").status, 404)
        imp = dict(before, name="s")
        imp["params"] = [9.0, 9.0, 9.0]
        self.assertEqual(d.put("/v1/sessions/s/state", imp).status, 507)
        self.assertEqual(d.delete("/v1/sessions/s").status, 507)
        self.assertEqual(d.get("/v1/sessions/s/state").body, before)
        self.assertEqual(d.get("/v1/sessions/s/history").body, hist)
        self.assertIn("No space left on device", d.stderr_text())

        # the disk recovers: the same step now goes through, as it would have
        self.disk_full(False)
        self.assertEqual(d.post("/v1/sessions", {"name": "ref", "from": "s"}).status, 201)
        a = d.post("/v1/sessions/s/step", {"gradient": [3, 2, 1], "loss": 0.5})
        b = d.post("/v1/sessions/ref/step", {"gradient": [3, 2, 1], "loss": 0.5})
        self.assertEqual(a.status, 200, a)
        self.assertEqual(a.body, b.body)
        self.assertEqual(a.body["step"], 2)
        want = d.get("/v1/sessions/s/state").body
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(d.get("/v1/sessions/s/state").body, want)
        d.stop()

    def test_interval_keeps_serving_and_retries(self):
        d = self.daemon("interval")
        self.assertEqual(mk(d, "s", "sgd", params=[1.0, 2.0]).status, 201)
        self.disk_full(True)
        for _ in range(3):
            self.assertEqual(d.post("/v1/sessions/s/step", {"gradient": [1, 1]}).status, 200)
        deadline = time.time() + 10
        while "will retry" not in d.stderr_text() and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("will retry", d.stderr_text())
        self.disk_full(False)
        want = d.get("/v1/sessions/s/state").body
        # wait for a flush that succeeds: the file then holds step 3
        deadline = time.time() + 10
        path = os.path.join(d.data_dir, snap_name("s"))
        while time.time() < deadline:
            time.sleep(0.3)
            if os.path.exists(path) and time.time() - os.path.getmtime(path) < 5:
                with open(path, "rb") as f:
                    if len(f.read()) > 0:
                        break
        time.sleep(1.5)
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(d.get("/v1/sessions/s/state").body, want)
        d.stop()


def shim_daemon(case, mode, env_extra, *flags):
    """A started daemon (cleaned up with case) under the failio shim,
    whose faults are on while the returned control file exists; returns
    (daemon, control file path)."""
    tmp = tempfile.mkdtemp(prefix="optd-shim-")
    case.addCleanup(shutil.rmtree, tmp, True)
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    ctl = os.path.join(tmp, "faults-on")
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env = {"LD_PRELOAD": failio_shim(tmp), "FAILIO_PATH": data + "/", "FAILIO_CTL": ctl,
           "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
    env.update(env_extra)
    d = Daemon(data_dir=data, flags=["--sync", mode, "--snapshot-interval", "1", *flags], env=env)
    case.addCleanup(d.cleanup)
    d.start()
    return d, ctl


def wait_for(cond, seconds=15):
    """Polls cond until it holds (not a timing assertion: the caller
    asserts cond afterwards, the wait only bounds a stuck test)."""
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.1)
    return cond()


def journals(d):
    return sorted(f for f in os.listdir(d.data_dir) if f.startswith("journal-"))


def journal_bytes(d):
    """Bytes of records in d's journals: they end where the zeros written
    ahead begin."""
    total = 0
    for f in journals(d):
        with open(os.path.join(d.data_dir, f), "rb") as fh:
            total += len(fh.read().rstrip(b"\0"))
    return total


class DeleteStaysDeleted(unittest.TestCase):
    """A DELETE answered 204 whose snapshot file could not be removed
    (unlink fails) must not bring the session back after any restart: the
    deletion is journaled and honoured, and the unlink retried."""

    def check(self, mode):
        d, ctl = shim_daemon(self, mode, {"FAILIO_UNLINK": "1"})
        self.assertEqual(mk(d, "gone", "adam", params=[1.0, 2.0]).status, 201)
        self.assertEqual(mk(d, "kept", "sgd", params=[3.0]).status, 201)
        self.assertEqual(d.post("/v1/sessions/gone/step", {"gradient": [1, 1]}).status, 200)
        path = os.path.join(d.data_dir, snap_name("gone"))
        self.assertTrue(wait_for(lambda: os.path.exists(path)), "no snapshot was written")
        open(ctl, "w").close()  # unlink fails from now on
        self.assertEqual(d.delete("/v1/sessions/gone").status, 204)
        self.assertTrue(os.path.exists(path))  # the unlink really failed
        self.assertEqual(d.get("/v1/sessions/gone").status, 404)
        time.sleep(2.5)  # flushes run meanwhile (the delete must outlive them)
        d.restart()
        self.assertEqual(d.get("/v1/sessions/gone").status, 404)
        self.assertEqual(d.get("/v1/sessions/kept").status, 200)
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(d.get("/v1/sessions/gone").status, 404)
        # the disk lets go again: the file goes, and it stays deleted
        os.unlink(ctl)
        self.assertTrue(wait_for(lambda: not os.path.exists(path)), "the unlink was not retried")
        d.restart()
        self.assertEqual(d.get("/v1/sessions/gone").status, 404)
        self.assertIn("cannot remove the snapshot of deleted session 'gone'", d.stderr_text(True))
        d.stop()

    def test_interval(self):
        self.check("interval")

    def test_always(self):
        self.check("always")


class DeleteOnFullDisk(unittest.TestCase):
    """On a full disk (writes that would grow a file fail, as ENOSPC does)
    a step that needs more space gets 507, but a DELETE still works: it
    goes into the zeros the journal keeps written ahead, whose last part
    only deletes may use, so clients can free space."""

    def test_delete_works_when_the_disk_is_full(self):
        d, ctl = shim_daemon(self, "always", {"FAILIO_FULL": "1"})
        n = 400000  # a float32 gradient of 1.6 MB: more than the zeros ahead
        self.assertEqual(mk(d, "big", "sgd", dtype="float32", size=n).status, 201)
        self.assertEqual(mk(d, "small", "sgd", params=[1.0]).status, 201)
        grad = b"\0\0\x80\x3f" * n
        binary = {"Content-Type": "application/octet-stream", "Optd-Dtype": "float32"}
        self.assertEqual(d.post("/v1/sessions/big/step?return=none", grad, headers=binary).status, 200)
        open(ctl, "w").close()  # the disk is full
        r = d.post("/v1/sessions/big/step?return=none", grad, headers=binary)
        self.assertEqual((r.status, r.error_code()), (507, "insufficient_storage"), r)
        for name in ("small", "big"):
            r = d.delete("/v1/sessions/" + name)
            self.assertEqual(r.status, 204, r)
        d.kill9()
        os.unlink(ctl)
        d._stopped = False
        d.start()
        for name in ("small", "big"):
            self.assertEqual(d.get("/v1/sessions/" + name).status, 404, name)
        d.stop()


class OneBadFile(unittest.TestCase):
    """A directory where one session's snapshot should go makes that
    snapshot fail every time; the other sessions' compaction must go on and
    the journals must still be removed (the bad session is carried whole
    into the new journal), and nothing is lost."""

    def test_journals_do_not_pile_up(self):
        d = Daemon(data_dir=True, flags=["--sync", "always", "--snapshot-interval", "1"])
        self.addCleanup(d.cleanup)
        d.start()
        os.mkdir(os.path.join(d.data_dir, snap_name("bad")))
        self.assertEqual(mk(d, "bad", "sgd", params=[1.0, 2.0]).status, 201)
        self.assertEqual(mk(d, "good", "sgd", params=[1.0, 2.0]).status, 201)
        counts = []
        for k in range(8):
            for name in ("bad", "good"):
                self.assertEqual(d.post("/v1/sessions/%s/step" % name,
                                        {"gradient": [1, k]}).status, 200)
            time.sleep(0.6)
            counts.append(len(journals(d)))
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(d.data_dir, snap_name("good")))))
        self.assertTrue(wait_for(lambda: len(journals(d)) <= 2),
                        "journals pile up: %r (counts %r)" % (journals(d), counts))
        self.assertIn("snapshot of 'bad' not written", d.stderr_text())
        want = {n: d.get("/v1/sessions/%s/state" % n).body for n in ("bad", "good")}
        d.kill9()
        d._stopped = False
        d.start()
        for n in ("bad", "good"):
            self.assertEqual(d.get("/v1/sessions/%s/state" % n).body, want[n], n)
        d.stop()


class LockIsTheDirectory(unittest.TestCase):
    """Deleting DATA/LOCK (or any file in the directory) must not let a
    second daemon in: the directory itself is locked."""

    def test_deleting_lock_file_does_not_let_a_second_daemon_in(self):
        d = Daemon(data_dir=True)
        self.addCleanup(d.cleanup)
        d.start()
        lock = os.path.join(d.data_dir, "LOCK")
        if os.path.exists(lock):
            os.unlink(lock)
        try:
            p = subprocess.run([os.path.join(REPO, optd_bin()), "--listen", "127.0.0.1:0",
                                "--data-dir", d.data_dir], capture_output=True, timeout=20,
                               cwd=REPO)
        except subprocess.TimeoutExpired:
            self.fail("a second daemon started on the same data directory")
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"in use by another optd", p.stderr)
        d.assert_alive()
        d.stop()


class FleetStepsAreDurable(unittest.TestCase):
    """POST /v1/steps goes through the same journaled step as a single
    step: with --sync always its 200 means every item applied is on disk,
    and the loss summary and history come back from the journal alone."""

    def test_kill9_after_fleet_steps(self):
        d = Daemon(data_dir=True, flags=["--sync", "always", "--snapshot-interval", "3600"])
        self.addCleanup(d.cleanup)
        d.start()
        for n in ("fa", "fb"):
            self.assertEqual(mk(d, n, "adam", params=[0.5, -1.0]).status, 201)
        for k in range(3):
            items = [{"session": n, "gradient": [0.1 * (k + 1), -0.2], "loss": 1.0 / (k + 1)}
                     for n in ("fa", "fb")]
            r = d.post("/v1/steps", {"steps": items})
            self.assertEqual(r.status, 200, r)
        want = {n: (d.get("/v1/sessions/%s/state" % n).body, d.get("/v1/sessions/%s" % n).body,
                    d.get("/v1/sessions/%s/history" % n).body) for n in ("fa", "fb")}
        d.kill9()
        d._stopped = False
        d.start()
        for n in ("fa", "fb"):
            got = (d.get("/v1/sessions/%s/state" % n).body, d.get("/v1/sessions/%s" % n).body,
                   d.get("/v1/sessions/%s/history" % n).body)
            self.assertEqual(got, want[n], n)
            self.assertEqual(got[0]["step"], 3)
        d.stop()


class StepRecordsHoldTheInput(unittest.TestCase):
    """--sync always journals a step's input, not the state it made: a
    float32 Adam step of N parameters adds about 4N bytes to the journal
    (the gradient), not params + exp_avg + exp_avg_sq (12N and more)."""

    def test_journal_grows_by_the_gradient(self):
        d = Daemon(data_dir=True, flags=["--sync", "always", "--snapshot-interval", "3600"])
        self.addCleanup(d.cleanup)
        d.start()
        n, steps = 200000, 5
        self.assertEqual(mk(d, "a", "adam", dtype="float32", size=n).status, 201)

        before = journal_bytes(d)
        binary = {"Content-Type": "application/octet-stream", "Optd-Dtype": "float32"}
        for k in range(steps):
            r = d.post("/v1/sessions/a/step?return=none", b"\0\0\x80\x3f" * n, headers=binary)
            self.assertEqual(r.status, 200, r)
        ratio = (journal_bytes(d) - before) / (steps * 4 * n)
        self.assertLessEqual(ratio, 1.01, "journal bytes per step / gradient bytes = %.2f" % ratio)
        want = d.get("/v1/sessions/a/state").body
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual(d.get("/v1/sessions/a/state").body, want)
        d.stop()


class PatchRecordsHoldTheConfiguration(unittest.TestCase):
    """A PATCH journals the session's configuration, not its image.  A torch
    LR scheduler's PATCH before every step of a float32 Adam session cost,
    with --sync always, a record of params + exp_avg + exp_avg_sq (3 times
    the gradient's bytes) each: 7x the gradient's bytes per step in all, as
    a user measured.  Now a few hundred bytes, replayed onto the session the
    earlier records rebuild: after kill -9 the state, hyperparameters of
    every group, labels, schedule and updated time are what they were."""

    def test_patches_between_steps_journal_the_configuration(self):
        d = Daemon(data_dir=True, flags=["--sync", "always", "--snapshot-interval", "3600"])
        self.addCleanup(d.cleanup)
        d.start()
        n, steps = 200000, 5
        r = mk(d, "a", "adam", dtype="float32", size=n,
               groups=[{"size": n // 2}, {"size": n - n // 2, "hyperparameters": {"lr": 0.01}}])
        self.assertEqual(r.status, 201, r)

        before = journal_bytes(d)
        binary = {"Content-Type": "application/octet-stream", "Optd-Dtype": "float32"}
        for k in range(steps):
            r = d.patch("/v1/sessions/a", {"hyperparameters": {"lr": 0.001 * (k + 1)},
                                           "groups": [{}, {"hyperparameters": {"lr": 0.02 / (k + 1)}}]})
            self.assertEqual(r.status, 200, r)
            r = d.post("/v1/sessions/a/step?return=none", b"\0\0\x80\x3f" * n, headers=binary)
            self.assertEqual(r.status, 200, r)
        ratio = (journal_bytes(d) - before) / (steps * 4 * n)
        self.assertLessEqual(ratio, 1.01, "journal bytes per PATCH and step / gradient bytes = %.2f" % ratio)
        r = d.patch("/v1/sessions/a", {"labels": {"study": "s1"}, "max_grad_norm": 2.5, "ttl_seconds": 7200,
                                       "schedule": {"type": "step", "step_size": 2, "gamma": 0.5},
                                       "groups": [{"hyperparameters": {"weight_decay": 0.1}}, {}]})
        self.assertEqual(r.status, 200, r)
        want = (d.get("/v1/sessions/a").body, d.get("/v1/sessions/a/state").body)
        d.kill9()
        d._stopped = False
        d.start()
        self.assertEqual((d.get("/v1/sessions/a").body, d.get("/v1/sessions/a/state").body), want)
        # and the next step is the twin's: the replayed configuration is the one in force
        r = d.post("/v1/sessions/a/step?return=none", b"\0\0\x80\x3f" * n, headers=binary)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(d.get("/v1/sessions/a").body["hyperparameters"]["lr"], 0.005)
        d.stop()

    def test_a_patch_of_a_name_deleted_and_created_again_is_not_replayed_onto_the_new_one(self):
        d = Daemon(data_dir=True, flags=["--sync", "always"])
        self.addCleanup(d.cleanup)
        d.start()
        self.assertEqual(mk(d, "b", "sgd", params=[1.0, 2.0]).status, 201)
        self.assertEqual(d.patch("/v1/sessions/b", {"hyperparameters": {"lr": 0.5}}).status, 200)
        self.assertEqual(d.delete("/v1/sessions/b").status, 204)
        self.assertEqual(mk(d, "b", "sgd", params=[1.0, 2.0, 3.0]).status, 201)
        self.assertEqual(d.patch("/v1/sessions/b", {"labels": {"v": "2"}}).status, 200)
        want = d.get("/v1/sessions/b/state").body
        d.kill9()
        d._stopped = False
        d.start()
        got = d.get("/v1/sessions/b/state").body
        self.assertEqual(got, want)
        self.assertNotEqual(got["hyperparameters"]["lr"], 0.5)  # the old session's PATCH
        d.stop()


if __name__ == "__main__":
    unittest.main()
