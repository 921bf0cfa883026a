"""api/openapi.yaml: (1) a valid OpenAPI 3.1 document (the official OAS 3.1
JSON Schema in schemas/, jsonschema Draft202012Validator); (2) it has every
path and method of API.md with their documented statuses; (3) live answers
of the daemon to every endpoint and error validate against its schemas.
(Every other test also validates each answer it gets: see openapi_check.py.)"""

import copy
import json
import os
import re
import struct
import unittest

import jsonschema
import yaml

from harness import REPO, DaemonTestCase
import openapi_check

META = os.path.join(os.path.dirname(__file__), "schemas", "openapi-3.1-schema.json")
API_MD = [os.path.join(REPO, "..", "shared", "API.md"), "/work/shared/API.md"]

# API.md's endpoints, with the statuses API.md names for each.
ENDPOINTS = {
    ("get", "/healthz"): {"200"},
    ("get", "/metrics"): {"200"},
    ("get", "/v1/optimizers"): {"200", "401"},
    ("post", "/v1/sessions"): {"201", "400", "401", "404", "409", "413", "415", "429", "507", "503"},
    ("put", "/v1/sessions/{name}"): {"201", "400", "401", "409", "413", "415", "429", "507", "503"},
    ("get", "/v1/sessions"): {"200", "400", "401"},
    ("get", "/v1/sessions/{name}"): {"200", "401", "404"},
    ("patch", "/v1/sessions/{name}"): {"200", "400", "401", "404", "413", "415", "507"},
    ("delete", "/v1/sessions/{name}"): {"204", "401", "404"},
    ("get", "/v1/sessions/{name}/params"): {"200", "401", "404"},
    ("post", "/v1/sessions/{name}/step"): {"200", "400", "401", "404", "409", "413", "415", "507"},
    ("get", "/v1/sessions/{name}/history"): {"200", "400", "401", "404"},
    ("get", "/v1/sessions/{name}/state"): {"200", "401", "404"},
    ("put", "/v1/sessions/{name}/params"): {"200", "400", "401", "404", "409", "413", "415", "507"},
    ("put", "/v1/sessions/{name}/state"): {"200", "201", "400", "401", "413", "415", "429", "507"},
    ("post", "/v1/steps"): {"200", "400", "401", "413", "415"},
    # API.md 1.1 "Tables"
    ("post", "/v1/sessions/{name}/rows"): {"200", "400", "401", "404"},
    # API.md 1.1 "The page"
    ("get", "/"): {"302", "404"},
    ("get", "/ui/"): {"200", "304", "404"},
    ("get", "/ui/{file}"): {"200", "304", "404"},
}


def load():
    with open(openapi_check.SPEC_PATH) as f:
        return yaml.safe_load(f)


