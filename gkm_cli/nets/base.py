"""What every network of the family shares: the typed description, outputs and image context.

Image-global quantities (GGKMNet's alpha from global average pooling, GKMANet's attention
tokens) are split out as a :class:`Context` so the tiling engine can compute them once per image
(summing :class:`ContextStats` over tiles) and give every tile the same values: tiled and
untiled runs then agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.nets.blocks import HasFastPaths
from gkm_cli.ops.gaussian import ConvMethod
from gkm_cli.ops.pyramid import build_pyramid, upsample_to

#: What one scale step hands to the next (recurrent cell states by name: per-network contents).
RecurrentState = dict[str, Any]


class NetworkConfig(Protocol):
    """An architecture's config: a dataclass (checkpoints record it with ``dataclasses.asdict``)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


@dataclass(frozen=True)
class PretrainedWeights:
    """Where an architecture's shipped weights are and what they must hash to (like timm's
    pretrained configs): ``filename`` inside the models folder
    (:func:`gkm_cli.nets.checkpoint.models_dir`), ``sha256`` of the whole file, checked on every
    load so a truncated or corrupt download fails with one line instead of odd pixels."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """Static description of an architecture, read by the engine (nothing hard-codes quirks).

    ``size_multiple``: H and W are padded (reflect) to a multiple of this inside the network.
    ``receptive_radius``: pixels of context that matter for one output pixel. ``tile_overlap``:
    the engine's default tile overlap (None: the receptive radius); set where a measurement
    shows a smaller margin already agrees with the untiled run far beyond what an 8/16-bit file
    can show (docs/PERFORMANCE.md). ``tile_exact``: tiled output equals untiled up to float
    error (false when a layer pools over whole rows/columns, like GKMNet's triplet attention).
    ``bytes_per_pixel``: peak working memory of one fp32 inference forward per input pixel on
    the CPU, measured (``scripts/measure_bytes_per_pixel.py``) with a margin; auto tiling sizes
    tiles from it, so an underestimate risks running out of memory and an overestimate costs
    speed (smaller tiles, more overlap). ``paper_macs_720p``: the paper's MAC count at 1280 x 720,
    printed beside the measured one by ``gkm benchmark``. ``loss_recipe``: the training loss of
    the paper (a key of ``gkm_cli.training.losses.RECIPES``). ``pretrained``: the shipped
    weights (file name and sha256).
    """

    name: str
    paper: str
    size_multiple: int
    receptive_radius: int
    tile_exact: bool
    supports_bf16: bool = True
    supports_fp16: bool = True
    paper_params: float | None = None  # millions, inference, as printed in the paper
    default: bool = False
    tile_overlap: int | None = None
    bytes_per_pixel: int = 6144  # conservative for architectures nobody measured
    paper_macs_720p: float | None = None  # the paper's "#MACs" at 1280 x 720 in G (thop-MACs / 2)
    loss_recipe: str | None = None  # training/losses.py RECIPES key; None: not trainable with gkm train
    pretrained: PretrainedWeights | None = None  # the shipped weights, if any


@dataclass
class ContextStats:
    """Summable statistics of the bottleneck features of one image region, per scale.

    ``sums[t]``: N x C feature sums at scale t; ``count[t]``: number of pixels summed.
    ``grid_sums[t]``/``grid_count[t]``: N x C x G x G sums over a G x G grid of the whole image
    (GKMANet's attention tokens) and the per-bin pixel counts, or None.
    """

    sums: list[torch.Tensor]
    count: list[float]
    grid_sums: list[torch.Tensor] | None = None
    grid_count: list[torch.Tensor] | None = None

    def __add__(self, other: ContextStats) -> ContextStats:
        grid_sums = grid_count = None
        if self.grid_sums is not None and other.grid_sums is not None:
            grid_sums = [a + b for a, b in zip(self.grid_sums, other.grid_sums)]
            grid_count = [a + b for a, b in zip(self.grid_count or [], other.grid_count or [])]
        return ContextStats(
            sums=[a + b for a, b in zip(self.sums, other.sums)],
            count=[a + b for a, b in zip(self.count, other.count)],
            grid_sums=grid_sums,
            grid_count=grid_count,
        )


@dataclass
class Context:
    """Per-image global inputs of a forward pass, one entry per scale (coarse to fine)."""

    vectors: list[torch.Tensor] = field(default_factory=list)  # N x D per scale
    tokens: list[torch.Tensor] | None = None  # N x G*G x C per scale


@dataclass
class DeblurOutput:
    """Result of a forward pass (all tensors cropped to the input's size at their scale).

    ``image``: finest-scale estimate N x 3 x H x W (not clamped). ``scales``: per-scale estimates,
    coarse to fine (H/4, H/2, H for T = 3). ``spatial_weights``: N x P x H x W non-negative
    weights of the P blur groups at the finest scale; ``group_sigmas``: N x P effective sigma of
    each group in input pixels (alpha-weighted for GGKM). ``reconstruction``: per-scale re-blurred
    inputs from the Self-Reconstruction Module (training only) or None.
    """

    image: torch.Tensor
    scales: list[torch.Tensor]
    spatial_weights: torch.Tensor
    group_sigmas: torch.Tensor
    coefficients: dict[str, torch.Tensor] = field(default_factory=dict)
    reconstruction: list[torch.Tensor] | None = None

    def sigma_map(self, eps: float = 1e-6) -> torch.Tensor:
        """Expected blur sigma per pixel (N x 1 x H x W, input pixels): sum_k w_k sigma_k / sum_k w_k."""
        w = self.spatial_weights
        num = (w * self.group_sigmas[:, :, None, None]).sum(1, keepdim=True)
        return num / (w.sum(1, keepdim=True) + eps)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad bottom/right so H and W are multiples; returns the padded tensor and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def crop_scale(x: torch.Tensor, size: tuple[int, int], factor: int) -> torch.Tensor:
    """Crop a scale-``1/factor`` tensor to the unpadded input's extent at that scale (ceil)."""
    h, w = -(-size[0] // factor), -(-size[1] // factor)
    return x[..., :h, :w]


class GkmNetwork(nn.Module):
    """Base class: pads, builds the pyramid, runs the scale recurrence, crops back.

    Subclasses implement :meth:`features` (the extractor on y at one scale) and :meth:`step`
    (one scale of the recurrence); networks with image-global context also implement
    :meth:`scale_stats` and :meth:`make_context` and set ``uses_context``.
    """

    spec: ModelSpec
    config: NetworkConfig
    scales_count: int = 3
    uses_context: bool = False
    #: Fast inference paths on (default) or the plain reference path; see :meth:`reference_mode`.
    fast_paths: bool = True

    # --- fast paths vs reference ---------------------------------------------------------
    def set_fast_paths(self, enabled: bool) -> GkmNetwork:
        """Switch every fast path of this network (and its submodules) on or off; returns self.

        Off = the reference path: the direct 2-D Gaussian bank, BatchNorm as a separate layer,
        unfused multiply + 1 x 1 summation, permuted triplet attention. Both compute the same
        function up to float rounding (tests hold them to 1e-4 in fp32).
        """
        for m in self.modules():
            if hasattr(type(m), "fast_paths"):
                cast(HasFastPaths, m).fast_paths = enabled
        return self

    @contextmanager
    def reference_mode(self) -> Iterator[GkmNetwork]:
        """``with model.reference_mode(): model(y)`` runs the reference path, then restores."""
        saved = [cast(HasFastPaths, m) for m in self.modules() if hasattr(type(m), "fast_paths")]
        flags = [m.fast_paths for m in saved]
        self.set_fast_paths(False)
        try:
            yield self
        finally:
            for m, flag in zip(saved, flags):
                m.fast_paths = flag

    def feature_input(self, y_t: torch.Tensor) -> torch.Tensor:
        """The extractor's input: channels_last on the CPU in fast mode (oneDNN's convolutions
        then skip their NCHW reorders, ~1.4x faster extractors), else ``y_t`` unchanged."""
        if self.fast_paths and y_t.device.type == "cpu":
            return y_t.contiguous(memory_format=torch.channels_last)
        return y_t

    def gaussian_method(self) -> ConvMethod:
        """The Gaussian-bank method in use: the config's (``auto`` by default), ``direct`` in
        reference mode. Networks without a Gaussian bank (spandrel's) have no such field."""
        configured: ConvMethod = getattr(self.config, "gaussian_method", "auto")
        return configured if self.fast_paths else "direct"

    def features(self, y_t: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(
        self,
        t: int,
        y_t: torch.Tensor,
        x_up: torch.Tensor,
        feats: dict[str, torch.Tensor],
        state: RecurrentState,
        context: Context | None,
        reconstruct: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    # --- global context -------------------------------------------------------------------
    def scale_stats(
        self,
        feats: dict[str, torch.Tensor],
        core: tuple[int, int, int, int],
        origin: tuple[int, int],
        full: tuple[int, int],
    ) -> ContextStats:
        """Stats of one scale's features; all boxes in that scale's pixels (see below)."""
        raise NotImplementedError

    def make_context(self, stats: ContextStats | None) -> Context | None:
        del stats
        return None

    def context_stats_padded(
        self,
        y_tile: torch.Tensor,
        core: tuple[int, int, int, int] | None = None,
        origin: tuple[int, int] = (0, 0),
        full: tuple[int, int] | None = None,
        feats: list[dict[str, torch.Tensor]] | None = None,
    ) -> ContextStats | None:
        """Context statistics of the region ``core`` = (top, left, height, width) of a tile.

        ``y_tile`` is cut from the whole image padded to ``spec.size_multiple``, at ``origin``
        (top, left); ``full`` is that padded image's (H, W). ``core`` is in tile pixels (None:
        the whole tile); cores must be aligned to ``size_multiple`` and partition the image, so
        summing the tiles' stats gives exactly the whole image's. None without global context.
        """
        if not self.uses_context:
            return None
        h, w = y_tile.shape[-2:]
        core = core or (0, 0, h, w)
        full = full or (h, w)
        if feats is None:
            feats = [self.features(self.feature_input(y_t)) for y_t in build_pyramid(y_tile, self.scales_count)]
        total: ContextStats | None = None
        for t, f in enumerate(feats):
            k = 2 ** (self.scales_count - 1 - t)
            top, left, height, width = core
            part = self.scale_stats(
                f,
                (top // k, left // k, height // k, width // k),
                (origin[0] // k, origin[1] // k),
                (full[0] // k, full[1] // k),
            )
            total = part if total is None else _concat_scales(total, part)
        return total

    def context(self, y: torch.Tensor) -> Context | None:
        """Context of a whole image (N x 3 x H x W in [0, 1])."""
        padded, _ = pad_to_multiple(y, self.spec.size_multiple)
        return self.make_context(self.context_stats_padded(padded))

    # --- forward ---------------------------------------------------------------------------
    def forward(
        self,
        y: torch.Tensor,
        context: Context | None = None,
        *,
        reconstruct: bool = False,
    ) -> DeblurOutput:
        """Deblur N x 3 x H x W in [0, 1] (any H, W). ``context``: from :meth:`context` or the
        engine's tile accumulation (None: computed from ``y``). ``reconstruct``: also run the
        training-only Self-Reconstruction Module where the network has one."""
        if y.dim() != 4 or y.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W input, got {tuple(y.shape)}")
        padded, size = pad_to_multiple(y, self.spec.size_multiple)
        pyramid = build_pyramid(padded, self.scales_count)
        feats = [self.features(self.feature_input(y_t)) for y_t in pyramid]
        if context is None and self.uses_context:
            context = self.make_context(self.context_stats_padded(padded, feats=feats))
        state: RecurrentState = {}
        x_prev = pyramid[0]
        outputs: list[torch.Tensor] = []
        recon: list[torch.Tensor] = []
        last: dict[str, torch.Tensor] = {}
        for t, y_t in enumerate(pyramid):
            x_up = upsample_to(x_prev, (y_t.shape[-2], y_t.shape[-1]))
            x_t, last = self.step(t, y_t, x_up, feats[t], state, context, reconstruct)
            outputs.append(x_t)
            if "reconstruction" in last:
                recon.append(last["reconstruction"])
            x_prev = x_t
        factors = [2 ** (self.scales_count - 1 - t) for t in range(self.scales_count)]
        scales = [crop_scale(o, size, f) for o, f in zip(outputs, factors)]
        return DeblurOutput(
            image=scales[-1],
            scales=scales,
            spatial_weights=crop_scale(last["spatial_weights"], size, 1),
            group_sigmas=last["group_sigmas"],
            coefficients={k[5:]: v for k, v in last.items() if k.startswith("coef_")},
            reconstruction=[crop_scale(r, size, f) for r, f in zip(recon, factors)] if recon else None,
        )

    def inference_parameters(self) -> int:
        """Trainable parameters used at inference (training-only heads excluded)."""
        return sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and not n.startswith("srm."))


def _concat_scales(a: ContextStats, b: ContextStats) -> ContextStats:
    """Append scale lists of ``b`` after ``a`` (building per-scale stats, not summing)."""
    return ContextStats(
        sums=a.sums + b.sums,
        count=a.count + b.count,
        grid_sums=(a.grid_sums or []) + (b.grid_sums or []) if a.grid_sums is not None else None,
        grid_count=(a.grid_count or []) + (b.grid_count or []) if a.grid_count is not None else None,
    )


def region_sum(x: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Sum of N x C x H x W over the spatial box (top, left, height, width): N x C."""
    top, left, h, w = box
    return x[..., top : top + h, left : left + w].sum(dim=(-2, -1))


def grid_sums(
    x: torch.Tensor,
    box: tuple[int, int, int, int],
    origin: tuple[int, int],
    full: tuple[int, int],
    grid: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of a box of x into a ``grid`` x ``grid`` partition of the whole image.

    ``origin`` is the tile's position and ``full`` the whole image's size, both in x's pixels;
    pixel (i, j) of the image falls in bin (i * grid // H, j * grid // W). Returns N x C x G x G
    sums and the G x G pixel counts.
    """
    top, left, h, w = box
    region = x[..., top : top + h, left : left + w]
    rows = (torch.arange(h, device=x.device) + origin[0] + top) * grid // full[0]
    cols = (torch.arange(w, device=x.device) + origin[1] + left) * grid // full[1]
    one_hot_r = F.one_hot(rows, grid).to(x.dtype)  # h x G
    one_hot_c = F.one_hot(cols, grid).to(x.dtype)  # w x G
    sums = torch.einsum("nchw,hg,wk->ncgk", region, one_hot_r, one_hot_c)
    counts = one_hot_r.sum(0)[:, None] * one_hot_c.sum(0)[None, :]
    return sums, counts
