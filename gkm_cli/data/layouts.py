"""Recognise paired defocus datasets on disk and list their (blurred, sharp) pairs.

Known layouts (``root`` is the folder the user points at):

========== ============================================================ =====================
name       folders                                                      splits
========== ============================================================ =====================
``dpdd``   ``{train_c,val_c,test_c}/{source,target}``                   the ``*_c`` folders
``lfdof``  ``{train_data,test_data}/{input,ground_truth}``              the ``*_data`` folders
``realdof`` ``source/`` + ``target/``                                    none
``rtf``    ``input/`` or ``blur/`` + ``GT/`` or ``gt/``                  none
``pairs``  ``blur/`` + ``sharp/`` (our generic layout, also what          none
           ``write_synthetic_set`` writes)
========== ============================================================ =====================

Assumptions, since only DPDD and RealDOF document their folders in the papers' code:

- LFDOF: its public archive holds ``train_data`` and ``test_data``, each with ``input``
  (defocused renderings) and ``ground_truth`` (all-in-focus). Several inputs may share one
  ground truth; they are paired by the rules below (a blurred name that starts with the sharp
  name plus ``_``, ``-`` or ``/`` belongs to it). Files may sit in per-scene sub-folders.
- RTF: 22 pairs in an ``input`` (or ``blur``) folder and a ``GT`` (or ``gt``) folder.
- A single DPDD split folder such as ``DPDD/test_c`` has the RealDOF structure and is read as
  ``realdof``; DPDD's dual-pixel ``*_l`` / ``*_r`` folders are ignored.

Pairing, per split: image files are listed recursively in the blurred and sharp folders and
keyed by their path relative to that folder without suffix. A blurred file takes the sharp file
with (1) the same key, else (2) the same key after removing a role word at the end of the name
(``_blur``, ``_input``, ``_source``, ``_gt``, ``_sharp``, ``_target``, ...), else (3) the longest
sharp key that prefixes it followed by ``_``, ``-`` or ``/``. Files left without a partner are
never dropped silently: they are returned in ``PairList.missing`` and announced with a warning
(or a ``DataError`` with ``strict=True``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gkm_cli import images
from gkm_cli.errors import DataError

LayoutName = Literal["dpdd", "lfdof", "realdof", "rtf", "pairs"]

KNOWN_LAYOUTS: tuple[str, ...] = (
    "dpdd: {train_c,val_c,test_c}/{source,target}",
    "lfdof: {train_data,test_data}/{input,ground_truth}",
    "realdof: source/ + target/",
    "rtf: input/ or blur/ + GT/ or gt/",
    "pairs: blur/ + sharp/",
)

_ROLE_WORDS = (
    "blurred",
    "blurry",
    "blur",
    "input",
    "source",
    "defocus",
    "defocused",
    "groundtruth",
    "ground_truth",
    "gt",
    "sharp",
    "target",
    "aif",
    "allinfocus",
)
_ROLE_SUFFIX = re.compile(r"[_\-.](?:" + "|".join(_ROLE_WORDS) + r")$", re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    """One blurred photo and its all-in-focus ground truth."""

    name: str
    blur: Path
    sharp: Path
    split: str = ""


@dataclass(frozen=True)
class MissingPartner:
    """A file whose partner was not found: ``role`` is the side that exists."""

    role: Literal["blur", "sharp"]
    path: Path
    split: str = ""


@dataclass(frozen=True)
class DatasetLayout:
    """A recognised dataset folder.

    ``splits`` names the sub-folders holding pairs (empty for flat layouts); ``blur_dir`` and
    ``sharp_dir`` are the folder names of each role inside a split (or inside ``root``).
    """

    name: LayoutName
    root: Path
    splits: tuple[str, ...]
    blur_dir: str
    sharp_dir: str

    def folders(self, split: str | None = None) -> list[tuple[str, Path, Path]]:
        """``(split, blurred folder, sharp folder)`` for one split or for all of them."""
        if not self.splits:
            if split not in (None, ""):
                raise DataError(f"{self.root}: layout '{self.name}' has no splits (asked for '{split}')")
            return [("", self.root / self.blur_dir, self.root / self.sharp_dir)]
        chosen = self.splits if split is None else (split,)
        for s in chosen:
            if s not in self.splits:
                raise DataError(f"{self.root}: layout '{self.name}' has splits {list(self.splits)}, not '{s}'")
        return [(s, self.root / s / self.blur_dir, self.root / s / self.sharp_dir) for s in chosen]


class PairList(list[Pair]):
    """A ``list`` of :class:`Pair` that also carries the files left without a partner."""

    def __init__(
        self,
        pairs: Iterable[Pair] = (),
        missing: Sequence[MissingPartner] = (),
        layout: DatasetLayout | None = None,
    ) -> None:
        super().__init__(pairs)
        self.missing: tuple[MissingPartner, ...] = tuple(missing)
        self.layout = layout


# ----------------------------------------------------------------------------- image files


def is_image_path(path: str | Path) -> bool:
    """True when the file name has an image suffix ``gkm_cli.images`` reads (case-insensitive)."""
    return images.is_image_path(path)


def read_pixels(path: str | Path) -> tuple[np.ndarray, np.dtype]:
    """Decode an image: float32 H x W x C in [0,1] (sRGB as stored, C = 3 or 1) and its file
    sample type. Raises ``ImageReadError`` for unreadable files."""
    img = images.read_image(path)
    return img.pixels, img.dtype


def read_native(path: str | Path) -> np.ndarray:
    """Decode an image and keep its stored precision: uint8 or uint16 H x W x C (else float32 [0,1]).

    Cheaper to cache than float32 (a quarter or half the memory); :func:`to_float` undoes it
    exactly.
    """
    pixels, dtype = read_pixels(path)
    if dtype == np.uint8:
        return np.rint(pixels * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(pixels * 65535.0).astype(np.uint16)
    return pixels


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float array to float32 in [0,1] (integer codes divided by their maximum)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(65535.0)
    return np.asarray(arr, dtype=np.float32)


# ----------------------------------------------------------------------------- detection


def _dir(root: Path, *names: str) -> str | None:
    """The first of ``names`` that is a folder in ``root`` (exact case first)."""
    for n in names:
        if (root / n).is_dir():
            return n
    return None


def detect_layout(root: str | Path) -> DatasetLayout:
    """Recognise the dataset layout of ``root``; ``DataError`` names the layouts known."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    dpdd = tuple(
        s for s in ("train_c", "val_c", "test_c") if (root / s / "source").is_dir() and (root / s / "target").is_dir()
    )
    if dpdd:
        return DatasetLayout("dpdd", root, dpdd, "source", "target")
    lfdof = tuple(
        s for s in ("train_data", "test_data") if (root / s / "input").is_dir() and (root / s / "ground_truth").is_dir()
    )
    if lfdof:
        return DatasetLayout("lfdof", root, lfdof, "input", "ground_truth")
    if (root / "source").is_dir() and (root / "target").is_dir():
        return DatasetLayout("realdof", root, (), "source", "target")
    blur = _dir(root, "input", "blur")
    gt = _dir(root, "GT", "gt")
    if blur and gt:
        return DatasetLayout("rtf", root, (), blur, gt)
    if (root / "blur").is_dir() and (root / "sharp").is_dir():
        return DatasetLayout("pairs", root, (), "blur", "sharp")
    seen = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())[:12]
    raise DataError(
        f"{root}: no known dataset layout (sub-folders: {', '.join(seen) or 'none'}); "
        f"known layouts: {'; '.join(KNOWN_LAYOUTS)}"
    )


