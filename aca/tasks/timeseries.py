"""Irregularly sampled time series (paper experiment 4): Latent ODE and ODE-RNN
interpolating series from a fraction of their time points.

``task=mujoco`` (alias ``task=hopper``) uses the Mujoco Hopper trajectories of
Rubanova et al. 2019 (needs the ``mujoco`` extra); ``task=sines`` uses synthetic
noisy sinusoids with random observation times (no extra dependency), so the
same code path runs anywhere.

Each series keeps ``task.observed_fraction`` of its time points for the encoder
(resampled every training batch, fixed per test series); the model predicts every
time point. With ``task.standardize`` the model reads and predicts values
standardized per dimension with the training set's mean and standard deviation.
The training loss is the Gaussian negative log-likelihood (noise ``task.obs_std``
in standardized units) of all existing points plus an annealed KL term (Latent
ODE); the test metric ``mse`` is the mean squared error, in the data's units
(Hopper: min-max scaled), over all existing points, observed and unobserved.
``task.per_sample=true`` (latent ODE) makes a series' prediction depend on its own
data alone: the encoder reads each series backwards over its own observation times
(each evolution a per-sample solve on the series' own Euler grid) and carries its state
back to the grid's first time, the decoder solves each series with its own step sizes,
and batches keep the whole time grid instead of their union of time points. The
KL weight follows the trainer's global step, so a resumed run continues the
annealing where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from aca.data.hopper import HOPPER_DIMS, hopper_times, load_hopper, min_max_scale, random_windows
from aca.data.irregular import check_fraction, make_sines, sample_observed_mask, union_times
from aca.errors import ConfigError, ODEError
from aca.models.latent_ode import LatentODE
from aca.models.ode_rnn import ODERNNModel
from aca.options import SolveOptions
from aca.report import figures
from aca.task import Task
from aca.tasks.base import check_names

MODELS = ("latent_ode", "ode_rnn")


class SeriesBatch(NamedTuple):
    """A batch on the union of its time points: ``values``, ``mask`` (which values
    exist) and ``observed`` (which the model may read) are ``(B, T, D)``; the model
    sees ``(values - center) / scale`` (each ``(D,)``)."""

    values: torch.Tensor
    mask: torch.Tensor
    observed: torch.Tensor
    times: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor


class SeriesDataset(Dataset):
    """Series on one shared time grid: ``values``, ``mask`` and ``observed`` are
    ``(N, T, D)``, ``center`` and ``scale`` ``(D,)`` standardize them for the model
    (:func:`standardization`); indexing with a list of indices returns the batch
    ``(values, mask, observed, times, center, scale)``."""

    def __init__(self, times: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                 observed: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> None:
        self.times, self.values, self.mask, self.observed = times, values, mask, observed
        self.center, self.scale = center, scale

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, ...]:
        return (self.values[index], self.mask[index], self.observed[index], self.times,
                self.center, self.scale)


class TimeSeriesTask(Task):
    """Shared by the Hopper and sine tasks; subclasses supply :meth:`load` and
    ``input_dim``."""

    input_dim: int

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        self.fraction = check_fraction(settings.observed_fraction)
        check_names([settings.model], MODELS, "task.model")
        if settings.get("per_sample", False):
            self._check_per_sample()

    def _check_per_sample(self) -> None:
        """``task.per_sample``: the latent ODE's encoder and decoder solve each series on
        its own steps (``aca.odeint(..., per_sample=True)``)."""
        if self.settings.model != "latent_ode":
            raise ConfigError(f"task.per_sample=true applies to model=latent_ode (its encoder "
                              f"and decoder), got model={self.settings.model}")
        try:
            SolveOptions(**{**self.ode, "per_sample": True})
        except ODEError as error:
            raise ConfigError(f"task.per_sample=true: {error}") from None

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``times (T,)``, ``values (N, T, D)``, ``mask (N, T, D)`` and the number of
        leading series that form the training set."""
        raise NotImplementedError

    def datasets(self) -> tuple[SeriesDataset, SeriesDataset]:
        """The train and test series; which points the encoder sees (``observed``) is drawn
        once with the run's seed so every method is tested on the same points."""
        times, values, mask, n_train = self.load()
        generator = torch.Generator().manual_seed(self.seed + 1)
        observed = sample_observed_mask(mask, self.fraction, generator)
        scaling = standardization(values[:n_train], mask[:n_train], self.settings.standardize)
        return (SeriesDataset(times, values[:n_train], mask[:n_train], observed[:n_train],
                              *scaling),
                SeriesDataset(times, values[n_train:], mask[n_train:], observed[n_train:],
                              *scaling))

    def model(self) -> nn.Module:
        settings = self.settings
        if settings.model == "ode_rnn":
            return ODERNNModel(self.input_dim, settings.latent_dim, settings.units,
                               settings.gru_units, settings.rec_layers, self.ode)
        per_sample = bool(settings.get("per_sample", False))
        encoder_options = {"solver": "euler", "step_size": settings.encoder_step,
                           "gradient": self.ode["gradient"], "per_sample": per_sample}
        decoder_options = {**self.ode, "per_sample": per_sample}
        return LatentODE(self.input_dim, settings.latent_dim, settings.rec_dims, settings.units,
                         settings.gru_units, settings.gen_layers, settings.rec_layers,
                         decoder_options, encoder_options)

    def prepare_batch(self, batch: Any, train: bool) -> SeriesBatch:
        """Draw the observed points of a training batch afresh (on its device) and
        cut the shared grid to the batch's union of time points (``per_sample``: keep
        the whole grid, so that no time depends on the batch)."""
        values, mask, observed, times, center, scale = batch
        if train:
            observed = sample_observed_mask(mask, self.fraction)
        if not self.settings.get("per_sample", False):
            times, (mask, values, observed) = union_times(times, mask, values, observed)
        return SeriesBatch(values, mask, observed, times, center, scale)

    def kl_weight(self, step: int) -> float:
        """KL annealing: 0 for ``kl_warmup_steps`` training steps, then
        ``1 - kl_decay ** (steps after warm-up)`` (Rubanova's schedule, counted in steps)."""
        after = step - self.settings.kl_warmup_steps
        return 0.0 if after < 0 else 1.0 - self.settings.kl_decay**after

    @staticmethod
    def _predict(model: nn.Module, batch: SeriesBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions ``(B, T, D)`` in the data's units and the KL term ``(B,)``; the
        model reads and writes standardized values."""
        inputs = (batch.values - batch.center) / batch.scale * batch.observed
        predictions, kl = model(batch.times, inputs, batch.observed)
        return batch.center + batch.scale * predictions, kl

    def _errors(self, model: nn.Module, batch: SeriesBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared errors at the existing points ``(B, T, D)`` and the KL term ``(B,)``."""
        predictions, kl = self._predict(model, batch)
        return (predictions - batch.values) ** 2 * batch.mask, kl

    def loss(self, model: nn.Module, batch: SeriesBatch,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Gaussian NLL of the standardized values (noise ``task.obs_std`` in units of each
        dimension's scale) plus the annealed KL; ``mse`` is in the data's units."""
        squared, kl = self._errors(model, batch)
        points = batch.mask.sum(dim=(1, 2)).clamp(min=1)
        standardized = squared / batch.scale**2
        reconstruction = standardized.sum(dim=(1, 2)) / points / (2 * self.settings.obs_std**2)
        kl_weight = self.kl_weight(step)
        loss = (reconstruction + kl_weight * kl).mean()
        mse = squared.sum() / batch.mask.sum().clamp(min=1)
        return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.mean().item(),
                      "kl_weight": kl_weight}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: SeriesBatch, step: int) -> dict[str, float]:
        """MSE over all existing points and over the unobserved ones only."""
        squared, _ = self._errors(model, batch)
        hidden = batch.mask * (1 - batch.observed)
        return {
            "mse": (squared.sum() / batch.mask.sum().clamp(min=1)).item(),
            "mse_unobserved": ((squared * hidden).sum() / hidden.sum().clamp(min=1)).item(),
        }

    @torch.no_grad()
    def predict(self, model: nn.Module, test: SeriesDataset,
                count: int) -> dict[str, torch.Tensor]:
        """Predictions for the first ``count`` test series, on CPU, for figures."""
        device = next(model.parameters()).device
        batch = self.prepare_batch(tuple(t.to(device) for t in test[:count]), train=False)
        was_training = model.training
        model.eval()
        predictions, _ = self._predict(model, batch)
        model.train(was_training)
        return {"times": batch.times.cpu(), "values": batch.values.cpu(),
                "mask": batch.mask.cpu(), "observed": batch.observed.cpu(),
                "predictions": predictions.cpu()}

    def report(self, model: nn.Module, data: tuple[SeriesDataset, SeriesDataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        """Save the predictions for a few test series (``predictions.pt``, read by
        ``python scripts/reproduce.py summarize timeseries``), plot the first one, and
        score the training set's per-dimension mean as a predictor of the test series."""
        train, test = data
        arrays = self.predict(model, test, count=4)
        out_dir = Path(out_dir)
        torch.save(arrays, out_dir / "predictions.pt")
        title = (f"{self.settings.name}: {self.settings.model}, {self.ode['gradient']}, "
                 f"{self.fraction:.0%} observed")
        figures.series_prediction(arrays, index=0, dims=list(self.settings.plot_dims),
                                  title=title, task=self.settings.name,
                                  path=out_dir / "trajectories.png")
        return {"figure": "trajectories.png", "observed_fraction": self.fraction,
                "model": self.settings.model, "mean_baseline_mse": mean_baseline_mse(train, test)}


def mean_baseline_mse(train: SeriesDataset, test: SeriesDataset) -> float:
    """Test MSE of predicting each dimension's training mean at every point: the score of
    a model that learned nothing about the individual series."""
    mean = (train.values * train.mask).sum(dim=(0, 1)) / train.mask.sum(dim=(0, 1))
    return float(((test.values - mean) ** 2 * test.mask).sum() / test.mask.sum())


def standardization(values: torch.Tensor, mask: torch.Tensor,
                    enabled: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation ``(D,)`` of the existing training
    points, or ``(0, 1)`` when ``enabled`` is false. Standardizing lets small networks
    learn the Hopper series in hundreds of iterations: after min-max scaling its
    dimensions vary by 0.05-0.24 around means of 0.2-0.7."""
    dims = values.shape[-1]
    if not enabled:
        return torch.zeros(dims), torch.ones(dims)
    count = mask.sum(dim=(0, 1)).clamp(min=1)
    mean = (values * mask).sum(dim=(0, 1)) / count
    std = (((values - mean) ** 2 * mask).sum(dim=(0, 1)) / count).sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


class MujocoTask(TimeSeriesTask):
    """Mujoco Hopper (dm_control ``hopper/stand``): one random window of
    ``task.window`` consecutive points per trajectory, times ``arange(200)/200``,
    each dimension scaled to [0, 1] with the training set's range, 80/20 split."""

    input_dim = HOPPER_DIMS

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        settings = self.settings
        data = load_hopper(self.data_dir, settings.n_trajectories,
                           seed=settings.generator_seed)
        generator = torch.Generator().manual_seed(self.seed)
        windows = random_windows(data, settings.window, generator)
        n_train = int(len(windows) * settings.train_fraction)
        values = min_max_scale(windows, windows[:n_train])
        return hopper_times(settings.window), values, torch.ones_like(values), n_train


class SinesTask(TimeSeriesTask):
    """Noisy 2-D sinusoids, each seen at its own random times (:func:`make_sines`)."""

    input_dim = 2

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        settings = self.settings
        times, values, mask = make_sines(
            settings.n_series, settings.n_times, settings.points_per_series, settings.t_end,
            settings.noise_std, seed=self.seed)
        return times, values, mask, int(len(values) * settings.train_fraction)
