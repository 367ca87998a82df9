"""Score predictions against ground truth under a protocol; the engine-free core of ``gkm evaluate``.

Two entry points share one scoring loop:

- :func:`evaluate_pairs` takes an iterable of in-memory pairs (from files, from a model run by
  the engine, from anywhere) and returns an :class:`EvalReport`;
- :func:`evaluate_folders` pairs files by stem and feeds :func:`evaluate_pairs` lazily, so only
  one pair is in memory at a time.

A set's value of a metric is the mean of its finite per-image values; images whose value is
infinite (PSNR of an identical pair) are counted apart (:meth:`EvalReport.infinite_counts`), so
one identical pair does not turn the mean into ``inf``. With inputs, each image also gets the
input-vs-GT baseline and a gain (positive = the prediction is better, for every metric).

Pixels read from integer files are scored from their exact integer values (``k / (2^b - 1)``
in float64), not from the float32 copies the engine uses: an identical pair is then identical
under every protocol, including the ones that re-quantise the ground truth (dpdd8, dpdd16).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np
import torch
import torch.nn.functional as F

import gkm_cli
from gkm_cli.errors import ImageReadError, UsageError
from gkm_cli.evaluation.pairing import FilePair, Problem, pair_folders
from gkm_cli.metrics.conventions import colour_align
from gkm_cli.metrics.fidelity import mae, psnr, ssim
from gkm_cli.metrics.lpips import LpipsAlex, load_lpips, lpips
from gkm_cli.metrics.protocols import PROTOCOLS, Protocol, prepare
from gkm_cli.runtime import resolve_device

__all__ = [
    "DEFAULT_METRICS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "EvalReport",
    "EvalSettings",
    "ImageResult",
    "PairSample",
    "Preview",
    "evaluate_folders",
    "evaluate_pairs",
    "exact_pixels",
    "iter_folder_samples",
    "parse_metrics",
]

#: Every metric name, with its direction (True: higher is better).
HIGHER_IS_BETTER: Mapping[str, bool] = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "mae": False,
    "psnr_aligned": True,
}
METRICS: tuple[str, ...] = tuple(HIGHER_IS_BETTER)
#: Default metric set: psnr_aligned is PSNR after a per-channel affine colour fit to the GT.
DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "mae", "psnr_aligned")


def parse_metrics(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"psnr,ssim"`` (or a sequence) -> validated tuple in the given order, duplicates removed."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in HIGHER_IS_BETTER:
            raise UsageError(f"unknown metric {name!r} (choose from {', '.join(METRICS)})")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("no metric selected")
    return tuple(names)


@dataclass(frozen=True)
class EvalSettings:
    """What to compute and how.

    protocol: conventions (see :mod:`gkm_cli.metrics.protocols`).
    metrics: subset of :data:`METRICS`, in report order.
    device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    lpips_weights: safetensors file; None = the shipped ``models/lpips`` weights.
    preview_count: how many worst and best images get side-by-side crops (HTML report).
    preview_size: crop side in pixels.
    """

    protocol: Protocol = PROTOCOLS["default"]
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "cpu"
    lpips_weights: Path | None = None
    preview_count: int = 3
    preview_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", parse_metrics(self.metrics))
        if self.preview_count < 0 or self.preview_size < 16:
            raise UsageError("preview_count must be >= 0 and preview_size >= 16")


ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PairSample:
    """One pair to score, in memory.

    Arrays are numpy H x W x C (or H x W) or torch C x H x W (or 1 x C x H x W), RGB, float in
    [0,1] (uint8 / uint16 numpy arrays are scaled by their maximum). ``gt_bits`` is the ground
    truth's native integer depth (8, 16; None for float data), used when the protocol rounds
    at native precision. Paths are only recorded in the report.
    """

    name: str
    pred: ArrayLike
    gt: ArrayLike
    input: ArrayLike | None = None
    gt_bits: int | None = None
    pred_path: str | None = None
    gt_path: str | None = None
    input_path: str | None = None


@dataclass(frozen=True)
class ImageResult:
    """Scores of one image: output vs GT, and (with an input) input vs GT."""

    name: str
    height: int
    width: int
    metrics: Mapping[str, float]
    baseline: Mapping[str, float] | None = None
    pred_path: str | None = None
    gt_path: str | None = None
    input_path: str | None = None

    @property
    def gain(self) -> dict[str, float] | None:
        """Improvement over the input per metric (positive = better; PSNR in dB)."""
        if self.baseline is None:
            return None
        return {m: _gain(m, v, self.baseline[m]) for m, v in self.metrics.items() if m in self.baseline}


@dataclass(frozen=True)
class Preview:
    """Side-by-side crops of one image for the HTML report (PNG bytes per role)."""

    name: str
    rank: str  # "worst" or "best"
    key: str  # what the ranking used, e.g. "gain psnr"
    value: float
    box: tuple[int, int, int, int]  # top, left, height, width in the cropped image
    crops: Mapping[str, bytes]  # "input" (optional), "output", "gt" -> PNG


@dataclass(frozen=True)
class EvalReport:
    """Everything ``gkm evaluate`` knows after a run; reports are rendered from this alone."""

    protocol: Protocol
    metrics: tuple[str, ...]
    images: tuple[ImageResult, ...]
    problems: tuple[Problem, ...]
    previews: tuple[Preview, ...] = ()
    sources: Mapping[str, str | None] = field(default_factory=dict)
    device: str = "cpu"
    lpips_weights_sha256: str | None = None
    gkm_version: str = gkm_cli.__version__
    created_utc: str = ""
    elapsed_s: float = 0.0

    @property
    def n_scored(self) -> int:
        """Number of scored images."""
        return len(self.images)

    @property
    def has_baseline(self) -> bool:
        """Whether any image was scored against an input."""
        return any(r.baseline is not None for r in self.images)

    def mean(self) -> dict[str, float]:
        """Mean over scored images of each metric (output vs GT), of the finite values."""
        return _mean_of([r.metrics for r in self.images], self.metrics)

    def infinite_counts(self) -> dict[str, dict[str, int]]:
        """How many images' values were infinite (left out of the means), per metric, for
        ``"metrics"``, ``"baseline"`` and ``"gain"``; metrics without any are not listed."""
        groups: dict[str, list[Mapping[str, float]]] = {
            "metrics": [r.metrics for r in self.images],
            "baseline": [r.baseline for r in self.images if r.baseline is not None],
            "gain": [g for g in (r.gain for r in self.images) if g is not None],
        }
        out: dict[str, dict[str, int]] = {}
        for label, rows in groups.items():
            counts = {m: sum(1 for r in rows if m in r and math.isinf(r[m])) for m in self.metrics}
            out[label] = {m: n for m, n in counts.items() if n}
        return out

    def mean_baseline(self) -> dict[str, float] | None:
        """Mean input-vs-GT metric over images that have an input; None without inputs."""
        rows = [r.baseline for r in self.images if r.baseline is not None]
        return _mean_of(rows, self.metrics) if rows else None

    def mean_gain(self) -> dict[str, float] | None:
        """Mean per-image gain over images that have an input; None without inputs."""
        rows = [g for g in (r.gain for r in self.images) if g is not None]
        return _mean_of(rows, self.metrics) if rows else None


def _gain(metric: str, out: float, base: float) -> float:
    return out - base if HIGHER_IS_BETTER[metric] else base - out


def _mean_of(rows: Sequence[Mapping[str, float]], metrics: tuple[str, ...]) -> dict[str, float]:
    """Mean of the finite values of each metric; infinite ones are counted apart (see
    :meth:`EvalReport.infinite_counts`). All infinite: their common value (or nan if mixed)."""
    out: dict[str, float] = {}
    for m in metrics:
        vals = [r[m] for r in rows if m in r]
        if not vals:
            continue
        finite = [v for v in vals if math.isfinite(v)]
        if finite:
            out[m] = math.fsum(finite) / len(finite)
        else:
            out[m] = sum(vals)  # every value infinite (or nan): +inf, -inf or nan
    return out


# --------------------------------------------------------------------------------------------
# arrays


def _to_tensor(a: ArrayLike, device: torch.device) -> torch.Tensor:
    """Any supported array -> 1 x C x H x W float64 on device (RGB, alpha dropped)."""
    if isinstance(a, np.ndarray):
        arr = a
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float64) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float64) / 65535.0
        elif not np.issubdtype(arr.dtype, np.floating):
            raise UsageError(f"unsupported array dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise UsageError(f"expected an H x W x C array, got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)
    elif isinstance(a, torch.Tensor):
        t = a.detach()
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[0] != 1:
            raise UsageError(f"expected a C x H x W tensor, got shape {tuple(a.shape)}")
        if not t.is_floating_point():
            raise UsageError(f"unsupported tensor dtype {t.dtype}")
    else:
        raise UsageError(f"unsupported image type {type(a).__name__}")
    if t.shape[1] in (2, 4):
        t = t[:, : t.shape[1] - 1]
    if t.shape[1] not in (1, 3):
        raise UsageError(f"expected 1 or 3 channels, got {t.shape[1]}")
    return t.to(device=device, dtype=torch.float64)


def _match_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[1] == b.shape[1]:
        return a, b
    return a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)


def _score(
    pred: torch.Tensor,
    gt: torch.Tensor,
    settings: EvalSettings,
    gt_bits: int | None,
    net: LpipsAlex | None,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Metrics of one prepared pair; returns (metrics, pred_rgb, gt_rgb) for previews."""
    proto = settings.protocol
    pred, gt = _match_channels(pred, gt)
    p_m, g_m, p_rgb, g_rgb = prepare(pred, gt, proto, gt_bits=gt_bits)
    out: dict[str, float] = {}
    for m in settings.metrics:
        if m == "psnr":
            out[m] = float(psnr(p_m, g_m, data_range=proto.data_range)[0])
        elif m == "ssim":
            out[m] = float(ssim(p_m, g_m, data_range=proto.data_range, window=proto.ssim_window)[0])
        elif m == "mae":
            out[m] = float(mae(p_m, g_m)[0])
        elif m == "psnr_aligned":
            out[m] = float(psnr(colour_align(p_m, g_m), g_m, data_range=proto.data_range)[0])
        elif m == "lpips":
            assert net is not None
            out[m] = float(lpips(p_rgb.float(), g_rgb.float(), net=net)[0])
    return out, p_rgb, g_rgb


