#!/usr/bin/env bash
# The data behind the shipped models, under runs/data (git-ignored): the sharp photos of
# ../shared/data/sharp split into training / held-out folders (symlinks) by the HELD_OUT list of
# scripts/make_samples.py, and the fixed synthetic validation set made from the held-out ones.
# Usage: scripts/prepare_data.sh   (idempotent; train_shipped.sh and finetune_shipped.sh call it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${GKM_SHARED_DATA:-$ROOT/../shared/data}"
DATA="$ROOT/runs/data"
bash "$ROOT/scripts/bootstrap.sh"
PY="$ROOT/.venv/bin/python"
cd "$ROOT"

# Split the sharp photos into training / held-out folders (symlinks), by the HELD_OUT list.
mkdir -p "$DATA/sharp_train" "$DATA/sharp_heldout"
"$PY" - "$SHARED/sharp" "$DATA" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, "scripts")
from make_samples import HELD_OUT
sharp, data = Path(sys.argv[1]), Path(sys.argv[2])
for f in sorted(sharp.rglob("*")):
    if f.suffix.lower() not in {".png", ".jpg", ".jpeg", ".tif", ".tiff"}:
        continue
    rel = f.relative_to(sharp).as_posix()
    link = data / ("sharp_heldout" if rel in HELD_OUT else "sharp_train") / rel.replace("/", "_")
    if not link.exists():
        link.symlink_to(f.resolve())
PYEOF

# The fixed synthetic validation set (deterministic for the seed).
[ -d "$DATA/val_synth/blur" ] || "$ROOT/.venv/bin/gkm" train synth --from "$DATA/sharp_heldout" \
  --out "$DATA/val_synth" --n 24 --size 256 --seed 2026
