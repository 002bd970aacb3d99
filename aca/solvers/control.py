"""Step-size control: a policy, separate from the method and the loop.

The defaults reproduce torchdiffeq's controller (safety 0.9, growth in [0.2, 10],
no shrinking after an accepted step, RMS error norm, Hairer's initial step), so a
solve here takes the same steps as ``torchdiffeq.odeint`` with the same method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from aca.solvers.step import Func, Scalar

Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """Root mean square over every element."""
    return x.pow(2).mean().sqrt()


@dataclass
class StepController:
    """Accept a step when its scaled error ``‖err / (atol + rtol·max(|y0|,|y1|))‖ ≤ 1``;
    the next step is ``h · clip(safety · ratio^(-α) · prev_ratio^β, dfactor, ifactor)``
    with ``α = 1/order - 0.75 β`` (``pi_beta = 0`` is the classical I-controller;
    Hairer's PI control uses about 0.04–0.08)."""

    rtol: float
    atol: float
    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pi_beta: float = 0.0
    norm: Norm = rms_norm

    def __post_init__(self) -> None:
        self.alpha = 1.0 / self.order - 0.75 * self.pi_beta
        self.prev_ratio = 1.0

    def error_ratio(self, y0: Tensor, y1: Tensor, error: Tensor) -> Tensor:
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        return self.norm(error / scale)

    def factor(self, ratio: float) -> float:
        """Growth factor of the step size after a step with this error ratio."""
        if not math.isfinite(ratio):
            return self.dfactor
        growth = self.safety * max(ratio, 1e-30) ** -self.alpha * self.prev_ratio ** self.pi_beta
        low = 1.0 if ratio <= 1.0 else self.dfactor
        return min(self.ifactor, max(low, growth))

    def factor_tensor(self, ratio: Tensor) -> Tensor:
        """``factor`` on a tensor, so that autograd sees the step-size policy (naive)."""
        growth = ratio.clamp_min(1e-30).pow(-self.alpha) * (
            self.safety * self.prev_ratio ** self.pi_beta)
        low = torch.where(ratio <= 1.0, 1.0, self.dfactor)
        return torch.minimum(torch.maximum(growth, low), torch.full_like(growth, self.ifactor))

    def accepted(self, ratio: float) -> None:
        """Remember the error of the last accepted step (the PI controller's memory)."""
        self.prev_ratio = max(ratio, 1e-4)

    def initial_step(self, func: Func, t0: Scalar, y0: Tensor, f0: Tensor, direction: float,
                     differentiable: bool) -> tuple[Scalar, float]:
        """Hairer, Nørsett & Wanner, Solving ODEs I, II.4: one extra evaluation.
        Returns the signed step (a tensor in the graph when ``differentiable``)
        and its value."""
        scale = y0.abs() * self.rtol + self.atol
        d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
        d0_value, d1_value = torch.stack([d0, d1]).tolist()
        h0 = 0.01 * d0 / d1 if d0_value >= 1e-5 and d1_value >= 1e-5 else d0.new_tensor(1e-6)
        h0_step = direction * (h0 if differentiable else h0.item())
        f1 = func(t0 + h0_step, y0 + h0_step * f0)
        d2 = self.norm((f1 - f0) / scale) / h0
        d_max = torch.maximum(d1, d2)
        if d_max.item() <= 1e-15:
            h1 = torch.clamp_min(h0 * 1e-3, 1e-6)
        else:
            h1 = (0.01 / d_max) ** (1.0 / self.order)  # Hairer's IORD: the method's order
        h = direction * torch.minimum(100 * h0, h1)
        h_value = h.item()
        return (h if differentiable else h_value), h_value
