"""Metrics against scikit-image, conventions, protocols, and LPIPS (pinned value + properties)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import mean_squared_error as sk_mse
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from gkm_cli.errors import ModelError, UsageError
from gkm_cli.metrics import (
    PROTOCOLS,
    check_pair,
    colour_align,
    crop,
    get_protocol,
    load_lpips,
    lpips,
    mae,
    mse,
    prepare,
    psnr,
    quantise,
    rgb_to_y,
    ssim,
)

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real_pairs_dev"
#: LPIPS(check_pair(128, sigma=2.0)) printed by scripts/convert_lpips_weights.py.
PINNED_LPIPS = 0.247092


def nchw(a: np.ndarray) -> torch.Tensor:
    """H x W x C numpy -> 1 x C x H x W torch (float64 kept)."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).unsqueeze(0)


def sk_ssim_gauss(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return sk_ssim(
        a, b, channel_axis=-1, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )


def sk_ssim_default(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return sk_ssim(a, b, channel_axis=-1, data_range=data_range)


def random_pair(
    rng: np.random.Generator, h: int, w: int, c: int = 3, noise: float = 0.03
) -> tuple[np.ndarray, np.ndarray]:
    """A ramp plus texture and its noisy copy; local variances are comparable to SSIM's C2, so
    the window and covariance conventions change SSIM by ~5e-4, well above the tolerance."""
    gt = 0.15 * rng.random((h, w, c)) + 0.5 * np.linspace(0, 1, w)[None, :, None]
    pred = np.clip(gt + noise * rng.standard_normal(gt.shape), 0, 1)
    return pred, gt


# ------------------------------------------------------------------ fidelity vs scikit-image


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 48, 1), (23, 91, 3)])
@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_ssim_mae_match_skimage_random(shape: tuple[int, int, int], data_range: float) -> None:
    rng = np.random.default_rng(sum(shape))
    pred, gt = random_pair(rng, *shape)
    pred, gt = pred * data_range, gt * data_range
    p, g = nchw(pred), nchw(gt)
    assert float(psnr(p, g, data_range=data_range)[0]) == pytest.approx(
        sk_psnr(gt, pred, data_range=data_range), abs=1e-6
    )
    assert float(ssim(p, g, data_range=data_range, window="gaussian11")[0]) == pytest.approx(
        sk_ssim_gauss(pred, gt, data_range), abs=1e-6
    )
    assert float(ssim(p, g, data_range=data_range, window="uniform7")[0]) == pytest.approx(
        sk_ssim_default(pred, gt, data_range), abs=1e-6
    )
    assert float(mse(p, g)[0]) == pytest.approx(sk_mse(gt, pred), rel=1e-9)
    assert float(mae(p, g)[0]) == pytest.approx(np.abs(pred - gt).mean(), rel=1e-9)


def test_batched_values_are_per_image_and_float32_inputs_agree() -> None:
    rng = np.random.default_rng(7)
    pairs = [random_pair(rng, 40, 40, noise=s) for s in (0.02, 0.05, 0.2)]
    p = torch.cat([nchw(a) for a, _ in pairs]).float()
    g = torch.cat([nchw(b) for _, b in pairs]).float()
    got_psnr = psnr(p, g, data_range=1.0)
    got_ssim = ssim(p, g, data_range=1.0, window="uniform7")
    assert got_psnr.shape == (3,) and got_psnr.dtype == torch.float64
    for i, (a, b) in enumerate(pairs):
        a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        assert float(got_psnr[i]) == pytest.approx(sk_psnr(b32, a32, data_range=1.0), abs=1e-4)
        assert float(got_ssim[i]) == pytest.approx(sk_ssim_default(a32, b32, 1.0), abs=1e-4)
    assert got_psnr[0] > got_psnr[1] > got_psnr[2]


def test_identity_and_errors() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.isinf(psnr(x, x, data_range=1.0)).all()
    assert torch.allclose(ssim(x, x, data_range=1.0), torch.ones(2, dtype=torch.float64))
    assert float(mae(x, x).abs().max()) == 0.0
    with pytest.raises(UsageError):
        psnr(x, x[:, :, :8], data_range=1.0)
    with pytest.raises(UsageError):
        ssim(x[..., :8, :8], x[..., :8, :8], data_range=1.0)  # smaller than 11x11
    with pytest.raises(UsageError):
        ssim(x, x, data_range=1.0, window="box5")
    with pytest.raises(UsageError):
        psnr(x[0], x[0], data_range=1.0)
    with pytest.raises(UsageError):
        psnr(x, x, data_range=0.0)


