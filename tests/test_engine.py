"""The inference engine: device/precision choice, tile planning and blending, the shared
per-image context, fallbacks (fp32 re-run, CUDA out-of-memory), folders, sharding, the
threaded pipeline, blur-map encoding and the Python API (including its doctest)."""

from __future__ import annotations

import doctest
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gkm_cli.api
from gkm_cli import runtime
from gkm_cli.api import Deblurrer
from gkm_cli.engine import memory
from gkm_cli.engine import runner as runner_mod
from gkm_cli.engine.distributed import split_work
from gkm_cli.engine.folders import (
    Source,
    check_jobs,
    drop_previous_outputs,
    expand_inputs,
    parse_shard,
    plan_jobs,
    take_shard,
)
from gkm_cli.engine.maps import MapSettings, encode_sigma_map, heatmap_rgb, quantise_sigma, sidecar_record
from gkm_cli.engine.pipeline import FAILED, OK, SKIPPED, Stages, run_pipeline
from gkm_cli.engine.runner import Engine
from gkm_cli.engine.tiling import (
    ALIGN,
    MIN_CORE,
    TileSettings,
    auto_core,
    axis_support,
    axis_weights,
    default_overlap,
    plan_tiles,
    raised_cosine,
    reflect_index,
    split_axis,
)
from gkm_cli.errors import GkmError, ImageWriteError, ModelError, SettingError, UsageError
from gkm_cli.nets import create_model, get_spec, list_models
from gkm_cli.nets.base import ModelSpec
from gkm_cli.runtime import RankInfo
from helpers import photo, psnr, tiny_model

CPU = torch.device("cpu")


# ---- device and precision -----------------------------------------------------------------


def test_select_device_and_precision():
    assert runtime.resolve_device("cpu") == CPU
    auto = runtime.resolve_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert auto == CPU
        with pytest.raises(UsageError, match="CUDA"):
            runtime.resolve_device("cuda:0")
    with pytest.raises(SettingError, match="device 'tpu' is unknown") as bad:
        runtime.resolve_device("tpu")
    assert bad.value.flag == "--device"  # how the CLI words it
    spec = get_spec("ggkmnet")
    assert runtime.select_dtype("auto", CPU, spec) == torch.float32
    meta = torch.device("meta")  # not a CPU: the CPU matrix-unit rule does not apply
    assert runtime.select_dtype("bf16", meta, spec) == torch.bfloat16
    assert runtime.select_dtype("FP16", meta, spec) == torch.float16
    with pytest.raises(UsageError):
        runtime.select_dtype("int8", CPU, spec)
    no_half = type(spec)(**{**spec.__dict__, "supports_fp16": False})
    with pytest.raises(UsageError, match="fp16"):
        runtime.select_dtype("fp16", CPU, no_half)
    assert runtime.precision_name(torch.bfloat16) == "bf16"


@pytest.mark.parametrize("units", [True, False])
def test_reduced_precision_on_the_cpu_needs_matrix_units(monkeypatch, units):
    """bf16/fp16 on a CPU without AMX ran several times slower than fp32: refused, never silent."""
    monkeypatch.setattr(runtime, "cpu_matrix_units", lambda name: units)
    spec = get_spec("ggkmnet")
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if units:
            assert runtime.select_dtype(name, CPU, spec) == dtype
        else:
            with pytest.raises(SettingError, match=f"{name} on this CPU has no") as e:
                runtime.select_dtype(name, CPU, spec)
            assert e.value.flag == "--precision" and "\n" not in str(e.value)
    assert runtime.select_dtype("fp32", CPU, spec) == torch.float32


def test_intra_op_threads_are_restored():
    before = torch.get_num_threads()
    with runtime.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with runtime.intra_op_threads(None):
        assert torch.get_num_threads() == before


