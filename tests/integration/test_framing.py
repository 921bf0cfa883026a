"""HTTP framing (RFC 9112): a request whose end is ambiguous is refused with
400 (501 for a transfer coding optd does not know) in the API's JSON, and
its connection is closed, so nothing after it is ever read as a request.

libmicrohttpd 0.9.75 by itself took "Content-Length : N" (space before the
colon) for an unknown header and ran the body as a second request, took the
first of two differing Content-Lengths, took Transfer-Encoding over
Content-Length and kept the connection, and never answered
"Transfer-Encoding: gzip"."""

import json
import shutil
import socket
import time
import unittest

import openapi_check
from harness import Daemon, DaemonTestCase, Response


class _Headers(dict):
    def get(self, k, default=None):
        return super().get(k.lower(), default)

    def __getitem__(self, k):
        return super().__getitem__(k.lower())


def parse_responses(data):
    """The HTTP/1.1 responses in data, as harness Responses (bodies framed by
    Content-Length; a 100 Continue is skipped)."""
    out = []
    while data.startswith(b"HTTP/"):
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = _Headers()
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length") or 0)
        body, data = rest[:n], rest[n:]
        if status != 100:
            out.append(Response(status, hdrs, body))
    return out


def exchange(d, data, wait=10):
    """Sends data on a fresh connection and reads until the server closes it
    (or wait seconds pass): (responses, closed)."""
    s = d.raw_socket(timeout=wait)
    got = b""
    closed = False
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before it has read everything
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not b:
                closed = True
                break
            got += b
    finally:
        s.close()
    return parse_responses(got), closed


