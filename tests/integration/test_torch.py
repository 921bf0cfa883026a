"""test_torch.py: optd_client.torch.RemoteOptimizer against torch.optim, with
real torch (Debian's python3-torch) and the real daemon.

The same model is trained twice from the same initial weights, once with
torch.optim and once with RemoteOptimizer (two param groups, a torch LR
scheduler, 200 steps): every parameter stays within OPTIMIZERS.md's float32
tolerance of torch's at every step; the requests are counted from /metrics
(one step request per step, plus one PATCH whenever the scheduler changed a
value); a state moves both ways through state_dict()/load_state_dict() and
the runs go on alike; step(closure), resume and the mismatch errors; and the
client package installs with pip into a fresh venv and works from there."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from harness import REPO, DaemonTestCase

sys.path.insert(0, os.path.join(REPO, "api", "clients", "python"))

try:
    import torch
    from optd_client.torch import RemoteOptimizer
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

STEPS = 200


def close32(got, want):
    """OPTIMIZERS.md's float32 tolerance, element-wise over two tensors."""
    return bool(((got - want).abs() <= 2e-5 * want.abs() + 1e-6).all())


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def two_groups(model, **second):
    """Weights with weight decay, biases without (the usual split)."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay}, dict(params=rest, weight_decay=0.0, **second)]


def data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def counters(metrics):
    """{(method, code): n} from optd_http_requests_total."""
    out = {}
    for m in re.finditer(r'optd_http_requests_total\{method="(\w+)",code="(\d+)"\} (\d+)', metrics):
        out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


def settled_counters(d):
    """counters() once the non-GET ones stop moving: a request is counted
    when it completes, after its answer went out, so the scrape right
    after an answer may come first (a CI run under ASan counted the
    create's PUT in the loop's delta)."""
    prev = None
    for _ in range(100):
        cur = counters(d.get("/metrics").body.decode())
        now = {k: v for k, v in cur.items() if k[0] != "GET"}
        if now == prev:
            return cur
        prev = now
        time.sleep(0.05)
    return cur


@unittest.skipUnless(torch is not None, "python3-torch is not installed (deploy/install-deps.sh test)")
class RemoteOptimizerTest(DaemonTestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.url = "http://127.0.0.1:%d" % self.d.port

    def remote(self, model, optimizer, name=None, groups=None, **kw):
        return RemoteOptimizer(groups or two_groups(model), optimizer, url=self.url,
                               name=name or self.uname(), **kw)

    def assertAlike(self, a, b, what):
        for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
            self.assertTrue(close32(pb.detach(), pa.detach()),
                            "%s: %s differs by %g" % (what, n, (pa - pb).abs().max().item()))

    def test_adamw_two_groups_scheduler_matches_torch(self):
        a, b = make_model(), make_model()
        ta = torch.optim.AdamW(two_groups(a), lr=0.003, weight_decay=0.05, foreach=False)
        rb = self.remote(b, "adamw", lr=0.003, weight_decay=0.05, foreach=True, fused=False,
                         capturable=False, differentiable=False)
        sa = torch.optim.lr_scheduler.StepLR(ta, step_size=50, gamma=0.5)
        sb = torch.optim.lr_scheduler.StepLR(rb, step_size=50, gamma=0.5)
        x, y = data()
        before = settled_counters(self.d)
        changes = 0
        for k in range(STEPS):
            lr_before = rb.param_groups[0]["lr"]
            train_step(a, ta, x, y)
            train_step(b, rb, x, y)
            self.assertAlike(a, b, "step %d" % (k + 1))
            sa.step()
            sb.step()
            changes += rb.param_groups[0]["lr"] != lr_before and k + 1 < STEPS
        after = settled_counters(self.d)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        self.assertEqual(delta.get(("POST", "200")), STEPS)
        self.assertEqual(changes, 3)
        self.assertEqual(delta.get(("PATCH", "200"), 0), changes)
        self.assertEqual(sum(v for (m, c), v in delta.items() if m not in ("GET",)), STEPS + changes)
        d = self.d.get("/v1/sessions/" + rb._name).body
        self.assertEqual(d["step"], STEPS)
        self.assertEqual([g["hyperparameters"]["weight_decay"] for g in d["groups"]], [0.05, 0.0])
        self.assertEqual(d["dtype"], "float32")

    def test_state_moves_both_ways_and_runs_go_on_alike(self):
        """Two runs on different data (so their states differ): torch's
        state moves into a fresh session, optd's into a fresh torch
        optimizer, and each pair then goes on alike.  A fresh optimizer
        that did not take the state (step 0, empty moments) would not."""
        x, y = data(2)
        x2, y2 = data(3)
        for opt, cls, kw in (("adamw", torch.optim.AdamW, {"lr": 0.003, "weight_decay": 0.05}),
                             ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
                             ("adam", torch.optim.Adam, {"lr": 0.003, "amsgrad": True}),
                             ("rmsprop", torch.optim.RMSprop, {"lr": 0.001, "centered": True}),
                             ("adagrad", torch.optim.Adagrad, {"lr": 0.01}),
                             ("adamax", torch.optim.Adamax, {"lr": 0.002}),
                             ("radam", torch.optim.RAdam, {"lr": 0.003}),
                             ("adadelta", torch.optim.Adadelta, {"lr": 0.5})):
            with self.subTest(opt=opt):
                groups = lambda m: two_groups(m, **({"momentum": 0.0} if opt == "sgd" else {}))
                a, b = make_model(), make_model()
                ta = cls(groups(a), foreach=False, **kw)
                rb = self.remote(b, opt, groups=groups(b), **kw)
                for _ in range(20):
                    train_step(a, ta, x, y)
                    train_step(b, rb, x2, y2)
                # torch -> optd: a fresh session on a copy of a takes ta's state.
                a2 = make_model()
                a2.load_state_dict(a.state_dict())
                ra2 = self.remote(a2, opt, groups=groups(a2), **kw)
                ra2.load_state_dict(ta.state_dict())
                # optd -> torch: a fresh torch optimizer on a copy of b takes rb's.
                sd = rb.state_dict()
                self.assertEqual(len(sd["state"]), 4)
                b2 = make_model()
                b2.load_state_dict(b.state_dict())
                tb2 = cls(groups(b2), foreach=False, **kw)
                tb2.load_state_dict(sd)
                for k in range(20):
                    for m, o in ((a, ta), (a2, ra2), (b, rb), (b2, tb2)):
                        train_step(m, o, x, y)
                    self.assertAlike(a, a2, "optd after torch's state, step %d" % (k + 1))
                    self.assertAlike(b, b2, "torch after optd's state, step %d" % (k + 1))

    def test_state_dict_is_torchs_format_and_saves(self):
        b = make_model()
        rb = self.remote(b, "adamw", lr=0.01)
        x, y = data()
        train_step(b, rb, x, y)
        sd = rb.state_dict()
        ref = torch.optim.AdamW(two_groups(make_model()), lr=0.01)
        train_step(make_model(), torch.optim.AdamW(make_model().parameters()), x, y)
        self.assertEqual(sorted(sd), ["param_groups", "state"])
        self.assertEqual(sorted(sd["state"][0]), ["exp_avg", "exp_avg_sq", "step"])
        self.assertEqual(sd["state"][0]["step"].item(), 1.0)
        self.assertEqual(sd["state"][0]["exp_avg"].shape, b[0].weight.shape)
        self.assertEqual([g["params"] for g in sd["param_groups"]], [[0, 1], [2, 3]])
        for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
            self.assertIn(k, sd["param_groups"][1])
            self.assertIn(k, ref.state_dict()["param_groups"][1])
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "opt.pt")
            torch.save(sd, path)
            again = torch.load(path)
        self.assertTrue(torch.equal(again["state"][1]["exp_avg_sq"], sd["state"][1]["exp_avg_sq"]))

    def test_closure_resume_and_mismatches(self):
        name = self.uname()
        b = make_model()
        rb = self.remote(b, "adam", name=name, lr=0.01)
        x, y = data()

        def closure():
            rb.zero_grad()
            loss = torch.nn.functional.cross_entropy(b(x), y)
            loss.backward()
            return loss
        loss = rb.step(closure)
        self.assertTrue(torch.is_tensor(loss))
        hist = self.d.get("/v1/sessions/%s/history" % name).body["history"]
        self.assertAlmostEqual(hist[-1]["loss"], loss.item(), places=6)
        rb.step(closure)
        # Resume: a new optimizer on a fresh model takes the session's
        # parameters and step, and goes on from there.
        c = make_model(seed=5)
        rc = self.remote(c, "adam", name=name, lr=0.01)
        for pb, pc in zip(b.parameters(), c.parameters()):
            self.assertTrue(torch.equal(pb, pc))
        self.assertEqual(rc._step, 2)
        with self.assertRaisesRegex(ValueError, "optimizer adam, not sgd"):
            self.remote(make_model(), "sgd", name=name)
        bigger = torch.nn.Sequential(torch.nn.Linear(8, 17), torch.nn.Tanh(), torch.nn.Linear(17, 3))
        with self.assertRaisesRegex(ValueError, "parameters, not"):
            self.remote(bigger, "adam", name=name)
        with self.assertRaisesRegex(ValueError, "groups of sizes"):
            self.remote(b, "adam", name=name, groups=[{"params": list(b.parameters())}])
        with self.assertRaisesRegex(ValueError, "dtype float32, not float64"):
            self.remote(make_model().double(), "adam", name=name)
        with self.assertRaisesRegex(ValueError, "fixed at creation"):
            rc.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))]})
        self.assertEqual(len(rc.param_groups), 2)
        # torch takes an empty group; the session cannot: say so in torch's
        # words, not "'groups[1].size' must be an integer >= 1" (user helper)
        with self.assertRaisesRegex(ValueError, "param group 1 holds no parameters"):
            self.remote(make_model(), "adam", groups=[{"params": list(b.parameters())}, {"params": []}])

    def test_float64_model_and_one_group(self):
        a, b = make_model().double(), make_model().double()
        ta = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        rb = RemoteOptimizer(b.parameters(), "sgd", url=self.url, name=self.uname(), lr=0.05,
                             momentum=0.9, nesterov=True)
        x, y = data()
        x = x.double()
        for _ in range(30):
            train_step(a, ta, x, y)
            train_step(b, rb, x, y)
        for pa, pb in zip(a.parameters(), b.parameters()):
            self.assertTrue(bool(((pa - pb).abs() <= 1e-10 * pa.abs() + 1e-12).all()))
        self.assertEqual(len(self.d.get("/v1/sessions/" + rb._name).body["groups"]), 1)


@unittest.skipUnless(torch is not None, "python3-torch is not installed (deploy/install-deps.sh test)")
class ResumeAfterCrash(DaemonTestCase):
    """README's resume recipe as a user runs it: a durable daemon is killed
    (kill -9, --sync always) in the middle of a OneCycleLR run; a new
    process makes a fresh model and RemoteOptimizer of the same name (which
    resume the parameters and the step from the session), a fresh scheduler,
    loads the optimizer's and the scheduler's state_dict saved with the
    step, and goes on alike with torch.optim.AdamW that never stopped.
    Without the checkpoint the groups' values are the constructor's and the
    fresh scheduler's (the session holds only what the last step used), so
    the next step would silently run at the scheduler's first lr."""
    DATA_DIR = True
    FLAGS = ["--sync", "always"]

    def test_kill9_then_resume_with_scheduler_matches_torch(self):
        torch.set_num_threads(1)
        url = lambda: "http://127.0.0.1:%d" % self.d.port
        name = self.uname()
        a, b = make_model(), make_model()
        ta = torch.optim.AdamW(two_groups(a, lr=0.001), lr=0.01, weight_decay=0.05)
        rb = RemoteOptimizer(two_groups(b, lr=0.001), "adamw", url=url(), name=name, lr=0.01,
                             weight_decay=0.05)
        one_cycle = lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=[0.01, 0.001], total_steps=60)
        sa, sb = one_cycle(ta), one_cycle(rb)
        x, y = data()
        for _ in range(25):
            for m, o, s in ((a, ta, sa), (b, rb, sb)):
                train_step(m, o, x, y)
                s.step()
        ckpt = {"opt": rb.state_dict(), "sched": sb.state_dict()}
        at_kill = [p.detach().clone() for p in b.parameters()]
        self.d.kill9()
        self.d.start(port=self.d.port)
        c = make_model(seed=7)
        rc = RemoteOptimizer(two_groups(c, lr=0.001), "adamw", url=url(), name=name, lr=0.01,
                             weight_decay=0.05)
        self.assertEqual(rc._step, 25)
        for pk, pc in zip(at_kill, c.parameters()):
            self.assertTrue(torch.equal(pk, pc))
        sc = one_cycle(rc)
        self.assertNotEqual(rc.param_groups[0]["lr"], ta.param_groups[0]["lr"])  # the trap
        rc.load_state_dict(ckpt["opt"])
        sc.load_state_dict(ckpt["sched"])
        self.assertEqual([g["lr"] for g in rc.param_groups], [g["lr"] for g in ta.param_groups])
        for k in range(35):
            train_step(a, ta, x, y)
            train_step(c, rc, x, y)
            sa.step()
            sc.step()
            for (n, pa), pc in zip(a.named_parameters(), c.parameters()):
                self.assertTrue(close32(pc.detach(), pa.detach()),
                                "step %d after resume: %s differs by %g" % (k + 1, n, (pa - pc).abs().max().item()))
        self.assertEqual(self.d.get("/v1/sessions/" + name).body["step"], 60)


