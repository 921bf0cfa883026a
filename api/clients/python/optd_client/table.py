"""ShardedTable: one table (API.md "Tables: sparse rows") split over k
sessions, on one daemon, several daemons, or behind the sharding proxy.

The mapping.  Row r of a table of n rows lives in the session NAME.j with
j = r mod k, as that session's local row r div k.  So shard j holds the rows
j, j + k, j + 2k, ...: n_j = (n - j + k - 1) div k of them, and consecutive
rows (which a recommender's ids often are) land on different shards.  Each
shard session has one more row, its local row n_j, the spare (see below):
it is (n_j + 1) x row_size values.

Where the shards live.  ShardedTable(urls, name, shards=k):
  - urls a list of daemon URLs: shard j lives on urls[j mod len(urls)], so
    with k a multiple of the daemon count every daemon holds k / len(urls)
    shards: placement is the client's and exact;
  - urls one base URL (the nginx proxy of deploy/nginx/optd-shards.conf, or
    one daemon): every request goes through it and the proxy's consistent
    hash of the shard's name picks its replica, as for any session: every
    request for NAME.j reaches the one replica holding it, but which replica
    that is follows the hash, so shards spread over the replicas only
    statistically (take k a few times the replica count).

Pushes and pulls.  push(rows, gradient) groups the rows by shard (keeping
their order within each shard, so a row listed twice is summed in the same
order as on one unsharded session) and sends one rows step per shard, all
shards concurrently from a thread pool.  By default every shard is stepped on
every push: each shard's step count then stays the table's (the number of
pushes), which sparse_adam's bias correction and adagrad's lr_decay read, so
a sharded table's values are exactly those of one session stepped with the
same pushes.  A shard none of whose rows is in the push is stepped on its
spare row with a zero gradient: a rows step lists at least one row, and a
zero gradient on a row whose optimizer state is zero (the spare's, which
only ever gets zeros) leaves the row and its state as they were under
sparse_adam, adagrad and sgd, and counts the step.  pull(rows) reads each shard's
rows concurrently and answers them in the caller's order.

create() offers no max_grad_norm: each shard would clip its part of a push
by that part's norm, not the push's, and the table would no longer be one
session's.

No atomicity across shards: a push that raises may have been applied on
some shards and not others.  Pass expect_step (the table's step before the
push) to make that visible: a shard already past it refuses with
step_mismatch instead of applying the push twice.
"""
import array
import concurrent.futures

from .client import Client, OptdError, _from_torch, _is_numpy, _np


