"""Implicit (stiff) solvers (issue 30): implicit Euler, Kværnø 3(2) and 5(4) with Newton
stages. Their order and L-stability, ACA's implicit-function-theorem gradient equal to
autograd through the converged Newton iterations, Robertson's gradient against an
independent reference (finite differences of scipy's Radau), and every combination that
cannot give a right gradient refused."""

import math

import numpy as np
import pytest
import torch
from conftest import script_module
from scipy.integrate import solve_ivp
from torch import nn

import aca
import aca.torchdiffeq as tdq
from aca.solvers import SOLVERS

pytestmark = pytest.mark.usefixtures("float64")

IMPLICIT = ["implicit_euler", "kvaerno3", "kvaerno5"]
TIGHT = {"newton_tol": 1e-10, "newton_iterations": 50}


def riccati(t, y):
    return -2 * t * y**2


@pytest.mark.parametrize("name", IMPLICIT)
def test_order_of_convergence(name):
    tableau = SOLVERS[name]
    h = {1: 0.02, 3: 0.05, 5: 0.1}[tableau.order]

    def error(step: float) -> float:
        ys = aca.odeint(riccati, torch.ones(1), [0.0, 2.0], solver=name, step_size=step, **TIGHT)
        return abs(ys[-1].item() - 1 / 5)

    observed = math.log2(error(h) / error(h / 2))
    assert abs(observed - tableau.order) < 0.35, observed


@pytest.mark.parametrize("name", IMPLICIT)
def test_l_stable_on_a_very_stiff_decay(name):
    """y' = -1e6 y with h = 1: the implicit methods damp (R(∞) = 0); dopri5 explodes."""
    y0 = torch.ones(1)
    ys = aca.odeint(lambda t, y: -1e6 * y, y0, [0.0, 5.0], solver=name, step_size=1.0)
    assert abs(ys[-1].item()) < 1e-5
    with pytest.raises(aca.NonFiniteStateError):
        aca.odeint(lambda t, y: -1e6 * y, y0, [0.0, 500.0], solver="dopri5", step_size=1.0)


@pytest.mark.parametrize("rtol", [1e-5, 1e-6, 1e-7])
def test_float32_below_its_resolution(rtol):
    """A Newton tolerance finer than float32 resolves (newton_tol·rtol < eps) stops at
    the residual's rounding instead of rejecting every step (MaxStepsExceededError before)."""
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float32)
    ys = aca.odeint(lambda t, y: -y, y0, t, solver="kvaerno5", rtol=rtol, atol=rtol * 1e-2)
    ys[-1].sum().backward()
    assert ys.dtype == torch.float32
    assert torch.allclose(ys[-1].double(), y0.detach().double() * math.exp(-1), atol=1e-5)
    assert torch.allclose(y0.grad.double(), torch.full((2,), math.exp(-1)), atol=1e-5)


@pytest.mark.parametrize("gradient", ["aca", "naive"])
def test_float32_below_its_resolution_per_sample(gradient):
    """The rounding floor per sample (each its own |z| and |base|), with naive's gradient
    through the iterations as with ACA's: samples 1e3 apart in size, each within float32's
    reach of the closed form, value and gradient."""
    y0 = torch.tensor([[1.0, 2.0], [1e3, -3e3]], dtype=torch.float32, requires_grad=True)
    k = torch.tensor(1.5, dtype=torch.float32, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float32)
    ys = aca.odeint(lambda t, y: -k * y, y0, t, solver="kvaerno5", rtol=1e-6, atol=1e-8,
                    per_sample=True, gradient=gradient, params=[k])
    ys[-1].sum().backward()
    decay = math.exp(-1.5)
    y0_ = y0.detach().double()
    assert torch.allclose(ys[-1].double(), y0_ * decay, rtol=1e-5, atol=1e-6)
    assert torch.allclose(y0.grad.double(), torch.full((2, 2), decay), rtol=1e-5)
    assert k.grad.double().item() == pytest.approx(-(y0_.sum() * decay).item(), rel=1e-4)


