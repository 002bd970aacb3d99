"""The integration loop shared by every gradient method.

It walks from ``times[0]`` through every output time, landing on each exactly,
with fixed steps or under a ``StepController``. What a gradient method needs
from the forward pass it asks for: ``differentiable`` keeps the step sizes in
the autograd graph (naive), ``checkpoints`` records the accepted steps (ACA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aca.errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from aca.solvers.control import StepController
from aca.solvers.step import Func, rk_step
from aca.solvers.tableau import ButcherTableau


@dataclass
class Checkpoints:
    """The accepted steps of a forward solve: start time ``times[i]`` and size
    ``steps[i]`` of every step, the start state of the steps in ``states`` (every
    ``stride``-th one when ``max_states`` bounds memory: the stride doubles each
    time the budget is exceeded), and the number of steps completed at each
    output time (``segment_ends``)."""

    max_states: int | None = None
    times: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    states: dict[int, Tensor] = field(default_factory=dict)
    segment_ends: list[int] = field(default_factory=list)
    stride: int = 1

    def add(self, t: float, h: float, y: Tensor) -> None:
        index = len(self.times)
        self.times.append(t)
        self.steps.append(h)
        if index % self.stride:
            return
        self.states[index] = y
        if self.max_states is not None and len(self.states) > self.max_states:
            self.stride *= 2
            self.states = {i: s for i, s in self.states.items() if i % self.stride == 0}


@dataclass
class Counts:
    nfe: int = 0
    accepted: int = 0
    rejected: int = 0


def _check_finite(y: Tensor, t: float) -> None:
    if not bool(torch.isfinite(y).all()):
        raise NonFiniteStateError(f"the state became non-finite (nan/inf) by t={t:g}")


def _fixed_segment(func: Func, y: Tensor, t: float, t_target: float, n_steps: int,
                   step: float, tableau: ButcherTableau, counts: Counts,
                   checkpoints: Checkpoints | None) -> Tensor:
    """``n_steps`` steps on the grid ``t + k·step``, the last one landing on ``t_target``."""
    start = t
    for k in range(n_steps):
        t_next = t_target if k == n_steps - 1 else start + (k + 1) * step
        h = t_next - t
        y_next, _, _, nfe = rk_step(func, t, y, h, tableau)
        counts.nfe += nfe
        if checkpoints is not None:
            checkpoints.add(t, h, y)
        t, y = t_next, y_next
    counts.accepted += n_steps
    _check_finite(y, t)
    return y


def integrate(
    func: Func,
    y0: Tensor,
    times: list[float],
    tableau: ButcherTableau,
    controller: StepController | None,
    step_size: float | None,
    max_steps: int,
    differentiable: bool = False,
    checkpoints: Checkpoints | None = None,
) -> tuple[list[Tensor], Counts]:
    """Solve from ``times[0]`` and return the state at every time in ``times``.

    One host synchronisation per attempted adaptive step (the accept/reject
    decision); none per fixed step. Step sizes and times are Python floats, except
    that with ``differentiable`` the step size is a tensor in the autograd graph.
    """
    counts = Counts()
    direction = 1.0 if times[-1] >= times[0] else -1.0
    t, y = times[0], y0
    # the time as the step sees it: a tensor in the graph when step sizes are
    # differentiated, so that autograd sees t_n = t_0 + sum(h) and the landings
    t_arg: float | Tensor = y0.new_tensor(t) if differentiable else t
    outputs = [y0]
    k1: Tensor | None = None
    h: float | Tensor = 0.0
    h_value = 0.0
    if controller is not None:
        k1 = func(t_arg, y)
        h, h_value = controller.initial_step(func, t_arg, y, k1, direction, differentiable)
        counts.nfe += 2
    attempts = 0
    for t_target in times[1:]:
        if controller is None:
            n_steps = max(1, math.ceil(abs(t_target - t) / step_size - 1e-9))
            attempts += n_steps
            if attempts > max_steps:
                raise MaxStepsExceededError(
                    f"fixed-step solve needs more than max_steps={max_steps} steps of "
                    f"{step_size:g}; raise max_steps or the step size")
            y = _fixed_segment(func, y, t, t_target, n_steps, direction * step_size, tableau,
                               counts, checkpoints)
            t = t_target
        else:
            while t != t_target:
                if attempts >= max_steps:
                    raise MaxStepsExceededError(
                        f"adaptive solve took max_steps={max_steps} steps and reached t={t:g} "
                        f"of {t_target:g}; raise max_steps or loosen rtol/atol")
                attempts += 1
                remaining = t_target - t
                landing = abs(h_value) >= abs(remaining) * (1 - 1e-9)
                h_try_value = remaining if landing else h_value
                t_next = t_target if landing else t + h_try_value
                if differentiable:
                    h_try = t_target - t_arg if landing else h
                    t_next_arg = t_arg + h_try
                else:
                    h_try, t_next_arg = h_try_value, t_next
                y_next, error, k_last, nfe = rk_step(
                    func, t_arg, y, h_try, tableau, k1=k1, t_next=t_next_arg, with_error=True)
                counts.nfe += nfe
                ratio = controller.error_ratio(y, y_next, error)
                if differentiable:
                    h = h_try * controller.factor_tensor(ratio)
                    ratio_value, h_value = torch.stack([ratio.detach(), h.detach()]).tolist()
                else:
                    ratio_value = ratio.item()
                    h = h_value = h_try_value * controller.factor(ratio_value)
                if ratio_value <= 1.0:
                    controller.accepted(ratio_value)
                    if checkpoints is not None:
                        checkpoints.add(t, h_try_value, y)
                    t, t_arg, y, k1 = t_next, t_next_arg, y_next, k_last
                    counts.accepted += 1
                else:
                    counts.rejected += 1
                    if abs(h_value) < 16 * math.ulp(max(abs(t), abs(t_target))):
                        if not math.isfinite(ratio_value):
                            raise NonFiniteStateError(
                                f"the state or its derivative is non-finite (nan/inf) near t={t:g}")
                        raise StepSizeUnderflowError(
                            f"step size {h_value:.3g} underflowed at t={t:g}: the problem may be "
                            "stiff or singular there; loosen rtol/atol or use another solver")
        outputs.append(y)
        if checkpoints is not None:
            checkpoints.segment_ends.append(len(checkpoints.times))
    return outputs, counts