def test_free_memory_reading(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:   2048 kB\n")
    assert memory._meminfo_available(fake) == 2048 * 1024
    assert memory._meminfo_available(tmp_path / "missing") is None
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.max").write_text("1000\n")
    (cg / "memory.current").write_text("400\n")
    assert memory._cgroup_headroom(cg) == 600
    (cg / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(cg) is None


def test_host_memory_is_meminfo_bounded_by_cgroup_and_the_fallback_only_when_nothing_reads(tmp_path, monkeypatch):
    meminfo, cg = tmp_path / "meminfo", tmp_path / "cg"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:   2048 kB\n")
    cg.mkdir()
    (cg / "memory.max").write_text("max\n")
    read_meminfo, read_cgroup = memory._meminfo_available, memory._cgroup_headroom
    monkeypatch.setattr(memory, "_meminfo_available", lambda: read_meminfo(meminfo))
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: read_cgroup(cg))
    assert memory.host_available_bytes() == 2048 * 1024  # no container limit: MemAvailable
    assert memory.free_memory_bytes(CPU) == 2048 * 1024
    (cg / "memory.max").write_text(f"{1 << 20}\n")
    (cg / "memory.current").write_text(f"{1 << 18}\n")
    assert memory.host_available_bytes() == (1 << 20) - (1 << 18)  # a tighter container limit wins
    (cg / "memory.max").write_text("max\n")

    pages = {"SC_AVPHYS_PAGES": 3, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)  # no /proc: sysconf pages
    monkeypatch.setattr(memory.os, "sysconf", lambda name: pages[name])
    assert memory.host_available_bytes() == 3 * 4096

    def unreadable(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(memory.os, "sysconf", unreadable)  # nothing readable at all
    assert memory.host_available_bytes() == memory.FALLBACK_FREE_BYTES
    (cg / "memory.max").write_text(f"{1 << 20}\n")  # the fallback is still bounded by the container
    assert memory.host_available_bytes() == (1 << 20) - (1 << 18)


def test_this_machine_reports_its_memory_not_the_fallback():
    if not Path("/proc/meminfo").exists():
        pytest.skip("needs /proc/meminfo")
    assert memory._meminfo_available() is not None
    assert memory.host_available_bytes() != memory.FALLBACK_FREE_BYTES


# ---- tile planning and blending ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 40).map(lambda u: u * ALIGN),
    w=st.integers(1, 40).map(lambda u: u * ALIGN),
    core=st.integers(1, 20).map(lambda u: u * ALIGN),
    overlap=st.integers(0, 6).map(lambda u: u * ALIGN),
)
def test_plan_partitions_and_weights_sum_to_one(h, w, core, overlap):
    plan = plan_tiles(h, w, core, overlap)
    cover = np.zeros((h, w), np.int32)
    weight = np.zeros((h, w), np.float64)
    for t in plan.tiles:
        (ct, cl, ch, cw), (bt, bl, bh, bw) = t.core, t.box
        assert all(v % ALIGN == 0 for v in t.core + t.box)
        assert 0 < ch <= core and 0 < cw <= core
        assert bt == max(0, ct - overlap) and bl == max(0, cl - overlap)
        assert bt + bh == min(h, ct + ch + overlap) and bl + bw == min(w, cl + cw + overlap)
        cover[ct : ct + ch, cl : cl + cw] += 1
        r0, r1 = axis_support(ct, ct + ch, h, plan.feather)
        c0, c1 = axis_support(cl, cl + cw, w, plan.feather)
        assert bt <= r0 and r1 <= bt + bh and bl <= c0 and c1 <= bl + bw  # blended px were computed
        wy, wx = axis_weights(ct, ct + ch, h, plan.feather), axis_weights(cl, cl + cw, w, plan.feather)
        assert wy.min() > 0 and wx.min() > 0
        weight[r0:r1, c0:c1] += wy[:, None] * wx[None, :]
    assert (cover == 1).all()  # cores partition the image
    np.testing.assert_allclose(weight, 1.0, atol=1e-6)


def test_split_axis_and_ramps():
    assert split_axis(160, 64) == [(0, 64), (64, 112), (112, 160)]
    assert split_axis(48, 1000) == [(0, 48)]
    r = raised_cosine(16)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
    assert np.all(np.diff(r) > 0) and 0 < r[0] < 0.05
    assert default_overlap(96) == 96 and default_overlap(100) == 112 and default_overlap(0) == 0
    with pytest.raises(ValueError):
        split_axis(50, 16)


def test_reflect_index_matches_torch_reflect_padding():
    for n, pad in ((37, 11), (16, 15), (5, 3)):
        src = torch.arange(n, dtype=torch.float32).view(1, 1, n)
        padded = torch.nn.functional.pad(src, (0, pad), mode="reflect").flatten().long().numpy()
        np.testing.assert_array_equal(reflect_index(0, n + pad, n), padded)
    np.testing.assert_array_equal(reflect_index(0, 4, 1), [0, 0, 0, 0])


def test_auto_core_respects_budget():
    bpp, ov = get_spec("ggkmnet").bytes_per_pixel, 48
    for free in (1 << 30, 8 << 30, 64 << 30):
        core = auto_core(free, bpp, ov, cpu=False)
        assert core % ALIGN == 0 and core >= MIN_CORE
        if core > MIN_CORE:
            assert (core + 2 * ov) ** 2 * bpp <= free * 0.5
    assert auto_core(64 << 30, bpp, ov, cpu=True) == auto_core(1 << 40, bpp, ov, cpu=True)  # CPU cap
    assert auto_core(1 << 20, bpp, ov, cpu=True) == MIN_CORE
    assert ModelSpec("x", "", 16, 64, False).bytes_per_pixel > max(get_spec(n).bytes_per_pixel for n in list_models())


def test_auto_plan_follows_free_memory(monkeypatch):
    eng = Engine(tiny_model().eval(), CPU)
    monkeypatch.setattr(runner_mod, "free_memory_bytes", lambda d: 64 << 30)
    assert eng.plan(300, 200).single
    monkeypatch.setattr(runner_mod, "free_memory_bytes", lambda d: 1 << 30)
    plan = eng.plan(3000, 2000)
    assert len(plan.tiles) > 1
    biggest = max(t.box[2] * t.box[3] for t in plan.tiles)
    assert biggest * tiny_model().eval().spec.bytes_per_pixel <= (1 << 30) * 0.5


# ---- the engine ------------------------------------------------------------------------------


def test_single_tile_equals_model():
    model = tiny_model().eval()
    x = photo(37, 53)
    out = Engine(model, CPU).run(x, sigma=True)
    with torch.no_grad():
        ref = model(torch.from_numpy(x).permute(2, 0, 1)[None])
    np.testing.assert_allclose(out.image, ref.image[0].permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(out.sigma, ref.sigma_map()[0, 0].numpy(), atol=1e-6)
    assert out.tiles == 1


@pytest.mark.parametrize("name", ["ggkmnet", "gkmanet"])
def test_tiled_matches_untiled_tiny(name):
    model = tiny_model(name).eval()
    x = photo(100, 150, seed=1)
    whole = Engine(model, CPU, tiling=TileSettings(tile=4096)).run(x, sigma=True)
    tiled = Engine(model, CPU, tiling=TileSettings(tile=48, overlap=48)).run(x, sigma=True)
    assert tiled.tiles > 4
    assert psnr(whole.image, x) < 40  # the network really changes the image
    assert psnr(tiled.image, whole.image) >= 45
    np.testing.assert_allclose(tiled.sigma, whole.sigma, atol=0.05)


def test_gkmnet_tiles_with_a_note_that_it_is_not_tile_exact():
    notes = []
    eng = Engine(tiny_model("gkmnet").eval(), CPU, tiling=TileSettings(tile=32, overlap=16), notify=notes.append)
    for _ in range(2):
        out = eng.run(photo(64, 80), sigma=True)
        assert out.image.shape == (64, 80, 3) and out.sigma.shape == (64, 80) and out.tiles == 6
    assert len(notes) == 1 and "not tile-exact" in notes[0]


def test_context_built_once_per_image(monkeypatch):
    model = tiny_model().eval()
    calls = {"stats": 0, "make": 0}
    stats, make = model.context_stats_padded, model.make_context

    def counting_stats(*a, **k):
        calls["stats"] += 1
        return stats(*a, **k)

    def counting_make(*a, **k):
        calls["make"] += 1
        return make(*a, **k)

    monkeypatch.setattr(model, "context_stats_padded", counting_stats)
    monkeypatch.setattr(model, "make_context", counting_make)
    ticks = []
    result = Engine(model, CPU, tiling=TileSettings(tile=32, overlap=16)).run(
        photo(64, 96), on_tile=lambda d, t: ticks.append((d, t))
    )
    assert result.tiles == 6
    assert calls == {"stats": 6, "make": 1}
    assert ticks == [(i, 12) for i in range(1, 13)]  # context pass, then deblur pass


def test_run_restores_training_mode():
    model = tiny_model().eval().train()
    Engine(model, CPU).run(photo(32, 32))
    assert model.training
    model.eval()
    Engine(model, CPU).run(photo(32, 32))
    assert not model.training


def test_gray_runs_as_replicated_rgb():
    model = tiny_model().eval()
    gray = photo(40, 56, c=1)
    out = Engine(model, CPU).run(gray).image
    rgb = Engine(model, CPU).run(np.repeat(gray, 3, axis=2)).image
    assert out.shape == (40, 56, 1)
    np.testing.assert_allclose(out[:, :, 0], rgb.mean(2), atol=1e-6)


def test_non_finite_low_precision_tile_is_rerun_in_fp32():
    model = tiny_model().eval()
    forward = model.forward

    def poisoned(y, context=None, **kw):
        out = forward(y, context, **kw)
        if torch.is_autocast_enabled("cpu"):
            out.image[..., 0, 0] = float("nan")
        return out

    model.forward = poisoned  # type: ignore[method-assign]
    notes = []
    x = photo(64, 96)
    eng = Engine(model, CPU, torch.bfloat16, TileSettings(tile=32, overlap=16), notes.append)
    result = eng.run(x)
    ref = Engine(model, CPU, torch.float32, TileSettings(tile=32, overlap=16)).run(x)
    assert np.isfinite(result.image).all()
    assert result.fp32_reruns == result.tiles
    np.testing.assert_allclose(result.image, ref.image, atol=1e-5)
    assert len(notes) == 1 and "fp32" in notes[0]


def test_out_of_memory_halves_the_tile_once():
    model = tiny_model().eval()
    forward = model.forward

    def limited(y, context=None, **kw):
        if y.shape[-1] * y.shape[-2] > 96 * 96:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(y, context, **kw)

    model.forward = limited  # type: ignore[method-assign]
    notes = []
    eng = Engine(model, CPU, tiling=TileSettings(tile=128, overlap=16), notify=notes.append)
    x = photo(128, 128)
    first = eng.run(x)
    second = eng.run(x)
    assert first.core == 64 and first.tiles == 4 and second.core == 64
    assert len(notes) == 1 and "halved to 64" in notes[0]
    whole = Engine(tiny_model().eval(), CPU, tiling=TileSettings(tile=4096)).run(x)
    assert psnr(first.image, whole.image) > 40

    def always(y, context=None, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    model.forward = always  # type: ignore[method-assign]
    with pytest.raises(GkmError, match="out of memory"):
        Engine(model, CPU, tiling=TileSettings(tile=128, overlap=16)).run(x)


def test_cpu_allocator_failure_also_halves_the_tile():
    """The CPU allocator raises a plain RuntimeError; it must not end the run with a traceback."""
    model = tiny_model().eval()
    forward = model.forward

    def limited(y, context=None, **kw):
        if y.shape[-1] * y.shape[-2] > 96 * 96:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                "allocate 1 bytes"
            )
        return forward(y, context, **kw)

    model.forward = limited  # type: ignore[method-assign]
    notes = []
    result = Engine(model, CPU, tiling=TileSettings(tile=128, overlap=16), notify=notes.append).run(photo(128, 128))
    assert result.core == 64 and len(notes) == 1

    def broken(y, context=None, **kw):
        raise RuntimeError("some other failure")

    model.forward = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="some other failure"):
        Engine(model, CPU, tiling=TileSettings(tile=128, overlap=16)).run(photo(128, 128))


def test_overlap_is_rounded_and_validated():
    notes = []
    eng = Engine(tiny_model().eval(), CPU, tiling=TileSettings(tile=64, overlap=20), notify=notes.append)
    assert eng.overlap == 32 and notes
    with pytest.raises(UsageError):
        Engine(tiny_model().eval(), CPU, tiling=TileSettings(tile=8))


@pytest.mark.slow
def test_tiled_matches_untiled_full_ggkmnet():
    """The paper-size GGKMNet (weights perturbed: untrained it returns its input), 512 x 768,
    256-px tiles with the default overlap (the spec's measured 64 px): PSNR >= 45 dB against the
    untiled run and a blur map within 0.1 px; with the full receptive radius (96 px) as overlap
    the blur map agrees to 0.05 px (measured: 0.050 and 0.008 px at most)."""
    torch.manual_seed(0)
    model = create_model("ggkmnet").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = photo(512, 768, seed=3)
    whole = Engine(model, CPU, tiling=TileSettings(tile=4096)).run(x, sigma=True)
    tiled = Engine(model, CPU, tiling=TileSettings(tile=256)).run(x, sigma=True)
    assert whole.tiles == 1 and tiled.tiles == 6
    assert psnr(whole.image, x) < 40
    assert psnr(tiled.image, whole.image) >= 45
    np.testing.assert_allclose(tiled.sigma, whole.sigma, atol=0.1)
    assert np.abs(tiled.sigma - whole.sigma).mean() < 0.005
    wide = Engine(model, CPU, tiling=TileSettings(tile=256, overlap=96)).run(x, sigma=True)
    np.testing.assert_allclose(wide.sigma, whole.sigma, atol=0.05)


# ---- folders, shards, ranks ---------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_expand_inputs(tmp_path):
    a = _touch(tmp_path / "in" / "a.png")
    b = _touch(tmp_path / "in" / "sub" / "b.JPG")
    _touch(tmp_path / "in" / "notes.txt")
    _touch(tmp_path / "in" / ".hidden.png")
    _touch(tmp_path / "in" / ".a.png.123.tmp")
    c = _touch(tmp_path / "c.tif")
    flat = expand_inputs([str(tmp_path / "in")])
    assert [s.path for s in flat] == [a]
    deep = expand_inputs([str(tmp_path / "in"), str(c), str(tmp_path / "in" / "a.png")], recursive=True)
    assert [s.path for s in deep] == sorted([a, b, c], key=str)
    assert {s.path: s.root for s in deep}[b] == tmp_path / "in"
    globbed = expand_inputs([str(tmp_path / "in" / "**" / "*.JPG")])
    assert [(s.path, s.root) for s in globbed] == [(b, tmp_path / "in")]
    excluded = expand_inputs([str(tmp_path / "in")], recursive=True, exclude=tmp_path / "in" / "sub")
    assert [s.path for s in excluded] == [a]
    with pytest.raises(UsageError, match="no such file"):
        expand_inputs([str(tmp_path / "nope")])
    with pytest.raises(UsageError, match="match"):
        expand_inputs([str(tmp_path / "*.bmp")])
    with pytest.raises(UsageError, match="only input"):
        expand_inputs(["-", str(c)])


def test_plan_jobs_mirrors_and_names(tmp_path):
    root = tmp_path / "in"
    srcs = [Source(root / "a.png", root), Source(root / "sub" / "b.tiff", root)]
    out = plan_jobs(srcs, str(tmp_path / "out"), suffix=None, beside_suffix="_deblurred", format_of=lambda s: None)
    assert [j.output for j in out] == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.tiff"]
    beside = plan_jobs(srcs, None, suffix=None, beside_suffix="_deblurred", format_of=lambda s: "jpeg")
    assert [j.output for j in beside] == [root / "a_deblurred.jpg", root / "sub" / "b_deblurred.jpg"]
    same = plan_jobs(srcs[:1], str(root), suffix=None, beside_suffix="_x", format_of=lambda s: "tiff")
    assert same[0].output == root / "a_x.tif"
    with pytest.raises(UsageError, match="stdout"):
        plan_jobs(srcs, "-", suffix=None, beside_suffix="", format_of=lambda s: None)


def test_check_jobs_refuses_overwriting_inputs_and_collisions(tmp_path):
    a = _touch(tmp_path / "a.png")
    b = _touch(tmp_path / "a.tif")
    srcs = [Source(a, tmp_path), Source(b, tmp_path)]
    with pytest.raises(UsageError, match="refusing to write over the input"):
        check_jobs(plan_jobs(srcs[:1], str(tmp_path), suffix="", beside_suffix="_d", format_of=lambda s: None))
    with pytest.raises(UsageError, match="both be written"):
        check_jobs(plan_jobs(srcs, str(tmp_path / "o"), suffix=None, beside_suffix="", format_of=lambda s: "png"))
    link = tmp_path / "o2" / "a.png"
    link.parent.mkdir()
    link.hardlink_to(a)
    with pytest.raises(UsageError, match="refusing"):
        check_jobs(plan_jobs(srcs[:1], str(tmp_path / "o2"), suffix=None, beside_suffix="", format_of=lambda s: None))


def test_drop_previous_outputs(tmp_path):
    a, done, other = (_touch(tmp_path / n) for n in ("a.png", "a_deblurred.png", "x_deblurred.png"))
    kept = drop_previous_outputs([Source(p, tmp_path) for p in (a, done, other)], "_deblurred")
    assert [s.path for s in kept] == [a, other]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), shards=st.integers(1, 5), world=st.integers(1, 4))
