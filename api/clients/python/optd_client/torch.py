"""optd_client.torch: RemoteOptimizer, a torch.optim.Optimizer whose updates
are made by an optd daemon.

    import torch
    from optd_client.torch import RemoteOptimizer

    opt = RemoteOptimizer([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                          "adamw", url="http://127.0.0.1:8080", name="run-1", lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()          # one binary request: every gradient out, every parameter back
        sched.step()

How it maps:
  * The optimizer's param groups become the session's parameter groups, in
    order; a group's parameters, flattened in order, are its slice of the
    session's vector.  The session's dtype is the model's (float32 or
    float64, the same for every parameter).
  * step() sends every gradient in one binary request (a parameter whose
    grad is None counts as a zero gradient) and writes the answer into the
    parameters.  A hyperparameter of a group that changed since the last
    step (an LR scheduler, a hand edit) is sent first, in one PATCH: one
    extra request, only then.
  * state_dict() and load_state_dict() speak PyTorch's own format (the
    state per parameter under torch.optim's names, the param groups with
    "params" as indices), so a state moves to and from torch.optim.AdamW
    (and the other optimizers) and torch.save works.
  * An existing session of that name is reused (resume after a crash): its
    parameters and step are taken into the model; a mismatch in optimizer,
    size, dtype or groups is a ValueError saying which.  Otherwise the
    session is created with `size` and the groups, then the parameters are
    written in binary (PUT .../params).
  * foreach, fused, capturable and differentiable are accepted and ignored.

torch is imported by this module only; the rest of optd_client needs the
standard library alone.
"""
import torch

from .client import Client, OptdError

__all__ = ["RemoteOptimizer"]

_IGNORED = ("foreach", "fused", "capturable", "differentiable")
# How torch.optim keeps "step" in a parameter's state (torch 1.13): a 0-d
# float tensor, a plain int, or not at all.
_INT_STEP = {"rmsprop", "adadelta"}
_NO_STEP = {"sgd"}
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def _wire(value):
    """A group value as the API takes it (tuples to lists, tensors to numbers)."""
    if torch.is_tensor(value):
        return value.item()
    if isinstance(value, tuple):
        return [_wire(v) for v in value]
    return value


def _torch_value(value):
    return tuple(value) if isinstance(value, list) else value


class RemoteOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer that keeps its state in an optd session.

    params: parameters or param groups, as for any torch optimizer.
    optimizer: an optd optimizer name ("adamw", "sgd", ... GET /v1/optimizers).
    url, token, client: where the daemon is (client: an optd_client.Client).
    name: the session's name (reused when it exists).
    schedule, max_grad_norm: the session's (API.md); usually a torch LR
    scheduler on this optimizer does the scheduling instead.
    Any other keyword is a hyperparameter default (lr=1e-3, betas=(0.9, 0.999), ...).
    """

    def __init__(self, params, optimizer="adam", *, url="http://127.0.0.1:8080", name, token=None,
                 client=None, schedule=None, max_grad_norm=None, timeout=60.0, **hyperparameters):
        for k in _IGNORED:
            hyperparameters.pop(k, None)
        self._client = client or Client(url, token=token, timeout=timeout)
        self._name = name
        self._optimizer = optimizer
        table = {o["name"]: o["hyperparameters"] for o in self._client.optimizers()}
        if optimizer not in table:
            raise ValueError("optd has no optimizer %r (it has: %s)" % (optimizer, ", ".join(sorted(table))))
        self._keys = list(table[optimizer])
        unknown = sorted(set(hyperparameters) - set(self._keys))
        if unknown:
            raise ValueError("%s takes no hyperparameter %s (it takes: %s)"
                             % (optimizer, ", ".join(unknown), ", ".join(self._keys)))
        defaults = {k: _torch_value(v) for k, v in table[optimizer].items()}
        defaults.update(hyperparameters)
        super().__init__(params, defaults)
        self._dtype = self._model_dtype()
        self._sent = None    # per group: the values the session holds
        self._step = 0       # the session's step
        self._gbuf = self._rbuf = None  # the step's buffers (_buffers)
        self._attach(schedule, max_grad_norm)
        self._attached = True

    def add_param_group(self, param_group):
        """As torch's, while the optimizer is being made; afterwards a
        ValueError: the session's groups are fixed when it is created."""
        if getattr(self, "_attached", False):
            raise ValueError("RemoteOptimizer: the session's parameter groups are fixed at creation; "
                             "make a new optimizer (and session) with all the groups")
        super().add_param_group(param_group)

    # ------------------------------------------------------------ set-up

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _model_dtype(self):
        dtypes = {p.dtype for p in self._params()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPES:
            raise ValueError("RemoteOptimizer needs every parameter float32 or every one float64, got %s"
                             % sorted(str(d) for d in dtypes))
        return next(iter(dtypes))

    def _sizes(self):
        sizes = [sum(p.numel() for p in g["params"]) for g in self.param_groups]
        empty = [i for i, n in enumerate(sizes) if n == 0]
        if empty:  # torch takes an empty group; a session's groups each hold >= 1 parameter
            raise ValueError("RemoteOptimizer: param group %d holds no parameters (optd's groups each hold at "
                             "least one): leave it out" % empty[0])
        return sizes

    def _group_values(self, group):
        # A state_dict from torch may lack a key its optimizer did not have
        # in 1.13 (nadam's and radam's maximize): the default then.
        return {k: _wire(group.get(k, self.defaults[k])) for k in self._keys}

    def _attach(self, schedule, max_grad_norm):
        sizes = self._sizes()
        want_dtype = _DTYPES[self._dtype]
        try:
            d = self._client.get(self._name)
        except OptdError as e:
            if e.code != "not_found":
                raise
            d = None
        if d is None:
            groups = [{"size": n, "hyperparameters": self._group_values(g)}
                      for n, g in zip(sizes, self.param_groups)]
            self._client.create(self._name, self._optimizer, size=sum(sizes), dtype=want_dtype,
                                groups=groups, schedule=schedule, max_grad_norm=max_grad_norm)
            try:
                flat = self._flat(lambda p: p.detach()).cpu()
                self._client.set_params(self._name, memoryview(flat.numpy()).cast("B"), expect_step=0,
                                        dtype=want_dtype)
            except BaseException:
                # Without its parameters the session holds zeros, and the
                # next run would resume them into the model: take it back.
                try:
                    self._client.delete(self._name)
                except OptdError:
                    pass  # the first error is the one to report
                raise
            self._sent = [self._group_values(g) for g in self.param_groups]
            return
        have = [g["size"] for g in (d.get("groups") or [{"size": d["size"]}])]
        problems = []
        if d["optimizer"] != self._optimizer:
            problems.append("optimizer %s, not %s" % (d["optimizer"], self._optimizer))
        if d["size"] != sum(sizes):
            problems.append("%d parameters, not %d" % (d["size"], sum(sizes)))
        elif have != sizes:
            problems.append("groups of sizes %s, not %s" % (have, sizes))
        if d["dtype"] != want_dtype:
            problems.append("dtype %s, not %s" % (d["dtype"], want_dtype))
        if problems:
            raise ValueError("session %r exists with %s" % (self._name, "; ".join(problems)))
        # Resume: the session's parameters and step are the truth; the
        # values it holds are compared with the groups' at the next step.
        self._sent = [g["hyperparameters"] for g in (d.get("groups") or [{"hyperparameters": d["hyperparameters"]}])]
        step, raw = self._client.params(self._name, binary=True, numpy=False)
        self._step = step
        self._write(bytes(raw))

    # ------------------------------------------------------------ the step

    def _flat(self, get):
        """One flat tensor of the session's dtype: get(p) for every parameter, in order."""
        parts = [get(p).reshape(-1) for p in self._params()]
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()

    def _buffers(self):
        """The step's two flat buffers, made once: fresh 4 MB allocations
        each step cost more in page faults than the copies themselves."""
        if self._gbuf is None:
            n = sum(p.numel() for p in self._params())
            self._gbuf = torch.empty(n, dtype=self._dtype)
            self._gview = memoryview(self._gbuf.numpy()).cast("B")
            self._rbuf = bytearray(n * self._gbuf.element_size())
            self._rflat = torch.frombuffer(self._rbuf, dtype=self._dtype)
        return self._gbuf, self._gview, self._rbuf

    def _write(self, raw):
        flat = torch.frombuffer(bytearray(raw), dtype=self._dtype) if raw is not self._rbuf else self._rflat
        with torch.no_grad():
            off = 0
            for p in self._params():
                n = p.numel()
                p.copy_(flat[off:off + n].view_as(p))
                off += n

    def _sync_hyperparameters(self):
        """PATCHes the groups whose values changed since they were sent (one
        request, only when something changed)."""
        now = [self._group_values(g) for g in self.param_groups]
        diff = [{k: v for k, v in n.items() if self._sent[i].get(k) != v} for i, n in enumerate(now)]
        if any(diff):
            self._client.patch(self._name, groups=[{"hyperparameters": d} for d in diff])
            self._sent = now

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter by the daemon; returns closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_hyperparameters()
        gbuf, gview, rbuf = self._buffers()
        off = 0
        for p in self._params():
            n = p.numel()
            if p.grad is None:
                gbuf[off:off + n].zero_()
            else:
                gbuf[off:off + n].copy_(p.grad.reshape(-1))
            off += n
        lossv = None
        if loss is not None:
            try:
                lossv = float(loss)
            except (TypeError, ValueError):
                lossv = None
        # The buffer's own bytes go out and the answer is read into the
        # other buffer: no copy (ndarray.tobytes of 4 MB took ~40 ms here).
        step, raw = self._client.step_bytes(self._name, gview, _DTYPES[self._dtype],
                                            expect_step=self._step, loss=lossv, out=rbuf)
        self._write(raw)
        self._step = step
        return loss

    # ------------------------------------------------------------ state

    def _fetch_state(self):
        """self.state filled from the session, as torch.optim keeps it."""
        doc = self._client.export_state(self._name)
        self._step = doc["step"]
        self.state.clear()
        if doc["step"] == 0:
            return
        bufs = doc.get("state") or {}
        mu = bufs.get("mu_product")
        off = 0
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                n = p.numel()
                st = {}
                if self._optimizer not in _NO_STEP:
                    st["step"] = doc["step"] if self._optimizer in _INT_STEP else torch.tensor(float(doc["step"]))
                for key, values in bufs.items():
                    if key == "mu_product":
                        v = mu[gi] if isinstance(mu, list) else mu
                        st[key] = torch.tensor(v, dtype=self._dtype)
                        continue
                    t = torch.tensor(values[off:off + n], dtype=self._dtype).view_as(p)
                    if key == "momentum_buffer" and group.get("momentum", 0) == 0 and not t.any():
                        t = None  # torch keeps None for a group that never had momentum
                    st[key] = t
                self.state[p] = st
                off += n

    def state_dict(self):
        """PyTorch's optimizer state_dict, read from the session."""
        self._fetch_state()
        try:
            return super().state_dict()
        finally:
            self.state.clear()

    def load_state_dict(self, state_dict):
        """Loads a state_dict (this class's or torch.optim's) into the session:
        the groups' values, the step and the buffers, with the model's current
        parameters."""
        super().load_state_dict(state_dict)
        for g in self.param_groups:
            for k in _IGNORED:
                g.pop(k, None)
        doc = self._state_document()
        self.state.clear()
        self._client.import_state(self._name, doc)
        self._step = doc["step"]
        self._sent = [self._group_values(g) for g in self.param_groups]

    def _state_document(self):
        params = self._params()
        steps = {int(_wire(self.state[p]["step"])) for p in params if "step" in self.state.get(p, {})}
        step = steps.pop() if len(steps) == 1 else (self._step if not steps else None)
        if step is None:
            raise ValueError("the state holds parameters at different steps: %s" % sorted(steps))
        if not any(self.state.get(p) for p in params):
            step = 0
        elif self._optimizer in _NO_STEP:
            step = max(self._step, 1)
        keys = sorted({k for p in params for k, v in self.state.get(p, {}).items()
                       if k != "step" and v is not None})
        state = {}
        for key in keys:
            if key == "mu_product":
                state[key] = [float(self._first(g, key, 1.0)) for g in self.param_groups]
                continue
            parts = []
            for p in params:
                v = self.state.get(p, {}).get(key)
                parts.append((v if v is not None else torch.zeros_like(p)).detach().to(self._dtype).reshape(-1))
            state[key] = torch.cat(parts).cpu().tolist()
        sizes = self._sizes()
        return {
            "optimizer": self._optimizer, "dtype": _DTYPES[self._dtype], "step": step,
            "hyperparameters": self._group_values(self.param_groups[0]),
            "groups": [{"size": n, "hyperparameters": self._group_values(g)}
                       for n, g in zip(sizes, self.param_groups)],
            "params": self._flat(lambda p: p.detach()).cpu().tolist(),
            "state": state,
        }

    def _first(self, group, key, default):
        for p in group["params"]:
            v = self.state.get(p, {}).get(key)
            if v is not None:
                return _wire(v)
        return default

    def __repr__(self):
        return "RemoteOptimizer(%r, session=%r, groups=%d)" % (self._optimizer, self._name,
                                                                 len(self.param_groups))
