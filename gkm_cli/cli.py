"""The `gkm` command line: a thin Typer layer over gkm_cli.api and the command modules.

Errors raised deep in the code as :class:`GkmError` become one line on stderr and the error's
exit code here, and nowhere else.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gkm_cli import __version__
from gkm_cli.errors import GkmError

app = typer.Typer(
    name="gkm",
    help="Defocus deblurring with Gaussian Kernel Mixture networks (GKMNet, GGKMNet, GKMANet).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="List architectures and shipped weights; export models.", invoke_without_command=True)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gkm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """gkm: remove defocus blur from photos."""


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """List every registered architecture, its parameter count and any checkpoint in models/."""
    if ctx.invoked_subcommand is not None:
        return
    from gkm_cli.api import list_model_info

    infos = list_model_info()
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    table = Table(title="gkm models")
    for col in ("name", "params (M)", "paper (M)", "tile-exact", "weights"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i["name"] + (" (default)" if i["default"] else ""),
            f"{i['params'] / 1e6:.3f}",
            "-" if i["paper_params"] is None else f"{i['paper_params']:.2f}",
            "yes" if i["tile_exact"] else "no",
            i["weights"] or "none shipped",
        )
    Console().print(table)


def _register_commands() -> None:
    """Attach the subcommands that live in gkm_cli/commands (one module per command)."""
    import importlib

    for name in ("deblur", "blurmap", "evaluate", "train", "benchmark", "models"):
        try:
            module = importlib.import_module(f"gkm_cli.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"gkm_cli.commands.{name}":
                raise
            continue
        if hasattr(module, "register"):
            module.register(app, models_app)
        else:  # a module that only defines the command function of the same name
            app.command(name)(getattr(module, name))


_register_commands()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings for people, not tracebacks: ``warning: <message>`` on one line of stderr."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def main() -> None:
    import warnings

    warnings.showwarning = _one_line_warning  # the console script only; library users keep theirs
    try:
        app()
    except GkmError as e:
        from gkm_cli.console import message

        Console(stderr=True, emoji=False).print(message("error:", "bold red", str(e)), highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
