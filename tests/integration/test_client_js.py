"""test_client_js.py: runs the JavaScript client's own tests
(node --test api/clients/js/test/) against a daemon started here."""

import os
import shutil
import subprocess
import unittest

from harness import REPO, DaemonTestCase


@unittest.skipUnless(shutil.which("node"), "node is not installed (deploy/install-deps.sh test)")
class JavaScriptClient(DaemonTestCase):
    def test_node_test_suite(self):
        env = dict(os.environ, OPTD_URL="http://127.0.0.1:%d" % self.d.port)
        p = subprocess.run(["node", "--test", "api/clients/js/test/"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "node --test failed:\n" + out[-6000:])
        # node's TAP summary: "# pass N" / "# fail 0"
        self.assertIn("# fail 0", out, out[-3000:])
        passed = [l for l in out.splitlines() if l.startswith("# pass ")]
        self.assertTrue(passed and int(passed[-1].split()[2]) >= 8, out[-3000:])


if __name__ == "__main__":
    unittest.main()
