#!/usr/bin/env bash
# The one committed training state per model (issue 12): a CPU session is too short for a
# long run, so each session saves where its run stopped and the next one continues from it.
#   scripts/train_state.sh save RUN_DIR NAME     copy RUN_DIR's resume state into models/training/NAME
#   scripts/train_state.sh restore NAME RUN_DIR  copy it back into a fresh RUN_DIR, then resume with
#                                                the same script and flags plus --resume
# What is kept: last.state.safetensors in its compact form (raw weights fp32, EMA as a bf16 delta,
# Adam's second moment in bf16, RNG; its metadata holds step, config, best PSNR and wall time), last.state.json (readable copy) and log.csv (the whole
# curve). models/training/ is not packaged (pyproject's package-data globs stop at models/*), and
# "save" replaces the previous state: git history keeps one state per stop, not one per run.
# GKM_STATE_ROOT overrides models/training (the tests use a temporary folder).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATES="${GKM_STATE_ROOT:-$ROOT/models/training}"
FILES=(last.state.safetensors last.state.json log.csv)
usage() { echo "usage: scripts/train_state.sh save RUN_DIR NAME | restore NAME RUN_DIR" >&2; exit 2; }
[ $# -eq 3 ] || usage
NAME="$3"; [ "$1" = restore ] && NAME="$2"
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ && "$NAME" != .* ]] || { echo "NAME $NAME: letters, digits, . _ - only" >&2; exit 2; }
case "$1" in
  save) SRC="$2"; DEST="$STATES/$3" ;;
  restore) SRC="$STATES/$2"; DEST="$3"
    if [ -e "$DEST/last.state.safetensors" ]; then
      echo "$DEST already holds a training state: resume it there, or restore into a new folder" >&2; exit 2
    fi ;;
  *) usage ;;
esac
for f in "${FILES[@]}"; do
  [ -f "$SRC/$f" ] || { echo "$SRC/$f: missing (not a training run folder?)" >&2; exit 2; }
done
mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  if [ "$1" = save ] && [ "$f" = last.state.safetensors ]; then
    # The committed copy is compact (~half: EMA as a bf16 delta, Adam's second moment in bf16, no
    # first moment; gkm_cli/training/compact.py); restore copies it back as it is and --resume
    # expands it.
    "$ROOT/.venv/bin/python" -c 'import sys; from pathlib import Path; from gkm_cli.training.compact import compact_state_file as c; c(Path(sys.argv[1]), Path(sys.argv[2]))' \
      "$SRC/$f" "$DEST/.$f.tmp"
    mv "$DEST/.$f.tmp" "$DEST/$f"
    continue
  fi
  cp "$SRC/$f" "$DEST/.$f.tmp" && mv "$DEST/.$f.tmp" "$DEST/$f"  # a killed copy never looks complete
done
echo "$1: $SRC -> $DEST (step $(sed -n 's/.*"step": *\([0-9]*\).*/\1/p' "$DEST/last.state.json" | head -n 1))"
