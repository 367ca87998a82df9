"""``gkm benchmark`` (speed, memory, parameters, MACs) and ``gkm models export`` (ONNX).

Exit codes: 0 on success, 2 for usage errors (bad size, unknown model, impossible combination
such as ``--cuda-graphs`` on the CPU or ``--tile`` without the tiling engine), 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gkm_cli.errors import UsageError

__all__ = ["benchmark", "export", "register"]


def benchmark(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Architecture(s) to measure (repeatable; default: the default model). 'all' = every one.",
        ),
    ] = None,
    size: Annotated[
        list[str] | None,
        typer.Option("--size", "-s", help="Input size WIDTHxHEIGHT (repeatable), e.g. 1280x720. Default 512x512."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "cpu",
    precision: Annotated[
        str, typer.Option(help="fp32, bf16 or fp16 (reduced precisions run under autocast).")
    ] = "fp32",
    batch: Annotated[
        int | None, typer.Option(min=1, help="Images per forward [1]; with --train the global batch [4].")
    ] = None,
    tile: Annotated[int | None, typer.Option(help="Run through the tiling engine with this core size (px).")] = None,
    compile_: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network first (warm-up includes compilation).")
    ] = False,
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="Model and input in channels_last memory format.")
    ] = False,
    cuda_graphs: Annotated[
        bool, typer.Option("--cuda-graphs", help="Capture one forward in a CUDA graph and time replays (CUDA only).")
    ] = False,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per configuration.")] = 5,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs first.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="torch intra-op threads (default: PyTorch's).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Time these weights instead of a random initialisation.")] = None,
    compare_reference: Annotated[
        bool,
        typer.Option(
            "--compare-reference",
            help="Also time the reference path (direct 2-D Gaussian bank, unfused), interleaved, and print the ratio.",
        ),
    ] = False,
    reference_runs: Annotated[
        int,
        typer.Option(
            "--reference-runs",
            min=1,
            help="Timed runs of the reference path with --compare-reference (it is slow; its median is over these).",
        ),
    ] = 1,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="Sizes 256x256, 512x512, 1280x720, 1920x1080 (added to any --size); the table's ns/px and 'x best' "
            "columns show the per-pixel cost, so super-linear paths stand out.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (all fields) on stdout instead of the table.")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Also write a Markdown table to this file.")
    ] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Measure in this process (faster start; peak RSS then includes earlier configurations).",
        ),
    ] = False,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Time training steps instead (forward, loss, backward, Adam, EMA): s/step and samples/s. "
            "--precision may list several (fp32,bf16), measured interleaved in one process.",
        ),
    ] = False,
    patch: Annotated[int, typer.Option(min=32, help="Training patch size in px (with --train).")] = 128,
    tiny: Annotated[bool, typer.Option("--tiny", hidden=True, help="Use the small test configs (smoke runs).")] = False,
) -> None:
    """Measure parameters, MACs, latency, throughput and peak memory per model and size.

    Each configuration runs in a fresh subprocess by default, so the CPU peak-RSS figure is its own.

    Latency = median (and quartiles) of --runs timed forwards after --warmup untimed ones.
    """
    from gkm_cli.benchmark import (
        SWEEP_SIZES,
        BenchConfig,
        parse_size,
        report,
        run_config,
        run_isolated,
        to_markdown,
        validate,
    )
    from gkm_cli.nets import default_model, list_models

    names = model or [default_model()]
    if "all" in names:
        names = list_models()
    if train:
        from gkm_cli.training.speed import TrainBenchConfig

        train_configs = [
            TrainBenchConfig(
                model=name,
                patch=patch,
                batch=batch or 4,
                precision=p.strip(),
                device=device,
                steps=runs,
                warmup=warmup,
                channels_last=channels_last,
                tiny=tiny,
            )
            for name in names
            for p in precision.split(",")
        ]
        _training_report(train_configs, threads, as_json, markdown)
        return
    sizes = [parse_size(s) for s in size or ([] if sweep else ["512x512"])]
    if sweep:
        sizes += [(h, w) for w, h in SWEEP_SIZES if (h, w) not in sizes]
    configs = [
        BenchConfig(
            model=name,
            height=h,
            width=w,
            batch=batch or 1,
            device=device,
            precision=precision,
            tile=tile,
            compile=compile_,
            channels_last=channels_last,
            cuda_graphs=cuda_graphs,
            runs=runs,
            warmup=warmup,
            threads=threads,
            compare_reference=compare_reference,
            reference_runs=reference_runs,
            weights=str(weights) if weights else None,
            tiny=tiny,
        )
        for name in names
        for h, w in sizes
    ]
    for cfg in configs:  # fail fast, before any subprocess starts
        validate(cfg)
    err = Console(stderr=True)
    results = []
    for cfg in configs:
        err.print(
            f"[dim]measuring {cfg.model} at {cfg.width}x{cfg.height} on {cfg.device} ({cfg.precision})...[/]",
            highlight=False,
        )
        results.append(run_config(cfg) if in_process else run_isolated(cfg))
    doc = report(results)
    if markdown is not None:
        from gkm_cli.fileio import atomic_write_bytes

        atomic_write_bytes(markdown, to_markdown(doc).encode())
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    console = Console()
    _print_table(doc, console if console.is_terminal else Console(width=200))


def _training_report(configs: list, threads: int | None, as_json: bool, markdown: Path | None) -> None:
    """``gkm benchmark --train``: measure the configurations interleaved, then print / write."""
    from gkm_cli.fileio import atomic_write_bytes
    from gkm_cli.runtime import resolve_device
    from gkm_cli.training.precision import training_autocast_dtype
    from gkm_cli.training.speed import measure_training

    for cfg in configs:  # the policy of `gkm train run --precision`, before anything is built
        training_autocast_dtype(cfg.precision, resolve_device(cfg.device))
    err = Console(stderr=True)
    err.print(f"[dim]timing {len(configs)} training configuration(s), interleaved...[/]", highlight=False)
    records, host = measure_training(configs, threads=threads)
    doc = {"machine": host, "training": [r.to_dict() for r in records]}
    flags = " ".join(host["cpu_flags"]) or "no AVX2"
    head = f"torch {host['torch']}, {host['cpu']} ({flags}), {host['threads']} threads"
    rows = [
        (
            r.model,
            str(r.patch),
            str(r.batch),
            r.precision + (" CL" if r.channels_last else ""),
            f"{r.s_per_step:.3f}",
            f"{r.samples_per_s:.2f}",
            f"{r.forward_s:.3f}",
            f"{r.backward_s:.3f}",
            f"{r.optimizer_s:.3f}",
        )
        for r in records
    ]
    cols = ("model", "patch", "batch", "precision", "s/step", "samples/s", "fwd+loss s", "backward s", "optim s")
    if markdown is not None:
        lines = [f"Training speed: {head}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        atomic_write_bytes(markdown, ("\n".join(lines) + "\n").encode())
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    table = Table(title=f"gkm benchmark --train - {head}", title_justify="left")
    for c in cols:
        table.add_column(c, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console()
    console = console if console.is_terminal else Console(width=120)
    console.print(table)
    console.print("[dim]Medians over --runs timed steps after --warmup; configurations run interleaved.[/]")


def _print_table(doc: dict, console: Console) -> None:
    from gkm_cli.benchmark import TABLE_COLUMNS

    m = doc["machine"]
    table = Table(title=f"gkm benchmark - torch {m['torch']}, {m['cpu']}, {m['threads']} threads")
    for name, _ in TABLE_COLUMNS:
        table.add_column(name, overflow="fold", no_wrap=name in ("model", "WxH"))
    for r in doc["results"]:
        table.add_row(*(fn(r) for _, fn in TABLE_COLUMNS))
    console.print(table)
    console.print(
        "[dim]GMACs all = every op (FlopCounterMode / 2, reference path, incl. the Gaussian bank); "
        "mod. = conv/linear modules only; paper = thop/2 over modules, as the papers print them "
        "(their number in brackets). Peak MiB: CUDA max allocated, or growth of the process peak RSS "
        "on the CPU. ns/px: median latency per pixel; x best: over the same model's cheapest size in this run. "
        "ref. s / speed-up: the reference path (direct 2-D bank, unfused), median of --reference-runs runs "
        "(default 1), interleaved with the first fast runs.[/]"
    )


def export(
    name: Annotated[str, typer.Argument(help="Architecture to export (its weights: --weights or the shipped ones).")],
    onnx: Annotated[Path, typer.Option("--onnx", help="Output .onnx file.")],
    weights: Annotated[Path | None, typer.Option(help="Weights file (default: models/<NAME>.safetensors).")] = None,
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset.")] = 17,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Export a randomly initialised network (for testing the pipeline).")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Compare ONNX Runtime with torch on a 64x96 input.")
    ] = True,
) -> None:
    """Export a network to ONNX (dynamic batch, height, width; H and W multiples of 16).

    Inputs of other sizes must be reflect-padded first and the outputs cropped, as gkm_cli.export.OnnxDeblurrer does.

    Outputs: image (N x 3 x H x W) and sigma (N x 1 x H x W blur map, pixels).
    """
    import numpy as np
    import torch

    from gkm_cli.export import OnnxDeblurrer, export_onnx
    from gkm_cli.nets import create_model
    from gkm_cli.nets.checkpoint import load_weights, resolve_model

    if random_init:
        if weights is not None:
            raise UsageError("--random-init and --weights exclude each other")
        torch.manual_seed(0)
        net = create_model(name).eval()
    else:
        _, path = resolve_model(name, weights)
        net = load_weights(path)
        if net.spec.name != name:
            raise UsageError(f"{path} holds {net.spec.name}, not {name}")
    data = export_onnx(net, onnx, opset=opset)
    console = Console(stderr=True)
    console.print(f"wrote {onnx} ({len(data) / 2**20:.1f} MiB, opset {opset})", highlight=False)
    if check:
        x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = net(x).image.numpy()
        got = OnnxDeblurrer(data).run(x.numpy())
        diff = float(np.abs(got - ref).max())
        console.print(f"ONNX Runtime vs torch on 64x96: max |diff| = {diff:.2e}", highlight=False)
        if not diff <= 1e-3:
            raise UsageError(f"exported model disagrees with torch (max |diff| {diff:.2e} > 1e-3)")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
    models_app.command("export")(export)
