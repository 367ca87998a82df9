"""Foreign checkpoints: the authors' GKMNet layout (key map, bank channel map, BN mode), the
`gkm models import` round trip, and pickles that try to run code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.images import read_image
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.nets.checkpoint import card_path, load_weights
from gkm_cli.nets.gkm_layouts import ImageStatsBatchNorm, filtered_channels, layout_mix_and_sum
from gkm_cli.nets.importers import official_key, to_official
from gkm_cli.ops.gaussian import dense_kernels
from helpers import gkm, write_png

runner = CliRunner()


def _tiny_gkmnet(seed: int = 0, **overrides) -> torch.nn.Module:
    """Tiny GKMNet with random weights and BN statistics (so running vs image BN differ)."""
    torch.manual_seed(seed)
    net = create_model("gkmnet", **TINY_OVERRIDES["gkmnet"], **overrides)
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


# --- the key map ------------------------------------------------------------------------------


def test_official_key_map_covers_the_released_state_dict() -> None:
    """Full-size GKMNet: 240 entries, 1,409,131 parameters, 1,411,915 numbers (reference 1.7, 5),
    every key mapped to a distinct authors' name with the shapes the notes list."""
    net = create_model("gkmnet")
    state = net.state_dict()
    theirs = to_official(state)
    assert len(state) == len(theirs) == 240
    assert net.inference_parameters() == 1_409_131
    assert sum(v.numel() for v in state.values()) == 1_411_915
    shapes = {k: tuple(v.shape) for k, v in theirs.items()}
    assert shapes["APU.conv.conv.0.weight"] == (44, 32, 3, 3)
    assert shapes["APU.conv_atten.conv.weight"] == (176, 76, 5, 5)
    assert shapes["SumLayer.conv.weight"] == (3, 132, 1, 1)
    assert shapes["in_block.conv.0.weight"] == (32, 3, 3, 3)
    assert shapes["conv_block3_1.conv.0.weight"] == (128, 64, 2, 2)  # ConvTranspose: in, out
    assert shapes["bottle_neck_1.ta.hc.conv.conv.weight"] == (1, 2, 7, 7)
    assert "conv_block4_1.res_block.conv1.1.running_var" in shapes
    prefixes = {k.split(".")[0] for k in theirs}
    assert prefixes == {
        "in_block",
        "conv_block1_1",
        "conv_block2_1",
        "bottle_neck_1",
        "conv_block3_1",
        "conv_block4_1",
        "APU",
        "SumLayer",
    }
    assert sum(k.startswith("in_block.") for k in theirs) == 34  # no BN after its first conv
    assert sum(k.startswith("conv_block1_1.") for k in theirs) == 39
    with pytest.raises(Exception, match="no authors' name"):
        official_key("extractor.in_block.9.weight")


# --- the bank channel maps, against constructions written from the reference notes ----------


def _all_kernels(net) -> torch.Tensor:
    """K x 1 x 21 x 21: the delta then the Gaussians, zero-padded to the bank's size."""
    gauss = dense_kernels(net.bank)
    delta = torch.zeros_like(gauss[:1])
    delta[0, 0, gauss.shape[-1] // 2, gauss.shape[-1] // 2] = 1.0
    return torch.cat([delta, gauss])


def test_official_bank_is_the_released_grouped_conv_with_repeated_kernels() -> None:
    """Released GKMNet: weight W[j] = kernel j // 3 (element-wise repeat), one conv with groups=3."""
    net = create_model("gkmnet")
    x = torch.rand(2, 3, 24, 28, generator=torch.Generator().manual_seed(1))
    kernels = _all_kernels(net)
    w = kernels.repeat_interleave(3, 0)  # 66 x 1 x 21 x 21, order k0,k0,k0,k1,...
    released = F.conv2d(x, w, padding=10, groups=3)
    ours = filtered_channels("official", x, net.bank, net.bank_kernels)
    assert torch.allclose(ours, released, atol=1e-6)
    # The QUIRK: a red impulse reaches channels 0..21 only, and red meets kernels 0..7 only.
    impulse = torch.zeros(1, 3, 21, 21)
    impulse[0, 0, 10, 10] = 1.0
    out = filtered_channels("official", impulse, net.bank, net.bank_kernels)
    touched = [o for o in range(66) if out[0, o].abs().sum() > 0]
    assert touched == list(range(22))
    assert torch.allclose(out[0, 21], kernels[7, 0], atol=1e-7)  # red's last map: kernel 21 // 3 = 7


def test_updating_bank_is_separable_reflect_kernel_major() -> None:
    """GKMNet_updating: per kernel a reflect pad of its own radius, separable, order [k0 RGB, k1 RGB, ...]."""
    net = create_model("gkmnet")
    x = torch.rand(1, 3, 26, 30, generator=torch.Generator().manual_seed(2))
    expected = [x]
    for profile in net.bank.profiles:
        t = torch.tensor(profile, dtype=torch.float32)
        r = len(profile) // 2
        k2 = torch.outer(t, t)[None, None].repeat(3, 1, 1, 1)
        expected.append(F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), k2, groups=3))
    released = torch.cat(expected, 1)
    ours = filtered_channels("updating", x, net.bank, net.bank_kernels)
    assert torch.allclose(ours, released, atol=1e-6)


