"""Concurrency: many clients on one session (no lost update, no torn
response), many clients on many sessions, and a graceful stop with
requests in flight."""

import http.client
import json
import random
import signal
import struct
import threading
import time
import unittest

from harness import Daemon, DaemonTestCase
import optref

THREADS = 8


def run_threads(fn, n=THREADS):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # collected, re-raised in the test's thread
            errors.append(e)
    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


class OneSession(DaemonTestCase):
    FLAGS = ["--threads", "4"]

    def test_no_lost_update_no_torn_response(self):
        """THREADS clients post the same gradient PER_THREAD times each, no
        CAS.  The same gradient makes the serial trajectory order-free, so
        every answer (step k, params) must be exactly the serial session's
        k-th answer, and the final state the serial final state."""
        per = 25
        total = THREADS * per
        p0 = [0.5 * i - 3.0 for i in range(64)]
        g = [((i * 7) % 11 - 5) / 10.0 for i in range(64)]
        serial, conc = self.uname("serial"), self.uname("conc")
        self.d.create(serial, "adam", params=p0)
        self.d.create(conc, "adam", params=p0)
        want = {}
        for _ in range(total):
            r = self.d.post("/v1/sessions/%s/step" % serial, {"gradient": g})
            want[r.body["step"]] = r.body["params"]
        ref = optref.Adam(p0)
        for _ in range(total):
            ref.step(g)
        for a, b in zip(want[total], ref.p):
            self.assertTrue(optref.close64(a, b), (a, b))
        got = []
        lock = threading.Lock()

        def worker(i):
            for _ in range(per):
                r = self.d.post("/v1/sessions/%s/step" % conc, {"gradient": g})
                assert r.status == 200, r
                with lock:
                    got.append((r.body["step"], r.body["params"]))
        run_threads(worker)
        self.assertEqual(len(got), total)
        self.assertEqual(sorted(s for s, _ in got), list(range(1, total + 1)))
        for s, p in got:
            self.assertEqual(p, want[s], "torn or wrong answer at step %d" % s)
        self.assertEqual(self.d.get("/v1/sessions/" + conc).body["step"], total)
        sc, ss = self.d.state(conc), self.d.state(serial)
        self.assertEqual(sc["params"], ss["params"])
        self.assertEqual(sc["state"], ss["state"])

    def test_compare_and_swap_serializes_distinct_gradients(self):
        """With CAS, each acknowledged step k used gradient g(k): the result
        equals the serial run of g(1..N) exactly; refused tries changed nothing."""
        n_steps = 120
        size = 16

        def grad(k):
            return [((k * 31 + i * 17) % 23 - 11) / 7.0 for i in range(size)]
        p0 = [0.1 * i for i in range(size)]
        serial, conc = self.uname("serial"), self.uname("conc")
        self.d.create(serial, "adam", params=p0, hyperparameters={"lr": 0.01})
        self.d.create(conc, "adam", params=p0, hyperparameters={"lr": 0.01})
        for k in range(1, n_steps + 1):
            self.d.post("/v1/sessions/%s/step?return=none" % serial, {"gradient": grad(k)})
        acked = []
        mismatches = [0]
        lock = threading.Lock()

        def worker(i):
            binary = i % 2 == 1
            while True:
                cur = self.d.get("/v1/sessions/%s/params" % conc).body["step"]
                if cur >= n_steps:
                    return
                if binary:
                    r = self.d.post("/v1/sessions/%s/step" % conc, optref.pack(grad(cur + 1), "float64"),
                                    headers={"Content-Type": "application/octet-stream",
                                             "Optd-Expect-Step": str(cur)})
                else:
                    r = self.d.post("/v1/sessions/%s/step?return=none" % conc,
                                    {"gradient": grad(cur + 1), "step": cur})
                if r.status == 200:
                    step = int(r.headers["Optd-Step"]) if binary else r.body["step"]
                    assert step == cur + 1, (step, cur)
                    with lock:
                        acked.append(step)
                else:
                    assert r.status == 409, r
                    assert r.body["error"]["code"] == "step_mismatch", r
                    assert r.body["error"]["current_step"] > cur, r
                    with lock:
                        mismatches[0] += 1
        run_threads(worker)
        self.assertEqual(sorted(acked), list(range(1, n_steps + 1)))
        sc, ss = self.d.state(conc), self.d.state(serial)
        self.assertEqual(sc["step"], n_steps)
        self.assertEqual(sc["params"], ss["params"])
        self.assertEqual(sc["state"], ss["state"])


