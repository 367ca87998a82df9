"""Tile planning and raised-cosine feather blending (pure functions, no torch).

Vocabulary (all sizes in pixels of the image padded to ``spec.size_multiple``):

* **core**: the part of the image a tile is responsible for. Cores are aligned to 16 px and
  partition the padded image; they are what ``--tile`` sizes (like Real-ESRGAN's ``--tile``).
* **overlap**: context read around a core on each side (``--tile-overlap``, default the
  network's ``receptive_radius`` rounded up to 16). The network input of a tile is its core
  grown by the overlap and clipped to the image, so at most ``tile + 2 * overlap`` square.
* **feather**: width of the band centred on each boundary between two cores in which the two
  tiles' outputs are cross-faded with complementary raised-cosine ramps (they sum to 1, so no
  normalisation pass is needed). Outside the bands every pixel comes from exactly one tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Tile origins, cores and overlaps are multiples of this (the networks' coarsest stride).
ALIGN = 16
#: Smallest core the auto planner or the CUDA out-of-memory fallback will use.
MIN_CORE = 64
#: Fraction of the overlap used as the feather band (the rest keeps blended pixels away from
#: the tile's own zero-padded borders, where its features are least like the whole image's).
FEATHER_FRACTION = 0.5

#: Auto tiling uses at most this fraction of the free memory ...
FREE_FRACTION = 0.5
#: ... and on the CPU at most this many bytes per tile (the spec's measured bytes per pixel
#: times the tile's pixels), which keeps a 24 MP 16-bit TIFF under 3 GiB peak RSS.
CPU_TILE_BUDGET = 1536 << 20


@dataclass(frozen=True)
class TileSettings:
    """User tiling choices: ``tile`` core size and ``overlap`` margin in px (None: automatic)."""

    tile: int | None = None
    overlap: int | None = None


@dataclass(frozen=True)
class Tile:
    """One network input box ``(top, left, height, width)`` and its core box, both in padded px."""

    box: tuple[int, int, int, int]
    core: tuple[int, int, int, int]

    def core_in_tile(self) -> tuple[int, int, int, int]:
        """The core relative to the tile's top-left corner (what context_stats_padded wants)."""
        return (self.core[0] - self.box[0], self.core[1] - self.box[1], self.core[2], self.core[3])


@dataclass(frozen=True)
class TilePlan:
    """Tiles over a padded ``height x width`` image, row-major; ``feather`` band width in px."""

    height: int
    width: int
    core: int
    overlap: int
    feather: int
    tiles: tuple[Tile, ...]

    @property
    def single(self) -> bool:
        """True when one tile covers the whole image (no blending, no context pass)."""
        return len(self.tiles) == 1


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def default_overlap(margin: int) -> int:
    """Default ``--tile-overlap``: the spec's tile overlap (or receptive radius) rounded up to 16 px."""
    return round_up(max(0, margin), ALIGN)


