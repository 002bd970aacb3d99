"""Three-body problem (paper experiment 5).

Three point masses under Newtonian gravity in the authors' non-dimensional
units. The positions observed on [0, T_train] are the data; the model is either
the physical vector field with the three masses as its only parameters
(``task.model: physics``) or a black-box neural ODE, an MLP on the 18-dim state
(``task.model: neural``). Both start from the true initial state and are
scored by how well they extrapolate on [0, T_test].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import aca
from aca.report import figures
from aca.task import Task
from aca.tasks.base import check_names, history_totals

# The authors' reference quantities (torch_ACA/three_body_problem_dense.py).
G = 6.67408e-11                              # N m^2 / kg^2
MASS_UNIT = 1.989e30                         # kg, the sun
LENGTH_UNIT = 5.326e12                       # m, distance between the stars of Alpha Centauri
VELOCITY_UNIT = 30000.0                      # m/s, the earth around the sun
TIME_UNIT = 79.91 * 365 * 24 * 3600 * 0.51   # s, orbital period of Alpha Centauri x 0.51
K1 = G * TIME_UNIT * MASS_UNIT / (LENGTH_UNIT**2 * VELOCITY_UNIT)
K2 = VELOCITY_UNIT * TIME_UNIT / LENGTH_UNIT

TRUE_MASSES = (1.1, 1.1, 0.9)
INITIAL_POSITIONS = ((0.0, 0.2, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 0.5))
INITIAL_VELOCITIES = ((0.0, 0.1, 0.0), (0.0, 0.0, 0.1), (0.1, 0.0, 0.0))
MODELS = ("physics", "neural")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PAIRS = ((0, 1), (0, 2), (1, 2))
DATA_TOL = 1e-11


def initial_state() -> torch.Tensor:
    """(r1, r2, r3, v1, v2, v3) flattened to 18 numbers, float64."""
    return torch.tensor(INITIAL_POSITIONS + INITIAL_VELOCITIES, dtype=torch.float64).flatten()


class ThreeBodyGravity(nn.Module):
    """dr_i/dt = K2 v_i, dv_i/dt = K1 sum_j m_j (r_j - r_i) / |r_j - r_i|^3;
    the masses are the parameters."""

    def __init__(self, masses: torch.Tensor) -> None:
        super().__init__()
        self.masses = nn.Parameter(masses.to(torch.float64))

    def forward(self, t: float, state: torch.Tensor) -> torch.Tensor:
        positions = state[..., :9].unflatten(-1, (3, 3))
        velocities = state[..., 9:]
        accelerations = [torch.zeros_like(positions[..., 0, :]) for _ in range(3)]
        for i, j in PAIRS:
            offset = positions[..., j, :] - positions[..., i, :]
            inverse_cube = torch.linalg.vector_norm(offset, dim=-1, keepdim=True) ** -3
            accelerations[i] = accelerations[i] + self.masses[j] * offset * inverse_cube
            accelerations[j] = accelerations[j] - self.masses[i] * offset * inverse_cube
        return torch.cat([K2 * velocities] + [K1 * a for a in accelerations], dim=-1)


class NeuralVectorField(nn.Module):
    """Black-box baseline: an MLP dy/dt = f(y) on the 18-dim state, no physics."""

    def __init__(self, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(18, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, 18)).double()
        with torch.no_grad():
            for parameter in self.net.parameters():
                bound = 1.0 / math.sqrt(parameter.shape[-1])
                parameter.uniform_(-bound, bound, generator=generator)

    def forward(self, t: float, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)


@torch.no_grad()
def true_positions(times: torch.Tensor) -> torch.Tensor:
    """Positions (len(times), 9) of the true system from a tight dopri5 solve."""
    states = aca.odeint(ThreeBodyGravity(torch.tensor(TRUE_MASSES)), initial_state(), times,
                        solver="dopri5", gradient="aca", rtol=DATA_TOL, atol=DATA_TOL)
    return states[:, :9]


def observation_times(T: float, count: int, offset: float = 0.0) -> torch.Tensor:
    """``count`` equally spaced times on [0, T], shifted by ``offset`` steps (the authors'
    test grid: linspace(0, 2, 2000) shifted by half a step)."""
    times = torch.linspace(0.0, T, count, dtype=torch.float64)
    return times + offset * (times[1] - times[0]) if count > 1 else times


def best_by_training_loss(history: list[dict[str, float]]) -> dict[str, float]:
    """The masses of the model the authors keep: the epoch of the lowest unweighted training
    sum of squared position errors (its loss is computed before that epoch's update, so
    the masses logged with it are that model's). Empty for the neural model."""
    epochs = [entry for entry in history if "train_sse" in entry and "train_m1" in entry]
    if not epochs:
        return {}
    best = min(epochs, key=lambda entry: entry["train_sse"])
    masses = [best[f"train_m{index}"] for index in (1, 2, 3)]
    return {"best_epoch": best["epoch"], "best_train_sse": best["train_sse"],
            **{f"best_m{index + 1}": mass for index, mass in enumerate(masses)},
            "best_mass_error": max(abs(m - t) for m, t in zip(masses, TRUE_MASSES, strict=True))}


class ThreeBody(Task):
    """Learn the masses (or a black-box field) from observed positions on [0, T_train]."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        check_names([settings.model], MODELS, "task.model")
        self.dtype = DTYPES[check_names([settings.dtype], DTYPES, "task.dtype")[0]]

    def datasets(self) -> tuple[Dataset, Dataset]:
        """One trajectory each; a batch is (times[None], positions[None])."""
        task = self.settings
        train_times = observation_times(float(task.T_train), int(task.n_train))
        test_times = observation_times(float(task.T_test), int(task.n_test),
                                       float(task.test_offset))
        return tuple(TensorDataset(times[None].to(self.dtype),
                                   true_positions(times)[None].to(self.dtype))
                     for times in (train_times, test_times))

    def model(self) -> nn.Module:
        generator = torch.Generator().manual_seed(self.seed)
        if self.settings.model == "neural":
            return NeuralVectorField(int(self.settings.hidden), generator).to(self.dtype)
        low, high = self.settings.mass_init_range
        masses = low + (high - low) * torch.rand(3, generator=generator, dtype=torch.float64)
        return ThreeBodyGravity(masses).to(self.dtype)

    def predict(self, model: nn.Module, times: torch.Tensor) -> torch.Tensor:
        """Predicted positions at ``times`` from the true initial state."""
        y0 = initial_state().to(times)
        return aca.odeint(model, y0, times, **self.ode)[:, :9]

    def _mass_metrics(self, model: nn.Module) -> dict[str, float]:
        if getattr(model, "masses", None) is None:  # the neural model has no masses
            return {}
        masses = model.masses.detach().cpu().tolist()
        metrics = {f"m{index + 1}": mass for index, mass in enumerate(masses)}
        metrics["mass_error"] = max(abs(m - t) for m, t in zip(masses, TRUE_MASSES, strict=True))
        return metrics

    def loss(self, model: nn.Module, batch: Any,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The authors' loss: sum_t decay^t |pos(t) - observed(t)|^2 / n_points."""
        times, observed = batch[0][0], batch[1][0]
        squared = ((self.predict(model, times) - observed) ** 2).sum(-1)
        loss = (squared * float(self.settings.loss_decay) ** times).sum() / len(times)
        return loss, {"rmse": squared.mean().sqrt().item(), "sse": squared.sum().item(),
                      **self._mass_metrics(model)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Any, step: int) -> dict[str, float]:
        return self.extrapolation(model, batch[0][0], batch[1][0])

    @torch.no_grad()
    def extrapolation(self, model: nn.Module, times: torch.Tensor,
                      observed: torch.Tensor) -> dict[str, float]:
        """Position RMSE over [0, T_test] and over (T_train, T_test] alone; ``loss`` is the
        training loss formula on the test window, weighted by ``test_loss_decay``^t."""
        squared = ((self.predict(model, times) - observed) ** 2).sum(-1)
        beyond = times > float(self.settings.T_train)
        loss = (squared * float(self.settings.test_loss_decay) ** times).sum() / len(times)
        return {"loss": loss.item(), "extrap_rmse": squared.mean().sqrt().item(),
                "extrap_rmse_beyond": squared[beyond].mean().sqrt().item(),
                **self._mass_metrics(model)}

    def report(self, model: nn.Module, data: tuple[Dataset, Dataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        """The run's record (masses, extrapolation errors, history totals, the observed
        window and the true and predicted curves on the test window, 201 points) and
        ``three_body_<model>_<method>.png``."""
        task = self.settings
        device = next(model.parameters()).device
        times, truth = data[1][0]
        with torch.no_grad():
            predicted = self.predict(model, times.to(device)).cpu()
        record = {"method": self.ode["gradient"], "model": task.model,
                  "solver": self.ode["solver"], "rtol": self.ode["rtol"],
                  "atol": self.ode["atol"], "interpolate": self.ode["interpolate"],
                  "dtype": task.dtype, **self._mass_metrics(model),
                  **self.extrapolation(model, times.to(device), truth.to(device)),
                  **best_by_training_loss(history), **history_totals(history)}
        kept = torch.linspace(0, len(times) - 1, min(len(times), 201)).round().long()
        curves = {"times": times[kept].tolist(), "truth": truth[kept].tolist(),
                  "predicted": predicted[kept].tolist()}
        name = f"{record['model']}_{record['method']}"
        figures.three_body_orbits({name: curves}, float(task.T_train), TRUE_MASSES,
                                  Path(out_dir) / f"three_body_{name}.png")
        return {**record, "T_train": float(task.T_train), "true_masses": list(TRUE_MASSES),
                "curves": curves}
