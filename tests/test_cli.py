"""The command line surface: help and `models`, in-process and as a real subprocess."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.nets import list_models

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.output


def test_models_json_in_process():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    infos = json.loads(result.output)
    assert [i["name"] for i in infos] == list_models()
    for i in infos:
        assert i["params"] > 100_000 and ("weights" in i) and (i["weights"] is None or i["weights"].endswith(".safetensors"))
    assert sum(i["default"] for i in infos) == 1


def test_models_json_as_subprocess():
    proc = subprocess.run([sys.executable, "-m", "gkm_cli", "models", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {i["name"] for i in json.loads(proc.stdout)} == set(list_models())


def test_help_as_subprocess():
    proc = subprocess.run([sys.executable, "-m", "gkm_cli", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage" in proc.stdout
