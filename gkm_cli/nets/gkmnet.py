"""GKMNet (Quan et al., NeurIPS 2021): Gaussian Kernel Mixture network.

Per scale t (coarse to fine): a U-Net extractor on y(t) gives features; a scale-recurrent
attention unit (APU, ConvLSTM) predicts 44 weight maps; the fixed bank (delta + 21 Gaussians)
filters both y(t) and up2(x(t-1)); each filtered channel is weighted by its map and a learned
1 x 1 convolution over all 132 channels gives x(t). Layer widths follow the public code
(``reference_gkmnet.md`` 1.3-1.6, 1,409,131 parameters); unlike that code, every colour gets
every kernel (the paper's intent), BatchNorm runs in eval mode at inference. The config's
``bank_layout``/``batch_norm`` reproduce the released code for its checkpoints (``gkm_layouts``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.nets import gkm_layouts
from gkm_cli.nets.base import Context, GkmNetwork, ModelSpec, PretrainedWeights, RecurrentState
from gkm_cli.nets.blocks import (
    ConvBnRelu,
    ConvLSTMCell,
    LstmState,
    PostActResBlock,
    TripletAttention,
    UpBnRelu,
    carry_state,
)
from gkm_cli.ops.gaussian import ConvMethod, GaussianBank, dense_kernels, gaussian_conv, gkm_bank


@dataclass(frozen=True)
class GkmNetConfig:
    """Widths of the GKMNet extractor and APU (defaults: the paper's model)."""

    width: int = 32
    kernels: int = 21  # Gaussians in the bank (the delta comes on top)
    lstm_kernel: int = 5
    gaussian_method: ConvMethod = "auto"
    # Channel -> (colour, kernel) map of the bank and BN statistics: "paper"/"running" are ours;
    # the released code's variants load its checkpoints (gkm_layouts, `gkm models import`).
    bank_layout: gkm_layouts.BankLayout = field(default="paper", metadata={"choices": gkm_layouts.BANK_LAYOUTS})
    batch_norm: gkm_layouts.BatchNormMode = field(default="running", metadata={"choices": gkm_layouts.BATCH_NORM_MODES})


class ExtractorBlock(nn.Sequential):
    """First layer -> residual block -> attention (GKMNet: triplet attention)."""

    def __init__(self, first: nn.Module, ch: int, attention: nn.Module) -> None:
        super().__init__(first, PostActResBlock(ch), attention)


class GkmExtractor(nn.Module):
    """U-Net: 32 -> 64 (/2) -> 128 (/4) -> bottleneck 128 -> 64 (x2) -> 32 (x2), additive skips."""

    def __init__(
        self,
        w: int,
        make_attention: Callable[[int], nn.Module] = lambda ch: TripletAttention(),
        first_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        a = make_attention
        self.in_block = ExtractorBlock(first_layer or nn.Conv2d(3, w, 3, padding=1), w, a(w))
        self.down1 = ExtractorBlock(ConvBnRelu(w, 2 * w, stride=2), 2 * w, a(2 * w))
        self.down2 = ExtractorBlock(ConvBnRelu(2 * w, 4 * w, stride=2), 4 * w, a(4 * w))
        self.bottleneck = ExtractorBlock(ConvBnRelu(4 * w, 4 * w), 4 * w, a(4 * w))
        self.up1 = ExtractorBlock(UpBnRelu(4 * w, 2 * w), 2 * w, a(2 * w))
        self.up2 = ExtractorBlock(UpBnRelu(2 * w, w), w, a(w))

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        f0 = self.in_block(y)
        f1 = self.down1(f0)
        f2 = self.down2(f1)
        b = self.bottleneck(f2)
        return {"bottleneck": b, "skip1": f1, "skip2": f2}

    def decode(self, feats: dict[str, torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        f3 = self.up1(bottleneck + feats["skip2"])
        out: torch.Tensor = self.up2(f3 + feats["skip1"])
        return out


class AttentionUnit(nn.Module):
    """GKMNet's APU: detail path (conv) x memory path (ConvLSTM at half resolution).

    Output in (-1, 1): ``2 sigmoid(h_up * d + h_up) - 1`` as in the public code (= tanh(z / 2),
    the paper's tanh(b1 b2 + b1) with half the slope).
    """

    fast_paths: bool = True

    def __init__(self, cin: int, maps: int, lstm_kernel: int = 5) -> None:
        super().__init__()
        self.detail = ConvBnRelu(cin, maps)
        self.memory = ConvLSTMCell(cin, maps, lstm_kernel)

    def forward(self, f: torch.Tensor, state: LstmState | None) -> tuple[torch.Tensor, LstmState]:
        d = self.detail(f)
        pooled = F.avg_pool2d(f, 2)
        state = carry_state(state, (pooled.shape[-2], pooled.shape[-1]))
        h, c = self.memory(pooled, state)
        h_up = F.interpolate(h, size=f.shape[-2:], mode="nearest")
        if self.fast_paths and not torch.is_grad_enabled():
            # 2 sigmoid(z) - 1 = tanh(z / 2); z = h_up * d + h_up in one pass: 3 passes, not 5.
            return torch.addcmul(h_up, h_up, d).mul_(0.5).tanh_(), (h, c)
        return 2 * torch.sigmoid(h_up * d + h_up) - 1, (h, c)


def identity_summation(channels: int, identity: tuple[int, int, int]) -> nn.Conv2d:
    """1 x 1 summation (channels -> RGB) initialised to copy input channel ``identity[c]`` to c.

    A zero-initialised residual: the untrained network returns y(t), and every mixing term
    starts with zero weight (so early training cannot blow up through 132 random terms).
    """
    conv = nn.Conv2d(channels, 3, 1)
    assert conv.bias is not None  # bias=True
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    with torch.no_grad():
        for c in range(3):
            conv.weight[c, identity[c]] = 1.0
    return conv


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform for convolutions and linear layers (the papers' init), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GKMNet(GkmNetwork):
    spec = ModelSpec(
        name="gkmnet",
        paper="Quan, Wu, Ji: Gaussian Kernel Mixture Network for Single Image Defocus Deblurring, NeurIPS 2021",
        size_multiple=16,
        receptive_radius=96,
        bytes_per_pixel=2800,  # measured 2345 / 2178 B/px at 768 / 1024 px
        tile_exact=False,  # triplet attention pools over whole rows and columns
        paper_params=1.41,
        paper_macs_720p=147.8,  # as given in GGKMNet's TPAMI 2024 Tables 2/11
        loss_recipe="gkmnet",
        # v2 recipe from scratch, undertrained (models/README.md); ship_model.py prints the sha256.
        pretrained=PretrainedWeights(
            filename="gkmnet.safetensors",
            sha256="a77db867d4d86a106ea3ff452870c2fbf79d223f68baf56ecb4c5e0e43c76d3a",
        ),
    )

    config: GkmNetConfig
    bank_kernels: torch.Tensor  # buffers (register_buffer)
    sigmas: torch.Tensor

    def __init__(self, config: GkmNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = config or GkmNetConfig(**overrides)
        w = self.config.width
        self.bank: GaussianBank = gkm_bank(self.config.kernels)
        self.register_buffer("bank_kernels", dense_kernels(self.bank), persistent=False)  # built once
        self.num_kernels = self.config.kernels + 1  # delta first
        self.extractor = self._make_extractor(w)
        self.apu = AttentionUnit(w, 2 * self.num_kernels, self.config.lstm_kernel)
        # A plain learned 1 x 1 conv over all 132 weighted channels, as the reference code: every
        # channel here is weighted by an APU map, so there is no unweighted identity to start from.
        self.summation = nn.Conv2d(2 * 3 * self.num_kernels, 3, 1)
        self.register_buffer("sigmas", torch.tensor((0.0, *self.bank.sigmas)), persistent=False)
        self._init_weights()
        gkm_layouts.check_options(self.config.bank_layout, self.config.batch_norm, self.spec.name)
        if self.config.bank_layout != "paper":
            self.sigmas = gkm_layouts.effective_sigmas(self.config.bank_layout, self.sigmas)
        if self.config.batch_norm == "image":
            gkm_layouts.use_image_statistics(self)

    def _make_extractor(self, w: int) -> GkmExtractor:
        return GkmExtractor(w)

    def _init_weights(self) -> None:
        xavier_init(self.extractor)
        xavier_init(self.apu)

    def features(self, y_t: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = self.extractor(y_t)
        return feats

    def filter_bank(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W -> N x 3 x K x H x W: delta then the Gaussians."""
        return torch.cat([x[:, :, None], gaussian_conv(x, self.bank, self.gaussian_method(), self.bank_kernels)], 2)

    def mix_and_sum(self, y_t: torch.Tensor, x_up: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Fast path of ``summation(cat[filter_bank(u) * w_u for u in (y, x_up)])``.

        The 1 x 1 summation is split by input and kernel: the delta term is a 3 x 3 colour map
        of ``u * w_0``, the Gaussian terms a 1 x 1 conv over ``G(u) * w`` computed in place, so
        neither the delta-prefixed bank nor the 132-channel concatenation is ever built.
        """
        k = self.num_kernels
        weights = weights.contiguous()  # NCHW like the bank's output (the extractor may run channels_last)
        weight = self.summation.weight.view(3, 2, 3, k)  # out colour, input (y, x_up), colour, kernel
        in_place = not torch.is_grad_enabled()
        n = y_t.shape[0]
        # One bank call for both inputs (2N x 3 planes): ~10% faster on 2 threads than two calls.
        bank = gaussian_conv(
            torch.cat([y_t, x_up.to(y_t.dtype)], 0), self.bank, self.gaussian_method(), self.bank_kernels
        )
        out = None
        for i, u in enumerate((y_t, x_up)):
            w_u = weights[:, i * k : (i + 1) * k]  # N x K x H x W
            g = bank[i * n : (i + 1) * n]  # N x 3 x K-1 x H x W
            g = g.mul_(w_u[:, None, 1:]) if in_place else g * w_u[:, None, 1:]
            term = F.conv2d(g.flatten(1, 2), weight[:, i, :, 1:].reshape(3, -1, 1, 1))
            term = term + F.conv2d(u * w_u[:, :1], weight[:, i, :, 0].reshape(3, 3, 1, 1))
            out = term if out is None else out.add_(term) if in_place else out + term
        assert out is not None and self.summation.bias is not None
        return out + self.summation.bias.view(1, 3, 1, 1)

    def global_weights(self, context: Context | None, t: int) -> torch.Tensor | None:
        return None

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
        f = self.extractor.decode(feats, feats["bottleneck"])
        weights: torch.Tensor
        weights, state["apu"] = self.apu(f, state.get("apu"))
        g = self.global_weights(context, t)
        if g is not None:
            weights = weights * g[:, :, None, None]
        k = self.num_kernels
        if self.config.bank_layout != "paper":
            x_t = gkm_layouts.layout_mix_and_sum(
                self.config.bank_layout, y_t, x_up, weights, self.bank, self.bank_kernels, self.summation
            )
        elif self.fast_paths:
            x_t = self.mix_and_sum(y_t, x_up, weights)
        else:
            wy, wx = weights[:, None, :k], weights[:, None, k:]
            mixed = torch.cat(
                [(self.filter_bank(y_t) * wy).flatten(1, 2), (self.filter_bank(x_up) * wx).flatten(1, 2)], 1
            )
            x_t = self.summation(mixed)
        n = y_t.shape[0]
        return x_t, {
            "spatial_weights": weights[:, k:].abs(),
            "group_sigmas": self.sigmas.to(x_t.dtype).expand(n, k),
            "coef_weights": weights,
        }
