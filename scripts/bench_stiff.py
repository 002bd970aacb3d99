"""Stiff solves: aca's implicit solvers against scipy's Radau, BDF and LSODA (forward) and
diffrax's Kvaerno5 with RecursiveCheckpointAdjoint (forward and gradient).

Robertson's kinetics (k = 0.04, 3e7, 1e4) over [0, 1e5], loss y1 + 1e4·y2 at the end, and
van der Pol with mu = 1000 over [0, 3000], loss y1 at the end; float64, one thread, the
same rtol/atol for every solver. Each row: the forward solve's time (median of
``--repeats``), steps, evaluations of f (and of its Jacobian: aca builds one per step from
vector-Jacobian products, scipy gets the exact one), the end state's largest error
relative to ``atol + |y|`` against Radau at rtol 1e-12, and ``time_vs_radau`` (this row's
time over Radau's at the same tolerance). aca's and diffrax's rows add forward+backward
(aca: ``gradient="aca"``) and the gradient's error against central differences of tight
Radau solves. Prints a markdown table; writes no record (issue 30's benchmarks against
scipy and diffrax)::

    python scripts/bench_stiff.py [--quick] [--repeats 3] [--diffrax]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.integrate._ivp.ivp import OdeResult

import aca
from aca.report.format import markdown_table

JAX_PYTHON = Path(__file__).resolve().parents[1] / ".venv-jax" / "bin" / "python"

@dataclass(frozen=True)
class Stiff:
    """A stiff problem in both libraries' terms: ``torch_f(t, y, p)``, ``numpy_f(t, y, p)``
    and its exact Jacobian ``jac(t, y, p)`` with parameters ``p``; the loss is
    ``weight · y(t1)``."""

    name: str
    y0: tuple[float, ...]
    t1: float
    atol_per_rtol: float  # atol = rtol * this (Robertson's y2 lives near 1e-5)
    params: tuple[float, ...]
    weight: tuple[float, ...]
    torch_f: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    numpy_f: Callable[[float, np.ndarray, np.ndarray], list[float]]
    jac: Callable[[float, np.ndarray, np.ndarray], list[list[float]]]


def _robertson_torch(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-k[0] * y1 + k[2] * y2 * y3,
                        k[0] * y1 - k[2] * y2 * y3 - k[1] * y2**2, k[1] * y2**2], -1)


def _robertson_numpy(t: float, y: np.ndarray, k: np.ndarray) -> list[float]:
    return [-k[0] * y[0] + k[2] * y[1] * y[2],
            k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2, k[1] * y[1] ** 2]


def _robertson_jac(t: float, y: np.ndarray, k: np.ndarray) -> list[list[float]]:
    return [[-k[0], k[2] * y[2], k[2] * y[1]],
            [k[0], -k[2] * y[2] - 2 * k[1] * y[1], -k[2] * y[1]], [0.0, 2 * k[1] * y[1], 0.0]]


def _vdp_torch(t: torch.Tensor, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    x, v = y.unbind(-1)
    return torch.stack([v, mu[0] * (1 - x**2) * v - x], -1)


def _vdp_numpy(t: float, y: np.ndarray, mu: np.ndarray) -> list[float]:
    return [y[1], mu[0] * (1 - y[0] ** 2) * y[1] - y[0]]


def _vdp_jac(t: float, y: np.ndarray, mu: np.ndarray) -> list[list[float]]:
    return [[0.0, 1.0], [-2 * mu[0] * y[0] * y[1] - 1, mu[0] * (1 - y[0] ** 2)]]


# scripts/stiff_diffrax_peer.py defines the same problems for diffrax
PROBLEMS = {
    "robertson": Stiff("robertson", (1.0, 0.0, 0.0), 1e5, 1e-6, (0.04, 3e7, 1e4),
                       (1.0, 1e4, 0.0), _robertson_torch, _robertson_numpy, _robertson_jac),
    "vdp_mu1000": Stiff("vdp_mu1000", (2.0, 0.0), 3000.0, 1.0, (1000.0,), (1.0, 0.0),
                        _vdp_torch, _vdp_numpy, _vdp_jac),
}


def _median_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _scipy(problem: Stiff, params: np.ndarray, y0: np.ndarray, rtol: float,
           **options: object) -> OdeResult:
    """scipy's solve with the exact Jacobian (Radau unless ``method`` says otherwise)."""
    solution = solve_ivp(problem.numpy_f, (0.0, problem.t1), y0, args=(params,),
                         rtol=rtol, atol=rtol * problem.atol_per_rtol, jac=problem.jac,
                         **{"method": "Radau", **options})
    return solution


