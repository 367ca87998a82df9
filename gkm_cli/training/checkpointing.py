"""Training state on disk without pickles: safetensors for tensors, JSON for the rest.

A save writes, in this order, each file atomically (temp file + fsync + rename):

1. ``last.state.safetensors``: raw model weights (``model.*``), EMA weights (``ema.*``), the
   optimizer's tensors (``optim.<param>.<name>``), RNG states (``rng.*``); its metadata holds the
   whole JSON state (step, config, optimizer hyper-parameters, best score, wall time), so this one
   file is enough to resume. ``last.state.json`` is a readable copy of that JSON.
2. ``last.safetensors`` (the weights to use: EMA weights when EMA is on) and its model card
   ``last.json`` (``save_weights`` puts a card beside every weights file, so the pointer below
   cannot be called ``last.json``); ``best.safetensors`` + ``best.json`` when validation improves.
3. ``checkpoint.json``: the pointer (step, files), written last.

A kill at any moment leaves each file either old or new; the state file alone decides where a
resume continues, so the set is always resumable and loses at most one save interval.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import nn

from gkm_cli.errors import GkmError
from gkm_cli.fileio import atomic_write_bytes
from gkm_cli.training.compact import expand

STATE_FORMAT = "gkm-train-state"
STATE_VERSION = "1"
STATE_FILE = "last.state.safetensors"
STATE_JSON = "last.state.json"
LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
POINTER = "checkpoint.json"
LOCK_FILE = ".train.lock"


class RunLocked(GkmError):
    """Another training process holds the run folder."""


class CheckpointError(GkmError):
    """A training state file is missing, unreadable or does not match the run."""

    exit_code = 2


@dataclass
class TrainState:
    """What a resume restores, besides the module/optimizer tensors loaded in place."""

    step: int
    info: dict[str, Any]


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for name, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "ids": [str(p) for p in sd["state"]]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(p): dict(meta["scalars"].get(p, {})) for p in meta["ids"]}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(
    out_dir: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    scaler: torch.amp.GradScaler | None,
    info: dict[str, Any],
) -> Path:
    """Write ``last.state.safetensors`` (+ its JSON copy) for a resume at optimizer step ``step``."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous().clone()
    if ema is not None:
        for k, v in ema.state_dict().items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous().clone()
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    doc = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "step": step,
        "optimizer": opt_meta,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        **info,
    }
    text = json.dumps(doc, sort_keys=True, default=float)
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    atomic_write_bytes(path, st_save(tensors, metadata={"format": STATE_FORMAT, "state": text}))
    atomic_write_bytes(out_dir / STATE_JSON, (json.dumps(json.loads(text), indent=2) + "\n").encode())
    return path


def read_state_info(path: Path) -> dict[str, Any]:
    """The JSON part of a state file (no tensors loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"{path}: unreadable training state ({e})") from None
    if meta.get("format") != STATE_FORMAT or "state" not in meta:
        raise CheckpointError(f"{path}: not a gkm training state")
    return json.loads(meta["state"])


def load_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    scaler: torch.amp.GradScaler | None,
) -> TrainState:
    """Restore modules, optimizer, scaler and RNG in place from ``path``; returns the step and info."""
    info = read_state_info(path)
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            head, rest = key.split(".", 1)
            groups.setdefault(head, {})[rest if head != "optim" else key] = f.get_tensor(key)
    if info.get("compact"):  # a committed campaign state (training/compact.py)
        expand(groups, optimizer)
    dev = next(model.parameters()).device
    try:
        model.load_state_dict({k: v.to(dev) for k, v in groups["model"].items()})
        if ema is not None:
            if not groups["ema"]:
                raise CheckpointError(f"{path}: the run asks for EMA but the state has none")
            ema.load_state_dict({k: v.to(dev) for k, v in groups["ema"].items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: state does not match the model ({str(e).splitlines()[0]})") from None
    optimizer.load_state_dict(_unflatten_optimizer(groups["optim"], info["optimizer"]))
    if scaler is not None and info.get("scaler"):
        scaler.load_state_dict(info["scaler"])
    torch.set_rng_state(groups["rng"]["torch"])
    if "cuda" in groups["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(groups["rng"]["cuda"])
    return TrainState(step=int(info["step"]), info=info)


def write_pointer(out_dir: Path, doc: dict[str, Any]) -> None:
    """The small ``checkpoint.json`` written after state and weights: what the folder holds."""
    atomic_write_bytes(Path(out_dir) / POINTER, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for a training run: a second trainer on the same folder
    (say, a resume while the first run still goes) would interleave checkpoints and log rows.
    The lock is an OS file lock, so it goes with the process however that ends."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(out) / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunLocked(
                f"{out}: a training run is already using this folder (pid {holder}); stop it first or choose another "
                "--out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
