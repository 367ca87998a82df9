"""Splitting a folder run across processes: torchrun ranks and SLURM-array style shards.

``torchrun --nproc-per-node N -m gkm_cli deblur ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Inference needs no
collectives, so no process group is created: each rank takes every ``WORLD_SIZE``-th file of
the sorted list starting at ``RANK`` (after ``--shard i/N`` took its own share the same way),
which partitions the list with no duplicate and no missing output. ``LOCAL_RANK`` picks the GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gkm_cli.engine.folders import take_shard
from gkm_cli.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a launch: ``rank`` of ``world_size``; ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def rank_from_env(env: Mapping[str, str] | None = None) -> RankInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (as set by torchrun); absent: a single process."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return RankInfo(rank, world, local)


def split_work(items: Sequence[T], shard: tuple[int, int], ranks: RankInfo) -> list[T]:
    """This process's share of a sorted list: first the ``--shard`` (i, N), then the rank."""
    mine = take_shard(items, *shard)
    return take_shard(mine, ranks.rank, ranks.world_size)
