"""--auth-token-file (401 on every /v1 path, known or not, before anything
else), --metrics-auth, refusing to start without a usable token file, and
--tls-cert/--tls-key (HTTPS; plain HTTP on that port is not served)."""

import os
import socket
import ssl
import subprocess
import tempfile
import unittest

from harness import Daemon, DaemonTestCase, NOAUTH, make_cert, optd_bin, free_port

V1_REQUESTS = [
    ("GET", "/v1/optimizers", None), ("GET", "/v1/sessions", None),
    ("POST", "/v1/sessions", {"name": "a-x", "optimizer": "sgd", "size": 1}),
    ("PUT", "/v1/sessions/a-x", {"optimizer": "sgd", "size": 1}),
    ("GET", "/v1/sessions/a-s", None), ("PATCH", "/v1/sessions/a-s", {"labels": {}}),
    ("DELETE", "/v1/sessions/a-s", None), ("GET", "/v1/sessions/a-s/params", None),
    ("POST", "/v1/sessions/a-s/step", {"gradient": [1.0]}), ("GET", "/v1/sessions/a-s/history", None),
    ("GET", "/v1/sessions/a-s/state", None), ("PUT", "/v1/sessions/a-s/state", {}),
    # unknown routes, wrong methods, bad bodies: still 401 first
    ("GET", "/v1/nope", None), ("GET", "/v1", None), ("GET", "/v1/", None),
    ("DELETE", "/v1/optimizers", None), ("GET", "/v1/sessions/a-s/step", None),
    ("POST", "/v1/sessions", b"{garbage"), ("GET", "/v1/sessions/no-such", None),
    ("GET", "/v1/sessions?limit=0", None),
]


class Auth(DaemonTestCase):
    TOKEN = "s3cret-token"

    @classmethod
    def prepare(cls):
        cls.d.create("a-s", "sgd", size=1)

    def test_every_v1_path_401_without_token(self):
        before = self.d.state("a-s")
        for auth in (NOAUTH, "wrong", "s3cret-token-x", "s3cret", ""):
            for method, path, body in V1_REQUESTS:
                with self.subTest(auth=auth, method=method, path=path):
                    hdrs = {"Content-Type": "application/json"} if body is not None else {}
                    r = self.d.request(method, path, body, headers=hdrs, auth=auth)
                    self.assertError(r, 401, "unauthorized")
                    self.assertTrue((r.headers.get("WWW-Authenticate") or "").startswith("Bearer"),
                                    r.headers.get("WWW-Authenticate"))
        self.assertEqual(self.d.state("a-s"), before)
        self.assertEqual(self.d.get("/v1/sessions/a-x").status, 404)

    def test_401_keeps_a_bodyless_connection(self):
        # a client that forgot its token can retry on the same connection
        conn = self.d.new_connection()
        try:
            conn.request("GET", "/v1/sessions/a-s")
            sock = conn.sock
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 401)
            conn.request("GET", "/v1/sessions/a-s", headers={"Authorization": "Bearer " + self.TOKEN})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            self.assertIs(conn.sock, sock, "the connection was closed after the 401")
        finally:
            conn.close()

    def test_other_schemes_refused(self):
        for value in ("Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer", "Bearer  s3cret-token x",
                      "Token s3cret-token"):
            with self.subTest(value=value):
                r = self.d.get("/v1/optimizers", headers={"Authorization": value}, auth=NOAUTH)
                self.assertError(r, 401, "unauthorized")

    def test_token_works(self):
        r = self.d.get("/v1/sessions/a-s")
        self.assertEqual(r.status, 200, r)
        r = self.d.get("/v1/nope")
        self.assertError(r, 404, "not_found")

    def test_healthz_and_metrics_open(self):
        r = self.d.get("/healthz", auth=NOAUTH)
        self.assertEqual(r.status, 200)
        r = self.d.get("/metrics", auth=NOAUTH)
        self.assertEqual(r.status, 200)
        self.assertIn("optd_sessions", r.raw.decode())


