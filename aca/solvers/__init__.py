"""Runge–Kutta solvers, explicit and diagonally implicit (Newton stages): tableaus
(data), one step, step-size controllers (policies with explicit state, and wrappers),
the one loop."""

from aca.solvers.control import (
    AdaptiveSteps,
    ConstantSteps,
    Controller,
    Norm,
    Status,
    rms_norm,
)
from aca.solvers.integrate import Checkpoints, Counts, Solution, integrate
from aca.solvers.newton import Newton
from aca.solvers.step import Step, interpolate, rk_step
from aca.solvers.tableau import ALIASES, SOLVERS, ButcherTableau

__all__ = ["ALIASES", "SOLVERS", "AdaptiveSteps", "ButcherTableau", "Checkpoints", "ConstantSteps",
           "Controller", "Counts", "Newton", "Norm", "Solution", "Status", "Step", "integrate",
           "interpolate", "rk_step", "rms_norm"]
