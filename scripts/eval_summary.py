"""One line of the numbers the issue-12 targets use, from a `gkm evaluate --report X.json`.

    .venv/bin/python scripts/eval_summary.py REPORT.json [--csv]   # JSON (default) or a CSV row
    .venv/bin/python scripts/eval_summary.py REPORT.json --per-image   # Markdown rows, one per image

Fields: n, psnr_in, psnr_out, psnr_gain (mean of per-image PSNR), ssim_gain, lpips_in, lpips_out
(lower is better), worst_gain / worst_name (the image whose PSNR gain is lowest), and sharp_gain /
n_sharp: the mean PSNR gain over images whose input is already >= 35 dB (nearly sharp: the
do-no-harm case).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SHARP_INPUT_DB = 35.0
FIELDS = (
    "n",
    "psnr_in",
    "psnr_out",
    "psnr_gain",
    "ssim_gain",
    "lpips_in",
    "lpips_out",
    "worst_gain",
    "worst_name",
    "sharp_gain",
    "n_sharp",
)


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The summary of a gkm.evaluate report (schema gkm.evaluate/2, with --input-dir or --data)."""
    images = [im for im in report["images"] if im.get("baseline") and im.get("gain")]
    if not images:
        raise SystemExit("report has no images scored against an input (use --input-dir or --data)")
    gains = [(im["gain"]["psnr"], im["name"]) for im in images if im["gain"].get("psnr") is not None]
    sharp = [
        im["gain"]["psnr"]
        for im in images
        if (im["baseline"].get("psnr") or 0) >= SHARP_INPUT_DB and im["gain"].get("psnr") is not None
    ]
    mean, base = report["mean"], report["mean_baseline"]
    worst = min(gains)
    return {
        "n": len(images),
        "psnr_in": round(base["psnr"], 3),
        "psnr_out": round(mean["psnr"], 3),
        "psnr_gain": round(report["mean_gain"]["psnr"], 3),
        "ssim_gain": round(report["mean_gain"]["ssim"], 4),
        "lpips_in": round(base["lpips"], 4) if base.get("lpips") is not None else None,
        "lpips_out": round(mean["lpips"], 4) if mean.get("lpips") is not None else None,
        "worst_gain": round(worst[0], 3),
        "worst_name": worst[1],
        "sharp_gain": round(sum(sharp) / len(sharp), 3) if sharp else None,
        "n_sharp": len(sharp),
    }


def per_image_rows(report: dict[str, Any]) -> list[str]:
    """Markdown rows ``| name | PSNR in -> out (gain) | SSIM gain | LPIPS in -> out |`` in report order."""
    rows = []
    for im in report["images"]:
        base, out, gain = im.get("baseline") or {}, im.get("metrics") or {}, im.get("gain") or {}
        lpips = f"{base['lpips']:.4f} -> {out['lpips']:.4f}" if "lpips" in base and "lpips" in out else ""
        psnr = f"{base['psnr']:.2f} -> {out['psnr']:.2f} ({gain['psnr']:+.2f})" if "psnr" in gain else ""
        ssim = f"{gain['ssim']:+.4f}" if "ssim" in gain else ""
        rows.append(f"| `{im['name']}` | {psnr} | {ssim} | {lpips} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--csv", action="store_true", help="One CSV row in FIELDS order (no header).")
    ap.add_argument("--per-image", action="store_true", help="Markdown table rows, one per image.")
    args = ap.parse_args()
    try:
        report = json.loads(args.report.read_text())
        if args.per_image:
            print("\n".join(per_image_rows(report)))
            return
        s = summarize(report)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"{args.report}: not a gkm evaluate JSON report ({e})")
    print(",".join("" if s[k] is None else str(s[k]) for k in FIELDS) if args.csv else json.dumps(s))


if __name__ == "__main__":
    main()
