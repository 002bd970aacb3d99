"""``odeint``: the one entry point that composes a solver, a step-size policy and
a gradient method (torchdiffeq's call signature)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from aca.errors import (
    InvalidOptionError,
    NonFiniteStateError,
    NonMonotoneTimeError,
    StepSizeRequiredError,
    UnknownGradientError,
    UnknownSolverError,
)
from aca.gradients import GRADIENTS, Problem
from aca.solvers import SOLVERS, ButcherTableau
from aca.solvers.step import Func
from aca.stats import SolveStats, StatsSinks


def _choices(names) -> str:
    return ", ".join(sorted(names))


def check_options(solver: str, gradient: str, rtol: float, atol: float, step_size: float | None,
                  max_steps: int, max_checkpoints: int | None) -> ButcherTableau:
    """Validate the options of a solve (also used by ``ODEBlock`` at construction)
    and return the tableau."""
    if solver not in SOLVERS:
        raise UnknownSolverError(f"unknown solver {solver!r}; choose one of: {_choices(SOLVERS)}")
    if gradient not in GRADIENTS:
        raise UnknownGradientError(
            f"unknown gradient method {gradient!r}; choose one of: {_choices(GRADIENTS)}")
    tableau = SOLVERS[solver]
    if step_size is None and not tableau.adaptive:
        raise StepSizeRequiredError(
            f"solver {solver!r} is fixed-step and needs step_size=<h>; adaptive solvers are: "
            f"{_choices(n for n, t in SOLVERS.items() if t.adaptive)}")
    if step_size is not None and not (step_size > 0 and math.isfinite(step_size)):
        raise StepSizeRequiredError(f"step_size must be a positive number, got {step_size!r}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (value >= 0 and math.isfinite(value)):
            raise InvalidOptionError(f"{name} must be a non-negative number, got {value!r}")
    if step_size is None and rtol == 0 and atol == 0:
        raise InvalidOptionError("rtol and atol cannot both be 0 for an adaptive solver")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise InvalidOptionError(f"max_steps must be a positive integer, got {max_steps!r}")
    if max_checkpoints is not None and not (
            isinstance(max_checkpoints, int) and max_checkpoints >= 2):
        raise InvalidOptionError(
            f"max_checkpoints must be an integer >= 2 (or None for all), got {max_checkpoints!r}")
    return tableau


def _output_times(t: Tensor | Sequence[float]) -> list[float]:
    times = t.detach().reshape(-1).tolist() if isinstance(t, Tensor) else [float(x) for x in t]
    if isinstance(t, Tensor) and t.dim() != 1 or not times:
        raise NonMonotoneTimeError(f"t must be a non-empty 1-D sequence of times, got shape "
                                   f"{tuple(t.shape) if isinstance(t, Tensor) else len(times)}")
    if not all(math.isfinite(x) for x in times):
        raise NonMonotoneTimeError(f"t must be finite, got {times}")
    steps = [b - a for a, b in zip(times, times[1:])]
    if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise NonMonotoneTimeError(
            f"t must be strictly increasing or strictly decreasing, got {times[:8]}"
            + (" ..." if len(times) > 8 else ""))
    return times


def odeint(
    func: Func,
    y0: Tensor,
    t: Tensor | Sequence[float],
    *,
    solver: str = "dopri5",
    gradient: str = "aca",
    rtol: float = 1e-3,
    atol: float = 1e-6,
    step_size: float | None = None,
    max_steps: int = 10_000,
    max_checkpoints: int | None = None,
    safety: float = 0.9,
    ifactor: float = 10.0,
    dfactor: float = 0.2,
    pi_beta: float = 0.0,
    stats: SolveStats | None = None,
) -> Tensor:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0``; return ``y`` at every time
    in ``t``, shape ``(len(t), *y0.shape)``.

    ``solver``: a name in ``aca.SOLVERS``; fixed-step methods need ``step_size``,
    and any method given ``step_size`` runs on that grid (landing on each output).
    ``gradient``: ``"aca"``, ``"adjoint"`` or ``"naive"`` (``aca.GRADIENTS``).
    ``func`` receives ``t`` as a 0-dim tensor (``y0``'s dtype and device); with
    ``aca``/``adjoint`` gradients reach the parameters of ``func`` only if it is an
    ``nn.Module`` (``naive`` also reaches tensors a closure captures).
    ``max_checkpoints`` bounds ACA's stored states (recomputing the rest).
    ``safety``, ``ifactor``, ``dfactor``, ``pi_beta`` tune the step-size controller.
    ``stats`` (a ``SolveStats``) receives this solve's counts, backward included.
    """
    tableau = check_options(solver, gradient, rtol, atol, step_size, max_steps, max_checkpoints)
    if not isinstance(y0, Tensor) or not torch.is_floating_point(y0):
        raise InvalidOptionError(f"y0 must be a floating-point tensor, got {type(y0).__name__}"
                                 + (f" of dtype {y0.dtype}" if isinstance(y0, Tensor) else ""))
    times = _output_times(t)
    if not bool(torch.isfinite(y0).all()):
        raise NonFiniteStateError("y0 contains nan or inf")
    if len(times) == 1:
        return y0.unsqueeze(0)
    problem = Problem(
        func=func, times=times, tableau=tableau, step_size=step_size, max_steps=max_steps,
        rtol=rtol, atol=atol, max_checkpoints=max_checkpoints, sinks=StatsSinks(stats),
        controller_options={"safety": safety, "ifactor": ifactor, "dfactor": dfactor,
                            "pi_beta": pi_beta},
    )
    if not torch.is_grad_enabled() or (
            gradient != "naive" and not y0.requires_grad and not problem.params):
        # nothing to differentiate (evaluation): no checkpoints, no graph
        outputs, counts = problem.solve(y0)
        problem.report_forward(counts)
        return torch.stack(outputs)
    return GRADIENTS[gradient](problem, y0)