@pytest.mark.parametrize("layout", ["official", "updating"])
def test_layout_mix_pairs_channels_with_tiled_weight_maps(layout: str) -> None:
    """Released multiply: channel o of each half times weight map o mod K (cat([w, w, w]))."""
    net = _tiny_gkmnet(bank_layout=layout)
    g = torch.Generator().manual_seed(3)
    y, x_up = torch.rand(1, 3, 16, 20, generator=g), torch.rand(1, 3, 16, 20, generator=g)
    k = net.num_kernels
    w = torch.rand(1, 2 * k, 16, 20, generator=g) * 2 - 1
    wy, wx = w[:, :k], w[:, k:]
    expected = net.summation(torch.cat([
        filtered_channels(layout, y, net.bank, net.bank_kernels) * torch.cat([wy, wy, wy], 1),
        filtered_channels(layout, x_up, net.bank, net.bank_kernels) * torch.cat([wx, wx, wx], 1),
    ], 1))  # fmt: skip
    got = layout_mix_and_sum(layout, y, x_up, w, net.bank, net.bank_kernels, net.summation)
    assert torch.equal(got, expected)


def test_paper_layout_generic_path_equals_our_fast_path() -> None:
    net = _tiny_gkmnet()
    g = torch.Generator().manual_seed(4)
    y, x_up = torch.rand(2, 3, 20, 24, generator=g), torch.rand(2, 3, 20, 24, generator=g)
    w = torch.rand(2, 2 * net.num_kernels, 20, 24, generator=g) * 2 - 1
    with torch.no_grad():
        fast = net.mix_and_sum(y, x_up, w)
        generic = layout_mix_and_sum("paper", y, x_up, w, net.bank, net.bank_kernels, net.summation)
    assert torch.allclose(fast, generic, atol=1e-5)
    assert net.config.bank_layout == "paper" and net.config.batch_norm == "running"  # defaults unchanged


def test_image_batchnorm_is_train_mode_bn_of_each_image_alone() -> None:
    """batch_norm='image' = the released test script's train-mode BN at batch 1, per image, and
    the stored running statistics are neither used nor updated."""
    net = _tiny_gkmnet(batch_norm="image")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(type(m) is ImageStatsBatchNorm and m.training for m in bns)  # eval() left them alone
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        both = net(x).image
        one = net(x[1:]).image
    assert torch.allclose(both[1:], one, atol=1e-5)  # no statistics shared across the batch
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    plain = torch.nn.BatchNorm2d(4).train()
    plain.weight.data.uniform_(0.5, 1.5)
    image_bn = torch.nn.BatchNorm2d(4)
    image_bn.load_state_dict(plain.state_dict())
    image_bn.__class__ = ImageStatsBatchNorm
    f = torch.randn(1, 4, 8, 8)
    assert torch.allclose(image_bn(f), plain(f), atol=1e-6)
    running = _tiny_gkmnet()  # same seed, running statistics
    with torch.no_grad():
        assert not torch.allclose(running(x).image, both, atol=1e-3)


