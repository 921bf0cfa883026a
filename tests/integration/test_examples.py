"""test_examples.py: the examples run against the real daemon and do what
README says they do (quick settings, well under a minute together).

- digits.py with adam reaches at least 95% test accuracy;
- figures.py draws its three pictures through optd, and Adam's Rosenbrock
  path ends near the minimum; the committed docs/figures are small PNGs;
- pbt.py forks and re-tunes sessions, steps the population with
  POST /v1/steps, and prints the best schedule;
- optuna_study.py runs an Optuna study (TPE, MedianPruner) whose trials are
  sessions, and optd's sort=best_loss ranks first the trial Optuna found best;
- torch_digits.py trains its CNN with torch.optim and RemoteOptimizer, both
  to at least 90% test accuracy, one request a step (plus the schedule's);
- recommender.py factorises its synthetic ratings with user and item tables
  (sparse_adam, three shards each) to a held-out RMSE within 1.5x of the
  noise floor (predicting 0 is about 4x), and deletes its tables.
- data_parallel.py runs 4 worker processes in its modes (async, cas,
  rounds, rounds with a slow worker, with and without a backup): rounds waste no gradient,
  take one step per round and reach the one-process baseline's accuracy.
"""

import importlib.util
import os
import re
import subprocess
import tempfile
import unittest

from harness import REPO, DaemonTestCase

HAVE_LIBS = all(importlib.util.find_spec(m) for m in ("numpy", "sklearn", "matplotlib"))

PNG = b"\x89PNG\r\n\x1a\n"


