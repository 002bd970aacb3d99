"""``aca.torchdiffeq``: torchdiffeq's API on aca's core, checked against torchdiffeq
itself (outputs and gradients where the algorithms are the same), against analytic
values, and for the cases where a user could get a silently wrong answer."""

import math

import pytest
import torch
import torchdiffeq
from odes import run, step
from torch import nn

import aca
import aca.torchdiffeq as tdq
from aca.solvers import SOLVERS, ConstantSteps

FIXED = ["euler", "midpoint", "heun2", "heun3", "rk4"]
SAME_ADAPTIVE = ["bosh3", "dopri5", "dopri8"]  # the same tableau and controller as torchdiffeq


class Net(nn.Module):
    def __init__(self, dim: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(dim, dim).double()
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return torch.tanh(self.lin(y)) * torch.cos(t)


def _y0(dim: int = 3) -> torch.Tensor:
    return torch.linspace(-0.5, 0.8, dim, dtype=torch.float64).requires_grad_()


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True)


def _close(a, b, tol):
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() <= tol * (1 + y.abs().max().item()), (x, y)


# --------------------------------------------------------------------------- methods


def test_registry_has_torchdiffeq_methods_and_keeps_classic_rk4():
    assert set(tdq.METHODS) >= {"euler", "midpoint", "heun2", "heun3", "rk4", "adaptive_heun",
                                "fehlberg2", "bosh3", "tsit5", "dopri5", "dopri8"}
    assert SOLVERS["rk4"].c == (0.0, 0.5, 0.5, 1.0)  # aca's rk4 stays the classic one
    assert SOLVERS[tdq.METHODS["rk4"]].c == (0.0, 1 / 3, 2 / 3, 1.0)  # torchdiffeq's: 3/8 rule


@pytest.mark.parametrize("name,order", [("heun2", 2), ("heun3", 3), ("rk4_38", 4),
                                        ("fehlberg2", 2)])
def test_new_tableaus_have_their_order(name, order):
    """Global error on y' = -2 t y² over [0, 2] at h and h/2: log2 ratio = order."""
    def error(h):
        y0 = torch.ones(1, dtype=torch.float64)
        ys, _, _ = run(lambda t, y: -2 * t * y**2, y0, [0.0, 2.0], SOLVERS[name],
                       ConstantSteps(h))
        return abs(ys[-1].item() - 0.2)
    observed = math.log2(error(0.05) / error(0.025))
    assert abs(observed - order) < 0.3, observed
    tableau = SOLVERS[name]
    for row, c in zip(tableau.a, tableau.c):  # consistency: rows sum to the nodes
        assert abs(sum(row) - c) < 1e-15
    assert abs(sum(tableau.b) - 1) < 1e-15


def test_fehlberg2_error_estimate_is_second_order_local_error():
    y = torch.tensor([0.9], dtype=torch.float64)

    def estimate(h):
        return step(lambda t, y: -2 * t * y**2, 0.3, y, h, SOLVERS["fehlberg2"],
                    with_error=True).error.abs().item()
    assert abs(math.log2(estimate(0.05) / estimate(0.025)) - 2) < 0.3


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_unsupported_methods_name_the_supported_ones(method):
    with pytest.raises(aca.UnknownSolverError, match="Runge-Kutta methods only.*dopri5"):
        tdq.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method=method)
    with pytest.raises(aca.UnknownSolverError, match="choose one of"):
        tdq.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="rk5")


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize("options", [None, {"step_size": 0.15}, {"step_size": 0.15,
                                                                    "interp": "cubic"}])
def test_fixed_grid_outputs_and_gradients_equal_torchdiffeq(method, options):
    """Same grid, same steps, same interpolation: equal to round-off, gradients to
    y0, the parameters and every output time included."""
    results = []
    for library in (tdq, torchdiffeq):
        func, y0 = Net(), _y0()
        t = torch.tensor([0.0, 0.4, 0.5, 1.3], dtype=torch.float64, requires_grad=True)
        ys = library.odeint(func, y0, t, method=method, options=options)
        weights = torch.linspace(1, 2, ys.numel(), dtype=ys.dtype).view_as(ys)
        results.append([ys, *_grads((ys * weights).sum(), (y0, t, *func.parameters()))])
    _close(results[0], results[1], 1e-12)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_grid_adjoint_equals_torchdiffeq_adjoint(method):
    """The output times as the grid: both restart the reverse solve from the forward
    state at each of them (with a finer step_size, aca restarts at every grid point and
    torchdiffeq only at output times: gradients then differ by O(step_size))."""
    results = []
    for library in (tdq, torchdiffeq):
        func, y0 = Net(), _y0()
        t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
        ys = library.odeint_adjoint(func, y0, t, method=method)
        results.append([ys, *_grads(ys[1:].pow(2).sum(), (y0, *func.parameters()))])
    _close(results[0], results[1], 1e-10)


