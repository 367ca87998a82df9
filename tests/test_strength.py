"""``--strength`` / ``Deblurrer(strength=...)``: S * output + (1 - S) * input, blended in float
before quantisation. Tiny random networks (they change a photo visibly), tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gkm_cli.api import Deblurrer
from gkm_cli.cli import app
from gkm_cli.errors import UsageError
from gkm_cli.images import Image, read_image, write_image
from gkm_cli.nets.checkpoint import load_weights

runner = CliRunner()


def _photo(h: int, w: int, c: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [0.5 + 0.4 * np.sign(np.sin(x / (3 + k) + y / (5 + k))) * np.abs(np.sin(y / 7)) for k in range(c)]
    noise = 0.05 * np.random.default_rng(seed).standard_normal((h, w, c)).astype(np.float32)
    return np.clip(np.stack(planes, -1) + noise, 0, 1).astype(np.float32)


@pytest.mark.parametrize("tile", [None, 32])  # one piece and the tiled path
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_api_zero_is_the_input_one_is_todays_output(weights, dtype, tile):
    top = np.iinfo(dtype).max
    photo = np.rint(_photo(40, 56, 3, 1) * top).astype(dtype)
    d = Deblurrer.from_model(load_weights(weights), device="cpu", tile=tile, tile_overlap=16 if tile else None)
    today = d.deblur(photo)
    assert np.abs(today.astype(np.int64) - photo).max() > 0  # the network changes the photo
    np.testing.assert_array_equal(d.deblur(photo, strength=0.0), photo)
    np.testing.assert_array_equal(d.deblur(photo, strength=1.0), today)
    zero = Deblurrer.from_model(
        load_weights(weights), device="cpu", tile=tile, tile_overlap=16 if tile else None, strength=0.0
    )
    np.testing.assert_array_equal(zero.deblur(photo), photo)
    np.testing.assert_array_equal(zero.deblur(photo[:, :, 0]), photo[:, :, 0])  # gray
    np.testing.assert_array_equal(zero.deblur(photo, strength=1.0), today)  # per call overrides


def test_api_half_is_the_midpoint_in_float(weights):
    photo = _photo(40, 56, 3, 2)
    d = Deblurrer.from_model(load_weights(weights), device="cpu")
    full = d.deblur(photo)
    half = d.deblur(photo, strength=0.5)
    np.testing.assert_allclose(half, 0.5 * full + 0.5 * photo, rtol=0, atol=1e-6)
    assert np.abs(half - photo).max() > 1e-3  # not the input, not the output
    quarter = d.deblur(photo, strength=0.25)
    np.testing.assert_allclose(quarter, 0.25 * full + 0.75 * photo, rtol=0, atol=1e-6)


def test_deblur_image_keeps_the_input_at_zero(weights):
    img = Image(_photo(32, 48, 3, 3), None, np.dtype("uint16"), "png")
    d = Deblurrer.from_model(load_weights(weights), device="cpu")
    out = d.deblur_image(img, strength=0.0)
    np.testing.assert_array_equal(out.pixels, img.pixels)
    assert d.describe()["strength"] == 1.0


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), 2.0])
def test_api_refuses_strength_outside_0_1(weights, bad):
    with pytest.raises(UsageError, match=r"^strength must be in"):  # the library names the setting, not the flag
        Deblurrer.from_model(load_weights(weights), device="cpu", strength=bad)
    d = Deblurrer.from_model(load_weights(weights), device="cpu")
    with pytest.raises(UsageError, match=r"^strength must be in"):
        d.deblur(np.zeros((16, 16, 3), np.uint8), strength=bad)


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_zero_round_trips_8_and_16_bit_files(weights, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "p8.png", Image(_photo(40, 48, 3, 4), None, np.dtype("uint8"), "png"))
    write_image(src / "p16.tif", Image(_photo(40, 48, 3, 5), None, np.dtype("uint16"), "tiff"))
    out = tmp_path / "out"
    result = _invoke("deblur", src, "-o", out, "--weights", weights, "--strength", "0", "--json")
    assert result.exit_code == 0, result.output
    summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    assert summary["strength"] == 0.0  # recorded with the other settings
    for name in ("p8.png", "p16.tif"):
        a, b = read_image(src / name), read_image(out / name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(b.pixels, a.pixels)


def test_cli_strength_is_part_of_the_resume_settings(weights, tmp_path):
    src = tmp_path / "p.png"
    write_image(src, Image(_photo(32, 32, 3, 6), None, np.dtype("uint8"), "png"))
    out = tmp_path / "out"

    def status(*extra: str) -> str:
        result = _invoke("deblur", src, "-o", out, "--weights", weights, "--json", *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.splitlines()[0])["status"]

    assert status("--strength", "0.5") == "ok"
    assert status("--strength", "0.5") == "skipped"  # same settings: done
    assert status() == "ok"  # default strength 1 changes the output: made again
    assert status("--strength", "1") == "skipped"  # 1 is the default


@pytest.mark.parametrize("bad", ["1.5", "-0.2", "nan"])
def test_cli_refuses_strength_outside_0_1(weights, tmp_path, bad):
    src = tmp_path / "p.png"
    write_image(src, Image(_photo(16, 16, 3, 7), None, np.dtype("uint8"), "png"))
    result = _invoke("deblur", src, "-o", tmp_path / "out", "--weights", weights, "--strength", bad)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--strength must be in [0, 1]" in lines[0], result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written
