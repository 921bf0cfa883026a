"""Limits: --max-sessions, --max-params (429), --max-connections,
--connection-timeout (idle and slowloris connections are closed)."""

import socket
import time
import unittest

from harness import DaemonTestCase


class MaxSessions(DaemonTestCase):
    FLAGS = ["--max-sessions", "3"]

    def test_429_beyond_max_sessions(self):
        for i in range(3):
            self.d.create("ms-%d" % i, "sgd", size=2)
        before = self.d.get("/v1/sessions").body
        for method, path, body in (("POST", "/v1/sessions", {"name": "ms-x", "optimizer": "sgd", "size": 1}),
                                   ("PUT", "/v1/sessions/ms-x", {"optimizer": "sgd", "size": 1}),
                                   ("POST", "/v1/sessions", {"name": "ms-x", "from": "ms-0"})):
            r = self.d.request(method, path, body)
            self.assertError(r, 429, "resource_exhausted")
        doc = self.d.state("ms-0")
        self.assertError(self.d.put("/v1/sessions/ms-x/state", doc), 429, "resource_exhausted")
        self.assertEqual(self.d.get("/v1/sessions").body, before)
        self.assertEqual(self.d.get("/v1/sessions/ms-x").status, 404)
        # replacing by import is not a new session
        r = self.d.put("/v1/sessions/ms-1/state", doc)
        self.assertEqual(r.status, 200, r)
        # a delete frees a place
        self.assertEqual(self.d.delete("/v1/sessions/ms-2").status, 204)
        self.d.create("ms-x", "sgd", size=1)
        self.assertError(self.d.post("/v1/sessions", {"name": "ms-y", "optimizer": "sgd", "size": 1}),
                         429, "resource_exhausted")
        self.d.assert_alive()


class MaxParams(DaemonTestCase):
    FLAGS = ["--max-params", "10"]

    def test_429_beyond_max_params(self):
        self.d.create("mp-a", "adam", size=6)
        before = self.d.get("/v1/sessions").body
        self.assertError(self.d.post("/v1/sessions", {"name": "mp-b", "optimizer": "sgd", "size": 5}),
                         429, "resource_exhausted")
        self.assertError(self.d.post("/v1/sessions", {"name": "mp-b", "optimizer": "sgd", "params": [0] * 5}),
                         429, "resource_exhausted")
        self.assertError(self.d.post("/v1/sessions", {"name": "mp-b", "from": "mp-a"}),
                         429, "resource_exhausted")
        self.assertEqual(self.d.get("/v1/sessions").body, before)
        self.d.create("mp-b", "sgd", size=4)  # exactly 10
        self.assertError(self.d.post("/v1/sessions", {"name": "mp-c", "optimizer": "sgd", "size": 1}),
                         429, "resource_exhausted")
        # an import that would replace 4 params by 6 goes over the limit too
        doc = self.d.state("mp-a")
        r = self.d.put("/v1/sessions/mp-b/state", doc)
        self.assertError(r, 429, "resource_exhausted")
        self.assertEqual(self.d.get("/v1/sessions/mp-b").body["size"], 4)
        self.assertEqual(self.d.delete("/v1/sessions/mp-a").status, 204)
        self.d.create("mp-c", "sgd", size=6)
        self.d.assert_alive()


class MaxConnections(DaemonTestCase):
    FLAGS = ["--max-connections", "4", "--threads", "2"]

    def test_connections_beyond_the_limit_are_not_served(self):
        held = []
        try:
            for _ in range(4):
                s = self.d.raw_socket(timeout=5)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200"))
                held.append(s)
            extra = self.d.raw_socket(timeout=5)
            got = b""
            try:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                got = extra.recv(65536)
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                pass
            finally:
                extra.close()
            self.assertFalse(got.startswith(b"HTTP/1.1 200"), "a 5th connection was served: %r" % got[:200])
        finally:
            for s in held:
                s.close()
        # once they are closed, new connections are served again
        for _ in range(50):
            if self.d.alive():
                break
            time.sleep(0.1)
        self.d.assert_alive()


class ConnectionTimeout(DaemonTestCase):
    FLAGS = ["--connection-timeout", "2"]

    def wait_closed(self, s, deadline, feed=None):
        """Returns True once the server closed s (before deadline seconds);
        feed() is called between reads to dribble bytes."""
        s.settimeout(0.25)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                b = s.recv(65536)
                if not b:
                    return True
                if b.startswith(b"HTTP/"):
                    # a 408 (or other error) answer is a fine way to close
                    code = int(b.split(b" ", 2)[1])
                    if code >= 400:
                        return True
                    return False
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

    def test_idle_connection_closed(self):
        s = self.d.raw_socket()
        try:
            self.assertTrue(self.wait_closed(s, 15), "an idle connection stayed open")
        finally:
            s.close()
        self.d.assert_alive()

    def test_slowloris_headers_byte_by_byte(self):
        header = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 400 + b"\r\n\r\n"
        s = self.d.raw_socket()
        pos = [0]

        def feed():
            if pos[0] < len(header) - 4:  # never finish the headers
                s.sendall(header[pos[0]:pos[0] + 1])
                pos[0] += 1
        try:
            # a byte every 0.25 s keeps the connection from ever being idle
            # for 2 s; it must still be closed after --connection-timeout
            # (we give up at 15 s, 7 times the timeout)
            self.assertTrue(self.wait_closed(s, 15, feed),
                            "a slowloris connection stayed open after %d bytes" % pos[0])
        finally:
            s.close()
        self.d.assert_alive()

    def test_slow_body_closed(self):
        s = self.d.raw_socket()
        body = b'{"name": "slow", "optimizer": "sgd", "size": 1}' + b" " * 400
        s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        pos = [0]

        def feed():
            if pos[0] < len(body) - 1:
                s.sendall(body[pos[0]:pos[0] + 1])
                pos[0] += 1
        try:
            self.assertTrue(self.wait_closed(s, 15, feed), "a slow body kept its connection open")
        finally:
            s.close()
        self.assertEqual(self.d.get("/v1/sessions/slow").status, 404)
        self.d.assert_alive()

    def test_active_keepalive_connection_is_served(self):
        c = self.d.new_connection()
        try:
            for _ in range(3):
                c.request("GET", "/healthz")
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                time.sleep(0.5)
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
