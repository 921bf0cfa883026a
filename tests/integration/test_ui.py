"""test_ui.py: the page /ui/ (API.md 1.1 "The page"), in a real browser.

Plain HTTP first (the redirect, Content-Types, the security headers on
every answer under /ui/, 404s for unknown files and traversal, 405 with
Allow, --ui off, a missing chart library), then Debian's headless Chromium
driven by Selenium against the real daemon: a deep link shows its sessions
and draws their curves, a label holding HTML stays text and runs nothing,
nothing is fetched from anywhere but the daemon, the console stays clean,
new steps appear while the page is open, the token flow with auth on.

One browser serves the whole module; waits are for conditions (the page
polls every 2 s), never timed assertions.
"""

import os
import re
import tempfile
import unittest

from harness import Daemon, NOAUTH
from browser import chromium, console_errors, network_requests, network_urls

TOKEN = "ui-test-token-3b9f"
XSS = '<img src=x onerror="window.__xss=1">'
WAIT = 30  # seconds a condition may take to come true (ASan builds are slow)

_driver = None
_plain = None


def setUpModule():
    global _driver, _plain
    _plain = Daemon()
    _plain.start()
    try:
        _driver = chromium()
        network_urls(_driver)  # drop the browser's start-up page
    except BaseException:
        _plain.stop()
        _plain.cleanup()
        raise


def tearDownModule():
    try:
        if _driver is not None:
            _driver.quit()
    finally:
        _plain.stop()
        _plain.cleanup()


def step(d, name, n, start_loss=1.0):
    """n JSON steps on name, each carrying a loss; returns the new step."""
    r = d.get("/v1/sessions/%s" % name)
    at = r.body["step"]
    size = r.body["size"]
    for i in range(n):
        k = at + i
        r = d.post("/v1/sessions/%s/step" % name,
                   {"gradient": [0.1 * (j + 1) for j in range(size)], "step": k,
                    "loss": start_loss / (1 + k)})
        assert r.status == 200, r
    return at + n


