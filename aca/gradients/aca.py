"""Adaptive checkpoint adjoint (Zhuang et al. 2020).

Forward: solve without a graph, keep the accepted steps ``(t_i, h_i, y_i)``.
Backward: walk the accepted steps in reverse, rebuild each one with its graph
and back-propagate through it. ``h_i`` is a constant, except that a step landing
on an output time ``t_k`` has size ``t_k - t_i``, and ``t_i`` is the output time
its interval starts from plus a constant: so the gradient equals autograd through
the accepted discrete steps for ``y0``, the parameters and the output times.
Random numbers ``func`` drew (dropout) are replayed step by step.

Memory: the checkpoints plus one step's graph. With ``max_checkpoints=K`` at most
K states are kept in forward; in backward the states between two kept ones are
recomputed by binomial checkpointing (Griewank 1992) holding at most
``max(K - kept, ceil(log2 L))`` more, L the number of steps between them: the
same gradient, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from math import comb

import torch
from torch import Tensor

from aca.gradients.base import Problem, accumulate, preserved_buffers
from aca.gradients.replay import RandomStates, pack, unpack
from aca.gradients.watch import Watched, unreplayable_random
from aca.solvers import Checkpoints, rk_step
from aca.solvers.step import Scalar


class _Steps:
    """The accepted steps of the forward solve, taken again as the forward took
    them (random numbers replayed); counts the evaluations made."""

    def __init__(self, problem: Problem, cp: Checkpoints, replayed: RandomStates | None,
                 unreplayed: RandomStates, rows: list[tuple[int, int]]) -> None:
        self.problem, self.replayed, self.unreplayed = problem, replayed, unreplayed
        self.rows = rows
        self.times, self.steps, self.segment_ends = cp.times, cp.steps, cp.segment_ends
        #: output time index k of the interval [t_{k-1}, t_k] that holds step i
        self.interval = [k for k, (a, b) in enumerate(zip([0, *cp.segment_ends], cp.segment_ends),
                                                      start=1) for _ in range(a, b)]
        self.landing = {end - 1 for end in cp.segment_ends}
        self.nfe = 0
        self.random: list[Tensor] = []  # the packed snapshots, set from the saved tensors

    def __len__(self) -> int:
        return len(self.times)

    def take(self, i: int, y: Tensor, t: Scalar | None = None, h: Scalar | None = None) -> Tensor:
        """Step ``i`` from ``y`` (``t``, ``h``: its time and size as tensors, if given)."""
        t = self.times[i] if t is None else t
        h = self.steps[i] if h is None else h
        k1 = None
        if self.replayed is not None:
            first, rest = self.rows[i]
            RandomStates.set(unpack(self.random, self.replayed, first))
            k1 = self.problem.rhs(t, y)
            self.nfe += 1
            if rest >= 0:
                RandomStates.set(unpack(self.random, self.replayed, rest))
        step = rk_step(self.problem.rhs, t, y, h, self.problem.tableau, k1=k1)
        self.nfe += step.nfe
        return step.y

    def advance(self, i: int, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.take(i, y)

    def time_args(self, i: int, start: Tensor, end: Tensor) -> tuple[Tensor, Scalar]:
        """Step ``i``'s start time and size with the values of the forward and the
        derivatives of ``t_i = start + c`` and, for a landing step, ``h_i = end - t_i``
        (``start``, ``end``: the output times of its interval, as tensors)."""
        shift = start - start.detach()  # 0, with derivative 1
        t = self.times[i] + shift
        if i not in self.landing:
            return t, self.steps[i]
        return t, self.steps[i] + (end - end.detach()) - shift

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
    def forward(ctx, problem: Problem, y0: Tensor, t: Tensor | None, *params: Tensor) -> Tensor:
        func = Watched(problem, y0, unseen=True, random="replay")
        checkpoints = Checkpoints(problem.max_checkpoints, annotate=func.annotate)
        outputs, counts = problem.solve(y0, func=func, checkpoints=checkpoints)
        problem.report_forward(counts)
        random, rows = pack(checkpoints.notes, func.replayed) if func.replayed else ([], [])
        ctx.steps = _Steps(problem, checkpoints, func.replayed, func.unreplayed(), rows)
        ctx.indices, ctx.n_params = sorted(checkpoints.states), len(params)
        # saved, not kept: torch frees them after backward (unless retain_graph), refuses a
        # second backward, and notices in-place edits of y0 and the parameters
        ctx.save_for_backward(y0, t, *params, *(checkpoints.states[i] for i in ctx.indices),
                              *random)
        return torch.stack(outputs)

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        y0, t, *saved = ctx.saved_tensors
        steps: _Steps = ctx.steps
        n_params = ctx.n_params
        params = saved[:n_params]
        states = dict(zip(ctx.indices, saved[n_params:n_params + len(ctx.indices)]))
        steps.random, steps.nfe = saved[n_params + len(ctx.indices):], 0
        problem = steps.problem
        with preserved_buffers(problem.buffers), steps.replaying():
            if torch.is_grad_enabled():
                grads = _backward_through_chain(ctx, steps, grad_ys, y0, t, params)
            else:
                grads = _backward_step_by_step(ctx, steps, grad_ys, states, t, params)
        steps.random = []  # the saved tensors alone hold them (and free them)
        problem.sinks.add(nfe_backward=steps.nfe)
        return (None, *grads)


def _backward_step_by_step(ctx, steps: _Steps, grad_ys: Tensor, states: dict[int, Tensor],
                           t: Tensor | None, params: list[Tensor]) -> list[Tensor | None]:
    """Rebuild one step at a time, last first, and back-propagate through it."""
    # output k (k >= 1) is the state after segment_ends[k - 1] steps
    outputs_at = {end: k for k, end in enumerate(steps.segment_ends[:-1], start=1)}
    adjoint = grad_ys[-1]
    param_grads: list[Tensor | None] = [None] * len(params)
    want_t = ctx.needs_input_grad[2]
    times = steps.problem.times
    t_grad = grad_ys.new_zeros(len(times), dtype=torch.promote_types(grad_ys.dtype,
                                                                    torch.float32))
    with torch.enable_grad():
        for i, state in _reverse(steps, states, steps.problem.max_checkpoints):
            if i + 1 in outputs_at:
                adjoint = adjoint + grad_ys[outputs_at[i + 1]]
            y_i = state.detach().requires_grad_()
            if want_t:
                k = steps.interval[i]
                ends = [state.new_tensor(times[k - 1], requires_grad=True),
                        state.new_tensor(times[k], requires_grad=True)]
                y_next = steps.take(i, y_i, *steps.time_args(i, *ends))
            else:
                ends = []
                y_next = steps.take(i, y_i)
            grads = torch.autograd.grad(y_next, (y_i, *params, *ends), adjoint,
                                        allow_unused=True)
            adjoint = grads[0]
            accumulate(param_grads, grads[1:1 + len(params)])
            for j, grad in enumerate(grads[1 + len(params):]):
                if grad is not None:
                    t_grad[k - 1 + j] += grad
    adjoint = adjoint + grad_ys[0]
    return [adjoint, t_grad.to(t) if want_t else None, *param_grads]


def _backward_through_chain(ctx, steps: _Steps, grad_ys: Tensor, y0: Tensor, t: Tensor | None,
                            params: list[Tensor]) -> list[Tensor | None]:
    """Higher-order gradients (``create_graph=True``): rebuild the accepted steps as
    one differentiable chain from ``y0`` so that the gradient itself has a graph."""
    want_t = ctx.needs_input_grad[2]
    output_times = t.to(y0) if want_t else None
    output_ends = set(steps.segment_ends)
    y, outputs = y0, [y0]
    for i in range(len(steps)):
        if want_t:
            k = steps.interval[i]
            y = steps.take(i, y, *steps.time_args(i, output_times[k - 1], output_times[k]))
        else:
            y = steps.take(i, y)
        if i + 1 in output_ends:
            outputs.append(y)
    inputs = (y0, t, *params)
    wanted = [x for x, needed in zip(inputs, ctx.needs_input_grad[1:]) if needed]
    grads = iter(torch.autograd.grad(torch.stack(outputs), wanted, grad_ys, create_graph=True,
                                     allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[1:]]


def aca_solve(problem: Problem, y0: Tensor) -> Tensor:
    return _ACA.apply(problem, y0, problem.t if problem.t_requires_grad else None,
                      *problem.params)