class Autonomous(Net):
    def forward(self, t, y):
        self.nfe += 1
        return torch.tanh(self.lin(y))


@pytest.mark.parametrize("method", SAME_ADAPTIVE)
def test_adaptive_outputs_and_gradients_equal_torchdiffeq(method):
    """Landing on the one output time (torchdiffeq's step_t), both take the same steps;
    odeint's gradient holds the step sizes after the first constant, as torchdiffeq's
    does: solutions and gradients agree to round-off."""
    results, nfes = [], []
    for library in (tdq, torchdiffeq):
        func, y0 = Net(), _y0()
        t = torch.tensor([0.0, 1.5], dtype=torch.float64)
        ys = library.odeint(func, y0, t, method=method, rtol=1e-6, atol=1e-8,
                            options={"step_t": t})
        results.append([ys, *_grads(ys[-1].pow(2).sum(), (y0, *func.parameters()))])
        nfes.append(func.nfe)
    assert nfes[0] == nfes[1]
    _close(results[0], results[1], 1e-10)


@pytest.mark.parametrize("method", SAME_ADAPTIVE)
def test_adaptive_adjoint_equals_torchdiffeq_adjoint(method):
    """The continuous adjoint of an autonomous func (torchdiffeq's time-gradient part of
    the augmented state is then zero): the same forward and reverse steps, the same
    gradients to round-off."""
    results, nfes = [], []
    for library in (tdq, torchdiffeq):
        func, y0 = Autonomous(), _y0()
        t = torch.tensor([0.0, 1.5], dtype=torch.float64)
        ys = library.odeint_adjoint(func, y0, t, method=method, rtol=1e-6, atol=1e-8,
                                    options={"step_t": t})
        forward = func.nfe
        results.append([ys, *_grads(ys[-1].pow(2).sum(), (y0, *func.parameters()))])
        nfes.append((forward, func.nfe - forward))
    assert nfes[0] == nfes[1]
    _close(results[0], results[1], 1e-10)


def test_adjoint_tolerances_are_the_reverse_solves_own():
    """``adjoint_rtol``/``adjoint_atol`` set the reverse solve's tolerances: with tight
    forward and loose reverse ones, or the other way round, the backward takes
    torchdiffeq's steps for those tolerances (the same NFE, gradients to round-off), and
    the backward NFE differs from the reverse solve at the forward tolerances."""
    backward = {}
    for reverse in (None, (1e-3, 1e-5), (1e-9, 1e-11)):
        tolerances = {} if reverse is None else dict(zip(("adjoint_rtol", "adjoint_atol"),
                                                         reverse))
        results, nfes = [], []
        for library in (tdq, torchdiffeq):
            func, y0 = Autonomous(), _y0()
            t = torch.tensor([0.0, 1.5], dtype=torch.float64)
            ys = library.odeint_adjoint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-8,
                                        options={"step_t": t}, **tolerances)
            forward = func.nfe
            results.append([ys, *_grads(ys[-1].pow(2).sum(), (y0, *func.parameters()))])
            nfes.append(func.nfe - forward)
        assert nfes[0] == nfes[1], reverse
        _close(results[0], results[1], 1e-10)
        backward[reverse] = nfes[0]
    assert backward[(1e-3, 1e-5)] < backward[None] < backward[(1e-9, 1e-11)], backward


