"""The integration loop shared by every gradient method.

It walks from ``times[0]`` to the last output time, landing on it exactly, and
either lands on every output time on the way or (``interpolate``) reads them off
the continuous extension of the accepted step that holds them, so that output
times never shorten a step. A controller (``ConstantSteps`` or ``AdaptiveSteps``)
proposes and judges the steps. What a gradient method needs from the forward
pass it asks for: ``time_args`` (times as tensors in the autograd graph, for
naive) and ``checkpoints`` (a record of the accepted steps, for ACA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import Tensor

from aca.errors import MaxStepsExceededError
from aca.solvers.control import AdaptiveSteps, ConstantSteps
from aca.solvers.step import Func, Scalar, dense_output, rk_step
from aca.solvers.tableau import ButcherTableau


@dataclass
class Checkpoints:
    """The accepted steps of a forward solve: start time ``times[i]`` and size
    ``steps[i]`` of every step, the start state of the steps in ``states`` (every
    ``stride``-th one when ``max_states`` bounds memory: the stride doubles each
    time the budget is exceeded), the indices of the output times the steps land
    on (``stops``: all of them, or the first and last when interpolating), the number
    of steps completed at each stop after the first (``segment_ends``), and the
    output times interpolated inside step ``i`` (``inside[i]``, their indices).
    ``annotate``, if given, is called on every accepted step with the evaluations
    its attempt made and whether its first stage came from elsewhere (FSAL); its
    results are kept in ``notes``."""

    max_states: int | None = None
    annotate: Callable[[int, bool], object] | None = None
    times: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    states: dict[int, Tensor] = field(default_factory=dict)
    stops: list[int] = field(default_factory=list)
    segment_ends: list[int] = field(default_factory=list)
    inside: dict[int, list[int]] = field(default_factory=dict)
    notes: list[object] = field(default_factory=list)
    stride: int = 1

    def add(self, t: float, h: float, y: Tensor, evaluations: int = 0,
            first_stage_given: bool = False, inside: Sequence[int] = ()) -> None:
        index = len(self.times)
        self.times.append(t)
        self.steps.append(h)
        if inside:
            self.inside[index] = list(inside)
        if self.annotate is not None:
            self.notes.append(self.annotate(evaluations, first_stage_given))
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


def integrate(
    func: Func,
    y0: Tensor,
    times: list[float],
    tableau: ButcherTableau,
    controller: ConstantSteps | AdaptiveSteps,
    max_steps: int,
    time_args: list[Scalar] | None = None,
    checkpoints: Checkpoints | None = None,
    interpolate: bool = False,
) -> tuple[list[Tensor], Counts]:
    """Solve from ``times[0]`` and return the state at every time in ``times``.

    ``time_args``: the same times as the step should see them (0-dim tensors in
    the autograd graph); by default the floats themselves. ``interpolate``:
    land only on the last time and interpolate the others inside the accepted
    steps (``y(t_i + θ h_i)`` with ``θ = (t_k - t_i) / h_i`` from the time arguments).
    One host sync per adaptive attempt (the accept/reject decision), one per
    landing on a grid.
    """
    args = times if time_args is None else time_args
    stops = [0, len(times) - 1] if interpolate else list(range(len(times)))
    forward = 1.0 if times[-1] > times[0] else -1.0
    counts = Counts()
    t, t_arg, y = times[0], args[0], y0
    k1, counts.nfe = controller.start(func, [times[k] for k in stops], t_arg, y, max_steps)
    outputs = [y0]
    if checkpoints is not None:
        checkpoints.stops = stops
    attempts = 0
    for stop in stops[1:]:
        target, target_arg = times[stop], args[stop]
        while t != target:
            if attempts >= max_steps:  # (a grid longer than max_steps is refused at start)
                raise MaxStepsExceededError(
                    f"adaptive solve took max_steps={max_steps} steps and reached t={t:g} "
                    f"of {target:g}; raise max_steps or loosen rtol/atol")
            attempts += 1
            h, h_arg, t_next, t_next_arg = controller.propose(t, t_arg, target, target_arg)
            end = len(outputs)  # the output times up to t_next (before the stop) fall inside
            while end < stop and forward * (times[end] - t_next) <= 0:
                end += 1
            inside = range(len(outputs), end)
            step = rk_step(func, t_arg, y, h_arg, tableau, k1=k1, t_next=t_next_arg,
                           with_error=controller.adaptive, dense=bool(inside))
            counts.nfe += step.nfe
            if controller.accept(y, step, h, h_arg, t, target):
                outputs += [dense_output(y, h_arg, step.stages, tableau, (args[k] - t_arg) / h_arg)
                             for k in inside]
                if checkpoints is not None:
                    checkpoints.add(t, h, y, step.nfe, k1 is not None, inside)
                t, t_arg, y, k1 = t_next, t_next_arg, step.y, step.k_last
                counts.accepted += 1
            else:
                counts.rejected += 1
        controller.arrived(y, t)
        outputs.append(y)
        if checkpoints is not None:
            checkpoints.segment_ends.append(len(checkpoints.times))
    return outputs, counts