@pytest.mark.parametrize("gradient", ["aca", "naive"])
def test_a_sample_solves_as_it_would_alone(gradient):
    """per_sample=True: a sample whose Newton iterations converge at once gets the same
    bits beside a sample that needs many (a converged sample stops iterating) as alone,
    value and gradient."""
    def solve(y0):
        y0 = y0.clone().requires_grad_()
        ys = aca.odeint(lambda t, y: -y**3 + 20 * torch.sin(t).unsqueeze(-1), y0, [0.0, 0.4, 1.0],
                        solver="kvaerno5", rtol=1e-7, atol=1e-9, per_sample=True,
                        gradient=gradient)
        ys.square().sum().backward()
        return ys, y0.grad

    pair = torch.tensor([[0.01, 0.02], [40.0, -35.0]])
    ys, grad = solve(pair)
    alone, alone_grad = solve(pair[:1])
    assert torch.equal(ys[:, :1], alone) and torch.equal(grad[:1], alone_grad)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("gradient", ["aca", "naive"])
def test_a_non_contiguous_func_output_solves_as_a_contiguous_one(gradient, per_sample):
    """Newton keeps stages as columns and reshapes func's output: a transposed (strided)
    output gives the same bits, value and gradient, as the same values laid out densely."""
    y0 = torch.tensor([[0.3, -1.2, 2.0], [0.7, 1.1, -0.4]], requires_grad=True)

    def solve(func):
        ys = aca.odeint(func, y0, [0.0, 1.0], solver="kvaerno5", rtol=1e-8, atol=1e-10,
                        per_sample=per_sample, gradient=gradient)
        return ys, torch.autograd.grad(ys[-1].sum(), y0)[0]

    strided, dense = solve(lambda t, y: -2 * y.T.contiguous().T), solve(lambda t, y: -2 * y)
    assert not (-2 * y0.T.contiguous().T).is_contiguous()
    assert torch.equal(strided[0], dense[0]) and torch.equal(strided[1], dense[1])


@pytest.mark.parametrize("name", ["kvaerno3", "kvaerno5"])
def test_adaptive_steps_follow_the_slow_solution(name):
    """y' = -1e6 (y - cos t): after the transient, steps follow cos t, not the 1e-6 scale."""
    stats = aca.SolveStats()
    ys = aca.odeint(lambda t, y: -1e6 * (y - torch.cos(t)), torch.zeros(1), [0.0, 10.0],
                    solver=name, rtol=1e-6, atol=1e-9, stats=stats)
    exact = (1e12 * math.cos(10.0) + 1e6 * math.sin(10.0)) / (1e12 + 1)
    assert ys[-1].item() == pytest.approx(exact, abs=1e-5)
    assert stats.accepted < 500


@pytest.mark.parametrize("gradient", ["aca", "naive"])
def test_stats_count_the_jacobians_formed(gradient):
    """One Jacobian per attempted step for Newton; ACA's backward adds one per implicit
    stage of each rebuilt step (the implicit function theorem's derivative) and one
    for the rebuilt step's Newton; naive's backward forms none."""
    k = torch.tensor(3.0, requires_grad=True)
    stats = aca.SolveStats()
    ys = aca.odeint(lambda t, y: -k * y**3 + torch.sin(t), torch.ones(2), [0.0, 2.0],
                    solver="kvaerno3", rtol=1e-6, atol=1e-8, gradient=gradient, params=[k],
                    stats=stats)
    forward = stats.jacobians
    assert forward == stats.accepted + stats.rejected > 5
    ys[-1].sum().backward()
    implicit = sum(gamma != 0 for gamma in SOLVERS["kvaerno3"].diagonal)
    rebuilt = stats.accepted * (1 + implicit) if gradient == "aca" else 0
    assert stats.jacobians - forward == rebuilt


def cubic(k):
    return lambda t, y: -k * y**3 + torch.sin(t).reshape(-1, *(1,) * (y.dim() - 1))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("name", IMPLICIT)
