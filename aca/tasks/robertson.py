"""Robertson's chemical kinetics (issue 30): a stiff problem whose three rate constants
are learned from noisy observations, with an implicit solver.

y1' = -k1 y1 + k3 y2 y3,  y2' = k1 y1 - k3 y2 y3 - k2 y2²,  y3' = k2 y2²; the true
k = (0.04, 3e7, 1e4) span nine orders of magnitude, so the model learns log10 k. y2 stays
near 1e-5 while y1 and y3 are of order 1: states are observed and compared scaled by
(1, 1e4, 1). Observation times are log-spaced, as the kinetics run on time scales from
1e-4 to 1e5.

* ``RobertsonLearning`` (trained): fit log10 k to noisy trajectories from random initial
  states (y1(0) = a, y3(0) = 1 - a).
* ``RobertsonGradients`` (analysis): the loss's gradient at the initial guess with each
  gradient method and solver, against central differences of tight solves, with its cost;
  or the error that stopped it (the adjoint's reverse solve of a stiff problem fails, an
  explicit solver runs out of steps).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import aca
from aca import provenance
from aca.options import is_number
from aca.report import figures
from aca.report.format import markdown_table, write_csv, write_json
from aca.task import Analysis, Task
from aca.tasks.base import check_names, check_setting, history_totals, is_count

TRUE_RATES = (0.04, 3.0e7, 1.0e4)
SCALE = (1.0, 1.0e4, 1.0)      # what the states are observed and compared in
DATA_ODE = {"solver": "kvaerno5", "rtol": 1e-10, "atol": 1e-14}   # the observations' solves
REFERENCE_ODE = {"solver": "kvaerno5", "rtol": 1e-11, "atol": 1e-15}  # the gradient reference
DIFFERENCE_STEP = 1e-5         # central differences in log10 k


class Robertson(nn.Module):
    """Robertson's kinetics with trainable ``log10 k`` (float64)."""

    def __init__(self, rates: Sequence[float]) -> None:
        super().__init__()
        self.log_rates = nn.Parameter(torch.tensor(rates, dtype=torch.float64).log10())

    @property
    def rates(self) -> torch.Tensor:
        return 10.0 ** self.log_rates

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = self.rates.unbind()
        y1, y2, y3 = y.unbind(-1)
        return torch.stack((-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                            k2 * y2**2), dim=-1)


def observation_times(settings: DictConfig) -> torch.Tensor:
    """0, then ``n_points - 1`` log-spaced times from 10**log10_t[0] to 10**log10_t[1]."""
    low, high = (float(v) for v in settings.log10_t)
    return torch.cat((torch.zeros(1, dtype=torch.float64),
                      torch.logspace(low, high, int(settings.n_points) - 1, dtype=torch.float64)))


def initial_states(count: int, low: float, generator: torch.Generator) -> torch.Tensor:
    """``(a, 0, 1 - a)`` with ``a ~ U(low, 1)``: the species conserve their sum."""
    a = low + (1.0 - low) * torch.rand(count, generator=generator, dtype=torch.float64)
    return torch.stack((a, torch.zeros_like(a), 1.0 - a), dim=-1)


