"""Hostile inputs to training and to the checkpoint loader, one table row each.

Every row asserts the exact outcome: ``train.py: error: <one line naming the value and what is
allowed>`` with exit status 1, no traceback, no torch advice to load with ``weights_only=False``,
and no work done before the refusal (no synthetic data generated, no checkpoint written).
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from train_common import tiny_train_spec

from detector.cli import friendly_errors
from detector.config import TrainConfig, from_hydra, model_config_from, register_schemas
from detector.data import generate_synthetic
from detector.engine import checkpoint as checkpoint_module
from detector.engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_detector,
    save_checkpoint,
)
from detector.engine.train import fit
from detector.models import ModelConfig, build_ssd

REPO = Path(__file__).resolve().parents[1]
register_schemas()


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, num_train=8, num_val=4, seed=3)
    return root


def _spec(root: Path, *overrides: str) -> TrainConfig:
    return tiny_train_spec(root, *overrides, num_train=8, num_val=4)


def _train_cli(root: Path, out: Path, *overrides: str, capsys) -> tuple[int, str]:
    """What ``train.py <overrides>`` does after Hydra composed the config: exit code, stderr."""

    def run() -> None:
        fit(_spec(root, *overrides), out)

    with pytest.raises(SystemExit) as exit_info:
        friendly_errors("train.py")(run)()
    return exit_info.value.code, capsys.readouterr().err


def _tiny_checkpoint(path: Path, **config) -> Path:
    model = build_ssd(
        ModelConfig(num_classes=5, alpha=config.pop("alpha", 0.5), image_size=(96, 96))
    )
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_config": {**model.config.to_dict(), **config},
            "classes": ["circle", "square", "triangle", "star", "cross"],
        },
        path,
    )
    return path


def _crafted_checkpoint(path: Path, **config) -> Path:
    """A checkpoint whose stored config was edited by hand (written without validation)."""
    model = build_ssd(ModelConfig(num_classes=5, alpha=0.25, image_size=(96, 96)))
    payload = {
        "format_version": 1,
        "model": model.state_dict(),
        "model_config": {**model.config.to_dict(), **config},
        "classes": ["circle", "square", "triangle", "star", "cross"],
    }
    torch.save(payload, path)
    return path


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def _pickled_object(path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil(), "model_config": {}}, f)
    return path


# (id, overrides or a function of tmp_path giving them, expected error line after "train.py: error: ")
CASES = [
    ("epochs=0", ["trainer.epochs=0"], "trainer.epochs=0: must be an integer >= 1"),
    ("epochs=-1", ["trainer.epochs=-1"], "trainer.epochs=-1: must be an integer >= 1"),
    ("batch_size=0", ["trainer.batch_size=0"], "trainer.batch_size=0: must be an integer >= 1"),
    (
        "alpha=nan",
        ["backbone.alpha=nan"],
        "alpha (backbone.alpha) must be a finite number > 0, got nan",
    ),
    (
        "alpha=100",
        ["backbone.alpha=100"],
        "the model (alpha 100, 96x96 input, 1 classes) would have about 53,613 M parameters "
        "(214.5 GB in fp32); the limit is 250 M: lower backbone.alpha (usually 0.25..1.4), the "
        "number of classes or head.extra_depths",
    ),
    (
        "image_size=30000",
        ["image_size=[30000,30000]"],
        "image_size must be an integer in [32, 8192], got 30000",
    ),
    (
        "image_size=4096",
        ["image_size=[4096,4096]", "backbone.alpha=1.0"],
        "the model (alpha 1, 4096x4096 input, 1 classes) would need about 12.8 GiB of feature "
        "maps per image; the limit is 4 GiB: lower image_size or backbone.alpha",
    ),
    (
        "device=banana",
        ["device=banana"],
        "device=banana: choose auto, cpu, cuda, cuda:N or mps",
    ),
    ("mean=[0.5]", ["mean=[0.5]"], "mean=[0.5]: must be 3 values (R, G, B)"),
    ("std=[0,1,1]", ["std=[0,1,1]"], "std must be a finite number > 0, got 0.0"),
    ("lr=nan", ["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number >= 0"),
    (
        "resume=other shape",
        lambda tmp: [f"resume={_tiny_checkpoint(tmp / 'other.pt')}"],
        "resume={tmp}/other.pt holds another model (alpha 0.5 there, 0.25 here; anchors.min_scale "
        "0.2 there, 0.1 here; anchors.max_scale 0.95 there, 0.9 here; "
        "anchors.reduce_boxes_in_lowest_layer True there, False here); resume continues "
        "the same run with the same settings (use init= to start a new run from its weights)",
    ),
    (
        "resume=empty .pt",
        lambda tmp: [f"resume={(tmp / 'empty.pt').touch() or tmp / 'empty.pt'}"],
        "{tmp}/empty.pt: the file is empty (0 bytes), not a checkpoint",
    ),
    (
        "resume=missing",
        lambda tmp: [f"resume={tmp / 'nope.pt'}"],
        "{tmp}/nope.pt: checkpoint not found",
    ),
    (
        "resume=pickled object",
        lambda tmp: [f"resume={_pickled_object(tmp / 'evil.pt')}"],
        "{tmp}/evil.pt: cannot read checkpoint (it holds Python objects other than tensors and "
        "plain containers, which are never loaded (weights_only=True); only checkpoints written "
        "by detector can be read)",
    ),
    (
        "init=crafted image_size",
        lambda tmp: [f"init={_crafted_checkpoint(tmp / 'big.pt', image_size=[30000, 30000])}"],
        "{tmp}/big.pt: invalid model_config: image_size must be an integer in [32, 8192], "
        "got 30000",
    ),
    (
        "resume=crafted num_classes",
        lambda tmp: [f"resume={_crafted_checkpoint(tmp / 'many.pt', num_classes=1e9)}"],
        "{tmp}/many.pt: invalid model_config: num_classes must be an integer in [1, 100000], "
        "got 1000000000.0 (float)",
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        (
            "device=cuda without CUDA",
            ["device=cuda"],
            f"device=cuda: CUDA is not available on this machine (torch "
            f"{torch.__version__}); use device=cpu or auto",
        )
    )


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_before_work(overrides, expected, tmp_path: Path, capsys) -> None:
    """One line naming the value, exit 1; no data generated, nothing written."""
    if callable(overrides):
        overrides = overrides(tmp_path)
    data, out = tmp_path / "data", tmp_path / "run"
    code, err = _train_cli(data, out, *overrides, capsys=capsys)
    assert code == 1
    assert err == f"train.py: error: {expected.format(tmp=tmp_path)}\n"
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not data.exists(), "the synthetic data was generated before the refusal"
    assert not out.exists() or not any(out.glob("*.pt"))


def test_alpha_100_refused_by_the_command(tmp_path: Path) -> None:
    """The real command: ``train.py backbone.alpha=100`` was OOM-killed; now one line, exit 1."""
    cmd = [
        sys.executable, str(REPO / "train.py"), "backbone.alpha=100", "trainer=debug",
        f"dataset.root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("train.py: error: the model (alpha 100, "), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


# -------------------------------------------------------------------- untrusted checkpoints
CRAFTED = [
    ("image_size 30000x30000", {"image_size": [30000, 30000]}, "image_size must be an integer"),
    ("num_classes 1e9", {"num_classes": 10**9}, r"num_classes must be an integer in \[1, 100000\]"),
    ("num_classes float", {"num_classes": 5.0}, r"got 5.0 \(float\)"),
    ("num_classes str", {"num_classes": "5"}, r"got '5' \(str\)"),
    ("alpha str", {"alpha": "1"}, r"alpha \(backbone.alpha\) must be a finite number > 0"),
    ("alpha 100", {"alpha": 100.0}, "M parameters"),
    ("extra_depths huge", {"extra_depths": [10**7]}, "extra_depths"),
    ("mean short", {"mean": [0.5]}, "mean must be 3 values"),
    ("head list", {"head": ["ssd"]}, "unknown head"),
    ("anchors bogus", {"anchors": {"bogus": 1}}, "anchors: .*bogus"),
    ("image_size dict", {"image_size": {"h": 1}}, "image_size must be 2 values"),
]


@pytest.mark.parametrize(("config", "match"), [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoint_refused_before_building(config, match, tmp_path, monkeypatch) -> None:
    path = _crafted_checkpoint(tmp_path / "crafted.pt", **config)

    def no_build(*_args, **_kwargs):
        raise AssertionError("a model was built from an unchecked config")

    monkeypatch.setattr(checkpoint_module, "build_ssd", no_build)
    with pytest.raises(CheckpointError, match=f"crafted.pt: invalid model_config: .*{match}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="invalid model_config"):
        load_detector(path)  # eval, detect and export load through here


def test_crafted_contents_refused(tmp_path: Path) -> None:
    model = build_ssd(ModelConfig(num_classes=2, alpha=0.25, image_size=(64, 64)))
    good = {
        "format_version": 1,
        "model": model.state_dict(),
        "model_config": model.config.to_dict(),
    }
    rows = [
        ({"classes": ["a", "b", "c"]}, "3 class names for a model of 2 classes"),
        ({"classes": [1, 2]}, "'classes' must be a list of names"),
        ({"model": {"w": [1, 2]}}, "'model' must map parameter names to tensors"),
        ({"step": -3}, "'step' must be a non-negative integer, got -3"),
        ({"format_version": "1"}, "format_version must be an integer, got '1'"),
        ({"model_config": [1, 2]}, "invalid model_config: a model config must be a dict, got list"),
    ]
    for change, message in rows:
        path = tmp_path / "c.pt"
        torch.save({**good, **change}, path)
        with pytest.raises(CheckpointError) as exc_info:
            load_checkpoint(path)
        assert str(exc_info.value) == f"{path}: {message}"


# ---------------------------------------------------------------------- writing checkpoints
def test_disk_full_while_saving(tiny_synthetic, tmp_path, monkeypatch, capsys) -> None:
    """ENOSPC on the second save: one line saying the previous last.pt is intact, no .tmp left."""
    calls = {"n": 0}
    real_save = torch.save

    def full_disk(payload, f, *args, **kwargs) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(payload, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    out = tmp_path / "run"
    code, err = _train_cli(tiny_synthetic, out, "trainer.checkpoint_every=1", capsys=capsys)
    assert code == 1
    assert err.splitlines()[-1] + "\n" == (
        f"train.py: error: cannot write {out}/last.pt: no space left on device; the previous "
        "last.pt is intact (the partial file was removed). Free space or choose another folder "
        f"and rerun; training stopped at step 2: resume={out}/last.pt continues from step 1\n"
    )
    assert load_checkpoint(out / "last.pt")["step"] == 1
    assert not list(out.glob(".*.tmp"))


def test_stale_temporaries_removed(tiny_synthetic, tmp_path) -> None:
    """Temporary files of writes interrupted by a kill go at the next start and the next save."""
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".last.pt.k3j2.tmp", out / ".best.pt.x9.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1024)
    keep = out / "notes.tmp"
    keep.write_text("not ours")
    fit(_spec(tiny_synthetic, "trainer.max_steps=1"), out)
    assert not any(p.exists() for p in stale)
    assert keep.exists()
    (out / ".last.pt.zz.tmp").write_bytes(b"\0")
    save_checkpoint(load_checkpoint(out / "last.pt"), out / "last.pt")
    assert not (out / ".last.pt.zz.tmp").exists()


# --------------------------------------------------------------------- first-run experience
def test_progress_total_respects_max_steps(tiny_synthetic, tmp_path, monkeypatch, capsys) -> None:
    """``trainer=debug`` (2 steps) shows 0/2, not 0/<batches per epoch>; the run folder and the
    best mAP are printed."""
    from detector.engine import runlog as runlog_module

    totals = []
    real = runlog_module.RunLogger.progress

    def spy(self, total, desc):
        totals.append(total)
        return real(self, total, desc)

    monkeypatch.setattr(runlog_module.RunLogger, "progress", spy)
    out = tmp_path / "run"
    job_log = logging.FileHandler(tmp_path / "job.log")  # as Hydra's <job>.log
    logging.getLogger().addHandler(job_log)
    try:
        fit(_spec(tiny_synthetic, "trainer.max_steps=1", "trainer.batch_size=2"), out)
    finally:
        logging.getLogger().removeHandler(job_log)
        job_log.close()
    assert totals == [1]  # 8 images / batch 2 = 4 batches, but 1 step
    printed = capsys.readouterr().out
    logged = (tmp_path / "job.log").read_text()
    assert printed.count("done: best val/mAP") == 1  # not twice on the console
    for text in (printed, logged, (out / "train.log").read_text()):
        assert "run folder:" in text and "done: best val/mAP" in text
    assert f"run folder: {out.resolve()}" in printed
    assert "done: best val/mAP " in printed and str(out.resolve()) in printed.splitlines()[-1]
    assert "synthetic dataset in" in printed


def test_summary_describes_the_configured_dataset(capsys) -> None:
    from detector.summary import main

    main(["backbone.alpha=0.25", "image_size=[96,96]"])
    out = capsys.readouterr().out
    assert "classes     5 (+ background)" in out
    main(["backbone.alpha=0.25", "image_size=[96,96]", "num_classes=90"])
    assert "classes     90 (+ background)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["backbone.alpha=100"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "detector summary: error: the model (alpha 100, 320x320 input, 5 classes)"
    )
    assert err.count("\n") == 1


def test_model_size_estimate_close_to_the_built_model() -> None:
    from detector.models import count_parameters
    from detector.models.build import estimate_model_size

    for config in (
        ModelConfig(),
        ModelConfig(num_classes=90, alpha=0.5, head="ssdlite", image_size=(320, 320)),
        ModelConfig(num_classes=5, alpha=0.25, image_size=(96, 96)),
    ):
        estimate = estimate_model_size(config)["parameters"]
        actual = count_parameters(build_ssd(config))
        assert actual <= estimate <= 1.1 * actual, (config, estimate, actual)


def test_spec_checks_accept_the_shipped_configs(tiny_synthetic) -> None:
    from detector.engine.train import check_train_spec

    for experiment in ("synthetic", "tf_coco", "voc_ssd300", "ssdlite_coco", "face"):
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "detector" / "conf")):
            spec = from_hydra(compose("train", overrides=[f"experiment={experiment}"]))
        check_train_spec(spec)
        model_config_from(spec, 90)
