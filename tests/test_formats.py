"""The optional formats (issue 27): camera RAW (DNG made here with tifffile), HEIC, WebP, AVIF
and EXR, read and written with their metadata; the RAW + JPEG pair rule; one-line errors for
truncated, oversized, non-finite files and for a missing plugin package."""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from format_samples import (
    DATE_TAKEN,
    EXIF_ORIENTED,
    dng_bytes,
    exif_tags,
    exr_bytes,
    hdr_linear,
    heic_bytes,
    huge_grid_heic,
    pillow_bytes,
    write,
)
from gkm_cli.api import Deblurrer
from gkm_cli.cli import app
from gkm_cli.engine.folders import Source, output_suffix, plan_jobs
from gkm_cli.errors import ImageReadError, UsageError
from gkm_cli.evaluation import EvalSettings, evaluate_folders
from gkm_cli.images import Image, decode_image, encode_image, raw_pair_drops, read_image, write_image
from gkm_cli.images.colour import LINEAR_SRGB_ICC, SRGB_ICC, srgb_decode, srgb_encode
from gkm_cli.images.formats import sniff
from helpers import photo, tiny_model

runner = CliRunner()
ORIENTATION, DATE_ORIGINAL = 274, 36867


def one_line_error(exc: pytest.ExceptionInfo[ImageReadError], name: str) -> str:
    text = str(exc.value)
    assert text.startswith(f"{name}: ") and "\n" not in text, text
    return text


# ---- camera RAW ------------------------------------------------------------------------------------


def test_dng_is_developed_upright_16_bit_srgb_with_the_camera_exif(tmp_path):
    img = read_image(write(tmp_path / "shot.dng", dng_bytes(48, 64, orientation=6)))
    assert img.format == "raw" and img.dtype == np.uint16 and img.icc == SRGB_ICC
    assert img.pixels.shape == (64, 48, 3)  # orientation 6 applied: 48 x 64 stored, 64 tall shown
    # The scene's left half is red, its right half blue; rotated 90 degrees clockwise the left
    # edge becomes the top. White balance and colour matrix keep the hues apart.
    top, bottom = img.pixels[:24].mean((0, 1)), img.pixels[-24:].mean((0, 1))
    assert top[0] > 2 * top[2] and bottom[2] > 2 * bottom[0], (top, bottom)
    tags = exif_tags(img.exif)
    assert tags[ORIENTATION] == 1 and tags[DATE_ORIGINAL] == DATE_TAKEN and tags[271].startswith(b"gkm")
    written = decode_image(encode_image(img))  # default output of RAW: a 16-bit TIFF
    assert written.format == "tiff" and written.dtype == np.uint16 and written.icc == SRGB_ICC
    assert np.array_equal(written.pixels, img.pixels)
    assert exif_tags(written.exif)[DATE_ORIGINAL] == DATE_TAKEN and exif_tags(written.exif)[ORIENTATION] == 1


def test_linear_raw_round_trips_exactly_and_is_tagged_linear(tmp_path):
    path = write(tmp_path / "shot.dng", dng_bytes(orientation=1))
    lin = read_image(path, raw_linear=True)
    srgb = read_image(path)
    assert lin.linear is not None and np.array_equal(lin.pixels, srgb_encode(lin.linear))
    # LibRaw's sRGB curve and ours agree: the network sees (nearly) the same values either way.
    assert np.abs(lin.pixels - srgb.pixels).max() < 2 / 255
    written = decode_image(encode_image(lin))
    assert written.icc == LINEAR_SRGB_ICC and np.array_equal(written.pixels, lin.linear)
    as_png = decode_image(encode_image(lin, "png"))  # display formats get the sRGB values
    assert as_png.icc == SRGB_ICC and np.abs(as_png.pixels - srgb.pixels).max() < 2 / 255


def test_tiff_structured_raw_is_known_by_content_and_never_written(tmp_path):
    data = dng_bytes()
    assert decode_image(data).format == "raw"  # DNGVersion in IFD0, whatever the name
    with pytest.raises(UsageError, match=r"cannot write \.dng"):
        write_image(tmp_path / "x.dng", decode_image(data))
    src = Source(tmp_path / "IMG_1.CR2", tmp_path)
    assert output_suffix(src, None) == ".tif" and output_suffix(src, "jpeg") == ".jpg"
    jobs = plan_jobs([src], str(tmp_path / "out"), suffix=None, beside_suffix="_d", format_of=lambda s: None)
    assert jobs[0].output == tmp_path / "out" / "IMG_1.tif"


