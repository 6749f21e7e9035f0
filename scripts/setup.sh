#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the pinned requirements and this package (editable).
# Re-running it does nothing when .venv already works. PYTHON=python3.11 picks the interpreter; EDITABLE=1 also
# runs `pip install -e .` (optional: the stage CLIs and tests run from the repository root without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torch_fidelity, scipy, snakemake, dvc, yaml, rich, pandas, pytest, hypothesis" 2>/dev/null; then
  .venv/bin/pip install -r requirements.txt
fi
if [ "${EDITABLE:-0}" = 1 ] && ! .venv/bin/python -c "import importlib.metadata as m; m.version('var-pipeline')" 2>/dev/null; then
  .venv/bin/pip install --no-deps -e .
fi
echo "setup.sh: .venv ready ($(.venv/bin/python --version))"
