"""Optimizer and learning-rate schedule of a task's recipe, built by Hydra's instantiation
from ``task.optimizer`` and ``task.scheduler``:

    optimizer: {_target_: torch.optim.SGD, _partial_: true, lr: 0.1, momentum: 0.9}
    scheduler: {_target_: aca.train.optim.multistep, _partial_: true, milestones: [30, 60]}

The trainer calls the partial with the model's parameters (the optimizer) or the optimizer
(the schedule). Every key must be an argument of its target, checked before any data is
loaded, so a key another optimizer would use (adam with ``momentum``, sgd with ``betas``)
is an error, never silently ignored. ``scheduler.interval`` (``epoch`` or ``step``) is the
trainer's: the schedule steps once per epoch or once per batch. Any torch optimizer or
schedule works as a target; the schedules below are the recipes' own.
"""

from __future__ import annotations

import bisect
import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from aca.errors import ConfigError

INTERVALS = ("epoch", "step")
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


def _floored(optimizer: torch.optim.Optimizer, factor: Callable[[int], float],
             min_lr: float | None) -> LambdaLR:
    """A schedule of multipliers ``factor(n)`` after ``n`` steps, floored at
    ``min_lr / base_lr`` when ``min_lr`` is set."""
    floor = (min_lr or 0.0) / optimizer.param_groups[0]["lr"]
    return LambdaLR(optimizer, lambda n: max(factor(n), floor))


def constant(optimizer: torch.optim.Optimizer) -> LambdaLR:
    """The learning rate never changes."""
    return _floored(optimizer, lambda n: 1.0, None)


def multistep(optimizer: torch.optim.Optimizer, milestones: Iterable[int], gamma: float = 0.1,
              min_lr: float | None = None) -> LambdaLR:
    """The learning rate times ``gamma`` at each milestone."""
    milestones = sorted(milestones)
    return _floored(optimizer, lambda n: gamma ** bisect.bisect_right(milestones, n), min_lr)


def exponential(optimizer: torch.optim.Optimizer, gamma: float,
                min_lr: float | None = None) -> LambdaLR:
    """The learning rate times ``gamma`` every step, floored at ``min_lr``."""
    return _floored(optimizer, lambda n: gamma**n, min_lr)


def _target(cfg: DictConfig, key: str) -> Callable[..., Any]:
    """The callable named by ``cfg._target_`` (``key``: where the config is, for messages)."""
    path = cfg.get("_target_")
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{key}._target_ must name a class or function "
                          f"('package.module.name'), got {path!r}")
    module_name, _, name = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{key}._target_={path!r} cannot be imported ({error})") from error
    if cfg.get("_partial_") is not True:
        raise ConfigError(f"{key}._partial_ must be true: the trainer passes "
                          f"{'the parameters' if 'optimizer' in key else 'the optimizer'}")
    return target


def _check_keys(cfg: DictConfig, target: Callable[..., Any], key: str,
                passed: str, trainer_keys: tuple[str, ...] = ()) -> None:
    """Every key of ``cfg`` is an argument of ``target`` (which receives ``passed`` from
    the trainer), or a ConfigError naming the first that is not, and the valid ones."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [name for name in parameters if name not in (passed, "self")]
    for name in cfg:
        if name not in HYDRA_KEYS + trainer_keys and name not in valid:
            raise ConfigError(f"{key}.{name}: {cfg._target_} takes no {name!r}; its options: "
                              f"{', '.join(valid)}")


def check_recipe(optimizer: DictConfig, scheduler: DictConfig | None) -> None:
    """The optimizer and schedule configs name importable targets and only their
    arguments (before any data is loaded)."""
    target = _target(optimizer, "task.optimizer")
    if not (isinstance(target, type) and issubclass(target, torch.optim.Optimizer)):
        raise ConfigError(f"task.optimizer._target_={optimizer._target_!r} is not a "
                          "torch.optim.Optimizer")
    _check_keys(optimizer, target, "task.optimizer", "params")
    if scheduler is not None:
        _check_keys(scheduler, _target(scheduler, "task.scheduler"), "task.scheduler",
                    "optimizer", trainer_keys=("interval",))
        if scheduler.get("interval", "epoch") not in INTERVALS:
            raise ConfigError(f"unknown task.scheduler.interval {scheduler.interval!r}; "
                              f"choose one of: {', '.join(INTERVALS)}")
    probe = _built(lambda: build_optimizer([torch.zeros(1, requires_grad=True)], optimizer),
                   "task.optimizer")
    _built(lambda: build_scheduler(probe, scheduler), "task.scheduler")


def _built(build: Callable[[], Any], key: str) -> Any:
    """``build()``, its values refused by the target (momentum=-1, betas=abc) as a
    ConfigError naming ``key``."""
    try:
        return build()
    except (InstantiationException, TypeError, ValueError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        raise ConfigError(f"{key}: {cause or error}") from error


def build_optimizer(params: Iterable[torch.nn.Parameter],
                    cfg: DictConfig) -> torch.optim.Optimizer:
    """The optimizer of ``task.optimizer`` over ``params``."""
    return instantiate(cfg, _convert_="all")(params)


def build_scheduler(optimizer: torch.optim.Optimizer,
                    cfg: DictConfig | None) -> tuple[torch.optim.lr_scheduler.LRScheduler, bool]:
    """The schedule of ``task.scheduler`` (constant when null) and whether it steps once
    per batch (``interval: step``) rather than once per epoch."""
    if cfg is None:
        return constant(optimizer), False
    options = OmegaConf.to_container(cfg, resolve=True)
    per_step = options.pop("interval", "epoch") == "step"
    return instantiate(options, _convert_="all")(optimizer), per_step
