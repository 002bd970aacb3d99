"""Irregularly sampled time series (paper experiment 4): Latent ODE and ODE-RNN
interpolating series from a fraction of their time points.

``task=mujoco`` (alias ``task=hopper``) uses the Mujoco Hopper trajectories of
Rubanova et al. 2019 (needs the ``mujoco`` extra); ``task=sines`` uses synthetic
noisy sinusoids with random observation times (no extra dependency), so the
same code path runs anywhere.

Each series keeps ``task.observed_fraction`` of its time points for the encoder
(resampled every training batch, fixed per test series); the model predicts every
time point. The training loss is the Gaussian negative log-likelihood (noise
``task.obs_std``) of all existing points plus an annealed KL term (Latent ODE);
the test metric ``mse`` is the mean squared error over all existing points,
observed and unobserved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import TensorDataset

from aca.data.hopper import hopper_times, load_hopper, min_max_scale, random_windows
from aca.data.irregular import check_fraction, make_sines, sample_observed_mask, union_times
from aca.models.latent_ode import LatentODE
from aca.models.ode_rnn import ODERNNModel
from aca.tasks._results import pyplot
from aca.tasks.base import Task

MODELS = ("latent_ode", "ode_rnn")
# Axis labels of each task's figures: (time, value).
AXIS_LABELS = {
    "mujoco": ("time (physics steps / 200)", "min-max scaled"),
    "sines": ("time (arbitrary units)", "arbitrary units"),
}


class SeriesBatch(NamedTuple):
    """A batch on the union of its time points: ``values``, ``mask`` (which values
    exist) and ``observed`` (which the model may read) are ``(B, T, D)``."""

    values: torch.Tensor
    mask: torch.Tensor
    observed: torch.Tensor
    times: torch.Tensor


class TimeSeriesTask(Task):
    """Shared by the Hopper and sine tasks; subclasses supply :meth:`load`."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.settings = cfg.task
        self.fraction = check_fraction(self.settings.observed_fraction)
        if self.settings.model not in MODELS:
            raise ValueError(
                f"task.model={self.settings.model!r} is unknown; choose one of: {', '.join(MODELS)}"
            )
        self.train_steps = 0
        self.times: torch.Tensor | None = None
        self._datasets: tuple[TensorDataset, TensorDataset] | None = None

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``times (T,)``, ``values (N, T, D)``, ``mask (N, T, D)`` and the number of
        leading series that form the training set."""
        raise NotImplementedError

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        """(values, mask, observed) per series; ``observed`` is drawn once with the
        run's seed so every method is tested on the same points."""
        if self._datasets is None:
            times, values, mask, n_train = self.load()
            generator = torch.Generator().manual_seed(int(self.cfg.seed) + 1)
            observed = sample_observed_mask(mask, self.fraction, generator)
            self.times = times
            self._datasets = (
                TensorDataset(values[:n_train], mask[:n_train], observed[:n_train]),
                TensorDataset(values[n_train:], mask[n_train:], observed[n_train:]),
            )
        return self._datasets

    def model(self) -> nn.Module:
        settings = self.settings
        input_dim = self.datasets()[0].tensors[0].shape[-1]
        if settings.model == "ode_rnn":
            return ODERNNModel(input_dim, settings.latent_dim, settings.units,
                               settings.gru_units, settings.rec_layers, self.ode)
        encoder_options = {"solver": "euler", "step_size": settings.encoder_step,
                           "gradient": self.ode["gradient"]}
        return LatentODE(input_dim, settings.latent_dim, settings.rec_dims, settings.units,
                         settings.gru_units, settings.gen_layers, settings.rec_layers,
                         self.ode, encoder_options)

    def prepare_batch(self, batch: Any, train: bool) -> SeriesBatch:
        """Draw the observed points of a training batch afresh (on its device) and
        cut the shared grid to the batch's union of time points."""
        values, mask, observed = batch
        if train:
            observed = sample_observed_mask(mask, self.fraction)
        if self.times is None:
            self.datasets()
        times = self.times.to(values.device)
        times, (mask, values, observed) = union_times(times, mask, values, observed)
        return SeriesBatch(values, mask, observed, times)

    def kl_weight(self) -> float:
        """KL annealing: 0 for ``kl_warmup_steps`` training steps, then
        ``1 - kl_decay ** (steps after warm-up)`` (Rubanova's schedule, counted in steps)."""
        after = self.train_steps - self.settings.kl_warmup_steps
        return 0.0 if after < 0 else 1.0 - self.settings.kl_decay**after

    def _errors(self, model: nn.Module, batch: SeriesBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors at the existing points ``(B, T, D)`` and the KL term ``(B,)``."""
        predictions, kl = model(batch.times, batch.values * batch.observed, batch.observed)
        return (predictions - batch.values) ** 2 * batch.mask, kl

    def loss(self, model: nn.Module, batch: SeriesBatch) -> tuple[torch.Tensor, dict[str, float]]:
        squared, kl = self._errors(model, batch)
        points = batch.mask.sum(dim=(1, 2)).clamp(min=1)
        reconstruction = squared.sum(dim=(1, 2)) / points / (2 * self.settings.obs_std**2)
        kl_weight = self.kl_weight()
        self.train_steps += 1
        loss = (reconstruction + kl_weight * kl).mean()
        mse = squared.sum() / batch.mask.sum().clamp(min=1)
        return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.mean().item(),
                      "kl_weight": kl_weight}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: SeriesBatch) -> dict[str, float]:
        """MSE over all existing points and over the unobserved ones only."""
        squared, _ = self._errors(model, batch)
        hidden = batch.mask * (1 - batch.observed)
        return {
            "mse": (squared.sum() / batch.mask.sum().clamp(min=1)).item(),
            "mse_unobserved": ((squared * hidden).sum() / hidden.sum().clamp(min=1)).item(),
        }

    @torch.no_grad()
    def predict_test_series(self, model: nn.Module, count: int) -> dict[str, torch.Tensor]:
        """Predictions for the first ``count`` test series, on CPU, for figures."""
        test = self.datasets()[1]
        device = next(model.parameters()).device
        batch = self.prepare_batch(tuple(t[:count].to(device) for t in test.tensors), train=False)
        was_training = model.training
        model.eval()
        predictions, _ = model(batch.times, batch.values * batch.observed, batch.observed)
        model.train(was_training)
        return {"times": batch.times.cpu(), "values": batch.values.cpu(),
                "mask": batch.mask.cpu(), "observed": batch.observed.cpu(),
                "predictions": predictions.cpu()}

    def report(self, model: nn.Module, history: list[dict[str, float]], out_dir: Path) -> dict:
        """Save the predictions for a few test series (``predictions.pt``, read by
        ``scripts/timeseries_table.py``) and plot the first one."""
        arrays = self.predict_test_series(model, count=4)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(arrays, out_dir / "predictions.pt")
        title = (f"{self.settings.name}: {self.settings.model}, {self.ode['gradient']}, "
                 f"{self.fraction:.0%} observed")
        plot_series(arrays, index=0, dims=list(self.settings.plot_dims), title=title,
                    labels=AXIS_LABELS[self.settings.name], path=out_dir / "trajectories.png")
        return {"figure": "trajectories.png", "observed_fraction": self.fraction,
                "model": self.settings.model}


def plot_series(arrays: dict[str, torch.Tensor], index: int, dims: list[int], title: str,
                labels: tuple[str, str], path: Path) -> None:
    """True values, observed points and predictions of one series, one panel per dim."""
    plt = pyplot()
    figure, axes = plt.subplots(len(dims), 1, figsize=(7, 2.2 * len(dims)), sharex=True,
                                squeeze=False)
    times = arrays["times"]
    for axis, dim in zip(axes[:, 0], dims, strict=True):
        exists = arrays["mask"][index, :, dim] > 0
        seen = arrays["observed"][index, :, dim] > 0
        axis.plot(times[exists], arrays["values"][index, exists, dim], "k-", label="true")
        axis.plot(times[seen], arrays["values"][index, seen, dim], "ko", ms=4, label="observed")
        axis.plot(times, arrays["predictions"][index, :, dim], "C1--", label="predicted")
        axis.set_ylabel(f"dim {dim} ({labels[1]})")
    axes[0, 0].legend(loc="best", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(labels[0])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


class MujocoTask(TimeSeriesTask):
    """Mujoco Hopper (dm_control ``hopper/stand``): one random window of
    ``task.window`` consecutive points per trajectory, times ``arange(200)/200``,
    each dimension scaled to [0, 1] with the training set's range, 80/20 split."""

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        settings = self.settings
        data = load_hopper(self.cfg.data_dir, settings.n_trajectories,
                           seed=settings.generator_seed)
        generator = torch.Generator().manual_seed(int(self.cfg.seed))
        windows = random_windows(data, settings.window, generator)
        n_train = int(len(windows) * settings.train_fraction)
        values = min_max_scale(windows, windows[:n_train])
        return hopper_times(settings.window), values, torch.ones_like(values), n_train


class SinesTask(TimeSeriesTask):
    """Noisy 2-D sinusoids, each seen at its own random times (:func:`make_sines`)."""

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        settings = self.settings
        times, values, mask = make_sines(
            settings.n_series, settings.n_times, settings.points_per_series, settings.t_end,
            settings.noise_std, seed=int(self.cfg.seed))
        return times, values, mask, int(len(values) * settings.train_fraction)
