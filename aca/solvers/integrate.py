"""The one integration loop, shared by every gradient method and mode.

The state is split into *groups* that step independently: one group (the whole
state shares its steps, the error norm spans it) or one per sample
(``per_sample=True``). Times are ``(S, T)`` tensors of the time dtype, every group's
``t`` and ``h`` a value of an ``(S, 1, ..., 1)`` tensor, so the shared mode is the
one-group case of the same code. Each attempt is one batched step of every group;
groups that have arrived take steps of size 0. A group walks to its last output time
and lands on it exactly, and either lands on every output time on the way or
(``interpolate``) reads the others off the continuous extension of the accepted step
that holds them, so output times never shorten a step. One host sync per attempt.

A stop is a status (``Status``), not an exception: the loop returns a ``Solution``
and the caller raises for a failure. What a gradient method needs from the forward
pass it asks for: ``checkpoints`` (the accepted steps, for ACA), ``on_attempt`` (every
attempt, for the per-sample adjoint's parameter quadrature), ``event`` (stop a group
when it crosses zero).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from aca.solvers.control import Controller, Status
from aca.solvers.newton import Newton
from aca.solvers.step import Func, Step, interpolate, rk_step, value
from aca.solvers.tableau import ButcherTableau

#: ``(output indices, groups, values)``: outputs written by one attempt
Piece = tuple[Tensor, Tensor, Tensor]


def column_shape(y: Tensor, groups: int) -> tuple[int, ...]:
    """``(S, 1, ..., 1)``: one value per group, broadcasting against ``y`` (the whole
    shape for one group)."""
    if groups == 1:
        return (1,) * y.dim()
    return (groups,) + (1,) * (y.dim() - 1)


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


@dataclass
class Checkpoints:
    """The accepted steps of a forward solve, aligned by step number: row ``j`` of
    ``times``/``steps`` holds each group's ``j``-th accepted step (start time and
    size; group ``b`` has ``counts[b]`` steps), ``states[j // stride]`` their start
    states for every ``stride``-th ``j`` (the stride doubles when ``max_states`` would
    be exceeded), ``inside[j]``/``lands[j]`` the ``(output indices, groups)`` that
    steps ``j`` interpolate or land on, ``starts[j]`` the output time each group's
    step ``j`` counts its interval from (its last stop). ``annotate`` (one group only)
    is called on every accepted step with the evaluations its attempt made and whether
    its first stage came from elsewhere (FSAL); its results are kept in ``notes``.
    Several groups are written without host syncs (rows not written go to each buffer's
    scratch row); one group's steps are kept as they come, its states the very tensors
    the steps started from (no copy, no spare capacity)."""

    max_states: int | None = None
    annotate: Callable[[int, bool], object] | None = None
    stride: int = 1
    notes: list[object] = field(default_factory=list)
    inside: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    lands: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def start(self, t: Tensor, y: Tensor, groups: int) -> None:
        self.rows = torch.arange(groups, device=t.device)
        self.numbers = torch.zeros(groups, dtype=torch.long, device=t.device)
        self._pieces: list[tuple[str, Tensor, Tensor, Tensor]] = []
        if groups == 1:
            self._taken: list[tuple[Tensor, Tensor, Tensor]] = []
            self._kept: dict[int, Tensor] = {}
            return
        self.times = t.new_zeros(17, groups)
        self.steps = t.new_zeros(17, groups)
        self.starts = torch.zeros(17, groups, dtype=torch.long, device=t.device)
        self.states = y.reshape(groups, -1).new_zeros((3, groups, y.numel() // groups))

    def add(self, attempt: int, accept: Tensor, t: Tensor, h: Tensor, y: Tensor,
            start: Tensor) -> None:
        """Record the steps accepted at this attempt (``accept``, ``(S,)``); ``start``: the
        output time each one's interval counts from."""
        if len(self.rows) == 1:
            number = len(self._taken)
            self._taken.append((value(t), value(h), start))
            if number % self.stride == 0:
                self._kept[number] = value(y)
            if self.max_states is not None and len(self._kept) > self.max_states:
                self.stride *= 2
                self._kept = {i: s for i, s in self._kept.items() if i % self.stride == 0}
            return
        self.times = _grow(self.times, attempt + 1)
        self.steps, self.starts = _grow(self.steps, attempt + 1), _grow(self.starts, attempt + 1)
        numbers = self.numbers
        index = torch.where(accept, numbers, len(self.times) - 1)
        self.times[index, self.rows] = value(t).reshape(-1)
        self.steps[index, self.rows] = value(h).reshape(-1)
        self.starts[index, self.rows] = start
        if self.max_states is not None and attempt // self.stride + 1 > self.max_states:
            self.stride *= 2
            self.states = torch.cat([self.states[:-1:2], self.states[-1:]])
        self.states = _grow(self.states, attempt // self.stride + 1, self.max_states)
        stored = accept & (numbers % self.stride == 0)
        index = torch.where(stored, numbers // self.stride, len(self.states) - 1)
        self.states[index, self.rows] = value(y).reshape(len(self.rows), -1)
        self.numbers = numbers + accept

    def note(self, evaluations: int, first_stage_given: bool) -> None:
        if self.annotate is not None:
            self.notes.append(self.annotate(evaluations, first_stage_given))

    def piece(self, kind: str, ks: Tensor, rows: Tensor) -> None:
        """Outputs ``ks`` of groups ``rows`` interpolated (``"inside"``) in, or landed on
        (``"lands"``) at the end of, the steps those groups take now."""
        numbers = (torch.full_like(rows, len(self._taken)) if len(self.rows) == 1
                   else self.numbers[rows])
        self._pieces.append((kind, ks, rows, numbers))

    def finish(self, counts: Tensor, y: Tensor) -> None:
        """After the solve: ``counts`` accepted steps per group, ``y`` the final states.
        A kept state past a group's last step is its final state (its steps there are
        of size 0)."""
        self.counts = counts.clone()
        if len(self.rows) == 1:
            times, steps, starts = zip(*self._taken)
            self.times = torch.stack(times).view(-1, 1)
            self.steps = torch.stack(steps).view(-1, 1)
            self.starts = torch.stack(starts).view(-1, 1)
            self.states = [self._kept[i] for i in sorted(self._kept)]
            del self._taken, self._kept
            self._group_pieces()
            return
        n_steps = int(counts.max())
        self.times, self.steps = self.times[:n_steps], self.steps[:n_steps]
        self.starts = self.starts[:n_steps]
        n_states = (n_steps - 1) // self.stride + 1
        past = counts.view(-1, 1) <= self.stride * torch.arange(n_states, device=y.device)
        final = y.detach().reshape(len(self.rows), -1)
        self.states = [torch.where(past[:, s, None], final, self.states[s])
                       for s in range(n_states)]
        self._group_pieces()

    def _group_pieces(self) -> None:
        """``inside`` and ``lands`` by step number."""
        for kind in ("inside", "lands"):
            pieces = [p for p in self._pieces if p[0] == kind]
            if not pieces:
                continue
            ks, rows, steps = (torch.cat(parts) for parts in list(zip(*pieces))[1:])
            order = torch.argsort(steps, stable=True)
            ks, rows, steps = ks[order], rows[order], steps[order]
            numbers, sizes = torch.unique_consecutive(steps, return_counts=True)
            getattr(self, kind).update(
                {j: pair for j, *pair in zip(numbers.tolist(), ks.split(sizes.tolist()),
                                             rows.split(sizes.tolist()))})
        del self._pieces


@dataclass
class Counts:
    """Batched evaluations, and each group's accepted and rejected steps and the
    evaluations it was part of (``per_group``, ``(3, S)``), and the Jacobians formed."""

    nfe: int
    per_group: Tensor
    jacobians: int = 0

    @property
    def accepted(self) -> int:
        return int(self.per_group[0].sum())

    @property
    def rejected(self) -> int:
        return int(self.per_group[1].sum())


@dataclass
class Solution:
    """Every output time's state (``(T, *y0.shape)``; complete only when every group
    is ``DONE``), each group's ``status`` and the time it reached, the counts, and the
    last attempt (``last``: its start time, size, start state and step; events)."""

    ys: Tensor
    status: Tensor
    t: Tensor
    counts: Counts
    last: tuple[Tensor, Tensor, Tensor, Step] | None = None


def integrate(
    func: Func,
    y0: Tensor,
    times: Tensor,
    tableau: ButcherTableau,
    controller: Controller,
    max_steps: int,
    *,
    interpolate_outputs: bool = True,
    checkpoints: Checkpoints | None = None,
    on_attempt: Callable[[Tensor, Tensor, Tensor, Step, Tensor], None] | None = None,
    event: Callable[[Tensor, Tensor], Tensor] | None = None,
    newton: Newton | None = None,
) -> Solution:
    """Solve each group of ``y0`` from ``times[:, 0]`` and return the states at every
    time of ``times`` (``(S, T)``, in the time dtype; ``S`` groups). ``func(t, y)``
    gets ``t`` as an ``(S, 1, ..., 1)`` time tensor. ``on_attempt(t, y, h, step,
    accept)`` sees every attempt with the groups it accepts; ``event(t, y)`` (one value
    per group) stops a group at the accepted step after which it is <= 0 (``EVENT``).
    ``newton`` solves an implicit method's stages."""
    groups, n_times = times.shape
    column = column_shape(y0, groups)
    t, t_end = times[:, 0].view(column), times[:, -1].view(column)
    stops = torch.arange(n_times, device=times.device)
    if interpolate_outputs:
        stops = stops[[0, -1]]
    stop = torch.ones(groups, dtype=torch.long, device=times.device)
    target = times[:, stops[1]].view(column)
    between = times[:, 1:-1] if interpolate_outputs and n_times > 2 else None
    forward = torch.sign(t_end - t).detach().view(groups, 1)
    state, k1, nfe = controller.init(func, t, y0, t_end)
    jacobians = 0
    y, status = y0, torch.zeros(groups, dtype=torch.long, device=y0.device)
    running = torch.ones(column, dtype=torch.bool, device=y0.device)
    # each group's accepted steps, attempts and evaluations
    per_group = torch.zeros(3, groups, dtype=torch.long, device=y0.device)
    per_group[2] = nfe
    pieces: list[Piece] = []
    if checkpoints is not None:
        checkpoints.start(t, y0, groups)
        # an FSAL method's later steps start from the stage the step before ended with
        checkpoints.fsal = tableau.fsal and (controller.adaptive or between is not None)
    last = None
    for attempt in range(max_steps):
        h, t_next, landing = controller.propose(state, t, y, target)
        step = rk_step(func, t, y, h, tableau, k1=k1, with_error=controller.adaptive,
                       dense=between is not None, newton=newton)
        nfe, jacobians = nfe + step.nfe, jacobians + step.jacobians
        accept, new_state, failed = _judge(controller, state, t, t_next, y, step, h, landing,
                                           running, None)
        if step.y.requires_grad:  # a non-finite trial must not enter the graph: take it at h = 0
            bad = running & ~torch.isfinite(step.y).reshape(groups, -1).all(1).view(column)
            if bool(bad.any()):
                step = rk_step(func, t, y, torch.where(bad, 0.0, h), tableau, k1=k1,
                               with_error=controller.adaptive, dense=between is not None,
                               newton=newton)
                nfe, jacobians = nfe + step.nfe, jacobians + step.jacobians
                accept, new_state, failed = _judge(controller, state, t, t_next, y, step, h,
                                                   landing, running, bad)
        state, flat = new_state, accept.view(groups)
        lands = flat & landing.view(groups)
        final = lands & (stop == len(stops) - 1)
        holds = None
        if between is not None:
            holds = (flat.view(-1, 1) & (forward * (between - t.detach().view(-1, 1)) > 0)
                     & (forward * (between - t_next.detach().view(-1, 1)) <= 0))
        flags = torch.stack([flat, lands, failed.view(groups) != 0, final | (status != 0),
                             *([holds.any(1)] if holds is not None else [])])
        values = (flags.view(-1).tolist() * 2 if groups == 1  # every group's, then any group's
                  else torch.cat([flags.all(1), flags.any(1)]).tolist())
        (all_accepted, _, _, finished, *_), (any_accepted, any_landed, any_failed, _, *held) = \
            values[:len(flags)], values[len(flags):]
        if any_failed:
            status = torch.where(running.view(groups), failed.view(groups), status)
            break
        if held and held[0]:
            rows, ks = holds.nonzero().unbind(1)
            theta = (between[rows, ks] - t.reshape(-1)[rows]) / h.reshape(-1)[rows]
            pieces.append((ks + 1, rows, interpolate(y, h, step.stages, tableau, rows, theta)))
            if checkpoints is not None:
                checkpoints.piece("inside", ks + 1, rows)
        if any_landed:
            rows = lands.nonzero().squeeze(1)
            landed = stops[stop[rows]]
            pieces.append((landed, rows, step.y.reshape(groups, -1)[rows]))
            if checkpoints is not None:
                checkpoints.piece("lands", landed, rows)
        if checkpoints is not None and any_accepted:
            checkpoints.add(attempt, flat, t, h, y, stops[stop - 1])
            checkpoints.note(step.nfe, k1 is not None)
        if on_attempt is not None:
            on_attempt(t, y, h, step, accept)
        per_group[0].add_(flat)
        per_group[1].add_(running.view(groups))
        per_group[2].add_(running.view(groups), alpha=step.nfe)
        last = (t, h, y, step)
        if all_accepted:
            y, t, k1 = step.y, t_next, step.k_last
        elif any_accepted:
            y, t = torch.where(accept, step.y, y), torch.where(accept, t_next, t)
            k1 = step.k_last if step.k_last is None or k1 is None else torch.where(
                accept, step.k_last, k1)
        if any_landed:
            stop = stop + lands
            status = torch.where(final, int(Status.DONE), status)
            running = (status == Status.RUNNING).view(column)
            if not interpolate_outputs:
                target = times.gather(1, stops[stop.clamp_max(len(stops) - 1)].view(-1, 1)
                                      ).view(column)
        if event is not None and any_accepted:
            crossed = flat & (event(t, y).reshape(groups) <= 0) & (status == Status.RUNNING)
            status = torch.where(crossed, int(Status.EVENT), status)
            running = (status == Status.RUNNING).view(column)
            finished = finished or bool((status != Status.RUNNING).all())
        if finished:
            break
    else:
        status = torch.where(status == Status.RUNNING, int(Status.MAX_STEPS), status)
    per_group[1] -= per_group[0]  # attempts not accepted: rejected
    if checkpoints is not None:
        checkpoints.finish(per_group[0], y)
    return Solution(_assemble(y0, n_times, groups, pieces), status, t,
                    Counts(nfe, per_group, jacobians), last)


def _judge(controller: Controller, state: object, t: Tensor, t_next: Tensor, y: Tensor,
           step: Step, h: Tensor, landing: Tensor, running: Tensor, reject: Tensor | None
           ) -> tuple[Tensor, object, Tensor]:
    """The controller's decision (a group whose Newton iteration failed is rejected);
    a running group whose step does not move its time (a step below the resolution of
    t) has underflowed."""
    if step.failed is not None:
        reject = step.failed if reject is None else reject | step.failed
    accept, state, failed = controller.judge(state, t, t_next, y, step, h, landing, running,
                                             reject)
    return accept, state, failed.masked_fill(running & (h == 0), int(Status.UNDERFLOW))


def _assemble(y0: Tensor, n_times: int, groups: int, pieces: list[Piece]) -> Tensor:
    """``(T, *y0.shape)``: ``y0`` first, then every output the attempts wrote."""
    rest = y0.new_zeros((n_times - 1, groups, y0.numel() // groups))
    if pieces:
        ks, rows, values = (torch.cat(parts) for parts in zip(*pieces))
        rest = rest.index_put((ks - 1, rows), values)
    return torch.cat([y0.unsqueeze(0), rest.view(n_times - 1, *y0.shape)])
