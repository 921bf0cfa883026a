"""The slow-request watchdog and the memory held by request bodies.

- A request's clock starts with its request line: time a keep-alive
  connection spent idle before it never counts against it, and a request
  whose handler has started is always answered.
- A body that stops arriving (under 1 KiB/s over a --connection-timeout
  window) is cut, however much of it came fast before.
- Request bodies in flight hold at most --max-body-memory: a request that
  declares a body that does not fit gets 503 with Retry-After before the
  body is sent."""

import http.client
import json
import socket
import time
import unittest

import openapi_check
from harness import DaemonTestCase
from test_framing import parse_responses

MiB = 1 << 20


def closed_within(s, seconds, feed=None, every=0.5):
    """True once the server closes s (an error answer counts) within
    seconds; feed() is called every `every` seconds meanwhile."""
    s.settimeout(every)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            b = s.recv(65536)
            if not b or (b.startswith(b"HTTP/") and int(b.split(b" ", 2)[1]) >= 400):
                return True
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        if feed is not None:
            try:
                feed()
            except (ConnectionResetError, BrokenPipeError):
                return True
    return False


class IdleTimeIsNotRequestTime(DaemonTestCase):
    FLAGS = ["--connection-timeout", "3"]

    @classmethod
    def prepare(cls):
        import array
        import random
        n = 2000000
        cls.d.create("big", "adam", size=n)
        rnd = random.Random(7)
        grad = array.array("d", (rnd.random() for _ in range(n)))
        r = cls.d.post("/v1/sessions/big/step", grad.tobytes(),
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status == 200, r

    def keepalive(self):
        c = http.client.HTTPConnection("127.0.0.1", self.d.port, timeout=60)
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        return c

    def test_request_after_idle_gets_its_whole_allowance(self):
        """A PATCH sent 2.5 s into a keep-alive idle (timeout 3 s), whose
        body takes about a second to arrive, is applied and answered."""
        name = self.uname("p")
        self.d.create(name, "sgd", size=2)
        c = self.keepalive()
        try:
            time.sleep(2.5)
            body = json.dumps({"hyperparameters": {"lr": 0.25}}).encode()
            c.putrequest("PATCH", "/v1/sessions/" + name)
            c.putheader("Content-Type", "application/json")
            c.putheader("Content-Length", str(len(body)))
            c.endheaders()
            for i in range(0, len(body), 8):
                time.sleep(0.3)
                c.send(body[i:i + 8])
            r = c.getresponse()
            doc = json.loads(r.read())
            self.assertEqual(r.status, 200, doc)
            self.assertEqual(doc["hyperparameters"]["lr"], 0.25)
        finally:
            c.close()
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["hyperparameters"]["lr"], 0.25)

    def test_started_handler_is_answered(self):
        """GETs of a 2M-parameter Adam state (130 MB of JSON, a few tenths
        of a second of work) sent 2.6 to 2.9 s into a keep-alive idle are
        answered in full.  The old watchdog counted the idle time and cut
        whichever of them its half-second tick caught past 3 s."""
        for idle in (2.6, 2.7, 2.8, 2.9):
            c = self.keepalive()
            try:
                time.sleep(idle)
                try:
                    c.request("GET", "/v1/sessions/big/state")
                    r = c.getresponse()
                    raw = r.read()
                except (http.client.HTTPException, OSError) as e:
                    self.fail("the state GET after %.1f s idle was cut: %r" % (idle, e))
                self.assertEqual(r.status, 200)
                self.assertEqual(len(raw), int(r.getheader("Content-Length")))
                self.assertTrue(raw.startswith(b"{"))
            finally:
                c.close()


