"""``gkm deblur``: deblur files, folders, globs or stdin; also the shared runner of ``gkm blurmap``.

Exit codes: 0 every input done (or skipped as already done), 1 some inputs failed (the others
are still written) or writing failed (unwritable folder, disk full: the run stops), 2 usage
errors and runs that cannot start (bad flags, unknown model, missing or invalid weights, an
output that would overwrite an input). The guarantees are listed in docs/ENGINE.md.
"""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gkm_cli.console import message
from gkm_cli.errors import GkmError, ImageWriteError, UsageError
from gkm_cli.images import DEFAULT_MAX_PIXELS, FORMAT_ALIASES, OTHER_IMAGE_SUFFIXES

__all__ = ["RunOptions", "deblur", "register", "run_cli", "run_command"]

#: Test hook (read only here, at the CLI edge): seconds the writer sleeps after each output.
WRITE_DELAY_ENV = "GKM_TEST_WRITE_DELAY"


@dataclass(frozen=True)
class RunOptions:
    """Everything a ``gkm deblur`` / ``gkm blurmap`` run was asked to do (from the flags)."""

    task: str  # "deblur" | "blurmap"
    inputs: tuple[str, ...]
    output: str | None = None
    model: str | None = None
    weights: Path | None = None
    device: str = "auto"
    precision: str = "auto"
    tile: int | None = None
    tile_overlap: int | None = None
    recursive: bool = False
    suffix: str | None = None
    skip_existing: bool = True
    overwrite: bool = False
    format: str | None = None
    bit_depth: int | None = None
    jpeg_quality: int = 95
    heatmap: bool = False
    max_sigma: float = 16.0
    as_json: bool = False
    shard: str | None = None
    quiet: bool = False
    backend: str = "torch"
    max_pixels: int = DEFAULT_MAX_PIXELS
    strength: float = 1.0  # deblur only: S * output + (1 - S) * input


def _image_format(text: str | None) -> str | None:
    if text is None:
        return None
    fmt = FORMAT_ALIASES.get(text.lower().lstrip("."))
    if fmt is None:
        raise UsageError(f"--format must be png, tiff or jpeg, got {text!r}")
    return fmt


def _map_format(text: str | None) -> str:
    """Blur-map ``--format``: png (default), tiff/tif or npy."""
    found = {"png": "png", "tif": "tiff", "tiff": "tiff", "npy": "npy"}.get((text or "png").lower().lstrip("."))
    if found is None:
        raise UsageError(f"blurmap --format must be png, tiff or npy, got {text!r}")
    return found


def _device_memory(device: Any) -> dict[str, float]:
    """Peak memory the network's device held (CUDA only; the CPU's is the process RSS)."""
    import torch

    if device.type != "cuda":
        return {}
    return {"cuda_max_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}


def _named_output_format(output: str | None) -> str | None:
    """The format an ``-o FILE`` suffix names (png, tiff, jpeg, npy), or None for folders / stdout.

    An image suffix gkm cannot write (``-o x.webp``) is a usage error, not a folder to create.
    """
    if output is None or output == "-" or Path(output).is_dir():
        return None
    suffix = Path(output).suffix.lower()
    if suffix in OTHER_IMAGE_SUFFIXES:
        raise UsageError(f"-o {output}: cannot write {suffix} files; name a .png, .tif or .jpg file (blurmap: also .npy) or a folder")
    suffix = suffix.lstrip(".")
    return "npy" if suffix == "npy" else FORMAT_ALIASES.get(suffix)


def _write_bytes(path: Path, data: bytes, before_replace: Any = None) -> None:
    """Atomic write (temp file + fsync + rename) with OS errors as one-line ImageWriteErrors."""
    from gkm_cli.fileio import atomic_write_bytes, describe_os_error

    try:
        atomic_write_bytes(path, data, before_replace=before_replace)
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write ({describe_os_error(e)})", errno=e.errno) from None


def _silence_stdout(stream: Any) -> None:
    """Point a failed stdout at /dev/null, so the interpreter's final flush of what is still
    buffered cannot fail again (a second message, or a traceback at exit)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _unread_after_close(stream: Any, wait_s: float = 0.05) -> int:
    """Bytes still in the pipe behind ``stream`` although its reader has gone (0: none, or not a
    pipe). A reader that quits early (``| head -c 10``) loses them, and nothing else would tell."""
    import fcntl
    import select
    import stat
    import termios

    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        poller = select.poll()
        poller.register(fd, 0)  # only POLLERR / POLLHUP: the reading end was closed
        if not poller.poll(int(wait_s * 1000)):
            return 0
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")
    except (OSError, ValueError, AttributeError):
        return 0


def _write_stdout(stream: Any, data: bytes) -> None:
    """Write one output (or JSON line) to stdout; a full disk or a closed pipe is one
    ImageWriteError (which stops the run), never a traceback or a false "written"."""
    from gkm_cli.fileio import describe_os_error

    try:
        stream.write(data)
        stream.flush()
    except OSError as e:
        _silence_stdout(stream)
        raise ImageWriteError(f"<stdout>: cannot write ({describe_os_error(e)})", errno=e.errno) from None
    lost = _unread_after_close(stream)
    if lost:
        _silence_stdout(stream)
        raise ImageWriteError(f"<stdout>: the reader closed the pipe with {lost} bytes unread", errno=errno.EPIPE)


def _folder_error(folder: Path, e: OSError) -> ImageWriteError:
    from gkm_cli.fileio import describe_os_error

    return ImageWriteError(f"{folder}: cannot create output folder ({describe_os_error(e)})", errno=e.errno)


def _prepare_folder(path: Path) -> None:
    """Create an output's folder and remove temp files left by an interrupted earlier run."""
    from gkm_cli.engine.folders import stale_temp_files

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(path.parent, e) from None
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)


