"""How much memory a device has free (what the tiler sizes tiles from).

Device and precision selection live in :mod:`gkm_cli.runtime`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: Used when no free-memory figure can be read at all (4 GiB).
FALLBACK_FREE_BYTES = 4 << 30


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
