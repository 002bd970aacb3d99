"""Gradients of the three methods, in float64, against analytic values, against
autograd through the same discrete steps, against each other and torchdiffeq."""

import math

import pytest
import torch
import torchdiffeq
from odes import MLP, Linear, relative_error, replay_steps, run
from torch import nn

import aca
from aca.gradients.aca import _reverse, _revolve
from aca.solvers import SOLVERS, AdaptiveSteps, Checkpoints

pytestmark = pytest.mark.usefixtures("float64")


def loss_grads(func, y0, t, create_graph=False, **options):
    ys = aca.odeint(func, y0, t, **options)
    loss = (ys**2).sum() + ys[1:].sin().sum()
    return torch.autograd.grad(loss, [y0, *func.parameters()], create_graph=create_graph)


@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("solver", ["heun_euler", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_aca_equals_autograd_through_the_accepted_steps(solver, interpolate):
    """ACA's gradient is autograd through the accepted steps and, with dense output, the
    interpolants of the outputs inside them (several outputs in one step included)."""
    func, t = MLP(), [0.0, 0.4, 0.4005, 0.401, 3.0]
    y0 = torch.randn(4, 3, requires_grad=True)
    rtol = 1e-5 if solver == "heun_euler" else 1e-8
    atol = rtol / 100
    got = loss_grads(func, y0, t, solver=solver, gradient="aca", rtol=rtol, atol=atol,
                     interpolate=interpolate)

    tableau = SOLVERS[solver]
    _, _, checkpoints = run(func, y0, t, tableau, AdaptiveSteps(rtol, atol, tableau.order),
                            interpolate=interpolate)
    assert len(checkpoints.times) > 4
    assert not interpolate or any(len(ks) > 1 for ks in checkpoints.inside.values())
    ys = replay_steps(func, y0, torch.tensor(t), t, checkpoints, tableau)
    loss = (ys**2).sum() + ys[1:].sin().sum()
    want = torch.autograd.grad(loss, [y0, *func.parameters()])
    assert relative_error(got, want) < 1e-10


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4", "dopri5", "tsit5"])
def test_aca_equals_naive_for_fixed_steps(solver):
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    t = [0.0, 0.35, 1.0]
    got = loss_grads(func, y0, t, solver=solver, step_size=0.1, gradient="aca")
    want = loss_grads(func, y0, t, solver=solver, step_size=0.1, gradient="naive")
    assert relative_error(got, want) < 1e-12


def test_naive_passes_gradcheck_through_the_adaptive_solver():
    """Central differences of the whole solve: naive must differentiate the steps the
    controller chose (10 accepted, 2 rejected between 3 output times), not only the
    stages, so dropping the step size's graph fails here."""
    def solve(y0, rate, stats=None):
        return aca.odeint(lambda t, y: -rate * y.sin() + 0.3 * t, y0, [0.0, 0.5, 3.0],
                          gradient="naive", rtol=1e-5, atol=1e-7, stats=stats)

    y0 = torch.tensor([0.3, -1.2], requires_grad=True)
    rate = torch.tensor([0.7, 1.3], requires_grad=True)
    stats = aca.SolveStats()
    solve(y0.detach(), rate.detach(), stats)
    assert stats.accepted >= 4 * 2 and stats.rejected > 0  # most steps are the controller's
    assert torch.autograd.gradcheck(solve, (y0, rate), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_naive_differentiates_the_step_size_search():
    """Naive's graph includes the controller: where the controller picks the steps its
    gradient differs from ACA's (fixed-h) by about the local error, far above round-off;
    where every step lands on an output time no step size depends on the inputs, and the
    two agree to round-off."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    options = {"rtol": 1e-3, "atol": 1e-5}
    naive = loss_grads(func, y0, [0.0, 1.0], gradient="naive", **options)
    fixed_h = loss_grads(func, y0, [0.0, 1.0], gradient="aca", **options)
    assert 1e-9 < relative_error(naive, fixed_h) < 1e-4  # measured 1.0e-6; round-off ~1e-15

    landing, stats = torch.linspace(0.0, 1.0, 21), aca.SolveStats()
    options["interpolate"] = False
    naive = loss_grads(func, y0, landing, gradient="naive", stats=stats, **options)
    assert stats.accepted == 20 and stats.rejected == 0  # every step is an output interval
    fixed_h = loss_grads(func, y0, landing, gradient="aca", **options)
    assert relative_error(naive, fixed_h) < 1e-12


def test_adjoint_agrees_with_torchdiffeq_odeint_adjoint():
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.5])
    got = loss_grads(func, y0, t, gradient="adjoint", rtol=1e-8, atol=1e-10)
    ys = torchdiffeq.odeint_adjoint(func, y0, t, rtol=1e-8, atol=1e-10, method="dopri5")
    loss = (ys**2).sum() + ys[1:].sin().sum()
    want = torch.autograd.grad(loss, [y0, *func.parameters()])
    assert relative_error(got, want) < 1e-8  # measured 7.5e-10


class DecayingMLP(nn.Module):
    """An MLP field with a scalar decay rate: a one-element parameter whose adjoint error
    only a mixed norm (the largest RMS over state, adjoint and each parameter) sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
        self.rate = nn.Parameter(torch.tensor(0.5))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y) - self.rate * y


@pytest.mark.parametrize("tol", [1e-3, 1e-7])
def test_adjoint_takes_torchdiffeq_odeint_adjoint_s_steps(tol):
    """Same forward and backward NFE as torchdiffeq's odeint_adjoint: the reverse solve
    uses the same controller and its mixed error norm (one RMS over all 100 entries of
    the augmented state lets the one-element rate's error hide, and takes fewer steps)."""
    nfe = {}
    for library in ("aca", "torchdiffeq"):
        func = DecayingMLP()
        y0 = torch.randn(32, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
        t = torch.tensor([0.0, 2.0, 5.0])
        if library == "aca":  # landing on every output, as torchdiffeq with step_t
            ys = aca.odeint(func, y0, t, gradient="adjoint", rtol=tol, atol=tol,
                            interpolate=False)
        else:
            ys = torchdiffeq.odeint_adjoint(func, y0, t, rtol=tol, atol=tol, method="dopri5",
                                            options={"step_t": t}, adjoint_options={})
        forward = func.calls
        (ys**2).sum().backward()
        nfe[library] = (forward, func.calls - forward)
    assert nfe["aca"] == nfe["torchdiffeq"]


class Counted(MLP):
    """The MLP field, counting its evaluations."""

    calls = 0

    def forward(self, t, y):
        self.calls += 1
        return super().forward(t, y)


@pytest.mark.parametrize("gradient,options", [
    ("aca", {}), ("aca", {"max_checkpoints": 3}), ("aca", {"create_graph": True}),
    ("adjoint", {}), ("naive", {}), ("aca", {"solver": "rk4", "step_size": 0.1})])
def test_statistics_count_every_evaluation_forward_and_backward(gradient, options):
    """SolveStats are what func saw: forward calls (with the steps taken) and backward
    calls (ACA's rebuilt steps and recomputed blocks, the adjoint's reverse solve)."""
    options = dict(options)
    create_graph = options.pop("create_graph", False)
    func, y0 = Counted(), torch.randn(4, 3, requires_grad=True)
    stats = aca.SolveStats()
    ys = aca.odeint(func, y0, [0.0, 0.5, 3.0], gradient=gradient, rtol=1e-7, atol=1e-9,
                    stats=stats, **options)
    assert stats.nfe_forward == func.calls and stats.accepted > 6
    forward = func.calls
    torch.autograd.grad(ys.pow(2).sum(), [y0, *func.parameters()], create_graph=create_graph)
    assert stats.nfe_backward == func.calls - forward
    assert (stats.nfe_backward > 0) == (gradient != "naive")


@pytest.mark.parametrize("solver", ["heun_euler", "bosh3", "dopri5", "dopri8"])
def test_every_gradient_method_takes_the_same_forward_steps(solver):
    """One controller for all three: naive's differentiable step sizes (tensors) must follow
    the same accept/reject decisions and step sizes as the float path of aca and adjoint."""
    y0 = torch.randn(4, 3, requires_grad=True)
    counts = []
    for gradient in ("aca", "adjoint", "naive"):
        stats = aca.SolveStats()
        aca.odeint(MLP(), y0, [0.0, 0.5, 4.0], solver=solver, gradient=gradient, rtol=1e-6,
                   atol=1e-8, stats=stats)
        counts.append((stats.nfe_forward, stats.accepted, stats.rejected))
    assert counts[0] == counts[1] == counts[2] and counts[0][1] > 4


def linear_analytic(z0, a, times, weights):
    """L = Σ_k w_k z(t_k)² for dz/dt = a z: closed-form dL/dz0 and dL/da."""
    dz0 = sum(w * 2 * z0 * torch.exp(2 * a * t) for w, t in zip(weights, times))
    da = sum(w * 2 * z0**2 * t * torch.exp(2 * a * t) for w, t in zip(weights, times))
    return dz0, da


def linear_grads(gradient, times, weights, **options):
    func = Linear([0.8, -0.5])
    z0 = torch.tensor([1.0, 2.0], requires_grad=True)
    ys = aca.odeint(func, z0, times, gradient=gradient, **options)
    loss = sum(w * (y**2).sum() for w, y in zip(weights, ys))
    got = torch.autograd.grad(loss, [z0, func.a])
    return got, linear_analytic(z0.detach(), func.a.detach(), times, weights)


def test_adjoint_converges_to_the_analytic_gradient():
    errors = [relative_error(*linear_grads("adjoint", [0.0, 2.0], [0.0, 1.0], rtol=tol, atol=tol))
              for tol in (1e-3, 1e-5, 1e-7, 1e-9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-7


@pytest.mark.parametrize("gradient", ["aca", "adjoint", "naive"])
def test_losses_on_intermediate_output_times(gradient):
    """The loss ignores the final state: gradients come only through ys[1], ys[3]."""
    times, weights = [0.0, 0.5, 1.0, 1.7, 2.0], [0.0, 1.0, 0.0, 0.5, 0.0]
    got, want = linear_grads(gradient, times, weights, rtol=1e-9, atol=1e-11)
    assert relative_error(got, want) < 1e-7  # measured 5.5e-9 (aca), 1.6e-9, 9.1e-9 (naive)


def test_adjoint_error_dwarfs_aca_on_a_dissipative_problem():
    """dz/dt = -50 z: the reverse-time solve of the adjoint method amplifies the
    error of the stiff mode by e^50; ACA's checkpoints avoid the reverse solve.
    The paper's central claim, at the same tolerance."""
    errors = {}
    for gradient in ("aca", "adjoint"):
        func = Linear([-50.0, -1.0])
        z0 = torch.ones(2, requires_grad=True)
        ys = aca.odeint(func, z0, [0.0, 1.0], gradient=gradient, rtol=1e-3, atol=1e-3)
        got = torch.autograd.grad((ys[-1] ** 2).sum(), [z0, func.a])
        errors[gradient] = relative_error(got, linear_analytic(z0.detach(), func.a.detach(),
                                                               [1.0], [1.0]))
    assert errors["aca"] < 4e-5  # measured 4.0e-6 (the adjoint's: 0.61)
    assert errors["adjoint"] > 1e3 * errors["aca"], errors


@pytest.mark.parametrize("max_checkpoints", [2, 3, 7])
def test_bounded_memory_aca_is_bitwise_identical(max_checkpoints):
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    t = [0.0, 0.3, 0.9, 4.0]
    full_stats, bounded_stats = aca.SolveStats(), aca.SolveStats()
    full = loss_grads(func, y0, t, rtol=1e-10, atol=1e-12, stats=full_stats)
    bounded = loss_grads(func, y0, t, rtol=1e-10, atol=1e-12, max_checkpoints=max_checkpoints,
                         stats=bounded_stats)
    assert full_stats.accepted > 2 * max_checkpoints
    assert all(torch.equal(a, b) for a, b in zip(full, bounded))
    assert bounded_stats.nfe_backward > full_stats.nfe_backward  # it recomputed


def _filled(n: int, budget: int | None) -> Checkpoints:
    """The checkpoints of ``n`` accepted steps of one group, state ``i`` being ``i``;
    at most ``budget`` states are held at any time (and a scratch row)."""
    checkpoints = Checkpoints(max_states=budget)
    checkpoints.start(torch.zeros(1), torch.zeros(1), 1)
    steps = torch.zeros(1, dtype=torch.long)
    for i in range(n):
        checkpoints.add(i, torch.ones(1, dtype=torch.bool), torch.full((1,), float(i)),
                        torch.ones(1), torch.full((1,), float(i)),
                        torch.zeros(1, dtype=torch.long))
        steps += 1
        assert budget is None or len(checkpoints._kept) <= budget
    checkpoints.finish(steps, torch.zeros(1))
    return checkpoints


def test_bounded_memory_keeps_at_most_k_states():
    checkpoints = _filled(100, 5)
    assert [s.item() for s in checkpoints.states] == list(range(0, 100, checkpoints.stride))


@pytest.mark.parametrize("solver,step_size", [("rk4", 0.1), ("dopri5", None)])
def test_second_order_gradients_through_aca(solver, step_size):
    """A gradient penalty: d/dθ ‖dL/dθ‖². ACA rebuilds the accepted steps as one
    chain under create_graph, so it equals naive exactly on a fixed grid, and
    autograd through the accepted steps when adaptive."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    params = list(func.parameters())

    def penalty_grads(gradient):
        grads = loss_grads(func, y0, [0.0, 0.3, 1.0], create_graph=True, solver=solver,
                           step_size=step_size, gradient=gradient, rtol=1e-6, atol=1e-8)
        penalty = sum((g**2).sum() for g in grads[1:])
        return torch.autograd.grad(penalty, [y0, *params])

    got = penalty_grads("aca")
    if step_size is not None:
        assert relative_error(got, penalty_grads("naive")) < 1e-10
    else:
        tableau = SOLVERS[solver]
        _, _, checkpoints = run(func, y0, [0.0, 0.3, 1.0], tableau,
                                AdaptiveSteps(1e-6, 1e-8, tableau.order))
        assert len(checkpoints.times) >= 4 and checkpoints.inside  # 0.3 inside a step

        def through_the_steps(y0, params):  # autograd through the accepted steps
            ys = replay_steps(func, y0, torch.tensor([0.0, 0.3, 1.0]), [0.0, 0.3, 1.0],
                              checkpoints, tableau)
            loss = (ys**2).sum() + ys[1:].sin().sum()
            return torch.autograd.grad(loss, [y0, *params], create_graph=True)

        grads = through_the_steps(y0, params)
        want = torch.autograd.grad(sum((g**2).sum() for g in grads[1:]), [y0, *params])
        assert relative_error(got, want) < 1e-10  # measured ~1e-15
    assert all(g.abs().sum() > 0 for g in got)


def test_adjoint_refuses_second_order_gradients():
    func, y0 = MLP(), torch.randn(2, 3, requires_grad=True)
    ys = aca.odeint(func, y0, [0.0, 1.0], gradient="adjoint")
    with pytest.raises(aca.ODEError, match="higher-order"):
        torch.autograd.grad(ys.sum(), [y0], create_graph=True)


@pytest.mark.parametrize("gradient", ["aca", "adjoint"])
def test_backward_leaves_batch_norm_statistics_alone(gradient):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Tanh())
    block = aca.ODEBlock(net, gradient=gradient, rtol=1e-3, atol=1e-4)
    out = block(torch.randn(16, 3))
    after_forward = net[1].running_mean.clone(), net[1].num_batches_tracked.clone()
    out.sum().backward()
    assert torch.equal(net[1].running_mean, after_forward[0])
    assert torch.equal(net[1].num_batches_tracked, after_forward[1])
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("gradient", ["aca", "adjoint", "naive"])
def test_odeblock_matches_odeint_and_reaches_parameters(gradient):
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    block = aca.ODEBlock(net, t1=0.7, gradient=gradient, rtol=1e-8, atol=1e-10)
    y0 = torch.randn(5, 3, requires_grad=True)
    out = block(y0)
    want = aca.odeint(lambda t, y: net(y), y0, [0.0, 0.7], gradient="naive", rtol=1e-8,
                      atol=1e-10)[-1]
    assert torch.allclose(out, want, atol=1e-7)
    out.sum().backward()
    assert y0.grad is not None and net[0].weight.grad is not None
    assert block.stats.nfe_forward > 0 and block.stats.accepted > 0


def test_plain_callable_gets_gradients_for_y0():
    y0 = torch.tensor([1.0], requires_grad=True)
    (y1,) = aca.odeint(lambda t, y: -y, y0, [0.0, 1.0], gradient="aca", rtol=1e-10, atol=1e-12)[1:]
    (grad,) = torch.autograd.grad(y1.sum(), [y0])
    assert abs(grad.item() - math.exp(-1)) < 1e-8


@pytest.mark.parametrize("gradient", ["aca", "adjoint", "naive"])
def test_solving_without_gradients_gives_the_same_values(gradient):
    func, y0 = MLP(), torch.randn(4, 3)
    with_graph = aca.odeint(func, y0.requires_grad_(), [0.0, 0.5, 2.0], gradient=gradient)
    stats = aca.SolveStats()
    with torch.no_grad():
        without = aca.odeint(func, y0, [0.0, 0.5, 2.0], gradient=gradient, stats=stats)
    # naive computes its step sizes as tensors: equal to the float ones up to round-off
    same = torch.equal if gradient != "naive" else torch.allclose
    assert same(with_graph.detach(), without) and not without.requires_grad
    assert stats.nfe_forward > 0


# --------------------------------------------------------------------------- binomial
# The schedule of bounded-memory ACA as aca/gradients/aca.py states it: between two kept
# states L steps apart, ``_reverse`` gives ``_revolve`` ``slots = max(K - kept,
# ceil(log2 L))`` states to spare; ``_revolve`` holds at most ``slots`` recomputed states
# at a time and, per ``_split``, advances each step at most r times, r the fewest with
# C(s + r, s) >= L, s = slots + 1.

class _State:
    """A stand-in for a state: knows its step index; counts how many are alive."""

    alive = 0

    def __init__(self, index: int) -> None:
        self.index = index
        _State.alive += 1

    def __del__(self) -> None:
        _State.alive -= 1


class _CountingSteps:
    """The part of ACA's steps ``_reverse`` uses: ``len`` and ``advance``, counted per step."""

    def __init__(self, n: int) -> None:
        self.advanced = [0] * n

    def __len__(self) -> int:
        return len(self.advanced)

    def advance(self, i: int, y: _State) -> _State:
        assert y.index == i
        self.advanced[i] += 1
        return _State(i + 1)


def _repetitions(length: int, slots: int) -> int:
    """``_split``'s r: the fewest repetitions with C(s + r, s) >= length, s = slots + 1."""
    r = 0
    while math.comb(slots + 1 + r, slots + 1) < length:
        r += 1
    return r


def _run_schedule(n: int, kept: list[int], budget: int | None = None,
                  slots: int | None = None) -> tuple[list[int], int]:
    """Reverse ``n`` counting steps with ``_reverse`` from the states at ``kept`` under
    ``budget`` (or with ``_revolve`` from step 0 with ``slots``): each step's advances and
    the most recomputed states alive at once (not the kept ones, not the one handed out)."""
    steps, states = _CountingSteps(n), {i: _State(i) for i in kept}
    baseline, held, order = _State.alive, 0, []
    schedule = (_reverse(steps, states, budget) if slots is None
                else _revolve(steps.advance, 0, states[0], n, slots))
    for i, y in schedule:
        assert y.index == i
        order.append(i)
        held = max(held, _State.alive - baseline - (i not in states))
        del y
    assert order == list(range(n - 1, -1, -1))
    return steps.advanced, held


def _peak(length: int, slots: int) -> int:
    """The recomputed states ``_revolve`` holds at most: ``slots``, or all but the start
    and the one handed out (one while the start is handed out after the first step)."""
    return min(slots, max(length - 2, 1)) if length > 1 else 0


@pytest.mark.parametrize("slots", range(1, 8))
def test_revolve_holds_slots_states_and_repeats_each_step_at_most_r_times(slots):
    for length in range(1, 41):
        advanced, held = _run_schedule(length, [0], slots=slots)
        assert held == _peak(length, slots), (length, slots)
        assert max(advanced) == (_repetitions(length, slots) if length > 1 else 0), (length,
                                                                                   slots)
        assert advanced[-1] == 0  # the last step is rebuilt by backward, never advanced


def _kept(n: int, budget: int) -> list[int]:
    """The states a forward of ``n`` steps keeps under ``max_checkpoints=budget``."""
    return [int(s.item()) for s in _filled(n, budget).states]


def _segments(n: int, budget: int) -> list[tuple[int, int]]:
    """``(L, slots)`` of each stretch between kept states, as the docstring states them."""
    kept = _kept(n, budget)
    return [(b - a, max(budget - len(kept), math.ceil(math.log2(b - a))))
            for a, b in zip(kept, [*kept[1:], n])]


# (n, K): K - kept below L - 2 and at least log2 L (where one spare state more shows), a
# single kept state, and a budget with every state kept
@pytest.mark.parametrize("n,budget", [(100, 12), (120, 20), (30, 2), (37, 3), (50, 4),
                                      (16, 16)])
def test_reverse_gives_each_stretch_the_states_the_budget_leaves(n, budget):
    advanced, held = _run_schedule(n, _kept(n, budget), budget)
    segments = _segments(n, budget)
    assert held == max(_peak(length, slots) for length, slots in segments)
    start = 0
    for length, slots in segments:
        assert max(advanced[start:start + length]) == (_repetitions(length, slots)
                                                       if length > 1 else 0)
        start += length
    unbounded, _ = _run_schedule(n, [0], None)
    assert sum(unbounded) == n - 1  # with no budget each step is advanced once


# (100, 12): one spare state more than the budget leaves would save 6 advances
@pytest.mark.parametrize("n,budget", [(40, 2), (48, 5), (64, 10), (100, 12)])
def test_bounded_aca_recomputes_what_the_schedule_says(n, budget):
    """Through ``aca.odeint``: rk4 (4 evaluations a step) on a grid of ``n`` steps rebuilds
    each step once and advances as often as the schedule of each stretch says."""
    func, y0 = MLP(), torch.randn(4, 3, requires_grad=True)
    advances = sum(sum(_run_schedule(length, [0], slots=slots)[0])
                   for length, slots in _segments(n, budget))
    for max_checkpoints, recomputed in ((None, 0), (budget, advances)):
        stats = aca.SolveStats()
        loss_grads(func, y0, [0.0, n * 0.05], solver="rk4", step_size=0.05,
                   max_checkpoints=max_checkpoints, stats=stats)
        assert stats.accepted == n
        assert stats.nfe_backward == 4 * (n + recomputed), (max_checkpoints, stats)
