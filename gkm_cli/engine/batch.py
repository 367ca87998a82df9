"""Folder runs: ``gkm deblur``, ``gkm blurmap`` and :func:`gkm_cli.api.run_batch`.

A :class:`BatchRun` checks its :class:`BatchSettings`, plans the outputs (files, folders, globs
or stdin; see :mod:`gkm_cli.engine.folders`), takes this process's share (``shard``, torchrun
ranks: :mod:`gkm_cli.engine.distributed`) and loads the model, in that order: a typo fails
before the model loads, missing weights fail before any folder is created. Iterating it runs
the bounded pipeline (:mod:`gkm_cli.engine.pipeline`: load -> network -> write, each output
recorded in the folder's manifest before its rename, :mod:`gkm_cli.engine.manifest`) and yields
one :class:`~gkm_cli.engine.pipeline.Record` per input, in input order, then one
:class:`BatchSummary`.

The network runs on a worker thread so that records arrive as they are written; engine notes
and tile progress are handed to the ``notify`` / ``on_tile`` callbacks on the iterating thread.
A write error that every later write would hit too (disk full, read-only, closed stdout) stops
the run: the summary says so (``stopped``) and counts what was ``not_attempted``. A consumer
that cannot go on (its own stdout closed) calls :meth:`BatchRun.stop` and the run ends the same
way.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from gkm_cli.engine.distributed import split_work, world_totals
from gkm_cli.engine.folders import (
    FORMAT_SUFFIX,
    STDIO,
    Job,
    apply_raw_pairs,
    check_jobs,
    drop_previous_outputs,
    expand_inputs,
    plan_jobs,
)
from gkm_cli.engine.manifest import MANIFEST_NAME, InputId, Manifest, file_sha256, settings_key
from gkm_cli.engine.maps import DEFAULT_MAX_SIGMA, MapSettings, encode_sigma_map, sidecar_path, sidecar_record
from gkm_cli.engine.outputs import check_writable, prepare_folder, write_file, write_stream
from gkm_cli.engine.pipeline import FAILED, OK, SKIPPED, Record, Stages, run_pipeline
from gkm_cli.engine.runner import check_strength
from gkm_cli.errors import GkmError, ImageReadError, ImageWriteError, SettingError, SettingText, UsageError, setting_ref
from gkm_cli.images import (
    DEFAULT_MAX_PIXELS,
    FORMAT_ALIASES,
    UNWRITABLE_SUFFIXES,
    WRITE_FORMATS,
    Image,
    decode_image,
    encode_image,
    read_image,
    write_image,
)
from gkm_cli.runtime import RankInfo, rank_from_env

if TYPE_CHECKING:
    from gkm_cli.api import Deblurrer

__all__ = ["TASKS", "BatchRun", "BatchSettings", "BatchSummary", "Record", "check_shard"]

TASKS = ("deblur", "blurmap")
_MAP_FORMAT_ALIASES = {"png": "png", "tif": "tiff", "tiff": "tiff", "npy": "npy"}


def check_shard(shard: tuple[int, int]) -> None:
    """``(i, N)``: share i of N (0 <= i < N) of the sorted inputs."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise SettingError("shard", f"{index}/{count}: need 0 <= i < N")


@dataclass(frozen=True)
class BatchSettings:
    """What a folder run is asked to do (``gkm deblur`` / ``gkm blurmap`` flags, or the API).

    ``inputs``: files, folders, globs, or ``"-"`` (one image on stdin). ``output``: None (beside
    each input, with ``suffix`` default ``_deblurred``/``_blurmap``), a folder (the input tree is
    mirrored below it), a file name for one input, or ``"-"`` (stdout). ``format``: deblur png |
    tiff | jpeg (None: the input's), blurmap png | tiff | npy (None: the output file's suffix,
    else png). ``skip_existing``: inputs whose outputs this run's settings already made are
    skipped (resume); ``overwrite`` replaces outputs that gkm did not record. ``shard`` (i, N):
    only share i of N of the sorted inputs. Model and tiling settings as :class:`gkm_cli.api.Deblurrer`.
    """

    task: str
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
    heatmap: bool = False  # blurmap only
    max_sigma: float = DEFAULT_MAX_SIGMA  # blurmap only
    shard: tuple[int, int] = (0, 1)
    backend: str = "torch"
    max_pixels: int = DEFAULT_MAX_PIXELS
    strength: float = 1.0  # deblur only: S * output + (1 - S) * input
    raw_pairs: str = "skip-jpeg"  # RAW + same-named JPEG in a folder: images.formats RAW_PAIR_MODES
    raw_linear: bool = False  # RAW develops to linear light (16-bit linear TIFF) instead of sRGB


