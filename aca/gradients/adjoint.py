"""Continuous adjoint (Chen et al. 2018): integrate state, adjoint and parameter
gradient backwards in time with the same method and tolerances, keeping nothing
of the forward trajectory but the outputs. Memory is constant in the number of
steps, but the reverse solve does not retrace the forward one, so the gradient is
only as good as that reconstruction (the error ACA removes)."""

from __future__ import annotations

import torch
from torch import Tensor

from aca.errors import ODEError
from aca.gradients.base import Problem, preserved_buffers
from aca.solvers import rms_norm


def _mixed_norm(sizes: list[int]):
    """Largest RMS norm among the parts (state, adjoint, each parameter), as
    torchdiffeq's adjoint does, so that a part with many entries cannot hide the
    error of a small one."""
    def norm(z: Tensor) -> Tensor:
        return torch.stack([rms_norm(part) for part in z.split(sizes) if part.numel()]).max()
    return norm


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Problem, y0: Tensor, *params: Tensor) -> Tensor:
        outputs, counts = problem.solve(y0)
        problem.report_forward(counts)
        ys = torch.stack(outputs)
        ctx.problem = problem
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise ODEError("higher-order gradients (create_graph=True) are not supported with "
                           "gradient='adjoint'; use gradient='aca' or 'naive'")
        problem = ctx.problem
        (ys,) = ctx.saved_tensors
        params = problem.params
        shape, n = ys.shape[1:], ys[0].numel()
        sizes = [n, n] + [p.numel() for p in params]
        nfe = 0

        def augmented(t: float, z: Tensor) -> Tensor:
            nonlocal nfe
            nfe += 1
            y, adjoint = z[:n].view(shape), z[n:2 * n].view(shape)
            with torch.enable_grad():
                y = y.detach().requires_grad_()
                f = problem.rhs(t, y)
                vjps = torch.autograd.grad(f, (y, *params), adjoint, allow_unused=True)
            parts = [f.reshape(-1), vjps[0].reshape(-1).neg()]
            parts += [z.new_zeros(p.numel()) if g is None else g.reshape(-1).to(z.dtype).neg()
                      for p, g in zip(params, vjps[1:])]
            return torch.cat(parts)

        adjoint = grad_ys[-1]
        param_grads = ys.new_zeros(sum(sizes[2:]))
        norm = _mixed_norm(sizes)
        with preserved_buffers(problem.buffers):
            for k in range(len(problem.times) - 1, 0, -1):
                z = torch.cat([ys[k].reshape(-1), adjoint.reshape(-1), param_grads])
                outputs, _ = problem.solve(z, func=augmented, norm=norm,
                                           times=[problem.times[k], problem.times[k - 1]])
                z = outputs[-1]
                adjoint = z[n:2 * n].view(shape) + grad_ys[k - 1]
                param_grads = z[2 * n:]
        problem.sinks.add(nfe_backward=nfe)
        grads = [g.view_as(p).to(p.dtype) for g, p in zip(param_grads.split(sizes[2:]), params)]
        return (None, adjoint, *grads)


def adjoint_solve(problem: Problem, y0: Tensor) -> Tensor:
    return _Adjoint.apply(problem, y0, *problem.params)
