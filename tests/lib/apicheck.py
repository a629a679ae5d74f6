#!/usr/bin/env python3
"""apicheck: validates recorded delayer-api responses against docs/api.yaml.

    apicheck.py API_YAML LOG

LOG has one response a line: METHOD<TAB>PATH<TAB>STATUS<TAB>BODY_FILE<TAB>HEADERS_FILE
(tests/sh/test_api.sh's `req` writes it). For each response: the operation
(path template + method) must document the status; the Content-Type must be
one the response lists; the body must match its schema (NDJSON: every line);
the headers the response documents (Location, Allow, Retry-After,
WWW-Authenticate) must be present. A method the path does not have must be a
405 with an Error body; a path the document does not have must be a 404 (or
401 before it) with an Error body. Prints one line per problem and the count
checked; exits 1 on any problem.
"""
import json, sys

import jsonschema
import yaml

doc = yaml.safe_load(open(sys.argv[1]))
root = dict(doc)


def esc(s):
    return s.replace("~", "~0").replace("/", "~1")


def validate(pointer, instance):
    schema = dict(root)
    schema["$ref"] = pointer
    jsonschema.Draft202012Validator(schema).validate(instance)


def template(path):
    path = path.split("?", 1)[0]
    if path in doc["paths"]:
        return path
    pfx = "/v1/schedules/"
    if path.startswith(pfx) and "/" not in path[len(pfx):]:
        rest = path[len(pfx):]
        for m in (":retry", ":delete"):
            if rest.endswith(m) and len(rest) > len(m):
                return "/v1/schedules/{id}" + m
        if ":" not in rest:
            return "/v1/schedules/{id}"
    return None


def headers_of(f):
    h = {}
    for line in open(f, encoding="latin-1").read().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
    return h


problems = []
n = 0
for rec in open(sys.argv[2]):
    method, path, status, body_f, hdr_f = rec.rstrip("\n").split("\t")
    n += 1
    where = f"{method} {path} -> {status}"
    try:
        body = open(body_f, "rb").read().decode()
        hdr = headers_of(hdr_f)
        ctype = hdr.get("content-type", "").split(";")[0].strip()
        tpl = template(path)
        op = doc["paths"].get(tpl, {}).get(method.lower()) if tpl else None
        if op is None:
            want = {"405"} if tpl else {"404", "401"}
            if status not in want:
                problems.append(f"{where}: undocumented operation answered {status}, expected {sorted(want)}")
                continue
            validate("#/components/schemas/Error", json.loads(body))
            continue
        resp = op["responses"].get(status)
        if resp is None:
            problems.append(f"{where}: status {status} is not documented for {method} {tpl}")
            continue
        ptr = f"#/paths/{esc(tpl)}/{method.lower()}/responses/{status}"
        if "$ref" in resp:
            ptr = resp["$ref"]
            resp = doc["components"]["responses"][ptr.rsplit("/", 1)[1]]
        for h in resp.get("headers", {}):
            if h.lower() not in hdr:
                problems.append(f"{where}: header {h} missing")
        content = resp.get("content", {})
        if ctype not in content:
            problems.append(f"{where}: Content-Type {ctype!r} not in {sorted(content)}")
            continue
        sptr = f"{ptr}/content/{esc(ctype)}/schema"
        if ctype == "application/x-ndjson":
            for line in body.splitlines():
                validate(sptr, json.loads(line))
        elif ctype == "application/json":
            validate(sptr, json.loads(body))
    except jsonschema.ValidationError as e:
        problems.append(f"{where}: {e.message} at {list(e.absolute_path)}")
    except Exception as e:  # a body that is not JSON, a missing file
        problems.append(f"{where}: {type(e).__name__}: {e}")

for p in problems:
    print(p)
print(f"checked {n} responses, {len(problems)} problems")
sys.exit(1 if problems or n == 0 else 0)
