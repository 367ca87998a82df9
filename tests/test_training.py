"""Training: losses, schedule, exact resume, NaN handling, checkpoints, data refusal, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from gkm_cli.errors import UsageError
from gkm_cli.nets import TINY_OVERRIDES, DeblurOutput
from gkm_cli.nets.checkpoint import load_weights
from gkm_cli.ops.pyramid import build_pyramid
from gkm_cli.training import LossConfig, TrainConfig, Trainer, TrainingDiverged, lr_at
from gkm_cli.training import checkpointing as ck
from gkm_cli.training import loop as loop_mod
from gkm_cli.training.losses import fft_l1, loss_terms, paper_scale_weights, ssim_loss, ssim_map_mean
from helpers import tiny_train_args

TINY = tuple(sorted(TINY_OVERRIDES["ggkmnet"].items()))


# ----------------------------------------------------------------------------- fixtures


def _smooth_image(rng: np.random.Generator, size: int) -> np.ndarray:
    small = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.float32)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    edges = (rng.uniform(size=(size, size, 1)) > 0.5).astype(np.float32) * 40  # some texture
    return np.clip(img + edges, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(d / f"p{i}.png"), _smooth_image(rng, 96))
    return d


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 48x48 pair (Gaussian blur of a textured image) in a blur/ + sharp/ folder."""
    d = tmp_path_factory.mktemp("pairs")
    (d / "blur").mkdir()
    (d / "sharp").mkdir()
    sharp = _smooth_image(np.random.default_rng(2), 48)
    cv2.imwrite(str(d / "sharp" / "a.png"), sharp)
    cv2.imwrite(str(d / "blur" / "a.png"), cv2.GaussianBlur(sharp, (0, 0), 1.5))
    return d


def _cfg(**kw) -> TrainConfig:
    base = dict(
        model="ggkmnet",
        model_overrides=TINY,
        patch=32,
        batch=2,
        steps=10,
        log_every=5,
        val_every=1000,
        save_every=1000,
        val_synth=0,
        synth_holdout=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _fake_output(scales: list[torch.Tensor], recon: list[torch.Tensor] | None = None) -> DeblurOutput:
    n, _, h, w = scales[-1].shape
    return DeblurOutput(
        image=scales[-1],
        scales=scales,
        spatial_weights=torch.ones(n, 1, h, w),
        group_sigmas=torch.zeros(n, 1),
        reconstruction=recon,
    )


# ----------------------------------------------------------------------------- losses


def test_losses_zero_for_perfect_output() -> None:
    g = torch.Generator().manual_seed(0)
    sharp, blur = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    out = _fake_output(build_pyramid(sharp, 3), build_pyramid(blur, 3))
    for recipe in ("ggkmnet", "gkmanet", "gkmnet"):
        terms = loss_terms(out, sharp, blur, recipe=recipe, cfg=LossConfig())
        for k, v in terms.items():
            assert abs(float(v)) < 1e-5, (recipe, k, float(v))
    wrong = _fake_output(build_pyramid(blur, 3), build_pyramid(sharp, 3))
    terms = loss_terms(wrong, sharp, blur, recipe="ggkmnet", cfg=LossConfig())
    assert set(terms) == {"mse", "fft", "ssim", "recon", "total"}
    assert all(float(v) > 1e-3 for v in terms.values())
    c = LossConfig()
    expect = (
        terms["mse"] + c.fft_weight * terms["fft"] + c.ssim_weight * terms["ssim"] + c.recon_weight * terms["recon"]
    )
    assert float(terms["total"]) == pytest.approx(float(expect), rel=1e-6)


def test_fft_term_sees_high_frequencies() -> None:
    """A +-a checkerboard is invisible to the low-pass pyramid but not to the FFT term, whose
    ortho value is known: one real coefficient a*sqrt(HW) among N*C*H*(W/2+1)*2 reals."""
    h = w = 32
    a = 0.05
    x = torch.full((1, 3, h, w), 0.5)
    board = a * (1 - 2 * ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2)).float()
    y = x + board
    expect = 3 * a * math.sqrt(h * w) / (3 * h * (w // 2 + 1) * 2)
    assert float(fft_l1(y, x)) == pytest.approx(expect, rel=1e-5)
    # low-pass comparison barely sees it, the FFT term does
    assert float((build_pyramid(y, 2)[0] - build_pyramid(x, 2)[0]).abs().max()) < 0.2 * a
    assert float(fft_l1(y, x)) > 0
    # and for equal pixel energy a high-frequency error is as large in the FFT term as a DC one
    dc = x + a
    assert float(fft_l1(dc, x)) == pytest.approx(expect, rel=1e-5)


def test_ssim_loss_matches_metric() -> None:
    metrics = pytest.importorskip("gkm_cli.metrics")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 40, 48, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 40, 48, generator=g)).clamp(0, 1)
    ours = ssim_map_mean(x.double(), y.double())
    ref = metrics.ssim(x, y, data_range=1.0)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-6)
    assert float(ssim_loss(x, y)) == pytest.approx(float((1 - ref).mean()), abs=1e-5)
    # differentiable
    xr = x.clone().requires_grad_(True)
    ssim_loss(xr, y).backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