def shard_rows(n, k, j):
    """How many of a table's n rows shard j of k holds (its spare row not
    counted)."""
    return max(0, (n - j + k - 1) // k)


class ShardedTable:
    """A table of rows spread over the sessions NAME.0 ... NAME.{k-1}.

    urls: one base URL or a list of them (see the module doc); shards: k
    (default: the number of URLs); workers: the thread pool's size (default
    k, at most 32).  token, timeout, retries: as for Client."""

    def __init__(self, urls, name, shards=None, token=None, timeout=30.0, retries=3,
                 workers=None):
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise ValueError("ShardedTable needs at least one URL")
        self.name = name
        self.k = int(shards) if shards else len(urls)
        if self.k < 1:
            raise ValueError("shards must be at least 1")
        self.clients = [Client(u, token=token, timeout=timeout, retries=retries) for u in urls]
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(self.k, 32))
        self.rows = None      # known after create() or open()
        self.row_size = None
        self.dtype = None

    # ------------------------------------------------------------ layout

    def shard_name(self, j):
        return "%s.%d" % (self.name, j)

    def client_of(self, j):
        """The Client that shard j's requests go through."""
        return self.clients[j % len(self.clients)]

    def locate(self, row):
        """(shard, local row) of a table row."""
        return row % self.k, row // self.k

    def _group(self, rows):
        """[(positions in `rows`, local rows)] per shard, order kept."""
        if self.rows is None:
            raise ValueError("the table's size is not known: create() or open() first")
        groups = [([], []) for _ in range(self.k)]
        for i, r in enumerate(rows):
            r = int(r)
            if not 0 <= r < self.rows:
                # (a row past the end would reach a shard's spare row)
                raise ValueError("row %d: the table has rows 0..%d" % (r, self.rows - 1))
            pos, local = groups[r % self.k]
            pos.append(i)
            local.append(r // self.k)
        return groups

    def _run(self, calls):
        """Runs fn() for each (j, fn) concurrently; {j: result}.  Every call
        finishes before the first error (in shard order) is raised."""
        futures = {j: self._pool.submit(fn) for j, fn in calls}
        concurrent.futures.wait(list(futures.values()))
        for j in sorted(futures):
            exc = futures[j].exception()
            if exc is not None:
                if isinstance(exc, OptdError):
                    exc.shard = self.shard_name(j)
                raise exc
        return {j: f.result() for j, f in futures.items()}

    # ------------------------------------------------------------ lifecycle

    def create(self, rows, row_size, optimizer="sparse_adam", hyperparameters=None,
               dtype=None, init=None, labels=None):
        """Creates the k shard sessions of a table of `rows` rows of
        `row_size` values (zeros, or `init`: rows x row_size values, a numpy
        array (sent in binary, so of the table's dtype) or a flat list).
        If any create fails, the shards this call made are deleted (never
        one that was there before: an existing shard is already_exists) and
        the error raised."""
        if rows < self.k:
            raise ValueError("a table of %d rows cannot have %d shards" % (rows, self.k))
        self.rows, self.row_size = int(rows), int(row_size)
        init = _from_torch(init)

        def make(j):
            n = shard_rows(self.rows, self.k, j) + 1  # + the spare row
            c = self.client_of(j)
            d = c.create(self.shard_name(j), optimizer, size=n * self.row_size,
                         row_size=self.row_size, hyperparameters=hyperparameters,
                         dtype=dtype, labels=labels)
            made.append(j)
            if init is not None:
                c.set_params(self.shard_name(j), self._shard_slice(init, j))
            return d

        made = []  # list.append is atomic: the pool's threads share it
        try:
            descs = self._run([(j, (lambda j=j: make(j))) for j in range(self.k)])
        except BaseException:
            try:
                self._run([(j, (lambda j=j: self.client_of(j).delete(self.shard_name(j))))
                           for j in made])
            except OptdError:
                pass  # the create's error is the one to report
            raise
        self.dtype = descs[0]["dtype"]
        return descs

    def _shard_slice(self, table, j):
        """Shard j's rows of a whole table (numpy or flat list), and its
        spare row's zeros."""
        R = self.row_size
        if _is_numpy(table):
            mine = table.reshape(self.rows, R)[j::self.k]
            return _np.concatenate([mine.ravel(), _np.zeros(R, dtype=table.dtype)])
        flat = list(table)
        return [v for r in range(j, self.rows, self.k) for v in flat[r * R:(r + 1) * R]] + [0.0] * R

    def open(self):
        """Reads the shards' descriptors (a table created elsewhere): sets
        rows, row_size and dtype; returns the table's step (shard 0's)."""
        descs = self._run([(j, (lambda j=j: self.client_of(j).get(self.shard_name(j))))
                           for j in range(self.k)])
        self.row_size = descs[0].get("row_size", 1)
        self.dtype = descs[0]["dtype"]
        self.rows = sum(descs[j]["size"] // self.row_size - 1 for j in range(self.k))
        return descs[0]["step"]

    def delete(self):
        """Deletes every shard; shards already gone are skipped."""
        def drop(j):
            try:
                self.client_of(j).delete(self.shard_name(j))
            except OptdError as e:
                if e.code != "not_found":
                    raise
        self._run([(j, (lambda j=j: drop(j))) for j in range(self.k)])

    def close(self):
        self._pool.shutdown(wait=True)
        for c in self.clients:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ rows

    def push(self, rows, gradient, expect_step=None, loss=None, all_shards=True):
        """One rows step of the table: gradient holds len(rows) x row_size
        values, row after row (numpy: sent in binary, of the table's dtype;
        a list: sent as JSON).  all_shards=False steps only the shards that
        have rows in this push (fine for sgd, whose rule has no step count).
        Returns the table's step after the push (the largest the shards
        answered; they are equal unless someone else stepped a shard)."""
        rows, gradient = _from_torch(rows), _from_torch(gradient)
        groups = self._group(rows)
        R = self._row_size_for(rows, gradient)
        if _is_numpy(gradient):
            g = gradient.reshape(-1, R) if R else gradient.reshape(0, 0)
        else:
            g = gradient if isinstance(gradient, (list, array.array)) else list(gradient)

        def part(pos):
            if _is_numpy(gradient):
                return _np.ascontiguousarray(g[pos]).ravel()
            return [v for i in pos for v in g[i * R:(i + 1) * R]]

        calls = []
        for j, (pos, local) in enumerate(groups):
            if not pos:
                if not all_shards:
                    continue
                local = [shard_rows(self.rows, self.k, j)]  # the spare row
                grad_j = (_np.zeros(R, dtype=gradient.dtype) if _is_numpy(gradient) else [0.0] * R)
            else:
                grad_j = part(pos)
            calls.append((j, (lambda j=j, local=local, grad_j=grad_j: self.client_of(j).step_rows(
                self.shard_name(j), local, grad_j, expect_step=expect_step, loss=loss,
                return_params=False))))
        results = self._run(calls)
        return max(r.step for r in results.values()) if results else None

    def _row_size_for(self, rows, gradient):
        n = len(rows)
        total = gradient.size if _is_numpy(gradient) else len(gradient)
        if self.row_size is not None:
            if total != n * self.row_size:
                raise ValueError("%d gradient values for %d rows of %d" % (total, n, self.row_size))
            return self.row_size
        if n == 0 or total % n:
            raise ValueError("%d gradient values do not make %d rows" % (total, n))
        return total // n

    def pull(self, rows, binary=None):
        """(step, values): the rows' current values, len(rows) x row_size of
        them in the order asked (repeats allowed).  binary (default: when
        numpy is installed) reads raw bytes and answers a flat numpy array;
        otherwise a flat list.  step: the smallest step of the shards read."""
        if binary is None:
            binary = _np is not None
        groups = self._group(_from_torch(rows))
        answers = self._run([(j, (lambda j=j, local=local: self.client_of(j).read_rows(
            self.shard_name(j), local, binary=binary, numpy=binary and _np is not None)))
            for j, (pos, local) in enumerate(groups) if pos])
        if not answers:
            return None, ([] if not binary else _np.empty(0))
        R = self.row_size
        if R is None:
            j0 = next(iter(answers))
            R = len(answers[j0][1]) // len(groups[j0][1])
        step = min(s for s, _ in answers.values())
        if binary and _np is not None:
            dtype = next(iter(answers.values()))[1].dtype
            out = _np.empty((len(rows), R), dtype=dtype)
            for j, (_, vals) in answers.items():
                out[groups[j][0]] = vals.reshape(-1, R)
            return step, out.ravel()
        out = [None] * len(rows)
        for j, (_, vals) in answers.items():
            for idx, i in enumerate(groups[j][0]):
                out[i] = vals[idx * R:(idx + 1) * R]
        return step, [v for row in out for v in row]
