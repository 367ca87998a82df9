"""Render an :class:`~gkm_cli.evaluation.core.EvalReport` as JSON, CSV, Markdown or HTML.

Every format records the protocol. :func:`write_report` picks the format from the suffix.
The HTML report is one self-contained file: inline CSS and JS, crops as base64 PNG.

Non-finite values (PSNR of an identical pair is ``+inf``; a gain between two infinite PSNRs is
``nan``) have ONE representation in JSON (schema ``gkm.evaluate/2``): the number field is
``null`` and the object that holds it has a ``"nonfinite"`` companion naming the value, e.g.
``"metrics": {"psnr": null, ...}, "nonfinite": {"metrics": {"psnr": "inf"}}``; ``"inf"``,
``"-inf"`` and ``"nan"`` are the only words used. Number fields are therefore always numbers or
null (strict JSON). Set means are over finite values; ``"infinite"`` counts, per metric, the
images whose value was infinite and left out (``{"metrics": {"psnr": 1}}``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gkm_cli.errors import ImageWriteError, UsageError
from gkm_cli.evaluation.core import HIGHER_IS_BETTER, EvalReport
from gkm_cli.fileio import atomic_write_bytes, describe_os_error

__all__ = [
    "REPORT_SUFFIXES",
    "fmt_metric",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "report_to_dict",
    "write_report",
]

SCHEMA = "gkm.evaluate/2"  # /2: non-finite values are null + "nonfinite" (were strings in /1)

_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "mae": "MAE",
    "psnr_aligned": "PSNR colour-aligned (dB)",
}
_DIGITS = {"psnr": 2, "psnr_aligned": 2, "ssim": 4, "lpips": 4, "mae": 5}


def fmt_metric(metric: str, value: float | None, *, signed: bool = False) -> str:
    """Human formatting: PSNR 2 decimals, SSIM/LPIPS 4, MAE 5; ``-`` for missing."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return ("+inf" if signed else "inf") if value > 0 else "-inf"
    d = _DIGITS.get(metric, 4)
    return f"{value:+.{d}f}" if signed else f"{value:.{d}f}"


def _word(v: float) -> str:
    """The word for a non-finite value in JSON: "inf", "-inf" or "nan"."""
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _nums(d: dict[str, float] | None) -> dict[str, Any] | None:
    """Numbers for JSON: finite values as they are, non-finite ones as null (see the module doc)."""
    return None if d is None else {k: float(v) if math.isfinite(v) else None for k, v in d.items()}


def _nonfinite(**groups: dict[str, float] | None) -> dict[str, dict[str, str]]:
    """The ``"nonfinite"`` companion: for each group, the metrics whose value is not finite."""
    out = {}
    for name, d in groups.items():
        words = {k: _word(v) for k, v in (d or {}).items() if not math.isfinite(v)}
        if words:
            out[name] = words
    return out


def report_to_dict(report: EvalReport) -> dict[str, Any]:
    """The JSON document of a report (stable key names; see ``schema``)."""
    images = []
    for r in report.images:
        images.append(
            {
                "name": r.name,
                "height": r.height,
                "width": r.width,
                "metrics": _nums(dict(r.metrics)),
                "baseline": _nums(None if r.baseline is None else dict(r.baseline)),
                "gain": _nums(r.gain),
                "nonfinite": _nonfinite(
                    metrics=dict(r.metrics), baseline=None if r.baseline is None else dict(r.baseline), gain=r.gain
                ),
                "pred": r.pred_path,
                "gt": r.gt_path,
                "input": r.input_path,
            }
        )
    problems = [
        {"name": p.name, "kind": p.kind, "consequence": p.consequence, "detail": p.detail, "paths": list(p.paths)}
        for p in report.problems
    ]
    return {
        "schema": SCHEMA,
        "gkm_version": report.gkm_version,
        "created_utc": report.created_utc,
        "protocol": report.protocol.as_dict(),
        "metrics": list(report.metrics),
        "higher_is_better": {m: HIGHER_IS_BETTER[m] for m in report.metrics},
        "device": report.device,
        "lpips_weights_sha256": report.lpips_weights_sha256,
        "sources": dict(report.sources),
        "counts": {
            "scored": report.n_scored,
            "with_input": sum(r.baseline is not None for r in report.images),
            "problems": len(report.problems),
            "skipped": sum(p.consequence == "skipped" for p in report.problems),
        },
        "mean": _nums(report.mean()),
        "mean_baseline": _nums(report.mean_baseline()),
        "mean_gain": _nums(report.mean_gain()),
        "nonfinite": _nonfinite(mean=report.mean(), mean_baseline=report.mean_baseline(), mean_gain=report.mean_gain()),
        "infinite": report.infinite_counts(),
        "images": images,
        "problems": problems,
        "elapsed_s": round(report.elapsed_s, 3),
    }


