"""Device and precision selection, and how much memory a device has free.

Nothing here reads global settings: the CLI passes the user's ``--device``/``--precision`` and
(under torchrun) the local rank in, and gets a :class:`torch.device` and a dtype back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from gkm_cli.errors import UsageError
from gkm_cli.nets import ModelSpec

Precision = Literal["auto", "fp32", "fp16", "bf16"]

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: Used when no free-memory figure can be read at all (4 GiB).
FALLBACK_FREE_BYTES = 4 << 30


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """Parse ``auto | cpu | cuda | cuda:N | mps`` into a device that exists on this machine.

    ``auto`` picks CUDA, then MPS, then the CPU. Under torchrun ``local_rank`` picks the GPU for
    ``auto`` and plain ``cuda`` (``cuda:N`` is taken literally). Unknown or absent devices raise
    :class:`UsageError`.
    """
    text = name.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UsageError("--device mps: Apple MPS is not available in this PyTorch build or on this machine")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is visible to PyTorch (torch {torch.__version__})")
        count = torch.cuda.device_count()
        if text == "cuda":
            return torch.device("cuda", (local_rank or 0) % count)
        index_text = text.split(":", 1)[1]
        if not index_text.isdigit():
            raise UsageError(f"--device {name}: expected cuda:N with N a GPU index")
        index = int(index_text)
        if index >= count:
            raise UsageError(f"--device {name}: only {count} CUDA device(s) visible (0..{count - 1})")
        return torch.device("cuda", index)
    raise UsageError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def select_dtype(precision: str, device: torch.device, spec: ModelSpec) -> torch.dtype:
    """Compute dtype for ``--precision``: ``auto`` = bf16 on GPUs that support it, else fp32.

    fp16/bf16 run under autocast (weights stay fp32); the engine re-runs a tile in fp32 when a
    reduced-precision output is not finite. Asking for a precision the architecture's spec rules
    out raises :class:`UsageError`.
    """
    text = precision.strip().lower()
    if text == "auto":
        if device.type == "cuda" and spec.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if text not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; use auto, fp32, fp16 or bf16")
    if text == "fp16" and not spec.supports_fp16:
        raise UsageError(f"{spec.name} does not support fp16 (its spec says so); use bf16 or fp32")
    if text == "bf16" and not spec.supports_bf16:
        raise UsageError(f"{spec.name} does not support bf16 (its spec says so); use fp16 or fp32")
    return PRECISIONS[text]


def precision_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (for logs and JSON records)."""
    return next((k for k, v in PRECISIONS.items() if v == dtype), str(dtype))


def _meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where there is no such file."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """memory.max - memory.current of a cgroup-v2 container limit, or None when unlimited."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def host_available_bytes() -> int:
    """RAM available to this process: /proc/meminfo MemAvailable (bounded by a cgroup limit),
    else ``os.sysconf`` available pages, else :data:`FALLBACK_FREE_BYTES`."""
    found = _meminfo_available()
    if found is None:
        try:
            found = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            found = None
    if found is None or found <= 0:
        found = FALLBACK_FREE_BYTES
    headroom = _cgroup_headroom()
    return min(found, headroom) if headroom is not None else found


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` in bytes: CUDA's free memory, else the host's available RAM
    (MPS shares host memory)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_bytes()
