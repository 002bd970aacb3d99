"""Adaptive checkpoint adjoint (Zhuang et al. 2020).

Forward: solve without a graph, keep the accepted steps ``(t_i, h_i, y_i)`` of every
group (``aca.solvers.Checkpoints``). Backward: walk the steps in reverse, rebuild
step ``j`` of every group as one batched step (a group with fewer steps takes a step
of size 0) with the outputs interpolated inside it, and back-propagate through it.
``h_i`` is a constant, except that a step landing on an output time ``t_k`` has size
``t_k - t_i``, ``t_i`` is the output time its interval starts from plus a constant,
and an output inside a step is its continuous extension at ``θ = (t_k - t_i) / h_i``:
so the gradient equals autograd through the accepted discrete steps and
interpolants for ``y0``, the parameters and the output times. Random numbers
``func`` drew (dropout) are replayed step by step (shared steps only: per-sample
steps are rebuilt in other batches than the forward took them).

Memory: the checkpoints plus one step's graph. With ``max_checkpoints=K`` at most
K states are kept in forward; in backward the states between two kept ones are
recomputed by binomial checkpointing (Griewank 1992) holding at most
``max(K - kept, ceil(log2 L))`` more, L the number of steps between them: the
same gradient, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from math import comb
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from aca.errors import ODEError
from aca.gradients.base import (
    GradientMethod,
    Problem,
    accumulate,
    autocast_as,
    preserved_buffers,
)
from aca.gradients.replay import RandomStates, pack, unpack
from aca.gradients.watch import Watched, concurrent_random, refuse_unseen, unreplayable_random
from aca.solvers import Checkpoints, interpolate, rk_step
from aca.solvers.integrate import column_shape
from aca.solvers.step import end_from_inside

if TYPE_CHECKING:
    from aca.options import SolveOptions

#: ``(output indices, groups, values)`` written by a rebuilt step
Outputs = list[tuple[Tensor, Tensor, Tensor]]


class _Steps:
    """The accepted steps of the forward solve, taken again as the forward took them
    (random numbers replayed), with the outputs interpolated inside them or landed on
    at their end; counts the evaluations made."""

    def __init__(self, problem: Problem, cp: Checkpoints, replayed: RandomStates | None,
                 unreplayed: RandomStates, rows: list[tuple[int, int]],
                 dtype: torch.dtype) -> None:
        self.problem, self.cp = problem, cp
        self.replayed, self.unreplayed, self.rows = replayed, unreplayed, rows
        self.all_active = bool((cp.counts == cp.counts.max()).all())
        # where the forward evaluated an FSAL method's first stages: each last step's end,
        # from inside (the value of k1_time[j - 1] for step j)
        self.k1_times = (end_from_inside(cp.times[:-1], cp.times[:-1] + cp.steps[:-1],
                                         dtype) if cp.fsal else None)
        self.nfe = self.jacobians = 0
        self.random: list[Tensor] = []  # the packed snapshots, set from the saved tensors
        self.per_step: list[tuple[Tensor, ...]] | None = None  # times, steps, k1 times by j

    def __len__(self) -> int:
        return len(self.cp.times)

    def take(self, j: int, y: Tensor, tau: Tensor | None = None,
             dense: bool = False) -> tuple[Tensor, Outputs]:
        """Step ``j`` of every group from ``y``, and (``dense``) the outputs it holds.
        ``tau``: the ``(S, T)`` output times in the autograd graph that the step's start
        time, a landing step's size and the interpolation points then depend on as in
        the forward: ``t_j = t_a + c``, ``h_j = t_b - t_j``, ``θ = (t_k - t_j) / h_j``."""
        cp, problem = self.cp, self.problem
        groups = problem.groups
        column = column_shape(y, groups)
        times = problem.times if tau is None else tau
        if self.per_step is None:  # each step's times as (S, 1, ..., 1) views, once
            self.per_step = [x.view(len(x), *column).unbind(0) for x in (
                cp.times, cp.steps, *([self.k1_times] if self.k1_times is not None else []))]
        t, h = self.per_step[0][j], self.per_step[1][j]
        if not self.all_active:
            active = (cp.counts > j).view(column)
            t, h = torch.where(active, t, problem.times[:, -1].view(column)), h * active
        lands = cp.lands.get(j) if dense else None
        if tau is not None:
            start = tau.gather(1, cp.starts[j].view(-1, 1)).view(column)
            shift = start - start.detach()
            if not self.all_active:
                shift = shift * active
            t = t + shift
            if lands is not None:
                ks, rows = lands
                moved = torch.zeros_like(tau[:, 0]).index_put((rows,), tau[rows, ks]
                                                             - tau[rows, ks].detach())
                landing = torch.zeros(groups, dtype=torch.bool, device=y.device)
                landing[rows] = True
                h = h + torch.where(landing.view(column), moved.view(column) - shift, 0.0)
        k1, k1_time = None, None
        if self.k1_times is not None and j > 0:
            k1_time = self.per_step[2][j - 1]
            if tau is not None:  # its derivative is t's
                k1_time = k1_time + (t - t.detach())
        if self.replayed is not None:
            first, rest, digests = self.rows[j]
            RandomStates.set(unpack(self.random, self.replayed, first))
            k1 = problem.rhs(t if k1_time is None else k1_time, y)
            self.nfe += 1
            if rest >= 0:
                RandomStates.set(unpack(self.random, self.replayed, rest))
        inside = cp.inside.get(j) if dense else None
        step = rk_step(problem.rhs, t, y, h, problem.tableau, k1=k1, dense=inside is not None,
                       k1_time=k1_time, newton=problem.newton)
        self.nfe, self.jacobians = self.nfe + step.nfe, self.jacobians + step.jacobians
        if self.replayed is not None:  # the evaluations since the last state set: as forward's
            replayed = step.nfe + (rest < 0)
            if self.replayed.digest() != digests[replayed]:
                raise concurrent_random()
        y_next = step.y if self.all_active else torch.where(active, step.y, y)
        outputs: Outputs = []
        if inside is not None:
            ks, rows = inside
            theta = (times[rows, ks] - t.reshape(-1)[rows]) / h.reshape(-1)[rows]
            outputs.append((ks, rows, interpolate(y, h, step.stages, problem.tableau, rows,
                                                  theta)))
        if lands is not None:
            ks, rows = lands
            outputs.append((ks, rows, y_next.reshape(groups, -1)[rows]))
        return y_next, outputs

    def advance(self, j: int, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.take(j, y)[0]

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Replayed generators are restored afterwards; the others must not move."""
        before = self.unreplayed.get()
        with self.replayed.preserved() if self.replayed else contextlib.nullcontext():
            yield
        if self.unreplayed.moved(before):
            raise unreplayable_random(adjoint=False)


