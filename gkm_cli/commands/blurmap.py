"""``gkm blurmap``: per-pixel defocus maps (expected Gaussian blur sigma, in input pixels).

Same engine, tiling, folder handling and flags as ``gkm deblur``. Outputs: a 16-bit PNG (default)
or TIFF storing ``sigma_px * scale`` with the scale in a sidecar JSON, a float32 ``.npy``, or a
colour heatmap PNG for people. Exit codes as ``gkm deblur``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gkm_cli.commands.deblur import (
    BackendOpt,
    DeviceOpt,
    Inputs,
    JsonOpt,
    MaxPixelsOpt,
    ModelOpt,
    Output,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    RawLinearOpt,
    RawPairsOpt,
    RecursiveOpt,
    ShardOpt,
    SkipOpt,
    SuffixOpt,
    TileOpt,
    WeightsOpt,
    run_batch_command,
    shard_flag,
)
from gkm_cli.engine.maps import DEFAULT_MAX_SIGMA
from gkm_cli.images import DEFAULT_MAX_PIXELS

__all__ = ["blurmap", "register"]


def blurmap(
    inputs: Inputs,
    output: Output = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    tile: TileOpt = None,
    tile_overlap: OverlapOpt = None,
    recursive: RecursiveOpt = False,
    suffix: SuffixOpt = None,
    skip_existing: SkipOpt = True,
    overwrite: OverwriteOpt = False,
    format: Annotated[
        str | None,
        typer.Option("--format", help="png (16-bit, scale in a sidecar .json), tiff (16-bit) or npy (float32 px)."),
    ] = None,
    heatmap: Annotated[
        bool, typer.Option("--heatmap", help="Write a colour PNG (inferno, 0..--max-sigma px) for viewing instead.")
    ] = False,
    max_sigma: Annotated[
        float,
        typer.Option(
            "--max-sigma",
            help="Sigma (px) stored as 65535 in PNG/TIFF (scale = 65535 / max) and the heatmap's top colour.",
        ),
    ] = DEFAULT_MAX_SIGMA,
    as_json: JsonOpt = False,
    shard: ShardOpt = None,
    quiet: QuietOpt = False,
    backend: BackendOpt = "torch",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    raw_pairs: RawPairsOpt = "skip-jpeg",
    raw_linear: RawLinearOpt = False,
) -> None:
    """Estimate the per-pixel defocus blur (Gaussian sigma in pixels) of photos."""
    from gkm_cli.engine.batch import BatchSettings

    settings = BatchSettings(
        "blurmap", tuple(inputs), output, model, weights, device, precision, tile, tile_overlap, recursive, suffix,
        skip_existing, overwrite, format, heatmap=heatmap, max_sigma=max_sigma, shard=shard_flag(shard),
        backend=backend, max_pixels=max_pixels, raw_pairs=raw_pairs, raw_linear=raw_linear,
    )  # fmt: skip
    run_batch_command(settings, as_json=as_json, quiet=quiet)


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    """Attach ``blurmap`` to the ``gkm`` app (called by gkm_cli.cli)."""
    del models_app
    app.command("blurmap")(blurmap)
