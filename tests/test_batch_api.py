"""The folder run as a library generator (``gkm_cli.api.run_batch``): the same files and records
as ``gkm deblur``/``gkm blurmap --json`` on a tiny folder, resume, and settings named as settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gkm_cli.api import BatchSummary, Record, run_batch
from gkm_cli.cli import app
from gkm_cli.engine.manifest import MANIFEST_NAME
from gkm_cli.errors import SettingError
from gkm_cli.images import Image, write_image

#: Fields that measure time, not what was done.
TIMINGS = {"seconds", "megapixels_per_s"}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    for name, shape, dtype, fmt in [("a.png", (24, 40, 3), "uint8", "png"), ("b.tif", (20, 28, 3), "uint16", "tiff"),
                                    ("sub/c.jpg", (16, 32, 3), "uint8", "jpeg")]:  # fmt: skip
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        write_image(src / name, Image(rng.random(shape, dtype=np.float32), None, np.dtype(dtype), fmt))
    (src / "broken.png").write_bytes((src / "a.png").read_bytes()[:40])
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME}  # fmt: skip


def _comparable(record: dict, src: Path, out: Path) -> dict:
    """A JSON record without timings, its paths relative to the run's input and output folders."""
    kept = {k: v for k, v in record.items() if k not in TIMINGS}
    if "input" in kept:
        kept["input"] = Path(kept["input"]).relative_to(src).as_posix()
        kept["output"] = Path(kept["output"]).relative_to(out).as_posix()
    if kept.get("error"):
        kept["error"] = kept["error"].replace(str(src), "<in>").replace(str(out), "<out>")
    return kept


@pytest.mark.parametrize("task", ["deblur", "blurmap"])
def test_run_batch_writes_the_files_and_records_of_the_cli(
    task: str, folder: Path, weights: Path, tmp_path: Path
) -> None:
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    args = [task, str(folder), "-r", "-o", str(cli_out), "--weights", str(weights), "--json", "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output  # broken.png fails, the others are written
    cli_records = [json.loads(line) for line in r.stdout.splitlines()]

    events = list(run_batch(folder, api_out, task=task, weights=weights, recursive=True))
    *records, end = events
    assert all(isinstance(e, Record) for e in records) and isinstance(end, BatchSummary)
    api_records = [e.as_json() for e in records] + [end.summary]
    assert end.failed and end.stopped is None and end.world is None

    shown = [_comparable(rec, folder, cli_out) for rec in cli_records]
    assert shown == [_comparable(rec, folder, api_out) for rec in api_records]
    assert _files(cli_out) == _files(api_out) and len(_files(api_out)) == (3 if task == "deblur" else 6)
    statuses = [rec.status for rec in records]
    assert statuses.count("ok") == 3 and statuses.count("failed") == 1

    again = list(run_batch([str(folder)], str(api_out), task=task, weights=weights, recursive=True))
    assert [e.status for e in again[:-1]] == ["failed" if s == "failed" else "skipped" for s in statuses]  # resumed


def test_run_batch_names_settings_not_flags(folder: Path, weights: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"^bit_depth must be 8, 16 or 32, got 7$"):
        run_batch(folder, tmp_path / "o", weights=weights, bit_depth=7)
    with pytest.raises(SettingError, match=r"^shard 2/2: need 0 <= i < N$"):
        run_batch(folder, tmp_path / "o", weights=weights, shard=(2, 2))
    with pytest.raises(SettingError, match=r"refusing to write over the input .* \(use output FOLDER or suffix\)"):
        run_batch(folder / "a.png", folder / "a.png", weights=weights)
    assert not (tmp_path / "o").exists()  # nothing is created before the settings are known to be sane
