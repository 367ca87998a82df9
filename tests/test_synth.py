"""Synthetic defocus: PSFs, thin lens, layered rendering, camera effects, fixed sets on disk."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from gkm_cli.data.synth import (
    APERTURE_KINDS,
    Aperture,
    Lens,
    SynthConfig,
    config_from_dict,
    dead_leaves,
    fill_invalid,
    find_depth_sidecar,
    linear_to_srgb,
    load_inverse_depth,
    psf_kernel,
    random_inv_depth,
    render_defocus,
    srgb_to_linear,
    synthesize,
    thin_lens_coc_scale,
    write_synthetic_set,
)
from gkm_cli.errors import DataError, UsageError
from helpers import psnr

CLEAN = SynthConfig(noise_prob=0.0, jpeg_prob=0.0)
APERTURES = [
    Aperture("disk"),
    Aperture("disk", ring=0.5),
    Aperture("polygon", blades=5, rotation=0.4),
    Aperture("polygon", blades=9, ring=-0.3),
    Aperture("gaussian"),
    Aperture("gengauss", beta=1.2),
    Aperture("gengauss", beta=6.0),
    Aperture("mix", mix=0.4),
]
MOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "sharp" / "skimage" / "motorcycle_disp.npz"


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    """A colourful, high-contrast test image (sRGB float32 [0,1])."""
    img, _ = dead_leaves(h, w, np.random.default_rng(seed), texture_prob=0.5)
    return img


def _grad_energy(img: np.ndarray) -> float:
    g = img.mean(axis=2)
    return float(np.mean(np.diff(g, axis=0) ** 2) + np.mean(np.diff(g, axis=1) ** 2))


# ----------------------------------------------------------------------------- PSFs and lens


@pytest.mark.parametrize("aperture", APERTURES, ids=lambda a: f"{a.kind}-{a.blades}-{a.ring}")
def test_psf_kernels_are_normalised_nonnegative_and_grow(aperture: Aperture) -> None:
    spreads = []
    for r in (0.0, 0.3, 1.0, 2.5, 5.5, 12.0, 30.0):
        k = psf_kernel(r, aperture)
        assert k.dtype == np.float32 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert np.isfinite(k).all() and k.min() >= 0.0
        assert abs(float(k.sum()) - 1.0) < 1e-5
        c = k.shape[0] // 2
        y, x = np.mgrid[-c : c + 1, -c : c + 1]
        spreads.append(float(np.sum(k * (x**2 + y**2))))
    assert psf_kernel(0.0, aperture).shape == (1, 1)
    assert all(b > a for a, b in itertools.pairwise(spreads[1:]))
    # Second moment of a disk of radius r is r^2 / 2: every kind stays near it (ring aside).
    if aperture.ring == 0:
        assert 0.75 < spreads[-2] / (12.0**2 / 2) < 1.3


def test_psf_shapes_differ_from_a_gaussian() -> None:
    disk, poly, gauss = (psf_kernel(8.0, Aperture(k, blades=5)) for k in ("disk", "polygon", "gaussian"))
    # A disk is flat inside with a sharp rim; a Gaussian peaks in the middle.
    assert disk[disk.shape[0] // 2, disk.shape[0] // 2] == pytest.approx(
        float(disk[disk.shape[0] // 2, disk.shape[0] // 2 + 5])
    )
    assert gauss[gauss.shape[0] // 2, gauss.shape[0] // 2] > 2 * gauss[gauss.shape[0] // 2, gauss.shape[0] // 2 + 5]
    assert disk.shape == poly.shape and not np.allclose(disk, poly, atol=1e-4)
    assert not np.allclose(poly, poly.T, atol=1e-4)  # five blades: not mirror symmetric on the diagonal


def test_thin_lens_scale_matches_the_formula() -> None:
    # 50 mm f/2 focused at 2 m, 5 um pixels: a point at infinity has CoC diameter
    # A f / (S1 - f) = 25 * 50 / 1950 mm = 0.641 mm, radius 64.1 px; |1/S1 - 0| = 0.5 /m.
    scale = thin_lens_coc_scale(50.0, 2.0, 2.0, 5.0)
    assert scale * 0.5 == pytest.approx(0.5 * 25 * 50 / 1950 / 0.005, rel=1e-6)
    with pytest.raises(UsageError):
        thin_lens_coc_scale(50.0, 2.0, 0.01, 5.0)


def test_srgb_round_trip() -> None:
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(x)) - x).max() < 1e-5
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-4)


# ----------------------------------------------------------------------------- rendering


def test_in_focus_depth_is_identity() -> None:
    img = _texture(64, 64, 0)
    u, _ = random_inv_depth(64, 64, np.random.default_rng(0), "layers")
    # Focus equals depth everywhere: a flat scene focused on itself.
    out, coc = render_defocus(img, np.full((64, 64), 0.7, np.float32), Lens(0.7, 50.0, Aperture("disk")))
    assert psnr(out, img) > 60 and coc.max() == 0
    # A layered scene with a lens so weak that every CoC stays below a quarter pixel.
    out, coc = render_defocus(img, u, Lens(0.5, 0.4, Aperture("polygon")))
    assert psnr(out, img) > 40 and coc.max() == 0
    # Through synthesize: an in-focus sample without noise or JPEG.
    s = synthesize(img, np.random.default_rng(1), replace(CLEAN, in_focus_prob=1.0), u)
    assert s.params is not None and s.params.in_focus
    assert psnr(s.blurred, s.sharp) > 40 and np.array_equal(s.sharp, img)


@pytest.mark.parametrize(
    "aperture", [Aperture("disk"), Aperture("polygon", blades=6), Aperture("gaussian")], ids=lambda a: a.kind
)
def test_blur_grows_with_distance_from_focus(aperture: Aperture) -> None:
    img = _texture(72, 72, 1)
    lens = Lens(focus=1.0, coc_scale=10.0, aperture=aperture)
    energies, psnrs, radii = [], [], []
    for dist in (0.0, 0.1, 0.25, 0.5, 0.9, 1.2):  # fronto-parallel planes behind the focus plane
        plane = np.full((72, 72), 1.0 - dist, np.float32)
        out, coc = render_defocus(img, plane, lens)
        energies.append(_grad_energy(out))
        psnrs.append(psnr(out, img))
        radii.append(float(coc.mean()))
    assert radii == sorted(radii) and radii[0] == 0 and radii[-1] == 12.0  # clipped at max_radius
    assert all(b < a for a, b in itertools.pairwise(energies[:-1]))
    assert all(b < a for a, b in itertools.pairwise(psnrs[:-1]))
    assert energies[-1] <= energies[-2] * 1.001  # beyond max_radius nothing changes


def test_in_focus_foreground_keeps_its_edge() -> None:
    """A sharp occluder in front of a blurred background: no background colour inside it."""
    h = w = 80
    img = np.zeros((h, w, 3), np.float32)
    img[..., 0] = (np.arange(w) // 4 % 2)[None, :]  # red/blue stripes in the background
    img[..., 2] = 1.0 - img[..., 0]
    fg = np.zeros((h, w), bool)
    fg[20:60, 25:55] = True
    img[fg] = (0.1, 0.9, 0.2)
    depth = np.where(fg, 1.0, 0.0).astype(np.float32)
    out, coc = render_defocus(img, depth, Lens(focus=1.0, coc_scale=9.0, aperture=Aperture("disk")))
    assert np.abs(out[fg] - img[fg]).max() < 1e-5  # every foreground pixel, the edge included
    assert coc[fg].max() == 0 and len(np.unique(coc[~fg])) == 1 and abs(float(coc[0, 0]) - 9.0) < 0.5
    bg = ~cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert out[bg].std(axis=0).max() < 0.5 * img[bg].std(axis=0).max()  # background is blurred
    # The blurred background next to the occluder is not tinted green by it either.
    ring = cv2.dilate(fg.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~fg
    assert out[ring][:, 1].max() < 0.05


def test_blurred_foreground_spills_over_a_sharp_background() -> None:
    h = w = 64
    img = np.zeros((h, w, 3), np.float32)
    img[..., 2] = 1.0
    fg = np.zeros((h, w), bool)
    fg[16:48, 16:48] = True
    img[fg] = (1.0, 1.0, 0.0)
    depth = np.where(fg, 1.0, 0.0).astype(np.float32)
    out, _ = render_defocus(img, depth, Lens(focus=0.0, coc_scale=6.0, aperture=Aperture("disk")))
    far = np.ones((h, w), bool)
    far[8:56, 8:56] = False
    assert np.abs(out[far] - img[far]).max() < 1e-5  # in-focus background untouched far away
    assert out[16:48, 13, 0].min() > 0.05  # the near object's blur covers the background edge


def test_both_blurred_edge_mixes_half_and_half() -> None:
    """Focus between a near and a far plane: on the near object's straight edge half the
    aperture sees each, so linear light is a 50/50 mix (the far layer continues behind the
    near one; without that the near colour would take 2/3)."""
    h, w = 64, 96
    img = np.zeros((h, w, 3), np.float32)
    img[..., 2] = 1.0
    img[:, 48:] = (1.0, 1.0, 0.0)
    depth = np.where(np.arange(w)[None, :] >= 48, 1.0, 0.0) * np.ones((h, 1), np.float32)
    out, coc = render_defocus(img, depth.astype(np.float32), Lens(0.5, 12.0, Aperture("disk")))
    assert np.allclose(coc, coc[0, 0]) and coc[0, 0] > 5
    lin = srgb_to_linear(out)[h // 2]
    edge = 0.5 * (lin[47, 0] + lin[48, 0])  # red = share of the near (yellow) plane
    assert abs(edge - 0.5) < 0.05
    assert lin[30, 0] < 0.02 and lin[66, 0] > 0.98  # beyond one radius: pure colours


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_extreme_inputs_stay_finite(value: float) -> None:
    img = np.full((40, 40, 3), value, np.float32)
    u, _ = random_inv_depth(40, 40, np.random.default_rng(2), "layers")
    for lens in (
        Lens(0.5, 1e6, Aperture("polygon", blades=7)),
        Lens(0.5, 0.0),
        Lens(-3.0, 12.0 / 4.0, Aperture("gengauss", beta=1.2)),
    ):
        out, coc = render_defocus(img, u, lens, max_radius=30.0)
        assert np.isfinite(out).all() and np.isfinite(coc).all()
        assert np.abs(out - value).max() < 1e-5
    noisy = SynthConfig(max_radius=30.0, noise_prob=1.0, jpeg_prob=1.0, in_focus_prob=0.0)
    for seed in range(3):
        s = synthesize(img, np.random.default_rng(seed), noisy)
        assert np.isfinite(s.blurred).all() and s.blurred.min() >= 0 and s.blurred.max() <= 1
        assert np.isfinite(s.coc).all() and s.coc.max() <= 30.0


def test_bad_inputs_raise_typed_errors() -> None:
    img = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(DataError):
        render_defocus(img, np.zeros((8, 9), np.float32), Lens(0, 1))
    with pytest.raises(DataError):
        render_defocus(img, np.full((8, 8), np.nan, np.float32), Lens(0, 1))
    with pytest.raises(UsageError):
        SynthConfig(max_radius=-1)
    with pytest.raises(UsageError):
        SynthConfig(aperture_probs=(("cat", 1.0),))


# ----------------------------------------------------------------------------- camera, brightness


def test_linear_light_blur_conserves_energy() -> None:
    img = _texture(64, 64, 3)
    out, _ = render_defocus(img, np.zeros((64, 64), np.float32), Lens(1.0, 8.0, Aperture("polygon", blades=6)))
    lin_in, lin_out = srgb_to_linear(img).mean((0, 1)), srgb_to_linear(out).mean((0, 1))
    assert np.abs(lin_out - lin_in).max() < 2e-3  # PSFs sum to 1 (borders reflect)
    # In sRGB the concave curve brightens the blurred image: that is what match_mean removes.
    assert (out.mean((0, 1)) - img.mean((0, 1))).mean() > 1.0 / 255


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_samples_are_brightness_neutral(noise: float) -> None:
    cfg = SynthConfig(noise_prob=noise, jpeg_prob=0.0, in_focus_prob=0.0)
    for seed in range(6):
        img = _texture(64, 64, 10 + seed)
        s = synthesize(img, np.random.default_rng(seed), cfg)
        diff = s.blurred.mean((0, 1)) - s.sharp.mean((0, 1))
        assert np.abs(diff).max() < 0.35 / 255, (seed, diff * 255)
        assert s.coc.max() > 0.5


def test_noise_and_jpeg_change_only_the_blurred_image() -> None:
    img = _texture(48, 48, 4)
    base = replace(CLEAN, in_focus_prob=1.0)
    s = synthesize(img, np.random.default_rng(0), replace(base, noise_prob=1.0))
    assert np.array_equal(s.sharp, img) and 25 < psnr(s.blurred, img) < 70
    j = synthesize(img, np.random.default_rng(0), replace(base, jpeg_prob=1.0))
    assert j.params is not None and 60 <= j.params.jpeg_quality <= 95
    assert np.allclose(j.blurred * 255, np.rint(j.blurred * 255), atol=1e-3) and 15 < psnr(j.blurred, img) < 60


def test_synthesis_is_deterministic_for_a_seed() -> None:
    img = _texture(64, 64, 5)
    a = synthesize(img, np.random.default_rng(42))
    b = synthesize(img, np.random.default_rng(42))
    c = synthesize(img, np.random.default_rng(43))
    assert np.array_equal(a.blurred, b.blurred) and np.array_equal(a.coc, b.coc) and a.params == b.params
    assert not np.array_equal(a.blurred, c.blurred)
    d1, u1 = dead_leaves(32, 40, np.random.default_rng(7))
    d2, u2 = dead_leaves(32, 40, np.random.default_rng(7))
    assert np.array_equal(d1, d2) and np.array_equal(u1, u2)


def test_synthesis_is_fast_enough() -> None:
    img = _texture(256, 256, 6)
    synthesize(img, np.random.default_rng(0))  # warm-up (imports)
    t = time.perf_counter()
    for seed in range(4):
        synthesize(img, np.random.default_rng(seed), replace(SynthConfig(), in_focus_prob=0.0))
    assert (time.perf_counter() - t) / 4 < 0.5  # about 0.02-0.06 s on one core


# ----------------------------------------------------------------------------- depth maps, dead leaves


@pytest.mark.parametrize("kind", ["layers", "plane", "constant"])
def test_random_depth_maps(kind: str) -> None:
    u, got = random_inv_depth(50, 70, np.random.default_rng(3), kind)
    assert got == kind and u.shape == (50, 70) and u.dtype == np.float32
    assert np.isfinite(u).all() and u.min() >= 0 and u.max() <= 1


def test_dead_leaves_statistics() -> None:
    img, depth = dead_leaves(96, 96, np.random.default_rng(0))
    assert img.shape == (96, 96, 3) and img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    assert len(np.unique(depth)) > 50  # many occluding discs, each at its own depth
    # Roughly scale-invariant: the power spectrum falls steeply with frequency.
    spec = np.abs(np.fft.fft2(img.mean(axis=2) - img.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(96), np.fft.fftfreq(96)))
    low, high = spec[(f > 0.02) & (f < 0.06)].mean(), spec[(f > 0.2) & (f < 0.3)].mean()
    assert low > 30 * high


def test_fill_invalid_and_sidecars(tmp_path: Path) -> None:
    disp = np.array([[1.0, np.inf, 3.0], [np.inf, np.inf, 3.0]], np.float32)
    filled = fill_invalid(disp)
    assert np.isfinite(filled).all() and filled[0, 1] in (1.0, 3.0) and filled[0, 0] == 1.0
    photo = tmp_path / "cam_left.png"
    photo.write_bytes(b"")
    np.savez(tmp_path / "cam_disp.npz", arr_0=disp)
    side = find_depth_sidecar(photo)
    assert side == tmp_path / "cam_disp.npz"
    assert np.array_equal(load_inverse_depth(side), filled)
    np.save(tmp_path / "x_depth.npy", np.array([[2.0, 0.0], [4.0, 4.0]], np.float32))
    inv = load_inverse_depth(tmp_path / "x_depth.npy")  # depth -> inverse depth, 0 = invalid
    assert inv[0, 0] == pytest.approx(0.5) and np.isfinite(inv).all()


@pytest.mark.skipif(not MOTO.exists(), reason="shared test data not available")
def test_real_disparity_map_renders() -> None:
    u = load_inverse_depth(MOTO)
    assert np.isfinite(u).all() and u.min() > 7.0 and u.max() < 60.0
    crop = u[200:264, 300:364]
    img = _texture(64, 64, 8)
    s = synthesize(img, np.random.default_rng(0), replace(CLEAN, in_focus_prob=0.0), crop)
    assert s.params is not None and s.params.depth_kind == "given" and np.isfinite(s.blurred).all()


# ----------------------------------------------------------------------------- sets on disk


def test_synthetic_set_on_disk_is_16_bit_and_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src16 = np.rint(cv2.GaussianBlur(rng.uniform(0, 1, (48, 56, 3)).astype(np.float32), (0, 0), 1.5) * 65535).astype(
        np.uint16
    )
    src_path = tmp_path / "src16.png"
    assert cv2.imwrite(str(src_path), src16[..., ::-1])
    cfg = replace(SynthConfig(), dead_leaves_fraction=0.0)
    a = write_synthetic_set([src_path], tmp_path / "a", n=3, size=32, seed=7, config=cfg, bits=16)
    write_synthetic_set([src_path], tmp_path / "b", n=3, size=32, seed=7, config=cfg, bits=16)
    write_synthetic_set([src_path], tmp_path / "c", n=3, size=32, seed=8, config=cfg, bits=16)
    meta = json.loads((a / "synth.json").read_text())
    assert meta["seed"] == 7 and meta["bits"] == 16 and len(meta["samples"]) == 3
    assert config_from_dict(meta["config"]) == cfg
    for rec in meta["samples"]:
        name = rec["name"]
        sharp = cv2.imread(str(a / "sharp" / f"{name}.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
        blur = cv2.imread(str(a / "blur" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert sharp.dtype == np.uint16 and blur.dtype == np.uint16 and blur.shape == (32, 32, 3)
        y, x = rec["crop"]
        assert np.array_equal(sharp, src16[y : y + 32, x : x + 32])  # 16-bit codes survive exactly
        coc = np.load(a / "coc" / f"{name}.npy")
        assert coc.shape == (32, 32) and coc.dtype == np.float32
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 1
    assert all((a / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files if f.suffix == ".png")


def test_synthetic_set_8_bit_with_dead_leaves(tmp_path: Path) -> None:
    out = write_synthetic_set([], tmp_path / "dl", n=2, size=(24, 40), seed=1)
    blur = cv2.imread(str(out / "blur" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert blur.dtype == np.uint8 and blur.shape == (24, 40, 3)
    meta = json.loads((out / "synth.json").read_text())
    assert {r["source"] for r in meta["samples"]} == {"dead_leaves"}
    with pytest.raises(DataError):
        write_synthetic_set(
            [], tmp_path / "none", n=1, size=16, seed=0, config=replace(SynthConfig(), dead_leaves_fraction=0.0)
        )
    with pytest.raises(UsageError):
        write_synthetic_set([], tmp_path / "bad", n=1, size=16, seed=0, bits=12)  # type: ignore[arg-type]


def test_aperture_kinds_listed() -> None:
    assert set(APERTURE_KINDS) == {a.kind for a in APERTURES}
