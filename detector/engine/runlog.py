"""The record of a training run: ``metrics.csv``, TensorBoard, ``train.log`` and the step record
that checkpoints carry.

Every step's logged values travel in the checkpoints (:class:`StepRecord`, ``ckpt["log"]``), so a
resumed run rewrites ``metrics.csv`` and TensorBoard from its checkpoint: one record, every step
exactly once, whether it continues in the old folder (where a killed run may have logged steps
after its last checkpoint) or in a new one (where nothing was logged yet); ``best.pt`` follows
it into a new folder (:func:`carry_best`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint

__all__ = ["STEP_KEYS", "RunLogger", "StepRecord", "carry_best", "print_line"]

#: Values logged at every optimizer step (``metrics.csv`` rows, TensorBoard scalars), in order.
STEP_KEYS = ("train/loss", "train/loss_box", "train/loss_cls", "train/lr")


def _set_aside_event_files(folder: Path) -> None:
    """Move the event files of ``folder`` into ``folder/superseded/<n>/`` (a resumed run writes
    the whole record again)."""
    old = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
    if not old:
        return
    n = 1
    while (folder / "superseded" / str(n)).exists():
        n += 1
    target = folder / "superseded" / str(n)
    target.mkdir(parents=True)
    for path in old:
        path.rename(target / path.name)


def print_line(line: str, log_path: Path) -> None:
    """A line on stdout, in the log files and in ``log_path`` (unless a log file is it)."""
    from tqdm import tqdm

    tqdm.write(line)
    _to_log_files(line)
    if all(Path(h.baseFilename) != log_path.resolve() for h in _log_files()):
        with open(log_path, "a") as f:
            f.write(line + "\n")


def _log_files() -> list[logging.FileHandler]:
    """The file handlers of the root logger (Hydra's job log ``<job>.log`` under Hydra)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _to_log_files(line: str) -> None:
    """Send ``line`` to the log files only: stdout already has it (through tqdm, which keeps the
    progress bar intact), so the console handlers are left out."""
    logger = logging.getLogger("detector.train")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, None, None)
    for handler in _log_files():
        handler.handle(record)


def carry_best(resume: Path, out_dir: Path, step: int) -> list[str]:
    """Resuming into another folder: bring the run's ``best.pt`` along (atomically), if it
    belongs to the record being continued (written at or before the resumed step)."""
    source, target = resume.parent / "best.pt", out_dir / "best.pt"
    if not source.is_file() or source.resolve() == target.resolve():
        return []
    try:
        best = load_checkpoint(source)
    except CheckpointError as exc:
        return [f"best.pt of the resumed run not carried over: {exc}"]
    if best.get("step", 0) > step:
        return [f"{source} is newer than the resumed step {step}; not carried over"]
    tmp = out_dir / f".best.pt.{os.getpid()}.tmp"
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return [f"best.pt (step {best.get('step')}) carried over from {source}"]


