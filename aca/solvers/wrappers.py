"""Controllers that wrap a controller (diffrax's ``ClipStepSizeController``): step
bounds, times to step to, and callbacks, added to any controller without a second
copy of it. Each keeps the inner controller's state and passes its decisions on."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from aca.solvers.control import AdaptiveState, Controller, Status
from aca.solvers.step import Func, Step


@dataclass
class Wrapper:
    """Passes everything on to ``inner``; a wrapper overrides what it changes."""

    inner: Controller

    @property
    def adaptive(self) -> bool:
        return self.inner.adaptive

    def init(self, func: Func, t0: Tensor, y0: Tensor, t_end: Tensor
             ) -> tuple[Any, Tensor | None, int]:
        return self.inner.init(func, t0, y0, t_end)

    def propose(self, state: Any, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        return self.inner.propose(state, t, y, target)

    def judge(self, state: Any, t: Tensor, t_next: Tensor, y: Tensor, step: Step, h: Tensor,
              landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, Any, Tensor]:
        return self.inner.judge(state, t, t_next, y, step, h, landing, running, reject)


@dataclass
class StepBounds(Wrapper):
    """Every step size clipped to ``[min_step, max_step]``; a step at ``min_step`` is
    accepted whatever its error (torchdiffeq's options), unless it must be rejected (a
    failed Newton iteration, a non-finite trial): then the solve fails. Adaptive
    controllers only."""

    min_step: float = 0.0
    max_step: float = math.inf

    def _clip(self, state: AdaptiveState) -> AdaptiveState:
        # exact bounds (a step at min_step must compare equal to it) and clamp's derivative
        return replace(state, h=torch.copysign(state.h.abs().clamp(self.min_step, self.max_step),
                                               state.h))

    def init(self, func: Func, t0: Tensor, y0: Tensor, t_end: Tensor
             ) -> tuple[AdaptiveState, Tensor | None, int]:
        state, k1, nfe = self.inner.init(func, t0, y0, t_end)
        return self._clip(state), k1, nfe

    def judge(self, state: Any, t: Tensor, t_next: Tensor, y: Tensor, step: Step, h: Tensor,
              landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, Any, Tensor]:
        accept, new, status = self.inner.judge(state, t, t_next, y, step, h, landing, running,
                                               reject)
        if self.min_step == 0:  # nothing forced (a zero step underflows): skip the checks
            return accept, self._clip(new), status
        # the size the controller chose, not the step's t_next - t (rounded past min_step)
        forced = running & (state.h.detach().abs() <= self.min_step)
        # a step at min_step that must be rejected cannot shrink: the solve fails
        must_reject = ~torch.isfinite(step.y.detach()).reshape(forced.numel(), -1).all(1)
        must_reject = must_reject.view(forced.shape)
        if reject is not None:
            must_reject = must_reject | reject
        status = torch.where(forced & must_reject, int(Status.NON_FINITE), status)
        forced = forced & ~must_reject
        return accept | forced, self._clip(new), torch.where(forced, 0, status)


@dataclass
class StepTo(Wrapper):
    """Steps that would pass one of ``points`` (times of the time dtype) end on it
    exactly (torchdiffeq's ``step_t``); such a step is not an output landing, so the
    inner controller grows from it as from any accepted step."""

    points: Tensor

    def propose(self, state: Any, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        direction = torch.sign(target - t).reshape(-1, 1)
        points = self.points.view(1, -1)
        ahead = (direction * (points - t.reshape(-1, 1)) > 0) & (
            direction * (points - target.reshape(-1, 1)) < 0)
        nearest = torch.where(ahead, points * direction, math.inf).amin(1, keepdim=True)
        stop = torch.where(torch.isfinite(nearest), nearest * direction, target.reshape(-1, 1))
        h, t_next, landing = self.inner.propose(state, t, y, stop.view(t.shape))
        return h, t_next, landing & (stop.view(t.shape) == target)


#: ``callback(t, y, h)`` with ``t`` and ``|h|`` as 0-dim tensors
Callback = Callable[[Tensor, Tensor, Tensor], None]


@dataclass
class Callbacks(Wrapper):
    """Calls ``before(t, y, |h|)`` before each attempt and ``accepted``/``rejected``
    after it (torchdiffeq's ``callback_step``, ``callback_accept_step``,
    ``callback_reject_step``; shared steps only, one group)."""

    before: Callback | None = None
    accepted: Callback | None = None
    rejected: Callback | None = None

    def propose(self, state: Any, t: Tensor, y: Tensor, target: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        h, t_next, landing = self.inner.propose(state, t, y, target)
        if self.before is not None:
            self.before(t.reshape(()), y, h.abs().reshape(()))
        return h, t_next, landing

    def judge(self, state: Any, t: Tensor, t_next: Tensor, y: Tensor, step: Step, h: Tensor,
              landing: Tensor, running: Tensor, reject: Tensor | None
              ) -> tuple[Tensor, Any, Tensor]:
        accept, state, status = self.inner.judge(state, t, t_next, y, step, h, landing, running,
                                                 reject)
        callback = self.accepted if bool(accept.all()) else self.rejected
        if callback is not None and bool(running.all()):
            callback(t.reshape(()), y, h.abs().reshape(()))
        return accept, state, status
