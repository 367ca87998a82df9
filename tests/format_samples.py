"""Small files of the optional formats, made with the libraries themselves (no downloads):
a DNG (a Bayer CFA image with DNGVersion, CFAPattern and a colour matrix, which LibRaw reads),
HEIC, WebP, AVIF and EXR. Imported as ``from format_samples import ...``."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import tifffile

from gkm_cli.images.image import TiffTag
from gkm_cli.images.metadata import EXIF_IFD, Ifd
from gkm_cli.images.tiff import _tiff_add_fields

DATE_TAKEN = b"2026:12:03 10:11:12\x00"
# A standalone EXIF blob: IFD0 Make + Orientation (6 = rotate 90 CW), Exif IFD DateTimeOriginal.
EXIF_ORIENTED = (
    b"II*\x00\x08\x00\x00\x00"
    + struct.pack("<H", 3)
    + struct.pack("<HHI4s", 271, 2, 4, b"gkm\x00")
    + struct.pack("<HHIHH", 274, 3, 1, 6, 0)
    + struct.pack("<HHII", EXIF_IFD, 4, 1, 50)
    + b"\x00" * 4
    + struct.pack("<H", 1)
    + struct.pack("<HHII", 36867, 2, len(DATE_TAKEN), 68)
    + b"\x00" * 4
    + DATE_TAKEN
)


def exif_tags(blob: bytes) -> dict[int, object]:
    """Tag -> value of IFD0 and the Exif IFD of a little-endian EXIF blob (SHORT, ASCII only)."""
    from gkm_cli.images.metadata import parse_exif

    bo, tree = parse_exif(blob)
    out: dict[int, object] = {}
    for ifd in [tree, *(sub for _, sub in tree.children)]:
        for t in ifd.tags:
            out[t.code] = struct.unpack(bo + "H", t.data[:2])[0] if t.dtype == 3 else t.data
    return out


def dng_bytes(h: int = 48, w: int = 64, *, orientation: int = 6, exif: bool = True) -> bytes:
    """An uncompressed 16-bit RGGB DNG whose scene is red on the left, blue on the right.

    IFD0 has DNGVersion, CFARepeatPatternDim/CFAPattern, black/white levels, ColorMatrix1 (an
    identity-like matrix, so colours stay recognisable), AsShotNeutral, Make/Model and
    Orientation; ``exif`` adds an Exif IFD with DateTimeOriginal.
    """
    scene = np.zeros((h, w, 3), np.float64)
    scene[:, : w // 2] = (0.30, 0.08, 0.05)  # red
    scene[:, w // 2 :] = (0.05, 0.08, 0.30)  # blue
    cfa = np.empty((h, w))
    cfa[0::2, 0::2] = scene[0::2, 0::2, 0]
    cfa[0::2, 1::2] = scene[0::2, 1::2, 1]
    cfa[1::2, 0::2] = scene[1::2, 0::2, 1]
    cfa[1::2, 1::2] = scene[1::2, 1::2, 2]
    raw = (cfa * 3000 + 64).astype(np.uint16)

    def srational(values: list[float]) -> list[int]:
        return [x for v in values for x in (round(v * 10000), 10000)]

    tags = [
        (271, "s", 0, "gkm", True),
        (272, "s", 0, "Test DNG", True),
        (274, "H", 1, orientation, True),
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50707, "B", 4, (1, 1, 0, 0), True),
        (50708, "s", 0, "gkm test camera", True),
        (50714, "H", 1, 64, True),
        (50717, "H", 1, 4095, True),
        (50721, "2i", 9, srational([1, 0, 0, 0, 1, 0, 0, 0, 1]), True),
        (50778, "H", 1, 21, True),
        (50728, "2I", 3, [10000, 10000, 10000, 10000, 10000, 10000], True),
    ]
    buf = io.BytesIO()
    tifffile.imwrite(buf, raw, photometric=32803, extratags=tags, subfiletype=0)
    data = buf.getvalue()
    if not exif:
        return data
    sub = Ifd((TiffTag(36867, 2, len(DATE_TAKEN), DATE_TAKEN),))
    return _tiff_add_fields(data, Ifd((), ((EXIF_IFD, sub),)), "<")


def heic_bytes(pixels: np.ndarray, *, ten_bit: bool, icc: bytes | None, exif: bytes | None, tile: int = 0) -> bytes:
    """HEIC of float RGB pixels in [0, 1] (10-bit or 8-bit) with optional ICC and EXIF."""
    import pillow_heif

    h, w, _ = pixels.shape
    if ten_bit:
        data, mode = (np.rint(pixels * 1023).astype(np.uint16) << 6).tobytes(), "RGB;16"
    else:
        data, mode = np.rint(pixels * 255).astype(np.uint8).tobytes(), "RGB"
    file = pillow_heif.from_bytes(mode=mode, size=(w, h), data=data)
    kw: dict[str, object] = {"quality": 95, "chroma": 444}
    if icc is not None:
        kw["icc_profile"] = icc
    if exif is not None:
        kw["exif"] = exif
    if tile:
        kw["tile_size"] = tile
    out = io.BytesIO()
    file.save(out, **kw)
    return out.getvalue()


def huge_grid_heic() -> bytes:
    """A grid HEIC whose image spatial extent (ispe) box declares 60000 x 50000 pixels."""
    rng = np.random.default_rng(3)
    data = bytearray(heic_bytes(rng.random((128, 192, 3)), ten_bit=False, icc=None, exif=None, tile=64))
    pos = 0
    while (pos := data.find(b"ispe", pos)) >= 0:
        if struct.unpack(">II", data[pos + 8 : pos + 16]) == (192, 128):
            struct.pack_into(">II", data, pos + 8, 60000, 50000)
        pos += 4
    return bytes(data)


def pillow_bytes(pixels: np.ndarray, fmt: str, *, icc: bytes | None = None, exif: bytes | None = None, **kw) -> bytes:
    """WebP / AVIF (8-bit) of float pixels (RGB or RGBA) through Pillow."""
    from PIL import Image as PILImage

    native = np.rint(pixels * 255).astype(np.uint8)
    out = io.BytesIO()
    extra = {**kw, **({"icc_profile": icc} if icc else {}), **({"exif": exif} if exif else {})}
    PILImage.fromarray(native).save(out, fmt.upper(), **extra)
    return out.getvalue()


def exr_bytes(channels: dict[str, np.ndarray]) -> bytes:
    """A scanline ZIP EXR of the given channels (float16 or float32 H x W arrays)."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, "comments": "gkm test"}
    out = io.BytesIO()
    # The binding reads an array's buffer ignoring its strides: hand it contiguous planes.
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(out)
    return out.getvalue()


def hdr_linear(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """Linear-light float32 RGB with highlights above 1 (up to 6) and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.2 + 0.15 * np.sin(x / (4 + k) + y / 6) for k in range(3)], -1)
    base[h // 3 : h // 2, w // 3 : w // 2] = 6.0  # a highlight far above display white
    return (base + 0.01 * rng.standard_normal(base.shape)).astype(np.float32)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
