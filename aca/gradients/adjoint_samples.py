"""The continuous adjoint with per-sample steps (``per_sample=True``).

Backward solves each sample's state and adjoint together, output interval by output
interval from its last time to its first, with its own step sizes, accept/reject
decisions and error norm (the larger RMS of its state and its adjoint). The parameter
gradient is summed over the batch, so no sample has its own to put in its state or its
norm (the norm is the seminorm of ``adjoint_seminorm``): it is a quadrature along every
sample's accepted reverse steps instead. After each attempt, the stages of the samples
it accepts are evaluated again with a graph, and one vector-Jacobian product whose
cotangent weights sample ``b``'s stage ``i`` by ``-h_b b_i`` adds
``-Σ_b h_b Σ_i b_i a_{b,i}ᵀ ∂f/∂θ (t_{b,i}, y_{b,i})``: the Runge–Kutta update the
shared adjoint applies to the parameter part of its state, one sample at a time.
So a sample's gradient does not depend on the rest of its batch, as with ACA; the
reverse solve still does not retrace the forward one (the adjoint's error).

Output times get the continuous gradients, per sample: ``dL/dt_{b,k} =
<dL/dy_b(t_{b,k}), f(t_{b,k}, y_b(t_{b,k}))>`` for k >= 1 and ``dL/dt_{b,0} =
-<a_b(t_{b,0}), f(t_{b,0}, y_b(t_{b,0}))>``; a shared ``(T,)`` ``t`` gets their sum.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aca.gradients.adjoint import _Adjoint, refuse_create_graph
from aca.gradients.base import Problem, accumulate, preserved_buffers
from aca.gradients.watch import unreplayable_random
from aca.solvers import integrate_per_sample
from aca.solvers.control import column_shape, sample_rms_norm
from aca.solvers.step import Step, advance


def _state_and_adjoint_norm(z: Tensor) -> Tensor:
    """Each sample's larger RMS of its state ``z[:, 0]`` and adjoint ``z[:, 1]``."""
    return torch.maximum(sample_rms_norm(z[:, 0]), sample_rms_norm(z[:, 1])).unsqueeze(1)


class _ReverseSolve:
    """The augmented dynamics ``(f, -aᵀ ∂f/∂y)`` of every sample and the parameter
    quadrature over the accepted reverse steps; counts batched evaluations."""

    def __init__(self, problem: Problem, state_dtype: torch.dtype, params: list[Tensor]) -> None:
        self.problem, self.state_dtype, self.params = problem, state_dtype, params
        self.param_grads: list[Tensor | None] = [None] * len(params)
        self.nfe = 0

    def dynamics(self, t: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        y, adjoint = z[:, 0].to(self.state_dtype), z[:, 1].to(self.state_dtype)
        with torch.enable_grad():
            y = y.detach().requires_grad_()
            f = self.problem.rhs(t, y)
            (vjp,) = (torch.autograd.grad(f, y, adjoint, allow_unused=True)
                      if f.requires_grad else (None,))
        back = torch.zeros_like(z[:, 1]) if vjp is None else vjp.to(z.dtype).neg()
        return torch.stack([f.to(z.dtype), back], dim=1)

    def quadrature(self, t: Tensor, z: Tensor, h: Tensor, step: Step, accept: Tensor) -> None:
        """Add the accepted samples' parameter increments of this attempt."""
        if not self.params or not bool(accept.any()):
            return
        tableau = self.problem.tableau
        weight = (-h * accept)[:, 0]  # (B, 1, ...) against a sample's state
        total = z.new_zeros(())
        with torch.enable_grad():
            for i in range(tableau.solution_stages):
                if tableau.b[i] == 0.0:
                    continue
                stage = z if i == 0 else advance(z, h, tableau.a[i], step.stages)
                y = stage[:, 0].to(self.state_dtype)
                f = self.problem.rhs(t + tableau.c[i] * h, y)
                self.nfe += 1
                total = total + (f * (tableau.b[i] * weight * stage[:, 1]).to(f.dtype)).sum()
            if total.requires_grad:
                accumulate(self.param_grads,
                           torch.autograd.grad(total, self.params, allow_unused=True))


class _SampleAdjoint(_Adjoint):
    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        refuse_create_graph()
        problem = ctx.problem
        ys, *params = ctx.saved_tensors
        # the augmented state in at least float32 (as the shared adjoint)
        dtype = torch.promote_types(ys.dtype, torch.float32)
        times = problem.sample_times.to(dtype)
        reverse = _ReverseSolve(problem, ys.dtype, params)
        want_t = ctx.needs_input_grad[2]
        t_grad = torch.zeros_like(times)
        before = ctx.generators.get()
        adjoint = grad_ys[-1].to(dtype)
        with preserved_buffers(problem.buffers), torch.no_grad():
            for k in range(times.shape[1] - 1, 0, -1):
                if want_t:
                    t_grad[:, k] = _dots(grad_ys[k], _rhs_at(problem, times[:, k], ys[k]))
                    reverse.nfe += 1
                z = torch.stack([ys[k].to(dtype), adjoint], dim=1)
                outputs, _ = integrate_per_sample(
                    reverse.dynamics, z, times[:, [k, k - 1]], problem.tableau,
                    problem.sample_controller(_state_and_adjoint_norm), problem.options.max_steps,
                    on_attempt=reverse.quadrature)
                adjoint = outputs[-1][:, 1]
                if want_t and k == 1:
                    t_grad[:, 0] = -_dots(adjoint, _rhs_at(problem, times[:, 0], ys[0]))
                    reverse.nfe += 1
                adjoint = adjoint + grad_ys[k - 1]
        if ctx.generators.moved(before):
            raise unreplayable_random(adjoint=True, per_sample=True)
        problem.sinks.add(nfe_backward=reverse.nfe)
        grads = [torch.zeros_like(p) if g is None else g.to(p.dtype)
                 for g, p in zip(reverse.param_grads, params)]
        t_out = None
        if want_t:
            t_out = (t_grad.sum(0) if problem.t.dim() == 1 else t_grad).to(problem.t)
        return (None, adjoint.to(ys.dtype), t_out, *grads)


def _rhs_at(problem: Problem, t: Tensor, y: Tensor) -> Tensor:
    """``f`` of every sample at its own time ``t[b]``."""
    return problem.rhs(t.view(column_shape(y)).to(y.dtype), y)


def _dots(a: Tensor, b: Tensor) -> Tensor:
    """``<a_b, b_b>`` for every sample, at least in float32."""
    return (a.to(torch.promote_types(a.dtype, torch.float32)) * b).reshape(len(a), -1).sum(1)


def adjoint_per_sample(problem: Problem, y0: Tensor) -> Tensor:
    return _SampleAdjoint.apply(problem, y0, problem.t if problem.t_requires_grad else None,
                                *problem.params)
