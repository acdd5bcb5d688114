"""The training loop behind ``train.py``.

``fit(spec, out_dir)`` trains an SSD-MobileNetV1 as the typed spec says, evaluates every
``trainer.eval_every`` epochs with the project's evaluator, keeps ``last.pt`` and ``best.pt``
(written atomically), logs to a progress bar, TensorBoard and ``metrics.csv``, and draws the loss
and mAP curves at the end.

Exact resume: the sample order of an epoch is a function of ``(seed, epoch)`` and every sample's
augmentation a function of ``(seed, epoch, index)`` (see :mod:`detector.engine.data`), and the
checkpoint holds optimizer, scheduler, scaler, EMA and RNG states plus the position inside the
epoch. A resumed run therefore computes the same losses as an uninterrupted one on CPU, also when
the process was killed mid-epoch (``trainer.checkpoint_every`` steps between checkpoints).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..box_ops import BoxCoder
from ..classes import dataset_class_spec
from ..config import TrainConfig, model_config_from, to_plain
from ..loss import MultiBoxLoss
from ..models import SSD, ModelConfig, build_ssd
from .checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
from .data import build_datasets, make_train_loader, make_val_loader
from .device import check_device_name, resolve_device
from .distributed import DistInfo, all_gather_objects, barrier, init_distributed, reduce_mean
from .evaluate import evaluator_for, run_inference
from .finetune import init_from_checkpoint
from .optim import build_optimizer, build_scheduler
from .runlog import STEP_KEYS, RunLogger, StepRecord, carry_best, print_line

__all__ = [
    "STEP_KEYS",
    "NonFiniteLossError",
    "Trainer",
    "check_train_spec",
    "fit",
    "resolve_device",
]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def autocast_context(amp: str, device: torch.device):
    """``amp``: ``auto`` (bf16 on CPU, fp16 on CUDA), ``none``, ``bf16`` or ``fp16``."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "bf16"
    if amp == "none":
        return contextlib.nullcontext(), False
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"unknown trainer.amp {amp!r}; choose auto, none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("trainer.amp=fp16 needs CUDA; use bf16 on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), amp == "fp16"


def ema_update_fn(decay: float, warmup_steps: float) -> Callable:
    """EMA with a ramped decay ``decay * (1 - exp(-n / warmup_steps))`` (as YOLOv5's ModelEMA).

    Early on the average follows the weights closely, so short runs (a few hundred steps on a CPU)
    still evaluate a useful average; ``warmup_steps <= 0`` gives a constant decay.
    """

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = decay * (1.0 - math.exp(-n / warmup_steps)) if warmup_steps > 0 else decay
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():  # BN's num_batches_tracked
                e.copy_(p)

    return update


def _load_pretrained_backbone(model: SSD, path: str) -> str:
    from ..weights import load_backbone_weights

    return load_backbone_weights(model.features.backbone, path)


def _freeze(model: SSD, stages: int) -> None:
    for layer in list(model.features.backbone.features)[:stages]:
        for p in layer.parameters():
            p.requires_grad_(False)


_AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def check_train_spec(spec: TrainConfig) -> None:
    """Refuse values that cannot train, in one line naming the value and what is allowed.

    Runs before any work (no data generated, no model built): the trainer's counts and sizes, the
    device, and the model the spec describes (types, sizes and an estimate of its memory, see
    :class:`~detector.models.ModelConfig`).
    """
    t = spec.trainer
    for key, value, low in (
        ("epochs", t.epochs, 1),
        ("batch_size", t.batch_size, 1),
        ("eval_batch_size", t.eval_batch_size, 1),
        ("num_workers", t.num_workers, 0),
        ("max_steps", t.max_steps, 0),
        ("checkpoint_every", t.checkpoint_every, 0),
        ("eval_every", t.eval_every, 0),
        ("threads", t.threads, 0),
    ):
        if value < low:
            raise ValueError(f"trainer.{key}={value}: must be an integer >= {low}")
    for key, value in (
        ("trainer.grad_clip", t.grad_clip),
        ("trainer.ema_warmup_steps", t.ema_warmup_steps),
        ("optimizer.lr", spec.optimizer.lr),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{key}={value}: must be a finite number >= 0")
    if not 0.0 <= t.ema_decay <= 1.0:
        raise ValueError(f"trainer.ema_decay={t.ema_decay}: must be in [0, 1]")
    if t.amp not in _AMP_CHOICES:
        raise ValueError(f"trainer.amp={t.amp}: choose one of {', '.join(_AMP_CHOICES)}")
    check_device_name(spec.device)
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if len(value) != 3:
            raise ValueError(f"{key}={list(value)}: must be 3 values (R, G, B)")
    # The model without the data: the class count is the configured one when known.
    classes = spec.dataset.classes
    model_config_from(spec, len(classes) if classes else 1)


def _device_for(spec: TrainConfig) -> torch.device:
    return resolve_device(spec.device)


def _describe_mismatch(
    stored: dict[str, Any], wanted: dict[str, Any], prefix: str = ""
) -> list[str]:
    """``key <there> there, <here> here`` for every differing (nested) model config value."""
    out = []
    for key, value in wanted.items():
        other = stored.get(key)
        if isinstance(value, dict) and isinstance(other, dict):
            out += _describe_mismatch(other, value, f"{prefix}{key}.")
        elif other != value:
            out.append(f"{prefix}{key} {other!r} there, {value!r} here")
    return out


def fit(
    spec: TrainConfig,
    out_dir: str | Path,
    *,
    on_step_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train, evaluate and checkpoint a detector.

    Args:
        spec: the typed training configuration.
        out_dir: run directory (Hydra's); checkpoints, logs and plots go there.
        on_step_end: optional hook ``(global_step, logged_values)`` called after every optimizer
            step (tests use it to interrupt a run).

    Returns:
        The final metrics (``val/mAP``, ``val/mAP50``, ... of the best epoch, ``train/loss``).
    """
    return Trainer(spec, out_dir, on_step_end=on_step_end).run()


class Trainer:
    """One training run, in named parts: :meth:`setup` (device, data, model, optimizer, resume),
    :meth:`train_epoch` / :meth:`train_step`, :meth:`evaluate`, :meth:`checkpoint` and the
    :class:`~detector.engine.runlog.RunLogger` (progress bar, ``metrics.csv``, TensorBoard, ``train.log``).

    The record of the run (every step's losses and every evaluation) travels in the checkpoints,
    so a resumed run rewrites ``metrics.csv`` and TensorBoard from it: one record without missing
    or repeated steps, in the old folder or a new one.
    """

    def __init__(
        self,
        spec: TrainConfig,
        out_dir: str | Path,
        *,
        on_step_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.trainer = spec.trainer
        self.out_dir = Path(out_dir)
        self.on_step_end = on_step_end
        self.writer: RunLogger | None = None
        # progress
        self.start_epoch, self.global_step, self.start_batch = 0, 0, 0
        self.best: dict[str, Any] = {"val/mAP": -1.0}
        self.history: list[dict[str, Any]] = []
        self.record = StepRecord()
        self.last_saved: dict[str, int] = {}
        self.log_lines: list[str] = []

    # ------------------------------------------------------------------------------ run
    def run(self) -> dict[str, float]:
        check_train_spec(self.spec)
        resume = self._read_resume_checkpoint()
        try:
            self.setup(resume)
            self.train()
        finally:
            if self.writer is not None:
                self.writer.close()
        self.finish()
        return {k: float(v) for k, v in self.best.items() if isinstance(v, (int, float))}

    def _read_resume_checkpoint(self) -> dict[str, Any] | None:
        """The ``resume=`` checkpoint, checked against this run's model before any work (an
        ``init=`` checkpoint is checked here too, then read again by the fine-tune start)."""
        if self.spec.init:
            load_checkpoint(self.spec.init)
        if not self.spec.resume:
            return None
        ckpt = load_checkpoint(self.spec.resume)
        wanted = model_config_from(self.spec, ckpt["model_config"].get("num_classes", 1))
        stored = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
        differences = _describe_mismatch(stored, wanted.to_dict())
        if differences:
            raise ValueError(
                f"resume={self.spec.resume} holds another model ({'; '.join(differences)}); "
                "resume continues the same run with the same settings (use init= to start a new "
                "run from its weights)"
            )
        return ckpt

    # ---------------------------------------------------------------------------- setup
    def setup(self, resume: dict[str, Any] | None) -> None:
        spec, trainer = self.spec, self.trainer
        device = _device_for(spec)
        info = init_distributed(device)
        if device.type == "cuda" and info.enabled:
            device = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(device)
        self.device, self.info = device, info
        if trainer.threads > 0:
            torch.set_num_threads(trainer.threads)
        torch.manual_seed(spec.seed)
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir)
        if resume is not None:
            try:
                self.record = StepRecord.from_checkpoint(resume)
            except CheckpointError as exc:
                raise CheckpointError(f"{spec.resume}: {exc}") from None
            self.history = list(resume.get("history", []))
        self.writer = RunLogger(
            self.out_dir,
            enabled=info.is_main,
            record=self.record if resume is not None and self.record.complete else None,
            history=self.history,
            append=resume is not None,
        )
        self.writer.info(f"run folder: {self.out_dir.resolve()}")
        self._setup_data()
        self._setup_model()
        if resume is not None:
            self._restore(resume)
        self.train_model: nn.Module = self.model
        if info.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        for line in self.log_lines:
            self.writer.info(line)
        self.writer.info(
            f"{len(self.train_set)} training images, "
            f"{len(self.val_set) if self.val_set is not None else 0} "
            f"validation images, {len(self.classes)} classes, {self.model.num_anchors} anchors, "
            f"{self.total_steps} steps on {device}"
            + (f" x{info.world_size} ranks" if info.enabled else "")
        )

    def _setup_data(self) -> None:
        spec, trainer, info = self.spec, self.trainer, self.info
        if spec.dataset.kind == "synthetic":
            self.writer.info(
                f"synthetic dataset in {spec.dataset.root} ({spec.dataset.num_train} + "
                f"{spec.dataset.num_val} images; generated on first use, then reused) ..."
            )
        self.train_set, self.val_set = build_datasets(spec, info)
        self.classes = list(self.train_set.classes)
        self.class_spec = dataset_class_spec(self.train_set)  # names + COCO ids when known
        self.train_loader = make_train_loader(self.train_set, spec, info)
        self.val_loader = (
            make_val_loader(
                self.val_set,
                tuple(spec.image_size),
                trainer.eval_batch_size,
                trainer.num_workers,
                info,
            )
            if self.val_set is not None
            else None
        )
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(self.train_set)} images, fewer than one batch of "
                f"{trainer.batch_size}; lower trainer.batch_size"
            )
        total_steps = trainer.epochs * self.steps_per_epoch
        if trainer.max_steps > 0:
            total_steps = min(total_steps, trainer.max_steps)
        self.total_steps = total_steps

    def _setup_model(self) -> None:
        spec, trainer, device = self.spec, self.trainer, self.device
        self.model_config = model_config_from(spec, len(self.classes))
        model = build_ssd(self.model_config)
        if spec.backbone.pretrained:
            self.log_lines.append(_load_pretrained_backbone(model, spec.backbone.pretrained))
        if spec.init:
            self.log_lines.append(init_from_checkpoint(model, spec.init, self.class_spec))
        _freeze(model, spec.backbone.frozen_stages)
        model.to(device)
        self.memory_format = (
            torch.channels_last if trainer.channels_last else torch.contiguous_format
        )
        model.to(memory_format=self.memory_format)
        self.model = model
        self.anchors = model.anchors
        self.criterion = MultiBoxLoss(
            BoxCoder(),
            iou_threshold=spec.head.iou_threshold,
            neg_pos_ratio=spec.head.neg_pos_ratio,
            classification="focal" if spec.head.loss == "focal" else "softmax",
            focal_alpha=spec.head.focal_alpha,
            focal_gamma=spec.head.focal_gamma,
        )
        self.optimizer = build_optimizer(model, spec.optimizer)
        self.scheduler = build_scheduler(
            self.optimizer, spec.scheduler, self.total_steps, self.steps_per_epoch
        )
        self.autocast, use_scaler = autocast_context(trainer.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.ema = (
            AveragedModel(
                model,
                multi_avg_fn=ema_update_fn(trainer.ema_decay, trainer.ema_warmup_steps),
                use_buffers=True,
            )
            if trainer.ema
            else None
        )

    def _restore(self, ckpt: dict[str, Any]) -> None:
        spec = self.spec
        classes = list(ckpt.get("classes") or [])
        if classes and classes != self.classes:
            raise ValueError(
                f"resume={spec.resume} was trained on {len(classes)} classes {classes[:5]}..., "
                f"this dataset has {len(self.classes)} {self.classes[:5]}...; resume needs the "
                "same data (use init= to fine-tune on other classes)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema_full") is not None:
            self.ema.load_state_dict(ckpt["ema_full"])
        self.start_epoch, self.global_step = ckpt["epoch"], ckpt["step"]
        self.start_batch = ckpt.get("batch_in_epoch", 0)
        self.best = dict(ckpt.get("best", self.best))
        restore_rng_state(ckpt["rng"])
        self.log_lines.append(
            f"resumed from {spec.resume}: epoch {self.start_epoch}, step {self.global_step}, "
            f"batch {self.start_batch}"
        )
        if not self.record.complete:
            self.log_lines.append(
                "the checkpoint predates step records: metrics.csv continues the old file"
            )
        if self.info.is_main:
            self.log_lines += carry_best(Path(spec.resume), self.out_dir, self.global_step)

    # ---------------------------------------------------------------------------- train
    def train(self) -> None:
        self.done = self.global_step >= self.total_steps
        self.epoch = self.start_epoch
        self.last_metrics: dict[str, float] = {}
        while not self.done and self.epoch < self.trainer.epochs:
            batch_index = self.train_epoch(self.epoch, self.start_batch)
            self.start_batch = 0
            epoch_finished = batch_index >= len(self.train_loader)
            next_epoch = self.epoch + 1 if epoch_finished else self.epoch
            next_batch = 0 if epoch_finished else batch_index
            if self._want_eval(epoch_finished):
                self.evaluate(self.epoch, next_epoch, next_batch)
            self.checkpoint("last.pt", next_epoch, next_batch)
            barrier(self.info)
            self.epoch = next_epoch

    def _want_eval(self, epoch_finished: bool) -> bool:
        every = max(1, self.trainer.eval_every)
        return self.val_loader is not None and (
            self.done or (epoch_finished and (self.epoch + 1) % every == 0)
        )

    def train_epoch(self, epoch: int, batch_index: int) -> int:
        """Train from ``batch_index`` to the end of ``epoch`` (or the step limit); returns the
        index of the next batch."""
        trainer = self.trainer
        self.train_model.train()
        self.train_loader.batch_sampler.set_epoch(epoch, batch_index)
        self.train_loader.dataset.set_epoch(epoch)
        remaining = min(len(self.train_loader) - batch_index, self.total_steps - self.global_step)
        progress = self.writer.progress(remaining, f"epoch {epoch + 1}/{trainer.epochs}")
        t0, seen = time.perf_counter(), 0
        try:
            for batch in self.train_loader:
                values, batch_size = self.train_step(batch, epoch, batch_index)
                batch_index += 1
                seen += batch_size * self.info.world_size
                speed = seen / max(time.perf_counter() - t0, 1e-9)
                self.record.append(self.global_step, epoch + 1, values)
                self.writer.step(self.global_step, epoch + 1, values, speed, progress)
                if self.on_step_end is not None:
                    self.on_step_end(self.global_step, values)
                every = trainer.checkpoint_every
                if every > 0 and self.global_step % every == 0:
                    self.checkpoint("last.pt", epoch, batch_index)
                if self.global_step >= self.total_steps:
                    self.done = True
                    break
        finally:
            self.writer.end_progress(progress)
        return batch_index

    def train_step(self, batch: dict[str, Any], epoch: int, batch_index: int):
        """One optimizer step; returns the logged values and the batch size."""
        trainer, device = self.trainer, self.device
        images = batch["images"].to(device, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        targets = [
            {"boxes": b.to(device), "labels": lab.to(device)}
            for b, lab in zip(batch["boxes"], batch["labels"])
        ]
        with self.autocast:
            deltas, logits = self.train_model(images)
        losses = self.criterion(deltas.float(), logits.float(), self.anchors, targets)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {self.global_step + 1} (epoch "
                f"{epoch + 1}, batch {batch_index + 1}); the last good checkpoint is kept in "
                f"{self.out_dir}. Lower optimizer.lr, enable trainer.grad_clip, or check the data."
            )
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if trainer.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), trainer.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.global_step += 1
        info = self.info
        values = {
            "train/loss": reduce_mean(loss.detach(), info).item(),
            "train/loss_box": reduce_mean(losses["loss_box"].detach(), info).item(),
            "train/loss_cls": reduce_mean(losses["loss_cls"].detach(), info).item(),
            "train/lr": optimizer.param_groups[0]["lr"],
        }
        return values, images.shape[0]

    # ------------------------------------------------------------------------- evaluate
    def evaluate(self, epoch: int, next_epoch: int, next_batch: int) -> None:
        """Validation metrics of the EMA (or raw) model; ``best.pt`` when the mAP improves."""
        eval_model = _ema_module(self.ema) if self.ema is not None else self.model
        self.last_metrics = evaluate_model(
            eval_model, self.val_loader, self.val_set, self.spec, self.info, self.device
        )
        if not self.info.is_main:
            return
        metrics = self.last_metrics
        record = {"epoch": epoch + 1, "step": self.global_step, **metrics}
        self.history.append({k: v for k, v in record.items() if isinstance(v, (int, float))})
        self.writer.metrics(self.global_step, metrics)
        if metrics.get("val/mAP", -1.0) > self.best["val/mAP"]:
            self.best = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            self.best["epoch"] = epoch + 1
            self.checkpoint("best.pt", next_epoch, next_batch)

    # ----------------------------------------------------------------------- checkpoint
    def checkpoint_payload(self, epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        ema = self.ema
        return {
            "model": self.model.state_dict(),
            "model_config": self.model_config.to_dict(),
            "classes": self.classes,
            "class_ids": list(self.class_spec.ids) if self.class_spec.ids is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": _ema_weights(ema) if ema is not None else None,
            "ema_full": ema.state_dict() if ema is not None else None,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "step": self.global_step,
            "rng": capture_rng_state(),
            "best": self.best,
            "history": self.history,
            "log": self.record.to_checkpoint(),
            "train_config": to_plain(self.spec),
        }

    def checkpoint(self, name: str, epoch: int, batch_in_epoch: int) -> None:
        """Write ``name`` (rank 0) atomically; on failure say what is safe and stop."""
        if not self.info.is_main:
            return
        self.writer.flush()
        try:
            save_checkpoint(self.checkpoint_payload(epoch, batch_in_epoch), self.out_dir / name)
        except CheckpointError as exc:
            last = self.last_saved.get("last.pt")
            safe = (
                f"resume={self.out_dir / 'last.pt'} continues from step {last}"
                if last is not None
                else "no checkpoint of this run was written yet"
            )
            raise CheckpointError(
                f"{exc}; training stopped at step {self.global_step}: {safe}"
            ) from None
        self.last_saved[name] = self.global_step

    # --------------------------------------------------------------------------- finish
    def finish(self) -> None:
        if not self.info.is_main:
            return
        if self.trainer.plots:
            from .plots import plot_training_curves

            plot_training_curves(self.out_dir / "metrics.csv", self.out_dir)
        best = self.best.get("val/mAP", -1.0)
        summary = (
            f"best val/mAP {best:.4f} (epoch {self.best.get('epoch')}, best.pt)"
            if best >= 0
            else "no evaluation"
        )
        print_line(
            f"done: {summary}; checkpoints, metrics.csv and logs in {self.out_dir.resolve()}",
            self.out_dir / "train.log",
        )


def evaluate_model(
    model: nn.Module, loader, dataset, spec: TrainConfig, info: DistInfo, device: torch.device
) -> dict[str, float]:
    """Inference over the (sharded) validation loader, predictions gathered on rank 0, metrics."""
    image_ids, predictions = run_inference(model, loader, spec.postprocess, device)
    gathered = all_gather_objects((image_ids, predictions), info)
    if not info.is_main:
        return {}
    evaluator = evaluator_for(dataset, spec.dataset.eval)
    seen = set()
    for ids, preds in gathered:
        keep = [i for i, image_id in enumerate(ids) if image_id not in seen]
        seen.update(ids)
        evaluator.process([ids[i] for i in keep], [preds[i] for i in keep])
    metrics = evaluator.evaluate()
    return {f"val/{k}" if not k.startswith("val/") else k: v for k, v in _rename(metrics).items()}


def _rename(metrics: dict[str, Any]) -> dict[str, Any]:
    """Evaluator keys to log keys: COCO ``AP`` -> ``mAP``, ``AP50`` -> ``mAP50``; VOC ``mAP``."""
    out = dict(metrics)
    if "AP" in out and "mAP" not in out:
        out["mAP"] = out["AP"]
    if "AP50" in out and "mAP50" not in out:
        out["mAP50"] = out["AP50"]
    if "mAP" in out and "mAP50" not in out:
        out["mAP50"] = out["mAP"]  # VOC AP is at IoU 0.5
    return out


def _ema_module(ema: AveragedModel) -> nn.Module:
    return ema.module


def _ema_weights(ema: AveragedModel) -> dict[str, torch.Tensor]:
    return ema.module.state_dict()
