"""The built wheel, installed into a fresh virtual environment outside the source tree, trains,
evaluates, exports and detects with the configs it ships (``pip install detector`` users have no
``conf/`` folder and no root scripts)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """``(bin folder, work folder, env)`` of a venv holding only the wheel of this checkout.

    The dependencies (torch, ...) come from the running environment's site-packages through a
    ``.pth`` line; this checkout's own (editable) install is not visible there, so ``detector``
    can only be imported from the wheel.
    """
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(dist)],
        cwd=tmp, env=env,
    )  # fmt: skip
    wheels = list(dist.glob("detector-*.whl"))
    assert len(wheels) == 1, wheels
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    py = target / "bin" / "python"
    child_site = Path(
        subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    )  # fmt: skip
    parents = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (child_site / "_parent_env.pth").write_text("\n".join(sorted(parents)) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         str(wheels[0])],
        cwd=tmp, env=env,
    )  # fmt: skip
    work = tmp / "work"  # outside the source tree: no conf/, no train.py
    work.mkdir()
    where = _run([str(py), "-c", "import detector; print(detector.__file__)"], cwd=work, env=env)
    assert str(target) in where and str(REPO) not in where, where
    return target / "bin", work, env


def test_wheel_ships_the_configs(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    out = _run([str(bin_dir / "detector"), "train", "--help"], cwd=work, env=env)
    for group in ("backbone", "dataset", "experiment", "trainer", "anchors"):
        assert f"{group}:" in out
    out = _run([str(bin_dir / "detector"), "summary", "experiment=face"], cwd=work, env=env)
    assert "4420" in out  # the face preset's anchors, from the wheel's conf/


def test_wheel_trains_evaluates_exports_and_detects(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    bin_dir, work, env = installed
    detector = str(bin_dir / "detector")
    data = ["dataset.num_train=16", "dataset.num_val=8", f"dataset.root={work / 'syn'}"]
    out = _run(
        [detector, "train", "trainer=debug", *data, f"hydra.run.dir={work / 'train'}"],
        cwd=work, env=env,
    )  # fmt: skip
    ckpt = work / "train" / "last.pt"
    assert ckpt.is_file(), out
    _run(
        [detector, "eval", f"checkpoint={ckpt}", *data, "num_workers=0",
         f"hydra.run.dir={work / 'eval'}"],
        cwd=work, env=env,
    )  # fmt: skip
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
    _run(
        [detector, "export", f"checkpoint={ckpt}", f"hydra.run.dir={work / 'export'}"],
        cwd=work, env=env,
    )  # fmt: skip
    assert (work / "export" / "last.onnx").is_file()
    image = next((work / "syn" / "val" / "images").glob("*.jpg"))
    _run(
        [detector, "detect", f"checkpoint={ckpt}", f"source={image}",
         f"hydra.run.dir={work / 'detect'}"],
        cwd=work, env=env,
    )  # fmt: skip
    results = json.loads((work / "detect" / "detections.json").read_text())
    assert isinstance(results, list)
    # a bad key is one clear line from the installed command too
    proc = subprocess.run(
        [detector, "train", "+backbone.alhpa=0.5", f"hydra.run.dir={work / 'bad'}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "detector train: error: unknown option backbone.alhpa" in (
        proc.stderr
    )
