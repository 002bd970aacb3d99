"""The core on every device at hand (issue 32): CPU always, CUDA when present
(``scripts/gpu_check.py`` runs this file on a GPU machine). Gradients of aca, adjoint and
naive against each other and against finite differences, contract cases, dropout replay
(the CUDA generator on CUDA), per-sample steps and dense output, all in float64 on the
device; bf16 autocast (the device's: ``torch.autocast("cpu", dtype=torch.bfloat16)`` on the
CPU); and the placement of checkpoints and step sizes, which the CPU checks by solving with
``meta`` as torch's default device (any tensor the core makes without the state's device
lands there and fails). Public API only."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import aca

CUDA = torch.cuda.is_available()
DEVICES = [pytest.param("cpu"),
           pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]
F64 = torch.float64
GRADIENTS = ("aca", "adjoint", "naive")
GRID = {"solver": "rk4", "step_size": 0.1}


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device with its index (tensors report ``cuda:0``, never ``cuda``)."""
    if request.param == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(request.param)


class Field(nn.Module):
    """A time-dependent MLP field that records the devices of the ``t`` and ``y`` it
    sees; ``t`` may be 0-dim or one time per sample (``per_sample=True``)."""

    def __init__(self, dim: int = 3, hidden: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, dim)]
        self.net = nn.Sequential(*layers)
        self.seen: set[tuple[str, str]] = set()

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.seen.add((str(t.device), str(y.device)))
        # y's dtype: under autocast the network returns bfloat16 (see PlainField)
        return (self.net(y) * (1 + 0.1 * t.reshape(-1, 1))).to(y.dtype)


class PlainField(Field):
    """``net(y)`` as it comes: bfloat16 under autocast, whatever y's dtype."""

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(y)


def loss_of(ys: Tensor) -> Tensor:
    """A loss on every output time, in float32 at least."""
    ys = ys.to(torch.promote_types(ys.dtype, torch.float32))
    return (ys**2).sum() + ys[1:].sin().sum()


def relative_error(got: list[Tensor], want: list[Tensor]) -> float:
    """The largest ‖g - w‖ / ‖w‖ over pairs of tensors."""
    return max(float((g.double() - w.double()).norm() / w.double().norm())
               for g, w in zip(got, want))


def solve_grads(func: Field, y0: Tensor, t: Tensor | list[float], gradient: str,
                **options: object) -> tuple[Tensor, list[Tensor]]:
    """The solution and the gradient of ``loss_of`` w.r.t. ``y0`` and func's parameters."""
    ys = aca.odeint(func, y0, t, gradient=gradient, **options)
    return ys.detach(), list(torch.autograd.grad(loss_of(ys), [y0, *func.parameters()]))


