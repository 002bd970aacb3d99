"""A test-only task: linear regression through a Neural ODE on random data, small
enough that a whole training run takes well under a second. The trainer's tests use it
so they do not depend on the paper's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import aca
from aca.errors import DataError
from aca.task import Analysis, Task


class SimulatedCrash(RuntimeError):
    """Raised by ``DummyRegression.loss`` after ``task.crash_after_batches`` batches."""


class LinearField(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(y))


class BlowUp(nn.Module):
    """dy/dt = y²: from y(0) > 1 the solution blows up before t = 1, so the solve fails."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y**2


class DummyRegression(Task):
    """y = x @ w_true + noise; model: an ODE block on x, then dropout (``task.dropout``,
    so that training draws random numbers) and a linear read-out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dtype = getattr(torch, self.settings.dtype)
        self.batches_seen = 0

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        settings = self.settings
        if settings.require_data_dir and not Path(self.data_dir).is_dir():
            raise DataError(f"data directory {self.data_dir} not found; "
                                    "set data_dir=PATH or ACA_DATA_DIR")
        generator = torch.Generator().manual_seed(settings.data_seed)
        total = settings.train_size + settings.test_size
        x = torch.randn(total, settings.dim, generator=generator, dtype=self.dtype)
        w_true = torch.randn(settings.dim, 1, generator=generator, dtype=self.dtype)
        y = x @ w_true + 0.01 * torch.randn(total, 1, generator=generator, dtype=self.dtype)
        split = settings.train_size
        return TensorDataset(x[:split], y[:split]), TensorDataset(x[split:], y[split:])

    def model(self) -> nn.Module:
        settings = self.settings
        field = BlowUp() if settings.blow_up else LinearField(settings.dim)
        return nn.Sequential(aca.ODEBlock(field, **self.ode), nn.Dropout(settings.dropout),
                             nn.Linear(settings.dim, 1)).to(self.dtype)

    def loss(self, model: nn.Module, batch: Any,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        crash_after = self.settings.get("crash_after_batches")
        if crash_after is not None and self.batches_seen >= crash_after and model.training:
            raise SimulatedCrash(f"simulated crash after {crash_after} batches")
        if model.training:
            self.batches_seen += 1
        x, y = batch
        mse = torch.mean((model(x) - y) ** 2)
        return mse, {"mse": mse.item()}

    def report(self, model: nn.Module, data: tuple[TensorDataset, TensorDataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        return {"parameters": sum(p.numel() for p in model.parameters())}


class DummyAnalysis(Analysis):
    """An analysis: ``analyze`` writes a file and returns a small table."""

    def analyze(self, out_dir: Path) -> dict:
        (out_dir / "analysis.txt").write_text("done\n")
        return {"answer": 42, "solver": self.ode["solver"]}
