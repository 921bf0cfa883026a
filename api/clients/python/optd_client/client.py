"""The optd client: one Client per daemon (or per sharding proxy).

Every endpoint of API.md is a method.  Requests go over kept-alive
http.client connections (one per thread, so a Client may be shared between
threads).  Errors the daemon answers are raised as OptdError carrying the
API's code, message and status (and current_step for step_mismatch);
transport failures are OptdConnectionError, timeouts OptdTimeout.

Retries.  A request is retried after a transport failure or a 503 only when
repeating it cannot apply a change twice:
  - reads, PATCH and PUT .../state are idempotent and always retried;
  - a step is retried only when the caller passed expect_step: the daemon's
    compare-and-swap then refuses a second application, and a retry that
    meets step_mismatch with current_step == expect_step + 1 knows its first
    attempt was applied and fetches the parameters it produced;
  - a contribution to a round (contribute, Worker) is always retried: the
    daemon keys it by (worker, step), so a repeat replaces the pending one
    or is refused once applied, never counted twice;
  - create, delete and steps without expect_step are never retried: once
    sent, the client cannot know whether they were applied.  To keep that
    rare, a kept-alive connection is checked before reuse and replaced if
    the daemon has closed it (idle connections are closed after
    --connection-timeout).
"""
import array
import heapq
import http.client
import json
import select
import socket
import ssl as _ssl
import struct
import sys
import threading
import time
import urllib.parse

try:  # numpy is optional: used for binary bodies when the caller uses it
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the machine
    _np = None


class _Unset:
    def __repr__(self):
        return "UNSET"


UNSET = _Unset()
"""Marks a PATCH field as not given (None means "remove" for some fields)."""


class OptdError(Exception):
    """An error answered by the daemon (or a transport failure, see below)."""

    def __init__(self, status, code, message, current_step=None, body=None):
        super().__init__("%s %s: %s" % (status, code, message))
        self.attempts = 0  # retries made before this answer
        self.status = status
        self.code = code
        self.message = message
        self.current_step = current_step
        self.body = body


class OptdConnectionError(OptdError):
    """The daemon could not be reached or the connection broke."""

    def __init__(self, message, cause=None):
        super().__init__(None, "connection_error", message)
        self.__cause__ = cause


class OptdTimeout(OptdConnectionError):
    """No answer within the client's timeout."""

    def __init__(self, message, cause=None):
        super().__init__(message, cause)
        self.code = "timeout"


class StepResult:
    """The answer to a step: the step count after it and the new parameters
    (None with return_params=False)."""

    __slots__ = ("step", "params")

    def __init__(self, step, params):
        self.step = step
        self.params = params

    def __repr__(self):
        return "StepResult(step=%r, params=%r)" % (self.step, self.params)


_RETRY_SAFE = "safe"      # idempotent: retry on any transport failure or 503
_RETRY_CAS = "cas"        # step with expect_step
_RETRY_NONE = "none"      # create, delete, step without expect_step


def _is_numpy(x):
    return _np is not None and isinstance(x, _np.ndarray)


