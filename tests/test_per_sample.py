"""Per-sample adaptive steps (issue 16): each sample of a batch has its own step sizes,
error norm and accept/reject decisions, so a sample solved inside any batch gives the
same solution and gradient as solved alone; ACA's gradient is autograd through each
sample's accepted steps; bounded-memory ACA; per-sample output times; statistics;
what is refused."""

import math
from types import SimpleNamespace

import pytest
import torch
from odes import relative_error, replay_steps
from torch import nn

import aca
from aca.solvers import SOLVERS, AdaptiveSteps, Checkpoints, integrate

pytestmark = pytest.mark.usefixtures("float64")

TOL = {"rtol": 1e-7, "atol": 1e-9}


class Oscillators(nn.Module):
    """Forced van der Pol oscillators: a learnable μ per sample (their stiffness varies
    across the batch), a shared forcing weight, time-dependent."""

    def __init__(self, mu: torch.Tensor) -> None:
        super().__init__()
        self.mu = nn.Parameter(mu.clone())
        self.w = nn.Parameter(torch.tensor(0.3))
        self.seen_t: list[tuple[int, ...]] = []

    def forward(self, t, y):
        self.seen_t.append(tuple(t.shape))
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, self.mu * (1 - x**2) * v - x + self.w * torch.cos(t)], dim=1)