def test_aca_equals_autograd_through_the_converged_steps(name, per_sample):
    """On a fixed grid (step sizes are constants for both): ACA's implicit-function-theorem
    derivative of each converged stage against naive's autograd through the Newton
    iterations, converged to round-off; parameters, y0 and (shared steps) the output
    times, read inside steps."""
    y0 = torch.tensor([[1.0, 0.5], [0.7, -0.3], [1.2, 0.1]])
    grads = {}
    for gradient in ("aca", "naive"):
        k = torch.tensor(1.3, requires_grad=True)
        start = y0.clone().requires_grad_()
        times = torch.tensor([0.0, 0.43, 1.07], requires_grad=not per_sample)
        ys = aca.odeint(cubic(k), start, times, solver=name, gradient=gradient,
                        step_size=0.05, params=[k], per_sample=per_sample, **TIGHT)
        (ys[1:] ** 2).sum().backward()
        grads[gradient] = torch.cat([k.grad.reshape(1), start.grad.reshape(-1),
                                     *([] if per_sample else [times.grad])])
    assert torch.allclose(grads["aca"], grads["naive"], rtol=1e-10, atol=1e-12)


def robertson(k):
    def f(t, y):
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k[0] * y1 + k[2] * y2 * y3,
                            k[0] * y1 - k[2] * y2 * y3 - k[1] * y2**2, k[1] * y2**2], -1)
    return f


ROBERTSON_K = (0.04, 3e7, 1e4)
ROBERTSON_WEIGHT = (1.0, 1e4, 0.0)  # y3 = 1 - y1 - y2: its weight would add nothing


@pytest.fixture(scope="module")
def robertson_reference() -> np.ndarray:
    """d(w·y(T))/d(log k) and d/dy0 by central differences of scipy's Radau at rtol 1e-12
    (with the exact Jacobian): independent of aca."""
    weight = np.array(ROBERTSON_WEIGHT)

    def loss(k, y0):
        def f(t, y):
            return [-k[0] * y[0] + k[2] * y[1] * y[2],
                    k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2, k[1] * y[1] ** 2]

        def jac(t, y):
            return [[-k[0], k[2] * y[2], k[2] * y[1]],
                    [k[0], -k[2] * y[2] - 2 * k[1] * y[1], -k[2] * y[1]], [0, 2 * k[1] * y[1], 0]]
        solution = solve_ivp(f, (0.0, 1e5), y0, method="Radau", rtol=1e-12, atol=1e-17, jac=jac)
        return weight @ solution.y[:, -1]

    k, y0 = np.array(ROBERTSON_K), np.array([1.0, 0.0, 0.0])
    grads = []
    for i in range(3):
        up, down = k.copy(), k.copy()
        up[i], down[i] = k[i] * (1 + 1e-4), k[i] * (1 - 1e-4)
        grads.append((loss(up, y0) - loss(down, y0)) / 2e-4)
    for i in range(3):
        step = np.eye(3)[i] * 1e-5
        grads.append((loss(k, y0 + step) - loss(k, y0 - step)) / 2e-5)
    return np.array(grads)


def test_robertson_gradient_matches_an_independent_reference(robertson_reference):
    """Robertson's kinetics over [0, 1e5] (stiffness ratio ~1e11): kvaerno5 in about 100
    steps; the gradient w.r.t. (k1, k2, k3) and y0 within 1e-6 of the reference. dopri5
    cannot take the same problem in 5 000 steps."""
    k = torch.tensor(ROBERTSON_K, requires_grad=True)
    y0 = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    stats = aca.SolveStats()
    ys = aca.odeint(robertson(k), y0, torch.tensor([0.0, 1e5]), solver="kvaerno5", rtol=1e-7,
                    atol=1e-11, params=[k], stats=stats)
    (torch.tensor(ROBERTSON_WEIGHT) * ys[-1]).sum().backward()
    ours = torch.cat([k.grad * k.detach(), y0.grad]).numpy()
    error = np.abs(ours - robertson_reference) / np.abs(robertson_reference)
    assert error.max() < 1e-6, error
    assert stats.accepted < 300
    with pytest.raises(aca.MaxStepsExceededError):
        aca.odeint(robertson(k.detach()), y0.detach(), torch.tensor([0.0, 1e5]),
                   solver="dopri5", rtol=1e-7, atol=1e-11, max_steps=5_000)


