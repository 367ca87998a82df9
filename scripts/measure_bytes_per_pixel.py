#!/usr/bin/env python
"""Peak working memory of one fp32 inference forward per input pixel (the ``ModelSpec.bytes_per_pixel`` data).

    .venv/bin/python scripts/measure_bytes_per_pixel.py ggkmnet 512 640 768 1024

Each size runs in a fresh process (peak RSS is per process): a 64 x 64 warm-up forward first,
then the peak RSS growth of one SIZE x SIZE forward divided by its pixels. Auto tiling sizes
CPU tiles from the spec's figure, so keep it above every measured value for tile-sized inputs.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import torch


def measure(name: str, size: int) -> float:
    """Bytes of peak RSS growth per pixel of one ``size`` x ``size`` forward, in this process."""
    from gkm_cli.nets import create_model

    torch.set_num_threads(2)
    model = create_model(name).eval()
    with torch.inference_mode():
        model(torch.rand(1, 3, 64, 64))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        model(torch.rand(1, 3, size, size))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (peak - base) / (size * size)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "--one":
        print(f"{measure(argv[1], int(argv[2])):.0f}")
        return 0
    if len(argv) < 2:
        print(__doc__)
        return 2
    name, sizes = argv[0], [int(s) for s in argv[1:]]
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, str(size)], capture_output=True, text=True, check=True
        )
        print(f"{name} {size}x{size}: {out.stdout.strip()} B/px")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