def batch(size: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mu = torch.exp(torch.empty(size).uniform_(-2.3, 1.6, generator=generator))  # [0.1, 5]
    y0 = torch.empty(size, 2).uniform_(-2, 2, generator=generator)
    times = torch.sort(torch.rand(size, 6, generator=generator) * 4, dim=1).values
    return mu, y0, times


def solve(mu, y0, t, gradient="aca", **options):
    """The outputs, the gradients of a loss on every output (y0, μ, w, t) and the stats."""
    func = Oscillators(mu)
    y0 = y0.clone().requires_grad_()
    t = t.clone().requires_grad_()
    stats = aca.SolveStats()
    ys = aca.odeint(func, y0, t, gradient=gradient, stats=stats, **(TOL | options))
    loss = (ys**2).sum() + ys.sin().sum()
    return ys.detach(), torch.autograd.grad(loss, [y0, func.mu, func.w, t]), stats


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("shared_times", [True, False])
@pytest.mark.parametrize("gradient", ["aca", "naive", "adjoint"])
def test_a_sample_in_any_batch_equals_the_sample_alone(gradient, shared_times, sign):
    mu, y0, times = batch()
    if sign < 0:  # backwards in time van der Pol is unstable: calmer ones, a shorter span
        mu, times = mu / 10, times / 4
    times = times[0] if shared_times else times
    times = times if sign > 0 else -times
    ys, grads, _ = solve(mu, y0, times, gradient, per_sample=True)
    others = [2, 0, 4]  # another batch, another order
    ys_other, grads_other, _ = solve(mu[others], y0[others], times if shared_times
                                     else times[others], gradient, per_sample=True)
    w_grad = 0.0
    t_grad = torch.zeros_like(times)
    for b in range(len(mu)):
        t_b = times if shared_times else times[b:b + 1]
        ys_b, (y0_b, mu_b, w_b, t_grad_b), _ = solve(mu[b:b + 1], y0[b:b + 1], t_b, gradient,
                                                     per_sample=True)
        assert relative_error([ys[:, b], grads[0][b], grads[1][b]],
                              [ys_b[:, 0], y0_b[0], mu_b[0]]) < 1e-10
        w_grad, t_grad = w_grad + w_b, t_grad + (t_grad_b if shared_times else 0.0)
        if not shared_times:
            t_grad[b] = t_grad_b[0]
        if b in others:
            j = others.index(b)
            assert relative_error([ys_other[:, j], grads_other[1][j]],
                                  [ys_b[:, 0], mu_b[0]]) < 1e-10
    # the shared parameter's and the output times' gradients: the sums over the samples
    assert relative_error([grads[2], grads[3]], [w_grad, t_grad]) < 1e-10


GRIDS = [  # non-FSAL adaptive (the first stage is evaluated again after a step), fixed grids
    {"solver": "heun_euler", "rtol": 1e-5, "atol": 1e-7},
    {"solver": "euler", "step_size": 0.05},
    {"solver": "rk4", "step_size": 0.1},
    {"solver": "dopri5", "step_size": 0.15},
]


@pytest.mark.parametrize("options", GRIDS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("gradient", ["aca", "naive", "adjoint"])
def test_other_solvers_and_fixed_grids_per_sample(gradient, options):
    """Every solver per sample: a sample in a batch equals the sample alone (each walks
    its own grid ``t_b0 + j·step_size``, the last step landing on its last time), and a
    batch of one equals the shared-step solver, steps and gradients."""
    mu, y0, times = batch()
    ys, grads, stats = solve(mu, y0, times, gradient, per_sample=True, **options)
    for b in (0, 3):
        ys_b, grads_b, stats_b = solve(mu[b:b + 1], y0[b:b + 1], times[b:b + 1], gradient,
                                       per_sample=True, **options)
        assert relative_error([ys[:, b], grads[0][b], grads[1][b], grads[3][b]],
                              [ys_b[:, 0], grads_b[0][0], grads_b[1][0], grads_b[3][0]]) < 1e-10
        assert stats.per_sample[0]["accepted"][b] == stats_b.accepted
        seminorm = {"adjoint_seminorm": gradient == "adjoint"}  # the per-sample reverse norm
        shared = solve(mu[b:b + 1], y0[b:b + 1], times[b], gradient, **options, **seminorm)
        assert relative_error([ys_b[:, 0], *grads_b[:3], grads_b[3][0]],
                              [shared[0][:, 0], *shared[1]]) < 1e-10
        assert (stats_b.accepted, stats_b.rejected) == (shared[2].accepted, shared[2].rejected)
    if "step_size" in options:  # each sample's own grid: the count follows its span
        spans = (times[:, -1] - times[:, 0]) / options["step_size"]
        assert stats.per_sample[0]["accepted"] == torch.ceil(spans - 1e-9).long().tolist()


def test_fixed_grid_aca_equals_naive_with_bounded_memory_too():
    """On a fixed grid no controller is differentiated: ACA's gradient is naive's, also
    when the checkpoints are bounded (the rest recomputed)."""
    mu, y0, times = batch()
    options = {"solver": "rk4", "step_size": 0.1, "per_sample": True}
    _, naive, _ = solve(mu, y0, times, "naive", **options)
    for budget in (None, 3):
        _, got, _ = solve(mu, y0, times, "aca", max_checkpoints=budget, **options)
        assert relative_error(got, naive) < 1e-10


def test_a_fixed_grid_refuses_a_non_finite_state():
    y0 = torch.tensor([[1.0], [2.0]])
    with pytest.raises(aca.NonFiniteStateError, match="non-finite"):
        aca.odeint(lambda t, y: y**3, y0, [0.0, 2.0], solver="rk4", step_size=0.5,
                   per_sample=True)


def test_shared_steps_make_a_sample_depend_on_its_batch():
    """Why per_sample exists: with one step size for the batch, a calm sample's result
    moves with a stiff neighbour (by the solver's error, not round-off)."""
    mu, y0 = torch.tensor([0.1, 5.0]), torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    t = torch.linspace(0, 4, 5)
    for per_sample, changed in [(False, True), (True, False)]:
        together, *_ = solve(mu, y0, t, per_sample=per_sample, rtol=1e-4, atol=1e-6)
        alone, *_ = solve(mu[:1], y0[:1], t, per_sample=per_sample, rtol=1e-4, atol=1e-6)
        assert (relative_error([together[:, 0]], [alone[:, 0]]) > 1e-8) == changed


@pytest.mark.parametrize("options", [{}, {"pi_beta": 0.06, "safety": 0.8, "ifactor": 5.0}])
@pytest.mark.parametrize("gradient", ["aca", "naive"])
def test_one_sample_takes_the_shared_step_solvers_steps(gradient, options):
    """A batch of one: per_sample=True and the shared-step solver are one controller."""
    mu, y0, times = batch()
    got = solve(mu[3:4], y0[3:4], times[0], gradient, per_sample=True, **options)
    want = solve(mu[3:4], y0[3:4], times[0], gradient, **options)
    assert relative_error([got[0], *got[1]], [want[0], *want[1]]) < 1e-10
    assert (got[2].accepted, got[2].rejected) == (want[2].accepted, want[2].rejected)


def test_one_sample_adjoint_takes_the_shared_adjoints_reverse_steps():
    """A batch of one: the per-sample adjoint's reverse solve is the shared adjoint's with
    the seminorm (the larger RMS of state and adjoint), its parameter quadrature the
    Runge–Kutta update of the shared adjoint's parameter part."""
    mu, y0, times = batch()
    got = solve(mu[3:4], y0[3:4], times[0], "adjoint", per_sample=True)
    want = solve(mu[3:4], y0[3:4], times[0], "adjoint", adjoint_seminorm=True)
    # (other reverse steps would differ by the solver's error, ~1e-7 here)
    assert relative_error([got[0], *got[1]], [want[0], *want[1]]) < 1e-10


@pytest.mark.parametrize("gradient", ["aca", "adjoint"])
def test_unseen_tensors_and_higher_order_adjoint_are_refused(gradient):
    """The per-sample paths keep the contract: a closure over a tensor that requires grad
    is refused (its gradient would silently be missing), and so is create_graph through
    the adjoint."""
    mu, y0, times = batch()
    w = torch.tensor(0.3, requires_grad=True)
    with pytest.raises(aca.UnseenTensorError, match="params="):
        aca.odeint(lambda t, y: -w * y, y0, times, per_sample=True, gradient=gradient)
    if gradient == "adjoint":
        x0 = y0.clone().requires_grad_()
        ys = aca.odeint(Oscillators(mu), x0, times, per_sample=True, gradient=gradient, **TOL)
        with pytest.raises(aca.ODEError, match="create_graph"):
            torch.autograd.grad(ys.sum(), x0, create_graph=True)


@pytest.mark.parametrize("shared_times", [True, False])
def test_adjoint_converges_to_aca(shared_times):
    """The reverse solve does not retrace the forward one: the per-sample adjoint's
    gradient differs from ACA's by the solver's error, and that error falls with the
    tolerance (and the t, μ and w gradients with it)."""
    mu, y0, times = batch()
    times = times[0] if shared_times else times
    errors = []
    for tolerance in (1e-6, 1e-10):
        options = {"rtol": tolerance, "atol": tolerance / 100, "per_sample": True}
        _, exact, _ = solve(mu, y0, times, "aca", **options)
        _, adjoint, _ = solve(mu, y0, times, "adjoint", **options)
        errors.append(relative_error(adjoint, exact))
    assert errors[1] < 1e-6 and errors[1] < errors[0] / 100


def test_aca_is_autograd_through_each_samples_accepted_steps():
    """ACA's gradient against an independent textbook replay of every sample's accepted
    steps and interpolants (the ACA contract), and close to naive's (which differs by
    also differentiating the step-size controller)."""
    mu, y0, times = batch()
    func = Oscillators(mu)
    tableau = SOLVERS["dopri5"]
    cp = _recorded(func, y0, times, AdaptiveSteps(TOL["rtol"], TOL["atol"], tableau.order))
    x0 = y0.clone().requires_grad_()
    T = times.clone().requires_grad_()
    replayed = []
    for b in range(len(mu)):
        n = int(cp.counts[b])
        inside: dict[int, list[int]] = {}
        for j, (ks, rows) in cp.inside.items():
            inside.update({j: ks[rows == b].tolist()} if (rows == b).any() else {})
        steps = SimpleNamespace(times=cp.times[:n, b].tolist(), steps=cp.steps[:n, b].tolist(),
                                starts=[0] * n, lands={n - 1: times.shape[1] - 1}, inside=inside)
        replayed.append(replay_steps(_one_sample(func, b), x0[b], T[b], times[b].tolist(), steps,
                                     tableau))
    loss = sum((ys**2).sum() + ys.sin().sum() for ys in replayed)
    want = torch.autograd.grad(loss, [x0, func.mu, func.w, T])
    _, got, _ = solve(mu, y0, times, per_sample=True)
    assert relative_error(got, want) < 1e-10
    _, naive, _ = solve(mu, y0, times, "naive", per_sample=True)
    assert relative_error(got, naive) < 1e-4  # measured 9.3e-6


def _recorded(func, y0, times, controller):
    """The per-sample loop's record of each sample's accepted steps."""
    cp = Checkpoints()
    with torch.no_grad():
        integrate(lambda t, y: func(t.reshape(-1).to(y.dtype), y), y0, times.double(),
                  SOLVERS["dopri5"], controller, 10_000, checkpoints=cp)
    return cp


def _one_sample(func: Oscillators, b: int):
    def rhs(t, y):
        x, v = y[0], y[1]
        return torch.stack([v, func.mu[b] * (1 - x**2) * v - x + func.w * torch.cos(t)])
    return rhs


@pytest.mark.parametrize("budget", [2, 3, 5])
def test_bounded_memory_aca_gives_the_same_gradient(budget):
    mu, y0, times = batch()
    _, want, full = solve(mu, y0, times, per_sample=True)
    _, got, bounded = solve(mu, y0, times, per_sample=True, max_checkpoints=budget)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert bounded.nfe_backward > full.nfe_backward  # the rest was recomputed
    cp = Checkpoints(budget)
    func = Oscillators(mu)
    with torch.no_grad():
        integrate(lambda t, y: func(t.reshape(-1).to(y.dtype), y), y0, times.double(),
                  SOLVERS["dopri5"], AdaptiveSteps(1e-7, 1e-9, 5), 10_000, checkpoints=cp)
    assert len(cp.states) <= budget < len(cp.times)


def test_higher_order_gradients_equal_naive_on_one_sample_grid():
    """create_graph through per-sample ACA: the gradient of a gradient norm equals the
    shared-step ACA's for a batch of one."""
    mu, y0, times = batch()

    def penalty(per_sample):
        func = Oscillators(mu[:2])
        x0 = y0[:2].clone().requires_grad_()
        ys = aca.odeint(func, x0, times[0], per_sample=per_sample, **TOL)
        (g,) = torch.autograd.grad((ys**2).sum(), x0, create_graph=True)
        return torch.autograd.grad((g**2).sum(), [x0, func.mu])

    got = penalty(True)
    assert all(g.abs().sum() > 0 for g in got)
    singles = []
    for b in range(2):
        func = Oscillators(mu[b:b + 1])
        x0 = y0[b:b + 1].clone().requires_grad_()
        ys = aca.odeint(func, x0, times[0], per_sample=True, **TOL)
        (g,) = torch.autograd.grad((ys**2).sum(), x0, create_graph=True)
        singles.append(torch.autograd.grad((g**2).sum(), [x0, func.mu]))
    want = [torch.cat([s[i] for s in singles]) for i in range(2)]
    assert relative_error(got, want) < 1e-10


def test_statistics_per_sample_and_totals():
    mu, y0, times = batch()
    func = Oscillators(mu)
    with aca.track_stats() as tracked:
        ys = aca.odeint(func, y0.requires_grad_(), times, per_sample=True, **TOL)
        ys.sum().backward()
    counts = tracked.per_sample[0]
    for b in range(len(mu)):
        _, _, alone = solve(mu[b:b + 1], y0[b:b + 1].detach(), times[b:b + 1], per_sample=True)
        assert (counts["accepted"][b], counts["rejected"][b], counts["nfe"][b]) == (
            alone.accepted, alone.rejected, alone.nfe_forward)
    assert tracked.accepted == sum(counts["accepted"])
    assert tracked.rejected == sum(counts["rejected"])
    assert tracked.sample_nfe_forward == sum(counts["nfe"])
    assert tracked.nfe_forward == max(counts["nfe"])  # one batched call per evaluation
    # ACA rebuilds each sample's accepted steps, batched by step number: 6 stages with k1,
    # and the FSAL stage where an output is interpolated
    assert 6 <= tracked.nfe_backward / max(counts["accepted"]) <= 7
    assert "per_sample" not in tracked.as_dict()
    assert set(func.seen_t) == {(len(mu),)}  # func receives t as a (B,) tensor


def test_evaluation_mode_and_odeblock():
    mu, y0, times = batch()
    with torch.no_grad():
        ys = aca.odeint(Oscillators(mu), y0, times, per_sample=True, **TOL)
    want, *_ = solve(mu, y0, times, per_sample=True)
    assert torch.equal(ys, want)
    block = aca.ODEBlock(Oscillators(mu), t1=1.0, time_dependent=True, per_sample=True, **TOL)
    out = block(y0)
    assert out.shape == y0.shape
    out.sum().backward()
    assert block.func.mu.grad is not None


@pytest.mark.parametrize(("options", "message"), [
    ({"interpolate": False}, "interpolate=True"),
    ({"per_sample": 1}, "True or False"),
])
def test_refused_options(options, message):
    mu, y0, times = batch()
    with pytest.raises(aca.InvalidOptionError, match=message):
        aca.odeint(Oscillators(mu), y0, times[0], **({"per_sample": True} | options))


@pytest.mark.parametrize(("y0", "t", "error", "message"), [
    (torch.tensor(1.0), [0.0, 1.0], aca.InvalidOptionError, "batch dimension"),
    (torch.zeros(3, 2), torch.zeros(2, 4), aca.NonMonotoneTimeError, r"\(B=3, T\)"),
    (torch.zeros(3, 2), torch.zeros(3, 4, 1), aca.NonMonotoneTimeError, "shape"),
    (torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), aca.NonMonotoneTimeError,
     "strictly increasing"),
    (torch.zeros(2, 2), torch.tensor([[0.0, 1.0], [0.0, 0.0]]), aca.NonMonotoneTimeError,
     "strictly increasing"),
    (torch.zeros(2, 2), [1.0, 0.5, 0.7], aca.NonMonotoneTimeError, "strictly"),
])
def test_refused_shapes_and_times(y0, t, error, message):
    with pytest.raises(error, match=message):
        aca.odeint(lambda t, y: -y, y0, t, per_sample=True, gradient="naive")


def test_random_numbers_are_refused_by_aca_and_drawn_by_naive():
    net = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.3), nn.Linear(8, 2))
    y0 = torch.randn(4, 2, requires_grad=True)
    with pytest.raises(aca.RandomStateError, match="per-sample aca"):
        aca.odeint(lambda t, y: net(y), y0, [0.0, 1.0], per_sample=True,
                   params=list(net.parameters()))
    with pytest.raises(aca.RandomStateError, match="adjoint"):
        aca.odeint(lambda t, y: net(y), y0, [0.0, 1.0], per_sample=True, gradient="adjoint",
                   params=list(net.parameters())).sum().backward()
    aca.odeint(lambda t, y: net(y), y0, [0.0, 1.0], per_sample=True, gradient="naive")