def test_a_newton_failure_rejects_the_step_or_is_named():
    """Adaptive: a stage that does not converge rejects the step, which shrinks; the
    solve still ends right. Fixed grid: NewtonConvergenceError names the way out."""
    stiff = lambda t, y: -1e3 * (y - torch.cos(t)) - y**3  # noqa: E731
    y0 = torch.tensor([10.0])
    runs = {}
    for iterations in (2, 10):
        stats = aca.SolveStats()
        ys = aca.odeint(stiff, y0, [0.0, 1.0], solver="kvaerno3", rtol=1e-6, atol=1e-9,
                        newton_iterations=iterations, stats=stats)
        runs[iterations] = (ys[-1].item(), stats.rejected)
    assert runs[2][1] > 10 * runs[10][1]  # two iterations fail far more often: rejected
    assert runs[2][0] == pytest.approx(runs[10][0], rel=1e-6)
    with pytest.raises(aca.NewtonConvergenceError, match="smaller step_size"):
        aca.odeint(stiff, y0, [0.0, 1.0], solver="implicit_euler", step_size=0.5,
                   newton_tol=1e-14, newton_iterations=1)


@pytest.mark.parametrize("per_sample", [False, True])
def test_naive_through_a_failed_newton_solve_stays_finite(per_sample):
    """A stage whose Newton iteration fails gets an infinite error (the step is rejected);
    naive's graph must not hold it (the norm's derivative there is 0 · inf = nan, which
    made every gradient nan): the gradient is ACA's, up to naive's step-size path."""
    k = torch.tensor(1e3, dtype=torch.float64, requires_grad=True)
    stiff = lambda t, y: -k * (y - torch.cos(t).reshape(-1, 1)) - y**3  # noqa: E731
    grads, counts = {}, {}
    for gradient in ("aca", "naive"):
        y0 = torch.tensor([[10.0], [0.5]] if per_sample else [[10.0]], dtype=torch.float64)
        stats = aca.SolveStats()
        ys = aca.odeint(stiff, y0, [0.0, 1.0], solver="kvaerno3", rtol=1e-5, atol=1e-8,
                        newton_iterations=2, gradient=gradient, params=[k], stats=stats,
                        per_sample=per_sample)
        grads[gradient] = torch.autograd.grad(ys[-1].sum(), [k])[0]
        counts[gradient] = (stats.accepted, stats.rejected)
    assert counts["aca"] == counts["naive"] and counts["aca"][1] > 50  # Newton failures
    assert grads["naive"].item() == pytest.approx(grads["aca"].item(), rel=1e-3)


def test_a_newton_failure_at_min_step_fails_the_solve():
    """torchdiffeq's min_step accepts a step at min_step whatever its error, but not one
    whose stages were not solved (it returned nan, or moved on with unconverged stages
    whose ACA gradient would not be the derivative of the solution): a named error."""
    stiff = lambda t, y: -1e3 * (y - torch.cos(t)) - y**3  # noqa: E731
    # Newton oscillates on a sign (a zero Jacobian) with finite values: without the check
    # the solve returned 499 or -798 where y stays near 0 after t = 1e-3
    switch = lambda t, y: -1e3 * torch.sign(y)  # noqa: E731
    for func, y0 in ((stiff, 100.0), (switch, 1.0)):
        for min_step in (0.2, 0.5):
            with pytest.raises(aca.NonFiniteStateError, match="Newton iteration failed"):
                tdq.odeint(func, torch.tensor([y0], dtype=torch.float64),
                           torch.tensor([0.0, 1.0], dtype=torch.float64), method="kvaerno3",
                           options={"min_step": min_step, "max_num_steps": 1000})


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("reverse", ["kvaerno3", "kvaerno5"])
def test_the_adjoint_solves_its_reverse_ode_with_an_implicit_method(reverse, per_sample):
    """Newton on the augmented system [y, a(, ∂L/∂θ)] with its Jacobian from second
    derivatives of func; per sample, the parameter quadrature over the implicit stages (a
    stage's own γ·k_i left out made it 6e-3 off). Against ACA at tight tolerances, whose
    gradient is the discrete one: the continuous adjoint agrees to the tolerance."""
    k = torch.tensor(1.0, requires_grad=True)
    grads = []
    for gradient in (aca.Adjoint(solver=reverse, rtol=1e-10, atol=1e-12), "aca"):
        k.grad = None
        y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], requires_grad=True)
        with aca.track_stats() as stats:
            ys = aca.odeint(cubic(k), y0, [0.0, 1.0, 2.0], solver="kvaerno5", rtol=1e-10,
                            atol=1e-12, gradient=gradient, params=[k], per_sample=per_sample)
            (ys**2).sum().backward()
        grads.append(torch.cat([k.grad.reshape(1), y0.grad.reshape(-1)]))
    assert stats.jacobians > 0
    assert torch.linalg.vector_norm(grads[0] - grads[1]) < 1e-7 * torch.linalg.vector_norm(grads[1])


