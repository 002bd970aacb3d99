"""Toy analytic gradient (paper experiment 1).

dz/dt = alpha * z, z(0) = z0, loss L = z(T)^2. The exact gradients are
dL/dz0 = 2 z0 exp(2 alpha T) and dL/dalpha = 2 z0^2 T exp(2 alpha T), so each
gradient method's error is measured against the closed form: over T (the
paper's figure, with the configured solver) and over tolerances (every solver
in ``task.solvers`` at ``task.T_report``). Everything runs in float64.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import aca
from aca import provenance
from aca.report import figures
from aca.report.format import markdown_table, write_csv, write_json
from aca.report.paper import TOY_ABS_ERROR
from aca.task import Analysis
from aca.tasks.base import check_names

ROW_KEYS = (
    "method", "solver", "rtol", "atol", "T", "grad_z0", "grad_alpha", "abs_err_z0",
    "rel_err_z0", "abs_err_alpha", "rel_err_alpha", "nfe_forward", "nfe_backward", "time_s",
)


class LinearODE(nn.Module):
    """dz/dt = alpha z with a trainable alpha."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha, dtype=torch.float64))

    def forward(self, t: float, z: torch.Tensor) -> torch.Tensor:
        return self.alpha * z


def exact_gradients(alpha: float, z0: float, T: float) -> tuple[float, float]:
    """Closed-form (dL/dz0, dL/dalpha) of L = z(T)^2."""
    growth = math.exp(2.0 * alpha * T)
    return 2.0 * z0 * growth, 2.0 * z0**2 * T * growth


def measure_gradient(method: str, T: float, alpha: float, z0: float,
                     ode: dict[str, Any]) -> dict[str, Any]:
    """One forward + backward with gradient ``method``: the two gradients, their
    errors against the closed form, function evaluations and wall time."""
    func = LinearODE(alpha)
    z_init = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    times = torch.tensor([0.0, T], dtype=torch.float64)
    options = {**ode, "gradient": method}
    start = time.perf_counter()
    with aca.track_stats() as stats:
        z_end = aca.odeint(func, z_init, times, **options)[-1]
        (z_end**2).backward()
    elapsed = time.perf_counter() - start
    exact_z0, exact_alpha = exact_gradients(alpha, z0, T)
    grad_z0, grad_alpha = z_init.grad.item(), func.alpha.grad.item()
    return {
        "method": method, "solver": options["solver"], "rtol": options["rtol"],
        "atol": options["atol"], "T": T, "grad_z0": grad_z0, "grad_alpha": grad_alpha,
        "abs_err_z0": abs(grad_z0 - exact_z0),
        "rel_err_z0": abs(grad_z0 - exact_z0) / abs(exact_z0),
        "abs_err_alpha": abs(grad_alpha - exact_alpha),
        "rel_err_alpha": abs(grad_alpha - exact_alpha) / abs(exact_alpha),
        "nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward, "time_s": elapsed,
    }


def _ordering(rows: list[dict[str, Any]], key: str) -> list[str]:
    return [row["method"] for row in sorted(rows, key=lambda row: row[key])]


def ordering_sentence(report_rows: list[dict[str, Any]], T: float) -> str:
    """Whether our error ordering of the methods matches the paper's, per gradient."""
    compared = [row for row in report_rows if row["method"] in TOY_ABS_ERROR]
    if len(compared) < 2:
        return ("One gradient method ran, so there is no ordering to compare with the paper's "
                "(task.methods=[aca,adjoint,naive] compares all three).")
    paper = sorted((row["method"] for row in compared), key=TOY_ABS_ERROR.get)
    parts = []
    for key, name in (("abs_err_z0", "dL/dz0"), ("abs_err_alpha", "dL/dalpha")):
        ours = _ordering(compared, key)
        verdict = "matches" if ours == paper else "does not match"
        parts.append(f"for {name} our ordering at T={T:g} is {' < '.join(ours)}, which "
                     f"{verdict} the paper's {' < '.join(paper)}")
    return "By absolute error, " + "; ".join(parts) + "."


def lowest_count_sentence(t_rows: list[dict[str, Any]], method: str) -> str:
    """How often ``method`` has the lowest error over the T grid (the paper: ACA at every T);
    empty unless ``method`` ran beside another."""
    ran = {row["method"] for row in t_rows}
    if method not in ran or len(ran) < 2:
        return ""
    by_T: dict[float, list[dict[str, Any]]] = {}
    for row in t_rows:
        by_T.setdefault(row["T"], []).append(row)
    parts = []
    for key, name in (("abs_err_z0", "dL/dz0"), ("abs_err_alpha", "dL/dalpha")):
        wins = sum(_ordering(rows, key)[0] == method for rows in by_T.values())
        parts.append(f"{name} at {wins} of {len(by_T)} T values")
    return f"{method} has the lowest error for " + " and for ".join(parts) + "."


