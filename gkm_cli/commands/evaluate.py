"""``gkm evaluate``: score restored images against ground truth and write reports.

Exit codes: 0 when at least one image was scored (problems are listed but do not fail the run,
unless ``--strict``), 1 when nothing could be scored (or ``--strict`` and any problem),
2 for usage errors (unknown protocol, bad folder, bad option).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gkm_cli.console import message, visible
from gkm_cli.errors import UsageError
from gkm_cli.images import DEFAULT_MAX_PIXELS

__all__ = ["evaluate", "register"]

_BIT_DEPTHS = {"8": 8, "16": 16, "native": None}


@dataclass(frozen=True)
class ProtocolOptions:
    """``--protocol NAME`` and the flags that override its conventions (None: the protocol's)."""

    name: str = "default"
    bit_depth: str | None = None
    round_prediction: bool | None = None
    crop_border: int | None = None
    crop_top: int | None = None
    y_channel: bool | None = None
    ssim_window: str | None = None
    data_range: float | None = None

    def build(self) -> Any:
        """The :class:`~gkm_cli.metrics.protocols.Protocol` these options describe."""
        from gkm_cli.metrics.protocols import get_protocol

        base = get_protocol(self.name)
        changes: dict[str, Any] = {}
        if self.bit_depth is not None:
            if self.bit_depth not in _BIT_DEPTHS:
                raise UsageError(f"--bit-depth must be 8, 16 or native, got {self.bit_depth!r}")
            changes["bit_depth"] = _BIT_DEPTHS[self.bit_depth]
        for name in ("round_prediction", "crop_border", "crop_top", "y_channel", "ssim_window", "data_range"):
            if getattr(self, name) is not None:
                changes[name] = getattr(self, name)
        return base.with_overrides(**changes)


@dataclass(frozen=True)
class EvaluateRequest:
    """Everything one ``gkm evaluate`` was asked to do: score ``pred_dir`` against ``gt_dir``
    (``model_run``: or run a network over a dataset first), write ``reports``, print JSON or tables."""

    pred_dir: Path | None
    gt_dir: Path | None
    input_dir: Path | None = None
    metrics: str = "psnr,ssim,lpips,mae,psnr_aligned"
    protocol: ProtocolOptions = ProtocolOptions()
    reports: tuple[Path, ...] = ()
    as_json: bool = False
    device: str = "cpu"
    lpips_weights: Path | None = None
    strict: bool = False
    model_run: _ModelRun | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS


def _print_tables(report: Any, console: Console) -> None:
    from gkm_cli.evaluation import fmt_metric

    ms = list(report.metrics)
    per = Table(title=f"gkm evaluate: {report.n_scored} images", title_justify="left")
    width = max((len(r.name) for r in report.images), default=5)
    per.add_column("image", no_wrap=True, min_width=min(width, 40), overflow="ellipsis")
    for m in ms:
        per.add_column(m, justify="right")
    gain_metric = "psnr" if "psnr" in ms else ms[0]
    if report.has_baseline:
        per.add_column(f"gain {gain_metric}", justify="right")
    for r in report.images:
        row: list[Any] = [Text(visible(r.name))] + [fmt_metric(m, r.metrics.get(m)) for m in ms]
        if report.has_baseline:
            g = r.gain
            row.append(fmt_metric(gain_metric, None if g is None else g.get(gain_metric), signed=True))
        per.add_row(*row)
    console.print(per)

    mean, base, gain = report.mean(), report.mean_baseline(), report.mean_gain()
    summ = Table(title="mean of per-image values", title_justify="left")
    summ.add_column("metric")
    summ.add_column("output", justify="right")
    if base is not None:
        summ.add_column("input", justify="right")
        summ.add_column("gain", justify="right")
    for m in ms:
        row = [m, fmt_metric(m, mean.get(m))]
        if base is not None and gain is not None:
            row += [fmt_metric(m, base.get(m)), fmt_metric(m, gain.get(m), signed=True)]
        summ.add_row(*row)
    console.print(summ)
    inf = report.infinite_counts()["metrics"]
    if inf:  # identical pairs: their inf is not averaged in
        console.print(
            "infinite values left out of the means: " + ", ".join(f"{m} {n}" for m, n in inf.items()), highlight=False
        )
    console.print(f"protocol: {report.protocol.summary()}", highlight=False, soft_wrap=True)


def evaluate(
    pred_dir: Annotated[
        Path | None,
        typer.Argument(metavar="[PRED_DIR]", help="Folder of restored images (predictions).", show_default=False),
    ] = None,
    gt_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="[GT_DIR]", help="Folder of ground-truth images; files pair by stem.", show_default=False
        ),
    ] = None,
    input_dir: Annotated[
        Path | None,
        typer.Option("--input-dir", help="Folder of the blurred inputs: adds baseline and gain columns."),
    ] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", help="Comma list of psnr, ssim, lpips, mae, psnr_aligned (colour-aligned PSNR).")
    ] = "psnr,ssim,lpips,mae,psnr_aligned",
    protocol: Annotated[
        str, typer.Option("--protocol", help="dpdd16, dpdd8, gkmnet or default; options below override it.")
    ] = "default",
    bit_depth: Annotated[
        str | None, typer.Option("--bit-depth", help="8, 16 or native: grid the ground truth is quantised to.")
    ] = None,
    round_: Annotated[
        bool | None, typer.Option("--round/--no-round", help="Round predictions to the bit-depth grid.")
    ] = None,
    crop_border: Annotated[
        int | None, typer.Option("--crop-border", min=0, help="Pixels removed on every side.")
    ] = None,
    crop_top: Annotated[
        int | None, typer.Option("--crop-top", min=0, help="Further rows removed at the top (burned-in labels).")
    ] = None,
    y_channel: Annotated[
        bool | None, typer.Option("--y-channel/--rgb", help="PSNR/SSIM/MAE on BT.601 luma instead of RGB.")
    ] = None,
    ssim_window: Annotated[str | None, typer.Option("--ssim-window", help="gaussian11 or uniform7.")] = None,
    data_range: Annotated[
        float | None, typer.Option("--data-range", help="Peak value in [0,1] units for PSNR/SSIM (default 1).")
    ] = None,
    report: Annotated[
        list[Path] | None,
        typer.Option("--report", help="Write a report; format from the suffix: .json .csv .md .html. Repeatable."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report on stdout (and nothing else).")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    lpips_weights: Annotated[
        Path | None, typer.Option("--lpips-weights", help="LPIPS safetensors file (default: models/lpips).")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any file had a problem.")] = False,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Dataset root (DPDD, LFDOF, RealDOF, RTF, blur/+sharp/): deblur it with --model and score."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Architecture for --data (default: ggkmnet).")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Checkpoint for --data (default: the shipped one).")
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split of --data (default: its test split, if any).")
    ] = None,
    save_dir: Annotated[
        Path | None, typer.Option("--save-dir", help="With --data: also write the restored images here.")
    ] = None,
    tile: Annotated[
        int | None, typer.Option("--tile", help="With --data: tile size in px (default: from free memory).")
    ] = None,
    precision: Annotated[str, typer.Option("--precision", help="With --data: auto, fp32, fp16, bf16.")] = "auto",
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels", min=0, help="Refuse files whose header declares more pixels than this (0 = no limit)."
        ),
    ] = DEFAULT_MAX_PIXELS,
) -> None:
    """Score restored images against ground truth (PSNR, SSIM, LPIPS, MAE, colour-aligned PSNR).

    Either PRED_DIR GT_DIR (files paired by stem), or --data ROOT [--model NAME] to run the
    engine on a dataset and score it (inputs are scored too, so the gain is shown)."""
    # A GkmError raised here goes to the one handler in gkm_cli/cli.py (one line, its exit code).
    if data is not None:
        if pred_dir is not None or gt_dir is not None or input_dir is not None:
            raise UsageError("give either PRED_DIR GT_DIR or --data ROOT, not both")
        model_run = _ModelRun(data, model, weights, split, save_dir, tile, precision)
    elif pred_dir is None or gt_dir is None:
        raise UsageError("give PRED_DIR and GT_DIR, or --data ROOT with --model")
    else:
        model_run = None
    protocol_options = ProtocolOptions(
        protocol, bit_depth, round_, crop_border, crop_top, y_channel, ssim_window, data_range
    )
    request = EvaluateRequest(
        pred_dir, gt_dir, input_dir, metrics, protocol_options, tuple(report or ()), as_json, device,
        lpips_weights, strict, model_run, max_pixels,
    )  # fmt: skip
    code = _run(request, Console(stderr=True, highlight=False, soft_wrap=True, emoji=False))
    if code:
        raise typer.Exit(code)