@pytest.mark.parametrize("per_sample", [False, True])
def test_the_reverse_newton_uses_the_augmented_system_s_jacobian(per_sample):
    """y' = k·A y: the state and adjoint parts are linear, so Newton with the exact
    Jacobian takes one update per stage and one evaluation to confirm it (1 + 1 + 6·2 = 14
    evaluations per kvaerno5 attempt with the Jacobian's own and the explicit stage; the
    bilinear parameter part and the per-sample quadrature add a few: measured 18.8 and 20).
    A Jacobian left at zero (the dynamics not differentiated) is a fixed-point iteration:
    36 and 44."""
    k = torch.tensor(1.0, requires_grad=True)
    matrix = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]])
    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    with aca.track_stats() as stats:  # the solve's counters, backward's included
        ys = aca.odeint(lambda t, y: k * y @ matrix.T, y0, [0.0, 1.0], solver="kvaerno5",
                        rtol=1e-8, atol=1e-10, gradient="adjoint", params=[k],
                        per_sample=per_sample)
        forward_jacobians = stats.jacobians
        (ys[-1] ** 2).sum().backward()
    attempts = stats.jacobians - forward_jacobians  # one per attempted reverse step
    assert attempts > 0 and stats.nfe_backward <= 25 * attempts


def test_an_implicit_euler_reverse_quadrature_includes_its_implicit_first_stage():
    """Implicit Euler's only stage is implicit (the per-sample quadrature took the step's
    start for it): on one grid the shared and per-sample adjoints agree. The forward is
    explicit: the reverse solve's Newton does not need an implicit forward."""
    k = torch.tensor(1.0, requires_grad=True)
    grads = []
    for per_sample in (False, True):
        k.grad = None
        ys = aca.odeint(cubic(k), torch.tensor([[1.0, 2.0], [0.5, -1.0]]), [0.0, 1.0],
                        solver="dopri5", rtol=1e-10, atol=1e-12, params=[k],
                        per_sample=per_sample, gradient=aca.Adjoint(solver="implicit_euler",
                                                                    step_size=0.01))
        (ys**2).sum().backward()
        grads.append(k.grad.item())
    assert grads[1] == pytest.approx(grads[0], rel=1e-9)


def test_a_stiff_reverse_solve_fails_with_an_error_not_a_wrong_gradient():
    """Robertson backwards in time: its stiff decaying modes grow in reverse, so the
    adjoint's reconstruction of y blows up whatever the method; an ODEError, while ACA
    (which never solves y backwards) gives the gradient."""
    k = torch.tensor([0.04, 3e7, 1e4], requires_grad=True)
    y0 = torch.tensor([1.0, 0.0, 0.0])
    with aca.track_stats() as stats:
        ys = aca.odeint(robertson(k), y0, [0.0, 1.0], solver="kvaerno5", rtol=1e-6,
                        atol=1e-10, gradient="adjoint", params=[k])
        forward_jacobians = stats.jacobians
        with pytest.raises(aca.ODEError, match="non-finite"):
            ys[-1, 1].backward()
    # the failed reverse solve's work is counted (it was dropped with the exception)
    assert stats.nfe_backward > 0 and stats.jacobians > forward_jacobians


