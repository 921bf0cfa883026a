"""optd_local.py: what the examples share: a Client for a daemon, either the
one at --url / $OPTD_URL or one started here from build/optd ($OPTD_BIN) on
a free loopback port and stopped (SIGTERM) at the end.

    with optd_local.connect(args.url) as client:
        client.create(...)
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))

from optd_client import Client, OptdError  # noqa: E402,F401  (re-exported)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def connect(url=None, optd_bin=None):
    """Yields a Client: for url (or $OPTD_URL) if given, else for a daemon
    started from optd_bin (or $OPTD_BIN, default build/optd)."""
    url = url or os.environ.get("OPTD_URL")
    if url:
        c = Client(url, token=os.environ.get("OPTD_TOKEN"))
        try:
            yield c
        finally:
            c.close()
        return
    b = optd_bin or os.environ.get("OPTD_BIN", "build/optd")
    b = b if os.path.isabs(b) else os.path.join(REPO, b)
    if not os.access(b, os.X_OK):
        raise SystemExit("no optd binary at %s: run `make` first, or pass --url" % b)
    port = _free_port()
    proc = subprocess.Popen([b, "--listen", "127.0.0.1:%d" % port, "--log-level", "warn"],
                            stdout=subprocess.DEVNULL)
    c = Client("http://127.0.0.1:%d" % port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                c.health()
                break
            except OptdError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("optd did not start (exit %s)" % proc.poll())
                time.sleep(0.05)
        yield c
    finally:
        c.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