def reference(problem: Stiff) -> tuple[np.ndarray, np.ndarray]:
    """The end state by Radau at rtol 1e-12, and the loss's gradient (``p·dL/dp``, then
    ``dL/dy0``) by central differences of such solves (steps: 1e-4 relative in p, 1e-5
    in y0): independent of aca and of diffrax."""
    params, y0, weight = (np.array(v) for v in (problem.params, problem.y0, problem.weight))

    def loss(params: np.ndarray, y0: np.ndarray) -> float:
        return float(weight @ _scipy(problem, params, y0, 1e-12).y[:, -1])

    gradient = []
    for i in range(len(params)):
        up, down = params.copy(), params.copy()
        up[i], down[i] = params[i] * (1 + 1e-4), params[i] * (1 - 1e-4)
        gradient.append((loss(up, y0) - loss(down, y0)) / 2e-4)
    for i in range(len(y0)):
        step = np.eye(len(y0))[i] * 1e-5
        gradient.append((loss(params, y0 + step) - loss(params, y0 - step)) / 2e-5)
    return _scipy(problem, params, y0, 1e-12).y[:, -1], np.array(gradient)


def _largest_relative(values: np.ndarray, exact: np.ndarray, floor: float | np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(values) - exact) / (floor + np.abs(exact))))


def rows_for(problem: Stiff, rtol: float, solvers: list[str], repeats: int,
             exact: tuple[np.ndarray, np.ndarray], jax_python: Path | None = None
             ) -> list[dict]:
    """One row per solver at ``rtol``: scipy's (forward only), aca's, and with
    ``jax_python`` diffrax's Kvaerno5 (its default I controller and a PI one)."""
    atol = rtol * problem.atol_per_rtol
    end_exact, gradient_exact = exact

    def end_error(y: np.ndarray) -> float:
        return _largest_relative(y, end_exact, atol)

    def gradient_error(gradient: np.ndarray) -> float:
        return _largest_relative(gradient, gradient_exact, 0.0)

    rows = []
    params, y0 = np.array(problem.params), np.array(problem.y0)
    for method in ("Radau", "BDF", "LSODA"):
        seconds, solution = _median_time(
            lambda method=method: _scipy(problem, params, y0, rtol, method=method), repeats)
        rows.append({"solver": f"scipy {method}", "forward_s": seconds, "fwd_bwd_s": "–",
                     "steps": len(solution.t) - 1, "nfe": solution.nfev,
                     "jacobians": solution.njev, "end_error": end_error(solution.y[:, -1]),
                     "grad_error": "–"})
    t = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    weight = torch.tensor(problem.weight, dtype=torch.float64)
    for name in solvers:
        def solve(name: str = name, grad: bool = False, **options: object) -> torch.Tensor:
            p = torch.tensor(problem.params, dtype=torch.float64, requires_grad=grad)
            start = torch.tensor(problem.y0, dtype=torch.float64, requires_grad=grad)
            ys = aca.odeint(lambda t, y: problem.torch_f(t, y, p), start, t, solver=name,
                            rtol=rtol, atol=atol, max_steps=100_000, params=[p], **options)
            if not grad:
                return ys[-1]
            (weight * ys[-1]).sum().backward()
            return torch.cat([p.grad * p.detach(), start.grad])

        def forward(name: str = name) -> tuple[np.ndarray, aca.SolveStats]:
            stats = aca.SolveStats()
            with torch.no_grad():
                end = solve(name, stats=stats)
            return end.numpy(), stats

        seconds, (end, stats) = _median_time(forward, repeats)
        both, gradient = _median_time(lambda name=name: solve(name, grad=True), repeats)
        rows.append({"solver": f"aca {name}", "forward_s": seconds, "fwd_bwd_s": both,
                     "steps": f"{stats.accepted} + {stats.rejected} rejected",
                     "nfe": stats.nfe_forward, "jacobians": stats.jacobians,
                     "end_error": end_error(end), "grad_error": gradient_error(gradient.numpy())})
    if jax_python is not None:
        for controller in ("I", "PI"):
            peer = diffrax_kvaerno5(jax_python, problem, rtol, atol, repeats, controller)
            rows.append({"solver": f"diffrax Kvaerno5 {controller}",
                         "forward_s": statistics.median(peer["forward_s"]),
                         "fwd_bwd_s": statistics.median(peer["times_s"]),
                         "compile_s": peer["compile_and_first_s"] - statistics.median(
                             peer["times_s"]),
                         "steps": f"{peer['accepted']} + {peer['rejected']} rejected",
                         "nfe": "–", "jacobians": "–", "end_error": end_error(peer["end"]),
                         "grad_error": gradient_error(np.array(peer["gradient"]))})
    radau = rows[0]["forward_s"]
    for row in rows:
        row.update(problem=problem.name, rtol=rtol, time_vs_radau=row["forward_s"] / radau)
        row.setdefault("compile_s", "–")
    return rows


