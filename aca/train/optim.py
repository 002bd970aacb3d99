"""Optimizer and learning-rate schedule from the task's ``optimizer`` and
``scheduler`` config."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

import torch
from omegaconf import DictConfig

from aca.train.config import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "adamax")
SCHEDULERS = ("none", "multistep", "exponential", "cosine")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: DictConfig) -> torch.optim.Optimizer:
    """``cfg``: name, lr, weight_decay, momentum (sgd), betas (adam family)."""
    name = cfg.name
    lr, weight_decay = cfg.lr, cfg.get("weight_decay", 0.0)
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.get("momentum", 0.0),
                               weight_decay=weight_decay, nesterov=cfg.get("nesterov", False))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ConfigError(f"unknown task.optimizer.name {name!r}; "
                      f"choose one of: {', '.join(OPTIMIZERS)}")


def lr_factor(cfg: DictConfig, base_lr: float, total: int) -> Callable[[int], float]:
    """The learning-rate multiplier after ``n`` scheduler steps (epochs, or batches
    with ``interval: step``), floored at ``min_lr / base_lr`` when ``min_lr`` is set."""
    name = cfg.get("name", "none")
    gamma = cfg.get("gamma", 0.1)
    milestones = sorted(cfg.get("milestones", []) or [])
    floor = (cfg.get("min_lr") or 0.0) / base_lr

    def factor(n: int) -> float:
        if name == "none":
            value = 1.0
        elif name == "multistep":
            value = gamma ** bisect.bisect_right(milestones, n)
        elif name == "exponential":
            value = gamma**n
        else:
            value = 0.5 * (1.0 + math.cos(math.pi * min(n, total) / max(total, 1)))
        return max(value, floor)

    if name not in SCHEDULERS:
        raise ConfigError(f"unknown task.scheduler.name {name!r}; "
                          f"choose one of: {', '.join(SCHEDULERS)}")
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per epoch, or once per batch when ``cfg.interval == 'step'``."""
    per_step = cfg.get("interval", "epoch") == "step"
    total = epochs * steps_per_epoch if per_step else epochs
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, base_lr, total))