def test_an_adjoint_reverse_jacobian_too_large_is_refused_before_the_forward_solve():
    """Shared steps put the parameters into the reverse solve's state: an MLP's 4,504
    exceed the dense Jacobian's 2048 values, refused up front with the ways out; per
    sample they go by quadrature and the reverse state is [y_b, a_b]."""
    net = nn.Sequential(nn.Linear(4, 500), nn.Tanh(), nn.Linear(500, 4)).double()
    y0 = torch.ones(2, 4)
    calls = []

    def func(t, y):
        calls.append(1)
        return net(y)

    with pytest.raises(aca.InvalidOptionError, match=r"augmented state .*per_sample=True"):
        aca.odeint(func, y0, [0.0, 0.1], solver="kvaerno5", gradient="adjoint",
                   params=list(net.parameters()))
    assert not calls  # before any evaluation
    ys = aca.odeint(func, y0, [0.0, 0.1], solver="kvaerno5", gradient="adjoint",
                    params=list(net.parameters()), per_sample=True)
    ys[-1].sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_second_order_gradients_through_implicit_steps_are_naive_s_or_refused():
    """ACA's stage derivative (z* + δ - δ.detach(), the iteration matrix out of the graph)
    is exact to first order only: its second derivative was 0.069 where central
    differences of the first give 0.226, silently. Refused; naive (autograd through the
    Newton iterations) gives it."""
    def gradient(k_value: float, method: str, create_graph: bool):
        k = torch.tensor(k_value, requires_grad=True)
        ys = aca.odeint(lambda t, y: -k * y**3, torch.tensor([1.0, 0.5]), [0.0, 1.0],
                        solver="kvaerno3", step_size=0.1, gradient=method, params=[k], **TIGHT)
        return k, torch.autograd.grad(ys[-1].sum(), k, create_graph=create_graph)[0]

    with pytest.raises(aca.ODEError, match="higher-order.*kvaerno3.*'naive'"):
        gradient(1.0, "aca", True)
    k, first = gradient(1.0, "naive", True)
    (second,) = torch.autograd.grad(first, k)
    differences = (gradient(1.0 + 1e-5, "naive", False)[1]
                   - gradient(1.0 - 1e-5, "naive", False)[1]) / 2e-5
    assert second.item() == pytest.approx(differences.item(), rel=1e-7)


def test_a_singular_iteration_matrix_is_a_newton_failure_not_a_torch_error():
    """I - hγJ singular (implicit Euler, h = 0.5, f = 2y): lu_factor raised a bare
    RuntimeError; now the stage fails to converge and the step is refused clearly."""
    with pytest.raises(aca.NewtonConvergenceError, match="did not converge"):
        aca.odeint(lambda t, y: 2 * y, torch.ones(1), [0.0, 1.0], solver="implicit_euler",
                   step_size=0.5)


def test_the_adjoint_reverse_solver_is_checked():
    y0 = torch.ones(1, requires_grad=True)
    with pytest.raises(aca.UnknownSolverError, match="'bogus'"):
        aca.Adjoint(solver="bogus")
    with pytest.raises(aca.StepSizeRequiredError, match="step_size"):
        aca.odeint(lambda t, y: -y, y0, [0.0, 1.0], gradient=aca.Adjoint(solver="euler"))


def test_random_draws_inside_an_implicit_stage_are_refused():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).double().train()
    with pytest.raises(aca.RandomStateError, match="Newton"):
        aca.odeint(lambda t, y: model(y), torch.ones(1, 2), [0.0, 1.0], solver="kvaerno3",
                   params=list(model.parameters()))


def test_a_state_too_large_for_a_dense_jacobian_is_refused():
    with pytest.raises(aca.InvalidOptionError, match="per_sample=True"):
        aca.odeint(lambda t, y: -y, torch.ones(100, 30), [0.0, 1.0], solver="kvaerno3")
    ys = aca.odeint(lambda t, y: -y, torch.ones(100, 30), [0.0, 1.0], solver="kvaerno3",
                    per_sample=True, rtol=1e-8, atol=1e-10)
    assert torch.allclose(ys[-1], torch.full((100, 30), math.exp(-1.0)), rtol=1e-7)


