"""ACA with per-sample steps (``per_sample=True``).

Forward: solve without a graph, keeping each sample's accepted steps aligned by step
number (``SampleCheckpoints``). Backward: rebuild step ``j`` of every sample as one
batched step (each sample its own ``t_j`` and ``h_j``; a sample with fewer steps takes
a step of size 0, the identity), with the outputs interpolated inside it, last first,
and back-propagate through it. So the backward pass costs as many batched steps as
the sample with the most accepted steps has, whatever the rejections; and the gradient
equals autograd through each sample's accepted steps and interpolants. Output times
enter as in ``aca.gradients.aca``: ``t_j = t_0 + c``, the landing step's
``h = t_end - t_j`` and ``θ = (t_k - t_j) / h``. ``max_checkpoints`` bounds the stored
states (binomial recomputation in between, as for ACA).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aca.gradients.aca import _reverse
from aca.gradients.base import Problem, accumulate, preserved_buffers
from aca.gradients.watch import Watched
from aca.solvers import SampleCheckpoints, rk_step
from aca.solvers.control import column_shape
from aca.solvers.integrate import interpolate_rows


class _SampleSteps:
    """Step ``j`` of every sample, rebuilt as one batched step; counts evaluations."""

    def __init__(self, problem: Problem, cp: SampleCheckpoints) -> None:
        self.problem, self.cp = problem, cp
        self.nfe = 0

    def __len__(self) -> int:
        return len(self.cp.times)

    def take(self, j: int, y: Tensor, times: Tensor | None = None, dense: bool = False
             ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """Step ``j`` from ``y`` (``(B, ...)``) and (``dense``) the outputs interpolated
        inside it: ``(output indices, samples, values)``. ``times``: the ``(B, T)``
        output times in the graph, for their gradients."""
        cp, problem, column = self.cp, self.problem, column_shape(y)
        tau = problem.sample_times if times is None else times
        active = (cp.counts > j).view(column)
        end = tau[:, -1].view(column)
        t = torch.where(active, cp.times[j].view(column), end.detach())
        h = torch.where(active, cp.steps[j].view(column), 0.0)
        if times is not None:  # t_j = t_0 + c and the landing step's h = t_end - t_j
            shift = (tau[:, 0] - tau[:, 0].detach()).view(column)
            t = t + torch.where(active, shift, 0.0)
            landing = (cp.counts == j + 1).view(column)
            h = h + torch.where(landing, (end - end.detach()) - shift, 0.0)
        inside = cp.inside.get(j) if dense else None
        step = rk_step(problem.rhs, t, y, h, problem.tableau, dense=inside is not None)
        self.nfe += step.nfe
        outputs = None
        if inside is not None:
            rows, ks = inside
            values = interpolate_rows(y, t, h, step.stages, problem.tableau, rows, tau[rows, ks])
            outputs = (ks, rows, values)
        return torch.where(active, step.y, y), outputs

    def advance(self, j: int, y: Tensor) -> Tensor:
        with torch.no_grad():
            return self.take(j, y)[0]


class _SampleACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, y0: Tensor, t: Tensor | None, *params: Tensor) -> Tensor:
        func = Watched(problem, y0, unseen=True, random="refuse")
        checkpoints = SampleCheckpoints(problem.max_checkpoints)
        outputs, counts = problem.solve(y0, func=func, checkpoints=checkpoints)
        problem.report_forward(counts)
        func.unreplayed()
        ctx.steps, ctx.stride = _SampleSteps(problem, checkpoints), checkpoints.stride
        ctx.n_params = len(params)
        ctx.save_for_backward(y0, t, *params, checkpoints.states)
        checkpoints.states = None  # the saved tensors alone hold them (and free them)
        return torch.stack(outputs)

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        y0, t, *params, states = ctx.saved_tensors
        steps: _SampleSteps = ctx.steps
        steps.nfe = 0
        problem = steps.problem
        with preserved_buffers(problem.buffers):
            if torch.is_grad_enabled():
                grads = _through_chain(ctx, steps, grad_ys, y0, t, params)
            else:
                kept = {s * ctx.stride: state for s, state in enumerate(states.unbind())}
                grads = _step_by_step(ctx, steps, grad_ys, kept, t, params)
        problem.sinks.add(nfe_backward=steps.nfe)
        return (None, *grads)


def _sample_times(problem: Problem, t: Tensor, like: Tensor) -> Tensor:
    """The output times as a ``(B, T)`` leaf whose gradient is then reduced to ``t``'s shape."""
    return t.detach().to(like).expand_as(problem.sample_times).clone().requires_grad_()


def _to_t(grad: Tensor, t: Tensor) -> Tensor:
    return (grad.sum(0) if t.dim() == 1 else grad).to(t)


def _step_by_step(ctx, steps: _SampleSteps, grad_ys: Tensor, states: dict[int, Tensor],
                  t: Tensor | None, params: list[Tensor]) -> list[Tensor | None]:
    adjoint = grad_ys[-1]
    param_grads: list[Tensor | None] = [None] * len(params)
    want_t = ctx.needs_input_grad[2]
    t_grad = None
    with torch.enable_grad():
        for j, state in _reverse(steps, states, steps.problem.max_checkpoints):
            y_j = state.detach().requires_grad_()
            times = _sample_times(steps.problem, t, y_j) if want_t else None
            y_next, outputs = steps.take(j, y_j, times, dense=True)
            inputs = (y_j, *params, *([times] if want_t else []))
            ends, cotangents = [y_next], [adjoint]
            if outputs is not None:
                ks, rows, values = outputs
                ends.append(values)
                cotangents.append(grad_ys[ks, rows])
            grads = torch.autograd.grad(ends, inputs, cotangents, allow_unused=True)
            adjoint = grads[0]
            accumulate(param_grads, grads[1:1 + len(params)])
            if want_t and grads[-1] is not None:
                t_grad = grads[-1] if t_grad is None else t_grad + grads[-1]
    adjoint = adjoint + grad_ys[0]
    t_out = None
    if want_t:
        t_out = _to_t(t_grad if t_grad is not None else torch.zeros_like(t), t)
    return [adjoint, t_out, *param_grads]


def _through_chain(ctx, steps: _SampleSteps, grad_ys: Tensor, y0: Tensor, t: Tensor | None,
                   params: list[Tensor]) -> list[Tensor | None]:
    """Higher-order gradients (``create_graph=True``): every step rebuilt as one
    differentiable chain from ``y0``."""
    want_t = ctx.needs_input_grad[2]
    times = t.to(y0).expand_as(steps.problem.sample_times) if want_t else None
    y, outputs = y0, y0.new_zeros(grad_ys.shape)
    for j in range(len(steps)):
        y, inside = steps.take(j, y, times, dense=True)
        if inside is not None:
            ks, rows, values = inside
            outputs = outputs.index_put((ks, rows), values)
    ys = torch.cat([y0.unsqueeze(0), outputs[1:-1], y.unsqueeze(0)])
    inputs = (y0, t, *params)
    wanted = [x for x, needed in zip(inputs, ctx.needs_input_grad[1:]) if needed]
    grads = iter(torch.autograd.grad(ys, wanted, grad_ys, create_graph=True,
                                     allow_unused=True))
    return [next(grads) if needed else None for needed in ctx.needs_input_grad[1:]]


def aca_per_sample(problem: Problem, y0: Tensor) -> Tensor:
    return _SampleACA.apply(problem, y0, problem.t if problem.t_requires_grad else None,
                            *problem.params)
