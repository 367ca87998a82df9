"""Make `sample_images/`: synthetic, deterministic defocus of freely licensed sharp photos.

Real defocused photos with a free licence are not available to us (the real pairs in
../shared/data come from other projects and must not be committed), so the samples are
public-domain / CC0 photos defocused with our physically based renderer
(gkm_cli.data.synth.render_defocus: thin lens, layered depth, soft disk aperture, linear light).
These photos are held out of the shipped model's training set.

    .venv/bin/python scripts/make_samples.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gkm_cli.data.synth import Aperture, Lens, random_inv_depth, render_defocus
from gkm_cli.images import read_image, with_pixels, write_image

#: (source under shared/data/sharp, output name, bit depth, aperture, max CoC radius px, seed)
SAMPLES = (
    ("skimage/coffee.png", "coffee_defocus_16bit.tif", 16, Aperture("disk"), 7.0, 11),
    ("debian/scribus-template__nature.jpg", "canyon_defocus.jpg", 8, Aperture("polygon", blades=7), 6.0, 12),
    ("matplotlib/grace_hopper.jpg", "grace_hopper_defocus.png", 8, Aperture("disk", ring=0.2), 5.0, 13),
)

#: Photos used for the samples and the fixed synthetic validation set: never in training.
HELD_OUT = (
    "skimage/coffee.png",
    "skimage/chelsea.png",
    "skimage/astronaut.png",
    "matplotlib/grace_hopper.jpg",
    "debian/scribus-template__nature.jpg",
    "debian/kphotoalbum__skagen.jpg",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("sample_images"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for src, name, bits, aperture, max_radius, seed in SAMPLES:
        img = read_image(args.shared / "sharp" / src)
        h, w = img.pixels.shape[:2]
        rng = np.random.default_rng(seed)
        inv_depth, _ = random_inv_depth(h, w, rng, kind="layers")
        # Focus on the nearest layer: the subject stays sharp, the background blurs.
        lens = Lens(focus=float(np.quantile(inv_depth, 0.95)), coc_scale=max_radius, aperture=aperture)
        blurred, _ = render_defocus(img.pixels, inv_depth, lens, max_radius=max_radius)
        out = with_pixels(img, blurred.astype(np.float32))
        write_image(args.out / name, out, bit_depth=bits)
        print(f"{args.out / name}: {w}x{h}, {bits}-bit, from {src}")


if __name__ == "__main__":
    main()
