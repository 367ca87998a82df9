"""The network family: shapes, gradients, parameter counts, context and tiling hooks."""

import itertools

import pytest
import torch

from gkm_cli.errors import ModelError
from gkm_cli.nets import create_model, get_spec, list_models
from gkm_cli.nets.base import pad_to_multiple
from gkm_cli.nets.checkpoint import load_weights, save_weights
from helpers import tiny_model


def test_registry_lists_the_family():
    assert list_models() == ["gkmnet", "ggkmnet", "ggkmnet_l", "gkmanet"]
    assert list_models("ggkm*") == ["ggkmnet", "ggkmnet_l"]
    with pytest.raises(ModelError, match="unknown model"):
        create_model("nope")
    with pytest.raises(ModelError, match="unknown config field"):
        create_model("ggkmnet", wdith=3)


@pytest.mark.parametrize("name", list_models())
def test_forward_odd_size_and_backward_reaches_every_parameter(name):
    model = tiny_model(name, noise=0).train()
    with torch.no_grad():  # leave the zero-initialised residual branches, so every path carries gradient
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(1, 3, 37, 53)
    out = model(x, reconstruct=True)
    assert out.image.shape == x.shape and torch.isfinite(out.image).all()
    loss = sum(s.square().mean() for s in out.scales)
    if out.reconstruction is not None:
        loss = loss + sum(r.mean() for r in out.reconstruction)
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing


@pytest.mark.parametrize("name", list_models())
def test_scale_outputs_are_quarter_half_full(name):
    out = tiny_model(name, noise=0).eval()(torch.rand(2, 3, 64, 96))
    assert [tuple(s.shape[-2:]) for s in out.scales] == [(16, 24), (32, 48), (64, 96)]
    assert out.sigma_map().shape == (2, 1, 64, 96)
    assert (out.sigma_map() >= 0).all()


@pytest.mark.parametrize(
    "name, paper, tolerance", [("gkmnet", 1.41e6, 0.05), ("ggkmnet", 1.68e6, 0.05), ("ggkmnet_l", 5.93e6, 0.10)]
)
def test_parameter_counts_match_papers(name, paper, tolerance):
    params = create_model(name).inference_parameters()
    assert abs(params - paper) / paper <= tolerance, params


def test_gkmnet_count_equals_reference_code():
    assert create_model("gkmnet").inference_parameters() == 1_409_131


def test_self_reconstruction_is_excluded_from_inference_count():
    m = create_model("ggkmnet")
    srm = sum(p.numel() for p in m.srm.parameters())
    assert srm > 0 and m.inference_parameters() == sum(p.numel() for p in m.parameters()) - srm


def test_gaussian_banks_are_buffers_not_parameters():
    for name in list_models():
        m = tiny_model(name, noise=0)
        assert all("bank" not in n and "sigma" not in n for n, _ in m.named_parameters())
        kernels = dict(m.named_buffers())["bank_kernels"]  # built once, moves with .to(device)
        assert kernels.shape == (m.bank.num_kernels, 1, 2 * m.bank.radius + 1, 2 * m.bank.radius + 1)
        torch.testing.assert_close(kernels.sum((1, 2, 3)), torch.ones(m.bank.num_kernels))
        assert "bank_kernels" not in m.state_dict()  # derived, not stored in checkpoints
        assert m.to(torch.float64).bank_kernels.dtype == torch.float64


def test_untrained_ggkmnet_is_identity():
    """The summation starts as the fixed-point form's identity part: x(t) = y(t)."""
    x = torch.rand(1, 3, 48, 64)
    out = tiny_model("ggkmnet", noise=0).eval()(x)
    torch.testing.assert_close(out.image, x)


@pytest.mark.parametrize("name", [n for n in list_models() if get_spec(n).tile_exact])
def test_context_from_tiles_equals_whole_image(name):
    """Summing per-tile context stats over a partition reproduces the whole image's context."""
    model = tiny_model(name, noise=0).eval()
    y, _ = pad_to_multiple(torch.rand(1, 3, 80, 112), 16)
    with torch.no_grad():
        whole = model.context(y)
        H, W = y.shape[-2:]
        stats = None
        for top, h in ((0, 48), (48, 32)):
            for left, w in ((0, 64), (64, 48)):
                # Tile with a 16-px margin where it exists, core = the partition cell.
                t0, l0 = max(0, top - 16), max(0, left - 16)
                t1, l1 = min(H, top + h + 16), min(W, left + w + 16)
                tile = y[..., t0:t1, l0:l1]
                part = model.context_stats_padded(tile, (top - t0, left - l0, h, w), (t0, l0), (H, W))
                stats = part if stats is None else stats + part
        tiled = model.make_context(stats)
    for a, b in zip(whole.vectors, tiled.vectors):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


@pytest.mark.parametrize("name", list_models())
def test_checkpoint_round_trip(tmp_path, name):
    model = tiny_model(name, noise=0).eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path, card={"architecture": name})
    loaded = load_weights(path)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).image, model(x).image)
    assert (tmp_path / f"{name}.json").is_file()
    assert not list(tmp_path.glob(".*tmp"))


def test_load_rejects_non_checkpoints(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"bad\.safetensors"):
        load_weights(bad)
    with pytest.raises(ModelError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", ["gkmnet", "gkmanet"])
def test_delta_kernel_of_the_network_bank_passes_the_image_through(name):
    """Kernel 0 of GKMNet's K = 22 (delta + 21 Gaussians) is the identity; the others blur, more
    with every step of sigma (kernel 1, sigma 0.25 px, is within 1e-3 of a delta)."""
    m = create_model(name)
    x = torch.rand(1, 3, 40, 52)
    bank = m.filter_bank(x)
    assert bank.shape == (1, 3, m.bank.num_kernels + 1, 40, 52)
    torch.testing.assert_close(bank[:, :, 0], x, rtol=0, atol=0)
    change = [float((bank[:, :, k] - x).abs().mean()) for k in range(1, bank.shape[2])]
    assert change[1] > 1e-2 and all(a < b for a, b in itertools.pairwise(change))


def test_model_facts_live_in_the_spec():
    from gkm_cli.nets import default_model
    from gkm_cli.training.losses import RECIPES, recipe_for

    assert default_model() == "ggkmnet" and get_spec("ggkmnet").pretrained is not None
    assert create_model("ggkmnet_l").config.res_blocks == 5  # GGKMNet-dagger's paper config
    assert create_model("ggkmnet").config.res_blocks == 1
    for name in list_models():
        assert recipe_for(name) in RECIPES
    assert get_spec("ggkmnet").paper_macs_720p == 158.4


def test_damaged_default_weights_fail_in_one_line(tmp_path, monkeypatch):
    from gkm_cli.nets.checkpoint import resolve_model, shipped_weights

    spec = get_spec("ggkmnet")
    shipped = shipped_weights("ggkmnet")
    assert shipped is not None and spec.pretrained is not None
    assert resolve_model(None, None) == ("ggkmnet", shipped)  # the shipped file hashes right
    (tmp_path / spec.pretrained.filename).write_bytes(shipped.read_bytes()[:-4096])  # truncated copy
    monkeypatch.setenv("GKM_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="sha256") as info:
        resolve_model(None, None)
    assert "\n" not in str(info.value)
