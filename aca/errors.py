"""Exceptions raised by aca. Each message names the bad value and what is valid.

Every error a user can cause and fix is an ``AcaError``: a failed or refused solve
(``ODEError``), a setting that cannot be used (``ConfigError``), data that is missing or
broken (``DataError``), an optional dependency that is not installed
(``MissingExtraError``). ``aca-run`` prints these as one ``error:`` line; anything else is
a bug and keeps its traceback.
"""


class AcaError(Exception):
    """Base class of every error aca raises for input a user can fix."""


class ODEError(AcaError):
    """Base class of every error of a solve: bad input to ``odeint`` or a failed solve."""


class UnknownSolverError(ODEError, ValueError):
    """The solver name is not in ``aca.SOLVERS``."""


class UnknownGradientError(ODEError, ValueError):
    """The gradient method is not in ``aca.GRADIENTS``."""


class StepSizeRequiredError(ODEError, ValueError):
    """A fixed-step solver was called without ``step_size`` (or with a bad one)."""


class NonMonotoneTimeError(ODEError, ValueError):
    """The output times are not strictly increasing or strictly decreasing."""


class InvalidOptionError(ODEError, ValueError):
    """A numeric option (tolerance, step count, checkpoint budget...) is out of range."""


class NonFiniteStateError(ODEError, FloatingPointError):
    """The state or its derivative became NaN or infinite."""


class NewtonConvergenceError(ODEError, RuntimeError):
    """An implicit solver's Newton iteration did not converge on a fixed-step grid."""


class MaxStepsExceededError(ODEError, RuntimeError):
    """The solve needed more than ``max_steps`` steps."""


class StepSizeUnderflowError(ODEError, RuntimeError):
    """The adaptive step size shrank below what floating point can resolve."""


class FuncOutputError(ODEError, ValueError):
    """``func(t, y)`` returned something other than a tensor of the state's shape,
    dtype and device."""


class UnseenTensorError(ODEError, ValueError):
    """``func`` depends on tensors requiring grad that ``aca``/``adjoint`` cannot see
    (not parameters of an ``nn.Module`` func, not passed as ``params=``)."""


class StatefulFuncError(ODEError, RuntimeError):
    """``func`` changes its own buffers as it runs, which a method that evaluates it again
    (``aca``, ``adjoint``) cannot reproduce."""


class RandomStateError(ODEError, RuntimeError):
    """``func`` draws random numbers that the gradient method cannot replay."""


class ConfigError(AcaError, ValueError):
    """A run setting (a config value, a task setting, a checkpoint) that cannot be used."""


class DataError(AcaError):
    """A data set that is missing or not what it should be (a missing folder, a corrupt file)."""


class MissingExtraError(AcaError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, what: str, extra: str, error: ImportError | None = None) -> None:
        reason = f" ({error})" if error is not None else ""
        super().__init__(f"{what} needs the {extra!r} extra, which is not installed{reason}: "
                         f'pip install -e ".[{extra}]" -c constraints.txt')
        self.extra = extra
