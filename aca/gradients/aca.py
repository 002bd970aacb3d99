"""Adaptive checkpoint adjoint (Zhuang et al. 2020).

Forward: solve without a graph, keep the accepted steps ``(t_i, h_i, y_i)``.
Backward: walk the accepted steps in reverse, rebuild each one with its graph
(``h_i`` a constant) and back-propagate through it. The gradient equals autograd
through the accepted discrete steps; memory is the checkpoints plus one step's
graph. With ``max_checkpoints=K`` only about K states are kept and the rest are
recomputed from the nearest one, block by block: same gradient, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from aca.gradients.base import Problem, accumulate, preserved_buffers
from aca.solvers import Checkpoints, rk_step


def _states_in_reverse(problem: Problem, cp: Checkpoints) -> Iterator[tuple[int, Tensor, int]]:
    """Yield ``(i, y_i, nfe spent recomputing)`` for every accepted step, last first,
    recomputing the states between kept checkpoints one block at a time."""
    n_steps = len(cp.times)
    for start in sorted(cp.states, reverse=True):
        block = [cp.states[start]]
        nfe = 0
        with torch.no_grad():
            for i in range(start, min(start + cp.stride, n_steps) - 1):
                step = rk_step(problem.rhs, cp.times[i], block[-1], cp.steps[i], problem.tableau)
                block.append(step.y)
                nfe += step.nfe
        for i in reversed(range(start, start + len(block))):
            yield i, block[i - start], nfe
            nfe = 0


class _ACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, y0: Tensor, *params: Tensor) -> Tensor:
        checkpoints = Checkpoints(problem.max_checkpoints)
        outputs, counts = problem.solve(y0, checkpoints=checkpoints)
        problem.report_forward(counts)
        ctx.problem, ctx.checkpoints = problem, checkpoints
        ctx.save_for_backward(y0)
        return torch.stack(outputs)

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        problem, cp = ctx.problem, ctx.checkpoints
        params = problem.params
        if torch.is_grad_enabled():
            grads = _backward_through_chain(ctx, grad_ys, params)
            return (None, *grads)
        # output k (k >= 1) is the state after segment_ends[k - 1] steps
        outputs_at = {end: k + 1 for k, end in enumerate(cp.segment_ends[:-1])}
        adjoint = grad_ys[-1]
        param_grads: list[Tensor | None] = [None] * len(params)
        nfe = 0
        with preserved_buffers(problem.buffers), torch.enable_grad():
            for i, state, recompute_nfe in _states_in_reverse(problem, cp):
                if i + 1 in outputs_at:
                    adjoint = adjoint + grad_ys[outputs_at[i + 1]]
                y_i = state.detach().requires_grad_()
                step = rk_step(problem.rhs, cp.times[i], y_i, cp.steps[i], problem.tableau)
                grads = torch.autograd.grad(step.y, (y_i, *params), adjoint, allow_unused=True)
                adjoint = grads[0]
                accumulate(param_grads, grads[1:])
                nfe += step.nfe + recompute_nfe
        problem.sinks.add(nfe_backward=nfe)
        adjoint = adjoint + grad_ys[0]
        return (None, adjoint, *param_grads)


def _backward_through_chain(ctx, grad_ys: Tensor, params: list[Tensor]) -> list[Tensor | None]:
    """Higher-order gradients (``create_graph=True``): rebuild the accepted steps as
    one differentiable chain from ``y0`` so that the gradient itself has a graph."""
    problem, cp = ctx.problem, ctx.checkpoints
    (y0,) = ctx.saved_tensors
    output_ends = set(cp.segment_ends)
    y, outputs, nfe = y0, [y0], 0
    for i, (t, h) in enumerate(zip(cp.times, cp.steps)):
        step = rk_step(problem.rhs, t, y, h, problem.tableau)
        y, nfe = step.y, nfe + step.nfe
        if i + 1 in output_ends:
            outputs.append(y)
    problem.sinks.add(nfe_backward=nfe)
    wanted = [x for x, needed in zip((y0, *params), ctx.needs_input_grad[1:]) if needed]
    grads = iter(torch.autograd.grad(torch.stack(outputs), wanted, grad_ys, create_graph=True,
                                     allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[1:]]


def aca_solve(problem: Problem, y0: Tensor) -> Tensor:
    return _ACA.apply(problem, y0, *problem.params)
