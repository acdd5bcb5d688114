"""Shared test fixtures.

The real assets live in ``../shared/data`` next to the checkout (read-only, never copied into the
repo). Tests that need them take the ``shared_data`` fixture and are skipped cleanly without it.
Set ``DETECTOR_SHARED_DATA`` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("DETECTOR_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real assets not found at {path} (set DETECTOR_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
