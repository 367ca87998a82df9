"""Training samples that depend only on (seed, step): exact resume, any number of workers.

``batch`` is the global batch of a step (all ranks together). Step ``s`` uses the sample numbers
``k = s * batch + j`` for ``j < batch``; rank ``r`` of ``world_size`` takes the contiguous share
``j in [r * batch / world_size, (r + 1) * batch / world_size)``. Sample ``k`` picks its source
(real pairs or synthetic), its item and the item's randomness from a generator seeded with
``(seed, k)``; nothing depends on DataLoader iterator state. Resuming at step s therefore sees
exactly the batches a straight run would, the ranks of a distributed run draw disjoint shares,
and the global batch of a step does not depend on the number of processes (a run may be resumed
with another world size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from gkm_cli.errors import DataError, UsageError
from gkm_cli.runtime import RankInfo
from gkm_cli.training.config import TrainConfig

if TYPE_CHECKING:  # the data package loads when a dataset is built
    from gkm_cli.data.layouts import Pair

_TAG_MIX = 0x3C1


class EpochDataset(Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]: ...


def rank_share(batch: int, dist: RankInfo) -> int:
    """Samples per rank and step for the global ``batch``; it must split evenly."""
    if batch % dist.world_size:
        raise UsageError(
            f"--batch {batch} is the global batch and must be a multiple of the {dist.world_size} processes"
        )
    return batch // dist.world_size


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for each step in ``[start, end)``, this rank's share of the step's global sample numbers."""

    def __init__(self, start: int, end: int, batch: int, dist: RankInfo = RankInfo()) -> None:
        self.start, self.end, self.batch, self.dist = start, end, batch, dist
        self.share = rank_share(batch, dist)

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        b, n = self.batch, self.share
        for step in range(self.start, self.end):
            first = step * b + self.dist.rank * n
            yield list(range(first, first + n))


class KeyedMixDataset(Dataset[dict[str, torch.Tensor]]):
    """Maps a global sample number ``k`` to an item of one of several sources.

    The source is drawn with probabilities ``weights``, the item index uniformly (with
    replacement) and the source's epoch is set to ``k`` so its own per-item randomness (crop,
    flips, synthetic blur) is unique to the sample. Mutating ``set_epoch`` is local to the
    process (each DataLoader worker holds its own copy).

    ``with_coc``: every item also carries ``coc`` (1 x H x W, CoC radius in px): the source's own
    map when it has one (synthetic), else +inf ("unknown", never counted as in focus), so a
    batch mixing sources still collates. It changes no draw: the batches are the same.
    """

    def __init__(
        self, sources: Sequence[EpochDataset], weights: Sequence[float], seed: int, *, with_coc: bool = False
    ) -> None:
        if not sources or len(sources) != len(weights) or sum(weights) <= 0:
            raise DataError("need at least one data source with a positive weight")
        self.sources = list(sources)
        w = np.asarray(weights, dtype=np.float64)
        self.cum = np.cumsum(w / w.sum())
        self.seed = seed
        self.with_coc = with_coc

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([_TAG_MIX, self.seed & 0xFFFFFFFF, k >> 32, k & 0xFFFFFFFF]))
        u = rng.uniform()
        s = min(int(np.searchsorted(self.cum, u, side="right")), len(self.sources) - 1)
        src = self.sources[s]
        src.set_epoch(int(k))
        item = src[int(rng.integers(len(src)))]
        out = {"blur": item["blur"], "sharp": item["sharp"]}
        if self.with_coc:
            coc = item.get("coc")
            out["coc"] = coc if coc is not None else torch.full((1, *item["blur"].shape[-2:]), float("inf"))
        return out


@dataclass
class TrainData:
    """The training dataset and what to record about it."""

    dataset: KeyedMixDataset
    description: dict[str, Any]
    holdout_photos: list[Path] = field(default_factory=list)
    synth_config: Any = None


def synth_config_of(cfg: TrainConfig) -> Any:
    """The :class:`gkm_cli.data.SynthConfig` a run uses (defaults with the run's overrides)."""
    from gkm_cli.data import SynthConfig

    changes: dict[str, Any] = {}
    if cfg.synth_max_radius is not None:
        changes["max_radius"] = cfg.synth_max_radius
    if cfg.synth_in_focus_prob is not None:
        changes["in_focus_prob"] = cfg.synth_in_focus_prob
    if cfg.synth_dead_leaves is not None:
        changes["dead_leaves_fraction"] = cfg.synth_dead_leaves
    return SynthConfig(**changes)


def build_train_data(cfg: TrainConfig) -> TrainData:
    """Real-pair and/or synthetic sources from the config; held-out photos kept for validation."""
    from gkm_cli.data import PairPatchDataset, SynthPatchDataset, list_pairs, list_sharp_photos, split_holdout

    sources: list[EpochDataset] = []
    weights: list[float] = []
    desc: dict[str, Any] = {}
    holdout: list[Path] = []
    synth_cfg = None
    needs_coc = cfg.loss.sharp_weight > 0  # the do-no-harm term weighs pixels by their CoC
    if cfg.data:
        pairs: list[Pair] = []
        for root in cfg.data:
            pairs.extend(list_pairs(root, cfg.data_split))
        sources.append(PairPatchDataset(pairs, patch=cfg.patch, augment=True, seed=cfg.seed))
        weights.append(cfg.real_fraction if cfg.synth_from else 1.0)
        desc["real_pairs"] = {"roots": list(cfg.data), "split": cfg.data_split, "pairs": len(pairs)}
    if cfg.synth_from:
        photos: list[Path] = []
        for root in cfg.synth_from:
            photos.extend(list_sharp_photos(root))
        train, holdout = split_holdout(photos, cfg.synth_holdout, cfg.seed)
        if not train:
            raise DataError(f"no training photos left after holding out {cfg.synth_holdout:.0%}")
        synth_cfg = synth_config_of(cfg)
        sources.append(
            SynthPatchDataset(
                train,
                patch=cfg.patch,
                synth_config=synth_cfg,
                length=cfg.synth_length,
                seed=cfg.seed,
                return_coc=needs_coc,
            )
        )
        weights.append(1.0 - cfg.real_fraction if cfg.data else 1.0)
        desc["synthetic"] = {
            "roots": list(cfg.synth_from),
            "photos": [str(p) for p in train],
            "holdout_photos": [str(p) for p in holdout],
            "dead_leaves_fraction": synth_cfg.dead_leaves_fraction,
        }
    return TrainData(KeyedMixDataset(sources, weights, cfg.seed, with_coc=needs_coc), desc, holdout, synth_cfg)