def _check_writable(folder: Path) -> None:
    """Fail early, with one line, when the output folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(folder, e) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        why = "read-only file system" if read_only else "permission denied"
        raise ImageWriteError(f"{folder}: output folder is not writable ({why})", errno=errno.EROFS if read_only else errno.EACCES)


def run_command(opts: RunOptions, err: Console) -> int:
    """Run a deblur/blurmap command; returns the exit code (raises GkmError for fatal errors)."""
    from gkm_cli.api import Deblurrer
    from gkm_cli.engine.distributed import split_work, world_totals
    from gkm_cli.runtime import rank_from_env
    from gkm_cli.engine.folders import FORMAT_SUFFIX, STDIO, check_jobs, drop_previous_outputs, expand_inputs, parse_shard, plan_jobs
    from gkm_cli.engine.manifest import MANIFEST_NAME, InputId, Manifest, file_sha256, settings_key
    from gkm_cli.engine.maps import MapSettings, sidecar_path
    from gkm_cli.engine.pipeline import FAILED, OK, SKIPPED, Record, Stages, run_pipeline
    from gkm_cli.engine.runner import check_strength

    blurmap = opts.task == "blurmap"
    to_stdout = opts.output == STDIO
    if to_stdout and opts.as_json:
        raise UsageError("--json prints records on stdout; it cannot be combined with -o - (image on stdout)")
    if not opts.inputs:
        raise UsageError("no inputs given")
    named_file = _named_output_format(opts.output)
    if blurmap:  # a single output file's suffix chooses the map format unless --format does
        map_format = _map_format(opts.format if opts.format is not None or named_file is None else named_file)
        map_settings: MapSettings | None = MapSettings(map_format, opts.heatmap, opts.max_sigma)
    else:
        if named_file == "npy":
            raise UsageError(f"-o {opts.output}: deblur writes images (.png, .tif, .jpg), not .npy")
        map_settings = None
    fmt = None if blurmap else _image_format(opts.format)
    if not blurmap and opts.bit_depth is not None and opts.bit_depth not in (8, 16, 32):
        raise UsageError(f"--bit-depth must be 8, 16 or 32, got {opts.bit_depth}")
    if not 1 <= opts.jpeg_quality <= 100:
        raise UsageError(f"--jpeg-quality must be 1..100, got {opts.jpeg_quality}")
    if opts.max_pixels < 0:
        raise UsageError(f"--max-pixels must be >= 0 (0 = no limit), got {opts.max_pixels}")
    check_strength(opts.strength)
    shard = parse_shard(opts.shard)
    ranks = rank_from_env()
    skip_existing = opts.skip_existing and not opts.overwrite
    tag = f"[rank {ranks.rank}/{ranks.world_size}] " if ranks.distributed else ""

    def notify(text: str) -> None:
        err.print(message("note:", "yellow", text, tag))

    beside = "_blurmap" if blurmap else "_deblurred"
    out_dir = Path(opts.output) if opts.output not in (None, STDIO) else None
    sources = expand_inputs(list(opts.inputs), recursive=opts.recursive, exclude=out_dir if out_dir is not None and out_dir.is_dir() else None)
    in_place = opts.output is None or (
        out_dir is not None and any(s.root is not None and s.root.resolve() == out_dir.resolve() for s in sources)
    )
    if in_place:  # earlier outputs written beside their inputs are not inputs of this run
        sources = drop_previous_outputs(sources, beside if opts.suffix is None else opts.suffix)
    if not sources:
        raise UsageError(f"no image files (.png, .tif, .tiff, .jpg, .jpeg) found in {', '.join(opts.inputs)}")
    file_format = map_settings.file_format if map_settings is not None else None
    jobs = plan_jobs(
        sources, opts.output, suffix=opts.suffix, beside_suffix=beside,
        format_of=(lambda src: file_format) if blurmap else (lambda src: fmt),
    )  # fmt: skip
    check_jobs(jobs, sidecar_path if blurmap else None)
    mine = split_work(jobs, shard, ranks)
    # The model loads once the inputs and the plan are known to be sane (a typo fails fast), and
    # before any output folder is created (missing weights leave nothing behind).
    deblurrer = Deblurrer(
        opts.model, opts.weights, opts.device, opts.precision, opts.tile, opts.tile_overlap,
        notify=notify, local_rank=ranks.local_rank, backend=opts.backend, strength=opts.strength,
    )  # fmt: skip
    if out_dir is not None and mine:
        single_file = len(jobs) == 1 and jobs[0].output == out_dir
        _check_writable(out_dir.parent if single_file else out_dir)
    stdin = typer.get_binary_stream("stdin")
    stdout = typer.get_binary_stream("stdout")
    description = deblurrer.describe()
    if blurmap:  # the sigma map is never blended: do not record a setting that did nothing
        description.pop("strength", None)
    # What resume compares: the settings that change an output's bytes (not device, precision
    # or tiling, which change them by rounding only). See gkm_cli/engine/manifest.py.
    weights_id = None
    if deblurrer.weights is not None:
        try:
            weights_id = file_sha256(deblurrer.weights)
        except OSError:
            weights_id = str(deblurrer.weights)
    key: dict[str, object] = {
        "task": opts.task, "model": description["model"], "weights": weights_id, "format": fmt, "bit_depth": opts.bit_depth,
        "jpeg_quality": opts.jpeg_quality, "map": None if map_settings is None else (map_settings.format, map_settings.heatmap, map_settings.max_sigma),
    }  # fmt: skip
    if not blurmap and opts.strength != 1.0:  # only when set: folders written before --strength existed stay "done"
        key["strength"] = opts.strength
    manifest = Manifest(settings_key(key))

    def outputs_of(job: Any) -> list[Path]:
        return [job.output, sidecar_path(job.output)] if blurmap else [job.output]

    def verdict(job: Any) -> bool | str:
        """True: done by an earlier run (skip); False: write it; a message: refuse to."""
        if job.source.path is None or job.output is None or not skip_existing:
            return False
        targets = outputs_of(job)
        existing = [p for p in targets if os.path.lexists(p)]
        if not existing:
            return False
        if all(manifest.is_done(p, job.source.path) for p in targets):
            return True
        foreign = [p for p in existing if not manifest.is_ours(p)]
        if foreign:
            return (f"{foreign[0]}: exists but is not a finished gkm output of this input and settings "
                    f"(none recorded in {MANIFEST_NAME}); not replaced, use --overwrite")  # fmt: skip
        return False  # gkm's own output of an older input or other settings: made again

    def load(job: Any) -> Any:
        from gkm_cli.errors import ImageReadError
        from gkm_cli.images import decode_image, read_image

        if job.source.path is None:
            return decode_image(stdin.read(), "<stdin>", max_pixels=opts.max_pixels), None
        img = read_image(job.source.path, max_pixels=opts.max_pixels)
        try:
            return img, InputId.of(job.source.path)
        except OSError as e:
            raise ImageReadError(f"{job.input_name}: cannot read ({e.strerror or e})") from None

    def process(job: Any, loaded: Any) -> Any:
        import numpy as np

        img, ident = loaded

        def on_tile(done: int, total: int) -> None:
            progress.update(tiles_id, completed=done, total=total, visible=done < total)

        result = deblurrer.blurmap_image(img, on_tile) if blurmap else deblurrer.deblur_image(img, on_tile)  # blends --strength
        values = result if blurmap else result.pixels
        if not np.isfinite(values).all():  # broken weights or an overflow: never a black "ok" image
            raise GkmError(f"{job.input_name}: the network's output is not finite (NaN or Inf); nothing written")
        return result, ident

    def write(job: Any, processed: Any) -> None:
        from gkm_cli.images import encode_image, write_image

        result, ident = processed

        def recorded(final: Path) -> Any:
            if ident is None:  # stdin: no input to compare with on a later run, nothing to record
                return None
            return lambda tmp: manifest.add(final, tmp, ident)

        if blurmap:
            from gkm_cli.engine.maps import encode_sigma_map, sidecar_record

            assert map_settings is not None
            data = encode_sigma_map(result, map_settings)
            if job.output is None:
                _write_stdout(stdout, data)
                return
            _prepare_folder(job.output)
            record = sidecar_record(result, map_settings, source=job.input_name, **description)
            side = sidecar_path(job.output)
            _write_bytes(side, (json.dumps(record, indent=2) + "\n").encode(), recorded(side))
            _write_bytes(job.output, data, recorded(job.output))
            return
        if job.output is None:
            _write_stdout(stdout, encode_image(result, fmt, opts.bit_depth, opts.jpeg_quality))
            return
        output = job.output
        if job.source.path is None and fmt is None:  # stdin into a folder: keep the format it came in
            output = output.with_suffix(FORMAT_SUFFIX[result.format])
        _prepare_folder(output)
        forbid = [job.source.path] if job.source.path is not None else None
        write_image(
            output, result, format=fmt, bit_depth=opts.bit_depth, jpeg_quality=opts.jpeg_quality,
            forbid_same_as=forbid, before_replace=recorded(output),
        )  # fmt: skip

    stages = Stages(
        skip=verdict,
        load=load,
        process=process,
        write=write,
        megapixels=lambda loaded: loaded[0].height * loaded[0].width / 1e6,
        names=lambda job: (job.input_name, job.output_name),
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=opts.quiet,
        transient=False,
    )
    start = time.perf_counter()
    counts = {OK: 0, SKIPPED: 0, FAILED: 0}
    shown_errors: set[str] = set()  # failure lines already on the console
    megapixels = 0.0
    task_id = progress.add_task(f"{tag}gkm {opts.task}", total=len(mine), rate="")
    tiles_id = progress.add_task(f"{tag}  tiles of this image", total=None, rate="", visible=False)

    def on_record(record: Record) -> None:
        nonlocal megapixels
        counts[record.status] += 1
        if record.status == OK and record.megapixels:
            megapixels += record.megapixels
        if record.status == FAILED:
            shown_errors.add(record.error or "")
            progress.console.print(message("failed:", "bold red", record.error or "", tag), highlight=False, soft_wrap=True)
        if opts.as_json:
            _write_stdout(stdout, (json.dumps(record.as_json()) + "\n").encode())
        elapsed = max(1e-9, time.perf_counter() - start)
        progress.update(task_id, advance=1, rate=f"{counts[OK] / elapsed:.2f} img/s {megapixels / elapsed:.2f} MP/s")

    delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
    stopped: ImageWriteError | None = None
    with progress:
        try:
            run_pipeline(mine, stages, on_record, write_delay_s=delay)
        except ImageWriteError as e:  # disk full, read-only, closed stdout: nothing more can be written
            stopped = e
    seconds = time.perf_counter() - start
    not_attempted = len(mine) - sum(counts.values())
    summary = {
        "summary": True,
        "task": opts.task,
        "total": len(mine),
        "ok": counts[OK],
        "skipped": counts[SKIPPED],
        "failed": counts[FAILED],
        "not_attempted": not_attempted,
        "stopped": None if stopped is None else str(stopped),
        "seconds": round(seconds, 3),
        "megapixels": round(megapixels, 3),
        "megapixels_per_s": round(megapixels / seconds, 3) if seconds > 0 else None,
        "scope": "rank" if ranks.distributed else "run",
        "rank": ranks.rank,
        "world_size": ranks.world_size,
        **description,
        **_device_memory(deblurrer.device),
    }
    if opts.as_json and not (stopped is not None and stopped.errno == errno.EPIPE):
        try:
            _write_stdout(stdout, (json.dumps(summary) + "\n").encode())
        except ImageWriteError as e:
            stopped = stopped or e
    if not opts.quiet:
        err.print(
            f"{tag}{opts.task}: {counts[OK]} written, {counts[SKIPPED]} skipped (already done), "
            f"{counts[FAILED]} failed" + (f", {not_attempted} not attempted" if not_attempted else "")
            + f" in {seconds:.1f} s on {description['device']} ({description['precision']})",
            highlight=False,
        )
    if stopped is not None and (not_attempted or str(stopped) not in shown_errors):
        left = f"; {not_attempted} input(s) not attempted" if not_attempted else ""
        err.print(message("error:", "bold red", f"run stopped: {stopped}{left}", tag), highlight=False, soft_wrap=True)
    totals = world_totals({"total": len(mine), "ok": counts[OK], "skipped": counts[SKIPPED], "failed": counts[FAILED],
                           "megapixels": megapixels}, ranks)  # fmt: skip
    if totals is None:
        return 1 if counts[FAILED] or stopped is not None else 0
    if ranks.rank == 0:
        seconds = time.perf_counter() - start
        world = {"summary": True, "scope": "world", "task": opts.task, "world_size": ranks.world_size,
                 **{k: (round(v, 3) if k == "megapixels" else int(v)) for k, v in totals.items()},
                 "seconds": round(seconds, 3), "megapixels_per_s": round(totals["megapixels"] / seconds, 3)}  # fmt: skip
        if opts.as_json:
            _write_stdout(stdout, (json.dumps(world) + "\n").encode())
        if not opts.quiet:
            err.print(f"{opts.task} (all {ranks.world_size} ranks): {world['ok']} written, {world['skipped']} skipped, "
                      f"{world['failed']} failed in {seconds:.1f} s", highlight=False)  # fmt: skip
    return 1 if totals["failed"] or stopped is not None else 0


def run_cli(opts: RunOptions) -> None:
    """Run a ``gkm deblur``/``gkm blurmap`` command; a GkmError goes to the one handler in cli.py."""
    code = run_command(opts, Console(stderr=True, highlight=False, soft_wrap=True, emoji=False))
    if code:
        raise typer.Exit(code)


# --- shared option types -----------------------------------------------------------------------
Inputs = Annotated[list[str], typer.Argument(help="Image files, folders or globs ('-' reads one image from stdin).", show_default=False)]
Output = Annotated[
    Optional[str],
    typer.Option("--output", "-o", help="Output folder (input tree mirrored below it), a file for one input, or '-' for stdout. Default: beside each input."),
]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Architecture (default ggkmnet); see `gkm models`.")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="A .safetensors checkpoint (default: the shipped models/<model>.safetensors).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto (bf16 on capable GPUs, else fp32), fp32, fp16 or bf16.")]
TileOpt = Annotated[Optional[int], typer.Option("--tile", help="Tile core size in px (default: from free memory).", min=16)]
OverlapOpt = Annotated[Optional[int], typer.Option("--tile-overlap", help="Context px read around each tile core (default: the model's receptive radius, rounded to 16).", min=0)]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Also take images in sub-folders of folder inputs.")]
SuffixOpt = Annotated[Optional[str], typer.Option("--suffix", help="Added to output file names (default '' in another folder, '_deblurred'/'_blurmap' beside the input).")]
SkipOpt = Annotated[bool, typer.Option("--skip-existing/--no-skip-existing", help="Skip inputs whose output exists (a re-run resumes).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never inputs).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON record per image on stdout, then a summary record.")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Process only share i of N of the sorted inputs (i/N, e.g. for SLURM arrays).")]
BackendOpt = Annotated[str, typer.Option("--backend", help="torch, or onnxruntime (CPU, fp32, gkmnet: ~2x faster there).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary line on stderr.")]
MaxPixelsOpt = Annotated[
    int, typer.Option("--max-pixels", help="Refuse inputs whose header declares more pixels than this (0 = no limit).", min=0)
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
    format: Annotated[Optional[str], typer.Option("--format", help="Output format png, tiff or jpeg (default: the input's).")] = None,
    bit_depth: Annotated[Optional[int], typer.Option("--bit-depth", help="Output bits per sample 8, 16 or 32 (default: the input's).")] = None,
    jpeg_quality: Annotated[int, typer.Option("--jpeg-quality", help="JPEG quality 1..100.")] = 95,
    as_json: JsonOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    backend: BackendOpt = "torch",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    strength: Annotated[
        float, typer.Option("--strength", help="0..1: S * deblurred + (1 - S) * input; 1 = the network's output, lower keeps more of the photo.")
    ] = 1.0,
) -> None:
    """Deblur photos (8/16-bit PNG, TIFF, JPEG of any size); metadata and bit depth are kept."""
    run_cli(
        RunOptions(
            "deblur", tuple(inputs), output, model, weights, device, precision, tile, tile_overlap, recursive, suffix,
            skip_existing, overwrite, format, bit_depth, jpeg_quality, as_json=as_json, shard=shard, quiet=quiet, backend=backend,
            max_pixels=max_pixels, strength=strength,
        )  # fmt: skip
    )


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    """Attach ``deblur`` to the ``gkm`` app (called by gkm_cli.cli)."""
    del models_app
    app.command("deblur")(deblur)
