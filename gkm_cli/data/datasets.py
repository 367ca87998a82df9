"""Torch datasets for training: random patches of real pairs, and synthetic defocus on the fly.

Both return ``dict(blur=3 x P x P, sharp=3 x P x P)`` float32 tensors, sRGB in [0,1] (8- and
16-bit files alike). Pyramids are built by the training code from the full patch with
``gkm_cli.ops.pyramid.build_pyramid`` so targets match inference.

Determinism: item ``i`` of epoch ``e`` draws all its randomness from a generator seeded with
``(purpose, seed, e, i)``, so a batch does not depend on the number of DataLoader workers or on
the order items are fetched. Call ``set_epoch(e)`` before each epoch (the DataLoader copies the
dataset into its workers when an iterator is created, so with ``persistent_workers=True`` the
epoch change does not reach them; leave that off or rebuild the loader).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from gkm_cli.data.layouts import Pair, is_image_path, read_native, to_float
from gkm_cli.data.synth import (
    SynthConfig,
    as_rgb,
    dead_leaves,
    find_depth_sidecar,
    item_rng,
    load_inverse_depth,
    synthesize,
)
from gkm_cli.errors import DataError

_TAG_PAIRS = 0x9A1
_TAG_SYNTH = 0x5A7

EXCLUDED_DIRS: frozenset[str] = frozenset({"real_pairs_dev", "real_blur_only"})
"""Folders never listed as training photos (the data README reserves them for evaluation)."""


# ============================================================================ photo lists


def list_sharp_photos(root: str | Path, exclude_dirs: Iterable[str] = EXCLUDED_DIRS) -> list[Path]:
    """Sharp training photos under ``root``, recursively, sorted; hidden files and folders, and
    folders named in ``exclude_dirs`` (evaluation-only data), are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a folder")
    skip = set(exclude_dirs)
    found = []
    for p in sorted(base.rglob("*")):
        parts = p.relative_to(base).parts
        if any(q.startswith(".") or q in skip for q in parts[:-1]) or parts[-1].startswith("."):
            continue
        if p.is_file() and is_image_path(p):
            found.append(p)
    if not found:
        raise DataError(f"{base}: no images found")
    return found


_STEREO = re.compile(r"[_\-](left|right|l|r)$", re.IGNORECASE)


def holdout_key(path: str | Path) -> str:
    """The name that decides a photo's split: the lower-case stem without a stereo suffix
    (``_left``/``_right``/``_l``/``_r``), so both views of a stereo pair fall on the same side."""
    return _STEREO.sub("", Path(path).stem.lower())