@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2", "tsit5"])
def test_other_adaptive_methods_reach_the_tolerance(method):
    """adaptive_heun and fehlberg2 are the textbook pairs here (torchdiffeq reuses a
    stage at the lower-order solution), tsit5 is aca's: same answer within tolerance."""
    func, y0 = Net(), _y0()
    t = torch.linspace(0, 1.5, 4, dtype=torch.float64)
    with aca.track_stats() as stats:
        ys = tdq.odeint(func, y0, t, method=method, rtol=1e-8, atol=1e-10)
    exact = torchdiffeq.odeint(func, y0, t, method="dopri8", rtol=1e-13, atol=1e-13)
    assert (ys - exact).abs().max() < 1e-6
    if method != "tsit5":  # two (Heun) or three (Fehlberg) evaluations per attempt
        per_step = {"adaptive_heun": 2, "fehlberg2": 3}[method]
        # + 1: the initial step size's trial evaluation (the first stage is reused)
        assert stats.nfe_forward == per_step * (stats.accepted + stats.rejected) + 1


def test_reversed_time_matches_torchdiffeq():
    func, y0 = Net(), _y0()
    t = torch.tensor([1.0, 0.2, -0.5], dtype=torch.float64)
    ours = tdq.odeint(func, y0, t, method="rk4", options={"step_size": 0.1})
    theirs = torchdiffeq.odeint(func, y0, t, method="rk4", options={"step_size": 0.1})
    assert (ours - theirs).abs().max() < 1e-12
    ours = tdq.odeint(func, y0, t, rtol=1e-9, atol=1e-11)
    theirs = torchdiffeq.odeint(func, y0, t, rtol=1e-9, atol=1e-11)
    assert (ours - theirs).abs().max() < 1e-8


@pytest.mark.parametrize("entry", [tdq.odeint, tdq.odeint_aca])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"step_size": 0.2}),
                                            ("bosh3", {"jump_t": torch.tensor([0.7])})])
def test_gradcheck_on_y0_and_t(entry, method, options):
    func = Net()

    def solve(y0, t):
        return entry(func, y0, t, method=method, options=options, rtol=1e-9, atol=1e-11)
    y0 = _y0()
    # off the step_size grid: linear interpolation has kinks at its points
    t = torch.tensor([0.0, 0.55, 1.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, t))


def test_adjoint_gradients_approach_odeint_s():
    results = []
    for entry in (tdq.odeint, tdq.odeint_adjoint, tdq.odeint_aca):
        func, y0 = Net(), _y0()
        t = torch.tensor([0.0, 0.6, 1.1], dtype=torch.float64, requires_grad=True)
        ys = entry(func, y0, t, rtol=1e-10, atol=1e-12)
        results.append(_grads(ys.pow(2).sum(), (y0, t, *func.parameters())))
    _close(results[1], results[0], 1e-7)
    _close(results[2], results[0], 1e-7)


# --------------------------------------------------------------------------- tuple states


def _tuple_func(t, state):
    x, v = state  # shapes (2,) and (2, 1)
    return v.reshape(2), (-x - 0.1 * v.reshape(2)).reshape(2, 1)


