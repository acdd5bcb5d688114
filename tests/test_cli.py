"""The entry scripts end to end: train.py -> eval.py (checkpoint and results file), clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("cli")
    data = [
        f"dataset.root={tmp / 'data'}",
        "dataset.num_train=16",
        "dataset.num_val=6",
        "dataset.seed=1",
    ]
    proc = _run(
        "train.py", "trainer=debug", "backbone.alpha=0.25", "image_size=[96,96]", *data,
        f"hydra.run.dir={tmp / 'train'}", cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, data


def test_eval_checkpoint_and_results_file(trained: tuple[Path, list[str]]) -> None:
    tmp, data = trained
    logged = json.loads(
        json.dumps(__import__("torch").load(tmp / "train" / "best.pt", weights_only=True)["best"])
    )
    proc = _run(
        "eval.py",
        f"checkpoint={tmp / 'train' / 'best.pt'}",
        *data,
        f"hydra.run.dir={tmp / 'e1'}",
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp / "e1" / "metrics.json").read_text())
    assert metrics["AP"] == pytest.approx(logged["val/mAP"], abs=1e-12)
    assert "pycocotools" in metrics["protocol"]
    for name in ("detections.json", "per_class.md", "pr_curves.png"):
        assert (tmp / "e1" / name).is_file(), name
    # The written results file scores the same through the results-file path.
    proc = _run(
        "eval.py",
        f"detections={tmp / 'e1' / 'detections.json'}",
        *data,
        f"hydra.run.dir={tmp / 'e2'}",
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp / "e2" / "metrics.json").read_text())
    assert again["AP"] == pytest.approx(metrics["AP"], abs=1e-12)
    assert again["AP50"] == pytest.approx(metrics["AP50"], abs=1e-12)


def test_eval_voc_metric(trained: tuple[Path, list[str]]) -> None:
    tmp, data = trained
    proc = _run(
        "eval.py", f"checkpoint={tmp / 'train' / 'best.pt'}", "metric=voc07", *data,
        f"hydra.run.dir={tmp / 'e3'}", cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp / "e3" / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and "11-point" in metrics["protocol"]


def test_clear_errors(tmp_path: Path) -> None:
    proc = _run(
        "eval.py",
        f"checkpoint={tmp_path / 'missing.pt'}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert (
        "eval.py: error:" in proc.stderr
        and "missing.pt" in proc.stderr
        and "not found" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    proc = _run("eval.py", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0 and "exactly one of checkpoint" in proc.stderr
    proc = _run("train.py", "backbone.alhpa=0.5", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0 and "alhpa" in proc.stderr


def test_run_folder_log_holds_what_the_command_printed(
    trained: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Hydra's ``<command>.log`` gets the command's output and its one-line errors (it used to
    be empty for eval, detect and export)."""
    tmp, data = trained
    run = tmp_path / "e"
    proc = _run("eval.py", f"checkpoint={tmp / 'train' / 'best.pt'}", *data,
                f"hydra.run.dir={run}", cwd=tmp)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "eval.log").read_text()
    assert '"AP50"' in log and f"results in {run}" in log
    proc = _run("detect.py", "checkpoint=missing.pt", "source=x.jpg", f"hydra.run.dir={run}",
                cwd=tmp)  # fmt: skip
    assert proc.returncode == 1
    assert "detect.py: error:" in (run / "detect.log").read_text()
