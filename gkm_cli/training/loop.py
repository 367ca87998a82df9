"""The trainer: one loop for every GKM network, resumable bit-for-bit on CPU.

Scale-out: the model can be wrapped (``wrap_model``, e.g. DistributedDataParallel from
:mod:`.distributed`) while the unwrapped module is what gets saved; batches come from
:class:`StepBatchSampler`, which gives each rank its share of every step's global batch
(:class:`~gkm_cli.runtime.RankInfo`). The loss terms are averaged over the ranks once per step (for the log and
to agree on skipping non-finite steps and on stopping); only rank 0 logs, validates and writes
the checkpoint, and every rank waits at a barrier after each save. SIGTERM/SIGINT stop the run
at the next step boundary with a checkpoint at that step (:mod:`.stopping`). Observers (plots,
dashboards) subscribe with ``on_step`` / ``on_log`` callbacks instead of reading the CSV.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from gkm_cli.errors import GkmError, SettingError, SettingText, setting_ref
from gkm_cli.fileio import atomic_write_bytes
from gkm_cli.nets import GkmNetwork, create_model, model_config
from gkm_cli.nets.checkpoint import card_path, load_weights, save_weights
from gkm_cli.runtime import RankInfo, autocast, host_info
from gkm_cli.training import checkpointing as ck
from gkm_cli.training.config import TrainConfig, ema_decay_at, lr_at
from gkm_cli.training.distributed import barrier, sum_across
from gkm_cli.training.losses import RECIPES, loss_terms, recipe_for
from gkm_cli.training.precision import training_autocast_dtype
from gkm_cli.training.sampling import StepBatchSampler, TrainData, build_train_data, rank_share
from gkm_cli.training.stopping import StopSignals, signal_name
from gkm_cli.training.validation import ValImage, load_val_pairs, synth_val_set, validate

LOG_FILE = "log.csv"
#: ``--save-all-ranks``: every rank's raw weights at each save, ``RANKS_DIR/rank{r}.safetensors``.
RANKS_DIR = "ranks"


class TrainingDiverged(GkmError):
    """Too many consecutive steps with a NaN/Inf loss or gradient."""


class TrainingInterrupted(GkmError):
    """SIGTERM/SIGINT: the state was saved at a step boundary and the run can be resumed.

    ``exit_code`` is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        if signum is not None:
            self.exit_code = 128 + signum


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    wall_s: float
    last_val: dict[str, float] | None
    best_psnr: float | None
    bad_steps: int
    last_terms: dict[str, float] = field(default_factory=dict)
    stopped: str | None = None  # "max-minutes" when the time budget ended the run before --steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def _best_on_disk(out: Path, saved: float | None) -> float | None:
    """The best validation PSNR to beat after a resume: the state's, or the score recorded in
    ``best.json`` when a best model was written after the last state save (then killed)."""
    try:
        card = json.loads(card_path(out / ck.BEST_WEIGHTS).read_text())
        on_disk = float(card["validation"]["best_psnr"])
    except (OSError, ValueError, KeyError, TypeError):
        return saved
    return on_disk if saved is None else max(saved, on_disk)


def init_weights(model: GkmNetwork, path: Path, *, shared: bool = False) -> dict[str, Any]:
    """Copy a checkpoint's weights into a freshly built ``model`` (fine-tuning). The checkpoint
    must hold the same architecture and configuration (``load_weights`` gives a checkpoint
    without the SRM training head a fresh one, so every key is there). ``shared``: the checkpoint
    may hold a related architecture; only tensors whose names and shapes match are copied (GKMANet
    shares 85% of its parameters with GKMNet), the rest keep their fresh initialisation.
    Returns what was copied (recorded in the model card)."""
    source = load_weights(path)
    same = source.spec.name == model.spec.name and model_config(source) == model_config(model)
    if not same and not shared:
        raise ck.CheckpointError(
            SettingText(
                f"{path}: holds {source.spec.name} {model_config(source)}, not {model.spec.name} "
                f"{model_config(model)}; "
                f"{setting_ref('init_from')} needs the same architecture (or {setting_ref('init_shared')})"
            )
        )
    target = model.state_dict()
    matched = {k: v for k, v in source.state_dict().items() if k in target and target[k].shape == v.shape}
    if not any(v.is_floating_point() for v in matched.values()):
        raise ck.CheckpointError(f"{path}: shares no tensor (name and shape) with {model.spec.name}")
    model.load_state_dict(matched, strict=same)
    numel = sum(v.numel() for v in target.values() if v.is_floating_point())
    copied = sum(v.numel() for v in matched.values() if v.is_floating_point())
    return {"from": source.spec.name, "tensors": len(matched), "of": len(target), "param_fraction": copied / numel}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for float parameters and buffers; others copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)