# --- the import round trip --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "layout", "batch_norm"), [("gkmnet", "official", "image"), ("gkmnet_updating", "updating", "running")]
)
def test_import_round_trip_is_bit_exact(tmp_path: Path, variant: str, layout: str, batch_norm: str) -> None:
    """Our GKMNet in the authors' layout -> their key names -> torch.save -> gkm models import
    -> load: the same output bit for bit; the card records source, sha256, licence, variant."""
    source = _tiny_gkmnet(seed=7, bank_layout=layout, batch_norm=batch_norm)
    pth = tmp_path / "GKMNet_epoch2819.pth"
    torch.save(
        {"module." + k: v for k, v in to_official(source.state_dict()).items()}, pth
    )  # as saved from DataParallel
    out = tmp_path / "imported.safetensors"
    args = [
        "models",
        "import",
        str(pth),
        "-o",
        str(out),
        "--licence",
        "unknown (test)",
        "--variant",
        variant,
        "--batch-norm",
        batch_norm,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_weights(out)
    assert model.config.bank_layout == layout and model.config.batch_norm == batch_norm
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.equal(model(x).image, source(x).image)
    card = json.loads(card_path(out).read_text())
    import hashlib

    assert card["source_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    assert card["licence"] == "unknown (test)" and card["variant"] == variant and card["source"] == str(pth.resolve())
    assert runner.invoke(app, args).exit_code == 2  # exists: not replaced without --overwrite


def test_deblur_runs_the_authors_pth_like_its_import(tmp_path: Path) -> None:
    """`gkm deblur --weights X.pth` (the authors' layout, detected) = the imported safetensors."""
    source = _tiny_gkmnet(seed=9, bank_layout="official", batch_norm="image")
    pth = tmp_path / "official.pth"
    torch.save(to_official(source.state_dict()), pth)
    imported = tmp_path / "official.safetensors"
    assert runner.invoke(app, ["models", "import", str(pth), "-o", str(imported), "--licence", "x"]).exit_code == 0
    write_png(tmp_path / "in.png", np.random.default_rng(0).random((40, 56, 3)))
    for weights, name in ((pth, "a.png"), (imported, "b.png")):
        result = runner.invoke(
            app, ["deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / name), "--weights", str(weights)]
        )
        assert result.exit_code == 0, result.output
    a, b = read_image(tmp_path / "a.png").pixels, read_image(tmp_path / "b.png").pixels
    assert np.array_equal(a, b) and not np.array_equal(a, read_image(tmp_path / "in.png").pixels)


def test_import_refuses_wrong_shapes_and_unknown_files(tmp_path: Path) -> None:
    state = to_official(_tiny_gkmnet().state_dict())
    state["SumLayer.conv.bias"] = torch.zeros(4)
    torch.save(state, tmp_path / "bad.pth")
    result = runner.invoke(
        app, ["models", "import", str(tmp_path / "bad.pth"), "-o", str(tmp_path / "o.safetensors"), "--licence", "x"]
    )
    assert result.exit_code == 2 and "SumLayer.conv.bias" in result.output
    (tmp_path / "w.pkl").write_bytes(b"not weights")
    result = gkm("models", "import", str(tmp_path / "w.pkl"), "-o", str(tmp_path / "o.safetensors"), "--licence", "x")
    assert result.returncode == 2 and "w.pkl" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_import_refuses_nan_weights_and_out_of_bounds_configs(tmp_path: Path) -> None:
    """The foreign path gets the checks our own checkpoints get: finite tensors, config bounds."""
    state = to_official(_tiny_gkmnet().state_dict())
    state["SumLayer.conv.bias"] = torch.full_like(state["SumLayer.conv.bias"], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    result = gkm("models", "import", str(tmp_path / "nan.pth"), "-o", str(tmp_path / "o.safetensors"), "--licence", "x")
    assert result.returncode == 2 and "NaN" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    huge = to_official(_tiny_gkmnet().state_dict())
    huge["APU.conv_atten.conv.weight"] = torch.zeros(1, 1, 1, 999)  # declares a 999 x 999 ConvLSTM kernel
    torch.save(huge, tmp_path / "huge.pth")
    result = gkm(
        "models", "import", str(tmp_path / "huge.pth"), "-o", str(tmp_path / "h.safetensors"), "--licence", "x"
    )
    assert result.returncode == 2 and "lstm_kernel" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "h.safetensors").exists()


# --- pickles that run code ------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_payload_would_run_under_plain_pickle(tmp_path: Path) -> None:
    """Control: the malicious file below really runs code when loaded naively."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch_zip", "torch_legacy", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    payload = {"SumLayer.conv.weight": torch.zeros(1), "x": _Payload(marker)}
    if kind == "torch_zip":
        torch.save(payload, evil)
    elif kind == "torch_legacy":
        torch.save(payload, evil, _use_new_zipfile_serialization=False)
    else:
        evil.write_bytes(pickle.dumps(_Payload(marker)))
    write_png(tmp_path / "in.png", np.zeros((16, 16, 3)))
    for args in (
        ("models", "import", str(evil), "-o", str(tmp_path / "o.safetensors"), "--licence", "x"),
        ("deblur", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--weights", str(evil)),
    ):
        result = gkm(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "evil.pth" in lines[0] and "refus" in lines[0], lines
        assert not marker.exists()
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "out.png").exists()


def test_card_is_json_beside_the_weights(tmp_path: Path) -> None:
    pth = tmp_path / "g.pt"
    torch.save({"state_dict": to_official(_tiny_gkmnet().state_dict()), "epoch": 2819}, pth)  # wrapped, with extras
    out = tmp_path / "g.safetensors"
    assert runner.invoke(app, ["models", "import", str(pth), "-o", str(out), "--licence", "MIT"]).exit_code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["config"]["bank_layout"] == "official" and card["config"]["batch_norm"] == "image"