class Document(unittest.TestCase):
    def setUp(self):
        self.doc = load()
        with open(META) as f:
            self.meta = json.load(f)
        self.v = jsonschema.Draft202012Validator(self.meta)

    def test_meta_schema_is_the_official_one(self):
        self.assertEqual(self.meta["$id"], "https://spec.openapis.org/oas/3.1/schema/2022-02-27")
        jsonschema.Draft202012Validator.check_schema(self.meta)

    def test_valid_openapi_3_1(self):
        self.assertTrue(self.doc["openapi"].startswith("3.1."))
        errors = sorted(self.v.iter_errors(self.doc), key=lambda e: list(e.absolute_path))
        self.assertEqual([], ["%s at %s" % (e.message[:200], list(e.absolute_path)) for e in errors])

    def test_validator_catches_broken_documents(self):
        """The structural check is live: known-bad edits are refused."""
        bad = []
        d = copy.deepcopy(self.doc)
        del d["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
        bad.append(d)
        d = copy.deepcopy(self.doc)
        d["paths"]["/healthz"]["get"]["bogus"] = 1
        bad.append(d)
        d = copy.deepcopy(self.doc)
        d["info"] = {"title": "x"}
        bad.append(d)
        d = copy.deepcopy(self.doc)
        d["paths"]["/v1/sessions/{name}"]["parameters"] = [{"name": "name", "in": "path", "schema": {}}]
        bad.append(d)
        for d in bad:
            self.assertTrue(list(self.v.iter_errors(d)))

    def test_schemas_are_valid_json_schema(self):
        for name, schema in self.doc["components"]["schemas"].items():
            jsonschema.Draft202012Validator.check_schema(schema)

    def test_refs_resolve(self):
        refs = set()

        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "$ref":
                        refs.add(v)
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(self.doc)
        self.assertTrue(refs)
        for r in refs:
            self.assertTrue(r.startswith("#/"), r)
            openapi_check.resolve(r)  # raises KeyError if dangling

    def test_every_api_md_endpoint_and_status(self):
        paths = self.doc["paths"]
        for (method, path), statuses in ENDPOINTS.items():
            self.assertIn(path, paths, path)
            self.assertIn(method, paths[path], "%s %s" % (method, path))
            documented = set(paths[path][method]["responses"])
            self.assertEqual(statuses - documented, set(), "%s %s" % (method.upper(), path))
        # nothing more than API.md
        ops = {(m, p) for p, item in paths.items() for m in item if m in
               ("get", "put", "post", "delete", "patch", "head", "options", "trace")}
        self.assertEqual(ops, set(ENDPOINTS))

    def test_api_md_headings_match(self):
        text = None
        for p in API_MD:
            if os.path.exists(p):
                text = open(p).read()
                break
        if text is None:
            self.skipTest("API.md not beside the repository")
        found = set()
        for m in re.finditer(r"^### `([A-Z]+) (/[^`]*)`", text, re.M):
            found.add((m.group(1).lower(), m.group(2)))
        self.assertGreaterEqual(len(found), 13)
        self.assertEqual(found - set(ENDPOINTS), set())

    def test_error_codes_match_api_md(self):
        codes = set(self.doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
                    ["code"]["enum"])
        # API.md's table, plus not_implemented: the HTTP layer's 501 for a
        # Transfer-Encoding other than chunked (RFC 9112; README, Security).
        self.assertEqual(codes, {"invalid_json", "invalid_argument", "size_mismatch", "non_finite",
                                 "unauthorized", "not_found", "method_not_allowed", "already_exists",
                                 "step_mismatch", "payload_too_large", "unsupported_media_type",
                                 "resource_exhausted", "internal", "insufficient_storage", "unavailable",
                                 "not_implemented"})

    def test_schema_check_is_not_vacuous(self):
        good = {"name": "a", "optimizer": "adam", "dtype": "float64", "size": 1, "step": 0,
                "hyperparameters": {"lr": 0.1}, "schedule": None, "max_grad_norm": None,
                "labels": {}, "ttl_seconds": None, "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z"}
        schema = {"$ref": "#/components/schemas/Descriptor"}
        openapi_check.validate_schema(schema, good, "good")
        for k, v in (("step", -1), ("dtype", "float16"), ("name", ".x"), ("size", "3"),
                     ("labels", {"a": 1}), ("hyperparameters", {"lr": "x"}),
                     ("schedule", {"type": "bogus"})):
            bad = dict(good, **{k: v})
            with self.assertRaises(AssertionError, msg=k):
                openapi_check.validate_schema(schema, bad, "bad " + k)
        bad = dict(good)
        del bad["updated_at"]
        with self.assertRaises(AssertionError):
            openapi_check.validate_schema(schema, bad, "bad")
        with self.assertRaises(AssertionError):
            openapi_check.validate_schema({"$ref": "#/components/schemas/Error"},
                                          {"error": {"code": "step_mismatch", "message": "x"}}, "no current_step")


class LiveAnswers(DaemonTestCase):
    """Drives every endpoint and error once and validates each answer
    explicitly (independent of the harness's automatic check)."""

    def call(self, method, path, body=None, headers=None, want=None):
        r = self.d.request(method, path, body, headers=headers, validate=False)
        if want is not None:
            self.assertEqual(r.status, want, "%s %s: %r" % (method, path, r))
        openapi_check.check(method, path, r)
        return r

    def test_every_endpoint(self):
        c = self.call
        c("GET", "/healthz", want=200)
        c("GET", "/metrics", want=200)
        c("GET", "/v1/optimizers", want=200)
        for opt in ("adam", "sgd", "rmsprop", "nadam", "adadelta", "adagrad", "adamax", "radam",
                    "adamw", "lion"):
            c("POST", "/v1/sessions", {"name": "oa-" + opt, "optimizer": opt, "params": [1.0, 2.0],
                                       "hyperparameters": {"amsgrad": True} if opt == "adam" else {},
                                       "schedule": {"type": "cosine", "t_max": 10, "warmup_steps": 2},
                                       "max_grad_norm": 1.0, "labels": {"k": "v"}, "ttl_seconds": 600},
              want=201)
            c("POST", "/v1/sessions/oa-%s/step" % opt, {"gradient": [0.5, -0.5], "loss": 0.1}, want=200)
            c("GET", "/v1/sessions/oa-%s/state" % opt, want=200)
        c("PUT", "/v1/sessions/oa-put", {"optimizer": "sgd", "size": 3, "dtype": "float32"}, want=201)
        c("GET", "/v1/sessions?limit=2", want=200)
        c("GET", "/v1/sessions?label=k:v&prefix=oa-", want=200)
        c("GET", "/v1/sessions/oa-adam", want=200)
        c("PATCH", "/v1/sessions/oa-adam", {"hyperparameters": {"lr": 0.1}, "schedule": None,
                                            "max_grad_norm": None, "ttl_seconds": None}, want=200)
        c("GET", "/v1/sessions/oa-adam/params", want=200)
        r = c("GET", "/v1/sessions/oa-adam/params", headers={"Accept": "application/octet-stream"}, want=200)
        self.assertEqual(len(r.raw), 16)
        c("POST", "/v1/sessions/oa-adam/step?return=none", {"gradient": [0.5, -0.5], "step": 1}, want=200)
        r = c("POST", "/v1/sessions/oa-adam/step", struct.pack("<2d", 0.1, 0.2),
              headers={"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"},
              want=200)
        self.assertEqual(r.headers.get("Optd-Step"), "3")
        c("GET", "/v1/sessions/oa-adam/history", want=200)
        c("GET", "/v1/sessions/oa-adam/history?limit=1&after_step=1", want=200)
        doc = c("GET", "/v1/sessions/oa-adam/state", want=200).body
        c("PUT", "/v1/sessions/oa-copy/state", doc, want=201)
        c("PUT", "/v1/sessions/oa-copy/state", doc, want=200)
        c("POST", "/v1/sessions", {"name": "oa-fork", "from": "oa-adam"}, want=201)
        c("DELETE", "/v1/sessions/oa-fork", want=204)
        # errors
        c("POST", "/v1/sessions", b"{", headers={"Content-Type": "application/json"}, want=400)
        c("POST", "/v1/sessions", {"name": "oa-x"}, want=400)
        c("POST", "/v1/sessions/oa-adam/step", {"gradient": [1.0]}, want=400)
        c("POST", "/v1/sessions/oa-adam/step", struct.pack("<2d", float("nan"), 0),
          headers={"Content-Type": "application/octet-stream"}, want=400)
        c("GET", "/v1/sessions/oa-none", want=404)
        c("GET", "/v1/nope", want=404)
        c("DELETE", "/v1/sessions", want=405)
        c("POST", "/v1/sessions", {"name": "oa-adam", "optimizer": "sgd", "size": 1}, want=409)
        r = c("POST", "/v1/sessions/oa-adam/step", {"gradient": [1.0, 1.0], "step": 0}, want=409)
        self.assertIn("current_step", r.body["error"])
        c("POST", "/v1/sessions", b"x", headers={"Content-Type": "text/plain"}, want=415)


if __name__ == "__main__":
    unittest.main()
