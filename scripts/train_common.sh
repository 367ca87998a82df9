# Sourced by train_shipped.sh, finetune_shipped.sh and train_v2.sh: paths, the data, and how to launch
# `gkm train run` (GKM_NPROC=2: DistributedDataParallel over 2 CPU processes, same batches and
# results as 1 process).
SHARED="${GKM_SHARED_DATA:-$ROOT/../shared/data}"
DATA="$ROOT/runs/data"
bash "$ROOT/scripts/prepare_data.sh" >&2  # stdout stays for the run's --json
NPROC="${GKM_NPROC:-1}"
if [ "$NPROC" -gt 1 ]; then
  LAUNCH=("$ROOT/.venv/bin/torchrun" --standalone --nproc-per-node "$NPROC" -m gkm_cli)
else
  LAUNCH=("$ROOT/.venv/bin/gkm")
fi
