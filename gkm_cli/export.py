"""ONNX export of a network and an ONNX Runtime deblurrer (``gkm models export``).

The exported graph maps ``input`` N x 3 x H x W float32 in [0, 1] to ``image`` N x 3 x H x W
(the finest-scale estimate, not clamped) and ``sigma`` N x 1 x H x W (expected blur sigma in
pixels), with H and W dynamic **but multiples of the network's size multiple (16)**: the
network's own reflect padding is a Python-level branch that a trace cannot keep, so the
padding and the crop back live in :class:`OnnxDeblurrer` (numpy) instead. Two more choices
keep the graph valid at every size:

* the Gaussian bank is exported with the ``separable`` method (convolutions only; the ``fft``
  method sizes its transforms from the input in Python, and ``direct`` is slow in ONNX Runtime);
* the pyramid's antialiased bilinear halving (no ONNX operator) is written as the same filter
  for even sizes: a separable [1, 3, 3, 1] / 8 stride-2 convolution renormalised at the borders;
* image-global context (GGKMNet's alpha from global average pooling, GKMANet's tokens) is
  computed in-graph from *means* over the bottleneck rather than sums divided by a pixel count
  fixed at trace time.

Everything else is the eager fast path of the network (BN folded, fused summation), which the
tests hold to the reference path; the export is checked against torch with ONNX Runtime.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.errors import GkmError, ModelError, UsageError
from gkm_cli.nets import GkmNetwork
from gkm_cli.nets.base import RecurrentState, pad_to_multiple
from gkm_cli.ops.pyramid import upsample_to

#: Default ONNX opset (ONNX Runtime >= 1.17 runs it; 17 is the oldest with everything we use).
DEFAULT_OPSET = 17


def half_even(x: torch.Tensor) -> torch.Tensor:
    """``ops.pyramid.half`` for even H, W as exportable convolutions (equal to float rounding).

    Antialiased bilinear downscaling by exactly 2 is a triangle filter of half-width 2 input
    pixels: taps [1, 3, 3, 1] / 8 per axis, stride 2, truncated and renormalised at the borders.
    """
    c = int(x.shape[1])  # a constant in the trace (3 colours): conv weights need a fixed shape
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device) / 8.0
    kernel = (taps[:, None] * taps[None, :])[None, None]
    out = F.conv2d(x, kernel.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)
    norm = F.conv2d(torch.ones_like(x[:, :1]), kernel, stride=2, padding=1)
    return out / norm


def pyramid_even(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``build_pyramid`` for sizes divisible by 2^(levels-1), from :func:`half_even`."""
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(half_even(pyramid[-1]))
    return pyramid[::-1]