def scaled_mse(predicted: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the states scaled by ``SCALE`` (``observed`` is scaled)."""
    scale = torch.tensor(SCALE, dtype=predicted.dtype, device=predicted.device)
    return ((predicted * scale - observed) ** 2).mean()


def check_settings(settings: DictConfig) -> None:
    check_setting(settings, "n_points", lambda value: is_count(value, 2), "an integer >= 2")
    check_setting(settings, "log10_t", lambda value: len(value) == 2 and all(map(is_number, value))
                  and value[0] < value[1], "[low, high] with low < high (log10 of the times)")
    check_setting(settings, "y1_low", lambda value: is_number(value) and 0 < value <= 1,
                  "a number in (0, 1]: the least y1(0)")
    check_setting(settings, "noise", lambda value: is_number(value) and value >= 0,
                  "a standard deviation >= 0 (of the scaled states)")
    check_setting(settings, "rates_init", lambda value: len(value) == 3
                  and all(is_number(v) and v > 0 for v in value), "three positive rates")


def observations(settings: DictConfig, count: int, generator: torch.Generator
                 ) -> TensorDataset:
    """``count`` initial states and their noisy scaled states at the observation times."""
    y0 = initial_states(count, float(settings.y1_low), generator)
    with torch.no_grad():
        clean = aca.odeint(Robertson(TRUE_RATES), y0, observation_times(settings), **DATA_ODE)
    scaled = clean.transpose(0, 1) * torch.tensor(SCALE, dtype=torch.float64)
    noise = float(settings.noise) * torch.randn(scaled.shape, generator=generator,
                                                dtype=torch.float64)
    return TensorDataset(y0, scaled + noise)


def rate_errors(model: Robertson) -> dict[str, float]:
    """Each learned rate's relative error."""
    return {f"k{i + 1}_rel_error": abs(rate / true - 1.0)
            for i, (rate, true) in enumerate(zip(model.rates.tolist(), TRUE_RATES))}


class RobertsonLearning(Task):
    """Fit log10 k to noisy observed trajectories (full batch)."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        check_settings(settings)
        for key in ("n_train", "n_test"):
            check_setting(settings, key, lambda value: is_count(value, 1), "an integer >= 1")
        self.times = observation_times(settings)

    def datasets(self) -> tuple[Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.seed)
        return (observations(self.settings, int(self.settings.n_train), generator),
                observations(self.settings, int(self.settings.n_test), generator))

    def model(self) -> nn.Module:
        return Robertson(list(self.settings.rates_init))

    def loss(self, model: nn.Module, batch: Any,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        y0, observed = batch
        predicted = aca.odeint(model, y0, self.times.to(y0.device), **self.ode).transpose(0, 1)
        loss = scaled_mse(predicted, observed)
        rates = getattr(model, "module", model)
        return loss, {"mse": loss.item(), **{f"k{i + 1}": v for i, v in
                                             enumerate(rates.rates.tolist())},
                      **rate_errors(rates)}

    def report(self, model: nn.Module, data: tuple[Dataset, Dataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        """The run's record (method, solver, the learned rates and their errors, history
        totals) and ``robertson_fit_<method>_<solver>_rtol<rtol>.png``: three test
        trajectories, observed and fitted."""
        record = {"method": self.ode["gradient"], "solver": self.ode["solver"],
                  "rtol": self.ode["rtol"], "atol": self.ode["atol"],
                  "rates_true": list(TRUE_RATES), "rates_init": list(self.settings.rates_init),
                  "rates": model.rates.tolist(), **rate_errors(model),
                  **history_totals(history)}
        y0, observed = data[1][: min(3, len(data[1]))]
        with torch.no_grad():
            fitted = aca.odeint(model, y0, self.times, **{**self.ode, "gradient": "aca"})
        fitted = fitted.transpose(0, 1) * torch.tensor(SCALE, dtype=torch.float64)
        name = f"{record['method']}_{record['solver']}_rtol{record['rtol']:g}"
        k = ", ".join(f"{v:.3g}" for v in record["rates"])
        figures.trajectory_fit(self.times, fitted, observed,
                               f"Robertson fit ({record['method']}): k = ({k})",
                               Path(out_dir) / f"robertson_fit_{name}.png",
                               components=((0, "y1"), (1, "1e4 · y2"), (2, "y3")),
                               log_time=True)
        return record


def loss_gradient(method: str, solver: str, rtol: float, atol: float,
                  data: TensorDataset, times: torch.Tensor, rates: Sequence[float],
                  max_steps: int) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The loss's gradient w.r.t. log10 k with one method and solver, its cost (a failed
    solve's included), or (None and) the one-line error that stopped it; ``max_steps``
    per solve bounds a solve that cannot succeed (the adjoint's reverse solve shrinks its
    steps for thousands of attempts before it fails)."""
    model = Robertson(rates)
    y0, observed = data.tensors
    start = time.perf_counter()
    with aca.track_stats() as stats:
        try:
            predicted = aca.odeint(model, y0, times, solver=solver, rtol=rtol, atol=atol,
                                   gradient=method, max_steps=max_steps).transpose(0, 1)
            scaled_mse(predicted, observed).backward()
            gradient, error = model.log_rates.grad.detach().clone(), ""
        except aca.ODEError as failure:
            gradient, error = None, f"{type(failure).__name__}: {str(failure).splitlines()[0]}"
    counts = {"steps": stats.accepted, "rejected": stats.rejected,
              "nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward,
              "jacobians": stats.jacobians}
    if error and not stats.nfe_forward:  # the forward solve failed: its work is not counted
        counts = dict.fromkeys(counts)
    return gradient, {"time_s": time.perf_counter() - start, **counts, "error": error}


