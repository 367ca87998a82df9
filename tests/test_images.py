"""Tests for gkm_cli.images: exact round trips, metadata carry, RGB order, damage, atomic writes.

Pillow and tifffile serve as independent readers/writers, so a bug shared by our encoder and
decoder (e.g. swapped channels, a non-standard metadata layout) cannot cancel out.
"""

from __future__ import annotations

import errno
import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from gkm_cli import images
from gkm_cli.errors import ImageReadError, ImageWriteError, UsageError
from gkm_cli.images import (
    SUPPORTED_SUFFIXES,
    Image,
    MetadataWarning,
    decode_image,
    encode_image,
    ensure_not_input,
    is_image_path,
    read_image,
    with_pixels,
    write_image,
)

H, W = 37, 53
LAYOUTS = ("gray", "gray_alpha", "rgb", "rgba")


# ---- helpers -----------------------------------------------------------------------------


def make_icc(size: int, seed: int = 1) -> bytes:
    """A synthetic ICC profile: a plausible 128-byte header (size, 'acsp', D50) + random body."""
    rng = np.random.default_rng(seed)
    head = bytearray(128)
    head[0:4] = struct.pack(">I", size)
    head[4:8] = b"lcms"
    head[8:12] = bytes((4, 0x30, 0, 0))
    head[12:16], head[16:20], head[20:24] = b"mntr", b"RGB ", b"XYZ "
    head[36:40] = b"acsp"
    head[68:80] = struct.pack(">III", 0xF6D6, 0x10000, 0xD32D)
    body = struct.pack(">I", 0) + rng.integers(0, 256, size - 132, dtype=np.uint8).tobytes()
    return bytes(head) + body


