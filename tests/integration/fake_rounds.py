"""fake_rounds.py: a tiny stand-in for optd's rounds (API.md 1.1, "Rounds" and
"Waiting for parameters"), for testing the clients' worker logic in cases the
real daemon makes hard to reach on demand: an answer lost after the round
was applied, a pending round lost as in a restart.  SGD only (p -= lr * g),
float64 or float32, JSON and binary bodies; nothing else of the API.

    fake = FakeRounds(); fake.start()  ...  fake.stop()
    fake.drop_next_answer = 1     # apply the next step request, then close
                                  # the connection without answering
    fake.forget_rounds()          # what a restart does to pending rounds

Standard library only; the real daemon is what test_worker_clients.py
tests everything else against."""

import array
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Session:
    def __init__(self, params, lr, dtype, aggregate):
        self.params = list(params)
        self.lr = lr
        self.dtype = dtype
        self.step = 0
        self.aggregate = aggregate  # {"workers": N, "reduce", "max_staleness"} or None
        self.round = {}             # worker -> (its step, gradient), the pending round
        self.last = {}              # worker -> step of its last applied contribution


class FakeRounds:
    def __init__(self):
        self.sessions = {}
        self.cond = threading.Condition()
        self.drop_next_answer = 0
        self.contributions = 0      # contribution requests received
        self.refused = 0            # of them answered 409
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_PUT(self):
                fake._put(self)

            def do_GET(self):
                fake._get(self)

            def do_POST(self):
                fake._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def forget_rounds(self):
        with self.cond:
            for s in self.sessions.values():
                s.round.clear()

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _send(h, status, doc=None, raw=None, headers=()):
        body = raw if raw is not None else json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def _error(h, status, code, message, **extra):
        FakeRounds._send(h, status, {"error": dict(code=code, message=message, **extra)})

    @staticmethod
    def _route(h):
        u = urllib.parse.urlsplit(h.path)
        parts = u.path.strip("/").split("/")
        q = dict(urllib.parse.parse_qsl(u.query))
        return parts, q

    @staticmethod
    def _body(h):
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _params_answer(self, h, s, step, params):
        if "octet-stream" in (h.headers.get("Accept") or ""):
            a = array.array("f" if s.dtype == "float32" else "d", params)
            if sys.byteorder == "big":
                a.byteswap()
            self._send(h, 200, raw=a.tobytes(), headers=[("Optd-Step", str(step)), ("Optd-Dtype", s.dtype)])
        else:
            self._send(h, 200, {"step": step, "params": params})

    # ------------------------------------------------------------ routes

    def _put(self, h):
        parts, _ = self._route(h)
        doc = json.loads(self._body(h))
        if len(parts) == 3:
            params = doc.get("params") or [0.0] * doc["size"]
            dtype = doc.get("dtype", "float64")
            if dtype == "float32":
                params = list(array.array("f", params))
            with self.cond:
                self.sessions[parts[2]] = _Session(params, doc.get("hyperparameters", {}).get("lr", 0.001),
                                                   dtype, doc.get("aggregate"))
            self._send(h, 201, {"name": parts[2], "step": 0, "aggregate": doc.get("aggregate")})
        else:
            self._error(h, 404, "not_found", "the fake has no such route")

    def _get(self, h):
        parts, q = self._route(h)
        s = self.sessions.get(parts[2]) if len(parts) >= 3 else None
        if s is None or parts[3:] != ["params"]:
            return self._error(h, 404, "not_found", "no such session")
        with self.cond:
            min_step = int(q.get("min_step", 0))
            self.cond.wait_for(lambda: s.step >= min_step, timeout=float(q.get("wait", 0)))
            step, params = s.step, list(s.params)
        self._params_answer(h, s, step, params)

    def _post(self, h):
        parts, q = self._route(h)
        s = self.sessions.get(parts[2]) if len(parts) >= 3 else None
        raw = self._body(h)
        if s is None or parts[3:] != ["step"]:
            return self._error(h, 404, "not_found", "no such session")
        if h.headers.get("Content-Type") == "application/octet-stream":
            grad = array.array("f" if s.dtype == "float32" else "d")
            grad.frombytes(raw)
            if sys.byteorder == "big":
                grad.byteswap()
            worker, step = h.headers.get("Optd-Worker"), h.headers.get("Optd-Expect-Step")
            step = None if step is None else int(step)
        else:
            doc = json.loads(raw)
            grad, worker, step = doc["gradient"], doc.get("worker"), doc.get("step")
        if (worker is None) != (s.aggregate is None):
            return self._error(h, 400, "invalid_argument", "worker goes with aggregate")
        with self.cond:
            if worker is None:
                if step is not None and step != s.step:
                    return self._error(h, 409, "step_mismatch", "stale", current_step=s.step)
                self._apply(s, list(grad))
                result = (s.step, list(s.params))
            else:
                result = self._contribute(h, s, worker, step, list(grad), float(q.get("wait", 60)))
                if result is None:
                    return
        if self.drop_next_answer > 0:
            self.drop_next_answer -= 1
            h.close_connection = True
            return
        if result[0] is None:  # 202
            return self._send(h, 202, {"step": s.step, "round": {"step": s.step, "contributions": len(s.round),
                                                                 "workers": sorted(s.round)}})
        self._params_answer(h, s, *result)

    def _contribute(self, h, s, worker, step, grad, wait):
        """Under self.cond: joins the round or refuses; waits for it.
        Returns (step, params), (None, None) for a 202, or None when the
        error was sent."""
        self.contributions += 1
        c, stale = s.step, s.aggregate.get("max_staleness", 0)
        if not (c - stale <= step <= c) or s.last.get(worker, -1) >= step:
            self.refused += 1
            self._error(h, 409, "step_mismatch", "not for this round", current_step=c)
            return None
        s.round[worker] = (step, grad)
        if len(s.round) >= s.aggregate["workers"]:
            total = [sum(g[i] for _, (_, g) in sorted(s.round.items())) for i in range(len(s.params))]
            if s.aggregate.get("reduce", "mean") == "mean":
                total = [t / len(s.round) for t in total]
            for w, (st, _) in s.round.items():
                s.last[w] = st
            s.round.clear()
            self._apply(s, total)
            self.cond.notify_all()
        else:
            self.cond.wait_for(lambda: s.step > c, timeout=wait)
        if s.step > c:
            return c + 1 if s.step == c + 1 else s.step, list(s.params)
        return None, None

    def _apply(self, s, grad):
        s.params = [p - s.lr * g for p, g in zip(s.params, grad)]
        if s.dtype == "float32":
            s.params = list(array.array("f", s.params))
        s.step += 1
        self.cond.notify_all()