def wait(cond, what, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(_driver, timeout, poll_frequency=0.1).until(lambda drv: cond())
    except Exception as e:
        raise AssertionError("the page did not %s within %d s (console: %r)"
                             % (what, timeout, _driver.get_log("browser"))) from e


def goto(url):
    """Leaves the page before (so its polling stops), forgets the requests
    and console messages so far, then opens url."""
    _driver.get("about:blank")
    network_urls(_driver)
    _driver.get_log("browser")
    _driver.get(url)


def js(script, *args):
    return _driver.execute_script(script, *args)


CHART_POINTS = """
const c = window.Chart && Chart.getChart(document.getElementById('chart'));
if (!c) return null;
const out = {};
for (const d of c.data.datasets) out[d.label] = d.data.length;
return out;"""

# Counts the canvas's pixels that are painted and not white: a drawn curve
# leaves hundreds, an empty canvas none.
INK = """
const cv = document.getElementById('chart');
if (!cv.width || !cv.height) return 0;
const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
let n = 0;
for (let i = 0; i < px.length; i += 4)
  if (px[i + 3] > 0 && (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200)) n++;
return n;"""


def rows():
    return js("return [...document.querySelectorAll('#sessions tbody tr')].map(t => t.dataset.name)")


# ---- plain HTTP ---------------------------------------------------------------


class Http(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = _plain

    def assertUiHeaders(self, r, what):
        csp = r.headers.get("Content-Security-Policy") or ""
        self.assertIn("default-src 'self'", csp, what)
        self.assertIn("frame-ancestors 'none'", csp, what)
        self.assertNotIn("unsafe-inline", csp, what)
        self.assertNotIn("unsafe-eval", csp, what)
        self.assertEqual(r.headers.get("X-Content-Type-Options"), "nosniff", what)

    def test_root_and_ui_redirect_to_the_page(self):
        for path in ("/", "/ui"):
            r = self.d.get(path)
            self.assertEqual(r.status, 302, (path, r))
            self.assertEqual(r.headers.get("Location"), "/ui/", path)
            self.assertUiHeaders(r, path)

    def test_redirect_keeps_the_deep_link(self):
        r = self.d.get("/?session=a&session=b.c_d-e&labels=study%3Asweep%2C%20x%3A%3Cb%3E")
        self.assertEqual(r.status, 302, r)
        self.assertEqual(r.headers.get("Location"),
                         "/ui/?session=a&session=b.c_d-e&labels=study%3Asweep%2C%20x%3A%3Cb%3E")
        self.assertEqual(self.d.get("/ui?session=x").headers.get("Location"), "/ui/?session=x")
        # An absurdly long query is dropped, not echoed.
        r = self.d.get("/?" + "&".join("session=s%d" % i for i in range(300)))
        self.assertEqual(r.status, 302, r)
        self.assertEqual(r.headers.get("Location"), "/ui/")

    def test_files_have_their_content_types(self):
        want = {"/ui/": "text/html", "/ui/index.html": "text/html", "/ui/app.js": "text/javascript",
                "/ui/app.css": "text/css", "/ui/favicon.svg": "image/svg+xml",
                "/ui/chart.js": "text/javascript"}
        for path, ctype in want.items():
            r = self.d.get(path)
            self.assertEqual(r.status, 200, (path, r))
            self.assertEqual(r.headers.get("Content-Type").split(";")[0], ctype, path)
            self.assertTrue(r.raw, path)
            self.assertUiHeaders(r, path)
        self.assertIn(b"Chart", self.d.get("/ui/chart.js").raw,
                      "the daemon found no Chart.js: is libjs-chart.js installed?")

    def test_built_in_files_are_the_sources_byte_for_byte(self):
        from harness import REPO
        src = os.path.join(REPO, "daemon", "ui")
        names = sorted(n for n in os.listdir(src) if n.rsplit(".", 1)[-1] in ("html", "css", "js", "svg"))
        self.assertEqual(names, ["app.css", "app.js", "favicon.svg", "index.html"])
        tags = set()
        for n in names:
            with open(os.path.join(src, n), "rb") as f:
                want = f.read()
            r = self.d.get("/ui/" + n)
            self.assertEqual(r.raw, want, "/ui/%s differs from daemon/ui/%s (stale build?)" % (n, n))
            tags.add(r.headers.get("ETag"))
        self.assertEqual(len(tags), len(names), "ETags must differ between files")
        with open("/usr/share/javascript/chart.js/chart.min.js", "rb") as f:
            self.assertEqual(self.d.get("/ui/chart.js").raw, f.read())

    def test_every_answer_under_ui_carries_the_headers(self):
        for method, path, status in (("GET", "/ui/nope.js", 404), ("GET", "/ui/sub/app.js", 404),
                                     ("POST", "/ui/", 405), ("DELETE", "/ui/app.js", 405),
                                     ("PUT", "/", 405), ("HEAD", "/ui/", 200)):
            r = self.d.request(method, path, body="x" if method in ("POST", "PUT") else None)
            self.assertEqual(r.status, status, (method, path, r))
            self.assertUiHeaders(r, "%s %s" % (method, path))

    def test_unknown_file_is_404_json(self):
        r = self.d.get("/ui/nope.html")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.error_code(), "not_found", r)

    def test_only_get_and_head(self):
        for path in ("/", "/ui/", "/ui/app.js"):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = self.d.request(method, path, body="{}" if method != "DELETE" else None,
                                   headers={"Content-Type": "application/json"})
                self.assertEqual(r.status, 405, (method, path, r))
                self.assertEqual(r.error_code(), "method_not_allowed", r)
                self.assertEqual(r.headers.get("Allow"), "GET, HEAD", (method, path))
        r = self.d.request("HEAD", "/ui/app.js")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.raw, b"")
        self.assertEqual(r.headers.get("Content-Type").split(";")[0], "text/javascript")

    def test_no_path_traversal(self):
        self.d.create("traversal-probe")
        # http.client sends these bytes as they are: nothing normalizes them.
        for path in ("/ui/../v1/sessions", "/ui/%2e%2e/v1/sessions", "/ui/%2E%2E/healthz",
                     "/ui/..%2fv1%2fsessions", "/ui/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                     "/ui/../../../../etc/passwd", "/ui//etc/passwd", "/ui/./index.html",
                     "/ui/.%2findex.html"):
            r = self.d.get(path)
            self.assertIn(r.status, (400, 404), (path, r))
            self.assertNotIn(b"traversal-probe", r.raw, path)
            self.assertNotIn(b"root:", r.raw, path)
            self.assertUiHeaders(r, path)

    def test_etag_gives_304(self):
        r = self.d.get("/ui/app.js")
        tag = r.headers.get("ETag")
        self.assertTrue(tag)
        self.assertEqual(r.headers.get("Cache-Control"), "no-cache")
        r2 = self.d.get("/ui/app.js", headers={"If-None-Match": tag})
        self.assertEqual(r2.status, 304)
        self.assertEqual(r2.raw, b"")
        self.assertUiHeaders(r2, "304")
        self.assertEqual(self.d.get("/ui/app.js", headers={"If-None-Match": '"other"'}).status, 200)

    def test_page_has_no_inline_script_or_style(self):
        html = self.d.get("/ui/").raw.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            self.assertIn("src=", tag, "an inline script: " + tag)
        self.assertIsNone(re.search(r"<script\b[^>]*>\s*[^<\s]", html), "a script element with a body")
        self.assertIsNone(re.search(r"\son[a-z]+\s*=", html), "an inline event handler")
        self.assertIsNone(re.search(r"\sstyle\s*=", html), "an inline style attribute")
        self.assertNotIn("<style", html)
        self.assertIsNone(re.search(r"(src|href)=\"(https?:)?//", html), "a resource from elsewhere")
        app = self.d.get("/ui/app.js").raw.decode()
        for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            self.assertNotIn(bad, app)


