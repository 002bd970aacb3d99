"""Checks of a run config that fail fast with a one-line message, before any data
is loaded, and the task named by ``task.cls``, built from the run config."""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import aca
from aca.errors import ConfigError
from aca.task import Analysis, Task, ode_options
from aca.train.optim import check_recipe


def task_class(cfg: DictConfig) -> type[Task] | type[Analysis]:
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
    if not (isinstance(cls, type) and issubclass(cls, (Task, Analysis))):
        raise ConfigError(f"task.cls={path!r} is not a subclass of aca.task.Task or "
                          "aca.task.Analysis")
    return cls


def show_progress(setting: str | bool) -> bool:
    """``trainer.progress``: true, false, or auto (a bar only when stderr is a terminal)."""
    setting = str(setting).lower()
    return setting == "true" or (setting == "auto" and sys.stderr.isatty())


def build_task(cfg: DictConfig) -> Task | Analysis:
    """The task of a run config, given what it needs of it: its own settings
    (``cfg.task``), the ODE options of ``method`` and ``solver``, and the seed and data
    directory (a Task) or whether to show progress bars (an Analysis)."""
    cls = task_class(cfg)
    if issubclass(cls, Analysis):
        return cls(cfg.task, ode_options(cfg), progress=show_progress(cfg.trainer.progress))
    return cls(cfg.task, ode_options(cfg), seed=cfg.seed, data_dir=cfg.data_dir)


def check_ode_options(ode: dict) -> None:
    """The run's solver options as ``aca.SolveOptions`` checks them, so that an unknown
    solver, a bad tolerance or a fixed-step solver without step size fails before
    training (with the core's own aca.ODEError message)."""
    aca.SolveOptions(**ode)


def is_int(value: Any) -> bool:
    """An integer (not a bool, which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: is_int(value) and value >= low


def _positive(value: Any) -> bool:
    return is_number(value) and value > 0


def _or_null(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or valid(value)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# (key, test, what is valid): values Hydra passes through as given (`seed=abc`, `solver.rtol=`),
# checked before any data is loaded.
RUN_SETTINGS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda value: is_int(value) and 0 <= value < 2**32, "an integer in [0, 2**32)"),
    ("solver.rtol", lambda value: is_number(value) and 0 <= value < 1,
     "a number in [0, 1) (a relative tolerance of 1 or more lets any step through)"),
    ("solver.atol", is_number, "a number"),
    ("solver.step_size", _or_null(is_number), "a number, or null for adaptive steps"),
    ("method.max_checkpoints", _or_null(is_int), "an integer, or null to keep every step"),
    ("trainer.device", lambda value: isinstance(value, str) and DEVICE.fullmatch(value),
     "one of: auto, cpu, cuda, cuda:N"),
    ("trainer.ddp", lambda value: is_bool(value) or value == "auto", "one of: auto, true, false"),
    ("trainer.threads", lambda value: value == "auto" or _at_least(1)(value),
     "an integer >= 1, or auto for torch's default (OMP_NUM_THREADS, else one per core)"),
    ("trainer.amp", is_bool, "true or false"),
    ("trainer.compile", is_bool, "true or false"),
    ("trainer.deterministic", is_bool, "true or false"),
    ("trainer.checkpoint", is_bool, "true or false"),
    ("trainer.resume", is_bool, "true or false"),
    ("trainer.num_workers", _at_least(0), "an integer >= 0"),
    ("trainer.grad_clip", _or_null(_positive), "a positive number, or null for no clipping"),
    ("trainer.eval_every", _at_least(1), "an integer >= 1 (the test set is evaluated every N "
     "epochs and after the last)"),
    ("trainer.max_batches_per_epoch", _or_null(_at_least(1)), "an integer >= 1, or null for "
     "every batch"),
    ("trainer.max_epochs", _or_null(_at_least(1)), "an integer >= 1, or null for task.epochs"),
]
TRAINING_SETTINGS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("task.epochs", _at_least(1), "an integer >= 1 (0 epochs would train nothing)"),
    ("task.batch_size", _at_least(1), "an integer >= 1"),
    ("task.optimizer.lr", _positive, "a positive number"),
]


def _check(cfg: DictConfig, settings: list[tuple[str, Callable[[Any], bool], str]]) -> None:
    for key, valid, expected in settings:
        value = OmegaConf.select(cfg, key)
        if not valid(value):
            given = " is empty" if value == "" else f"={value!r} is invalid"
            raise ConfigError(f"{key}{given}; expected {expected}")


def check_config(cfg: DictConfig, trainable: bool = True) -> None:
    """Values no config group can catch (types and ranges, mode, ckpt, trainer switches),
    so that a bad one fails before any data is loaded; ``trainable`` adds the
    training recipe's (``task.epochs``, ``task.batch_size``, the optimizer and schedule)."""
    if cfg.mode not in ("train", "eval"):
        raise ConfigError(f"unknown mode {cfg.mode!r}; choose one of: train, eval")
    if cfg.mode == "eval" and not cfg.ckpt:
        raise ConfigError("mode=eval needs ckpt=PATH (a last.pt or best.pt of a training run)")
    if cfg.ckpt and not Path(cfg.ckpt).exists():
        raise ConfigError(f"checkpoint not found: ckpt={cfg.ckpt}")
    _check(cfg, RUN_SETTINGS + (TRAINING_SETTINGS if trainable else []))
    if trainable:
        check_recipe(cfg.task.optimizer, cfg.task.get("scheduler"))
    if cfg.trainer.monitor_mode not in ("min", "max"):
        raise ConfigError(f"unknown trainer.monitor_mode {cfg.trainer.monitor_mode!r}; "
                          "choose one of: min, max")
    if str(cfg.trainer.progress).lower() not in ("auto", "true", "false"):
        raise ConfigError(f"unknown trainer.progress {cfg.trainer.progress!r}; "
                          "choose one of: auto, true, false")