def _from_torch(x):
    """A torch tensor as the numpy array of its values (no copy for a CPU
    tensor), so that it goes out in binary as numpy does; anything else as
    it is.  torch is not imported: a tensor is known by its type's module."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def _encode_binary(values):
    """Little-endian bytes and the dtype name of an array.array or ndarray."""
    if _is_numpy(values):
        if values.dtype == _np.float32:
            return values.astype("<f4", copy=False).tobytes(), "float32"
        if values.dtype == _np.float64:
            return values.astype("<f8", copy=False).tobytes(), "float64"
        raise TypeError("a binary gradient must be float32 or float64, not %s" % values.dtype)
    if isinstance(values, array.array):
        if values.typecode == "f" and values.itemsize == 4:
            dtype = "float32"
        elif values.typecode == "d" and values.itemsize == 8:
            dtype = "float64"
        else:
            raise TypeError("a binary gradient must be array('f') or array('d')")
        if sys.byteorder == "big":
            values = array.array(values.typecode, values)
            values.byteswap()
        return values.tobytes(), dtype
    raise TypeError("binary bodies need an array.array or a numpy array")


def _decode_binary(data, dtype, like_numpy):
    """Parameters from little-endian bytes, as numpy (like_numpy) or array."""
    if like_numpy:
        return _np.frombuffer(data, dtype="<f4" if dtype == "float32" else "<f8").astype(
            _np.float32 if dtype == "float32" else _np.float64)
    out = array.array("f" if dtype == "float32" else "d")
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _peer_closed(sock):
    """True if the peer has closed (or reset) this idle kept-alive socket.
    An idle connection has nothing to read; readable means EOF, an error,
    or (TLS) protocol data we did not ask for: reconnect in every case."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Client:
    """A client for one optd daemon (or a sharding proxy in front of many).

    base_url: "http://host:port" or "https://host:port", optionally with a
    path prefix.  token: the bearer token (or None).  timeout: seconds for
    connecting and for each answer.  retries: how many times a retryable
    request is repeated (see the module doc).  ssl_context: for https.
    """

    def __init__(self, base_url="http://127.0.0.1:8080", token=None, timeout=30.0,
                 retries=3, backoff=0.05, ssl_context=None):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("base_url must be http://host[:port] or https://host[:port]")
        self.base_url = base_url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._ssl_context = ssl_context
        self._local = threading.local()

    # ----------------------------------------------------------- transport

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and _peer_closed(conn.sock):
            conn.close()
            conn = None
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                   context=self._ssl_context or _ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def close(self):
        """Closes this thread's kept-alive connection."""
        self._drop_connection()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send_once(self, method, path, body, headers, out=None, timeout=None):
        """One request/answer on the kept-alive connection: (status, response,
        bytes).  out: a writable buffer that a 200 answer of exactly its size
        is read into (no new bytes object; the bytes returned are then b"").
        timeout: seconds for this answer (a long poll's wait plus the
        client's timeout) instead of the client's."""
        conn = self._connection()
        limit = self.timeout if timeout is None else timeout
        conn.timeout = limit
        if conn.sock is not None:
            conn.sock.settimeout(limit)
        try:
            early = None
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The daemon answers some requests from their headers alone
                # (413 over --max-body-bytes, 401, 503) and closes without
                # reading the body: its answer is waiting to be read.
                if not body:
                    raise
                early = e
            try:
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException):
                if early is not None:
                    raise early
                raise
            if out is not None and resp.status == 200 and resp.length == len(out):
                view, got = memoryview(out), 0
                while got < len(out):
                    n = resp.readinto(view[got:])
                    if not n:
                        raise http.client.IncompleteRead(b"", len(out) - got)
                    got += n
                data = b""
            else:
                data = resp.read()
        except socket.timeout as e:
            self._drop_connection()
            raise OptdTimeout("no answer from %s within %s s" % (self.base_url, limit), e)
        except (OSError, http.client.HTTPException) as e:
            self._drop_connection()
            raise OptdConnectionError("connection to %s failed: %s" % (self.base_url, e), e)
        if resp.will_close:
            self._drop_connection()
        return resp.status, resp, data

    def _request(self, method, path, json_body=None, raw_body=None, headers=None,
                 query=None, retry=_RETRY_SAFE, out=None, timeout=None):
        url = self._prefix + path
        if query:
            q = urllib.parse.urlencode([(k, v) for k, v in query if v is not None], doseq=True)
            if q:
                url += "?" + q
        hdrs = {"Accept": "application/json"}
        body = None
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        elif raw_body is not None:
            body = raw_body
            hdrs["Content-Type"] = "application/octet-stream"
        if body is not None or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body or b""))
        if self._token:
            hdrs["Authorization"] = "Bearer " + self._token
        if headers:
            hdrs.update(headers)

        attempt = 0
        while True:
            try:
                status, resp, data = self._send_once(method, url, body, hdrs, out, timeout)
            except OptdConnectionError:
                if retry == _RETRY_NONE or attempt >= self.retries:
                    raise
                attempt += 1
                self._sleep(attempt)
                continue
            if status == 503 and retry != _RETRY_NONE and attempt < self.retries:
                attempt += 1
                self._sleep(attempt)
                continue
            if status >= 400:
                err = self._error(status, data)
                err.attempts = attempt
                raise err
            return status, resp, data, attempt

    def _sleep(self, attempt):
        time.sleep(min(self.backoff * (2 ** (attempt - 1)), 2.0))

    @staticmethod
    def _error(status, data):
        try:
            doc = json.loads(data.decode("utf-8"))
            err = doc["error"]
            return OptdError(status, err.get("code", "unknown"), err.get("message", ""),
                             err.get("current_step"), doc)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            text = data.decode("utf-8", "replace").strip()[:200]
            return OptdError(status, "http_%d" % status, text or "HTTP %d" % status)

    def _json(self, method, path, body=None, query=None, retry=_RETRY_SAFE):
        status, resp, data, _ = self._request(method, path, json_body=body, query=query, retry=retry)
        if not data:
            return None
        return json.loads(data.decode("utf-8"))

    @staticmethod
    def _path(name, tail=""):
        return "/v1/sessions/" + urllib.parse.quote(name, safe="") + tail

    # ----------------------------------------------------------- endpoints

    def health(self):
        """GET /healthz: {"status": "ok"}."""
        return self._json("GET", "/healthz")

    def metrics(self):
        """GET /metrics: the Prometheus text."""
        _, _, data, _ = self._request("GET", "/metrics", headers={"Accept": "text/plain"})
        return data.decode("utf-8")

    def optimizers(self):
        """GET /v1/optimizers: [{"name": ..., "hyperparameters": {...}}, ...]."""
        return self._json("GET", "/v1/optimizers")["optimizers"]

    def create(self, name, optimizer=None, *, params=None, size=None, from_=None,
               hyperparameters=None, dtype=None, schedule=None, max_grad_norm=None,
               labels=None, ttl_seconds=None, groups=None, row_size=None, aggregate=None, use_post=False):
        """Creates a session; returns its descriptor.

        Exactly one of params, size or from_ gives the initial parameters.
        row_size: makes the session a table of size / row_size rows (API.md
        "Tables"), stepped and read by rows (step_rows, read_rows).
        groups: [{"size": n, "hyperparameters": {...}}, ...] (parameter
        groups, each overriding hyperparameters key by key).
        aggregate: {"workers": N, "reduce": "mean"|"sum", "max_staleness": s}
        makes a step a worker's contribution to a round of N (see
        contribute() and Worker).
        By default it is PUT /v1/sessions/{name} (the form a sharding proxy
        can route); use_post=True sends POST /v1/sessions instead."""
        body = {}
        if optimizer is not None:
            body["optimizer"] = optimizer
        params = _from_torch(params)
        if params is not None:
            body["params"] = list(params.tolist() if _is_numpy(params) else params)
        if size is not None:
            body["size"] = size
        if from_ is not None:
            body["from"] = from_
        for key, value in (("hyperparameters", hyperparameters), ("dtype", dtype),
                           ("schedule", schedule), ("max_grad_norm", max_grad_norm),
                           ("labels", labels), ("ttl_seconds", ttl_seconds), ("groups", groups),
                           ("row_size", row_size), ("aggregate", aggregate)):
            if value is not None:
                body[key] = value
        if use_post:
            body["name"] = name
            return self._json("POST", "/v1/sessions", body, retry=_RETRY_NONE)
        return self._json("PUT", self._path(name), body, retry=_RETRY_NONE)

    def fork(self, source, name, *, hyperparameters=None, schedule=UNSET,
             max_grad_norm=UNSET, labels=None, ttl_seconds=None):
        """Creates `name` as a copy of `source` (create with "from").

        Behind a sharding proxy the two names may live on different
        replicas; then the create answers not_found (the source is not on
        the new name's replica) and the copy is made as API.md says: GET
        .../state from the source, PUT .../state to the new name."""
        kw = {}
        if schedule is not UNSET:
            kw["schedule"] = schedule
        if max_grad_norm is not UNSET:
            kw["max_grad_norm"] = max_grad_norm
        try:
            return self.create(name, from_=source, hyperparameters=hyperparameters,
                               labels=labels, ttl_seconds=ttl_seconds, **kw)
        except OptdError as e:
            if e.code != "not_found":
                raise
        doc = self.export_state(source)
        try:
            self.get(name)
        except OptdError as e:
            if e.code != "not_found":
                raise
        else:
            raise OptdError(409, "already_exists", "a session named %s already exists" % name)
        doc["name"] = name
        if hyperparameters:
            doc["hyperparameters"] = dict(doc.get("hyperparameters") or {}, **hyperparameters)
        doc.update(kw)
        doc["labels"] = labels or {}
        doc["ttl_seconds"] = ttl_seconds
        self.import_state(name, doc)
        return self.get(name)

    def list_sessions(self, limit=None, after=None, prefix=None, labels=None, sort=None, offset=None):
        """GET /v1/sessions: one page, {"sessions": [...], "next_after": ...,
        "next_offset": ...}.  labels: a dict (or list of "key:value") that
        must all match; sort: "name" (default), "best_loss" or "last_loss"
        (ascending by the descriptor's loss summary; page with offset)."""
        q = self._list_query(limit, after, prefix, labels) + [("sort", sort), ("offset", offset)]
        return self._json("GET", "/v1/sessions", query=q)

    def iter_sessions(self, prefix=None, labels=None, page_size=1000):
        """Every session descriptor, sorted by name, following next_after."""
        after = None
        while True:
            page = self.list_sessions(limit=page_size, after=after, prefix=prefix, labels=labels)
            yield from page["sessions"]
            after = page.get("next_after")
            if not after:
                return

    @staticmethod
    def _list_query(limit, after, prefix, labels):
        q = [("limit", limit), ("after", after), ("prefix", prefix)]
        if labels:
            if isinstance(labels, str) or (not isinstance(labels, dict)
                                           and any(":" not in str(l) for l in labels)):
                raise ValueError("labels must be a dict or a list of 'key:value' strings, got %r" % (labels,))
            items = labels.items() if isinstance(labels, dict) else [l.split(":", 1) for l in labels]
            q.extend(("label", "%s:%s" % (k, v)) for k, v in items)
        return q

    def get(self, name):
        """GET /v1/sessions/{name}: the descriptor."""
        return self._json("GET", self._path(name))

    def patch(self, name, *, hyperparameters=UNSET, schedule=UNSET, max_grad_norm=UNSET,
              labels=UNSET, ttl_seconds=UNSET, groups=UNSET, aggregate=UNSET):
        """PATCH /v1/sessions/{name}; fields left UNSET are not sent, None
        removes (schedule, max_grad_norm, ttl_seconds, aggregate: None turns
        rounds off and drops the pending round).  groups: one
        {"hyperparameters": {...}} per group (keys partial).  Returns the
        descriptor."""
        body = {}
        for key, value in (("hyperparameters", hyperparameters), ("schedule", schedule),
                           ("max_grad_norm", max_grad_norm), ("labels", labels),
                           ("ttl_seconds", ttl_seconds), ("groups", groups),
                           ("aggregate", aggregate)):
            if value is not UNSET:
                body[key] = value
        return self._json("PATCH", self._path(name), body)

    def delete(self, name):
        """DELETE /v1/sessions/{name}."""
        self._request("DELETE", self._path(name), retry=_RETRY_NONE)

    def params(self, name, binary=False, numpy=None, rows=None, min_step=None, wait=None):
        """GET .../params: (step, params).  binary=True asks for raw bytes and
        returns an array.array (or a numpy array with numpy=True, the
        default when numpy is installed).  rows: on a table, only these rows
        (?rows=, up to 1000; read_rows takes any number).

        min_step, wait: a long poll (API.md, Waiting for parameters): the
        answer comes once the session's step is >= min_step, or after wait
        seconds (0..300) with whatever step it is at; compare the step
        returned.  The answer may take wait seconds plus the client's
        timeout."""
        query = [("min_step", min_step), ("wait", wait)]
        if rows is not None:
            query.append(("rows", ",".join(str(int(r)) for r in rows)))
        timeout = self.timeout + wait if wait else None
        if not binary:
            _, _, data, _ = self._request("GET", self._path(name, "/params"), query=query, timeout=timeout)
            doc = json.loads(data.decode("utf-8"))
            return doc["step"], doc["params"]
        _, resp, data, _ = self._request("GET", self._path(name, "/params"), query=query, timeout=timeout,
                                         headers={"Accept": "application/octet-stream"})
        like_numpy = (_np is not None) if numpy is None else numpy
        dtype = self._binary_dtype(resp, data, name)
        return int(resp.getheader("Optd-Step")), _decode_binary(data, dtype, like_numpy)

    def step_rows(self, name, rows, gradient, expect_step=None, loss=None, return_params=True):
        """POST .../step on a table: updates only `rows` (0-based row
        numbers; a row listed twice has its gradients summed in the order
        given).  gradient: len(rows) x row_size values, row after row: a list
        (JSON body {"rows", "gradient"}) or an array.array / numpy array of
        the session's dtype (binary body: the rows as little-endian uint64,
        then the values, with Optd-Rows).  Returns StepResult(step, params)
        with params as the daemon answers them (None with
        return_params=False, which asks ?return=none).  Retried like step()."""
        try:
            return self._step_rows(name, rows, gradient, expect_step, loss, return_params)
        except OptdError as e:
            # As in step(): a retry that finds the session one step past
            # expect_step means the first attempt was applied.
            if (e.code == "step_mismatch" and expect_step is not None and e.attempts > 0
                    and e.current_step == expect_step + 1 and not return_params):
                return StepResult(e.current_step, None)
            raise

    def _step_rows(self, name, rows, gradient, expect_step, loss, return_params):
        rows, gradient = _from_torch(rows), _from_torch(gradient)
        rows = [int(r) for r in (rows.tolist() if _is_numpy(rows) else rows)]
        binary = isinstance(gradient, array.array) or _is_numpy(gradient)
        query = None if return_params else [("return", "none")]
        retry = _RETRY_CAS if expect_step is not None else _RETRY_NONE
        if binary:
            values, dtype = _encode_binary(gradient)
            headers = {"Accept": "application/octet-stream", "Optd-Dtype": dtype,
                       "Optd-Rows": str(len(rows))}
            if expect_step is not None:
                headers["Optd-Expect-Step"] = str(int(expect_step))
            if loss is not None:
                headers["Optd-Loss"] = repr(float(loss))
            raw = struct.pack("<%dQ" % len(rows), *rows) + values
            _, resp, data, _ = self._request("POST", self._path(name, "/step"), raw_body=raw,
                                             headers=headers, query=query, retry=retry)
            params = None
            if return_params and data:
                self._binary_dtype(resp, data, name, expected=dtype)
                params = _decode_binary(data, dtype, _is_numpy(gradient))
            return StepResult(int(resp.getheader("Optd-Step")), params)
        body = {"rows": rows, "gradient": list(gradient)}
        if expect_step is not None:
            body["step"] = int(expect_step)
        if loss is not None:
            body["loss"] = float(loss)
        doc = self._json("POST", self._path(name, "/step"), body, query=query, retry=retry)
        return StepResult(doc["step"], doc.get("params") if return_params else None)

    def read_rows(self, name, rows, binary=False, numpy=None):
        """POST .../rows {"rows": [...]}: (step, values) with len(rows) x
        row_size values in the order asked (any number of rows, repeats
        allowed).  binary=True asks for raw bytes (an array.array, or numpy
        with numpy=True, the default when numpy is installed)."""
        rows = _from_torch(rows)
        body = {"rows": [int(r) for r in (rows.tolist() if _is_numpy(rows) else rows)]}
        if not binary:
            doc = self._json("POST", self._path(name, "/rows"), body)
            return doc["step"], doc["params"]
        _, resp, data, _ = self._request("POST", self._path(name, "/rows"), json_body=body,
                                         headers={"Accept": "application/octet-stream"})
        like_numpy = (_np is not None) if numpy is None else numpy
        dtype = self._binary_dtype(resp, data, name)
        return int(resp.getheader("Optd-Step")), _decode_binary(data, dtype, like_numpy)

    def _binary_dtype(self, resp, data, name, expected=None):
        """The dtype of a binary answer, from its Optd-Dtype header (every
        binary answer of optd 1.1 has one); an answer in another dtype than
        the request's is refused, never decoded as if it were."""
        dtype = resp.getheader("Optd-Dtype")
        if dtype is None:
            # A daemon older than API.md 1.1: ask the session.
            dtype = self.get(name)["dtype"] if expected is None else expected
        if dtype not in ("float32", "float64") or (expected is not None and dtype != expected):
            raise OptdError(resp.status, "dtype_mismatch",
                            "the answer holds %s values; %s were sent" % (dtype, expected or "float32 or float64"))
        return dtype

    def step(self, name, gradient, expect_step=None, loss=None, return_params=True):
        """POST .../step: applies one update, returns StepResult(step, params).

        gradient: a list (JSON body) or an array.array('d'/'f') / numpy array
        of the session's dtype (binary body; params come back the same way).
        expect_step: the step the session should be at; the daemon refuses
        with step_mismatch otherwise, which makes retries safe."""
        gradient = _from_torch(gradient)
        binary = isinstance(gradient, array.array) or _is_numpy(gradient)
        query = None if return_params else [("return", "none")]
        retry = _RETRY_CAS if expect_step is not None else _RETRY_NONE
        try:
            if binary:
                raw, dtype = _encode_binary(gradient)
                # The daemon refuses a body of another dtype than the
                # session's instead of reading its bytes as that dtype.
                headers = {"Accept": "application/octet-stream", "Optd-Dtype": dtype}
                if expect_step is not None:
                    headers["Optd-Expect-Step"] = str(int(expect_step))
                if loss is not None:
                    headers["Optd-Loss"] = repr(float(loss))
                _, resp, data, _ = self._request("POST", self._path(name, "/step"),
                                                 raw_body=raw, headers=headers,
                                                 query=query, retry=retry)
                step = int(resp.getheader("Optd-Step"))
                self._binary_dtype(resp, data, name, expected=dtype)
                params = _decode_binary(data, dtype, _is_numpy(gradient)) if return_params else None
                return StepResult(step, params)
            body = {"gradient": gradient.tolist() if _is_numpy(gradient) else list(gradient)}
            if expect_step is not None:
                body["step"] = int(expect_step)
            if loss is not None:
                body["loss"] = float(loss)
            _, _, data, _ = self._request("POST", self._path(name, "/step"),
                                          json_body=body, query=query, retry=retry)
            doc = json.loads(data.decode("utf-8"))
            return StepResult(doc["step"], doc.get("params"))
        except OptdError as e:
            # A retried step whose first attempt was applied before the
            # connection broke: the daemon is exactly one step ahead of what
            # we expected.  That step was ours; fetch what it produced.
            if (e.code == "step_mismatch" and expect_step is not None and e.attempts > 0
                    and e.current_step == expect_step + 1):
                if not return_params:
                    return StepResult(e.current_step, None)
                step, params = self.params(name, binary=binary, numpy=_is_numpy(gradient))
                if step == e.current_step:
                    return StepResult(step, params)
            raise

    def steps(self, items, return_params=True):
        """POST /v1/steps: many sessions stepped in one request.

        items: [{"session": name, "gradient": [...] (or a numpy array),
        "step": n (optional), "loss": x (optional)}, ...], applied in order.
        Returns one dict per item, in order: {"session", "step", "params"}
        or {"session", "error": {"code", "message", ...}}: an item's failure
        is its own, never an exception.  Retried after a broken connection
        only when every item carries "step" (then a retry is safe)."""
        items = [dict(it, gradient=_from_torch(it["gradient"])) if "gradient" in it else it for it in items]
        body = {"steps": [dict(it, gradient=it["gradient"].tolist()) if _is_numpy(it.get("gradient"))
                          else it for it in items]}
        query = None if return_params else [("return", "none")]
        retry = _RETRY_CAS if all("step" in it for it in items) else _RETRY_NONE
        return self._json("POST", "/v1/steps", body, query=query, retry=retry)["results"]

    def step_bytes(self, name, data, dtype, expect_step=None, loss=None, out=None):
        """POST .../step with a raw little-endian gradient (bytes-like, of
        dtype "float32" or "float64"): (step, raw bytes of the new
        parameters).  out: a writable buffer of the parameters' size to read
        them into instead (then returned in place of the bytes).  Retried
        like step()."""
        headers = {"Accept": "application/octet-stream", "Optd-Dtype": dtype}
        if expect_step is not None:
            headers["Optd-Expect-Step"] = str(int(expect_step))
        if loss is not None:
            headers["Optd-Loss"] = repr(float(loss))
        retry = _RETRY_CAS if expect_step is not None else _RETRY_NONE
        try:
            _, resp, body, _ = self._request("POST", self._path(name, "/step"), raw_body=data,
                                             headers=headers, retry=retry, out=out)
            return int(resp.getheader("Optd-Step")), (out if out is not None and not body else body)
        except OptdError as e:
            if (e.code == "step_mismatch" and expect_step is not None and e.attempts > 0
                    and e.current_step == expect_step + 1):
                _, resp, body, _ = self._request("GET", self._path(name, "/params"),
                                                 headers={"Accept": "application/octet-stream"})
                if int(resp.getheader("Optd-Step")) == e.current_step:
                    return e.current_step, body
            raise

    def contribute(self, name, worker, step, gradient, loss=None, wait=None):
        """POST .../step on an aggregating session: one worker's gradient,
        computed from the parameters of `step`, for the round (API.md,
        Rounds).  Returns a Contribution:

          applied True   the round is complete and applied (200): step and
                         params are the new ones, the same for every worker;
          applied False  the round was still open after `wait` seconds
                         (202): step is the session's, the contribution
                         stays in the round (wait_for or Worker.push go on).

        A contribution that cannot join (a straggler, a backup worker, a
        repeat of one already applied) raises OptdError step_mismatch with
        current_step.  gradient: a list (JSON) or an array.array / numpy
        array (binary; params come back the same way).  Retried after a
        transport failure or a 503 like any idempotent request: the daemon
        keys a contribution by (worker, step), so a repeat replaces the
        pending one, or is refused once it was applied, never counted
        twice."""
        gradient = _from_torch(gradient)
        binary = isinstance(gradient, array.array) or _is_numpy(gradient)
        query = [("wait", wait)]
        timeout = self.timeout + (60 if wait is None else wait)
        path = self._path(name, "/step")
        if binary:
            raw, dtype = _encode_binary(gradient)
            headers = {"Accept": "application/octet-stream", "Optd-Dtype": dtype,
                       "Optd-Worker": worker, "Optd-Expect-Step": str(int(step))}
            if loss is not None:
                headers["Optd-Loss"] = repr(float(loss))
            status, resp, data, _ = self._request("POST", path, raw_body=raw, headers=headers, query=query,
                                                  retry=_RETRY_SAFE, timeout=timeout)
            if status == 200:
                self._binary_dtype(resp, data, name, expected=dtype)
                return Contribution(True, int(resp.getheader("Optd-Step")),
                                    _decode_binary(data, dtype, _is_numpy(gradient)), None)
            return self._pending(resp, data)
        body = {"gradient": gradient.tolist() if _is_numpy(gradient) else list(gradient),
                "worker": worker, "step": int(step)}
        if loss is not None:
            body["loss"] = float(loss)
        status, resp, data, _ = self._request("POST", path, json_body=body, query=query,
                                              retry=_RETRY_SAFE, timeout=timeout)
        if status == 200:
            doc = json.loads(data.decode("utf-8"))
            return Contribution(True, doc["step"], doc.get("params"), None)
        return self._pending(resp, data)

    @staticmethod
    def _pending(resp, data):
        """The 202 of a contribution whose round is still open:
        {"step": c, "round": {...}} (the step also in Optd-Step if a binary
        answer carries one)."""
        doc = {}
        if data and "json" in (resp.getheader("Content-Type") or ""):
            doc = json.loads(data.decode("utf-8"))
        step = doc.get("step", resp.getheader("Optd-Step"))
        return Contribution(False, None if step is None else int(step), None, doc.get("round"))

    def worker(self, session, name, wait=60, binary=False, numpy=None):
        """A Worker: the loop of one data-parallel worker on `session`."""
        return Worker(self, session, name, wait=wait, binary=binary, numpy=numpy)

    def set_params(self, name, params, expect_step=None, dtype=None):
        """PUT .../params: replaces the parameters, keeping the optimizer
        state and the step; returns the step.  params: a list (JSON), an
        array.array / numpy array (binary), or bytes with dtype given."""
        params = _from_torch(params)
        if isinstance(params, (bytes, bytearray, memoryview)):
            if dtype not in ("float32", "float64"):
                raise ValueError("raw bytes need dtype='float32' or 'float64'")
            raw = params
        elif isinstance(params, array.array) or _is_numpy(params):
            raw, dtype = _encode_binary(params)
        else:
            body = {"params": list(params)}
            if expect_step is not None:
                body["step"] = int(expect_step)
            return self._json("PUT", self._path(name, "/params"), body)["step"]
        headers = {"Optd-Dtype": dtype}
        if expect_step is not None:
            headers["Optd-Expect-Step"] = str(int(expect_step))
        _, _, data, _ = self._request("PUT", self._path(name, "/params"), raw_body=raw, headers=headers)
        return json.loads(data.decode("utf-8"))["step"]

    def history(self, name, limit=None, after_step=None):
        """GET .../history: [{"step", "lr", "grad_norm", "loss"?, "time"}, ...]."""
        return self._json("GET", self._path(name, "/history"),
                          query=[("limit", limit), ("after_step", after_step)])["history"]

    def export_state(self, name):
        """GET .../state: descriptor + params + optimizer state."""
        return self._json("GET", self._path(name, "/state"))

    def import_state(self, name, doc):
        """PUT .../state: creates or replaces `name` from an export; returns
        (created, body) with created True for 201."""
        status, _, data, _ = self._request("PUT", self._path(name, "/state"), json_body=doc)
        return status == 201, (json.loads(data.decode("utf-8")) if data else None)


