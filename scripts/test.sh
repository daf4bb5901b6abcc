#!/usr/bin/env bash
# Quick start, command 2: set up, then run the whole test suite (real models, real
# speech from ../shared/speech), plus the type and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests benchmarks
mypy
python -m pytest -q -p no:cacheprovider "$@"
