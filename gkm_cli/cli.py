"""The `gkm` command line: a thin Typer layer over gkm_cli.api and the command modules.

Errors raised deep in the code as :class:`GkmError` become one line on stderr and the error's
exit code here (:class:`_OneLineErrors`, around every command), and nowhere else. A
:class:`SettingError` (any message that is a :class:`SettingText`) is worded with the flags the
user typed (``--tile must be ...``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from gkm_cli import __version__
from gkm_cli.errors import GkmError


def error_text(error: GkmError) -> str:
    """The line a user sees for ``error``: a library setting is named by its command-line flag."""
    from gkm_cli.console import worded_for_cli

    return worded_for_cli(error.message)


class _OneLineErrors(TyperGroup):
    """The ``gkm`` group: any :class:`GkmError` a command raises (nested groups included) ends as
    ``error: <one line>`` on stderr and the error's exit code; in-process runners see the same."""

    # typer annotates invoke with its vendored click.Context; what arrives is its subclass typer.Context.
    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except GkmError as e:
            from gkm_cli.console import message

            Console(stderr=True, emoji=False).print(
                message("error:", "bold red", error_text(e)), highlight=False, soft_wrap=True
            )
            raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    cls=_OneLineErrors,
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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
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
        importlib.import_module(f"gkm_cli.commands.{name}").register(app, models_app)


_register_commands()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings for people, not tracebacks: ``warning: <message>`` on one line of stderr."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file or sys.stderr)


def main() -> None:
    import warnings

    warnings.showwarning = _one_line_warning  # the console script only; library users keep theirs
    app()
