"""Where and how the code runs: device, precision and autocast, threads, torchrun ranks, host facts.

The one home of these concerns for inference (engine, API), training, evaluation and the
benchmark. Nothing here reads global settings behind the caller's back: the environment is read
only by :func:`rank_from_env` / :func:`torchrun_ranks`, and :func:`intra_op_threads` restores
the thread count it changed. Bad values raise :class:`~gkm_cli.errors.SettingError`, which
names the setting (``device``, ``precision``); the CLI words it with the flag.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from gkm_cli.errors import SettingError, UsageError

if TYPE_CHECKING:  # the spec is only read; runtime sits below nets in the layers
    from gkm_cli.nets import ModelSpec

__all__ = [
    "PRECISIONS",
    "Precision",
    "RankInfo",
    "autocast",
    "cpu_matrix_units",
    "host_info",
    "intra_op_threads",
    "mps_available",
    "parse_precision",
    "precision_dtype",
    "precision_name",
    "rank_from_env",
    "resolve_device",
    "select_dtype",
    "torchrun_ranks",
]

# --- device ------------------------------------------------------------------------------------


def mps_available() -> bool:
    """Apple's Metal backend is in this PyTorch build and usable on this machine."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(
    name: str | torch.device = "auto", local_rank: int | None = None, *, mps: bool = True
) -> torch.device:
    """Parse ``auto | cpu | cuda | cuda:N | mps`` into a device that exists on this machine.

    ``auto`` picks CUDA, then MPS (unless ``mps`` is False: work in float64, which MPS lacks),
    then the CPU. A :class:`torch.device` is returned as it is. Under torchrun ``local_rank`` picks the GPU for
    ``auto`` and plain ``cuda`` (``cuda:N`` is taken literally). Unknown or absent devices raise
    :class:`SettingError`.
    """
    if isinstance(name, torch.device):
        return name
    text = name.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", (local_rank or 0) % torch.cuda.device_count())
        if mps and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            raise SettingError("device", "mps: Apple MPS is not available in this PyTorch build or on this machine")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SettingError("device", f"{name}: no CUDA GPU is visible to PyTorch (torch {torch.__version__})")
        count = torch.cuda.device_count()
        if text == "cuda":
            return torch.device("cuda", (local_rank or 0) % count)
        index_text = text.split(":", 1)[1]
        if not index_text.isdigit():
            raise SettingError("device", f"{name}: expected cuda:N with N a GPU index")
        index = int(index_text)
        if index >= count:
            raise SettingError("device", f"{name}: only {count} CUDA device(s) visible (0..{count - 1})")
        return torch.device("cuda", index)
    raise SettingError("device", f"{name!r} is unknown; use auto, cpu, cuda, cuda:N or mps")


# --- precision ---------------------------------------------------------------------------------

Precision = Literal["auto", "fp32", "fp16", "bf16"]

#: Explicit precisions and their compute dtypes; reduced ones run under autocast (weights stay fp32).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_precision(text: str, *, allow_auto: bool = True) -> str:
    """``"FP16 "`` -> ``"fp16"``; anything but auto/fp32/fp16/bf16 raises :class:`SettingError`."""
    name = text.strip().lower()
    choices = (["auto"] if allow_auto else []) + list(PRECISIONS)
    if name not in choices:
        raise SettingError("precision", f"{text!r} is unknown; use {', '.join(choices[:-1])} or {choices[-1]}")
    return name


