#!/usr/bin/env bash
# Does the built wheel work on its own?  Build it (pip wheel --no-deps), install it in a
# fresh virtual environment with its dependencies from the package index, and, from a
# directory outside the repository (so nothing can be imported from src/), run:
#   halfsec --version
#   halfsec engines --json      every engine and every pinned model file usable
#   halfsec run <example>       a spoken coffee order answered, with a v2v figure
#
# Usage: scripts/check_wheel.sh [WORKDIR]      (default: a new temporary directory)
# Env:   PYTHON (default python3), EXAMPLE (default examples/coffee_order.flac)
# What is built is the working tree's tracked and untracked-but-not-ignored files, copied
# first, so the repository gets no build/ or *.egg-info of its own.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d -t halfsec-wheel.XXXXXX)}
PY=${PYTHON:-python3}
EXAMPLE=${EXAMPLE:-$ROOT/examples/coffee_order.flac}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
echo "== work directory: $WORK"

echo "== copying the source tree"
rm -rf "$WORK/src-tree" "$WORK/dist" "$WORK/venv"
mkdir -p "$WORK/src-tree"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | xargs -0 -I{} sh -c 'test -e "{}" || test -L "{}" && echo "{}"' \
  | tar -cf - -T -) | tar -xf - -C "$WORK/src-tree"

echo "== building the wheel"
"$PY" -m pip wheel --no-deps --quiet -w "$WORK/dist" "$WORK/src-tree"
WHEEL=$(ls "$WORK"/dist/halfsec-*.whl)
echo "   $WHEEL ($(du -h "$WHEEL" | cut -f1))"
# What a wheel must carry besides the code: the default budget, the domains, the page.
"$PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = [
    "halfsec/lab/report/default_budget.toml",
    "halfsec/logic/domains/coffee.yaml",
    "halfsec/server/static/index.html",
    "halfsec/py.typed",
]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks {missing}"
print(f"   {len(names)} files, including {', '.join(need)}")
EOF

echo "== installing it in a fresh venv (dependencies from the index)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet "$WHEEL"
HALFSEC="$WORK/venv/bin/halfsec"

cd "$WORK"  # not the repository: the installed package is what runs

echo "== halfsec --version"
"$HALFSEC" --version

echo "== halfsec engines"
"$HALFSEC" engines --json > engines.json
"$WORK/venv/bin/python" - <<'EOF'
import json
rows = json.load(open("engines.json"))
for r in rows:
    print(f"   {'ok ' if r['usable'] else 'NO '} {r['kind']:6} {r['name']:34} {r['detail']}")
bad = [r for r in rows if not r["usable"]]
assert not bad, f"{len(bad)} engine(s) not usable: {[r['name'] for r in bad]}"
models = [r for r in rows if r["kind"] == "model"]
assert len(models) >= 7, f"expected every pinned model file checked, got {len(models)}"
print(f"   all {len(rows)} usable, {len(models)} model files verified")
EOF

echo "== the default latency budget, from the installed package"
"$WORK/venv/bin/python" - <<'EOF'
from halfsec.lab.report.budget import DEFAULT_BUDGET_PATH, load_budget
b = load_budget()
assert "site-packages" in str(DEFAULT_BUDGET_PATH), DEFAULT_BUDGET_PATH
print(f"   {b.name}: v2v {b.v2v_ms} ms at p{b.percentile:g}, {len(b.lines)} lines ({b.source})")
EOF

echo "== halfsec run $(basename "$EXAMPLE")"
"$HALFSEC" run "$EXAMPLE" --json --out-dir "$WORK/out" > run.json
"$WORK/venv/bin/python" - <<'EOF'
import json
r = json.loads(open("run.json").read().splitlines()[-1])
print(f"   transcript: {r['transcript']!r}")
print(f"   intent: {r['intent']} {r['slots']}")
print(f"   reply: {r['reply_text']!r}")
print(f"   v2v: {r['v2v_ms']} ms, errors: {r['errors']}")
assert r["v2v_ms"] is not None and r["reply_text"] and not r["errors"], r
EOF
echo "== the wheel works: $WHEEL"
