"""Explicit Runge–Kutta solvers: tableaus (data), one step, step-size control, the loop."""

from aca.solvers.control import AdaptiveSteps, ConstantSteps, rms_norm
from aca.solvers.integrate import Checkpoints, Counts, integrate
from aca.solvers.step import Step, dense_output, rk_step
from aca.solvers.tableau import ALIASES, SOLVERS, ButcherTableau

__all__ = ["ALIASES", "SOLVERS", "AdaptiveSteps", "ButcherTableau", "Checkpoints", "ConstantSteps",
           "Counts", "Step", "dense_output", "integrate", "rk_step", "rms_norm"]
