"""The command line surface: help and `models`, in-process and as a real subprocess."""

import json
import re
import subprocess
import sys

import typer
from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.nets import list_models

runner = CliRunner()


#: Every command and subcommand of `gkm` (a lost or renamed one fails here, not in a user's script).
COMMANDS = {
    "deblur",
    "blurmap",
    "evaluate",
    "train",
    "train run",
    "train synth",
    "train plot",
    "benchmark",
    "models",
    "models export",
    "models import",
}


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> set[str]:
    """'group sub' names of every command below a click command (typer builds click's tree)."""
    paths: set[str] = set()
    for name, sub in getattr(command, "commands", {}).items():
        paths.add(" ".join((*prefix, name)))
        paths |= _command_paths(sub, (*prefix, name))
    return paths


def _help_listing(output: str) -> set[str]:
    """Command names in the 'Commands' panel of rich's help text."""
    panel = output.split("Commands", 1)[1]
    return set(re.findall(r"^[│|] (\w[\w-]*) ", panel, flags=re.M))


def test_the_command_tree_is_exactly_the_documented_one():
    assert _command_paths(typer.main.get_command(app)) == COMMANDS


def test_help_lists_every_command_and_each_help_exits_0():
    wide = {"COLUMNS": "200"}  # one line per command
    result = runner.invoke(app, ["--help"], env=wide)
    assert result.exit_code == 0, result.output
    assert _help_listing(result.output) == {c for c in COMMANDS if " " not in c}
    for group in ("train", "models"):
        result = runner.invoke(app, [group, "--help"], env=wide)
        assert result.exit_code == 0, result.output
        assert _help_listing(result.output) == {c.split()[1] for c in COMMANDS if c.startswith(group + " ")}
    for command in sorted(COMMANDS):
        result = runner.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output, command


def test_models_json_in_process():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    infos = json.loads(result.output)
    assert [i["name"] for i in infos] == list_models()
    for i in infos:
        assert (
            i["params"] > 100_000
            and ("weights" in i)
            and (i["weights"] is None or i["weights"].endswith(".safetensors"))
        )
    assert sum(i["default"] for i in infos) == 1


def test_models_json_as_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "gkm_cli", "models", "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert {i["name"] for i in json.loads(proc.stdout)} == set(list_models())


def test_help_as_subprocess():
    proc = subprocess.run([sys.executable, "-m", "gkm_cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage" in proc.stdout
