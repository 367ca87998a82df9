"""Fixed synthetic sets on disk (validation): crops, PNGs and the ``synth.json`` record."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from gkm_cli.data.layouts import read_native, to_float
from gkm_cli.data.synth.config import SynthConfig
from gkm_cli.data.synth.dead_leaves import dead_leaves
from gkm_cli.data.synth.depth import find_depth_sidecar, load_inverse_depth
from gkm_cli.data.synth.sampling import item_rng, synthesize
from gkm_cli.errors import DataError, UsageError
from gkm_cli.images import encode_png_array


def _crop(arr: np.ndarray, y: int, x: int, size: tuple[int, int]) -> np.ndarray:
    return arr[y : y + size[0], x : x + size[1]]


def _fit(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Upscale ``arr`` so both sides reach ``size`` (only for sources smaller than the crop)."""
    h, w = arr.shape[:2]
    s = max(size[0] / h, size[1] / w)
    if s <= 1:
        return arr
    dsize = (max(size[1], int(math.ceil(w * s))), max(size[0], int(math.ceil(h * s))))
    out = cv2.resize(arr, dsize, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)
    return out if out.ndim == arr.ndim else out[..., None]


def _encode_png(image: np.ndarray, bits: int) -> bytes:
    """RGB in [0, 1] -> 8/16-bit PNG bytes (OpenCV's default compression: the files stay as they were)."""
    if bits == 16:
        q = np.rint(np.clip(image, 0, 1) * 65535.0).astype(np.uint16)
    else:
        q = np.rint(np.clip(image, 0, 1) * 255.0).astype(np.uint8)
    return encode_png_array(np.ascontiguousarray(q[..., ::-1]))


_TAG_SET = 0x5E7


def write_synthetic_set(
    sharp_sources: Sequence[str | Path | np.ndarray],
    out_dir: str | Path,
    n: int,
    size: int | tuple[int, int],
    seed: int,
    config: SynthConfig = SynthConfig(),
    *,
    bits: Literal[8, 16] = 8,
) -> Path:
    """Write a fixed synthetic validation set: ``blur/``, ``sharp/`` (PNG, ``bits`` per channel),
    ``coc/`` (float32 ``.npy``, pixels) and ``synth.json`` (config, seed, per-sample draws).

    Sample i uses a generator seeded from (seed, i) only, so the files are identical for a seed.
    Sources are cropped at native scale (no resampling unless smaller than ``size``); a fraction
    ``config.dead_leaves_fraction`` of samples are dead-leaves images. Photos with a depth
    sidecar (:func:`find_depth_sidecar`) use it. Returns ``out_dir``.
    """
    if bits not in (8, 16):
        raise UsageError(f"bits must be 8 or 16, got {bits}")
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if n < 1 or min(hw) < 8:
        raise UsageError("need n >= 1 and size >= 8")
    if not sharp_sources and config.dead_leaves_fraction <= 0:
        raise DataError("no sharp sources given and dead leaves are disabled")
    out = Path(out_dir)
    for sub in ("blur", "sharp", "coc"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for i, src in enumerate(sharp_sources):
        names.append(Path(src).name if isinstance(src, (str, Path)) else f"array{i}")
    cache: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def load(k: int) -> tuple[np.ndarray, np.ndarray | None]:
        if k not in cache:
            src = sharp_sources[k]
            if isinstance(src, (str, Path)):
                side = find_depth_sidecar(src)
                img = read_native(src)
                dep = load_inverse_depth(side) if side is not None else None
                if dep is not None and dep.shape != img.shape[:2]:
                    dep = None
                cache[k] = (img, dep)
            else:
                cache[k] = (np.asarray(src), None)
        return cache[k]

    records: list[dict[str, Any]] = []
    for i in range(n):
        rng = item_rng(_TAG_SET, seed, i)
        name = f"{i:05d}"
        leaves = not sharp_sources or rng.uniform() < config.dead_leaves_fraction
        rec: dict[str, Any] = {"name": name}
        if leaves:
            img, dl_depth = dead_leaves(hw[0], hw[1], rng)
            own = rng.uniform() < config.dead_leaves_own_depth_prob
            dep = dl_depth if own else None
            rec["source"] = "dead_leaves"
        else:
            k = int(rng.integers(len(sharp_sources)))
            native, full_dep = load(k)
            native = _fit(native, hw)
            if full_dep is not None:
                full_dep = _fit(full_dep, hw, nearest=True)
            y = int(rng.integers(native.shape[0] - hw[0] + 1))
            x = int(rng.integers(native.shape[1] - hw[1] + 1))
            img = to_float(_crop(native, y, x, hw))
            dep = None if full_dep is None else _crop(full_dep, y, x, hw)
            rec.update(source=names[k], crop=[y, x])
        sample = synthesize(img, rng, config, dep)
        (out / "blur" / f"{name}.png").write_bytes(_encode_png(sample.blurred, bits))
        (out / "sharp" / f"{name}.png").write_bytes(_encode_png(sample.sharp, bits))
        np.save(out / "coc" / f"{name}.npy", sample.coc)
        rec["params"] = asdict(sample.params) if sample.params else None
        records.append(rec)
    meta = {
        "format": "gkm-synthetic-set/1",
        "seed": seed,
        "n": n,
        "size": list(hw),
        "bits": bits,
        "config": asdict(config),
        "sources": names,
        "samples": records,
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out
