"""GGKMNet (Quan et al., TPAMI 2024): Grouped Gaussian Kernel Mixture network.

Blur model: ``b = sum_p beta_p[m, n] * sum_q alpha_p[q] g_{p,q}`` with P groups of Q Gaussian
atoms; beta is spatial (depth), alpha per image (lens). Per scale t the network computes
``z_p = sum_q alpha_p[q] (g_{p,q} (x) u)`` for u = up2(x(t-1)) and u = y(t) (the IGGCM "fuses"
y), weights them by beta and sums everything with a learned 1 x 1 convolution, initialised to the
fixed-point form's identity part. Parts (paper Section 4):

* BFE: U-Net; encoder block = conv + residual block (conv-ReLU-conv), 32 channels doubling per
  stride-2 level, bottleneck = 4th encoder block; decoder block = residual block + transposed
  conv; ``res_blocks`` residual blocks per block (1; GGKMNet-dagger uses 5).
* alpha-APU: global average pooling of the bottleneck -> LSTM (C/4) -> ReLU -> LSTM (P*Q),
  states carried across scales, softmax per group. Global: computed once per image (Context).
* beta-APU: path 1 = avg-pool -> ConvLSTM (state across scales) -> upsample = b1; path 2 = two
  convs at full resolution = b2; ``tanh(b1 * b2 + b1)``. 2P maps: P for up2(x), P for y.
* SRM (training only): 3 convs, sigmoid out, re-blurs y(t) from [bottleneck, beta, x(t)].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.nets.base import (
    Context,
    ContextStats,
    GkmNetwork,
    ModelSpec,
    PretrainedWeights,
    RecurrentState,
    region_sum,
)
from gkm_cli.nets.blocks import ConvLSTMCell, LstmState, ResBlock, carry_state, conv3
from gkm_cli.nets.gkmnet import identity_summation, xavier_init
from gkm_cli.ops.gaussian import ConvMethod, dense_kernels, gaussian_conv, gaussian_group_mix, ggkm_bank


@dataclass(frozen=True)
class GgkmNetConfig:
    groups: int = 21  # P
    per_group: int = 4  # Q
    width: int = 32
    res_blocks: int = 1
    lstm_kernel: int = 5
    gaussian_method: ConvMethod = "auto"


@dataclass(frozen=True)
class GgkmNetLConfig(GgkmNetConfig):
    """GGKMNet-dagger's paper configuration: 5 residual blocks per BFE block instead of 1."""

    res_blocks: int = 5


class EncoderBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, res_blocks: int) -> None:
        super().__init__(conv3(cin, cout, stride), *[ResBlock(cout) for _ in range(res_blocks)])