@dataclass(frozen=True)
class BatchSummary:
    """The end of a run: ``summary`` this process's JSON summary record, ``world`` the totals of
    all torchrun ranks (None for one process), ``stopped`` the write error that stopped the run."""

    summary: dict[str, Any]
    world: dict[str, Any] | None
    stopped: ImageWriteError | None

    @property
    def stdout_closed(self) -> bool:
        """The run stopped because stdout's reader went away: nothing more can go there."""
        return self.stopped is not None and self.stopped.errno == errno.EPIPE

    @property
    def failed(self) -> bool:
        """Some input failed (on any rank) or the run stopped early."""
        totals = self.world if self.world is not None else self.summary
        return bool(totals["failed"]) or self.stopped is not None


def _named_output_format(output: str | None) -> str | None:
    """The format an output file name's suffix names (png, tiff, jpeg, npy), or None for
    folders and stdout. An image suffix gkm cannot write (``x.webp``) is refused, not a folder."""
    if output is None or output == STDIO or Path(output).is_dir():
        return None
    suffix = Path(output).suffix.lower()
    if suffix in UNWRITABLE_SUFFIXES:
        named = "name a .png, .tif, .jpg, .webp, .heic, .avif or .exr file (blurmap: .png, .tif, .npy) or a folder"
        raise SettingError("output", f"{output}: cannot write {suffix} files; {named}")
    suffix = suffix.lstrip(".")
    return "npy" if suffix == "npy" else FORMAT_ALIASES.get(suffix)


def _image_format(text: str | None) -> str | None:
    if text is None:
        return None
    fmt = FORMAT_ALIASES.get(text.lower().lstrip("."))
    if fmt is None:
        raise SettingError("format", f"must be one of {', '.join(WRITE_FORMATS)}, got {text!r}")
    return fmt


def _map_format(text: str | None) -> str:
    """Blur-map format: png (default), tiff/tif or npy."""
    found = _MAP_FORMAT_ALIASES.get((text or "png").lower().lstrip("."))
    if found is None:
        wrong = f"blurmap {setting_ref('format')} must be png, tiff or npy, got {text!r}"
        raise SettingError("format", wrong, leading=False)
    return found