class Framing(DaemonTestCase):

    def refused(self, data, status=400, code="invalid_argument", method="POST", path="/v1/sessions"):
        """data gets exactly one answer, status/code in JSON with Connection:
        close, and the connection is closed after it."""
        resps, closed = exchange(self.d, data)
        self.assertEqual(len(resps), 1, "want one answer, got %r" % (resps,))
        r = resps[0]
        self.assertError(r, status, code)
        self.assertEqual((r.headers.get("Connection") or "").lower(), "close", r)
        self.assertTrue(closed, "the connection stayed open after %r" % (r,))
        openapi_check.check(method, path, r)
        return r

    def test_space_before_colon_hides_no_second_request(self):
        name = self.uname("victim")
        self.d.create(name, "sgd", size=2)
        smuggled = b"DELETE /v1/sessions/%s HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode()
        data = (b"PATCH /v1/sessions/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length : %d\r\n\r\n" % (name.encode(), len(smuggled))) + smuggled
        r = self.refused(data, method="PATCH", path="/v1/sessions/" + name)
        self.assertIn("Content-Length ", r.body["error"]["message"])
        self.assertEqual(self.d.get("/v1/sessions/" + name).status, 200, "the hidden DELETE ran")

    def test_whitespace_in_a_header_name(self):
        for line in (b"Transfer-Encoding\t: chunked", b"X Y: z", b" Leading: space"):
            with self.subTest(line=line):
                self.refused(b"GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % line, method="GET",
                             path="/healthz")

    def test_differing_content_lengths(self):
        name = self.uname("cl")
        body = json.dumps({"name": name, "optimizer": "sgd", "size": 1}).encode()
        data = (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body) + 40)) + body
        self.refused(data)
        self.assertEqual(self.d.get("/v1/sessions/" + name).status, 404)

    def test_equal_content_lengths_are_one(self):
        name = self.uname("cl2")
        body = json.dumps({"name": name, "optimizer": "sgd", "size": 1}).encode()
        data = (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (len(body), len(body))) + body
        resps, _ = exchange(self.d, data)
        self.assertEqual([r.status for r in resps], [201], resps)

    def test_content_length_with_transfer_encoding(self):
        name = self.uname("te")
        smuggled = b"DELETE /v1/sessions/%s HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode()
        self.d.create(name, "sgd", size=1)
        body = b'{"labels": {"a": "b"}}'
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        data = (b"PATCH /v1/sessions/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                % (name.encode(), len(chunked) + len(smuggled))) + chunked + smuggled
        self.refused(data, method="PATCH", path="/v1/sessions/" + name)
        r = self.d.get("/v1/sessions/" + name)
        self.assertEqual(r.status, 200, "the DELETE after the chunked body ran")
        self.assertEqual(r.body["labels"], {}, "the refused PATCH changed the session")

    def test_unknown_transfer_coding_is_501(self):
        for te in (b"gzip", b"gzip, chunked", b"chunked;x=1", b"identity"):
            with self.subTest(te=te):
                data = (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % te)
                self.refused(data, 501, "not_implemented")

    def test_chunked_twice_or_in_http10(self):
        for first, te in ((b"POST /v1/sessions HTTP/1.1\r\nHost: x", b"chunked, chunked"),
                          (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", b"chunked"),
                          (b"POST /v1/sessions HTTP/1.0", b"chunked")):
            with self.subTest(first=first, te=te):
                data = first + (b"\r\nContent-Type: application/json\r\nTransfer-Encoding: %s\r\n\r\n"
                                b"2\r\n{}\r\n0\r\n\r\n" % te)
                self.refused(data)

    def test_host_missing_or_repeated(self):
        self.refused(b"GET /healthz HTTP/1.1\r\n\r\n", method="GET", path="/healthz")
        self.refused(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", method="GET", path="/healthz")
        # HTTP/1.0 has no Host requirement
        resps, _ = exchange(self.d, b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual([r.status for r in resps], [200], resps)

    def test_well_framed_requests_keep_the_connection(self):
        name = self.uname("ok")
        body = json.dumps({"name": name, "optimizer": "sgd", "size": 1}).encode()
        chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        data = (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: Chunked\r\n\r\n" + chunk +
                b"GET /v1/sessions/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % name.encode() +
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n")
        resps, _ = exchange(self.d, data)
        self.assertEqual([r.status for r in resps], [201, 200, 200], resps)


@unittest.skipUnless(shutil.which("nginx"), "nginx is not installed (deploy/install-deps.sh test)")
class ThroughNginx(unittest.TestCase):
    """What the README says of deploy/nginx: nginx refuses each of these
    itself (its own 400 or 501) and nothing reaches optd as a second
    request, whatever optd would have made of it."""

    @classmethod
    def setUpClass(cls):
        from test_sharding import Nginx
        cls.d = Daemon()
        cls.d.start()
        cls.nginx = Nginx([cls.d.port])
        try:
            cls.nginx.start()
        except BaseException:
            cls.nginx.stop()
            cls.d.stop()
            cls.d.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.nginx.stop()
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def test_nginx_refuses_ambiguous_framing(self):
        proxy = type("Proxy", (), {"raw_socket": lambda _, timeout=10: socket.create_connection(
            ("127.0.0.1", self.nginx.port), timeout=timeout)})()
        body = b'{"labels": {"a": "b"}}'
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        cases = []
        for i, (headers, payload) in enumerate((
                (b"Content-Length : %d", None),
                (b"Content-Length: %d\r\nContent-Length: 1", None),
                (b"Content-Length: %d\r\nTransfer-Encoding: chunked", chunked))):
            name = "ngx-%d" % i
            self.d.create(name, "sgd", size=1)
            smuggled = b"DELETE /v1/sessions/%s HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode()
            first = payload if payload is not None else body
            data = first + smuggled
            cases.append((name, b"PATCH /v1/sessions/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          % name.encode() + (headers % len(data)) + b"\r\n\r\n" + data, 400))
        step = b"POST /v1/sessions/ngx-0/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for te, status in ((b"gzip", 501), (b"chunked, chunked", 501)):
            cases.append((None, step + b"Transfer-Encoding: %s\r\n\r\n2\r\n{}\r\n0\r\n\r\n" % te, status))
        cases.append((None, b"GET /healthz HTTP/1.1\r\n\r\n", 400))
        cases.append((None, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400))
        cases.append((None, step[:-2].replace(b"HTTP/1.1\r\nHost: x", b"HTTP/1.0") +
                      b"\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400))
        for name, data, status in cases:
            with self.subTest(data=data[:90]):
                resps, closed = exchange(proxy, data)
                self.assertEqual([r.status for r in resps], [status], resps)
                self.assertTrue(closed)
                if name:
                    r = self.d.get("/v1/sessions/" + name)
                    self.assertEqual(r.status, 200, "the smuggled DELETE reached optd")
                    self.assertEqual(r.body["labels"], {}, "a refused PATCH reached optd")


if __name__ == "__main__":
    unittest.main()
