"""Pairing, the evaluation loop, the four report formats and the `evaluate` command."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
import torch
import typer
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from typer.testing import CliRunner

from gkm_cli.errors import UsageError
from gkm_cli.evaluation import (
    EvalSettings,
    PairSample,
    Problem,
    evaluate_folders,
    evaluate_pairs,
    pair_folders,
    report_to_dict,
    write_report,
)
from gkm_cli.metrics import Protocol, get_protocol

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev"

try:  # the project's reader; a tiny private fallback keeps these tests usable without it
    from gkm_cli.images import read_image as _project_reader

    READER: Any = None
except ImportError:  # pragma: no cover - only while gkm_cli/images.py is missing
    _project_reader = None

    class _Img:
        def __init__(self, pixels: np.ndarray, dtype: np.dtype) -> None:
            self.pixels, self.dtype, self.alpha = pixels, dtype, None

    def READER(path: Path) -> _Img:
        from gkm_cli.errors import ImageReadError

        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise ImageReadError(f"{path}: cannot decode")
        dt = a.dtype
        a = a[:, :, ::-1] if a.ndim == 3 else a[:, :, None]
        scale = 255.0 if dt == np.uint8 else 65535.0 if dt == np.uint16 else 1.0
        return _Img((a / scale).astype(np.float32), dt)


needs_project_reader = pytest.mark.skipif(_project_reader is None, reason="gkm_cli.images not available yet")


# ------------------------------------------------------------------ fixtures


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.3 * np.sin(9 * x + c) * np.cos(7 * y - c) for c in range(3)], -1)
    return np.clip(base + 0.08 * rng.random((h, w, 3)), 0, 1)


def _blur(img: np.ndarray, s: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), s)


def _png8(path: Path, img: np.ndarray) -> np.ndarray:
    a = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    cv2.imwrite(str(path), np.ascontiguousarray(a[:, :, ::-1]))
    return a.astype(np.float64) / 255.0


def _png16(path: Path, img: np.ndarray) -> np.ndarray:
    a = np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)
    cv2.imwrite(str(path), np.ascontiguousarray(a[:, :, ::-1]))
    return a.astype(np.float64) / 65535.0


def _tif32(path: Path, img: np.ndarray) -> np.ndarray:
    a = np.clip(img, 0, 1).astype(np.float32)
    tifffile.imwrite(str(path), a, photometric="rgb")
    return a.astype(np.float64)


@pytest.fixture()
def dataset(tmp_path: Path) -> dict[str, Any]:
    """gt/ pred/ inp/ with: a (8-bit), b (16-bit GT, float TIFF prediction), c (size mismatch),
    d (corrupt prediction), e (no prediction), f (no GT), g (no input)."""
    gt, pred, inp = tmp_path / "gt", tmp_path / "pred", tmp_path / "inp"
    for d in (gt, pred, inp):
        d.mkdir()
    arrays: dict[str, dict[str, np.ndarray]] = {}
    h, w = 48, 64
    for i, stem in enumerate("abcdeg"):
        sharp = _scene(h, w, i)
        blurred = _blur(sharp, 1.5 + i * 0.3)
        restored = np.clip(0.6 * sharp + 0.4 * blurred + 0.01 * (i + 1), 0, 1)
        if stem == "b":
            arrays[stem] = {
                "gt": _png16(gt / f"{stem}.png", sharp),
                "pred": _tif32(pred / f"{stem}.tif", restored),
                "inp": _png16(inp / f"{stem}.png", blurred),
            }
            continue
        arrays[stem] = {"gt": _png8(gt / f"{stem}.png", sharp)}
        if stem == "c":
            _png8(pred / "c.png", restored[:40])
        elif stem == "d":
            (pred / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 20)
        elif stem != "e":
            arrays[stem]["pred"] = _png8(pred / f"{stem}.png", restored)
        if stem != "g":
            arrays[stem]["inp"] = _png8(inp / f"{stem}.png", blurred)
    _png8(pred / "f.png", _scene(h, w, 9))
    (pred / "notes.txt").write_text("not an image")
    return {"gt": gt, "pred": pred, "inp": inp, "arrays": arrays}


FAST = ("psnr", "ssim", "mae", "psnr_aligned", "lpips")


# ------------------------------------------------------------------ pairing


def test_pair_folders_lists_every_unpaired_file(tmp_path: Path) -> None:
    gt, pred, inp = tmp_path / "gt", tmp_path / "pred", tmp_path / "inp"
    for d in (gt, pred, inp):
        d.mkdir()
    for name in ("a.png", "b.png", "c.tif", "dup.png", ".hidden.png"):
        (gt / name).touch()
    for name in ("a.tiff", "c.png", "dup.png", "dup.jpg", "extra.png", "readme.md"):
        (pred / name).touch()
    (inp / "a.jpg").touch()
    res = pair_folders(pred, gt, inp)
    assert [p.name for p in res.pairs] == ["a", "c"]
    assert res.pairs[0].pred.name == "a.tiff" and res.pairs[0].input is not None
    kinds = {(p.name, p.kind, p.consequence) for p in res.problems}
    assert kinds == {
        ("b", "missing_prediction", "skipped"),
        ("dup", "duplicate_stem", "skipped"),
        ("extra", "missing_gt", "ignored"),
        ("c", "missing_input", "no_baseline"),
    }
    with pytest.raises(UsageError):
        pair_folders(tmp_path / "nope", gt)


# ------------------------------------------------------------------ the loop


def test_evaluate_folders_scores_pairs_and_records_problems(dataset: dict[str, Any]) -> None:
    settings = EvalSettings(metrics=FAST, preview_count=1, preview_size=32)
    rep = evaluate_folders(dataset["pred"], dataset["gt"], dataset["inp"], settings, reader=READER)
    assert [r.name for r in rep.images] == ["a", "b", "g"]
    kinds = {(p.name, p.kind) for p in rep.problems}
    assert kinds == {
        ("c", "size_mismatch"),
        ("d", "unreadable"),
        ("e", "missing_prediction"),
        ("f", "missing_gt"),
        ("g", "missing_input"),
    }
    arrays = dataset["arrays"]
    for r in rep.images:
        a = arrays[r.name]
        assert r.metrics["psnr"] == pytest.approx(sk_psnr(a["gt"], a["pred"], data_range=1.0), abs=1e-4)
        want_ssim = sk_ssim(
            a["pred"],
            a["gt"],
            channel_axis=-1,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert r.metrics["ssim"] == pytest.approx(want_ssim, abs=1e-4)
        assert r.metrics["mae"] == pytest.approx(np.abs(a["pred"] - a["gt"]).mean(), abs=1e-6)
        assert r.metrics["psnr_aligned"] >= r.metrics["psnr"] - 1e-9  # the fit can only reduce the MSE
        assert 0 < r.metrics["lpips"] < 1
        if r.name == "g":
            assert r.baseline is None and r.gain is None
        else:
            assert r.baseline is not None and r.gain is not None
            assert r.baseline["psnr"] == pytest.approx(sk_psnr(a["gt"], a["inp"], data_range=1.0), abs=1e-4)
            assert r.gain["psnr"] == pytest.approx(r.metrics["psnr"] - r.baseline["psnr"])
            assert r.gain["lpips"] == pytest.approx(r.baseline["lpips"] - r.metrics["lpips"])
    mean = rep.mean()
    assert mean["psnr"] == pytest.approx(np.mean([r.metrics["psnr"] for r in rep.images]))
    assert rep.mean_gain()["psnr"] == pytest.approx(np.mean([rep.images[i].gain["psnr"] for i in (0, 1)]))
    assert rep.lpips_weights_sha256 and len(rep.lpips_weights_sha256) == 64
    ranks = [(p.rank, p.name) for p in rep.previews]
    assert len(ranks) == 2 and {r for r, _ in ranks} == {"worst", "best"}
    assert all(set(p.crops) == {"input", "output", "gt"} for p in rep.previews)
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for p in rep.previews for png in p.crops.values())


def test_protocol_switches_reach_the_scores(dataset: dict[str, Any]) -> None:
    proto = get_protocol("gkmnet").with_overrides(crop_border=4, y_channel=True)
    rep = evaluate_folders(
        dataset["pred"],
        dataset["gt"],
        None,
        EvalSettings(protocol=proto, metrics=("psnr",), preview_count=0),
        reader=READER,
    )
    b = dataset["arrays"]["b"]
    # 16-bit GT quantised to 8 bits, float prediction rounded, 4 px border, BT.601 Y
    gt8 = np.round(b["gt"] * 255) / 255
    pr8 = np.round(np.clip(b["pred"], 0, 1) * 255) / 255

    def y(a: np.ndarray) -> np.ndarray:
        return (16 + a[4:-4, 4:-4] @ np.array([65.481, 128.553, 24.966])) / 255

    got = {r.name: r.metrics["psnr"] for r in rep.images}
    assert got["b"] == pytest.approx(sk_psnr(y(gt8), y(pr8), data_range=1.0), abs=1e-4)
    assert rep.protocol.overrides == ("crop_border", "y_channel")


def test_evaluate_pairs_accepts_tuples_tensors_and_problems() -> None:
    gt = _scene(40, 40, 1)
    pred = np.clip(gt + 0.02, 0, 1)
    items = [
        ("np", pred.astype(np.float32), gt.astype(np.float32), None),
        PairSample(
            "torch", torch.from_numpy(pred.transpose(2, 0, 1)).float(), torch.from_numpy(gt.transpose(2, 0, 1)).float()
        ),
        PairSample("u8", (pred * 255).round().astype(np.uint8), (gt * 255).round().astype(np.uint8)),
        ("gray_vs_rgb", pred[..., :1], gt, None),
        ("small", pred[:8, :8], gt[:8, :8], None),
        ("bad_size", pred[:30], gt, None),
        Problem("engine", "unreadable", "the engine could not load it"),
    ]
    rep = evaluate_pairs(items, EvalSettings(metrics=("psnr", "ssim"), preview_count=0), sources={"model": "test"})
    names = [r.name for r in rep.images]
    assert names == ["np", "torch", "u8", "gray_vs_rgb"]
    assert rep.images[0].metrics["psnr"] == pytest.approx(rep.images[1].metrics["psnr"], abs=1e-9)
    assert rep.images[0].metrics["psnr"] == pytest.approx(-20 * math.log10(0.02), abs=0.2)
    assert {(p.name, p.kind) for p in rep.problems} == {
        ("small", "unscorable"),
        ("bad_size", "size_mismatch"),
        ("engine", "unreadable"),
    }
    assert rep.sources == {"model": "test"}


def test_settings_validate_metric_names() -> None:
    assert EvalSettings(metrics=("PSNR", "ssim", "psnr")).metrics == ("psnr", "ssim")
    with pytest.raises(UsageError):
        EvalSettings(metrics=("psnr", "fid"))
    with pytest.raises(UsageError):
        EvalSettings(metrics=())


# ------------------------------------------------------------------ reports


def test_reports_in_every_format(dataset: dict[str, Any], tmp_path: Path) -> None:
    rep = evaluate_folders(
        dataset["pred"],
        dataset["gt"],
        dataset["inp"],
        EvalSettings(metrics=("psnr", "ssim", "lpips"), preview_count=1, preview_size=32),
        reader=READER,
    )
    out = tmp_path / "reports"
    paths = [write_report(rep, out / f"r.{ext}") for ext in ("json", "csv", "md", "html")]
    assert all(p.is_file() for p in paths)

    doc = json.loads(paths[0].read_text())
    assert doc == json.loads(json.dumps(report_to_dict(rep)))
    proto_fields = {f for f in Protocol.__dataclass_fields__}
    assert proto_fields <= set(doc["protocol"]) and doc["protocol"]["name"] == "default"
    assert doc["counts"] == {"scored": 3, "with_input": 2, "problems": 5, "skipped": 3}
    assert {p["kind"] for p in doc["problems"]} == {
        "size_mismatch",
        "unreadable",
        "missing_prediction",
        "missing_gt",
        "missing_input",
    }
    assert set(doc["mean"]) == {"psnr", "ssim", "lpips"} and set(doc["mean_gain"]) == {"psnr", "ssim", "lpips"}
    assert [i["name"] for i in doc["images"]] == ["a", "b", "g"] and doc["images"][2]["baseline"] is None

    rows = list(csv.DictReader(io.StringIO(paths[1].read_text())))
    status = {r["name"]: r["status"] for r in rows}
    assert status["a"] == "ok" and status["c"] == "size_mismatch" and status["d"] == "unreadable"
    assert status["e"] == "missing_prediction" and status["mean"] == "mean"
    assert float(rows[0]["psnr"]) == pytest.approx(rep.images[0].metrics["psnr"])
    assert "psnr_gain" in rows[0] and all("default" in r["protocol"] for r in rows)

    md = paths[2].read_text()
    assert "## Protocol" in md and "ssim_window" in md and "size_mismatch" in md and "| a |" in md

    page = paths[3].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page and "sortable" in page
    assert "data:image/png;base64," in page and "worst" in page and "best" in page
    for ext_ref in ('src="http', "src='http", "href=", "<link", "@import"):
        assert ext_ref not in page
    assert "missing_prediction" in page and "gaussian11" in page and "gain psnr" in page

    with pytest.raises(UsageError):
        write_report(rep, out / "r.xlsx")


# ------------------------------------------------------------------ the command


def _app() -> typer.Typer:
    """The real ``gkm`` app: its one error handler turns GkmErrors into exit codes."""
    from gkm_cli.cli import app

    return app


@needs_project_reader
def test_cli_json_on_stdout_and_warnings_on_stderr(dataset: dict[str, Any], tmp_path: Path) -> None:
    rep = tmp_path / "out" / "r.json"
    args = ["evaluate", str(dataset["pred"]), str(dataset["gt"]), "--input-dir", str(dataset["inp"]), "--json"]
    args += [
        "--metrics",
        "psnr,ssim",
        "--protocol",
        "gkmnet",
        "--crop-border",
        "2",
        "--device",
        "cpu",
        "--report",
        str(rep),
    ]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["protocol"]["name"] == "gkmnet" and doc["protocol"]["crop_border"] == 2
    assert doc["protocol"]["overrides"] == ["crop_border"] and doc["protocol"]["round_prediction"] is True
    assert doc["metrics"] == ["psnr", "ssim"] and doc["counts"]["scored"] == 3
    assert "size_mismatch" in res.stderr and "unreadable" in res.stderr and "missing_prediction" in res.stderr
    assert json.loads(rep.read_text())["counts"] == doc["counts"]


@needs_project_reader
def test_cli_table_and_exit_codes(dataset: dict[str, Any], tmp_path: Path) -> None:
    app, run = _app(), CliRunner().invoke
    base = ["evaluate", str(dataset["pred"]), str(dataset["gt"]), "--metrics", "psnr,mae", "--device", "cpu"]
    res = run(app, [*base, "--input-dir", str(dataset["inp"])])
    assert res.exit_code == 0 and "mean of per-image values" in res.stdout and "gain" in res.stdout
    assert run(app, [*base, "--strict"]).exit_code == 1
    assert run(app, [*base, "--protocol", "nope"]).exit_code == 2
    assert run(app, [*base, "--report", str(tmp_path / "r.txt")]).exit_code == 2
    assert run(app, [*base, "--bit-depth", "12"]).exit_code == 2
    assert run(app, ["evaluate", str(tmp_path / "missing"), str(dataset["gt"])]).exit_code == 2

    # nothing scorable: only a mismatched and a corrupt prediction
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "c.png").write_bytes((dataset["pred"] / "c.png").read_bytes())
    (only_bad / "d.png").write_bytes((dataset["pred"] / "d.png").read_bytes())
    report = tmp_path / "bad.json"
    res = run(app, ["evaluate", str(only_bad), str(dataset["gt"]), "--metrics", "psnr", "--report", str(report)])
    assert res.exit_code == 1 and "nothing could be scored" in res.stderr
    doc = json.loads(report.read_text())
    assert doc["counts"]["scored"] == 0 and {"size_mismatch", "unreadable"} <= {p["kind"] for p in doc["problems"]}


@pytest.mark.skipif(not (REAL / "blur").is_dir(), reason="shared/data/real_pairs_dev not present")
def test_real_dev_pairs_reproduce_published_psnr() -> None:
    """pairs.csv lists PSNR on rows 72+ computed independently when the data was prepared."""
    with open(REAL / "pairs.csv", newline="") as fh:
        want = {r["stem"]: r for r in csv.DictReader(fh)}
    proto = get_protocol("default").with_overrides(crop_top=72)
    rep = evaluate_folders(
        REAL / "dpdnet_output",
        REAL / "sharp",
        REAL / "blur",
        EvalSettings(protocol=proto, metrics=("psnr",), preview_count=0),
        reader=READER,
    )
    assert rep.n_scored == len(want) and not rep.problems
    for r in rep.images:
        assert r.metrics["psnr"] == pytest.approx(float(want[r.name]["psnr_dpdnet_vs_sharp_rows72plus"]), abs=0.006)
        assert r.baseline is not None
        assert r.baseline["psnr"] == pytest.approx(float(want[r.name]["psnr_blur_vs_sharp_rows72plus"]), abs=0.006)
