"""The one table of image formats and file suffixes: what gkm reads and writes, what it
recognises but refuses, the format of a file from its first bytes, and the RAW + JPEG pair rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from gkm_cli.errors import UsageError

if TYPE_CHECKING:
    from gkm_cli.images.image import PathLike


#: Every format gkm reads. "raw" (camera RAW through LibRaw) is read-only; webp, heif, avif, exr
#: and raw need the ``gkm-cli[formats]`` extra (images/plugins.py names the missing package).
FORMATS: Final = ("png", "tiff", "jpeg", "webp", "heif", "avif", "exr", "raw")
#: Formats gkm writes (``--format``). RAW input is written as TIFF (``OUTPUT_SUFFIX["raw"]``).
WRITE_FORMATS: Final = ("png", "tiff", "jpeg", "webp", "heif", "avif", "exr")
# Camera RAW suffixes LibRaw reads (the common ones; .raw itself is too ambiguous to claim).
# fmt: off
RAW_SUFFIXES: Final = frozenset(
    [
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
        ".pef", ".srw", ".3fr", ".iiq", ".erf", ".kdc", ".mrw", ".rwl", ".x3f", ".mos", ".mef",
    ]
)
# fmt: on
SUFFIX_FORMATS: Final[Mapping[str, str]] = MappingProxyType(
    {
        ".png": "png",
        ".tif": "tiff",
        ".tiff": "tiff",
        ".jpg": "jpeg",
        ".jpeg": "jpeg",
        ".jpe": "jpeg",
        ".webp": "webp",
        ".heic": "heif",
        ".heif": "heif",
        ".hif": "heif",
        ".avif": "avif",
        ".exr": "exr",
        **{suffix: "raw" for suffix in sorted(RAW_SUFFIXES)},
    }
)  # fmt: skip
SUPPORTED_SUFFIXES: Final = frozenset(SUFFIX_FORMATS)
FORMAT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "png": "png", "tif": "tiff", "tiff": "tiff", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp",
        "heic": "heif", "heif": "heif", "hif": "heif", "avif": "avif", "exr": "exr",
    }
)  # fmt: skip
#: Bits per sample each written format takes (``--bit-depth``). HEIF 16 = the file's 10 bits
#: (HEVC Main 10); EXR 16 = half float, 32 = float.
BIT_DEPTHS: Final[Mapping[str, tuple[int, ...]]] = MappingProxyType(
    {
        "png": (8, 16), "tiff": (8, 16, 32), "jpeg": (8,), "webp": (8,), "heif": (8, 16), "avif": (8,),
        "exr": (16, 32),
    }
)  # fmt: skip

#: The suffix gkm gives a file it writes for an image of each format (``-o folder --format tiff``
#: -> ``.tif``); a RAW image is written as a 16-bit TIFF, so "raw" -> ``.tif``.
OUTPUT_SUFFIX: Final[Mapping[str, str]] = MappingProxyType(
    {
        "png": ".png", "tiff": ".tif", "jpeg": ".jpg", "webp": ".webp", "heif": ".heic", "avif": ".avif",
        "exr": ".exr", "raw": ".tif",
    }
)  # fmt: skip
#: Format written for an image of each format when none is asked for (RAW cannot be written back).
DEFAULT_OUTPUT: Final[Mapping[str, str]] = MappingProxyType({**{f: f for f in WRITE_FORMATS}, "raw": "tiff"})
# Image suffixes gkm recognises but cannot read or write: ``-o x.bmp`` names a file (refused in one
# line), not a folder to create; an evaluate folder's .bmp is not an image gkm can score.
# fmt: off
OTHER_IMAGE_SUFFIXES: Final = frozenset(
    [
        ".bmp", ".dib", ".gif", ".jxl", ".jp2", ".j2k", ".jpx", ".hdr", ".pic", ".pgm", ".ppm", ".pnm",
        ".pbm", ".pfm", ".tga", ".ico", ".icns", ".psd", ".svg", ".raw", ".qoi",
    ]
)
# fmt: on
#: Suffixes an output file cannot have: the unsupported ones and RAW (never written).
UNWRITABLE_SUFFIXES: Final = OTHER_IMAGE_SUFFIXES | RAW_SUFFIXES
#: ``--raw-pairs``: what a folder run does with a RAW file and a same-named non-RAW companion
#: (the camera's JPEG, a phone's HEIC) beside it. skip-jpeg: the RAW only; both: both (their
#: outputs must differ in name: a clash is refused before anything runs); raw-only: RAW files only.
RAW_PAIR_MODES: Final = ("skip-jpeg", "both", "raw-only")

# ISO BMFF brands (the ``ftyp`` box): HEIF/HEIC, AVIF, and Canon's CR3.
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_ISO_GENERIC: Final = frozenset({b"mif1", b"msf1", b"miaf"})


def is_image_path(path: PathLike) -> bool:
    """True when the file name has a suffix this module reads (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


def format_for_path(path: PathLike) -> str | None:
    """The format implied by a file suffix (one of ``FORMATS``), or None if unknown."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def normalise_format(fmt: str) -> str:
    """Canonical output format name for a user-given one; UsageError if gkm cannot write it."""
    canon = FORMAT_ALIASES.get(fmt.lower().lstrip("."))
    if canon is None:
        raise UsageError(f"unsupported image format {fmt!r} (choose {', '.join(WRITE_FORMATS)})")
    return canon


def sniff(head: bytes) -> str | None:
    """Format from the first 32 bytes of a file, or None. TIFF-structured RAW files (DNG, NEF,
    CR2, ARW...) sniff as "tiff": the reader tells them apart (images/raw.py ``is_tiff_raw``)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"v/1\x01":
        return "exr"
    if head[4:8] == b"ftyp":
        return _iso_brand(head)
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00") or head.startswith((b"FUJIFILMCCD-RAW", b"\x00MRM")):
        return "raw"  # ORF, RW2, RAF, MRW: TIFF-like or own containers LibRaw reads
    return None


def _iso_brand(head: bytes) -> str | None:
    """heif / avif / raw (CR3) from an ``ftyp`` box's major and compatible brands."""
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if major == b"crx ":
        return "raw"
    if major in _AVIF_BRANDS or (major in _ISO_GENERIC and brands & _AVIF_BRANDS and not brands & _HEIF_BRANDS):
        return "avif"
    if major in _HEIF_BRANDS or brands & (_HEIF_BRANDS | _ISO_GENERIC):
        return "heif"
    return None


def raw_pair_drops(paths: Sequence[Path], mode: str) -> set[Path]:
    """The paths a folder run leaves out under ``--raw-pairs mode`` (see ``RAW_PAIR_MODES``).

    A pair is a RAW file and a non-RAW image with the same stem (case-insensitive) in the same
    folder. skip-jpeg drops the non-RAW member of each pair; raw-only drops every non-RAW file;
    both drops nothing.
    """
    if mode not in RAW_PAIR_MODES:
        raise UsageError(f"RAW pair rule must be one of {', '.join(RAW_PAIR_MODES)}, got {mode!r}")
    if mode == "both":
        return set()
    is_raw = {p: p.suffix.lower() in RAW_SUFFIXES for p in paths}
    if mode == "raw-only":
        return {p for p, raw in is_raw.items() if not raw}
    raw_stems = {(p.parent, p.stem.casefold()) for p, raw in is_raw.items() if raw}
    return {p for p, raw in is_raw.items() if not raw and (p.parent, p.stem.casefold()) in raw_stems}
