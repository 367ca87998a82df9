#!/usr/bin/env python
"""The oneDNN large-plane cliff behind ``DIRECT_STRIP_PIXELS`` (docs/PERFORMANCE.md, issue 13).

Times GKMNet's Gaussian bank (21 kernels, 21 x 21, colour planes folded into the batch) as one
``F.conv2d`` call and through ``gaussian_conv(..., "direct")`` (strips of at most 2^18 padded
pixels), per plane size, in ns per output pixel and plane:

    .venv/bin/python scripts/bench_onednn_cliff.py
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python scripts/bench_onednn_cliff.py   # as on an AMD EPYC

On AVX2 one call slows ~100x once a plane passes ~0.35 MPix; the strips stay flat.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from gkm_cli.ops.gaussian import dense_kernels, gaussian_conv, gkm_bank


def _ns_per_px(fn, planes: int, h: int, w: int) -> float:
    fn()  # warm-up: oneDNN builds its primitive for the shape
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e9 / (planes * h * w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", nargs="+", default=["256x1280", "512x512", "512x768", "720x1280"], help="HxW plane sizes"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bank = gkm_bank()
    kernels = dense_kernels(bank)
    print(
        f"torch {torch.__version__}, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    with torch.inference_mode():
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            x = torch.rand(2, 3, h, w)
            one = _ns_per_px(lambda: F.conv2d(x.reshape(6, 1, h, w), kernels, padding=bank.radius), 6, h, w)
            strips = _ns_per_px(lambda: gaussian_conv(x, bank, "direct", kernels), 6, h, w)
            print(f"{h} x {w}: one call {one:8.0f} ns/px   strips {strips:6.0f} ns/px", flush=True)


if __name__ == "__main__":
    main()
