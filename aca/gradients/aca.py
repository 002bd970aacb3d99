"""Adaptive checkpoint adjoint (Zhuang et al. 2020).

Forward: solve without a graph, keep the accepted steps ``(t_i, h_i, y_i)``.
Backward: walk the accepted steps in reverse, rebuild each one with its graph,
together with the outputs interpolated inside it, and back-propagate through
them. ``h_i`` is a constant, except that a step landing on an output time ``t_k``
has size ``t_k - t_i``, ``t_i`` is the output time its interval starts from plus
a constant, and an output inside a step is its continuous extension at
``θ = (t_k - t_i) / h_i``: so the gradient equals autograd through the accepted
discrete steps and interpolants for ``y0``, the parameters and the output times.
Random numbers ``func`` drew (dropout) are replayed step by step.

Memory: the checkpoints plus one step's graph. With ``max_checkpoints=K`` at most
K states are kept in forward; in backward the states between two kept ones are
recomputed by binomial checkpointing (Griewank 1992) holding at most
``max(K - kept, ceil(log2 L))`` more, L the number of steps between them: the
same gradient, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from math import comb

import torch
from torch import Tensor

from aca.gradients.base import Problem, accumulate, preserved_buffers
from aca.gradients.replay import RandomStates, pack, unpack
from aca.gradients.watch import Watched, unreplayable_random
from aca.solvers import Checkpoints, dense_output, rk_step


class _Steps:
    """The accepted steps of the forward solve, taken again as the forward took
    them (random numbers replayed), with the outputs interpolated inside them;
    counts the evaluations made."""

    def __init__(self, problem: Problem, cp: Checkpoints, replayed: RandomStates | None,
                 unreplayed: RandomStates, rows: list[tuple[int, int]]) -> None:
        self.problem, self.replayed, self.unreplayed = problem, replayed, unreplayed
        self.rows = rows
        self.times, self.steps, self.inside = cp.times, cp.steps, cp.inside
        #: the output times (indices) the interval of step i runs between: its stops
        self.interval = [(cp.stops[j - 1], cp.stops[j])
                         for j, (a, b) in enumerate(zip([0, *cp.segment_ends], cp.segment_ends),
                                                    start=1) for _ in range(a, b)]
        #: the output time (index) reached after this many steps, for every stop but t[0]
        self.stop_after = dict(zip(cp.segment_ends, cp.stops[1:]))
        self.landing = {end - 1 for end in cp.segment_ends}
        self.nfe = 0
        self.random: list[Tensor] = []  # the packed snapshots, set from the saved tensors

    def __len__(self) -> int:
        return len(self.times)

    def take(self, i: int, y: Tensor, t_out: Mapping[int, Tensor] | None = None,
             dense: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Step ``i`` from ``y``, and (``dense``) the outputs interpolated inside it.
        ``t_out``: output times as tensors (by index; those of the step's interval and
        the outputs inside it) that the step's start time, size and interpolation points
        then depend on as in the forward: ``t_i = t_a + c``, a landing step's
        ``h_i = t_b - t_i``, ``θ = (t_k - t_i) / h_i``."""
        t, h, shift = self.times[i], self.steps[i], 0.0
        if t_out is not None:
            start, end = self.interval[i]
            shift = t_out[start] - t_out[start].detach()  # 0, with derivative 1
            t = t + shift
            if i in self.landing:
                h = h + (t_out[end] - t_out[end].detach()) - shift
        k1 = None
        if self.replayed is not None:
            first, rest = self.rows[i]
            RandomStates.set(unpack(self.random, self.replayed, first))
            k1 = self.problem.rhs(t, y)
            self.nfe += 1
            if rest >= 0:
                RandomStates.set(unpack(self.random, self.replayed, rest))
        inside = self.inside.get(i, []) if dense else []
        step = rk_step(self.problem.rhs, t, y, h, self.problem.tableau, k1=k1, dense=bool(inside))
        self.nfe += step.nfe
        outputs = []
        for k in inside:
            offset = self.problem.times[k] - self.times[i]
            if t_out is not None:
                offset = offset + (t_out[k] - t_out[k].detach()) - shift
            outputs.append(dense_output(y, h, step.stages, self.problem.tableau, offset / h))
        return step.y, outputs

    def advance(self, i: int, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.take(i, y)[0]

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
    """Rebuild one step at a time (with the outputs inside it), last first, and
    back-propagate through it."""
    adjoint = grad_ys[-1]
    param_grads: list[Tensor | None] = [None] * len(params)
    want_t = ctx.needs_input_grad[2]
    times = steps.problem.times
    t_grad = grad_ys.new_zeros(len(times), dtype=torch.promote_types(grad_ys.dtype,
                                                                    torch.float32))
    with torch.enable_grad():
        for i, state in _reverse(steps, states, steps.problem.max_checkpoints):
            if i + 1 < len(steps) and i + 1 in steps.stop_after:
                adjoint = adjoint + grad_ys[steps.stop_after[i + 1]]
            y_i = state.detach().requires_grad_()
            inside = steps.inside.get(i, [])
            t_out = {}
            if want_t:
                t_out = {k: state.new_tensor(times[k], requires_grad=True)
                         for k in (*steps.interval[i], *inside)}
            y_next, outputs = steps.take(i, y_i, t_out if want_t else None, dense=True)
            grads = torch.autograd.grad([y_next, *outputs], (y_i, *params, *t_out.values()),
                                        [adjoint, *grad_ys[inside]], allow_unused=True)
            adjoint = grads[0]
            accumulate(param_grads, grads[1:1 + len(params)])
            for k, grad in zip(t_out, grads[1 + len(params):]):
                if grad is not None:
                    t_grad[k] += grad
    adjoint = adjoint + grad_ys[0]
    return [adjoint, t_grad.to(t) if want_t else None, *param_grads]


def _backward_through_chain(ctx, steps: _Steps, grad_ys: Tensor, y0: Tensor, t: Tensor | None,
                            params: list[Tensor]) -> list[Tensor | None]:
    """Higher-order gradients (``create_graph=True``): rebuild the accepted steps (and
    the outputs inside them) as one differentiable chain from ``y0`` so that the
    gradient itself has a graph."""
    want_t = ctx.needs_input_grad[2]
    t_out = dict(enumerate(t.to(y0).unbind())) if want_t else None
    y, outputs = y0, {0: y0}
    for i in range(len(steps)):
        y, inside = steps.take(i, y, t_out, dense=True)
        outputs.update(zip(steps.inside.get(i, []), inside))
        if i + 1 in steps.stop_after:
            outputs[steps.stop_after[i + 1]] = y
    inputs = (y0, t, *params)
    wanted = [x for x, needed in zip(inputs, ctx.needs_input_grad[1:]) if needed]
    ys = torch.stack([outputs[k] for k in range(len(outputs))])
    grads = iter(torch.autograd.grad(ys, wanted, grad_ys, create_graph=True, allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[1:]]


def aca_solve(problem: Problem, y0: Tensor) -> Tensor:
    if problem.per_sample:
        from aca.gradients.aca_samples import aca_per_sample  # it builds on this module
        return aca_per_sample(problem, y0)
    return _ACA.apply(problem, y0, problem.t if problem.t_requires_grad else None,
                      *problem.params)
