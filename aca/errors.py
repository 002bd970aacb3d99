"""Exceptions raised by aca. Each message names the bad value and what is valid."""


class ODEError(Exception):
    """Base class of every error aca raises for bad input or a failed solve."""


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


class RandomStateError(ODEError, RuntimeError):
    """``func`` draws random numbers that the gradient method cannot replay."""
