"""Step-size controllers: policies, separate from the method and the loop.

A controller proposes the next step towards an output time and judges the
attempt. ``ConstantSteps`` walks a fixed grid (every step accepted, no host
sync); ``AdaptiveSteps`` reproduces torchdiffeq's controller (safety 0.9, growth
in [0.2, 10], no shrinking after an accepted step, RMS error norm, Hairer's
initial step), so a solve here takes the same steps as ``torchdiffeq.odeint``.

Times and step sizes come in pairs: a Python float that drives the decisions,
and the argument the step is taken with, which is the same float, or a 0-dim
tensor in the autograd graph when step sizes are differentiated (``naive``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from aca.errors import (
    MaxStepsExceededError,
    NonFiniteStateError,
    StepSizeUnderflowError,
)
from aca.solvers.step import Func, Scalar, Step

Norm = Callable[[Tensor], Tensor]
#: ``(h, h_arg, t_next, t_next_arg)``: a proposed step as floats and as step arguments
Proposal = tuple[float, Scalar, float, Scalar]


def _valued(value: float, arg: Scalar) -> Scalar:
    """``arg`` (a step size or time in the autograd graph) with the value of the float
    that decides, its derivative kept: in the state's dtype (float32) the arguments
    would otherwise drift from the floats, a landing step by up to an ulp of t, and
    the step sizes after it inherit that error multiplicatively."""
    if not isinstance(arg, Tensor):
        return value
    return arg - arg.detach() + value


def rms_norm(x: Tensor) -> Tensor:
    """Root mean square over every element."""
    return x.pow(2).mean().sqrt()


def _precise(x: Tensor) -> Tensor:
    """float16/bfloat16 in float32, so that error norms neither overflow nor round to 0."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ConstantSteps:
    """Steps of ``step_size`` on the grid ``t_k + j·step_size`` of each output
    interval ``[t_k, t_{k+1}]``, the last one landing on ``t_{k+1}``."""

    adaptive = False

    def __init__(self, step_size: float) -> None:
        self.step_size = step_size
        self.target: float | None = None

    def start(self, func: Func, times: list[float], t_arg: Scalar, y: Tensor,
              max_steps: int) -> tuple[Tensor | None, int]:
        """Refuse a grid longer than ``max_steps`` before stepping; no evaluation."""
        total = sum(self._steps_between(a, b) for a, b in zip(times, times[1:]))
        if total > max_steps:
            raise MaxStepsExceededError(
                f"fixed-step solve needs {total} steps of {self.step_size:g}, more than "
                f"max_steps={max_steps}; raise max_steps or the step size")
        return None, 0

    def _steps_between(self, a: float, b: float) -> int:
        return max(1, math.ceil(abs(b - a) / self.step_size - 1e-9))

    def propose(self, t: float, t_arg: Scalar, target: float, target_arg: Scalar) -> Proposal:
        if target != self.target:  # a new output interval: lay out its grid
            self.target, self.done = target, 0
            self.n_steps = self._steps_between(t, target)
            self.origin, self.origin_arg = t, t_arg
            self.signed_step = math.copysign(self.step_size, target - t)
        if self.done == self.n_steps - 1:
            return target - t, target_arg - t_arg, target, target_arg
        offset = (self.done + 1) * self.signed_step
        t_next, t_next_arg = self.origin + offset, self.origin_arg + offset
        return t_next - t, t_next_arg - t_arg, t_next, t_next_arg

    def accept(self, y: Tensor, step: Step, h: float, h_arg: Scalar, t: float,
               target: float) -> bool:
        self.done += 1
        return True

    def arrived(self, y: Tensor, t: float) -> None:
        """At an output time: the one check of the interval (one host sync)."""
        if not bool(torch.isfinite(y).all()):
            raise NonFiniteStateError(f"the state became non-finite (nan/inf) by t={t:g}")


