#!/usr/bin/env bash
# GKMNet trained the same way as the v2 ggkmnet (scripts/train_v2.sh: same data, validation
# set, patch, batch, EMA and extra loss terms given as flags), from scratch: no GKMNet weights
# are shipped yet. Its own loss recipe (gkmnet: MSE over scales; the SSIM phases start at step
# 87,500, beyond a CPU run) unless --loss says otherwise.
# Usage: scripts/train_gkmnet.sh [extra gkm train run flags, e.g. --max-minutes 120, --resume]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GKM_MODEL=gkmnet
export GKM_INIT="${GKM_INIT:-none}"
exec bash "$ROOT/scripts/train_v2.sh" "$@"