def _split(length: int, slots: int) -> int:
    """Where binomial checkpointing puts the next state when reversing ``length``
    steps with ``slots`` states to spare: with ``s = slots + 1`` checkpoints and the
    fewest repetitions ``r`` such that C(s + r, s) >= length, the remainder is
    reversible with s - 1 checkpoints and r repetitions."""
    s, r = slots + 1, 1
    while comb(s + r, s) < length:
        r += 1
    return max(1, length - comb(s - 1 + r, s - 1))


def _revolve(advance: Callable[[int, Tensor], Tensor], a: int, y_a: Tensor, b: int,
             slots: int) -> Iterator[tuple[int, Tensor]]:
    """``(i, y_i)`` for ``i = b-1 ... a`` from the state at ``a``, holding at most
    ``slots`` recomputed states at a time."""
    while b - a > 1:
        m = a + _split(b - a, slots)
        y_m = y_a
        for i in range(a, m):
            y_m = advance(i, y_m)
        yield from _revolve(advance, m, y_m, b, slots - 1)
        b = m
    yield a, y_a


def _reverse(steps: _Steps, states: dict[int, Tensor],
             budget: int | None) -> Iterator[tuple[int, Tensor]]:
    """``(i, y_i)`` for every accepted step, last first."""
    starts = sorted(states)
    for a, b in reversed(list(zip(starts, [*starts[1:], len(steps)]))):
        slots = max(budget - len(starts), (b - a - 1).bit_length()) if budget else b - a - 1
        yield from _revolve(steps.advance, a, states[a], b, slots)


class _ACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, method: ACA, y0: Tensor, t: Tensor | None,
                *params: Tensor) -> Tensor:
        replay = not problem.per_sample and not problem.tableau.implicit
        func = Watched(problem, y0, unseen=True, random="replay" if replay else "refuse")
        checkpoints = Checkpoints(method.max_checkpoints, annotate=func.annotate)
        versions = [buffer._version for buffer in problem.buffers]
        solution = problem.solve(y0, func=func, checkpoints=checkpoints)
        problem.refuse_changed_buffers(versions)
        problem.report_forward(solution)
        random, rows = pack(checkpoints.notes, func.replayed) if func.replayed else ([], [])
        ctx.steps = _Steps(problem, checkpoints, func.replayed, func.unreplayed(), rows,
                           y0.dtype)
        ctx.method, ctx.n_params = method, len(params)
        # saved, not kept: torch frees them after backward (unless retain_graph), refuses a
        # second backward, and notices in-place edits of y0 and the parameters
        ctx.n_states = len(checkpoints.states)
        ctx.save_for_backward(y0, t, *params, *checkpoints.states, *random)
        checkpoints.states = None
        return solution.ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        y0, t, *saved = ctx.saved_tensors
        steps: _Steps = ctx.steps
        params = saved[:ctx.n_params]
        states = saved[ctx.n_params:ctx.n_params + ctx.n_states]
        steps.random, steps.nfe, steps.jacobians = saved[ctx.n_params + ctx.n_states:], 0, 0
        problem = steps.problem
        with preserved_buffers(problem.buffers), steps.replaying(), autocast_as(problem):
            if torch.is_grad_enabled():
                if problem.tableau.implicit:  # z* + δ - δ.detach() holds the first derivative
                    raise ODEError(            # only: a second one would be silently wrong
                        "higher-order gradients (create_graph=True) through the implicit "
                        f"{problem.tableau.name} are not supported with gradient='aca' (its "
                        "stages' implicit-function-theorem derivative is exact to first order "
                        "only); use gradient='naive' (autograd through the Newton iterations)")
                grads = _backward_through_chain(ctx, steps, grad_ys, y0, t, params)
            else:
                kept = {s * steps.cp.stride: state.view_as(y0) for s, state in enumerate(states)}
                grads = _backward_step_by_step(ctx, steps, grad_ys, kept, t, params)
        steps.random = []  # the saved tensors alone hold them (and free them)
        problem.sinks.add(nfe_backward=steps.nfe, jacobians=steps.jacobians)
        return (None, None, *grads)


