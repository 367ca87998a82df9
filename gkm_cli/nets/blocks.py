"""Layers shared by the networks: residual blocks, recurrent cells, attention gates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class ConvBnRelu(nn.Sequential):
    """Conv3x3 + BatchNorm + ReLU (GKMNet's layer; BN folds into the conv at inference)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(conv3(cin, cout, stride), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBnRelu(nn.Sequential):
    """Transposed conv (kernel 2, stride 2: doubles H and W) + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.ConvTranspose2d(cin, cout, 2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PostActResBlock(nn.Module):
    """GKMNet's residual block: y = x + ReLU(BN(conv(x))); out = y + ReLU(BN(conv(y)))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = ConvBnRelu(ch, ch)
        self.conv2 = ConvBnRelu(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.conv1(x)
        return y + self.conv2(y)


class ResBlock(nn.Module):
    """GGKMNet's residual block: x + conv(ReLU(conv(x)))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3(ch, ch)
        self.conv2 = conv3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _Gate(nn.Module):
    """Triplet-attention gate: [max, mean] over dim 1 -> 7x7 conv -> BN -> sigmoid -> scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class TripletAttention(nn.Module):
    """Triplet attention (Misra et al.), as in GKMNet's extractor blocks.

    The two cross-dimension branches pool over whole rows/columns, so a tile sees different
    statistics than the whole image: networks using it are not tile-exact.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hw, self.cw, self.hc = _Gate(), _Gate(), _Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = self.hw(x)
        cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return (hw + cw + hc) / 3.0


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (gates i, f, o, g from one conv over [input, h]); no peepholes."""

    def __init__(self, cin: int, hidden: int, kernel: int = 5) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(cin + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def carry_state(
    state: tuple[torch.Tensor, torch.Tensor] | None, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Bilinearly resize a recurrent (h, c) state to the next scale's grid."""
    if state is None:
        return None
    return tuple(F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in state)  # type: ignore[return-value]
