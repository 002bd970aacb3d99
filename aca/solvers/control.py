"""Step-size controllers: policies with explicit state, separate from the method and
the loop (diffrax's controller protocol, batch-native as torchode's).

Every tensor a controller sees or returns has one value per *group* of the state,
shaped ``(S, 1, ..., 1)`` to broadcast against it: ``S = 1`` when the whole state
shares its steps, ``S = B`` with ``per_sample=True``. A controller

- ``init(func, t0, y0, t_end)`` -> ``(state, k1, nfe)``: its first state, and the
  first stage ``func(t0, y0)`` when it evaluated it;
- ``propose(state, t, y, target)`` -> ``(h, t_next, landing)``: the next step towards
  ``target`` (``landing``: the step ends on it exactly; ``h = t_next - t``, so time
  and state always advance together);
- ``judge(state, t, t_next, y, step, h, landing, running, reject)`` -> ``(accept, state,
  status)``: each running group's decision, the next state, and a ``Status`` other
  than ``RUNNING`` for a group that cannot go on (``reject``: groups whose attempt
  must be rejected whatever its error, see ``aca.solvers.integrate``).

``AdaptiveSteps`` reproduces torchdiffeq's controller (safety 0.9, growth in
[0.2, 10], no shrinking after an accepted step, RMS error norm, Hairer's initial
step); ``ConstantSteps`` walks a grid. Wrappers (``aca.solvers.wrappers``) add step
bounds, step and jump times and callbacks to either.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from aca.solvers.step import Func, Step, value

#: ``norm(x, groups)``: one non-negative value per group, ``(S,)``
Norm = Callable[[Tensor, int], Tensor]


class Status(enum.IntEnum):
    """Where a group's solve stands (torchode's status codes): a stop is a status,
    and the caller turns a failure (``UNDERFLOW`` and after) into an ``aca.ODEError``."""

    RUNNING = 0
    DONE = 1
    EVENT = 2
    UNDERFLOW = 3
    NON_FINITE = 4
    ZERO_SCALE = 5
    MAX_STEPS = 6


class Controller(Protocol):
    adaptive: bool

    def init(self, func: Func, t0: Tensor, y0: Tensor, t_end: Tensor
             ) -> tuple[Any, Tensor | None, int]: ...

    def propose(self, state: Any, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]: ...

    def judge(self, state: Any, t: Tensor, t_next: Tensor, y: Tensor, step: Step, h: Tensor,
              landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, Any, Tensor]: ...


def rms_norm(x: Tensor, groups: int) -> Tensor:
    """Root mean square of each group's entries (in the autograd graph a zero norm gets
    a zero derivative, not the nan of sqrt at 0)."""
    x = x.reshape(groups, -1)
    return torch.linalg.vector_norm(x, dim=1) * x.shape[1] ** -0.5


def precise(x: Tensor) -> Tensor:
    """float16/bfloat16 in float32, so that error norms neither overflow nor round to 0."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True)
class AdaptiveState:
    """The step size to try next, the last accepted error ratio (PI control), and the
    smallest step each group may take (16 ulps of the largest |t| on its way)."""

    h: Tensor
    prev_ratio: Tensor
    smallest: Tensor