def test_scale_weights_follow_paper_coarsest_first() -> None:
    assert paper_scale_weights(3) == (1.0, 0.5, 0.25)
    sharp = torch.full((1, 3, 64, 64), 0.5)
    gts = build_pyramid(sharp, 3)
    per_scale = []
    for t in range(3):  # the same error at one scale only
        scales = [g.clone() for g in gts]
        scales[t] = scales[t] + 0.1
        per_scale.append(
            float(loss_terms(_fake_output(scales), sharp, sharp, recipe="gkmanet", cfg=LossConfig())["mse"])
        )
    assert per_scale[0] == pytest.approx(0.01 * 1.0, rel=1e-4)
    assert per_scale[1] == pytest.approx(0.01 * 0.5, rel=1e-4)
    assert per_scale[2] == pytest.approx(0.01 * 0.25, rel=1e-4)
    fine_first = LossConfig(scale_weights=(0.25, 0.5, 1.0))
    scales = [g.clone() for g in gts]
    scales[2] = scales[2] + 0.1
    assert float(
        loss_terms(_fake_output(scales), sharp, sharp, recipe="gkmanet", cfg=fine_first)["mse"]
    ) == pytest.approx(0.01, rel=1e-4)


def test_gkmnet_recipe_alternates_phases() -> None:
    g = torch.Generator().manual_seed(4)
    sharp = torch.rand(1, 3, 32, 32, generator=g)
    out = _fake_output([s + 0.05 for s in build_pyramid(sharp, 3)])
    cfg = LossConfig(ssim_phase_start=100, ssim_phase_period=20)
    t = {s: loss_terms(out, sharp, sharp, recipe="gkmnet", cfg=cfg, step=s) for s in (0, 99, 100, 109, 110, 119, 120)}
    for s in (0, 99, 110, 119):
        assert float(t[s]["total"]) == float(t[s]["mse"])
    for s in (100, 109, 120):
        assert float(t[s]["total"]) == float(t[s]["ssim"])
    assert float(t[0]["mse"]) == pytest.approx(3 * 0.05**2, rel=1e-4)  # equal weights, summed


def test_lr_schedule_halves_in_steps() -> None:
    cfg = _cfg(steps=100, lr=1e-3, synth_from=("x",))
    assert cfg.halve_start() == 40 and cfg.halve_every() == 20
    assert lr_at(0, cfg) == lr_at(39, cfg) == 1e-3
    assert lr_at(40, cfg) == lr_at(59, cfg) == 5e-4
    assert lr_at(60, cfg) == 2.5e-4
    cfg2 = _cfg(steps=100, lr=1e-4, lr_halve_start=10, lr_halve_every=5, lr_factor=0.1, synth_from=("x",))
    assert lr_at(9, cfg2) == 1e-4 and lr_at(10, cfg2) == pytest.approx(1e-5) and lr_at(15, cfg2) == pytest.approx(1e-6)


# ----------------------------------------------------------------------------- data refusal


