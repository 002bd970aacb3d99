"""aca: Adaptive Checkpoint Adjoint gradients for Neural ODEs (Zhuang et al., ICML 2020).

``aca.odeint(func, y0, t, solver=..., gradient=...)`` solves an ODE with explicit
Runge–Kutta methods and differentiates through it by ACA, the adjoint method or
naive backpropagation (``gradient="aca"`` or a method object that owns its options:
``aca.ACA(max_checkpoints=K)``, ``aca.Adjoint(seminorm=True)``, ``aca.Naive()``);
``aca.ODEBlock`` wraps a solve as a layer.
"""

from aca.errors import (
    FuncOutputError,
    InvalidOptionError,
    MaxStepsExceededError,
    NewtonConvergenceError,
    NonFiniteStateError,
    NonMonotoneTimeError,
    ODEError,
    RandomStateError,
    StatefulFuncError,
    StepSizeRequiredError,
    StepSizeUnderflowError,
    UnknownGradientError,
    UnknownSolverError,
    UnseenTensorError,
)
from aca.gradients import ACA, GRADIENTS, Adjoint, GradientMethod, Naive
from aca.models.odeblock import ODEBlock
from aca.odeint import odeint
from aca.options import SolveOptions
from aca.solvers import SOLVERS
from aca.stats import SolveStats, track_stats

__version__ = "0.1.0"

__all__ = [
    "ACA", "GRADIENTS", "SOLVERS", "Adjoint", "FuncOutputError", "GradientMethod",
    "InvalidOptionError", "MaxStepsExceededError", "Naive", "NewtonConvergenceError",
    "NonFiniteStateError",
    "NonMonotoneTimeError", "ODEBlock", "ODEError", "RandomStateError", "SolveOptions",
    "SolveStats", "StatefulFuncError", "StepSizeRequiredError", "StepSizeUnderflowError",
    "UnknownGradientError", "UnknownSolverError", "UnseenTensorError", "__version__", "odeint",
    "track_stats",
]
