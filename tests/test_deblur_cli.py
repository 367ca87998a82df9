"""`gkm deblur` and `gkm blurmap` end to end, on real files made here, with a tiny random
checkpoint written by the test (the engine must not care that it is untrained)."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from gkm_cli.api import Deblurrer
from gkm_cli.cli import app
from gkm_cli.engine.manifest import MANIFEST_NAME
from gkm_cli.images import Image, decode_image, read_image, write_image
from gkm_cli.nets.checkpoint import load_weights
from helpers import gkm, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


# ---- fixtures: a checkpoint and a folder of photos ---------------------------------------


def make_icc(size: int = 600) -> bytes:
    """A plausible ICC profile: 128-byte header (size, 'acsp') plus random body bytes."""
    head = bytearray(128)
    head[0:4] = struct.pack(">I", size)
    head[12:24] = b"mntrRGB XYZ "
    head[36:40] = b"acsp"
    return bytes(head) + np.random.default_rng(5).integers(0, 256, size - 128, dtype=np.uint8).tobytes()


def make_exif(make: bytes = b"gkmtest\x00", date: bytes = b"2024:05:06 07:08:09\x00") -> bytes:
    """A little-endian TIFF-structured EXIF blob: IFD0 Make + Exif IFD DateTimeOriginal."""
    ifd0_at = 8
    make_at = ifd0_at + 2 + 2 * 12 + 4
    exif_at = make_at + len(make)
    date_at = exif_at + 2 + 12 + 4
    out = b"II" + struct.pack("<HI", 42, ifd0_at) + struct.pack("<H", 2)
    out += struct.pack("<HHII", 271, 2, len(make), make_at)  # Make
    out += struct.pack("<HHII", 34665, 4, 1, exif_at)  # Exif IFD pointer
    out += struct.pack("<I", 0) + make
    out += struct.pack("<H", 1) + struct.pack("<HHII", 36867, 2, len(date), date_at)  # DateTimeOriginal
    return out + struct.pack("<I", 0) + date


def smooth(h: int, w: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.35 * np.sin(x / (4 + k) + y / (6 + k)) for k in range(c)]
    return np.clip(np.stack(planes, -1) + 0.03 * rng.standard_normal((h, w, c)), 0, 1).astype(np.float32)


def _save(path: Path, pixels: np.ndarray, dtype: str, fmt: str, alpha: np.ndarray | None = None, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, Image(pixels, alpha, np.dtype(dtype), fmt, **meta))
    return path


ICC, EXIF = make_icc(), make_exif()


@pytest.fixture()
def photos(tmp_path) -> Path:
    src = tmp_path / "in"
    _save(src / "photo16.tif", smooth(60, 80, 3, 0), "uint16", "tiff", icc=ICC, exif=EXIF)
    _save(src / "photo8.jpg", smooth(48, 64, 3, 1), "uint8", "jpeg", exif=EXIF)
    _save(src / "gray.png", smooth(40, 40, 1, 2), "uint8", "png")
    _save(
        src / "rgba.png",
        smooth(32, 48, 3, 3),
        "uint16",
        "png",
        alpha=np.random.default_rng(4).random((32, 48), dtype=np.float32),
    )
    _save(src / "odd.png", smooth(37, 53, 3, 5), "uint8", "png")
    _save(src / "big.png", smooth(150, 200, 3, 6), "uint8", "png")
    _save(src / "sub" / "nested.png", smooth(24, 40, 3, 7), "uint8", "png")
    good = (src / "odd.png").read_bytes()
    (src / "broken.png").write_bytes(good[: len(good) // 2])
    return src


GOOD = ["big.png", "gray.png", "odd.png", "photo16.tif", "photo8.jpg", "rgba.png", "sub/nested.png"]


def invoke(*args: str, env: dict | None = None, input: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env, input=input)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ---- deblur: a folder end to end ------------------------------------------------------------------


def test_folder_run_keeps_everything_and_reports_the_broken_file(photos, weights, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "deblur", photos, "-r", "-o", out, "--weights", weights, "--tile", "64", "--tile-overlap", "32", "--json"
    )
    assert result.exit_code == 1, result.output  # one input failed, the others were written
    records = json_lines(result.stdout)
    per_image, summary = records[:-1], records[-1]
    assert (
        summary["summary"]
        and summary["ok"] == len(GOOD)
        and summary["failed"] == 1
        and summary["total"] == len(GOOD) + 1
    )
    by_name = {Path(r["input"]).relative_to(photos).as_posix(): r for r in per_image}
    assert set(by_name) == set(GOOD) | {"broken.png"}
    broken = by_name["broken.png"]
    assert broken["status"] == "failed" and "broken.png" in broken["error"] and "\n" not in broken["error"]
    assert [line for line in result.stderr.splitlines() if "broken.png" in line and "failed" in line]
    for name in GOOD:
        rec = by_name[name]
        assert rec["status"] == "ok" and rec["error"] is None and rec["seconds"] > 0
        assert Path(rec["output"]) == out / name and (out / name).is_file()
        src, dst = read_image(photos / name), read_image(out / name)
        assert (dst.height, dst.width, dst.channels, dst.dtype) == (src.height, src.width, src.channels, src.dtype)
        assert (dst.alpha is None) == (src.alpha is None)
    assert not (out / "broken.png").exists()
    assert not list(out.rglob(".*.tmp"))

    tif = read_image(out / "photo16.tif")
    assert tif.icc == ICC and tif.exif is not None and b"gkmtest" in tif.exif and b"2024:05:06" in tif.exif
    with tifffile.TiffFile(out / "photo16.tif") as t:  # independent reader
        page = t.pages[0]
        assert page.dtype == np.uint16 and page.tags["InterColorProfile"].value == ICC
    assert b"gkmtest" in (read_image(out / "photo8.jpg").exif or b"")
    rgba_in, rgba_out = read_image(photos / "rgba.png"), read_image(out / "rgba.png")
    np.testing.assert_array_equal(rgba_out.alpha, rgba_in.alpha)  # alpha passed through

    # The CLI output equals the Python API's result with the same settings (tiled: 150 x 200).
    api = Deblurrer.from_model(load_weights(weights), device="cpu", tile=64, tile_overlap=32)
    big = cv2.cvtColor(cv2.imread(str(photos / "big.png")), cv2.COLOR_BGR2RGB)
    expected = api.deblur(big)
    got = cv2.cvtColor(cv2.imread(str(out / "big.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - big).mean() > 1  # the network changed the photo


def test_rerun_skips_finished_files(photos, weights, tmp_path):
    out = tmp_path / "out"
    first = invoke("deblur", photos / "odd.png", photos / "gray.png", "-o", out, "--weights", weights, "--json")
    assert first.exit_code == 0, first.output
    stamp = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "gray.png").unlink()
    again = invoke("deblur", photos / "odd.png", photos / "gray.png", "-o", out, "--weights", weights, "--json")
    assert again.exit_code == 0, again.output
    status = {Path(r["input"]).name: r["status"] for r in json_lines(again.stdout)[:-1]}
    assert status == {"gray.png": "ok", "odd.png": "skipped"}
    assert (out / "odd.png").stat().st_mtime_ns == stamp[out / "odd.png"]
    forced = invoke("deblur", photos / "odd.png", "-o", out, "--weights", weights, "--json", "--overwrite")
    assert json_lines(forced.stdout)[0]["status"] == "ok"


def test_beside_the_input_and_no_second_pass_over_own_outputs(photos, weights):
    one = invoke("deblur", photos / "odd.png", "--weights", weights, "-q")
    assert one.exit_code == 0, one.output
    assert (photos / "odd_deblurred.png").is_file()
    folder = invoke("deblur", photos, "--weights", weights, "--json", "-q")
    names = {Path(r["output"]).name for r in json_lines(folder.stdout)[:-1]}
    assert "odd_deblurred_deblurred.png" not in names and "odd_deblurred.png" in names
    assert not (photos / "odd_deblurred_deblurred.png").exists()
    explicit = invoke("deblur", photos, "-o", photos, "--weights", weights, "--json", "-q")  # same folder: same rule
    assert explicit.exit_code == 1  # broken.png
    records = json_lines(explicit.stdout)[:-1]
    assert {r["status"] for r in records if "odd" in r["input"]} == {"skipped"}
    assert not list(photos.glob("*_deblurred_deblurred*"))


def test_refuses_to_write_over_inputs(photos, weights):
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    same = invoke("deblur", photos, "-o", photos, "--suffix", "", "--weights", weights)
    assert same.exit_code == 2 and "refusing to write over the input" in same.stderr
    single = invoke("deblur", photos / "odd.png", "-o", photos / "odd.png", "--weights", weights)
    assert single.exit_code == 2 and "refusing" in single.stderr
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before


def test_formats_bit_depth_and_shards(photos, weights, tmp_path):
    out = tmp_path / "out"
    r = invoke("deblur", photos / "photo16.tif", "-o", out, "--format", "png", "--bit-depth", "8", "--weights", weights)
    assert r.exit_code == 0, r.output
    png = read_image(out / "photo16.png")
    assert png.format == "png" and png.dtype == np.uint8 and png.icc == ICC
    shards = [
        invoke("deblur", photos, "-r", "-o", tmp_path / "s", "--shard", f"{i}/2", "--weights", weights, "--json", "-q")
        for i in (0, 1)
    ]
    done = [Path(rec["input"]).name for s in shards for rec in json_lines(s.stdout)[:-1]]
    assert sorted(done) == sorted([Path(n).name for n in GOOD] + ["broken.png"])  # each once


def test_usage_and_model_errors(photos, weights, tmp_path):
    empty = tmp_path / "no_models"
    empty.mkdir()
    no_weights = invoke("deblur", photos, "-o", tmp_path / "o1", env={"GKM_MODELS_DIR": str(empty)})
    assert no_weights.exit_code == 2
    assert "no trained weights" in no_weights.stderr and "--weights" in no_weights.stderr
    assert len(no_weights.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists()
    cases = [
        (["--model", "nosuchnet"], "unknown model"),
        (["--weights", tmp_path / "missing.safetensors"], "not found"),
        (["--weights", weights, "--format", "bmp"], "--format"),  # (webp is written since issue 27)
        (["--weights", weights, "--shard", "3/2"], "--shard"),
        (["--weights", weights, "--device", "tpu"], "--device"),
        (["--weights", weights, "--model", "gkmnet"], "not gkmnet"),
    ]
    for extra, message in cases:
        r = invoke("deblur", photos, "-o", tmp_path / "o2", *extra)
        assert r.exit_code == 2 and message in r.stderr, (extra, r.output)
    missing_input = invoke("deblur", tmp_path / "nope", "-o", tmp_path / "o3", "--weights", weights)
    assert missing_input.exit_code == 2 and "no such file" in missing_input.stderr


def test_unwritable_output_and_disk_full(photos, weights, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = invoke("deblur", photos / "odd.png", "-o", blocker / "sub", "--weights", weights)
    assert r.exit_code == 1 and "cannot create output folder" in r.stderr

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    r = invoke("deblur", photos / "odd.png", photos / "gray.png", "-o", tmp_path / "o", "--weights", weights)
    assert r.exit_code == 1 and "disk full" in r.stderr
    assert not [p for p in (tmp_path / "o").rglob("*") if p.is_file()]  # nothing half-written


# ---- stdin / stdout --------------------------------------------------------------------------------


def test_stdin_to_stdout_in_process(photos, weights):
    data = (photos / "odd.png").read_bytes()
    r = invoke("deblur", "-", "-o", "-", "--weights", weights, "--format", "tiff", input=data)
    assert r.exit_code == 0, r.stderr
    img = decode_image(r.stdout_bytes)
    assert img.format == "tiff" and (img.height, img.width, img.dtype) == (37, 53, np.uint8)
    assert json_lines(r.stderr) == []


def test_stdin_stdout_pipe_subprocess(photos, weights, tmp_path):
    src = photos / "photo16.tif"
    with open(src, "rb") as fin:
        proc = gkm("deblur", "-", "-o", "-", "--weights", weights, stdin=fin, text=False)
    assert proc.returncode == 0, proc.stderr.decode()
    out = tifffile.imread(io.BytesIO(proc.stdout))  # stdout holds exactly one TIFF, nothing else
    assert out.shape == (60, 80, 3) and out.dtype == np.uint16
    assert decode_image(proc.stdout).icc == ICC


# ---- interrupted runs --------------------------------------------------------------------------------


def test_killed_run_leaves_no_finished_looking_partial_output(photos, weights, tmp_path):
    out = tmp_path / "out"
    (photos / "broken.png").unlink()
    cmd = [
        sys.executable,
        "-m",
        "gkm_cli",
        "deblur",
        str(photos),
        "-r",
        "-o",
        str(out),
        "--weights",
        str(weights),
        "-q",
    ]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "GKM_TEST_WRITE_DELAY": "3"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    visible = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert 1 <= len(visible) < len(GOOD)  # killed mid-folder
    for p in visible:  # everything that looks finished is a complete image
        rel = p.relative_to(out)
        src, dst = read_image(photos / rel), read_image(p)
        assert (dst.height, dst.width, dst.channels) == (src.height, src.width, src.channels)
    again = gkm("deblur", photos, "-r", "-o", out, "--weights", weights, "--json", text=False)
    assert again.returncode == 0, again.stderr.decode()
    status = [r["status"] for r in json_lines(again.stdout.decode())[:-1]]
    assert status.count("skipped") == len(visible) and status.count("ok") == len(GOOD) - len(visible)
    files = [p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]  # the resume records stay
    assert sorted(p.relative_to(out).as_posix() for p in files) == sorted(GOOD)


# ---- blur maps -----------------------------------------------------------------------------------------


def test_blurmap_png_with_sidecar_npy_tiff_and_heatmap(photos, weights, tmp_path):
    api = Deblurrer.from_model(load_weights(weights), device="cpu", tile=64, tile_overlap=32)
    odd = cv2.cvtColor(cv2.imread(str(photos / "odd.png")), cv2.COLOR_BGR2RGB)
    expected = api.blurmap(odd)
    assert expected.shape == (37, 53) and expected.max() > 0

    r = invoke(
        "blurmap",
        photos / "odd.png",
        photos / "big.png",
        "-o",
        tmp_path / "png",
        "--weights",
        weights,
        "--tile",
        "64",
        "--tile-overlap",
        "32",
    )
    assert r.exit_code == 0, r.output
    stored = cv2.imread(str(tmp_path / "png" / "odd.png"), cv2.IMREAD_UNCHANGED)
    side = json.loads((tmp_path / "png" / "odd.json").read_text())
    assert stored.dtype == np.uint16 and stored.shape == (37, 53)
    assert side["scale"] == pytest.approx(65535 / 16) and side["unit"] == "input pixels" and side["model"] == "ggkmnet"
    np.testing.assert_allclose(stored / side["scale"], expected, atol=0.51 / side["scale"] + 1e-6)
    assert cv2.imread(str(tmp_path / "png" / "big.png"), cv2.IMREAD_UNCHANGED).shape == (150, 200)

    r = invoke(
        "blurmap",
        photos / "odd.png",
        "-o",
        tmp_path / "npy",
        "--format",
        "npy",
        "--weights",
        weights,
        "--tile",
        "64",
        "--tile-overlap",
        "32",
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "npy" / "odd.npy"), expected, atol=1e-6)

    r = invoke("blurmap", photos / "odd.png", "-o", tmp_path / "tif", "--format", "tiff", "--weights", weights)
    assert r.exit_code == 0, r.output
    tif = tifffile.imread(tmp_path / "tif" / "odd.tif")
    assert tif.dtype == np.uint16 and tif.shape == (37, 53)

    r = invoke("blurmap", photos / "odd.png", "-o", tmp_path / "heat", "--heatmap", "--weights", weights)
    assert r.exit_code == 0, r.output
    heat = cv2.imread(str(tmp_path / "heat" / "odd.png"), cv2.IMREAD_UNCHANGED)
    assert heat.dtype == np.uint8 and heat.shape == (37, 53, 3)

    bad = invoke("blurmap", photos / "odd.png", "-o", tmp_path / "x", "--format", "jpeg", "--weights", weights)
    assert bad.exit_code == 2


# ---- torchrun ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_split_the_folder(photos, weights, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "gkm_cli", "deblur", str(photos), "-r", "-o", str(out), "--weights", str(weights), "--json", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    records = json_lines(proc.stdout)
    summaries = [r for r in records if r.get("scope") == "rank"]
    per_image = [r for r in records if not r.get("summary")]
    assert sorted(s["rank"] for s in summaries) == [0, 1] and {s["world_size"] for s in summaries} == {2}
    inputs = [Path(r["input"]).relative_to(photos).as_posix() for r in per_image]
    assert sorted(inputs) == sorted([*GOOD, "broken.png"])  # no duplicate, none missing
    files = [p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]  # the resume records stay
    assert sorted(p.relative_to(out).as_posix() for p in files) == sorted(GOOD)
    (world,) = [r for r in records if r.get("scope") == "world"]  # rank 0 alone reports the whole run
    assert (world["total"], world["ok"], world["failed"]) == (len(GOOD) + 1, len(GOOD), 1)
    assert world["total"] == sum(s["total"] for s in summaries)
    assert proc.returncode != 0  # the broken file makes the run exit 1


# ---- output naming -------------------------------------------------------------------------------------


def test_stdin_into_a_folder_keeps_the_input_format(photos, weights, tmp_path):
    r = invoke("deblur", "-", "-o", tmp_path / "o", "--weights", weights, input=(photos / "photo16.tif").read_bytes())
    assert r.exit_code == 0, r.stderr
    (written,) = (tmp_path / "o").iterdir()
    img = read_image(written)
    assert written.suffix == ".tif" and img.format == "tiff" and img.dtype == np.uint16


def test_single_output_file_suffix_chooses_the_blurmap_format(photos, weights, tmp_path):
    r = invoke("blurmap", photos / "odd.png", "-o", tmp_path / "m.npy", "--weights", weights)
    assert r.exit_code == 0, r.stderr
    sigma = np.load(tmp_path / "m.npy")
    assert sigma.shape == (37, 53) and sigma.dtype == np.float32
    bad = invoke("deblur", photos / "odd.png", "-o", tmp_path / "d.npy", "--weights", weights)
    assert bad.exit_code == 2 and "not .npy" in bad.stderr and not (tmp_path / "d.npy").exists()


def test_several_inputs_into_one_file_name_are_refused(photos, weights, tmp_path):
    r = invoke("deblur", photos / "odd.png", photos / "big.png", "-o", tmp_path / "out.png", "--weights", weights)
    assert r.exit_code == 2 and "give an output folder" in r.stderr
    assert not (tmp_path / "out.png").exists()


def test_a_missing_input_fails_before_the_model_loads(tmp_path):
    r = invoke("deblur", tmp_path / "nope.png", "-o", tmp_path / "o", "--weights", tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "no such file" in r.stderr and "missing.safetensors" not in r.stderr


# ---- ONNX Runtime backend ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gkmnet_weights(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("weights"), "gkmnet")


def test_onnxruntime_backend_equals_torch(photos, gkmnet_weights, tmp_path):
    pytest.importorskip("onnxruntime")  # the [export] extra, installed by scripts/bootstrap.sh
    outs = {}
    for backend in ("torch", "onnxruntime"):
        r = invoke(
            "deblur",
            photos / "odd.png",
            photos / "photo16.tif",
            "-o",
            tmp_path / backend,
            "--weights",
            gkmnet_weights,
            "--device",
            "cpu",
            "--backend",
            backend,
            "--json",
        )
        assert r.exit_code == 0, r.stderr
        assert json_lines(r.stdout)[-1]["backend"] == backend
        outs[backend] = {p.name: read_image(p) for p in (tmp_path / backend).iterdir() if p.name != MANIFEST_NAME}
    assert sorted(outs["torch"]) == sorted(outs["onnxruntime"]) == ["odd.png", "photo16.tif"]
    for name, ref in outs["torch"].items():
        got = outs["onnxruntime"][name]
        assert got.dtype == ref.dtype
        step = 1 / np.iinfo(ref.dtype).max
        assert np.abs(got.pixels - ref.pixels).max() <= step + 1e-6  # at most one code value apart
    tiled = invoke(
        "deblur",
        photos / "big.png",
        "-o",
        tmp_path / "tiled",
        "--weights",
        gkmnet_weights,
        "--backend",
        "onnxruntime",
        "--tile",
        "64",
        "--tile-overlap",
        "32",
    )
    assert tiled.exit_code == 0, tiled.stderr


def test_onnxruntime_backend_refuses_what_it_cannot_run(photos, weights, gkmnet_weights, tmp_path):
    r = invoke("deblur", photos / "odd.png", "-o", tmp_path / "a", "--weights", weights, "--backend", "onnxruntime")
    assert r.exit_code == 2 and "context" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = invoke(
        "deblur",
        photos / "odd.png",
        "-o",
        tmp_path / "b",
        "--weights",
        gkmnet_weights,
        "--backend",
        "onnxruntime",
        "--precision",
        "bf16",
    )
    assert r.exit_code == 2 and "fp32" in r.stderr
    r = invoke("deblur", photos / "odd.png", "-o", tmp_path / "c", "--weights", gkmnet_weights, "--backend", "tensorrt")
    assert r.exit_code == 2 and "--backend" in r.stderr


def test_warnings_are_one_line_on_the_console(photos, weights, tmp_path):
    proc = gkm(
        "deblur", photos / "rgba.png", "-o", tmp_path / "o", "--format", "jpeg", "--weights", weights, "-q", text=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "alpha" in lines[0]
    assert (tmp_path / "o" / "rgba.jpg").exists()
