"""The contract between a task and the shared trainer.

A task supplies data, a model, a loss and metrics; the trainer (aca.train) owns
the loop, devices, DDP, checkpoints and logging. A task that is an analysis
rather than a training run (e.g. the toy gradient-error sweep) overrides
``analyze`` and sets ``trainable = False``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from aca.options import SolveOptions


def ode_options(cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments for ``aca.odeint`` / ``aca.ODEBlock`` chosen by the
    ``method`` and ``solver`` config groups, checked by ``aca.SolveOptions``: the
    groups' names, and every other key of theirs is an option of that name
    (``solver.rtol``, ``method.max_checkpoints``, ``+solver.safety=0.8``)."""
    groups = {**cfg.solver, **cfg.method, "solver": cfg.solver.name, "gradient": cfg.method.name}
    del groups["name"]
    return SolveOptions.from_mapping(groups).as_dict()


def show_progress(setting: str | bool) -> bool:
    """``trainer.progress``: true, false, or auto (a bar only when stderr is a terminal)."""
    setting = str(setting).lower()
    return setting == "true" or (setting == "auto" and sys.stderr.isatty())


class Task:
    """Base class of every task; ``cfg`` is the whole resolved run config
    (``cfg.task`` holds the task's own settings)."""

    trainable: bool = True

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.ode = ode_options(cfg)

    def datasets(self) -> tuple[Dataset, Dataset]:
        """Train and test datasets. Indexing with a list/tensor of indices must
        return a whole batch (e.g. ``TensorDataset``), so the trainer can batch
        by index without per-item collation."""
        raise NotImplementedError

    def model(self) -> nn.Module:
        raise NotImplementedError

    def prepare_batch(self, batch: Any, train: bool) -> Any:
        """Per-batch work on the training device (augmentation, masking)."""
        return batch

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch and scalar metrics to log with it."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metrics of one test batch; the trainer averages them weighted by batch size."""
        _, metrics = self.loss(model, batch)
        return metrics

    def report(self, model: nn.Module, history: list[dict[str, float]], out_dir: Path) -> dict:
        """Task-specific final results (and figures written to ``out_dir``) added
        to ``result.json`` after training."""
        return {}

    def analyze(self, out_dir: Path) -> dict:
        """Run a non-training task; returns what goes into ``result.json``."""
        raise NotImplementedError

    def progress(self, items: Iterable, total: int | None = None, desc: str = "") -> tqdm:
        """``items`` with a progress bar for a long analysis, shown as training's is
        (``trainer.progress``)."""
        return tqdm(items, total=total, desc=desc, leave=False,
                    disable=not show_progress(self.cfg.trainer.progress))
