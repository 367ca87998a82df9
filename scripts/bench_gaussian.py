#!/usr/bin/env python
"""Time every Gaussian-bank method per bank and image size (the data behind ``choose_method``).

    .venv/bin/python scripts/bench_gaussian.py --sizes 64 128 256 512 --runs 5 --threads 2

For each bank (GKMNet's 21 kernels, GGKMNet's 21 x 4 atoms) and square size, it times
``gaussian_conv`` with each method (and, for GGKM, ``gaussian_group_mix``: filter then mix vs
FFT with the atoms mixed first) on an N x 3 x S x S input, methods interleaved run by run so a
busy shared machine slows them alike. Prints median and min seconds and the method
``choose_method`` picks; ``--json FILE`` writes the numbers. Methods slower than ``--skip-above``
seconds on their first run are not repeated (the direct 53 x 53 bank at 1 MPix takes minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gkm_cli.ops.gaussian import choose_method, gaussian_conv, gaussian_group_mix, ggkm_bank, gkm_bank


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(sizes: list[int], runs: int, batch: int, skip_above: float) -> list[dict]:
    """Interleaved timings (seconds) of every applicable method, per bank and size."""
    banks = {"gkm": gkm_bank(), "ggkm": ggkm_bank()}
    rows: list[dict] = []
    for size in sizes:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        for name, bank in banks.items():
            cases: dict[str, Callable[[], object]] = {}
            for method in ("direct", "separable", "cascade", "fft"):
                if method == "cascade" and bank.steps is None:
                    continue
                cases[f"conv/{method}"] = lambda m=method, b=bank: gaussian_conv(x, b, m)  # type: ignore[misc]
            if bank.steps is not None:
                p, q = len(bank.groups), len(bank.groups[0])
                alpha = torch.softmax(torch.randn(batch, p, q), -1)
                for method in ("direct", "fft"):
                    cases[f"mix/{method}"] = lambda m=method, b=bank: gaussian_group_mix(x, b, alpha, m)  # type: ignore[misc]
            times: dict[str, list[float]] = {k: [] for k in cases}
            with torch.inference_mode():
                for k, fn in cases.items():  # warm-up (and the slow-case filter)
                    first = _time(fn)
                    if first > skip_above:
                        times[k] = [first]
                for _ in range(runs):
                    for k, fn in cases.items():
                        if len(times[k]) == 1 and times[k][0] > skip_above:
                            continue
                        times[k].append(_time(fn))
            picked = choose_method(bank, size, size, x.device)
            for k, ts in times.items():
                rows.append(
                    {
                        "bank": name,
                        "size": size,
                        "case": k,
                        "median_s": statistics.median(ts),
                        "min_s": min(ts),
                        "runs": len(ts),
                        "chosen": k.endswith("/" + picked),
                    }
                )
                print(
                    f"{name:5s} {size:5d} {k:15s} median {statistics.median(ts):8.4f} s  min {min(ts):8.4f} s"
                    f"  (n={len(ts)}){'  <- auto' if rows[-1]['chosen'] else ''}",
                    flush=True,
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-above", type=float, default=20.0, help="seconds: time slower cases once only")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench(args.sizes, args.runs, args.batch, args.skip_above)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "threads": args.threads,
            "batch": args.batch,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
