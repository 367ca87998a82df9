"""Physically based synthetic defocus, rendered on the fly from sharp photos (numpy + OpenCV).

The model, in order (all images H x W x 3 float32; sRGB in [0,1] unless said otherwise):

1. Geometry: an *inverse depth* map ``u`` (1/distance in any unit; larger = nearer). A disparity
   map is already inverse depth up to an offset and a scale, and both cancel below. Maps come
   from the caller (a real disparity map, invalid pixels filled with their nearest valid value),
   from :func:`random_inv_depth` (smooth layers with sharp occlusion edges, planes, constants)
   or from :func:`dead_leaves` (each disc its own depth, in occlusion order).
2. Thin lens: the circle of confusion of a point at distance S when focused at S1 is
   ``c = A f / (S1 - f) * |S - S1| / S = A f S1 / (S1 - f) * |1/S1 - 1/S|``, so its radius in
   pixels is ``coc_scale * |u - focus|`` with ``coc_scale = A f S1 / (2 p (S1 - f))``
   (:func:`thin_lens_coc_scale`). Radii are clipped at ``max_radius`` (pixels, output scale).
3. PSF: per layer, a kernel of that radius that sums to 1: an anti-aliased disk (the base),
   a regular polygon with 5-9 blades, a Gaussian, a generalised Gaussian, or a disk/Gaussian
   mix; disks and polygons may have a brighter or darker rim (spherical aberration). All kinds
   share the second moment of the disk of the same radius (Gaussian sigma = r/2).
4. Layered compositing in linear light: signed radii ``coc_scale * (u - focus)`` are quantised
   into layers (steps of max(0.5 px, 15 %)), then, far to near, each layer's premultiplied
   colour and alpha are blurred with its PSF and laid *over* the result. Each layer is first
   extended a little behind the nearer layers (nearest-pixel fill) so a blurred background does
   not darken or take the colour of an in-focus occluder, and an in-focus occluder keeps its
   edge exactly. The sum is divided by the accumulated alpha.
5. Camera: re-encode to sRGB; Poisson-Gaussian noise in linear light (variance
   ``shot * x + read^2``); then scale each channel so its mean equals the sharp image's (the
   concave sRGB curve brightens blurred high-contrast areas: 3 levels of 255 on average and up
   to 13 on astronaut crops; clipped noise adds about 1; a network would learn that shift as a
   colour change); a JPEG round trip (quality 60-95) with some probability.

Randomness comes only from the ``numpy.random.Generator`` passed in.

Modules: ``config`` (settings, parameters, samples), ``depth`` and ``dead_leaves`` (step 1),
``optics`` (thin lens and PSFs, steps 2-3), ``render`` (colour space and compositing, step 4),
``camera`` (step 5), ``sampling`` (draw and render one sample), ``sets`` (fixed sets on disk).
Every public name is importable from ``gkm_cli.data.synth``.
"""

from __future__ import annotations

from gkm_cli.data.synth.camera import add_noise, jpeg_roundtrip, match_mean
from gkm_cli.data.synth.config import (
    APERTURE_KINDS,
    DEPTH_KINDS,
    Aperture,
    ApertureKind,
    Lens,
    SynthConfig,
    SynthParams,
    SynthSample,
    config_from_dict,
)
from gkm_cli.data.synth.dead_leaves import dead_leaves
from gkm_cli.data.synth.depth import fill_invalid, find_depth_sidecar, load_inverse_depth, random_inv_depth
from gkm_cli.data.synth.optics import convolve, psf_kernel, radius_levels, thin_lens_coc_scale
from gkm_cli.data.synth.render import as_rgb, linear_to_srgb, render_defocus, srgb_to_linear
from gkm_cli.data.synth.sampling import apply_params, item_rng, sample_aperture, sample_params, synthesize
from gkm_cli.data.synth.sets import write_synthetic_set

__all__ = [
    "APERTURE_KINDS",
    "DEPTH_KINDS",
    "Aperture",
    "ApertureKind",
    "Lens",
    "SynthConfig",
    "SynthParams",
    "SynthSample",
    "add_noise",
    "apply_params",
    "as_rgb",
    "config_from_dict",
    "convolve",
    "dead_leaves",
    "fill_invalid",
    "find_depth_sidecar",
    "item_rng",
    "jpeg_roundtrip",
    "linear_to_srgb",
    "load_inverse_depth",
    "match_mean",
    "psf_kernel",
    "radius_levels",
    "random_inv_depth",
    "render_defocus",
    "sample_aperture",
    "sample_params",
    "srgb_to_linear",
    "synthesize",
    "thin_lens_coc_scale",
    "write_synthetic_set",
]