def _leaf_times(problem: Problem, t: Tensor) -> Tensor:
    """The output times as an ``(S, T)`` leaf in the time dtype."""
    return t.detach().to(problem.times.dtype).expand_as(problem.times).clone().requires_grad_()


def _to_t(grad: Tensor | None, t: Tensor) -> Tensor:
    """A gradient w.r.t. the ``(S, T)`` times, reduced to the shape of ``t``."""
    if grad is None:
        return torch.zeros_like(t)
    return (grad.sum(0) if t.dim() == 1 else grad).to(t)


def _backward_step_by_step(ctx, steps: _Steps, grad_ys: Tensor, states: dict[int, Tensor],
                           t: Tensor | None, params: list[Tensor]) -> list[Tensor | None]:
    """Rebuild one step at a time (with the outputs in it), last first, and
    back-propagate through it."""
    problem, groups = steps.problem, steps.problem.groups
    flat_grads = grad_ys.reshape(len(grad_ys), groups, -1)
    adjoint = torch.zeros_like(grad_ys[0])
    param_grads: list[Tensor | None] = [None] * len(params)
    want_t = ctx.needs_input_grad[3]
    t_grad = None
    with torch.enable_grad():
        for j, state in _reverse(steps, states, ctx.method.max_checkpoints):
            y_j = state.detach().requires_grad_()
            tau = _leaf_times(problem, t) if want_t else None
            y_next, outputs = steps.take(j, y_j, tau, dense=True)
            ends, cotangents = [y_next], [adjoint]
            for ks, rows, values in outputs:
                ends.append(values)
                cotangents.append(flat_grads[ks, rows])
            if problem.closure:  # a tensor first reached after the first evaluation
                refuse_unseen(ends, [*params, *([tau] if want_t else [])], y_j)
            inputs = (y_j, *params, *([tau] if want_t else []))
            # retain: a tensor func closes over may share graph with the parameters (W = 2p)
            grads = torch.autograd.grad(ends, inputs, cotangents, allow_unused=True,
                                        retain_graph=True)
            adjoint = grads[0]
            accumulate(param_grads, grads[1:1 + len(params)])
            if want_t and grads[-1] is not None:
                t_grad = grads[-1] if t_grad is None else t_grad + grads[-1]
    adjoint = adjoint + grad_ys[0]
    return [adjoint, _to_t(t_grad, t) if want_t else None, *param_grads]


def _backward_through_chain(ctx, steps: _Steps, grad_ys: Tensor, y0: Tensor, t: Tensor | None,
                            params: list[Tensor]) -> list[Tensor | None]:
    """Higher-order gradients (``create_graph=True``): rebuild the accepted steps (and
    the outputs in them) as one differentiable chain from ``y0`` so that the gradient
    itself has a graph."""
    problem = steps.problem
    want_t = ctx.needs_input_grad[3]
    tau = t.to(problem.times.dtype).expand_as(problem.times) if want_t else None
    y, pieces = y0, []
    for j in range(len(steps)):
        y, outputs = steps.take(j, y, tau, dense=True)
        pieces += outputs
    rest = y0.new_zeros((len(grad_ys) - 1, problem.groups, y0.numel() // problem.groups))
    ks, rows, values = (torch.cat(parts) for parts in zip(*pieces))
    ys = torch.cat([y0.unsqueeze(0), rest.index_put((ks - 1, rows), values).view_as(grad_ys[1:])])
    inputs = (y0, t, *params)
    wanted = [x for x, needed in zip(inputs, ctx.needs_input_grad[2:]) if needed]
    grads = iter(torch.autograd.grad(ys, wanted, grad_ys, create_graph=True, allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[2:]]


@dataclass(frozen=True)
class ACA(GradientMethod):
    """The adaptive checkpoint adjoint; ``max_checkpoints`` bounds the states it keeps
    (forward and backward; None: all)."""

    max_checkpoints: int | None = None
    name = "aca"

    @classmethod
    def from_options(cls, options: SolveOptions) -> ACA:
        return cls(options.max_checkpoints)

    def solve(self, problem: Problem, y0: Tensor) -> Tensor:
        return _ACA.apply(problem, self, y0, problem.t if problem.t_requires_grad else None,
                          *problem.params)
