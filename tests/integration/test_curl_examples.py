"""api/examples/curl-adam.sh (the README's curl examples) runs against the
real daemon: the Adam loop converges and every endpoint call succeeds."""

import os
import re
import subprocess
import unittest

from harness import REPO, DaemonTestCase

SCRIPT = os.path.join(REPO, "api", "examples", "curl-adam.sh")


class CurlExamples(DaemonTestCase):
    TOKEN = "curl-token"

    def run_script(self, **env):
        e = dict(os.environ, OPTD_URL="http://127.0.0.1:%d" % self.d.port, **env)
        p = subprocess.run(["sh", SCRIPT], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_script_runs_and_converges(self):
        code, out, err = self.run_script(OPTD_TOKEN=self.TOKEN, OPTD_SESSION="curl-t1")
        self.assertEqual(code, 0, out + err)
        m = re.search(r'after 100 steps:\n(\{.*\})', out)
        self.assertIsNotNone(m, out)
        import json
        p = json.loads(m.group(1))
        self.assertEqual(p["step"], 100)
        self.assertTrue(all(abs(x) < 0.05 for x in p["params"]), p)
        self.assertIn('{"status":"ok"}', out.replace(" ", ""))
        self.assertRegex(out, r"(?m)^optd_sessions \d")
        self.assertRegex(out, r"(?mi)^optd-step: 101")
        for name in ("curl-t1-copy", "curl-t1-fork", "curl-t1"):
            self.assertIn("DELETE %s: 204" % name, out)
        self.assertTrue(out.rstrip().endswith("done"))
        self.assertEqual(self.d.get("/v1/sessions?prefix=curl-t1").body["sessions"], [])
        hist_steps = re.findall(r'"step": ?(\d+)', out)
        self.assertIn("98", hist_steps)

    def test_script_fails_without_token(self):
        code, out, err = self.run_script(OPTD_SESSION="curl-t2")
        self.assertNotEqual(code, 0)
        self.assertIn("401", err)

    def test_script_calls_every_endpoint(self):
        text = open(SCRIPT).read()
        for needle in ("/healthz", "/metrics", "/v1/optimizers", '-X POST "$URL/v1/sessions"',
                       "/v1/sessions?", '"$URL/v1/sessions/$S"', "-X PATCH", "-X DELETE",
                       "-X PUT \"$URL/v1/sessions/$S-fork\"", "/params", "/step", "/history",
                       "/state\"", "-X PUT \"$URL/v1/sessions/$S-copy/state\"",
                       "application/octet-stream", "/rows\"", "?rows="):
            self.assertIn(needle, text)


if __name__ == "__main__":
    unittest.main()


class ReadmeBlock(DaemonTestCase):
    """The README's curl block (a ```sh block that sets URL=http://127.0.0.1:8080)
    runs as written against the daemon."""

    def test_readme_curl_block(self):
        path = os.path.join(REPO, "README.md")
        text = open(path).read() if os.path.exists(path) else ""
        blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S)
                  if b.startswith("URL=http://127.0.0.1:8080") and "/v1/sessions" in b]
        if not blocks:
            self.skipTest("README.md has no curl block starting URL=http://127.0.0.1:8080 yet")
        for b in blocks:
            script = b.replace("URL=http://127.0.0.1:8080", "URL=http://127.0.0.1:%d" % self.d.port, 1)
            p = subprocess.run(["sh", "-e", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=120)
            self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode()[-2000:])
            self.assertNotIn(b'"error"', p.stdout, p.stdout.decode()[-2000:])
