"""Dataset layouts, photo lists, holdout split and the torch training datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gkm_cli.data.datasets import (
    PairPatchDataset,
    SynthPatchDataset,
    holdout_key,
    list_sharp_photos,
    split_holdout,
    worker_init_fn,
)
from gkm_cli.data.layouts import Pair, detect_layout, list_pairs
from gkm_cli.data.synth import SynthConfig
from gkm_cli.errors import DataError

QUIET = SynthConfig(noise_prob=0.0, jpeg_prob=0.0)


def _png(path: Path, pixels: np.ndarray) -> Path:
    """Write an RGB (H x W x 3) or grey (H x W) uint8/uint16 array as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    assert cv2.imwrite(str(path), np.ascontiguousarray(arr))
    return path


def _tiny(path: Path, value: int = 100) -> Path:
    return _png(path, np.full((6, 6, 3), value, np.uint8))


def _texture(h: int, w: int, seed: int, dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 1.0)
    img = (img - img.min()) / (img.max() - img.min())
    top = np.iinfo(dtype).max
    return np.rint(img * top).astype(dtype)


# ----------------------------------------------------------------------------- layouts


def test_dpdd_layout_and_split(tmp_path: Path) -> None:
    for split in ("train_c", "test_c"):
        for name in ("1P0A1", "1P0A2"):
            _tiny(tmp_path / split / "source" / f"{split}_{name}.png")
            _tiny(tmp_path / split / "target" / f"{split}_{name}.png")
    layout = detect_layout(tmp_path)
    assert layout.name == "dpdd"
    assert layout.splits == ("train_c", "test_c")
    assert len(list_pairs(tmp_path)) == 4
    test = list_pairs(tmp_path, "test_c")
    assert [p.split for p in test] == ["test_c", "test_c"]
    assert all(p.blur.parent.name == "source" and p.sharp.parent.name == "target" for p in test)
    assert all(p.blur.name == p.sharp.name for p in test)
    with pytest.raises(DataError, match="val_c"):
        list_pairs(tmp_path, "val_c")


def test_lfdof_layout_many_inputs_share_one_ground_truth(tmp_path: Path) -> None:
    for k in (1, 2, 3):
        _tiny(tmp_path / "test_data" / "input" / f"scene07_{k}.png")
    _tiny(tmp_path / "test_data" / "ground_truth" / "scene07.png")
    _tiny(tmp_path / "test_data" / "input" / "scene08" / "a.png")  # per-scene folder
    _tiny(tmp_path / "test_data" / "ground_truth" / "scene08.png")
    layout = detect_layout(tmp_path)
    assert (layout.name, layout.splits) == ("lfdof", ("test_data",))
    pairs = list_pairs(tmp_path)
    assert len(pairs) == 4 and not pairs.missing
    assert {p.sharp.name for p in pairs if p.name.startswith("scene07")} == {"scene07.png"}
    assert next(p for p in pairs if p.name == "scene08/a").sharp.name == "scene08.png"