class BodyTrickle(DaemonTestCase):
    FLAGS = ["--connection-timeout", "2", "--max-body-bytes", str(8 * MiB),
             "--max-body-memory", str(8 * MiB)]

    def setUp(self):
        # bodies an earlier test left are released once the daemon sees
        # their connections close: wait for a free budget
        end = time.monotonic() + 30
        while self.probe(8 * MiB)[0] != 100:
            self.assertLess(time.monotonic(), end, "the body budget never came free")
            time.sleep(0.05)

    def start_body(self, declared, send):
        s = self.d.raw_socket(timeout=10)
        s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % declared)
        s.sendall(b" " * send)
        return s

    def probe(self, declared):
        """Declares a body with Expect: 100-continue: the status the daemon
        answers before the body (100 when it would take it), and the response."""
        s = self.d.raw_socket(timeout=10)
        try:
            s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % declared)
            got = b""
            while b"\r\n\r\n" not in got:
                b = s.recv(65536)
                if not b:
                    break
                got += b
            if got.startswith(b"HTTP/1.1 100"):
                return 100, None
            s.settimeout(2)
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            except (socket.timeout, ConnectionResetError):
                pass
            resps = parse_responses(got)
            return (resps[0].status if resps else 0), (resps[0] if resps else None)
        finally:
            s.close()

    def test_fast_then_trickle_is_cut(self):
        """5 MiB fast, then a byte every half second: cut (before, it had
        timeout + 5 MiB / 1 KiB/s = 85 minutes)."""
        s = self.start_body(6 * MiB, 5 * MiB)
        try:
            self.assertTrue(closed_within(s, 30, lambda: s.sendall(b" ")),
                            "a body trickling after 5 MiB kept its connection")
        finally:
            s.close()
        self.d.assert_alive()

    def test_request_line_dribble_is_cut(self):
        """A request line sent a byte every half second never completes (so
        the request's own clock never starts): the connection is still cut."""
        line = b"GET /v1/sessions/" + b"a" * 200 + b" HTTP/1.1\r\n"
        s = self.d.raw_socket(timeout=10)
        pos = [0]

        def feed():
            if pos[0] < len(line) - 2:
                s.sendall(line[pos[0]:pos[0] + 1])
                pos[0] += 1
        try:
            self.assertTrue(closed_within(s, 30, feed), "a dribbled request line kept its connection")
        finally:
            s.close()
        self.d.assert_alive()

    def test_budget_full_is_503_before_the_body(self):
        held = self.start_body(6 * MiB, 5 * MiB)
        try:
            status, r = 100, None
            end = time.monotonic() + 1.5  # held is well inside its first 2 s window
            while status == 100 and time.monotonic() < end:
                status, r = self.probe(6 * MiB)
                if status == 100:
                    time.sleep(0.05)
            self.assertEqual(status, 503, "a 6 MiB body was taken while 5 MiB of 8 were held: %r" % (r,))
            self.assertError(r, 503, "unavailable")
            self.assertEqual(r.headers.get("Retry-After"), "1")
            self.assertEqual((r.headers.get("Connection") or "").lower(), "close")
            openapi_check.check("POST", "/v1/sessions", r)
            # small bodies still fit
            name = self.uname("small")
            self.d.create(name, "sgd", size=2)
        finally:
            held.close()
        # once the held body is gone, its memory is back
        end = time.monotonic() + 30
        while self.probe(6 * MiB)[0] != 100:
            self.assertLess(time.monotonic(), end, "the memory of a closed body never came back")
            time.sleep(0.1)

    def test_body_outgrowing_the_budget_is_answered_503(self):
        """Two 6 MiB bodies both admitted while the budget was free: the one
        that grows second is read to its end and answered 503, not cut."""
        a = self.start_body(6 * MiB, 1024)
        b = self.start_body(6 * MiB, 5 * MiB)
        try:
            end = time.monotonic() + 1.5  # both inside their first 2 s window
            while self.probe(3 * MiB)[0] == 100:  # until b's 5 MiB are held
                self.assertLess(time.monotonic(), end, "b's body was never counted")
                time.sleep(0.05)
            a.sendall(b" " * (6 * MiB - 1024))
            a.settimeout(10)
            got = b""
            while b"\r\n\r\n" not in got or len(got) < got.find(b"\r\n\r\n") + 20:
                chunk = a.recv(65536)
                if not chunk:
                    break
                got += chunk
            resps = parse_responses(got)
            self.assertEqual(len(resps), 1, got[:300])
            self.assertError(resps[0], 503, "unavailable")
            self.assertEqual(resps[0].headers.get("Retry-After"), "1")
        finally:
            a.close()
            b.close()

    def test_declared_length_is_not_held_up_front(self):
        """A body counts for what has arrived, not what it declares: with
        6 of 8 MiB declared but 1 KiB sent, another 6 MiB body is taken."""
        held = self.start_body(6 * MiB, 1024)
        try:
            self.assertEqual(self.probe(6 * MiB)[0], 100)
        finally:
            held.close()

    def test_big_chunked_body_within_budget(self):
        name = self.uname("chunked")
        body = json.dumps({"name": name, "optimizer": "sgd", "params": [0.5] * 600000}).encode()
        self.assertGreater(len(body), 2 * MiB)
        c = self.d.new_connection(timeout=60)
        try:
            c.putrequest("POST", "/v1/sessions")
            c.putheader("Content-Type", "application/json")
            c.putheader("Transfer-Encoding", "chunked")
            c.endheaders()
            for i in range(0, len(body), 100000):
                ch = body[i:i + 100000]
                c.send(b"%x\r\n%s\r\n" % (len(ch), ch))
            c.send(b"0\r\n\r\n")
            r = c.getresponse()
            self.assertEqual(r.status, 201, r.read()[:300])
            r.read()
        finally:
            c.close()
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["size"], 600000)


class BudgetFlag(unittest.TestCase):
    def test_budget_below_body_limit_is_refused(self):
        from harness import Daemon
        d = Daemon(flags=["--max-body-bytes", "1000", "--max-body-memory", "999"])
        try:
            d.port = 1
            import subprocess
            p = subprocess.run(d.argv(), capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--max-body-memory 999 is less than --max-body-bytes", p.stderr)
        finally:
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