@dataclass
class AdaptiveSteps:
    """Accept a step when its scaled error ``‖err / (atol + rtol·max(|y0|,|y1|))‖ ≤ 1``;
    the next step is ``h · clip(safety · ratio^(-α) · prev_ratio^β, dfactor, ifactor)``
    with ``α = 1/order - 0.75 β`` (``pi_beta = 0`` is the classical I-controller;
    Hairer's PI control uses about 0.04–0.08), not below 1 after an accepted step; after
    a step shortened to land on an output time the step proposed before it goes on.
    ``first_step``: the first step's size instead of Hairer's choice (one evaluation less).
    ``frozen``: when step sizes are in the autograd graph (naive), only the first is
    (torchdiffeq's odeint)."""

    rtol: float
    atol: float
    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pi_beta: float = 0.0
    norm: Norm = rms_norm
    frozen: bool = False
    first_step: float | None = None

    adaptive = True

    @property
    def alpha(self) -> float:
        return 1.0 / self.order - 0.75 * self.pi_beta

    def init(self, func: Func, t0: Tensor, y0: Tensor, t_end: Tensor
             ) -> tuple[AdaptiveState, Tensor, int]:
        """Evaluate ``func`` at the start and choose each group's first step (Hairer,
        Nørsett & Wanner, Solving ODEs I, II.4): 2 evaluations (1 with ``first_step``)."""
        k1 = func(t0, y0)
        direction = torch.sign(t_end - t0)
        # the smallest step a group may take: 16 ulps of the largest |t| on its way
        far = torch.maximum(t0.detach().abs(), t_end.detach().abs())
        smallest = 16 * (torch.nextafter(far, far.new_tensor(math.inf)) - far)
        if self.first_step is not None:
            h, nfe = direction * self.first_step, 1
        else:
            h, nfe = self.initial_step(func, t0, y0, k1, direction), 2
        return AdaptiveState(h, torch.ones_like(t0.detach()), smallest), k1, nfe

    def initial_step(self, func: Func, t0: Tensor, y0: Tensor, f0: Tensor,
                     direction: Tensor) -> Tensor:
        """Hairer's rule for each group, one extra evaluation; differentiable where the
        state is (naive), with zero norms handled without nan."""
        groups, column = direction.numel(), direction.shape
        state_dtype, y, f = y0.dtype, precise(y0), precise(f0)
        scale = y.abs() * self.rtol + self.atol
        if self.atol == 0:  # a zero component has no scale: leave it out (judge refuses it)
            scale = torch.where(scale == 0, math.inf, scale)
        d0 = self.norm(y / scale, groups).view(column)
        d1 = self.norm(f / scale, groups).view(column)
        big = (d0 >= 1e-5) & (d1 >= 1e-5)
        h0 = torch.where(big, 0.01 * d0 / torch.where(big, d1, 1.0), d0.new_tensor(1e-6))
        step = direction * h0.to(direction.dtype)
        f1 = precise(func(t0 + step, (y + step.to(y.dtype) * f).to(state_dtype)))
        d2 = self.norm((f1 - f) / scale, groups).view(column) / h0
        d_max = torch.where(d1 >= d2, d1, d2)
        flat = d_max <= 1e-15
        h1 = torch.where(flat, torch.clamp_min(h0 * 1e-3, 1e-6),
                         (0.01 / torch.where(flat, 1.0, d_max)) ** (1.0 / self.order))
        return direction * torch.minimum(100 * h0, h1).to(direction.dtype)

    def propose(self, state: AdaptiveState, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        landing = value(state.h).abs() >= value(target - t).abs().mul_(1 - 1e-9)
        t_next = torch.where(landing, target, t + state.h)
        return t_next - t, t_next, landing

    def error_ratio(self, y0: Tensor, y1: Tensor, error: Tensor, groups: int
                    ) -> tuple[Tensor, Tensor | None]:
        """Each group's scaled error norm, and (``atol = 0`` only) which groups have an
        error scale of exactly 0 somewhere (a zero state component)."""
        y0, y1, error = precise(y0), precise(y1), precise(error)
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        zero = (scale.reshape(groups, -1) == 0).any(1) if self.atol == 0 else None
        return self.norm(error / scale, groups), zero

    def factor(self, ratio: Tensor, prev_ratio: Tensor) -> Tensor:
        """The growth factor of the step size after a step with this error ratio (the one
        formula); in the autograd graph through the ratio unless clipped. A non-finite
        ratio shrinks by ``dfactor``."""
        ratio = ratio.nan_to_num(math.inf, math.inf)
        growth = ratio.clamp_min(1e-30).pow(-self.alpha).mul(self.safety)
        if self.pi_beta:
            growth = growth * prev_ratio ** self.pi_beta
        low = (value(ratio) > 1.0) * (self.dfactor - 1.0) + 1.0  # no shrinking if accepted
        return growth.clamp_min(low).clamp_max(self.ifactor)

    def judge(self, state: AdaptiveState, t: Tensor, t_next: Tensor, y: Tensor, step: Step,
              h: Tensor, landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, AdaptiveState, Tensor]:
        ratio, zero_scale = self.error_ratio(y, step.y, step.error, running.numel())
        ratio = ratio.view(h.shape)
        if reject is not None:
            ratio = torch.where(reject, math.inf, ratio)
        h_new = h * self.factor(ratio, state.prev_ratio)
        if self.frozen:
            h_new = h_new.detach()
        accept = running & (value(ratio) <= 1.0)
        size = value(h_new).abs()
        keep = accept & landing & (value(state.h).abs() > size)
        prev_ratio = state.prev_ratio
        if self.pi_beta:
            prev_ratio = torch.where(accept, value(ratio).clamp_min(1e-4), prev_ratio)
        # a rejected group whose next step is below the resolution of t: underflow, or (its
        # error not finite) a non-finite state; Status.NON_FINITE = Status.UNDERFLOW + 1
        stuck = running & ~accept & (size < state.smallest)
        status = stuck * (int(Status.UNDERFLOW) + ~torch.isfinite(ratio))
        if zero_scale is not None:
            status = torch.where(zero_scale.view(h.shape) & running, int(Status.ZERO_SCALE),
                                 status)
        return accept, AdaptiveState(torch.where(keep, state.h, h_new), prev_ratio,
                                     state.smallest), status


@dataclass(frozen=True)
class GridState:
    """Where each group's grid starts (its last stop) and the steps taken on it."""

    origin: Tensor
    taken: Tensor


@dataclass
class ConstantSteps:
    """Steps of ``step_size`` on the grid ``t_s + j·step_size`` from each group's last
    stop ``t_s``, the last one landing on the next stop. Every step of a running group
    is accepted while its state stays finite."""

    step_size: float

    adaptive = False

    def init(self, func: Func, t0: Tensor, y0: Tensor, t_end: Tensor
             ) -> tuple[GridState, None, int]:
        return GridState(t0, torch.zeros_like(t0.detach())), None, 0

    def propose(self, state: GridState, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        span, taken = value(target - state.origin), state.taken + 1
        # the grid's last step before the stop (at least one step, up to a rounding slack)
        landing = taken * self.step_size >= span.abs().sub_(1e-9 * self.step_size)
        t_next = torch.where(landing, target, state.origin + taken * self.step_size * span.sign())
        return t_next - t, t_next, landing

    def judge(self, state: GridState, t: Tensor, t_next: Tensor, y: Tensor, step: Step,
              h: Tensor, landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, GridState, Tensor]:
        finite = torch.isfinite(step.y).reshape(running.numel(), -1).all(1).view(running.shape)
        if reject is not None:
            finite = finite & ~reject
        accept = running & finite
        lands = accept & landing
        state = GridState(torch.where(lands, t_next, state.origin),
                          torch.where(lands, 0.0, state.taken + accept))
        return accept, state, (running & ~finite) * int(Status.NON_FINITE)

    def fixed_steps(self, t0: float, t1: float) -> int:
        """The steps of a grid from ``t0`` to ``t1`` (for the ``max_steps`` check)."""
        return max(1, math.ceil(abs(t1 - t0) / self.step_size - 1e-9))