class ManySessions(DaemonTestCase):
    FLAGS = ["--threads", "4"]

    def test_many_clients_many_sessions(self):
        n, steps, size = 16, 30, 8

        def grad(s, k):
            return [((s * 13 + k * 5 + i) % 9 - 4) / 3.0 for i in range(size)]
        for s in range(n):
            self.d.create("many-%d" % s, ["adam", "sgd", "rmsprop", "lion"][s % 4], params=[0.5] * size)
            self.d.create("ref-%d" % s, ["adam", "sgd", "rmsprop", "lion"][s % 4], params=[0.5] * size)

        def worker(t):
            for s in range(t, n, THREADS):
                for k in range(1, steps + 1):
                    r = self.d.post("/v1/sessions/many-%d/step" % s, {"gradient": grad(s, k), "loss": k})
                    assert r.status == 200 and r.body["step"] == k, r
                    if k % 10 == 0:
                        assert self.d.get("/v1/sessions?prefix=many-").status == 200
                        assert self.d.get("/v1/sessions/many-%d/history?limit=3" % s).status == 200
        run_threads(worker)
        for s in range(n):
            for k in range(1, steps + 1):
                self.d.post("/v1/sessions/ref-%d/step?return=none" % s, {"gradient": grad(s, k), "loss": k})
            a, b = self.d.state("many-%d" % s), self.d.state("ref-%d" % s)
            self.assertEqual(a["params"], b["params"], s)
            self.assertEqual(a["state"], b["state"], s)
            self.assertEqual(a["step"], steps)

    def test_create_delete_races(self):
        """Creates and deletes of the same names from many threads: every
        answer is one of the documented ones and the end state is consistent."""
        names = ["race-%d" % i for i in range(6)]

        def worker(t):
            for k in range(40):
                n = names[(t + k) % len(names)]
                r = self.d.post("/v1/sessions", {"name": n, "optimizer": "sgd", "size": 4})
                assert r.status in (201, 409), r
                r = self.d.post("/v1/sessions/%s/step?return=none" % n, {"gradient": [1, 1, 1, 1]})
                assert r.status in (200, 404), r
                r = self.d.delete("/v1/sessions/" + n)
                assert r.status in (204, 404), r
                r = self.d.post("/v1/sessions", {"name": n + "-f", "from": n})
                assert r.status in (201, 404, 409), r
                self.d.delete("/v1/sessions/%s-f" % n)
        run_threads(worker)
        listed = [s["name"] for s in self.d.get("/v1/sessions?prefix=race-&limit=1000").body["sessions"]]
        for n in listed:
            self.assertEqual(self.d.get("/v1/sessions/" + n).status, 200)
        self.d.assert_alive()


