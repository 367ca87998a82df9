"""Golden outputs: refactors must not change a single output bit.

Written before the "one place for each concern" refactor (issue 15). `gkm deblur` on the shipped
sample images (8-bit JPEG, 8-bit PNG, 16-bit TIFF) with the shipped weights, `gkm blurmap` on
one of them, and `gkm evaluate` on the results are reduced to digests stored in
``tests/golden/outputs.json``:

* on the machine kind that recorded them (same torch version, CPU model and ISA flags) every
  digest must match exactly: pixel SHA-256 of each output and the evaluate numbers as printed;
* elsewhere float rounding in oneDNN may differ by an ISA, so the test compares each output's
  mean and the evaluate numbers with a tolerance instead (it still runs; it never skips).

Re-record (only for an intended change of outputs, said in the commit):
``GKM_RECORD_GOLDEN=1 scripts/test tests/test_golden.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gkm_cli.images import read_image
from helpers import gkm

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "outputs.json"
SAMPLES = ROOT / "sample_images"

pytestmark = pytest.mark.slow


def _machine() -> str:
    """The machine kind the exact digests hold for: torch version, CPU model, vector ISA flags."""
    flags = ""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = " ".join(
                    sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma")))
                )
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"torch {torch.__version__} | {model} | {flags}"


def _gkm(*args: str) -> subprocess.CompletedProcess:
    proc = gkm(*args, env={"OMP_NUM_THREADS": "2"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _digest(path: Path) -> dict:
    img = read_image(path)
    pixels = np.ascontiguousarray(img.pixels)
    return {
        "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype),
        "mean": float(
            pixels.astype(np.float64).mean() / (np.iinfo(pixels.dtype).max if pixels.dtype.kind in "ui" else 1.0)
        ),
    }


def _evaluate_numbers(doc: dict) -> dict:
    """Every score of an evaluate JSON report (schema gkm.evaluate/2), keyed "image/metric"."""
    out: dict[str, float | None] = {f"mean/{k}": v for k, v in doc["mean"].items()}
    for rec in doc["images"]:
        out.update({f"{rec['name']}/{k}": v for k, v in rec["metrics"].items()})
    return out


def _run(tmp: Path) -> dict:
    out = tmp / "deblurred"
    _gkm("deblur", str(SAMPLES), "-o", str(out))
    maps = tmp / "maps"
    _gkm("blurmap", str(SAMPLES / "grace_hopper_defocus.png"), "-o", str(maps / "grace.png"))
    report = tmp / "scores.json"
    _gkm("evaluate", str(out), str(SAMPLES), "--report", str(report))
    outputs = {p.name: _digest(p) for p in sorted(out.iterdir()) if p.suffix in {".jpg", ".png", ".tif"}}
    outputs.update({f"blurmap/{p.name}": _digest(p) for p in sorted(maps.iterdir()) if p.suffix == ".png"})
    numbers = _evaluate_numbers(json.loads(report.read_text()))
    assert len(outputs) == 4 and numbers, (outputs.keys(), numbers)
    return {"machine": _machine(), "outputs": outputs, "evaluate": numbers}


def test_outputs_match_the_golden_digests(tmp_path):
    got = _run(tmp_path)
    if os.environ.get("GKM_RECORD_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got["outputs"]) == sorted(want["outputs"])
    assert sorted(got["evaluate"]) == sorted(want["evaluate"])
    if got["machine"] == want["machine"]:
        assert got["outputs"] == want["outputs"]
        assert got["evaluate"] == want["evaluate"]
        return
    # Another machine kind: float rounding may move a few LSBs, nothing more.
    for name, digest in want["outputs"].items():
        assert got["outputs"][name]["shape"] == digest["shape"] and got["outputs"][name]["dtype"] == digest["dtype"]
        assert got["outputs"][name]["mean"] == pytest.approx(digest["mean"], abs=2e-5), name
    for key, value in want["evaluate"].items():
        if value is None or got["evaluate"][key] is None:
            assert value == got["evaluate"][key], key
        else:
            assert got["evaluate"][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
