"""Optimizers and learning-rate schedules.

* No weight decay on BatchNorm parameters and biases (``no_decay_norm_bias``).
* Schedules are per step: linear warmup from ``warmup_factor * lr``, then cosine (to
  ``min_lr_ratio * lr``), multi-step (milestones as fractions of training) or constant.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULERS = ("cosine", "multistep", "constant")


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Split parameters into a decayed group and, optionally, a no-decay group (norms, biases)."""
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if no_decay_norm_bias and (is_norm or name == "bias"):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.eps, momentum=cfg.momentum
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {OPTIMIZERS}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, cfg: SchedulerConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if cfg.name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {cfg.name!r}; choose one of {SCHEDULERS}")
    if warmup_steps > 0 and step < warmup_steps:
        alpha = step / warmup_steps
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    progress = min(max(step / max(1, total_steps), 0.0), 1.0)
    if cfg.name == "cosine":
        base = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.name == "multistep":
        base = cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    else:
        base = 1.0
    return warm * base


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max(0, total_steps - 1))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg)
    )
