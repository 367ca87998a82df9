"""DistributedDataParallel for ``gkm train run`` under ``torchrun`` (one process per device).

``torchrun`` (or ``python -m torch.distributed.run``) starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`gkm_cli.runtime.torchrun_ranks` reads them and :func:`distributed_session` opens the process
group (NCCL on ``cuda:LOCAL_RANK``, Gloo on the CPU) for the length of a run and closes it
afterwards. The trainer only needs :class:`DistSession`: its :class:`~gkm_cli.runtime.RankInfo`, its
device and :meth:`DistSession.wrap`.

``--batch`` is the global batch: :class:`~gkm_cli.training.sampling.StepBatchSampler` gives
each rank ``batch / world_size`` samples of every step, so the gradient DDP averages over the
ranks is the gradient of the same global batch a single process would draw.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from gkm_cli.errors import SettingError, UsageError
from gkm_cli.runtime import RankInfo, resolve_device

#: How long a collective (all-reduce, barrier) waits for the slowest rank, e.g. during validation.
TIMEOUT = datetime.timedelta(minutes=30)


def rank_device(info: RankInfo, device: str = "auto") -> torch.device:
    """The device of one rank: ``cuda:LOCAL_RANK`` for auto/cuda with a GPU, else the CPU.

    Stricter than :func:`~gkm_cli.runtime.resolve_device`: DDP needs one GPU per rank, so a
    ``cuda:N`` or MPS choice and a LOCAL_RANK beyond the visible GPUs are refused, not wrapped.
    """
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device not in ("auto", "cuda"):
        raise SettingError(
            "device", f"{device!r}: under torchrun each process uses cuda:LOCAL_RANK or the CPU; use auto, cuda or cpu"
        )
    local = info.local_rank or 0
    if torch.cuda.is_available() and local >= torch.cuda.device_count():
        raise UsageError(
            f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices: lower --nproc-per-node"
        )
    return resolve_device("cuda", local)


@dataclass(frozen=True)
class DistSession:
    """An open process group: where this rank sits, its device and how to wrap the model."""

    info: RankInfo
    device: torch.device
    backend: str

    def wrap(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        """DDP around ``model`` (which keeps its parameters, so its optimizer stays valid).

        On GPU, BatchNorm layers (GKMNet, GKMANet) become SyncBatchNorm so batch statistics
        cover the global batch; on the CPU (Gloo) SyncBatchNorm is not available and each rank
        normalises with the statistics of its own share. ``find_unused``: some parameters get no
        gradient (a loss recipe that skips GGKMNet's self-reconstruction head).
        """
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            model, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=find_unused
        )


@contextmanager
def distributed_session(info: RankInfo, device: str = "auto") -> Iterator[DistSession]:
    """Open the default process group (env:// rendezvous set up by torchrun); destroy it on exit."""
    import torch.distributed as td

    dev = rank_device(info, device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    td.init_process_group(backend, init_method="env://", rank=info.rank, world_size=info.world_size, timeout=TIMEOUT)
    try:
        yield DistSession(info, dev, backend)
    finally:
        td.destroy_process_group()


def sum_across(t: torch.Tensor, info: RankInfo) -> torch.Tensor:
    """Element-wise sum of ``t`` over all ranks (``t`` itself when there is one process)."""
    if info.world_size == 1:
        return t
    import torch.distributed as td

    t = t.clone()
    td.all_reduce(t, op=td.ReduceOp.SUM)
    return t


def barrier(info: RankInfo, device: torch.device) -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if info.world_size == 1:
        return
    import torch.distributed as td

    if device.type == "cuda":
        td.barrier(device_ids=[device.index])
    else:
        td.barrier()
