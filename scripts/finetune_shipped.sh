#!/usr/bin/env bash
# Stage 2 of the shipped ggkmnet recipe: fine-tune the stage-1 weights (scripts/train_shipped.sh)
# with a fresh optimizer, a lower lr and more in-focus samples (near-sharp inputs were stage 1's
# worst case: see docs/TRAINING.md). Same data, same held-out photos, same validation sets.
# Usage: scripts/finetune_shipped.sh [extra gkm train run flags, e.g. --resume]
#   GKM_INIT: stage-1 weights [runs/ggkmnet-synth/last.safetensors]; GKM_NPROC=2: 2 DDP processes.
# Since issue 12, runs/data/sharp_train is the v2 split (scripts/photo_split.txt, 81 photos); the
# shipped v1 weights saw the 21 photos listed in models/ggkmnet.json (data.synthetic.photos).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${GKM_RUN_DIR:-$ROOT/runs/ggkmnet-finetune}"
INIT="${GKM_INIT:-$ROOT/runs/ggkmnet-synth/last.safetensors}"
source "$ROOT/scripts/train_common.sh"
exec "${LAUNCH[@]}" train run --out "$RUN" --model ggkmnet --init "$INIT" \
  --synth-from "$DATA/sharp_train" --synth-holdout 0 --synth-in-focus 0.3 \
  --val "$DATA/val_synth" --val "$SHARED/real_pairs_dev" --val-every 500 --val-max-size 256 \
  --scale-weights 0.25,0.5,1 \
  --patch 128 --batch 4 --steps 1200 --lr 2e-4 --lr-halve-start 700 --lr-halve-every 125 \
  --ema 0.999 --save-every 250 --threads 1 --workers 0 --seed 1 "$@"
