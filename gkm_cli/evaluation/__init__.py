"""Evaluation of restored images against ground truth: pairing, scoring loop, reports.

Python API::

    from gkm_cli.evaluation import EvalSettings, evaluate_folders, write_report
    from gkm_cli.metrics import get_protocol

    report = evaluate_folders("out/", "gt/", input_dir="blur/",
                              settings=EvalSettings(protocol=get_protocol("dpdd8")))
    write_report(report, "report.html")

:func:`evaluate_pairs` scores in-memory pairs (e.g. produced by a model run) with the same loop.
"""

from gkm_cli.evaluation.core import (
    DEFAULT_METRICS,
    HIGHER_IS_BETTER,
    METRICS,
    EvalReport,
    EvalSettings,
    ImageResult,
    PairSample,
    Preview,
    evaluate_folders,
    evaluate_pairs,
    iter_folder_samples,
    parse_metrics,
)
from gkm_cli.evaluation.pairing import FilePair, PairingResult, Problem, pair_folders
from gkm_cli.evaluation.reports import (
    REPORT_SUFFIXES,
    fmt_metric,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    report_to_dict,
    write_report,
)

__all__ = [
    "DEFAULT_METRICS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "REPORT_SUFFIXES",
    "EvalReport",
    "EvalSettings",
    "FilePair",
    "ImageResult",
    "PairSample",
    "PairingResult",
    "Preview",
    "Problem",
    "evaluate_folders",
    "evaluate_pairs",
    "fmt_metric",
    "iter_folder_samples",
    "pair_folders",
    "parse_metrics",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "report_to_dict",
    "write_report",
]