class ExportWrapper(nn.Module):
    """``y`` (N x 3 x H x W, H and W multiples of 16) -> (image, sigma): the network's forward
    without the pad/crop branch and with trace-safe image-global context."""

    def __init__(self, model: GkmNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        pyramid = pyramid_even(y, m.scales_count)
        feats = [m.features(y_t) for y_t in pyramid]
        context = None
        if m.uses_context:
            stats = m.context_stats_padded(y, feats=feats)
            assert stats is not None
            # Means instead of sums / a pixel count that the trace would freeze at one size.
            stats = dataclasses.replace(
                stats, sums=[f["bottleneck"].mean(dim=(-2, -1)) for f in feats], count=[1.0] * len(feats)
            )
            context = m.make_context(stats)
        state: RecurrentState = {}
        x_prev = pyramid[0]
        last: dict[str, torch.Tensor] = {}
        for t, y_t in enumerate(pyramid):
            x_up = upsample_to(x_prev, (y_t.shape[-2], y_t.shape[-1]))
            x_prev, last = m.step(t, y_t, x_up, feats[t], state, context, False)
        w = last["spatial_weights"]
        sigma = (w * last["group_sigmas"][:, :, None, None]).sum(1, keepdim=True) / (w.sum(1, keepdim=True) + 1e-6)
        return x_prev, sigma


def export_copy(model: GkmNetwork, method: str = "separable") -> GkmNetwork:
    """A deep copy of ``model`` in eval mode, fast paths on, Gaussian bank forced to ``method``."""
    m = copy.deepcopy(model).eval().set_fast_paths(True)
    m.config = dataclasses.replace(m.config, gaussian_method=method)
    return m


def export_onnx(model: GkmNetwork, path: Path | None, *, opset: int = DEFAULT_OPSET, sample_size: int = 64) -> bytes:
    """Export ``model`` to ONNX with dynamic batch, H, W; writes ``path`` (atomically) if given
    and returns the serialised model. ``sample_size`` (multiple of 16) is the trace input size."""
    if sample_size % model.spec.size_multiple:
        raise UsageError(f"sample size must be a multiple of {model.spec.size_multiple}")
    wrapper = ExportWrapper(export_copy(model))
    sample = torch.rand(1, 3, sample_size, sample_size, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-to-int conversions
        try:
            torch.onnx.export(
                wrapper,
                (sample,),
                buffer,  # type: ignore[arg-type]  # the stubs say path only; a file object is documented
                dynamo=False,
                input_names=["input"],
                output_names=["image", "sigma"],
                dynamic_axes={
                    "input": {0: "batch", 2: "height", 3: "width"},
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "sigma": {0: "batch", 2: "height", 3: "width"},
                },
                opset_version=opset,
                do_constant_folding=True,
            )
        except Exception as e:
            raise GkmError(f"ONNX export of {model.spec.name} failed: {type(e).__name__}: {e}") from None
    data = buffer.getvalue()
    if path is not None:
        from gkm_cli.fileio import atomic_write_bytes

        atomic_write_bytes(Path(path), data)
    return data


class OnnxDeblurrer:
    """Run an exported network with ONNX Runtime on arrays: ``.run(array) -> array``.

    ``array``: H x W x 3 (or N x 3 x H x W) float32 in [0, 1], any H and W: it is reflect-padded
    to the size multiple (as the torch network does) and the output cropped back. ``threads``:
    ONNX Runtime intra-op threads (None: its default).
    """

    def __init__(self, model: str | Path | bytes, *, threads: int | None = None, size_multiple: int = 16) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError("ONNX Runtime is not installed: pip install 'gkm-cli[export]'") from None
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"cannot load ONNX model: {e}") from None
        self.size_multiple = size_multiple

    def run_nchw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N x 3 x H x W float32 -> (image N x 3 x H x W, sigma N x 1 x H x W)."""
        padded, (h, w) = pad_to_multiple(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.size_multiple
        )
        image, sigma = self.session.run(["image", "sigma"], {"input": padded.numpy()})
        return image[..., :h, :w], sigma[..., :h, :w]

    def run(self, array: np.ndarray) -> np.ndarray:
        """Deblur H x W x 3 (returns H x W x 3) or N x 3 x H x W (returns the same layout)."""
        if array.ndim == 3 and array.shape[-1] == 3:
            return self.run_nchw(array.transpose(2, 0, 1)[None])[0][0].transpose(1, 2, 0)
        if array.ndim == 4 and array.shape[1] == 3:
            return self.run_nchw(array)[0]
        raise ValueError(f"expected H x W x 3 or N x 3 x H x W, got {array.shape}")


@dataclasses.dataclass
class OnnxOutput:
    """What the engine reads of a forward pass: the image and the blur map."""

    image: torch.Tensor
    sigma: torch.Tensor

    def sigma_map(self) -> torch.Tensor:
        return self.sigma


class OnnxNetwork(nn.Module):
    """An exported network run by ONNX Runtime, in the place of the torch network in the engine.

    Only for networks without image-global context (``spec.uses_context`` False, i.e. GKMNet):
    the exported graph computes GGKMNet's / GKMANet's context from its own input, so tiles
    could not share one. CPU and fp32 only. Measured reason to exist: GKMNet at 512 x 512 runs
    ~2.2x faster in ONNX Runtime than in eager torch on a 2-core CPU (README, "Performance").
    """

    uses_context = False

    def __init__(self, model: GkmNetwork, *, threads: int | None = None) -> None:
        super().__init__()
        if model.uses_context:
            raise UsageError(
                f"--backend onnxruntime runs networks without image-global context (gkmnet); "
                f"{model.spec.name} shares its context across tiles and is faster in torch"
            )
        self.spec = model.spec
        self.runtime = OnnxDeblurrer(export_onnx(model, None), threads=threads, size_multiple=model.spec.size_multiple)

    def forward(self, x: torch.Tensor, context: object = None, **_: object) -> OnnxOutput:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise UsageError("--backend onnxruntime runs on the CPU in fp32 only")
        image, sigma = self.runtime.run_nchw(x.numpy())
        return OnnxOutput(torch.from_numpy(image), torch.from_numpy(sigma))