# ----------------------------------------------------------------------------- pairing


def _list_images(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` (recursive, hidden names skipped) keyed by relative path sans suffix."""
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or not is_image_path(p):
            continue
        key = rel.with_suffix("").as_posix()
        if key in out:
            raise DataError(f"{folder}: two images share the name '{key}' ({out[key].name}, {p.name})")
        out[key] = p
    return out


def _strip_role(key: str) -> str:
    return _ROLE_SUFFIX.sub("", key).lower()


def _pair_folder(split: str, blur_dir: Path, sharp_dir: Path) -> tuple[list[Pair], list[MissingPartner]]:
    blurs = _list_images(blur_dir)
    sharps = _list_images(sharp_dir)
    stripped: dict[str, str] = {}
    for key in sharps:
        s = _strip_role(key)
        if s in stripped:
            raise DataError(f"{sharp_dir}: '{stripped[s]}' and '{key}' cannot be told apart")
        stripped[s] = key
    by_length = sorted(sharps, key=len, reverse=True)
    pairs: list[Pair] = []
    used: set[str] = set()
    missing: list[MissingPartner] = []
    for key, path in blurs.items():
        match = key if key in sharps else stripped.get(_strip_role(key))
        if match is None:
            match = next(
                (s for s in by_length if len(key) > len(s) and key.startswith(s) and key[len(s)] in "_-/"),
                None,
            )
        if match is None:
            missing.append(MissingPartner("blur", path, split))
            continue
        used.add(match)
        pairs.append(Pair(key, path, sharps[match], split))
    missing.extend(MissingPartner("sharp", p, split) for k, p in sharps.items() if k not in used)
    return pairs, missing


def list_pairs(root: str | Path, split: str | None = None, *, strict: bool = False) -> PairList:
    """All (blurred, sharp) pairs of the dataset at ``root``, sorted by split then name.

    ``split`` picks one split of a layout that has them (``"test_c"``, ``"train_data"``);
    ``None`` takes all. Files without a partner go to ``.missing`` with a warning, or raise
    ``DataError`` when ``strict``. No pair at all is a ``DataError``.
    """
    layout = detect_layout(root)
    pairs: list[Pair] = []
    missing: list[MissingPartner] = []
    for s, blur_dir, sharp_dir in layout.folders(split):
        p, m = _pair_folder(s, blur_dir, sharp_dir)
        pairs.extend(p)
        missing.extend(m)
    if missing:
        shown = ", ".join(f"{m.role} {m.path}" for m in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        msg = f"{layout.root} ({layout.name}): {len(missing)} file(s) without a partner: {shown}{more}"
        if strict:
            raise DataError(msg)
        warnings.warn(msg, stacklevel=2)
    if not pairs:
        raise DataError(f"{layout.root} ({layout.name}): no image pairs found")
    return PairList(pairs, missing, layout)
