"""Gaussian banks and the three ways of convolving with them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gkm_cli.ops.gaussian import gaussian_conv, gaussian_profile, ggkm_bank, gkm_bank

BANKS = {"gkm": gkm_bank(), "ggkm": ggkm_bank(), "ggkm_small": ggkm_bank(4, 2)}


@pytest.mark.parametrize("name", BANKS)
def test_kernels_sum_to_one_and_are_isotropic(name):
    bank = BANKS[name]
    for k in range(bank.num_kernels):
        k2 = bank.kernel_2d(k)
        assert abs(k2.sum() - 1.0) < 2e-6, (name, k, k2.sum())
        np.testing.assert_allclose(k2, k2.T, atol=1e-12)  # symmetric under swapping axes
        np.testing.assert_allclose(k2, k2[::-1, ::-1], atol=1e-12)  # centred
        # Isotropy: equal values (to 1% of the peak) at lattice points of equal radius.
        c = k2.shape[0] // 2
        for (a, b), (d, e) in (((0, 5), (3, 4)), ((0, 10), (6, 8)), ((1, 7), (5, 5))):
            if c >= max(a, b, d, e):
                assert abs(k2[c + a, c + b] - k2[c + d, c + e]) <= 0.01 * k2.max(), (k, a, b)
        if bank.steps is not None and bank.sigmas[k] >= 1.0:  # untruncated atoms: variance = sigma^2
            r = np.arange(k2.shape[0]) - c
            assert (k2.sum(0) * r**2).sum() == pytest.approx(bank.sigmas[k] ** 2, rel=0.02)


def test_gkm_bank_matches_reference_table():
    bank = gkm_bank()
    assert [len(p) for p in bank.profiles] == [
        3,
        3,
        3,
        5,
        5,
        7,
        7,
        9,
        9,
        11,
        11,
        13,
        13,
        15,
        15,
        17,
        17,
        19,
        19,
        21,
        21,
    ]
    assert bank.sigmas[0] == 0.25 and bank.sigmas[-1] == 5.25
    assert bank.kernel_2d(0)[1, 1] == pytest.approx(0.99866, abs=1e-5)
    assert bank.kernel_2d(20)[10, 10] == pytest.approx(0.00633, abs=1e-5)


def test_ggkm_groups_are_ordered_by_spread():
    bank = ggkm_bank()
    sig = np.array(bank.sigmas).reshape(21, 4)
    assert (np.diff(sig, axis=1) > 0).all() and (sig[1:, 0] > sig[:-1, -1]).all()
    sizes = [len(bank.profiles[g[0]]) for g in bank.groups]
    assert sizes == sorted(sizes) and all(len({len(bank.profiles[k]) for k in g}) == 1 for g in bank.groups)


def test_delta_profile_is_identity():
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    d = torch.from_numpy(np.outer(gaussian_profile(0.0, 5), gaussian_profile(0.0, 5)))[None, None]
    torch.testing.assert_close(F.conv2d(x, d, padding=2), x)


@pytest.mark.parametrize("name", BANKS)
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 1, 16, 9)])
def test_convolution_paths_agree(name, shape):
    bank = BANKS[name]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    ref = gaussian_conv(x, bank, "direct")
    assert ref.shape == (*shape[:2], bank.num_kernels, *shape[2:])
    torch.testing.assert_close(gaussian_conv(x, bank, "separable"), ref, atol=1e-5, rtol=0)
    if bank.steps is not None:
        torch.testing.assert_close(gaussian_conv(x, bank, "cascade"), ref, atol=1e-5, rtol=0)
    else:
        with pytest.raises(ValueError):
            gaussian_conv(x, bank, "cascade")


def test_direct_path_is_a_true_2d_convolution():
    """Independent check: an impulse reproduces each kernel (zero padding, correct centring)."""
    bank = gkm_bank(5)
    x = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    x[0, 0, 7, 7] = 1
    out = gaussian_conv(x, bank, "direct")[0, 0]
    for k in range(bank.num_kernels):
        k2 = torch.from_numpy(bank.kernel_2d(k))
        r = k2.shape[0] // 2
        torch.testing.assert_close(out[k, 7 - r : 8 + r, 7 - r : 8 + r], k2)
        assert out[k].sum().item() == pytest.approx(1.0)


def test_direct_strips_equal_one_call(monkeypatch):
    """Large CPU planes go through the direct path in strips (oneDNN's large-plane cliff);
    the strips must reproduce one zero-padded convolution, borders and strip seams included."""
    import gkm_cli.ops.gaussian as gaussian

    bank = gkm_bank()
    x = torch.rand(2, 3, 61, 47, generator=torch.Generator().manual_seed(3))
    whole = F.conv2d(x.reshape(6, 1, 61, 47), gaussian.dense_kernels(bank), padding=bank.radius)
    calls = []
    real_conv = F.conv2d

    def counting_conv(*args, **kwargs):
        calls.append(args[0].shape[-2])
        return real_conv(*args, **kwargs)

    monkeypatch.setattr(gaussian, "DIRECT_STRIP_PIXELS", 13 * (47 + 2 * bank.radius))
    monkeypatch.setattr(gaussian.F, "conv2d", counting_conv)
    striped = gaussian_conv(x, bank, "direct").reshape(6, bank.num_kernels, 61, 47)
    assert len(calls) == 5 and max(calls) == 13 + 2 * bank.radius  # 61 rows in strips of 13
    torch.testing.assert_close(striped, whole, rtol=0, atol=1e-6)
