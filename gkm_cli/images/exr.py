"""OpenEXR (HDR / VFX) through the openexr package: float, linear light.

Read: the first part's R, G, B (or Y) and A channels, half or float; every sample must be finite
(NaN or Inf is refused in one line). The network sees the colour sRGB-encoded (images/colour.py:
values above 1 stay above 1); alpha is passed through. Write: float EXR (half for 16-bit, float
for 32-bit), linear, with a lossless compression (the input's when it was lossless, else ZIP)
and the input's descriptive header attributes (chromaticities, comments, owner, data and
display windows, ...) when the input was EXR. With nothing changed by the network (strength 0)
the written samples equal the input's exactly.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

import numpy as np

from gkm_cli.errors import ImageReadError, ImageWriteError
from gkm_cli.images import plugins
from gkm_cli.images.colour import srgb_encode
from gkm_cli.images.decoding import captured_python_stdout, captured_stderr, check_size, one_line
from gkm_cli.images.image import Buffer, Carry, Image, MetadataWarning

# Header attributes that describe the file's structure: gkm writes its own.
_STRUCTURAL: Final = frozenset(
    {"channels", "type", "tiles", "chunkCount", "compression", "name", "version", "maxSamplesPerPixel", "lineOrder"}
)
_LOSSLESS: Final = ("NO_COMPRESSION", "RLE_COMPRESSION", "ZIPS_COMPRESSION", "ZIP_COMPRESSION", "PIZ_COMPRESSION")
_HALF_MAX: Final = np.float32(65504.0)


def read_exr(buf: Buffer, name: str, limit: int = 0) -> Image:
    """EXR -> Image: ``linear`` the file's samples, ``pixels`` them sRGB-encoded."""
    exr = plugins.load("OpenEXR", "EXR", name)
    data = bytes(buf)
    with captured_stderr() as lines, captured_python_stdout() as printed:
        try:
            head = exr.File(io.BytesIO(data), header_only=True)
            if len(head.parts) > 1:
                note = f"{name}: only the first of {len(head.parts)} EXR parts is read"
                warnings.warn(note, MetadataWarning, stacklevel=3)
            header = dict(head.header())
            kind = getattr(header.get("type"), "name", str(header.get("type")))
            if "deep" in kind:
                raise ImageReadError(f"{name}: deep EXR images are not supported")
            low, high = header["dataWindow"]
            width, height = int(high[0]) - int(low[0]) + 1, int(high[1]) - int(low[1]) + 1
            check_size(name, "EXR", width, height, limit)
            channels = {key: np.asarray(ch.pixels) for key, ch in exr.File(io.BytesIO(data), True).channels().items()}
        except ImageReadError:
            raise
        except MemoryError:
            raise ImageReadError(f"{name}: not enough memory to decode this EXR") from None
        except Exception as exc:  # OpenEXR: RuntimeError / ValueError / KeyError on damaged files
            raise ImageReadError(f"{name}: corrupt EXR ({_reason(exc, lines)})") from None
    if lines or printed:  # OpenEXR reported a decoding error but returned: the pixels cannot be trusted
        reason = _reason(None, lines) if lines else printed[0].strip().removeprefix("Warning: ")[:120]
        raise ImageReadError(f"{name}: corrupt EXR ({reason})")
    names = ("R", "G", "B") if all(c in channels for c in "RGB") else ("Y",) if "Y" in channels else None
    if names is None:
        found = ", ".join(sorted(channels)[:6]) or "none"
        raise ImageReadError(f"{name}: EXR has no R, G, B or Y channels (found: {found})")
    planes = [channels[c] for c in names] + ([channels["A"]] if "A" in channels else [])
    if any(p.shape != (height, width) or p.dtype.kind != "f" for p in planes):
        raise ImageReadError(f"{name}: unsupported EXR channel layout (subsampled or integer channels)")
    half = all(channels[c].dtype == np.float16 for c in names)
    linear = np.stack([channels[c].astype(np.float32) for c in names], axis=2)
    alpha = channels["A"].astype(np.float32) if "A" in channels else None
    if not np.isfinite(linear).all() or (alpha is not None and not np.isfinite(alpha).all()):
        raise ImageReadError(f"{name}: EXR holds NaN or Inf samples (gkm needs finite values)")
    compression = getattr(header.get("compression"), "name", "ZIP_COMPRESSION")
    carried = tuple((k, v) for k, v in header.items() if k not in _STRUCTURAL)
    carried += (("compression", compression if compression in _LOSSLESS else "ZIP_COMPRESSION"),)
    return Image(
        pixels=srgb_encode(linear),
        alpha=alpha,
        dtype=np.dtype(np.float16 if half else np.float32),
        format="exr",
        linear=linear,
        alpha_premultiplied=alpha is not None,  # EXR's convention: colour is premultiplied
        carry=Carry(exr_header=carried),
    )


def _reason(exc: BaseException | None, lines: list[bytes]) -> str:
    """OpenEXR's own message (it prints it on stderr) or the exception's, one line."""
    for line in lines:
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("<python_buffer>"):
            return text.split(":", 1)[-1].strip()[:120]
    return one_line(exc) if exc is not None else "decoder error"


def encode_exr(linear: np.ndarray, alpha: np.ndarray | None, dtype: np.dtype, carry: Carry) -> bytes:
    """Float EXR bytes of linear pixels (half when ``dtype`` is float16, else float)."""
    exr = plugins.load("OpenEXR", "EXR", "EXR output", writing=True)
    sample = np.float16 if dtype == np.float16 else np.float32
    names = ("Y",) if linear.shape[2] == 1 else ("R", "G", "B")
    channels = {c: _plane(linear[:, :, i], sample) for i, c in enumerate(names)}
    if alpha is not None:
        channels["A"] = _plane(alpha, sample)
    attrs = dict(carry.exr_header)
    compression = getattr(exr, str(attrs.pop("compression", "ZIP_COMPRESSION")))
    base = {"compression": compression, "type": exr.scanlineimage}
    out = io.BytesIO()
    try:
        try:
            exr.File({**base, **attrs}, channels).write(out)
        except (TypeError, ValueError, RuntimeError) as exc:  # an attribute this writer cannot store
            if not attrs:
                raise
            warnings.warn(f"EXR header attributes not written ({one_line(exc)})", MetadataWarning, stacklevel=3)
            out = io.BytesIO()
            exr.File(base, channels).write(out)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ImageWriteError(f"EXR encoder failed ({one_line(exc)})") from None
    return out.getvalue()


def _plane(values: np.ndarray, sample: type) -> np.ndarray:
    """One channel as a contiguous array of ``sample`` (half: clipped to its finite range)."""
    if sample is np.float16:
        values = np.clip(values, -_HALF_MAX, _HALF_MAX)
    return np.ascontiguousarray(values, dtype=sample)
