"""Small ODE functions shared by the gradient tests (float64 by the tests' fixture)."""

import torch
from torch import nn


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


def replay_steps(func, y0, T, times, cp, tableau):
    """Autograd through the accepted steps recorded in ``cp`` (a ``Checkpoints``) and
    the interpolants of the outputs inside them, with a textbook explicit RK written
    independently of aca's stepping code. ``T``: the output times as a tensor (its
    gradient is the derivative through each step's start ``t_i = T[a] + c``, a landing
    step's size ``T[b] - t_i`` and ``θ = (T[k] - t_i) / h``); ``times``: their values."""
    ends = dict(zip(cp.segment_ends, cp.stops[1:]))
    y, outs, start_stop = y0, {0: y0}, cp.stops[0]
    for i, (t, h) in enumerate(zip(cp.times, cp.steps)):
        t_i = T[start_stop] + (t - times[start_stop])
        if i + 1 in ends:
            h = T[ends[i + 1]] - t_i
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
        if i + 1 in ends:
            outs[ends[i + 1]] = y
            start_stop = ends[i + 1]
    return torch.stack([outs[k] for k in range(len(times))])
