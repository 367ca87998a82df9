"""Other architectures through spandrel (the zoo extra): detected from a .pth, run by our
engine in `gkm deblur` and `gkm evaluate`, imported to safetensors; unsuitable ones refused.

spandrel and spandrel_extra_arches are installed by scripts/bootstrap.sh, so these never skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gkm_cli.api import Deblurrer
from gkm_cli.images import read_image
from gkm_cli.nets.zoo import ZooNetwork, import_spandrel
from helpers import gkm, write_png


@pytest.fixture(scope="module")
def nafnet_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny NAFNet (MIT) with random weights, saved as the authors save theirs (params key)."""
    import_spandrel()
    from spandrel.architectures.NAFNet.__arch.NAFNet_arch import NAFNet

    torch.manual_seed(0)
    net = NAFNet(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])
    with torch.no_grad():  # NAFNet zero-initialises nothing, but make sure output != input
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("zoo") / "nafnet_tiny.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


def test_nafnet_pth_is_detected_and_wrapped(nafnet_pth: Path) -> None:
    d = Deblurrer(weights=nafnet_pth, device="cpu", precision="fp32")
    assert isinstance(d.model, ZooNetwork) and d.name == "spandrel:NAFNet"
    assert d.model.spec.size_multiple % 16 == 0 and not d.model.spec.tile_exact
    photo = np.random.default_rng(1).random((48, 64, 3)).astype(np.float32)  # a multiple of 16: no padding
    out = d.deblur(photo)
    with torch.inference_mode():
        direct = d.model.descriptor(torch.from_numpy(photo).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(out - direct).max() < 1e-5  # the engine runs exactly spandrel's model
    assert np.abs(out - photo).max() > 1e-3
    assert d.deblur(photo[:37, :50]).shape == (37, 50, 3)  # other sizes: padded, cropped back


def test_deblur_and_evaluate_run_a_spandrel_pth_end_to_end(tmp_path: Path, nafnet_pth: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.random((40, 56, 3))
    write_png(tmp_path / "in.png", photo)
    proc = gkm(
        "deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--weights", str(nafnet_pth), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[0]["status"] == "ok" and records[-1]["model"] == "spandrel:NAFNet"
    written = read_image(tmp_path / "out.png").pixels
    expected = Deblurrer(weights=nafnet_pth, device="cpu", precision="fp32").deblur(
        (read_image(tmp_path / "in.png").pixels * 255).round().astype(np.uint8)
    )
    assert np.abs(written * 255 - expected.astype(np.float32)).max() <= 1.0  # the engine's output, 8-bit

    root = tmp_path / "dpdd"
    for name in ("b", "c"):
        sharp = rng.random((40, 56, 3))
        write_png(root / "test_c" / "target" / f"{name}.png", sharp)
        write_png(root / "test_c" / "source" / f"{name}.png", (sharp + np.roll(sharp, 1, 0)) / 2)
    proc = gkm("evaluate", "--data", str(root), "--weights", str(nafnet_pth), "--metrics", "psnr,ssim", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(i["name"] for i in report["images"]) == ["b", "c"]
    assert all(np.isfinite(i["metrics"]["psnr"]) for i in report["images"])
    assert "spandrel:NAFNet" in proc.stderr  # the model line names what ran


def test_import_spandrel_to_safetensors_runs_identically(tmp_path: Path, nafnet_pth: Path) -> None:
    out = tmp_path / "nafnet.safetensors"
    proc = gkm("models", "import", str(nafnet_pth), "-o", str(out), "--licence", "MIT")
    assert proc.returncode == 0, proc.stderr
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["kind"] == "spandrel" and card["architecture"] == "spandrel:NAFNet" and card["licence"] == "MIT"
    photo = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    a = Deblurrer(weights=nafnet_pth, device="cpu").deblur(photo)
    b = Deblurrer(weights=out, device="cpu").deblur(photo)
    assert np.array_equal(a, b)


def test_restormer_single_image_defocus_layout_is_detected(tmp_path: Path) -> None:
    """The extra arches (Restormer: the issue's restormer_defocus.pth) come from a local registry."""
    import_spandrel()
    from spandrel_extra_arches.architectures.Restormer.__arch.restormer_arch import Restormer

    torch.manual_seed(0)
    net = Restormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1])
    path = tmp_path / "restormer_tiny.pth"
    torch.save({"params": net.state_dict()}, path)
    d = Deblurrer(weights=path, device="cpu", precision="fp32")
    assert d.name == "spandrel:Restormer"
    assert d.deblur(np.zeros((24, 24, 3), np.float32)).shape == (24, 24, 3)
    import spandrel

    assert "Restormer" not in {a.architecture.id for a in spandrel.MAIN_REGISTRY}  # global registry untouched
    dual = Restormer(
        inp_channels=6,
        dim=8,
        num_blocks=[1, 1, 1, 1],
        num_refinement_blocks=1,
        heads=[1, 1, 1, 1],
        dual_pixel_task=True,
    )
    torch.save(dual.state_dict(), tmp_path / "dual.pth")
    proc = gkm("models", "import", str(tmp_path / "dual.pth"), "-o", str(tmp_path / "d.safetensors"), "--licence", "x")
    assert proc.returncode == 2 and "dual-pixel" in proc.stderr


def test_unsuitable_models_are_refused_with_one_line(tmp_path: Path) -> None:
    import_spandrel()
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "sr.pth")
    torch.save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "unknown.pth")
    write_png(tmp_path / "in.png", np.zeros((16, 16, 3)))
    for name, words in (("sr.pth", "upscales"), ("unknown.pth", "no architecture spandrel knows")):
        proc = gkm("deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), "--weights", str(tmp_path / name))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and name in lines[0] and words in lines[0], proc.stderr
    proc = gkm(
        "blurmap", str(tmp_path / "in.png"), "-o", str(tmp_path / "m.npy"), "--weights", str(tmp_path / "sr.pth")
    )
    assert proc.returncode == 2


def test_zoo_pins_agree_with_what_is_installed() -> None:
    """pyproject's zoo extra, scripts/bootstrap.sh and the environment name the same versions."""
    import importlib.metadata

    import tomllib

    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["zoo"]
    pins = dict(req.split("==") for req in extra)
    assert set(pins) == {"spandrel", "spandrel-extra-arches", "torchvision"}
    bootstrap = (root / "scripts" / "bootstrap.sh").read_text()
    for name in ("spandrel", "spandrel-extra-arches"):
        assert f"{name}=={pins[name]}" in bootstrap
        assert importlib.metadata.version(name) == pins[name]
