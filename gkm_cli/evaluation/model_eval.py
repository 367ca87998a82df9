"""`gkm evaluate --model NAME --data ROOT`: run the engine on a dataset and score it in one go.

The dataset layout is detected (DPDD, LFDOF, RealDOF, RTF, generic blur/ + sharp/); for layouts
with splits the test split is used unless another is named. Restored images stay in memory
unless a save folder is given; the blurred inputs are always scored too, so the gain is visible.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from gkm_cli.data.layouts import DatasetLayout, detect_layout, list_pairs
from gkm_cli.errors import GkmError
from gkm_cli.evaluation.core import (
    EvalReport,
    EvalSettings,
    PairSample,
    ProgressCallback,
    evaluate_pairs,
    exact_pixels,
)
from gkm_cli.evaluation.pairing import Problem, ProblemKind
from gkm_cli.images import Image, read_image, write_image


class ImageDeblurrer(Protocol):
    """What scoring a model needs of :class:`gkm_cli.api.Deblurrer` (a protocol, not an import:
    keeps evaluation free of the engine)."""

    def deblur_image(self, img: Image) -> Image: ...

    def describe(self) -> Mapping[str, object]: ...


#: The split scored by default for layouts that have several.
TEST_SPLITS = ("test_c", "test_data", "test")


def default_split(layout: DatasetLayout) -> str | None:
    """The layout's test split, or None (all pairs) for flat layouts."""
    for s in TEST_SPLITS:
        if s in layout.splits:
            return s
    return None


def evaluate_model_on_dataset(
    deblurrer: ImageDeblurrer,
    root: Path,
    settings: EvalSettings,
    *,
    split: str | None = None,
    save_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[EvalReport, DatasetLayout, str | None]:
    """Deblur every blurred image of the dataset at ``root`` and score output and input vs sharp.

    Returns the report, the detected layout and the split used. Unreadable files and files
    without a partner are listed in the report as problems, never dropped silently.
    """
    layout = detect_layout(root)
    split = split if split is not None else default_split(layout)
    with warnings.catch_warnings():  # missing partners are reported as problems instead
        warnings.simplefilter("ignore")
        pairs = list_pairs(root, split)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)

    def samples() -> Iterator[PairSample | Problem]:
        for m in getattr(pairs, "missing", []):
            kind: ProblemKind = "missing_gt" if m.role == "blur" else "missing_prediction"
            yield Problem(name=Path(m.path).stem, kind=kind, detail=f"{m.path}: no partner", paths=(str(m.path),))
        for pair in pairs:
            try:
                blur, sharp = read_image(pair.blur), read_image(pair.sharp)
                restored = deblurrer.deblur_image(blur)
            except GkmError as e:
                yield Problem(name=pair.name, kind="unreadable", detail=str(e), paths=(str(pair.blur), str(pair.sharp)))
                continue
            pred_path = None
            if save_dir is not None:  # the pair's key keeps scene sub-folders (LFDOF repeats file names)
                pred_path = save_dir / f"{pair.name}{Path(pair.blur).suffix}"
                pred_path.parent.mkdir(parents=True, exist_ok=True)
                write_image(pred_path, restored, forbid_same_as=Path(pair.blur))
            bits = {"uint8": 8, "uint16": 16}.get(str(sharp.dtype))
            yield PairSample(
                pair.name,
                restored.pixels,
                exact_pixels(sharp),
                exact_pixels(blur),
                gt_bits=bits,
                pred_path=str(pred_path) if pred_path else None,
                gt_path=str(pair.sharp),
            )

    sources = {
        "data": str(root),
        "layout": layout.name,
        "split": split,
        **{k: str(v) for k, v in deblurrer.describe().items()},
    }
    report = evaluate_pairs(
        samples(), settings, sources=sources, total=len(pairs), progress=progress, expect_inputs=True
    )
    return report, layout, split
