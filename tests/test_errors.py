"""Every bad input raises the documented exception with a message naming the bad
value and what is valid."""

import math

import pytest
import torch

import aca


def decay(t, y):
    return -y


Y0 = torch.ones(2)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"solver": "rk99"}, aca.UnknownSolverError, r"'rk99'.*dopri5.*tsit5"),
    ({"gradient": "backprop"}, aca.UnknownGradientError, r"'backprop'.*aca, adjoint, naive"),
    ({"solver": "rk4"}, aca.StepSizeRequiredError, r"'rk4' is fixed-step.*step_size"),
    ({"solver": "euler", "step_size": -0.1}, aca.StepSizeRequiredError, r"positive.*-0.1"),
    ({"rtol": -1e-3}, aca.InvalidOptionError, r"rtol.*-0.001"),
    ({"atol": math.nan}, aca.InvalidOptionError, r"atol.*nan"),
    ({"rtol": 0.0, "atol": 0.0}, aca.InvalidOptionError, r"both be 0"),
    ({"max_steps": 0}, aca.InvalidOptionError, r"max_steps.*0"),
    ({"max_checkpoints": 1}, aca.InvalidOptionError, r"max_checkpoints.*>= 2.*1"),
])
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        aca.odeint(decay, Y0, [0.0, 1.0], **kwargs)


def test_errors_are_value_errors_and_ode_errors():
    with pytest.raises(ValueError):
        aca.odeint(decay, Y0, [0.0, 1.0], solver="nope")
    assert issubclass(aca.MaxStepsExceededError, aca.ODEError)


@pytest.mark.parametrize("t", [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.5, 0.7], []])
def test_non_monotone_times(t):
    with pytest.raises(aca.NonMonotoneTimeError, match="t must"):
        aca.odeint(decay, Y0, t)


def test_two_dimensional_times():
    with pytest.raises(aca.NonMonotoneTimeError, match="1-D"):
        aca.odeint(decay, Y0, torch.zeros(2, 2))


def test_integer_state():
    with pytest.raises(aca.InvalidOptionError, match="floating-point.*int64"):
        aca.odeint(decay, torch.ones(2, dtype=torch.int64), [0.0, 1.0])


def test_non_finite_initial_state():
    with pytest.raises(aca.NonFiniteStateError, match="y0"):
        aca.odeint(decay, torch.tensor([1.0, math.inf]), [0.0, 1.0])


def test_state_becoming_non_finite_on_a_fixed_grid():
    def blow_up(t, y):  # y' = y², y(0) = 1: infinite at t = 1
        return y**2
    with pytest.raises(aca.NonFiniteStateError, match="non-finite"):
        aca.odeint(blow_up, torch.ones(1, dtype=torch.float64), [0.0, 2.0], solver="rk4",
                   step_size=0.1)


def test_derivative_becoming_non_finite_in_an_adaptive_solve():
    def broken(t, y):
        return y * math.nan if t > 0.5 else -y
    with pytest.raises(aca.NonFiniteStateError, match="non-finite.*near t=0.5"):
        aca.odeint(broken, torch.ones(1, dtype=torch.float64), [0.0, 1.0])


def test_max_steps_exceeded():
    with pytest.raises(aca.MaxStepsExceededError, match="max_steps=5.*t="):
        aca.odeint(lambda t, y: torch.cos(50 * t) * y, Y0, [0.0, 10.0], rtol=1e-8, atol=1e-10,
                   max_steps=5)
    with pytest.raises(aca.MaxStepsExceededError, match="max_steps=5"):
        aca.odeint(decay, Y0, [0.0, 10.0], solver="euler", step_size=0.1, max_steps=5)


def test_step_size_underflow_at_a_singularity():
    def blow_up(t, y):  # y' = y², y(0) = 1: infinite at t = 1
        return y**2
    with pytest.raises(aca.StepSizeUnderflowError, match="underflowed at t=0.99"):
        aca.odeint(blow_up, torch.ones(1, dtype=torch.float64), [0.0, 2.0], max_steps=100_000)


def test_odeblock_checks_options_when_built():
    with pytest.raises(aca.UnknownSolverError):
        aca.ODEBlock(torch.nn.Linear(2, 2), solver="rk5")
    with pytest.raises(TypeError, match="unknown ODEBlock option.*'tol'"):
        aca.ODEBlock(torch.nn.Linear(2, 2), tol=1e-3)


@pytest.mark.parametrize("per_sample", [False, True])
def test_atol_zero_with_a_zero_component_names_the_zero_error_scale(per_sample):
    """issue 25: a MaxStepsExceededError after spinning (per-sample) or 'non-finite'."""
    with pytest.raises(aca.InvalidOptionError, match="atol=0 and a state component is exactly 0"):
        aca.odeint(decay, torch.tensor([[1.0, 0.0]]), [0.0, 1.0], atol=0.0, per_sample=per_sample)
    ys = aca.odeint(decay, torch.tensor([[1.0, 2.0]]), [0.0, 1.0], atol=0.0, per_sample=per_sample)
    assert torch.allclose(ys[-1], torch.tensor([[1.0, 2.0]]) * math.exp(-1), rtol=1e-3)


def test_times_beyond_their_resolution_underflow():
    """t = [1e16, 1e16 + 2] in float64: steps below the spacing of t (2) do not move it
    (issue 26: 0.333 returned instead of e^-2 = 0.135, silently)."""
    with pytest.raises(aca.StepSizeUnderflowError, match="resolution of t"):
        aca.odeint(decay, torch.ones(1, dtype=torch.float64), [1e16, 1e16 + 2])
