"""PNG plots of a run's ``metrics.csv`` (loss and mAP curves)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

__all__ = ["plot_training_curves", "read_metrics"]


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``metrics.csv`` (``step, epoch, key, value`` rows) as ``{key: [(step, value), ...]}``."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            series[row["key"]].append((int(row["step"]), float(row["value"])))
    return dict(series)


def plot_training_curves(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``loss.png`` and ``map.png`` into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_csv)
    out_dir = Path(out_dir)
    written = []
    groups = {
        "loss.png": ("training loss", ["train/loss", "train/loss_box", "train/loss_cls"]),
        "map.png": ("validation mAP", ["val/mAP", "val/mAP50", "val/AP75"]),
    }
    for name, (title, keys) in groups.items():
        keys = [k for k in keys if k in series]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, label=key, marker="o" if len(steps) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written