def make_exif(bo: str = "<") -> bytes:
    """EXIF (byte order ``bo``): IFD0 Make/Orientation + Exif IFD DateTimeOriginal/ExposureTime."""
    make = b"gkmcam\x00\x00"  # 8 bytes (even)
    date = b"2024:01:02 03:04:05\x00"  # 20 bytes
    ifd0_at = 8
    ifd0_len = 2 + 3 * 12 + 4
    make_at = ifd0_at + ifd0_len
    exif_at = make_at + len(make)
    exif_len = 2 + 2 * 12 + 4
    date_at = exif_at + exif_len
    rat_at = date_at + len(date)
    out = (b"II" if bo == "<" else b"MM") + struct.pack(bo + "HI", 42, ifd0_at)
    out += struct.pack(bo + "H", 3)
    out += struct.pack(bo + "HHII", 271, 2, 7, make_at)
    out += struct.pack(bo + "HHIHH", 274, 3, 1, 6, 0)
    out += struct.pack(bo + "HHII", 34665, 4, 1, exif_at)
    out += struct.pack(bo + "I", 0) + make
    out += struct.pack(bo + "H", 2)
    out += struct.pack(bo + "HHII", 33434, 5, 1, rat_at)
    out += struct.pack(bo + "HHII", 36867, 2, 20, date_at)
    out += struct.pack(bo + "I", 0) + date + struct.pack(bo + "II", 1, 250)
    return out


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def native_image(layout: str, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Random native samples (H x W x C) and alpha (H x W or None) of an integer dtype."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    c = 1 if layout.startswith("gray") else 3
    color = rng.integers(0, top + 1, (H, W, c)).astype(dtype)
    alpha = rng.integers(0, top + 1, (H, W)).astype(dtype) if layout in ("gray_alpha", "rgba") else None
    return color, alpha


def make_image(color: np.ndarray, alpha: np.ndarray | None, fmt: str, **meta: object) -> Image:
    """An Image whose float pixels are exactly the given integer samples / max."""
    top = np.float32(np.iinfo(color.dtype).max)
    return Image(
        pixels=color.astype(np.float32) / top,
        alpha=None if alpha is None else alpha.astype(np.float32) / top,
        dtype=color.dtype,
        format=fmt,
        **meta,  # type: ignore[arg-type]
    )


def quantised(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float samples back to integers of ``dtype``."""
    return np.rint(x * np.iinfo(dtype).max).astype(dtype)


def smooth_rgb(seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB image (JPEG reproduces it within a few levels)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([x / W, y / H, 0.5 + 0.3 * np.sin(x / 7 + y / 11)], axis=-1)
    return np.rint(img * 255).astype(np.uint8)


def red_image(fmt: str, dtype: str = "uint8") -> Image:
    """Pure red, no alpha."""
    px = np.zeros((H, W, 3), np.float32)
    px[:, :, 0] = 1.0
    return Image(px, None, np.dtype(dtype), fmt)


# ---- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_lossless_round_trip_is_exact(fmt: str, dtype: str, layout: str) -> None:
    color, alpha = native_image(layout, dtype)
    back = decode_image(encode_image(make_image(color, alpha, fmt)), "x", fmt)
    assert back.format == fmt
    assert back.dtype == np.dtype(dtype)
    assert back.pixels.dtype == np.float32
    assert back.pixels.shape == color.shape
    assert np.array_equal(quantised(back.pixels, back.dtype), color)
    if alpha is None:
        assert back.alpha is None
    else:
        assert back.alpha is not None and np.array_equal(quantised(back.alpha, back.dtype), alpha)


@pytest.mark.parametrize("layout", ["gray", "rgb"])
def test_jpeg_round_trip_close(layout: str) -> None:
    rgb = smooth_rgb()
    color = rgb[:, :, :1] if layout == "gray" else rgb
    back = decode_image(encode_image(make_image(color, None, "jpeg")), "x.jpg")
    assert back.format == "jpeg" and back.dtype == np.uint8
    assert back.pixels.shape == color.shape
    err = np.abs(quantised(back.pixels, np.dtype(np.uint8)).astype(int) - color.astype(int))
    assert err.mean() < 2.0 and err.max() < 16


def test_jpeg_refuses_16_bit_and_drops_alpha_with_warning() -> None:
    color, alpha = native_image("rgba", "uint8")
    img = make_image(color, alpha, "png")
    with pytest.raises(UsageError, match="JPEG"):
        encode_image(img, "jpeg", bit_depth=16)
    with pytest.warns(MetadataWarning, match="alpha"):
        back = decode_image(encode_image(img, "jpeg"), "x")
    assert back.alpha is None and back.channels == 3


def test_uint16_values_differing_in_low_byte_survive() -> None:
    ramp = (np.arange(H * W, dtype=np.uint32) * 7 + 1).astype(np.uint16).reshape(H, W, 1)
    for fmt in ("png", "tiff"):
        back = decode_image(encode_image(make_image(ramp, None, fmt)), "x")
        assert np.array_equal(quantised(back.pixels, np.dtype(np.uint16)), ramp)


def test_bit_depth_override_and_clipping() -> None:
    px = np.full((H, W, 3), 0.5, np.float32)
    px[0, 0] = (-0.2, 1.7, np.nan)
    img = Image(px, None, np.dtype(np.uint8), "png")
    back = decode_image(encode_image(img, bit_depth=16), "x")
    assert back.dtype == np.uint16
    assert back.pixels[1, 1, 0] == pytest.approx(32768 / 65535)  # 0.5 * 65535 rounds to nearest
    assert tuple(back.pixels[0, 0]) == (0.0, 1.0, 0.0)  # clipped, NaN -> 0
    with pytest.raises(UsageError):
        encode_image(img, "png", bit_depth=32)


def test_float32_tiff_written_by_tifffile_reads_exactly() -> None:
    rng = np.random.default_rng(3)
    data = rng.random((H, W, 3), dtype=np.float32) * 1.5  # HDR values above 1 stay unclipped
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, photometric="rgb")
    img = decode_image(buf.getvalue(), "hdr.tif")
    assert img.dtype == np.float32 and img.format == "tiff"
    assert np.array_equal(img.pixels, data)
    back = decode_image(encode_image(img), "x")  # float stays float, bit for bit
    assert back.dtype == np.float32 and np.array_equal(back.pixels, data)


def test_lzw_tiff_from_opencv_reads_in_rgb_order() -> None:
    bgr = np.zeros((H, W, 3), np.uint16)
    bgr[:, :, 2] = 65535  # red in OpenCV's BGR order
    bgr[0, 0] = (1, 2, 3)
    ok, enc = cv2.imencode(".tif", bgr)  # LZW: tifffile needs imagecodecs, we fall back
    assert ok
    img = decode_image(enc.tobytes(), "lzw.tif")
    assert img.dtype == np.uint16
    assert np.all(img.pixels[1:, :, 0] == 1.0) and np.all(img.pixels[1:, :, 1:] == 0.0)
    assert tuple(quantised(img.pixels[0, 0], np.dtype(np.uint16))) == (3, 2, 1)


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.sampled_from([1, 3]), fmt=st.sampled_from(["png", "tiff"]))
def test_random_shapes_round_trip(h: int, w: int, c: int, fmt: str) -> None:
    rng = np.random.default_rng(h * 100 + w)
    color = rng.integers(0, 65536, (h, w, c)).astype(np.uint16)
    back = decode_image(encode_image(make_image(color, None, fmt)), "x")
    assert np.array_equal(quantised(back.pixels, np.dtype(np.uint16)), color)


# ---- channel order -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "tiff", "jpeg"])
def test_red_stays_red_through_our_writer_and_pillow(fmt: str) -> None:
    data = encode_image(red_image(fmt))
    theirs = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))
    assert theirs[5, 5, 0] > 250 and theirs[5, 5, 1] < 5 and theirs[5, 5, 2] < 5
    ours = decode_image(data, "x").pixels
    assert ours[5, 5, 0] > 0.98 and ours[5, 5, 1:].max() < 0.02


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_red_written_by_pillow_reads_red(fmt: str) -> None:
    buf = io.BytesIO()
    PILImage.new("RGB", (W, H), (255, 0, 0)).save(buf, fmt)
    px = decode_image(buf.getvalue(), "x").pixels
    assert px[5, 5, 0] > 0.98 and px[5, 5, 1:].max() < 0.02


def test_gray_alpha_png_from_pillow() -> None:
    buf = io.BytesIO()
    PILImage.new("LA", (W, H), (200, 50)).save(buf, "PNG")
    img = decode_image(buf.getvalue(), "la.png")
    assert img.channels == 1 and img.alpha is not None
    assert quantised(img.pixels[3, 3], img.dtype)[0] == 200 and quantised(img.alpha[3, 3], img.dtype) == 50
    la = PILImage.open(io.BytesIO(encode_image(img)))
    assert la.mode == "LA" and la.getpixel((3, 3)) == (200, 50)


# ---- metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("icc_size", [400, 70_000])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_icc_profile_byte_for_byte(fmt: str, icc_size: int) -> None:
    icc = make_icc(icc_size)
    img = make_image(smooth_rgb(), None, fmt, icc=icc)
    data = encode_image(img)
    once = decode_image(data, "x")
    twice = decode_image(encode_image(once), "x")
    assert once.icc == icc and twice.icc == icc
    assert PILImage.open(io.BytesIO(data)).info.get("icc_profile") == icc  # standard layout
    if fmt == "jpeg" and icc_size > 65519:
        assert data.count(b"ICC_PROFILE\x00") == 2


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_exif_and_xmp_carried_verbatim(fmt: str) -> None:
    exif = make_exif()
    img = make_image(smooth_rgb(), None, fmt, exif=exif, xmp=XMP)
    data = encode_image(img)
    back = decode_image(data, "x")
    assert back.exif == exif and back.xmp == XMP
    theirs = PILImage.open(io.BytesIO(data)).getexif()
    assert theirs[271] == "gkmcam" and theirs[274] == 6
    assert theirs.get_ifd(0x8769)[36867] == "2024:01:02 03:04:05"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_metadata_written_by_pillow_is_read(fmt: str) -> None:
    icc = make_icc(70_000 if fmt == "JPEG" else 900)
    buf = io.BytesIO()
    extra = {} if fmt == "TIFF" else {"exif": b"Exif\x00\x00" + make_exif()}
    PILImage.fromarray(smooth_rgb()).save(buf, fmt, icc_profile=icc, **extra)
    img = decode_image(buf.getvalue(), f"pil.{fmt.lower()}")
    assert img.icc == icc
    if extra:
        assert img.exif == make_exif()


def test_premultiplied_tiff_alpha_kept_in_tiff_and_undone_for_png() -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, 200  # premultiplied red 100 at alpha 200 -> straight 127.5
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgba, photometric="rgb", extrasamples=["assocalpha"])
    img = decode_image(buf.getvalue(), "pm.tif")
    assert img.alpha_premultiplied
    page = tifffile.TiffFile(io.BytesIO(encode_image(img))).pages[0]
    assert tuple(int(e) for e in page.extrasamples) == (1,)
    assert np.array_equal(page.asarray(), rgba)
    png = decode_image(encode_image(img, "png"), "x.png")
    assert not png.alpha_premultiplied
    assert abs(png.pixels[0, 0, 0] * 255 - 127.5) <= 0.5


def _tiff_tags(data: bytes) -> dict[str, object]:
    page = tifffile.TiffFile(io.BytesIO(data)).pages[0]
    return {t.name: t.value for t in page.tags.values()}


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_exif_in_tiff_as_standard_exif_ifd(byteorder: str) -> None:
    icc = make_icc(500)
    jpeg = encode_image(make_image(smooth_rgb(), None, "jpeg", exif=make_exif(byteorder), xmp=XMP, icc=icc))
    src = decode_image(jpeg, "cam.jpg")
    tif = encode_image(src, "tiff")
    tags = _tiff_tags(tif)
    assert tags["Make"] == "gkmcam" and int(tags["Orientation"]) == 6
    assert tags["ExifTag"]["DateTimeOriginal"] == "2024:01:02 03:04:05"
    assert tuple(tags["ExifTag"]["ExposureTime"]) == (1, 250)
    assert tags["InterColorProfile"] == icc
    once = decode_image(tif, "x.tif")
    assert once.icc == icc and once.xmp == XMP
    assert once.exif is not None
    again = decode_image(encode_image(once), "y.tif")
    assert again.exif == once.exif  # canonical form is stable
    jpg_again = PILImage.open(io.BytesIO(encode_image(once, "jpeg"))).getexif()
    assert jpg_again[271] == "gkmcam" and jpg_again.get_ifd(0x8769)[36867] == "2024:01:02 03:04:05"


def test_exif_of_other_byte_order_into_tiff() -> None:
    color, _ = native_image("rgb", "uint16")
    img = make_image(color, None, "tiff", exif=make_exif(">"))  # little-endian TIFF, big-endian EXIF
    tags = _tiff_tags(encode_image(img))
    assert tags["Make"] == "gkmcam" and int(tags["Orientation"]) == 6
    assert tuple(tags["ExifTag"]["ExposureTime"]) == (1, 250)


def test_camera_style_tiff_metadata_survives_tiff_round_trip() -> None:
    data = np.random.default_rng(5).integers(0, 65536, (H, W, 3)).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(
        buf,
        data,
        photometric="rgb",
        compression="zlib",
        resolution=(300, 300),
        resolutionunit="INCH",
        iccprofile=make_icc(600),
        software="RawDeveloper 9",
        metadata=None,
        extratags=[(315, "s", 0, "Ansel", True), (33432, "s", 0, "(c) Ansel", True), (700, 1, len(XMP), XMP, True)],
    )
    img = decode_image(buf.getvalue(), "in.tif")
    out = encode_image(img)
    tags = _tiff_tags(out)
    assert tags["Artist"] == "Ansel" and tags["Copyright"] == "(c) Ansel"
    assert tags["Software"] == "RawDeveloper 9"
    assert tuple(tags["XResolution"]) == (300, 1) and int(tags["ResolutionUnit"]) == 2
    assert tags["InterColorProfile"] == make_icc(600) and bytes(tags["XMP"]) == XMP
    assert int(tags["Compression"]) == 8  # deflate input stays compressed
    assert np.array_equal(quantised(decode_image(out, "o").pixels, np.dtype(np.uint16)), data)


def test_cross_format_carry_jpeg_to_png() -> None:
    icc, exif = make_icc(3000), make_exif()
    src = decode_image(encode_image(make_image(smooth_rgb(), None, "jpeg", icc=icc, exif=exif, xmp=XMP)), "a.jpg")
    png = decode_image(encode_image(src, "png"), "b.png")
    assert (png.icc, png.exif, png.xmp, png.dtype) == (icc, exif, XMP, np.dtype(np.uint8))


def test_png_text_chunks_carried_png_to_png_only() -> None:
    buf = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ansel")
    PILImage.new("RGB", (W, H), (1, 2, 3)).save(buf, "PNG", pnginfo=info, dpi=(300, 300))
    img = decode_image(buf.getvalue(), "t.png")
    again = PILImage.open(io.BytesIO(encode_image(img)))
    assert again.info.get("Author") == "Ansel"
    assert round(again.info["dpi"][0]) == 300


def test_with_pixels_swaps_pixels_keeps_metadata() -> None:
    img = make_image(smooth_rgb(), None, "jpeg", icc=make_icc(400), exif=make_exif())
    new = with_pixels(img, np.zeros((H, W, 3), np.float64))
    assert new.pixels.dtype == np.float32 and not new.pixels.any()
    assert new.icc == img.icc and new.exif == img.exif and new.format == "jpeg"
    with pytest.raises(ValueError):
        with_pixels(img, np.zeros((H + 1, W, 3), np.float32))


# ---- damaged and unsupported input -------------------------------------------------------


def _valid_bytes(fmt: str) -> bytes:
    img = make_image(smooth_rgb(), None, fmt, icc=make_icc(400))
    return encode_image(img, bit_depth=None)


def test_random_bytes_with_png_suffix(tmp_path: Path) -> None:
    p = tmp_path / "photo.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError, match=r"photo\.png"):
        read_image(p)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file_is_reported(tmp_path: Path, fmt: str, keep: float) -> None:
    data = _valid_bytes(fmt)
    p = tmp_path / f"cut.{fmt}"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageReadError, match=rf"cut\.{fmt}: truncated {fmt.upper()}"):
        read_image(p)


def test_jpeg_missing_only_eoi_is_truncated() -> None:
    data = _valid_bytes("jpeg")
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        decode_image(data[:-2], "eoi.jpg")


def test_png_bad_crc_is_corrupt() -> None:
    data = bytearray(_valid_bytes("png"))
    idat = data.find(b"IDAT")
    data[idat + 10] ^= 0xFF
    with pytest.raises(ImageReadError, match=r"bad\.png: corrupt PNG \(bad CRC in IDAT chunk\)"):
        decode_image(bytes(data), "bad.png")


def test_missing_empty_and_mismatched(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: empty"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="x: data is PNG, not JPEG"):
        decode_image(_valid_bytes("png"), "x", "jpeg")


def test_content_decides_format_not_suffix(tmp_path: Path) -> None:
    p = tmp_path / "really_png.jpg"
    p.write_bytes(_valid_bytes("png"))
    img = read_image(p)
    assert img.format == "png" and img.path == p


# ---- files -------------------------------------------------------------------------------


def test_atomic_write_leaves_only_final_file(tmp_path: Path) -> None:
    img = make_image(smooth_rgb(), None, "png", icc=make_icc(400))
    out = write_image(tmp_path / "out.png", img)
    write_image(out, img)  # replacing an existing file works too
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert read_image(out).icc == img.icc
    assert out.stat().st_mode & 0o777 != 0o600  # not the private mode of the temp file


def test_suffix_picks_format_and_conflicts_are_refused(tmp_path: Path) -> None:
    img = make_image(smooth_rgb(), None, "png")
    assert read_image(write_image(tmp_path / "a.jpg", img)).format == "jpeg"
    assert read_image(write_image(tmp_path / "a.bin", img)).format == "png"
    with pytest.raises(UsageError):
        write_image(tmp_path / "b.png", img, format="tiff")


def test_refuses_to_overwrite_input(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    original = _valid_bytes("png")
    src.write_bytes(original)
    img = read_image(src)
    with pytest.raises(ImageWriteError, match=r"in\.png"):
        write_image(src, img, forbid_same_as=src)
    link = tmp_path / "link.png"
    os.link(src, link)
    with pytest.raises(ImageWriteError):
        ensure_not_input(link, [src])
    with pytest.raises(ImageWriteError):
        write_image(tmp_path / "sub" / ".." / "in.png", img, forbid_same_as=[tmp_path / "other.png", src])
    assert src.read_bytes() == original
    ensure_not_input(tmp_path / "new.png", [src])  # a different file is fine


def test_disk_full_cleans_up_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.tif"
    out.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images.os, "fsync", full)
    with pytest.raises(ImageWriteError, match=r"out\.tif: cannot write \(disk full\)"):
        write_image(out, make_image(smooth_rgb(), None, "tiff"))
    assert os.listdir(tmp_path) == ["out.tif"] and out.read_bytes() == b"old"


def test_unwritable_destination(tmp_path: Path) -> None:
    img = make_image(smooth_rgb(), None, "png")
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(tmp_path / "missing" / "o.png", img)
    with pytest.raises(ImageWriteError, match="directory"):
        write_image(tmp_path, img, format="png")


def test_suffixes() -> None:
    assert {".png", ".tif", ".tiff", ".jpg", ".jpeg"} <= SUPPORTED_SUFFIXES
    assert is_image_path("A/B.JPG") and is_image_path(Path("x.tiff"))
    assert not is_image_path("notes.txt") and not is_image_path("png")


def test_module_does_not_import_pillow() -> None:
    for module in Path(images.__file__).parent.glob("*.py"):
        source = module.read_text()
        assert "import PIL" not in source and "from PIL" not in source, module.name
