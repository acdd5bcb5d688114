"""Smoke run of ``bench/face.py --quick``: it completes and its table has every row and column."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (model label start, runtime label) of every row of the table, in order.
ROWS = [
    ("ours: SSDLite-MobileNetV1", "PyTorch eager"),
    ("ours: SSDLite-MobileNetV1", "ONNX Runtime"),
    ("ours: SSDLite-MobileNetV1", "OpenCV DNN"),
    ("Ultra-Light Slim-320", "OpenCV DNN (reference)"),
    ("Ultra-Light Slim-320", "ONNX Runtime"),
]
MS = r"\d+\.\d\d \(\d+\.\d\d\)"


def test_bench_face_quick_prints_every_row(shared_data: Path) -> None:
    if not (shared_data / "face_ultralight_slim320" / "slim-320.caffemodel").is_file():
        pytest.skip("Ultra-Light Slim-320 not in the shared data")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "face.py"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DETECTOR_SHARED_DATA": str(shared_data)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.count("|") == 9]
    assert lines[0].startswith("model"), proc.stdout
    assert "mult-adds" in lines[0] and "end to end ms" in lines[0]
    rows = lines[1:]
    assert len(rows) == len(ROWS), proc.stdout
    for line, (model, runtime) in zip(rows, ROWS):
        cells = [c.strip() for c in line.split("|")]
        assert cells[0].startswith(model) and cells[1] == runtime, line
        assert re.fullmatch(r"0\.2\d\dM", cells[2]), line  # both about 0.25 M parameters
        assert re.fullmatch(r"0\.0\d{3}G", cells[5]), line  # both under 0.1 G mult-adds
        assert re.fullmatch(MS, cells[6]) and re.fullmatch(MS, cells[8]), line  # both timed
        assert cells[7].endswith("x") and cells[9].endswith("x"), line
    reference = [c.strip() for c in rows[3].split("|")]
    assert reference[7] == reference[9] == "1.00x"
    assert "Ultra-Light counted from the prototxt" in proc.stdout