# --------------------------------------------------------------------------------------------
# previews


def _choose_box(gt_rgb: torch.Tensor, size: int) -> tuple[int, int, int, int]:
    """The size x size window with the most ground-truth detail (mean gradient magnitude)."""
    h, w = gt_rgb.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    if (ch, cw) == (h, w):
        return 0, 0, h, w
    g = gt_rgb.float().mean(dim=1, keepdim=True)
    energy = torch.zeros_like(g)
    energy[..., :, 1:] += (g[..., :, 1:] - g[..., :, :-1]).abs()
    energy[..., 1:, :] += (g[..., 1:, :] - g[..., :-1, :]).abs()
    stride = max(1, min(ch, cw) // 4)
    pooled = F.avg_pool2d(energy, (ch, cw), stride=stride)
    idx = int(torch.argmax(pooled.flatten()))
    top, left = divmod(idx, pooled.shape[-1])
    return top * stride, left * stride, ch, cw


def _png(t: torch.Tensor) -> bytes:
    """1 x C x H x W in [0,1] -> 8-bit PNG bytes."""
    from gkm_cli.images import encode_png_array

    arr = (t[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    return encode_png_array(np.ascontiguousarray(arr))


def _make_crops(box: tuple[int, int, int, int], images: Mapping[str, torch.Tensor]) -> dict[str, bytes]:
    top, left, h, w = box
    return {role: _png(t[..., top : top + h, left : left + w]) for role, t in images.items()}


@dataclass
class _PreviewKeeper:
    """Keeps crops of the ``count`` lowest- and highest-ranked images seen so far.

    Items: (rank, arrival, name, shown value, box, crops); rank orders worst -> best.
    """

    count: int
    items: list[tuple[float, int, str, float, tuple[int, int, int, int], dict[str, bytes]]] = field(
        default_factory=list
    )
    seen: int = 0

    def offer(
        self, rank: float, name: str, shown: float, box: tuple[int, int, int, int], crops: dict[str, bytes]
    ) -> None:
        self.seen += 1
        self.items.append((rank, self.seen, name, shown, box, crops))
        self.items.sort(key=lambda it: (it[0], it[1]))
        if len(self.items) > 2 * self.count:
            self.items = self.items[: self.count] + self.items[-self.count :]

    def would_keep(self, rank: float) -> bool:
        if len(self.items) < 2 * self.count:
            return True
        return rank < self.items[self.count - 1][0] or rank > self.items[-self.count][0]

    def previews(self, key: str) -> tuple[Preview, ...]:
        n = len(self.items)
        worst = self.items[: min(self.count, n)]
        best = list(reversed(self.items[max(min(self.count, n), n - self.count) :]))
        out = [Preview(name, "worst", key, v, box, crops) for _, _, name, v, box, crops in worst]
        out += [Preview(name, "best", key, v, box, crops) for _, _, name, v, box, crops in best]
        return tuple(out)


def _ranking_key(metrics: tuple[str, ...], with_baseline: bool) -> tuple[str, str, bool]:
    """(label, metric, use_gain): the metric that orders previews; gains when inputs exist."""
    metric = "psnr" if "psnr" in metrics else metrics[0]
    return (f"gain {metric}" if with_baseline else metric), metric, with_baseline


# --------------------------------------------------------------------------------------------
# the loop


#: ``progress(done, total, name)`` after each scored item (total None: unknown).
ProgressCallback = Callable[[int, int | None, str], None]


def evaluate_pairs(
    samples: Iterable[PairSample | Problem | tuple[Any, ...]],
    settings: EvalSettings = EvalSettings(),
    *,
    sources: Mapping[str, str | None] | None = None,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    lpips_net: LpipsAlex | None = None,
    expect_inputs: bool | None = None,
) -> EvalReport:
    """Score every pair of ``samples`` and collect the report.

    samples: :class:`PairSample` items, plain ``(name, pred, gt, input_or_None)`` tuples, or
        :class:`~gkm_cli.evaluation.pairing.Problem` items (recorded as they are), in any mix.
    sources: free-form provenance recorded in the report (folders, model name, data root).
    total / progress: ``progress(done, total, name)`` after each item, for progress bars.
    lpips_net: a loaded network to reuse; otherwise loaded from ``settings.lpips_weights``.
    expect_inputs: rank previews by gain (True) or by the metric itself (False); default:
        decided by the first sample.
    Per-pair failures (size mismatch, too small for a metric) become problems, never exceptions.
    """
    t0 = time.perf_counter()
    device = resolve_device(settings.device, mps=False)  # scores are computed in float64, which MPS lacks
    net = None
    if "lpips" in settings.metrics:
        net = lpips_net if lpips_net is not None else load_lpips(settings.lpips_weights, device=device)
    results: list[ImageResult] = []
    problems: list[Problem] = []
    keeper = _PreviewKeeper(settings.preview_count)
    rank_label = ""
    done = 0
    with torch.inference_mode():
        for item in samples:
            done += 1
            if isinstance(item, Problem):
                problems.append(item)
                if progress is not None:
                    progress(done, total, item.name)
                continue
            sample = item if isinstance(item, PairSample) else PairSample(*item)
            if expect_inputs is None:
                expect_inputs = sample.input is not None
            res = _score_sample(sample, settings, device, net, problems, keeper, expect_inputs)
            if res is not None:
                results.append(res)
                rank_label = _ranking_key(settings.metrics, expect_inputs)[0]
            if progress is not None:
                progress(done, total, sample.name)
    return EvalReport(
        protocol=settings.protocol,
        metrics=settings.metrics,
        images=tuple(results),
        problems=tuple(problems),
        previews=keeper.previews(rank_label) if settings.preview_count else (),
        sources=dict(sources or {}),
        device=str(device),
        lpips_weights_sha256=None if net is None else net.weights_sha256,
        created_utc=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        elapsed_s=time.perf_counter() - t0,
    )


def _score_sample(
    s: PairSample,
    settings: EvalSettings,
    device: torch.device,
    net: LpipsAlex | None,
    problems: list[Problem],
    keeper: _PreviewKeeper,
    expect_inputs: bool,
) -> ImageResult | None:
    paths = tuple(p for p in (s.pred_path, s.gt_path) if p)
    try:
        pred = _to_tensor(s.pred, device)
        gt = _to_tensor(s.gt, device)
    except UsageError as exc:
        problems.append(Problem(s.name, "unscorable", str(exc), paths))
        return None
    if pred.shape[-2:] != gt.shape[-2:]:
        problems.append(
            Problem(
                s.name,
                "size_mismatch",
                f"prediction is {pred.shape[-1]}x{pred.shape[-2]} but ground truth is {gt.shape[-1]}x{gt.shape[-2]} "
                "(WxH)",
                paths,
            )
        )
        return None
    try:
        metrics, p_rgb, g_rgb = _score(pred, gt, settings, s.gt_bits, net)
    except UsageError as exc:
        problems.append(Problem(s.name, "unscorable", str(exc), paths))
        return None

    baseline = None
    i_rgb = None
    if s.input is not None:
        in_paths = tuple(p for p in (s.input_path, s.gt_path) if p)
        try:
            inp = _to_tensor(s.input, device)
        except UsageError as exc:
            problems.append(Problem(s.name, "unscorable", f"input: {exc}", in_paths, "no_baseline"))
            inp = None
        if inp is not None and inp.shape[-2:] != gt.shape[-2:]:
            problems.append(
                Problem(
                    s.name,
                    "size_mismatch",
                    f"input is {inp.shape[-1]}x{inp.shape[-2]} but ground truth is {gt.shape[-1]}x{gt.shape[-2]} (WxH)",
                    in_paths,
                    "no_baseline",
                )
            )
        elif inp is not None:
            baseline, i_rgb, _ = _score(inp, gt, settings, s.gt_bits, net)

    result = ImageResult(
        s.name, int(gt.shape[-2]), int(gt.shape[-1]), metrics, baseline, s.pred_path, s.gt_path, s.input_path
    )
    if settings.preview_count:
        _, metric, use_gain = _ranking_key(settings.metrics, expect_inputs)
        gains = result.gain
        if use_gain:
            shown = rank = gains[metric] if gains is not None else math.nan
        else:
            shown = metrics[metric]
            rank = shown if HIGHER_IS_BETTER[metric] else -shown
        if not math.isnan(rank) and keeper.would_keep(rank):
            box = _choose_box(g_rgb, settings.preview_size)
            roles: dict[str, torch.Tensor] = {}
            if i_rgb is not None:
                roles["input"] = i_rgb
            roles["output"] = p_rgb
            roles["gt"] = g_rgb
            keeper.offer(rank, s.name, shown, box, _make_crops(box, roles))
    return result


# --------------------------------------------------------------------------------------------
# folders


class ImageLike(TypingProtocol):
    """What ``gkm_cli.images.read_image`` returns (only these attributes are used)."""

    @property
    def pixels(self) -> np.ndarray: ...

    @property
    def dtype(self) -> Any: ...


Reader = Callable[[Path], ImageLike]


def _default_reader() -> Reader:
    from gkm_cli.images import read_image

    return read_image


def _bits_of(dtype: Any) -> int | None:
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return 8
    if dt == np.uint16:
        return 16
    return None


def exact_pixels(img: ImageLike) -> np.ndarray:
    """The pixels of a file as scored: integer files as their integer samples (turned into exact
    float64 fractions later), not the float32 copies (off by up to 3e-8, which makes an
    identical pair score ~157 dB instead of inf once the ground truth is re-quantised)."""
    dt = np.dtype(img.dtype)
    if dt in (np.dtype(np.uint8), np.dtype(np.uint16)):
        top = np.float32(np.iinfo(dt).max)
        return np.rint(np.multiply(img.pixels, top, dtype=np.float32)).astype(dt)
    return img.pixels


def _read(reader: Reader, path: Path) -> tuple[ImageLike | None, str]:
    try:
        return reader(path), ""
    except (ImageReadError, OSError, ValueError, MemoryError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, msg


def iter_folder_samples(pairs: Iterable[FilePair], reader: Reader | None = None) -> Iterator[PairSample | Problem]:
    """Read each pair lazily; unreadable files become ``unreadable`` problems."""
    read = reader if reader is not None else _default_reader()
    for fp in pairs:
        gt, gt_err = _read(read, fp.gt)
        if gt is None:
            yield Problem(fp.name, "unreadable", f"cannot read ground truth {fp.gt}: {gt_err}", (str(fp.gt),))
            continue
        pred, pred_err = _read(read, fp.pred)
        if pred is None:
            yield Problem(fp.name, "unreadable", f"cannot read prediction {fp.pred}: {pred_err}", (str(fp.pred),))
            continue
        inp_pixels = None
        if fp.input is not None:
            inp, inp_err = _read(read, fp.input)
            if inp is None:
                yield Problem(
                    fp.name, "unreadable", f"cannot read input {fp.input}: {inp_err}", (str(fp.input),), "no_baseline"
                )
            else:
                inp_pixels = exact_pixels(inp)
        yield PairSample(
            fp.name,
            exact_pixels(pred),
            exact_pixels(gt),
            inp_pixels,
            gt_bits=_bits_of(gt.dtype),
            pred_path=str(fp.pred),
            gt_path=str(fp.gt),
            input_path=None if fp.input is None else str(fp.input),
        )


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    input_dir: str | Path | None = None,
    settings: EvalSettings = EvalSettings(),
    *,
    reader: Reader | None = None,
    progress: ProgressCallback | None = None,
) -> EvalReport:
    """Pair ``pred_dir`` and ``gt_dir`` (and ``input_dir``) by stem and score every pair.

    ``reader(path)`` decodes one image (default: :func:`gkm_cli.images.read_image`). Problems
    (missing, duplicate, unreadable, mismatched files) are recorded in the report, never raised;
    folders that do not exist raise :class:`~gkm_cli.errors.UsageError`.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    in_dir = Path(input_dir) if input_dir is not None else None
    pairing = pair_folders(pred_dir, gt_dir, in_dir)

    def items() -> Iterator[PairSample | Problem]:
        yield from pairing.problems
        yield from iter_folder_samples(pairing.pairs, reader)

    sources = {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "input_dir": None if in_dir is None else str(in_dir)}
    return evaluate_pairs(
        items(),
        settings,
        sources=sources,
        total=len(pairing.pairs) + len(pairing.problems),
        progress=progress,
        expect_inputs=in_dir is not None,
    )