@unittest.skipUnless(torch is not None, "python3-torch is not installed (deploy/install-deps.sh test)")
class CreateFailsHalfway(DaemonTestCase):
    """The session is created with `size` (zeros), then the parameters are
    written: when that write fails (here 413, a model over
    --max-body-bytes) the session used to stay behind at step 0 holding
    zeros, and the next run resumed it, zeroing the model's weights."""
    FLAGS = ["--max-body-bytes", "100000", "--max-body-memory", "100000"]

    def test_no_zero_session_left_to_resume(self):
        url = "http://127.0.0.1:%d" % self.d.port
        name = self.uname()
        for _ in range(2):
            torch.manual_seed(0)
            model = torch.nn.Linear(200, 200)  # 40,200 float32: 160 KB
            before = [p.detach().clone() for p in model.parameters()]
            with self.assertRaises(Exception):
                RemoteOptimizer(model.parameters(), "adam", url=url, name=name)
            self.assertEqual(self.d.get("/v1/sessions/" + name).status, 404)
            for p, q in zip(before, model.parameters()):
                self.assertTrue(torch.equal(p, q))


@unittest.skipUnless(torch is not None, "python3-torch is not installed (deploy/install-deps.sh test)")
class PipInstall(DaemonTestCase):
    def test_installs_in_a_fresh_venv_and_works(self):
        with tempfile.TemporaryDirectory() as tmp:
            # A copy, so that the build leaves nothing in the repository.
            src = os.path.join(tmp, "src")
            shutil.copytree(os.path.join(REPO, "api", "clients", "python"), src,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            venv = os.path.join(tmp, "venv")
            run = lambda *a: subprocess.run(a, capture_output=True, text=True, timeout=300, cwd=tmp)
            p = run("/usr/bin/python3", "-m", "venv", "--system-site-packages", venv)
            self.assertEqual(p.returncode, 0, p.stderr)
            py = os.path.join(venv, "bin", "python")
            p = run(py, "-m", "pip", "install", "--no-index", "--no-build-isolation", src)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            script = (
                "import optd_client, torch\n"
                "from optd_client.torch import RemoteOptimizer\n"
                "assert optd_client.__file__.startswith(%r), optd_client.__file__\n"
                "m = torch.nn.Linear(3, 2)\n"
                "opt = RemoteOptimizer(m.parameters(), 'adam', url=%r, name='venv-1', lr=0.1)\n"
                "m(torch.ones(1, 3)).sum().backward(); opt.step()\n"
                "print(optd_client.Client(%r).get('venv-1')['step'])\n"
            ) % (venv, "http://127.0.0.1:%d" % self.d.port, "http://127.0.0.1:%d" % self.d.port)
            p = run(py, "-c", script)
            self.assertEqual((p.returncode, p.stdout.strip()), (0, "1"), p.stderr)


if __name__ == "__main__":
    unittest.main()
