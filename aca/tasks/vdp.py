"""Van der Pol oscillator (paper experiment 2).

x'' = mu (1 - x^2) x' - x, as the first-order system y = (x, x').

* ``VanDerPolReconstruction`` (analysis): solve forward from x(0)=2, x'(0)=0 to
  t=T, then backward from the end state, as the adjoint method's reverse pass
  does. Reverse time is unstable here (the limit cycle repels, the origin
  attracts), so the reverse trajectory drifts from x(0). Reported per solver and
  tolerance: the reverse-time error at t=0, and each gradient method's error in
  d|y(T)|^2/d(y0, mu) against a tight-tolerance ACA reference (ACA and naive
  reuse the forward states and do not drift; the adjoint does).
* ``VanDerPolLearning`` (trained): recover mu from observed trajectories.
"""

from __future__ import annotations

import math
import time
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
from aca.report.paper import VDP_REVERSE_X
from aca.task import Analysis, Task
from aca.tasks.base import check_names, check_setting, history_totals, is_count

REFERENCE_TOL = 1e-12   # the gradient reference of the reconstruction analysis
DATA_TOL = 1e-10        # the solves that make observed trajectories


class VanDerPol(nn.Module):
    """The van der Pol vector field with a trainable damping mu; y[..., 0] = x, y[..., 1] = x'."""

    def __init__(self, mu: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))

    def forward(self, t: float, y: torch.Tensor) -> torch.Tensor:
        x, velocity = y[..., 0], y[..., 1]
        return torch.stack((velocity, self.mu * (1.0 - x**2) * velocity - x), dim=-1)


@torch.no_grad()
def simulate(mu: float, y0: torch.Tensor, times: torch.Tensor, **ode: Any) -> torch.Tensor:
    """States at ``times`` (no gradient); defaults to a tight dopri5 solve."""
    options = {"solver": "dopri5", "rtol": DATA_TOL, "atol": DATA_TOL, **ode,
               "gradient": "aca"}
    return aca.odeint(VanDerPol(mu), y0, times, **options)


def reconstruction(mu: float, y0: torch.Tensor, T: float, n_points: int,
                   ode: dict[str, Any]) -> dict[str, Any]:
    """Forward solve 0 -> T, then reverse solve T -> 0 from the forward end state,
    as the adjoint's backward pass does. Every solve steps freely (its only output
    time is its end), so the points of the reverse curve at ``n_points`` times are
    separate solves from T; the curve stops where a solve blew up. Returns the
    reverse curve and the reverse-time error at t=0 (inf if it blew up)."""
    times = torch.linspace(0.0, T, n_points, dtype=torch.float64)
    end = simulate(mu, y0, times[[0, -1]], **ode)[-1]
    reverse = [end]
    for t in times.flip(0)[1:]:
        try:
            reverse.append(simulate(mu, end, torch.stack((times[-1], t)), **ode)[-1])
        except aca.ODEError:
            break
    reverse_times = times.flip(0)[: len(reverse)]
    error = (torch.linalg.vector_norm(reverse[-1] - y0).item() if len(reverse) == n_points
             else math.inf)
    return {"times": reverse_times, "reverse": torch.stack(reverse), "error": error}


def end_state_gradient(method: str, mu: float, y0: torch.Tensor, T: float,
                       ode: dict[str, Any]) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """Gradient of |y(T)|^2 with respect to (x0, x'0, mu) with one gradient method,
    plus NFE and time; the gradient is None when the backward solve failed."""
    func = VanDerPol(mu)
    y_init = y0.clone().requires_grad_(True)
    times = torch.tensor([0.0, T], dtype=torch.float64)
    start = time.perf_counter()
    with aca.track_stats() as stats:
        try:
            y_end = aca.odeint(func, y_init, times, **{**ode, "gradient": method})[-1]
            (y_end**2).sum().backward()
            gradient = torch.cat((y_init.grad, func.mu.grad.reshape(1)))
        except aca.ODEError:
            gradient = None
    if gradient is not None and not torch.isfinite(gradient).all():
        gradient = None
    info = {"nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward,
            "time_s": time.perf_counter() - start}
    return gradient, info


