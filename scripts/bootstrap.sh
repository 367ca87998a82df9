#!/usr/bin/env bash
# Create .venv beside the repo and install gkm into it (idempotent; re-runs when pyproject changes).
# torch is pinned to the CPU build that installs from the local wheel cache in seconds; on a
# machine with CUDA, install the torch build you want first and this script keeps it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.gkm-installed"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/scripts/bootstrap.sh" -nt "$STAMP" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==${GKM_TORCH_VERSION:-2.13.0}"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[test,export,plot,formats]"
  # The [zoo] extra without torchvision: PyPI's torchvision 0.28.0 is built for CUDA torch and
  # raises on import next to the CPU torch here; spandrel needs it only for LaMa/RestoreFormer,
  # which gkm never runs (gkm_cli/nets/zoo.py imports spandrel without it). Same pins as pyproject.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    "spandrel==0.4.2" "spandrel-extra-arches==0.2.0" "einops>=0.6" "typing_extensions>=4"
  touch "$STAMP"
fi
