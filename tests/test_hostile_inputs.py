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
from helpers import gkm, tiny_checkpoint

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
    path = write_image(
        tmp_path / f"a.{ {'png': 'png', 'jpeg': 'jpg', 'tiff': 'tif'}[fmt] }",
        Image(noise(40, 50), None, np.dtype("uint8"), fmt),
    )
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


def test_extraneous_bytes_before_a_marker_are_a_note_not_a_failure(capfd):
    """Padding before EOI (common in camera JPEGs): libjpeg warns, the pixels are complete."""
    from gkm_cli.images import MetadataWarning

    good = jpeg_bytes()
    assert good.endswith(b"\xff\xd9")
    padded = good[:-2] + b"\x00" * 7 + b"\xff\xd9"
    with pytest.warns(MetadataWarning, match="fill bytes"):
        img = decode_image(padded, "camera.jpg")
    np.testing.assert_array_equal(img.pixels, decode_image(good, "good.jpg").pixels)
    assert "extraneous" not in capfd.readouterr().err


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
    save_file(
        tensors, str(path), metadata={"format": "gkm", "format_version": "1", "architecture": arch, "config": text}
    )
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


# ---- the folder run through the CLI ------------------------------------------------------------------

import errno  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from gkm_cli.cli import app  # noqa: E402
from gkm_cli.engine.manifest import MANIFEST_NAME  # noqa: E402

runner = CliRunner()


