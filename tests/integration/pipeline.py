"""pipeline.py: many small requests to optd fast, by HTTP/1.1 pipelining.

Creating and stepping tens of thousands of sessions one request at a time
from Python takes minutes; written back to back on a few keep-alive
connections (requests sent in windows, answers read in order) it takes
seconds.  Used by the durability tests and benchmarks that need 30,000
changed sessions.  Standard library only.

    from pipeline import pipelined
    answers = pipelined(port, [("POST", "/v1/sessions", {"name": "a", ...}), ...])
    # [(status, parsed JSON body or bytes), ...] in request order
"""

import json
import socket
import threading

WINDOW = 64


def _encode(method, path, body):
    data = b"" if body is None else json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if body is not None:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + data


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("optd closed the connection")
        self.buf += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        try:
            body = json.loads(body) if body else None
        except ValueError:
            pass
        return status, body


def _run(port, reqs, out, offset, timeout):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        r = _Reader(sock)
        for start in range(0, len(reqs), WINDOW):
            window = reqs[start:start + WINDOW]
            sock.sendall(b"".join(_encode(*q) for q in window))
            for i in range(len(window)):
                out[offset + start + i] = r.response()
    finally:
        sock.close()


def pipelined(port, reqs, connections=4, timeout=60):
    """Sends reqs ((method, path, body-or-None) tuples) over `connections`
    keep-alive connections, each pipelining WINDOW requests at a time;
    returns [(status, body)] in the order of reqs.  Requests on different
    connections run concurrently, so reqs for one session must not depend
    on each other's order unless they are in the same share (request i goes
    to connection i * connections // len(reqs))."""
    out = [None] * len(reqs)
    n = len(reqs)
    bounds = [n * k // connections for k in range(connections + 1)]
    threads = []
    errors = []

    def run(lo, hi):
        try:
            _run(port, reqs[lo:hi], out, lo, timeout)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            errors.append(e)

    for k in range(connections):
        t = threading.Thread(target=run, args=(bounds[k], bounds[k + 1]))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out
