"""Layers shared by the networks: residual blocks, recurrent cells, attention gates.

Modules with a faster inference path carry a ``fast_paths`` flag (class default True). The
fast path computes the same function up to float rounding (BatchNorm folded into the preceding
convolution in eval mode, triplet attention without permuted copies, in-place adds when no
gradient is recorded); ``GkmNetwork.reference_mode()`` switches every flag off so tests and
``gkm benchmark --compare-reference`` can check and time the plain reference path.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

#: A ConvLSTM's (h, c).
LstmState = tuple[torch.Tensor, torch.Tensor]


def fold_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d, *, transposed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode BN: running statistics).

    ``weight`` is the conv's (out, in, kh, kw) weight, or (in, out, kh, kw) when ``transposed``.
    """
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError("fold_bn needs a BatchNorm with running statistics (track_running_stats=True)")
    scale = bn.weight * torch.rsqrt(var + bn.eps) if bn.affine else torch.rsqrt(var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - mean * scale
    w = weight * (scale.view(1, -1, 1, 1) if transposed else scale.view(-1, 1, 1, 1))
    b = shift if bias is None else bias * scale + shift
    return w, b


class HasFastPaths(Protocol):
    """A module with a fast inference path that ``GkmNetwork.reference_mode()`` can switch off."""

    fast_paths: bool


def _can_fold(module: HasFastPaths, bn: nn.BatchNorm2d) -> bool:
    """Fold BN only where it uses running statistics (eval mode with tracked stats)."""
    return module.fast_paths and not bn.training and bn.running_var is not None


def _in_place_ok(module: HasFastPaths) -> bool:
    """In-place arithmetic on intermediates is safe only when autograd records nothing."""
    return module.fast_paths and not torch.is_grad_enabled()


def conv3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class ConvBnRelu(nn.Sequential):
    """Conv3x3 + BatchNorm + ReLU (GKMNet's layer; BN folds into the conv at inference)."""

    fast_paths: bool = True

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(conv3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = cast(nn.Conv2d, self[0]), cast(nn.BatchNorm2d, self[1])
        if not _can_fold(self, bn):
            out: torch.Tensor = self[2](bn(conv(x)))  # what nn.Sequential.forward does
            return out
        w, b = fold_bn(conv.weight, conv.bias, bn)
        return F.relu_(F.conv2d(x, w, b, conv.stride, cast(tuple[int, int], conv.padding)))


class UpBnRelu(nn.Sequential):
    """Transposed conv (kernel 2, stride 2: doubles H and W) + BatchNorm + ReLU."""

    fast_paths: bool = True

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = cast(nn.ConvTranspose2d, self[0]), cast(nn.BatchNorm2d, self[1])
        if not _can_fold(self, bn):
            out: torch.Tensor = self[2](bn(conv(x)))  # what nn.Sequential.forward does
            return out
        w, b = fold_bn(conv.weight, conv.bias, bn, transposed=True)
        return F.relu_(F.conv_transpose2d(x, w, b, conv.stride, cast(tuple[int, int], conv.padding)))


class PostActResBlock(nn.Module):
    """GKMNet's residual block: y = x + ReLU(BN(conv(x))); out = y + ReLU(BN(conv(y)))."""

    fast_paths: bool = True

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvBnRelu(ch, ch)
        self.conv2 = ConvBnRelu(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # nn.Module.__call__ is typed Any in torch: the annotations say what comes back.
        y: torch.Tensor
        out: torch.Tensor
        if _in_place_ok(self):
            y = self.conv1(x).add_(x)
            out = self.conv2(y).add_(y)
        else:
            y = x + self.conv1(x)
            out = y + self.conv2(y)
        return out


class ResBlock(nn.Module):
    """GGKMNet's residual block: x + conv(ReLU(conv(x)))."""

    fast_paths: bool = True

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3(ch, ch)
        self.conv2 = conv3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor
        if _in_place_ok(self):
            out = self.conv2(F.relu_(self.conv1(x))).add_(x)
        else:
            out = x + self.conv2(F.relu(self.conv1(x)))
        return out


class _Gate(nn.Module):
    """Triplet-attention gate: [max, mean] over dim 1 -> 7x7 conv -> BN -> sigmoid -> scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))

    def gate(self, pooled: torch.Tensor, fold: bool) -> torch.Tensor:
        """sigmoid(BN(conv(pooled))) for N x 2 x A x B pooled maps; BN folded when ``fold``."""
        if not fold:
            return torch.sigmoid(self.bn(self.conv(pooled)))
        w, b = fold_bn(self.conv.weight, None, self.bn)
        return torch.sigmoid(F.conv2d(pooled, w, b, padding=self.conv.padding))


class TripletAttention(nn.Module):
    """Triplet attention (Misra et al.), as in GKMNet's extractor blocks.

    The two cross-dimension branches pool over whole rows/columns, so a tile sees different
    statistics than the whole image: networks using it are not tile-exact.

    Fast path: each branch's gate depends only on [max, mean] over one axis, so the gates are
    computed from small pooled maps (no permuted copies of x) and broadcast back:
    ``x * (g_hw + g_cw + g_hc) / 3`` with g_hw N x 1 x H x W, g_cw N x C x 1 x W, g_hc N x C x H x 1.
    """

    fast_paths: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.hw, self.cw, self.hc = _Gate(), _Gate(), _Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast_paths:
            hw: torch.Tensor = self.hw(x)
            cw: torch.Tensor = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
            hc: torch.Tensor = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
            return (hw + cw + hc) / 3.0
        fold = not self.hw.bn.training
        # hw: pool over C, maps on (H, W). cw: pool over H, maps on (C, W). hc: pool over W, maps
        # on (H, C) (the reference permutes x to N x W x H x C, so H is the first spatial axis).
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Reduce on the contiguous N x H x W x C view: PyTorch's CPU reductions over H or W
            # of a channels_last tensor are ~40x slower than the same reductions of this view.
            t = x.permute(0, 2, 3, 1)
            pooled_hw = torch.stack([t.amax(3), t.mean(3)], 1)  # N x 2 x H x W
            pooled_cw = torch.stack([t.amax(1), t.mean(1)], 1).transpose(2, 3)  # N x 2 x C x W
            pooled_hc = torch.stack([t.amax(2), t.mean(2)], 1)  # N x 2 x H x C
        else:
            pooled_hw = torch.stack([x.amax(1), x.mean(1)], 1)
            pooled_cw = torch.stack([x.amax(2), x.mean(2)], 1)
            pooled_hc = torch.stack([x.amax(3), x.mean(3)], 1).transpose(2, 3)
        g_hw = self.hw.gate(pooled_hw, fold)  # N x 1 x H x W
        g_cw = self.cw.gate(pooled_cw, fold)  # N x 1 x C x W
        g_hc = self.hc.gate(pooled_hc, fold)  # N x 1 x H x C
        gates = g_cw.permute(0, 2, 1, 3) + g_hc.permute(0, 3, 2, 1)  # N x C x H x W (broadcast)
        if not torch.is_grad_enabled():
            return x * gates.add_(g_hw).mul_(1.0 / 3.0)
        return x * ((gates + g_hw) / 3.0)


def nnpack_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> torch.Tensor | None:
    """Stride-1 convolution through NNPACK (FFT / Winograd tiles) on the CPU, or None when
    NNPACK cannot run it here (other device or dtype, autograd on, or a build without NNPACK).

    For the ConvLSTM's 5 x 5 convolution (76 -> 176 channels) NNPACK is ~2.5x faster than oneDNN
    on a 2-core AVX-512 CPU; its FFT tiles differ from a direct convolution by float rounding
    (~1e-6 relative). ``torch._nnpack_spatial_convolution`` is a private PyTorch op: if a future
    release drops it, callers fall back to ``F.conv2d``.
    """
    op = getattr(torch, "_nnpack_spatial_convolution", None)
    if (
        op is None
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or torch.is_grad_enabled()
        or torch.compiler.is_compiling()  # the private op has no fake-tensor rule: inductor's own conv
        or not torch._nnpack_available()
    ):
        return None
    out: torch.Tensor = op(x.contiguous(), weight.contiguous(), bias, [padding, padding], [1, 1])
    return out


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (gates i, f, o, g from one conv over [input, h]); no peepholes.

    Fast path (inference): the gate convolution runs through NNPACK when available, skips the
    all-zero hidden state on the first step, and the gate arithmetic is done in place.
    """

    fast_paths: bool = True

    def __init__(self, cin: int, hidden: int, kernel: int = 5) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(cin + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: LstmState | None) -> LstmState:
        if self.fast_paths and not torch.is_grad_enabled():
            return self._fast(x, state)
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def _fast(self, x: torch.Tensor, state: LstmState | None) -> LstmState:
        # padding is (k // 2, k // 2) from __init__, never a string mode
        weight, bias, pad = self.conv.weight, self.conv.bias, cast(tuple[int, int], self.conv.padding)[0]
        if state is None:  # h = c = 0: only the input's share of the weights matters
            inp, weight = x, weight[:, : x.shape[1]]
        else:
            inp = torch.cat([x, state[0].to(x.dtype)], 1)
        gates = nnpack_conv2d(inp, weight, bias, pad)
        if gates is None:
            gates = F.conv2d(inp, weight.to(inp.dtype), None if bias is None else bias.to(inp.dtype), padding=pad)
        i, f, o, g = gates.chunk(4, 1)
        i, f, o, g = i.sigmoid_(), f.sigmoid_(), o.sigmoid_(), g.tanh_()
        c = i.mul_(g) if state is None else torch.addcmul(i.mul_(g), f, state[1])
        h = o.mul_(torch.tanh(c))
        return h, c


def carry_state(state: LstmState | None, size: tuple[int, int]) -> LstmState | None:
    """Bilinearly resize a recurrent (h, c) state to the next scale's grid."""
    if state is None:
        return None
    h, c = (F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in state)
    return h, c
