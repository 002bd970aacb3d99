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
