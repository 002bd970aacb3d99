"""torchdiffeq's example scripts (github.com/rtqichen/torchdiffeq, ``examples/``) with the
import changed to ``aca.torchdiffeq`` (issue 29): each test makes the calls one script
makes — the same entry points, arguments, state shapes and loss — at a small size for a
few iterations, from the same seed once with ``torchdiffeq`` and once with
``aca.torchdiffeq``, and compares the losses (and, for the events, the gradients). The
models are written here after the scripts' descriptions, not copied. Outputs of adaptive
solves agree to the solver's tolerance (aca reads them off its interpolants), so the
comparisons are relative, not bitwise."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch
import torchdiffeq
from torch import nn

import aca.torchdiffeq as aca_torchdiffeq


def _both(scenario: Callable[..., list[float]], **options) -> tuple[list[float], list[float]]:
    """``scenario`` run with torchdiffeq and with aca.torchdiffeq, each from seed 0."""
    runs = []
    for module in (torchdiffeq, aca_torchdiffeq):
        torch.manual_seed(0)
        np.random.seed(0)
        runs.append(scenario(module, **options))
    return runs[0], runs[1]


def _assert_close(ours: list[float], theirs: list[float], rel: float) -> None:
    assert all(math.isfinite(value) for value in ours), ours
    assert ours == pytest.approx(theirs, rel=rel)


# ------------------------------------------------------------------------ ode_demo.py


class Cubic(nn.Module):
    """The demo's true dynamics dy/dt = y**3 A (a spiral)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y**3 @ self.a


class CubicMLP(nn.Module):
    """The demo's model: a tanh MLP of y**3, weights N(0, 0.1), zero biases."""

    def __init__(self, hidden: int = 50) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        for layer in (self.net[0], self.net[2]):
            nn.init.normal_(layer.weight, std=0.1)
            nn.init.zeros_(layer.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y**3)


def ode_demo(td: ModuleType, adjoint: bool, iterations: int = 4, points: int = 200,
             window: int = 10, batch: int = 16) -> list[float]:
    """Minibatches of short windows of the true spiral (its data also solved by the
    script's ``odeint``), an L1 loss, RMSprop; then the whole trajectory's loss."""
    solve = td.odeint_adjoint if adjoint else td.odeint
    t = torch.linspace(0.0, 25.0, points)
    true_y0 = torch.tensor([[2.0, 0.0]])
    with torch.no_grad():
        true_y = solve(Cubic(), true_y0, t, method="dopri5")
    func = CubicMLP()
    optimizer = torch.optim.RMSprop(func.parameters(), lr=1e-3)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        starts = torch.from_numpy(np.random.choice(points - window, batch, replace=False))
        target = torch.stack([true_y[starts + step] for step in range(window)])
        loss = (solve(func, true_y[starts], t[:window]) - target).abs().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append((solve(func, true_y0, t) - true_y).abs().mean().item())
    return losses


@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
def test_ode_demo(adjoint: bool) -> None:
    theirs, ours = _both(ode_demo, adjoint=adjoint)
    _assert_close(ours, theirs, rel=1e-5)


# ---------------------------------------------------------------------- latent_ode.py


def spirals(count: int, points: int, observed: int, noise: float) -> tuple[torch.Tensor, ...]:
    """Two-armed Archimedean spirals (half clockwise), each observed on a random window of
    ``observed`` of its ``points`` times with Gaussian noise: (times, observations)."""
    times = np.linspace(0.0, 6 * np.pi, points)
    windows = []
    for index in range(count):
        radius = 0.5 + 0.3 * times
        angle = times if index % 2 else -times
        curve = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        start = np.random.randint(0, points - observed)
        windows.append(curve[start:start + observed] + noise * np.random.randn(observed, 2))
    return (torch.from_numpy(times[:observed]).float(),
            torch.from_numpy(np.stack(windows)).float())


