#!/usr/bin/env python
"""Copy a trained checkpoint into ``models/`` and write its model card with measured scores.

    .venv/bin/python scripts/ship_model.py runs/ggkmnet-synth/best.safetensors \
        --eval runs/eval --name ggkmnet --note "chosen among steps 1500..3200 by ..."

Reads the training card beside the weights (``best.json`` / ``last.json``: data, config, steps,
hardware, wall time, command), the ``gkm evaluate`` JSON reports that ``scripts/eval_shipped.sh``
wrote into ``--eval`` (``real_dev.json``, ``val_synth.json``), and writes
``models/<name>.safetensors`` + ``models/<name>.json``. The card keeps the exact commands and,
per set, the means, the gains over the input and the worst per-image PSNR gain, so the
quality targets can be checked from the card alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gkm_cli.fileio import atomic_write_bytes, file_sha256  # noqa: E402
from gkm_cli.nets.checkpoint import card_path, load_weights  # noqa: E402

EVAL_SETS = {
    "real_dev": (
        "../shared/data/real_pairs_dev (8 real DPDD pairs from GIF previews, 840x560, label rows 0-71 excluded)"
    ),
    "val_synth": "fixed synthetic set: 24 pairs of 256x256 from the 6 held-out photos (scripts/train_shipped.sh)",
    "val_synth_v2": (
        "v2 fixed synthetic set (checkpoints are chosen on it): 32 pairs of 256x256 from the 17 held-out photos"
        " of scripts/photo_split.txt, CoC up to 16 px (scripts/prepare_data.sh)"
    ),
}


def summarise(report: dict) -> dict:
    """Means, gains and the worst per-image PSNR gain of one evaluate report."""
    gains = [img["gain"]["psnr"] for img in report["images"] if img.get("gain")]
    worst = min(report["images"], key=lambda img: img["gain"]["psnr"]) if gains else None
    return {
        "protocol": report["protocol"]["name"],
        "scored": report["counts"]["scored"],
        "mean": report["mean"],
        "mean_input": report["mean_baseline"],
        "mean_gain": report["mean_gain"],
        "images_worse_than_input_by_0.2dB": sum(g < -0.2 for g in gains),
        "worst_psnr_gain": None if worst is None else {"name": worst["name"], "psnr_gain": worst["gain"]["psnr"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument(
        "--eval",
        type=Path,
        required=True,
        help="folder with the eval_shipped.sh reports (real_dev.json, val_synth*.json)",
    )
    ap.add_argument("--name", default="ggkmnet")
    ap.add_argument("--note", default="", help="how this checkpoint was chosen")
    ap.add_argument(
        "--train-command", default="scripts/train_shipped.sh (GKM_NPROC=2)", help="the script that trains it"
    )
    ap.add_argument(
        "--init-card",
        type=Path,
        help="card of the weights a fine-tune started from (--init): its training is recorded as stage 1",
    )
    args = ap.parse_args()

    load_weights(args.weights)  # refuse anything that does not load
    card = json.loads(card_path(args.weights).read_text())
    scores = {}
    for key, description in EVAL_SETS.items():
        path = args.eval / f"{key}.json"
        if path.exists():
            scores[key] = {"data": description, **summarise(json.loads(path.read_text()))}
    card["shipped"] = {
        "from": str(args.weights.relative_to(ROOT) if args.weights.is_relative_to(ROOT) else args.weights),
        "note": args.note,
        "train_command": args.train_command,
        "eval_command": f"scripts/eval_shipped.sh models/{args.name}.safetensors",
        "scores": scores,
    }
    if args.init_card is not None:
        stage1 = json.loads(args.init_card.read_text())
        keep = ("command", "steps", "wall_time_s", "hardware", "world_size", "synth_config", "training")
        card["shipped"]["stage1"] = {k: stage1[k] for k in keep if k in stage1}
        card["shipped"]["stage1"]["train_command"] = stage1.get("shipped", {}).get("train_command")
    dest = ROOT / "models" / f"{args.name}.safetensors"
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(args.weights, tmp)
    tmp.replace(dest)
    atomic_write_bytes(card_path(dest), (json.dumps(card, indent=2) + "\n").encode())
    print(json.dumps(card["shipped"], indent=2))
    # The spec's pretrained entry pins the shipped file: gkm refuses a default file that differs.
    print(f"now set sha256={file_sha256(dest)!r} in the {args.name} spec's PretrainedWeights (gkm_cli/nets/)")


if __name__ == "__main__":
    main()