def render_json(report: EvalReport) -> str:
    """Pretty JSON text (ends with a newline)."""
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"


def render_csv(report: EvalReport) -> str:
    """One row per image (status ``ok``), per problem (status = problem kind), and a ``mean`` row.

    Columns: name, status, height, width, each metric, ``<metric>_input`` and ``<metric>_gain``
    (when inputs were given), paths, detail, and ``protocol`` (the protocol summary).
    """
    ms = list(report.metrics)
    base = report.has_baseline or bool(report.sources.get("input_dir"))
    cols = ["name", "status", "height", "width", *ms]
    if base:
        cols += [f"{m}_input" for m in ms] + [f"{m}_gain" for m in ms]
    cols += ["pred", "gt", "input", "detail", "protocol"]
    proto = report.protocol.summary()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()

    def vals(prefix: str, d: dict[str, float] | None) -> dict[str, Any]:
        if d is None:
            return {}
        return {f"{m}{prefix}": repr(float(d[m])) if m in d else "" for m in ms}

    for r in report.images:
        row: dict[str, Any] = {"name": r.name, "status": "ok", "height": r.height, "width": r.width}
        row.update(vals("", dict(r.metrics)))
        if base:
            row.update(vals("_input", None if r.baseline is None else dict(r.baseline)))
            row.update(vals("_gain", r.gain))
        row.update({"pred": r.pred_path or "", "gt": r.gt_path or "", "input": r.input_path or "", "protocol": proto})
        w.writerow(row)
    for p in report.problems:
        w.writerow({"name": p.name, "status": p.kind, "detail": f"{p.consequence}: {p.detail}", "protocol": proto})
    if report.images:
        row = {"name": "mean", "status": "mean"}
        row.update(vals("", report.mean()))
        if base:
            row.update(vals("_input", report.mean_baseline()))
            row.update(vals("_gain", report.mean_gain()))
        inf = report.infinite_counts()["metrics"]
        left = "; infinite values left out: " + ", ".join(f"{m} {n}" for m, n in inf.items()) if inf else ""
        row["detail"] = f"mean of {report.n_scored} per-image values (finite ones){left}"
        row["protocol"] = proto
        w.writerow(row)
    return buf.getvalue()


def _summary_rows(report: EvalReport) -> list[tuple[str, str, str, str]]:
    mean, base, gain = report.mean(), report.mean_baseline(), report.mean_gain()
    rows = []
    for m in report.metrics:
        rows.append(
            (
                _LABELS.get(m, m) + (" ↑" if HIGHER_IS_BETTER[m] else " ↓"),
                fmt_metric(m, mean.get(m)),
                fmt_metric(m, None if base is None else base.get(m)),
                fmt_metric(m, None if gain is None else gain.get(m), signed=True),
            )
        )
    return rows


