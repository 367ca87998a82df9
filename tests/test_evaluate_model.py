"""`gkm evaluate --data ROOT --model/--weights`: engine + scoring on a detected dataset layout."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.images import read_image
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.nets.checkpoint import save_weights
from helpers import write_png

runner = CliRunner()


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    with torch.no_grad():  # not the identity, so output and input differ
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny.safetensors"
    save_weights(net, path)
    return path


@pytest.fixture
def dpdd(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "dpdd"
    for split, names in (("train_c", ["a"]), ("test_c", ["b", "c"])):
        for name in names:
            sharp = rng.random((40, 56, 3))
            blur = (sharp + np.roll(sharp, 1, 0) + np.roll(sharp, 1, 1)) / 3
            write_png(root / split / "target" / f"{name}.png", sharp)
            write_png(root / split / "source" / f"{name}.png", blur)
    write_png(root / "test_c" / "source" / "orphan.png", rng.random((40, 56, 3)))
    return root


def test_model_mode_detects_layout_scores_test_split_and_saves(tmp_path, checkpoint, dpdd):
    out = tmp_path / "restored"
    result = runner.invoke(
        app, ["evaluate", "--data", str(dpdd), "--weights", str(checkpoint), "--metrics", "psnr,ssim",
              "--save-dir", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sources"]["layout"] == "dpdd" and report["sources"]["split"] == "test_c"
    names = sorted(i["name"] for i in report["images"])
    assert names == ["b", "c"]  # the test split only, train_c untouched
    assert any("orphan" in json.dumps(p) for p in report["problems"])  # listed, not dropped
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "c.png"]
    # The saved output is what was scored: re-scoring it as a folder gives the same PSNR.
    for image in report["images"]:
        restored = read_image(out / f"{image['name']}.png").pixels
        gt = read_image(dpdd / "test_c" / "target" / f"{image['name']}.png").pixels
        psnr = 10 * np.log10(1 / np.mean((np.clip(restored, 0, 1) - gt) ** 2))
        assert psnr == pytest.approx(image["metrics"]["psnr"], abs=0.05)
        assert image["baseline"]["psnr"] != pytest.approx(image["metrics"]["psnr"], abs=1e-6)


def test_model_mode_refuses_mixed_arguments(tmp_path, checkpoint, dpdd):
    result = runner.invoke(
        app, ["evaluate", str(tmp_path), str(tmp_path), "--data", str(dpdd), "--weights", str(checkpoint)]
    )
    assert result.exit_code == 2
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2


def test_model_mode_without_weights_is_a_clear_error(tmp_path, dpdd, monkeypatch):
    monkeypatch.setenv("GKM_MODELS_DIR", str(tmp_path / "empty"))
    result = runner.invoke(app, ["evaluate", "--data", str(dpdd), "--model", "gkmanet"])
    assert result.exit_code == 2
    assert "no trained weights" in result.output


def test_save_dir_keeps_scene_folders_apart(tmp_path, checkpoint):
    """Scene sub-folders that repeat file names (as LFDOF does) must not overwrite each other."""
    rng = np.random.default_rng(1)
    root = tmp_path / "pairs"
    for scene in ("s1", "s2"):
        sharp = rng.random((40, 56, 3))
        write_png(root / "sharp" / scene / "x.png", sharp)
        write_png(root / "blur" / scene / "x.png", (sharp + np.roll(sharp, 1, 1)) / 2)
    out = tmp_path / "restored"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            str(root),
            "--weights",
            str(checkpoint),
            "--metrics",
            "psnr",
            "--save-dir",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["images"]) == 2
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert saved == ["s1/x.png", "s2/x.png"]
    assert sorted(i["pred"] for i in report["images"]) == [str(out / "s1" / "x.png"), str(out / "s2" / "x.png")]
