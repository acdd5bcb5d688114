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

from detector.evaluation.results import write_results_file

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
    """Draw per-class precision/recall curves into a PNG with OpenCV.

    Up to ``max_legend`` classes get one labelled line each (legend on the right, AP in %). With
    more classes (COCO's 80) every curve is a thin line coloured by its class AP on a viridis
    scale (colour bar on the right), and the mean curve over classes is drawn on top when all
    curves share their recall points (as pycocotools' 101-point curves do); per-class numbers
    are in the per-class table.

    OpenCV rather than matplotlib: importing matplotlib costs about a second, more than every
    other step of ``eval.py`` on a results file except the matching itself.

    Args:
        curves: class name -> ``(recall, precision)`` arrays, values in ``[0, 1]``.
        out_path: the PNG to write.
        title: figure title.
        ap: optional class name -> AP in ``[0, 1]``, shown in the legend / used for the colours.
        max_legend: most classes drawn as individually labelled lines.

    Returns:
        ``out_path``.
    """
    import cv2

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    names = list(curves)
    data = {n: tuple(np.asarray(v, dtype=np.float64).ravel() for v in curves[n]) for n in names}
    width, height = 760, 520
    left, top, plot_w, plot_h = 62, 40, 440, 420
    canvas = np.full((height, width, 3), 255, np.uint8)
    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    grey, black = (200, 200, 200), (0, 0, 0)

    def to_px(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:
        x = left + np.clip(rec, 0.0, 1.0) * plot_w
        y = top + plot_h - np.clip(prec, 0.0, 1.02) / 1.02 * plot_h
        return np.round(np.column_stack([x, y]) * 16).astype(np.int32)  # 4 fractional bits

    def polyline(rec, prec, color, thickness) -> None:
        if len(rec) >= 2:
            cv2.polylines(canvas, [to_px(rec, prec)], False, color, thickness, aa, shift=4)

    for t in np.linspace(0.0, 1.0, 6):
        x0 = (to_px(np.array([t]), np.array([0.0])) >> 4)[0, 0]
        x1, y1 = (to_px(np.array([1.0]), np.array([t])) >> 4)[0]
        cv2.line(canvas, (int(x0), top), (int(x0), top + plot_h), grey, 1, aa)
        cv2.line(canvas, (left, int(y1)), (int(x1), int(y1)), grey, 1, aa)
        cv2.putText(canvas, f"{t:.1f}", (int(x0) - 10, top + plot_h + 16), font, 0.4, black, 1, aa)
        cv2.putText(canvas, f"{t:.1f}", (left - 30, int(y1) + 4), font, 0.4, black, 1, aa)
    cv2.rectangle(canvas, (left, top), (left + plot_w, top + plot_h), black, 1, aa)
    cv2.putText(canvas, "recall", (left + plot_w // 2 - 20, height - 12), font, 0.5, black, 1, aa)
    cv2.putText(canvas, "precision", (6, top - 10), font, 0.45, black, 1, aa)
    cv2.putText(canvas, title[:90], (left, 22), font, 0.5, black, 1, aa)
    legend_x = left + plot_w + 16

    if not names:
        cv2.putText(
            canvas,
            "no curves",
            (left + plot_w // 2 - 40, top + plot_h // 2),
            font,
            0.6,
            black,
            1,
            aa,
        )
    elif len(names) <= max_legend:
        for k, name in enumerate(names):
            color = _distinct_color(k)
            rec, prec = data[name]
            polyline(rec, prec, color, 2)
            label = name if ap is None or name not in ap else f"{name} ({100 * ap[name]:.1f})"
            y = top + 8 + 20 * k
            cv2.line(canvas, (legend_x, y), (legend_x + 22, y), color, 2, aa)
            cv2.putText(canvas, label[:28], (legend_x + 28, y + 4), font, 0.4, black, 1, aa)
    else:
        values = np.array([np.nan if ap is None else ap.get(n, np.nan) for n in names])
        lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_VIRIDIS)
        lut = lut[:, 0, :]
        for name, value in zip(names, values):
            index = 128 if not np.isfinite(value) else int(np.round(np.clip(value, 0, 1) * 255))
            polyline(*data[name], tuple(int(c) for c in lut[index]), 1)
        if np.isfinite(values).any():  # colour bar: AP 0 at the bottom, 1 at the top
            bar = lut[::-1][np.linspace(0, 255, plot_h).astype(int)]
            canvas[top : top + plot_h, legend_x : legend_x + 16] = bar[:, None, :]
            for t in (0.0, 0.5, 1.0):
                y = int(top + plot_h - t * (plot_h - 1))
                cv2.putText(canvas, f"{t:.1f}", (legend_x + 20, y + 4), font, 0.4, black, 1, aa)
            cv2.putText(
                canvas, "class AP", (legend_x + 52, top + plot_h // 2), font, 0.45, black, 1, aa
            )
        recalls = [data[n][0] for n in names]
        if all(r.shape == recalls[0].shape and np.array_equal(r, recalls[0]) for r in recalls):
            mean = np.mean([data[n][1] for n in names], axis=0)
            polyline(recalls[0], mean, black, 3)
            cv2.putText(
                canvas,
                "black: mean over classes",
                (left + 8, top + plot_h - 10),
                font,
                0.45,
                black,
                1,
                aa,
            )
        cv2.putText(
            canvas,
            f"{len(names)} classes",
            (left + plot_w - 90, top + 18),
            font,
            0.45,
            black,
            1,
            aa,
        )
    if not cv2.imwrite(str(out_path), canvas):
        raise OSError(f"could not write {out_path}")
    return out_path


def _distinct_color(k: int) -> tuple[int, int, int]:
    """A stable, well separated BGR colour for the ``k``-th line (golden-ratio hue steps)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.85, 0.85)
    return int(255 * b), int(255 * g), int(255 * r)


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
