"""Compact training states for the repository (``scripts/train_state.sh save``).

A full state (``checkpointing.save_state``) holds four fp32 copies of the network: raw weights,
EMA weights and Adam's two moments (29 MB for GGKMNet). The campaign commits one state per session
and git keeps every one forever, so the committed copy is compacted to about half:

* ``model.*`` raw weights: fp32, unchanged (training continues from them);
* ``ema.*``: stored as ``emad.*`` = EMA - raw in bf16. The difference is small, so bf16's 8-bit
  mantissa costs ~1e-9 absolute, far below what one optimizer step moves;
* Adam ``exp_avg`` (first moment, beta1 = 0.9: it forgets in ~10 steps) is dropped: a resume
  restarts it at zero, which with Adam's bias correction at a large step count is a short
  momentum warm-up;
* Adam ``exp_avg_sq`` (second moment, beta2 = 0.999: ~1000 steps of memory, what scales every
  update) in bf16;
* RNG states and the JSON state unchanged; the JSON gets ``"compact"`` saying what was done.

``checkpointing.load_state`` expands such a file back (``expand``), so ``gkm train run --resume``
reads both forms. The resume cost was measured once (docs/TRAINING.md, "Compact states").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from gkm_cli.fileio import atomic_write_bytes

__all__ = ["COMPACT_SCHEME", "compact_state_file", "compact_tensors", "expand"]

#: What a compact state did to each group; recorded in its JSON under "compact".
COMPACT_SCHEME = {"ema": "bf16 delta from model", "exp_avg": "dropped (zeros on resume)", "exp_avg_sq": "bf16"}


def compact_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full state's tensors -> the compact set (see the module doc)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        head, rest = key.split(".", 1)
        if head == "ema" and value.is_floating_point():
            out[f"emad.{rest}"] = (value.float() - tensors[f"model.{rest}"].float()).to(torch.bfloat16)
        elif head == "optim" and key.endswith(".exp_avg"):
            continue
        elif head == "optim" and key.endswith(".exp_avg_sq"):
            out[key] = value.to(torch.bfloat16)
        else:
            out[key] = value
    return out


def expand(groups: dict[str, dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer) -> None:
    """Undo :func:`compact_tensors` in place on the groups ``load_state`` read: EMA = raw + delta,
    second moments back to fp32, zero first moments for every parameter that has a second one."""
    for rest, delta in groups.pop("emad", {}).items():
        groups["ema"][rest] = groups["model"][rest].float() + delta.float()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for key in list(groups["optim"]):
        if key.endswith(".exp_avg_sq"):
            sq = groups["optim"][key].float()
            groups["optim"][key] = sq
            pid = int(key.split(".")[1])
            like = params[pid] if pid < len(params) else sq
            groups["optim"][key[: -len("_sq")]] = torch.zeros_like(sq, dtype=like.dtype)


def compact_state_file(src: Path, dst: Path) -> dict[str, Any]:
    """Write the compact form of the state file ``src`` to ``dst`` (atomically); returns its
    JSON state. A state that is already compact is copied as it is."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    info = json.loads(meta["state"])
    if not info.get("compact"):
        tensors = compact_tensors(tensors)
        info["compact"] = COMPACT_SCHEME
    meta["state"] = json.dumps(info, sort_keys=True)
    atomic_write_bytes(Path(dst), st_save(tensors, metadata=meta))
    return info