class Encoder(nn.Module):
    """A tanh RNN read backwards in time; the mean and log-variance of q(z0)."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.step = nn.Linear(2 + hidden, hidden)
        self.out = nn.Linear(hidden, 2 * latent)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        state = torch.zeros(len(observations), self.hidden)
        for index in reversed(range(observations.shape[1])):
            state = torch.tanh(self.step(torch.cat([observations[:, index], state], dim=1)))
        return self.out(state)


class LatentField(nn.Module):
    """The latent dynamics: a three-layer ELU MLP (in-place ELUs, as the script's)."""

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ELU(inplace=True),
                                 nn.Linear(hidden, latent))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def latent_ode(td: ModuleType, adjoint: bool, iterations: int = 3, latent: int = 4,
               noise: float = 0.3) -> list[float]:
    """The spiral latent ODE: encode, sample z0, solve the latent ODE over the observed
    times, decode; -ELBO (Gaussian likelihood, analytic KL) with Adam; then solves
    forward and backward in time from one z0, as the script's visualisation."""
    solve = td.odeint_adjoint if adjoint else td.odeint
    times, observations = spirals(count=8, points=100, observed=20, noise=noise)
    encoder, field = Encoder(latent, 25), LatentField(latent, 20)
    decoder = nn.Sequential(nn.Linear(latent, 20), nn.ReLU(), nn.Linear(20, 2))
    parameters = [*encoder.parameters(), *field.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=0.01)
    log_noise = 2 * math.log(noise)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        mean, log_var = encoder(observations).chunk(2, dim=1)
        z0 = mean + torch.randn(mean.shape) * torch.exp(0.5 * log_var)
        decoded = decoder(solve(field, z0, times).permute(1, 0, 2))
        log_likelihood = -0.5 * (math.log(2 * math.pi) + log_noise
                                 + (observations - decoded) ** 2 / math.exp(log_noise))
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var)
        loss = (-log_likelihood.sum((1, 2)) + kl.sum(1)).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        z0 = encoder(observations)[0, :latent]
        forward = solve(field, z0, torch.linspace(0.0, 2 * math.pi, 50))
        backward = solve(field, z0, torch.linspace(0.0, -math.pi, 50))
        losses += [decoder(forward).abs().mean().item(), decoder(backward).abs().mean().item()]
    return losses


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("adjoint", [False, True], ids=["odeint", "adjoint"])
def test_latent_ode(adjoint: bool) -> None:
    """In float64: in float32, torchdiffeq's default rtol 1e-7 is below the state's
    resolution, and the two libraries' roundings, carried through Adam's steps, differed
    by 1.02e-5 relative on one CPU (1.7e-6 in float64)."""
    theirs, ours = _both(latent_ode, adjoint=adjoint)
    _assert_close(ours, theirs, rel=1e-5)


# ------------------------------------------------------------------- bouncing_ball.py


class Ball(nn.Module):
    """A ball falling under gravity onto the ground, bouncing with absorption; its
    state is the tuple (position, velocity, log radius)."""

    def __init__(self) -> None:
        super().__init__()
        self.gravity = nn.Parameter(torch.tensor([9.8]))
        self.log_radius = nn.Parameter(torch.tensor([0.2]).log())
        self.t0 = nn.Parameter(torch.tensor([0.0]))
        self.init_pos = nn.Parameter(torch.tensor([10.0]))
        self.init_vel = nn.Parameter(torch.tensor([0.0]))
        self.absorption = nn.Parameter(torch.tensor([0.2]))

    def forward(self, t, state):
        _, velocity, log_radius = state
        return velocity, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        position, _, log_radius = state
        return position - log_radius.exp()

    def bounce(self, state):
        position, velocity, log_radius = state
        return position + 1e-7, -velocity * (1 - self.absorption), log_radius


def bouncing_ball(td: ModuleType, adjoint: bool, bounces: int = 3) -> list[float]:
    """The collision times (``odeint_event`` with the script's ``odeint_interface``) and
    the gradient of the last one; then the dense path between the events."""
    ball = Ball()
    t0, state = ball.t0, (ball.init_pos, ball.init_vel, ball.log_radius)
    events = []
    for _ in range(bounces):
        event_t, solution = td.odeint_event(
            ball, state, t0, event_fn=ball.event_fn, reverse_time=False, atol=1e-8,
            rtol=1e-8, odeint_interface=td.odeint_adjoint if adjoint else td.odeint)
        events.append(event_t)
        state = ball.bounce(tuple(part[-1] for part in solution))
        t0 = event_t
    events[-1].backward()
    gradients = [parameter.grad.item() for parameter in
                 (ball.gravity, ball.log_radius, ball.t0, ball.init_pos, ball.init_vel)]
    path = []
    with torch.no_grad():
        t0, state = ball.t0, (ball.init_pos, ball.init_vel, ball.log_radius)
        for event_t in events:
            times = torch.cat([t0.reshape(1), torch.linspace(t0.item(), event_t.item(), 20)[1:-1],
                               event_t.reshape(1)])
            solution = td.odeint(ball, state, times, atol=1e-8, rtol=1e-8)
            path.append(solution[0].sum().item())
            state = ball.bounce(tuple(part[-1] for part in solution))
            t0 = event_t
    return [event.item() for event in events] + gradients + path


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("adjoint", [
    False, True], ids=["odeint", "adjoint"])
def test_bouncing_ball(adjoint: bool) -> None:
    theirs, ours = _both(bouncing_ball, adjoint=adjoint)
    _assert_close(ours, theirs, rel=1e-6)


# ------------------------------------------------------------------- learn_physics.py