def _protocol_rows(report: EvalReport) -> list[tuple[str, str]]:
    d = report.protocol.as_dict()
    rows = [(k, ", ".join(v) if isinstance(v, list) else str(v)) for k, v in d.items()]
    rows.append(("device", report.device))
    rows.append(("lpips_weights_sha256", report.lpips_weights_sha256 or "-"))
    return rows


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: EvalReport) -> str:
    """Markdown: summary, protocol, per-image table, problems."""
    ms = list(report.metrics)
    out = ["# gkm evaluate report", ""]
    for k, v in report.sources.items():
        if v:
            out.append(f"- {k}: `{v}`")
    out.append(f"- scored: {report.n_scored} images; problems: {len(report.problems)}")
    inf = report.infinite_counts()["metrics"]
    if inf:
        out.append(
            "- infinite values (identical pairs), left out of the means: "
            + ", ".join(f"{m} {n}" for m, n in inf.items())
        )
    out.append(f"- protocol: {report.protocol.summary()}")
    out += ["", "## Summary (mean of per-image values)", "", "| metric | output | input | gain |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _summary_rows(report)]
    out += ["", "## Protocol", "", "| field | value |", "|---|---|"]
    out += [f"| {k} | {_md_escape(v)} |" for k, v in _protocol_rows(report)]
    out += ["", "## Per image", ""]
    head = ["image"] + [_LABELS.get(m, m) for m in ms]
    if report.has_baseline:
        head += [f"gain {m}" for m in ms]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for r in report.images:
        cells = [_md_escape(r.name)] + [fmt_metric(m, r.metrics.get(m)) for m in ms]
        if report.has_baseline:
            g = r.gain or {}
            cells += [fmt_metric(m, g.get(m), signed=True) for m in ms]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Problems", ""]
    if report.problems:
        out += [
            f"- **{p.kind}** `{_md_escape(p.name)}` ({p.consequence}): {_md_escape(p.detail)}" for p in report.problems
        ]
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e0e0ff}
.pos{color:#060}.neg{color:#a00}.problems li{margin:0.2em 0}
.preview{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}
.preview figure{display:inline-block;margin:0 4px;text-align:center}.preview img{image-rendering:pixelated;border:1px solid #999}
code{background:#f4f4f4;padding:0 3px}
"""  # noqa: E501 (the report's stylesheet, verbatim)

_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.from(body.rows),asc=th.dataset.dir!=='asc';
      t.querySelectorAll('th').forEach(function(h){h.dataset.dir='';});th.dataset.dir=asc?'asc':'desc';
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;
        if(x===undefined){x=a.cells[i].textContent;y=b.cells[i].textContent;return asc?x.localeCompare(y):y.localeCompare(x);}
        x=Number(x);y=Number(y);
        if(isNaN(x)&&isNaN(y))return 0;if(isNaN(x))return 1;if(isNaN(y))return -1;
        if(x===y)return 0;return asc?(x<y?-1:1):(x<y?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""  # noqa: E501 (the report's table sorter, verbatim)


def _cell(metric: str, v: float | None, *, signed: bool = False) -> str:
    if v is None:
        return "<td>-</td>"
    cls = ""
    if signed and not math.isnan(v) and v != 0:
        cls = ' class="pos"' if v > 0 else ' class="neg"'
    # JavaScript's Number() reads "Infinity" / "-Infinity" (parseFloat("inf") is NaN); nan sorts last.
    data = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(float(v))
    return f'<td data-v="{data}"{cls}>{html.escape(fmt_metric(metric, v, signed=signed))}</td>'


def render_html(report: EvalReport) -> str:
    """One self-contained HTML page (no external resources)."""
    e = html.escape
    ms = list(report.metrics)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>gkm evaluate report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>gkm evaluate report</h1><ul>",
    ]
    for k, v in report.sources.items():
        if v:
            parts.append(f"<li>{e(k)}: <code>{e(str(v))}</code></li>")
    parts.append(
        f"<li>scored {report.n_scored} images, {len(report.problems)} problems; "
        f"gkm {e(report.gkm_version)}, {e(report.created_utc)}, {report.elapsed_s:.1f} s on "
        f"{e(report.device)}</li></ul>"
    )
    inf = report.infinite_counts()["metrics"]
    inf_note = (
        (
            " Infinite values (identical pairs) are left out of the means: "
            + ", ".join(f"{m} {n}" for m, n in inf.items())
            + "."
        )
        if inf
        else ""
    )
    parts.append(
        "<h2>Summary</h2><p>Mean of per-image values; gain is positive when the output beats the "
        f"input.{e(inf_note)}</p>"
    )
    parts.append(
        "<table id='summary'><thead><tr><th>metric</th><th>output</th><th>input</th><th>gain</th></tr></thead><tbody>"
    )
    for row in _summary_rows(report):
        parts.append("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table>")

    parts.append("<h2>Protocol</h2><table id='protocol'><tbody>")
    for k, v in _protocol_rows(report):
        parts.append(f"<tr><td>{e(k)}</td><td style='text-align:left'>{e(v)}</td></tr>")
    parts.append("</tbody></table>")

    parts.append("<h2>Problems</h2>")
    if report.problems:
        parts.append("<ul class='problems'>")
        for problem in report.problems:
            parts.append(
                f"<li><b>{e(problem.kind)}</b> <code>{e(problem.name)}</code> ({e(problem.consequence)}): "
                f"{e(problem.detail)}</li>"
            )
        parts.append("</ul>")
    else:
        parts.append("<p>None.</p>")

    parts.append("<h2>Per image</h2><p>Click a column header to sort.</p>")
    parts.append("<table class='sortable' id='images'><thead><tr><th>image</th>")
    for m in ms:
        parts.append(f"<th>{e(_LABELS.get(m, m))}</th>")
    if report.has_baseline:
        for m in ms:
            parts.append(f"<th>{e(m)} input</th>")
        for m in ms:
            parts.append(f"<th>gain {e(m)}</th>")
    parts.append("</tr></thead><tbody>")
    for r in report.images:
        parts.append(f"<tr><td>{e(r.name)}</td>")
        parts.extend(_cell(m, r.metrics.get(m)) for m in ms)
        if report.has_baseline:
            b = r.baseline or {}
            g = r.gain or {}
            parts.extend(_cell(m, b.get(m)) for m in ms)
            parts.extend(_cell(m, g.get(m), signed=True) for m in ms)
        parts.append("</tr>")
    parts.append("</tbody></table>")

    if report.previews:
        parts.append("<h2>Worst and best images</h2>")
        for rank in ("worst", "best"):
            items = [p for p in report.previews if p.rank == rank]
            if not items:
                continue
            parts.append(f"<h3>{rank} by {e(items[0].key)}</h3>")
            for p in items:
                top, left, h, w = p.box
                parts.append(
                    f"<div class='preview'><div><b>{e(p.name)}</b>: {e(p.key)} "
                    f"{e(fmt_metric(p.key.split()[-1], p.value, signed=p.key.startswith('gain')))} "
                    f"(crop {w}x{h} at x={left}, y={top})</div>"
                )
                for role, png in p.crops.items():
                    b64 = base64.b64encode(png).decode("ascii")
                    parts.append(
                        f"<figure><img alt='{e(role)}' src='data:image/png;base64,{b64}'>"
                        f"<figcaption>{e(role)}</figcaption></figure>"
                    )
                parts.append("</div>")
    parts.append(f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


_RENDERERS: dict[str, Callable[[EvalReport], str]] = {
    ".json": render_json,
    ".csv": render_csv,
    ".md": render_markdown,
    ".markdown": render_markdown,
    ".html": render_html,
    ".htm": render_html,
}
REPORT_SUFFIXES: tuple[str, ...] = tuple(_RENDERERS)


def write_report(report: EvalReport, path: str | Path) -> Path:
    """Write ``report`` in the format named by the suffix (.json .csv .md .html); atomic."""
    path = Path(path)
    render = _RENDERERS.get(path.suffix.lower())
    if render is None:
        raise UsageError(f"unknown report format {path.suffix or path.name!r} (use {', '.join(REPORT_SUFFIXES)})")
    text = render(report)
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise ImageWriteError(f"cannot write report {path}: {describe_os_error(exc)}", errno=exc.errno) from None
    return path
