"""Three-body problem (paper experiment 5).

Three point masses under Newtonian gravity in the authors' non-dimensional
units. The positions observed on [0, T_train] are the data; the model is either
the physical vector field with the three masses as its only parameters
(``task.model: physics``) or a black-box neural ODE, an MLP on the 18-dim state
(``task.model: neural``). Both start from the true initial state and are
scored by how well they extrapolate on [0, T_test].
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import aca
from aca import provenance
from aca.tasks._results import (
    check_names,
    history_totals,
    markdown_table,
    publish,
    pyplot,
    write_csv,
    write_json,
)
from aca.tasks.base import Task

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
PAPER_MASSES = (1.099986, 1.100022, 0.899978)   # the authors' recovered masses (ACA)
MODELS = ("physics", "neural")
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


def observation_times(T: float, count: int) -> torch.Tensor:
    return torch.linspace(0.0, T, count, dtype=torch.float64)


class ThreeBody(Task):
    """Learn the masses (or a black-box field) from observed positions on [0, T_train]."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        check_names([cfg.task.model], MODELS, "task.model")

    @functools.cache  # noqa: B019 (one task object per run; the report reuses the data)
    def datasets(self) -> tuple[Dataset, Dataset]:
        """One trajectory each; a batch is (times[None], positions[None])."""
        task = self.cfg.task
        train_times = observation_times(float(task.T_train), int(task.n_train))
        test_times = observation_times(float(task.T_test), int(task.n_test))
        return (TensorDataset(train_times[None], true_positions(train_times)[None]),
                TensorDataset(test_times[None], true_positions(test_times)[None]))

    def model(self) -> nn.Module:
        generator = torch.Generator().manual_seed(int(self.cfg.seed))
        if self.cfg.task.model == "neural":
            return NeuralVectorField(int(self.cfg.task.hidden), generator)
        low, high = self.cfg.task.mass_init_range
        masses = low + (high - low) * torch.rand(3, generator=generator, dtype=torch.float64)
        return ThreeBodyGravity(masses)

    def predict(self, model: nn.Module, times: torch.Tensor) -> torch.Tensor:
        """Predicted positions at ``times`` from the true initial state."""
        y0 = initial_state().to(times.device)
        return aca.odeint(model, y0, times, **self.ode)[:, :9]

    def _mass_metrics(self, model: nn.Module) -> dict[str, float]:
        if getattr(model, "masses", None) is None:  # the neural model has no masses
            return {}
        masses = model.masses.detach().cpu().tolist()
        metrics = {f"m{index + 1}": mass for index, mass in enumerate(masses)}
        metrics["mass_error"] = max(abs(m - t) for m, t in zip(masses, TRUE_MASSES, strict=True))
        return metrics

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The authors' loss: sum_t decay^t |pos(t) - observed(t)|^2 / n_points."""
        times, observed = batch[0][0], batch[1][0]
        squared = ((self.predict(model, times) - observed) ** 2).sum(-1)
        loss = (squared * float(self.cfg.task.loss_decay) ** times).sum() / len(times)
        return loss, {"rmse": squared.mean().sqrt().item(), **self._mass_metrics(model)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Extrapolation: position RMSE over [0, T_test] and over (T_train, T_test] alone;
        ``loss`` is the training loss formula on the test window."""
        times, observed = batch[0][0], batch[1][0]
        squared = ((self.predict(model, times) - observed) ** 2).sum(-1)
        beyond = times > float(self.cfg.task.T_train)
        loss = (squared * float(self.cfg.task.loss_decay) ** times).sum() / len(times)
        return {"loss": loss.item(), "extrap_rmse": squared.mean().sqrt().item(),
                "extrap_rmse_beyond": squared[beyond].mean().sqrt().item(),
                **self._mass_metrics(model)}

    def report(self, model: nn.Module, history: list[dict[str, float]], out_dir: Path) -> dict:
        task = self.cfg.task
        device = next(model.parameters()).device
        _, test = self.datasets()
        times, truth = test[0]
        with torch.no_grad():
            predicted = self.predict(model, times.to(device)).cpu()
        record = {"method": self.cfg.method.name, "model": task.model,
                  "solver": self.ode["solver"], "rtol": self.ode["rtol"],
                  "atol": self.ode["atol"], "interpolate": self.ode["interpolate"],
                  **self._mass_metrics(model),
                  **self.evaluate(model, (times[None].to(device), truth[None].to(device))),
                  **history_totals(history)}
        kept = torch.linspace(0, len(times) - 1, min(len(times), 201)).round().long()
        curves = {"times": times[kept].tolist(), "truth": truth[kept].tolist(),
                  "predicted": predicted[kept].tolist()}
        name = f"{record['model']}_{record['method']}"
        out_dir = Path(out_dir)
        plot_trajectories({name: curves}, float(task.T_train), out_dir / f"three_body_{name}.png")
        saved = {**record, "curves": curves, "provenance": provenance.stamp()}
        write_json(out_dir / f"three_body_{name}.json", saved)
        if task.get("results_dir"):
            publish(out_dir, task.results_dir, [f"three_body_{name}.png"])
            write_json(Path(task.results_dir) / "runs" / f"{name}.json", saved)
            write_summary(Path(task.results_dir), float(task.T_train))
        return record


def plot_trajectories(runs: dict[str, dict], T_train: float, path: Path) -> None:
    """Per body, the x-y projection of the true orbit on [0, T_test] and each
    run's prediction; the training window ends at the marked point."""
    plt = pyplot()
    first = next(iter(runs.values()))
    times = torch.tensor(first["times"])
    truth = torch.tensor(first["truth"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for body, axis in enumerate(axes):
        columns = slice(3 * body, 3 * body + 2)
        axis.plot(*truth[:, columns].T.numpy(), color="black", lw=2.5, label="true orbit")
        boundary = int(torch.searchsorted(times, torch.tensor(T_train)).clamp(max=len(times) - 1))
        axis.plot(*truth[boundary, columns].numpy(), "k*", ms=12,
                  label=f"end of observed window t={T_train:g}")
        for name, run in runs.items():
            predicted = torch.tensor(run["predicted"])
            axis.plot(*predicted[:, columns].T.numpy(), "--", lw=1.5, label=f"predicted: {name}")
        axis.set_xlabel("x (length unit 5.326e12 m)")
        axis.set_ylabel("y (length unit 5.326e12 m)")
        axis.set_title(f"Body {body + 1} (true mass {TRUE_MASSES[body]:g})")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Three-body: true vs predicted positions on [0, {times[-1].item():g}] "
                 "(time unit 40.75 years), x-y projection")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(directory: Path, T_train: float) -> None:
    """Rebuild three_body.md/.csv and the combined figure from ``directory/runs``."""
    records = [json.loads(path.read_text()) for path in sorted((directory / "runs").glob("*.json"))]
    keys = ["model", "method", "m1", "m2", "m3", "mass_error", "extrap_rmse",
            "extrap_rmse_beyond", "total_nfe_forward", "total_nfe_backward", "total_time_s",
            "epochs", "solver", "rtol", "atol"]
    rows = [[record.get(key, "-") for key in keys] for record in records]
    write_csv(directory / "three_body.csv", keys, rows)
    shown = [[f"{value:.6f}" if key in ("m1", "m2", "m3") and isinstance(value, float)
              else value for key, value in zip(keys, row, strict=True)] for row in rows]
    paper = ", ".join(f"{mass:.6f}" for mass in PAPER_MASSES)
    (directory / "three_body.md").write_text(
        "# Three-body problem: learn the masses, extrapolate\n\n"
        f"True masses {TRUE_MASSES}; the paper's ACA run recovers ({paper}).\n"
        "mass_error = max |m_i - true m_i|; extrap_rmse = position RMSE over the test window, "
        "extrap_rmse_beyond = over the part after the observed window.\n\n"
        + markdown_table(keys, shown))
    plot_trajectories({f"{record['model']}, {record['method']}": record["curves"]
                       for record in records}, T_train, directory / "three_body_trajectories.png")