def test_realdof_layout(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _tiny(tmp_path / "source" / f"{name}.png")
        _tiny(tmp_path / "target" / f"{name}.png")
    layout = detect_layout(tmp_path)
    assert (layout.name, layout.splits) == ("realdof", ())
    assert [p.name for p in list_pairs(tmp_path)] == ["a", "b"]


@pytest.mark.parametrize(("blur_dir", "gt_dir"), [("input", "GT"), ("blur", "gt")])
def test_rtf_layout_with_role_suffixes(tmp_path: Path, blur_dir: str, gt_dir: str) -> None:
    _tiny(tmp_path / blur_dir / "scene1_blur.png")
    _tiny(tmp_path / gt_dir / "scene1_gt.png")
    _tiny(tmp_path / blur_dir / "scene2.png")
    _tiny(tmp_path / gt_dir / "scene2.png")
    assert detect_layout(tmp_path).name == "rtf"
    pairs = list_pairs(tmp_path)
    assert {(p.blur.name, p.sharp.name) for p in pairs} == {
        ("scene1_blur.png", "scene1_gt.png"),
        ("scene2.png", "scene2.png"),
    }


def test_generic_pairs_layout_and_non_images_ignored(tmp_path: Path) -> None:
    _tiny(tmp_path / "blur" / "x.png")
    _tiny(tmp_path / "sharp" / "x.png")
    (tmp_path / "blur" / "notes.txt").write_text("not an image")
    _tiny(tmp_path / "blur" / ".hidden.png")
    layout = detect_layout(tmp_path)
    assert (layout.name, layout.splits) == ("pairs", ())
    pairs = list_pairs(tmp_path)
    assert pairs == [Pair("x", tmp_path / "blur" / "x.png", tmp_path / "sharp" / "x.png")]


def test_unknown_layout_names_folder_and_known_layouts(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError) as err:
        detect_layout(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "photos/" in msg
    for name in ("dpdd", "lfdof", "realdof", "rtf", "pairs"):
        assert name in msg
    with pytest.raises(DataError, match="not a folder"):
        detect_layout(tmp_path / "nope")


def test_missing_partners_are_reported_not_dropped(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _tiny(tmp_path / "blur" / f"{name}.png")
    for name in ("a", "c"):
        _tiny(tmp_path / "sharp" / f"{name}.png")
    with pytest.warns(UserWarning, match=r"b\.png") as rec:
        pairs = list_pairs(tmp_path)
    assert "c.png" in str(rec[0].message)
    assert [p.name for p in pairs] == ["a"]
    assert {(m.role, m.path.name) for m in pairs.missing} == {("blur", "b.png"), ("sharp", "c.png")}
    with pytest.raises(DataError, match=r"b\.png"):
        list_pairs(tmp_path, strict=True)


def test_no_pairs_at_all_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "blur").mkdir()
    (tmp_path / "sharp").mkdir()
    with pytest.raises(DataError, match="no image pairs"):
        list_pairs(tmp_path)


# ----------------------------------------------------------------------------- photos, holdout


def test_list_sharp_photos_skips_evaluation_data_and_hidden(tmp_path: Path) -> None:
    _tiny(tmp_path / "sharp" / "a.png")
    _tiny(tmp_path / "sharp" / "deep" / "b.jpg")
    _tiny(tmp_path / "real_pairs_dev" / "sharp" / "c.png")
    _tiny(tmp_path / ".cache" / "d.png")
    (tmp_path / "sharp" / "depth.npz").write_bytes(b"")
    found = list_sharp_photos(tmp_path)
    assert [p.name for p in found] == ["a.png", "b.jpg"]
    with pytest.raises(DataError):
        list_sharp_photos(tmp_path / "real_pairs_dev" / "missing")


def test_split_holdout_is_deterministic_disjoint_and_stable() -> None:
    names = [Path(f"/x/photo_{i:02d}.jpg") for i in range(40)] + [Path("/x/moto_left.png"), Path("/x/moto_right.png")]
    train, val = split_holdout(names, 0.25, seed=3)
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(names)
    assert 2 <= len(val) <= 25
    assert split_holdout(list(reversed(names)), 0.25, seed=3)[1] == val[::-1]  # order-free decision
    # Adding photos never moves an existing one across the split.
    more = names + [Path(f"/y/new_{i}.png") for i in range(10)]
    train2, val2 = split_holdout(more, 0.25, seed=3)
    assert set(val) <= set(val2) and set(train) <= set(train2)
    # Stereo views stay together.
    assert holdout_key(names[-1]) == holdout_key(names[-2])
    assert (names[-1] in val) == (names[-2] in val)
    # Another seed gives another split; a tiny set still gets one validation photo.
    assert set(split_holdout(names, 0.25, seed=4)[1]) != set(val)
    assert len(split_holdout(names[:3], 0.01, seed=0)[1]) == 1
    assert split_holdout(names, 0.0)[1] == []


# ----------------------------------------------------------------------------- PairPatchDataset


def test_pair_patches_keep_16_bit_and_share_the_crop(tmp_path: Path) -> None:
    img = _texture(40, 50, 0, np.uint16)
    _png(tmp_path / "blur" / "p.png", img)
    _png(tmp_path / "sharp" / "p.png", img)
    ds = PairPatchDataset(list_pairs(tmp_path), patch=24, augment=True, seed=5)
    item = ds[0]
    assert set(item) == {"blur", "sharp"}
    assert item["blur"].shape == (3, 24, 24) and item["blur"].dtype == torch.float32
    assert torch.equal(item["blur"], item["sharp"])  # same crop and augmentation on both
    codes = item["sharp"].numpy() * 65535.0
    assert np.allclose(codes, np.rint(codes), atol=1e-2)  # exact 16-bit codes
    assert not np.allclose(codes / 257.0, np.rint(codes / 257.0), atol=1e-2)  # not 8-bit values
    # The crop really is a crop of the file (up to flips and rotations).
    crop = item["sharp"].numpy().transpose(1, 2, 0)
    full = img.astype(np.float32) / 65535.0
    variants = [np.rot90(v, k) for v in (crop, crop[:, ::-1]) for k in range(4)]
    hits = [
        (y, x)
        for v in variants
        for y in range(40 - 23)
        for x in range(50 - 23)
        if np.array_equal(full[y : y + 24, x : x + 24], v)
    ]
    assert hits


def test_pair_dataset_determinism_epochs_grey_and_small_images(tmp_path: Path) -> None:
    _png(tmp_path / "blur" / "g.png", _texture(20, 30, 1)[..., 0])  # grey, smaller than patch
    _png(tmp_path / "sharp" / "g.png", _texture(20, 30, 2)[..., 0])
    pairs = list_pairs(tmp_path)
    a = PairPatchDataset(pairs, patch=32, seed=1)
    b = PairPatchDataset(pairs, patch=32, seed=1)
    x, y = a[0], b[0]
    assert x["blur"].shape == (3, 32, 32)
    assert torch.equal(x["blur"][0], x["blur"][2])  # grey -> 3 equal channels
    assert torch.equal(x["blur"], y["blur"]) and torch.equal(x["sharp"], y["sharp"])
    full = PairPatchDataset(pairs, patch=None, augment=False)[0]
    assert full["blur"].shape == (3, 20, 30)


def test_pair_dataset_rejects_mismatched_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "blur" / "m.png", _texture(20, 30, 1))
    _png(tmp_path / "sharp" / "m.png", _texture(22, 30, 1))
    with pytest.raises(DataError, match="m"):
        PairPatchDataset(list_pairs(tmp_path), patch=16)[0]


# ----------------------------------------------------------------------------- SynthPatchDataset


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [
        _png(tmp_path / "sharp" / "p0.png", _texture(60, 80, 3)),
        _png(tmp_path / "sharp" / "p1.png", _texture(70, 50, 4)[..., 1]),  # grey
    ]


def test_synth_dataset_shapes_and_determinism(photos: list[Path]) -> None:
    kw = dict(patch=32, synth_config=QUIET, length=6, seed=11)
    a = SynthPatchDataset(photos, **kw)
    b = SynthPatchDataset(photos, preload=False, **kw)
    for i in (0, 3, 5):
        x, y = a[i], b[i]
        assert set(x) == {"blur", "sharp"}
        for key in ("blur", "sharp"):
            assert x[key].shape == (3, 32, 32) and x[key].dtype == torch.float32
            assert torch.isfinite(x[key]).all() and float(x[key].min()) >= 0.0 and float(x[key].max()) <= 1.0
            assert torch.equal(x[key], y[key])
    assert not torch.equal(a[0]["sharp"], a[1]["sharp"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["sharp"], b[0]["sharp"])
    with pytest.raises(IndexError):
        a[6]


def test_synth_dataset_batches_do_not_depend_on_workers(photos: list[Path]) -> None:
    ds = SynthPatchDataset(photos, patch=24, synth_config=QUIET, length=4, seed=2)
    one = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    two = next(iter(DataLoader(ds, batch_size=4, num_workers=2, worker_init_fn=worker_init_fn)))
    assert torch.equal(one["blur"], two["blur"]) and torch.equal(one["sharp"], two["sharp"])


def test_synth_dataset_dead_leaves_only_and_coc(tmp_path: Path) -> None:
    ds = SynthPatchDataset([], patch=32, synth_config=SynthConfig(in_focus_prob=0.0), length=2, return_coc=True)
    item = ds[0]
    assert item["coc"].shape == (1, 32, 32) and float(item["coc"].max()) > 0
    with pytest.raises(DataError):
        SynthPatchDataset([], include_dead_leaves=False)


def test_synth_dataset_uses_depth_sidecar(tmp_path: Path) -> None:
    img = _png(tmp_path / "scene_left.png", _texture(40, 40, 9))
    disp = np.where(np.arange(40)[:, None] < 20, 10.0, 50.0) * np.ones((40, 40))
    disp[0, 0] = np.inf
    np.save(tmp_path / "scene_disp.npy", disp.astype(np.float32))
    cfg = SynthConfig(noise_prob=0.0, jpeg_prob=0.0, in_focus_prob=0.0, focus_on_content_prob=1.0)
    ds = SynthPatchDataset(
        [img],
        patch=40,
        synth_config=cfg,
        length=8,
        include_dead_leaves=False,
        scale_range=(1.0, 1.0),
        augment=False,
        return_coc=True,
        color_jitter=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cocs = [ds[i]["coc"][0].numpy() for i in range(8)]
    # Two depth planes -> the CoC map takes exactly two values, split at row 20, in every sample.
    for c in cocs:
        assert len(np.unique(c)) <= 2
        assert np.all(c[:20] == c[0, 5]) and np.all(c[20:] == c[39, 5])
    assert any(c[0, 5] != c[39, 5] for c in cocs)
