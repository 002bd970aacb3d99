"""Checks of a run config that fail fast with a one-line message, before any data
is loaded, and the task class named by ``task.cls``."""

from __future__ import annotations

import importlib

import torch
from omegaconf import DictConfig
from torch import nn

import aca
from aca.tasks.base import Task


class ConfigError(ValueError):
    """A config value the trainer cannot use; the message names it and the valid choices."""


def task_class(cfg: DictConfig) -> type[Task]:
    """Import the class named by ``task.cls`` (``package.module.Class``)."""
    path = cfg.task.get("cls")
    if not path or "." not in path:
        raise ConfigError(f"task.cls must be 'package.module.Class', got {path!r}")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError(f"task.cls={path!r}: cannot import module {module_name!r}") from error
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task.cls={path!r} is not a subclass of aca.tasks.base.Task")
    return cls


class _Decay(nn.Module):
    def forward(self, t: float, y: torch.Tensor) -> torch.Tensor:
        return -y


def check_ode_options(ode: dict) -> None:
    """Solve dy/dt = -y once with the run's solver options, so that an unknown solver,
    a bad tolerance or a fixed-step solver without step size fails before training
    (with the core's own aca.ODEError message)."""
    with torch.no_grad():
        aca.odeint(_Decay(), torch.ones(1), torch.tensor([0.0, 1.0]), **ode)


def check_config(cfg: DictConfig) -> None:
    """Values no config group can catch: mode, ckpt, trainer switches."""
    if cfg.mode not in ("train", "eval"):
        raise ConfigError(f"unknown mode {cfg.mode!r}; choose one of: train, eval")
    if cfg.mode == "eval" and not cfg.ckpt:
        raise ConfigError("mode=eval needs ckpt=PATH (a last.pt or best.pt of a training run)")
    if cfg.trainer.monitor_mode not in ("min", "max"):
        raise ConfigError(f"unknown trainer.monitor_mode {cfg.trainer.monitor_mode!r}; "
                          "choose one of: min, max")
    if str(cfg.trainer.progress).lower() not in ("auto", "true", "false"):
        raise ConfigError(f"unknown trainer.progress {cfg.trainer.progress!r}; "
                          "choose one of: auto, true, false")