class DecoderBlock(nn.Sequential):
    """Residual block(s) then a transposed conv doubling H, W and halving channels (or none)."""

    def __init__(self, ch: int, res_blocks: int, upsample: bool) -> None:
        layers: list[nn.Module] = [ResBlock(ch) for _ in range(res_blocks)]
        if upsample:
            layers.append(nn.ConvTranspose2d(ch, ch // 2, 2, stride=2))
        super().__init__(*layers)


class BlurFeatureExtractor(nn.Module):
    def __init__(self, w: int, res_blocks: int) -> None:
        super().__init__()
        self.enc1 = EncoderBlock(3, w, 1, res_blocks)
        self.enc2 = EncoderBlock(w, 2 * w, 2, res_blocks)
        self.enc3 = EncoderBlock(2 * w, 4 * w, 2, res_blocks)
        self.enc4 = EncoderBlock(4 * w, 4 * w, 1, res_blocks)  # bottleneck, F1
        self.dec1 = DecoderBlock(4 * w, res_blocks, upsample=True)
        self.dec2 = DecoderBlock(2 * w, res_blocks, upsample=True)
        self.dec3 = DecoderBlock(w, res_blocks, upsample=False)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(y)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        f1 = self.enc4(e3)
        d = self.dec1(f1 + e3)
        d = self.dec2(d + e2)
        d = self.dec3(d + e1)
        return {"bottleneck": f1, "decoded": d}


class AlphaAPU(nn.Module):
    """GAP vector per scale -> LSTM(C/4) -> ReLU -> LSTM(P*Q) -> group-wise softmax."""

    def __init__(self, cin: int, groups: int, per_group: int) -> None:
        super().__init__()
        self.groups, self.per_group = groups, per_group
        self.lstm1 = nn.LSTMCell(cin, cin // 4)
        self.lstm2 = nn.LSTMCell(cin // 4, groups * per_group)

    def forward(self, pooled: list[torch.Tensor]) -> list[torch.Tensor]:
        s1 = s2 = None
        alphas = []
        for v in pooled:
            s1 = self.lstm1(v, s1)
            s2 = self.lstm2(F.relu(s1[0]), s2)
            logits = s2[0].view(-1, self.groups, self.per_group)
            alphas.append(torch.softmax(logits, -1))
        return alphas


class BetaAPU(nn.Module):
    fast_paths: bool = True

    def __init__(self, cin: int, maps: int, lstm_kernel: int) -> None:
        super().__init__()
        self.memory = ConvLSTMCell(cin, maps, lstm_kernel)
        self.detail = nn.Sequential(conv3(cin, maps), nn.ReLU(inplace=True), conv3(maps, maps))

    def forward(self, f: torch.Tensor, state: LstmState | None) -> tuple[torch.Tensor, LstmState]:
        pooled = F.avg_pool2d(f, 2)
        state = carry_state(state, (pooled.shape[-2], pooled.shape[-1]))
        h, c = self.memory(pooled, state)
        b1 = F.interpolate(h, size=f.shape[-2:], mode="bilinear", align_corners=False)
        b2 = self.detail(f)
        if self.fast_paths and not torch.is_grad_enabled():
            return torch.addcmul(b1, b1, b2).tanh_(), (h, c)  # one pass for b1 * b2 + b1
        return torch.tanh(b1 * b2 + b1), (h, c)


class SelfReconstruction(nn.Module):
    """Training-only re-blurring head: [F1 upsampled, beta, x(t)] -> y~(t) in (0, 1)."""

    def __init__(self, cin: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv3(cin, hidden), nn.ReLU(inplace=True), conv3(hidden, hidden), nn.ReLU(inplace=True), conv3(hidden, 3)
        )

    def forward(self, f1: torch.Tensor, beta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        f1 = F.interpolate(f1, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.net(torch.cat([f1, beta, x], 1)))


class GGKMNet(GkmNetwork):
    spec = ModelSpec(
        name="ggkmnet",
        paper=(
            "Quan, Wu, Xu, Ji: Deep Single Image Defocus Deblurring via Gaussian Kernel Mixture Learning, "
            "IEEE TPAMI 2024"
        ),
        size_multiple=16,
        receptive_radius=96,
        # perturbed paper-size net: image 81 dB, sigma map <= 0.05 px off untiled (docs/PERFORMANCE.md)
        tile_overlap=64,
        bytes_per_pixel=3300,  # measured 2927 / 2999 / 2556 / 2141 B/px at 512 / 640 / 768 / 1024 px
        tile_exact=True,
        paper_params=1.68,
        paper_macs_720p=158.4,  # TPAMI 2024, Tables 2/11
        loss_recipe="ggkmnet",
        default=True,
        # scripts/ship_model.py prints the new sha256 when it ships other weights.
        pretrained=PretrainedWeights(
            filename="ggkmnet.safetensors",
            sha256="c5aacda8aec9937f607f962d2068ab759035d5d92f23d3326d88f1b3387ad826",
        ),
    )
    uses_context = True

    config: GgkmNetConfig
    bank_kernels: torch.Tensor  # buffers (register_buffer)
    atom_sigmas: torch.Tensor

    def __init__(self, config: GgkmNetConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = cfg = config or GgkmNetConfig(**overrides)
        self.bank = ggkm_bank(cfg.groups, cfg.per_group)
        self.register_buffer("bank_kernels", dense_kernels(self.bank), persistent=False)  # built once
        w, p = cfg.width, cfg.groups
        self.bfe = BlurFeatureExtractor(w, cfg.res_blocks)
        self.alpha_apu = AlphaAPU(4 * w, p, cfg.per_group)
        self.beta_apu = BetaAPU(w, 2 * p, cfg.lstm_kernel)
        # Summation input: [y, up2(x), beta_x * z_p(up2 x) (3P), beta_y * z_p(y) (3P)].
        self.summation = identity_summation(6 + 6 * p, (0, 1, 2))
        self.srm = SelfReconstruction(4 * w + 2 * p + 3)
        sig = torch.tensor(self.bank.sigmas, dtype=torch.float32).view(p, cfg.per_group)
        self.register_buffer("atom_sigmas", sig, persistent=False)
        xavier_init(self.bfe)
        xavier_init(self.beta_apu)
        xavier_init(self.srm)

    def features(self, y_t: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = self.bfe(y_t)
        return feats

    def scale_stats(
        self,
        feats: dict[str, torch.Tensor],
        core: tuple[int, int, int, int],
        origin: tuple[int, int],
        full: tuple[int, int],
    ) -> ContextStats:
        del origin, full
        top, left, height, width = core
        box = (top // 4, left // 4, height // 4, width // 4)
        return ContextStats(sums=[region_sum(feats["bottleneck"], box)], count=[float(box[2] * box[3])])

    def make_context(self, stats: ContextStats | None) -> Context | None:
        assert stats is not None
        pooled = [s / c for s, c in zip(stats.sums, stats.count)]
        return Context(vectors=[a.flatten(1) for a in self.alpha_apu(pooled)])

    def group_responses(self, u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """z_p = sum_q alpha_p[q] (g_{p,q} (x) u): N x 3 x P x H x W."""
        atoms = gaussian_conv(u, self.bank, self.gaussian_method(), self.bank_kernels)
        n, c, _, h, w = atoms.shape
        atoms = atoms.view(n, c, self.config.groups, self.config.per_group, h, w)
        return torch.einsum("ncpqhw,npq->ncphw", atoms, alpha.to(atoms.dtype))

    def mix_and_sum(
        self, y_t: torch.Tensor, x_up: torch.Tensor, alpha: torch.Tensor, beta_x: torch.Tensor, beta_y: torch.Tensor
    ) -> torch.Tensor:
        """Fast path of ``summation(cat[y, x_up, z(x_up) * beta_x, z(y) * beta_y])``.

        Group responses come from :func:`gaussian_group_mix` (with ``fft``, the Q atoms of a
        group are mixed by alpha in the frequency domain: P inverse FFTs per plane, not P * Q);
        they are weighted by beta in place and the 1 x 1 summation is split into one conv per
        input, so the 6 + 6P channel concatenation is never built.
        """
        p3 = 3 * self.config.groups
        beta_x, beta_y = beta_x.contiguous(), beta_y.contiguous()  # the extractor may run channels_last
        weight = self.summation.weight  # 3 x (6 + 6P) x 1 x 1
        in_place = not torch.is_grad_enabled()
        method = self.gaussian_method()
        out = F.conv2d(y_t, weight[:, :3], self.summation.bias) + F.conv2d(x_up, weight[:, 3:6])
        for u, beta, start in ((x_up, beta_x, 6), (y_t, beta_y, 6 + p3)):
            z = gaussian_group_mix(u, self.bank, alpha, method, self.bank_kernels)  # N x 3 x P x H x W
            if in_place:  # one pass: weight by beta and make contiguous (the FFT path returns a crop)
                z = torch.mul(z, beta, out=torch.empty(z.shape, dtype=torch.result_type(z, beta), device=z.device))
            else:
                z = z * beta
            term = F.conv2d(z.flatten(1, 2), weight[:, start : start + p3])
            out = out.add_(term) if in_place else out + term
        return out

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
        assert context is not None  # uses_context: the base class always passes one
        cfg = self.config
        p = cfg.groups
        alpha = context.vectors[t].view(-1, p, cfg.per_group)
        beta: torch.Tensor
        beta, state["beta"] = self.beta_apu(feats["decoded"], state.get("beta"))
        beta_x, beta_y = beta[:, None, :p], beta[:, None, p:]
        if self.fast_paths:
            x_t = self.mix_and_sum(y_t, x_up, alpha, beta_x, beta_y)
        else:
            zx = self.group_responses(x_up, alpha) * beta_x
            zy = self.group_responses(y_t, alpha) * beta_y
            x_t = self.summation(torch.cat([y_t, x_up, zx.flatten(1, 2), zy.flatten(1, 2)], 1))
        out = {
            "spatial_weights": beta[:, :p].clamp(min=0),
            "group_sigmas": (alpha * self.atom_sigmas.to(alpha.dtype)).sum(-1),
            "coef_alpha": alpha,
            "coef_beta": beta,
        }
        if reconstruct:
            out["reconstruction"] = self.srm(feats["bottleneck"], beta, x_t)
        return x_t, out


class GGKMNetL(GGKMNet):
    """GGKMNet-dagger: more residual blocks in the BFE (paper: 5.93 M parameters)."""

    spec = ModelSpec(
        name="ggkmnet_l",
        paper=GGKMNet.spec.paper + " (GGKMNet-dagger)",
        size_multiple=16,
        receptive_radius=128,
        tile_overlap=64,
        bytes_per_pixel=3400,  # measured 2640 B/px at 768 px (ggkmnet + ~3%)
        tile_exact=True,
        paper_params=5.93,
        paper_macs_720p=518.9,
        loss_recipe="ggkmnet",
    )

    def __init__(self, config: GgkmNetConfig | None = None, **overrides: Any) -> None:
        super().__init__(config or GgkmNetLConfig(**overrides))
