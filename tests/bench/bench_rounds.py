#!/usr/bin/python3
"""bench_rounds.py: rounds of workers on one session and long polls (issue
13's targets, API.md 1.1 "Rounds" and "Waiting for parameters"), run by
tests/bench/run.sh (`make bench`).  Every ratio is of two figures measured
in the same run, interleaved.

  big     4 workers (one keep-alive connection each) x 1M float32 adam,
          binary: the time of one round (the 4 contributions sent, until the
          last answer is read) against the time of 4 plain binary steps sent
          and read the same way on the same connections, on a plain session
          of that size (target <= 1.5x);
  small   4 workers x 10 float64 parameters (sgd, JSON, ?return=none), one
          kept-alive connection each, all driven by one client thread with
          raw sockets (so the client costs little and the same per request
          in both): rounds/s (send the 4 contributions, read the 4 answers)
          against plain steps/s / 4 (the 4 connections closed-loop on one
          plain session, the same number of requests; target >= 0.8x);
  polls   1000 connections waiting in GET .../params?min_step=<future>&wait=60
          at once: the 10-element JSON steps/s of another client on one
          connection (tests/bench/loadgen.c, closed loop) against the same
          with no other connections (target >= 0.9x; odd rounds measure the
          polls first).  The polls are
          checked to be still waiting (unanswered) when each measurement
          ends, and to be answered, every one, by the step that follows.

Usage: bench_rounds.py [--quick]   (BUILD=dir in the environment)"""

import argparse
import http.client
import json
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BUILD, Client, fmt, log, spread, start_optd, summary_row  # noqa: E402

LOADGEN = os.path.join(BUILD, "bench", "loadgen")
WORKERS = 4
BIG = 1 << 20
POLLS = 1000


def create(port, name, body):
    c = Client(port)
    st, _, data = c.request("PUT", "/v1/sessions/" + name, json.dumps(body))
    c.close()
    if st != 201:
        raise RuntimeError("create %s: %d %s" % (name, st, data[:300]))


# ---------------------------------------------------------------- big rounds

def big_answer(conn, out):
    """Reads one binary answer of len(out) bytes into out (no copies past
    the socket's); returns the status."""
    while b"\r\n\r\n" not in conn.buf:
        data = conn.sock.recv(65536)
        if not data:
            raise RuntimeError("the daemon closed the connection")
        conn.buf += data
    head, rest = conn.buf.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    status = int(head[9:12])
    if status != 200 or length != len(out):
        raise RuntimeError("big answer: %s" % head[:300])
    view = memoryview(out)
    got = min(len(rest), length)
    view[:got] = rest[:got]
    conn.buf = rest[got:]
    while got < length:
        n = conn.sock.recv_into(view[got:])
        if not n:
            raise RuntimeError("the daemon closed the connection")
        got += n
    return status


def bench_big(port, rounds):
    """Per round: the 4 workers' requests are sent, then the 4 answers read
    (one thread; the daemon reads and answers each connection on its own,
    so the order costs nothing), for 4 plain steps and for one round."""
    create(port, "big-plain", {"optimizer": "adam", "dtype": "float32", "size": BIG})
    create(port, "big-rounds", {"optimizer": "adam", "dtype": "float32", "size": BIG,
                                "aggregate": {"workers": WORKERS}})
    conns = [RawConn(port) for _ in range(WORKERS)]
    grad = b"\x00\x00\x80\x3a" * BIG  # float32 2^-10, little-endian, each value
    out = bytearray(BIG * 4)
    head = ("POST /v1/sessions/%s/step HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\nAccept: application/octet-stream\r\n"
            "Optd-Dtype: float32\r\nContent-Length: %d\r\n%s\r\n")

    def once(heads):
        t = time.perf_counter()
        for c, h in zip(conns, heads):
            c.sock.sendall(h)
            c.sock.sendall(grad)
        for c in conns:
            big_answer(c, out)
        return time.perf_counter() - t

    plain, rnd, ratio = [], [], []
    for r in range(rounds + 1):  # the first of each is a warm-up
        p = once([(head % ("big-plain", len(grad), "")).encode()] * WORKERS)
        q = once([(head % ("big-rounds", len(grad), "Optd-Worker: w%d\r\nOptd-Expect-Step: %d\r\n" % (i, r))
                   ).encode() for i in range(WORKERS)])
        if r:
            plain.append(p * 1000)
            rnd.append(q * 1000)
            ratio.append(q / p)
    for c in conns:
        c.close()
    return plain, rnd, ratio


# ---------------------------------------------------------------- small rounds