@pytest.mark.parametrize("entry", ["odeint", "odeint_adjoint", "odeint_aca"])
def test_tuple_state_equals_the_flat_solve(entry):
    x0 = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([[0.0], [0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    kwargs = {"adjoint_params": ()} if entry == "odeint_adjoint" else {}
    xs, vs = getattr(tdq, entry)(_tuple_func, (x0, v0), t, **kwargs)
    assert xs.shape == (5, 2) and vs.shape == (5, 2, 1)
    grads = _grads(xs[-1].sum() + vs[-1].sum(), (x0, v0))

    def flat(t, y):
        return torch.cat([y[2:], -y[:2] - 0.1 * y[2:]])
    y0 = torch.cat([x0, v0.reshape(-1)])
    ys = torchdiffeq.odeint(flat, y0, t, rtol=1e-7, atol=1e-9,
                            options={"norm": lambda e: torch.stack([
                                e[:2].pow(2).mean().sqrt(), e[2:].pow(2).mean().sqrt()]).max()})
    assert (xs - ys[:, :2]).abs().max() < 1e-6
    reference = _grads(ys[-1].sum(), (x0, v0))
    _close(grads, reference, 1e-6)


def test_tuple_state_norm_sees_the_tuple_and_func_must_return_one():
    seen = []

    def norm(parts):
        seen.append(tuple(p.shape for p in parts))
        return max(p.abs().max() for p in parts)
    y0 = (torch.ones(()), torch.ones(2, 2))
    tdq.odeint(lambda t, y: (-y[0], -y[1]), y0, torch.tensor([0.0, 1.0]),
               options={"norm": norm})
    assert seen and seen[0] == ((), (2, 2))
    with pytest.raises(aca.ODEError, match="tuple of 2 tensors"):
        tdq.odeint(lambda t, y: -y[0], y0, torch.tensor([0.0, 1.0]))


# --------------------------------------------------------------------------- events


def _decay():
    class Decay(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

        def forward(self, t, y):
            return -self.k * y
    return Decay()


@pytest.mark.parametrize("entry", ["odeint", "odeint_adjoint", "odeint_aca"])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", {"step_size": 0.01})])
def test_event_time_and_its_gradient_are_analytic(entry, method, options):
    """y' = -k y from y0 until y = 1/2: t_e = ln(2 y0) / k."""
    func = _decay()
    y0 = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    event_t, ys = getattr(tdq, entry)(func, y0, t, method=method, options=options,
                                      event_fn=lambda t, y: y.sum() - 0.5)
    k = func.k.item()
    assert ys.shape == (2, 1) and abs(event_t.item() - math.log(3.0) / k) < 1e-6
    assert abs(ys[-1].item() - 0.5) < 1e-6
    g_y0, g_k, g_t = _grads(event_t, (y0, func.k, t))
    assert abs(g_y0.item() - 1 / (k * 1.5)) < 1e-6
    assert abs(g_k.item() + math.log(3.0) / k**2) < 1e-6
    assert abs(g_t[0].item() - 1.0) < 1e-6 and g_t[1].item() == 0.0
    # the state at the event is 1/2 whatever the parameters: its total derivative is 0
    g_y0, g_k = _grads(ys[-1].sum(), (y0, func.k))
    assert abs(g_y0.item()) < 1e-6 and abs(g_k.item()) < 1e-6


def test_event_matches_torchdiffeq_odeint_event():
    results = []
    for library in (tdq, torchdiffeq):
        func, y0 = Net(), _y0()
        t0 = torch.tensor(0.0, dtype=torch.float64)
        event_t, ys = library.odeint_event(func, y0, t0, event_fn=lambda t, y: y[0] + 0.6,
                                           rtol=1e-10, atol=1e-12)
        results.append([event_t, ys[-1], *_grads(event_t + ys[-1].sum(),
                                                 (y0, *func.parameters()))])
    _close(results[0], results[1], 1e-6)


def test_event_needs_two_times_and_a_step_size_on_a_grid():
    func = _decay()
    y0 = torch.ones(1, dtype=torch.float64)
    with pytest.raises(aca.ODEError, match="t must be"):
        tdq.odeint(func, y0, torch.tensor([0.0, 1.0, 2.0]), event_fn=lambda t, y: y.sum())
    with pytest.raises(aca.ODEError, match="step_size"):
        tdq.odeint(func, y0, torch.tensor([0.0, 1.0]), method="rk4",
                   event_fn=lambda t, y: y.sum() - 0.5)


# --------------------------------------------------------------------------- options


def test_unknown_options_are_refused_naming_the_valid_ones():
    f, y0, t = (lambda t, y: -y), torch.ones(2), torch.tensor([0.0, 1.0])
    with pytest.raises(aca.InvalidOptionError, match="step_size.*valid: first_step"):
        tdq.odeint(f, y0, t, options={"step_size": 0.1})  # adaptive methods take first_step
    with pytest.raises(aca.InvalidOptionError, match="first_step.*valid: step_size"):
        tdq.odeint(f, y0, t, method="euler", options={"first_step": 0.1})
    with pytest.raises(aca.InvalidOptionError, match="max_checkpoints"):
        tdq.odeint(f, y0, t, options={"max_checkpoints": 4})  # odeint_aca's only
    with pytest.raises(aca.InvalidOptionError, match="adjoint_options"):
        tdq.odeint_adjoint(f, y0, t, adjoint_params=(), adjoint_options={"safty": 0.8})
    with pytest.raises(aca.InvalidOptionError, match="interp"):
        tdq.odeint(f, y0, t, method="euler", options={"interp": "quadratic"})
    with pytest.raises(aca.InvalidOptionError, match="per-part"):
        tdq.odeint(lambda t, y: y, (y0, y0), t, rtol=(1e-3, 1e-4))


def test_step_options_shape_the_steps():
    func, y0 = Net(), _y0()
    steps = []
    func.callback_accept_step = lambda t0, y, dt: steps.append(dt.item())
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    tdq.odeint(func, y0, t, options={"first_step": 0.01, "max_step": 0.2})
    assert steps[0] == pytest.approx(0.01) and max(steps) <= 0.2 + 1e-12
    steps.clear()
    tdq.odeint(func, y0, t, rtol=1e-12, atol=1e-12, options={"min_step": 0.5})
    assert min(steps[:-1]) >= 0.5 - 1e-12  # the last step lands on t[-1]
    with pytest.raises(aca.MaxStepsExceededError):
        tdq.odeint(func, y0, t, options={"max_num_steps": 3})


@pytest.mark.parametrize("min_step", [0.05, 0.001])
def test_a_clipped_first_step_has_torchdiffeq_s_gradient(min_step):
    """odeint differentiates its first step size (every later size grows from it), as
    torchdiffeq does; a size clipped to min_step does not depend on the parameters
    (clamp's derivative, 0 when clipped): the gradient equals torchdiffeq's, clipped
    (0.05 > Hairer's 0.029) or not (0.001). A clipped size that kept a scaled derivative
    was 8e-9 off."""
    results = []
    for library in (tdq, torchdiffeq):
        func, y0, steps = Net(), _y0(), []
        func.callback_accept_step = lambda t0, y, dt, steps=steps: steps.append(dt.item())
        t = torch.tensor([0.0, 1.5], dtype=torch.float64)
        ys = library.odeint(func, y0, t, rtol=1e-6, atol=1e-8,
                            options={"step_t": t, "min_step": min_step})
        results.append([ys, *_grads(ys[-1].pow(2).sum(), (y0, *func.parameters()))])
        assert (steps[0] == pytest.approx(min_step)) == (min_step > 0.01)
    _close(results[0], results[1], 1e-12)


def test_min_step_holds_where_t_plus_h_rounds():
    """From t = 0.2, 0.2 + 0.1 - 0.2 is 0.10000000000000003: a step at min_step must be
    accepted by the size chosen, not by t_next - t (it was rejected, and the size clipped
    back to min_step, until max_num_steps)."""
    steps = []
    func = lambda t, y: y**2  # noqa: E731
    func.callback_accept_step = lambda t0, y, dt: steps.append(dt.item())
    y = tdq.odeint(func, torch.tensor([1.0], dtype=torch.float64),
                   torch.tensor([0.0, 0.5], dtype=torch.float64),
                   options={"min_step": 0.1, "max_num_steps": 50})
    assert len(steps) == 5 and min(steps) >= 0.1 - 1e-15
    assert y[-1].item() == pytest.approx(2.0, rel=1e-3)  # 1 / (1 - t), steps too long


def test_min_step_does_not_accept_a_non_finite_step():
    """y' = y^2 blows up at t = 1: steps forced at min_step must not carry inf/nan on
    (the solve went on until max_num_steps, or returned nan)."""
    with pytest.raises(aca.NonFiniteStateError, match="non-finite"):
        tdq.odeint(lambda t, y: y**2, torch.tensor([1.0], dtype=torch.float64),
                   torch.tensor([0.0, 2.0], dtype=torch.float64),
                   options={"min_step": 0.1, "max_num_steps": 1000})


def test_grid_constructor_and_perturb():
    seen = []

    def f(t, y):
        seen.append(t.item())
        return -y
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    ys = tdq.odeint(f, y0, t, method="euler",
                    options={"grid_constructor": lambda func, y0, t: torch.linspace(0, 1, 5)})
    assert ys[-1][0].item() == pytest.approx(0.75**4) and len(seen) == 4
    seen.clear()
    tdq.odeint(f, y0, t, method="rk4", options={"step_size": 0.5, "perturb": True})
    assert not {0.0, 0.5, 1.0} & set(seen) and min(seen) > 0 and max(seen) < 1
    with pytest.raises(aca.ODEError, match="grid_constructor"):
        tdq.odeint(f, y0, t, method="euler",
                   options={"grid_constructor": lambda func, y0, t: torch.linspace(0, 2, 5)})


def test_jump_t_steps_to_the_jump_and_evaluates_either_side_of_it():
    seen = []

    def f(t, y):
        seen.append(t.item())
        return -0.5 * y if t < 0.5 else y**2
    y0, t = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 1.0])
    ys = tdq.odeint(f, y0, t, method="dopri5", options={"jump_t": torch.tensor([0.5])})
    assert 0.5 not in seen
    at_jump = y0 * math.exp(-0.25)  # then y' = y²: y(1) = y(1/2) / (1 - y(1/2) / 2)
    assert (ys[-1] - at_jump / (1 - 0.5 * at_jump)).abs().max() < 1e-6


# --------------------------------------------------------------------------- callbacks


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_callbacks_forward_and_adjoint(method):
    func = Net()
    calls = {name: 0 for name in ("step", "accept", "reject", "step_adjoint", "accept_adjoint",
                                  "reject_adjoint")}

    def counter(name):
        def callback(t0, y0, dt):
            # the adjoint's callbacks see its augmented state: (t, y, adjoint, *param grads)
            shapes = [tuple(p.shape) for p in y0] if name.endswith("adjoint") else [y0.shape]
            assert t0.dim() == 0 and dt.item() > 0 and shapes[-3 if len(shapes) > 1 else 0] == (3,)
            calls[name] += 1
        return callback
    for name in calls:
        base, _, suffix = name.partition("_")
        setattr(func, f"callback_{base}{'_step' if base != 'step' else ''}"
                      f"{'_adjoint' if suffix else ''}", counter(name))
    options = {"step_size": 0.1} if method == "rk4" else None
    with pytest.warns(UserWarning, match="callback_step") if method == "rk4" else _nothing():
        ys = tdq.odeint_adjoint(func, _y0(), torch.tensor([0.0, 1.0], dtype=torch.float64),
                                method=method, options=options)
    ys.sum().backward()
    if method == "rk4":
        assert calls["step"] == 10 and calls["step_adjoint"] == 10 and calls["accept"] == 0
    else:
        assert calls["step"] == calls["accept"] + calls["reject"] > 0
        assert calls["step_adjoint"] == calls["accept_adjoint"] + calls["reject_adjoint"] > 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


# --------------------------------------------------------------------------- adjoint norms


def test_seminorm_takes_fewer_backward_evaluations_and_the_same_gradient():
    results, nfes = [], []
    for adjoint_options in (None, {"norm": "seminorm"}):
        torch.manual_seed(0)
        func = nn.Sequential(nn.Linear(2, 256), nn.Tanh(), nn.Linear(256, 2)).double()
        ode = lambda t, y, net=func: net(y) * torch.sin(2 * t)  # noqa: E731
        y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        with aca.track_stats() as stats:
            ys = tdq.odeint_adjoint(ode, y0, torch.tensor([0.0, 1.0], dtype=torch.float64),
                                    rtol=1e-8, atol=1e-8, adjoint_params=tuple(func.parameters()),
                                    adjoint_options=adjoint_options)
            results.append(_grads(ys.sum(), (y0, *func.parameters())))
        nfes.append(stats.nfe_backward)
    assert nfes[1] < nfes[0]
    _close(results[1], results[0], 1e-5)


def test_user_adjoint_norm_sees_time_state_adjoint_and_parameters():
    shapes = []

    def norm(parts):
        shapes.append([tuple(p.shape) for p in parts])
        return max(p.abs().max() for p in parts)
    param = torch.tensor([0.3, 0.1], requires_grad=True)
    ys = tdq.odeint_adjoint(lambda t, y: -param * y, torch.ones(2), torch.tensor([0.0, 1.0]),
                            adjoint_params=(param,), adjoint_options={"norm": norm})
    ys.sum().backward()
    assert shapes and shapes[0] == [(), (2,), (2,), (2,)]


# --------------------------------------------------------------------------- silent errors


def test_adjoint_params_missing_a_used_parameter_is_refused():
    """torchdiffeq gives such a tensor no gradient, silently; here it is an error."""
    func = Net()
    extra = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def ode(t, y):
        return func(t, y) * extra
    with pytest.raises(aca.UnseenTensorError, match="adjoint_params"):
        tdq.odeint_adjoint(ode, _y0(), torch.tensor([0.0, 1.0]),
                           adjoint_params=tuple(func.parameters()))
    with pytest.raises(aca.ODEError, match="nn.Module"):
        tdq.odeint_adjoint(ode, _y0(), torch.tensor([0.0, 1.0]))
    # listed, it gets its gradient, equal to odeint's
    ys = tdq.odeint_adjoint(ode, _y0(), torch.tensor([0.0, 1.0], dtype=torch.float64),
                            adjoint_params=(*func.parameters(), extra), rtol=1e-10, atol=1e-12)
    (g_adjoint,) = _grads(ys.sum(), (extra,))
    ys = tdq.odeint(ode, _y0(), torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-10,
                    atol=1e-12)
    (g_odeint,) = _grads(ys.sum(), (extra,))
    assert abs(g_adjoint.item() - g_odeint.item()) < 1e-7


def test_odeint_aca_bounded_memory_gives_the_same_gradient():
    grads = []
    for options in (None, {"max_checkpoints": 2}):
        func, y0 = Net(), _y0()
        ys = tdq.odeint_aca(func, y0, torch.tensor([0.0, 2.0], dtype=torch.float64),
                            options=options)
        grads.append(_grads(ys.sum(), (y0, *func.parameters())))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- core fixes


def test_naive_gradient_of_a_constant_derivative_is_finite():
    """f(t0 + h0) = f(t0) made the initial step's norm sqrt(0): a nan gradient."""
    y0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    ys = aca.odeint(lambda t, y: torch.ones_like(y), y0,
                    torch.linspace(0, 1, 4, dtype=torch.float64), gradient="naive")
    (grad,) = _grads(ys.sum(), (y0,))
    assert torch.equal(grad, torch.full_like(grad, 4.0))


def test_naive_float32_steps_match_aca_s_after_many_landings():
    """In float32 the differentiable step sizes drifted from the controller's floats at
    each landing (up to an ulp of t) until the steps collapsed."""
    torch.manual_seed(0)
    u = torch.randn(10, 10) * 0.1
    a = u - u.T

    def func(t, y):
        return a @ y
    t = torch.linspace(1, 8, 10)
    counts = []
    for gradient in ("naive", "aca"):
        y0 = torch.ones(10, requires_grad=True)
        with aca.track_stats() as stats:
            aca.odeint(func, y0, t, solver="bosh3", gradient=gradient, rtol=1e-7, atol=1e-9,
                       params=[])
        counts.append(stats.accepted)
    assert abs(counts[0] - counts[1]) <= 2


def test_aca_odeint_adjoint_seminorm_option():
    """aca.odeint's own adjoint takes the seminorm too: fewer reverse evaluations, the
    same gradient within the tolerance; a non-bool is refused."""
    results, nfes = [], []
    for seminorm in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 256), nn.Tanh(), nn.Linear(256, 2)).double()
        y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
        stats = aca.SolveStats()
        ys = aca.odeint(lambda t, y, net=net: net(y) * torch.sin(2 * t), y0,
                        torch.tensor([0.0, 1.0], dtype=torch.float64), gradient="adjoint",
                        rtol=1e-8, atol=1e-8, params=list(net.parameters()), stats=stats,
                        adjoint_seminorm=seminorm)
        results.append(_grads(ys.sum(), (y0, *net.parameters())))
        nfes.append(stats.nfe_backward)
    assert nfes[1] < nfes[0]
    _close(results[1], results[0], 1e-5)
    with pytest.raises(aca.InvalidOptionError, match="adjoint_seminorm"):
        aca.odeint(lambda t, y: -y, torch.ones(2), [0.0, 1.0], adjoint_seminorm="yes")