class _Log:
    """CSV log, one row per ``log_every`` steps (means over the interval) and per validation."""

    def __init__(self, path: Path, terms: Sequence[str], resume_step: int | None) -> None:
        self.path = path
        self.fields = ["step", "lr", "it_s", "bad_steps", *terms, "val_psnr", "val_ssim", "wall_s"]
        keep: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                keep = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


class Trainer:
    """Trains ``cfg.model`` into ``out_dir``. ``run()`` returns a :class:`TrainResult`."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        resume: bool = False,
        dist: RankInfo = RankInfo(),
        wrap_model: Callable[[nn.Module, bool], nn.Module] | None = None,
        on_step: Sequence[Callable[[int, dict[str, float]], None]] = (),
        on_log: Sequence[Callable[[dict[str, Any]], None]] = (),
        progress: bool = True,
        command: str | None = None,
        save_all_ranks: bool = False,
        handle_signals: bool = True,
        escalate_sigint: bool = True,
        max_minutes: float | None = None,
        wording: Callable[[str], str] = str,
    ) -> None:
        """``on_step(step, terms)`` runs on every rank after each step (terms averaged over the
        ranks); ``on_log(row)`` on rank 0 after each log.csv row. ``save_all_ranks`` (debug):
        each rank also writes its raw weights to ``RANKS_DIR`` at every save. ``handle_signals``:
        SIGTERM/SIGINT stop at the next step with a checkpoint (main thread only);
        ``escalate_sigint``: a second SIGINT interrupts at once (off under torchrun).
        ``max_minutes``: this invocation's budget of training-loop time (setup excluded); when
        it is spent the run stops at a step boundary, validates, saves and returns normally
        (``TrainResult.stopped``): equal-time probes, a session's share of a long run. It is
        not a run setting (a resume gets the budget it is given). ``wording`` turns a progress
        note that names settings (a :class:`SettingText`) into what the user reads (the CLI:
        its flags)."""
        self.cfg = cfg
        self.out = Path(out_dir)
        self.device = torch.device(device) if isinstance(device, str) else device
        self.resume = resume
        self.dist = dist
        self.wrap_model = wrap_model
        self.on_step = list(on_step)
        self.on_log = list(on_log)
        self.progress = progress and dist.is_main
        self.command = command if command is not None else shlex.join(["gkm", *sys.argv[1:]])
        self.save_all_ranks = save_all_ranks
        self.handle_signals = handle_signals
        self.escalate_sigint = escalate_sigint
        self.wording = wording
        if max_minutes is not None and not max_minutes > 0:
            raise SettingError("max_minutes", f"must be > 0, got {max_minutes}")
        self.max_seconds = None if max_minutes is None else 60.0 * max_minutes
        self.recipe = recipe_for(cfg.model, cfg.loss.recipe)
        self.amp = training_autocast_dtype(cfg.precision, self.device)

    # --- setup --------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        rank_share(cfg.batch, self.dist)  # a global batch that does not split evenly fails early
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model, **cfg.overrides())
        self.init_report: dict[str, Any] | None = None
        if cfg.init_from is not None and not self.resume:  # a resume loads its own state below
            self.init_report = init_weights(self.model, Path(cfg.init_from), shared=cfg.init_shared)
        self.model = self.model.to(self.device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.ema: GkmNetwork | None = None
        if cfg.ema > 0:
            self.ema = copy.deepcopy(self.model).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.start_step = 0
        self.best_psnr: float | None = None
        self.wall_before = 0.0
        self.last_val: dict[str, float] | None = None
        self.bad_total = 0
        state_path = self.out / ck.STATE_FILE
        if self.resume:
            st = ck.load_state(state_path, model=self.model, optimizer=self.optimizer, ema=self.ema, scaler=self.scaler)
            self.start_step = st.step
            self.best_psnr = _best_on_disk(self.out, st.info.get("best_psnr"))
            self.wall_before = float(st.info.get("wall_s", 0.0))
            self.last_val = st.info.get("last_val")
            self.init_report = st.info.get("init_report")
            self.bad_total = int(st.info.get("bad_steps", 0))
            saved = TrainConfig.from_dict(st.info["config"])
            if saved.model != cfg.model or saved.model_overrides != cfg.model_overrides:
                raise ck.CheckpointError(
                    f"{state_path}: trained {saved.model} {dict(saved.model_overrides)}, not {cfg.model} "
                    f"{cfg.overrides()}"
                )
        elif state_path.exists():
            another = f"pass {setting_ref('resume')} to continue it or choose another {setting_ref('out')}"
            raise SettingError("resume", f"{self.out} already holds a training run; {another}", leading=False)
        # wrapped after a resume has loaded the weights: every rank starts from the same state
        # A recipe without the reconstruction term leaves GGKMNet's SRM head without gradients.
        unused_head = not RECIPES[self.recipe].reconstruction and hasattr(self.model, "srm")
        self.net = self.wrap_model(self.model, unused_head) if self.wrap_model else self.model
        self.lpips: nn.Module | None = None
        if cfg.loss.lpips_weight > 0:  # frozen perceptual net of the loss (every rank computes it)
            from gkm_cli.metrics.lpips import load_lpips

            self.lpips = load_lpips(device=self.device)
        self.data: TrainData = build_train_data(cfg)
        self.val_images: list[ValImage] = []
        if self.dist.is_main:
            if cfg.val:
                self.val_images = load_val_pairs(cfg.val, cfg.val_max_size, cfg.val_top_crop)
            elif self.data.holdout_photos and cfg.val_synth > 0:
                self.val_images = synth_val_set(
                    self.data.holdout_photos, cfg.val_synth, cfg.val_synth_size, self.data.synth_config, cfg.seed
                )

    def _loader(self) -> DataLoader:
        from gkm_cli.data import worker_init_fn

        sampler = StepBatchSampler(self.start_step, self.cfg.steps, self.cfg.batch, self.dist)
        return DataLoader(
            self.data.dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=worker_init_fn if self.cfg.workers else None,
            prefetch_factor=2 if self.cfg.workers else None,
        )

    # --- saving -------------------------------------------------------------------------------
    def _card(self, step: int, wall: float) -> dict[str, Any]:
        from gkm_cli.nets import model_config

        return {
            "architecture": self.cfg.model,
            "config": model_config(self.model),
            "trained_by": "gkm train",
            "command": self.command,
            "training": self.cfg.to_dict(),
            "loss_recipe": self.recipe,
            "data": self.data.description,
            "synth_config": dataclasses.asdict(self.data.synth_config) if self.data.synth_config is not None else None,
            "lpips_loss_weights_sha256": getattr(self.lpips, "weights_sha256", None),
            "init_report": self.init_report,  # what --init copied (tensors, share of parameters)
            "steps": step,
            "wall_time_s": round(wall, 1),
            "hardware": host_info(self.device),
            "world_size": self.dist.world_size,
            "weights": "ema" if self.ema is not None else "raw",
            "validation": {
                "last": self.last_val,
                "best_psnr": self.best_psnr,
                "images": [v.name for v in self.val_images],
            },
        }

    def _save(self, step: int, wall: float) -> None:
        info = {
            "config": self.cfg.to_dict(),
            "best_psnr": self.best_psnr,
            "last_val": self.last_val,
            "wall_s": wall,
            "bad_steps": self.bad_total,
            "command": self.command,
            "world_size": self.dist.world_size,
            "init_report": self.init_report,
        }
        ck.save_state(
            self.out, step=step, model=self.model, optimizer=self.optimizer, ema=self.ema, scaler=self.scaler, info=info
        )
        save_weights(self.ema or self.model, self.out / ck.LAST_WEIGHTS, card=self._card(step, wall))
        ck.write_pointer(
            self.out,
            {
                "step": step,
                "state": ck.STATE_FILE,
                "weights": ck.LAST_WEIGHTS,
                "best": ck.BEST_WEIGHTS if self.best_psnr is not None else None,
                "best_psnr": self.best_psnr,
                "wall_s": round(wall, 1),
            },
        )

    def _save_rank_weights(self, step: int) -> None:
        """``--save-all-ranks``: this rank's raw weights (for checking that the ranks agree)."""
        from safetensors.torch import save as st_save

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        meta = {"step": str(step), "rank": str(self.dist.rank), "world_size": str(self.dist.world_size)}
        (self.out / RANKS_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(self.out / RANKS_DIR / f"rank{self.dist.rank}.safetensors", st_save(tensors, metadata=meta))

    def _checkpoint(self, step: int, wall: float) -> None:
        """Rank 0 saves; every rank then waits, so none runs ahead of a save in progress."""
        if self.dist.is_main:
            self._save(step, wall)
        if self.save_all_ranks:
            self._save_rank_weights(step)
        barrier(self.dist, self.device)

    def _global_terms(
        self, terms: dict[str, torch.Tensor], stop: StopSignals, out_of_time: bool
    ) -> tuple[dict[str, float], bool, bool]:
        """Loss terms averaged over the ranks (the global batch's means), whether any rank has
        been asked to stop and whether any rank's time budget is spent (so all stop at the same
        step); one all-reduce per step, none for a single process."""
        if self.dist.world_size == 1:
            return {k: float(v.detach()) for k, v in terms.items()}, stop.requested, out_of_time
        flags = [
            torch.tensor(float(stop.requested), device=self.device),
            torch.tensor(float(out_of_time), device=self.device),
        ]
        local = torch.stack([v.detach().float() for v in terms.values()] + flags)
        total = sum_across(local.to(self.device), self.dist).cpu()
        vals = dict(zip(terms, (total[:-2] / self.dist.world_size).tolist()))
        return vals, bool(total[-2] > 0), bool(total[-1] > 0)

    # --- loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.dist.is_main:  # rank 0 holds the folder for the whole group
            return self._run()
        with ck.run_lock(self.out):
            return self._run()

    def _run(self) -> TrainResult:
        cfg = self.cfg
        self._build()
        term_names = list(RECIPES[self.recipe].terms)
        term_names += [
            name for name, w in (("lpips", cfg.loss.lpips_weight), ("sharp", cfg.loss.sharp_weight)) if w > 0
        ]
        log = (
            _Log(self.out / LOG_FILE, term_names, self.start_step if self.resume else None)
            if self.dist.is_main
            else None
        )
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_good = 0
        bad_run = 0
        last_terms: dict[str, float] = {}
        t_int = time.perf_counter()
        steps_in_int = 0
        step = self.start_step
        clean = True
        timed_out = False
        bar = _Progress(self.progress, cfg.steps, self.start_step, self.wording)
        stop = StopSignals(escalate=self.escalate_sigint, enabled=self.handle_signals)
        try:
            with stop, bar:
                for keys_batch in self._loader():
                    blur = keys_batch["blur"].to(self.device, non_blocking=True)
                    sharp = keys_batch["sharp"].to(self.device, non_blocking=True)
                    coc = keys_batch["coc"].to(self.device, non_blocking=True) if "coc" in keys_batch else None
                    lr = lr_at(step, cfg)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    clean = False  # an interrupt from here to the step count would leave a half-updated state
                    self.optimizer.zero_grad(set_to_none=True)
                    with autocast(self.device, self.amp):
                        out = self.net(blur, reconstruct=RECIPES[self.recipe].reconstruction)
                    terms = loss_terms(
                        out, sharp, blur, recipe=self.recipe, cfg=cfg.loss, step=step, coc=coc, lpips_net=self.lpips
                    )
                    total = terms["total"]
                    spent = self.max_seconds is not None and time.perf_counter() - t0 >= self.max_seconds
                    vals, stopping, timed_out = self._global_terms(terms, stop, spent)
                    timed_out = timed_out and step + 1 < cfg.steps  # the last step ends the run anyway
                    ok = math.isfinite(vals["total"])  # the same decision on every rank
                    if ok:
                        self.scaler.scale(total).backward()
                        self.scaler.unscale_(self.optimizer)
                        norm = torch.nn.utils.clip_grad_norm_(
                            self.model.parameters(), cfg.clip_grad if cfg.clip_grad > 0 else math.inf
                        )
                        ok = bool(torch.isfinite(norm)) or self.scaler.is_enabled()
                        if ok:
                            self.scaler.step(self.optimizer)
                            self.scaler.update()
                            if self.ema is not None:
                                ema_update(self.ema, self.model, ema_decay_at(step, cfg.ema))
                    step += 1
                    clean = True
                    steps_in_int += 1
                    if ok:
                        bad_run = 0
                        n_good += 1
                        for k, v in vals.items():
                            sums[k] = sums.get(k, 0.0) + v
                        last_terms = vals
                    else:
                        bad_run += 1
                        self.bad_total += 1
                        self.optimizer.zero_grad(set_to_none=True)
                        bar.note(f"step {step}: non-finite loss/gradient ({bad_run} in a row), update skipped")
                        if bad_run >= cfg.max_bad_steps:
                            raise TrainingDiverged(
                                SettingText(
                                    f"{bad_run} consecutive steps with a NaN/Inf loss or gradient (last at step "
                                    f"{step}); "
                                    f"stopped. The last checkpoint in {self.out} predates them: "
                                    f"resume with a lower {setting_ref('lr')} or {setting_ref('clip_grad')}"
                                )
                            )
                    for cb in self.on_step:
                        cb(step, vals)
                    bar.advance(step, last_terms, self.last_val)
                    if self.dist.is_main:
                        row: dict[str, Any] | None = None
                        if step % cfg.log_every == 0 or step == cfg.steps or timed_out:
                            now = time.perf_counter()
                            row = {
                                "step": step,
                                "lr": lr,
                                "it_s": steps_in_int / max(now - t_int, 1e-9),
                                "bad_steps": self.bad_total,
                            }
                            row.update({k: v / max(n_good, 1) for k, v in sums.items()})
                            sums, n_good, steps_in_int, t_int = {}, 0, 0, now
                        if self.val_images and (step % cfg.val_every == 0 or step == cfg.steps or timed_out):
                            self.last_val = validate(self.ema or self.model, self.val_images, self.device, self.amp)
                            row = row or {"step": step, "lr": lr}
                            row.update(val_psnr=self.last_val["psnr"], val_ssim=self.last_val["ssim"])
                            if self.best_psnr is None or self.last_val["psnr"] > self.best_psnr:
                                self.best_psnr = self.last_val["psnr"]
                                wall = self.wall_before + time.perf_counter() - t0
                                save_weights(
                                    self.ema or self.model, self.out / ck.BEST_WEIGHTS, card=self._card(step, wall)
                                )
                            bar.note(
                                f"step {step}: val PSNR {self.last_val['psnr']:.2f} dB (input "
                                f"{self.last_val['input_psnr']:.2f}, "
                                f"gain {self.last_val['gain_psnr']:+.2f}), SSIM {self.last_val['ssim']:.4f}"
                            )
                        if row is not None:
                            row["wall_s"] = self.wall_before + time.perf_counter() - t0
                            assert log is not None
                            log.write(row)
                            for cb_log in self.on_log:
                                cb_log(row)
                            if not bar.live:
                                bar.note(_fmt_row(row))
                    saved = step % cfg.save_every == 0 or step == cfg.steps or timed_out
                    if saved:
                        self._checkpoint(step, self.wall_before + time.perf_counter() - t0)
                    stopping = stopping or (
                        self.dist.world_size == 1 and stop.requested
                    )  # ranks agree via _global_terms
                    if stopping and step < cfg.steps:
                        if not saved:
                            self._checkpoint(step, self.wall_before + time.perf_counter() - t0)
                        raise TrainingInterrupted(
                            SettingText(
                                f"stopped by {signal_name(stop.signum)} at step {step}; state saved in {self.out}, "
                                f"continue with {setting_ref('resume')}"
                            ),
                            stop.signum,
                        )
                    if timed_out:  # validated and saved above: a clean end, resumable like any other
                        budget = f"{setting_ref('max_minutes')} {(self.max_seconds or 0) / 60:g}"
                        bar.note(
                            SettingText(
                                f"step {step}: {budget} spent; stopped with a checkpoint (continue with "
                                f"{setting_ref('resume')})"
                            )
                        )
                        break
        except KeyboardInterrupt:
            if self.dist.is_main and clean and step > self.start_step:
                self._save(step, self.wall_before + time.perf_counter() - t0)
            saved_msg = "state saved" if clean and step > self.start_step else "last periodic save kept"
            resume = setting_ref("resume")
            raise TrainingInterrupted(
                SettingText(f"interrupted at step {step}; {saved_msg} in {self.out}, continue with {resume}")
            ) from None
        wall = self.wall_before + time.perf_counter() - t0
        return TrainResult(
            self.out,
            step,
            wall,
            self.last_val,
            self.best_psnr,
            self.bad_total,
            last_terms,
            "max-minutes" if timed_out else None,
        )


def _fmt_row(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']}"]
    for k, v in row.items():
        if k in ("step", "wall_s") or v is None:
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


class _Progress:
    """Rich live progress on stderr when it is a terminal; plain lines otherwise."""

    def __init__(self, enabled: bool, total: int, start: int, wording: Callable[[str], str] = str) -> None:
        from rich.console import Console

        self.wording = wording
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.total, self.start = total, start
        self._p: Any = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=False,
            )
            self._p.__enter__()
            self._task = self._p.add_task("train", total=self.total, completed=self.start, rate="", info="")
            self._t0, self._s0 = time.perf_counter(), self.start
        return self

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def advance(self, step: int, terms: dict[str, float], val: dict[str, float] | None) -> None:
        if self._p is None:
            return
        rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
        info = " ".join(f"{k} {v:.4f}" for k, v in terms.items())
        if val:
            info += f" | val {val['psnr']:.2f} dB"
        self._p.update(self._task, completed=step, rate=f"{rate:.2f} it/s", info=info)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(self.wording(text), highlight=False, soft_wrap=True)
