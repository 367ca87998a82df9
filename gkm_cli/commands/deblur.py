"""``gkm deblur``: deblur files, folders, globs or stdin; also the renderer of ``gkm blurmap``.

The run itself is :class:`gkm_cli.engine.batch.BatchRun`; this module turns flags into its
:class:`~gkm_cli.engine.batch.BatchSettings` and shows its records: a Rich progress bar and
failure lines on stderr, ``--json`` lines on stdout, the summary.

Exit codes: 0 every input done (or skipped as already done), 1 some inputs failed (the others
are still written) or writing failed (unwritable folder, disk full: the run stops), 2 usage
errors and runs that cannot start (bad flags, unknown model, missing or invalid weights, an
output that would overwrite an input). The guarantees are listed in docs/ENGINE.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gkm_cli.console import message, worded_for_cli
from gkm_cli.errors import ImageWriteError, UsageError
from gkm_cli.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from gkm_cli.engine.batch import BatchSettings
    from gkm_cli.engine.pipeline import Record

__all__ = ["deblur", "register", "run_batch_command", "shard_flag"]

#: Test hook (read only here, at the CLI edge): seconds the writer sleeps after each output.
WRITE_DELAY_ENV = "GKM_TEST_WRITE_DELAY"


def _as_shown(record: Record) -> Record:
    """A record as the CLI shows it: a failure that names a setting names its flag."""
    if record.error is None:
        return record
    return dataclasses.replace(record, error=worded_for_cli(record.error))


def run_batch_command(settings: BatchSettings, *, as_json: bool = False, quiet: bool = False) -> None:
    """Run a ``gkm deblur``/``gkm blurmap`` folder run and show it; exits 1 when an input failed
    or the run stopped (a GkmError goes to the one handler in cli.py)."""
    from gkm_cli.engine.batch import BatchRun, BatchSummary
    from gkm_cli.engine.outputs import write_stream
    from gkm_cli.engine.pipeline import FAILED, OK, SKIPPED
    from gkm_cli.runtime import rank_from_env

    if settings.output == "-" and as_json:
        raise UsageError("--json prints records on stdout; it cannot be combined with -o - (image on stdout)")
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    ranks = rank_from_env()
    tag = f"[rank {ranks.rank}/{ranks.world_size}] " if ranks.distributed else ""
    stdout = typer.get_binary_stream("stdout")

    def notify(text: str) -> None:
        err.print(message("note:", "yellow", worded_for_cli(text), tag))

    def on_tile(done: int, total: int) -> None:
        progress.update(tiles_id, completed=done, total=total, visible=done < total)

    run = BatchRun(
        settings, notify=notify, on_tile=on_tile, stdin=typer.get_binary_stream("stdin"), stdout=stdout,
        write_delay_s=float(os.environ.get(WRITE_DELAY_ENV, "0") or 0),
    )  # fmt: skip
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    start = time.perf_counter()
    counts = {OK: 0, SKIPPED: 0, FAILED: 0}
    shown_errors: set[str] = set()  # failure lines already on the console
    megapixels = 0.0
    task_id = progress.add_task(f"{tag}gkm {settings.task}", total=run.total, rate="")
    tiles_id = progress.add_task(f"{tag}  tiles of this image", total=None, rate="", visible=False)
    end: BatchSummary | None = None
    events = iter(run)
    with progress:
        try:
            for event in events:
                if isinstance(event, BatchSummary):
                    end = event
                    continue
                record = _as_shown(event)
                counts[record.status] += 1
                if record.status == OK and record.megapixels:
                    megapixels += record.megapixels
                if record.status == FAILED:
                    shown_errors.add(record.error or "")
                    failure = message("failed:", "bold red", record.error or "", tag)
                    progress.console.print(failure, highlight=False, soft_wrap=True)
                if as_json:
                    try:
                        write_stream(stdout, (json.dumps(record.as_json()) + "\n").encode())
                    except ImageWriteError as e:  # stdout full or closed: the run stops as on a full disk
                        run.stop(e)
                        continue
                elapsed = max(1e-9, time.perf_counter() - start)
                rate = f"{counts[OK] / elapsed:.2f} img/s {megapixels / elapsed:.2f} MP/s"
                progress.update(task_id, advance=1, rate=rate)
        finally:
            events.close()  # an interrupted run winds its threads down here
    assert end is not None
    summary, stopped = end.summary, end.stopped
    if as_json and not end.stdout_closed:
        try:
            write_stream(stdout, (json.dumps(summary) + "\n").encode())
        except ImageWriteError as e:
            stopped = stopped or e
    not_attempted = summary["not_attempted"]
    if not quiet:
        err.print(
            f"{tag}{settings.task}: {summary['ok']} written, {summary['skipped']} skipped (already done), "
            f"{summary['failed']} failed"
            + (f", {not_attempted} not attempted" if not_attempted else "")
            + f" in {summary['seconds']:.1f} s on {summary['device']} ({summary['precision']})",
            highlight=False,
        )
    if stopped is not None and (not_attempted or str(stopped) not in shown_errors):
        left = f"; {not_attempted} input(s) not attempted" if not_attempted else ""
        err.print(message("error:", "bold red", f"run stopped: {stopped}{left}", tag), highlight=False, soft_wrap=True)
    world = end.world
    if world is not None and ranks.rank == 0:
        if as_json:
            write_stream(stdout, (json.dumps(world) + "\n").encode())
        if not quiet:
            err.print(
                f"{settings.task} (all {ranks.world_size} ranks): {world['ok']} written, {world['skipped']} skipped, "
                f"{world['failed']} failed in {world['seconds']:.1f} s",
                highlight=False,
            )
    if end.failed or stopped is not None:
        raise typer.Exit(1)


def shard_flag(text: str | None) -> tuple[int, int]:
    """``--shard i/N`` -> (i, N); None -> (0, 1)."""
    from gkm_cli.engine.folders import parse_shard

    return parse_shard(text)


# --- shared option types -----------------------------------------------------------------------
Inputs = Annotated[
    list[str],
    typer.Argument(help="Image files, folders or globs ('-' reads one image from stdin).", show_default=False),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Output folder (input tree mirrored below it), a file for one input, or '-' for stdout. Default: beside "
        "each input.",
    ),
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Architecture (default ggkmnet); see `gkm models`.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="A .safetensors checkpoint (default: the shipped models/<model>.safetensors)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[
    str, typer.Option("--precision", help="auto (bf16 on capable GPUs, else fp32), fp32, fp16 or bf16.")
]
TileOpt = Annotated[
    int | None, typer.Option("--tile", help="Tile core size in px (default: from free memory).", min=16)
]
OverlapOpt = Annotated[
    int | None,
    typer.Option(
        "--tile-overlap",
        help="Context px read around each tile core (default: the model's receptive radius, rounded to 16).",
        min=0,
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Also take images in sub-folders of folder inputs.")
]
SuffixOpt = Annotated[
    str | None,
    typer.Option(
        "--suffix",
        help="Added to output file names (default '' in another folder, '_deblurred'/'_blurmap' beside the input).",
    ),
]
SkipOpt = Annotated[
    bool, typer.Option("--skip-existing/--no-skip-existing", help="Skip inputs whose output exists (a re-run resumes).")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never inputs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per image on stdout, then a summary record.")]
ShardOpt = Annotated[
    str | None,
    typer.Option("--shard", help="Process only share i of N of the sorted inputs (i/N, e.g. for SLURM arrays)."),
]
BackendOpt = Annotated[
    str, typer.Option("--backend", help="torch, or onnxruntime (CPU, fp32, gkmnet: ~2x faster there).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line on stderr.")]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels", help="Refuse inputs whose header declares more pixels than this (0 = no limit).", min=0
    ),
]
RawPairsOpt = Annotated[
    str,
    typer.Option(
        "--raw-pairs",
        help="A RAW beside a same-named JPEG/HEIC in a folder: skip-jpeg (the RAW only), both, or raw-only.",
    ),
]
RawLinearOpt = Annotated[
    bool,
    typer.Option("--raw-linear", help="Develop RAW to linear light instead of sRGB (deblur: a linear 16-bit TIFF)."),
]


def deblur(
    inputs: Inputs,
    output: Output = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = None,
    tile_overlap: OverlapOpt = None,
    recursive: RecursiveOpt = False,
    suffix: SuffixOpt = None,
    skip_existing: SkipOpt = True,
    overwrite: OverwriteOpt = False,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Output format png, tiff, jpeg, webp, heif, avif or exr (default: the input's; RAW: 16-bit tiff).",
        ),
    ] = None,
    bit_depth: Annotated[
        int | None, typer.Option("--bit-depth", help="Output bits per sample 8, 16 or 32 (default: the input's).")
    ] = None,
    jpeg_quality: Annotated[
        int, typer.Option("--jpeg-quality", help="JPEG quality 1..100 (also lossy WebP, HEIF, AVIF).")
    ] = 95,
    as_json: JsonOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    backend: BackendOpt = "torch",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    strength: Annotated[
        float,
        typer.Option(
            "--strength",
            help="0..1: S * deblurred + (1 - S) * input; 1 = the network's output, lower keeps more of the photo.",
        ),
    ] = 1.0,
    raw_pairs: RawPairsOpt = "skip-jpeg",
    raw_linear: RawLinearOpt = False,
) -> None:
    """Deblur photos (PNG, TIFF, JPEG, WebP, HEIC, AVIF, EXR, camera RAW); metadata and bit depth are kept."""
    from gkm_cli.engine.batch import BatchSettings

    settings = BatchSettings(
        "deblur", tuple(inputs), output, model, weights, device, precision, tile, tile_overlap, recursive, suffix,
        skip_existing, overwrite, format, bit_depth, jpeg_quality, shard=shard_flag(shard), backend=backend,
        max_pixels=max_pixels, strength=strength, raw_pairs=raw_pairs, raw_linear=raw_linear,
    )  # fmt: skip
    run_batch_command(settings, as_json=as_json, quiet=quiet)


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    """Attach ``deblur`` to the ``gkm`` app (called by gkm_cli.cli)."""
    del models_app
    app.command("deblur")(deblur)
