"""Decoder fuzzing (issue 14): seeded mutations of small valid PNG, JPEG and TIFF files (bit
flips, truncations, header field edits, chunk/segment duplication), bounded to a few seconds;
and (issue 27) a fixed number of mutants of each optional format: DNG, HEIC, WebP, AVIF, EXR.

* In process, every mutant either decodes to an image or raises ImageReadError naming the file
  in one line: no other exception, nothing printed by the decoders.
* Through the real CLI, a folder of mutants plus valid files: each file is written or reported
  in one line, no traceback, no output for a failed input, the valid files still written.
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from format_samples import EXIF_ORIENTED, dng_bytes, exr_bytes, heic_bytes, pillow_bytes
from gkm_cli.errors import ImageReadError
from gkm_cli.images import Carry, Image, decode_image, encode_image, read_image
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.nets.checkpoint import save_weights

SEED = 1414


def _originals() -> dict[str, bytes]:
    rng = np.random.default_rng(SEED)
    px = rng.random((16, 20, 3), dtype=np.float32)
    gray = rng.random((16, 20, 1), dtype=np.float32)
    alpha = rng.random((16, 20), dtype=np.float32)
    tiff16 = Image(px, None, np.dtype("uint16"), "tiff")
    return {
        "rgb8.png": encode_image(Image(px, None, np.dtype("uint8"), "png")),
        "gray16a.png": encode_image(Image(gray, alpha, np.dtype("uint16"), "png")),
        "rgb.jpg": encode_image(Image(px, None, np.dtype("uint8"), "jpeg"), jpeg_quality=90),
        "gray.jpg": encode_image(Image(gray, None, np.dtype("uint8"), "jpeg")),
        "rgb8.tif": encode_image(Image(px, None, np.dtype("uint8"), "tiff")),
        "rgb16z.tif": encode_image(dataclasses.replace(tiff16, carry=Carry(tiff_compression="zlib"))),
    }


# ---- mutations ------------------------------------------------------------------------------------


def _flip_bits(data: bytes, r: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(r.randint(1, 8)):
        at = r.randrange(8, len(out)) if r.random() < 0.7 else r.randrange(8, min(len(out), 64))
        out[at] ^= 1 << r.randrange(8)
    return bytes(out)


def _truncate(data: bytes, r: random.Random) -> bytes:
    return data[: r.randrange(1, len(data))]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, chunks = 8, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png_join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    return b"\x89PNG\r\n\x1a\n" + body


def _png_edit(data: bytes, r: random.Random) -> bytes:
    """IHDR fields changed (CRC fixed, so the edit reaches the decoder) or a chunk duplicated."""
    chunks = _png_chunks(data)
    if r.random() < 0.5:
        ihdr = bytearray(chunks[0][1])
        field = r.choice([(0, ">I"), (4, ">I"), (8, "B"), (9, "B"), (12, "B")])
        value = r.choice([0, 1, 3, 7, 16, 255, 65535, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF])
        struct.pack_into(field[1], ihdr, field[0], value & (0xFF if field[1] == "B" else 0xFFFFFFFF))
        chunks[0] = (b"IHDR", bytes(ihdr))
    else:
        i = r.randrange(len(chunks))
        chunks.insert(i, chunks[i])
    return _png_join(chunks)


def _jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """Marker segments before the scan, and the rest (SOS onwards)."""
    pos, segs = 2, []
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segs.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return segs, data[pos:]


def _jpeg_edit(data: bytes, r: random.Random) -> bytes:
    """SOF height/width/components edited, or a segment (DQT, DHT, SOF, APP) duplicated."""
    segs, rest = _jpeg_segments(data)
    if r.random() < 0.5:
        i = next(k for k, s in enumerate(segs) if s[1] in (0xC0, 0xC1, 0xC2))
        sof = bytearray(segs[i])
        at = r.choice([5, 7, 9])  # height, width, components
        if at == 9:
            sof[at] = r.choice([0, 2, 4, 255])
        else:
            struct.pack_into(">H", sof, at, r.choice([0, 1, 8, 17, 4096, 65535]))
        segs[i] = bytes(sof)
    else:
        i = r.randrange(len(segs))
        segs.insert(i, segs[i])
    return data[:2] + b"".join(segs) + rest


def _tiff_edit(data: bytes, r: random.Random) -> bytes:
    """A field of an IFD0 entry (width, height, bits, offsets, counts...) or the IFD offset edited,
    or an entry duplicated."""
    out = bytearray(data)
    bo = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(bo + "I", data[4:8])
    (count,) = struct.unpack(bo + "H", data[ifd : ifd + 2])
    choice = r.random()
    if choice < 0.15:
        struct.pack_into(bo + "I", out, 4, r.choice([0, 3, len(data), len(data) + 100, 0xFFFFFFFF]))
        return bytes(out)
    entry = ifd + 2 + 12 * r.randrange(count)
    if choice < 0.85:
        value = r.choice([0, 1, 2, 3, 7, 9, 255, 4096, 65535, 1 << 24, 0xFFFFFFFF])
        (dtype,) = struct.unpack(bo + "H", data[entry + 2 : entry + 4])
        if r.random() < 0.3:
            struct.pack_into(bo + "I", out, entry + 4, value)  # the count
        elif dtype == 3:
            struct.pack_into(bo + "H", out, entry + 8, value & 0xFFFF)
        else:
            struct.pack_into(bo + "I", out, entry + 8, value)
        return bytes(out)
    # Duplicate one entry in place of its neighbour (same count, tags now out of order / repeated).
    other = ifd + 2 + 12 * r.randrange(count)
    out[other : other + 12] = data[entry : entry + 12]
    return bytes(out)


def _head_edit(data: bytes, r: random.Random) -> bytes:
    """A 32-bit word among the first 256 bytes (box sizes, ispe/dataWindow, chunk lengths) set to
    an extreme value."""
    out = bytearray(data)
    at = r.randrange(4, min(len(out), 256) - 4)
    struct.pack_into(r.choice(["<I", ">I"]), out, at, r.choice([0, 1, 255, 65535, 1 << 24, 0x7FFFFFFF, 0xFFFFFFFF]))
    return bytes(out)


def mutate(name: str, data: bytes, r: random.Random) -> bytes:
    kind = r.random()
    if kind < 0.35:
        return _flip_bits(data, r)
    if kind < 0.55:
        return _truncate(data, r)
    if name.endswith(".png"):
        return _png_edit(data, r)
    if name.endswith(".jpg"):
        return _jpeg_edit(data, r)
    if name.endswith((".heic", ".webp", ".avif", ".exr")):
        return _head_edit(data, r)
    return _tiff_edit(data, r)  # TIFF, and the TIFF-structured DNG


def mutants(count: int, seed: int) -> list[tuple[str, bytes]]:
    r = random.Random(seed)
    originals = _originals()
    names = sorted(originals)
    out = []
    for i in range(count):
        base = names[i % len(names)]
        stem, ext = base.rsplit(".", 1)
        out.append((f"m{i:03d}_{stem}.{ext}", mutate(base, originals[base], r)))
    return out


def _format_originals() -> dict[str, bytes]:
    """Small valid files of the optional formats (gkm-cli[formats]), made by their libraries."""
    rng = np.random.default_rng(SEED)
    px = rng.random((16, 20, 3), dtype=np.float32)
    channels = {c: np.ascontiguousarray(px[:, :, i] * 3) for i, c in enumerate("RGB")}
    return {
        "raw.dng": dng_bytes(32, 48),  # (LibRaw refuses very small frames as "not RAW")
        "rgb10.heic": heic_bytes(px, ten_bit=True, icc=None, exif=EXIF_ORIENTED),
        "rgb.webp": pillow_bytes(px, "webp", exif=EXIF_ORIENTED, quality=80),
        "rgb.avif": pillow_bytes(px, "avif", quality=80),
        "rgb.exr": exr_bytes(channels),
    }


#: Mutants per optional format: fixed, whatever the machine (LibRaw and libheif are slower per
#: file than the built-in decoders, and the count keeps the test to seconds).
FORMAT_MUTANTS = 30


def format_mutants(per_format: int, seed: int) -> list[tuple[str, bytes]]:
    r = random.Random(seed)
    originals = _format_originals()
    out = []
    for base in sorted(originals):
        stem, ext = base.rsplit(".", 1)
        for i in range(per_format):
            out.append((f"f{i:03d}_{stem}.{ext}", mutate(base, originals[base], r)))
    return out


# ---- in process: the decoders -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::gkm_cli.images.MetadataWarning")
def test_mutated_files_decode_or_fail_in_one_line(capfd):
    start = time.perf_counter()
    failed = 0
    for name, data in mutants(3000, SEED):
        try:
            img = decode_image(data, name)
        except ImageReadError as e:
            text = str(e)
            assert text.startswith(f"{name}: ") and "\n" not in text, text
            failed += 1
        else:
            assert img.pixels.dtype == np.float32 and img.pixels.ndim == 3
        if time.perf_counter() - start > 20:  # bounded, whatever the machine
            break
    assert failed > 100  # the mutations do reach the error paths
    err = capfd.readouterr().err
    assert err == "", err[:500]  # no decoder or tifffile line leaks


@pytest.mark.filterwarnings("ignore::gkm_cli.images.MetadataWarning")
def test_mutated_optional_format_files_decode_or_fail_in_one_line(capfd):
    failed = {}
    for name, data in format_mutants(FORMAT_MUTANTS, SEED):
        ext = name.rsplit(".", 1)[1]
        try:
            img = decode_image(data, name)
        except ImageReadError as e:
            text = str(e)
            assert text.startswith(f"{name}: ") and "\n" not in text, text
            failed[ext] = failed.get(ext, 0) + 1
        else:
            assert img.pixels.dtype == np.float32 and img.pixels.ndim == 3 and np.isfinite(img.pixels).all()
    assert all(failed.get(ext, 0) >= 5 for ext in ("dng", "heic", "webp", "avif", "exr")), failed
    out, err = capfd.readouterr()
    assert err == "", err[:500]  # no LibRaw, libheif or OpenEXR line leaks,
    assert out == "", out[:500]  # on stderr nor on stdout (OpenEXR prints there)


# ---- through the CLI: a folder of mutants ---------------------------------------------------------


def test_cli_folder_of_mutants(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    originals = _originals()
    for name, data in originals.items():
        (src / f"valid_{name}").write_bytes(data)
    for name, data in mutants(36, SEED + 1) + format_mutants(2, SEED + 1):
        (src / name).write_bytes(data)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(create_model("gkmnet", **TINY_OVERRIDES["gkmnet"]), weights)
    cmd = [sys.executable, "-m", "gkm_cli", "deblur", str(src), "-o", str(out), "--weights", str(weights),
           "--device", "cpu", "--json", "-q"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode in (0, 1) and "Traceback" not in stderr, stderr[-2000:]
    lines = [json.loads(line) for line in stdout.splitlines()]
    recs, summary = lines[:-1], lines[-1]
    inputs = sorted(p.name for p in src.iterdir())
    assert sorted(Path(r["input"]).name for r in recs) == inputs  # every file has its record
    assert summary["ok"] + summary["failed"] == len(inputs) and summary["not_attempted"] == 0
    shown = [line for line in stderr.splitlines() if line.strip()]
    failures = [line for line in shown if line.startswith("failed: ")]
    # Besides one line per failed file, only one-line warnings (metadata that could not be carried).
    assert all(line.startswith("warning: ") for line in shown if line not in failures), "\n".join(shown)
    for rec in recs:
        name, target = Path(rec["input"]).name, Path(rec["output"])
        if rec["status"] == "ok":
            assert read_image(target).pixels.shape[:2] == read_image(src / name).pixels.shape[:2]
        else:
            assert rec["status"] == "failed" and not target.exists()  # no output for a failed input
            assert rec["error"].startswith(str(src / name)) and "\n" not in rec["error"]
            assert sum(1 for line in failures if line.startswith(f"failed: {src / name}:")) == 1
    assert len(failures) == summary["failed"], "\n".join(failures)
    for name in originals:  # the valid files are still written
        assert (out / f"valid_{name}").is_file()
    assert summary["failed"] > 5
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("seed", [0])
def test_mutation_helpers_are_deterministic(seed):
    assert mutants(12, seed) == mutants(12, seed)
    assert format_mutants(2, seed) == format_mutants(2, seed)
