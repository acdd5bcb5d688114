"""The CI skip policy of tests/conftest.py: a skip that is not marked optional fails under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "from conftest import skip_optional\n\n"
        "def test_missing_dependency():\n"
        "    pytest.importorskip('a_module_that_is_not_installed')\n\n"
        "def test_optional():\n"
        "    skip_optional('needs CUDA')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_non_optional_skip_fails_in_ci(tmp_path: Path) -> None:
    proc = _run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed" in proc.stdout and "1 skipped" in proc.stdout
    assert "a_module_that_is_not_installed" in proc.stdout


def test_skips_stay_skips_outside_ci(tmp_path: Path) -> None:
    proc = _run(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout
