"""Speed, memory and size of the networks: what ``gkm benchmark`` measures.

Per configuration (model x size x device x precision x batch x tiling) it reports:

* **parameters** used at inference (training-only heads excluded);
* **MACs**, three ways (all on the *reference* path, so the number describes the network, not
  the fast kernels; counted on the ``meta`` device, so nothing is computed):

  - ``macs_all``: every op, ``torch.utils.flop_counter.FlopCounterMode`` flops / 2, including
    the functional Gaussian bank (direct 2-D), einsums and attention;
  - ``macs_modules``: true MACs of convolution / linear / LSTM *modules* only (forward hooks):
    what the papers' tables mean to count, no functional Gaussian bank;
  - ``macs_paper``: the papers' printed convention, ``thop`` MACs / 2 over those modules
    (``thop`` counts a conv's bias as one MAC per output, a transposed conv on its *output*
    grid, i.e. stride^2 too many, and 4 ops per element for an affine BatchNorm). GKMNet's and
    GGKMNet's papers print 147.8 G and 158.4 G at 1280 x 720 this way (docs/PERFORMANCE.md);

* **latency**: median and spread (quartiles, min, max) over ``runs`` timed forwards after
  ``warmup`` untimed ones, under ``torch.inference_mode`` (CUDA synchronised around each run);
* **throughput** in megapixels per second (batch x H x W / median);
* **peak memory**: CUDA ``max_memory_allocated`` on GPUs; on the CPU the growth of the process's
  peak RSS (``resource.getrusage``) over the RSS before the first forward. RSS peaks are
  process-lifetime, so :func:`run_isolated` measures each configuration in a fresh subprocess;
* with ``compare_reference``, the same model on the reference path (direct 2-D Gaussian bank,
  no fused kernels, eager), timed interleaved run by run with the fast path in the same process,
  and the ratio. Interleaving keeps the ratio honest on a machine shared with other jobs.

Sizes are written ``WIDTHxHEIGHT`` (``1280x720`` is 720 rows).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gkm_cli.errors import GkmError, ModelError, UsageError
from gkm_cli.runtime import (
    autocast,
    host_info,
    intra_op_threads,
    parse_precision,
    precision_dtype,
    resolve_device,
    select_dtype,
)

if TYPE_CHECKING:  # the networks load lazily: `gkm benchmark --help` stays fast
    from gkm_cli.nets.base import GkmNetwork

#: One measured configuration as JSON (keys: RESULT_FIELDS).
BenchRecord = dict[str, Any]

#: Fields every result record carries (the JSON schema, checked by the tests).
RESULT_FIELDS = (
    "model",
    "width",
    "height",
    "batch",
    "device",
    "precision",
    "tile",
    "compile",
    "channels_last",
    "cuda_graphs",
    "threads",
    "weights",
    "gaussian_methods",
    "params",
    "macs_all_g",
    "macs_modules_g",
    "macs_paper_g",
    "paper_macs_g",
    "runs",
    "warmup",
    "latency_median_s",
    "latency_q1_s",
    "latency_q3_s",
    "latency_min_s",
    "latency_max_s",
    "latencies_s",
    "mpix_per_s",
    "ns_per_pixel",
    "per_pixel_vs_best",
    "peak_memory_mb",
    "memory_kind",
    "process_peak_rss_mb",
    "reference_runs",
    "reference_latency_median_s",
    "reference_latency_min_s",
    "speedup_vs_reference",
    "max_abs_diff_vs_reference",
)


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to measure. ``height``/``width`` in pixels; ``tile`` = engine core size
    (None: whole image in one forward, no engine); ``threads`` = torch intra-op threads (None:
    leave PyTorch's default); ``tiny``: the model's small test config (smoke runs and tests)."""

    model: str
    height: int
    width: int
    batch: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    tile: int | None = None
    compile: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    runs: int = 5
    warmup: int = 1
    threads: int | None = None
    compare_reference: bool = False
    #: Timed runs of the (slow) reference path; fewer than ``runs`` so a comparison stays short.
    reference_runs: int = 1
    weights: str | None = None
    tiny: bool = False
    count_macs: bool = True


@dataclass(frozen=True)
class MacCounts:
    """Multiply-accumulates of one forward pass, in MACs (see module doc for the conventions)."""

    all: float
    modules: float
    paper: float