def test_adjoint_options_that_would_be_ignored_are_refused():
    f, y0, t = (lambda t, y: -y), torch.ones(2), torch.tensor([0.0, 1.0])
    with pytest.raises(aca.InvalidOptionError, match="jump_t"):
        tdq.odeint_adjoint(f, y0, t, adjoint_params=(), options={"jump_t": torch.tensor([0.5])},
                           adjoint_options={"jump_t": torch.tensor([0.3])})
    ys = tdq.odeint_adjoint(f, y0, t, adjoint_params=(), options={"jump_t": torch.tensor([0.5])},
                            adjoint_options={"jump_t": torch.tensor([0.5])})
    assert ys.shape == (2, 2)


class _Decay(nn.Module):
    def forward(self, t, y):
        return -y


def test_fixed_grid_adjoint_time_gradients_are_the_continuous_ones():
    """dL/dt_k = <dL/dy_k, f(t_k, y_k)> for outputs on a finer grid, as torchdiffeq and the
    closed form (issue 25: [0.22, 0, -0.22], the gradient of t_1 given to t_0)."""
    results = []
    for library in (tdq, torchdiffeq):
        t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
        ys = library.odeint_adjoint(_Decay(), torch.ones(1, dtype=torch.float64), t,
                                    method="rk4", options={"step_size": 0.01})
        results.append(_grads(ys.sum(), (t,))[0])
    y1, y2 = math.exp(-0.5), math.exp(-1.5)  # L = 1 + y1 + y2
    assert torch.allclose(results[0], torch.tensor([y1 + y2, -y1, -y2], dtype=torch.float64),
                          rtol=1e-9)
    assert torch.allclose(results[0], results[1], rtol=1e-12)


