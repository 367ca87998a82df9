"""Splitting a folder run across processes: torchrun ranks and SLURM-array style shards.

``torchrun --nproc-per-node N -m gkm_cli deblur ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. Each rank takes every
``WORLD_SIZE``-th file of the sorted list starting at ``RANK`` (after ``--shard i/N`` took its
own share the same way), which partitions the list with no duplicate and no missing output;
``LOCAL_RANK`` picks the GPU (:func:`gkm_cli.runtime.rank_from_env` reads the environment).
The images need no collectives; at the end the ranks join a torch.distributed process group once
(:func:`world_totals`) so that rank 0 can report the totals of the whole run and every rank exits 1
when any file failed anywhere. That group uses Gloo even on GPUs: it carries four numbers, and NCCL
would need them on the device.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

from gkm_cli.engine.folders import take_shard
from gkm_cli.runtime import RENDEZVOUS_KEYS, RankInfo

T = TypeVar("T")


def split_work(items: Sequence[T], shard: tuple[int, int], ranks: RankInfo) -> list[T]:
    """This process's share of a sorted list: first the ``--shard`` (i, N), then the rank."""
    mine = take_shard(items, *shard)
    return take_shard(mine, ranks.rank, ranks.world_size)


#: Counters summed over the ranks by :func:`world_totals`.
TOTALED = ("total", "ok", "skipped", "failed", "megapixels")


def world_totals(
    counts: Mapping[str, float], ranks: RankInfo, env: Mapping[str, str] | None = None
) -> dict[str, float] | None:
    """Sum ``counts`` (the :data:`TOTALED` keys) over all ranks of a torchrun launch.

    Returns the totals on every rank, or None for a single process or when the launcher set no
    rendezvous (``MASTER_ADDR``/``MASTER_PORT``): then each rank only knows its own share.
    """
    env = os.environ if env is None else env
    if not ranks.distributed or any(k not in env for k in RENDEZVOUS_KEYS):
        return None
    import torch
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group(
            "gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=datetime.timedelta(minutes=30)
        )
    try:
        values = torch.tensor([float(counts.get(k, 0.0)) for k in TOTALED], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(TOTALED, values.tolist()))
    finally:
        if own:
            dist.destroy_process_group()
