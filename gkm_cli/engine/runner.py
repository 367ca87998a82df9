"""The per-image pipeline: pad, tile, share one image-global context, blend, crop.

For an image of any size, :meth:`Engine.run`:

1. reflect-pads it (virtually: tiles index the unpadded array) to ``spec.size_multiple``;
2. plans tiles (cores aligned to 16 px that partition the padded image, see
   :mod:`gkm_cli.engine.tiling`) from ``--tile`` or from free memory;
3. if the network has image-global context (GGKMNet's alpha, GKMANet's tokens) and there is
   more than one tile, runs a first pass of the feature extractor over every tile, sums
   ``model.context_stats_padded`` over the cores and builds the context ONCE with
   ``model.make_context``;
4. runs every tile with that context and cross-fades neighbouring tiles with raised-cosine
   ramps into full-resolution float32 outputs (image and/or sigma map), cropped to the input.

A single-tile plan runs the network on the unpadded image directly, so it equals ``model(x)``.
Reduced precision runs under autocast; a tile whose output (or context statistics) is not
finite is re-run in fp32. A CUDA out-of-memory error halves the tile and restarts the image.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from gkm_cli.engine.memory import free_memory_bytes
from gkm_cli.engine.tiling import (
    ALIGN,
    MIN_CORE,
    Tile,
    TilePlan,
    TileSettings,
    auto_core,
    axis_support,
    axis_weights,
    default_overlap,
    fits_whole,
    plan_tiles,
    reflect_index,
    round_up,
    single_plan,
)
from gkm_cli.errors import GkmError, SettingError, SettingText, setting_ref
from gkm_cli.nets import Context, ContextStats, GkmNetwork
from gkm_cli.runtime import autocast

Notify = Callable[[str], None]
#: Called as ``on_tile(done, total)`` after each tile pass (context pass + deblur pass).
TileProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineResult:
    """Outputs of one image, cropped to its size: ``image`` H x W x C float32 (C as the input,
    not clamped) and/or ``sigma`` H x W float32 expected blur sigma in input pixels."""

    image: np.ndarray | None
    sigma: np.ndarray | None
    tiles: int
    core: int
    fp32_reruns: int


def _oom_errors() -> tuple[type[BaseException], ...]:
    found = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple({e for e in found if isinstance(e, type)})


def _is_cpu_oom(error: RuntimeError) -> bool:
    text = str(error)
    return "can't allocate memory" in text or "not enough memory" in text


class _OutOfMemory(Exception):
    """Raised inside a run to restart the image with smaller tiles."""


class Engine:
    """A network on a device, with a compute dtype and tiling settings.

    ``notify`` receives one-line messages for the user (e.g. the tile was halved after CUDA
    ran out of memory, said once); one that names a setting is a :class:`SettingText`. The only
    state that changes between images is the tile size after such a fallback. The model is moved
    to ``device``; it runs in eval mode and its previous train/eval mode is restored after every
    run (so training code can validate with it).
    """

    def __init__(
        self,
        model: GkmNetwork,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        tiling: TileSettings = TileSettings(),
        notify: Notify | None = None,
    ) -> None:
        self.model = model.to(device)
        self.device = device
        self.dtype = dtype
        self.tiling = tiling
        self.notify = notify or (lambda message: None)
        spec = model.spec
        self.overlap = (
            default_overlap(spec.tile_overlap if spec.tile_overlap is not None else spec.receptive_radius)
            if tiling.overlap is None
            else tiling.overlap
        )
        if self.overlap < 0:
            raise SettingError("tile_overlap", f"must be >= 0, got {self.overlap}")
        if self.overlap % ALIGN:
            rounded = round_up(self.overlap, ALIGN)
            overlap = setting_ref("tile_overlap")
            self.notify(SettingText(f"{overlap} {self.overlap} rounded up to {rounded} px (a multiple of {ALIGN})"))
            self.overlap = rounded
        if tiling.tile is not None and tiling.tile < ALIGN:
            raise SettingError("tile", f"must be at least {ALIGN} px, got {tiling.tile}")
        self._core_limit: int | None = None  # set after an out-of-memory fallback
        self._warned_oom = False
        self._warned_precision = False
        self._warned_inexact = False

    # --- planning ---------------------------------------------------------------------------
    def plan(self, height: int, width: int) -> TilePlan:
        """Tile plan for an unpadded ``height x width`` image."""
        m = max(self.model.spec.size_multiple, ALIGN)
        hp, wp = round_up(height, m), round_up(width, m)
        core = self.tiling.tile
        if core is None:
            bpp = self.model.spec.bytes_per_pixel
            free = free_memory_bytes(self.device)
            cpu = self.device.type != "cuda"
            if self._core_limit is None and fits_whole(hp, wp, free, bpp, cpu=cpu):
                return single_plan(hp, wp)
            core = auto_core(free, bpp, self.overlap, cpu=cpu)
        else:
            core = max(ALIGN, core // ALIGN * ALIGN)
        if self._core_limit is not None:
            core = min(core, self._core_limit)
        if hp <= core and wp <= core:
            return single_plan(hp, wp)
        return plan_tiles(hp, wp, core, self.overlap)

    # --- running ----------------------------------------------------------------------------
    def run(
        self,
        pixels: np.ndarray,
        *,
        image: bool = True,
        sigma: bool = False,
        on_tile: TileProgress | None = None,
        strength: float = 1.0,
    ) -> EngineResult:
        """Restore an H x W x C float32 array in [0, 1] (C = 1 gray or 3 RGB).

        Gray is replicated to RGB for the network and the three output channels averaged back.
        ``on_tile(done, total)`` reports progress through the tile passes of a tiled image.
        ``strength`` S in [0, 1] blends the restored image with the input,
        ``S * output + (1 - S) * input`` (see :func:`blend_strength`); the sigma map is not blended.
        """
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise ValueError(f"expected H x W x C float32 pixels with C in (1, 3), got {pixels.shape}")
        if not (image or sigma):
            raise ValueError("nothing asked for: set image and/or sigma")
        check_strength(strength)
        while True:
            plan = self.plan(pixels.shape[0], pixels.shape[1])
            try:
                with _eval_mode(self.model):
                    result = self._run_plan(pixels, plan, image, sigma, on_tile or (lambda done, total: None))
                if result.image is None or strength == 1.0:
                    return result
                return dataclasses.replace(result, image=blend_strength(result.image, pixels, strength))
            except _OutOfMemory:
                core = min(plan.core, max(pixels.shape[:2]))
                smaller = max(MIN_CORE, core // 2 // ALIGN * ALIGN)
                if core <= MIN_CORE or smaller >= core:
                    hint = f"try {setting_ref('device')} cpu or a smaller {setting_ref('tile_overlap')}"
                    tried = f"out of memory on {self.device} even with {core} px tiles"
                    raise GkmError(SettingText(f"{tried}; {hint}")) from None
                self._core_limit = smaller
                if not self._warned_oom:
                    self.notify(
                        f"{self.device} ran out of memory: tile size halved to {smaller} px (and kept for later images)"
                    )
                    self._warned_oom = True
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @contextlib.contextmanager
    def _guard_oom(self) -> Iterator[None]:
        try:
            yield
        except _oom_errors():
            raise _OutOfMemory() from None
        except RuntimeError as e:  # the CPU allocator raises a plain RuntimeError
            if not _is_cpu_oom(e):
                raise
            raise _OutOfMemory() from None

    def _tensor(self, pixels: np.ndarray, rows: np.ndarray | slice, cols: np.ndarray | slice) -> torch.Tensor:
        """1 x 3 x h x w float32 tensor on the device from a (row, col) selection of the pixels."""
        if isinstance(rows, slice) or isinstance(cols, slice):  # the whole image: both are slices
            part = pixels[rows, cols]
        else:  # a tile's reflect-padded rows and columns
            part = pixels[np.ix_(rows, cols)]
        t = torch.from_numpy(np.ascontiguousarray(part)).permute(2, 0, 1)[None]
        if t.shape[1] == 1:
            t = t.expand(1, 3, *t.shape[-2:])
        return t.to(self.device, torch.float32, non_blocking=False).contiguous()

    def _tile_tensor(self, pixels: np.ndarray, tile: Tile) -> torch.Tensor:
        top, left, h, w = tile.box
        rows = reflect_index(top, top + h, pixels.shape[0])
        cols = reflect_index(left, left + w, pixels.shape[1])
        return self._tensor(pixels, rows, cols)

    def _context_stats(self, x: torch.Tensor, tile: Tile, plan: TilePlan) -> ContextStats:
        """One tile's context statistics, in float32 (re-run in fp32 if not finite)."""
        core, origin, full = tile.core_in_tile(), (tile.box[0], tile.box[1]), (plan.height, plan.width)
        with autocast(self.device, self.dtype):
            stats = self.model.context_stats_padded(x, core, origin, full)
        assert stats is not None
        stats = _stats_float(stats)
        if self.dtype != torch.float32 and not _stats_finite(stats):
            self._say_precision()
            again = self.model.context_stats_padded(x, core, origin, full)
            assert again is not None
            stats = _stats_float(again)
        return stats

    def _forward(
        self, x: torch.Tensor, context: Context | None, image: bool, sigma: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """One forward pass; returns (image, sigma, re-ran in fp32)."""

        def once(dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            with autocast(self.device, dtype):
                out = self.model(x, context=context)
                img = out.image.float() if image else None
                sig = out.sigma_map().float() if sigma else None
            return img, sig

        img, sig = once(self.dtype)
        if self.dtype != torch.float32 and not all(bool(torch.isfinite(t).all()) for t in (img, sig) if t is not None):
            self._say_precision()
            img, sig = once(torch.float32)
            return img, sig, True
        return img, sig, False

    def _say_precision(self) -> None:
        if not self._warned_precision:
            self.notify("reduced-precision output was not finite for a tile: re-running such tiles in fp32")
            self._warned_precision = True

    def _run_plan(
        self, pixels: np.ndarray, plan: TilePlan, want_image: bool, want_sigma: bool, on_tile: TileProgress
    ) -> EngineResult:
        h, w, c = pixels.shape
        reruns = 0
        with torch.inference_mode(), self._guard_oom():
            if plan.single:
                x = self._tensor(pixels, slice(None), slice(None))
                img, sig, again = self._forward(x, None, want_image, want_sigma)
                reruns += again
                out_img = _to_hwc(img[0], c) if img is not None else None
                out_sig = sig[0, 0].cpu().numpy() if sig is not None else None
                return EngineResult(out_img, out_sig, 1, plan.core, reruns)

            if not self.model.spec.tile_exact and not self._warned_inexact:
                self.notify(
                    SettingText(
                        f"{self.model.spec.name} is not tile-exact (layers pooling whole rows/columns): "
                        "tiled results differ slightly from one-piece ones; "
                        f"a larger {setting_ref('tile')} reduces this"
                    )
                )
                self._warned_inexact = True
            context = None
            passes = len(plan.tiles) * (2 if self.model.uses_context else 1)
            done = 0
            if self.model.uses_context:
                total: ContextStats | None = None
                for tile in plan.tiles:
                    part = self._context_stats(self._tile_tensor(pixels, tile), tile, plan)
                    total = part if total is None else total + part
                    done += 1
                    on_tile(done, passes)
                context = self.model.make_context(total)

            out_img = np.zeros((h, w, c), np.float32) if want_image else None
            out_sig = np.zeros((h, w), np.float32) if want_sigma else None
            for tile in plan.tiles:
                img, sig, again = self._forward(self._tile_tensor(pixels, tile), context, want_image, want_sigma)
                reruns += again
                _blend(tile, plan, (h, w), img, sig, out_img, out_sig)
                done += 1
                on_tile(done, passes)
            return EngineResult(out_img, out_sig, len(plan.tiles), plan.core, reruns)


def check_strength(strength: float) -> None:
    """``strength`` must be a number in [0, 1]."""
    if not 0.0 <= strength <= 1.0:  # also refuses NaN
        raise SettingError("strength", f"must be in [0, 1] (1 = the network's output, 0 = the input), got {strength}")


def blend_strength(output: np.ndarray, pixels: np.ndarray, strength: float) -> np.ndarray:
    """``S * output + (1 - S) * input`` in float32, before any quantisation: a user's control
    for how far the result moves from the photo. S = 0 gives the input's values exactly (so an
    8/16-bit file round-trips bit for bit); S = 1 is never blended (the output unchanged)."""
    s = np.float32(strength)
    return np.ascontiguousarray(s * output + (np.float32(1.0) - s) * pixels, dtype=np.float32)


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _to_hwc(chw: torch.Tensor, channels: int) -> np.ndarray:
    """3 x H x W tensor -> H x W x C float32 array (C = 1: mean of the three channels)."""
    if channels == 1:
        chw = chw.mean(0, keepdim=True)
    return np.ascontiguousarray(chw.permute(1, 2, 0).cpu().numpy(), dtype=np.float32)


def _blend(
    tile: Tile,
    plan: TilePlan,
    size: tuple[int, int],
    img: torch.Tensor | None,
    sig: torch.Tensor | None,
    out_img: np.ndarray | None,
    out_sig: np.ndarray | None,
) -> None:
    """Add one tile's weighted outputs over its support (cropped to the unpadded image)."""
    (ct, cl, ch, cw), (bt, bl) = tile.core, tile.box[:2]
    r0, r1 = axis_support(ct, ct + ch, plan.height, plan.feather)
    c0, c1 = axis_support(cl, cl + cw, plan.width, plan.feather)
    wy = axis_weights(ct, ct + ch, plan.height, plan.feather)
    wx = axis_weights(cl, cl + cw, plan.width, plan.feather)
    # Crop the support to the unpadded image.
    r1c, c1c = min(r1, size[0]), min(c1, size[1])
    if r1c <= r0 or c1c <= c0:
        return
    wy, wx = wy[: r1c - r0], wx[: c1c - c0]
    weight = wy[:, None] * wx[None, :]
    rs, cs = slice(r0 - bt, r1c - bt), slice(c0 - bl, c1c - bl)
    if img is not None and out_img is not None:
        part = _to_hwc(img[0, :, rs, cs], out_img.shape[2])
        out_img[r0:r1c, c0:c1c] += part * weight[:, :, None]
    if sig is not None and out_sig is not None:
        out_sig[r0:r1c, c0:c1c] += sig[0, 0, rs, cs].cpu().numpy() * weight


def _stats_float(stats: ContextStats) -> ContextStats:
    """Context statistics in float32 (they are summed over many tiles)."""
    return ContextStats(
        sums=[s.float() for s in stats.sums],
        count=list(stats.count),
        grid_sums=[s.float() for s in stats.grid_sums] if stats.grid_sums is not None else None,
        grid_count=[s.float() for s in stats.grid_count] if stats.grid_count is not None else None,
    )


def _stats_finite(stats: ContextStats) -> bool:
    tensors = list(stats.sums) + list(stats.grid_sums or [])
    return all(bool(torch.isfinite(t).all()) for t in tensors)
