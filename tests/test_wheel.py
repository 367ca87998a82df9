"""A built wheel, installed in a fresh venv, deblurs a sample from outside the repository.

Guards what an editable install hides: the default weights and the LPIPS weights must be in the
wheel (package data through the ``gkm_cli/models`` symlink), found without the source tree.
Nothing is downloaded: the wheel is built without build isolation and installed with
``--no-deps --no-index``; torch & co come from this test's own environment through a ``.pth``
line (a plain path line: the editable install's finder in that folder is not run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_images" / "grace_hopper_defocus.png"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )
    return proc


def _copy_source(dest: Path) -> None:
    """What a source build needs, copied (symlinks kept) so no build/ or egg-info lands in the repo."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.csv")
    shutil.copytree(ROOT / "gkm_cli", dest / "gkm_cli", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "models", dest / "models", ignore=ignore)


@pytest.mark.slow
def test_wheel_installs_and_deblurs_outside_the_repo(tmp_path: Path) -> None:
    src, wheels, env_dir, work = (tmp_path / n for n in ("src", "wheels", "venv", "work"))
    for d in (src, wheels, work):
        d.mkdir()
    _copy_source(src)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
        ]
    )
    (wheel,) = wheels.glob("gkm_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gkm_cli/models/ggkmnet.safetensors", "gkm_cli/models/lpips/alexnet_v0.1.safetensors"} <= names

    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    (purelib / "zz_host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("GKM_MODELS_DIR", "GKM_LPIPS_WEIGHTS", "PYTHONPATH")}
    where = _run([str(py), "-c", "import gkm_cli; print(gkm_cli.__file__)"], cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(purelib), where  # the wheel's copy, not the source tree

    out = work / "out"
    _run([str(env_dir / "bin" / "gkm"), "deblur", str(SAMPLE), "-o", str(out), "--device", "cpu"], cwd=work, env=env)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [SAMPLE.name]

    # the LPIPS weights are found the same way (gkm evaluate's default)
    code = "from gkm_cli.metrics.lpips import load_lpips; print(load_lpips().weights_sha256)"
    assert len(_run([str(py), "-c", code], cwd=work, env=env).stdout.strip()) == 64
