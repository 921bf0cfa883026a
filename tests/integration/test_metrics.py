"""GET /metrics: Prometheus text with the required families, their types
and labels, and counters that move with the traffic."""

import re
import time
import unittest

from harness import DaemonTestCase, NOAUTH

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$')


def parse(text):
    types, samples = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ.strip()
            continue
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, "not Prometheus text: %r" % line
        labels = {}
        if m.group(2):
            for kv in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)):
                labels[kv[0]] = kv[1]
        samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def value(samples, name, **labels):
    total = None
    for n, l, v in samples:
        if n == name and all(l.get(k) == w for k, w in labels.items()):
            total = (total or 0) + v
    return total


class Metrics(DaemonTestCase):
    def scrape(self):
        r = self.d.get("/metrics", auth=NOAUTH)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"])
        return parse(r.raw.decode())

    def test_families_and_types(self):
        self.d.create("m-a", "adam", size=2)
        self.d.post("/v1/sessions/m-a/step", {"gradient": [1, 1]})
        types, samples = self.scrape()
        want = {"optd_sessions": "gauge", "optd_parameters": "gauge", "optd_steps_total": "counter",
                "optd_http_requests_total": "counter", "optd_http_request_duration_seconds": "histogram"}
        for name, typ in want.items():
            self.assertEqual(types.get(name), typ, name)
        steps = [l for n, l, _ in samples if n == "optd_steps_total"]
        self.assertTrue(steps and all("optimizer" in l for l in steps), steps)
        reqs = [l for n, l, _ in samples if n == "optd_http_requests_total"]
        self.assertTrue(reqs and all("method" in l and "code" in l for l in reqs), reqs)
        buckets = [(l, v) for n, l, v in samples if n == "optd_http_request_duration_seconds_bucket"]
        self.assertTrue(buckets and all("le" in l for l, _ in buckets))
        self.assertTrue(any(l["le"] == "+Inf" for l, _ in buckets))
        self.assertIsNotNone(value(samples, "optd_http_request_duration_seconds_sum"))
        count = value(samples, "optd_http_request_duration_seconds_count")
        inf = sum(v for l, v in buckets if l["le"] == "+Inf")
        self.assertEqual(count, inf)
        # cumulative buckets
        by_le = {}
        for l, v in buckets:
            key = tuple(sorted((k, x) for k, x in l.items() if k != "le"))
            by_le.setdefault(key, []).append((float(l["le"]), v))
        for series in by_le.values():
            vals = [v for _, v in sorted(series)]
            self.assertEqual(vals, sorted(vals))

    def test_counters_move(self):
        _, s0 = self.scrape()
        sessions0 = value(s0, "optd_sessions")
        params0 = value(s0, "optd_parameters")
        steps0 = value(s0, "optd_steps_total", optimizer="lion") or 0
        created0 = value(s0, "optd_http_requests_total", method="POST", code="201") or 0
        notfound0 = value(s0, "optd_http_requests_total", method="GET", code="404") or 0
        count0 = value(s0, "optd_http_request_duration_seconds_count")
        self.d.create("m-b", "lion", size=7)
        for _ in range(3):
            self.d.post("/v1/sessions/m-b/step", {"gradient": [1] * 7})
        self.d.get("/v1/sessions/m-none")
        # A request is counted when it completes, after its answer went
        # out: the scrape may come first, so give the count a moment.
        for _ in range(100):
            _, s1 = self.scrape()
            if value(s1, "optd_http_requests_total", method="GET", code="404") == notfound0 + 1:
                break
            time.sleep(0.02)
        self.assertEqual(value(s1, "optd_sessions"), sessions0 + 1)
        self.assertEqual(value(s1, "optd_parameters"), params0 + 7)
        self.assertEqual(value(s1, "optd_steps_total", optimizer="lion"), steps0 + 3)
        self.assertEqual(value(s1, "optd_http_requests_total", method="POST", code="201"), created0 + 1)
        self.assertEqual(value(s1, "optd_http_requests_total", method="GET", code="404"), notfound0 + 1)
        self.assertGreaterEqual(value(s1, "optd_http_request_duration_seconds_count"), count0 + 5)
        self.d.delete("/v1/sessions/m-b")
        _, s2 = self.scrape()
        self.assertEqual(value(s2, "optd_sessions"), sessions0)
        self.assertEqual(value(s2, "optd_parameters"), params0)
        # a refused step is not counted
        self.d.create("m-c", "lion", size=2)
        _, s3 = self.scrape()
        self.d.post("/v1/sessions/m-c/step", {"gradient": [1]})
        _, s4 = self.scrape()
        self.assertEqual(value(s4, "optd_steps_total", optimizer="lion"),
                         value(s3, "optd_steps_total", optimizer="lion"))

    def test_refused_steps_counted(self):
        # "Step requests refused or failed": a step refused for its JSON
        # counts as one refused for its values (it did not, before the
        # document reader: its handler had answered already).
        self.d.create("m-e", "sgd", size=2)
        self.d.create("m-t", "sgd", size=4, row_size=2)
        bodies = [("m-e", '{"gradient": [1, 2'), ("m-e", '{"gradient": [1, 2], "x": 1}'),
                  ("m-e", '{"gradient": [1, 2], "gradient": [1, 2]}'), ("m-e", '{"gradient": [1]}'),
                  ("m-t", '{"rows": [0], "gradient": [1, 2], "x": 1}'), ("m-t", '{"rows": [0], "gradient": [1')]
        for name, body in bodies:
            _, s0 = self.scrape()
            r = self.d.post("/v1/sessions/%s/step" % name, body, headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (body, r))
            _, s1 = self.scrape()
            self.assertEqual(value(s1, "optd_step_errors_total"), value(s0, "optd_step_errors_total") + 1, body)


if __name__ == "__main__":
    unittest.main()
