"""Hostile files, hostile weights, full disks and closed pipes (issue 14): every case gives one
line naming the problem, the right exit code, and nothing lost or falsely reported."""

from __future__ import annotations

import json
import logging
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gkm_cli.errors import ImageReadError, ModelError
from gkm_cli.images import Image, decode_image, read_image, write_image
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.nets.checkpoint import load_weights, save_weights
from gkm_cli.nets.registry import CONFIG_BOUNDS, config_class, list_models

# ---- crafted files ---------------------------------------------------------------------------


def crafted_tiff(width: int, height: int, compression: int = 1) -> bytes:
    """A ~200-byte classic TIFF whose header declares ``width`` x ``height`` 8-bit gray pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, compression), (262, 3, 1, 1),
               (273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 10)]  # fmt: skip
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    out += b"".join(struct.pack("<HHII", *e) for e in entries) + b"\x00" * 4
    return out.ljust(210, b"\x00")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int) -> bytes:
    """A small, valid-looking gray PNG whose header declares ``width`` x ``height``."""
    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, c), dtype=np.float32)


def jpeg_bytes(seed: int = 0) -> bytes:
    ok, enc = cv2.imencode(".jpg", (noise(64, 64, 3, seed) * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return enc.tobytes()


def corrupt_jpeg_entropy(data: bytes) -> bytes:
    """Flip bits inside the entropy-coded scan (markers and headers left intact)."""
    out = bytearray(data)
    sos = out.find(b"\xff\xda")
    for k in range(3):
        at = sos + 100 + 300 * k
        out[at] ^= 0x10
        if out[at] == 0xFF or out[at - 1] == 0xFF:  # never create or break a marker
            out[at] ^= 0x10
    return bytes(out)


# ---- pixel limit, checked from the header before decoding ----------------------------------------


def test_crafted_tiff_is_refused_from_its_header_in_one_line():
    data = crafted_tiff(100_000, 100_000)
    with pytest.raises(ImageReadError) as e:
        decode_image(data, "evil.tif")
    assert "evil.tif" in str(e.value) and "limit" in str(e.value) and "\n" not in str(e.value)
    # Without a limit, the missing pixel data is noticed before a 10 GB array is allocated.
    with pytest.raises(ImageReadError) as e:
        decode_image(data, "evil.tif", max_pixels=0)
    assert "evil.tif" in str(e.value)
    # Compressed data cannot be sized up front: the allocation failure is still one line.
    with pytest.raises(ImageReadError) as e:
        decode_image(crafted_tiff(100_000, 100_000, compression=8), "evil.tif", max_pixels=0)
    assert "evil.tif" in str(e.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff"])
def test_every_reader_applies_max_pixels(tmp_path, fmt):
    path = write_image(tmp_path / f"a.{ {'png': 'png', 'jpeg': 'jpg', 'tiff': 'tif'}[fmt]}", Image(noise(40, 50), None, np.dtype("uint8"), fmt))
    assert read_image(path, max_pixels=2000).width == 50  # exactly at the limit: fine
    assert read_image(path, max_pixels=0).width == 50  # 0: no limit
    with pytest.raises(ImageReadError) as e:
        read_image(path, max_pixels=1999)
    assert str(path) in str(e.value) and "50 x 40" in str(e.value)


def test_large_declared_png_is_refused_quickly():
    start = time.perf_counter()
    with pytest.raises(ImageReadError) as e:
        decode_image(crafted_png(20_000, 20_000), "big.png")
    assert time.perf_counter() - start < 1.0 and "big.png" in str(e.value) and "--max-pixels" in str(e.value)


# ---- corrupt data the decoders only warn about -------------------------------------------------------


def test_corrupt_jpeg_entropy_data_is_an_error_not_an_image(capfd):
    good = jpeg_bytes()
    assert decode_image(good, "good.jpg").width == 64
    with pytest.raises(ImageReadError) as e:
        decode_image(corrupt_jpeg_entropy(good), "bad.jpg")
    assert str(e.value).startswith("bad.jpg: corrupt JPEG") and "\n" not in str(e.value)
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg's own line does not leak


def test_decoder_and_tifffile_log_lines_do_not_leak(tmp_path, capfd, caplog):
    path = write_image(tmp_path / "a.tif", Image(noise(30, 30), None, np.dtype("uint8"), "tiff"))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 4, len(data) + 1000)  # IFD offset past the end
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tifffile"), pytest.raises(ImageReadError) as e:
        read_image(bad)
    assert str(bad) in str(e.value)
    truncated = tmp_path / "t.png"
    png = write_image(tmp_path / "ok.png", Image(noise(30, 30), None, np.dtype("uint8"), "png")).read_bytes()
    truncated.write_bytes(png[:-30] + png_chunk(b"IEND", b""))
    with pytest.raises(ImageReadError):
        read_image(truncated)
    err = capfd.readouterr().err
    assert "tifffile" not in err and "WARN" not in err and "libpng" not in err and "ERROR" not in err


def test_other_stderr_output_during_a_decode_is_passed_on(capfd):
    import os
    import threading

    stop = threading.Event()
    written = []

    def chatter() -> None:
        while not stop.is_set():
            os.write(2, b"progress line\n")
            written.append(1)
            time.sleep(0.0005)

    t = threading.Thread(target=chatter)
    t.start()
    try:
        for _ in range(20):
            decode_image(jpeg_bytes(), "good.jpg")
    finally:
        stop.set()
        t.join()
    err = capfd.readouterr().err
    assert err.count("progress line") == len(written) > 0 and set(err.splitlines()) == {"progress line"}


# ---- weights: checked before anything is built ---------------------------------------------------


def _checkpoint(path: Path, tensors: dict, config: object, arch: str = "ggkmnet") -> Path:
    text = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors, str(path), metadata={"format": "gkm", "format_version": "1", "architecture": arch, "config": text})
    return path


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"]).state_dict().items()}


@pytest.mark.parametrize(
    "config, words",
    [
        ({**TINY_OVERRIDES["ggkmnet"], "width": 4096}, "width=4096 is out of bounds"),
        ({**TINY_OVERRIDES["ggkmnet"], "groups": 100000}, "groups=100000 is out of bounds"),
        ({**TINY_OVERRIDES["ggkmnet"], "width": -5}, "width=-5 is out of bounds"),
        ({**TINY_OVERRIDES["ggkmnet"], "width": "8"}, "must be an integer"),
        ({**TINY_OVERRIDES["ggkmnet"], "width": 8.0}, "must be an integer"),
        ({**TINY_OVERRIDES["ggkmnet"], "gaussian_method": "rm -rf"}, "gaussian_method"),
        ({**TINY_OVERRIDES["ggkmnet"], "evil": 1}, "unknown config field"),
        ([1, 2], "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_hostile_weight_configs_are_one_line_model_errors(tmp_path, tiny_state, config, words):
    path = _checkpoint(tmp_path / "w.safetensors", tiny_state, config)
    start = time.perf_counter()
    with pytest.raises(ModelError) as e:
        load_weights(path)
    assert time.perf_counter() - start < 5 and words in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_tensor_shape_missing_and_extra_tensors_are_refused(tmp_path, tiny_state):
    key = next(k for k, v in tiny_state.items() if v.ndim == 4)
    bad = dict(tiny_state, **{key: torch.zeros(3, 3, 3, 3)})
    with pytest.raises(ModelError, match=f"tensor {key} has shape"):
        load_weights(_checkpoint(tmp_path / "shape.safetensors", bad, TINY_OVERRIDES["ggkmnet"]))
    fewer = {k: v for k, v in tiny_state.items() if k != key}
    with pytest.raises(ModelError, match="missing"):
        load_weights(_checkpoint(tmp_path / "fewer.safetensors", fewer, TINY_OVERRIDES["ggkmnet"]))
    more = dict(tiny_state, extra=torch.zeros(2))
    with pytest.raises(ModelError, match="unexpected extra"):
        load_weights(_checkpoint(tmp_path / "more.safetensors", more, TINY_OVERRIDES["ggkmnet"]))
    # Paper-size config claimed for tiny tensors: refused from the shapes, nothing big is built.
    with pytest.raises(ModelError, match="has shape"):
        load_weights(_checkpoint(tmp_path / "claims.safetensors", tiny_state, {}))


def test_non_finite_weights_are_refused(tmp_path, tiny_state):
    key = next(k for k, v in tiny_state.items() if v.is_floating_point() and v.numel() > 1)
    broken = dict(tiny_state, **{key: tiny_state[key].clone().fill_(float("nan"))})
    with pytest.raises(ModelError, match="NaN or infinite"):
        load_weights(_checkpoint(tmp_path / "nan.safetensors", broken, TINY_OVERRIDES["ggkmnet"]))


def test_every_config_field_has_bounds_and_good_checkpoints_still_load(tmp_path):
    for name in list_models():
        import dataclasses

        ints = [f.name for f in dataclasses.fields(config_class(name)) if isinstance(f.default, int)]
        assert set(ints) <= set(CONFIG_BOUNDS), name
        path = tmp_path / f"{name}.safetensors"
        save_weights(create_model(name, **TINY_OVERRIDES[name]), path)
        assert load_weights(path).spec.name == name
