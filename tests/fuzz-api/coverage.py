#!/usr/bin/env python3
"""How far the API fuzzing reached: per operation of the OpenAPI document, how many requests schemathesis
sent, how many were answered with something other than 404, and how many with a 2xx.

Usage: coverage.py <openapi.json> <schemathesis HAR report> [--require-prefix PREFIX]
With --require-prefix, exits 1 when an operation whose path starts with PREFIX never got a 2xx answer:
the fuzzing then never used a real id there (a 400 can come before the id is looked up, so non-404 is
not enough), which is what this check exists to catch."""
import json
import re
import sys
from collections import defaultdict
from urllib.parse import urlsplit


def templates(doc):
    out = []
    for path, item in doc["paths"].items():
        # Literal segments first, so /events/batch is not read as /events/{x}.
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((path.count("{"), method.upper(), path, pattern))
    return sorted(out)


def main():
    args = sys.argv[1:]
    require = None
    if "--require-prefix" in args:
        i = args.index("--require-prefix")
        require = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        ops = templates(json.load(f))
    with open(args[1]) as f:
        entries = json.load(f)["log"]["entries"]
    sent = defaultdict(int)
    found = defaultdict(int)
    ok = defaultdict(int)
    for e in entries:
        method = e["request"]["method"].upper()
        path = urlsplit(e["request"]["url"]).path
        status = e["response"]["status"]
        for _, m, template, pattern in ops:
            if m == method and pattern.match(path):
                sent[(m, template)] += 1
                if status != 404:
                    found[(m, template)] += 1
                if 200 <= status < 300:
                    ok[(m, template)] += 1
                break
    missing = []
    print(f"{'operation':<62} {'sent':>6} {'non-404':>8} {'2xx':>6}")
    for _, m, template, _ in sorted(ops, key=lambda o: (o[2], o[1])):
        key = (m, template)
        print(f"{m + ' ' + template:<62} {sent[key]:>6} {found[key]:>8} {ok[key]:>6}")
        if require and template.startswith(require) and ok[key] == 0:
            missing.append(f"{m} {template}")
    scoped = [(m, t) for _, m, t, _ in ops if require and t.startswith(require)]
    if require:
        reached = sum(1 for k in scoped if ok[k] > 0)
        print(f"operations under {require}: {reached} of {len(scoped)} got a 2xx answer (a real id)")
    if missing:
        print("never reached with a real id: " + ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
