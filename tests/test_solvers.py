"""The solver core: orders of convergence, agreement with torchdiffeq, landing on
output times, both time directions, step statistics."""

import math

import pytest
import torch
import torchdiffeq
from odes import run, step

import aca
from aca.solvers import SOLVERS
from aca.solvers.tableau import ButcherTableau

METHODS = ["euler", "midpoint", "rk4", "heun_euler", "bosh3", "dopri5", "dopri5_classic", "tsit5",
           "dopri8"]


def riccati(t, y):
    """y' = -2 t y², y(0) = 1: exact y = 1 / (1 + t²) (nonlinear, non-autonomous)."""
    return -2 * t * y**2


def riccati_exact(t: float) -> float:
    return 1.0 / (1.0 + t**2)


def _fixed_step_error(tableau: ButcherTableau, h: float) -> float:
    from aca.solvers import ConstantSteps

    y0 = torch.ones(1, dtype=torch.float64)
    ys, _, _ = run(riccati, y0, [0.0, 2.0], tableau, ConstantSteps(h))
    return abs(ys[-1].item() - riccati_exact(2.0))


def _local_error_estimate(tableau: ButcherTableau, h: float) -> float:
    y = torch.tensor([riccati_exact(0.3)], dtype=torch.float64)
    return step(riccati, 0.3, y, h, tableau, with_error=True).error.abs().item()


@pytest.mark.parametrize("name", METHODS)
def test_order_of_convergence(name):
    tableau = SOLVERS[name]
    h = {5: 0.025, 8: 1.0}.get(tableau.order, 0.05)  # inside the asymptotic range
    observed = math.log2(_fixed_step_error(tableau, h) / _fixed_step_error(tableau, h / 2))
    assert abs(observed - tableau.order) < 0.35, observed


@pytest.mark.parametrize("name", [n for n in METHODS if SOLVERS[n].adaptive])
def test_embedded_error_estimate_has_the_lower_order(name):
    """The estimate is the local error of the order-(p-1) solution: O(h^p)."""
    tableau = SOLVERS[name]
    h = 0.05
    observed = math.log2(_local_error_estimate(tableau, h) / _local_error_estimate(tableau, h / 2))
    assert abs(observed - tableau.order) < 0.5, observed


def test_aliases_point_to_methods():
    assert SOLVERS["rk45"] is SOLVERS["dopri5"]
    assert SOLVERS["rk23"] is SOLVERS["bosh3"]
    assert SOLVERS["rk12"] is SOLVERS["heun_euler"]
    assert SOLVERS["rk2"] is SOLVERS["midpoint"]


@pytest.mark.parametrize("ours,theirs", [("dopri5", "dopri5"), ("bosh3", "bosh3"),
                                          ("heun_euler", "adaptive_heun"), ("dopri8", "dopri8")])