@pytest.mark.parametrize(
    ("cut", "why"), [(0.5, "corrupt"), (0.05, "corrupt")], ids=["half", "header-only"]
)  # fmt: skip
def test_truncated_dng_fails_in_one_line(tmp_path, capfd, cut, why):
    data = dng_bytes()
    path = write(tmp_path / "cut.dng", data[: int(len(data) * cut)])
    with pytest.raises(ImageReadError) as exc:
        read_image(path)
    assert why in one_line_error(exc, str(path))
    assert capfd.readouterr().err == ""  # LibRaw's own line is captured, not printed


# ---- HEIC, WebP, AVIF ------------------------------------------------------------------------------


def test_heic_10_bit_keeps_icc_exif_and_orientation(tmp_path):
    px = photo(24, 32, seed=1)
    data = heic_bytes(px, ten_bit=True, icc=SRGB_ICC, exif=EXIF_ORIENTED)
    img = read_image(write(tmp_path / "p.heic", data))
    assert img.format == "heif" and img.dtype == np.uint16 and img.icc == SRGB_ICC
    assert img.pixels.shape == (32, 24, 3)  # libheif applied the rotation the EXIF asked for
    assert exif_tags(img.exif)[ORIENTATION] == 1 and exif_tags(img.exif)[DATE_ORIGINAL] == DATE_TAKEN
    assert np.abs(img.pixels - np.rot90(px, -1)).mean() < 0.02
    import pillow_heif

    again = pillow_heif.open_heif(io.BytesIO(encode_image(img)), convert_hdr_to_8bit=False)
    assert again.info["bit_depth"] == 10 and again.size == (24, 32)
    back = decode_image(encode_image(img))
    assert back.icc == SRGB_ICC and exif_tags(back.exif)[DATE_ORIGINAL] == DATE_TAKEN
    assert np.abs(back.pixels - img.pixels).mean() < 0.01


def test_heic_grid_declaring_a_huge_size_is_refused_from_its_header(tmp_path):
    path = write(tmp_path / "grid.heic", huge_grid_heic())
    with pytest.raises(ImageReadError) as exc:
        read_image(path)
    assert "60000 x 50000" in one_line_error(exc, str(path)) and "--max-pixels" in str(exc.value)


def test_webp_lossless_stays_lossless_and_keeps_alpha_icc_exif(tmp_path):
    rgba = np.concatenate([photo(20, 30, seed=2), photo(20, 30, 1, seed=3)], axis=2)
    data = pillow_bytes(rgba, "webp", icc=SRGB_ICC, exif=EXIF_ORIENTED, lossless=True, exact=True)
    img = read_image(write(tmp_path / "a.webp", data))
    assert img.format == "webp" and img.carry.lossless and img.alpha is not None
    assert img.icc == SRGB_ICC and exif_tags(img.exif)[ORIENTATION] == 6  # stored orientation kept, as JPEG
    back = decode_image(encode_image(img))
    assert np.array_equal(back.pixels, img.pixels) and np.array_equal(back.alpha, img.alpha)
    assert back.icc == SRGB_ICC and back.exif == img.exif


@pytest.mark.parametrize("fmt", ["webp", "avif"])
def test_lossy_webp_and_avif_round_trip_closely(fmt):
    px = photo(32, 48, seed=4)
    img = decode_image(pillow_bytes(px, fmt, quality=95, exif=EXIF_ORIENTED))
    assert img.format == fmt and img.dtype == np.uint8 and not img.carry.lossless
    assert exif_tags(img.exif)[DATE_ORIGINAL] == DATE_TAKEN
    back = decode_image(encode_image(img, fmt))
    assert back.format == fmt and np.abs(back.pixels - img.pixels).mean() < 0.03


# ---- EXR -------------------------------------------------------------------------------------------


def test_exr_is_linear_float_and_strength_0_gives_the_values_back(tmp_path):
    linear = hdr_linear()
    full = {c: linear[:, :, i] for i, c in enumerate("RGB")}
    half = {c: v.astype(np.float16) for c, v in full.items()}
    half["A"] = np.full(linear.shape[:2], 0.5, np.float16)
    for name, channels, dtype in [("f.exr", full, np.float32), ("h.exr", half, np.float16)]:
        img = read_image(write(tmp_path / name, exr_bytes(channels)))
        assert img.format == "exr" and img.dtype == dtype and img.linear is not None
        assert np.array_equal(img.pixels, srgb_encode(img.linear)) and img.pixels.max() > 1  # highlights kept
        deblurrer = Deblurrer.from_model(tiny_model(), device="cpu")
        same = decode_image(encode_image(deblurrer.deblur_image(img, strength=0.0)))
        assert np.array_equal(same.linear, img.linear)  # bit for bit
        assert same.dtype == dtype and dict(same.carry.exr_header)["comments"] == "gkm test"  # header kept
        if img.alpha is not None:
            assert np.array_equal(same.alpha, img.alpha)
        moved = decode_image(encode_image(deblurrer.deblur_image(img)))
        assert not np.array_equal(moved.linear, img.linear)
        assert np.allclose(srgb_decode(srgb_encode(img.linear)), img.linear, rtol=1e-5, atol=1e-7)