def setup(device: torch.device, batch: int = 4, **field: object) -> tuple[Field, Tensor, Tensor]:
    func = Field(**field).to(device, F64)
    y0 = torch.randn(batch, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    return func, y0.to(device).requires_grad_(), torch.tensor([0.0, 0.4, 1.0], dtype=F64,
                                                               device=device)


# -- gradients on the device ------------------------------------------------------------

@pytest.mark.parametrize("options", [GRID, {"solver": "dopri5", "rtol": 1e-10, "atol": 1e-12}],
                         ids=["rk4-grid", "dopri5"])
def test_gradients_agree_with_each_other_and_finite_differences(device, options):
    """aca = naive (on a grid exactly, adaptive to the tolerance), the adjoint close, all
    three equal to a central finite difference along a random direction; every
    evaluation sees ``t`` and ``y`` on the device."""
    func, y0, t = setup(device)
    grads = {g: solve_grads(func, y0, t, g, **options)[1] for g in GRADIENTS}
    assert relative_error(grads["aca"], grads["naive"]) < (1e-12 if options is GRID else 1e-7)
    assert relative_error(grads["adjoint"], grads["naive"]) < (1e-4 if options is GRID else 1e-7)
    assert func.seen == {(str(device), str(device))}
    direction = [torch.randn(p.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
                 .to(device) for p in [y0, *func.parameters()]]
    eps = 1e-6

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            shifted = [p + sign * eps * d for p, d in zip([y0, *func.parameters()], direction)]
            moved = Field().to(device, F64)
            for p, value in zip(moved.parameters(), shifted[1:]):
                p.copy_(value)
            return float(loss_of(aca.odeint(moved, shifted[0], t, **options)))

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    for gradient, grad in grads.items():
        analytic = float(sum((g * d).sum() for g, d in zip(grad, direction)))
        assert abs(analytic - numeric) < 1e-6 * abs(numeric), gradient


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_time_gradient_matches_the_closed_form(device, gradient):
    """Contract case 2 on the device: z' = a z, L = Σ w_k z(t_k)²."""
    a, z0, times, weights = -0.8, 1.3, [0.2, 0.6, 1.0, 1.7], [0.5, 1.0, 0.0, 2.0]
    rate = nn.Parameter(torch.tensor(a, dtype=F64, device=device))
    t = torch.tensor(times, dtype=F64, device=device, requires_grad=True)
    ys = aca.odeint(lambda t, z: rate * z, torch.tensor(z0, dtype=F64, device=device), t,
                    gradient=gradient, rtol=1e-10, atol=1e-12, params=[rate])
    (got,) = torch.autograd.grad(sum(w * y**2 for w, y in zip(weights, ys)), [t])
    want = [2 * a * w * (z0 * math.exp(a * (s - times[0]))) ** 2
            for w, s in zip(weights[1:], times[1:])]
    want = torch.tensor([-sum(want), *want], dtype=F64)
    assert got.device == device
    assert (got.cpu() - want).abs().max() < 1e-7 * want.abs().max()


@pytest.mark.parametrize("gradient", ["aca", "adjoint"])
def test_unseen_tensors_are_refused(device, gradient):
    """Contract case 1 on the device."""
    linear = nn.Linear(3, 3).to(device, F64)
    y0 = torch.randn(2, 3, dtype=F64, device=device, requires_grad=True)
    with pytest.raises(aca.UnseenTensorError, match="params="):
        aca.odeint(lambda t, y: linear(y), y0, [0.0, 1.0], gradient=gradient)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_in_place_edits_and_second_backward_raise_torchs_error(device, gradient):
    """Contract cases 7 and 11 on the device."""
    func, y0, t = setup(device)
    ys = aca.odeint(func, y0, t, gradient=gradient)
    loss_of(ys).backward(retain_graph=gradient == "naive")
    if gradient != "naive":
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss_of(ys).backward()
    ys = aca.odeint(func, y0, t, gradient=gradient)
    with torch.no_grad():
        next(func.parameters()).mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss_of(ys).backward()


def test_bounded_checkpoints_give_the_same_gradient(device):
    """Contract case 3 on the device: max_checkpoints=2 recomputes, bit for bit."""
    func, y0, t = setup(device)
    options = {"solver": "dopri5", "rtol": 1e-6, "atol": 1e-8}
    full = solve_grads(func, y0, t, "aca", **options)[1]
    stats = aca.SolveStats()
    bounded = solve_grads(func, y0, t, "aca", max_checkpoints=2, stats=stats, **options)[1]
    assert all(torch.equal(a, b) for a, b in zip(full, bounded))
    assert stats.nfe_backward > stats.nfe_forward - 2  # recomputation happened


@pytest.mark.parametrize("options", [GRID, {"solver": "dopri5", "rtol": 1e-4, "atol": 1e-4}],
                         ids=["rk4-grid", "dopri5"])
def test_dropout_is_replayed(device, options):
    """Contract case 4 on the device's generator: the same forward (masks included) for
    aca and naive, equal gradients on a grid (adaptive: naive also differentiates the
    step-size control, which sees the noise: 1-6 % apart), bounded memory replays too,
    the caller's stream untouched."""
    func, y0, t = setup(device, dropout=0.3 if options is GRID else 0.1)
    results = {}
    for gradient, extra in (("aca", {}), ("naive", {}), ("bounded", {"max_checkpoints": 2})):
        torch.manual_seed(7)
        results[gradient] = solve_grads(func, y0, t, "aca" if gradient == "bounded" else gradient,
                                        **options, **extra)
    assert torch.allclose(results["aca"][0], results["naive"][0], rtol=1e-12)
    limit = 1e-12 if options is GRID else 0.1
    assert relative_error(results["aca"][1], results["naive"][1]) < limit
    assert all(torch.equal(a, b) for a, b in zip(results["aca"][1], results["bounded"][1]))
    rng_state = torch.cuda.get_rng_state if device.type == "cuda" else torch.get_rng_state
    ys = aca.odeint(func, y0, t, **options)
    before = rng_state()
    loss_of(ys).backward()
    assert torch.equal(rng_state(), before)


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_per_sample_equals_each_sample_alone(device, gradient):
    """``per_sample=True``: a sample's solution and gradient are those it has alone."""
    func, y0, t = setup(device, batch=3)
    options = {"solver": "dopri5", "rtol": 1e-7, "atol": 1e-9, "per_sample": True}
    ys, batched = solve_grads(func, y0, t, gradient, **options)
    summed = [torch.zeros_like(g) for g in batched[1:]]
    for b in range(len(y0)):
        alone = y0[b:b + 1].detach().clone().requires_grad_()
        ys_b, grads_b = solve_grads(func, alone, t, gradient, **options)
        assert torch.allclose(ys[:, b:b + 1], ys_b, rtol=1e-10, atol=1e-12)
        assert torch.allclose(batched[0][b:b + 1], grads_b[0], rtol=1e-8, atol=1e-10)
        summed = [s + g for s, g in zip(summed, grads_b[1:])]
    # the loss is a sum over samples: the parameters' gradient is the sum of theirs alone
    assert relative_error(batched[1:], summed) < 1e-8
    assert func.seen == {(str(device), str(device))}


def test_dense_output_costs_no_steps_and_differentiates_like_naive(device):
    """Output times inside steps: 50 outputs cost what 2 do, and on a grid aca's gradient
    through the interpolants equals naive's."""
    func, y0, _ = setup(device)
    many = torch.linspace(0.0, 1.0, 50, dtype=F64, device=device)
    nfe = {}
    for n, t in (("2", many[[0, -1]]), ("50", many)):
        stats = aca.SolveStats()
        aca.odeint(func, y0, t, solver="dopri5", stats=stats)
        nfe[n] = stats.nfe_forward
    assert nfe["50"] == nfe["2"]
    grads = {g: solve_grads(func, y0, many, g, **GRID)[1] for g in ("aca", "naive")}
    assert relative_error(grads["aca"], grads["naive"]) < 1e-12


# -- bf16 autocast (the device's own) -------------------------------------------------------

def autocast_grads(device: torch.device, gradient: str, options: dict,
                   field: type[Field] = Field,
                   state: torch.dtype = torch.float32) -> tuple[Tensor, list[Tensor]]:
    """A solve under the device's bf16 autocast, backward outside it (as a training step
    does)."""
    func = field().to(device)
    y0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)).to(device, state)
    y0.requires_grad_()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        ys = aca.odeint(func, y0, [0.0, 0.5, 1.0], gradient=gradient, **options)
    return ys.detach(), list(torch.autograd.grad(loss_of(ys), [y0, *func.parameters()]))


