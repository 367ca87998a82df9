"""Image quality metrics (pure functions on N x C x H x W tensors) and evaluation protocols.

- :mod:`.fidelity`: ``psnr``, ``ssim``, ``mae``, ``mse`` (per-image values, float64).
- :mod:`.conventions`: ``quantise``, ``crop``, ``rgb_to_y``, ``colour_align``.
- :mod:`.protocols`: the :class:`Protocol` record and the named protocols.
- :mod:`.lpips`: LPIPS v0.1 AlexNet (``load_lpips``, ``lpips``).
"""

from gkm_cli.metrics.conventions import clamp01, colour_align, crop, crop_border, quantise, rgb_to_y
from gkm_cli.metrics.fidelity import GAUSSIAN11, SSIM_WINDOWS, UNIFORM7, SsimWindow, mae, mse, psnr, ssim
from gkm_cli.metrics.lpips import LpipsAlex, check_pair, default_lpips_weights, load_lpips, lpips
from gkm_cli.metrics.protocols import LPIPS_CONVENTION, PROTOCOLS, Protocol, get_protocol, prepare

__all__ = [
    "GAUSSIAN11",
    "LPIPS_CONVENTION",
    "PROTOCOLS",
    "SSIM_WINDOWS",
    "UNIFORM7",
    "LpipsAlex",
    "Protocol",
    "SsimWindow",
    "check_pair",
    "clamp01",
    "colour_align",
    "crop",
    "crop_border",
    "default_lpips_weights",
    "get_protocol",
    "load_lpips",
    "lpips",
    "mae",
    "mse",
    "prepare",
    "psnr",
    "quantise",
    "rgb_to_y",
    "ssim",
]
