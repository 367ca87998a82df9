"""Every fast inference path equals the reference path it replaces (correctness only, no timing)."""

import numpy as np
import pytest
import torch
from torch import nn

import gkm_cli.ops.gaussian as gaussian
from gkm_cli.nets import TINY_OVERRIDES, create_model, list_models
from gkm_cli.nets.blocks import ConvBnRelu, PostActResBlock, ResBlock, TripletAttention, UpBnRelu, fold_bn
from gkm_cli.ops.gaussian import choose_method, fft_length, gaussian_conv, gaussian_group_mix, ggkm_bank, gkm_bank

BANKS = {"gkm": gkm_bank(), "gkm_small": gkm_bank(5), "ggkm": ggkm_bank(), "ggkm_small": ggkm_bank(4, 2)}


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- Gaussian bank ----------------------------------------------------------------------------


def test_fft_length_is_smallest_5_smooth_at_least_n():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in [1, 7, 37, 97, 101, 539, 1307, 4099]:
        m = fft_length(n)
        assert m >= n and smooth(m)
        assert not any(smooth(k) for k in range(n, m))


@pytest.mark.parametrize("length", [16, 45, 90])
def test_axis_spectra_match_numpy_fft_of_zero_phase_kernel(length):
    """Independent check of the analytic spectra: numpy's FFT of the kernel wrapped around 0."""
    bank = gkm_bank(6)
    spectra = gaussian._axis_spectra(bank.profiles, length, length)
    for k, prof in enumerate(bank.profiles):
        wrapped = np.zeros(length)
        r = len(prof) // 2
        for j, v in enumerate(prof):
            wrapped[(j - r) % length] += v
        ref = np.fft.fft(wrapped)
        np.testing.assert_allclose(spectra[k], ref.real, atol=1e-12)
        np.testing.assert_allclose(ref.imag, 0, atol=1e-12)


@pytest.mark.parametrize("name", BANKS)
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 1, 16, 9), (2, 3, 70, 66)])
def test_fft_method_equals_direct(name, shape):
    bank = BANKS[name]
    x = _rand(*shape)
    ref = gaussian_conv(x, bank, "direct")
    out = gaussian_conv(x, bank, "fft")
    assert out.shape == ref.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fft_method_is_exact_in_float64_and_when_chunked(monkeypatch):
    bank = ggkm_bank()
    x = _rand(2, 3, 40, 52, dtype=torch.float64)
    ref = gaussian_conv(x, bank, "direct")
    torch.testing.assert_close(gaussian_conv(x, bank, "fft"), ref, atol=1e-12, rtol=0)
    monkeypatch.setattr(gaussian, "FFT_CHUNK_BYTES", 4096)  # forces many chunks
    torch.testing.assert_close(gaussian_conv(x, bank, "fft"), ref, atol=1e-12, rtol=0)


def test_fft_method_impulse_reproduces_each_kernel_at_the_border():
    """Zero padding, not wrap-around: an impulse next to the edge gives the truncated kernel."""
    bank = gkm_bank(4)
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[0, 0, 0, 1] = 1
    out = gaussian_conv(x, bank, "fft")[0, 0]
    for k in range(bank.num_kernels):
        k2 = torch.from_numpy(bank.kernel_2d(k))
        r = k2.shape[0] // 2
        expected = torch.zeros(12 + 2 * r, 12 + 2 * r, dtype=torch.float64)
        expected[0 : 2 * r + 1, 1 : 2 * r + 2] = k2
        torch.testing.assert_close(out[k], expected[r : r + 12, r : r + 12], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["ggkm", "ggkm_small"])
@pytest.mark.parametrize("method", ["fft", "separable", "direct"])
def test_group_mix_equals_filter_then_mix(name, method):
    bank = BANKS[name]
    p, q = len(bank.groups), len(bank.groups[0])
    x = _rand(2, 3, 45, 38)
    alpha = torch.softmax(torch.randn(2, p, q, generator=torch.Generator().manual_seed(3)), -1)
    atoms = gaussian_conv(x, bank, "direct").view(2, 3, p, q, 45, 38)
    ref = (atoms * alpha[:, None, :, :, None, None]).sum(3)
    out = gaussian_group_mix(x, bank, alpha, method)
    assert out.shape == (2, 3, p, 45, 38)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        gaussian_group_mix(x, bank, alpha[:, :, :1], method)


def test_choose_method_rule():
    dev = torch.device("cpu")
    assert all(choose_method(gkm_bank(), s, s, dev) == "direct" for s in (16, 512, 4096))
    assert choose_method(ggkm_bank(), 32, 32, dev) == "direct"
    assert choose_method(ggkm_bank(), 512, 512, dev) == "fft"
    assert choose_method(ggkm_bank(), 720, 1280, dev) in gaussian.METHODS


# --- blocks -------------------------------------------------------------------------------------


def _randomise_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def _set_fast(module: nn.Module, flag: bool) -> None:
    for m in module.modules():
        if hasattr(type(m), "fast_paths"):
            m.fast_paths = flag