class VanDerPolReconstruction(Analysis):
    """Forward/reverse reconstruction and gradient error per method (analysis)."""

    def analyze(self, out_dir: Path) -> dict:
        task = self.settings
        mu, T = float(task.mu), float(task.T)
        y0 = torch.tensor([float(task.x0), float(task.v0)], dtype=torch.float64)
        solvers = check_names(task.solvers, aca.SOLVERS, "task.solvers")
        methods = check_names(task.methods, aca.GRADIENTS, "task.methods")
        tolerances = [float(tol) for tol in task.tolerances]

        reference, _ = end_state_gradient(
            "aca", mu, y0, T, {"solver": "dopri5", "rtol": REFERENCE_TOL, "atol": REFERENCE_TOL})
        rows = []
        settings = [(solver, tol) for solver in solvers for tol in tolerances]
        for solver, tol in self.progress(settings, desc="vdp solvers x tolerances"):
            ode = {"solver": solver, "rtol": tol, "atol": tol}
            recon = reconstruction(mu, y0, T, 2, ode)
            row: dict[str, Any] = {"solver": solver, "tol": tol, "reverse_error": recon["error"]}
            for method in methods:
                gradient, info = end_state_gradient(method, mu, y0, T, ode)
                row[f"grad_rel_err_{method}"] = (
                    math.inf if gradient is None
                    else (torch.linalg.vector_norm(gradient - reference)
                          / torch.linalg.vector_norm(reference)).item())
                row[f"nfe_bwd_{method}"] = info["nfe_backward"]
            rows.append(row)

        figure_settings = [(float(rtol), float(atol)) for rtol, atol in task.figure_tolerances]
        figure_runs = {(rtol, atol): reconstruction(mu, y0, T, int(task.n_points),
                                                    {**self.ode, "rtol": rtol, "atol": atol})
                       for rtol, atol in self.progress(figure_settings, desc="vdp figure curves")}
        reverse_starts = [{"solver": self.ode["solver"], "rtol": rtol, "atol": atol,
                           "x_rev0": (run["reverse"][-1, 0].item()
                                      if math.isfinite(run["error"]) else math.inf)}
                          for (rtol, atol), run in figure_runs.items()]
        figure_times = torch.linspace(0.0, T, int(task.n_points), dtype=torch.float64)
        reference = simulate(mu, y0, figure_times)
        summary = self._summary(rows, methods, mu, T, y0) + self._reverse_starts(reverse_starts)
        print(summary)
        keys = list(rows[0])
        out_dir = Path(out_dir)
        write_csv(out_dir / "vdp_reconstruction.csv", keys, [[row[key] for key in keys]
                                                             for row in rows])
        (out_dir / "vdp_reconstruction.md").write_text(summary)
        write_json(out_dir / "vdp_reconstruction.json", {"mu": mu, "T": T, "y0": y0.tolist(),
                                                         "rows": rows,
                                                         "reverse_starts": reverse_starts,
                                                         "provenance": provenance.stamp()})
        figures.vdp_reconstruction(figure_runs, reference, figure_times,
                                   out_dir / "vdp_reconstruction.png", mu, self.ode["solver"])
        figures.vdp_errors(rows, solvers, methods, out_dir / "vdp_reconstruction_errors.png")
        return {"rows": rows}

    @staticmethod
    def _reverse_starts(starts: list[dict]) -> str:
        table = [[row["solver"], row["rtol"], row["atol"], row["x_rev0"], VDP_REVERSE_X]
                 for row in starts]
        return ("\n## Where the reverse solve ends, beside the paper's figure\n\n"
                "x_rev(0) of the reverse solve from the end state (x(0) = 2); the paper's "
                "figure (MATLAB's ode45, defaults rtol 1e-3 / atol 1e-6, mu not stated) ends "
                "near 0.5 (docs/paper.md, exp. 2).\n\n"
                + markdown_table(["solver", "rtol", "atol", "x_rev(0)", "paper x_rev(0) (≈)"],
                                 table))

    def _summary(self, rows: list[dict], methods: list[str], mu: float, T: float,
                 y0: torch.Tensor) -> str:
        headers = ["solver", "rtol=atol", "reverse error |y_rev(0)-y(0)|"] + \
            [f"grad rel err {method}" for method in methods] + \
            [f"NFE bwd {method}" for method in methods]
        table = [[row["solver"], row["tol"], row["reverse_error"]]
                 + [row[f"grad_rel_err_{method}"] for method in methods]
                 + [row[f"nfe_bwd_{method}"] for method in methods] for row in rows]
        return (
            f"# Van der Pol reconstruction: mu = {mu:g}, y(0) = ({y0[0]:g}, {y0[1]:g}), "
            f"T = {T:g}\n\n"
            "Reverse error: forward solve 0 -> T, reverse solve T -> 0 from the end state "
            "with the same solver and tolerance (what the adjoint method does); inf = the "
            "reverse solve blew up. Gradient error: relative 2-norm error of "
            "d|y(T)|^2/d(x0, x'0, mu) against ACA with dopri5 at rtol = atol = "
            f"{REFERENCE_TOL:g}; inf = the backward pass failed.\n\n"
            + markdown_table(headers, table)
        )