def _real_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    import cv2

    blur = sorted((REAL / "blur").glob("*.png"))[:n]
    out = []
    for b in blur:
        s = REAL / "sharp" / b.name
        # below the burned-in label (rows < 72); a 300 x 400 window keeps skimage fast
        a = cv2.imread(str(b), cv2.IMREAD_UNCHANGED)[72:372, 200:600, ::-1]
        g = cv2.imread(str(s), cv2.IMREAD_UNCHANGED)[72:372, 200:600, ::-1]
        out.append((a.astype(np.float64) / 255.0, g.astype(np.float64) / 255.0))
    return out


@pytest.mark.parametrize("name", ["coffee_defocus_16bit.tif", "canyon_defocus.jpg"])
def test_real_photos_match_skimage_both_ssim_conventions(name: str) -> None:
    """Real photo content from sample_images/ (always present), against a blurred copy of itself."""
    import cv2

    from gkm_cli.images import read_image

    photo = read_image(REPO / "sample_images" / name).pixels[:240, :320].astype(np.float64)
    blurred = cv2.GaussianBlur(photo, (0, 0), 2.0)
    p, g = nchw(blurred), nchw(photo)
    assert float(psnr(p, g, data_range=1.0)[0]) == pytest.approx(sk_psnr(photo, blurred, data_range=1.0), abs=1e-4)
    assert float(ssim(p, g, data_range=1.0, window="gaussian11")[0]) == pytest.approx(
        sk_ssim_gauss(blurred, photo, 1.0), abs=1e-4
    )
    assert float(ssim(p, g, data_range=1.0, window="uniform7")[0]) == pytest.approx(
        sk_ssim_default(blurred, photo, 1.0), abs=1e-4
    )


@pytest.mark.skipif(not (REAL / "blur").is_dir(), reason="shared/data/real_pairs_dev not present")
def test_real_pairs_match_skimage_both_ssim_conventions() -> None:
    for blur, sharp in _real_pairs(2):
        # 8-bit data: the uint8 scale (data_range 255) and [0,1] scale must agree with skimage alike
        p, g = nchw(blur), nchw(sharp)
        assert float(psnr(p, g, data_range=1.0)[0]) == pytest.approx(sk_psnr(sharp, blur, data_range=1.0), abs=1e-4)
        assert float(ssim(p, g, data_range=1.0, window="gaussian11")[0]) == pytest.approx(
            sk_ssim_gauss(blur, sharp, 1.0), abs=1e-4
        )
        assert float(ssim(p, g, data_range=1.0, window="uniform7")[0]) == pytest.approx(
            sk_ssim_default(blur, sharp, 1.0), abs=1e-4
        )
        b8 = np.round(blur * 255).astype(np.uint8)
        s8 = np.round(sharp * 255).astype(np.uint8)
        assert float(psnr(nchw(b8).double(), nchw(s8).double(), data_range=255.0)[0]) == pytest.approx(
            sk_psnr(s8, b8), abs=1e-4
        )


# ------------------------------------------------------------------ conventions


def test_quantise_matches_numpy_rounding_and_is_idempotent() -> None:
    x = torch.linspace(-0.1, 1.1, 2001, dtype=torch.float64).view(1, 1, 1, -1)
    q8 = quantise(x, 8)
    ref = np.round(np.clip(x.numpy(), 0, 1) * 255) / 255
    assert np.array_equal(q8.numpy(), ref)
    assert torch.equal(quantise(q8, 8), q8)
    q16 = quantise(x, 16)
    assert torch.equal(quantise(q8, 16), q8)  # the 8-bit grid lies on the 16-bit grid
    assert float((q16 - x.clamp(0, 1)).abs().max()) <= 0.5 / 65535 + 1e-12


def test_rgb_to_y_matches_skimage_bt601() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((9, 11, 3))
    ours = rgb_to_y(nchw(img))[0, 0].numpy() * 255.0
    assert np.allclose(ours, rgb2ycbcr(img)[..., 0], atol=1e-9)


def test_crop_border_and_top() -> None:
    x = torch.arange(100.0).view(1, 1, 10, 10)
    c = crop(x, border=2, top=3)
    assert c.shape == (1, 1, 3, 6)
    assert float(c[0, 0, 0, 0]) == 52.0  # row 2 + 3, column 2
    with pytest.raises(UsageError):
        crop(x, border=5)


