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

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aca.errors import MaxStepsExceededError, NonFiniteStateError, StepSizeUnderflowError
from aca.solvers.control import (
    AdaptiveSteps,
    ConstantSteps,
    PerSampleConstantSteps,
    PerSampleSteps,
    column_shape,
)
from aca.solvers.step import Func, Scalar, Step, dense_output, rk_step
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
    """Evaluations (batched calls of ``func``), accepted and rejected steps; a per-sample
    solve also gives each sample's accepted, rejected and evaluations (``(3, B)``)."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0
    per_sample: Tensor | None = None


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


def _grow(buffer: Tensor, needed: int, limit: int | None = None) -> Tensor:
    """``buffer`` with room for at least ``needed`` rows (at most ``limit``) before its
    last (scratch) row."""
    capacity = len(buffer) - 1
    if needed <= capacity:
        return buffer
    size = max(needed, 2 * capacity) if limit is None else min(max(needed, 2 * capacity), limit)
    grown = buffer.new_zeros((size + 1, *buffer.shape[1:]))
    grown[:capacity] = buffer[:capacity]
    return grown


class SampleCheckpoints:
    """The accepted steps of a per-sample solve, aligned by step number: row ``j`` of
    ``times``/``steps`` holds each sample's ``j``-th accepted step (start time and
    size; sample ``b`` has ``counts[b]`` steps), ``states[j // stride]`` their start
    states for every ``stride``-th ``j`` (the stride doubles when ``max_states`` would
    be exceeded), ``slot[b, k]`` the step of sample ``b`` that holds its output time
    ``k`` and ``inside[j]`` the pairs ``(samples, output indices)`` that steps ``j`` hold
    (two index tensors). Written
    without host syncs: rows not written go to each buffer's last (scratch) row."""

    def __init__(self, max_states: int | None = None) -> None:
        self.max_states, self.stride = max_states, 1
        self.inside: dict[int, tuple[Tensor, Tensor]] = {}

    def start(self, t: Tensor, y: Tensor, n_times: int) -> None:
        batch = len(y)
        self.rows = torch.arange(batch, device=y.device)
        self.times = t.new_zeros(17, batch)
        self.steps = t.new_zeros(17, batch)
        self.states = y.new_zeros((3, *y.shape))
        self.slot = torch.zeros(batch, n_times, dtype=torch.long, device=y.device)

    def add(self, attempt: int, accept: Tensor, t: Tensor, h: Tensor, y: Tensor,
            numbers: Tensor, holds: Tensor) -> None:
        """Record the steps accepted at this attempt (``accept``): sample ``b``'s is its
        ``numbers[b]``-th (at most ``attempt``); ``holds``: the output times inside them."""
        accept = accept.view(-1)
        self.slot[:, 1:-1] = torch.where(holds, numbers.view(-1, 1), self.slot[:, 1:-1])
        self.times, self.steps = _grow(self.times, attempt + 1), _grow(self.steps, attempt + 1)
        index = torch.where(accept, numbers, len(self.times) - 1)
        self.times[index, self.rows] = t.detach().view(-1)
        self.steps[index, self.rows] = h.detach().view(-1)
        if self.max_states is not None and attempt // self.stride + 1 > self.max_states:
            self.stride *= 2
            kept = self.states[:-1:2]
            self.states = torch.cat([kept, self.states[-1:]])
        self.states = _grow(self.states, attempt // self.stride + 1, self.max_states)
        stored = accept & (numbers % self.stride == 0)
        index = torch.where(stored, numbers // self.stride, len(self.states) - 1)
        self.states[index, self.rows] = y.detach()

    def finish(self, counts: Tensor, y: Tensor) -> None:
        """After the solve: ``counts`` accepted steps per sample, ``y`` the final states.
        A kept state past a sample's last step is its final state (its steps there are
        of size 0)."""
        self.counts = counts.clone()
        n_steps = int(counts.max())
        self.times, self.steps = self.times[:n_steps], self.steps[:n_steps]
        n_states = (n_steps - 1) // self.stride + 1
        past = counts.view(-1, 1) <= self.stride * torch.arange(n_states, device=y.device)
        shape = (-1,) + (1,) * (y.dim() - 1)
        self.states = torch.stack([torch.where(past[:, s].view(shape), y, self.states[s])
                                   for s in range(n_states)])
        between = self.slot[:, 1:-1].reshape(-1)  # (B * (T - 2),) sample-major
        order = torch.argsort(between, stable=True)
        sizes = torch.bincount(between, minlength=n_steps).tolist()
        rows, ks = order // (self.slot.shape[1] - 2), order % (self.slot.shape[1] - 2) + 1
        self.inside = {j: pair for j, (size, *pair) in enumerate(
            zip(sizes, rows.split(sizes), ks.split(sizes))) if size}


@functools.cache
def _dense_matrix(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The continuous extension's coefficients, ``(degree, stages)``."""
    return torch.tensor(tableau.dense, dtype=dtype, device=device).T


def interpolate_rows(y: Tensor, t: Tensor, h: Tensor, stages: list[Tensor],
                     tableau: ButcherTableau, rows: Tensor, points: Tensor) -> Tensor:
    """The continuous extension of a batched per-sample step (from ``t``, of size ``h``,
    ``(B, 1, ...)``) at ``points[p]`` in the step of sample ``rows[p]``, ``(P, ...)``:
    ``y + h Σ_j b_j(θ) k_j`` with ``θ = (τ - t) / h``, for all points in one expression."""
    h_rows = h[rows]
    theta = (points - t.reshape(-1)[rows]) / torch.where(h_rows.detach() == 0, 1.0,
                                                         h_rows).reshape(-1)
    coefficients = _dense_matrix(tableau, theta.dtype, theta.device)
    powers = theta.unsqueeze(-1) ** torch.arange(1, len(coefficients) + 1, device=theta.device)
    weights = (powers @ coefficients).to(y.dtype)  # (P, stages): b_j(θ_p)
    ks = torch.stack(stages, dim=1)[rows]  # (P, stages, ...)
    increment = (weights.view(*weights.shape, *(1,) * (y.dim() - 1)) * ks).sum(1)
    return y[rows] + h_rows * increment


def integrate_per_sample(
    func: Func,
    y0: Tensor,
    times: Tensor,
    tableau: ButcherTableau,
    controller: PerSampleSteps | PerSampleConstantSteps,
    max_steps: int,
    checkpoints: SampleCheckpoints | None = None,
    on_attempt: Callable[[Tensor, Tensor, Tensor, Step, Tensor], None] | None = None,
) -> tuple[list[Tensor], Counts]:
    """Solve each sample (row of ``y0``) with its own steps from ``times[b, 0]`` and
    return the states at every time of ``times`` (``(B, T)``), as ``integrate``
    does with ``interpolate``: each sample lands on its last time and reads the
    others off the continuous extension of its accepted step that holds them.

    Every attempt is one batched step of all samples, each with its own ``t`` and
    ``h`` (``(B, 1, ..., 1)`` tensors; ``func`` gets the stage times of the samples);
    arrived samples take steps of size 0. One host sync per attempt. The counts
    include each sample's (``Counts.per_sample``). ``on_attempt(t, y, h, step, accept)``,
    if given, sees every attempt with the samples it accepts (the per-sample adjoint's
    parameter quadrature).
    """
    column = column_shape(y0)
    t, end = times[:, 0].view(column), times[:, -1].view(column)
    between = times[:, 1:-1]
    forward = torch.sign(end - t).view(-1, 1)
    k1, nfe = controller.start(func, t, end, y0)
    y, inside = y0, y0.new_zeros((times.shape[1] - 2, *y0.shape))  # the outputs between
    done = torch.zeros(column, dtype=torch.bool, device=y0.device)
    per_sample = torch.zeros(3, len(y0), dtype=torch.long, device=y0.device)
    per_sample[2] = nfe
    counts = Counts(nfe=nfe)
    if checkpoints is not None:
        checkpoints.start(t, y0, times.shape[1])
    for attempt in range(max_steps + 1):
        if attempt == max_steps:
            raise MaxStepsExceededError(
                f"{'adaptive' if controller.adaptive else 'fixed-step'} solve took "
                f"max_steps={max_steps} steps and some samples have not "
                f"reached their last time; raise max_steps or loosen rtol/atol")
        h, t_next, landing = controller.propose(t, end)
        step = rk_step(func, t, y, h, tableau, k1=k1, t_next=t_next,
                       with_error=controller.adaptive, dense=True)
        counts.nfe += step.nfe
        active = ~done
        accept, finite = controller.judge(y, step, h, landing, active)
        rejected = active & ~accept
        underflow = controller.underflowed(rejected)
        # the output times inside each sample's accepted step (t, t_next]
        holds = (accept.view(-1, 1) & (forward * (between - t.detach().view(-1, 1)) > 0)
                 & (forward * (between - t_next.detach().view(-1, 1)) <= 0))
        flags = torch.stack([holds.any(), (done | accept & landing).all(), underflow.any(),
                             (underflow & ~finite).any()])
        held, finished, small, non_finite = flags.tolist()
        if small:
            near = float(t.detach()[underflow][0])
            if non_finite:
                raise NonFiniteStateError(f"the state or derivative of some sample became "
                                          f"non-finite (nan/inf) near t={near:g}")
            raise StepSizeUnderflowError(
                f"the step size of some sample underflowed near t={near:g}: the problem may "
                "be stiff or singular there; loosen rtol/atol or use another solver")
        if held:
            rows, ks = holds.nonzero().unbind(1)
            values = interpolate_rows(y, t, h, step.stages, tableau, rows, between[rows, ks])
            inside = inside.index_put((ks, rows), values)
        if checkpoints is not None:
            checkpoints.add(attempt, accept, t, h, y, per_sample[0], holds)
        if on_attempt is not None:
            on_attempt(t, y, h, step, accept)
        per_sample[0] += accept.view(-1)
        per_sample[1] += rejected.view(-1)
        per_sample[2] += active.view(-1) * step.nfe
        y = torch.where(accept, step.y, y)
        t = torch.where(accept, t_next, t)
        # FSAL: the next first stage is k_last; otherwise evaluated again by the next step
        if step.k_last is None or k1 is None:
            k1 = step.k_last
        else:
            k1 = torch.where(accept, step.k_last, k1)
        done = done | accept & landing
        if finished:
            break
    counts.accepted, counts.rejected = per_sample[:2].sum(1).tolist()
    counts.per_sample = per_sample
    outputs = [y0, *inside.unbind(), y]
    if checkpoints is not None:
        checkpoints.finish(per_sample[0], y)
    return outputs, counts
