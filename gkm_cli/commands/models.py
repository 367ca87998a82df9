"""``gkm models import SRC -o DST.safetensors``: a foreign checkpoint, once, into our format.

SRC is the authors' GKMNet / GKMNet_updating ``.pth`` or any checkpoint of an architecture
spandrel knows (``gkm-cli[zoo]``). ``.pth``/``.pt``/``.ckpt`` files are read without running
their pickle (:mod:`gkm_cli.nets.safe_pickle`). Writes DST and its model card DST.json (source
path, sha256, the licence the user states, the variant). Exit codes: 0 written, 2 refused
(unsafe or unknown file, bad options), 1 otherwise.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gkm_cli.errors import UsageError

__all__ = ["import_weights", "register"]


def import_weights(
    source: Annotated[
        Path, typer.Argument(help="Checkpoint to convert: .pth/.pt/.ckpt (read without running code) or .safetensors.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output .safetensors (its model card goes beside it as .json).")
    ],
    licence: Annotated[
        str,
        typer.Option(
            "--licence",
            "--license",
            help="The weights' licence as you know it (recorded in the card, not checked), e.g. 'MIT' or 'academic, "
            "non-commercial'.",
        ),
    ],
    variant: Annotated[
        str | None,
        typer.Option(
            help="Authors' GKMNet checkpoints: gkmnet (csZcWu/GKMNet, the released DPDD weights) or gkmnet_updating "
            "(csZcWu/GKMNet_updating). Their keys are identical, so gkm cannot tell them apart (default gkmnet)."
        ),
    ] = None,
    batch_norm: Annotated[
        str,
        typer.Option(
            "--batch-norm",
            help="Authors' GKMNet: 'image' normalises each BatchNorm with the image's own statistics, as their test "
            "script did (it never calls eval()); 'running' uses the stored running statistics.",
        ),
    ] = "image",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Convert a foreign checkpoint to gkm's safetensors format with a model card."""
    _import(source, output, licence, variant, batch_norm, overwrite, Console(stderr=True))  # errors: cli.py's handler


def _import(
    source: Path, output: Path, licence: str, variant: str | None, batch_norm: str, overwrite: bool, err: Console
) -> None:
    from gkm_cli.nets.gkmnet import GKMNet
    from gkm_cli.nets.importers import import_card, load_foreign, save_imported

    if output.suffix != ".safetensors":
        raise UsageError(f"{output}: the output must be a .safetensors file")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists (pass --overwrite to replace it)")
    if batch_norm not in ("image", "running"):
        raise UsageError(f"--batch-norm must be image or running, got {batch_norm!r}")
    if not licence.strip():
        raise UsageError("--licence must say something (e.g. 'unknown')")
    imported = load_foreign(source, variant=variant, batch_norm=batch_norm)
    command = (
        shlex.join(["gkm", *sys.argv[1:]]) if sys.argv and Path(sys.argv[0]).name in ("gkm", "__main__.py") else ""
    )
    card = import_card(source, imported, licence.strip(), command)
    save_imported(imported, output, card)
    model = imported.model
    what = model.spec.name
    if isinstance(model, GKMNet):  # the authors' GKMNet (kind "gkmnet"): which of their layouts
        what += f" (variant {imported.variant}, bank {model.config.bank_layout}, BN {model.config.batch_norm})"
    parameters = model.inference_parameters()
    err.print(
        f"wrote {output} and {output.with_suffix('.json')}: {what}, {parameters / 1e6:.3f} M parameters",
        highlight=False,
    )


def register(app: typer.Typer, models_app: typer.Typer | None = None) -> None:
    if models_app is not None:
        models_app.command("import")(import_weights)