def test_exr_with_nan_or_inf_and_truncated_exr_fail_in_one_line(tmp_path, capfd):
    bad = hdr_linear()
    bad[3, 4, 1] = np.nan
    bad[5, 6, 0] = np.inf
    path = write(tmp_path / "nan.exr", exr_bytes({c: bad[:, :, i] for i, c in enumerate("RGB")}))
    with pytest.raises(ImageReadError) as exc:
        read_image(path)
    assert "NaN or Inf" in one_line_error(exc, str(path))
    good = exr_bytes({c: hdr_linear()[:, :, i] for i, c in enumerate("RGB")})
    cut = write(tmp_path / "cut.exr", good[: len(good) // 2])
    with pytest.raises(ImageReadError) as exc:
        read_image(cut)
    assert "corrupt EXR" in one_line_error(exc, str(cut))
    three_quarters = write(tmp_path / "cut3.exr", good[: len(good) * 3 // 4])  # OpenEXR prints on stdout here
    with pytest.raises(ImageReadError) as exc:
        read_image(three_quarters)
    assert "corrupt EXR" in one_line_error(exc, str(three_quarters))
    assert capfd.readouterr() == ("", "")  # OpenEXR's own lines are captured, stdout and stderr


def test_display_referred_input_to_exr_is_decoded_to_linear():
    px = photo(16, 20, seed=5)
    out = decode_image(encode_image(Image(px, None, np.dtype("uint16"), "png"), "exr"))
    assert out.dtype == np.float32 and np.allclose(out.linear, srgb_decode(px), atol=1e-6)


# ---- the table, sniffing, missing packages ---------------------------------------------------------


def test_sniff_tells_the_iso_and_riff_containers_apart():
    def ftyp(major: bytes, *compat: bytes) -> bytes:
        body = major + b"\x00\x00\x00\x00" + b"".join(compat)
        return struct.pack(">I", 8 + len(body)) + b"ftyp" + body

    assert sniff(ftyp(b"heic", b"mif1", b"heic")) == "heif"
    assert sniff(ftyp(b"mif1", b"mif1", b"heic")) == "heif"
    assert sniff(ftyp(b"avif", b"mif1", b"avif")) == "avif"
    assert sniff(ftyp(b"mif1", b"avif", b"mif1")) == "avif"
    assert sniff(ftyp(b"crx ", b"crx ")) == "raw"
    assert sniff(ftyp(b"mp42", b"isom")) is None
    assert sniff(b"RIFF\x10\x00\x00\x00WEBPVP8L") == "webp" and sniff(b"RIFF\x10\x00\x00\x00WAVEfmt ") is None
    assert sniff(b"v/1\x01\x02\x00\x00\x00") == "exr" and sniff(b"IIRO\x08\x00\x00\x00") == "raw"


@pytest.mark.parametrize(
    ("module", "package", "make"),
    [
        ("rawpy", "rawpy", lambda: dng_bytes()),
        ("pillow_heif", "pillow-heif", lambda: heic_bytes(photo(8, 8), ten_bit=False, icc=None, exif=None)),
        ("OpenEXR", "openexr", lambda: exr_bytes({"Y": np.ones((4, 4), np.float32)})),
        ("PIL.Image", "pillow", lambda: pillow_bytes(photo(8, 8), "webp")),
    ],
)
def test_a_missing_plugin_is_one_line_naming_the_package(monkeypatch, tmp_path, module, package, make):
    data = make()
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ImageReadError) as exc:
        decode_image(data, "in.x")
    text = one_line_error(exc, "in.x")
    assert f"needs the {package} package" in text and "pip install 'gkm-cli[formats]'" in text


def test_raw_pair_rule():
    folder, other = Path("shoot"), Path("shoot/sub")
    paths = [folder / n for n in ("a.CR2", "a.JPG", "b.jpg", "c.NEF", "c.heic", "d.dng")] + [other / "a.jpg"]
    assert raw_pair_drops(paths, "both") == set()
    assert raw_pair_drops(paths, "skip-jpeg") == {folder / "a.JPG", folder / "c.heic"}  # same folder, same stem
    assert raw_pair_drops(paths, "raw-only") == {folder / "a.JPG", folder / "b.jpg", folder / "c.heic", other / "a.jpg"}
    with pytest.raises(UsageError):
        raw_pair_drops(paths, "jpeg-only")


# ---- gkm evaluate ----------------------------------------------------------------------------------


def test_evaluate_pairs_the_new_formats(tmp_path):
    for folder, seed in (("gt", 6), ("pred", 7)):
        px = photo(24, 32, seed=seed)
        write(tmp_path / folder / "a.webp", pillow_bytes(px, "webp", lossless=True))
        write(tmp_path / folder / "b.exr", exr_bytes({c: srgb_decode(px)[:, :, i] for i, c in enumerate("RGB")}))
    rep = evaluate_folders(tmp_path / "pred", tmp_path / "gt", settings=EvalSettings(metrics=("psnr",)))
    assert sorted(r.name for r in rep.images) == ["a", "b"] and not rep.problems
    by_name = {r.name: r.metrics["psnr"] for r in rep.images}
    assert abs(by_name["b"] - by_name["a"]) < 0.05  # EXR scored on its sRGB encoding, as the network sees it


# ---- gkm deblur on a folder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shoot(tmp_path_factory):
    """A folder with a DNG, a 10-bit HEIC, a WebP and an EXR (each with what it can carry), a
    truncated copy of each, and a RAW + JPEG pair; run once through ``gkm deblur -r -o``."""
    src = tmp_path_factory.mktemp("shoot")
    good = {
        "raw.dng": dng_bytes(),
        "phone.heic": heic_bytes(photo(24, 32, seed=8), ten_bit=True, icc=SRGB_ICC, exif=EXIF_ORIENTED),
        "web.webp": pillow_bytes(photo(24, 32, seed=9), "webp", icc=SRGB_ICC, exif=EXIF_ORIENTED, quality=90),
        "hdr.exr": exr_bytes({c: hdr_linear(24, 32)[:, :, i] for i, c in enumerate("RGB")}),
    }
    for name, data in good.items():
        write(src / name, data)
        write(src / "cut" / f"cut_{name}", data[: len(data) // 2])
    nan = hdr_linear(24, 32)
    nan[2, 3, 1] = np.nan
    write(src / "bad" / "nan.exr", exr_bytes({c: nan[:, :, i] for i, c in enumerate("RGB")}))
    write(src / "bad" / "grid.heic", huge_grid_heic())
    write(src / "pair" / "IMG_7.DNG", dng_bytes(orientation=1))
    write(src / "pair" / "IMG_7.JPG", encode_image(Image(photo(48, 64), None, np.dtype("uint8"), "jpeg")))
    from helpers import tiny_checkpoint

    weights = tiny_checkpoint(tmp_path_factory.mktemp("w"))
    out = src.parent / f"{src.name}_out"
    result = runner.invoke(app, ["deblur", str(src), "-r", "-o", str(out), "--weights", str(weights), "--json"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    records = {Path(r["input"]).relative_to(src).as_posix(): r for r in lines[:-1]}
    return {"src": src, "out": out, "result": result, "records": records, "summary": lines[-1], "weights": weights}


def test_folder_writes_one_output_per_format_with_metadata(shoot):
    out, records = shoot["out"], shoot["records"]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name[0] != ".")
    assert written == ["hdr.exr", "pair/IMG_7.tif", "phone.heic", "raw.tif", "web.webp"]
    assert all(records[name]["status"] == "ok" for name in ("raw.dng", "phone.heic", "web.webp", "hdr.exr"))
    raw = read_image(out / "raw.tif")
    assert raw.format == "tiff" and raw.dtype == np.uint16 and raw.icc == SRGB_ICC
    assert exif_tags(raw.exif)[DATE_ORIGINAL] == DATE_TAKEN and exif_tags(raw.exif)[ORIENTATION] == 1
    heic = read_image(out / "phone.heic")
    assert heic.dtype == np.uint16 and heic.icc == SRGB_ICC and exif_tags(heic.exif)[DATE_ORIGINAL] == DATE_TAKEN
    webp = read_image(out / "web.webp")
    assert webp.dtype == np.uint8 and webp.icc == SRGB_ICC and exif_tags(webp.exif)[DATE_ORIGINAL] == DATE_TAKEN
    exr = read_image(out / "hdr.exr")
    assert exr.dtype == np.float32 and exr.pixels.shape == (24, 32, 3) and exr.linear.max() > 1


def test_folder_truncated_nan_and_huge_files_fail_in_one_line_each(shoot):
    result, records, src = shoot["result"], shoot["records"], shoot["src"]
    assert result.exit_code == 1 and shoot["summary"]["failed"] == 6 and shoot["summary"]["ok"] == 5
    failures = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 6 and "Traceback" not in result.stderr
    bad = [f"cut/cut_{n}" for n in ("raw.dng", "phone.heic", "web.webp", "hdr.exr")] + ["bad/nan.exr", "bad/grid.heic"]
    for name in bad:
        rec = records[name]
        assert rec["status"] == "failed" and rec["error"].startswith(str(src / name) + ": ")
        assert sum(line.startswith(f"failed: {src / name}: ") for line in failures) == 1
        assert not Path(rec["output"]).exists()
    assert "NaN or Inf" in records["bad/nan.exr"]["error"] and "--max-pixels" in records["bad/grid.heic"]["error"]


def test_folder_raw_jpeg_pair_keeps_the_raw_only_by_default(shoot):
    assert "pair/IMG_7.JPG" not in shoot["records"]  # skip-jpeg: the camera's JPEG is left out
    assert "1 file(s) beside a RAW of the same name left out (--raw-pairs skip-jpeg)" in shoot["result"].stderr


def test_raw_pairs_both_refuses_a_name_clash_and_raw_only_takes_raw_files(shoot, tmp_path):
    pair, weights = shoot["src"] / "pair", shoot["weights"]
    clash = runner.invoke(app, ["deblur", str(pair), "-o", str(tmp_path / "x"), "--weights", str(weights),
                                "--raw-pairs", "both", "--format", "tiff"])  # fmt: skip
    assert clash.exit_code == 2 and "would both be written to" in clash.stderr and not (tmp_path / "x").exists()
    both = runner.invoke(app, ["deblur", str(pair), "-o", str(tmp_path / "b"), "--weights", str(weights),
                               "--raw-pairs", "both", "-q"])  # fmt: skip
    assert both.exit_code == 0 and sorted(p.name for p in (tmp_path / "b").glob("IMG*")) == ["IMG_7.JPG", "IMG_7.tif"]
    only = runner.invoke(app, ["deblur", str(shoot["src"]), "-r", "-o", str(tmp_path / "r"), "--weights", str(weights),
                               "--raw-pairs", "raw-only", "--json"])  # fmt: skip
    taken = sorted(json.loads(line)["input"] for line in only.stdout.splitlines() if '"input"' in line)
    assert taken == sorted(str(p) for p in shoot["src"].rglob("*") if p.suffix.lower() == ".dng")
    bad = runner.invoke(app, ["deblur", str(pair), "--weights", str(weights), "--raw-pairs", "jpeg"])
    assert bad.exit_code == 2 and "--raw-pairs must be one of" in bad.stderr


def test_raw_linear_flag_writes_the_linear_development_at_strength_0(shoot, tmp_path):
    dng = shoot["src"] / "pair" / "IMG_7.DNG"
    out = tmp_path / "lin.tif"
    args = ["deblur", str(dng), "-o", str(out), "--weights", str(shoot["weights"]), "--raw-linear", "--strength", "0"]
    assert runner.invoke(app, args).exit_code == 0
    written = read_image(out)
    assert written.icc == LINEAR_SRGB_ICC and written.dtype == np.uint16
    assert np.array_equal(written.pixels, read_image(dng, raw_linear=True).linear)
    assert dng.read_bytes() == dng_bytes(orientation=1)  # the RAW itself untouched