def test_shards_and_ranks_partition_the_list(n, shards, world):
    items = list(range(n))
    parts = [split_work(items, (i, shards), RankInfo(r, world)) for i in range(shards) for r in range(world)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == items  # nothing missing, nothing twice


def test_parse_shard_and_rank_env():
    assert parse_shard(None) == (0, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    assert runtime.rank_from_env({}) == RankInfo(0, 1, None)
    assert runtime.rank_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == RankInfo(1, 2, 1)
    with pytest.raises(UsageError):
        runtime.rank_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert take_shard(list(range(5)), 1, 2) == [1, 3]


# ---- pipeline ----------------------------------------------------------------------------------


def _stages(load, process, write, skip=lambda j: False):
    return Stages(
        skip=skip,
        load=load,
        process=process,
        write=write,
        megapixels=lambda x: 1.0,
        names=lambda j: (str(j), f"out{j}"),
    )


def test_pipeline_overlaps_reading_with_the_network_and_keeps_order():
    second_loaded = threading.Event()
    written = []

    def load(j):
        if j == 1:
            second_loaded.set()
        if j == 2:
            raise GkmError(f"{j}: corrupt")
        return j

    def process(j, x):
        if j == 0:  # only finishes if the reader thread loads item 1 meanwhile
            assert second_loaded.wait(10)
        return x * 10

    records = run_pipeline(
        list(range(5)), _stages(load, process, lambda j, r: written.append(r), skip=lambda j: j == 3), lambda r: None
    )
    assert [r.status for r in records] == [OK, OK, FAILED, SKIPPED, OK]
    assert [r.input for r in records] == ["0", "1", "2", "3", "4"]
    assert written == [0, 10, 40]
    assert records[2].error == "2: corrupt"


def test_pipeline_write_errors_stop_the_run():
    import errno

    calls, seen = [], []

    def write(j, r):
        calls.append(j)
        raise ImageWriteError("out: cannot write (disk full)", errno=errno.ENOSPC)

    with pytest.raises(ImageWriteError, match="disk full"):
        run_pipeline(list(range(20)), _stages(lambda j: j, lambda j, x: x, write), seen.append)
    assert calls == [0]
    assert [(r.status, r.error) for r in seen] == [(FAILED, "out: cannot write (disk full)")]  # reported, then stopped


def test_pipeline_other_write_errors_fail_that_image_only():
    def write(j, r):
        if j == 1:
            raise ImageWriteError(f"out{j}: is a directory")

    records = run_pipeline(list(range(3)), _stages(lambda j: j, lambda j, x: x, write), lambda r: None)
    assert [r.status for r in records] == [OK, FAILED, OK] and records[1].error == "out1: is a directory"


def test_pipeline_bugs_propagate():
    def process(j, x):
        raise ZeroDivisionError("bug")

    start = time.perf_counter()
    with pytest.raises(ZeroDivisionError):
        run_pipeline(list(range(3)), _stages(lambda j: j, process, lambda j, r: None), lambda r: None)
    assert time.perf_counter() - start < 10


# ---- blur maps -----------------------------------------------------------------------------------


def test_sigma_map_encodings_round_trip():
    import cv2
    import tifffile

    rng = np.random.default_rng(0)
    sigma = rng.uniform(0, 20, (30, 40)).astype(np.float32)
    png = MapSettings("png")
    stored = cv2.imdecode(np.frombuffer(encode_sigma_map(sigma, png), np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16 and stored.shape == sigma.shape
    inside = sigma <= 16
    np.testing.assert_allclose(stored[inside] / png.scale, sigma[inside], atol=0.5 / png.scale + 1e-6)
    assert (stored[~inside] == 65535).all()
    tif = tifffile.imread(__import__("io").BytesIO(encode_sigma_map(sigma, MapSettings("tiff"))))
    np.testing.assert_array_equal(tif, stored)
    npy = np.load(__import__("io").BytesIO(encode_sigma_map(sigma, MapSettings("npy"))))
    np.testing.assert_array_equal(npy, sigma)
    heat = cv2.imdecode(
        np.frombuffer(encode_sigma_map(sigma, MapSettings("png", heatmap=True)), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert heat.shape == (30, 40, 3) and heat.dtype == np.uint8
    assert not np.array_equal(heatmap_rgb(np.zeros((2, 2)), 16)[0, 0], heatmap_rgb(np.full((2, 2), 16.0), 16)[0, 0])
    rec = sidecar_record(sigma, png, model="m")
    assert (
        rec["scale"] == png.scale
        and rec["model"] == "m"
        and rec["clipped_fraction"] == pytest.approx(np.mean(sigma > 16))
    )
    assert quantise_sigma(np.array([np.nan, -1.0]), 16, 65535).tolist() == [0, 0]
    with pytest.raises(UsageError):
        MapSettings("tiff", heatmap=True)
    with pytest.raises(UsageError):
        MapSettings("jpeg")


# ---- Python API ------------------------------------------------------------------------------------


def test_api_docstring_example_runs():
    result = doctest.testmod(gkm_cli.api, verbose=False)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("shape", [(33, 47), (33, 47, 1), (33, 47, 3), (33, 47, 4), (33, 47, 2)])
def test_api_arrays_keep_dtype_shape_and_alpha(dtype, shape):
    d = Deblurrer.from_model(tiny_model().eval(), device="cpu")
    rng = np.random.default_rng(1)
    if dtype == "float32":
        arr = rng.random(shape, dtype=np.float32)
    else:
        arr = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    out = d.deblur(arr)
    assert out.shape == arr.shape and out.dtype == arr.dtype
    if len(shape) == 3 and shape[2] in (2, 4):
        np.testing.assert_array_equal(out[..., -1], arr[..., -1])  # alpha untouched
        assert not np.array_equal(out[..., 0], arr[..., 0])
    sigma = d.blurmap(arr)
    assert sigma.shape == shape[:2] and sigma.dtype == np.float32 and np.isfinite(sigma).all() and sigma.min() >= 0


def test_api_matches_engine_and_rejects_bad_input():
    model = tiny_model().eval()
    d = Deblurrer.from_model(model, device="cpu", tile=32, tile_overlap=16)
    x = photo(48, 64)
    np.testing.assert_allclose(d.deblur(x), Engine(model, CPU, tiling=TileSettings(32, 16)).run(x).image)
    assert d.describe()["tile"] == 32 and d.describe()["precision"] == "fp32"
    with pytest.raises(UsageError):
        d.deblur(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(UsageError):
        d.deblur(np.zeros((8, 8, 5), np.uint8))


def test_api_without_shipped_weights_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GKM_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="no trained weights"):
        Deblurrer()
    with pytest.raises(ModelError, match="unknown model"):
        Deblurrer("nosuchnet")
