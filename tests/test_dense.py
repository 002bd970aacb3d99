"""Dense output: output times are read off each accepted step's continuous extension
and never force a step. Interpolant orders, both time directions, many outputs in one
step, outputs on step ends, bounded-memory ACA, torchdiffeq's steps."""

import math

import pytest
import torch
import torchdiffeq
from odes import MLP, dense_output, relative_error, replay_steps, run, step
from test_solvers import VanDerPolRecorder

import aca
from aca.solvers import SOLVERS, AdaptiveSteps

pytestmark = pytest.mark.usefixtures("float64")

METHODS = ["euler", "midpoint", "rk4", "heun_euler", "bosh3", "dopri5", "tsit5", "dopri8",
           "heun2", "heun3", "rk4_38", "fehlberg2"]


def airy(t, y):
    """y'' = -(1 + t/2) y as a system: smooth, non-autonomous, no closed form needed."""
    return torch.cat([y[1:2], -y[0:1] * (1 + 0.5 * t)])


def _exact(t: float) -> torch.Tensor:
    y0 = torch.tensor([1.0, 0.0])
    ys, _, _ = run(airy, y0, [0.0, t], SOLVERS["dopri8"], AdaptiveSteps(1e-14, 1e-14, 8), 10**5)
    return ys[-1]


@pytest.mark.parametrize("name", METHODS)
def test_interpolant_has_its_stated_order(name):
    """Inside one step from the exact state the interpolant's error is O(h^(q+1)) for a
    continuous extension of order q (``dense_order``): halving h divides it by 2^(q+1)."""
    tableau = SOLVERS[name]
    t0, y0 = 0.3, _exact(0.3)
    hs = [0.4, 0.2, 0.1] if name == "dopri8" else [0.1, 0.05, 0.025]
    errors = []
    for h in hs:
        taken = step(airy, t0, y0, h, tableau, dense=True)
        errors.append(max((dense_output(y0, h, taken.stages, tableau, theta)
                           - _exact(t0 + theta * h)).abs().max().item()
                          for theta in (0.3, 0.5, 0.7)))
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(rate - (tableau.dense_order + 1)) < 0.3 for rate in observed), observed


@pytest.mark.parametrize("name", METHODS)
def test_interpolant_ends_at_the_step_and_starts_at_its_start(name):
    tableau = SOLVERS[name]
    y0 = _exact(0.3)
    taken = step(airy, 0.3, y0, 0.1, tableau, dense=True)
    # b_j(1) = b_j to the round-off of the coefficients (dopri8's reach 116: 2.8e-15 measured)
    assert torch.allclose(dense_output(y0, 0.1, taken.stages, tableau, 1.0), taken.y,
                          rtol=1e-14, atol=1e-14)
    assert torch.equal(dense_output(y0, 0.1, taken.stages, tableau, 0.0), y0)


def test_output_times_do_not_force_steps():
    """Two outputs or two hundred: the same accepted steps, the same evaluations."""
    func, y0 = MLP(), torch.randn(4, 3)
    counts = []
    for t in ([0.0, 3.0], torch.linspace(0.0, 3.0, 200)):
        stats = aca.SolveStats()
        aca.odeint(func, y0, t, rtol=1e-6, atol=1e-8, stats=stats)
        counts.append((stats.nfe_forward, stats.accepted, stats.rejected))
    landing = aca.SolveStats()
    aca.odeint(func, y0, torch.linspace(0.0, 3.0, 200), rtol=1e-6, atol=1e-8, interpolate=False,
               stats=landing)
    assert counts[0] == counts[1] and landing.accepted >= 199 > counts[0][1]


@pytest.mark.parametrize("ours,theirs", [("dopri5", "dopri5"), ("bosh3", "bosh3")])
def test_accepted_steps_equal_torchdiffeq_s_with_many_outputs(ours, theirs):
    """With 25 outputs and no step_t, torchdiffeq interpolates as we do: the same
    accepted steps, but for the last, which we shorten to land on t[-1] and torchdiffeq
    takes whole (and interpolates back). dopri5's interpolant is torchdiffeq's too."""
    tol = 1e-6 if ours == "dopri5" else 1e-5
    y0 = torch.tensor([2.0, 0.0])
    t = torch.linspace(0.0, 6.0, 25)
    func = VanDerPolRecorder()
    with torch.no_grad():
        theirs_ys = torchdiffeq.odeint(func, y0, t, method=theirs, rtol=tol, atol=tol)
    tableau = SOLVERS[ours]
    ys, counts, cp = run(func, y0, t.tolist(), tableau, AdaptiveSteps(tol, tol, tableau.order),
                         10**5)
    assert counts.accepted == len(func.accepted) > 40
    assert func.rejected - 1 <= counts.rejected <= func.rejected
    assert cp.times == pytest.approx([t0 for t0, _ in func.accepted], rel=1e-9)
    assert cp.steps[:-1] == pytest.approx([dt for _, dt in func.accepted[:-1]], rel=1e-9)
    assert cp.times[-1] + cp.steps[-1] == 6.0
    if ours == "dopri5":
        last = len(cp.times) - 1
        before_last = [k for k in range(25) if k not in cp.inside.get(last, []) and k < 24]
        assert torch.allclose(torch.stack(ys)[before_last], theirs_ys[before_last], rtol=1e-12,
                              atol=1e-12)


