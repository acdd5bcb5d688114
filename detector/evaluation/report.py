"""Run outputs: ``metrics.json``, per-class tables, precision/recall plots, results file.

``write_report(metrics, out_dir, ...)`` writes, into ``out_dir``:

* ``metrics.json``: the flat metrics dict (NaN written as ``null``; strict JSON);
* ``per_class.md`` and ``per_class.txt``: one row per class, one column per per-class metric
  (every ``"<metric>/<class>"`` key of ``metrics``), headed by the protocol and the main numbers;
* ``pr_curves.png``: precision/recall curves (when ``pr_curves`` is given);
* ``summary.txt``: e.g. the pycocotools-style 12-line summary (when ``summary`` is given);
* ``detections.json``: the detections as a COCO results file (when ``results`` is given).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_per_class_table", "plot_pr_curves", "write_report"]

_HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "mAP")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _per_class(
    metrics: Mapping[str, Any],
) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """``(columns, classes, table[class][column])`` from the ``"<column>/<class>"`` keys."""
    columns: list[str] = []
    classes: list[str] = []
    table: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if "/" not in key or key.startswith("time"):
            continue
        column, name = key.split("/", 1)
        if column not in columns:
            columns.append(column)
        if name not in table:
            classes.append(name)
            table[name] = {}
        table[name][column] = value
    return columns, classes, table


def _fmt(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        return f"{100 * value:.2f}" if percent else f"{value:.4f}"
    return str(value)


def format_per_class_table(metrics: Mapping[str, Any], *, markdown: bool = True) -> str:
    """The per-class table (AP-like columns in percent, counts as integers)."""
    columns, classes, table = _per_class(metrics)
    percent = {c: c.startswith(("AP", "AR", "mAP")) for c in columns}
    header = ["class", *[f"{c} (%)" if percent[c] else c for c in columns]]
    rows = [[name, *[_fmt(table[name].get(c), percent[c]) for c in columns]] for name in classes]
    lines: list[str] = []
    protocol = metrics.get("protocol")
    headline = [
        f"{k} {_fmt(metrics[k], True)}" for k in _HEADLINE if isinstance(metrics.get(k), float)
    ]
    if markdown:
        if protocol:
            lines += [f"Protocol: {protocol}", ""]
        if metrics.get("backend"):
            lines += [f"Backend: {metrics['backend']}", ""]
        if headline:
            lines += ["Overall (%): " + ", ".join(headline), ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---", *["---:"] * len(columns)]) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [
            max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)
        ]
        if protocol:
            lines.append(f"Protocol: {protocol}")
        if metrics.get("backend"):
            lines.append(f"Backend: {metrics['backend']}")
        if headline:
            lines.append("Overall (%): " + ", ".join(headline))
        fmt_row = lambda r: "  ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )
        lines.append(fmt_row(header))
        lines.append("  ".join("-" * w for w in widths))
        lines += [fmt_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def plot_pr_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    out_path: str | Path,
    *,
    title: str = "Precision / recall",
    ap: Mapping[str, float] | None = None,
    max_legend: int = 20,
) -> Path:
    """Plot per-class precision/recall curves to a PNG (matplotlib, Agg backend).

    Up to ``max_legend`` classes get one labelled line each. With more classes (COCO's 80) the
    curves are drawn as one thin-line collection coloured by the class AP (colour bar), and the
    mean curve over classes is drawn on top when all curves share their recall points (as
    pycocotools' 101-point curves do); per-class numbers are in the per-class table.

    Args:
        curves: class name -> ``(recall, precision)`` arrays.
        out_path: the PNG to write.
        title: figure title.
        ap: optional class name -> AP, shown in the legend / used for the colours.
        max_legend: most classes drawn as individually labelled lines.

    Returns:
        ``out_path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    names = list(curves)
    data = {n: tuple(np.asarray(v, dtype=float) for v in curves[n]) for n in names}
    fig = Figure(figsize=(7, 5), dpi=100)
    ax = fig.add_axes((0.09, 0.1, 0.66 if len(names) > max_legend else 0.6, 0.8))
    if len(names) <= max_legend:
        for name in names:
            rec, prec = data[name]
            label = name if ap is None or name not in ap else f"{name} ({100 * ap[name]:.1f})"
            ax.plot(rec, prec, linewidth=1.2, label=label)
        if names:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    else:
        values = np.array([np.nan if ap is None else ap.get(n, np.nan) for n in names])
        lines = LineCollection(
            [np.column_stack(data[n]) for n in names], linewidths=0.7, cmap="viridis", alpha=0.8
        )
        if np.isfinite(values).any():
            lines.set_array(np.nan_to_num(values, nan=0.0))
            lines.set_clim(0.0, 1.0)
            fig.colorbar(lines, cax=fig.add_axes((0.78, 0.1, 0.025, 0.8)), label="class AP")
        ax.add_collection(lines)
        recalls = [data[n][0] for n in names]
        if all(r.shape == recalls[0].shape and np.array_equal(r, recalls[0]) for r in recalls):
            mean = np.mean([data[n][1] for n in names], axis=0)
            ax.plot(recalls[0], mean, color="black", linewidth=2.2, label="mean over classes")
            ax.legend(fontsize=8, loc="lower left")
        ax.text(0.99, 0.99, f"{len(names)} classes", ha="right", va="top", transform=ax.transAxes)
    if not names:
        ax.text(0.5, 0.5, "no curves", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.savefig(out_path)
    return out_path


def write_report(
    metrics: Mapping[str, Any],
    out_dir: str | Path,
    *,
    pr_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    results: Sequence[Mapping[str, Any]] | None = None,
    summary: str | None = None,
    pr_title: str = "Precision / recall",
    metrics_only: bool = False,
) -> dict[str, Path]:
    """Write the outputs of an evaluation run (see the module docstring).

    Args:
        metrics: the flat metrics dict of an evaluator.
        out_dir: output folder (created).
        pr_curves: class name -> ``(recall, precision)``; plotted to ``pr_curves.png``.
        results: COCO results list; written to ``detections.json``.
        summary: free text (e.g. the pycocotools summary); written to ``summary.txt``.
        pr_title: title of the PR figure.
        metrics_only: only (re)write ``metrics.json``.

    Returns:
        What was written, by kind (``metrics``, ``table_md``, ``table_txt``, ``pr_curves``,
        ``summary``, ``detections``).
    """
    from detector.evaluation.results import write_results_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    path = out_dir / "metrics.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(dict(metrics)), f, indent=2, allow_nan=False)
        f.write("\n")
    written["metrics"] = path
    if metrics_only:
        return written
    path = out_dir / "per_class.md"
    path.write_text(format_per_class_table(metrics, markdown=True), encoding="utf-8")
    written["table_md"] = path
    path = out_dir / "per_class.txt"
    path.write_text(format_per_class_table(metrics, markdown=False), encoding="utf-8")
    written["table_txt"] = path
    if pr_curves is not None:
        ap_key = "AP50" if any(k.startswith("AP50/") for k in metrics) else "AP"
        ap = {
            k.split("/", 1)[1]: v
            for k, v in metrics.items()
            if k.startswith(f"{ap_key}/") and isinstance(v, float)
        }
        written["pr_curves"] = plot_pr_curves(
            pr_curves, out_dir / "pr_curves.png", title=pr_title, ap=ap
        )
    if summary:
        path = out_dir / "summary.txt"
        path.write_text(summary, encoding="utf-8")
        written["summary"] = path
    if results is not None:
        written["detections"] = write_results_file(results, out_dir / "detections.json")
    return written
