"""harness.py: start the real optd daemon and talk HTTP to it (stdlib only).

Every black-box integration test (tests/integration/test_*.py) uses this
module; nothing here knows the daemon's code, only API.md.

    from harness import Daemon, DaemonTestCase

    d = Daemon(flags=["--history", "10"], data_dir=True)  # temp --data-dir
    d.start()                       # free loopback port, waits for /healthz 200
    r = d.post("/v1/sessions", {"name": "a", "optimizer": "adam", "size": 3})
    status, headers, body = r       # body: parsed JSON, or bytes if not JSON
    r.status, r.headers["Location"], r.body, r.raw   # raw: the bytes
    d.get("/v1/sessions/a/params", headers={"Accept": "application/octet-stream"})
    d.stop()                        # SIGTERM; asserts exit 0 within 5 s and
                                    # no sanitizer report on stderr
    d.restart()                     # stop() then start() on the same data dir
    d.kill9()                       # SIGKILL, no checks (crash tests)

Options of Daemon(...):
    flags       extra command-line flags (list of str)
    data_dir    True: a fresh temp dir; a str: that dir; None: no --data-dir
    token       a str: write it to a token file, pass --auth-token-file, and
                send "Authorization: Bearer <token>" on every request unless
                the request says auth=NOAUTH (no header) or auth="other"
    tls         True: make a self-signed cert with openssl and serve HTTPS
                (the client trusts exactly that cert); or (cert, key) paths
    validate    check every JSON response against api/openapi.yaml (default
                True unless env OPTD_OPENAPI_CHECK=0); see openapi_check.py

Request helpers: d.request(method, path, body=None, headers=None, auth=...,
timeout=...) and d.get/post/put/patch/delete.  body: a dict/list is sent as
JSON, bytes/str are sent as they are (give Content-Type yourself).  Each
Daemon keeps one keep-alive connection for the calling thread; other threads
get their own automatically (d.request is thread-safe).

Other helpers: d.stderr_text(), d.alive() (healthz answers 200),
d.assert_alive(), d.raw_socket() (a plain socket to the port), free_port(),
make_cert(dir), DaemonTestCase (starts one daemon per test class from the
class attributes FLAGS/DATA_DIR/TOKEN/TLS, then calls the classmethod
prepare() for shared set-up, stops it with the checks in tearDownClass;
self.d inside tests, self.uname() for a fresh session name,
self.assertError(r, status, code) for API.md's error body).

Env: OPTD_BIN (default build/optd, relative to the repo root),
OPTD_START_TIMEOUT (seconds, default 20), OPTD_STOP_TIMEOUT (default 5).
"""

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")


_ALL = []


@atexit.register
def _kill_leftovers():
    """A test process never leaves a daemon behind, even when it fails."""
    for d in _ALL:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def optd_bin():
    b = os.environ.get("OPTD_BIN", "build/optd")
    return b if os.path.isabs(b) else os.path.join(REPO, b)


def free_port():
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory, cn="localhost"):
    """Writes a self-signed cert + key (EC P-256, SAN 127.0.0.1/localhost)
    into directory with openssl; returns (cert_path, key_path)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=" + cn,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Response:
    """status, headers (case-insensitive .get / []), body (JSON or bytes), raw
    bytes; unpacks as (status, headers, body)."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        ctype = (headers.get("Content-Type") or "").lower()
        self.body = raw
        if raw and "json" in ctype:
            try:
                self.body = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self.body = raw

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        b = self.raw[:300]
        return "<Response %d %r>" % (self.status, b)

    def error_code(self):
        try:
            return self.body["error"]["code"]
        except (TypeError, KeyError):
            return None


