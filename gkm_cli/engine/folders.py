"""Input expansion, output naming (mirroring the input tree), safety checks and sharding.

Pure functions over paths: nothing here reads or writes pixels. ``-`` stands for stdin (as an
input) or stdout (as the output).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from gkm_cli.errors import SettingError, SettingText, UsageError, setting_ref
from gkm_cli.images import (
    DEFAULT_OUTPUT,
    OUTPUT_SUFFIX,
    RAW_PAIR_MODES,
    SUPPORTED_SUFFIXES,
    format_for_path,
    raw_pair_drops,
)

STDIO = "-"
T = TypeVar("T")

#: File suffix written for each output format.
FORMAT_SUFFIX: dict[str, str] = {**OUTPUT_SUFFIX, "npy": ".npy"}  # blur maps may also be .npy


@dataclass(frozen=True)
class Source:
    """One input file and the folder its output path is mirrored from (None: stdin)."""

    path: Path | None
    root: Path | None
    listed: bool = False  # named explicitly on the command line (not found in a folder or glob)

    @property
    def name(self) -> str:
        return "-" if self.path is None else str(self.path)


@dataclass(frozen=True)
class Job:
    """One unit of work: read ``source``, write ``output`` (None: stdout)."""

    source: Source
    output: Path | None

    @property
    def input_name(self) -> str:
        return self.source.name

    @property
    def output_name(self) -> str:
        return "-" if self.output is None else str(self.output)


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (what the output tree mirrors)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _is_hidden(path: Path, root: Path) -> bool:
    """Dot files and files in dot folders below ``root`` (temp files of atomic writes, .git)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return any(part.startswith(".") for part in rel.parts)


def expand_inputs(args: Sequence[str], *, recursive: bool = False, exclude: Path | None = None) -> list[Source]:
    """Files, folders and globs -> sorted, de-duplicated sources.

    Folders give their image files (by suffix; ``recursive``: also in sub-folders); globs give
    their matching files (``**`` spans folders); files named explicitly are taken whatever
    their suffix (a non-image then fails to read and is reported). Hidden files, and anything
    inside ``exclude`` (the output folder) when it lies below the folder searched, are skipped
    in folders and globs. ``-`` is stdin and
    must be the only input. Arguments that match nothing raise :class:`UsageError`.
    """
    if STDIO in args:
        if len(args) != 1:
            raise UsageError("'-' (stdin) must be the only input")
        return [Source(None, None, listed=True)]
    found: dict[Path, Source] = {}

    def add(path: Path, root: Path, listed: bool) -> None:
        key = path.resolve()
        if key not in found:
            found[key] = Source(path, root, listed)

    def wanted(path: Path, root: Path) -> bool:
        return (
            path.is_file()
            and path.suffix.lower() in SUPPORTED_SUFFIXES
            and not _is_hidden(path, root)
            and not (exclude is not None and _is_inside(path, exclude) and not _is_inside(root, exclude))
        )

    for arg in args:
        p = Path(arg)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = [f for f in p.glob(pattern) if wanted(f, p)]
            for f in files:
                add(f, p, False)
        elif p.exists():
            add(p, p.parent, True)
        elif _has_magic(arg):
            root = _glob_root(arg)
            matches = [Path(m) for m in glob.glob(arg, recursive=True)]
            hits = [m for m in matches if wanted(m, root)]
            if not hits:
                raise UsageError(f"{arg}: no image files match this pattern")
            for m in hits:
                add(m, root, False)
        else:
            raise UsageError(f"{arg}: no such file or folder")
    return sorted(found.values(), key=lambda s: str(s.path))


def output_suffix(source: Source, format: str | None) -> str:
    """File suffix of an output: the input's own when the format is unchanged, else the
    format's usual one (``.png``, ``.tif``, ``.jpg``, ``.npy``); a RAW input's is ``.tif``."""
    own = source.path.suffix if source.path is not None else ""
    own_format = format_for_path(Path(f"x{own}")) if own else None
    if format is None and own_format is not None and DEFAULT_OUTPUT[own_format] != own_format:
        return OUTPUT_SUFFIX[own_format]  # RAW is never written back: <stem>.tif
    if format is None:
        return own or ".png"
    if own and own_format == format:
        return own
    return FORMAT_SUFFIX[format]