@unittest.skipUnless(HAVE_LIBS, "python3-numpy/-sklearn/-matplotlib missing (install-deps test)")
class Examples(DaemonTestCase):
    FLAGS = ["--log-level", "warn"]

    def run_example(self, *argv):
        env = dict(os.environ, OPTD_URL="http://127.0.0.1:%d" % self.d.port, MPLBACKEND="Agg")
        p = subprocess.run(["/usr/bin/python3"] + list(argv), cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out[-4000:])
        return out

    def test_digits_adam(self):
        out = self.run_example("examples/digits.py", "--optimizers", "adam,sgd")
        m = re.search(r"^adam\s.*?([\d.]+)%", out, re.M)
        self.assertTrue(m, out)
        self.assertGreaterEqual(float(m.group(1)), 95.0, out)
        self.assertRegex(out, r"(?m)^sgd\s.*%")
        # The sessions were deleted afterwards.
        self.assertEqual(self.d.get("/v1/sessions?prefix=digits-").body["sessions"], [])

    @unittest.skipUnless(importlib.util.find_spec("torch"), "python3-torch missing (install-deps test)")
    def test_torch_digits(self):
        out = self.run_example("examples/torch_digits.py", "--epochs", "4")
        accs = dict(re.findall(r"(?m)^(torch\.optim\.AdamW|RemoteOptimizer)\s+([\d.]+)%", out))
        self.assertEqual(sorted(accs), ["RemoteOptimizer", "torch.optim.AdamW"], out)
        for run, acc in accs.items():
            self.assertGreaterEqual(float(acc), 90.0, out)
        steps = int(re.search(r"\((\d+) steps\)", out).group(1))
        n = int(re.search(r"optd requests .*: (\d+)", out).group(1))
        # create + PUT params + one step each + at most one PATCH each
        self.assertGreaterEqual(n, 2 + steps)
        self.assertLessEqual(n, 2 + 2 * steps)
        self.assertRegex(out, r"largest parameter difference after the run: \S+")
        self.assertEqual(self.d.get("/v1/sessions?prefix=torch-digits-").body["sessions"], [])

    @unittest.skipUnless(importlib.util.find_spec("torch"), "python3-torch missing (install-deps test)")
    def test_data_parallel(self):
        out = self.run_example("examples/data_parallel.py", "--epochs", "4", "--slow-ms", "5")
        rows = {m[0].strip(): (float(m[1]), int(m[2]), int(m[3]), int(m[4]))
                for m in re.findall(r"(?m)^(\D.*?)\s+([\d.]+)%\s+(\d+)\s+(\d+)\s+(\d+) \(", out)}
        self.assertEqual(sorted(rows), sorted(["baseline (1 process, batch 64)", "async (plain steps)",
                                               "cas (Optd-Expect-Step)", "rounds of 4", "rounds of 4, 1 slow",
                                               "rounds of 3 + 1 backup, 1 slow"]), out)
        base, rounds = rows["baseline (1 process, batch 64)"], rows["rounds of 4"]
        # Rounds of 4 take the baseline's number of steps, each the mean of
        # 4 gradients of 16 (the baseline's of 64), wasting none, and reach
        # its accuracy (both runs are deterministic: the round's reduction
        # is in worker-name order).
        self.assertEqual(rounds[1], base[1], out)
        self.assertEqual(rounds[2], 4 * base[1], out)
        self.assertEqual(rounds[3], 0, out)
        self.assertGreaterEqual(rounds[0], base[0] - 1.0, out)
        self.assertGreaterEqual(rounds[0], 90.0, out)
        # The baseline's batches are the workers' batches put together, so
        # the two runs differ only in how the mean was rounded.
        diff = float(re.search(r"largest parameter difference, rounds of 4 against the baseline: (\S+)", out).group(1))
        self.assertLess(diff, 1e-3, out)
        self.assertEqual(rows["async (plain steps)"][1], 4 * base[1], out)
        self.assertEqual(rows["async (plain steps)"][3], 0, out)
        cas = rows["cas (Optd-Expect-Step)"]
        self.assertEqual(cas[1], 4 * base[1], out)
        self.assertEqual(cas[2], cas[1] + cas[3], out)  # every refused gradient computed again
        self.assertEqual(rows["rounds of 4, 1 slow"][1:], rounds[1:], out)  # slower, the same rounds
        backup = rows["rounds of 3 + 1 backup, 1 slow"]
        self.assertEqual(backup[1], base[1], out)
        self.assertEqual(self.d.get("/v1/sessions?prefix=data-parallel-").body["sessions"], [])

    def test_figures(self):
        with tempfile.TemporaryDirectory() as d:
            out = self.run_example("examples/figures.py", "--out", d)
            for surface in ("rosenbrock", "beale", "saddle"):
                path = os.path.join(d, "paths-%s.png" % surface)
                with open(path, "rb") as f:
                    self.assertEqual(f.read(8), PNG, path)
                self.assertLess(os.path.getsize(path), 200 * 1024)
        m = re.search(r"rosenbrock:\n(?:.*\n)*?\s+adam\s+\d+ steps\s+ends at \(\s*([-\d.]+),\s*([-\d.]+)\)", out)
        self.assertTrue(m, out)
        self.assertAlmostEqual(float(m.group(1)), 1.0, delta=0.01)
        self.assertAlmostEqual(float(m.group(2)), 1.0, delta=0.01)

    def test_committed_figures(self):
        for surface in ("rosenbrock", "beale", "saddle"):
            path = os.path.join(REPO, "docs", "figures", "paths-%s.png" % surface)
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), PNG, path)
            self.assertLess(os.path.getsize(path), 200 * 1024, path)

    def test_pbt(self):
        before = self.counts()
        out = self.run_example("examples/pbt.py", "--members", "8", "--rounds", "4",
                               "--interval", "15")
        m = re.search(r"best PBT schedule \(from step: lr\): (.*)", out)
        self.assertTrue(m, out)
        self.assertRegex(out, r"PBT \(best member\)\s+[\d.]+%\s+[\d.]+%")
        self.assertRegex(out, r"best fixed lr = [\d.e-]+\s+[\d.]+%\s+[\d.]+%")
        self.assertEqual(self.d.get("/v1/sessions?prefix=pbt-").body["sessions"], [])
        self.assertEqual(self.d.get("/v1/sessions?prefix=fixed-").body["sessions"], [])
        # One POST /v1/steps per step of the whole population: 2 runs x 60
        # steps of 8 members took 960 updates, and 120 of those requests
        # (plus the creates and forks, all POSTs too).
        after = self.counts()
        self.assertEqual(after[1] - before[1], 2 * 8 * 4 * 15)
        self.assertLess(after[0] - before[0], 2 * 4 * 15 + 2 * 8 + 4 * 2 * 3)

    def counts(self):
        """(POST requests answered 201 or 200, adam steps) from /metrics."""
        text = self.d.get("/metrics").body.decode()
        posts = sum(int(n) for n in re.findall(
            r'optd_http_requests_total\{method="POST",code="20[01]"\} (\d+)', text))
        steps = re.search(r'optd_steps_total\{optimizer="adam"\} (\d+)', text)
        return posts, int(steps.group(1)) if steps else 0

    @unittest.skipUnless(importlib.util.find_spec("optuna"), "python3-optuna missing (install-deps test)")
    def test_optuna_study(self):
        out = self.run_example("examples/optuna_study.py", "--trials", "6", "--epochs", "2",
                               "--study", "smoke")
        self.assertRegex(out, r"study smoke: 6 trials \(\d+ pruned by MedianPruner\)")
        m = re.search(r"Optuna's best trial: (\d+) .*optd's first: trial (\d+): (\S+)", out)
        self.assertTrue(m, out)
        self.assertEqual(m.group(1), m.group(2), out)
        ranked = re.findall(r"^smoke-trial-\d+\s+\S+\s+\S+\s+([\d.]+)", out, re.M)
        self.assertGreaterEqual(len(ranked), 2, out)
        self.assertEqual([float(x) for x in ranked], sorted(float(x) for x in ranked))
        self.assertEqual(self.d.get("/v1/sessions?label=study:smoke").body["sessions"], [])

    def test_recommender(self):
        out = self.run_example("examples/recommender.py", "--users", "600", "--items", "300",
                               "--ratings", "40000", "--epochs", "4", "--batch", "256",
                               "--shards", "3", "--lr", "0.03", "--prefix", "smoke-mf")
        zero = float(re.search(r"predicting 0 \(the ratings' mean\): ([\d.]+)", out).group(1))
        m = re.search(r"final held-out RMSE ([\d.]+) against the noise floor ([\d.]+): "
                      r"[\d.]+x, after (\d+) steps", out)
        self.assertTrue(m, out)
        final, floor, steps = float(m.group(1)), float(m.group(2)), int(m.group(3))
        self.assertGreater(zero, 3 * floor, out)
        self.assertLess(final, 1.5 * floor, out)
        self.assertGreaterEqual(final, 0.9 * floor, out)
        self.assertEqual(steps, 4 * (36000 // 256 + 1))
        # The tables are gone afterwards.
        self.assertEqual(self.d.get("/v1/sessions?prefix=smoke-mf").body["sessions"], [])
        self.assertRegex(out, r"tables: smoke-mf-users and smoke-mf-items, .* 3 shard\(s\) each")


if __name__ == "__main__":
    unittest.main()