def _unit_hash(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_holdout(paths: Sequence[str | Path], fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic ``(train, val)`` split by a hash of each file's :func:`holdout_key` and ``seed``.

    A photo goes to ``val`` when its hash in [0,1) is below ``fraction``: the decision depends
    only on the name, so adding or removing other photos never moves it, and the two lists never
    overlap. If ``fraction > 0`` and no name falls below it, the name with the smallest hash goes
    to ``val`` (so a small set still gets one validation photo).
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"holdout fraction must be in [0, 1), got {fraction}")
    items = [Path(p) for p in paths]
    scores = {holdout_key(p): _unit_hash(holdout_key(p), seed) for p in items}
    val_keys = {k for k, h in scores.items() if h < fraction}
    if fraction > 0 and not val_keys and len(scores) > 1:
        val_keys = {min(scores, key=lambda k: scores[k])}
    train = [p for p in items if holdout_key(p) not in val_keys]
    val = [p for p in items if holdout_key(p) in val_keys]
    return train, val


# ============================================================================ helpers


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV and one torch thread per worker (the items'
    randomness does not depend on the worker, so nothing is seeded here)."""
    del worker_id
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90-degree rotation applied to every H x W (x C) array."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in arrays:
        if flip:
            a = a[:, ::-1]
        out.append(np.rot90(a, k, axes=(0, 1)))
    return out


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 float32 -> contiguous 3 x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(size - a.shape[0], 0), max(size - a.shape[1], 0)
    if not (ph or pw):
        return a
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="reflect" if min(a.shape[:2]) > max(ph, pw) else "edge")


# ============================================================================ real pairs


class PairPatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Random ``patch`` x ``patch`` crops of real (blurred, sharp) pairs, the same crop on both.

    ``augment`` adds flips and 90-degree rotations. ``patch=None`` returns whole images (for
    validation). Images smaller than the patch are reflect-padded. Grey images become 3 equal
    channels. ``cache=True`` keeps decoded images in memory (at their stored precision).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        patch: int | None = 256,
        augment: bool = True,
        *,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        if not pairs:
            raise DataError("PairPatchDataset needs at least one pair")
        if patch is not None and patch < 8:
            raise DataError(f"patch must be >= 8 pixels, got {patch}")
        self.pairs = list(pairs)
        self.patch = patch
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops and augmentations items draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        pair = self.pairs[index]
        blur, sharp = read_native(pair.blur), read_native(pair.sharp)
        if blur.shape[:2] != sharp.shape[:2]:
            raise DataError(
                f"pair '{pair.name}': blurred {pair.blur} is {blur.shape[1]}x{blur.shape[0]}, "
                f"sharp {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}"
            )
        if self.cache:
            self._cache[index] = (blur, sharp)
        return blur, sharp

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        blur, sharp = self._load(index)
        rng = item_rng(_TAG_PAIRS, self.seed, self.epoch, index)
        if self.patch is not None:
            p = self.patch
            blur, sharp = _pad_to(blur, p), _pad_to(sharp, p)
            y = int(rng.integers(blur.shape[0] - p + 1))
            x = int(rng.integers(blur.shape[1] - p + 1))
            blur, sharp = blur[y : y + p, x : x + p], sharp[y : y + p, x : x + p]
        if self.augment:
            blur, sharp = _augment([blur, sharp], rng)
        return {"blur": _to_tensor(as_rgb(to_float(blur))), "sharp": _to_tensor(as_rgb(to_float(sharp)))}


# ============================================================================ synthetic


class SynthPatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Synthetic defocus on the fly from a few sharp photos (and dead-leaves images).

    Per item: pick a photo (or, with probability ``synth_config.dead_leaves_fraction`` when
    ``include_dead_leaves``, draw a dead-leaves image), take a random crop at a random scale in
    ``scale_range`` (a crop of ``patch / scale`` pixels resized to ``patch`` with area
    averaging), flip / rotate, apply a small colour jitter (per-channel gains within
    ``1 +- color_jitter``, then a global one), then :func:`synthesize`. A photo's depth sidecar
    (see ``find_depth_sidecar``) is cropped and transformed with it.

    Photos are decoded once and kept at their stored precision (``preload`` decodes all of them
    in the constructor, so forked workers share them). ``max_side`` (pixels) downsizes larger
    photos at load time to bound memory. ``return_coc`` adds ``coc`` (1 x P x P, pixels).
    """

    def __init__(
        self,
        sharp_paths: Sequence[str | Path],
        patch: int = 256,
        synth_config: SynthConfig = SynthConfig(),
        length: int = 1000,
        include_dead_leaves: bool = True,
        *,
        seed: int = 0,
        scale_range: tuple[float, float] = (0.5, 1.0),
        color_jitter: float = 0.05,
        augment: bool = True,
        return_coc: bool = False,
        preload: bool = True,
        max_side: int | None = None,
    ) -> None:
        if not sharp_paths and not (include_dead_leaves and synth_config.dead_leaves_fraction > 0):
            raise DataError("SynthPatchDataset needs sharp photos or dead leaves")
        if patch < 8 or length < 1:
            raise DataError(f"need patch >= 8 and length >= 1, got {patch}, {length}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise DataError(f"bad scale range {scale_range}")
        self.paths = [Path(p) for p in sharp_paths]
        self.patch = patch
        self.config = synth_config
        self.length = length
        self.include_dead_leaves = include_dead_leaves
        self.seed = seed
        self.scale_range = scale_range
        self.color_jitter = color_jitter
        self.augment = augment
        self.return_coc = return_coc
        self.max_side = max_side
        self.epoch = 0
        self._photos: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if preload:
            for i in range(len(self.paths)):
                self._photo(i)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose samples items draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _photo(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if i not in self._photos:
            path = self.paths[i]
            img = read_native(path)
            side = find_depth_sidecar(path)
            dep = load_inverse_depth(side) if side is not None else None
            if dep is not None and dep.shape != img.shape[:2]:
                dep = None
            if self.max_side and max(img.shape[:2]) > self.max_side:
                s = self.max_side / max(img.shape[:2])
                size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
                small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                img = small if small.ndim == img.ndim else small[..., None]
                if dep is not None:
                    dep = cv2.resize(dep, size, interpolation=cv2.INTER_NEAREST)
            self._photos[i] = (img, dep)
        return self._photos[i]

    def _photo_patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        img, dep = self._photo(int(rng.integers(len(self.paths))))
        p = self.patch
        h, w = img.shape[:2]
        scale = float(rng.uniform(*self.scale_range))
        side = min(int(math.ceil(p / scale)), h, w)
        y = int(rng.integers(h - side + 1))
        x = int(rng.integers(w - side + 1))
        crop = to_float(img[y : y + side, x : x + side])
        dcrop = None if dep is None else dep[y : y + side, x : x + side]
        if side != p:
            interp = cv2.INTER_AREA if side > p else cv2.INTER_CUBIC
            crop = cv2.resize(crop, (p, p), interpolation=interp)
            if dcrop is not None:
                dcrop = cv2.resize(dcrop, (p, p), interpolation=cv2.INTER_NEAREST)
        return np.clip(as_rgb(crop), 0.0, 1.0), dcrop

    def _jitter(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        j = self.color_jitter
        if j <= 0:
            return img
        gains = rng.uniform(1 - j, 1 + j, 3) * rng.uniform(1 - j, 1 + j)
        return np.clip(img * gains.astype(np.float32), 0.0, 1.0)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The numpy ``(blurred, sharp, coc)`` of item ``index`` in the current epoch."""
        rng = item_rng(_TAG_SYNTH, self.seed, self.epoch, index)
        leaves = self.include_dead_leaves and (not self.paths or rng.uniform() < self.config.dead_leaves_fraction)
        if leaves:
            img, dl_depth = dead_leaves(self.patch, self.patch, rng)
            dep: np.ndarray | None = dl_depth if rng.uniform() < self.config.dead_leaves_own_depth_prob else None
        else:
            img, dep = self._photo_patch(rng)
            img = self._jitter(img, rng)
        if self.augment:
            arrays = _augment([img] + ([dep] if dep is not None else []), rng)
            img, dep = arrays[0], (arrays[1] if dep is not None else None)
        s = synthesize(np.ascontiguousarray(img), rng, self.config, None if dep is None else np.ascontiguousarray(dep))
        return s.blurred, s.sharp, s.coc

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        blurred, sharp, coc = self.sample(index)
        item = {"blur": _to_tensor(blurred), "sharp": _to_tensor(sharp)}
        if self.return_coc:
            item["coc"] = torch.from_numpy(np.ascontiguousarray(coc, dtype=np.float32))[None]
        return item