def test_torchdiffeq_names_them_as_aca_does():
    y0 = torch.tensor([1.0, 0.5])
    ours = aca.odeint(lambda t, y: -y, y0, [0.0, 1.0], solver="kvaerno5", rtol=1e-8,
                      atol=1e-10)
    dropin = tdq.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), method="kvaerno5",
                        rtol=1e-8, atol=1e-10)
    assert torch.allclose(ours, dropin, rtol=1e-12)


def test_a_func_mixing_samples_is_refused_per_sample():
    """Per-sample Newton uses one Jacobian block per sample: a func coupling the samples
    would make ACA's implicit-function-theorem derivative miss the coupling."""
    mixing = lambda t, y: -y + 0.1 * y.mean(0, keepdim=True)  # noqa: E731
    with pytest.raises(aca.InvalidOptionError, match="mixes samples"):
        aca.odeint(mixing, torch.ones(3, 2), [0.0, 1.0], solver="kvaerno3", per_sample=True)
    ys = aca.odeint(mixing, torch.ones(3, 2), [0.0, 1.0], solver="kvaerno3")  # shared: fine
    assert torch.isfinite(ys).all()


def test_an_odeblock_trains_with_an_implicit_solver():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    block = aca.ODEBlock(net, solver="kvaerno3", rtol=1e-6, atol=1e-8)
    x = torch.randn(4, 3)
    block(x).square().sum().backward()
    ours = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    block = aca.ODEBlock(net, solver="kvaerno3", rtol=1e-6, atol=1e-8, gradient="naive")
    block(x).square().sum().backward()
    for mine, naive in zip(ours, (p.grad for p in net.parameters())):
        assert torch.allclose(mine, naive, rtol=1e-3, atol=1e-6)  # naive also moves h


@pytest.mark.parametrize("entry", ["odeint", "odeint_aca"])
def test_a_torchdiffeq_event_time_and_its_gradient(entry):
    """y' = -k y from 1 until y = 1/2: t* = ln 2 / k, dt*/dk = -ln 2 / k²."""
    k = torch.tensor(2.0, requires_grad=True)
    kwargs = {"params": (k,)} if entry == "odeint_aca" else {}
    event_t, _ = tdq.odeint_event(lambda t, y: -k * y, torch.tensor([1.0]), torch.tensor(0.0),
                                  event_fn=lambda t, y: y[0] - 0.5, method="kvaerno5",
                                  rtol=1e-10, atol=1e-12, odeint_interface=getattr(tdq, entry),
                                  **kwargs)
    event_t.backward()
    assert event_t.item() == pytest.approx(math.log(2) / 2, rel=1e-9)
    assert k.grad.item() == pytest.approx(-math.log(2) / 4, rel=1e-8)


def test_stiff_benchmark_solves_what_scipy_solves(robertson_reference):
    """scripts/bench_stiff.py: the two libraries' vector fields and Jacobians are one
    problem (aca's end state and gradient within the tolerance of scipy's tight Radau)
    and the table has a row per solver."""
    with script_module("bench_stiff") as bench:
        problem = bench.PROBLEMS["robertson"]
        y, k = np.array([0.9, 2e-5, 0.1]), np.array(problem.params)
        f = problem.torch_f(torch.zeros(()), torch.tensor(y), torch.tensor(k)).numpy()
        assert np.allclose(f, problem.numpy_f(0.0, y, k), rtol=1e-14)
        jac = torch.autograd.functional.jacobian(
            lambda v: problem.torch_f(torch.zeros(()), v, torch.tensor(k)), torch.tensor(y))
        assert np.allclose(jac.numpy(), problem.jac(0.0, y, k), rtol=1e-14)
        exact = bench.reference(problem)
        assert np.allclose(exact[1], robertson_reference, rtol=1e-6)  # the same loss
        rows = bench.rows_for(problem, 1e-6, ["kvaerno5"], repeats=1, exact=exact)
    assert [row["solver"] for row in rows] == ["scipy Radau", "scipy BDF", "scipy LSODA",
                                               "aca kvaerno5"]
    assert rows[-1]["end_error"] < 1e-4 and rows[-1]["fwd_bwd_s"] > 0
    assert rows[-1]["grad_error"] < 1e-4
