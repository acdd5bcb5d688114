"""Training: smoke run + reload, exact resume after an interruption, DDP with 2 CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_common import tiny_train_spec

from detector.config import TrainConfig, register_schemas
from detector.data import generate_synthetic
from detector.engine.checkpoint import load_checkpoint, load_detector
from detector.engine.data import build_datasets, make_val_loader
from detector.engine.distributed import DistInfo
from detector.engine.plots import read_metrics
from detector.engine.train import NonFiniteLossError, evaluate_model, fit

REPO = Path(__file__).resolve().parents[1]
register_schemas()


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=16, num_val=6, seed=3)
    return root


def _spec(root: Path, *overrides: str) -> TrainConfig:
    return tiny_train_spec(root, *overrides, num_train=16, num_val=6)


def _losses(run_dir: Path) -> dict[int, float]:
    """Step -> training loss; a resumed run's later rows win."""
    return dict(read_metrics(run_dir / "metrics.csv")["train/loss"])


def test_smoke_train_eval_save_reload(tiny_synthetic: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_synthetic, "trainer.max_steps=3")
    metrics = fit(spec, tmp_path)
    assert {"val/mAP", "val/mAP50"} <= set(metrics)
    assert 0.0 <= metrics["val/mAP"] <= 1.0
    for name in ("last.pt", "best.pt", "metrics.csv", "train.log"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").iterdir())
    ckpt = load_checkpoint(tmp_path / "best.pt")  # weights_only=True inside
    assert ckpt["step"] == 3 and ckpt["classes"]
    # Reload and evaluate again: identical metrics to the ones the run logged.
    model, classes = load_detector(tmp_path / "best.pt")
    assert classes == ckpt["classes"]
    _, val_set = build_datasets(spec, DistInfo())
    again = evaluate_model(
        model,
        make_val_loader(val_set, (96, 96), 8, 0, DistInfo()),
        val_set,
        spec,
        DistInfo(),
        torch.device("cpu"),
    )
    assert again["val/mAP"] == pytest.approx(metrics["val/mAP"], abs=1e-12)
    assert again["val/mAP50"] == pytest.approx(metrics["val/mAP50"], abs=1e-12)


class _Interrupt(Exception):
    pass


def test_exact_resume_after_mid_epoch_kill(tiny_synthetic: Path, tmp_path: Path) -> None:
    """Killed mid-epoch and resumed from the last checkpoint: same losses as without the kill."""
    common = (
        "trainer.epochs=2",
        "trainer.max_steps=0",
        "trainer.num_workers=2",
        "trainer.ema=true",
        "trainer.checkpoint_every=2",
        "augment=ssd",
        "optimizer.lr=0.05",
    )
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    fit(_spec(tiny_synthetic, *common), full_dir)
    full = _losses(full_dir)
    assert len(full) == 8  # 16 images / batch 4 = 4 steps per epoch, 2 epochs

    def kill_at_step_3(step: int, _values: dict) -> None:
        if step == 3:  # mid-epoch; the last checkpoint was written after step 2
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(_spec(tiny_synthetic, *common), cut_dir, on_step_end=kill_at_step_3)
    assert load_checkpoint(cut_dir / "last.pt")["step"] == 2
    fit(_spec(tiny_synthetic, *common, f"resume={cut_dir / 'last.pt'}"), cut_dir)
    resumed = _losses(cut_dir)
    assert sorted(resumed) == sorted(full)
    for step in full:
        assert resumed[step] == full[step], f"step {step}: {resumed[step]} != {full[step]}"
    a = load_checkpoint(full_dir / "last.pt")
    b = load_checkpoint(cut_dir / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=0)


def test_non_finite_loss_stops_with_step(tiny_synthetic: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_synthetic, "trainer.max_steps=4", "optimizer.lr=1e30", "trainer.grad_clip=0")
    with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
        fit(spec, tmp_path)


def test_ddp_two_cpu_processes(tiny_synthetic: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
        str(REPO / "train.py"),
        "trainer=debug", "trainer.epochs=2", "trainer.max_steps=3", f"dataset.root={tiny_synthetic}",
        "dataset.num_train=16", "dataset.num_val=6", "dataset.seed=3",
        "backbone.alpha=0.25", "image_size=[96,96]", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 3
    log = (tmp_path / "train.log").read_text()
    assert "x2 ranks" in log
    # 16 images, batch 4 per rank, 2 ranks: 2 steps per epoch
    assert "3 steps" in log


def _rows(run_dir: Path) -> list[tuple[int, str, str, str]]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["epoch"], r["key"], r["value"]) for r in csv.DictReader(f)]


def _tensorboard_steps(run_dir: Path, key: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(key)]


_KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_train import _spec
from detector.engine.train import fit

def kill(step, _values):
    if step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)

fit(_spec(Path({root!r}), *{overrides!r}), Path({out!r}), on_step_end=kill)
"""


def test_resume_after_sigkill_keeps_one_record(tiny_synthetic: Path, tmp_path: Path) -> None:
    """SIGKILL mid-epoch, resume into the same folder and into a new one: ``metrics.csv``,
    TensorBoard and ``best.pt`` hold every step exactly once, as the uninterrupted run."""
    import shutil
    import signal

    common = (
        "trainer.epochs=2",
        "trainer.max_steps=0",
        "trainer.checkpoint_every=3",
        "trainer.plots=true",
        "optimizer.lr=0.05",
    )
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    fit(_spec(tiny_synthetic, *common), full_dir)
    full = _rows(full_dir)
    assert len({r[0] for r in full}) == 8  # 4 steps an epoch, evaluations after steps 4 and 8

    script = _KILLER.format(
        tests=str(REPO / "tests"), step=7, root=str(tiny_synthetic), overrides=common,
        out=str(cut_dir),
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # same threads as this process: same numbers
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert load_checkpoint(cut_dir / "last.pt")["step"] == 6  # written after step 6, killed at 7
    assert [r[0] for r in _rows(cut_dir) if r[2] == "train/loss"] == list(range(1, 8))

    same_dir, new_dir = tmp_path / "same", tmp_path / "new"
    shutil.copytree(cut_dir, same_dir)
    fit(_spec(tiny_synthetic, *common, f"resume={same_dir / 'last.pt'}"), same_dir)
    fit(_spec(tiny_synthetic, *common, f"resume={cut_dir / 'last.pt'}"), new_dir)
    for run_dir in (same_dir, new_dir):
        rows = _rows(run_dir)  # every row once, in order, with the same values (but timings)
        assert [r[:3] for r in rows] == [r[:3] for r in full], run_dir
        assert [r for r in rows if "time" not in r[2]] == [r for r in full if "time" not in r[2]]
        for key in ("train/loss", "val/mAP"):
            expected = [r[0] for r in full if r[2] == key]
            assert _tensorboard_steps(run_dir, key) == expected, (run_dir, key)
        best = load_checkpoint(run_dir / "best.pt")
        assert best["step"] == load_checkpoint(full_dir / "best.pt")["step"]
        assert (run_dir / "loss.png").is_file() and (run_dir / "map.png").is_file()
