"""api/openapi.yaml stays true: every route in the server's route table and every op the
server lists is in it, every documented path answers, every error code of api/errors.h is
documented."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402

import yaml  # noqa: E402  (python3-yaml)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SPEC = yaml.safe_load(open(os.path.join(ROOT, "api", "openapi.yaml")))
S = None


def server_routes():
    """The route table of server/http.c, as OpenAPI names its paths: a row whose path ends
    in "*" (a prefix) is the documented path with a {name} parameter in its place."""
    src = open(os.path.join(ROOT, "server", "http.c")).read()
    table = src[src.index("routes[] = {"):]
    table = table[:table.index("};")]
    return {re.sub(r"\*$", "{name}", m.group(1)): m.group(2) for m in
            re.finditer(r'\{"(/[^"]*)",\s*ROUTE_\w+,\s*"([^"]*)"\}', table)}


def concrete(path, op):
    """PATH with each {parameter} replaced by its documented example."""
    for p in op.get("parameters", []):
        if p.get("in") == "path":
            path = path.replace("{%s}" % p["name"], str(p["example"]))
    return path


def test_every_route_is_documented_and_answers():
    routes = server_routes()
    check(len(routes) >= 5, routes)
    for path, allow in routes.items():
        check(path in SPEC["paths"], "route %s missing from openapi.yaml" % path)
        documented = {m.upper() for m in SPEC["paths"][path]}
        for method in allow.replace(" ", "").split(","):
            if method in ("HEAD", "OPTIONS") and method not in documented:
                continue
            check(method in documented, "%s %s missing from openapi.yaml" % (method, path))
    for path in SPEC["paths"]:
        check(path in routes, "openapi.yaml documents %s, which the server lacks" % path)
        if "get" in SPEC["paths"][path]:
            status, _, _ = S.request("GET", concrete(path, SPEC["paths"][path]["get"]))
            check(status in (200, 503), (path, status))


def test_every_op_is_documented():
    import json
    status, _, body = S.request("GET", "/v1/ops")
    check(status == 200)
    served = {o["name"] for o in json.loads(body)["ops"]}
    documented = set(SPEC["components"]["schemas"]["OpName"]["enum"])
    check(served == documented, "ops served %s vs documented %s" % (
        sorted(served - documented), sorted(documented - served)))


def test_every_error_code_is_documented():
    src = open(os.path.join(ROOT, "api", "errors.h")).read()
    src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("/*"))
    codes = set(re.findall(r'XX\(\w+,\s*"(\w+)"', src))
    documented = set(SPEC["components"]["schemas"]["ErrorObject"]["properties"]["code"]["enum"])
    check(codes == documented, (sorted(codes - documented), sorted(documented - codes)))


if __name__ == "__main__":
    with Server(workers=1) as S:
        code = Suite("openapi").run(globals())
    sys.exit(code)