class ToyGradient(Analysis):
    """Gradient error of each method against the closed form (analysis, no training)."""

    def _settings(self) -> tuple[list[str], list[str], list[float], float, float]:
        task = self.settings
        return (check_names(task.methods, aca.GRADIENTS, "task.methods"),
                check_names(task.solvers, aca.SOLVERS, "task.solvers"),
                [float(tol) for tol in task.tolerances], float(task.alpha), float(task.z0))

    def analyze(self, out_dir: Path) -> dict:
        task = self.settings
        methods, solvers, tolerances, alpha, z0 = self._settings()
        T_report = float(task.T_report)
        T_grid = sorted({*np.linspace(task.T_min, task.T_max, task.T_num).round(6).tolist(),
                         T_report})

        t_runs = [(method, T, self.ode) for T in T_grid for method in methods]
        tol_runs = [(method, T_report, {**self.ode, "solver": solver, "rtol": tol, "atol": tol,
                                        "step_size": None})
                    for solver in solvers for tol in tolerances for method in methods]
        rows = [measure_gradient(method, T, alpha, z0, ode)
                for method, T, ode in self.progress(t_runs + tol_runs, desc="toy gradients")]
        t_rows, tol_rows = rows[:len(t_runs)], rows[len(t_runs):]
        report_rows = [row for row in t_rows if row["T"] == T_report]
        summary_md = self._summary_markdown(report_rows, t_rows, tol_rows, alpha, z0, T_report)
        print(summary_md.split("\n## Relative")[0])

        out_dir = Path(out_dir)
        write_csv(out_dir / "toy_error_vs_T.csv", ROW_KEYS,
                  [[row[key] for key in ROW_KEYS] for row in t_rows])
        write_csv(out_dir / "toy_error_vs_tol.csv", ROW_KEYS,
                  [[row[key] for key in ROW_KEYS] for row in tol_rows])
        (out_dir / "toy.md").write_text(summary_md)
        write_json(out_dir / "toy.json", {"selected_method": self.ode["gradient"], "alpha": alpha,
                                          "z0": z0, "T_report": T_report,
                                          "at_T_report": report_rows,
                                          "provenance": provenance.stamp()})
        figures.toy_error_vs_T(t_rows, methods, out_dir / "toy_error_vs_T.png", alpha, z0)
        figures.toy_error_vs_tol(tol_rows, methods, solvers, out_dir / "toy_error_vs_tol.png",
                                 T_report)
        return {"selected_method": self.ode["gradient"], "T_report": T_report,
                **{f"{key}.{row['method']}": row[key] for row in report_rows
                   for key in ("abs_err_z0", "rel_err_z0", "abs_err_alpha", "rel_err_alpha")},
                "ordering": ordering_sentence(report_rows, T_report)}

    def _summary_markdown(self, report_rows: list[dict], t_rows: list[dict], tol_rows: list[dict],
                          alpha: float, z0: float, T_report: float) -> str:
        selected = self.ode["gradient"]
        exact_z0, exact_alpha = exact_gradients(alpha, z0, T_report)
        solver = self.ode["solver"]
        tol_text = (f"step_size={self.ode['step_size']}" if self.ode["step_size"]
                    else f"rtol={self.ode['rtol']:g}, atol={self.ode['atol']:g}")
        headers = ["method", "abs err dL/dz0", "rel err dL/dz0", "abs err dL/dalpha",
                   "rel err dL/dalpha", "NFE fwd", "NFE bwd", "time (ms)", "paper abs err (≈)"]
        rows = [[row["method"] + (" (selected)" if row["method"] == selected else ""),
                 row["abs_err_z0"], row["rel_err_z0"], row["abs_err_alpha"], row["rel_err_alpha"],
                 row["nfe_forward"], row["nfe_backward"], 1e3 * row["time_s"],
                 TOY_ABS_ERROR.get(row["method"], "-")] for row in report_rows]
        tol_headers = ["solver", "rtol=atol", "method", "rel err dL/dz0", "rel err dL/dalpha",
                       "NFE fwd", "NFE bwd", "time (ms)"]
        tol_table = [[row["solver"], row["rtol"], row["method"], row["rel_err_z0"],
                      row["rel_err_alpha"], row["nfe_forward"], row["nfe_backward"],
                      1e3 * row["time_s"]] for row in tol_rows]
        return (
            f"# Toy analytic gradient: dz/dt = alpha z, L = z(T)^2\n\n"
            f"alpha = {alpha:g}, z0 = {z0:g}, float64. At T = {T_report:g}: exact dL/dz0 = "
            f"{exact_z0:.6g}, exact dL/dalpha = {exact_alpha:.6g}.\n\n"
            f"## Gradient error at T = {T_report:g} ({solver}, {tol_text})\n\n"
            + markdown_table(headers, rows)
            + "\nThe paper's values are absolute errors read off its figure; its alpha, z0 and "
            "tolerance are not stated, so compare orderings, not magnitudes.\n\n"
            + " ".join(filter(None, (ordering_sentence(report_rows, T_report),
                                     lowest_count_sentence(t_rows, "aca")))) + "\n\n"
            f"## Relative gradient error vs tolerance at T = {T_report:g}\n\n"
            + markdown_table(tol_headers, tol_table)
        )