# ----------------------------------------------------------------------------------------------
# Parsing


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` (width x height) or ``"512"`` (square) -> (height, width) in pixels."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise UsageError(f"--size {text!r}: expected WIDTHxHEIGHT with positive integers, e.g. 1280x720")
    width, height = values
    return height, width


def validate(cfg: BenchConfig) -> None:
    """Reject impossible combinations early, with one-line reasons (UsageError / ModelError)."""
    from gkm_cli.nets import get_spec

    parse_precision(cfg.precision, allow_auto=False)  # a benchmark names what it measures
    # The spec's fp16/bf16 support, and no reduced precision on a CPU without matrix units for it.
    select_dtype(cfg.precision, resolve_device(cfg.device), get_spec(cfg.model))
    if cfg.runs < 1 or cfg.warmup < 0 or cfg.batch < 1 or cfg.reference_runs < 1:
        raise UsageError("--runs, --reference-runs and --batch must be >= 1 and --warmup >= 0")
    if cfg.cuda_graphs and not cfg.device.startswith("cuda"):
        raise UsageError("--cuda-graphs needs --device cuda (CUDA graphs replay GPU work only)")
    if cfg.cuda_graphs and cfg.tile is not None:
        raise UsageError("--cuda-graphs times one fixed-shape forward; it cannot be combined with --tile")
    if cfg.tile is not None and cfg.batch != 1:
        raise UsageError("--tile runs one image at a time through the engine; use --batch 1")


# ----------------------------------------------------------------------------------------------
# MAC counting


def _module_macs(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor | tuple[torch.Tensor, ...]
) -> tuple[float, float]:
    """(true MACs, thop-rule ops) of one module call; (0, 0) for modules that are not counted."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        out = output if isinstance(output, torch.Tensor) else output[0]
        x = inputs[0]
        k = module.weight.shape[2] * module.weight.shape[3]
        per_out_thop = module.in_channels // module.groups * k + (1 if module.bias is not None else 0)
        thop = out.numel() * per_out_thop
        if isinstance(module, nn.ConvTranspose2d):
            true = x.numel() * (module.out_channels // module.groups) * k
        else:
            true = out.numel() * (module.in_channels // module.groups) * k
        return float(true), float(thop)
    if isinstance(module, nn.Linear):
        assert isinstance(output, torch.Tensor)
        macs = output.numel() * module.in_features
        return float(macs), float(macs)
    if isinstance(module, nn.LSTMCell):
        batch = inputs[0].shape[0] if inputs[0].dim() == 2 else 1
        macs = batch * 4 * module.hidden_size * (module.input_size + module.hidden_size)
        return float(macs), float(macs)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        n = inputs[0].numel()
        return 0.0, float(4 * n if module.affine else 2 * n)
    return 0.0, 0.0


def count_macs(
    model_name: str, height: int, width: int, batch: int = 1, overrides: dict[str, object] | None = None
) -> MacCounts:
    """MACs of one inference forward of ``model_name`` on batch x 3 x height x width.

    Runs the reference path on the ``meta`` device (shapes only: instant, no memory), with
    :class:`~torch.utils.flop_counter.FlopCounterMode` for every op and forward hooks on the
    conv / linear / LSTM / BatchNorm modules for the module conventions.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from gkm_cli.nets import create_model

    with torch.device("meta"):
        model = create_model(model_name, **(overrides or {})).eval()
        x = torch.empty(batch, 3, height, width)
    model.set_fast_paths(False)
    totals = [0.0, 0.0]

    def hook(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor | tuple[torch.Tensor, ...]
    ) -> None:
        true, thop = _module_macs(module, inputs, output)
        totals[0] += true
        totals[1] += thop

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return MacCounts(all=counter.get_total_flops() / 2.0, modules=totals[0], paper=totals[1] / 2.0)


# ----------------------------------------------------------------------------------------------
# Timing and memory


def latency_summary(times: list[float]) -> dict[str, float]:
    """Median, quartiles (inclusive method; equal to the value for one run), min and max, seconds."""
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return {
        "median": statistics.median(times),
        "q1": q1,
        "q3": q3,
        "min": min(times),
        "max": max(times),
    }


def _rss_now_bytes() -> int | None:
    """Current resident set size of this process (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_bytes() -> int:
    """Process-lifetime peak RSS (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_model(cfg: BenchConfig) -> tuple[GkmNetwork, str]:
    """The network to time: ``cfg.weights`` if given, else random initialisation (speed and
    memory do not depend on the weights' values)."""
    from gkm_cli.nets import TINY_OVERRIDES, create_model

    if cfg.weights:
        from gkm_cli.nets.checkpoint import load_weights

        model = load_weights(Path(cfg.weights))
        if model.spec.name != cfg.model:
            raise ModelError(f"{cfg.weights} holds {model.spec.name}, not {cfg.model}")
        return model, str(cfg.weights)
    torch.manual_seed(0)
    overrides = TINY_OVERRIDES[cfg.model] if cfg.tiny else {}
    return create_model(cfg.model, **overrides).eval(), "random init" + (" (tiny config)" if cfg.tiny else "")


def _gaussian_methods(model: GkmNetwork, height: int, width: int, device: torch.device) -> dict[str, str]:
    """The Gaussian-bank method the fast path uses at each scale (finest last), e.g. {"720x1280": "fft"}."""
    from gkm_cli.ops.gaussian import GaussianBank, choose_method

    method = model.gaussian_method()
    bank = getattr(model, "bank", None)  # every registry network has one
    assert isinstance(bank, GaussianBank)
    m = model.spec.size_multiple
    hp, wp = -(-height // m) * m, -(-width // m) * m
    out: dict[str, str] = {}
    for t in range(model.scales_count):
        k = 2 ** (model.scales_count - 1 - t)
        h, w = hp // k, wp // k
        out[f"{h}x{w}"] = choose_method(bank, h, w, device) if method == "auto" else method
    return out


def _tiled_runner(
    model: GkmNetwork, device: torch.device, precision: str, tile: int, x: torch.Tensor
) -> Callable[[], object]:
    """A callable that runs one image through the tiling engine with ``tile`` px cores."""
    from gkm_cli.engine.runner import Engine
    from gkm_cli.engine.tiling import TileSettings

    engine = Engine(model, device, precision_dtype(precision), TileSettings(tile=tile))
    pixels = x[0].permute(1, 2, 0).float().cpu().numpy()
    return lambda: engine.run(pixels, image=True)


def run_config(cfg: BenchConfig) -> BenchRecord:
    """Measure one configuration in this process (see :func:`run_isolated` for clean RSS).
    ``cfg.threads`` holds for this measurement only: the previous thread count is restored."""
    validate(cfg)
    with intra_op_threads(cfg.threads):
        return _measure(cfg)


def _measure(cfg: BenchConfig) -> BenchRecord:
    device = resolve_device(cfg.device)
    model, weights = _load_model(cfg)
    model = model.to(device)
    record: BenchRecord = dict.fromkeys(RESULT_FIELDS)
    record.update(
        model=cfg.model,
        width=cfg.width,
        height=cfg.height,
        batch=cfg.batch,
        device=str(device),
        precision=cfg.precision,
        tile=cfg.tile,
        compile=cfg.compile,
        channels_last=cfg.channels_last,
        cuda_graphs=cfg.cuda_graphs,
        threads=torch.get_num_threads(),
        weights=weights,
        gaussian_methods=_gaussian_methods(model, cfg.height, cfg.width, device),
        params=model.inference_parameters(),
        runs=cfg.runs,
        warmup=cfg.warmup,
        paper_macs_g=model.spec.paper_macs_720p if (cfg.width, cfg.height) == (1280, 720) and not cfg.tiny else None,
    )
    if cfg.count_macs:
        from gkm_cli.nets import TINY_OVERRIDES, model_config

        overrides: dict[str, object] = model_config(model) if not cfg.tiny else dict(TINY_OVERRIDES[cfg.model])
        macs = count_macs(cfg.model, cfg.height, cfg.width, cfg.batch, overrides)
        record.update(macs_all_g=macs.all / 1e9, macs_modules_g=macs.modules / 1e9, macs_paper_g=macs.paper / 1e9)

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(cfg.batch, 3, cfg.height, cfg.width, generator=gen).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)

    fast = _fast_runner(cfg, model, device, x)
    reference = _reference_runner(cfg, model, device, x) if cfg.compare_reference else None

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_now_bytes()
    peak_before = _peak_rss_bytes()
    with torch.inference_mode():
        for _ in range(max(cfg.warmup, 0)):
            fast()
        _sync(device)
        times = [_timed(fast, device)]  # peak memory is reached on the first forward
        if device.type == "cuda":
            record.update(
                peak_memory_mb=torch.cuda.max_memory_allocated(device) / 2**20, memory_kind="cuda_max_allocated"
            )
        else:
            base = rss_before if rss_before is not None else peak_before
            record.update(peak_memory_mb=max(_peak_rss_bytes() - base, 0) / 2**20, memory_kind="cpu_peak_rss_delta")
        ref_times: list[float] = []
        out_fast = out_ref = None
        # The reference path is slow by design: it gets no warm-up of its own (the fast path's
        # already built the shared primitives) and only ``reference_runs`` timed runs,
        # interleaved with the first fast runs so a busy machine slows both alike.
        for i in range(cfg.runs):
            if i > 0:
                times.append(_timed(fast, device))
            if reference is not None and i < cfg.reference_runs:
                if i == 0 and cfg.tile is None:
                    start = time.perf_counter()
                    out_ref = _image_of(reference())
                    _sync(device)
                    ref_times.append(time.perf_counter() - start)
                else:
                    ref_times.append(_timed(reference, device))
        if out_ref is not None:
            out_fast = _image_of(fast())
    record["process_peak_rss_mb"] = _peak_rss_bytes() / 2**20
    lat = latency_summary(times)
    record.update(
        latency_median_s=lat["median"],
        latency_q1_s=lat["q1"],
        latency_q3_s=lat["q3"],
        latency_min_s=lat["min"],
        latency_max_s=lat["max"],
        latencies_s=times,
        mpix_per_s=cfg.batch * cfg.height * cfg.width / lat["median"] / 1e6,
        ns_per_pixel=lat["median"] / (cfg.batch * cfg.height * cfg.width) * 1e9,
    )
    if ref_times:
        ref = latency_summary(ref_times)
        record.update(
            reference_runs=len(ref_times),
            reference_latency_median_s=ref["median"],
            reference_latency_min_s=ref["min"],
            speedup_vs_reference=ref["median"] / lat["median"],
        )
    if out_fast is not None and out_ref is not None:
        record["max_abs_diff_vs_reference"] = float((out_fast.float() - out_ref.float()).abs().max())
    return record


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _image_of(out: object) -> torch.Tensor:
    from gkm_cli.nets.base import DeblurOutput

    image = out.image if isinstance(out, DeblurOutput) else out
    assert isinstance(image, torch.Tensor)
    return image


def _fast_runner(cfg: BenchConfig, model: GkmNetwork, device: torch.device, x: torch.Tensor) -> Callable[[], object]:
    """The callable timed as "fast": eager fast paths, optionally compiled or CUDA-graphed."""
    if cfg.tile is not None:
        if cfg.compile:
            raise UsageError("--compile with --tile is not supported (tiles change shape); drop one")
        return _tiled_runner(model, device, cfg.precision, cfg.tile, x)
    forward: Callable[[torch.Tensor], object] = model
    if cfg.compile:
        try:
            forward = torch.compile(model)
        except Exception as e:
            raise GkmError(f"--compile failed: {type(e).__name__}: {e}") from None

    def run(inp: torch.Tensor = x) -> object:
        with autocast(device, precision_dtype(cfg.precision)):
            return forward(inp)

    if not cfg.cuda_graphs:
        return run
    return _cuda_graph(run, x, device)


def _cuda_graph(run: Callable[[torch.Tensor], object], x: torch.Tensor, device: torch.device) -> Callable[[], object]:
    """Capture one forward on a static input into a CUDA graph; the callable replays it."""
    static_x = x.clone()
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):  # warm up allocators, cuDNN/cuFFT plans and cached bank tensors
            run(static_x)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_out = run(static_x)

    def replay() -> object:
        graph.replay()
        return static_out

    return replay


def _reference_runner(
    cfg: BenchConfig, model: GkmNetwork, device: torch.device, x: torch.Tensor
) -> Callable[[], object]:
    """The reference path of the same model (eager, direct 2-D bank, no fused kernels)."""
    inner = _tiled_runner(model, device, cfg.precision, cfg.tile, x) if cfg.tile is not None else None

    def run() -> object:
        with model.reference_mode():
            if inner is not None:
                return inner()
            with autocast(device, precision_dtype(cfg.precision)):
                return model(x)

    return run


# ----------------------------------------------------------------------------------------------
# Isolation, reports


def run_isolated(cfg: BenchConfig, timeout: float | None = None) -> BenchRecord:
    """Run :func:`run_config` in a fresh Python process (clean peak RSS) and return its record.

    Errors in the child come back as the same kind of :class:`GkmError` with its message.
    """
    payload = json.dumps(dataclasses.asdict(cfg))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gkm_cli.benchmark", payload],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GkmError(f"benchmark of {cfg.model} at {cfg.width}x{cfg.height} timed out after {timeout} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise GkmError(f"benchmark worker failed (exit {proc.returncode}): {' | '.join(tail)}")
    result: BenchRecord = json.loads(lines[-1])
    if "error" in result:
        kinds = {"UsageError": UsageError, "ModelError": ModelError}
        raise kinds.get(result.get("kind", ""), GkmError)(result["error"])
    return result


def _worker_main(argv: list[str]) -> int:
    """Child side of :func:`run_isolated`: one JSON config in argv, one JSON record on stdout."""
    cfg = BenchConfig(**json.loads(argv[0]))
    try:
        record = run_config(cfg)
    except GkmError as e:
        print(json.dumps({"error": str(e), "kind": type(e).__name__}))
        return 0
    print(json.dumps(record))
    return 0


def mark_per_pixel_cost(results: list[BenchRecord]) -> list[BenchRecord]:
    """Set ``per_pixel_vs_best``: each record's ns/pixel over the lowest ns/pixel of the same
    model, device, precision, batch and tiling in ``results`` (1.0 = the cheapest size). A size
    sweep whose ratios climb well above ~1.3 has a super-linear path at the larger sizes."""

    def key(r: BenchRecord) -> tuple[object, ...]:
        return (r["model"], r["device"], r["precision"], r["batch"], r["tile"], r["compile"], r["channels_last"])

    best: dict[tuple[object, ...], float] = {}
    for r in results:
        if r.get("ns_per_pixel"):
            best[key(r)] = min(best.get(key(r), math.inf), r["ns_per_pixel"])
    for r in results:
        if r.get("ns_per_pixel"):
            r["per_pixel_vs_best"] = r["ns_per_pixel"] / best[key(r)]
    return results


#: Sizes of ``gkm benchmark --sweep`` (WIDTH, HEIGHT): from a small crop to full HD.
SWEEP_SIZES: tuple[tuple[int, int], ...] = ((256, 256), (512, 512), (1280, 720), (1920, 1080))


def report(results: list[BenchRecord], device: torch.device | None = None) -> dict[str, object]:
    """The JSON document ``gkm benchmark --json`` prints: machine facts + one record per config."""
    from gkm_cli import __version__

    mark_per_pixel_cost(results)
    return {
        "gkm": __version__,
        "machine": host_info(device),
        "note": "latencies in seconds, memory in MiB, MACs in 1e9; sizes WIDTHxHEIGHT; "
        "machine may be shared with other jobs (compare medians and interleaved ratios only)",
        "results": results,
    }


def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


TABLE_COLUMNS: tuple[tuple[str, Callable[[BenchRecord], str]], ...] = (
    ("model", lambda r: r["model"]),
    ("WxH", lambda r: f"{r['width']}x{r['height']}" + (f" x{r['batch']}" if r["batch"] > 1 else "")),
    ("device", lambda r: r["device"] + (f" tile {r['tile']}" if r["tile"] else "")),
    (
        "prec.",
        lambda r: (
            r["precision"]
            + (" +compile" if r["compile"] else "")
            + (" +cl" if r["channels_last"] else "")
            + (" +graph" if r["cuda_graphs"] else "")
        ),
    ),
    ("params M", lambda r: _fmt(r["params"] / 1e6)),
    ("GMACs all", lambda r: _fmt(r["macs_all_g"], ".1f")),
    ("GMACs mod.", lambda r: _fmt(r["macs_modules_g"], ".1f")),
    (
        "GMACs paper",
        lambda r: _fmt(r["macs_paper_g"], ".1f") + (f" ({r['paper_macs_g']})" if r["paper_macs_g"] else ""),
    ),
    ("median s", lambda r: _fmt(r["latency_median_s"])),
    ("IQR s", lambda r: f"{_fmt(r['latency_q1_s'])}-{_fmt(r['latency_q3_s'])}"),
    ("MPix/s", lambda r: _fmt(r["mpix_per_s"], ".3f")),
    ("ns/px", lambda r: _fmt(r["ns_per_pixel"], ".0f")),
    ("x best", lambda r: _fmt(r["per_pixel_vs_best"], ".2f")),
    ("peak MiB", lambda r: _fmt(r["peak_memory_mb"], ".0f")),
    (
        "ref. s",
        lambda r: (
            _fmt(r["reference_latency_median_s"])
            + (f" ({r['reference_runs']} run{'s' if r['reference_runs'] != 1 else ''})" if r["reference_runs"] else "")
        ),
    ),
    ("speed-up", lambda r: _fmt(r["speedup_vs_reference"], ".2f") + ("x" if r["speedup_vs_reference"] else "")),
)


def to_markdown(doc: dict[str, Any]) -> str:
    """A Markdown table of a :func:`report` document, with the machine it was measured on."""
    m = doc["machine"]
    lines = [
        f"gkm {doc['gkm']}, torch {m['torch']}, {m['cpu']} ({m['cpu_count']} CPUs, {m['threads']} torch threads)"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        "",
        "| " + " | ".join(name for name, _ in TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for r in doc["results"]:
        lines.append("| " + " | ".join(fn(r) for _, fn in TABLE_COLUMNS) + " |")
    lines += ["", doc["note"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
