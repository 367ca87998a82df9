#!/usr/bin/env bash
# The data behind the shipped models, under runs/data (git-ignored):
#   sharp_train/       training photos: every image of ../shared/data/sharp not listed in
#                      scripts/photo_split.txt (the committed split; scripts/split_photos.py)
#   sharp_heldout_v2/  every held-out photo (the 6 v1 photos + 15 % of kodak/ and wikipedia/)
#   sharp_heldout/     the 6 v1 photos of scripts/make_samples.py HELD_OUT only
#   val_synth_v2/      the fixed synthetic validation set of the v2 recipes: 32 pairs of 256 px
#                      from sharp_heldout_v2, seed 2027, CoC radius up to 16 px (the real dev
#                      pairs are half-resolution DPDD, CoC up to about 12-16 px; the synthesis
#                      default stays 12)
#   val_synth/         the v1 set (24 pairs from sharp_heldout, seed 2026, default synthesis):
#                      kept so the numbers in models/README.md can be reproduced
# Symlink folders are rebuilt to match the split file exactly (stale links are removed).
# Usage: scripts/prepare_data.sh   (idempotent; the train/probe scripts call it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${GKM_SHARED_DATA:-$ROOT/../shared/data}"
DATA="$ROOT/runs/data"
bash "$ROOT/scripts/bootstrap.sh"
PY="$ROOT/.venv/bin/python"
GKM="$ROOT/.venv/bin/gkm"
cd "$ROOT"

mkdir -p "$DATA"
"$PY" scripts/split_photos.py --sharp "$SHARED/sharp" --link "$DATA"

# The fixed synthetic validation sets (deterministic for the seed; synth.json is written last).
[ -f "$DATA/val_synth/synth.json" ] || "$GKM" train synth --from "$DATA/sharp_heldout" \
  --out "$DATA/val_synth" --n 24 --size 256 --seed 2026
[ -f "$DATA/val_synth_v2/synth.json" ] || "$GKM" train synth --from "$DATA/sharp_heldout_v2" \
  --out "$DATA/val_synth_v2" --n 32 --size 256 --seed 2027 --max-radius 16
