"""Helpers shared by the latency benchmarks (``bench/latency.py``, ``bench/face.py``).

Each benchmark row runs in its own worker process (ONNX Runtime, OpenCV and PyTorch thread pools
in one process slow each other down), set up once and then asked for timed blocks of calls over
a line protocol: the parent writes one command line, the worker answers one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (``"unknown"`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def block_stats(blocks: list[list[float]]) -> dict[str, float]:
    """``best``: the median of the least-disturbed block (load from other processes only ever
    adds time); ``median``: the median of all calls."""
    return {
        "best": min(statistics.median(b) for b in blocks),
        "median": statistics.median([t for b in blocks for t in b]),
    }


class WorkerProcess:
    """``python <script> --worker <spec as JSON>`` with ``threads`` intra-op threads.

    Args:
        script: the benchmark script, which runs its worker when given ``--worker``.
        spec: what the worker measures (JSON-serialisable).
        threads: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` of the process.
    """

    def __init__(self, script: str | Path, spec: dict[str, Any], threads: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.error: str | None = None

    def read(self) -> dict[str, Any] | None:
        """The worker's next JSON line; ``None`` (and ``error`` set) when it has exited."""
        line = self.proc.stdout.readline()
        if not line:
            self.error = f"worker exited with status {self.proc.wait()}"
            return None
        return json.loads(line)

    def request(self, command: str) -> dict[str, Any] | None:
        """Send one command line and read the answer (``None`` once the worker failed)."""
        if self.error:
            return None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
