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
import csv
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
from ..config import TrainSchema, model_config_from, to_plain
from ..loss import MultiBoxLoss
from ..models import SSD, build_ssd
from .checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .data import build_datasets, make_train_loader, make_val_loader
from .device import resolve_device
from .distributed import DistInfo, all_gather_objects, barrier, init_distributed, reduce_mean
from .evaluate import evaluator_for, run_inference
from .finetune import init_from_checkpoint
from .optim import build_optimizer, build_scheduler

__all__ = ["NonFiniteLossError", "fit", "resolve_device"]


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


def fit(
    spec: TrainSchema,
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
    out_dir = Path(out_dir)
    trainer = spec.trainer
    device = resolve_device(spec.device)
    info = init_distributed(device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if trainer.threads > 0:
        torch.set_num_threads(trainer.threads)
    torch.manual_seed(spec.seed)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- data
    train_set, val_set = build_datasets(spec, info)
    classes = list(train_set.classes)
    train_loader = make_train_loader(train_set, spec, info)
    val_loader = (
        make_val_loader(
            val_set, tuple(spec.image_size), trainer.eval_batch_size, trainer.num_workers, info
        )
        if val_set is not None
        else None
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set has {len(train_set)} images, fewer than one batch of "
            f"{trainer.batch_size}; lower trainer.batch_size"
        )
    total_steps = trainer.epochs * steps_per_epoch
    if trainer.max_steps > 0:
        total_steps = min(total_steps, trainer.max_steps)

    # ---------------------------------------------------------------- model
    model_config = model_config_from(spec, len(classes))
    model = build_ssd(model_config)
    log_lines: list[str] = []
    if spec.backbone.pretrained:
        log_lines.append(_load_pretrained_backbone(model, spec.backbone.pretrained))
    class_ids = dataset_class_spec(train_set).ids  # COCO category ids, stored with the classes
    if spec.init:
        log_lines.append(init_from_checkpoint(model, spec.init, dataset_class_spec(train_set)))
    _freeze(model, spec.backbone.frozen_stages)
    model.to(device)
    memory_format = torch.channels_last if trainer.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    anchors = model.anchors

    criterion = MultiBoxLoss(
        BoxCoder(),
        iou_threshold=spec.head.iou_threshold,
        neg_pos_ratio=spec.head.neg_pos_ratio,
        classification="focal" if spec.head.loss == "focal" else "softmax",
        focal_alpha=spec.head.focal_alpha,
        focal_gamma=spec.head.focal_gamma,
    )
    optimizer = build_optimizer(model, spec.optimizer)
    scheduler = build_scheduler(optimizer, spec.scheduler, total_steps, steps_per_epoch)
    autocast, use_scaler = autocast_context(trainer.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = (
        AveragedModel(
            model,
            multi_avg_fn=ema_update_fn(trainer.ema_decay, trainer.ema_warmup_steps),
            use_buffers=True,
        )
        if trainer.ema
        else None
    )

    start_epoch, global_step, start_batch = 0, 0, 0
    best = {"val/mAP": -1.0}
    history: list[dict[str, Any]] = []
    if spec.resume:
        ckpt = load_checkpoint(spec.resume, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema_full") is not None:
            ema.load_state_dict(ckpt["ema_full"])
        start_epoch, global_step = ckpt["epoch"], ckpt["step"]
        start_batch = ckpt.get("batch_in_epoch", 0)
        best = dict(ckpt.get("best", best))
        history = list(ckpt.get("history", []))
        restore_rng_state(ckpt["rng"])
        log_lines.append(
            f"resumed from {spec.resume}: epoch {start_epoch}, step {global_step}, "
            f"batch {start_batch}"
        )

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    writer = _Logger(out_dir, enabled=info.is_main, append=bool(spec.resume))
    for line in log_lines:
        writer.info(line)
    writer.info(
        f"{len(train_set)} training images, {len(val_set) if val_set is not None else 0} "
        f"validation images, {len(classes)} classes, {model.num_anchors} anchors, "
        f"{total_steps} steps on {device}" + (f" x{info.world_size} ranks" if info.enabled else "")
    )

    def checkpoint_payload(epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "model_config": model_config.to_dict(),
            "classes": classes,
            "class_ids": list(class_ids) if class_ids is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "ema": _ema_weights(ema) if ema is not None else None,
            "ema_full": ema.state_dict() if ema is not None else None,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "step": global_step,
            "rng": capture_rng_state(),
            "best": best,
            "history": history,
            "train_config": to_plain(spec),
        }

    def save(name: str, epoch: int, batch_in_epoch: int) -> None:
        if info.is_main:
            save_checkpoint(checkpoint_payload(epoch, batch_in_epoch), out_dir / name)

    done = global_step >= total_steps
    epoch = start_epoch
    last_metrics: dict[str, float] = {}
    while not done and epoch < trainer.epochs:
        train_model.train()
        train_loader.batch_sampler.set_epoch(epoch, start_batch)
        train_loader.dataset.set_epoch(epoch)
        batch_index = start_batch
        start_batch = 0
        progress = writer.progress(
            len(train_loader) - batch_index, f"epoch {epoch + 1}/{trainer.epochs}"
        )
        t0, seen = time.perf_counter(), 0
        for batch in train_loader:
            images = batch["images"].to(device, non_blocking=True)
            images = images.contiguous(memory_format=memory_format)
            targets = [
                {"boxes": b.to(device), "labels": lab.to(device)}
                for b, lab in zip(batch["boxes"], batch["labels"])
            ]
            with autocast:
                deltas, logits = train_model(images)
            losses = criterion(deltas.float(), logits.float(), anchors, targets)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                writer.close()
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at step {global_step + 1} (epoch {epoch + 1}, "
                    f"batch {batch_index + 1}); the last good checkpoint is kept in {out_dir}. "
                    "Lower optimizer.lr, enable trainer.grad_clip, or check the data."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if trainer.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            global_step += 1
            batch_index += 1
            seen += images.shape[0] * info.world_size
            values = {
                "train/loss": reduce_mean(loss.detach(), info).item(),
                "train/loss_box": reduce_mean(losses["loss_box"].detach(), info).item(),
                "train/loss_cls": reduce_mean(losses["loss_cls"].detach(), info).item(),
                "train/lr": optimizer.param_groups[0]["lr"],
            }
            speed = seen / max(time.perf_counter() - t0, 1e-9)
            writer.step(global_step, epoch + 1, values, speed, progress)
            if on_step_end is not None:
                on_step_end(global_step, values)
            if trainer.checkpoint_every > 0 and global_step % trainer.checkpoint_every == 0:
                save("last.pt", epoch, batch_index)
            if global_step >= total_steps:
                done = True
                break
        writer.end_progress(progress)
        epoch_finished = batch_index >= len(train_loader)
        next_epoch = epoch + 1 if epoch_finished else epoch
        next_batch = 0 if epoch_finished else batch_index

        want_eval = val_loader is not None and (
            done or (epoch_finished and (epoch + 1) % max(1, trainer.eval_every) == 0)
        )
        if want_eval:
            eval_model = _ema_module(ema) if ema is not None else model
            last_metrics = evaluate_model(eval_model, val_loader, val_set, spec, info, device)
            if info.is_main:
                record = {"epoch": epoch + 1, "step": global_step, **last_metrics}
                history.append({k: v for k, v in record.items() if isinstance(v, (int, float))})
                writer.metrics(global_step, last_metrics)
                if last_metrics.get("val/mAP", -1.0) > best["val/mAP"]:
                    best = {k: v for k, v in last_metrics.items() if isinstance(v, (int, float))}
                    best["epoch"] = epoch + 1
                    save("best.pt", next_epoch, next_batch)
        save("last.pt", next_epoch, next_batch)
        barrier(info)
        epoch = next_epoch

    writer.close()
    if info.is_main and trainer.plots:
        from .plots import plot_training_curves

        plot_training_curves(out_dir / "metrics.csv", out_dir)
    return {k: float(v) for k, v in best.items() if isinstance(v, (int, float))}


def evaluate_model(
    model: nn.Module, loader, dataset, spec: TrainSchema, info: DistInfo, device: torch.device
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


class _Logger:
    """Progress bar, TensorBoard events and ``metrics.csv`` (rank 0 only)."""

    def __init__(self, out_dir: Path, *, enabled: bool, append: bool) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self.tb = None
        self.csv_file = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard missing: keep CSV logging
            self.tb = None
        path = out_dir / "metrics.csv"
        new = not (append and path.exists())
        self.csv_file = open(path, "w" if new else "a", newline="")  # noqa: SIM115
        self.csv = csv.writer(self.csv_file)
        if new:
            self.csv.writerow(["step", "epoch", "key", "value"])
        self.log_file = open(out_dir / "train.log", "a")  # noqa: SIM115

    def info(self, line: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(line)
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
        if self.enabled:
            self.csv_file.flush()

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
        if not self.log_file.closed:
            self.log_file.close()
