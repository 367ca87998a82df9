"""Training curves as a PNG: loss terms and validation PSNR/SSIM against the step, from log.csv.

matplotlib is an optional dependency (``pip install 'gkm-cli[plot]'``); it is used through its
object API (``Figure`` + the Agg canvas), so no pyplot state is touched and no display is needed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gkm_cli.errors import DataError, GkmError, ImageWriteError
from gkm_cli.fileio import atomic_write_bytes
from gkm_cli.images import encode_png_array

#: Loss columns of log.csv in plotting order (only those present are drawn).
TERMS: tuple[str, ...] = ("total", "mse", "fft", "ssim", "recon")
LOG_FILE = "log.csv"


class PlotDependencyError(GkmError):
    """matplotlib (the ``plot`` extra) is not installed."""

    exit_code = 2


def require_matplotlib() -> None:
    """Raise :class:`PlotDependencyError` with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise PlotDependencyError("plotting needs matplotlib: pip install 'gkm-cli[plot]'") from None


def log_path(run: str | Path) -> Path:
    """``run`` itself when it is a CSV file, else ``run/log.csv``."""
    p = Path(run)
    return p if p.is_file() else p / LOG_FILE


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a training log.csv as floats; empty cells are left out of a row."""
    path = log_path(path)
    if not path.is_file():
        raise DataError(f"{path}: no training log (is it a `gkm train run` folder?)")
    rows: list[dict[str, float]] = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, float] = {}
            for k, v in raw.items():
                if k is None or v in (None, ""):
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    continue
            if "step" in row:
                rows.append(row)
    return rows


def _series(rows: Sequence[dict[str, float]], key: str, positive: bool = False) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if v is not None and math.isfinite(v) and (v > 0 or not positive):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys


def render_curves(rows: Sequence[dict[str, float]], *, title: str | None = None, dpi: int = 100) -> bytes:
    """PNG bytes: loss terms (log scale, left) and val PSNR (dB) with val SSIM (right) vs step."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2), dpi=dpi, layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    drawn = 0
    for k in TERMS:
        xs, ys = _series(rows, k, positive=True)
        if xs:
            ax_loss.plot(xs, ys, label=k, linewidth=1.6 if k == "total" else 1.0)
            drawn += 1
    if drawn:
        ax_loss.set_yscale("log")
        ax_loss.legend(loc="upper right", fontsize="small")
    else:
        ax_loss.text(0.5, 0.5, "no loss rows yet", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set(xlabel="step", ylabel="loss (mean over log interval)", title="training loss")
    ax_loss.grid(True, which="both", alpha=0.3)

    xs, ys = _series(rows, "val_psnr")
    if xs:
        ax_val.plot(xs, ys, "o-", color="tab:blue", label="val PSNR")
        ax_val.set_ylabel("PSNR (dB)", color="tab:blue")
        sx, sy = _series(rows, "val_ssim")
        if sx:
            ax_ssim: Any = ax_val.twinx()
            ax_ssim.plot(sx, sy, "s--", color="tab:orange", label="val SSIM", markersize=4)
            ax_ssim.set_ylabel("SSIM", color="tab:orange")
    else:
        ax_val.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_val.transAxes)
    for ax in fig.axes[1:]:
        ax.ticklabel_format(axis="y", useOffset=False)
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_val.set(xlabel="step", title="validation")
    ax_val.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return encode_png_array(np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]))  # BGRA: OpenCV's order


def plot_run(run: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """Write the curves of a run folder (or a log.csv) to the PNG ``out``, atomically."""
    require_matplotlib()
    rows = read_log(run)
    data = render_curves(rows, title=title if title is not None else log_path(run).parent.name)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
    except OSError as e:
        raise ImageWriteError(f"{out}: cannot write the plot ({e.strerror or e})") from None
    return out


class CurvePlotter:
    """``on_log`` observer for :class:`~gkm_cli.training.Trainer`: redraws ``out`` from the run's
    log.csv after each row that holds a validation; :meth:`write` draws it on demand (the end)."""

    def __init__(self, run_dir: str | Path, out: str | Path) -> None:
        require_matplotlib()
        self.run_dir, self.out = Path(run_dir), Path(out)

    def __call__(self, row: dict[str, Any]) -> None:
        if row.get("val_psnr") is not None:
            self.write()

    def write(self) -> Path | None:
        """Draw now; None when the run has no log yet."""
        if not (self.run_dir / LOG_FILE).is_file():
            return None
        return plot_run(self.run_dir, self.out)