@dataclass
class AdaptiveSteps:
    """Accept a step when its scaled error ``‖err / (atol + rtol·max(|y0|,|y1|))‖ ≤ 1``;
    the next step is ``h · clip(safety · ratio^(-α) · prev_ratio^β, dfactor, ifactor)``
    with ``α = 1/order - 0.75 β`` (``pi_beta = 0`` is the classical I-controller;
    Hairer's PI control uses about 0.04–0.08). With ``differentiable`` the step
    sizes are tensors in the autograd graph (naive)."""

    rtol: float
    atol: float
    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pi_beta: float = 0.0
    norm: Norm = rms_norm
    differentiable: bool = False

    adaptive = True

    def __post_init__(self) -> None:
        self.alpha = 1.0 / self.order - 0.75 * self.pi_beta
        self.prev_ratio = 1.0
        self.before_landing: tuple[float, Scalar] | None = None

    def start(self, func: Func, times: list[float], t_arg: Scalar, y: Tensor,
              max_steps: int) -> tuple[Tensor | None, int]:
        """Evaluate ``func`` at the start (the first step's first stage) and choose
        the first step; returns that stage and the evaluations made (2)."""
        k1 = func(t_arg, y)
        direction = 1.0 if times[-1] >= times[0] else -1.0
        self.h_arg, self.h = self.initial_step(func, t_arg, y, k1, direction)
        return k1, 2

    def propose(self, t: float, t_arg: Scalar, target: float, target_arg: Scalar) -> Proposal:
        landing = abs(self.h) >= abs(target - t) * (1 - 1e-9)
        # a step shortened to land on an output time says nothing about the step size
        # the solution allows: after it, go on with the step proposed before it
        self.before_landing = (self.h, self.h_arg) if landing else None
        if landing:
            return target - t, _valued(target - t, target_arg - t_arg), target, target_arg
        return self.h, self.h_arg, t + self.h, _valued(t + self.h, t_arg + self.h_arg)

    def error_ratio(self, y0: Tensor, y1: Tensor, error: Tensor) -> Tensor:
        y0, y1, error = _precise(y0), _precise(y1), _precise(error)
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        return self.norm(error / scale)

    def factor(self, ratio: float) -> tuple[float, bool]:
        """Growth factor of the step size after a step with this error ratio (the one
        formula), and whether it was clipped (naive differentiates the unclipped one)."""
        if not math.isfinite(ratio):
            return self.dfactor, True
        growth = self.safety * max(ratio, 1e-30) ** -self.alpha * self.prev_ratio ** self.pi_beta
        low = 1.0 if ratio <= 1.0 else self.dfactor
        factor = min(self.ifactor, max(low, growth))
        return factor, factor != growth or ratio <= 0.0

    def accept(self, y: Tensor, step: Step, h: float, h_arg: Scalar, t: float,
               target: float) -> bool:
        """Judge the attempt (the one host sync of an adaptive attempt) and set the
        next step size."""
        ratio = self.error_ratio(y, step.y, step.error)
        ratio_value = ratio.item()
        factor, clipped = self.factor(ratio_value)
        self.h = h * factor
        if not self.differentiable:
            self.h_arg = self.h
        elif clipped:
            self.h_arg = _valued(self.h, h_arg * factor)
        else:  # the same value, with d factor / d ratio = -α factor / ratio in the graph
            self.h_arg = _valued(self.h, h_arg * (factor * (ratio / ratio_value) ** -self.alpha))
        if ratio_value <= 1.0:
            self.prev_ratio = max(ratio_value, 1e-4)  # the PI controller's memory
            if self.before_landing is not None and abs(self.before_landing[0]) > abs(self.h):
                self.h, self.h_arg = self.before_landing
            return True
        if abs(self.h) < 16 * math.ulp(max(abs(t), abs(target))):
            if not math.isfinite(ratio_value):
                raise NonFiniteStateError(
                    f"the state or its derivative is non-finite (nan/inf) near t={t:g}")
            raise StepSizeUnderflowError(
                f"step size {self.h:.3g} underflowed at t={t:g}: the problem may be "
                "stiff or singular there; loosen rtol/atol or use another solver")
        return False

    def arrived(self, y: Tensor, t: float) -> None:
        """Nothing to check: a non-finite state fails the error test."""

    def initial_step(self, func: Func, t0: Scalar, y0: Tensor, f0: Tensor,
                     direction: float) -> tuple[Scalar, float]:
        """Hairer, Nørsett & Wanner, Solving ODEs I, II.4: one extra evaluation.
        Returns the signed step (a tensor in the graph when ``differentiable``)
        and its value."""
        differentiable, state_dtype = self.differentiable, y0.dtype
        y0, f0 = _precise(y0), _precise(f0)
        scale = y0.abs() * self.rtol + self.atol
        d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
        d0_value, d1_value = torch.stack([d0, d1]).tolist()
        h0 = 0.01 * d0 / d1 if d0_value >= 1e-5 and d1_value >= 1e-5 else d0.new_tensor(1e-6)
        h0_step = direction * (h0 if differentiable else h0.item())
        f1 = _precise(func(t0 + h0_step, (y0 + h0_step * f0).to(state_dtype)))
        d2 = self.norm((f1 - f0) / scale) / h0
        # the larger by value: torch.maximum would send a zero gradient through the other,
        # and a zero norm's sqrt turns that into nan (f constant near t0: d2 = 0)
        d2_value = d2.item()
        d_max = d1 if d1_value >= d2_value else d2
        if max(d1_value, d2_value) <= 1e-15:
            h1 = torch.clamp_min(h0 * 1e-3, 1e-6)
        else:
            h1 = (0.01 / d_max) ** (1.0 / self.order)  # Hairer's IORD: the method's order
        h = direction * torch.minimum(100 * h0, h1)
        h_value = h.item()
        return (h if differentiable else h_value), h_value


