"""Linear light <-> sRGB for the network, and the two ICC profiles gkm writes.

The networks were trained on display-referred (sRGB-encoded) photos. An image whose file holds
linear light (EXR, ``--raw-linear`` RAW) is therefore sRGB-encoded on read (``Image.pixels``,
what the network sees; values above 1 stay above 1, negatives keep their sign) and keeps its
linear samples beside (``Image.linear``). A linear output (EXR, or TIFF of a linear input) is
decoded back, and wherever the pixels are still exactly the encoded input (strength 0, or a
network that changed nothing there) the original linear value is written instead: the round
trip is exact, not just within float rounding.

The ICC profiles are ICC v2 matrix/TRC display profiles built here from the sRGB primaries
(IEC 61966-2-1, colourants adapted to D50): sRGB (the standard tone curve as a 1024-entry
table) and linear sRGB (gamma 1.0). They are written with RAW output, which has no profile of
its own, and with linear TIFF output.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

from gkm_cli.images.image import Image

_ENC_KNEE: Final = np.float32(0.0031308)
_DEC_KNEE: Final = np.float32(0.04045)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded float32 (sign kept; the curve continues above 1)."""
    a = np.abs(linear).astype(np.float32)
    out = np.power(a, np.float32(1 / 2.4), dtype=np.float32)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    low = a <= _ENC_KNEE
    out[low] = a[low] * np.float32(12.92)
    return np.copysign(out, linear, out=out)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded -> linear light, float32 (the inverse of :func:`srgb_encode`)."""
    a = np.abs(encoded).astype(np.float32)
    out = a + np.float32(0.055)
    out /= np.float32(1.055)
    np.power(out, np.float32(2.4), out=out)
    low = a <= _DEC_KNEE
    out[low] = a[low] / np.float32(12.92)
    return np.copysign(out, encoded, out=out)


def linear_pixels(img: Image) -> np.ndarray:
    """The image as linear light: the decoded pixels, with the input's own linear samples
    wherever the pixels still equal their encoding (exact round trip)."""
    out = srgb_decode(img.pixels)
    if img.linear is not None and img.linear.shape == img.pixels.shape:
        same = img.pixels == srgb_encode(img.linear)
        out[same] = img.linear[same]
    return out


def output_colour(img: Image, fmt: str) -> tuple[np.ndarray, bytes | None]:
    """Pixels and ICC profile to write ``img`` as ``fmt``.

    EXR output is always linear light (sRGB primaries assumed for display-referred inputs);
    TIFF output of a linear input stays linear (tagged linear sRGB unless the input had a
    profile); every other output is the display-referred pixels, tagged sRGB when the input was
    linear.
    """
    if fmt == "exr":
        return linear_pixels(img), None
    if img.linear is None:
        return img.pixels, img.icc
    if fmt == "tiff":
        return linear_pixels(img), img.icc or LINEAR_SRGB_ICC
    return img.pixels, SRGB_ICC


# ---- ICC v2 profiles -----------------------------------------------------------------------------

_D50: Final = (0.9642, 1.0, 0.8249)
_D65: Final = (0.9505, 1.0, 1.0891)
# sRGB colourants (red, green, blue) adapted to D50 with the Bradford transform.
_COLOURANTS: Final = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def _s15(values: tuple[float, ...]) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _xyz(value: tuple[float, float, float]) -> bytes:
    return b"XYZ " + b"\x00" * 4 + _s15(value)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\x00"
    return (
        b"desc" + b"\x00" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + b"\x00" * 8 + b"\x00\x00\x00" + b"\x00" * 67
    )


def _curve(linear: bool) -> bytes:
    if linear:
        return b"curv" + b"\x00" * 4 + struct.pack(">IH", 1, 0x0100) + b"\x00\x00"  # gamma 1.0
    x = np.linspace(0, 1, 1024, dtype=np.float64)
    y = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    table = np.rint(y * 65535).astype(">u2").tobytes()
    return b"curv" + b"\x00" * 4 + struct.pack(">I", 1024) + table


def icc_profile(description: str, *, linear: bool) -> bytes:
    """An ICC v2 RGB display profile with the sRGB primaries and the sRGB or a linear curve."""
    trc = _curve(linear)
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", _desc(description)),
        (b"cprt", b"text" + b"\x00" * 4 + b"No copyright, use freely\x00"),
        (b"wtpt", _xyz(_D65)),
        (b"rXYZ", _xyz(_COLOURANTS[0])),
        (b"gXYZ", _xyz(_COLOURANTS[1])),
        (b"bXYZ", _xyz(_COLOURANTS[2])),
        (b"rTRC", trc),
    ]
    table_size = 4 + 12 * (len(tags) + 2)  # the three TRC entries share one curve's data
    offset = 128 + table_size
    entries, body = [], b""
    for sig, data in tags:
        entries.append((sig, offset + len(body), len(data)))
        body += data + b"\x00" * (-len(data) % 4)
    trc_entry = entries[-1]
    entries += [(b"gTRC", trc_entry[1], trc_entry[2]), (b"bTRC", trc_entry[1], trc_entry[2])]
    table = struct.pack(">I", len(entries)) + b"".join(struct.pack(">4sII", *e) for e in entries)
    size = 128 + len(table) + len(body)
    header = (
        struct.pack(">I4sI4s4s4s", size, b"\x00" * 4, 0x02100000, b"mntr", b"RGB ", b"XYZ ")
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\x00" * 24  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + _s15(_D50)
        + b"\x00" * 4  # creator
        + b"\x00" * 44
    )
    assert len(header) == 128
    return header + table + body


SRGB_ICC: Final = icc_profile("sRGB (gkm)", linear=False)
LINEAR_SRGB_ICC: Final = icc_profile("Linear sRGB (gkm)", linear=True)
