"""test_docs.py: the documentation stays true to the repository.

docs/API.md and docs/OPTIMIZERS.md are copies of the contract kept beside the
code (../shared/ is not part of a clone); when ../shared/ is present, as it
is in CI, the copies must be identical.  Every relative link in README.md
must name a file that exists.
"""
import os
import re
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.path.join(ROOT, "..", "shared")


class Docs(unittest.TestCase):
    def test_contract_copies_match_shared(self):
        checked = 0
        for name in ("API.md", "OPTIMIZERS.md"):
            ours = os.path.join(ROOT, "docs", name)
            self.assertTrue(os.path.isfile(ours), "docs/%s is missing" % name)
            theirs = os.path.join(SHARED, name)
            if not os.path.isfile(theirs):
                continue
            with open(ours, "rb") as a, open(theirs, "rb") as b:
                self.assertEqual(a.read(), b.read(),
                                 "docs/%s differs from ../shared/%s: copy it again" % (name, name))
            checked += 1
        if checked == 0:
            self.skipTest("../shared/ is not beside this checkout")

    def test_readme_links_exist(self):
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            text = f.read()
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        self.assertTrue(links, "README.md has no links at all")
        for link in links:
            if re.match(r"^[a-z]+:", link):
                continue
            path = os.path.normpath(os.path.join(ROOT, link))
            self.assertTrue(path.startswith(ROOT + os.sep),
                            "README.md links outside the repository: %s" % link)
            self.assertTrue(os.path.exists(path), "README.md links to a missing file: %s" % link)


if __name__ == "__main__":
    unittest.main()