def test_agrees_with_torchdiffeq(ours, theirs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    net = net.double()
    y0 = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    rtol, atol = 1e-6, 1e-8
    with torch.no_grad():
        mine = aca.odeint(lambda t, y: net(y), y0, t, solver=ours, rtol=rtol, atol=atol)
        # step_t makes torchdiffeq land on t[-1] instead of interpolating, as we do
        ref = torchdiffeq.odeint(lambda t, y: net(y), y0, t, method=theirs, rtol=rtol, atol=atol,
                                 options={"step_t": t})
        exact = torchdiffeq.odeint(lambda t, y: net(y), y0, t, method="dopri8", rtol=1e-13,
                                   atol=1e-13)
    scale = atol + rtol * exact[-1].abs().max()
    assert (mine[-1] - ref[-1]).abs().max() < 10 * scale
    assert (mine[-1] - exact[-1]).abs().max() < 10 * scale


class VanDerPolRecorder(torch.nn.Module):
    """Van der Pol with mu = 2 (steps from 0.01 to 0.3, some rejected), recording the
    steps torchdiffeq accepts through its callback."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[tuple[float, float]] = []
        self.rejected = 0

    def forward(self, t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack((v, 2.0 * (1 - x**2) * v - x), dim=-1)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append((t0.item(), dt.item()))

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


@pytest.mark.parametrize("ours,theirs,tol", [("dopri5", "dopri5", 1e-6), ("bosh3", "bosh3", 1e-5)])
def test_accepted_steps_equal_torchdiffeq_s(ours, theirs, tol):
    """The controller reproduces torchdiffeq's step for step: same accepted and rejected
    counts, each step size equal up to round-off in the error estimate (measured 1e-10).
    Safety factor, growth limits and no-shrink-after-accept all show up here."""
    from aca.solvers import AdaptiveSteps

    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    # one output interval, landing on its end as we do (step_t): after a landing inside
    # the interval torchdiffeq grows the shortened step, we go on with the one before it
    t = torch.tensor([0.0, 6.0], dtype=torch.float64)
    func = VanDerPolRecorder()
    with torch.no_grad():
        torchdiffeq.odeint(func, y0, t, method=theirs, rtol=tol, atol=tol,
                           options={"step_t": t})
    tableau = SOLVERS[ours]
    _, counts, checkpoints = run(func, y0, t.tolist(), tableau,
                                 AdaptiveSteps(tol, tol, tableau.order), 10**5)
    assert counts.accepted == len(func.accepted) > 40
    assert counts.rejected == func.rejected > 5
    assert checkpoints.times == pytest.approx([t0 for t0, _ in func.accepted], rel=1e-9)
    assert checkpoints.steps == pytest.approx([dt for _, dt in func.accepted], rel=1e-9)


def test_controller_options_of_odeint_reach_the_controller():
    """safety, ifactor and dfactor given to odeint take torchdiffeq's steps with the same
    options (and other steps than the defaults)."""
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0, 6.0], dtype=torch.float64)
    options = {"safety": 0.8, "ifactor": 4.0, "dfactor": 0.3}
    func = VanDerPolRecorder()
    with torch.no_grad():
        torchdiffeq.odeint(func, y0, t, method="dopri5", rtol=1e-6, atol=1e-6,
                           options={"step_t": t, **options})
    tuned, default = aca.SolveStats(), aca.SolveStats()
    # landing on every output, as torchdiffeq with step_t
    aca.odeint(func, y0, t, rtol=1e-6, atol=1e-6, stats=tuned, interpolate=False, **options)
    aca.odeint(func, y0, t, rtol=1e-6, atol=1e-6, stats=default, interpolate=False)
    assert (tuned.accepted, tuned.rejected) == (len(func.accepted), func.rejected)
    assert (tuned.accepted, tuned.rejected) != (default.accepted, default.rejected)


def test_pi_controller_follows_hairer_s_formula():
    """DOPRI5 (Hairer, Nørsett & Wanner): fac = err^(1/5 - 0.75 beta) / err_prev^beta,
    h_new = h * safety / fac, limited to [dfactor, ifactor] (and >= 1 after an accepted step)."""
    from aca.solvers import AdaptiveSteps

    beta, previous, ratio = 0.04, 0.5, 0.2
    controller = AdaptiveSteps(1e-6, 1e-6, order=5, pi_beta=beta)

    def factor(ratio: float) -> float:
        return controller.factor(torch.tensor(ratio, dtype=torch.float64),
                                 torch.tensor(previous, dtype=torch.float64)).item()

    want = 0.9 / (ratio ** (0.2 - 0.75 * beta) / previous**beta)
    assert factor(ratio) == pytest.approx(want, rel=1e-14) and want > 1
    assert factor(3.0) == pytest.approx(max(0.2, 0.9 / (3.0 ** (0.2 - 0.03) / previous**beta)),
                                        rel=1e-14)


@pytest.mark.parametrize("solver", ["heun_euler", "bosh3", "dopri5", "dopri8"])
def test_initial_step_matches_torchdiffeq(solver):
    from torchdiffeq._impl.misc import _rms_norm, _select_initial_step

    from aca.solvers import AdaptiveSteps

    torch.manual_seed(1)
    y0 = torch.randn(5, dtype=torch.float64)
    func = lambda t, y: torch.sin(y) * (1 + t)  # noqa: E731
    tableau = SOLVERS[solver]
    f0 = func(torch.tensor(0.0, dtype=torch.float64), y0)
    controller = AdaptiveSteps(1e-4, 1e-6, tableau.order)
    ours = controller.initial_step(func, torch.zeros(1, dtype=torch.float64), y0, f0,
                                   torch.ones(1, dtype=torch.float64)).item()
    theirs = _select_initial_step(func, torch.tensor(0.0, dtype=torch.float64), y0,
                                  tableau.order - 1, 1e-4, 1e-6, _rms_norm, f0)
    assert ours == pytest.approx(theirs.item(), rel=1e-12)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3"])
def test_lands_on_every_output_time_both_directions(solver):
    t = torch.tensor([0.0, 0.3, 0.7, 1.5, 2.0], dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    ys = aca.odeint(riccati, y0, t, solver=solver, rtol=1e-9, atol=1e-12)
    assert ys.shape == (5, 1) and torch.equal(ys[0], y0)
    exact = torch.tensor([[riccati_exact(x)] for x in t.tolist()], dtype=torch.float64)
    assert (ys - exact).abs().max() < 1e-7
    back = aca.odeint(riccati, exact[-1], t.flip(0), solver=solver, rtol=1e-9, atol=1e-12)
    assert (back - exact.flip(0)).abs().max() < 1e-7


def test_fixed_grid_lands_on_outputs_off_the_grid():
    y0 = torch.ones(1, dtype=torch.float64)
    ys = aca.odeint(riccati, y0, [0.0, 0.25, 1.0], solver="rk4", step_size=0.1)
    assert abs(ys[1].item() - riccati_exact(0.25)) < 1e-5
    assert abs(ys[2].item() - riccati_exact(1.0)) < 1e-5


def test_statistics_count_evaluations_and_steps():
    stats = aca.SolveStats()
    aca.odeint(riccati, torch.ones(1, dtype=torch.float64), [0.0, 5.0], solver="dopri5",
               rtol=1e-8, atol=1e-10, stats=stats)
    attempts = stats.accepted + stats.rejected
    assert stats.accepted > 5
    # dopri5 is FSAL: 2 evaluations to start (k1, initial step), then 6 per attempt
    assert stats.nfe_forward == 2 + 6 * attempts
    fixed = aca.SolveStats()
    aca.odeint(riccati, torch.ones(1), [0.0, 1.0], solver="rk4", step_size=0.1, stats=fixed)
    assert (fixed.nfe_forward, fixed.accepted, fixed.rejected) == (40, 10, 0)


def test_track_stats_sums_solves_including_backward():
    func = torch.nn.Linear(2, 2).double()
    y0 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    with aca.track_stats() as total:
        for _ in range(2):
            ys = aca.odeint(lambda t, y: func(y), y0, [0.0, 1.0], gradient="naive")
    forward_only = total.nfe_forward
    assert forward_only > 0 and total.nfe_backward == 0
    block = aca.ODEBlock(func, gradient="aca")
    with aca.track_stats() as total:
        block(y0).sum().backward()
    assert total.nfe_backward > 0 and total.as_dict() == block.stats.as_dict()
    del ys


def test_pi_controller_solves_accurately():
    y0 = torch.ones(1, dtype=torch.float64)
    ys = aca.odeint(riccati, y0, [0.0, 2.0], rtol=1e-8, atol=1e-10, pi_beta=0.04)
    assert abs(ys[-1].item() - riccati_exact(2.0)) < 1e-7


def test_single_output_time_returns_y0():
    y0 = torch.randn(3)
    assert torch.equal(aca.odeint(riccati, y0, [0.5])[0], y0)


def test_pi_memory_is_the_last_accepted_error_ratio():
    """A rejected step leaves the PI controller's memory alone; an accepted one sets it."""
    from aca.solvers import AdaptiveSteps, Step
    from aca.solvers.control import AdaptiveState

    controller = AdaptiveSteps(1e-3, 1e-6, order=5, pi_beta=0.04)
    one, y = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    state = AdaptiveState(h=0.1 * one, prev_ratio=0.5 * one, smallest=1e-12 * one)
    for error, accepted in ((1.0, False), (1e-5, True)):
        step = Step(y, torch.full((1,), error, dtype=torch.float64), None, 0, [])
        accept, new, _ = controller.judge(state, 0 * one, 0.1 * one, y, step, 0.1 * one,
                                          torch.zeros(1, dtype=torch.bool),
                                          torch.ones(1, dtype=torch.bool), None)
        assert bool(accept) == accepted
        ratio = error / (1e-6 + 1e-3)
        assert new.prev_ratio.item() == pytest.approx(ratio if accepted else 0.5, rel=1e-12)