class BigUpdatesAcrossThreads(unittest.TestCase):
    """A big session's step is split over --threads: the update, the
    gradient's parse and the params' print.  Whatever the threads, the
    answer is the same, byte for byte, and the same as a binary step's;
    a bad number is refused the same way wherever it falls."""

    N = 200000  # above the split thresholds (1 << 17 params, 1 << 15 numbers)

    @classmethod
    def setUpClass(cls):
        cls.ds = [Daemon(flags=["--threads", t]) for t in ("1", "3")]
        for d in cls.ds:
            d.start()

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
            d.cleanup()

    def gradient_text(self, rng):
        """A client's JSON gradient: %.17g, short and exponent forms, and
        whitespace of several kinds."""
        parts = []
        for i in range(self.N):
            v = rng.gauss(0, 1e-2)
            form = i % 4
            parts.append(repr(v) if form == 0 else f"{v:.6e}" if form == 1 else f"{v:.9g}" if form == 2
                         else f" {v!r}\n")
        return "[" + ",".join(parts) + "]"

    def test_json_and_binary_steps_agree_across_threads(self):
        rng = random.Random(2026)
        for dtype, fmt in (("float64", "d"), ("float32", "f")):
            name = "big-" + dtype
            for d in self.ds:
                r = d.post("/v1/sessions", {"name": name, "optimizer": "adam", "dtype": dtype,
                                            "size": self.N, "hyperparameters": {"lr": 0.01}}, validate=False)
                self.assertEqual(r.status, 201, r.body)
                r = d.post("/v1/sessions", {"name": name + "-bin", "optimizer": "adam", "dtype": dtype,
                                            "size": self.N, "hyperparameters": {"lr": 0.01}}, validate=False)
                self.assertEqual(r.status, 201, r.body)
            for step in (1, 2):
                text = self.gradient_text(rng)
                values = json.loads(text)
                binary = struct.pack(f"<{self.N}{fmt}", *values)
                answers = []
                for d in self.ds:
                    r = d.post(f"/v1/sessions/{name}/step", '{"gradient": ' + text + "}",
                               headers={"Content-Type": "application/json"}, validate=False)
                    self.assertEqual(r.status, 200, r.raw[:300])
                    self.assertEqual(r.body["step"], step)
                    answers.append(r.raw)
                    b = d.post(f"/v1/sessions/{name}-bin/step", binary,
                               headers={"Content-Type": "application/octet-stream"}, validate=False)
                    self.assertEqual(b.status, 200)
                    self.assertEqual(struct.pack(f"<{self.N}{fmt}", *r.body["params"]), b.raw,
                                     f"{dtype} JSON and binary steps differ")
                self.assertEqual(answers[0], answers[1], f"{dtype} step {step}: --threads 1 and 3 differ")
            gets = [d.get(f"/v1/sessions/{name}/params", validate=False).raw for d in self.ds]
            self.assertEqual(gets[0], gets[1])

    def test_big_create_reads_params_alike(self):
        """A create's "params" skip Jansson too (split over the threads when
        long): the session holds exactly the numbers sent, in either
        dtype, whatever the threads; a bad one is refused alike."""
        rng = random.Random(99)
        text = self.gradient_text(rng)
        values = json.loads(text)
        for dtype, fmt in (("float64", "d"), ("float32", "f")):
            for d in self.ds:
                body = '{"name": "bc-' + dtype + '", "optimizer": "sgd", "dtype": "' + dtype + '", "params": ' + \
                    text + ', "labels": {"k": "v"}}'
                r = d.post("/v1/sessions", body, headers={"Content-Type": "application/json"}, validate=False)
                self.assertEqual(r.status, 201, r.body)
                self.assertEqual(r.body["size"], self.N)
                self.assertEqual(r.body["labels"], {"k": "v"})
                b = d.get(f"/v1/sessions/bc-{dtype}/params", headers={"Accept": "application/octet-stream"})
                self.assertEqual(b.raw, struct.pack(f"<{self.N}{fmt}", *values), dtype)
        bad = text[:len(text) // 2] + text[len(text) // 2:].replace(",", ",x", 1)
        answers = []
        for d in self.ds:
            r = d.post("/v1/sessions", '{"name": "bc-bad", "optimizer": "sgd", "params": ' + bad + "}",
                       headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, r.body)
            self.assertEqual(r.error_code(), "invalid_json")
            answers.append(r.body)
            self.assertEqual(d.get("/v1/sessions/bc-bad").status, 404)
        self.assertEqual(answers[0], answers[1])

    def test_big_state_round_trip(self):
        """A big state document's arrays skip Jansson on import: exporting,
        importing and exporting again gives the same document, on either
        daemon, and the imported session steps on identically."""
        rng = random.Random(5)
        params = [rng.uniform(-1, 1) for _ in range(self.N)]
        grads = [struct.pack(f"<{self.N}d", *(rng.gauss(0, 0.1) for _ in range(self.N))) for _ in range(3)]
        src = self.ds[0]
        r = src.post("/v1/sessions", {"name": "bs", "optimizer": "adam", "params": params,
                                      "hyperparameters": {"amsgrad": True}}, validate=False)
        self.assertEqual(r.status, 201, r.body)
        for g in grads[:2]:
            r = src.post("/v1/sessions/bs/step?return=none", g,
                         headers={"Content-Type": "application/octet-stream"}, validate=False)
            self.assertEqual(r.status, 200)
        doc = src.get("/v1/sessions/bs/state", validate=False)
        self.assertEqual(set(doc.body["state"]), {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"})
        after = src.post("/v1/sessions/bs/step", grads[2], headers={"Content-Type": "application/octet-stream"},
                         validate=False).raw
        for d in self.ds:
            r = d.put("/v1/sessions/bs-copy/state", doc.raw, headers={"Content-Type": "application/json"},
                      validate=False)
            self.assertEqual(r.status, 201, r.body)
            again = d.get("/v1/sessions/bs-copy/state", validate=False)
            self.assertEqual(again.raw.replace(b'"name":"bs-copy"', b'"name":"bs"', 1), doc.raw)
            r = d.post("/v1/sessions/bs-copy/step", grads[2], headers={"Content-Type": "application/octet-stream"},
                       validate=False)
            self.assertEqual(r.raw, after)

    def test_a_bad_number_anywhere_is_refused_alike(self):
        rng = random.Random(7)
        text = self.gradient_text(rng)
        for d in self.ds:
            r = d.post("/v1/sessions", {"name": "big-bad", "optimizer": "sgd", "dtype": "float64",
                                        "size": self.N}, validate=False)
            self.assertEqual(r.status, 201, r.body)
        commas = [i for i, c in enumerate(text) if c == ","]
        cases = [
            (commas[len(commas) * 3 // 8] + 1, 0, "x", "invalid_json"),     # near a cut of 8 chunks
            (commas[len(commas) * 5 // 12], 1, " ", "invalid_json"),        # a comma gone
            (commas[len(commas) // 2] + 1, 0, "1e999,", "invalid_argument"),  # out of range, one more
            (len(text) - 1, 0, ",", "invalid_json"),                        # trailing comma
            (commas[-1], 1, ",,", "invalid_json"),
        ]
        for at, cut, ins, code in cases:
            bad = text[:at] + ins + text[at + cut:]
            answers = []
            for d in self.ds:
                r = d.post("/v1/sessions/big-bad/step", '{"gradient": ' + bad + "}",
                           headers={"Content-Type": "application/json"})
                self.assertEqual(r.status, 400, (ins, r.body))
                self.assertEqual(r.error_code(), code, (ins, r.body))
                answers.append(r.body)
            self.assertEqual(answers[0], answers[1], ins)
        for d in self.ds:
            self.assertEqual(d.get("/v1/sessions/big-bad").body["step"], 0)


class GracefulStop(unittest.TestCase):
    def test_requests_in_flight_complete_and_exit_0(self):
        d = Daemon(flags=["--threads", "4"])
        d.start()
        try:
            d.create("gs", "adam", params=[0.0] * 2000)
            stop = threading.Event()
            results = []
            lock = threading.Lock()

            def worker(i):
                while not stop.is_set():
                    try:
                        r = d.post("/v1/sessions/gs/step?return=none", {"gradient": [0.001] * 2000},
                                   validate=False)
                    except (AssertionError, OSError, http.client.HTTPException):
                        return  # refused connection / closed: the daemon stopped accepting
                    with lock:
                        results.append(r.status)
                    if r.status != 200:
                        return
            ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
            for t in ts:
                t.start()
            while True:
                with lock:
                    if len(results) >= 30:
                        break
                time.sleep(0.01)
            d.send_signal(signal.SIGTERM)
            code = d.wait_exit()
            stop.set()
            for t in ts:
                t.join()
            self.assertEqual(code, 0, d.stderr_text())
            d.check_sanitizers()
            self.assertTrue(set(results) <= {200, 503}, set(results))
            self.assertGreaterEqual(results.count(200), 30)
        finally:
            d.kill9()
            d.cleanup()

    def test_slow_upload_in_flight_completes_newcomers_get_503(self):
        """A request whose body is still arriving when SIGTERM comes is
        finished and answered; a new request on another kept-alive
        connection is answered 503 unavailable (or its connection closed)."""
        d = Daemon()
        d.start()
        try:
            d.create("gs2", "sgd", size=3)
            idle = d.new_connection()
            idle.request("GET", "/healthz")
            r0 = idle.getresponse()
            r0.read()
            self.assertEqual(r0.status, 200)
            body = json.dumps({"gradient": [1.0, 2.0, 3.0]}).encode()
            s = d.raw_socket(timeout=20)
            s.sendall(b"POST /v1/sessions/gs2/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            time.sleep(0.3)
            d.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            newcomer = None
            try:
                idle.request("GET", "/v1/sessions/gs2")
                rr = idle.getresponse()
                newcomer = (rr.status, rr.read())
            except (OSError, http.client.HTTPException):
                newcomer = None
            s.sendall(body[5:])
            resp = http.client.HTTPResponse(s)
            resp.begin()
            status, data = resp.status, resp.read()
            s.close()
            idle.close()
            code = d.wait_exit()
            self.assertEqual(status, 200, data[:300])
            self.assertEqual(json.loads(data)["step"], 1)
            if newcomer is not None:
                self.assertEqual(newcomer[0], 503, newcomer)
                self.assertEqual(json.loads(newcomer[1])["error"]["code"], "unavailable")
            self.assertEqual(code, 0, d.stderr_text())
            d.check_sanitizers()
        finally:
            d.kill9()
            d.cleanup()

    def test_sigint_also_stops_cleanly(self):
        d = Daemon()
        d.start()
        try:
            d.create("gs3", "sgd", size=3)
            d.stop(sig=signal.SIGINT)
        finally:
            d.kill9()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
