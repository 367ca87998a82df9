#!/usr/bin/env python
"""The README's before/after figure: input | gkm output | sharp source, on crops of two samples.

    .venv/bin/python scripts/make_figure.py --shared ../shared/data -o docs/before_after.png

Deblurs ``sample_images/`` files with the shipped default model (``--weights`` to choose) and
crops the same window from the blurred sample, the output and the sharp source photo (CC0 /
public domain, see sample_images/LICENSES.md). Prints each crop's PSNR against the source, so
the caption can say what the picture shows. The samples are synthetic defocus of photos held
out of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gkm_cli.api import Deblurrer  # noqa: E402
from gkm_cli.images import read_image  # noqa: E402

#: (sample file, source photo under shared/data/sharp, crop top, left, size)
CROPS = (
    ("coffee_defocus_16bit.tif", "skimage/coffee.png", 40, 300, 240),
    ("grace_hopper_defocus.png", "matplotlib/grace_hopper.jpg", 60, 120, 240),
)
LABEL_H = 28


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - b) ** 2)))


def labelled(tile: np.ndarray, text: str) -> np.ndarray:
    canvas = np.full((tile.shape[0] + LABEL_H, tile.shape[1], 3), 255, np.uint8)
    canvas[LABEL_H:] = np.rint(np.clip(tile, 0, 1) * 255).astype(np.uint8)
    cv2.putText(canvas, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "before_after.png")
    args = ap.parse_args()
    d = Deblurrer(weights=args.weights, device="cpu")
    rows = []
    for sample, source, top, left, size in CROPS:
        blurred = read_image(ROOT / "sample_images" / sample).pixels
        sharp = read_image(args.shared / "sharp" / source).pixels
        restored = d.deblur(blurred)
        win = (slice(top, top + size), slice(left, left + size))
        b, r, s = blurred[win], restored[win], sharp[win]
        print(
            f"{sample}: crop PSNR input {psnr(b, s):.2f} dB, gkm {psnr(r, s):.2f} dB; "
            f"whole image input {psnr(blurred, sharp):.2f} dB, gkm {psnr(restored, sharp):.2f} dB"
        )
        rows.append(
            np.concatenate(
                [
                    labelled(b, f"input {psnr(b, s):.1f} dB"),
                    labelled(r, f"gkm {psnr(r, s):.1f} dB"),
                    labelled(s, "sharp source"),
                ],
                axis=1,
            )
        )
    figure = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