def _run(request: EvaluateRequest, err: Console) -> int:
    from gkm_cli.evaluation import REPORT_SUFFIXES, EvalSettings, evaluate_folders, render_json, write_report

    reports, model_run = request.reports, request.model_run
    pred_dir, gt_dir = request.pred_dir, request.gt_dir
    for path in reports:
        if path.suffix.lower() not in REPORT_SUFFIXES:
            raise UsageError(f"unknown report format for {path} (use {', '.join(REPORT_SUFFIXES)})")
    folders = (
        ("PRED_DIR", pred_dir),
        ("GT_DIR", gt_dir),
        ("--input-dir", request.input_dir),
        ("--data", model_run.data if model_run else None),
    )
    for label, folder in folders:
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{label} is not a folder: {folder}")
    settings = EvalSettings(
        protocol=request.protocol.build(),
        metrics=tuple(request.metrics.split(",")),
        device=request.device,
        lpips_weights=request.lpips_weights,
        preview_count=3 if any(p.suffix.lower() in (".html", ".htm") for p in reports) else 0,
    )

    def progress(done: int, total: int | None, name: str) -> None:
        if err.is_terminal:
            err.print(Text(f"\r[{done}/{total}] {visible(name)}"), end="")

    if model_run is not None:
        result = model_run.evaluate(settings, request.device, progress, err)
    else:
        assert pred_dir is not None and gt_dir is not None
        from functools import partial

        from gkm_cli.images import read_image

        reader = partial(read_image, max_pixels=request.max_pixels)
        result = evaluate_folders(pred_dir, gt_dir, request.input_dir, settings, reader=reader, progress=progress)
    if err.is_terminal:
        err.print()

    for path in reports:
        write_report(result, path)
    for p in result.problems:
        err.print(message("warning:", "yellow", f"{p.kind} ({p.consequence}): {p.detail}"))
    if request.as_json:
        sys.stdout.write(render_json(result))
        sys.stdout.flush()
    elif result.images:
        _print_tables(result, Console(highlight=False))
    for path in reports:
        err.print(Text(f"wrote {visible(str(path))}"))
    if not result.images:
        err.print(f"[bold red]error:[/] nothing could be scored ({len(result.problems)} problems)")
        return 1
    if request.strict and result.problems:
        err.print(f"[bold red]error:[/] {len(result.problems)} problems and --strict")
        return 1
    return 0


@dataclass(frozen=True)
class _ModelRun:
    """The --data mode's settings: which network on which dataset."""

    data: Path
    model: str | None
    weights: Path | None
    split: str | None
    save_dir: Path | None
    tile: int | None
    precision: str

    def evaluate(self, settings: Any, device: str, progress: Any, err: Console) -> Any:
        from gkm_cli.api import Deblurrer
        from gkm_cli.evaluation.model_eval import evaluate_model_on_dataset

        deblurrer = Deblurrer(self.model, self.weights, device=device, precision=self.precision, tile=self.tile)
        report, layout, split = evaluate_model_on_dataset(
            deblurrer, self.data, settings, split=self.split, save_dir=self.save_dir, progress=progress
        )
        err.print(
            f"dataset: {layout.name} layout at {self.data}"
            + (f", split {split}" if split else "")
            + f"; model {deblurrer!r}"
        )
        return report


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    """Attach ``evaluate`` to the ``gkm`` app (called by gkm_cli.cli)."""
    app.command("evaluate")(evaluate)
