#!/usr/bin/env bash
# Score a checkpoint the way models/README.md reports it (default: the shipped ggkmnet).
# Real dev pairs: ../shared/data/real_pairs_dev (validation only; top 72 label rows excluded).
# Synthetic: the fixed sets scripts/prepare_data.sh writes from the held-out photos (v1: val_synth,
# v2: val_synth_v2, the one the v2 recipes choose checkpoints on).
# Usage: scripts/eval_shipped.sh [WEIGHTS] [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WEIGHTS="${1:-$ROOT/models/ggkmnet.safetensors}"
OUT="${2:-$ROOT/runs/eval}"
SHARED="${GKM_SHARED_DATA:-$ROOT/../shared/data}"
GKM="$ROOT/.venv/bin/gkm"
bash "$ROOT/scripts/bootstrap.sh"
mkdir -p "$OUT"
"$GKM" deblur "$SHARED/real_pairs_dev/blur" -o "$OUT/real_dev_out" --weights "$WEIGHTS" --overwrite
"$GKM" evaluate "$OUT/real_dev_out" "$SHARED/real_pairs_dev/sharp" --input-dir "$SHARED/real_pairs_dev/blur" \
  --crop-top 72 --report "$OUT/real_dev.json" --report "$OUT/real_dev.md" --report "$OUT/real_dev.html"
"$GKM" evaluate --data "$ROOT/runs/data/val_synth" --weights "$WEIGHTS" \
  --report "$OUT/val_synth.json" --report "$OUT/val_synth.md"
"$GKM" evaluate --data "$ROOT/runs/data/val_synth_v2" --weights "$WEIGHTS" \
  --report "$OUT/val_synth_v2.json" --report "$OUT/val_synth_v2.md"