def plan_jobs(
    sources: Sequence[Source],
    output: str | None,
    *,
    suffix: str | None,
    beside_suffix: str,
    format_of: Callable[[Source], str | None],
) -> list[Job]:
    """Output path of every source, mirroring its position below its root.

    ``output`` None: beside each input, with ``suffix`` (default ``beside_suffix``).
    ``output`` a folder: the input tree is mirrored below it, ``suffix`` default "" (or
    ``beside_suffix`` when the folder is an input's own folder). ``output`` ``-``: stdout (one
    input only). ``output`` with an image suffix and a single explicitly named input file: that
    file. ``format_of(source)`` gives the output format (None: the input's).
    """
    if output == STDIO:
        if len(sources) != 1:
            raise SettingError("output", f"- (stdout) takes exactly one input, got {len(sources)}")
        return [Job(sources[0], None)]
    jobs = []
    names_file = (
        output is not None
        and Path(output).suffix.lower() in SUPPORTED_SUFFIXES | {".npy"}
        and not Path(output).is_dir()
    )
    if names_file and output is not None and len(sources) == 1 and sources[0].listed:
        return [Job(sources[0], Path(output))]
    if names_file:
        what = f"{len(sources)} inputs" if len(sources) != 1 else "an input that is not a single named file"
        raise SettingError("output", f"{output}: names one file but got {what}; give an output folder instead")
    out_root = Path(output) if output is not None else None
    for src in sources:
        fmt = format_of(src)
        ext = output_suffix(src, fmt)
        if src.path is None:
            if out_root is None:
                out = setting_ref("output")
                needs = f"reading stdin ('-') needs {out} FOLDER or {out} - (stdout)"
                raise SettingError("output", needs, leading=False)
            jobs.append(Job(src, out_root / f"stdin{suffix or ''}{ext}"))
            continue
        assert src.root is not None
        rel = src.path.relative_to(src.root) if src.path.is_relative_to(src.root) else Path(src.path.name)
        if out_root is None:
            base, sfx = src.root, beside_suffix if suffix is None else suffix
        else:
            same_folder = (out_root / rel.parent).resolve() == src.path.parent.resolve()
            base, sfx = out_root, (beside_suffix if same_folder else "") if suffix is None else suffix
        jobs.append(Job(src, base / rel.parent / f"{rel.stem}{sfx}{ext}"))
    return jobs


def check_jobs(jobs: Sequence[Job], sidecar: Callable[[Path], Path | None] | None = None) -> None:
    """Refuse plans that would write over an input or write two inputs to one output.

    Checked before anything runs: every output (and sidecar) is compared with every input by
    resolved path and by file identity (hard links, case-insensitive file systems).
    """
    inputs = {j.source.path.resolve(): j.source.path for j in jobs if j.source.path is not None}
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.output is None:
            continue
        targets = [job.output] + ([s] if sidecar is not None and (s := sidecar(job.output)) is not None else [])
        for target in targets:
            key = target.resolve()
            if key in inputs or _same_file_as_any(target, inputs.values()):
                clash = inputs.get(key, job.source.path)
                hint = f"use {setting_ref('output')} FOLDER or {setting_ref('suffix')}"
                refusal = f"{target}: refusing to write over the input {clash} ({hint})"
                raise SettingError("output", refusal, leading=False)
            if key in seen and seen[key] is not job:
                raise SettingError(
                    "output",
                    f"{seen[key].input_name} and {job.input_name} would both be written to {target}; "
                    f"use different {setting_ref('format')}/{setting_ref('suffix')} or separate runs",
                    leading=False,
                )
            seen[key] = job


def _same_file_as_any(target: Path, inputs: Iterable[Path]) -> bool:
    if not target.exists():
        return False
    for path in inputs:
        try:
            if os.path.samefile(target, path):
                return True
        except OSError:
            continue
    return False


def apply_raw_pairs(sources: Sequence[Source], mode: str, notify: Callable[[str], None]) -> list[Source]:
    """Sources under the ``raw_pairs`` rule ``mode`` (images.formats ``raw_pair_drops``): files
    found in folders and globs may be left out (``notify`` says how many), named ones never."""
    if mode not in RAW_PAIR_MODES:
        raise SettingError("raw_pairs", f"must be one of {', '.join(RAW_PAIR_MODES)}, got {mode!r}")
    drops = raw_pair_drops([s.path for s in sources if s.path is not None and not s.listed], mode)
    kept = [s for s in sources if s.path not in drops]
    if len(kept) < len(sources):
        left_out = f"{len(sources) - len(kept)} file(s) beside a RAW of the same name left out"
        notify(SettingText(f"{left_out} ({setting_ref('raw_pairs')} {mode})"))
    return kept


def drop_previous_outputs(sources: Sequence[Source], suffix: str) -> list[Source]:
    """Without ``listed`` ones: drop sources that are earlier outputs written beside their input
    (``photo<suffix>.ext`` next to a ``photo.*`` input), so a re-run in place does not deblur
    its own outputs again."""
    if not suffix:
        return list(sources)
    stems = {(s.path.parent.resolve(), s.path.stem) for s in sources if s.path is not None}
    kept = []
    for s in sources:
        if s.path is not None and not s.listed and s.path.stem.endswith(suffix):
            original = s.path.stem[: -len(suffix)]
            if (s.path.parent.resolve(), original) in stems:
                continue
        kept.append(s)
    return kept


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` (0 <= i < N) -> (i, N); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise SettingError("shard", f"must look like i/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise SettingError("shard", f"{text}: need 0 <= i < N")
    return index, count


def take_shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Every ``count``-th item starting at ``index``: shards of a sorted list partition it."""
    return list(items[index::count])


def stale_temp_files(output: Path) -> list[Path]:
    """Leftover temp files of interrupted atomic writes of ``output`` (``.<name>.*.tmp``)."""
    if not output.parent.is_dir():
        return []
    return sorted(output.parent.glob(f".{glob.escape(output.name)}.*.tmp"))
