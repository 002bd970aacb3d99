"""Explicit Runge–Kutta solvers: tableaus (data), one step, step-size control, the loop."""

from aca.solvers.control import (
    AdaptiveSteps,
    ConstantSteps,
    PerSampleConstantSteps,
    PerSampleSteps,
    rms_norm,
)
from aca.solvers.integrate import (
    Checkpoints,
    Counts,
    SampleCheckpoints,
    integrate,
    integrate_per_sample,
)
from aca.solvers.step import Step, dense_output, rk_step
from aca.solvers.tableau import ALIASES, SOLVERS, ButcherTableau

__all__ = ["ALIASES", "SOLVERS", "AdaptiveSteps", "ButcherTableau", "Checkpoints", "ConstantSteps",
           "Counts", "PerSampleConstantSteps", "PerSampleSteps", "SampleCheckpoints", "Step",
           "dense_output", "integrate", "integrate_per_sample", "rk_step", "rms_norm"]
