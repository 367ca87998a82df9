#!/usr/bin/env python
"""ONNX Runtime vs torch (eager fast path, and the reference path) on the CPU, interleaved.

    .venv/bin/python scripts/bench_models.py --models gkmnet ggkmnet --size 512 --runs 5 --threads 2

Per model (random weights, full paper config): export to ONNX (``gkm_cli.export``), check
ONNX Runtime against torch on the benchmark input (max |diff|), then time ``torch`` (fast path,
``inference_mode``), ``torch-reference`` (direct 2-D bank, unfused; skip with
``--no-reference``) and ``onnxruntime`` run by run in turn, so load from other jobs on a shared
machine hits all of them alike. Prints medians, minima and ratios; ``--json FILE`` saves them.
For latency, memory and MACs of the torch paths alone use ``gkm benchmark``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from gkm_cli.export import OnnxDeblurrer, export_onnx
from gkm_cli.nets import create_model


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(name: str, size: int, runs: int, threads: int, reference: bool) -> dict:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    ort = OnnxDeblurrer(export_onnx(model, None), threads=threads)
    with torch.inference_mode():
        ref_img = model(x).image.numpy()
    diff = float(np.abs(ort.run_nchw(x.numpy())[0] - ref_img).max())
    cases: dict[str, Callable[[], object]] = {"torch": lambda: model(x), "onnxruntime": lambda: ort.run_nchw(x.numpy())}
    if reference:

        def ref() -> object:
            with model.reference_mode():
                return model(x)

        cases["torch-reference"] = ref
    times: dict[str, list[float]] = {k: [] for k in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(runs):
            for k, fn in cases.items():
                times[k].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "model": name,
        "size": size,
        "max_abs_diff_onnx_vs_torch": diff,
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "times_s": times,
        "onnx_speedup_vs_torch": med["torch"] / med["onnxruntime"],
    }
    print(
        f"{name} {size}x{size}: "
        + ", ".join(f"{k} median {v:.3f} s (min {min(times[k]):.3f})" for k, v in med.items())
        + f"; torch/onnxruntime = {row['onnx_speedup_vs_torch']:.2f}; max |onnx - torch| = {diff:.1e}",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gkmnet", "ggkmnet"])
    ap.add_argument("--size", type=int, default=512, help="square side, a multiple of 16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench_model(m, args.size, args.runs, args.threads, not args.no_reference) for m in args.models]
    if args.json:
        import onnxruntime

        meta = {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
            "processor": platform.processor(),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