def sample_rms_norm(x: Tensor) -> Tensor:
    """Root mean square of each sample (row of the leading batch dimension), shaped to
    broadcast against ``x`` (``(B, 1, ..., 1)``)."""
    return x.reshape(len(x), -1).pow(2).mean(1).sqrt().view(column_shape(x))


def column_shape(x: Tensor) -> tuple[int, ...]:
    """``(B, 1, ..., 1)``: one value per sample, broadcasting against ``x``."""
    return (len(x),) + (1,) * (x.dim() - 1)


def _ulp(x: Tensor) -> Tensor:
    return torch.nextafter(x, x.new_tensor(math.inf)) - x


@dataclass
class PerSampleSteps(AdaptiveSteps):
    """``AdaptiveSteps`` with one step size, error norm and accept/reject decision per
    sample (``per_sample=True``): the same formulas on ``(B, 1, ..., 1)`` tensors of
    times and step sizes, so a sample takes the steps it would take alone. Samples
    that have arrived take steps of size 0 (masked: their state does not change).
    Step sizes are in the autograd graph whenever the state is (naive)."""

    norm: Norm = sample_rms_norm

    def start(self, func: Func, t0: Tensor, end: Tensor, y: Tensor) -> tuple[Tensor, int]:
        """Evaluate ``func`` at the start and choose each sample's first step (Hairer's
        rule, as ``AdaptiveSteps.initial_step`` for each sample); 2 evaluations."""
        k1 = func(t0, y)
        direction = torch.sign(end - t0)
        state_dtype, y0, f0 = y.dtype, _precise(y), _precise(k1)
        scale = y0.abs() * self.rtol + self.atol
        d0, d1 = self.norm(y0 / scale), self.norm(f0 / scale)
        big = (d0 >= 1e-5) & (d1 >= 1e-5)
        h0 = torch.where(big, 0.01 * d0 / torch.where(big, d1, 1.0), d0.new_tensor(1e-6))
        f1 = _precise(func(t0 + direction * h0, (y0 + direction * h0 * f0).to(state_dtype)))
        d2 = self.norm((f1 - f0) / scale) / h0
        d_max = torch.maximum(d1, d2)
        flat = d_max <= 1e-15
        h1 = torch.where(flat, torch.clamp_min(h0 * 1e-3, 1e-6),
                         (0.01 / torch.where(flat, 1.0, d_max)) ** (1.0 / self.order))
        self.h = direction * torch.minimum(100 * h0, h1)
        self.prev_ratio = torch.ones_like(self.h)
        # the smallest step a sample may take: 16 ulps of the largest |t| on its way
        self.smallest = 16 * _ulp(torch.maximum(t0.detach().abs(), end.detach().abs()))
        return k1, 2

    def propose(self, t: Tensor, end: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """Each sample's next step ``(h, t_next, landing)``: a step that would reach the
        end lands on it exactly (arrived samples: ``h = 0``)."""
        landing = self.h.detach().abs() >= (end - t).detach().abs() * (1 - 1e-9)
        self.before_landing = self.h
        return (torch.where(landing, end - t, self.h), torch.where(landing, end, t + self.h),
                landing)

    def judge(self, y: Tensor, step: Step, h: Tensor, landing: Tensor,
              active: Tensor) -> tuple[Tensor, Tensor]:
        """Each active sample's decision (``(B, 1, ...)`` bools) and the next step
        sizes; also returns which rejected samples' step size underflowed (checked by
        the caller at its one host sync)."""
        # arrived samples (h = 0, no error) get a dummy error: a zero norm's derivative is inf
        ratio = self.error_ratio(y, step.y, torch.where(active, step.error, 1.0))
        value = ratio.detach()
        finite = torch.isfinite(value)
        safe = torch.where(finite, ratio, 1.0).clamp_min(1e-30)
        growth = self.safety * safe ** -self.alpha
        if self.pi_beta:
            growth = growth * self.prev_ratio ** self.pi_beta
        # clip to [1, ifactor] after an accepted step, [dfactor, ifactor] after a rejection
        clipped = torch.where(value <= 1.0, growth.clamp(1.0, self.ifactor),
                              growth.clamp(self.dfactor, self.ifactor))
        factor = torch.where(finite, clipped, self.dfactor)
        h_new = h * factor
        accept = active & (value <= 1.0)
        self.prev_ratio = torch.where(accept, value.clamp_min(1e-4), self.prev_ratio)
        keep = accept & landing & (self.before_landing.detach().abs() > h_new.detach().abs())
        self.h = torch.where(keep, self.before_landing, h_new)
        return accept, finite

    def underflowed(self, rejected: Tensor) -> Tensor:
        """Rejected samples whose step size fell below what floating point resolves."""
        return rejected & (self.h.detach().abs() < self.smallest)


class PerSampleConstantSteps:
    """``ConstantSteps`` for ``per_sample=True``: each sample walks its own grid
    ``t_b0 + j·step_size`` from its first time, the last step landing on its last time,
    so a sample takes the steps it would take alone. Every step is accepted (the state
    must stay finite); arrived samples take steps of size 0."""

    adaptive = False

    def __init__(self, step_size: float) -> None:
        self.step_size = step_size

    def start(self, func: Func, t0: Tensor, end: Tensor, y: Tensor) -> tuple[None, int]:
        """Lay out each sample's grid; no evaluation."""
        self.origin, self.taken = t0, torch.zeros_like(t0.detach())
        self.signed_step = torch.sign(end.detach() - t0.detach()) * self.step_size
        self.n_steps = torch.clamp_min(torch.ceil(
            (end.detach() - t0.detach()).abs() / self.step_size - 1e-9), 1.0)
        return None, 0

    def propose(self, t: Tensor, end: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The next grid point of each sample (its last time for the last step)."""
        landing = self.taken >= self.n_steps - 1
        t_next = torch.where(landing, end, self.origin + (self.taken + 1) * self.signed_step)
        return t_next - t, t_next, landing

    def judge(self, y: Tensor, step: Step, h: Tensor, landing: Tensor,
              active: Tensor) -> tuple[Tensor, Tensor]:
        """Accept every active sample whose new state is finite."""
        finite = torch.isfinite(step.y).reshape(len(y), -1).all(1).view(active.shape)
        accept = active & finite
        self.taken = self.taken + accept
        return accept, finite

    def underflowed(self, rejected: Tensor) -> Tensor:
        """A fixed step is rejected only when the state became non-finite: fatal."""
        return rejected