class StepRecord:
    """Every step's logged values, kept in memory and in checkpoints (``ckpt["log"]``).

    Compact tensors (``int64`` steps and epochs, ``float64`` values) keep a checkpoint
    ``weights_only``-loadable and small (48 bytes a step); ``complete`` is False for a checkpoint
    written before step records existed.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.values: list[list[float]] = []
        self.complete = True

    def append(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        self.epochs.append(epoch)
        self.values.append([float(values[k]) for k in STEP_KEYS])

    def rows(self):
        for step, epoch, values in zip(self.steps, self.epochs, self.values):
            yield step, epoch, dict(zip(STEP_KEYS, values))

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "keys": list(STEP_KEYS),
            "step": torch.tensor(self.steps, dtype=torch.int64),
            "epoch": torch.tensor(self.epochs, dtype=torch.int64),
            "values": torch.tensor(self.values, dtype=torch.float64).reshape(-1, len(STEP_KEYS)),
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> StepRecord:
        record = cls()
        log = ckpt.get("log")
        if not isinstance(log, dict) or list(log.get("keys", [])) != list(STEP_KEYS):
            record.complete = False
            return record
        try:
            record.steps = [int(s) for s in log["step"].tolist()]
            record.epochs = [int(e) for e in log["epoch"].tolist()]
            record.values = [[float(v) for v in row] for row in log["values"].tolist()]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise CheckpointError("the step record of the checkpoint is damaged") from None
        if not len(record.steps) == len(record.epochs) == len(record.values):
            raise CheckpointError("the step record of the checkpoint is damaged")
        first = record.steps[0] if record.steps else ckpt["step"] + 1
        if record.steps != list(range(first, ckpt["step"] + 1)):
            raise CheckpointError(
                f"the step record of the checkpoint (steps {record.steps[:1]}..{record.steps[-1:]})"
                f" does not match its step {ckpt['step']}"
            )
        # A run resumed from a checkpoint older than step records holds only its own steps.
        record.complete = first == 1 or ckpt["step"] == 0
        return record


class RunLogger:
    """Progress bar, TensorBoard events, ``metrics.csv`` and ``train.log`` (rank 0 only).

    ``record`` (a resumed run): ``metrics.csv`` is rewritten from it and from ``history``, and
    TensorBoard gets it again after a purge marker, so whatever the folder held (rows the killed
    run logged after its last checkpoint, or nothing at all in a new folder) the record is every
    step once.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        enabled: bool,
        record: StepRecord | None = None,
        history: list[dict[str, Any]] = (),
        append: bool = False,
    ) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self.tb = None
        self.csv_file = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step=1: TensorBoard hides what older event files hold from step 1 on, and the
            # record is written again below. The older files also move to superseded/ (nothing is
            # deleted): event files are ordered by the second in their name, so a file written in
            # the same second as the resumed run's could otherwise be read after it.
            if record is not None:
                _set_aside_event_files(out_dir / "tensorboard")
            self.tb = SummaryWriter(
                str(out_dir / "tensorboard"), purge_step=1 if record is not None else None
            )
        except Exception:  # tensorboard missing: keep CSV logging
            self.tb = None
        path = out_dir / "metrics.csv"
        if record is not None:
            self._rewrite(path, record, history)
        new = not (append and path.exists())
        self.csv_file = open(path, "w" if new else "a", newline="")  # noqa: SIM115
        self.csv = csv.writer(self.csv_file)
        if new:
            self.csv.writerow(["step", "epoch", "key", "value"])
        # Under Hydra the job log may be train.log itself: then it is written through logging.
        log_path = (out_dir / "train.log").resolve()
        hydra_owns = any(Path(h.baseFilename) == log_path for h in _log_files())
        self.log_path = log_path
        self.log_file = None if hydra_owns else open(log_path, "a")  # noqa: SIM115

    def _rewrite(self, path: Path, record: StepRecord, history: list[dict[str, Any]]) -> None:
        evals: dict[int, list[dict[str, Any]]] = {}
        for item in history:
            evals.setdefault(int(item["step"]), []).append(item)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", newline="") as f:
                out = csv.writer(f)
                out.writerow(["step", "epoch", "key", "value"])
                for step, epoch, values in record.rows():
                    for key, value in values.items():
                        out.writerow([step, epoch, key, f"{value:.8g}"])
                        if self.tb is not None:
                            self.tb.add_scalar(key, value, step)
                    for item in evals.pop(step, []):
                        for key, value in item.items():
                            if key in ("epoch", "step"):
                                continue
                            out.writerow([step, "", key, f"{value:.8g}"])
                            if self.tb is not None:
                                self.tb.add_scalar(key, value, step)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def info(self, line: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(line)
            _to_log_files(line)
            if self.log_file is not None:
                self.log_file.write(line + "\n")
                self.log_file.flush()

    def progress(self, total: int, desc: str):
        if not self.enabled:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, mininterval=1.0)

    def step(self, step: int, epoch: int, values: dict[str, float], speed: float, bar) -> None:
        if not self.enabled:
            return
        for key, value in values.items():
            self.csv.writerow([step, epoch, key, f"{value:.8g}"])
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        self.csv_file.flush()  # a killed run keeps the rows of the steps it finished
        if bar is not None:
            bar.set_postfix(
                loss=f"{values['train/loss']:.3f}",
                lr=f"{values['train/lr']:.2e}",
                img_s=f"{speed:.1f}",
            )
            bar.update(1)

    def end_progress(self, bar) -> None:
        if bar is not None:
            bar.close()
        self.flush()

    def flush(self) -> None:
        if self.enabled and self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.flush()
            if self.tb is not None:
                self.tb.flush()

    def metrics(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        for key, value in numeric.items():
            self.csv.writerow([step, "", key, f"{value:.8g}"])
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        self.csv_file.flush()
        shown = ", ".join(
            f"{k}={numeric[k]:.4f}"
            for k in ("val/mAP", "val/mAP50")
            if k in numeric and math.isfinite(numeric[k])
        )
        self.info(f"step {step}: {shown}")

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        if self.log_file is not None and not self.log_file.closed:
            self.log_file.close()
