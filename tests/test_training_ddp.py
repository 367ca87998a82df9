"""Training at scale and around it: DDP under torchrun, polite stops (SIGTERM/SIGINT), curve plots."""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gkm_cli.errors import DataError, UsageError
from gkm_cli.nets import TINY_OVERRIDES
from gkm_cli.runtime import RankInfo, torchrun_ranks
from gkm_cli.training import TrainConfig, Trainer, TrainingInterrupted
from gkm_cli.training import checkpointing as ck
from gkm_cli.training.distributed import rank_device
from gkm_cli.training.loop import RANKS_DIR
from gkm_cli.training.plot import CurvePlotter, PlotDependencyError, plot_run, read_log, require_matplotlib
from gkm_cli.training.sampling import StepBatchSampler
from gkm_cli.training.stopping import StopSignals
from helpers import tiny_train_args

TINY = tuple(sorted(TINY_OVERRIDES["ggkmnet"].items()))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for i in range(3):
        small = rng.uniform(0, 255, (12, 12, 3)).astype(np.float32)
        img = cv2.resize(small, (96, 96), interpolation=cv2.INTER_CUBIC) + (rng.uniform(size=(96, 96, 1)) > 0.5) * 40
        cv2.imwrite(str(d / f"p{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return d


def _cfg(photos: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="ggkmnet",
        model_overrides=TINY,
        synth_from=(str(photos),),
        synth_holdout=0.0,
        patch=32,
        batch=2,
        steps=10,
        log_every=1,
        val_every=1000,
        save_every=1000,
        val_synth=0,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


def _log_rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- sampler, environment


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sampler_splits_the_global_batch(world: int) -> None:
    batch = 4
    per_rank = [list(StepBatchSampler(3, 6, batch, RankInfo(rank=r, world_size=world))) for r in range(world)]
    for i, step in enumerate(range(3, 6)):
        shares = [set(p[i]) for p in per_rank]
        assert all(len(s) == batch // world for s in shares)
        assert set().union(*shares) == set(range(step * batch, (step + 1) * batch))  # same global batch for any world
        assert sum(len(s) for s in shares) == batch  # disjoint
    assert all(len(p) == 3 for p in per_rank)


def test_batch_must_split_between_processes(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="multiple of the 3 processes"):
        StepBatchSampler(0, 1, 4, RankInfo(rank=0, world_size=3))
    with pytest.raises(UsageError, match="global batch"):
        Trainer(_cfg(photos, batch=2), tmp_path / "r", dist=RankInfo(rank=0, world_size=3), progress=False).run()


def test_dist_from_env() -> None:
    assert torchrun_ranks({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    info = torchrun_ranks(env)
    assert info == RankInfo(rank=3, world_size=4, local_rank=1) and not info.is_main
    with pytest.raises(UsageError, match="MASTER_PORT"):
        torchrun_ranks({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(UsageError, match="inconsistent"):
        torchrun_ranks({**env, "RANK": "4"})
    assert rank_device(RankInfo(), "cpu").type == "cpu"
    with pytest.raises(UsageError, match="LOCAL_RANK"):
        rank_device(RankInfo(), "cuda:1")


# ----------------------------------------------------------------------------- signals


def test_stop_signals_record_and_restore() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat keeps the first request, does not raise
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does interrupt at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with StopSignals(escalate=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT


def test_signal_mid_run_saves_that_step_and_resumes(photos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "r"
    cfg = _cfg(photos, steps=8, lr_halve_start=100, lr_halve_every=100)

    def kill_at_3(step: int, vals: dict[str, float]) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 3") as ei:
        Trainer(cfg, out, progress=False, on_step=[kill_at_3]).run()
    assert ei.value.exit_code == 128 + signal.SIGTERM
    assert ck.read_state_info(out / ck.STATE_FILE)["step"] == 3  # saved although save_every is 1000
    assert json.loads((out / ck.POINTER).read_text())["step"] == 3
    res = Trainer(cfg, out, resume=True, progress=False).run()
    assert res.steps == 8
    straight = Trainer(cfg, tmp_path / "s", progress=False).run()
    a, b = _model_tensors(out / ck.STATE_FILE), _model_tensors(tmp_path / "s" / ck.STATE_FILE)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert straight.last_terms == pytest.approx(res.last_terms, rel=1e-6)


@pytest.mark.slow
def test_sigterm_to_cli_saves_checkpoint(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gkm_cli",
        *tiny_train_args(out, photos, holdout="0"),
        "--val-synth",
        "0",
        "--steps",
        "100000",
        "--save-every",
        "100000",
        "--log-every",
        "1",
        "--patch",
        "32",
        "--batch",
        "2",
        "--threads",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=120)
            seen.append(line)
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    err = "".join(seen)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    step = json.loads((out / ck.POINTER).read_text())["step"]
    assert 1 <= step < 100000
    assert ck.read_state_info(out / ck.STATE_FILE)["step"] == step
    assert int(_log_rows(out)[-1]["step"]) == step
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gkm_cli",
            "train",
            "run",
            "--out",
            str(out),
            "--resume",
            "--steps",
            str(step + 1),
            "--quiet",
            "--json",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == step + 1


# ----------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_two_processes_stop_resume_and_match_one_process(photos: Path, tmp_path: Path) -> None:
    """2 CPU processes (Gloo) under torch.distributed.run: SIGTERM to the launcher stops both ranks
    at one step with a checkpoint; --resume under DDP continues; the ranks hold identical weights;
    and the result equals a single process with the same global batch."""
    common = [
        "--tiny",
        "--synth-from",
        str(photos),
        "--synth-holdout",
        "0",
        "--val-synth",
        "0",
        "--patch",
        "32",
        "--batch",
        "4",
        "--threads",
        "1",
        "--log-every",
        "1",
        "--lr",
        "1e-3",
        "--lr-halve-start",
        "2",
        "--lr-halve-every",
        "2",
        "--ema",
        "0.5",
    ]

    def torchrun(*args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            "-m",
            "gkm_cli",
            "train",
            "run",
            *args,
        ]

    ddp = tmp_path / "ddp"
    # 1) a long run, stopped politely after its first log line
    proc = subprocess.Popen(
        torchrun("--out", str(ddp), *common, "--steps", "100000", "--save-every", "100000", "--save-all-ranks"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen = []
    try:
        while True:
            line = lines.get(timeout=180)
            seen.append(line)
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    err = "".join(seen)
    assert err.count("stopped by SIGTERM") == 2, err  # both ranks stopped at the agreed step
    step = json.loads((ddp / ck.POINTER).read_text())["step"]
    assert 1 <= step < 100000, err

    def check_ranks(expect_step: int) -> None:
        state = _model_tensors(ddp / ck.STATE_FILE)
        for r in (0, 1):
            path = ddp / RANKS_DIR / f"rank{r}.safetensors"
            with safe_open(str(path), framework="pt") as f:
                assert f.metadata()["step"] == str(expect_step)
            w = load_file(str(path))
            assert w.keys() == state.keys()
            for k in w:
                torch.testing.assert_close(w[k], state[k], rtol=0, atol=0, msg=f"rank {r}: {k}")

    check_ranks(step)
    # 2) resume under DDP for two more steps
    end = step + 2
    r = subprocess.run(
        torchrun("--out", str(ddp), "--resume", "--steps", str(end), "--save-all-ranks", "--quiet", "--json"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == end  # printed once, by rank 0
    check_ranks(end)
    info = ck.read_state_info(ddp / ck.STATE_FILE)
    assert info["step"] == end and info["world_size"] == 2 and info["config"]["batch"] == 4
    # 3) one process, same global batch, straight through
    one = tmp_path / "one"
    r = subprocess.run(
        [sys.executable, "-m", "gkm_cli", "train", "run", "--out", str(one), *common, "--steps", str(end), "--quiet"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    # Gloo's gradient average and one process's batch mean round differently, and Adam turns a
    # rounding difference in a near-zero gradient into up to lr (1e-3) of weight per step; the
    # later SIGTERM lands (busy machine), the more steps amplify it (1.7e-5 seen at step 4).
    # Different batches would move most weights by ~lr per step, far beyond this tolerance.
    a, b = _model_tensors(ddp / ck.STATE_FILE), _model_tensors(one / ck.STATE_FILE)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4, msg=k)
    ema_a, ema_b = load_file(str(ddp / ck.LAST_WEIGHTS)), load_file(str(one / ck.LAST_WEIGHTS))
    for k in ema_a:
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=1e-4, msg=k)
    rows_a, rows_b = _log_rows(ddp), _log_rows(one)
    assert [int(x["step"]) for x in rows_a] == [int(x["step"]) for x in rows_b] == list(range(1, end + 1))
    for ra, rb in zip(rows_a, rows_b):  # logged losses are global-batch means on both
        assert float(ra["total"]) == pytest.approx(float(rb["total"]), rel=1e-4), ra["step"]


# ----------------------------------------------------------------------------- plots


def _decode_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} does not decode"
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 1  # a picture, not a blank
    return img


def test_cli_plot_during_run_and_subcommand(photos: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gkm_cli.cli import app

    out = tmp_path / "run"
    png = tmp_path / "plots" / "curves.png"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            *tiny_train_args(out, photos, holdout="0.34"),
            "--val-synth",
            "2",
            "--val-synth-size",
            "32",
            "--val-every",
            "2",
            "--steps",
            "3",
            "--patch",
            "32",
            "--batch",
            "1",
            "--log-every",
            "1",
            "--threads",
            "1",
            "--quiet",
            "--plot",
            str(png),
        ],
    )
    assert r.exit_code == 0, r.output
    _decode_png(png)
    rows = read_log(out)
    assert [int(x["step"]) for x in rows] == [1, 2, 3] and "val_psnr" in rows[1] and "val_psnr" not in rows[0]
    other = tmp_path / "again.png"
    r = runner.invoke(app, ["train", "plot", str(out), "-o", str(other)])
    assert r.exit_code == 0, r.output
    _decode_png(other)
    r = runner.invoke(app, ["train", "plot", str(out)])
    assert r.exit_code == 0, r.output
    _decode_png(out / "curves.png")
    r = runner.invoke(app, ["train", "plot", str(tmp_path / "nothing")])
    assert r.exit_code == DataError.exit_code and "error:" in r.stderr  # one line from gkm's error handler


def test_plotter_draws_at_validations(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = ["step,lr,it_s,bad_steps,total,mse,fft,ssim,recon,val_psnr,val_ssim,wall_s"]
    rows += [
        f"{s},1e-4,2,0,{1 / s},{0.5 / s},{0.2 / s},{0.3 / s},{0.1 / s},"
        f"{'' if s % 5 else 20 + s / 10},{'' if s % 5 else 0.8},{s}"
        for s in range(1, 21)
    ]
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    png = tmp_path / "c.png"
    plotter = CurvePlotter(run, png)
    plotter({"step": 4, "total": 0.25})
    assert not png.exists()
    plotter({"step": 5, "total": 0.2, "val_psnr": 20.5})
    _decode_png(png)
    assert plot_run(run / "log.csv", tmp_path / "d.png").is_file()


def test_missing_matplotlib_is_a_clear_error(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gkm_cli.cli import app

    require_matplotlib()  # installed in the test environment
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotDependencyError, match=r"gkm-cli\[plot\]"):
        require_matplotlib()
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            *tiny_train_args(out, photos),
            "--steps",
            "1",
            "--patch",
            "32",
            "--batch",
            "1",
            "--quiet",
            "--plot",
            str(tmp_path / "c.png"),
        ],
    )
    assert r.exit_code == 2 and "gkm-cli[plot]" in r.stderr
    assert not (out / ck.STATE_FILE).exists()  # refused before training