class AuthManyTokensAndMetricsAuth(unittest.TestCase):
    def test_any_line_token_and_metrics_auth(self):
        tmp = tempfile.mkdtemp(prefix="optd-itest-tok-")
        tokfile = os.path.join(tmp, "tokens")
        with open(tokfile, "w") as f:
            f.write("first-token\nsecond-token\n")
        d = Daemon(flags=["--auth-token-file", tokfile, "--metrics-auth"])
        d.start()
        try:
            for tok in ("first-token", "second-token"):
                self.assertEqual(d.get("/v1/optimizers", auth=tok).status, 200)
                self.assertEqual(d.get("/metrics", auth=tok).status, 200)
            r = d.get("/metrics", auth=NOAUTH)
            self.assertEqual(r.status, 401)
            self.assertTrue((r.headers.get("WWW-Authenticate") or "").startswith("Bearer"))
            self.assertEqual(d.get("/v1/optimizers", auth="third-token").status, 401)
            self.assertEqual(d.get("/healthz", auth=NOAUTH).status, 200)
            d.stop()
        finally:
            d.kill9()
            d.cleanup()


class TokenFileRefused(unittest.TestCase):
    def run_optd(self, *args):
        try:
            p = subprocess.run([optd_bin(), "--listen", "127.0.0.1:%d" % free_port()] + list(args),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("optd %s kept running: it must refuse to start" % " ".join(args))
        return p

    def test_missing_or_empty_token_file(self):
        tmp = tempfile.mkdtemp(prefix="optd-itest-tok-")
        empty = os.path.join(tmp, "empty")
        open(empty, "w").close()
        blank = os.path.join(tmp, "blank")
        with open(blank, "w") as f:
            f.write("\n\n")
        for path in (os.path.join(tmp, "missing"), empty, blank):
            with self.subTest(path=os.path.basename(path)):
                p = self.run_optd("--auth-token-file", path)
                self.assertNotEqual(p.returncode, 0)
                self.assertTrue(p.stderr.strip(), "no message on stderr")
        p = self.run_optd("--metrics-auth")
        # --metrics-auth alone: either refused or harmless; it must not crash
        self.assertNotIn(p.returncode, (-11, -6))


class Tls(DaemonTestCase):
    TLS = True
    TOKEN = "tls-token"

    def test_https_serves_the_api(self):
        self.assertTrue(self.d.alive())
        d = self.d.create("tls-a", "adam", params=[1.0, 2.0])
        self.assertEqual(d["name"], "tls-a")
        r = self.d.post("/v1/sessions/tls-a/step", {"gradient": [0.1, 0.2]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["step"], 1)
        r = self.d.get("/v1/optimizers", auth=NOAUTH)
        self.assertError(r, 401, "unauthorized")

    def test_plain_http_on_tls_port_not_served(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=5)
        got = b""
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (ConnectionResetError, socket.timeout):
            pass
        finally:
            s.close()
        self.assertNotIn(b"200 OK", got)
        self.assertNotIn(b'"status"', got)
        self.d.assert_alive()

    def test_untrusted_client_refuses_wrong_cert(self):
        other_dir = tempfile.mkdtemp(prefix="optd-itest-cert-")
        other_cert, _ = make_cert(other_dir)
        ctx = ssl.create_default_context(cafile=other_cert)
        ctx.check_hostname = False
        with self.assertRaises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", self.d.port), timeout=5) as raw:
                with ctx.wrap_socket(raw):
                    pass
        self.d.assert_alive()


class TlsBadFiles(unittest.TestCase):
    def test_missing_cert_refuses_to_start(self):
        tmp = tempfile.mkdtemp(prefix="optd-itest-tls-")
        cert, key = make_cert(tmp)
        for args in (["--tls-cert", os.path.join(tmp, "nope.pem"), "--tls-key", key],
                     ["--tls-cert", cert, "--tls-key", os.path.join(tmp, "nope.pem")],
                     ["--tls-cert", key, "--tls-key", cert]):
            with self.subTest(args=args):
                try:
                    p = subprocess.run([optd_bin(), "--listen", "127.0.0.1:%d" % free_port()] + args,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
                except subprocess.TimeoutExpired:
                    self.fail("optd started with unusable TLS files %r" % args)
                self.assertNotEqual(p.returncode, 0)
                self.assertTrue(p.stderr.strip())


if __name__ == "__main__":
    unittest.main()