class Contribution:
    """The answer to contribute(): applied (the round was applied: step and
    params are the new ones) or pending (step is the session's, params
    None; round the descriptor's round if the daemon sent it)."""

    __slots__ = ("applied", "step", "params", "round")

    def __init__(self, applied, step, params, round_):
        self.applied = applied
        self.step = step
        self.params = params
        self.round = round_

    def __repr__(self):
        return "Contribution(applied=%r, step=%r)" % (self.applied, self.step)


class Worker:
    """One worker of a session created with aggregate={"workers": N, ...}:

        w = client.worker("model", "w0")          # fetches the parameters
        for x, y in batches:
            grad, loss = compute(w.params, x, y)
            w.push(grad, loss=loss)               # w.step, w.params: the next ones

    push() contributes the gradient for (name, w.step) and returns once the
    worker has parameters newer than the ones the gradient came from:

      - 200: the round was applied; its parameters are the answer;
      - 202: the round is still open (a slow worker): it long-polls
        GET .../params?min_step=c+1&wait=..., and when a poll ends without
        the round, sends the same contribution again (it replaces the
        pending one; after a daemon restart, which loses pending rounds, it
        rebuilds the round);
      - 409 step_mismatch: the gradient was stale (a straggler, a backup
        worker the round did not need): it fetches the current parameters
        and goes on.  Counted in `refused`.

    Every send is keyed by (name, step), so any repeat, by the client's
    retries or by calling push() again with the same gradient after an
    exception, is replaced or refused by the daemon, never counted twice.

    Counters: pushes, applied (rounds this worker's gradient was known to be
    in), refused (gradients computed in vain), pending (202 answers)."""

    def __init__(self, client, session, name, wait=60, binary=False, numpy=None):
        self.client = client
        self.session = session
        self.name = name
        self.wait = wait
        self._binary = binary
        self._numpy = numpy
        self.pushes = self.applied = self.refused = self.pending = 0
        self.step = None
        self.params = None
        self.pull()

    def pull(self, min_step=None, wait=None):
        """Fetches the session's parameters into step and params (with
        min_step, waits up to `wait` seconds for that step)."""
        self.step, self.params = self.client.params(self.session, binary=self._binary, numpy=self._numpy,
                                                    min_step=min_step, wait=wait)
        return self.step, self.params

    def push(self, gradient, loss=None):
        """Contributes gradient (computed from self.params at self.step) and
        moves to newer parameters.  Returns True if the gradient went into a
        round, False if it was refused as stale."""
        self.pushes += 1
        gradient = _from_torch(gradient)
        self._binary = isinstance(gradient, array.array) or _is_numpy(gradient)
        if self._binary:
            self._numpy = _is_numpy(gradient)
        step = self.step
        was_pending = False
        while True:
            try:
                r = self.client.contribute(self.session, self.name, step, gradient, loss=loss, wait=self.wait)
            except OptdError as e:
                if e.code != "step_mismatch":
                    raise
                self.pull()
                if was_pending or e.attempts > 0:
                    # Sent again (after a 202, or by a retry after a lost
                    # answer) and refused: the round that held this gradient
                    # was applied in between (or, rarely, lost in a restart
                    # while the others went on without it).
                    self.applied += 1
                    return True
                # Stale: the session moved on without this gradient.
                self.refused += 1
                return False
            if r.applied:
                self.step, self.params = r.step, r.params
                self.applied += 1
                return True
            self.pending += 1
            was_pending = True
            target = (step if r.step is None else r.step) + 1
            got, params = self.client.params(self.session, binary=self._binary, numpy=self._numpy,
                                             min_step=target, wait=self.wait)
            if got >= target:
                self.step, self.params = got, params
                self.applied += 1
                return True
            # Still open after a whole wait: send again (it replaces ours, or
            # rebuilds the round if a restart lost it).


def list_across(clients, prefix=None, labels=None, page_size=1000):
    """Every session of several replicas (clients talking to each replica
    directly, not through the proxy), merged in name order."""
    iters = [c.iter_sessions(prefix=prefix, labels=labels, page_size=page_size) for c in clients]
    return heapq.merge(*iters, key=lambda d: d["name"])
