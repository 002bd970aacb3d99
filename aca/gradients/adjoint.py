"""Continuous adjoint (Chen et al. 2018): integrate state, adjoint and parameter
gradient backwards in time with the same method and tolerances, keeping nothing
of the forward trajectory but the outputs. Memory is constant in the number of
steps, but the reverse solve does not retrace the forward one, so the gradient is
only as good as that reconstruction (the error ACA removes).

Output times get the continuous gradients: ``dL/dt_k = <dL/dy(t_k), f(t_k, y(t_k))>``
for k >= 1 and ``dL/dt_0 = -<a(t_0), f(t_0, y_0)>`` with ``a(t_0)`` the adjoint
reaching ``t_0`` (before the loss on ``y(t_0) = y_0``, which does not depend on it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aca.errors import ODEError
from aca.gradients.base import Problem, preserved_buffers
from aca.gradients.watch import Watched, unreplayable_random
from aca.solvers import rms_norm


def _mixed_norm(sizes: list[int], seminorm: bool = False):
    """Largest RMS norm among the parts (state, adjoint, each parameter), as
    torchdiffeq's adjoint does, so that a part with many entries cannot hide the
    error of a small one; the seminorm leaves out the parameter gradients (the
    parts after the first two), which never feed back into the dynamics."""
    kept = len(sizes) if not seminorm else 2

    def norm(z: Tensor) -> Tensor:
        parts = z.split(sizes)[:kept]
        return torch.stack([rms_norm(part) for part in parts if part.numel()]).max()
    return norm


def refuse_create_graph() -> None:
    """The reverse solve is not differentiable: refuse ``create_graph=True``."""
    if torch.is_grad_enabled():
        raise ODEError("higher-order gradients (create_graph=True) are not supported with "
                       "gradient='adjoint'; use gradient='aca' or 'naive'")


class _Adjoint(torch.autograd.Function):
    """Forward: solve without a graph and keep the outputs (the per-sample adjoint
    shares it); backward: the adjoint ODE backwards, output interval by interval."""

    @staticmethod
    def forward(ctx, problem: Problem, y0: Tensor, t: Tensor | None, *params: Tensor) -> Tensor:
        func = Watched(problem, y0, unseen=True, random="refuse")
        outputs, counts = problem.solve(y0, func=func)
        problem.report_forward(counts)
        ys = torch.stack(outputs)
        ctx.problem, ctx.generators = problem, func.unreplayed()
        ctx.save_for_backward(ys, *params)  # params too: in-place edits are noticed
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        refuse_create_graph()
        problem = ctx.problem
        ys, *params = ctx.saved_tensors
        shape, n = ys.shape[1:], ys[0].numel()
        # the augmented state in at least float32: half-precision states are solved
        # forward in their own dtype, their adjoint and parameter gradients are not
        dtype = torch.promote_types(ys.dtype, torch.float32)
        sizes = [n, n] + [p.numel() for p in params]
        nfe = 0

        def augmented(t: float, z: Tensor) -> Tensor:
            nonlocal nfe
            nfe += 1
            y, adjoint = z[:n].view(shape).to(ys.dtype), z[n:2 * n].view(shape).to(ys.dtype)
            with torch.enable_grad():
                y = y.detach().requires_grad_()
                f = problem.rhs(t, y)
                vjps = (torch.autograd.grad(f, (y, *params), adjoint, allow_unused=True)
                        if f.requires_grad else [None] * (1 + len(params)))
            parts = [f.reshape(-1).to(dtype)]
            parts += [z.new_zeros(size) if g is None else g.reshape(-1).to(dtype).neg()
                      for size, g in zip(sizes[1:], vjps)]
            return torch.cat(parts)

        before = ctx.generators.get()
        adjoint = grad_ys[-1].to(dtype)
        param_grads = ys.new_zeros(sum(sizes[2:]), dtype=dtype)
        norm = _mixed_norm(sizes, problem.options.adjoint_seminorm)
        want_t = ctx.needs_input_grad[2]
        t_grad = ys.new_zeros(len(problem.times), dtype=dtype)
        with preserved_buffers(problem.buffers), torch.no_grad():
            for k in range(len(problem.times) - 1, 0, -1):
                if want_t:
                    t_grad[k] = _dot(grad_ys[k], problem.rhs(problem.times[k], ys[k]))
                    nfe += 1
                z = torch.cat([ys[k].reshape(-1).to(dtype), adjoint.reshape(-1), param_grads])
                outputs, _ = problem.solve(z, func=augmented, norm=norm,
                                           times=[problem.times[k], problem.times[k - 1]])
                z = outputs[-1]
                adjoint = z[n:2 * n].view(shape)
                if want_t and k == 1:
                    t_grad[0] = -_dot(adjoint, problem.rhs(problem.times[0], ys[0]))
                    nfe += 1
                adjoint = adjoint + grad_ys[k - 1]
                param_grads = z[2 * n:]
        if ctx.generators.moved(before):
            raise unreplayable_random(adjoint=True)
        problem.sinks.add(nfe_backward=nfe)
        grads = [g.view_as(p).to(p.dtype) for g, p in zip(param_grads.split(sizes[2:]), params)]
        t_input = problem.t
        return (None, adjoint.to(ys.dtype), t_grad.to(t_input) if want_t else None, *grads)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a.to(torch.promote_types(a.dtype, torch.float32)) * b).sum()


def adjoint_solve(problem: Problem, y0: Tensor) -> Tensor:
    if problem.per_sample:
        from aca.gradients.adjoint_samples import adjoint_per_sample  # it builds on this module
        return adjoint_per_sample(problem, y0)
    return _Adjoint.apply(problem, y0, problem.t if problem.t_requires_grad else None,
                          *problem.params)
