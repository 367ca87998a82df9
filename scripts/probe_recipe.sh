#!/usr/bin/env bash
# One recipe probe of issue 12: scripts/train_v2.sh for a fixed time budget from a fixed start,
# then the run's last (EMA) weights scored on runs/data/val_synth_v2 (never the real dev pairs),
# one row appended to runs/probes.csv. Give the machine to the probes alone: the budget is wall
# time, so anything running beside them changes how many steps they get (the row says steps).
# Usage: scripts/probe_recipe.sh NAME [extra gkm train run flags, e.g. --lpips-weight 0.1]
#   GKM_PROBE_MINUTES budget of training-loop time [20] (setup and the final scoring excluded)
#   GKM_PROBE_INIT    start: weights file, or "none" for from scratch
#                     [models/$GKM_MODEL.safetensors if it exists, else none]
#   GKM_MODEL, GKM_NPROC, GKM_THREADS, GKM_WORKERS, GKM_SEED: as in scripts/train_v2.sh
# Output: runs/probes/NAME/ (the run), runs/probes/NAME.train.json, .log, .val_synth_v2.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${1:-}"
if [[ ! "$NAME" =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "usage: scripts/probe_recipe.sh NAME [extra gkm train run flags] (NAME: letters, digits, . _ -)" >&2
  exit 2
fi
shift
MODEL="${GKM_MODEL:-ggkmnet}"
MINUTES="${GKM_PROBE_MINUTES:-20}"
PROBES="$ROOT/runs/probes"
RUN="$PROBES/$NAME"
if [ -e "$RUN" ]; then
  echo "$RUN exists: choose another NAME (one probe, one folder)" >&2
  exit 2
fi
INIT="${GKM_PROBE_INIT:-}"
if [ -z "$INIT" ]; then
  if [ -f "$ROOT/models/$MODEL.safetensors" ]; then INIT="$ROOT/models/$MODEL.safetensors"; else INIT=none; fi
fi
mkdir -p "$PROBES"
# Validate only when the budget is spent (--val-every beyond reach): every minute trains.
GKM_RUN_DIR="$RUN" GKM_INIT="$INIT" bash "$ROOT/scripts/train_v2.sh" \
  --val-every 100000000 --max-minutes "$MINUTES" --json "$@" >"$RUN.train.json" 2>"$RUN.log"
"$ROOT/.venv/bin/gkm" evaluate --data "$ROOT/runs/data/val_synth_v2" --weights "$RUN/last.safetensors" \
  --report "$RUN.val_synth_v2.json" >>"$RUN.log" 2>&1
PYTHONPATH="$ROOT/scripts" "$ROOT/.venv/bin/python" - "$NAME" "$MINUTES" "$INIT" "$RUN" "$ROOT/runs/probes.csv" "$*" <<'PYEOF'
import csv, json, sys
from pathlib import Path
from eval_summary import summarize

name, minutes, init, run, table, flags = sys.argv[1:7]
train = json.loads(Path(run + ".train.json").read_text())
card = json.loads((Path(run) / "last.json").read_text())
row = {
    "name": name, "minutes": minutes, "init": Path(init).name if init != "none" else "none",
    "steps": train["steps"], "s_per_step": round(train["wall_s"] / max(train["steps"], 1), 3),
    "train_val_gain": round(train["last_val"]["gain_psnr"], 3) if train.get("last_val") else "",
    **summarize(json.loads(Path(run + ".val_synth_v2.json").read_text())),
    "flags": flags, "world_size": card.get("world_size"), "threads": card["hardware"]["threads"],
    "torch": card["hardware"]["torch"], "cpu": card["hardware"]["cpu"],
}
path = Path(table).resolve()
new = not path.exists()
with path.open("a", newline="") as f:
    w = csv.DictWriter(f, list(row))
    if new:
        w.writeheader()
    w.writerow(row)
print(f"{path}: {name}: {row['steps']} steps, val_synth_v2 PSNR gain {row['psnr_gain']:+.3f} dB, worst {row['worst_gain']:+.3f}, "
      f"LPIPS {row['lpips_in']} -> {row['lpips_out']}")
PYEOF