class RawConn:
    """A kept-alive loopback connection with as little client work per
    request as Python allows (one send, reads until the whole answer), so
    that the small figures are the daemon's, not the client's."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, path, body):
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path, len(body), body))

    def answer(self):
        """(status, body) of the next answer."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", self.buf[:end])
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) >= total:
                    status, body = int(self.buf[9:12]), self.buf[end + 4:total]
                    self.buf = self.buf[total:]
                    return status, body
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the daemon closed the connection")
            self.buf += data

    def close(self):
        self.sock.close()


GRAD10 = json.dumps([0.001 * (k + 1) for k in range(10)]).encode()


def small_plain(port, name, count):
    """Seconds for WORKERS connections, each closed-loop, to make `count`
    plain steps each on one session (one thread drives all of them)."""
    conns = [RawConn(port) for _ in range(WORKERS)]
    path, body = b"/v1/sessions/%s/step?return=none" % name.encode(), b'{"gradient":%s}' % GRAD10
    poller = select.poll()
    by_fd = {}
    for c in conns:
        poller.register(c.sock, select.POLLIN)
        by_fd[c.sock.fileno()] = c
    left = {c: count for c in conns}
    t = time.perf_counter()
    for c in conns:
        c.send(path, body)
    busy = WORKERS
    while busy:
        for fd, _ in poller.poll():
            c = by_fd[fd]
            st, data = c.answer()
            if st != 200:
                raise RuntimeError("plain step: %d %s" % (st, data[:200]))
            left[c] -= 1
            if left[c]:
                c.send(path, body)
            else:
                busy -= 1
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    return elapsed


def small_rounds(port, name, count):
    """Seconds for WORKERS connections (workers w0..w3) to make `count`
    rounds: each round sends the 4 contributions and reads the 4 answers."""
    conns = [RawConn(port) for _ in range(WORKERS)]
    path = b"/v1/sessions/%s/step?return=none" % name.encode()
    t = time.perf_counter()
    for step in range(count):
        for i, c in enumerate(conns):
            c.send(path, b'{"gradient":%s,"worker":"w%d","step":%d}' % (GRAD10, i, step))
        for c in conns:
            st, data = c.answer()
            if st != 200:
                raise RuntimeError("contribution: %d %s" % (st, data[:200]))
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    return elapsed


def bench_small(port, rounds, count):
    steps_s, rounds_s, ratio = [], [], []
    for r in range(rounds):
        create(port, "small-plain-%d" % r, {"optimizer": "sgd", "size": 10})
        create(port, "small-rounds-%d" % r, {"optimizer": "sgd", "size": 10, "aggregate": {"workers": WORKERS}})
        tp = small_plain(port, "small-plain-%d" % r, count)
        tr = small_rounds(port, "small-rounds-%d" % r, count)
        steps_s.append(WORKERS * count / tp)
        rounds_s.append(count / tr)
        ratio.append(rounds_s[-1] / (steps_s[-1] / WORKERS))
    return steps_s, rounds_s, ratio


# ---------------------------------------------------------------- long polls

def loadgen(port, seconds):
    argv = [LOADGEN, "-c", "1", "-d", str(seconds), "-w", "0.3", "-m", "POST",
            "-p", "/v1/sessions/poll-other/step?return=none",
            "-b", json.dumps({"gradient": [0.001 * (k + 1) for k in range(10)]}),
            "-T", "application/json", "127.0.0.1", str(port)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"rate=([\d.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("loadgen failed: %s %s" % (out.stdout, out.stderr))
    return float(m.group(1))


class Polls:
    """POLLS connections that long-poll GET .../params of one session
    together: armed with one GET each (min_step the session's next step,
    wait=60), then released by one step of that session, which must answer
    every one of them, and only then closed: a connection closed while its
    poll waits holds its place in --max-connections until the wait ends (a
    suspended connection does not see its CLOSE_WAIT), so closing them
    waiting would make the next round measure that instead."""

    def __init__(self, port):
        self.port = port
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(POLLS)]
        self.poller = select.poll()
        for s in self.socks:
            self.poller.register(s, select.POLLIN)

    def arm(self, min_step):
        req = ("GET /v1/sessions/poll-target/params?min_step=%d&wait=60 HTTP/1.1\r\n"
               "Host: 127.0.0.1\r\nAccept: application/json\r\n\r\n" % min_step).encode()
        for s in self.socks:
            s.sendall(req)

    def waiting(self):
        """How many polls have had no answer (nothing to read) yet."""
        return POLLS - len(self.poller.poll(0))

    def collect(self, step):
        """Reads every poll's answer; how many were 200 at `step`."""
        ok = 0
        for s in self.socks:
            s.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += s.recv(65536)
            if head.startswith(b"HTTP/1.1 200") and json.loads(body)["step"] == step:
                ok += 1
        return ok

    def close(self):
        for s in self.socks:
            s.close()


