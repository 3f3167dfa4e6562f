#!/usr/bin/env python3
"""Trim the botocore Kinesis service model for embedding.

Reads botocore's kinesis/2013-12-02/service-2.json (or .json.gz), drops every
`documentation` field (and the top-level `documentation`), and writes
kinesis-2013-12-02.json next to this script: one operation or shape per line,
so updates produce readable diffs.

Usage: python3 trim.py [path/to/service-2.json[.gz]]
Without an argument the file is taken from the installed botocore package.
"""

import gzip
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kinesis-2013-12-02.json")
DROP = {"documentation", "documentationUrl"}


def locate():
    import botocore  # noqa: PLC0415

    base = os.path.join(os.path.dirname(botocore.__file__), "data", "kinesis", "2013-12-02")
    for name in ("service-2.json", "service-2.json.gz"):
        path = os.path.join(base, name)
        if os.path.exists(path):
            return path
    sys.exit("service-2.json not found under " + base)


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def one_line(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render(model):
    lines = ["{"]
    sections = list(model.items())
    for i, (key, value) in enumerate(sections):
        tail = "," if i + 1 < len(sections) else ""
        if key in ("operations", "shapes") and isinstance(value, dict):
            lines.append(f" {one_line(key)}:{{")
            items = list(value.items())
            for j, (name, body) in enumerate(items):
                comma = "," if j + 1 < len(items) else ""
                lines.append(f"  {one_line(name)}:{one_line(body)}{comma}")
            lines.append(" }" + tail)
        else:
            lines.append(f" {one_line(key)}:{one_line(value)}{tail}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else locate()
    model = strip(load(src))
    text = render(model)
    assert strip(json.loads(text)) == model
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT} ({len(text)} bytes) from {src}")


if __name__ == "__main__":
    main()
