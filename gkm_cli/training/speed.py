"""Training throughput: seconds per optimizer step (``gkm benchmark --train``).

One step is what :class:`gkm_cli.training.loop.Trainer` does per batch: forward (under autocast
for a reduced precision), the model's loss recipe, backward, gradient clipping, Adam and the EMA
update. Inputs are random patches (speed does not depend on the pixels). Several configurations
measured together run **interleaved**, one step of each in turn, so a machine whose speed drifts
(other jobs, thermal limits) affects them alike and their ratio stays meaningful.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.runtime import autocast, host_info, resolve_device
from gkm_cli.training.config import LossConfig, ema_decay_at
from gkm_cli.training.loop import ema_update
from gkm_cli.training.losses import RECIPES, loss_terms, recipe_for
from gkm_cli.training.precision import training_autocast_dtype

__all__ = ["TrainBenchConfig", "TrainBenchRecord", "measure_training"]


@dataclass(frozen=True)
class TrainBenchConfig:
    """One training configuration to time. ``precision`` follows ``gkm train run --precision``
    (``auto`` resolves as training would on this device); ``amp_dtype`` forces an autocast
    dtype past that policy (measurements of a path the policy refuses, e.g. bf16 without AMX)."""

    model: str
    patch: int = 128
    batch: int = 4
    precision: str = "fp32"
    device: str = "cpu"
    steps: int = 5
    warmup: int = 2
    channels_last: bool = False
    lpips_weight: float = 0.0
    sharp_weight: float = 0.0
    tiny: bool = False
    amp_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class TrainBenchRecord:
    """Timings of one configuration, in seconds (medians over the timed steps)."""

    model: str
    patch: int
    batch: int
    precision: str  # what ran: fp32 / bf16 / fp16
    channels_last: bool
    steps: int
    s_per_step: float
    s_per_step_min: float
    samples_per_s: float
    forward_s: float  # forward + loss
    backward_s: float
    optimizer_s: float  # clip + Adam + EMA

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Stepper:
    """The model, optimizer and data of one configuration; ``step()`` times one training step."""

    def __init__(self, cfg: TrainBenchConfig, seed: int) -> None:
        if cfg.patch < 32 or cfg.batch < 1 or cfg.steps < 1 or cfg.warmup < 0:
            raise ValueError("patch >= 32, batch >= 1, steps >= 1 and warmup >= 0 are needed")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.amp = cfg.amp_dtype if cfg.amp_dtype is not None else training_autocast_dtype(cfg.precision, self.device)
        torch.manual_seed(seed)
        overrides = TINY_OVERRIDES.get(cfg.model, {}) if cfg.tiny else {}
        self.model = create_model(cfg.model, **overrides).to(self.device).train()
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.ema = copy.deepcopy(self.model).eval()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.recipe = recipe_for(cfg.model)
        self.loss_cfg = LossConfig(lpips_weight=cfg.lpips_weight, sharp_weight=cfg.sharp_weight)
        self.lpips = None
        if cfg.lpips_weight > 0:
            from gkm_cli.metrics.lpips import load_lpips

            self.lpips = load_lpips(device=self.device)
        g = torch.Generator().manual_seed(seed)
        shape = (cfg.batch, 3, cfg.patch, cfg.patch)
        self.sharp = torch.rand(shape, generator=g).to(self.device)
        self.blur = (0.9 * self.sharp + 0.1 * torch.rand(shape, generator=g)).to(self.device)
        self.coc = (4 * torch.rand((cfg.batch, 1, cfg.patch, cfg.patch), generator=g)).to(self.device)
        self.times: list[tuple[float, float, float]] = []
        self.n = 0

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self) -> tuple[float, float, float]:
        blur = self.blur.contiguous(memory_format=self.memory_format)
        t0 = self._sync()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            out = self.model(blur, reconstruct=RECIPES[self.recipe].reconstruction)
        terms = loss_terms(
            out, self.sharp, self.blur, recipe=self.recipe, cfg=self.loss_cfg, coc=self.coc, lpips_net=self.lpips
        )
        t1 = self._sync()
        terms["total"].backward()
        t2 = self._sync()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        ema_update(self.ema, self.model, ema_decay_at(self.n, 0.999))
        t3 = self._sync()
        self.n += 1
        return t1 - t0, t2 - t1, t3 - t2

    def record(self) -> TrainBenchRecord:
        totals = [sum(t) for t in self.times]
        s = statistics.median(totals)
        name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp, str(self.amp))
        return TrainBenchRecord(
            model=self.cfg.model,
            patch=self.cfg.patch,
            batch=self.cfg.batch,
            precision=name,
            channels_last=self.cfg.channels_last,
            steps=len(totals),
            s_per_step=s,
            s_per_step_min=min(totals),
            samples_per_s=self.cfg.batch / s,
            forward_s=statistics.median(t[0] for t in self.times),
            backward_s=statistics.median(t[1] for t in self.times),
            optimizer_s=statistics.median(t[2] for t in self.times),
        )


def measure_training(
    configs: Sequence[TrainBenchConfig], *, threads: int | None = None, seed: int = 0
) -> tuple[list[TrainBenchRecord], dict[str, Any]]:
    """Time ``configs`` interleaved (warm-up steps of each first, then one timed step of each in
    turn); returns one record per configuration and the host facts (CPU model and flags, torch,
    threads). ``threads`` sets torch's intra-op threads for the measurement and restores them."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        steppers = [_Stepper(c, seed) for c in configs]
        for s in steppers:
            for _ in range(s.cfg.warmup):
                s.step()
        for i in range(max(c.steps for c in configs)):
            for s in steppers:
                if i < s.cfg.steps:
                    s.times.append(s.step())
        host = host_info(steppers[0].device if steppers else None)
        return [s.record() for s in steppers], host
    finally:
        torch.set_num_threads(before)
