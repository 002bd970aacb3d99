"""The contracts between a task and the shared runner (aca.train).

A ``Task`` is trained: it supplies data, a model, a loss and metrics, and the trainer owns
the loop, devices, DDP, the global step, checkpoints and logging. An ``Analysis`` is not
trained: its one method ``analyze`` computes the run's result (e.g. the toy gradient-error
sweep). Both receive their own settings (the run config's ``task`` section) and the ODE
options of the run's ``method`` and ``solver``, not the whole run config, and write only
into the run folder they are given. This module sits beside the trainer and the tasks
(aca/tasks/), so that neither imports the other.
"""

from __future__ import annotations

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
    (``solver.rtol``, ``method.max_checkpoints``, ``+solver.interpolate=false``)."""
    groups = {**cfg.solver, **cfg.method, "solver": cfg.solver.name, "gradient": cfg.method.name}
    del groups["name"]
    return SolveOptions.from_mapping(groups).as_dict()


class Task:
    """A trained task. ``settings``: its config section (``cfg.task``); ``ode``: the
    ``aca.odeint`` options of the run; ``seed``: the run's seed (data draws, initial
    weights); ``data_dir``: where data sets are read from."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        self.settings = settings
        self.ode = ode
        self.seed = int(seed)
        self.data_dir = data_dir

    def datasets(self) -> tuple[Dataset, Dataset]:
        """Train and test datasets, built once per run by the trainer. Indexing with a
        list/tensor of indices must return a whole batch (e.g. ``TensorDataset``), so the
        trainer can batch by index without per-item collation."""
        raise NotImplementedError

    def model(self) -> nn.Module:
        raise NotImplementedError

    def prepare_batch(self, batch: Any, train: bool) -> Any:
        """Per-batch work on the training device (augmentation, masking)."""
        return batch

    def loss(self, model: nn.Module, batch: Any,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch and scalar metrics to log with it; ``step``: the
        trainer's global step (optimizer steps taken before this batch), which a schedule
        in the loss (e.g. KL annealing) follows, so it survives a resume."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Any, step: int) -> dict[str, float]:
        """Metrics of one test batch; the trainer averages them weighted by batch size."""
        _, metrics = self.loss(model, batch, step)
        return metrics

    def report(self, model: nn.Module, data: tuple[Dataset, Dataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        """Task-specific final results (and figures written to ``out_dir``, the run folder)
        added to ``result.json`` after training; ``data``: the datasets the run trained and
        tested on."""
        return {}


class Analysis:
    """A task that is not trained: ``analyze`` computes the run's result. ``settings``: its
    config section (``cfg.task``); ``ode``: the ``aca.odeint`` options of the run;
    ``progress``: whether long loops show a progress bar."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any],
                 progress: bool = False) -> None:
        self.settings = settings
        self.ode = ode
        self.show_progress = progress

    def analyze(self, out_dir: Path) -> dict:
        """Run the analysis, writing its tables and figures into ``out_dir`` (the run
        folder); returns what goes into ``result.json``."""
        raise NotImplementedError

    def progress(self, items: Iterable, total: int | None = None, desc: str = "") -> tqdm:
        """``items`` with a progress bar (the same tqdm bar as training's)."""
        return tqdm(items, total=total, desc=desc, leave=False, disable=not self.show_progress)
