"""Pair prediction / ground-truth / input files by stem and record what could not be paired.

Files pair by their name without suffix (``a.png`` pairs with ``a.tif``), in the top level of
each folder (not recursive, hidden files ignored). The ground-truth folder defines the set.
Nothing is dropped silently: every file left unpaired becomes a :class:`Problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gkm_cli.errors import UsageError
from gkm_cli.images import SUPPORTED_SUFFIXES  # the one suffix table: what read_image reads

__all__ = ["FilePair", "PairingResult", "Problem", "ProblemKind", "list_images", "pair_folders"]


ProblemKind = Literal[
    "missing_prediction",  # ground truth without prediction: not scored
    "missing_gt",  # prediction without ground truth: not scored
    "missing_input",  # no input for a scored pair: scored without baseline
    "duplicate_stem",  # two files with one stem in one folder: ambiguous
    "unreadable",  # a file could not be decoded
    "size_mismatch",  # prediction (or input) and ground truth differ in size
    "unscorable",  # a metric refused the pair (e.g. smaller than the SSIM window)
]


@dataclass(frozen=True)
class Problem:
    """Something that kept a file out of the scores (or a pair out of the baseline).

    consequence: ``"skipped"`` (pair not scored), ``"no_baseline"`` (scored, but without the
    input-vs-GT baseline) or ``"ignored"`` (an extra file that pairs with nothing).
    """

    name: str
    kind: ProblemKind
    detail: str
    paths: tuple[str, ...] = ()
    consequence: Literal["skipped", "no_baseline", "ignored"] = "skipped"


@dataclass(frozen=True)
class FilePair:
    """One scorable stem: prediction and ground truth, optionally the network input."""

    name: str
    pred: Path
    gt: Path
    input: Path | None = None


@dataclass(frozen=True)
class PairingResult:
    """Pairs in ground-truth stem order and the problems found while pairing."""

    pairs: tuple[FilePair, ...]
    problems: tuple[Problem, ...]


def list_images(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Image files of a folder by stem; stems that occur twice become ``duplicate_stem`` problems."""
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    by_stem: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        by_stem.setdefault(p.stem, []).append(p)
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for stem, paths in by_stem.items():
        if len(paths) == 1:
            found[stem] = paths[0]
        else:
            names = ", ".join(p.name for p in paths)
            problems.append(
                Problem(
                    stem,
                    "duplicate_stem",
                    f"several files with stem {stem!r} in {folder}: {names}",
                    tuple(map(str, paths)),
                )
            )
    return found, problems


def pair_folders(pred_dir: Path, gt_dir: Path, input_dir: Path | None = None) -> PairingResult:
    """Pair files of the three folders by stem (see module docstring)."""
    gts, gt_problems = list_images(Path(gt_dir))
    preds, pred_problems = list_images(Path(pred_dir))
    inputs: dict[str, Path] = {}
    input_problems: list[Problem] = []
    if input_dir is not None:
        inputs, input_problems = list_images(Path(input_dir))

    problems: list[Problem] = []
    dup_gt = {p.name for p in gt_problems}
    dup_pred = {p.name for p in pred_problems}
    dup_input = {p.name for p in input_problems}
    problems.extend(gt_problems)
    problems.extend(p for p in pred_problems if p.name not in dup_gt)
    for p in input_problems:
        if p.name not in dup_gt and p.name not in dup_pred:
            problems.append(Problem(p.name, p.kind, p.detail, p.paths, "no_baseline"))

    pairs: list[FilePair] = []
    for stem in sorted(gts):
        gt = gts[stem]
        if stem in dup_pred:
            continue
        pred = preds.get(stem)
        if pred is None:
            problems.append(
                Problem(
                    stem, "missing_prediction", f"no prediction for ground truth {gt.name} in {pred_dir}", (str(gt),)
                )
            )
            continue
        inp = inputs.get(stem)
        if input_dir is not None and inp is None and stem not in dup_input:
            problems.append(
                Problem(stem, "missing_input", f"no input for {gt.name} in {input_dir}", (str(gt),), "no_baseline")
            )
        pairs.append(FilePair(stem, pred, gt, inp))
    for stem in sorted(set(preds) - set(gts) - dup_gt):
        problems.append(
            Problem(
                stem,
                "missing_gt",
                f"no ground truth for prediction {preds[stem].name} in {gt_dir}",
                (str(preds[stem]),),
                "ignored",
            )
        )
    return PairingResult(tuple(pairs), tuple(problems))