def diffrax_kvaerno5(jax_python: Path, problem: Stiff, rtol: float, atol: float,
                     repeats: int, controller: str) -> dict:
    """diffrax's answer for one setting (scripts/stiff_diffrax_peer.py, in its own
    environment)."""
    command = [str(jax_python), str(Path(__file__).with_name("stiff_diffrax_peer.py")),
               problem.name, repr(rtol), repr(atol), str(repeats)]
    done = subprocess.run(command + (["PI"] if controller == "PI" else []),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the diffrax peer failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


KEYS = ["problem", "rtol", "solver", "forward_s", "time_vs_radau", "fwd_bwd_s", "compile_s",
        "steps", "nfe", "jacobians", "end_error", "grad_error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="Robertson at rtol 1e-6 only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--diffrax", action="store_true",
                        help="add diffrax's Kvaerno5 with RecursiveCheckpointAdjoint (needs "
                        "the JAX environment of scripts/make_jax_env.sh)")
    parser.add_argument("--jax-python", type=Path, default=JAX_PYTHON,
                        help="the JAX environment's python")
    parser.add_argument("--solvers", nargs="+", default=["kvaerno5"],
                        help="aca's implicit solvers (kvaerno3 takes ~15x kvaerno5's steps on "
                        "van der Pol at 1e-8)")
    args = parser.parse_args(argv)
    if args.diffrax and not args.jax_python.is_file():
        parser.error(f"no JAX environment at {args.jax_python}: build it with "
                     "scripts/make_jax_env.sh, or pass --jax-python")
    torch.set_num_threads(1)
    settings = ([("robertson", 1e-6)] if args.quick
                else [(name, rtol) for name in PROBLEMS for rtol in (1e-6, 1e-8)])
    rows, exact = [], {}
    for name, rtol in settings:
        if name not in exact:
            exact[name] = reference(PROBLEMS[name])
        rows += rows_for(PROBLEMS[name], rtol, args.solvers, args.repeats, exact[name],
                         args.jax_python if args.diffrax else None)
    print(markdown_table(KEYS, [[row[key] for key in KEYS] for row in rows]))
    print("\njacobians: scipy's evaluations of the exact Jacobian; aca's step attempts (one "
          "Jacobian by vector-Jacobian products per attempt). end_error: max |y - ref| / "
          "(atol + |ref|), ref = Radau at rtol 1e-12. grad_error: max over components of "
          "|g - ref| / |ref|, g = (p·dL/dp, dL/dy0), ref = central differences of Radau at "
          "rtol 1e-12. diffrax: times after its jit compile (compile_s: the first "
          "forward+backward call's time beyond a compiled one's).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
