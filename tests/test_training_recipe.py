"""Recipe options for the probes of issue 12: the LPIPS and do-no-harm (sharp) loss terms, the
CoC map carried by training samples, and ``--max-minutes``. Tiny networks, 32 px patches."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.errors import UsageError
from gkm_cli.metrics.lpips import load_lpips
from gkm_cli.nets import TINY_OVERRIDES, DeblurOutput
from gkm_cli.training import LossConfig, TrainConfig, Trainer
from gkm_cli.training import checkpointing as ck
from gkm_cli.training.losses import loss_terms, lpips_term, sharp_term
from gkm_cli.training.sampling import build_train_data
from helpers import tiny_train_args

TINY = tuple(sorted(TINY_OVERRIDES["ggkmnet"].items()))
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(2):
        small = rng.uniform(0, 255, (12, 12, 3)).astype(np.float32)
        img = cv2.resize(small, (96, 96), interpolation=cv2.INTER_CUBIC) + (rng.uniform(size=(96, 96, 1)) > 0.5) * 40
        cv2.imwrite(str(d / f"p{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return d


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pairs")
    (d / "blur").mkdir()
    (d / "sharp").mkdir()
    sharp = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(d / "sharp" / "a.png"), sharp)
    cv2.imwrite(str(d / "blur" / "a.png"), cv2.GaussianBlur(sharp, (0, 0), 1.5))
    return d


def _cfg(**kw) -> TrainConfig:
    base = dict(
        model="ggkmnet",
        model_overrides=TINY,
        patch=32,
        batch=2,
        steps=4,
        log_every=1,
        val_every=1000,
        save_every=1000,
        val_synth=0,
        synth_holdout=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _out(x: torch.Tensor, blur: torch.Tensor) -> DeblurOutput:
    n, _, h, w = x.shape
    scales = [torch.nn.functional.avg_pool2d(x, 4), torch.nn.functional.avg_pool2d(x, 2), x]
    recon = [torch.nn.functional.avg_pool2d(blur, 4), torch.nn.functional.avg_pool2d(blur, 2), blur]
    return DeblurOutput(
        image=x,
        scales=scales,
        spatial_weights=torch.ones(n, 1, h, w),
        group_sigmas=torch.zeros(n, 1),
        reconstruction=recon,
    )


# ----------------------------------------------------------------------------- loss terms


def test_lpips_term_is_frozen_zero_for_identical_and_adds_to_total() -> None:
    net = load_lpips()
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 64, 64, generator=g)
    blur = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1)
    assert float(lpips_term(sharp, sharp, net)) == pytest.approx(0.0, abs=1e-6)
    x = blur.clone().requires_grad_(True)
    term = lpips_term(x, sharp, net)
    assert float(term.detach()) > 0.01
    term.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # the gradient reaches the image
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())  # not the LPIPS weights
    base = loss_terms(_out(blur, blur), sharp, blur, recipe="ggkmnet", cfg=LossConfig())
    with_lp = loss_terms(
        _out(blur, blur), sharp, blur, recipe="ggkmnet", cfg=LossConfig(lpips_weight=0.3), lpips_net=net
    )
    assert "lpips" not in base
    assert float(with_lp["total"] - base["total"]) == pytest.approx(0.3 * float(with_lp["lpips"]), rel=1e-5)
    with pytest.raises(ValueError, match="lpips_net"):
        loss_terms(_out(blur, blur), sharp, blur, recipe="ggkmnet", cfg=LossConfig(lpips_weight=0.3))


def test_sharp_term_counts_only_in_focus_pixels() -> None:
    blur = torch.full((1, 3, 4, 4), 0.5)
    x = blur.clone()
    x[..., :2, :] += 0.2  # the network changed the top half
    coc = torch.zeros(1, 1, 4, 4)
    coc[..., :2, :2] = 3.0  # top-left is defocused: changing it is the job
    coc[..., :2, 2:] = float("inf")  # unknown (a real pair): never counted
    assert float(sharp_term(x, blur, coc, 0.5)) == pytest.approx(0.0, abs=1e-7)
    coc[..., 0, 2:] = 0.25  # these 2 changed pixels are in focus: 2 px * 3 ch * 0.2 / 48 values
    assert float(sharp_term(x, blur, coc, 0.5)) == pytest.approx(2 * 3 * 0.2 / 48, rel=1e-5)
    assert float(sharp_term(x, blur, coc, 0.2)) == pytest.approx(0.0, abs=1e-7)  # the radius is the threshold
    sharp = blur.clone()
    cfg = LossConfig(sharp_weight=2.0)
    terms = loss_terms(_out(x, blur), sharp, blur, recipe="gkmnet", cfg=cfg, coc=coc)  # every recipe
    base = loss_terms(_out(x, blur), sharp, blur, recipe="gkmnet", cfg=LossConfig())
    assert float(terms["total"] - base["total"]) == pytest.approx(2.0 * float(terms["sharp"]), rel=1e-5)
    with pytest.raises(ValueError, match="CoC"):
        loss_terms(_out(x, blur), sharp, blur, recipe="ggkmnet", cfg=cfg)


def test_loss_settings_are_validated_and_old_configs_still_load() -> None:
    with pytest.raises(UsageError, match="need lpips_weight >= 0"):
        LossConfig(lpips_weight=-1)
    with pytest.raises(UsageError, match="sharp_radius > 0"):
        LossConfig(sharp_radius=0)
    d = _cfg(synth_from=("x",)).to_dict()
    for k in ("lpips_weight", "sharp_weight", "sharp_radius"):
        del d["loss"][k]  # a run saved before these settings existed
    assert TrainConfig.from_dict(d).loss == LossConfig()


# ----------------------------------------------------------------------------- samples carry the CoC


def test_samples_carry_the_coc_without_changing_the_batches(photos: Path, pairs: Path) -> None:
    common = dict(synth_from=(str(photos),), data=(str(pairs),), real_fraction=0.5, seed=3)
    plain = build_train_data(_cfg(**common)).dataset
    with_coc = build_train_data(_cfg(loss=LossConfig(sharp_weight=1.0), **common)).dataset
    kinds = set()
    for k in range(12):
        a, b = plain[k], with_coc[k]
        assert "coc" not in a and b["coc"].shape == (1, 32, 32)
        torch.testing.assert_close(a["blur"], b["blur"], rtol=0, atol=0)  # sampling depends only on (seed, k)
        torch.testing.assert_close(a["sharp"], b["sharp"], rtol=0, atol=0)
        coc = b["coc"]
        if torch.isinf(coc).all():
            kinds.add("real")  # unknown CoC: never counted as in focus
        else:
            kinds.add("synthetic")
            assert torch.isfinite(coc).all() and float(coc.min()) >= 0
            if float(coc.max()) == 0:  # an in-focus sample: blur and sharp differ by noise/JPEG only
                assert float((b["blur"] - b["sharp"]).abs().mean()) < 0.05
    assert kinds == {"real", "synthetic"}


# ----------------------------------------------------------------------------- trainer and CLI


def test_trainer_logs_the_new_terms_records_them_and_resumes_exactly(tmp_path: Path, photos: Path) -> None:
    torch.set_num_threads(1)
    loss = LossConfig(lpips_weight=0.1, sharp_weight=1.0)
    common = dict(
        synth_from=(str(photos),), loss=loss, ema=0.9, lr_halve_start=100, lr_halve_every=100, synth_in_focus_prob=0.5
    )
    seen_a: list[dict[str, float]] = []
    Trainer(_cfg(steps=4, **common), tmp_path / "a", progress=False, on_step=[lambda s, v: seen_a.append(v)]).run()
    seen_b: list[dict[str, float]] = []
    Trainer(_cfg(steps=2, **common), tmp_path / "b", progress=False, on_step=[lambda s, v: seen_b.append(v)]).run()
    Trainer(
        _cfg(steps=4, **common), tmp_path / "b", progress=False, resume=True, on_step=[lambda s, v: seen_b.append(v)]
    ).run()
    assert len(seen_a) == len(seen_b) == 4
    for a, b in zip(seen_a, seen_b):
        assert set(a) >= {"lpips", "sharp"} and a["lpips"] > 0
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6, rel=1e-6), k
    assert any(v["sharp"] > 0 for v in seen_a)
    header = (tmp_path / "b" / "log.csv").read_text().splitlines()[0].split(",")
    assert "lpips" in header and "sharp" in header
    card = json.loads((tmp_path / "b" / "last.json").read_text())
    assert card["training"]["loss"]["lpips_weight"] == 0.1 and card["training"]["loss"]["sharp_weight"] == 1.0
    assert len(card["lpips_loss_weights_sha256"]) == 64
    saved = ck.read_state_info(tmp_path / "b" / ck.STATE_FILE)["config"]["loss"]
    assert saved["lpips_weight"] == 0.1 and saved["sharp_radius"] == 0.5  # what --resume restores


def test_max_minutes_stops_validates_saves_and_resumes(tmp_path: Path, photos: Path, pairs: Path) -> None:
    out = tmp_path / "run"
    args = [
        *tiny_train_args(out, photos, holdout="0"),
        "--val",
        str(pairs),
        "--val-every",
        "1000",
        "--steps",
        "500",
        "--patch",
        "32",
        "--batch",
        "1",
        "--save-every",
        "1000",
        "--quiet",
        "--json",
        "--threads",
        "1",
    ]
    r = runner.invoke(app, [*args, "--max-minutes", "0.0001"])  # 6 ms: the first step spends it
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["stopped"] == "max-minutes" and 1 <= res["steps"] < 500
    assert res["last_val"] is not None and res["last_val"]["n"] == 1  # validated at the stop
    assert ck.read_state_info(out / ck.STATE_FILE)["step"] == res["steps"]  # saved at the stop
    assert (out / ck.BEST_WEIGHTS).is_file()
    r = runner.invoke(
        app, ["train", "run", "--out", str(out), "--resume", "--steps", str(res["steps"] + 2), "--quiet", "--json"]
    )
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert again["steps"] == res["steps"] + 2 and again["stopped"] is None


@pytest.mark.parametrize(
    ("flag", "value", "text"),
    [
        ("--max-minutes", "0", "--max-minutes must be > 0"),
        ("--lpips-weight", "-1", "--lpips-weight >= 0"),
        ("--sharp-radius", "0", "--sharp-radius > 0"),
    ],
)
def test_cli_refuses_bad_recipe_values(tmp_path: Path, photos: Path, flag: str, value: str, text: str) -> None:
    r = runner.invoke(
        app,
        [
            *tiny_train_args(tmp_path / "r", photos),
            "--steps",
            "1",
            "--patch",
            "32",
            "--batch",
            "1",
            "--quiet",
            flag,
            value,
        ],
    )
    assert r.exit_code == 2 and text in r.stderr  # gkm's error handler: one line, exit 2
    assert not (tmp_path / "r" / ck.STATE_FILE).exists()


def test_cli_bad_max_minutes_is_one_line_and_exit_2(tmp_path: Path, photos: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gkm_cli",
            *tiny_train_args(tmp_path / "r", photos),
            "--steps",
            "1",
            "--max-minutes",
            "-5",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--max-minutes must be > 0" in lines[0], r.stderr


def test_max_minutes_under_torchrun_stops_every_rank_at_one_step(tmp_path: Path, photos: Path, pairs: Path) -> None:
    """Two CPU ranks: the time flag rides on the per-step all-reduce, so both ranks stop, and
    save, at the same step; the launcher exits 0."""
    import os
    import socket
    import subprocess
    import sys

    from safetensors import safe_open

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "ddp"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(port),
            "-m",
            "gkm_cli",
            *tiny_train_args(out, photos, holdout="0"),
            "--val",
            str(pairs),
            "--val-every",
            "100000",
            "--patch",
            "32",
            "--batch",
            "2",
            "--steps",
            "100000",
            "--save-every",
            "100000",
            "--threads",
            "1",
            "--quiet",
            "--json",
            "--save-all-ranks",
            "--max-minutes",
            "0.002",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout[r.stdout.index("{") :])
    assert res["stopped"] == "max-minutes" and 1 <= res["steps"] < 100000 and res["last_val"]["n"] == 1
    for rank in (0, 1):
        with safe_open(str(out / "ranks" / f"rank{rank}.safetensors"), framework="pt") as f:
            assert f.metadata()["step"] == str(res["steps"])  # both ranks saved at the agreed step
