"""POST /v1/steps read, prepared and printed over --threads.

A big batch is cut into chunks the pool's threads read and print; the
answer and the sessions must be the same whatever the number of threads,
and the same as Jansson's reading of the same document (an escaped
"steps" key sends it there), odd items at chunk edges included."""
import json
import unittest

from harness import Daemon

N = 700  # above the batch's parallel threshold (256 items)


def body_items(prefix):
    items = []
    for k in range(N):
        it = {"session": "%s%d" % (prefix, k % 7), "gradient": [0.25 * k, -1.0, 2.0]}
        if k % 97 == 5:
            it["gradient"] = [1.0, 2.0]          # wrong size: read again by Jansson
        elif k % 89 == 3:
            it["gradient"] = [1e39, 0.0, 0.0]    # beyond float32
        elif k % 83 == 1:
            it["session"] = prefix + "missing"
        elif k % 79 == 2:
            it["step"] = 3                        # stale, mostly
        elif k % 71 == 4:
            it["loss"] = 0.5 * k
        items.append(it)
    return items


class Threads(unittest.TestCase):
    def run_on(self, threads, text):
        d = Daemon(flags=["--threads", str(threads)])
        self.addCleanup(d.cleanup)
        d.start()
        for k in range(7):
            dtype = "float32" if k % 2 else "float64"
            r = d.post("/v1/sessions", {"name": "s%d" % k, "optimizer": "adam", "dtype": dtype,
                                        "params": [1.0, 2.0, 3.0]})
            self.assertEqual(r.status, 201, r)
        answers = []
        for t in text:
            answers.append(d.post("/v1/steps", t.encode(), headers={"Content-Type": "application/json"}))
        states = [d.get("/v1/sessions/s%d/state" % k).body for k in range(7)]
        for s in states:
            s.pop("created_at", None)
            s.pop("updated_at", None)
        d.stop()
        return [(a.status, a.body) for a in answers], states

    def test_same_answers_and_sessions_with_1_and_2_threads_and_jansson(self):
        plain = json.dumps({"steps": body_items("s")})
        escaped = plain.replace('"steps"', '"st\\u0065ps"', 1)
        # an unknown key holding a '}' in the middle: the first pass cuts the
        # item there, the second finds it does not end there: all to Jansson
        odd = plain.replace('{"session": "s3"', '{"x}": 1, "session": "s3"', 1)
        one = self.run_on(1, [plain, odd])
        two = self.run_on(2, [plain, odd])
        jan = self.run_on(2, [escaped, odd.replace('"steps"', '"st\\u0065ps"', 1)])
        self.assertEqual(one, two)
        self.assertEqual(one, jan)
        (status, body), (status2, body2) = one[0]
        self.assertEqual((status, status2), (200, 200))
        res = body["results"]
        self.assertEqual(len(res), N)
        self.assertTrue(any("error" in r for r in res) and any("params" in r for r in res))
        self.assertIn("unknown field 'x}'", json.dumps(body2))


if __name__ == "__main__":
    unittest.main()
