#!/usr/bin/env bash
# The GPU measurements of docs/PERFORMANCE.md in one run (for a machine with an NVIDIA GPU and a
# CUDA build of torch already installed; bootstrap.sh keeps an existing torch). Writes to $OUT
# (default runs/device). About 5 minutes on an H100/H200.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/runs/device}"
mkdir -p "$OUT"
bash "$ROOT/scripts/bootstrap.sh"
PY="$ROOT/.venv/bin/python"
GKM="$ROOT/.venv/bin/gkm"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
# 1. ggkmnet 1280x720: fp32 vs reference, bf16 eager, bf16 compiled + CUDA graphs (target <= 10 ms).
"$GKM" benchmark --model ggkmnet --model gkmnet --size 1280x720 --device cuda --precision fp32 --compare-reference \
  --json --markdown "$OUT/gpu_fp32.md" > "$OUT/gpu_fp32.json"
"$GKM" benchmark --model ggkmnet --size 1280x720 --device cuda --precision bf16 --channels-last \
  --json --markdown "$OUT/gpu_bf16.md" > "$OUT/gpu_bf16.json"
"$GKM" benchmark --model ggkmnet --size 1280x720 --device cuda --precision bf16 --compile --cuda-graphs \
  --json --markdown "$OUT/gpu_bf16_compiled.md" > "$OUT/gpu_bf16_compiled.json" || echo "compiled run failed" >&2
# 2. 24-megapixel photo through the tiled engine (target >= 100 MP/s) and its GPU memory (<= 4 GiB).
"$PY" "$ROOT/scripts/bench_memory.py" --device cuda --precision bf16 --workdir "$OUT/mem" > "$OUT/memory_cuda.json"
cat "$OUT"/*.md "$OUT/memory_cuda.json"
