"""`gkm benchmark` (records, MAC conventions, CLI) and the ONNX export (correctness only)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from gkm_cli.benchmark import (
    RESULT_FIELDS,
    BenchConfig,
    _module_macs,
    count_macs,
    latency_summary,
    mark_per_pixel_cost,
    parse_size,
    report,
    run_config,
    run_isolated,
    to_markdown,
)
from gkm_cli.errors import ModelError, UsageError
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.runtime import cpu_matrix_units
from helpers import gkm


def test_parse_size_is_width_by_height():
    assert parse_size("1280x720") == (720, 1280)
    assert parse_size("512") == (512, 512)
    for bad in ("12x", "axb", "0x5", "1x2x3"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_latency_summary():
    s = latency_summary([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"]) == (3.0, 2.0, 4.0, 1.0, 5.0)
    assert latency_summary([0.5]) == {"median": 0.5, "q1": 0.5, "q3": 0.5, "min": 0.5, "max": 0.5}


def test_module_mac_rules_by_hand():
    x = torch.zeros(1, 3, 8, 10)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    true, thop = _module_macs(conv, (x,), conv(x))
    assert true == 4 * 80 * 27 and thop == 4 * 80 * 28  # thop adds one op per output for the bias
    up = nn.ConvTranspose2d(3, 2, 2, stride=2)
    true, thop = _module_macs(up, (x,), up(x))
    assert true == 3 * 80 * 2 * 4  # every input pixel meets cout x 2 x 2 weights
    assert thop == (2 * 320) * (3 * 4 + 1)  # thop counts on the output grid: stride^2 too many
    lin = nn.Linear(6, 5)
    assert _module_macs(lin, (torch.zeros(2, 6),), lin(torch.zeros(2, 6))) == (60.0, 60.0)
    assert _module_macs(nn.ReLU(), (x,), x) == (0.0, 0.0)


def test_gkmnet_macs_match_the_reference_code_counts():
    """Independent numbers measured on the public GKMNet code at 1280x720 (reference_gkmnet.md 1.7):
    conv modules 279.4 G; every conv incl. a 66-channel 21x21 bank 349.8 G; thop/2 = 148.0 G."""
    macs = count_macs("gkmnet", 720, 1280)
    assert macs.modules / 1e9 == pytest.approx(279.4, abs=0.1)
    # Our bank skips the delta's 21x21 convolution (3 planes x 441 taps x 2 inputs x 21/16 of 720p).
    delta = 3 * 441 * 2 * 720 * 1280 * 21 / 16
    assert (macs.all + delta) / 1e9 == pytest.approx(349.8, abs=0.1)
    assert macs.paper / 1e9 == pytest.approx(148.0, rel=0.005)


def test_macs_scale_with_pixels_and_batch():
    a = count_macs("ggkmnet", 64, 64, overrides=TINY_OVERRIDES["ggkmnet"])
    b = count_macs("ggkmnet", 128, 128, overrides=TINY_OVERRIDES["ggkmnet"])
    c = count_macs("ggkmnet", 64, 64, batch=2, overrides=TINY_OVERRIDES["ggkmnet"])
    assert 3.9 < b.modules / a.modules < 4.1 and c.modules / a.modules == pytest.approx(2.0, rel=1e-3)
    assert a.all > a.modules > a.paper > 0


def _check_record(r: dict, model: str, height: int, width: int) -> None:
    assert set(RESULT_FIELDS) <= set(r)
    assert (r["model"], r["height"], r["width"]) == (model, height, width)
    assert r["latency_min_s"] <= r["latency_q1_s"] <= r["latency_median_s"] <= r["latency_q3_s"] <= r["latency_max_s"]
    assert len(r["latencies_s"]) == r["runs"] and all(t > 0 for t in r["latencies_s"])
    assert r["mpix_per_s"] == pytest.approx(r["batch"] * height * width / r["latency_median_s"] / 1e6)
    assert r["peak_memory_mb"] >= 0 and r["process_peak_rss_mb"] > 0
    assert r["macs_all_g"] > r["macs_modules_g"] > r["macs_paper_g"] > 0


@pytest.mark.slow
def test_cli_benchmark_json_end_to_end():
    proc = gkm("benchmark", "--model", "ggkmnet", "--size", "64x64", "--runs", "1", "--warmup", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["machine"]["torch"] == torch.__version__
    (r,) = doc["results"]
    _check_record(r, "ggkmnet", 64, 64)
    assert r["params"] == create_model("ggkmnet").inference_parameters()
    assert r["memory_kind"] == "cpu_peak_rss_delta" and r["device"] == "cpu"


def test_compare_reference_in_process_records_ratio_and_equality(tmp_path):
    cfg = BenchConfig(
        model="gkmnet", height=48, width=80, runs=2, warmup=0, tiny=True, compare_reference=True, threads=1
    )
    r = run_config(cfg)
    _check_record(r, "gkmnet", 48, 80)
    assert r["speedup_vs_reference"] == pytest.approx(r["reference_latency_median_s"] / r["latency_median_s"])
    assert r["max_abs_diff_vs_reference"] <= 1e-4
    assert r["reference_runs"] == 1 and len(r["latencies_s"]) == 2  # the slow path is capped
    doc = report([r])
    json.dumps(doc)  # serialisable
    md = to_markdown(doc)
    assert md.count("| gkmnet | 80x48 |") == 1 and "speed-up" in md


def test_reference_runs_and_per_pixel_cost():
    r = run_config(
        BenchConfig(
            model="gkmnet",
            height=32,
            width=48,
            runs=3,
            warmup=0,
            tiny=True,
            compare_reference=True,
            reference_runs=2,
            count_macs=False,
        )
    )
    assert r["reference_runs"] == 2
    assert r["ns_per_pixel"] == pytest.approx(r["latency_median_s"] / (32 * 48) * 1e9)
    base = {"device": "cpu", "precision": "fp32", "batch": 1, "tile": None, "compile": False, "channels_last": False}
    rows = [
        {**base, "model": "a", "ns_per_pixel": 100.0},
        {**base, "model": "a", "ns_per_pixel": 480.0},  # a super-linear size
        {**base, "model": "b", "ns_per_pixel": 300.0},  # compared with its own sizes only
    ]
    assert [r["per_pixel_vs_best"] for r in mark_per_pixel_cost(rows)] == [1.0, 4.8, 1.0]


def test_cli_sweep_adds_the_standard_sizes():
    proc = gkm("benchmark", "--sweep", "--size", "64x48", "--model", "nope")
    assert proc.returncode == 2  # sizes parse, then the unknown model stops it before any run
    from gkm_cli.benchmark import SWEEP_SIZES

    assert (1280, 720) in SWEEP_SIZES and (1920, 1080) in SWEEP_SIZES


def test_tiled_and_bf16_configs_run():
    r = run_config(
        BenchConfig(model="ggkmnet", height=64, width=96, runs=1, warmup=0, tiny=True, tile=32, count_macs=False)
    )
    assert r["tile"] == 32 and r["latency_median_s"] > 0 and r["macs_all_g"] is None
    bf16 = BenchConfig(
        model="gkmnet", height=32, width=32, runs=1, warmup=0, tiny=True, precision="bf16", count_macs=False
    )
    if cpu_matrix_units("bf16"):
        assert run_config(bf16)["precision"] == "bf16"
    else:  # refused, never silently slower than fp32
        with pytest.raises(UsageError, match="bf16 on this CPU"):
            run_config(bf16)


def test_usage_errors():
    with pytest.raises(UsageError, match="cuda"):
        run_config(BenchConfig(model="gkmnet", height=32, width=32, cuda_graphs=True, tiny=True))
    with pytest.raises(UsageError, match="precision"):
        run_config(BenchConfig(model="gkmnet", height=32, width=32, precision="int8", tiny=True))
    with pytest.raises(ModelError):
        run_config(BenchConfig(model="nope", height=32, width=32))
    proc = gkm("benchmark", "--size", "12xq")
    assert proc.returncode == 2 and "WIDTHxHEIGHT" in proc.stderr


def test_isolated_worker_passes_errors_back(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        run_isolated(BenchConfig(model="gkmnet", height=32, width=32, weights=str(tmp_path / "missing.safetensors")))


# --- ONNX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ggkmnet"])
def test_onnx_round_trip_dynamic_sizes(name):
    from gkm_cli.export import OnnxDeblurrer, export_onnx

    torch.manual_seed(0)
    model = create_model(name, **TINY_OVERRIDES[name]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    deblurrer = OnnxDeblurrer(export_onnx(model, None), threads=1)
    for shape in [(1, 3, 64, 64), (2, 3, 48, 80), (1, 3, 37, 53)]:  # the trace saw 64 x 64 only
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ref = model(x)
        image, sigma = deblurrer.run_nchw(x.numpy())
        assert image.shape == tuple(shape) and sigma.shape == (shape[0], 1, *shape[2:])
        np.testing.assert_allclose(image, ref.image.numpy(), atol=1e-3, rtol=0)
        np.testing.assert_allclose(sigma, ref.sigma_map().numpy(), atol=1e-3, rtol=0)
    hwc = np.random.default_rng(0).random((40, 50, 3), dtype=np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(hwc).permute(2, 0, 1)[None]).image[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(deblurrer.run(hwc), ref, atol=1e-3, rtol=0)


def test_export_pyramid_equals_network_pyramid():
    from gkm_cli.export import pyramid_even
    from gkm_cli.ops.pyramid import build_pyramid

    x = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    for a, b in zip(pyramid_even(x, 3), build_pyramid(x, 3)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_cli_models_export_checks_against_torch(tmp_path):
    out = tmp_path / "gkmnet.onnx"
    proc = gkm("models", "export", "gkmnet", "--onnx", str(out), "--random-init")
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1_000_000 and "max |diff|" in proc.stderr
    proc = gkm("models", "export", "gkmnet", "--onnx", str(out), "--weights", str(tmp_path / "none.safetensors"))
    assert proc.returncode == 2