def bench_polls(port, rounds, secs):
    create(port, "poll-target", {"optimizer": "sgd", "size": 10})
    create(port, "poll-other", {"optimizer": "sgd", "size": 10})
    release = Client(port)
    step = 0
    none, polled, ratio, waiting, answered = [], [], [], [], []
    try:
        for r in range(rounds):
            # Odd rounds measure the polls first: the order of the two
            # within a round is not part of the figure.
            a = loadgen(port, secs) if r % 2 == 0 else None
            polls = Polls(port)
            try:
                polls.arm(step + 1)
                time.sleep(0.5)  # every poll read and suspended
                b = loadgen(port, secs)
                waiting.append(polls.waiting())
                st, _, data = release.request("POST", "/v1/sessions/poll-target/step?return=none",
                                              json.dumps({"gradient": [0.0] * 10, "step": step}))
                if st != 200:
                    raise RuntimeError("poll release step: %d %s" % (st, data[:200]))
                step += 1
                answered.append(polls.collect(step))
            finally:
                polls.close()  # answered, so idle: the daemon sees these closes at once
            if a is None:
                time.sleep(0.3)
                a = loadgen(port, secs)
            none.append(a)
            polled.append(b)
            ratio.append(b / a)
    finally:
        release.close()
    return none, polled, ratio, waiting, answered


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    big_rounds, small_rounds, small_count, poll_rounds, secs = \
        (3, 3, 500, 3, 1) if args.quick else (9, 5, 2000, 5, 2)
    with tempfile.TemporaryDirectory() as tmp:
        # --max-connections: the 1000 polls, the other client and some room.
        optd = start_optd(tmp, os.cpu_count() or 1, ["--max-connections", "1100"])
        try:
            log("rounds: 4 x 1M float32 binary")
            plain, rnd, big_ratio = bench_big(optd.port, big_rounds)
            log("rounds: 4 x 10 params")
            steps_s, rounds_s, small_ratio = bench_small(optd.port, small_rounds, small_count)
            log("rounds: 1000 long polls")
            none, polled, poll_ratio, waiting, answered = bench_polls(optd.port, poll_rounds, secs)
        finally:
            optd.stop()
    br, sr, pr = (statistics.median(x) for x in (big_ratio, small_ratio, poll_ratio))
    print("## Rounds and long polls (issue 13)\n")
    print("| what | median | range |")
    print("| --- | ---: | ---: |")
    print(f"| 4 plain binary 1M float32 adam steps, 4 workers at once | {fmt(statistics.median(plain))} ms "
          f"| {spread(plain, ' ms')} |")
    print(f"| one round of 4 binary 1M float32 contributions | {fmt(statistics.median(rnd))} ms "
          f"| {spread(rnd, ' ms')} |")
    print(f"| round / 4 plain steps (per-pair ratios) | {br:.2f}× | {spread(big_ratio, '×', 2)} |")
    print(f"| plain 10-param steps/s, 4 connections on one session | {fmt(statistics.median(steps_s))}/s "
          f"| {spread(steps_s, '/s')} |")
    print(f"| rounds/s of 4 workers, 10 params | {fmt(statistics.median(rounds_s))}/s | {spread(rounds_s, '/s')} |")
    print(f"| rounds/s / (plain steps/s / 4) | {sr:.2f}× | {spread(small_ratio, '×', 2)} |")
    print(f"| 10-param steps/s, 1 connection, no other connections | {fmt(statistics.median(none))}/s | {spread(none, '/s')} |")
    print(f"| same with {POLLS} long polls waiting | {fmt(statistics.median(polled))}/s | {spread(polled, '/s')} |")
    print(f"| with polls / without | {pr:.2f}× | {spread(poll_ratio, '×', 2)} |")
    print(f"\nPolls still waiting at the end of each measurement: {', '.join(map(str, waiting))} of {POLLS}; "
          f"answered by the one step that released them: {', '.join(map(str, answered))}.\n")
    summary_row("round of 4 x 1M float32 binary contributions", rnd, " ms",
                f"4 plain binary steps, 4 workers {fmt(statistics.median(plain))} ms", f"{br:.2f}×", "≤ 1.5×",
                br <= 1.5)
    summary_row("rounds/s, 4 workers x 10 params", rounds_s, "/s",
                f"plain steps/s / 4 {fmt(statistics.median(steps_s) / WORKERS)}/s", f"{sr:.2f}×", "≥ 0.8×",
                sr >= 0.8)
    summary_row(f"10-param steps/s with {POLLS} long polls waiting (1 connection)", polled, "/s",
                f"none waiting {fmt(statistics.median(none))}/s", f"{pr:.2f}×", "≥ 0.9×",
                pr >= 0.9 and min(waiting) == POLLS and min(answered) == POLLS)


if __name__ == "__main__":
    main()