class VanDerPolLearning(Task):
    """Fit mu to noisy observations of trajectories from random initial states."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        check_setting(settings, "T", lambda value: is_number(value) and value > 0,
                      "a positive observation window")
        check_setting(settings, "n_points", lambda value: is_count(value, 2), "an integer >= 2 "
                      "(the initial state and at least one observation to fit)")
        check_setting(settings, "noise", lambda value: is_number(value) and value >= 0,
                      "a standard deviation >= 0")
        for key in ("n_train", "n_test"):
            check_setting(settings, key, lambda value: is_count(value, 1), "an integer >= 1")
        self.times = torch.linspace(0.0, float(settings.T), int(settings.n_points),
                                    dtype=torch.float64)

    def _trajectories(self, count: int, generator: torch.Generator) -> TensorDataset:
        task = self.settings
        y0 = (2 * torch.rand(count, 2, generator=generator, dtype=torch.float64) - 1) \
            * float(task.init_range)
        clean = simulate(float(task.mu), y0, self.times).transpose(0, 1)
        noise = float(task.noise) * torch.randn(clean.shape, generator=generator,
                                                dtype=torch.float64)
        return TensorDataset(y0, clean + noise)

    def datasets(self) -> tuple[Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.seed)
        task = self.settings
        return (self._trajectories(int(task.n_train), generator),
                self._trajectories(int(task.n_test), generator))

    def model(self) -> nn.Module:
        return VanDerPol(float(self.settings.mu_init))

    def loss(self, model: nn.Module, batch: Any,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        y0, observed = batch
        predicted = aca.odeint(model, y0, self.times.to(y0.device), **self.ode).transpose(0, 1)
        loss = ((predicted - observed) ** 2).mean()
        mu = getattr(model, "module", model).mu.item()
        return loss, {"mse": loss.item(), "mu": mu,
                      "mu_error": abs(mu - float(self.settings.mu))}

    def report(self, model: nn.Module, data: tuple[Dataset, Dataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        """The run's record (method, solver, mu and its error, history totals) and
        ``vdp_fit_<method>_<solver>_rtol<rtol>.png``: three test trajectories and the fit."""
        task = self.settings
        mu = model.mu.item()
        record = {"method": self.ode["gradient"], "solver": self.ode["solver"],
                  "rtol": self.ode["rtol"], "atol": self.ode["atol"],
                  "interpolate": self.ode["interpolate"], "mu_true": float(task.mu),
                  "mu_init": float(task.mu_init), "mu": mu, "mu_error": abs(mu - float(task.mu)),
                  **history_totals(history)}
        y0, observed = data[1][: min(3, len(data[1]))]
        with torch.no_grad():
            fitted = aca.odeint(model, y0.to(model.mu.device), self.times.to(model.mu.device),
                                **{**self.ode, "gradient": "aca"}).transpose(0, 1).cpu()
        name = f"{record['method']}_{record['solver']}_rtol{record['rtol']:g}"
        figures.trajectory_fit(self.times, fitted, observed,
                        f"Van der Pol fit ({self.ode['gradient']}): μ = {mu:.4f}, "
                        f"true {float(task.mu):g}", Path(out_dir) / f"vdp_fit_{name}.png")
        return record