@pytest.mark.parametrize("kind", ["data", "synth_from"])
def test_refuses_eval_only_folders_as_training_data(tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "shared" / "real_pairs_dev"
    bad.mkdir(parents=True)
    with pytest.raises(UsageError, match="real_pairs_dev"):
        _cfg(**{kind: (str(bad),)})
    with pytest.raises(UsageError, match="real_blur_only"):
        _cfg(**{kind: (str(tmp_path / "real_blur_only" / "cuhk"),)})
    # validation on them is allowed
    _cfg(synth_from=(str(tmp_path),), val=(str(bad),))


def test_cli_refuses_dev_pairs_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "real_pairs_dev"
    (bad / "blur").mkdir(parents=True)
    (bad / "sharp").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "gkm_cli", "train", "run", "--out", str(tmp_path / "o"), "--data", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    assert "real_pairs_dev" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- training


def _run(cfg: TrainConfig, out: Path, resume: bool = False) -> tuple[list[tuple[int, dict[str, float]]], object]:
    seen: list[tuple[int, dict[str, float]]] = []
    res = Trainer(cfg, out, resume=resume, progress=False, on_step=[lambda s, v: seen.append((s, v))]).run()
    return seen, res


def test_overfits_one_pair(tmp_path: Path, pairs: Path) -> None:
    torch.set_num_threads(2)
    cfg = _cfg(data=(str(pairs),), patch=48, batch=2, steps=40, lr=2e-3, lr_halve_start=1000, lr_halve_every=1000)
    seen, _ = _run(cfg, tmp_path / "run")
    totals = [v["total"] for _, v in seen]
    first, last = np.mean(totals[:3]), np.mean(totals[-3:])
    assert last < 0.6 * first, (first, last)


def test_resume_equals_straight_run(tmp_path: Path, photos: Path, pairs: Path) -> None:
    torch.set_num_threads(1)
    common = dict(
        synth_from=(str(photos),),
        data=(str(pairs),),
        real_fraction=0.5,
        ema=0.9,
        save_every=5,
        log_every=1,
        lr_halve_start=3,
        lr_halve_every=3,
    )  # explicit: the default schedule scales with --steps
    straight, _ = _run(_cfg(steps=10, **common), tmp_path / "a")
    first, _ = _run(_cfg(steps=5, **common), tmp_path / "b")
    second, res = _run(_cfg(steps=10, **common), tmp_path / "b", resume=True)
    resumed = first + second
    assert [s for s, _ in resumed] == list(range(1, 11))
    for (s1, a), (s2, b) in zip(straight, resumed):
        assert s1 == s2
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6, rel=1e-6), (s1, k)
    wa, wb = load_weights(tmp_path / "a" / ck.LAST_WEIGHTS), load_weights(tmp_path / "b" / ck.LAST_WEIGHTS)
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-6, msg=k)
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 11))
    assert res.steps == 10  # type: ignore[attr-defined]