def split_axis(length: int, core: int, align: int = ALIGN) -> list[tuple[int, int]]:
    """Partition ``[0, length)`` (a multiple of ``align``) into as few aligned intervals of at
    most ``core`` px as possible, sizes as equal as the alignment allows."""
    if length % align or length <= 0:
        raise ValueError(f"length {length} must be a positive multiple of {align}")
    units, per = length // align, max(1, core // align)
    count = -(-units // per)
    base, extra = divmod(units, count)
    edges, start = [], 0
    for i in range(count):
        size = (base + (1 if i < extra else 0)) * align
        edges.append((start, start + size))
        start += size
    return edges


def plan_tiles(height: int, width: int, core: int, overlap: int, align: int = ALIGN) -> TilePlan:
    """Tiles for a padded ``height x width`` image: cores of at most ``core`` px that partition
    it, each grown by ``overlap`` px per side (clipped to the image); all edges ``align``-ed."""
    if core < align:
        raise ValueError(f"tile core {core} px is smaller than the alignment {align} px")
    if overlap < 0 or overlap % align:
        raise ValueError(f"overlap {overlap} must be a non-negative multiple of {align}")
    rows, cols = split_axis(height, core, align), split_axis(width, core, align)
    smallest = min(b - a for a, b in rows + cols)
    feather = min(int(overlap * FEATHER_FRACTION), smallest) // 2 * 2
    tiles = []
    for r0, r1 in rows:
        for c0, c1 in cols:
            t0, t1 = max(0, r0 - overlap), min(height, r1 + overlap)
            l0, l1 = max(0, c0 - overlap), min(width, c1 + overlap)
            tiles.append(Tile(box=(t0, l0, t1 - t0, l1 - l0), core=(r0, c0, r1 - r0, c1 - c0)))
    return TilePlan(height, width, core, overlap, feather, tuple(tiles))


def single_plan(height: int, width: int) -> TilePlan:
    """The trivial plan: one tile, the whole padded image."""
    box = (0, 0, height, width)
    return TilePlan(height, width, max(height, width), 0, 0, (Tile(box, box),))


def raised_cosine(n: int) -> np.ndarray:
    """Ramp from ~0 to ~1 over ``n`` px: ``0.5 - 0.5 cos(pi (i + 0.5) / n)``; r[i] + r[n-1-i] = 1."""
    i = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / n)).astype(np.float32)


def axis_support(start: int, stop: int, length: int, feather: int) -> tuple[int, int]:
    """Interval of padded px a core ``[start, stop)`` contributes to: the core widened by half
    the feather band at every edge that is not an image edge."""
    half = feather // 2
    return (start - half if start > 0 else 0, stop + half if stop < length else length)


def axis_weights(start: int, stop: int, length: int, feather: int) -> np.ndarray:
    """Blend weights over :func:`axis_support` of a core ``[start, stop)``: 1 inside, a
    raised-cosine ramp across each inner boundary band. Neighbours' weights sum to 1."""
    lo, hi = axis_support(start, stop, length, feather)
    w = np.ones(hi - lo, dtype=np.float32)
    if feather > 0:
        ramp = raised_cosine(feather)
        if start > 0:
            w[:feather] = ramp
        if stop < length:
            w[-feather:] = ramp[::-1]
    return w


def auto_core(
    free_bytes: int,
    bytes_per_pixel: int,
    overlap: int,
    *,
    cpu: bool,
    fraction: float = FREE_FRACTION,
    cpu_budget: int = CPU_TILE_BUDGET,
) -> int:
    """Largest aligned core whose tile (core + 2 * overlap, square) fits the memory budget:
    ``fraction`` of ``free_bytes``, and at most ``cpu_budget`` on the CPU. At least
    :data:`MIN_CORE`."""
    budget = free_bytes * fraction
    if cpu:
        budget = min(budget, cpu_budget)
    side = math.isqrt(max(0, int(budget // max(1, bytes_per_pixel))))
    core = (side - 2 * overlap) // ALIGN * ALIGN
    return max(MIN_CORE, core)


def fits_whole(height: int, width: int, free_bytes: int, bytes_per_pixel: int, *, cpu: bool) -> bool:
    """True when the whole padded image fits the same budget :func:`auto_core` uses."""
    budget = free_bytes * FREE_FRACTION
    if cpu:
        budget = min(budget, CPU_TILE_BUDGET)
    return height * width * bytes_per_pixel <= budget


def reflect_index(start: int, stop: int, n: int) -> np.ndarray:
    """Source rows (or columns) for padded positions ``[start, stop)`` of an axis of length
    ``n``: identity inside, mirrored without repeating the edge beyond it (torch's "reflect"
    padding), clamped where the pad is longer than the image."""
    i = np.arange(start, stop)
    i = np.where(i >= n, 2 * (n - 1) - i, i)
    return np.clip(i, 0, n - 1)