@pytest.mark.parametrize(
    "make, cin",
    [
        (lambda: ConvBnRelu(6, 10, stride=2), 6),
        (lambda: UpBnRelu(6, 4), 6),
        (lambda: PostActResBlock(6), 6),
        (lambda: ResBlock(6), 6),
        (lambda: TripletAttention(), 6),
    ],
)
@pytest.mark.parametrize("train", [False, True])
def test_block_fast_path_equals_reference_with_gradients(make, cin, train):
    torch.manual_seed(0)
    block = make()
    _randomise_bn(block)
    block.train(train)
    x = torch.randn(2, cin, 14, 22)
    outs, grads = [], []
    for fast in (True, False):
        _set_fast(block, fast)
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
        with torch.inference_mode():
            torch.testing.assert_close(block(x), outs[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_fold_bn_matches_conv_then_bn():
    conv, bn = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5).eval()
    _randomise_bn(bn)
    x = torch.randn(1, 4, 9, 9)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-5, rtol=1e-5)
    up, bn2 = nn.ConvTranspose2d(4, 3, 2, stride=2), nn.BatchNorm2d(3).eval()
    _randomise_bn(bn2)
    w, b = fold_bn(up.weight, up.bias, bn2, transposed=True)
    torch.testing.assert_close(nn.functional.conv_transpose2d(x, w, b, stride=2), bn2(up(x)), atol=1e-5, rtol=1e-5)


# --- whole networks -----------------------------------------------------------------------------


def _perturbed(name: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    with torch.no_grad():  # leave the zero/identity-initialised heads, so every term matters;
        for n, p in model.named_parameters():  # the rest keeps its (well-scaled) Xavier init
            if n.startswith(("summation.", "seat.out.")):
                p.add_(0.05 * torch.randn_like(p))
    _randomise_bn(model)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_network_fast_equals_reference(name):
    model = _perturbed(name, **TINY_OVERRIDES[name])
    x = _rand(2, 3, 75, 90)  # finest scale 80 x 96 > 64 x 64: the wide banks take the FFT path
    with torch.inference_mode():
        fast = model(x)
        with model.reference_mode():
            ref = model(x)
    assert model.fast_paths  # restored
    torch.testing.assert_close(fast.image, ref.image, atol=1e-4, rtol=0)
    for a, b in zip(fast.scales, ref.scales):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.spatial_weights, ref.spatial_weights, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gkmnet", "ggkmnet"])
def test_full_size_network_fast_equals_reference(name):
    model = _perturbed(name)
    x = _rand(1, 3, 96, 112)
    with torch.inference_mode():
        fast = model(x).image
        with model.reference_mode():
            ref = model(x).image
    assert ref.abs().max() > 0.01  # a non-trivial output
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["gkmnet", "ggkmnet"])
def test_fast_path_gradients_equal_reference(name):
    model = _perturbed(name, **TINY_OVERRIDES[name]).train()
    x = _rand(1, 3, 64, 80)
    grads = []
    for fast in (True, False):
        model.zero_grad()
        model.set_fast_paths(fast)
        model(x).image.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4, msg=n)


def test_reference_mode_restores_flags_after_an_error():
    model = create_model("gkmnet", **TINY_OVERRIDES["gkmnet"]).eval()
    with pytest.raises(ValueError), model.reference_mode():
        assert not model.fast_paths and model.gaussian_method() == "direct"
        model(torch.rand(1, 4, 16, 16))  # wrong channel count
    assert model.fast_paths and all(m.fast_paths for m in model.modules() if hasattr(type(m), "fast_paths"))


@pytest.mark.parametrize("name", ["gkmnet", "ggkmnet"])
def test_channels_last_and_bf16_autocast_run(name):
    model = _perturbed(name, **TINY_OVERRIDES[name])
    x = _rand(1, 3, 80, 80)
    with torch.inference_mode():
        ref = model(x).image
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last)).image
        torch.testing.assert_close(cl, ref, atol=1e-4, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).image.float()
    assert torch.isfinite(low).all() and (low - ref).abs().mean() < 0.05


def test_nnpack_path_steps_aside_under_torch_compile(monkeypatch):
    """The private NNPACK op has no fake-tensor rule, so torch.compile failed on GKMNet's
    ConvLSTM; while compiling, the fast path must return None (the caller uses F.conv2d)."""
    from gkm_cli.nets.blocks import nnpack_conv2d

    x, w, b = torch.rand(1, 4, 12, 12), torch.rand(8, 4, 5, 5), torch.rand(8)
    with torch.inference_mode():
        eager = nnpack_conv2d(x, w, b, 2)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert nnpack_conv2d(x, w, b, 2) is None
    if eager is not None:  # a build with NNPACK: the fast path agrees with the plain conv
        torch.testing.assert_close(eager, torch.nn.functional.conv2d(x, w, b, padding=2), atol=1e-4, rtol=1e-4)