def test_underflow_and_max_steps_name_the_problem():
    y0 = torch.tensor([[1.0], [1.0]])
    with pytest.raises(aca.MaxStepsExceededError, match="max_steps=3"):
        aca.odeint(lambda t, y: -y * torch.tensor([1.0, 100.0]).view(2, 1), y0, [0.0, 5.0],
                   per_sample=True, max_steps=3)
    with pytest.raises((aca.StepSizeUnderflowError, aca.NonFiniteStateError)):
        aca.odeint(lambda t, y: y**2, y0, [0.0, 2.0], per_sample=True, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("gradient", ["aca", "adjoint"])
def test_timeseries_per_sample_option(gradient):
    """task.per_sample: a series' prediction and its loss's gradient depend on its own data
    alone (per-sample encoder and decoder, the whole time grid): in a batch they equal the
    series alone; refused where it cannot apply."""
    from conftest import compose_config

    from aca.errors import ConfigError
    from aca.train.config import build_task

    tiny = ["task=sines", "task.n_series=8", "task.n_times=12", "task.points_per_series=8",
            "task.latent_dim=3", "task.rec_dims=4", "task.units=8", "task.gru_units=8",
            "task.encoder_step=0.5", "task.per_sample=true", f"method={gradient}"]
    task = build_task(compose_config(*tiny))
    model = task.model().double().eval()
    assert model.ode_options["per_sample"] and model.encoder.ode_options["per_sample"]
    train, _ = task.datasets()
    batch = task.prepare_batch(train[list(range(4))], train=False)
    values, times = batch.values.double(), batch.times.double()
    observed = batch.observed.double()
    assert len(times) == 12  # the whole grid, not the batch's union

    def predict(rows):
        model.zero_grad()
        predictions, _ = model(times, values[rows] * observed[rows], observed[rows])
        (predictions**2).sum().backward()
        return predictions.detach(), [p.grad.clone() for p in model.parameters()]

    together, grads = predict([0, 1, 2, 3])
    alone = [predict([b]) for b in range(4)]
    assert relative_error([together[b] for b in range(4)], [a[0][0] for a in alone]) < 1e-10
    assert relative_error(grads, [sum(g) for g in zip(*(a[1] for a in alone))]) < 1e-10
    with pytest.raises(ConfigError, match="per_sample"):
        build_task(compose_config(*tiny, "task.model=ode_rnn"))


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("t0", [1e4, 1e6])
def test_float32_states_keep_float64_times(t0, per_sample):
    """Times are float64 whatever the state's dtype: y' = -y on [t0, t0 + 1] in float32
    (issue 25: 1.9e-4 off at 1e4, 400x the tolerance, while per-sample times were float32;
    float32 times cannot resolve the steps at 1e6, where their spacing is 0.0625)."""
    y0 = torch.ones(3, 1, dtype=torch.float32)
    ys = aca.odeint(lambda t, y: -y, y0, torch.tensor([t0, t0 + 1.0]), rtol=1e-6, atol=1e-9,
                    per_sample=per_sample)
    assert (ys[-1] - math.exp(-1)).abs().max() < 1e-6  # measured 1.2e-7 at both


@pytest.mark.parametrize("per_sample", [True, False])
def test_a_non_finite_rejected_trial_leaves_naive_s_gradient_finite(per_sample):
    """0 * sqrt(y) is nan in trial steps that overshoot below 0: they are rejected and must
    not enter naive's graph (issue 25: the per-sample gradient was nan, silently)."""
    grads = {}
    for gradient in ("naive", "aca"):
        y0 = torch.tensor([[1.0], [2.0]], requires_grad=True)
        stats = aca.SolveStats()
        ys = aca.odeint(lambda t, y: -20 * y + 0 * torch.sqrt(y), y0, [0.0, 1.0],
                        gradient=gradient, per_sample=per_sample, stats=stats)
        (grads[gradient],) = torch.autograd.grad(ys[-1].sum(), y0)
    assert stats.rejected > 10
    # naive also differentiates the controller: 1.3 % from aca's fixed-h gradient (measured)
    assert relative_error([grads["naive"]], [grads["aca"]]) < 0.05


@pytest.mark.parametrize("per_sample", [True, False])
def test_the_adjoint_s_error_norm_includes_the_adjoint(per_sample):
    """y0 = 0: the state never moves, so the reverse solve's step sizes are the adjoint's
    alone; dL/dy0 = w e^(-k) (measured 7.6e-9; 18.5 when the norm leaves the adjoint out)."""
    y0 = torch.zeros(2, 3, requires_grad=True)
    k = torch.tensor(5.0, requires_grad=True)
    weights = torch.arange(6.0).view(2, 3)
    ys = aca.odeint(lambda t, y: -k * y, y0, [0.0, 1.0], gradient="adjoint", rtol=1e-7,
                    atol=1e-9, per_sample=per_sample, params=[k])
    (grad,) = torch.autograd.grad((ys[-1] * weights).sum(), y0)
    assert (grad - weights * math.exp(-5)).abs().max() < 1e-7