def difference_gradient(data: TensorDataset, times: torch.Tensor,
                        rates: Sequence[float]) -> torch.Tensor:
    """Central differences of the loss in log10 k, each solve at ``REFERENCE_ODE``."""
    y0, observed = data.tensors
    log_rates = torch.tensor(rates, dtype=torch.float64).log10()

    def loss(shift: torch.Tensor) -> float:
        with torch.no_grad():
            predicted = aca.odeint(Robertson((10.0 ** (log_rates + shift)).tolist()), y0, times,
                                   **REFERENCE_ODE).transpose(0, 1)
        return scaled_mse(predicted, observed).item()

    steps = DIFFERENCE_STEP * torch.eye(3, dtype=torch.float64)
    return torch.tensor([(loss(e) - loss(-e)) / (2 * DIFFERENCE_STEP) for e in steps],
                        dtype=torch.float64)


class RobertsonGradients(Analysis):
    """Each method's and solver's gradient of the training loss at the initial rates."""

    def analyze(self, out_dir: Path) -> dict:
        task = self.settings
        check_settings(task)
        for key in ("n_train", "max_steps"):
            check_setting(task, key, lambda value: is_count(value, 1), "an integer >= 1")
        methods = check_names(task.methods, aca.GRADIENTS, "task.methods")
        solvers = check_names(task.solvers, aca.SOLVERS, "task.solvers")
        data = observations(task, int(task.n_train), torch.Generator().manual_seed(0))
        times = observation_times(task)
        rates = list(task.rates_init)
        reference = difference_gradient(data, times, rates)
        rows = []
        settings = [(solver, float(rtol), method) for solver in solvers
                    for rtol in task.tolerances for method in methods]
        for solver, rtol, method in self.progress(settings, desc="robertson gradients"):
            gradient, info = loss_gradient(method, solver, rtol, rtol * float(task.atol_per_rtol),
                                           data, times, rates, int(task.max_steps))
            error = (None if gradient is None else
                     (torch.linalg.vector_norm(gradient - reference)
                      / torch.linalg.vector_norm(reference)).item())
            rows.append({"solver": solver, "rtol": rtol, "method": method,
                         "grad_rel_error": error, **info})
        summary = self._summary(rows, reference, task)
        print(summary)
        out_dir = Path(out_dir)
        keys = list(rows[0])
        write_csv(out_dir / "robertson_gradients.csv", keys,
                  [[row[key] for key in keys] for row in rows])
        (out_dir / "robertson_gradients.md").write_text(summary)
        write_json(out_dir / "robertson_gradients.json",
                   {"rates_init": rates, "reference": reference.tolist(), "rows": rows,
                    "provenance": provenance.stamp()})
        return {"rows": rows}

    @staticmethod
    def _summary(rows: list[dict], reference: torch.Tensor, task: DictConfig) -> str:
        table = [[row["solver"], row["rtol"], row["method"],
                  "failed" if row["grad_rel_error"] is None else row["grad_rel_error"],
                  *(("–",) * 3 if row["steps"] is None else
                    (row["steps"], row["jacobians"], row["nfe_forward"] + row["nfe_backward"])),
                  row["time_s"], row["error"] or "–"] for row in rows]
        return (
            "# Robertson: the loss's gradient with each gradient method\n\n"
            f"Loss: the scaled MSE of the learning task's {int(task.n_train)} training "
            f"trajectories, at the initial rates k = {tuple(task.rates_init)}; gradient "
            "w.r.t. log10 k; error: relative 2-norm error against central differences "
            f"(step {DIFFERENCE_STEP:g}) of kvaerno5 solves at rtol "
            f"{REFERENCE_ODE['rtol']:g} ({', '.join(f'{v:.6g}' for v in reference.tolist())}). "
            f"atol = rtol x {float(task.atol_per_rtol):g}; at most {int(task.max_steps)} "
            "steps per solve. A failed row keeps the error that stopped it and the work done "
            "until then (–: the forward solve failed, its work is not counted). steps: the "
            "forward solve's accepted steps; Jacobians and NFE: forward and backward.\n\n"
            + markdown_table(["solver", "rtol", "method", "grad rel error", "steps",
                              "Jacobians", "NFE", "time (s)", "error"], table))