@pytest.mark.parametrize("solver,step_size", [("dopri5", None), ("tsit5", None), ("bosh3", None),
                                              ("dopri8", None), ("rk4", 0.01)])
def test_outputs_in_both_directions_of_time(solver, step_size):
    def riccati(t, y):
        return -2 * t * y**2

    t = torch.linspace(0.0, 2.0, 41)
    exact = (1 / (1 + t**2)).unsqueeze(1)
    options = {"solver": solver, "step_size": step_size, "rtol": 1e-9, "atol": 1e-12}
    ys = aca.odeint(riccati, exact[0], t, **options)
    back = aca.odeint(riccati, exact[-1], t.flip(0), **options)
    assert (ys - exact).abs().max() < 1e-7
    assert (back - exact.flip(0)).abs().max() < 1e-7


def test_many_outputs_inside_one_step_equal_naive():
    """Fifty outputs inside each rk4 step: ACA equals naive (no controller to differ)
    for y0, the parameters and every output time."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    grads = {}
    for gradient in ("aca", "naive"):
        t = torch.linspace(0.0, 1.0, 101, requires_grad=True)
        ys = aca.odeint(func, y0, t, solver="rk4", step_size=0.5, gradient=gradient)
        loss = (ys**2).sum() + ys.sin().mul(torch.linspace(0, 1, 101).view(-1, 1, 1)).sum()
        grads[gradient] = torch.autograd.grad(loss, [t, y0, *func.parameters()])
    assert relative_error(grads["aca"], grads["naive"]) < 1e-12
    assert grads["aca"][0][1:].abs().min() > 0  # every output time has its gradient


def test_outputs_exactly_on_step_ends():
    """Outputs placed on the accepted steps' ends are the step-end states (θ = 1) and
    leave the steps unchanged; ACA's gradients are still autograd through the steps."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    tableau = SOLVERS["dopri5"]
    _, _, cp = run(func, y0, [0.0, 2.0], tableau, AdaptiveSteps(1e-6, 1e-8, 5), 10**4)
    ends = sorted({*[t + h for t, h in zip(cp.times[:4], cp.steps[:4])], 2.0})
    stats = aca.SolveStats()
    t = torch.tensor([0.0, *ends], requires_grad=True)
    ys = aca.odeint(func, y0, t, rtol=1e-6, atol=1e-8, stats=stats)
    assert stats.accepted == len(cp.times)
    for k in range(1, 5):
        assert torch.allclose(ys[k], cp.states[k], rtol=1e-14, atol=1e-14)
    _, _, cp_ends = run(func, y0, t.tolist(), tableau, AdaptiveSteps(1e-6, 1e-8, 5), 10**4)
    got = torch.autograd.grad((ys**2).sum(), [t, y0, *func.parameters()])
    T = torch.tensor(t.tolist(), requires_grad=True)
    y0_ = y0.detach().requires_grad_()
    replayed = replay_steps(func, y0_, T, t.tolist(), cp_ends, tableau)
    want = torch.autograd.grad((replayed**2).sum(), [T, y0_, *func.parameters()])
    assert relative_error(got, want) < 1e-10


@pytest.mark.parametrize("max_checkpoints", [2, 3, 4])
def test_bounded_memory_aca_with_outputs_inside_steps(max_checkpoints):
    """Recomputing states between few checkpoints gives the same gradient, bit for bit,
    with many outputs inside the steps (y0, parameters, output times)."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)

    def grads(**extra):
        stats = aca.SolveStats()
        t = torch.linspace(0.0, 3.0, 60, requires_grad=True)
        ys = aca.odeint(func, y0, t, rtol=1e-7, atol=1e-9, stats=stats, **extra)
        return torch.autograd.grad((ys**2).sum(), [t, y0, *func.parameters()]), stats

    full, full_stats = grads()
    bounded, stats = grads(max_checkpoints=max_checkpoints)
    assert full_stats.accepted >= 10 and full_stats.accepted > 2 * max_checkpoints
    assert all(torch.equal(a, b) for a, b in zip(full, bounded))
    assert stats.nfe_backward > full_stats.nfe_backward  # states recomputed


def test_adjoint_between_interpolated_outputs_agrees_with_torchdiffeq():
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    grads = []
    for solve in (lambda t: aca.odeint(func, y0, t, gradient="adjoint", rtol=1e-9, atol=1e-11),
                  lambda t: torchdiffeq.odeint_adjoint(func, y0, t, rtol=1e-9, atol=1e-11)):
        t = torch.linspace(0.0, 2.0, 30, requires_grad=True)
        ys = solve(t)
        grads.append(torch.autograd.grad((ys**2).sum(), [t, y0, *func.parameters()]))
    assert relative_error(grads[0], grads[1]) < 1e-8  # measured 1.3e-9