def test_autocast_aca_is_autograd_through_the_accepted_steps(device):
    """On a grid, aca rebuilds the steps under the forward's bf16 autocast: y0's gradient
    equals naive's (autograd through the same bf16 steps) to float32 round-off (measured
    7e-9; 1.4e-2 when the rebuild ran in float32). The parameters' differ by bf16
    accumulation alone: naive sums every step's gradient through autocast's one cached
    bf16 copy of each weight, aca sums the steps' gradients in float32."""
    ys_aca, aca_grads = autocast_grads(device, "aca", GRID)
    ys_naive, naive_grads = autocast_grads(device, "naive", GRID)
    assert torch.equal(ys_aca, ys_naive)
    assert relative_error(aca_grads[:1], naive_grads[:1]) < 1e-5
    assert relative_error(aca_grads[1:], naive_grads[1:]) < 5e-2  # measured 1.4e-2


@pytest.mark.parametrize("gradient", ["aca", "adjoint"])
def test_autocast_adaptive_gradients_agree_loosely(device, gradient):
    """dopri5 under autocast: the forward and the gradients within bf16's precision of
    naive's (measured: 7e-4 and 5e-3 for both; naive's step sizes are float32 tensors, aca's
    Python floats, and the bf16 evaluations amplify that difference)."""
    options = {"solver": "dopri5", "rtol": 1e-3, "atol": 1e-4}
    ys, grads = autocast_grads(device, gradient, options)
    ys_naive, naive_grads = autocast_grads(device, "naive", options)
    assert torch.allclose(ys, ys_naive, rtol=1e-2, atol=1e-3)
    assert relative_error(grads, naive_grads) < 0.05


