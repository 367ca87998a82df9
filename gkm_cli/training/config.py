"""Training settings: one frozen dataclass, recorded in every checkpoint and model card.

Steps, not epochs: our data are drawn on the fly, so the papers' epoch-based schedules are
expressed in optimizer steps (``lr_halve_start``/``lr_halve_every``, GKMNet's SSIM phases).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gkm_cli.errors import SettingError, UsageError, setting_ref
from gkm_cli.nets.registry import default_model
from gkm_cli.runtime import PRECISIONS, Precision

LossRecipe = Literal["auto", "ggkmnet", "gkmanet", "gkmnet"]

#: Folders that hold evaluation-only data (shared/data/README.md): never training data.
EVAL_ONLY_DIRS: frozenset[str] = frozenset({"real_pairs_dev", "real_blur_only"})


@dataclass(frozen=True)
class LossConfig:
    """Loss weights. ``scale_weights`` (coarse -> fine) None: the paper's w_t = 2^(1-t), t = 1
    the coarsest scale (1, 0.5, 0.25 for T = 3). ``fft_norm``: torch.fft norm ("ortho" keeps the
    FFT term on the scale of a pixel-domain L1; "backward" is the unnormalised reference form).
    GKMNet recipe: MSE summed over scales with equal weights; from ``ssim_phase_start`` steps on,
    cycles of ``ssim_phase_period`` steps whose first half uses sum(1 - SSIM) instead."""

    recipe: LossRecipe = "auto"
    fft_weight: float = 0.1
    ssim_weight: float = 0.1
    recon_weight: float = 0.1
    scale_weights: tuple[float, ...] | None = None
    fft_norm: Literal["ortho", "backward", "forward"] = "ortho"
    ssim_phase_start: int = 87_500  # GKMNet: 1000 epochs of DPDD (350 pairs / batch 4 = 88 steps)
    ssim_phase_period: int = 17_500  # GKMNet: cycles of 200 epochs
    # Extra terms for every recipe (0 = off, today's recipes); finest scale only, see losses.py.
    lpips_weight: float = 0.0  # LPIPS v0.1 AlexNet (models/lpips), frozen
    sharp_weight: float = 0.0  # do no harm: L1(output, input) where the CoC radius < sharp_radius
    sharp_radius: float = 0.5  # px

    def __post_init__(self) -> None:
        if self.lpips_weight < 0 or self.sharp_weight < 0 or self.sharp_radius <= 0:
            lpips, sharp, radius = (setting_ref(n) for n in ("lpips_weight", "sharp_weight", "sharp_radius"))
            raise SettingError(
                "lpips_weight",
                f"need {lpips} >= 0, {sharp} >= 0 and {radius} > 0, got "
                f"{self.lpips_weight}, {self.sharp_weight}, {self.sharp_radius}",
                leading=False,
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Sizes in pixels; lr per optimizer step."""

    model: str = field(default_factory=default_model)  # the spec marked default
    model_overrides: tuple[tuple[str, Any], ...] = ()
    init_from: str | None = None  # weights file to start from (fine-tuning); optimizer starts fresh
    init_shared: bool = False  # init_from holds a related architecture: copy the matching tensors only
    # data
    data: tuple[str, ...] = ()  # real-pair dataset roots (any layout detect_layout knows)
    data_split: str | None = None  # e.g. "train_c" for DPDD
    synth_from: tuple[str, ...] = ()  # folders of sharp photos for on-the-fly synthetic defocus
    synth_holdout: float = 0.15  # share of sharp photos kept apart for validation
    synth_length: int = 100_000  # virtual length of the synthetic dataset (index range)
    synth_max_radius: float | None = None
    synth_in_focus_prob: float | None = None
    synth_dead_leaves: float | None = None
    real_fraction: float = 0.5  # share of samples from real pairs when both sources are given
    patch: int = 256
    batch: int = 4  # global batch: split evenly between the processes of a distributed run
    workers: int = 0
    # optimisation
    steps: int = 10_000
    lr: float = 1e-4
    lr_halve_start: int | None = None  # None: 40% of steps (paper: 2000 of 5000 epochs)
    lr_halve_every: int | None = None  # None: 20% of steps (paper: every 1000 epochs)
    lr_factor: float = 0.5
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    ema: float = 0.0  # EMA decay of weights (0 = off); EMA weights are what gets saved
    precision: Precision = "auto"
    seed: int = 0
    max_bad_steps: int = 10
    loss: LossConfig = field(default_factory=LossConfig)
    # validation / checkpoints
    val: tuple[str, ...] = ()
    val_every: int = 500
    val_max_size: int = 512
    val_top_crop: int | None = None  # None: 72 rows for real_pairs_dev (text label), else 0
    val_synth: int = 8  # synthetic val patches from held-out photos when no --val is given
    val_synth_size: int = 256
    save_every: int = 500
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.patch < 16 or self.patch % 16:
            raise SettingError("patch", f"must be a multiple of 16 (>= 16), got {self.patch}")
        for name in ("batch", "steps", "val_every", "save_every", "log_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise SettingError(name, "must be >= 1")
        if self.workers < 0 or self.lr <= 0 or not 0 <= self.ema < 1 or self.clip_grad < 0:
            raise UsageError("need workers >= 0, lr > 0, 0 <= ema < 1, clip-grad >= 0")
        if not 0 <= self.synth_holdout < 1 or not 0 <= self.real_fraction <= 1:
            raise SettingError("synth_holdout", f"must be in [0, 1) and {setting_ref('real_fraction')} in [0, 1]")
        if self.precision not in ("auto", *PRECISIONS):
            raise SettingError("precision", f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if not self.data and not self.synth_from:
            data, synth_from = setting_ref("data"), setting_ref("synth_from")
            wanted = f"give training data: {data} ROOT (real pairs) and/or {synth_from} DIR (sharp photos)"
            raise SettingError("data", wanted, leading=False)
        for p in self.data + self.synth_from:
            check_training_path(p)

    # --- derived ----------------------------------------------------------------------------
    def halve_start(self) -> int:
        return self.lr_halve_start if self.lr_halve_start is not None else max(1, int(0.4 * self.steps))

    def halve_every(self) -> int:
        return self.lr_halve_every if self.lr_halve_every is not None else max(1, int(0.2 * self.steps))

    def overrides(self) -> dict[str, Any]:
        return dict(self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (JSON lists back to tuples); unknown keys are an error."""
        d = dict(d)
        loss = d.pop("loss", {}) or {}
        if loss.get("scale_weights") is not None:
            loss["scale_weights"] = tuple(loss["scale_weights"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UsageError(f"unknown training settings {sorted(unknown)}")
        for k in ("data", "synth_from", "val"):
            if k in d:
                d[k] = tuple(d[k])
        if "model_overrides" in d:
            d["model_overrides"] = tuple((str(k), v) for k, v in d["model_overrides"])
        return cls(loss=LossConfig(**loss), **d)


def check_training_path(path: str | Path) -> None:
    """Refuse training data inside an evaluation-only folder (``real_pairs_dev``, ``real_blur_only``)."""
    parts = set(Path(path).resolve().parts) | set(Path(path).parts)
    bad = parts & EVAL_ONLY_DIRS
    if bad:
        raise SettingError(
            "data",
            f"{path}: lies under '{sorted(bad)[0]}', which is for validation/evaluation only; "
            f"never train on it (use it with {setting_ref('val')} instead)",
            leading=False,
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): ``lr`` until ``halve_start``, then
    multiplied by ``lr_factor`` once, and again every ``halve_every`` steps (the paper's
    schedule with epochs turned into steps). A pure function of the step, so resume is exact."""
    start, every = cfg.halve_start(), cfg.halve_every()
    if step < start:
        return cfg.lr
    return cfg.lr * cfg.lr_factor ** (1 + (step - start) // every)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for optimizer step ``step`` (0-based): ``min(decay, (1 + step) / (10 + step))``.

    Without the warm-up a 0.999 average still holds 0.999^1500 = 22% of the initial weights
    after 1500 steps; averaging the identity-initialised network with the trained one that far
    apart gave a model that darkened every image by ~1% (measured on the shipped run). With it
    the average only reaches back about ``step / 10`` steps early on.
    """
    return min(decay, (1.0 + step) / (10.0 + step))
