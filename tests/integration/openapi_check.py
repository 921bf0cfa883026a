"""openapi_check.py: validates live daemon responses against api/openapi.yaml.

check(method, path, response) finds the operation of api/openapi.yaml whose
path template matches `path` (query string ignored), requires the response's
status to be documented there (or in a "4XX"/"5XX"/"default" entry), and
validates a JSON body against that response's application/json schema with
jsonschema's Draft202012Validator ($refs resolved inside the document).
Paths the document does not describe (unknown routes) and methods it does not
list (405 answers) are checked against components/schemas/Error when the
answer is a JSON error.  The harness calls it on every response unless
OPTD_OPENAPI_CHECK=0.
"""

import os
import re
import threading

import jsonschema
import yaml

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "api", "openapi.yaml")
_lock = threading.Lock()
_cache = {}


def spec():
    with _lock:
        if "spec" not in _cache:
            with open(SPEC_PATH) as f:
                _cache["spec"] = yaml.safe_load(f)
            s = _cache["spec"]
            routes = []
            for tmpl, item in (s.get("paths") or {}).items():
                rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tmpl)) + "$"
                routes.append((tmpl.count("{"), re.compile(rx), tmpl, item))
            routes.sort(key=lambda r: r[0])  # literal segments win over templates
            _cache["routes"] = routes
            _cache["resolver"] = jsonschema.RefResolver.from_schema(s)
        return _cache["spec"]


def find_route(path):
    spec()
    p = path.split("?", 1)[0]
    for _, rx, tmpl, item in _cache["routes"]:
        if rx.match(p):
            return tmpl, item
    return None, None


def validate_schema(schema, instance, what):
    spec()
    v = jsonschema.Draft202012Validator(schema, resolver=_cache["resolver"])
    errors = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise AssertionError("%s does not match api/openapi.yaml: %s at %s (instance: %.300r)"
                             % (what, e.message, "/".join(map(str, e.absolute_path)) or "(root)",
                                instance))


def response_spec(op, status):
    responses = op.get("responses") or {}
    for key in (str(status), "%dXX" % (status // 100), "default"):
        if key in responses:
            r = responses[key]
            if "$ref" in r:
                r = resolve(r["$ref"])
            return r
    return None


def resolve(ref):
    node = spec()
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check(method, path, resp):
    """Raises AssertionError when resp does not match the document."""
    if not os.path.exists(SPEC_PATH):
        return
    tmpl, item = find_route(path)
    is_json = isinstance(resp.body, (dict, list))
    what = "%d answer to %s %s" % (resp.status, method, path)
    op = item.get(method.lower()) if item else None
    if op is None:
        if is_json and resp.status >= 400:
            validate_schema({"$ref": "#/components/schemas/Error"}, resp.body, what)
        return
    rs = response_spec(op, resp.status)
    if rs is None:
        raise AssertionError("%s: status %d is not documented for %s %s in api/openapi.yaml"
                             % (what, resp.status, method.upper(), tmpl))
    content = rs.get("content") or {}
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not resp.raw:
        return
    if ctype not in content:
        raise AssertionError("%s: Content-Type %r is not documented (documented: %s)"
                             % (what, ctype, ", ".join(content) or "no body"))
    if ctype == "application/json":
        if not is_json:
            raise AssertionError("%s: body is not valid JSON: %.200r" % (what, resp.raw))
        schema = content[ctype].get("schema")
        if schema is not None:
            validate_schema(schema, resp.body, what)
