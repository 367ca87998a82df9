#!/usr/bin/env bash
# The exact recipe behind models/ggkmnet.safetensors (see models/README.md for results).
# Data: synthetic defocus of the sharp photos in ../shared/data/sharp, minus the held-out photos
# listed in scripts/make_samples.py (HELD_OUT), which make the fixed synthetic validation set.
# Usage: scripts/train_shipped.sh [extra gkm train run flags, e.g. --resume --steps 8000]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${GKM_SHARED_DATA:-$ROOT/../shared/data}"
RUN="${GKM_RUN_DIR:-$ROOT/runs/ggkmnet-synth}"
DATA="$ROOT/runs/data"
bash "$ROOT/scripts/prepare_data.sh"

# GKM_NPROC=2: DistributedDataParallel over 2 CPU processes (same batches and results as 1).
NPROC="${GKM_NPROC:-1}"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH=("$ROOT/.venv/bin/torchrun" --standalone --nproc-per-node "$NPROC" -m gkm_cli)
else
  LAUNCH=("$ROOT/.venv/bin/gkm")
fi
exec "${LAUNCH[@]}" train run --out "$RUN" --model ggkmnet \
  --synth-from "$DATA/sharp_train" --synth-holdout 0 \
  --val "$DATA/val_synth" --val "$SHARED/real_pairs_dev" --val-every 500 --val-max-size 256 \
  --scale-weights 0.25,0.5,1 \
  --patch 128 --batch 4 --steps 3200 --lr 3e-4 --lr-halve-start 2000 --lr-halve-every 400 \
  --ema 0.999 --save-every 250 --threads 1 --workers 0 --seed 0 "$@"