def test_committed_state_resumes_in_a_fresh_folder(tmp_path: Path, photos: Path) -> None:
    """scripts/train_state.sh: the state a session commits (models/training/NAME) continues
    the run exactly where it stopped from another folder, and a restore never clobbers a run."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_state.sh"
    env = {**os.environ, "GKM_STATE_ROOT": str(tmp_path / "states")}

    def state(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), *map(str, args)], env=env, capture_output=True, text=True)

    torch.set_num_threads(1)
    common = dict(synth_from=(str(photos),), save_every=3, log_every=1, ema=0.9)
    _run(_cfg(steps=3, **common), tmp_path / "first")
    assert state("save", tmp_path / "first", "tiny-v2").returncode == 0
    kept = sorted(p.name for p in (tmp_path / "states" / "tiny-v2").iterdir())
    assert kept == ["last.state.json", "last.state.safetensors", "log.csv"]  # no temporaries left
    assert state("restore", "tiny-v2", tmp_path / "next").returncode == 0
    seen, _ = _run(_cfg(steps=5, **common), tmp_path / "next", resume=True)
    assert [s for s, _ in seen] == [4, 5]
    rows = (tmp_path / "next" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5]
    again = state("restore", "tiny-v2", tmp_path / "next")
    assert again.returncode == 2 and "already holds a training state" in again.stderr
    assert state("save", tmp_path / "missing", "x").returncode == 2
    assert state("save", tmp_path / "first", "../escape").returncode == 2


def test_nan_steps_are_skipped_then_stop(tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop_mod.loss_terms
    nan_steps = {2, 3}
    params_seen: dict[int, torch.Tensor] = {}

    def flaky(out, sharp, blur, *, recipe, cfg, step=0, **kw):
        terms = real(out, sharp, blur, recipe=recipe, cfg=cfg, step=step, **kw)
        if step in nan_steps or step >= 6:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(loop_mod, "loss_terms", flaky)
    cfg = _cfg(synth_from=(str(photos),), steps=20, max_bad_steps=4, log_every=1)
    trainer = Trainer(
        cfg,
        tmp_path / "r",
        progress=False,
        on_step=[lambda s, v: params_seen.__setitem__(s, next(trainer.model.parameters()).detach().clone())],
    )
    with pytest.raises(TrainingDiverged, match="4 consecutive"):
        trainer.run()
    # skipped steps (3rd and 4th, i.e. step index 2 and 3) leave the weights untouched
    torch.testing.assert_close(params_seen[2], params_seen[3], rtol=0, atol=0)
    torch.testing.assert_close(params_seen[3], params_seen[4], rtol=0, atol=0)
    assert not torch.equal(params_seen[4], params_seen[5])  # training went on after them
    assert max(params_seen) == 9  # steps 7..10 bad (index 6..9): stopped at the 4th in a row
    assert trainer.bad_total == 6


def test_checkpoint_set_is_consistent_and_loads(tmp_path: Path, photos: Path) -> None:
    out = tmp_path / "run"
    cfg = _cfg(
        synth_from=(str(photos),),
        synth_holdout=0.34,
        val_synth=2,
        val_synth_size=32,
        steps=6,
        save_every=3,
        val_every=3,
        ema=0.5,
    )
    _, res = _run(cfg, out)
    names = {p.name for p in out.iterdir()}
    assert {
        "last.safetensors",
        "last.json",
        "last.state.safetensors",
        "last.state.json",
        "checkpoint.json",
        "best.safetensors",
        "best.json",
        "log.csv",
    } <= names
    assert not [n for n in names if n.endswith(".tmp") or n.endswith(".pt") or n.endswith(".pth")]
    pointer = json.loads((out / "checkpoint.json").read_text())
    info = ck.read_state_info(out / ck.STATE_FILE)
    card = json.loads((out / "last.json").read_text())
    assert pointer["step"] == info["step"] == card["steps"] == 6
    assert card["architecture"] == "ggkmnet" and card["weights"] == "ema"
    assert card["command"] and card["hardware"]["torch"] == torch.__version__
    assert card["validation"]["best_psnr"] == pytest.approx(res.best_psnr)  # type: ignore[attr-defined]
    assert json.loads((out / "last.state.json").read_text()) == info
    model = load_weights(out / "last.safetensors")
    assert model.config.width == TINY_OVERRIDES["ggkmnet"]["width"]
    load_weights(out / "best.safetensors")
    # the state holds the raw and EMA weights and Adam moments as plain tensors
    with safe_open(str(out / ck.STATE_FILE), framework="pt") as f:
        keys = list(f.keys())
        ema = {k[4:]: f.get_tensor(k) for k in keys if k.startswith("ema.")}
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("optim.") for k in keys)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ema[k].float(), msg=k)


def test_refuses_existing_run_without_resume(tmp_path: Path, photos: Path) -> None:
    cfg = _cfg(synth_from=(str(photos),), steps=1)
    _run(cfg, tmp_path / "r")
    with pytest.raises(UsageError, match="pass resume to continue"):
        _run(cfg, tmp_path / "r")
    with pytest.raises(ck.CheckpointError):
        _run(
            _cfg(synth_from=(str(photos),), steps=2, model_overrides=(("groups", 3), ("per_group", 2), ("width", 8))),
            tmp_path / "r",
            resume=True,
        )


def test_cli_run_resume_and_synth(tmp_path: Path, photos: Path) -> None:
    from typer.testing import CliRunner

    from gkm_cli.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = [
        *tiny_train_args(out, photos, holdout="0"),
        "--steps",
        "2",
        "--patch",
        "32",
        "--batch",
        "1",
        "--quiet",
        "--json",
        "--threads",
        "1",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 2
    r = runner.invoke(app, ["train", "run", "--out", str(out), "--resume", "--steps", "3", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["steps"] == 3
    assert ck.read_state_info(out / ck.STATE_FILE)["config"]["patch"] == 32
    r = runner.invoke(
        app, ["train", "synth", "--from", str(photos), "--out", str(tmp_path / "val"), "--n", "2", "--size", "32"]
    )
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "val" / "blur").iterdir())) == 2
    r = runner.invoke(
        app,
        [
            *tiny_train_args(tmp_path / "v", photos),
            "--val",
            str(tmp_path / "val"),
            "--steps",
            "1",
            "--val-every",
            "1",
            "--patch",
            "32",
            "--batch",
            "1",
            "--quiet",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["last_val"]["n"] == 2


def test_init_starts_from_given_weights_and_refuses_another_architecture(tmp_path: Path, photos: Path) -> None:
    """--init (fine-tuning): the run starts from the checkpoint's weights, not a fresh init."""
    _run(_cfg(synth_from=(str(photos),), steps=3, lr=1e-2, seed=0), tmp_path / "a")
    trained = load_weights(tmp_path / "a" / ck.LAST_WEIGHTS).state_dict()
    # lr so small that one step cannot move the weights: what is saved is what the run started from
    _run(
        _cfg(synth_from=(str(photos),), steps=1, lr=1e-12, seed=5, init_from=str(tmp_path / "a" / ck.LAST_WEIGHTS)),
        tmp_path / "b",
    )
    _run(_cfg(synth_from=(str(photos),), steps=1, lr=1e-12, seed=5), tmp_path / "c")
    tuned = load_weights(tmp_path / "b" / ck.LAST_WEIGHTS).state_dict()
    fresh = load_weights(tmp_path / "c" / ck.LAST_WEIGHTS).state_dict()
    params = [k for k, v in trained.items() if v.is_floating_point() and v.numel() > 1]
    for k in params:
        torch.testing.assert_close(tuned[k], trained[k], atol=1e-6, rtol=0, msg=k)
    assert any(not torch.allclose(fresh[k], trained[k], atol=1e-4) for k in params)
    other = (("groups", 3), ("per_group", 2), ("width", 8))
    with pytest.raises(ck.CheckpointError, match="same architecture"):
        _run(
            _cfg(
                synth_from=(str(photos),),
                steps=1,
                model_overrides=other,
                init_from=str(tmp_path / "a" / ck.LAST_WEIGHTS),
            ),
            tmp_path / "d",
        )