def test_colour_align_is_the_per_channel_least_squares_fit() -> None:
    rng = np.random.default_rng(11)
    gt = rng.random((24, 30, 3))
    x = np.clip(
        gt * np.array([0.8, 1.1, 0.9]) + np.array([0.05, -0.02, 0.03]) + 0.05 * rng.standard_normal(gt.shape), 0, 1
    )
    aligned = colour_align(nchw(x), nchw(gt))[0].numpy().transpose(1, 2, 0)
    for c in range(3):
        a, b = np.polyfit(x[..., c].ravel(), gt[..., c].ravel(), 1)
        assert np.allclose(aligned[..., c], a * x[..., c] + b, atol=1e-9)
    # exact affine distortions are fully removed
    exact = colour_align(nchw(0.7 * gt + 0.1), nchw(gt))
    assert float((exact - nchw(gt)).abs().max()) < 1e-9
    # a constant channel maps to the reference mean
    flat = colour_align(torch.zeros(1, 1, 4, 4, dtype=torch.float64), nchw(gt[:4, :4, :1]))
    assert torch.allclose(flat, torch.full_like(flat, gt[:4, :4, 0].mean()))


# ------------------------------------------------------------------ protocols


def test_builtin_protocols_and_overrides() -> None:
    assert set(PROTOCOLS) == {"dpdd16", "dpdd8", "gkmnet", "default"}
    g = get_protocol("gkmnet")
    assert (g.bit_depth, g.round_prediction, g.ssim_window) == (8, True, "gaussian11")
    assert get_protocol("dpdd8").ssim_window == "uniform7" and not get_protocol("dpdd8").round_prediction
    assert get_protocol("dpdd16").bit_depth == 16 and get_protocol("default").bit_depth is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.crop_border = 4  # type: ignore[misc]
    h = g.with_overrides(crop_border=4, y_channel=True, bit_depth=8)
    assert h.overrides == ("crop_border", "y_channel") and h.name == "gkmnet"
    assert g.with_overrides(bit_depth=8) is g
    d = h.as_dict()
    assert d["crop_border"] == 4 and d["bit_depth"] == 8 and "lpips" in d
    assert "gkmnet*" in h.summary()
    with pytest.raises(UsageError):
        get_protocol("nope")
    with pytest.raises(UsageError):
        g.with_overrides(sharpen=True)
    with pytest.raises(UsageError):
        g.with_overrides(bit_depth=12)


def test_gkmnet_protocol_equals_skimage_on_rounded_uint8() -> None:
    rng = np.random.default_rng(5)
    pred, gt = random_pair(rng, 40, 44)
    gt8 = np.round(gt * 255).astype(np.uint8)
    pred = pred + 0.003  # not on the 8-bit grid
    p_m, g_m, _, _ = prepare(nchw(pred), nchw(gt8 / 255.0), get_protocol("gkmnet"))
    pred8 = np.clip(np.round(pred * 255), 0, 255).astype(np.uint8)
    assert float(psnr(p_m, g_m, data_range=1.0)[0]) == pytest.approx(sk_psnr(gt8, pred8, data_range=255), abs=1e-4)
    assert float(ssim(p_m, g_m, data_range=1.0)[0]) == pytest.approx(
        sk_ssim_gauss(pred8.astype(np.float64), gt8.astype(np.float64), 255.0), abs=1e-4
    )


def test_dpdd8_protocol_keeps_prediction_precision_and_quantises_gt() -> None:
    rng = np.random.default_rng(6)
    pred, gt = random_pair(rng, 32, 32)
    proto = get_protocol("dpdd8")
    p_m, g_m, _, _ = prepare(nchw(pred + 0.3), nchw(gt), proto)
    assert float(p_m.max()) <= 1.0  # clamped
    assert not torch.equal(p_m, quantise(p_m, 8))  # not rounded
    assert torch.equal(g_m, quantise(nchw(gt), 8))
    assert float(ssim(p_m, g_m, data_range=1.0, window=proto.ssim_window)[0]) == pytest.approx(
        sk_ssim_default(np.clip(pred + 0.3, 0, 1), np.round(gt * 255) / 255, 1.0), abs=1e-4
    )