class Daemon:
    def __init__(self, flags=None, data_dir=None, token=None, tls=None,
                 validate=None, env=None):
        self.flags = list(flags or [])
        self.tmp = tempfile.mkdtemp(prefix="optd-itest-")
        if data_dir is True:
            self.data_dir = os.path.join(self.tmp, "data")
            os.makedirs(self.data_dir)
        else:
            self.data_dir = data_dir
        self.token = token
        self.token_file = None
        if token is not None:
            self.token_file = os.path.join(self.tmp, "tokens")
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
        self.cert = self.key = None
        if tls is True:
            self.cert, self.key = make_cert(self.tmp)
        elif tls:
            self.cert, self.key = tls
        if validate is None:
            validate = os.environ.get("OPTD_OPENAPI_CHECK", "1") != "0"
        self.validate = validate
        self.env = env
        self.proc = None
        self.port = None
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self._local = threading.local()
        self._starts = 0
        _ALL.append(self)

    # --- process -----------------------------------------------------------
    def argv(self):
        a = [optd_bin(), "--listen", "127.0.0.1:%d" % self.port]
        if self.data_dir:
            a += ["--data-dir", self.data_dir]
        if self.token_file:
            a += ["--auth-token-file", self.token_file]
        if self.cert:
            a += ["--tls-cert", self.cert, "--tls-key", self.key]
        return a + self.flags

    def start(self, port=None):
        timeout = float(os.environ.get("OPTD_START_TIMEOUT", "20"))
        self._stopped = False
        for attempt in range(3):
            self.port = port or free_port()
            self._starts += 1
            env = dict(os.environ)
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            if self.env:
                env.update(self.env)
            self._errf = open(self.stderr_path, "ab")
            self._errf.write(b"==== start %d: %s\n" % (
                self._starts, " ".join(self.argv()).encode()))
            self._errf.flush()
            self._err_offset = self._errf.tell()
            self.proc = subprocess.Popen(self.argv(), stdout=open(self.stdout_path, "ab"),
                                         stderr=self._errf, env=env)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self.alive(timeout=1):
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                self._stopped = True
                raise AssertionError("optd did not answer GET /healthz 200 within %gs; "
                                     "stderr:\n%s" % (timeout, self.stderr_text()))
            err = self.stderr_text()
            if port is None and ("in use" in err.lower()) and attempt < 2:
                continue
            raise AssertionError("optd exited with %s during start-up; stderr:\n%s"
                                 % (self.proc.returncode, err))
        raise AssertionError("could not start optd")

    def stderr_text(self, all_runs=False):
        try:
            with open(self.stderr_path, "rb") as f:
                if not all_runs:
                    f.seek(getattr(self, "_err_offset", 0))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_sanitizers(self):
        err = self.stderr_text()
        for m in SANITIZER_MARKERS:
            if m in err:
                raise AssertionError("sanitizer report in optd's stderr (%s):\n%s" % (m, err[-8000:]))

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=None):
        """Waits for the process to exit; returns its exit code (or raises)."""
        if timeout is None:
            timeout = float(os.environ.get("OPTD_STOP_TIMEOUT", "5"))
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("optd did not exit within %gs of SIGTERM; stderr:\n%s"
                                 % (timeout, self.stderr_text()[-4000:]))

    def stop(self, sig=signal.SIGTERM, timeout=None, expect_code=0):
        """Graceful stop with the contract's checks: exit code 0 within 5 s,
        no sanitizer report."""
        self.close_connections()
        if self.proc is None or getattr(self, "_stopped", False):
            return None
        if self.proc.poll() is not None:
            code = self.proc.returncode
        else:
            self.proc.send_signal(sig)
            code = self.wait_exit(timeout)
        self._stopped = True
        self._errf.close()
        self.check_sanitizers()
        if expect_code is not None and code != expect_code:
            raise AssertionError("optd exited with %s, want %s; stderr:\n%s"
                                 % (code, expect_code, self.stderr_text()[-4000:]))
        return code

    def kill9(self):
        self.close_connections()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stopped = True

    def restart(self, keep_port=True):
        self.stop()
        self._stopped = False
        return self.start(port=self.port if keep_port else None)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- HTTP ----------------------------------------------------------------
    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        return ctx

    def new_connection(self, timeout=30):
        if self.cert:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context())
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def raw_socket(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if self.cert:
            s = self.ssl_context().wrap_socket(s)
        return s

    def close_connections(self):
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def _auth_header(self, auth):
        if auth is _DEFAULT:
            auth = self.token
        if auth is None:
            return None
        return "Bearer " + auth

    def request(self, method, path, body=None, headers=None, auth=None, timeout=30,
                validate=None):
        """auth: None sends the daemon's token (if any), NOAUTH sends no
        Authorization header, a str sends "Bearer <str>"."""
        return self._request(method, path, body, headers, _DEFAULT if auth is None else auth,
                             timeout, validate)

    def _request(self, method, path, body, headers, auth, timeout, validate):
        hdrs = dict(headers or {})
        if isinstance(body, (dict, list)) or body is _JSON_NULL:
            data = json.dumps(None if body is _JSON_NULL else body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        if auth is _NOAUTH:
            pass
        else:
            a = self._auth_header(auth)
            if a is not None:
                hdrs.setdefault("Authorization", a)
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self.new_connection(timeout)
                self._local.conn = conn
            conn.timeout = timeout
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady) as e:
                conn.close()
                self._local.conn = None
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection
                raise AssertionError("%s %s: connection failed: %r" % (method, path, e))
            except Exception:
                conn.close()
                self._local.conn = None
                raise
            if resp.will_close:
                conn.close()
                self._local.conn = None
            r = Response(resp.status, resp.headers, raw)
            if validate is None:
                validate = self.validate
            if validate:
                import openapi_check
                openapi_check.check(method, path, r)
            return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def alive(self, timeout=2):
        """True if GET /healthz answers 200 {"status": "ok"} on a fresh connection."""
        try:
            c = self.new_connection(timeout)
            try:
                c.request("GET", "/healthz")
                r = c.getresponse()
                body = r.read()
                return r.status == 200 and json.loads(body) == {"status": "ok"}
            finally:
                c.close()
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def assert_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("optd died (exit %s); stderr:\n%s"
                                 % (self.proc.returncode, self.stderr_text()[-4000:]))
        if not self.alive(timeout=10):
            raise AssertionError("optd no longer answers GET /healthz")

    # --- conveniences used by many tests --------------------------------------
    def create(self, name, optimizer="adam", params=None, size=None, **fields):
        body = {"name": name, "optimizer": optimizer}
        if params is not None:
            body["params"] = params
        elif size is not None:
            body["size"] = size
        elif "from" not in fields:
            body["params"] = [0.5, -1.25, 3.0]
        body.update(fields)
        r = self.post("/v1/sessions", body)
        if r.status != 201:
            raise AssertionError("create %s failed: %r" % (name, r))
        return r.body

    def state(self, name):
        r = self.get("/v1/sessions/%s/state" % name)
        if r.status != 200:
            raise AssertionError("GET state of %s: %r" % (name, r))
        return r.body


class _Sentinel:
    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return self.n


_DEFAULT = _Sentinel("DEFAULT")
_NOAUTH = _Sentinel("NOAUTH")
_JSON_NULL = _Sentinel("JSON_NULL")
NOAUTH = _NOAUTH       # request(..., auth=NOAUTH): send no Authorization header
JSON_NULL = _JSON_NULL  # body=JSON_NULL sends the JSON text `null`


class DaemonTestCase(unittest.TestCase):
    """One daemon per test class.  Class attributes: FLAGS, DATA_DIR, TOKEN,
    TLS.  self.d is the Daemon; tearDownClass stops it with the checks."""
    FLAGS = []
    DATA_DIR = None
    TOKEN = None
    TLS = None
    _counter = 0

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(flags=cls.FLAGS, data_dir=cls.DATA_DIR, token=cls.TOKEN, tls=cls.TLS)
        try:
            cls.d.start()
            cls.prepare()
        except BaseException:
            cls.d.cleanup()
            raise

    @classmethod
    def prepare(cls):
        """Override to set up shared sessions once the daemon is up."""

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.d.cleanup()

    def uname(self, base="s"):
        """A session name unique within this daemon."""
        DaemonTestCase._counter += 1
        return "%s-%s-%d" % (base, self._testMethodName.replace("_", "-")[:60],
                             DaemonTestCase._counter)

    def assertError(self, r, status, code):
        """r is an error answer with this status and code and API.md's body."""
        self.assertEqual(r.status, status, "want %d %s, got %r" % (status, code, r))
        self.assertIsInstance(r.body, dict, "error body is not JSON: %r" % (r,))
        self.assertIn("json", (r.headers.get("Content-Type") or "").lower(), r)
        err = r.body.get("error")
        self.assertIsInstance(err, dict, r)
        self.assertEqual(err.get("code"), code, r)
        self.assertIsInstance(err.get("message"), str, r)
        self.assertTrue(err["message"].strip(), "empty error message: %r" % (r,))
        return err