def invoke(*args: object, input: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def records(text: str) -> tuple[dict[str, dict], dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {Path(r["input"]).name: r for r in lines[:-1]}, lines[-1]


def visible_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The untrained tiny GGKMNet (this file's own: conftest's is perturbed)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("w"), noise=0)


@pytest.fixture()
def folder(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "a.png", Image(noise(24, 32, 3, 1), None, np.dtype("uint8"), "png"))
    write_image(src / "c.jpg", Image(noise(24, 32, 3, 2), None, np.dtype("uint8"), "jpeg"))
    return src


def test_a_crafted_tiff_fails_alone_and_the_rest_is_written(folder, weights, tmp_path):
    (folder / "b.tif").write_bytes(crafted_tiff(100_000, 100_000))
    (folder / "d.jpg").write_bytes(corrupt_jpeg_entropy(jpeg_bytes(3)))
    out = tmp_path / "out"
    r = invoke("deblur", folder, "-o", out, "--weights", weights, "--json")
    assert r.exit_code == 1, r.output
    recs, summary = records(r.stdout)
    assert {k: v["status"] for k, v in recs.items()} == {
        "a.png": "ok",
        "b.tif": "failed",
        "c.jpg": "ok",
        "d.jpg": "failed",
    }
    assert "b.tif" in recs["b.tif"]["error"] and "MP is over the limit" in recs["b.tif"]["error"]
    assert "d.jpg: corrupt JPEG" in recs["d.jpg"]["error"]
    assert (summary["ok"], summary["failed"], summary["not_attempted"]) == (2, 2, 0)
    assert visible_files(out) == ["a.png", "c.jpg"]
    assert "Traceback" not in r.stderr and "Corrupt JPEG data:" not in r.stderr.replace(
        "corrupt JPEG (Corrupt JPEG data:", ""
    )


def test_max_pixels_flag(folder, weights, tmp_path):
    r = invoke("deblur", folder / "a.png", "-o", tmp_path / "o", "--weights", weights, "--max-pixels", "100", "--json")
    assert r.exit_code == 1 and "over the limit of 0.0001 MP" in records(r.stdout)[0]["a.png"]["error"]
    assert (
        invoke("deblur", folder / "a.png", "-o", tmp_path / "o", "--weights", weights, "--max-pixels", "0").exit_code
        == 0
    )


def test_resume_trusts_only_recorded_outputs(folder, weights, tmp_path):
    out = tmp_path / "out"
    assert invoke("deblur", folder, "-o", out, "--weights", weights).exit_code == 0
    assert (out / MANIFEST_NAME).is_file()
    again = invoke("deblur", folder, "-o", out, "--weights", weights, "--json")
    assert again.exit_code == 0 and {r["status"] for r in records(again.stdout)[0].values()} == {"skipped"}
    # A 0-byte file and somebody's photo where outputs were: not done, and never replaced silently.
    (out / "a.png").write_bytes(b"")
    (out / "c.jpg").write_bytes(jpeg_bytes(9))
    r = invoke("deblur", folder, "-o", out, "--weights", weights, "--json")
    recs, summary = records(r.stdout)
    assert r.exit_code == 1 and summary["skipped"] == 0 and summary["failed"] == 2
    assert "not replaced, use --overwrite" in recs["a.png"]["error"]
    assert (out / "a.png").read_bytes() == b"" and (out / "c.jpg").read_bytes() == jpeg_bytes(9)
    forced = invoke("deblur", folder, "-o", out, "--weights", weights, "--overwrite")
    assert forced.exit_code == 0 and read_image(out / "a.png").width == 32
    # The input changed since: gkm's own, now stale, output is made again.
    write_image(folder / "a.png", Image(noise(24, 32, 3, 7), None, np.dtype("uint8"), "png"))
    r = invoke("deblur", folder, "-o", out, "--weights", weights, "--json")
    assert r.exit_code == 0 and {k: v["status"] for k, v in records(r.stdout)[0].items()} == {
        "a.png": "ok",
        "c.jpg": "skipped",
    }
    # Other settings: made again as well.
    r = invoke("deblur", folder, "-o", out, "--weights", weights, "--jpeg-quality", "80", "--json")
    assert records(r.stdout)[0]["c.jpg"]["status"] == "ok"


def test_blurmap_never_overwrites_a_users_json(folder, weights, tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "a.json").write_text('{"mine": true}')
    r = invoke("blurmap", folder / "a.png", "-o", maps, "--weights", weights, "--json")
    assert r.exit_code == 1 and "a.json: exists" in records(r.stdout)[0]["a.png"]["error"]
    assert (maps / "a.json").read_text() == '{"mine": true}' and not (maps / "a.png").exists()
    assert invoke("blurmap", folder / "a.png", "-o", maps, "--weights", weights, "--overwrite").exit_code == 0
    assert json.loads((maps / "a.json").read_text())["kind"] == "gkm blurmap"
    assert (
        records(invoke("blurmap", folder / "a.png", "-o", maps, "--weights", weights, "--json").stdout)[0]["a.png"][
            "status"
        ]
        == "skipped"
    )


def test_an_unwritable_output_suffix_is_refused(folder, weights, tmp_path):
    for name in ("x.bmp", "x.dng"):  # unsupported, and camera RAW (read, never written)
        r = invoke("deblur", folder / "a.png", "-o", tmp_path / name, "--weights", weights)
        suffix = name[1:]
        assert r.exit_code == 2 and f"cannot write {suffix}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / name).exists()


def test_disk_full_gives_a_failed_record_and_a_summary(folder, weights, tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out"
    r = invoke("deblur", folder, "-o", out, "--weights", weights, "--json")
    assert r.exit_code == 1
    recs, summary = records(r.stdout)
    assert list(recs) == ["a.png"] and recs["a.png"]["status"] == "failed" and "disk full" in recs["a.png"]["error"]
    assert summary["failed"] == 1 and summary["not_attempted"] == 1 and "disk full" in summary["stopped"]
    assert "1 input(s) not attempted" in r.stderr and "Traceback" not in r.stderr
    assert visible_files(out) == []


def test_read_only_file_system_has_its_own_words(folder, weights, tmp_path, monkeypatch):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    r = invoke("deblur", folder / "a.png", "-o", tmp_path / "out", "--weights", weights)
    assert r.exit_code == 1 and "read-only file system" in r.stderr and "permission denied" not in r.stderr


def test_non_finite_network_output_is_a_failure_not_a_black_image(folder, tmp_path):
    torch.manual_seed(0)
    model = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    with torch.no_grad():
        for p in model.parameters():  # finite weights whose output overflows
            p.add_(0.02 * torch.randn_like(p)).mul_(1e18)
    save_weights(model, tmp_path / "huge.safetensors")
    r = invoke("deblur", folder / "a.png", "-o", tmp_path / "out", "--weights", tmp_path / "huge.safetensors", "--json")
    assert r.exit_code == 1 and "not finite" in records(r.stdout)[0]["a.png"]["error"]
    assert visible_files(tmp_path / "out") == []


def test_hostile_weights_exit_2_in_one_line_before_anything_is_created(folder, tmp_path, tiny_state):
    bad = _checkpoint(tmp_path / "w.safetensors", tiny_state, {**TINY_OVERRIDES["ggkmnet"], "width": 4096})
    r = invoke("deblur", folder, "-o", tmp_path / "out", "--weights", bad)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and "out of bounds" in r.stderr
    assert not (tmp_path / "out").exists()


def test_file_names_are_shown_literally(folder, weights, tmp_path):
    names = ["[bold red]z.png", ":thumbs_up:.png", "esc\x1b[31mred.png"]
    for name in names:
        (folder / name).write_bytes(b"not an image")
    r = invoke("deblur", folder, "-o", tmp_path / "out", "--weights", weights)
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(lines) == 3
    assert any("[bold red]z.png" in line for line in lines) and any(":thumbs_up:.png" in line for line in lines)
    assert any("esc\\x1b[31mred.png" in line for line in lines)
    assert "\x1b" not in r.stderr and "\N{THUMBS UP SIGN}" not in r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_full_or_closed_is_one_line_and_exit_1(tmp_path, weights):
    src = tmp_path / "noise.png"
    write_image(src, Image(noise(200, 200), None, np.dtype("uint8"), "png"))  # > 64 KB: more than a pipe holds

    def deblur_stdin_to(stdout):  # src on stdin, the image to stdout, stderr captured
        with open(src, "rb") as fin:
            return gkm(
                "deblur", "-", "-o", "-", "--weights", weights, "-q",
                capture_output=False, text=False, stdin=fin, stdout=stdout, stderr=subprocess.PIPE,
            )  # fmt: skip

    with open("/dev/full", "wb") as full:
        r = deblur_stdin_to(full)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.strip().splitlines() == ["failed: <stdout>: cannot write (disk full)"], err
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    r = deblur_stdin_to(write_end)
    os.close(write_end)
    err = r.stderr.decode()
    assert r.returncode == 1 and len(err.strip().splitlines()) == 1 and "broken pipe" in err, err
    # A reader that stops after 10 bytes (`| head -c 10`) loses the rest: not reported as written.
    with open(src, "rb") as fin:
        command = [sys.executable, "-m", "gkm_cli", "deblur", "-", "-o", "-", "--weights", str(weights), "-q"]
        proc = subprocess.Popen(command, stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert len(proc.stdout.read(10)) == 10
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=300)
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1 and "<stdout>" in err, err


# ---- evaluation ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=False)
def pairs_dirs(tmp_path):
    for side in ("pred", "gt"):
        (tmp_path / side).mkdir()


@pytest.mark.parametrize(
    "protocol, dtype",
    [("dpdd16", "uint16"), ("dpdd8", "uint8"), ("dpdd16", "uint8"), ("default", "uint16"), ("gkmnet", "uint8")],
)
def test_identical_files_score_inf_under_every_protocol(tmp_path, pairs_dirs, protocol, dtype):
    from gkm_cli.evaluation import EvalSettings, evaluate_folders
    from gkm_cli.metrics.protocols import PROTOCOLS

    for side in ("pred", "gt"):
        write_image(tmp_path / side / "a.png", Image(noise(40, 40, 3, 4), None, np.dtype(dtype), "png"))
    settings = EvalSettings(protocol=PROTOCOLS[protocol], metrics=("psnr", "psnr_aligned", "mae"), preview_count=0)
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", settings=settings)
    assert report.images[0].metrics["psnr"] == float("inf") and report.images[0].metrics["mae"] == 0


def _report_with_one_identical_pair(tmp_path: Path):
    from gkm_cli.evaluation import EvalSettings, evaluate_folders

    gt = noise(40, 40, 3, 4)
    for name, pred in (("same", gt), ("off", np.clip(gt + 0.05, 0, 1))):
        write_image(tmp_path / "gt" / f"{name}.png", Image(gt, None, np.dtype("uint8"), "png"))
        write_image(tmp_path / "pred" / f"{name}.png", Image(pred, None, np.dtype("uint8"), "png"))
    settings = EvalSettings(metrics=("psnr", "mae"), preview_count=0)
    return evaluate_folders(tmp_path / "pred", tmp_path / "gt", settings=settings)


def test_set_means_leave_infinite_pairs_out_and_count_them(tmp_path, pairs_dirs):
    report = _report_with_one_identical_pair(tmp_path)
    off = next(r for r in report.images if r.name == "off").metrics["psnr"]
    assert report.mean()["psnr"] == pytest.approx(off) and report.infinite_counts()["metrics"] == {"psnr": 1}


def test_json_has_one_representation_of_infinity(tmp_path, pairs_dirs):
    from gkm_cli.evaluation import render_json

    text = render_json(_report_with_one_identical_pair(tmp_path))
    doc = json.loads(text)  # strict JSON: no Infinity/NaN tokens, no "inf" strings in number fields
    assert "Infinity" not in text and "NaN" not in text
    same = next(r for r in doc["images"] if r["name"] == "same")
    assert same["metrics"]["psnr"] is None and same["nonfinite"] == {"metrics": {"psnr": "inf"}}
    assert isinstance(doc["mean"]["psnr"], float) and doc["infinite"]["metrics"] == {"psnr": 1}
    for rec in doc["images"]:
        assert all(v is None or isinstance(v, float) for v in rec["metrics"].values())


def test_html_sorts_inf_as_the_best_psnr(tmp_path, pairs_dirs):
    import re

    from gkm_cli.evaluation import render_html

    page = render_html(_report_with_one_identical_pair(tmp_path))
    values = re.findall(r'<td data-v="([^"]+)">', page)
    assert "Infinity" in values and "inf" not in values
    script = page[page.index("<script>") :]
    assert "parseFloat" not in script and "Number(x)" in script  # Number("Infinity") is Infinity


def test_evaluate_reports_a_crafted_tiff_as_a_problem(tmp_path, pairs_dirs):
    for side in ("pred", "gt"):
        write_image(tmp_path / side / "a.png", Image(noise(20, 20, 3, 4), None, np.dtype("uint8"), "png"))
    (tmp_path / "pred" / "b.tif").write_bytes(crafted_tiff(100_000, 100_000))
    write_image(tmp_path / "gt" / "b.png", Image(noise(20, 20, 3, 5), None, np.dtype("uint8"), "png"))
    r = invoke("evaluate", tmp_path / "pred", tmp_path / "gt", "--metrics", "psnr", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (
        doc["counts"]["scored"] == 1
        and doc["problems"][0]["kind"] == "unreadable"
        and "b.tif" in doc["problems"][0]["detail"]
    )
    assert "Traceback" not in r.stderr
