#!/usr/bin/env python
"""Time PSNR + SSIM + LPIPS on synthetic DPDD-sized pairs (1680 x 1120 RGB) and extrapolate.

    .venv/bin/python scripts/bench_metrics.py --pairs 3 --device cpu

Prints seconds per pair for each metric and the total, and the extrapolation to the 76 pairs of
the DPDD test set (with and without the input-vs-GT baseline, which doubles the work).
The first pair is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gkm_cli.metrics import load_lpips, lpips, psnr, ssim

DPDD_TEST_PAIRS = 76


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="timed pairs (plus one warm-up)")
    ap.add_argument("--height", type=int, default=1120)
    ap.add_argument("--width", type=int, default=1680)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = load_lpips(device=device)
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"psnr": [], "ssim_gaussian11": [], "ssim_uniform7": [], "lpips": []}
    for i in range(args.pairs + 1):
        gt = torch.rand(1, 3, args.height, args.width, generator=gen)
        pred = (gt + 0.05 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
        gt, pred = gt.to(device), pred.to(device)
        for name, fn in (
            ("psnr", lambda: psnr(pred, gt, data_range=1.0)),
            ("ssim_gaussian11", lambda: ssim(pred, gt, data_range=1.0, window="gaussian11")),
            ("ssim_uniform7", lambda: ssim(pred, gt, data_range=1.0, window="uniform7")),
            ("lpips", lambda: lpips(pred, gt, net=net)),
        ):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i > 0:
                times[name].append(time.perf_counter() - t0)
    print(
        f"{args.pairs} pairs of {args.width}x{args.height} on {device} ({torch.get_num_threads()} threads), torch "
        f"{torch.__version__}"
    )
    per = {k: sum(v) / len(v) for k, v in times.items()}
    for k, v in per.items():
        print(f"  {k:16s} {v:7.3f} s/pair")
    total = per["psnr"] + per["ssim_gaussian11"] + per["lpips"]
    print(f"  PSNR+SSIM(gaussian11)+LPIPS: {total:.3f} s/pair")
    print(
        f"  DPDD test ({DPDD_TEST_PAIRS} pairs): {total * DPDD_TEST_PAIRS:.1f} s; "
        f"with input baseline: {2 * total * DPDD_TEST_PAIRS:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
