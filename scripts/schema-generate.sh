#!/usr/bin/env bash
# Writes the JSON Schema of the sidecar's config, generated from the sentinel's own config reader
# (`mcp-sentinel schema config --sidecar`, src/config/schema.rs), into the chart's
# values.schema.json at properties.sidecar.properties.config. Only that subtree changes: the
# rest of the file is kept byte for byte. The unit test config::schema::tests fails when the
# committed subtree is not what the reader knows.
#   scripts/schema-generate.sh           rewrite the subtree
#   scripts/schema-generate.sh --check   fail when it is stale
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO=${CARGO:-cargo}
generated=$("$CARGO" run --quiet --bin mcp-sentinel -- schema config --sidecar)

python3 - "${1:-}" "$generated" <<'PY'
import json
import re
import sys

PATH = "helm/mcp-sentinel/values.schema.json"
# Keywords first, in this order, then the rest sorted: the file reads like the hand-written
# parts of it.
FIRST = ["$schema", "title", "description", "type", "pattern", "items",
         "additionalProperties", "properties"]


def ordered(v):
    if isinstance(v, dict):
        keys = [k for k in FIRST if k in v] + sorted(k for k in v if k not in FIRST)
        return {k: ordered(v[k]) for k in keys}
    if isinstance(v, list):
        return [ordered(x) for x in v]
    return v


mode, generated = sys.argv[1], json.loads(sys.argv[2])
text = open(PATH, encoding="utf-8").read()
current = json.loads(text)["properties"]["sidecar"]["properties"]["config"]
# The subtree's text: the object after `"config": {` at its depth whose value is the subtree.
spans = []
for m in re.finditer(r'^        "config": \{', text, re.M):
    start = m.end() - 1
    value, end = json.JSONDecoder().raw_decode(text, start)
    if value == current:
        spans.append((start, end))
if len(spans) != 1:
    sys.exit(f"{PATH}: cannot find the text of sidecar.config ({len(spans)} candidates)")
start, end = spans[0]
body = json.dumps(ordered(generated), indent=2, ensure_ascii=False).replace("\n", "\n        ")
out = text[:start] + body + text[end:]
assert json.loads(out)["properties"]["sidecar"]["properties"]["config"] == generated
if mode == "--check":
    if out != text:
        sys.exit(f"{PATH}: sidecar.config is stale: run scripts/schema-generate.sh")
    print(f"{PATH}: sidecar.config is up to date")
else:
    with open(PATH, "w", encoding="utf-8") as f:
        f.write(out)
    print(f"{PATH}: sidecar.config written")
PY
