"""Compact campaign states (training/compact.py), the training precision policy and
``gkm benchmark --train`` (training/speed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from gkm_cli.cli import app
from gkm_cli.errors import SettingError
from gkm_cli.nets import TINY_OVERRIDES, create_model
from gkm_cli.training import checkpointing as ck
from gkm_cli.training import precision as precision_mod
from gkm_cli.training.compact import compact_state_file
from gkm_cli.training.precision import training_autocast_dtype
from gkm_cli.training.speed import TrainBenchConfig, measure_training

CPU = torch.device("cpu")


def _trained_state(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer, torch.nn.Module]:
    """A full state after a few real Adam steps (non-zero moments, EMA apart from the weights)."""
    torch.manual_seed(0)
    model = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    ema = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(1, 3, 32, 32)
    for _ in range(3):
        opt.zero_grad()
        model(x).image.square().mean().backward()
        opt.step()
        with torch.no_grad():
            for e, m in zip(ema.parameters(), model.parameters()):
                e.mul_(0.5).add_(m, alpha=0.5)
    path = ck.save_state(tmp_path, step=3, model=model, optimizer=opt, ema=ema, scaler=None, info={"best_psnr": 1.0})
    return path, model, opt, ema


def test_compact_state_is_about_half_and_expands_back(tmp_path: Path) -> None:
    path, model, opt, ema = _trained_state(tmp_path / "full")
    small = tmp_path / "compact" / ck.STATE_FILE
    small.parent.mkdir()
    info = compact_state_file(path, small)
    assert info["compact"] and info["step"] == 3 and info["best_psnr"] == 1.0
    assert small.stat().st_size < 0.55 * path.stat().st_size
    with safe_open(str(small), framework="pt") as f:
        keys = set(f.keys())
    assert not any(k.endswith(".exp_avg") for k in keys)
    # Load into fresh modules: raw weights exact, EMA to bf16 precision of its (small) delta,
    # second moments to bf16 precision, first moments zero, step count kept.
    m2 = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    e2 = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    st = ck.load_state(small, model=m2, optimizer=o2, ema=e2, scaler=None)
    assert st.step == 3
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    for (k, e), e_back, m in zip(ema.state_dict().items(), e2.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            tol = (e - m).abs() * 2**-7 + 1e-12  # relative error of bf16 on the delta only
            assert ((e - e_back).abs() <= tol).all(), k
    full, back = opt.state_dict()["state"], o2.state_dict()["state"]
    assert full.keys() == back.keys()
    for pid in full:
        assert torch.equal(back[pid]["exp_avg"], torch.zeros_like(full[pid]["exp_avg"]))
        torch.testing.assert_close(back[pid]["exp_avg_sq"], full[pid]["exp_avg_sq"], rtol=2**-7, atol=0)
        assert float(back[pid]["step"]) == float(full[pid]["step"])
    # compacting twice changes nothing more
    again = tmp_path / "again.safetensors"
    compact_state_file(small, again)
    assert again.stat().st_size == small.stat().st_size
    assert json.loads((tmp_path / "full" / ck.STATE_JSON).read_text())["step"] == 3


def test_training_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert training_autocast_dtype("auto", CPU) is None  # not validated on AMX yet: fp32
    assert training_autocast_dtype("fp32", CPU) is None
    monkeypatch.setattr(precision_mod, "cpu_matrix_units", lambda name: True)
    assert training_autocast_dtype("bf16", CPU) == torch.bfloat16
    assert training_autocast_dtype("auto", CPU) is None
    with pytest.raises(SettingError, match="fp16 training on the CPU"):
        training_autocast_dtype("fp16", CPU)
    monkeypatch.setattr(precision_mod, "cpu_matrix_units", lambda name: False)
    with pytest.raises(SettingError, match="no AMX bf16 units"):
        training_autocast_dtype("bf16", CPU)


def test_measure_training_interleaves_and_reports() -> None:
    cfgs = [
        TrainBenchConfig(model="ggkmnet", patch=32, batch=2, steps=2, warmup=0, tiny=True),
        TrainBenchConfig(model="gkmnet", patch=32, batch=2, steps=3, warmup=1, tiny=True, sharp_weight=1.0),
    ]
    recs, host = measure_training(cfgs, threads=1)
    assert [r.model for r in recs] == ["ggkmnet", "gkmnet"] and [r.steps for r in recs] == [2, 3]
    for r in recs:
        assert r.precision == "fp32" and r.s_per_step > 0
        assert r.samples_per_s == pytest.approx(2 / r.s_per_step)
        assert r.forward_s + r.backward_s + r.optimizer_s <= r.s_per_step * 3  # medians of the parts
    assert "cpu_flags" in host and host["threads"] == 1


def test_benchmark_train_cli(tmp_path: Path) -> None:
    md = tmp_path / "train.md"
    res = CliRunner().invoke(
        app,
        ["benchmark", "--train", "--tiny", "--patch", "32", "--batch", "2", "--runs", "1", "--warmup", "0",
         "--threads", "1", "--json", "--markdown", str(md)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (rec,) = doc["training"]
    assert rec["model"] == "ggkmnet" and rec["batch"] == 2 and rec["patch"] == 32
    assert "s/step" in md.read_text() and doc["machine"]["cpu"] in md.read_text()
    if not precision_mod.cpu_matrix_units("bf16"):
        bad = CliRunner().invoke(app, ["benchmark", "--train", "--tiny", "--precision", "fp32,bf16"])
        assert bad.exit_code == 2 and "no AMX bf16 units" in bad.output


def test_init_shared_copies_the_matching_tensors(tmp_path: Path) -> None:
    """GKMANet from GKMNet weights: every tensor with GKMNet's name and shape is copied, the
    attention parts keep their own initialisation; without --init-shared it is refused."""
    from gkm_cli.nets.checkpoint import save_weights
    from gkm_cli.training.loop import init_weights

    torch.manual_seed(1)
    source = create_model("gkmnet", **TINY_OVERRIDES["gkmnet"])
    path = tmp_path / "gkmnet.safetensors"
    save_weights(source, path)
    torch.manual_seed(2)
    target = create_model("gkmanet", **TINY_OVERRIDES["gkmanet"])
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ck.CheckpointError, match="same architecture"):
        init_weights(target, path)
    report = init_weights(target, path, shared=True)
    src, got = source.state_dict(), target.state_dict()
    shared = [k for k in got if k in src and src[k].shape == got[k].shape]
    assert report["from"] == "gkmnet" and report["tensors"] == len(shared) > 0
    assert 0 < report["param_fraction"] < 1
    for k, v in got.items():
        assert torch.equal(v, src[k] if k in shared else fresh[k]), k