def test_second_trainer_on_a_busy_run_folder_is_refused(tmp_path: Path, photos: Path) -> None:
    """Two trainers in one folder would interleave checkpoints; the second stops at once, naming
    the holder, and the folder is free again after the first ends."""
    import os

    out = tmp_path / "r"
    out.mkdir()
    cfg = _cfg(synth_from=(str(photos),), steps=1)
    with ck.run_lock(out), pytest.raises(ck.RunLocked, match=f"pid {os.getpid()}"):
        _run(cfg, out)
    assert not (out / ck.STATE_FILE).exists()  # the refused run wrote nothing
    _run(cfg, out)
    assert (out / ck.STATE_FILE).exists()


def test_resume_keeps_a_best_written_after_the_last_save(tmp_path: Path) -> None:
    """A best model saved after the last state save (then a crash) must not be beaten by a worse one."""
    out = tmp_path / "run"
    out.mkdir()
    assert loop_mod._best_on_disk(out, 20.0) == 20.0  # no best.json yet
    (out / "best.json").write_text(json.dumps({"validation": {"best_psnr": 25.5}}))
    assert loop_mod._best_on_disk(out, 20.0) == 25.5
    assert loop_mod._best_on_disk(out, None) == 25.5
    assert loop_mod._best_on_disk(out, 30.0) == 30.0
    (out / "best.json").write_text("{not json")
    assert loop_mod._best_on_disk(out, 20.0) == 20.0


def test_wrapper_is_told_when_the_reconstruction_head_gets_no_gradient(tmp_path: Path, photos: Path) -> None:
    """DDP must be built with find_unused_parameters when the loss skips GGKMNet's SRM."""
    seen: list[bool] = []

    def wrap(model: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        seen.append(find_unused)
        return model

    for recipe in ("ggkmnet", "gkmanet"):
        cfg = _cfg(synth_from=(str(photos),), steps=1, loss=LossConfig(recipe=recipe))
        Trainer(cfg, tmp_path / recipe, device=torch.device("cpu"), progress=False, wrap_model=wrap).run()
    assert seen == [False, True]


def test_ema_decay_warms_up_and_caps() -> None:
    from gkm_cli.training.config import ema_decay_at

    decays = [ema_decay_at(s, 0.999) for s in range(20000)]
    assert decays[0] == pytest.approx(0.1) and max(decays) == 0.999 and decays[-1] == 0.999
    assert all(a <= b for a, b in itertools.pairwise(decays))
    # the weight left on the initial state after 1500 steps is negligible, unlike a plain 0.999 average
    assert math.prod(decays[:1500]) < 1e-3 < 0.999**1500
