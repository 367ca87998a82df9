"""Named evaluation protocols: every switch that changes a published number, in one record.

=========  =========  =====  =====  ======  =====  ==========  ==========================
name       bit depth  round  clamp  crop    Y      SSIM        reproduces
=========  =========  =====  =====  ======  =====  ==========  ==========================
dpdd16     16         no     yes    0       no     uniform7    DPDNet (16-bit PNG / 65535)
dpdd8      8          no     yes    0       no     uniform7    IFAN, Restormer (8-bit / 255)
gkmnet     8          yes    yes    0       no     gaussian11  GKMNet / NRKNet test.py
default    native     no     yes    0       no     gaussian11  our own reports
=========  =========  =====  =====  ======  =====  ==========  ==========================

All use data range 1 on [0,1] values (identical to 255 on 0..255 values), PSNR per image then
averaged over the set, and LPIPS v0.1 AlexNet on RGB inputs mapped to [-1,1] (GKMNet's script
fed [0,1]; we do not reproduce that mistake, and every report says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from gkm_cli.errors import UsageError
from gkm_cli.metrics.conventions import clamp01, crop, quantise, rgb_to_y
from gkm_cli.metrics.fidelity import SSIM_WINDOWS

__all__ = ["LPIPS_CONVENTION", "PROTOCOLS", "Protocol", "get_protocol", "prepare"]

#: How LPIPS is computed under every protocol (recorded in reports).
LPIPS_CONVENTION = "LPIPS v0.1 AlexNet (lin heads), RGB inputs mapped x*2-1 to [-1,1]"


@dataclass(frozen=True)
class Protocol:
    """Every switch of an evaluation convention.

    bit_depth: quantise the ground truth to this many bits (8 or 16); ``None`` keeps the
        files' native precision. Predictions are only rounded when ``round_prediction``.
    round_prediction: round predictions (and inputs) to the ``bit_depth`` grid, or to the
        ground truth's native integer depth when ``bit_depth`` is None (float data: not rounded).
    clamp: clamp predictions to [0,1] before anything else.
    crop_border: pixels removed on every side before all metrics (BasicSR's crop_border).
    crop_top: further rows removed at the top (e.g. 72 for burned-in labels of the dev GIFs).
    y_channel: PSNR/SSIM/MAE on BT.601 luma instead of RGB (LPIPS always uses RGB).
    ssim_window: ``gaussian11`` or ``uniform7`` (see :mod:`gkm_cli.metrics.fidelity`).
    data_range: peak value in [0,1] units for PSNR and SSIM (1 = full scale).
    """

    name: str
    bit_depth: int | None = None
    round_prediction: bool = False
    clamp: bool = True
    crop_border: int = 0
    crop_top: int = 0
    y_channel: bool = False
    ssim_window: str = "gaussian11"
    data_range: float = 1.0
    description: str = ""
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bit_depth is not None and self.bit_depth not in (8, 16):
            raise UsageError(f"bit depth must be 8, 16 or native, got {self.bit_depth}")
        if self.ssim_window not in SSIM_WINDOWS:
            raise UsageError(
                f"unknown SSIM window {self.ssim_window!r} (choose from {', '.join(sorted(SSIM_WINDOWS))})"
            )
        if self.crop_border < 0 or self.crop_top < 0:
            raise UsageError("crop sizes must be >= 0")
        if not self.data_range > 0:
            raise UsageError(f"data range must be positive, got {self.data_range}")

    def with_overrides(self, **changes: Any) -> Protocol:
        """A copy with some switches changed; changed names are listed in ``overrides``."""
        fields = {f.name for f in dataclasses.fields(self)} - {"name", "description", "overrides"}
        unknown = set(changes) - fields
        if unknown:
            raise UsageError(f"unknown protocol switch(es): {', '.join(sorted(unknown))}")
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not real:
            return self
        names = tuple(sorted(set(self.overrides) | set(real)))
        return dataclasses.replace(self, overrides=names, **real)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (plus the LPIPS convention, which no protocol changes)."""
        d = dataclasses.asdict(self)
        d["overrides"] = list(self.overrides)
        d["bit_depth"] = "native" if self.bit_depth is None else self.bit_depth
        d["lpips"] = LPIPS_CONVENTION
        d["psnr_averaging"] = "mean of per-image PSNR"
        return d

    def summary(self) -> str:
        """One line: ``name (bit_depth=8, round=yes, ...)``."""
        bd = "native" if self.bit_depth is None else str(self.bit_depth)
        parts = [
            f"bit_depth={bd}",
            f"round={'yes' if self.round_prediction else 'no'}",
            f"clamp={'yes' if self.clamp else 'no'}",
            f"crop_border={self.crop_border}",
            f"crop_top={self.crop_top}",
            f"y_channel={'yes' if self.y_channel else 'no'}",
            f"ssim={self.ssim_window}",
            f"data_range={self.data_range:g}",
        ]
        name = self.name + ("*" if self.overrides else "")
        return f"{name} ({', '.join(parts)})"


_BUILTIN = (
    Protocol(
        "dpdd16",
        bit_depth=16,
        ssim_window="uniform7",
        description="DPDNet: 16-bit PNG / 65535, float64, output not quantised; "
        "scikit-image SSIM defaults (7x7 uniform, sample covariance)",
    ),
    Protocol(
        "dpdd8",
        bit_depth=8,
        ssim_window="uniform7",
        description="IFAN / Restormer: 8-bit ground truth / 255, output clamped not quantised; "
        "scikit-image SSIM defaults (7x7 uniform, sample covariance)",
    ),
    Protocol(
        "gkmnet",
        bit_depth=8,
        round_prediction=True,
        ssim_window="gaussian11",
        description="GKMNet / NRKNet test.py: prediction rounded to 0..255, peak 255; "
        "pytorch_msssim SSIM (11x11 Gaussian, sigma 1.5, valid)",
    ),
    Protocol(
        "default",
        bit_depth=None,
        ssim_window="gaussian11",
        description="gkm default: native precision, prediction clamped not rounded; "
        "11x11 Gaussian SSIM (sigma 1.5, valid)",
    ),
)

#: Read-only registry of the built-in protocols by name.
PROTOCOLS: Mapping[str, Protocol] = MappingProxyType({p.name: p for p in _BUILTIN})


def get_protocol(name: str | Protocol) -> Protocol:
    """Built-in protocol by name; a :class:`Protocol` passes through."""
    if isinstance(name, Protocol):
        return name
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UsageError(f"unknown protocol {name!r} (choose from {', '.join(PROTOCOLS)})") from None


def _bits_of_grid(protocol: Protocol, gt_bits: int | None) -> int | None:
    return protocol.bit_depth if protocol.bit_depth is not None else gt_bits


def prepare(
    pred: torch.Tensor,
    gt: torch.Tensor,
    protocol: Protocol,
    *,
    gt_bits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply a protocol to a prediction and its ground truth (N x C x H x W in [0,1]).

    ``gt_bits`` is the ground truth's native integer depth (8, 16) or None for float data;
    it sets the rounding grid when the protocol keeps native precision.
    Returns ``(pred_metric, gt_metric, pred_rgb, gt_rgb)``: the pair PSNR/SSIM/MAE use
    (cropped, Y channel if asked) and the cropped RGB pair for LPIPS and previews.
    """
    if protocol.clamp:
        pred = clamp01(pred)
    grid = _bits_of_grid(protocol, gt_bits)
    if protocol.round_prediction and grid is not None:
        pred = quantise(pred, grid)
    if protocol.bit_depth is not None:
        gt = quantise(gt, protocol.bit_depth)
    pred = crop(pred, border=protocol.crop_border, top=protocol.crop_top)
    gt = crop(gt, border=protocol.crop_border, top=protocol.crop_top)
    pred_rgb, gt_rgb = pred, gt
    if protocol.y_channel and pred.shape[1] == 3:
        pred, gt = rgb_to_y(pred), rgb_to_y(gt)
    return pred, gt, pred_rgb, gt_rgb
