"""What every reader shares: the pixel limit checked from headers, OpenCV decoding with the
decoders' stderr captured (a corrupt-data warning makes the file corrupt), one-line reasons.
The RAW and EXR readers capture LibRaw's and OpenEXR's lines the same way."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Final

import cv2
import numpy as np

from gkm_cli.errors import ImageReadError
from gkm_cli.images.image import Buffer, MetadataWarning

#: Default ``max_pixels`` of every reader: 250 MP (a 24 MP photo is far below; a crafted header
#: declaring 100000 x 100000 is refused before any pixel memory is allocated). 0 = no limit.
DEFAULT_MAX_PIXELS: Final = 250_000_000
_CV_MAX_PIXELS: Final = 1 << 30  # OpenCV's own decoder limit (CV_IO_MAX_IMAGE_PIXELS default)
# Lines the bundled decoders (OpenCV's log, libpng, libjpeg, libtiff) print on stderr. They
# never reach the terminal: a decode that produced an error line is a corrupt file.
_DECODER_LINE: Final = re.compile(
    rb"^(\[ ?(WARN|ERROR|INFO|DEBUG)|libpng |Corrupt JPEG|Premature end of JPEG|Invalid JPEG|Invalid SOS|Bogus |"
    rb"Huffman |Unsupported |Inconsistent progression|Warning: |JPEG|TIFF|"
    rb"unknown file: |<python_buffer>)"  # LibRaw and OpenEXR reading from memory
)
_DECODER_ERROR: Final = re.compile(
    rb"(\[ERROR|libpng error|Corrupt JPEG data|Premature end of JPEG|Invalid |Bogus |Huffman )"
)
# libjpeg's "Corrupt JPEG data: N extraneous bytes before marker 0xd9" after a complete scan is
# either fill some cameras write before EOI (all 0x00 or all 0xFF: harmless) or the leftover of
# damaged entropy data (anything else): _harmless_jpeg_fill tells them apart.
_JPEG_EXTRANEOUS: Final = re.compile(rb"(\d+) extraneous bytes before marker 0xd9")
# stderr is one per process: decodes that capture it take turns.
_STDERR_LOCK: Final = threading.Lock()


def check_size(name: str, kind: str, width: int, height: int, limit: int) -> None:
    """Refuse, from the header alone, an empty image or one larger than ``limit`` pixels."""
    if width < 1 or height < 1:
        raise ImageReadError(f"{name}: corrupt {kind} (header declares {width} x {height} pixels)")
    if limit and width * height > limit:
        raise ImageReadError(
            f"{name}: {width} x {height} = {width * height / 1e6:.0f} MP is over the limit of "
            f"{limit / 1e6:g} MP (raise it with --max-pixels, 0 = no limit)"
        )


def imdecode(buf: Buffer, name: str, kind: str, pixels: int = 0) -> np.ndarray:
    """cv2 decode keeping bit depth, channels and stored orientation (EXIF rotation not applied).

    The decoders' stderr lines are captured: an error or corrupt-data warning among them makes
    the file corrupt (libjpeg decodes damaged entropy data to a plausible-looking image and only
    says "Corrupt JPEG data" on stderr, naming no file). ``pixels`` is the header's count.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    with captured_stderr() as lines:
        try:
            out = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            out = None
    harmless = [line for line in lines if _harmless_jpeg_fill(line, arr)]
    del arr
    problem = next((line for line in lines if _DECODER_ERROR.search(line) and line not in harmless), None)
    if problem is None and out is not None and harmless:
        warnings.warn(f"{name}: fill bytes before the JPEG end marker ignored", MetadataWarning, stacklevel=3)
    if out is None and pixels > _CV_MAX_PIXELS:
        raise ImageReadError(f"{name}: {pixels / 1e6:.0f} MP is more than the decoder can read (2^30 pixels)")
    if out is None or problem is not None:
        reason = _decoder_reason(problem) if problem is not None else "decoder failed"
        raise ImageReadError(f"{name}: corrupt {kind} ({reason})")
    return out


def _harmless_jpeg_fill(line: bytes, data: np.ndarray) -> bool:
    """True when libjpeg's "extraneous bytes before marker 0xd9" counts bytes that are all
    0x00 or all 0xFF just before the last EOI marker (camera fill, not damaged scan data)."""
    found = _JPEG_EXTRANEOUS.search(line)
    if found is None:
        return False
    count = int(found.group(1))
    raw = data.tobytes()
    eoi = raw.rfind(b"\xff\xd9")
    fill = raw[eoi - count : eoi] if 0 < count <= eoi else b""
    return len(fill) == count and (fill.strip(b"\x00") == b"" or fill.strip(b"\xff") == b"")


def _decoder_reason(line: bytes) -> str:
    """A decoder's stderr line without OpenCV's log prefix, for a one-line message."""
    text = line.decode("utf-8", "replace").strip()
    text = re.sub(r"^\[[^\]]*\]\s*global \S+ \S+\s*", "", text)  # "[ERROR:0@0.1] global file.cpp:117 Func"
    return text[:120]


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[bytes]]:
    """Collect what C code writes on file descriptor 2 meanwhile; yields the list of lines.

    Decoder lines (see ``_DECODER_LINE``) are kept in the list and not shown; anything else
    written meanwhile (another thread's progress bar) is passed on to the real stderr after.
    """
    lines: list[bytes] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield lines  # no usable stderr: nothing to capture
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield lines
                finally:
                    with contextlib.suppress(OSError, ValueError, AttributeError):
                        sys.stderr.flush()
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    other: list[bytes] = []
                    for line in tmp.read().splitlines(keepends=True):
                        if line.strip():  # decoders end some messages with an empty line
                            (lines if _DECODER_LINE.match(line.lstrip()) else other).append(line)
                    if other:
                        with contextlib.suppress(OSError):
                            os.write(2, b"".join(other))
        finally:
            os.close(saved)


@contextlib.contextmanager
def captured_python_stdout() -> Iterator[list[str]]:
    """Collect the lines a binding prints on ``sys.stdout`` meanwhile (OpenEXR's reports a bad
    chunk there with ``print``, which would land in ``--json`` records or an image on stdout).
    Lines starting "Warning: " are kept in the yielded list; anything else is passed on after."""
    lines: list[str] = []
    held = io.StringIO()
    with contextlib.redirect_stdout(held):
        yield lines
    other: list[str] = []
    for line in held.getvalue().splitlines(keepends=True):
        (lines if line.startswith("Warning: ") else other).append(line)
    if other:
        sys.stdout.write("".join(other))


def one_line(exc: BaseException) -> str:
    """First line of an exception message, shortened for a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