def _device_memory(device: Any) -> dict[str, float]:
    """Peak memory the network's device held (CUDA only; the CPU's is the process RSS)."""
    import torch

    if device.type != "cuda":
        return {}
    return {"cuda_max_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}


class _Cancelled(BaseException):
    """Raised in the worker (from a tile callback) to end an image early when the run stops."""


@dataclass
class _Finished:
    stopped: ImageWriteError | None = None
    error: BaseException | None = None


@dataclass
class _Counts:
    by_status: dict[str, int] = field(default_factory=lambda: {OK: 0, SKIPPED: 0, FAILED: 0})
    megapixels: float = 0.0


class BatchRun:
    """One folder run: planned and loaded on construction, run by iterating it.

    ``notify(text)`` receives one-line notes (a :class:`~gkm_cli.errors.SettingText` when they
    name a setting); ``on_tile(done, total)`` the progress through the tiles of the current
    image. ``stdin``/``stdout`` are the binary streams ``"-"`` stands for (default: the
    process's). ``write_delay_s`` (tests only) sleeps after each output.
    """

    def __init__(
        self,
        settings: BatchSettings,
        *,
        notify: Callable[[str], None] | None = None,
        on_tile: Callable[[int, int], None] | None = None,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        write_delay_s: float = 0.0,
    ) -> None:
        self.settings = s = settings
        self._notify = notify or (lambda text: None)
        self._on_tile = on_tile or (lambda done, total: None)
        self._stdin = stdin if stdin is not None else sys.stdin.buffer
        self._stdout = stdout if stdout is not None else sys.stdout.buffer
        self._write_delay_s = write_delay_s
        self._events: queue.Queue[tuple[str, Any]] | None = None  # set while the pipeline runs
        self._cancel = threading.Event()  # set: the pipeline winds down (it also sets it when done)
        self._stopped_by_consumer: ImageWriteError | None = None

        if s.task not in TASKS:
            raise SettingError("task", f"must be deblur or blurmap, got {s.task!r}")
        self.blurmap = blurmap = s.task == "blurmap"
        if not s.inputs:
            raise UsageError("no inputs given")
        named_file = _named_output_format(s.output)
        self.map_settings: MapSettings | None = None
        if blurmap:  # a single output file's suffix chooses the map format unless ``format`` does
            map_format = _map_format(s.format if s.format is not None or named_file is None else named_file)
            self.map_settings = MapSettings(map_format, s.heatmap, s.max_sigma)
        elif named_file == "npy":
            raise SettingError("output", f"{s.output}: deblur writes images (.png, .tif, .jpg), not .npy")
        self.format = None if blurmap else _image_format(s.format)
        if not blurmap and s.bit_depth is not None and s.bit_depth not in (8, 16, 32):
            raise SettingError("bit_depth", f"must be 8, 16 or 32, got {s.bit_depth}")
        if not 1 <= s.jpeg_quality <= 100:
            raise SettingError("jpeg_quality", f"must be 1..100, got {s.jpeg_quality}")
        if s.max_pixels < 0:
            raise SettingError("max_pixels", f"must be >= 0 (0 = no limit), got {s.max_pixels}")
        check_strength(s.strength)
        check_shard(s.shard)
        self.ranks: RankInfo = rank_from_env()
        self.skip_existing = s.skip_existing and not s.overwrite

        beside = "_blurmap" if blurmap else "_deblurred"
        out_dir = Path(s.output) if s.output not in (None, STDIO) else None
        exclude = out_dir if out_dir is not None and out_dir.is_dir() else None
        sources = expand_inputs(list(s.inputs), recursive=s.recursive, exclude=exclude)
        sources = apply_raw_pairs(sources, s.raw_pairs, self._notify)
        in_place = s.output is None or (
            out_dir is not None
            and any(src.root is not None and src.root.resolve() == out_dir.resolve() for src in sources)
        )
        if in_place:  # earlier outputs written beside their inputs are not inputs of this run
            sources = drop_previous_outputs(sources, beside if s.suffix is None else s.suffix)
        if not sources:
            raise UsageError(f"no image files gkm reads (docs/FORMATS.md) found in {', '.join(s.inputs)}")
        file_format = self.map_settings.file_format if self.map_settings is not None else self.format
        jobs = plan_jobs(sources, s.output, suffix=s.suffix, beside_suffix=beside, format_of=lambda src: file_format)
        check_jobs(jobs, sidecar_path if blurmap else None)
        self.jobs: list[Job] = split_work(jobs, s.shard, self.ranks)
        # The model loads once the inputs and the plan are known to be sane (a typo fails fast),
        # and before any output folder is created (missing weights leave nothing behind).
        self.deblurrer = self._load_model()
        if out_dir is not None and self.jobs:
            single_file = len(jobs) == 1 and jobs[0].output == out_dir
            check_writable(out_dir.parent if single_file else out_dir)
        self.description = self.deblurrer.describe()
        if blurmap:  # the sigma map is never blended: do not record a setting that did nothing
            self.description.pop("strength", None)
        self.manifest = Manifest(settings_key(self._resume_key()))

    # --- setup --------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Inputs this process runs (after ``shard`` and the torchrun split)."""
        return len(self.jobs)

    def _load_model(self) -> Deblurrer:
        from gkm_cli.api import Deblurrer  # the one place models are loaded (api sits above engine)

        s = self.settings
        return Deblurrer(
            s.model, s.weights, s.device, s.precision, s.tile, s.tile_overlap,
            notify=self._note, local_rank=self.ranks.local_rank, backend=s.backend, strength=s.strength,
        )  # fmt: skip

    def _resume_key(self) -> dict[str, object]:
        """What resume compares: the settings that change an output's bytes (not device,
        precision or tiling, which change them by rounding only). See engine/manifest.py."""
        s, deblurrer, maps = self.settings, self.deblurrer, self.map_settings
        weights_id = None
        if deblurrer.weights is not None:
            try:
                weights_id = file_sha256(deblurrer.weights)
            except OSError:
                weights_id = str(deblurrer.weights)
        key: dict[str, object] = {
            "task": s.task, "model": self.description["model"], "weights": weights_id, "format": self.format,
            "bit_depth": s.bit_depth, "jpeg_quality": s.jpeg_quality,
            "map": None if maps is None else (maps.format, maps.heatmap, maps.max_sigma),
        }  # fmt: skip
        if not self.blurmap and s.strength != 1.0:  # only when set: folders written before strength existed stay "done"
            key["strength"] = s.strength
        if s.raw_linear:  # likewise: only when set
            key["raw_linear"] = True
        return key

    # --- callbacks from the worker thread -----------------------------------------------------
    def _note(self, text: str) -> None:
        if self._events is None:
            self._notify(text)
        else:
            self._events.put(("note", text))

    def _tile(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        assert self._events is not None
        self._events.put(("tile", (done, total)))

    # --- the stages ---------------------------------------------------------------------------
    def _outputs_of(self, job: Job) -> list[Path]:
        assert job.output is not None
        return [job.output, sidecar_path(job.output)] if self.blurmap else [job.output]

    def _verdict(self, job: Job) -> bool | str:
        """True: done by an earlier run (skip); False: write it; a message: refuse to."""
        if job.source.path is None or job.output is None or not self.skip_existing:
            return False
        targets = self._outputs_of(job)
        existing = [p for p in targets if os.path.lexists(p)]
        if not existing:
            return False
        if all(self.manifest.is_done(p, job.source.path) for p in targets):
            return True
        foreign = [p for p in existing if not self.manifest.is_ours(p)]
        if foreign:
            return SettingText(
                f"{foreign[0]}: exists but is not a finished gkm output of this input and settings "
                f"(none recorded in {MANIFEST_NAME}); not replaced, use {setting_ref('overwrite')}"
            )
        return False  # gkm's own output of an older input or other settings: made again

    def _load(self, job: Job) -> tuple[Image, InputId | None]:
        max_pixels = self.settings.max_pixels
        if job.source.path is None:
            return decode_image(
                self._stdin.read(), "<stdin>", max_pixels=max_pixels, raw_linear=self.settings.raw_linear
            ), None
        img = read_image(job.source.path, max_pixels=max_pixels, raw_linear=self.settings.raw_linear)
        try:
            return img, InputId.of(job.source.path)
        except OSError as e:
            raise ImageReadError(f"{job.input_name}: cannot read ({e.strerror or e})") from None

    def _process(self, job: Job, loaded: tuple[Image, InputId | None]) -> tuple[Any, InputId | None]:
        img, ident = loaded
        deblurrer = self.deblurrer
        result: np.ndarray | Image
        if self.blurmap:
            result = values = deblurrer.blurmap_image(img, self._tile)
        else:
            result = deblurrer.deblur_image(img, self._tile)
            values = result.pixels
        if not np.isfinite(values).all():  # broken weights or an overflow: never a black "ok" image
            raise GkmError(f"{job.input_name}: the network's output is not finite (NaN or Inf); nothing written")
        return result, ident

    def _write(self, job: Job, processed: tuple[Any, InputId | None]) -> None:
        s = self.settings
        result, ident = processed

        def recorded(final: Path) -> Callable[[Path], None] | None:
            if ident is None:  # stdin: no input to compare with on a later run, nothing to record
                return None
            return lambda tmp: self.manifest.add(final, tmp, ident)

        if self.map_settings is not None:
            data = encode_sigma_map(result, self.map_settings)
            if job.output is None:
                write_stream(self._stdout, data)
                return
            prepare_folder(job.output)
            record = sidecar_record(result, self.map_settings, source=job.input_name, **self.description)
            side = sidecar_path(job.output)
            write_file(side, (json.dumps(record, indent=2) + "\n").encode(), recorded(side))
            write_file(job.output, data, recorded(job.output))
            return
        if job.output is None:
            write_stream(self._stdout, encode_image(result, self.format, s.bit_depth, s.jpeg_quality))
            return
        output = job.output
        if job.source.path is None and self.format is None:  # stdin into a folder: keep the format it came in
            output = output.with_suffix(FORMAT_SUFFIX[result.format])
        prepare_folder(output)
        forbid = [job.source.path] if job.source.path is not None else None
        write_image(
            output, result, format=self.format, bit_depth=s.bit_depth, jpeg_quality=s.jpeg_quality,
            forbid_same_as=forbid, before_replace=recorded(output),
        )  # fmt: skip

    # --- running ------------------------------------------------------------------------------
    def stop(self, error: ImageWriteError) -> None:
        """End the run after the record being handled: the consumer cannot go on (``error``,
        e.g. its stdout closed); the summary reports it as ``stopped``."""
        self._stopped_by_consumer = self._stopped_by_consumer or error
        self._cancel.set()

    def __iter__(self) -> Generator[Record | BatchSummary, None, None]:
        stages = Stages(
            skip=self._verdict,
            load=self._load,
            process=self._process,
            write=self._write,
            megapixels=lambda loaded: loaded[0].height * loaded[0].width / 1e6,
            names=lambda job: (job.input_name, job.output_name),
        )
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._events = events

        def work() -> None:
            try:
                run_pipeline(self.jobs, stages, lambda record: events.put(("record", record)),
                             write_delay_s=self._write_delay_s, cancel=self._cancel)  # fmt: skip
            except ImageWriteError as e:  # disk full, read-only, closed stdout: nothing more can be written
                events.put(("end", _Finished(stopped=e)))
            except _Cancelled:
                events.put(("end", _Finished()))
            except BaseException as e:  # re-raised on the iterating thread
                events.put(("end", _Finished(error=e)))
            else:
                events.put(("end", _Finished()))

        start = time.perf_counter()
        counts = _Counts()
        worker = threading.Thread(target=work, name="gkm-network", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = events.get()
                if kind == "note":
                    self._notify(value)
                elif kind == "tile":
                    self._on_tile(*value)
                elif kind == "end":
                    finished: _Finished = value
                    break
                elif self._stopped_by_consumer is None:  # a record: none after the consumer stopped
                    counts.by_status[value.status] += 1
                    if value.status == OK and value.megapixels:
                        counts.megapixels += value.megapixels
                    yield value
        finally:  # also when the consumer leaves early (an exception, a break)
            self._cancel.set()
            worker.join()
            self._events = None
        if finished.error is not None:
            raise finished.error
        yield self._summary(counts, finished.stopped or self._stopped_by_consumer, start)

    def _summary(self, counts: _Counts, stopped: ImageWriteError | None, start: float) -> BatchSummary:
        s, ranks = self.settings, self.ranks
        n = counts.by_status
        seconds = time.perf_counter() - start
        summary = {
            "summary": True,
            "task": s.task,
            "total": self.total,
            "ok": n[OK],
            "skipped": n[SKIPPED],
            "failed": n[FAILED],
            "not_attempted": self.total - sum(n.values()),
            "stopped": None if stopped is None else str(stopped),
            "seconds": round(seconds, 3),
            "megapixels": round(counts.megapixels, 3),
            "megapixels_per_s": round(counts.megapixels / seconds, 3) if seconds > 0 else None,
            "scope": "rank" if ranks.distributed else "run",
            "rank": ranks.rank,
            "world_size": ranks.world_size,
            **self.description,
            **_device_memory(self.deblurrer.device),
        }
        totals = world_totals({"total": self.total, "ok": n[OK], "skipped": n[SKIPPED], "failed": n[FAILED],
                               "megapixels": counts.megapixels}, ranks)  # fmt: skip
        world = None
        if totals is not None:
            seconds = time.perf_counter() - start
            world = {
                "summary": True, "scope": "world", "task": s.task, "world_size": ranks.world_size,
                **{k: (round(v, 3) if k == "megapixels" else int(v)) for k, v in totals.items()},
                "seconds": round(seconds, 3), "megapixels_per_s": round(totals["megapixels"] / seconds, 3),
            }  # fmt: skip
        return BatchSummary(summary, world, stopped)