def test_prepare_y_channel_and_native_rounding() -> None:
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    proto = get_protocol("default").with_overrides(y_channel=True, crop_border=2, round_prediction=True)
    p_m, _g_m, p_rgb, g_rgb = prepare(x, x, proto, gt_bits=16)
    assert p_m.shape == (1, 1, 16, 16) and p_rgb.shape == (1, 3, 16, 16)
    assert torch.equal(p_rgb, quantise(x, 16)[..., 2:-2, 2:-2])
    assert g_rgb.shape == p_rgb.shape


# ------------------------------------------------------------------ LPIPS


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return load_lpips()


def test_lpips_pinned_value(net: torch.nn.Module) -> None:
    x, y = check_pair()
    assert float(lpips(x, y, net=net)[0]) == pytest.approx(PINNED_LPIPS, abs=1e-4)


def test_lpips_wrong_kernel_layout_changes_the_value(net: torch.nn.Module) -> None:
    x, y = check_pair()
    swapped = load_lpips()
    with torch.no_grad():
        swapped.conv1.weight.copy_(net.conv1.weight.transpose(2, 3))  # H and W exchanged
    assert abs(float(lpips(x, y, net=swapped)[0]) - PINNED_LPIPS) > 1e-2


def test_lpips_properties(net: torch.nn.Module) -> None:
    x, y = check_pair(96, 2.0)
    assert float(lpips(x, x, net=net)[0]) == pytest.approx(0.0, abs=1e-7)
    d_xy = float(lpips(x, y, net=net)[0])
    d_yx = float(lpips(y, x, net=net)[0])
    assert d_xy == pytest.approx(d_yx, abs=1e-6)
    values = [float(lpips(*check_pair(96, s), net=net)[0]) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in itertools.pairwise(values)), values
    # batched = per image; inputs already in [-1,1] give the same as [0,1] mapped
    batch = lpips(torch.cat([x, x]), torch.cat([y, x]), net=net)
    assert batch.shape == (2,) and float(batch[0]) == pytest.approx(d_xy, abs=1e-6)
    assert float(lpips(x * 2 - 1, y * 2 - 1, net=net, inputs_in_01=False)[0]) == pytest.approx(d_xy, abs=1e-6)
    gray = lpips(x[:, :1], y[:, :1], net=net)
    assert gray.shape == (1,) and float(gray[0]) > 0
    with pytest.raises(UsageError):
        lpips(x[..., :16, :16], y[..., :16, :16], net=net)


def test_lpips_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        load_lpips(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError):
        load_lpips(bad)
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(ModelError):
        load_lpips(wrong)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(net: torch.nn.Module) -> None:
    x, y = check_pair(96, 1.0)
    for fn in (lambda a, b: psnr(a, b, data_range=1.0), lambda a, b: ssim(a, b, data_range=1.0, window="uniform7")):
        assert float(fn(x.cuda(), y.cuda())[0]) == pytest.approx(float(fn(x, y)[0]), abs=1e-6)
    gpu = load_lpips(device="cuda")
    assert float(lpips(x.cuda(), y.cuda(), net=gpu)[0]) == pytest.approx(float(lpips(x, y, net=net)[0]), abs=1e-4)


def test_converter_unpickler_and_writer(tmp_path: Path) -> None:
    import io
    import pickle

    import convert_lpips_weights as conv  # scripts/ is on the test path (pyproject: pytest pythonpath)

    arrays = {"AlexNet_0": {"Conv_0": {"bias": np.arange(3, dtype=np.float32)}}}
    data = pickle.dumps(arrays, protocol=3)
    loaded = conv.RestrictedUnpickler(io.BytesIO(data), conv.NUMPY_GLOBALS).load()  # the package's unpickler
    assert np.array_equal(loaded["AlexNet_0"]["Conv_0"]["bias"], np.arange(3, dtype=np.float32))
    with pytest.raises(pickle.UnpicklingError):
        conv.RestrictedUnpickler(io.BytesIO(pickle.dumps(dataclasses.replace)), conv.NUMPY_GLOBALS).load()

    from safetensors.torch import load_file

    tensors = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(5)}
    meta = {"z": "1", "source": "test", "format": "pt"}
    conv.save_safetensors(tensors, meta, tmp_path / "x.safetensors")
    conv.save_safetensors(
        dict(reversed(list(tensors.items()))), dict(reversed(list(meta.items()))), tmp_path / "y.safetensors"
    )
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    back = load_file(str(tmp_path / "x.safetensors"))
    assert torch.equal(back["b"], tensors["b"]) and torch.equal(back["a"], tensors["a"])
