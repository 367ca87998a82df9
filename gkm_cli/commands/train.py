"""``gkm train run`` (train or resume a network), ``gkm train synth`` (write a fixed
synthetic validation set) and ``gkm train plot`` (training curves of a run as a PNG).

Every option defaults to "not given" so a resume (``--resume``) starts from the settings saved
in ``OUT/last.state.safetensors`` and changes only what is given again (typically ``--steps``).
Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) ``run`` trains with
DistributedDataParallel, one process per device; ``--batch`` is then the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gkm_cli.console import worded_for_cli
from gkm_cli.errors import UsageError
from gkm_cli.training.config import LossConfig

__all__ = ["config_from_options", "register"]

_LOSS_FIELDS = {f.name for f in dataclasses.fields(LossConfig)}


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_options(given: dict[str, Any], base: Any | None = None) -> Any:
    """A :class:`TrainConfig` from CLI values (None = not given) over ``base`` (or defaults)."""
    from gkm_cli.training.config import TrainConfig

    values = {k: v for k, v in given.items() if v is not None}
    loss_changes = {k: values.pop(k) for k in list(values) if k in _LOSS_FIELDS}
    if base is None:
        if "loss" in values:
            raise UsageError("internal: loss given twice")
        loss = dataclasses.replace(LossConfig(), **loss_changes)
        return TrainConfig(loss=loss, **values)
    loss = dataclasses.replace(base.loss, **loss_changes)
    return dataclasses.replace(base, loss=loss, **values)


def _tuple(v: list[Any] | None) -> tuple | None:
    return tuple(str(x) for x in v) if v else None


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    del models_app
    train_app = typer.Typer(
        help="Train a network (`gkm train run`), write a fixed synthetic validation set (`gkm train synth`) "
        "or plot a run's training curves (`gkm train plot`).",
        no_args_is_help=True,
    )
    app.add_typer(train_app, name="train")

    @train_app.command("run")
    def run(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, log.csv, model cards.")],
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Architecture (gkm models). Default ggkmnet.")
        ] = None,
        init: Annotated[
            Path | None,
            typer.Option(
                "--init",
                help="Start from these weights (fine-tune a .safetensors of the same architecture); the optimizer "
                "and lr schedule start fresh.",
            ),
        ] = None,
        init_shared: Annotated[
            bool,
            typer.Option(
                "--init-shared",
                help="With --init: weights of a related architecture; copy the tensors whose names and shapes "
                "match (e.g. GKMANet from GKMNet), initialise the rest.",
            ),
        ] = False,
        tiny: Annotated[
            bool, typer.Option("--tiny", help="Use the tiny test configuration of the model (smoke runs).")
        ] = False,
        model_set: Annotated[
            list[str] | None, typer.Option("--model-set", help="Model config override KEY=VALUE (repeatable).")
        ] = None,
        data: Annotated[
            list[Path] | None, typer.Option("--data", help="Real pairs dataset root, any known layout (repeatable).")
        ] = None,
        data_split: Annotated[
            str | None, typer.Option("--data-split", help="Split of --data to use, e.g. train_c for DPDD.")
        ] = None,
        synth_from: Annotated[
            list[Path] | None,
            typer.Option("--synth-from", help="Folder of sharp photos for on-the-fly synthetic defocus (repeatable)."),
        ] = None,
        synth_holdout: Annotated[
            float | None, typer.Option(help="Share of sharp photos held out for validation [0.15].")
        ] = None,
        synth_max_radius: Annotated[float | None, typer.Option(help="Largest synthetic CoC radius, px [12].")] = None,
        synth_in_focus: Annotated[float | None, typer.Option(help="Share of in-focus synthetic samples [0.2].")] = None,
        synth_dead_leaves: Annotated[float | None, typer.Option(help="Share of dead-leaves samples [0.3].")] = None,
        real_fraction: Annotated[
            float | None, typer.Option(help="Share of real pairs when --data and --synth-from are both given [0.5].")
        ] = None,
        val: Annotated[
            list[Path] | None,
            typer.Option("--val", help="Validation pairs folder (blur/ + sharp/ or any layout; repeatable)."),
        ] = None,
        val_every: Annotated[int | None, typer.Option(help="Validate every N steps [500].")] = None,
        val_max_size: Annotated[
            int | None, typer.Option(help="Centre-crop validation images to at most N px a side [512].")
        ] = None,
        val_top_crop: Annotated[
            int | None,
            typer.Option(help="Rows dropped at the top of validation images [72 for real_pairs_dev, else 0]."),
        ] = None,
        val_synth: Annotated[
            int | None, typer.Option(help="Synthetic validation patches from held-out photos when no --val [8].")
        ] = None,
        val_synth_size: Annotated[int | None, typer.Option(help="Size of those patches, px [256].")] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue the run in --out exactly where its last save left it.")
        ] = False,
        steps: Annotated[int | None, typer.Option(help="Total optimizer steps [10000].")] = None,
        batch: Annotated[
            int | None,
            typer.Option(help="Global batch size: under torchrun split evenly between the processes [4]."),
        ] = None,
        patch: Annotated[int | None, typer.Option(help="Training patch size, px, multiple of 16 [256].")] = None,
        lr: Annotated[float | None, typer.Option(help="Adam learning rate [1e-4].")] = None,
        lr_halve_start: Annotated[int | None, typer.Option(help="Step of the first lr decay [40% of --steps].")] = None,
        lr_halve_every: Annotated[int | None, typer.Option(help="Steps between later decays [20% of --steps].")] = None,
        lr_factor: Annotated[float | None, typer.Option(help="Decay factor [0.5].")] = None,
        clip_grad: Annotated[float | None, typer.Option(help="Max global gradient norm, 0 = off [1.0].")] = None,
        ema: Annotated[
            float | None, typer.Option(help="EMA decay of the weights, 0 = off [0]; saved weights are the EMA.")
        ] = None,
        precision: Annotated[
            str | None, typer.Option(help="auto|fp32|bf16|fp16; mixed precision on GPU only [auto].")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of init, data and holdout [0].")] = None,
        workers: Annotated[int | None, typer.Option(help="DataLoader worker processes [0].")] = None,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads (torch.set_num_threads).")] = None,
        device: Annotated[
            str, typer.Option(help="auto|cpu|cuda|cuda:N; under torchrun auto|cuda|cpu (rank on cuda:LOCAL_RANK).")
        ] = "auto",
        save_every: Annotated[int | None, typer.Option(help="Save state + weights every N steps [500].")] = None,
        log_every: Annotated[int | None, typer.Option(help="Log row every N steps [10].")] = None,
        max_bad_steps: Annotated[int | None, typer.Option(help="Stop after N consecutive NaN/Inf steps [10].")] = None,
        loss: Annotated[
            str | None, typer.Option("--loss", help="Loss recipe auto|ggkmnet|gkmanet|gkmnet [auto: by model].")
        ] = None,
        fft_weight: Annotated[float | None, typer.Option(help="Weight of the FFT L1 term [0.1].")] = None,
        ssim_weight: Annotated[float | None, typer.Option(help="Weight of the 1-SSIM term [0.1].")] = None,
        recon_weight: Annotated[
            float | None, typer.Option(help="Weight of the self-reconstruction L1 term [0.1].")
        ] = None,
        scale_weights: Annotated[
            str | None, typer.Option(help="Per-scale weights coarse->fine, e.g. 0.25,0.5,1 [paper: 1,0.5,0.25].")
        ] = None,
        fft_norm: Annotated[str | None, typer.Option(help="FFT normalisation ortho|backward|forward [ortho].")] = None,
        ssim_phase_start: Annotated[
            int | None, typer.Option(help="GKMNet recipe: first step of SSIM phases [87500].")
        ] = None,
        ssim_phase_period: Annotated[
            int | None, typer.Option(help="GKMNet recipe: SSIM/MSE cycle length in steps [17500].")
        ] = None,
        lpips_weight: Annotated[
            float | None,
            typer.Option(help="Weight of an LPIPS (AlexNet, frozen) term on the finest scale, 0 = off [0]."),
        ] = None,
        sharp_weight: Annotated[
            float | None,
            typer.Option(
                help="Do no harm: weight of L1(output, input) on pixels whose synthetic CoC radius < --sharp-radius, "
                "0 = off [0]."
            ),
        ] = None,
        sharp_radius: Annotated[
            float | None,
            typer.Option(help="CoC radius (px) below which a pixel counts as in focus for --sharp-weight [0.5]."),
        ] = None,
        max_minutes: Annotated[
            float | None,
            typer.Option(
                help="Stop after this many minutes of training (this invocation; setup excluded): validate, save, "
                "exit 0; --resume continues."
            ),
        ] = None,
        plot: Annotated[
            Path | None,
            typer.Option(
                "--plot",
                help="Write training curves to this PNG at every validation and at the end (needs matplotlib).",
            ),
        ] = None,
        save_all_ranks: Annotated[
            bool,
            typer.Option(
                "--save-all-ranks",
                help="Debug: under torchrun every rank also writes its raw weights to OUT/ranks/rank{R}.safetensors "
                "at each save.",
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Train a network on real pairs and/or synthetic defocus; resumable, checkpointed."""
        from gkm_cli.nets import TINY_OVERRIDES, default_model
        from gkm_cli.runtime import intra_op_threads, resolve_device, torchrun_ranks
        from gkm_cli.training import TrainConfig, Trainer
        from gkm_cli.training.checkpointing import STATE_FILE, read_state_info

        dist_env = torchrun_ranks(os.environ)
        if plot is not None and (dist_env is None or dist_env.is_main):
            from gkm_cli.training.plot import require_matplotlib

            require_matplotlib()  # before training, not at the first validation
        with intra_op_threads(threads):  # this command's thread count, restored when it returns
            overrides: dict[str, Any] | None = None
            if tiny or model_set:
                name = model or default_model()
                overrides = dict(TINY_OVERRIDES.get(name, {})) if tiny else {}
                for item in model_set or []:
                    if "=" not in item:
                        raise UsageError(f"--model-set expects KEY=VALUE, got {item!r}")
                    k, v = item.split("=", 1)
                    overrides[k.strip()] = _parse_value(v.strip())
            sw = None
            if scale_weights is not None:
                try:
                    sw = tuple(float(x) for x in scale_weights.split(","))
                except ValueError:
                    raise UsageError(
                        f"--scale-weights expects numbers separated by commas, got {scale_weights!r}"
                    ) from None
            given: dict[str, Any] = {
                "model": model,
                "init_from": str(init.resolve()) if init is not None else None,
                "init_shared": True if init_shared else None,
                "model_overrides": tuple(sorted(overrides.items())) if overrides is not None else None,
                "data": _tuple(data),
                "data_split": data_split,
                "synth_from": _tuple(synth_from),
                "synth_holdout": synth_holdout,
                "synth_max_radius": synth_max_radius,
                "synth_in_focus_prob": synth_in_focus,
                "synth_dead_leaves": synth_dead_leaves,
                "real_fraction": real_fraction,
                "val": _tuple(val),
                "val_every": val_every,
                "val_max_size": val_max_size,
                "val_top_crop": val_top_crop,
                "val_synth": val_synth,
                "val_synth_size": val_synth_size,
                "steps": steps,
                "batch": batch,
                "patch": patch,
                "lr": lr,
                "lr_halve_start": lr_halve_start,
                "lr_halve_every": lr_halve_every,
                "lr_factor": lr_factor,
                "clip_grad": clip_grad,
                "ema": ema,
                "precision": precision,
                "seed": seed,
                "workers": workers,
                "save_every": save_every,
                "log_every": log_every,
                "max_bad_steps": max_bad_steps,
                "recipe": loss,
                "fft_weight": fft_weight,
                "ssim_weight": ssim_weight,
                "recon_weight": recon_weight,
                "scale_weights": sw,
                "fft_norm": fft_norm,
                "ssim_phase_start": ssim_phase_start,
                "ssim_phase_period": ssim_phase_period,
                "lpips_weight": lpips_weight,
                "sharp_weight": sharp_weight,
                "sharp_radius": sharp_radius,
            }
            base = None
            if resume:
                base = TrainConfig.from_dict(read_state_info(out / STATE_FILE)["config"])
                fixed = ("model", "model_overrides", "init_from", "patch", "batch", "seed")
                changed = [k for k in fixed if given.get(k) is not None and given[k] != getattr(base, k)]
                if changed:
                    raise UsageError(
                        f"--resume cannot change {', '.join(changed)} (saved run has "
                        f"{', '.join(f'{k}={getattr(base, k)}' for k in changed)})"
                    )
            cfg = config_from_options(given, base)
            if dist_env is None:
                result = _train(
                    Trainer(
                        cfg,
                        out,
                        device=resolve_device(device),
                        resume=resume,
                        progress=not quiet,
                        on_log=_plotters(out, plot),
                        save_all_ranks=save_all_ranks,
                        max_minutes=max_minutes,
                        wording=worded_for_cli,
                    ),
                    out,
                    plot,
                )
            else:
                from gkm_cli.training.distributed import distributed_session

                with distributed_session(dist_env, device) as session:
                    trainer = Trainer(
                        cfg,
                        out,
                        device=session.device,
                        resume=resume,
                        progress=not quiet,
                        dist=session.info,
                        wrap_model=session.wrap,
                        on_log=_plotters(out, plot) if session.info.is_main else (),
                        save_all_ranks=save_all_ranks,
                        escalate_sigint=False,
                        max_minutes=max_minutes,
                        wording=worded_for_cli,
                    )
                    result = _train(trainer, out, plot if session.info.is_main else None)
                if not dist_env.is_main:
                    return
            if as_json:
                typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
            elif not quiet:
                last_val = result.last_val
                msg = f"trained {cfg.model} to step {result.steps} in {result.wall_s:.0f} s -> {out}/last.safetensors"
                if result.stopped:
                    msg += f" (stopped by --{result.stopped} before step {cfg.steps})"
                if last_val:
                    msg += (
                        f"; val PSNR {last_val['psnr']:.2f} dB (input {last_val['input_psnr']:.2f}), "
                        f"best {result.best_psnr:.2f}"
                    )
                typer.echo(msg, err=True)

    @train_app.command("plot")
    def plot_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run folder of `gkm train run` (or its log.csv).")],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="PNG to write [RUN_DIR/curves.png].")
        ] = None,
        title: Annotated[str | None, typer.Option(help="Figure title (default: the run folder's name).")] = None,
    ) -> None:
        """Plot a run's loss terms and validation PSNR/SSIM against the step (needs matplotlib)."""
        from gkm_cli.training.plot import log_path, plot_run

        dest = output if output is not None else log_path(run_dir).parent / "curves.png"
        plot_run(run_dir, dest, title=title)
        typer.echo(f"wrote {dest}", err=True)

    @train_app.command("synth")
    def synth(
        src: Annotated[
            Path, typer.Option("--from", help="Folder of sharp photos (evaluation-only folders are skipped).")
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: blur/, sharp/, coc/, synth.json.")],
        n: Annotated[int, typer.Option("--n", help="Number of pairs.")] = 32,
        size: Annotated[int, typer.Option("--size", help="Square size, px.")] = 256,
        seed: Annotated[int, typer.Option("--seed", help="Seed; the set is identical for a seed.")] = 0,
        bits: Annotated[int, typer.Option("--bits", help="PNG bits per channel, 8 or 16.")] = 8,
        max_radius: Annotated[float | None, typer.Option(help="Largest CoC radius, px [12].")] = None,
    ) -> None:
        """Write a fixed synthetic validation set (use it with `gkm train run --val OUT`)."""
        from gkm_cli.data import SynthConfig, list_sharp_photos, write_synthetic_set

        photos = list_sharp_photos(src)
        cfg = SynthConfig() if max_radius is None else SynthConfig(max_radius=max_radius)
        write_synthetic_set(photos, out, n=n, size=size, seed=seed, config=cfg, bits=bits)  # type: ignore[arg-type]
        typer.echo(f"wrote {n} synthetic pairs ({size}x{size}) from {len(photos)} photos to {out}", err=True)


def _plotters(out: Path, plot: Path | None) -> list[Any]:
    """The ``on_log`` observer that redraws ``plot`` at each validation (none without --plot)."""
    if plot is None:
        return []
    from gkm_cli.training.plot import CurvePlotter

    return [CurvePlotter(out, plot)]


def _train(trainer: Any, out: Path, plot: Path | None) -> Any:
    """Run ``trainer``; draw the final curves also when the run stops early (signal, divergence)."""
    from gkm_cli.training import TrainingDiverged, TrainingInterrupted
    from gkm_cli.training.plot import CurvePlotter

    final = CurvePlotter(out, plot) if plot is not None else None
    try:
        result = trainer.run()
    except (TrainingInterrupted, TrainingDiverged):
        if final is not None:
            final.write()
        raise
    if final is not None:
        final.write()
    return result