class LearnedBall(nn.Module):
    """learn_physics' model: learnt gravity-like dynamics, a learnt ground (the event
    radius, carried in the state), a learnt bounce."""

    def __init__(self) -> None:
        super().__init__()
        self.init_pos = nn.Parameter(torch.tensor([10.0]))
        self.init_vel = nn.Parameter(torch.tensor([0.0]))
        self.acceleration = nn.Linear(1, 1)
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.radius = nn.Parameter(torch.rand(1))
        self.restitution = nn.Linear(1, 1)

    def forward(self, t, state):
        position, velocity, *rest = state
        dvel = torch.tanh(self.acceleration(torch.zeros_like(velocity))) * self.scale
        return (velocity, dvel, *[torch.zeros_like(part) for part in rest])

    def bounce(self, state):
        position, velocity, *rest = state
        velocity = -torch.sigmoid(self.restitution(torch.ones_like(velocity))) * velocity
        return (position, velocity, *rest)

    def simulate(self, td: ModuleType, times: torch.Tensor, max_events: int) -> torch.Tensor:
        """The positions at ``times``: solved from event to event; the event function
        is a constant past the last time (the script's way of ending the last solve)."""
        def event_fn(t, state):
            if t > times[-1] + 1e-7:
                return torch.zeros_like(t)
            position, _, radius = state
            return position - radius.reshape_as(position) ** 2

        t0 = times[:1]
        state = (self.init_pos, self.init_vel, self.radius)
        trajectory = [state[0][None]]
        for count in range(max_events):
            if count < max_events - 1:
                event_t, solution = td.odeint_event(self, state, t0, event_fn=event_fn,
                                                    atol=1e-8, rtol=1e-8, method="dopri5")
            else:
                event_t = times[-1]
            inside = times[(times > t0) & (times <= event_t)]
            between = td.odeint(self, state, torch.cat([t0.reshape(-1), inside]),
                                atol=1e-8, rtol=1e-8)
            trajectory.append(between[0][1:])
            if event_t < times[-1]:
                state = self.bounce(tuple(part[-1] for part in solution))
                position, *rest = state
                state = (position + 1e-7 * self(event_t, state)[0], *rest)
            t0 = event_t.reshape(-1)
            if t0 >= times[-1]:
                break
        return torch.cat(trajectory).reshape(-1)


def learn_physics(td: ModuleType, iterations: int = 2) -> list[float]:
    """Fit LearnedBall to a bouncing ball's positions (MSE, Adam)."""
    ball = Ball()
    times = torch.linspace(0.0, 3.0, 31)
    with torch.no_grad():
        target = torch.cat([ball.init_pos, td.odeint(
            ball, (ball.init_pos, ball.init_vel, ball.log_radius), times)[0][1:].reshape(-1)])
        target = target.clamp(min=0.2)  # the ground, roughly
    model = LearnedBall()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = (model.simulate(td, times, max_events=6) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.usefixtures("float64")
def test_learn_physics() -> None:
    theirs, ours = _both(learn_physics)
    _assert_close(ours, theirs, rel=1e-5)


# ----------------------------------------------------------------------------- cnf.py


class HyperField(nn.Module):
    """A continuous normalising flow in 2-D: a time-conditioned hypernetwork gives the
    weights of a one-layer field; the state is (z, log-density change), whose derivative
    is minus the trace of df/dz, taken by autograd inside the field."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.hyper = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                   nn.Tanh(), nn.Linear(hidden, 4 * 2 * width + width))

    def forward(self, t, states):
        z = states[0]
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            weights = self.hyper(t.reshape(1, 1)).reshape(-1)
            block = 2 * self.width
            w = weights[:block].reshape(self.width, 2, 1)
            u = weights[block:2 * block].reshape(self.width, 1, 2)
            gate = torch.sigmoid(weights[2 * block:3 * block].reshape(self.width, 1, 2))
            b = weights[3 * block:3 * block + self.width].reshape(self.width, 1, 1)
            dz_dt = (torch.tanh(z.unsqueeze(0) @ w + b) @ (u * gate)).mean(0)
            trace = sum(torch.autograd.grad(dz_dt[:, index].sum(), z,
                                            create_graph=True)[0][:, index] for index in range(2))
        return dz_dt, -trace.reshape(-1, 1)


def cnf(td: ModuleType, adjoint: bool, iterations: int = 2, samples: int = 32) -> list[float]:
    """Two noisy circles pushed from t=10 back to t=0 with dopri5 at rtol = atol = 1e-5;
    negative log-likelihood under N(0, 0.1 I); Adam."""
    solve = td.odeint_adjoint if adjoint else td.odeint
    field = HyperField(hidden=8, width=8)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-3)
    prior = torch.distributions.MultivariateNormal(torch.zeros(2), 0.1 * torch.eye(2))
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        angle = 2 * math.pi * torch.rand(samples)
        radius = torch.where(torch.rand(samples) < 0.5, 1.0, 0.5)
        x = radius[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
        x = x + 0.06 * torch.randn(samples, 2)
        z_t, logp_t = solve(field, (x, torch.zeros(samples, 1)), torch.tensor([10.0, 0.0]),
                            atol=1e-5, rtol=1e-5, method="dopri5")
        loss = -(prior.log_prob(z_t[-1]) - logp_t[-1].reshape(-1)).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("adjoint", [
    False, True], ids=["odeint", "adjoint"])
def test_cnf(adjoint: bool) -> None:
    theirs, ours = _both(cnf, adjoint=adjoint)
    _assert_close(ours, theirs, rel=5e-4)  # float32 at rtol = atol = 1e-5