class UiOff(unittest.TestCase):
    def test_ui_off_serves_no_page(self):
        d = Daemon(flags=["--ui", "off"])
        d.start()
        try:
            for path in ("/ui/", "/ui/app.js", "/ui/chart.js", "/ui", "/"):
                r = d.get(path)
                self.assertEqual(r.status, 404, (path, r))
                self.assertEqual(r.error_code(), "not_found")
            self.assertEqual(d.get("/healthz").status, 200)
            self.assertNotIn("chart library", d.stderr_text())
        finally:
            d.stop()
            d.cleanup()

    def test_bad_ui_flag_exits_2(self):
        import subprocess
        from harness import optd_bin
        p = subprocess.run([optd_bin(), "--ui", "maybe"], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--ui", p.stderr)


class AuthHttp(unittest.TestCase):
    def test_static_files_need_no_token_and_hold_no_data(self):
        d = Daemon(token=TOKEN)
        d.start()
        try:
            d.create("secret-session-name", labels={"owner": "secret-label-value"})
            for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui/chart.js", "/ui/favicon.svg"):
                r = d.get(path, auth=NOAUTH)
                self.assertEqual(r.status, 200, (path, r))
                self.assertNotIn(b"secret-session-name", r.raw, path)
                self.assertNotIn(b"secret-label-value", r.raw, path)
                self.assertNotIn(TOKEN.encode(), r.raw, path)
            self.assertEqual(d.get("/v1/sessions", auth=NOAUTH).status, 401)
        finally:
            d.stop()
            d.cleanup()


# ---- in the browser -------------------------------------------------------------


class Page(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = d = _plain
        cls.base = "http://127.0.0.1:%d" % d.port
        d.create("cmp-a", labels={"study": "cmp"})
        d.create("cmp-b", optimizer="sgd", hyperparameters={"lr": 0.01}, labels={"study": "cmp"},
                 schedule={"type": "cosine", "t_max": 100, "eta_min": 0.0})
        d.create("cmp-c", labels={"study": "cmp", "note": XSS})
        # Best losses rank c < a < b, last losses c < b < a, names a < b < c.
        for name, n, loss in (("cmp-a", 40, 1.0), ("cmp-b", 25, 1.0), ("cmp-c", 10, 0.01)):
            step(d, name, n, loss)
        r = d.post("/v1/sessions/cmp-a/step", {"gradient": [0.0, 0.0, 0.0], "step": 40, "loss": 5.0})
        assert r.status == 200, r

    def open(self, query=""):
        goto(self.base + "/ui/" + query)

    def wait_points(self, want):
        """Waits until the chart holds want = {label: points}."""
        return wait(lambda: (js(CHART_POINTS) or {}) == want, "draw %r (has %r)" % (want, js(CHART_POINTS)))

    def test_deep_link_shows_the_sessions_and_draws_them(self):
        self.open("?session=cmp-a&session=cmp-b")
        self.wait_points({"cmp-a · loss": 41, "cmp-b · loss": 25})
        wait(lambda: "cmp-a" in rows() and "cmp-b" in rows(), "list the sessions")
        chips = js("return [...document.querySelectorAll('#picked .chip-name')].map(e => e.textContent)")
        self.assertEqual(chips, ["cmp-a", "cmp-b"])
        ticked = js("return [...document.querySelectorAll('#sessions tbody tr.picked')].map(t => t.dataset.name)")
        self.assertEqual(sorted(ticked), ["cmp-a", "cmp-b"])
        self.assertGreater(js(INK), 200, "the chart's canvas is blank")
        # lr and the gradient norm join the same chart, on the page's word.
        _driver.find_element("id", "m-lr").click()
        _driver.find_element("id", "m-grad_norm").click()
        self.wait_points({"cmp-a · loss": 41, "cmp-b · loss": 25, "cmp-a · lr": 41, "cmp-b · lr": 25,
                          "cmp-a · grad norm": 41, "cmp-b · grad norm": 25})
        axis = js("return Chart.getChart(document.getElementById('chart')).options.scales.y.type")
        self.assertEqual(axis, "logarithmic")
        _driver.find_element("id", "log-scale").click()
        wait(lambda: js("return Chart.getChart(document.getElementById('chart')).options.scales.y.type")
             == "linear", "switch to a linear scale")
        _driver.find_element("id", "m-lr").click()
        _driver.find_element("id", "m-grad_norm").click()
        _driver.find_element("id", "log-scale").click()
        self.assertEqual(console_errors(_driver), [])

    def test_deep_link_with_a_bad_name_still_draws_the_others(self):
        """A deep link naming a session deleted since (404) and a typo no
        session can be named (400): both chips are struck through and the
        good one is drawn.  The 400 used to reject the curves' Promise.all,
        so nothing was drawn at all."""
        self.open("?session=cmp-a&session=a%20b&session=no-such")
        self.wait_points({"cmp-a · loss": 41, "a b · loss": 0, "no-such · loss": 0})
        wait(lambda: js("return [...document.querySelectorAll('#picked .chip.gone .chip-name')]"
                        ".map(e => e.textContent)") == ["a b", "no-such"], "strike the bad names through")
        self.assertGreater(js(INK), 200, "the chart's canvas is blank")

    def test_label_with_html_is_text_and_runs_nothing(self):
        self.open("?session=cmp-c")
        wait(lambda: "cmp-c" in rows(), "list cmp-c")
        labels = js("return [...document.querySelectorAll('#sessions tr[data-name=\"cmp-c\"] .label')]"
                    ".map(e => e.textContent)")
        self.assertIn("note: " + XSS, labels)
        # The descriptor shows it as text too.
        wait(lambda: XSS in (js("return document.getElementById('detail').textContent") or ""),
             "show cmp-c's descriptor")
        self.assertEqual(js("return document.querySelectorAll('img[src=\"x\"]').length"), 0)
        self.assertIsNone(js("return window.__xss === undefined ? null : window.__xss"))
        self.assertEqual(console_errors(_driver), [])

    def test_nothing_is_fetched_from_elsewhere(self):
        self.open("?session=cmp-a&session=cmp-c")
        self.wait_points({"cmp-a · loss": 41, "cmp-c · loss": 10})
        urls = network_urls(_driver)
        self.assertTrue(any(u.endswith("/ui/chart.js") for u in urls), urls)
        self.assertTrue(any("/v1/sessions/cmp-a/history" in u for u in urls), urls)
        for u in urls:
            self.assertTrue(u.startswith(self.base + "/"), "the page fetched %s" % u)
        entries = js("return performance.getEntriesByType('resource').map(e => e.name)")
        self.assertTrue(entries)
        for u in entries:
            self.assertTrue(u.startswith(self.base + "/"), "the page fetched %s" % u)
        self.assertEqual(console_errors(_driver), [])

    def test_new_steps_appear(self):
        name = "follow-me"
        self.d.create(name)
        step(self.d, name, 5)
        self.open("?session=" + name)
        self.wait_points({name + " · loss": 5})
        cell = "return document.querySelector('#sessions tr[data-name=\"%s\"] td.step').textContent" % name
        wait(lambda: js(cell) == "5", "show step 5")
        step(self.d, name, 3)
        self.wait_points({name + " · loss": 8})
        wait(lambda: js(cell) == "8", "show step 8 in the list")
        wait(lambda: "8" in js("return [...document.querySelectorAll('#detail th')]"
                               ".filter(t => t.textContent === 'step').map(t => t.nextSibling.textContent)"),
             "show step 8 in the descriptor")
        self.assertEqual(console_errors(_driver), [])

    def test_descriptor_in_full(self):
        self.open("?session=cmp-b")
        wait(lambda: js("return document.getElementById('detail-title').textContent") == "cmp-b",
             "show cmp-b's descriptor")
        keys = js("return [...document.querySelectorAll('#detail th')].map(t => t.textContent)")
        for k in ("name", "optimizer", "hyperparameters", "lr", "momentum", "schedule", "t_max",
                  "labels", "study", "step", "created_at"):
            self.assertIn(k, keys)
        d = self.d.get("/v1/sessions/cmp-b").body
        for k in d:
            self.assertIn(k, keys, "the descriptor's %r is not shown" % k)

    def test_filter_by_prefix_and_label_and_page(self):
        for i in range(30):
            self.d.create("pg-%02d" % i, labels={"study": "paging" if i % 3 else "other"})
        self.open("?prefix=pg-")
        from selenium.webdriver.support.ui import Select
        Select(_driver.find_element("id", "f-limit")).select_by_visible_text("25")
        wait(lambda: rows() == ["pg-%02d" % i for i in range(25)], "show the first page")
        self.assertTrue(js("return document.getElementById('prev').disabled"))
        _driver.find_element("id", "next").click()
        wait(lambda: rows() == ["pg-%02d" % i for i in range(25, 30)], "show the second page")
        self.assertTrue(js("return document.getElementById('next').disabled"))
        _driver.find_element("id", "prev").click()
        wait(lambda: len(rows()) == 25, "go back to the first page")
        r = self.d.get("/v1/sessions?sort=best_loss&prefix=pg-&limit=25", validate=False)
        if r.status == 200 and "next_offset" in r.body:
            # Sorted by loss the pages are offsets: none of these has a loss,
            # so the order is by name, and the second page is the last five.
            Select(_driver.find_element("id", "f-sort")).select_by_value("best_loss")
            wait(lambda: rows() == ["pg-%02d" % i for i in range(25)], "show the first page by loss")
            _driver.find_element("id", "next").click()
            wait(lambda: rows() == ["pg-%02d" % i for i in range(25, 30)], "show the second page by loss")
            self.assertTrue(js("return document.getElementById('next').disabled"))
            Select(_driver.find_element("id", "f-sort")).select_by_value("name")
            wait(lambda: len(rows()) == 25, "sort by name again")
        box = _driver.find_element("id", "f-label")
        box.send_keys("study:other")
        _driver.find_element("css selector", "#filters button[type=submit]").click()
        wait(lambda: rows() == ["pg-%02d" % i for i in range(0, 30, 3)], "filter by label")
        self.assertEqual(console_errors(_driver), [])

    def test_sort_by_best_loss_or_by_name(self):
        r = self.d.get("/v1/sessions?sort=best_loss&prefix=cmp-", validate=False)
        self.open("?prefix=cmp-")
        wait(lambda: rows() == ["cmp-a", "cmp-b", "cmp-c"], "list by name")
        sort = _driver.find_element("id", "f-sort")
        # A daemon with the loss summary has "loss" in every descriptor; one
        # without may ignore the unknown sort (200, by name) or refuse it.
        if r.status == 200 and "loss" in r.body["sessions"][0]:
            from selenium.webdriver.support.ui import Select
            Select(sort).select_by_value("best_loss")
            want = [s["name"] for s in r.body["sessions"]]
            self.assertEqual(want, ["cmp-c", "cmp-a", "cmp-b"])
            wait(lambda: rows() == want, "sort by best loss (%r)" % want)
            self.assertIn("sort=best_loss", _driver.current_url)
            last = self.d.get("/v1/sessions?sort=last_loss&prefix=cmp-").body["sessions"]
            Select(sort).select_by_value("last_loss")
            want = [s["name"] for s in last]
            self.assertEqual(want, ["cmp-c", "cmp-b", "cmp-a"])
            wait(lambda: rows() == want, "sort by last loss (%r)" % want)
        else:
            # A daemon without the loss summary: the page offers name only.
            self.assertTrue(js("return document.querySelector('#f-sort option[value=best_loss]').disabled"))
            self.assertTrue(js("return document.querySelector('#f-sort option[value=last_loss]').disabled"))
            self.assertEqual(rows(), ["cmp-a", "cmp-b", "cmp-c"])


class Screenshot(unittest.TestCase):
    def test_screenshot_example_and_committed_figure(self):
        import subprocess
        from harness import REPO
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "ui.png")
            env = dict(os.environ, OPTD_URL="http://127.0.0.1:%d" % _plain.port)
            p = subprocess.run(["/usr/bin/python3", "examples/ui_screenshot.py", "--out", out,
                                "--steps", "5", "--size", "800x600"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace")[-3000:])
            with open(out, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        committed = os.path.join(REPO, "docs", "figures", "ui.png")
        with open(committed, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertLess(os.path.getsize(committed), 300 * 1024)


class OlderDaemon(unittest.TestCase):
    """A daemon that refuses sort=best_loss with 400 (one from before the
    loss summary, as a proxy in front of the real one plays it): the page
    falls back to sorting by name and says so."""

    def test_sort_refused_falls_back_to_name(self):
        import http.client
        import http.server
        import threading

        port = _plain.port

        class Proxy(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/v1/") and "sort=" in self.path and "sort=name" not in self.path:
                    body = b'{"error":{"code":"invalid_argument","message":"unknown query sort"}}'
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", self.path, headers={k: v for k, v in self.headers.items()
                                                     if k.lower() not in ("host", "connection")})
                r = c.getresponse()
                body = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                c.close()

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            _plain.create("old-a")
            _plain.create("old-b")
            step(_plain, "old-b", 2)
            goto("http://127.0.0.1:%d/ui/?prefix=old-&sort=best_loss" % srv.server_address[1])
            wait(lambda: rows() == ["old-a", "old-b"], "list by name")
            # Said on the sort option itself (the status line moves on).
            self.assertEqual(js("return document.querySelector('#f-sort option[value=best_loss]').title"),
                             "this daemon sorts by name only")
            self.assertTrue(js("return document.querySelector('#f-sort option[value=best_loss]').disabled"))
            self.assertEqual(js("return document.getElementById('f-sort').value"), "name")
            self.assertEqual(console_errors(_driver, allow=("400",)), [])
        finally:
            _driver.get("about:blank")
            srv.shutdown()
            srv.server_close()


class MissingChartLibrary(unittest.TestCase):
    def test_page_works_without_charts(self):
        empty = tempfile.mkdtemp(prefix="optd-noassets-")
        d = Daemon(flags=["--ui-assets", empty])
        d.start()
        try:
            self.assertIn("no Chart.js", d.stderr_text())
            r = d.get("/ui/chart.js")
            self.assertEqual(r.status, 200)
            self.assertNotIn(b"Chart(", r.raw)
            d.create("lonely")
            step(d, "lonely", 3)
            goto("http://127.0.0.1:%d/ui/?session=lonely" % d.port)
            wait(lambda: rows() == ["lonely"], "list the session")
            wait(lambda: js("return !document.getElementById('chart-missing').hidden"), "say there is no chart")
            wait(lambda: js("return document.getElementById('detail-title').textContent") == "lonely",
                 "show the descriptor")
            self.assertEqual(console_errors(_driver), [])
        finally:
            _driver.get("about:blank")
            d.stop()
            d.cleanup()
            os.rmdir(empty)


class Token(unittest.TestCase):
    def test_token_flow(self):
        d = Daemon(token=TOKEN)
        d.start()
        try:
            d.create("guarded", labels={"study": "auth"})
            step(d, "guarded", 4)
            base = "http://127.0.0.1:%d" % d.port
            goto(base + "/ui/?session=guarded")
            wait(lambda: js("return !document.getElementById('login').hidden"), "ask for a token")
            self.assertTrue(js("return document.getElementById('app').hidden"))
            field = _driver.find_element("id", "token")
            self.assertEqual(field.get_attribute("type"), "password")
            field.send_keys("wrong-token")
            _driver.find_element("css selector", "#token-form button").click()
            wait(lambda: "not accepted" in js("return document.getElementById('token-error').textContent"),
                 "say the token is wrong")
            self.assertTrue(js("return document.getElementById('app').hidden"))
            field = _driver.find_element("id", "token")
            field.clear()
            field.send_keys(TOKEN)
            _driver.find_element("css selector", "#token-form button").click()
            wait(lambda: rows() == ["guarded"], "show the sessions")
            wait(lambda: (js(CHART_POINTS) or {}) == {"guarded · loss": 4}, "draw the curve")
            self.assertEqual(_driver.get_cookies(), [])
            self.assertNotIn(TOKEN, _driver.current_url)
            self.assertEqual(js("return sessionStorage.getItem('optd-token')"), TOKEN)
            sent = network_requests(_driver)
            self.assertTrue(any("/v1/sessions/guarded/history" in u for u, _ in sent), sent)
            for u, headers in sent:
                self.assertNotIn(TOKEN, u)
                self.assertTrue(u.startswith(base + "/"), u)
                if u.startswith(base + "/v1/") and "wrong" not in headers.get("Authorization", ""):
                    if headers.get("Authorization"):
                        self.assertEqual(headers["Authorization"], "Bearer " + TOKEN)
                self.assertNotIn("Cookie", headers)
            self.assertTrue(any(h.get("Authorization") == "Bearer " + TOKEN for _, h in sent))
            # The refused tries are the browser's only complaints.
            self.assertEqual(console_errors(_driver, allow=("401",)), [])
            # A reload keeps the tab's token; forgetting it asks again.
            _driver.refresh()
            wait(lambda: rows() == ["guarded"], "show the sessions after a reload")
            _driver.find_element("id", "forget-token").click()
            wait(lambda: js("return !document.getElementById('login').hidden"), "ask again")
            self.assertIsNone(js("return sessionStorage.getItem('optd-token')"))
        finally:
            _driver.execute_script("sessionStorage.clear()")
            _driver.get("about:blank")
            d.stop()
            d.cleanup()


if __name__ == "__main__":
    unittest.main()
