"""The one table of image formats and file suffixes: what gkm reads and writes, what it
recognises but refuses, and the format of a file from its first bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from gkm_cli.errors import UsageError

if TYPE_CHECKING:
    from gkm_cli.images.image import PathLike


FORMATS: Final = ("png", "tiff", "jpeg")
SUFFIX_FORMATS: Final[Mapping[str, str]] = MappingProxyType(
    {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg"}
)
SUPPORTED_SUFFIXES: Final = frozenset(SUFFIX_FORMATS)
FORMAT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"png": "png", "tif": "tiff", "tiff": "tiff", "jpg": "jpeg", "jpeg": "jpeg"}
)
BIT_DEPTHS: Final[Mapping[str, tuple[int, ...]]] = MappingProxyType({"png": (8, 16), "tiff": (8, 16, 32), "jpeg": (8,)})

#: The suffix gkm gives a file it writes in each format (``-o folder --format tiff`` -> ``.tif``).
OUTPUT_SUFFIX: Final[Mapping[str, str]] = MappingProxyType({"png": ".png", "tiff": ".tif", "jpeg": ".jpg"})
# Image suffixes gkm recognises but cannot read or write: ``-o x.webp`` names a file (refused in one
# line), not a folder to create; an evaluate folder's .bmp is not an image gkm can score.
# fmt: off
OTHER_IMAGE_SUFFIXES: Final = frozenset(
    [
        ".webp", ".bmp", ".dib", ".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".j2k", ".jpx", ".exr",
        ".hdr", ".pic", ".pgm", ".ppm", ".pnm", ".pbm", ".pfm", ".tga", ".ico", ".icns", ".psd", ".svg",
        ".dng", ".raw", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".sr2", ".srw", ".pef", ".qoi",
    ]
)
# fmt: on


def is_image_path(path: PathLike) -> bool:
    """True when the file name has a suffix this module reads (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def format_for_path(path: PathLike) -> str | None:
    """The format implied by a file suffix ("png" | "tiff" | "jpeg"), or None if unknown."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def normalise_format(fmt: str) -> str:
    """Canonical format name for a user-given one; UsageError if unknown."""
    canon = FORMAT_ALIASES.get(fmt.lower().lstrip("."))
    if canon is None:
        raise UsageError(f"unsupported image format {fmt!r} (choose png, tiff or jpeg)")
    return canon


def sniff(head: bytes) -> str | None:
    """Format from the first bytes of a file, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None
