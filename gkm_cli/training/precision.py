"""Training's mixed-precision policy: which autocast dtype ``gkm train run --precision`` runs.

* GPU: ``auto`` = bf16 where the GPU supports it, else fp32; bf16 / fp16 as asked (fp16 with a
  GradScaler, in the trainer).
* CPU: bf16 autocast only where the CPU has bf16 matrix units (AMX tiles: ``lscpu`` shows
  ``amx_bf16``); elsewhere oneDNN emulates it around fp32 arithmetic and a step gets slower, not
  faster (docs/TRAINING.md, "Precision and speed", has the measurements). ``auto`` stays fp32 on
  every CPU until a bf16 run has been compared with an fp32 run from the same start on an AMX
  machine (the issue-21 protocol; not measured yet). fp16 is refused on the CPU: its GradScaler is
  a CUDA tool and no CPU here has fp16 matrix units for training.

Losses stay fp32 whatever the network ran in (``losses.loss_terms`` casts), so the FFT and SSIM
terms never run in bf16.
"""

from __future__ import annotations

import torch

from gkm_cli.errors import SettingError
from gkm_cli.runtime import cpu_matrix_units, cuda_bf16_supported, parse_precision, precision_dtype

__all__ = ["training_autocast_dtype"]


def training_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training step on ``device``; None = fp32, no autocast."""
    name = parse_precision(precision)
    if device.type == "cuda":
        if name == "auto":
            return torch.bfloat16 if cuda_bf16_supported(device) else None
        dtype = precision_dtype(name)
        return None if dtype == torch.float32 else dtype
    if name in ("auto", "fp32"):
        return None
    if name == "bf16" and cpu_matrix_units("bf16"):
        return torch.bfloat16
    why = "this CPU has no AMX bf16 units, so bf16 would be slower than fp32" if name == "bf16" else "needs a GPU"
    raise SettingError("precision", f"{name} training on the CPU: {why}; use fp32 or auto")
