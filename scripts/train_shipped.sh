#!/usr/bin/env bash
# Stage 1 of the recipe behind models/ggkmnet.safetensors (stage 2: finetune_shipped.sh; results in models/README.md).
# Data: synthetic defocus of the sharp photos in ../shared/data/sharp, minus the held-out photos
# listed in scripts/make_samples.py (HELD_OUT), which make the fixed synthetic validation set.
# Usage: scripts/train_shipped.sh [extra gkm train run flags, e.g. --resume --steps 8000]
# Since issue 12, runs/data/sharp_train is the v2 split (scripts/photo_split.txt, 81 photos); the
# shipped v1 weights saw the 21 photos listed in models/ggkmnet.json (data.synthetic.photos).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${GKM_RUN_DIR:-$ROOT/runs/ggkmnet-synth}"
source "$ROOT/scripts/train_common.sh"
exec "${LAUNCH[@]}" train run --out "$RUN" --model ggkmnet \
  --synth-from "$DATA/sharp_train" --synth-holdout 0 \
  --val "$DATA/val_synth" --val "$SHARED/real_pairs_dev" --val-every 500 --val-max-size 256 \
  --scale-weights 0.25,0.5,1 \
  --patch 128 --batch 4 --steps 3200 --lr 3e-4 --lr-halve-start 2000 --lr-halve-every 400 \
  --ema 0.999 --save-every 250 --threads 1 --workers 0 --seed 0 "$@"
