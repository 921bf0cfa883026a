"""benchlib.py: what the Python benchmarks of `make bench` share.

Starting and stopping optd and the floor servers on free loopback ports,
statistics (median, min, max), and the summary rows: each benchmark may
append rows to the file named by $OPTD_BENCH_SUMMARY (run.sh sets it), one
tab-separated line per figure, and run.sh prints them as the one table at
the top of the report:

    figure  median  min-max  floor-or-peer  ratio  target  met

Use summary_row() rather than writing lines by hand.  Standard library
only (Debian's /usr/bin/python3)."""

import http.client
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)


def log(msg):
    """Progress goes to stderr; stdout is the report."""
    print("  " + msg, file=sys.stderr, flush=True)


def stats(values):
    """(median, min, max) of a non-empty list."""
    return statistics.median(values), min(values), max(values)


def fmt(v, digits=None):
    """A figure with about four significant digits, thousands separated."""
    if v is None:
        return "—"
    if digits is None:
        a = abs(v)
        digits = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 10 else 3
    s = f"{v:,.{digits}f}"
    return s


def spread(values, unit="", digits=None):
    return f"{fmt(min(values), digits)}–{fmt(max(values), digits)}{unit}"


def summary_row(figure, values, unit, peer, ratio, target, met, digits=None):
    """Appends one row to $OPTD_BENCH_SUMMARY (if set).

    figure: what was measured; values: the runs; unit: e.g. " ms";
    peer: the floor or peer and its median as text ("MHD floor 52,000/s");
    ratio: text ("0.85×"); target: text ("≥ 0.8×"); met: True/False/None."""
    path = os.environ.get("OPTD_BENCH_SUMMARY")
    if not path:
        return
    med, lo, hi = stats(values)
    cells = [figure, fmt(med, digits) + unit, spread(values, unit, digits), peer, ratio, target,
             "—" if met is None else ("yes" if met else "**no**")]
    with open(path, "a", encoding="utf-8") as f:
        f.write("\t".join(c.replace("\t", " ") for c in cells) + "\n")


def write_bytes(pid):
    """What the process has caused to be written to disk so far (write_bytes
    of /proc/PID/io: the bytes the page cache sent to the device for it)."""
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


class Server:
    """A server process on 127.0.0.1:port; stop() ends it (SIGTERM, then wait)."""

    def __init__(self, name, argv, port, log_path=None, stdout=None):
        self.name = name
        self.port = port
        self.log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=stdout if stdout is not None else self.log_file,
                                     stderr=self.log_file)

    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_file is not subprocess.DEVNULL:
            self.log_file.close()


def start_optd(tmp, threads, extra=()):
    """optd on a free port, logging at its default level (info: one line per
    request) to a file in tmp, as a deployment would."""
    port = free_port()
    optd = os.path.join(BUILD, "optd")
    argv = [optd, "--listen", f"127.0.0.1:{port}", "--threads", str(threads),
            "--log-file", os.path.join(tmp, f"optd-{port}.log"), *extra]
    srv = Server(f"optd --threads {threads}", argv, port, os.path.join(tmp, f"optd-{port}.stderr"))
    wait_port(port, srv.proc, "optd")
    # Ready once /healthz answers (API.md).
    deadline = time.monotonic() + 10
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                return srv
        except OSError:
            pass
        if time.monotonic() > deadline:
            srv.stop()
            raise RuntimeError("optd did not answer /healthz")
        time.sleep(0.05)


class Client:
    """One keep-alive connection; request() returns (status, headers, body)."""

    def __init__(self, port, timeout=120):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method, path, body=None, ctype="application/json", headers=None):
        h = dict(headers or {})
        if body is not None:
            h["Content-Type"] = ctype
        if isinstance(body, str):
            body = body.encode()
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, r, data

    def close(self):
        self.conn.close()
