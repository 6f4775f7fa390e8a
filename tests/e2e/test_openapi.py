"""api/openapi.yaml stays true: every route in the server's route table and every op the
server lists is in it, every documented path answers (the batch paths for a real batch),
every error code of api/errors.h and every HTTP status its refusals use is documented."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402

import yaml  # noqa: E402  (python3-yaml)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SPEC = yaml.safe_load(open(os.path.join(ROOT, "api", "openapi.yaml")))
S = None


def server_routes():
    """The route table of server/http.c: {path: allowed methods}. A row whose path ends in
    "*" is a prefix: it serves every documented path that starts with it (/web/{name},
    /v1/batches/{id} and /v1/batches/{id}/results)."""
    src = open(os.path.join(ROOT, "server", "http.c")).read()
    table = src[src.index("routes[] = {"):]
    table = table[:table.index("};")]
    return {m.group(1): m.group(2) for m in
            re.finditer(r'\{"(/[^"]*)",\s*ROUTE_\w+,\s*"([^"]*)"\}', table)}


def served_by(route, path):
    """1 when the route table's row ROUTE serves the documented PATH."""
    if route.endswith("*"):
        return path.startswith(route[:-1]) and len(path) > len(route) - 1
    return route == path


def concrete(path, op, values):
    """PATH with each {parameter} replaced: by VALUES[name] (a real batch's id), else by its
    documented example."""
    for p in op.get("parameters", []):
        p = resolve(p)
        if p.get("in") == "path":
            path = path.replace("{%s}" % p["name"], str(values.get(p["name"], p["example"])))
    return path


def resolve(node):
    """NODE, or what its $ref names in this document."""
    while isinstance(node, dict) and "$ref" in node:
        target = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_route_is_documented_and_answers():
    routes = server_routes()
    check(len(routes) >= 5, routes)
    for route, allow in routes.items():
        paths = [p for p in SPEC["paths"] if served_by(route, p)]
        check(paths, "route %s missing from openapi.yaml" % route)
        documented = {m.upper() for p in paths for m in SPEC["paths"][p]}
        for method in allow.replace(" ", "").split(","):
            if method in ("HEAD", "OPTIONS") and method not in documented:
                continue
            check(method in documented, "%s %s missing from openapi.yaml" % (method, route))
    # A real (stored, ended) batch, so that the {id} paths answer 200.
    status, _, body = S.request("POST", "/v1/batches", body=b'{"op":"square","inputs":[2]}',
                                headers={"Content-Type": "application/json",
                                         "Prefer": "respond-async"})
    check(status == 202, (status, body))
    bid = json.loads(body)["id"]
    for _ in range(500):
        _, _, body = S.request("GET", "/v1/batches/" + bid)
        if json.loads(body)["state"] == "done":
            break
        time.sleep(0.01)
    for path in SPEC["paths"]:
        check(any(served_by(r, path) for r in routes),
              "openapi.yaml documents %s, which the server lacks" % path)
        if "get" in SPEC["paths"][path]:
            status, _, _ = S.request("GET", concrete(path, SPEC["paths"][path]["get"], {"id": bid}))
            check(status in (200, 503), (path, status))


def test_every_refusal_status_is_documented():
    """Every HTTP status of api/errors.h's refusals (internal_error's 500 aside) is
    documented as a response of some path."""
    src = open(os.path.join(ROOT, "api", "errors.h")).read()
    statuses = {int(s) for s in re.findall(r",\s*(\d{3}),\s*0\)", src)}
    documented = {int(c) for p in SPEC["paths"].values() for op in p.values()
                  for c in op.get("responses", {})}
    # 405 answers methods a path does not serve, so no operation can list it: it is the
    # shared response MethodNotAllowed.
    if "Allow" in SPEC["components"]["responses"].get("MethodNotAllowed", {}).get("headers", {}):
        documented.add(405)
    check(statuses - {500} <= documented, sorted(statuses - documented))


def test_every_op_is_documented():
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
