"""Drawing the parameters of a sample and rendering it: the on-the-fly entry point."""

from __future__ import annotations

import math

import numpy as np

from gkm_cli.data.synth.camera import add_noise, jpeg_roundtrip, match_mean
from gkm_cli.data.synth.config import Aperture, Lens, SynthConfig, SynthParams, SynthSample
from gkm_cli.data.synth.depth import fill_invalid, random_inv_depth
from gkm_cli.data.synth.render import as_rgb, render_defocus

_F32 = np.float32


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_aperture(rng: np.random.Generator, config: SynthConfig) -> Aperture:
    """Draw a lens aperture per ``config.aperture_probs``."""
    kinds, probs = zip(*config.aperture_probs)
    p = np.asarray(probs, dtype=np.float64)
    kind = str(kinds[int(rng.choice(len(kinds), p=p / p.sum()))])
    blades = int(rng.integers(config.blades[0], config.blades[1] + 1))
    rotation = float(rng.uniform(0, 2 * math.pi))
    ring = float(rng.uniform(*config.ring)) if kind in ("disk", "polygon", "mix") else 0.0
    beta = float(rng.uniform(*config.gengauss_beta)) if kind == "gengauss" else 2.0
    mix = float(rng.uniform(0.2, 0.8)) if kind == "mix" else 0.5
    return Aperture(kind, blades, rotation, beta, ring, mix)  # type: ignore[arg-type]


def sample_params(
    inv_depth: np.ndarray, rng: np.random.Generator, config: SynthConfig, depth_kind: str = "given"
) -> SynthParams:
    """Draw lens (focus, CoC scale, aperture), noise and JPEG settings for one sample."""
    u = np.asarray(inv_depth, dtype=_F32)
    aperture = sample_aperture(rng, config)
    in_focus = bool(rng.uniform() < config.in_focus_prob)
    lo, hi = float(u.min()), float(u.max())
    if in_focus:
        lens = Lens(focus=float(np.median(u)), coc_scale=0.0, aperture=aperture)
    else:
        peak = float(rng.uniform(config.min_peak_radius, config.max_radius))
        if rng.uniform() < config.focus_on_content_prob:
            focus = float(u.flat[int(rng.integers(u.size))])
        else:
            span = max(hi - lo, 0.1)
            focus = float(rng.uniform(lo - 0.25 * span, hi + 0.25 * span))
        dev = max(abs(hi - focus), abs(lo - focus))
        if dev < 1e-3 * max(1.0, abs(hi)):  # flat scene focused on itself: move the focus off it
            dev = 0.25 * max(hi - lo, 1.0)
            focus = lo - dev if rng.uniform() < 0.5 else hi + dev
            dev = max(abs(hi - focus), abs(lo - focus))
        lens = Lens(focus=focus, coc_scale=peak / dev, aperture=aperture)
    noisy = rng.uniform() < config.noise_prob
    shot = log_uniform(rng, *config.shot_noise) if noisy else 0.0
    read = log_uniform(rng, *config.read_noise) if noisy else 0.0
    quality = 0
    if rng.uniform() < config.jpeg_prob:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return SynthParams(lens, in_focus, depth_kind, shot, read, quality, int(rng.integers(2**31 - 1)))


def apply_params(sharp: np.ndarray, inv_depth: np.ndarray, params: SynthParams, config: SynthConfig) -> SynthSample:
    """Render one sample from drawn ``params`` (deterministic: noise uses ``params.noise_seed``)."""
    img = np.clip(as_rgb(sharp), 0.0, 1.0)
    blurred, coc = render_defocus(
        img,
        inv_depth,
        params.lens,
        max_radius=config.max_radius,
        min_step=config.layer_min_step,
        rel_step=config.layer_rel_step,
        linear_light=config.linear_light,
    )
    noise_rng = np.random.default_rng(params.noise_seed)
    blurred = add_noise(blurred, params.shot_noise, params.read_noise, noise_rng)
    if config.match_mean:
        blurred = match_mean(blurred, img)
    if params.jpeg_quality:
        blurred = jpeg_roundtrip(blurred, params.jpeg_quality)
    return SynthSample(np.ascontiguousarray(blurred, dtype=_F32), img, coc, params)


def synthesize(
    sharp: np.ndarray,
    rng: np.random.Generator,
    config: SynthConfig = SynthConfig(),
    inv_depth: np.ndarray | None = None,
) -> SynthSample:
    """One synthetic defocus sample from a sharp sRGB image (H x W x C, [0,1]).

    ``inv_depth`` (H x W, larger = nearer, finite) is used when given, else drawn with
    :func:`random_inv_depth`. All randomness comes from ``rng``.
    """
    img = as_rgb(sharp)
    h, w = img.shape[:2]
    if inv_depth is None:
        u, kind = random_inv_depth(h, w, rng, config=config)
    else:
        u, kind = fill_invalid(inv_depth), "given"
    params = sample_params(u, rng, config, kind)
    return apply_params(img, u, params, config)


def item_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from integer ``keys`` (e.g. purpose tag, seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))
