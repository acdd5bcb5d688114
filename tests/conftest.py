"""Shared test fixtures and the skip policy.

The real assets live in ``../shared/data`` next to the checkout (read-only, never copied into the
repo). Tests that need them take the ``shared_data`` fixture and are skipped cleanly without it.
Set ``DETECTOR_SHARED_DATA`` to point elsewhere.

Skip policy: only explicitly optional things may skip, and their reason says so with the
``optional:`` prefix (:func:`skip_optional`): the real assets missing, the macOS-only Core ML run,
CUDA. Under ``CI`` (set by CI and ``.ci/run``) any other skip, e.g. an ``importorskip`` of a
declared dependency that failed to install, fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

#: A skip reason with this prefix is allowed in CI.
OPTIONAL = "optional: "


def skip_optional(reason: str) -> None:
    """Skip for something explicitly optional (allowed in CI, unlike any other skip)."""
    pytest.skip(OPTIONAL + reason)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and _in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not reason.removeprefix("Skipped: ").startswith(OPTIONAL):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI, where only 'optional:' skips are allowed (a declared dependency "
            f"missing or a real asset not found): {reason}"
        )


def _shared_data_dir() -> Path:
    env = os.environ.get("DETECTOR_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not path.is_dir():
        skip_optional(f"real assets not found at {path} (set DETECTOR_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