def precision_dtype(name: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16`` (an explicit precision; ``auto`` is the caller's policy)."""
    return PRECISIONS[parse_precision(name, allow_auto=False)]


def precision_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (for logs and JSON records)."""
    return next((k for k, v in PRECISIONS.items() if v == dtype), str(dtype))


def cuda_bf16_supported(device: torch.device) -> bool:
    """bf16 is fast on this device: a CUDA GPU that supports it (what ``auto`` precision asks)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def cpu_matrix_units(name: str) -> bool:
    """True when this CPU has matrix units for ``name`` (``bf16``: AMX tiles; ``fp16``: AMX-FP16).

    Without them oneDNN emulates reduced precision with conversions around fp32 arithmetic:
    GGKMNet under bf16 autocast ran 7x slower than fp32 on a 2-core AVX-512 EPYC (no AMX), and
    ~0.6x the fp32 time on a Sapphire Rapids Xeon with AMX (docs/PERFORMANCE.md). The probes are
    private torch functions: if a release drops them, reduced precision counts as unsupported.
    """
    probe = {"bf16": "_is_amx_tile_supported", "fp16": "_is_amx_fp16_supported"}.get(name)
    fn = getattr(torch.cpu, probe, None) if probe else None
    try:
        return bool(fn()) if fn is not None else False
    except RuntimeError:
        return False


def select_dtype(precision: str, device: torch.device, spec: ModelSpec) -> torch.dtype:
    """Inference compute dtype: ``auto`` = bf16 on GPUs that support it (and a network whose spec
    allows it), else fp32. fp16/bf16 run under autocast (weights stay fp32). A precision the
    network's spec rules out raises :class:`UsageError`; so does a reduced precision on a CPU
    without matrix units for it, where it would be several times slower than fp32, not faster."""
    name = parse_precision(precision)
    if name == "auto":
        return torch.bfloat16 if spec.supports_bf16 and cuda_bf16_supported(device) else torch.float32
    if name == "fp16" and not spec.supports_fp16:
        raise UsageError(f"{spec.name} does not support fp16 (its spec says so); use bf16 or fp32")
    if name == "bf16" and not spec.supports_bf16:
        raise UsageError(f"{spec.name} does not support bf16 (its spec says so); use fp16 or fp32")
    if name != "fp32" and device.type == "cpu" and not cpu_matrix_units(name):
        unit = "AMX" if name == "bf16" else "AMX-FP16"
        raise SettingError(
            "precision",
            f"{name} on this CPU has no {unit} units: it would run several times slower than fp32 "
            "(7x measured for bf16 on an AVX-512 EPYC); use fp32 on the CPU, or a GPU",
        )
    return PRECISIONS[name]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; fp32 (or None) runs as it is, with no autocast at all."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- threads -----------------------------------------------------------------------------------


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (None: unchanged); the previous
    count is restored on exit, so one measurement or run cannot change the next one's."""
    if count is not None and count < 1:
        raise SettingError("threads", f"must be >= 1, got {count}")
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- torchrun ranks ----------------------------------------------------------------------------

#: Environment variables torchrun sets for every worker (plus the rendezvous, MASTER_ADDR/PORT).
TORCHRUN_KEYS: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
RENDEZVOUS_KEYS: tuple[str, ...] = ("MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a launch: ``rank`` of ``world_size``; ``local_rank`` on its node
    (None: not set, a single process). Rank 0 logs, saves and reports the totals."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _parse_ranks(env: Mapping[str, str]) -> RankInfo:
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
    except ValueError:
        raise UsageError(f"non-integer {'/'.join(TORCHRUN_KEYS)} in the environment") from None
    if world < 1 or not 0 <= rank < world or (local is not None and local < 0):
        raise UsageError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return RankInfo(rank, world, local)


def rank_from_env(env: Mapping[str, str] | None = None) -> RankInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them; absent: a single process.

    For work that needs no process group to start (a folder run splits its files by rank).
    """
    return _parse_ranks(os.environ if env is None else env)


def torchrun_ranks(env: Mapping[str, str] | None = None) -> RankInfo | None:
    """This process's ranks when torchrun started it (every key and the rendezvous must be
    there: a process group will be opened), or None when none of the rank variables is set."""
    env = os.environ if env is None else env
    if not any(k in env for k in TORCHRUN_KEYS):
        return None
    missing = [k for k in (*TORCHRUN_KEYS, *RENDEZVOUS_KEYS) if k not in env]
    if missing:
        raise UsageError(f"incomplete distributed environment ({', '.join(missing)} not set): launch with torchrun")
    return _parse_ranks(env)


# --- host facts --------------------------------------------------------------------------------


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name (Linux), else what the platform module knows."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The CPU features that decide the fastest path (AVX2 vs AVX-512 kernels, bf16/fp16 matrix units).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of :data:`SPEED_FLAGS` the CPU has (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SPEED_FLAGS if f in have]
    except OSError:
        pass
    return []


def host_info(device: torch.device | None = None) -> dict[str, Any]:
    """What a measurement or a training run ran on (recorded in benchmark reports and model cards):
    platform, Python, torch, CPU model and count, torch's intra-op threads, and the GPU of a CUDA
    ``device``."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": torch.version.cuda,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
