"""Small ODE functions shared by the gradient tests (float64 by the tests' fixture)."""

import torch
from torch import nn

from aca.solvers import Checkpoints, integrate, interpolate, rk_step


class MLP(nn.Module):
    """A time-dependent MLP field; ``dropout > 0`` puts a dropout layer inside."""

    def __init__(self, dim: int = 3, hidden: int = 8, seed: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        layers = [nn.Linear(dim, hidden), nn.Tanh()]
        layers += [nn.Dropout(dropout)] if dropout else []
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(y) * (1 + 0.1 * t)  # time-dependent on purpose


class Linear(nn.Module):
    """dz/dt = a z with a learnable rate (vector) ``a``."""

    def __init__(self, rate) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(rate))

    def forward(self, t, z):
        return self.a * z


def relative_error(got, want) -> float:
    """The largest ‖g - w‖ / ‖w‖ over pairs of tensors."""
    return max(((g - w).norm() / w.norm()).item() for g, w in zip(got, want))


class Recorded:
    """The accepted steps of a one-group solve as lists: start times, sizes, start
    states (by step), the outputs interpolated inside each step, the output each landing
    step lands on, and the output time each step's interval starts from."""

    def __init__(self, cp: Checkpoints) -> None:
        self.times, self.steps = cp.times[:, 0].tolist(), cp.steps[:, 0].tolist()
        self.starts = cp.starts[:, 0].tolist()
        self.states = {i * cp.stride: state.view(cp.shape) for i, state in enumerate(cp.states)}
        self.inside = {i: ks.tolist() for i, (ks, _) in cp.inside.items()}
        self.lands = {i: int(ks[0]) for i, (ks, _) in cp.lands.items()}
        self.stride = cp.stride


def run(func, y0, times, tableau, controller, max_steps=10**6, interpolate=True,
        max_states=None):
    """aca's loop on the whole state (one group) over the float ``times``, without a
    graph: ``(outputs, counts, recorded steps)``."""
    cp = Checkpoints(max_states)
    cp.shape = y0.shape
    rhs = lambda t, y: func(t.reshape(()).to(y.dtype), y)  # noqa: E731
    grid = torch.tensor([list(times)], dtype=torch.float64)
    with torch.no_grad():
        solution = integrate(rhs, y0, grid, tableau, controller, max_steps, checkpoints=cp,
                             interpolate_outputs=interpolate)
    return list(solution.ys), solution.counts, Recorded(cp)


def step(func, t, y, h, tableau, **options):
    """One ``rk_step`` with float time and step size."""
    rhs = lambda t, y: func(t.reshape(()).to(y.dtype), y)  # noqa: E731
    return rk_step(rhs, torch.tensor(t, dtype=torch.float64), y,
                   torch.tensor(h, dtype=torch.float64), tableau, **options)


def dense_output(y, h, stages, tableau, theta):
    """The continuous extension of a one-group step at one ``θ``."""
    state = interpolate(y, torch.tensor(h, dtype=torch.float64), stages, tableau,
                        torch.zeros(1, dtype=torch.long), torch.tensor([float(theta)],
                                                                       dtype=torch.float64))
    return state.view_as(y)


def replay_steps(func, y0, T, times, cp, tableau):
    """Autograd through the accepted steps recorded in ``cp`` (a ``Recorded``) and
    the interpolants of the outputs inside them, with a textbook explicit RK written
    independently of aca's stepping code. ``T``: the output times as a tensor (its
    gradient is the derivative through each step's start ``t_i = T[a] + c``, a landing
    step's size ``T[b] - t_i`` and ``θ = (T[k] - t_i) / h``); ``times``: their values."""
    y, outs = y0, {0: y0}
    for i, (t, h) in enumerate(zip(cp.times, cp.steps)):
        start = cp.starts[i]
        t_i = T[start] + (t - times[start])
        if i in cp.lands:
            h = T[cp.lands[i]] - t_i
        ks = []
        for c, row in zip(tableau.c, tableau.a):
            stage = y + h * sum((a * k for a, k in zip(row, ks)), torch.zeros_like(y))
            ks.append(func(t_i + c * h, stage))
        for k in cp.inside.get(i, []):
            theta = (T[k] - t_i) / h
            weights = [sum(p * theta ** (m + 1) for m, p in enumerate(row))
                       for row in tableau.dense]
            outs[k] = y + h * sum(w * kk for w, kk in zip(weights, ks))
        y = y + h * sum(b * k for b, k in zip(tableau.b, ks))
        if i in cp.lands:
            outs[cp.lands[i]] = y
    return torch.stack([outs[k] for k in range(len(times))])