@pytest.mark.parametrize("gradient", [
    "naive",
    "aca",
    "adjoint",
])
def test_autocast_bf16_state_backward_outside_autocast(device, gradient):
    """A bf16 state (what autocast makes of NODE-18's features) solved under autocast and
    differentiated after it, as the trainer's ``amp`` does: gradients within bf16's
    precision of the float32 solve's."""
    ys, grads = autocast_grads(device, gradient, GRID, state=torch.bfloat16)
    _, reference = autocast_grads(device, "naive", GRID, state=torch.float32)
    assert ys.dtype == torch.bfloat16
    assert relative_error(grads, reference) < 0.05


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_autocast_float32_state_with_a_bf16_field(device, gradient):
    """A plain module under autocast (no cast back to y's dtype) is solved."""
    ys, grads = autocast_grads(device, gradient, GRID, field=PlainField)
    assert ys.dtype == torch.float32 and all(g.isfinite().all() for g in grads)


# -- placement: checkpoints and step sizes on the state's device ---------------------------

@pytest.mark.parametrize(("options", "times"), [
    (GRID, "tensor"), ({"solver": "dopri5"}, "tensor"), ({"solver": "dopri5"}, "list"),
    ({"solver": "dopri5", "max_checkpoints": 2}, "tensor"),
    ({"solver": "dopri5", "per_sample": True}, "tensor"),
    ({"solver": "dopri5", "per_sample": True}, "list"),
    ({"solver": "bosh3", "interpolate": False}, "tensor")],
    ids=["grid", "dopri5", "dopri5-list", "bounded", "per-sample", "per-sample-list", "landing"])
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_nothing_is_made_off_the_states_device(gradient, options, times):
    """With ``meta`` as torch's default device, a step size, time or checkpoint made
    without the state's device would be a meta tensor (and mixing it with the CPU state
    fails): every evaluation, the outputs and all gradients stay on the CPU."""
    func, y0, _ = setup(torch.device("cpu"))
    t = [0.0, 0.3, 1.0]
    inputs = [y0, *func.parameters()]
    if times == "tensor":
        t = torch.tensor(t, dtype=F64, requires_grad=True)
        inputs.append(t)
    with torch.device("meta"):
        assert torch.empty(()).device.type == "meta"  # the default device took effect
        ys = aca.odeint(func, y0, t, gradient=gradient, **options)
        grads = torch.autograd.grad(loss_of(ys), inputs)
    assert ys.device.type == "cpu" and {g.device.type for g in grads} == {"cpu"}
    assert func.seen == {("cpu", "cpu")}
