"""Settings of the synthesis and what one sample records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from gkm_cli.errors import UsageError

ApertureKind = Literal["disk", "polygon", "gaussian", "gengauss", "mix"]


APERTURE_KINDS: tuple[str, ...] = ("disk", "polygon", "gaussian", "gengauss", "mix")


DEPTH_KINDS: tuple[str, ...] = ("layers", "plane", "constant")


@dataclass(frozen=True)
class Aperture:
    """Shape of the PSF. ``rotation`` in radians; ``beta`` is the generalised-Gaussian exponent
    (2 = Gaussian, large = disk); ``ring`` weights the aperture by ``1 + ring * (d/r)^2``
    (positive: bright rim); ``mix`` is the Gaussian share of a ``mix`` kernel."""

    kind: ApertureKind = "disk"
    blades: int = 6
    rotation: float = 0.0
    beta: float = 2.0
    ring: float = 0.0
    mix: float = 0.5


@dataclass(frozen=True)
class Lens:
    """Thin-lens state in inverse-depth units: ``focus`` is the in-focus inverse depth and
    ``coc_scale`` the CoC radius in pixels per unit of inverse depth away from it."""

    focus: float
    coc_scale: float
    aperture: Aperture = Aperture()


@dataclass(frozen=True)
class SynthConfig:
    """Distribution of the synthetic defocus. Radii in pixels of the output image."""

    max_radius: float = 12.0
    """Largest CoC radius anywhere (clip), pixels."""
    min_peak_radius: float = 1.0
    """The largest CoC of a blurred sample is drawn uniformly in [min_peak_radius, max_radius]."""
    in_focus_prob: float = 0.2
    """Share of samples with no blur at all (noise and JPEG still apply)."""
    focus_on_content_prob: float = 0.7
    """Focus at the depth of a random pixel (else anywhere around the scene's depth range)."""
    aperture_probs: tuple[tuple[str, float], ...] = (
        ("disk", 0.4),
        ("polygon", 0.25),
        ("mix", 0.15),
        ("gengauss", 0.1),
        ("gaussian", 0.1),
    )
    blades: tuple[int, int] = (5, 9)
    ring: tuple[float, float] = (-0.3, 0.5)
    gengauss_beta: tuple[float, float] = (1.2, 6.0)
    depth_probs: tuple[tuple[str, float], ...] = (("layers", 0.6), ("plane", 0.25), ("constant", 0.15))
    layer_min_step: float = 0.5
    """Radius quantisation step near focus, pixels."""
    layer_rel_step: float = 0.15
    """Radius quantisation step as a share of the radius (coarser for large blur)."""
    linear_light: bool = True
    """Blur in linear light (inverse sRGB before, sRGB after)."""
    match_mean: bool = True
    """Scale each blurred channel so its mean equals the sharp one (after noise, before JPEG)."""
    noise_prob: float = 0.85
    shot_noise: tuple[float, float] = (2e-5, 2e-3)
    """Poisson part: variance per unit of linear signal, log-uniform range."""
    read_noise: tuple[float, float] = (2e-4, 4e-3)
    """Gaussian part: standard deviation in linear units, log-uniform range."""
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)
    dead_leaves_fraction: float = 0.3
    """Share of samples drawn on procedural dead-leaves images instead of photos."""
    dead_leaves_own_depth_prob: float = 0.5
    """Dead-leaves samples that use the discs' occlusion order as depth."""

    def __post_init__(self) -> None:
        if not (0 < self.max_radius <= 64) or not (0 <= self.min_peak_radius <= self.max_radius):
            raise UsageError(f"need 0 <= min_peak_radius <= max_radius <= 64, got {self}")
        for name in (
            "in_focus_prob",
            "focus_on_content_prob",
            "noise_prob",
            "jpeg_prob",
            "dead_leaves_fraction",
            "dead_leaves_own_depth_prob",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"SynthConfig.{name} must be in [0, 1]")
        for kind, p in self.aperture_probs:
            if kind not in APERTURE_KINDS or p < 0:
                raise UsageError(f"bad aperture entry ({kind!r}, {p}); kinds: {APERTURE_KINDS}")
        for kind, p in self.depth_probs:
            if kind not in DEPTH_KINDS or p < 0:
                raise UsageError(f"bad depth entry ({kind!r}, {p}); kinds: {DEPTH_KINDS}")
        if self.layer_min_step <= 0 or self.layer_rel_step < 0:
            raise UsageError("layer steps must be positive")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise UsageError("jpeg_quality must be a range inside [1, 100]")
        if self.blades[0] < 3 or self.blades[1] < self.blades[0]:
            raise UsageError("blades must be a range starting at 3 or more")


@dataclass(frozen=True)
class SynthParams:
    """Everything drawn for one sample (zero noise / quality 0 = not applied)."""

    lens: Lens
    in_focus: bool
    depth_kind: str
    shot_noise: float
    read_noise: float
    jpeg_quality: int
    noise_seed: int


@dataclass(frozen=True, eq=False)
class SynthSample:
    """``blurred`` and ``sharp``: H x W x 3 float32 sRGB in [0,1]; ``coc``: H x W float32 CoC
    radius in pixels actually applied at each pixel (after layer quantisation)."""

    blurred: np.ndarray
    sharp: np.ndarray
    coc: np.ndarray
    params: SynthParams | None = field(default=None, compare=False)


def config_from_dict(d: Mapping[str, Any]) -> SynthConfig:
    """Rebuild a :class:`SynthConfig` from ``asdict`` output (as stored in ``synth.json``)."""
    fields = {k: v for k, v in d.items() if k in SynthConfig.__dataclass_fields__}
    for k, v in list(fields.items()):
        if isinstance(v, list):
            fields[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return SynthConfig(**fields)
