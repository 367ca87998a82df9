#!/usr/bin/env python
"""Peak memory of `gkm deblur` on a large 16-bit TIFF (the auto-tiling memory claim).

Makes a 6000 x 4000 16-bit RGB TIFF and a random paper-size checkpoint (weights perturbed so
the network is not the identity), runs ``python -m gkm_cli deblur`` on it in a subprocess and
reports the subprocess's peak resident set size from ``resource.getrusage(RUSAGE_CHILDREN)``
and, with ``--device cuda``, the CUDA peak allocated memory from the run's JSON summary.

    .venv/bin/python scripts/bench_memory.py                 # 6000 x 4000, ggkmnet, auto tiles
    .venv/bin/python scripts/bench_memory.py --width 1200 --height 800 --tile 512
    .venv/bin/python scripts/bench_memory.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def make_tiff(path: Path, height: int, width: int) -> None:
    """Smooth 16-bit RGB content plus noise, written in row blocks (no full float copy)."""
    rng = np.random.default_rng(0)
    out = np.empty((height, width, 3), np.uint16)
    x = np.arange(width, dtype=np.float32)
    for r0 in range(0, height, 500):
        y = np.arange(r0, min(height, r0 + 500), dtype=np.float32)[:, None]
        for c in range(3):
            v = 0.5 + 0.35 * np.sin(x / (40 + 9 * c) + y / (55 + 7 * c)) + 0.02 * rng.standard_normal((len(y), width))
            out[r0 : r0 + len(y), :, c] = np.clip(v * 65535, 0, 65535).astype(np.uint16)
    tifffile.imwrite(path, out, photometric="rgb")


def make_checkpoint(path: Path, model: str) -> None:
    from gkm_cli.nets import create_model
    from gkm_cli.nets.checkpoint import save_weights

    torch.manual_seed(0)
    net = create_model(model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_weights(net, path, card={"note": "random weights for scripts/bench_memory.py"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--model", default="ggkmnet")
    ap.add_argument("--tile", type=int, default=None, help="--tile for gkm deblur (default: auto)")
    ap.add_argument("--device", default="cpu", help="--device for gkm deblur (cpu, cuda, ...)")
    ap.add_argument("--precision", default="auto", help="--precision for gkm deblur")
    ap.add_argument("--workdir", type=Path, default=None, help="where the TIFF and outputs go (default: a temp dir)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="gkm_bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    src, ckpt, out = work / "big16.tif", work / f"{args.model}_random.safetensors", work / "out"
    make_tiff(src, args.height, args.width)
    make_checkpoint(ckpt, args.model)
    cmd = [
        sys.executable,
        "-m",
        "gkm_cli",
        "deblur",
        str(src),
        "-o",
        str(out),
        "--weights",
        str(ckpt),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--json",
        "--overwrite",
    ]
    if args.tile is not None:
        cmd += ["--tile", str(args.tile)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    result = {
        "command": " ".join(cmd),
        "exit_code": proc.returncode,
        "image": f"{args.width}x{args.height} 16-bit RGB TIFF ({src.stat().st_size / 2**20:.0f} MiB)",
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "seconds": round(seconds, 1),
        "records": [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")],
    }
    summary = result["records"][-1] if result["records"] else {}
    if "cuda_max_allocated_gib" in summary:
        result["cuda_max_allocated_gib"] = summary["cuda_max_allocated_gib"]
        result["megapixels_per_s"] = summary.get("megapixels_per_s")
    if proc.returncode == 0:
        with tifffile.TiffFile(out / src.name) as t:
            result["output"] = {"shape": list(t.pages[0].shape), "dtype": str(t.pages[0].dtype)}
    else:
        result["stderr_tail"] = proc.stderr[-2000:]
    print(json.dumps(result, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