def test_step_t_at_a_jump_of_f_gives_the_exact_time_gradient():
    """Stages at a step's end see f from inside the step, as torchdiffeq's, so stepping to
    a jump with step_t is exact (issue 25: dL/dt_0 0.48 instead of 0.38)."""
    def f(t, y):
        return -y * (1.0 if t < 0.5 else 3.0)
    results = []
    for library in (tdq, torchdiffeq):
        t = torch.tensor([0.0, 0.8, 1.0], dtype=torch.float64, requires_grad=True)
        ys = library.odeint(f, torch.ones(1, dtype=torch.float64), t,
                            options={"step_t": torch.tensor([0.5])})
        results.append(_grads(ys.sum(), (t,))[0])
    exact = math.exp(-1.4) + math.exp(-2.0)  # y(0.8) + y(1.0): d/dt0 at rate 1 before 0.5
    assert abs(results[0][0].item() - exact) < 1e-5  # measured 3.9e-6 (torchdiffeq the same)
    _close([results[0]], [results[1]], 1e-6)


# --------------------------------------------------------------------------- scipy_solver


@pytest.mark.parametrize("solver", ["LSODA", "RK45"])
def test_scipy_solver_adjoint_equals_torchdiffeq_s(solver):
    """torchdiffeq's scipy_solver: scipy's solve_ivp forward and (odeint_adjoint) for the
    reverse solve; outputs and gradients as torchdiffeq's, and near the exact solve's."""
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64, requires_grad=True)
    results = []
    for library in (tdq, torchdiffeq):
        func, y0 = Net(), _y0()
        ys = library.odeint_adjoint(func, y0, t, rtol=1e-10, atol=1e-10, method="scipy_solver",
                                    options={"solver": solver})
        loss = (ys[1:] ** 2).sum()
        results.append([ys.detach(), *_grads(loss, [y0, t, *func.parameters()])])
    for ours, theirs in zip(*results):
        assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-8)
    func, y0 = Net(), _y0()
    exact = tdq.odeint(func, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    loss = (exact[1:] ** 2).sum()
    for ours, want in zip(results[0][1:], _grads(loss, [y0, t, *func.parameters()])):
        assert torch.allclose(ours, want, rtol=1e-6, atol=1e-8)


def test_scipy_solver_forward_only_and_its_refusals():
    """odeint through scipy gives no gradient (torchdiffeq's silently none): refused while
    an input requires grad, the same values under no_grad; odeint_aca cannot see scipy's
    steps; mixing scipy with one of aca's methods for the reverse solve is refused."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    with torch.no_grad():
        ours = tdq.odeint(Net(), _y0(), t, method="scipy_solver")
        theirs = torchdiffeq.odeint(Net(), _y0(), t, method="scipy_solver")
    # the same scipy solve (LSODA's first step differs in the 9th digit: torchdiffeq's
    # tolerances reach scipy rounded otherwise), so equal within its tolerances
    assert torch.allclose(ours, theirs, rtol=1e-7, atol=1e-9)
    with pytest.raises(aca.ODEError, match="odeint_adjoint"):
        tdq.odeint(Net(), _y0(), t, method="scipy_solver")
    with pytest.raises(aca.InvalidOptionError, match="odeint_aca checkpoints"):
        tdq.odeint_aca(Net(), _y0(), t, method="scipy_solver")
    with pytest.raises(aca.InvalidOptionError, match="both"):
        tdq.odeint_adjoint(Net(), _y0(), t, method="scipy_solver", adjoint_method="dopri5")
    with pytest.raises(aca.InvalidOptionError, match="LSODA"):
        tdq.odeint_adjoint(Net(), _y0(), t, method="scipy_solver", options={"solver": "lsoda"})
    with pytest.raises(aca.InvalidOptionError, match="step_t.*valid: solver, min_step, max_step"):
        tdq.odeint_adjoint(Net(), _y0(), t, method="scipy_solver", options={"step_t": [0.2]})
