"""GKMANet (Zhang, Wang, Zhuo, Wang; Electronics 2026): GKMNet with self-attention.

Changes over GKMNet, as the paper describes them, and our concrete choices (the paper gives no
layer table or parameter count):

* Dual-Attention CNN extractor: a 7 x 7 first layer (wider first receptive field); each block's
  triplet attention is replaced by a spatial gate whose channel aggregation is a *learned*
  weighted sum (instead of max pooling) next to the mean, and a channel gate. Both gates are
  local (the channel gate pools a 7 x 7 neighbourhood, not the whole image), so the extractor is
  tile-exact.
* Deeper extractor: a dense block (3 convs, growth 32, 1 x 1 fusion) after the bottleneck.
* SEAT self-attention at the bottleneck: every position attends to a G x G grid of pooled
  bottleneck features of the *whole image* (G = 8: 64 tokens). Cost is linear in pixels and the
  tokens are image-global context computed once per image, so a 24-megapixel photo is affordable
  and tiles agree with the whole.
* Coefficient path: GAP -> LSTM (C/4) -> ReLU -> LSTM (44), states carried across scales,
  softmax over each input's 22 kernels (scaled so the mean is 1) modulating the APU maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gkm_cli.nets.base import Context, ContextStats, ModelSpec, RecurrentState, grid_sums, region_sum
from gkm_cli.nets.gkmnet import GkmExtractor, GKMNet, GkmNetConfig, xavier_init


@dataclass(frozen=True)
class GkmaNetConfig(GkmNetConfig):
    grid: int = 8  # SEAT tokens per side
    heads: int = 4
    attention_dim: int = 64
    dense_layers: int = 3
    growth: int = 32


class DualAttention(nn.Module):
    """Spatial gate on [learned channel aggregate, channel mean] x local channel gate."""

    def __init__(self, ch: int, reduction: int = 8) -> None:
        super().__init__()
        self.aggregate = nn.Conv2d(ch, 1, 1, bias=False)
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)
        self.channel = nn.Sequential(
            nn.Conv2d(ch, max(ch // reduction, 4), 1), nn.ReLU(inplace=True), nn.Conv2d(max(ch // reduction, 4), ch, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.spatial(torch.cat([self.aggregate(x), x.mean(1, keepdim=True)], 1)))
        local = F.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
        return x * s * torch.sigmoid(self.channel(local))


class DenseBlock(nn.Module):
    def __init__(self, ch: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv2d(ch + i * growth, growth, 3, padding=1) for i in range(layers))
        self.fuse = nn.Conv2d(ch + layers * growth, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.layers:
            feats.append(F.relu(conv(torch.cat(feats, 1))))
        out: torch.Tensor = x + self.fuse(torch.cat(feats, 1))
        return out


class Seat(nn.Module):
    """Cross-attention from every bottleneck position to the image's pooled tokens."""

    def __init__(self, ch: int, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(ch, dim, 1)
        self.kv = nn.Linear(ch, 2 * dim)
        self.out = nn.Conv2d(dim, ch, 1)
        assert self.out.bias is not None  # bias=True
        nn.init.zeros_(self.out.weight)  # starts as identity: attention is learned as a residual
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)  # N x HW x D
        k, v = self.kv(tokens).chunk(2, -1)  # N x T x D

        def split(z: torch.Tensor) -> torch.Tensor:
            heads: torch.Tensor = z.unflatten(-1, (self.heads, -1)).transpose(1, 2)
            return heads

        a = F.scaled_dot_product_attention(split(q), split(k), split(v))  # N x heads x HW x D/h
        a = a.transpose(1, 2).flatten(2).transpose(1, 2).reshape(n, -1, h, w)
        out: torch.Tensor = x + self.out(a)
        return out


class GKMANet(GKMNet):
    spec = ModelSpec(
        name="gkmanet",
        paper="Zhang, Wang, Zhuo, Wang: GKMANet: Self-Attention Gaussian Kernel Mixture Network, Electronics 2026",
        size_multiple=16,
        receptive_radius=96,
        tile_overlap=64,  # 150 dB against untiled on a perturbed paper-size net (48: 141 dB)
        bytes_per_pixel=3000,  # measured 2459 / 2203 B/px at 768 / 1024 px
        tile_exact=True,
        paper_params=None,
        loss_recipe="gkmanet",
    )
    uses_context = True

    config: GkmaNetConfig

    def __init__(self, config: GkmaNetConfig | None = None, **overrides: Any) -> None:
        super().__init__(config or GkmaNetConfig(**overrides))
        c = 4 * self.config.width
        self.dense = DenseBlock(c, self.config.dense_layers, self.config.growth)
        self.seat = Seat(c, self.config.attention_dim, self.config.heads)
        self.lstm1 = nn.LSTMCell(c, c // 4)
        self.lstm2 = nn.LSTMCell(c // 4, 2 * self.num_kernels)
        xavier_init(self.dense)

    def _make_extractor(self, w: int) -> GkmExtractor:
        return GkmExtractor(w, make_attention=DualAttention, first_layer=nn.Conv2d(3, w, 7, padding=3))

    def features(self, y_t: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = self.extractor(y_t)
        feats["bottleneck"] = self.dense(feats["bottleneck"])
        return feats

    def scale_stats(
        self,
        feats: dict[str, torch.Tensor],
        core: tuple[int, int, int, int],
        origin: tuple[int, int],
        full: tuple[int, int],
    ) -> ContextStats:
        top, left, height, width = core
        box = (top // 4, left // 4, height // 4, width // 4)
        b = feats["bottleneck"]
        g, counts = grid_sums(b, box, (origin[0] // 4, origin[1] // 4), (full[0] // 4, full[1] // 4), self.config.grid)
        return ContextStats(
            sums=[region_sum(b, box)], count=[float(box[2] * box[3])], grid_sums=[g], grid_count=[counts]
        )

    def make_context(self, stats: ContextStats | None) -> Context | None:
        assert stats is not None and stats.grid_sums is not None and stats.grid_count is not None
        s1 = s2 = None
        vectors, tokens = [], []
        k = self.num_kernels
        for total, count, g, gc in zip(stats.sums, stats.count, stats.grid_sums, stats.grid_count):
            s1 = self.lstm1(total / count, s1)
            s2 = self.lstm2(F.relu(s1[0]), s2)
            logits = s2[0].view(-1, 2, k)
            vectors.append((torch.softmax(logits, -1) * k).flatten(1))
            tokens.append((g / gc.clamp(min=1)).flatten(2).transpose(1, 2))
        return Context(vectors=vectors, tokens=tokens)

    def global_weights(self, context: Context | None, t: int) -> torch.Tensor | None:
        assert context is not None
        return context.vectors[t]

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
        assert context is not None and context.tokens is not None
        feats = dict(feats, bottleneck=self.seat(feats["bottleneck"], context.tokens[t]))
        return super().step(t, y_t, x_up, feats, state, context, reconstruct)
