"""Stiff forward solves: aca's implicit solvers against scipy's Radau, BDF and LSODA.

Robertson's kinetics (k = 0.04, 3e7, 1e4) over [0, 1e5] and van der Pol with mu = 1000
over [0, 3000], float64, one thread, the same rtol/atol for every solver. Each row: the
forward solve's time (median of ``--repeats``), steps, evaluations of f (and of its
Jacobian: aca builds one per step from vector-Jacobian products, scipy gets the exact one),
the end state's largest error relative to ``atol + |y|`` against Radau at rtol 1e-12, and
``time_vs_radau`` (this row's time over Radau's at the same tolerance). aca's rows add
forward+backward with ``gradient="aca"`` (loss: the end state's sum). Prints a markdown
table; writes no record (issue 30's "against scipy's Radau/BDF for the forward solve")::

    python scripts/bench_stiff.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

import aca
from aca.report.format import markdown_table

ROBERTSON_K = (0.04, 3e7, 1e4)
MU = 1000.0


@dataclass(frozen=True)
class Stiff:
    """A stiff problem in both libraries' terms: ``torch_f(t, y)``, ``numpy_f(t, y)`` and
    its exact Jacobian ``jac(t, y)``."""

    name: str
    y0: tuple[float, ...]
    t1: float
    atol_per_rtol: float  # atol = rtol * this (Robertson's y2 lives near 1e-5)
    torch_f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    numpy_f: Callable[[float, np.ndarray], list[float]]
    jac: Callable[[float, np.ndarray], list[list[float]]]


def _robertson_torch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k1, k2, k3 = ROBERTSON_K
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k3 * y2 * y3 - k2 * y2**2,
                        k2 * y2**2], -1)


def _robertson_numpy(t: float, y: np.ndarray) -> list[float]:
    k1, k2, k3 = ROBERTSON_K
    return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
            k2 * y[1] ** 2]


def _robertson_jac(t: float, y: np.ndarray) -> list[list[float]]:
    k1, k2, k3 = ROBERTSON_K
    return [[-k1, k3 * y[2], k3 * y[1]], [k1, -k3 * y[2] - 2 * k2 * y[1], -k3 * y[1]],
            [0.0, 2 * k2 * y[1], 0.0]]


def _vdp_torch(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, v = y.unbind(-1)
    return torch.stack([v, MU * (1 - x**2) * v - x], -1)


def _vdp_numpy(t: float, y: np.ndarray) -> list[float]:
    return [y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]]


def _vdp_jac(t: float, y: np.ndarray) -> list[list[float]]:
    return [[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1, MU * (1 - y[0] ** 2)]]


PROBLEMS = {
    "robertson": Stiff("robertson", (1.0, 0.0, 0.0), 1e5, 1e-6, _robertson_torch,
                       _robertson_numpy, _robertson_jac),
    "vdp_mu1000": Stiff("vdp_mu1000", (2.0, 0.0), 3000.0, 1.0, _vdp_torch, _vdp_numpy,
                        _vdp_jac),
}


def _median_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def reference(problem: Stiff) -> np.ndarray:
    solution = solve_ivp(problem.numpy_f, (0.0, problem.t1), problem.y0, method="Radau",
                         rtol=1e-12, atol=1e-12 * problem.atol_per_rtol, jac=problem.jac)
    return solution.y[:, -1]


def rows_for(problem: Stiff, rtol: float, solvers: list[str], repeats: int) -> list[dict]:
    atol = rtol * problem.atol_per_rtol
    exact = reference(problem)

    def error(y: np.ndarray) -> float:
        return float(np.max(np.abs(y - exact) / (atol + np.abs(exact))))

    rows = []
    for method in ("Radau", "BDF", "LSODA"):
        seconds, solution = _median_time(lambda method=method: solve_ivp(
            problem.numpy_f, (0.0, problem.t1), problem.y0, method=method, rtol=rtol,
            atol=atol, jac=problem.jac), repeats)
        rows.append({"problem": problem.name, "rtol": rtol, "solver": f"scipy {method}",
                     "forward_s": seconds, "fwd_bwd_s": "–", "steps": len(solution.t) - 1,
                     "nfe": solution.nfev, "jacobians": solution.njev,
                     "end_error": error(solution.y[:, -1])})
    t = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    for name in solvers:
        def forward(name: str = name) -> tuple[np.ndarray, aca.SolveStats]:
            stats = aca.SolveStats()
            with torch.no_grad():
                ys = aca.odeint(problem.torch_f, torch.tensor(problem.y0, dtype=torch.float64),
                                t, solver=name, rtol=rtol, atol=atol, max_steps=100_000,
                                stats=stats)
            return ys[-1].numpy(), stats

        def forward_backward(name: str = name) -> None:
            y0 = torch.tensor(problem.y0, dtype=torch.float64, requires_grad=True)
            ys = aca.odeint(problem.torch_f, y0, t, solver=name, rtol=rtol, atol=atol,
                            max_steps=100_000, gradient="aca")
            ys[-1].sum().backward()

        seconds, (end, stats) = _median_time(forward, repeats)
        both, _ = _median_time(forward_backward, repeats)
        rows.append({"problem": problem.name, "rtol": rtol, "solver": f"aca {name}",
                     "forward_s": seconds, "fwd_bwd_s": both,
                     "steps": f"{stats.accepted} + {stats.rejected} rejected",
                     "nfe": stats.nfe_forward, "jacobians": stats.accepted + stats.rejected,
                     "end_error": error(end)})
    radau = rows[0]["forward_s"]
    for row in rows:
        row["time_vs_radau"] = row["forward_s"] / radau
    return rows


KEYS = ["problem", "rtol", "solver", "forward_s", "time_vs_radau", "fwd_bwd_s", "steps", "nfe",
        "jacobians", "end_error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Robertson at rtol 1e-6 only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--solvers", nargs="+", default=["kvaerno5"],
                        help="aca's implicit solvers (kvaerno3 takes ~15x kvaerno5's steps on "
                        "van der Pol at 1e-8)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = ([("robertson", 1e-6)] if args.quick
                else [(name, rtol) for name in PROBLEMS for rtol in (1e-6, 1e-8)])
    rows = []
    for name, rtol in settings:
        rows += rows_for(PROBLEMS[name], rtol, args.solvers, args.repeats)
    print(markdown_table(KEYS, [[row[key] for key in KEYS] for row in rows]))
    print("\njacobians: scipy's evaluations of the exact Jacobian; aca's step attempts (one "
          "Jacobian by vector-Jacobian products per attempt). end_error: max |y - ref| / "
          "(atol + |ref|), ref = Radau at rtol 1e-12.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
