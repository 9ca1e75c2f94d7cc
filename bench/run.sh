#!/usr/bin/env bash
# Run every benchmark (or pass options: --only bulk,receipts --quick). See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m bench "$@"
