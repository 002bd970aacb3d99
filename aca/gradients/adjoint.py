"""Continuous adjoint (Chen et al. 2018): integrate state, adjoint and parameter
gradient backwards in time, keeping nothing of the forward trajectory but the
outputs. Memory is constant in the number of steps, but the reverse solve does not
retrace the forward one, so the gradient is only as good as that reconstruction (the
error ACA removes).

Shared steps (one group): the augmented state ``[y, a, ∂L/∂θ]`` is solved as one
vector, its error norm the largest RMS of its parts, as torchdiffeq's (the seminorm
leaves the parameter gradients out: Kidger et al. 2021). Per-sample steps: each
sample's ``[y_b, a_b]`` with its own steps and norm; the parameter gradient, summed
over the batch, is a quadrature along every sample's accepted reverse steps instead
(after each attempt one vector-Jacobian product whose cotangent weights sample ``b``'s
stage ``i`` by ``-h_b b_i``: the Runge–Kutta update of the parameter part, one sample
at a time), so a sample's gradient does not depend on its batch.

An implicit reverse method (kvaerno3/5) solves its stages by Newton on the augmented
system, whose Jacobian the dynamics give by differentiating their own vector-Jacobian
products (second derivatives of func). On a stiff problem that does not help: ``y`` is
reconstructed backwards in time, where its fast decaying modes grow, and the solve fails
(an ``ODEError``); ACA never solves ``y`` backwards.

Output times get the continuous gradients: ``dL/dt_k = <dL/dy(t_k), f(t_k, y(t_k))>``
for k >= 1 and ``dL/dt_0 = -<a(t_0), f(t_0, y_0)>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from aca.errors import InvalidOptionError, ODEError, StepSizeRequiredError, UnknownSolverError
from aca.gradients.base import (
    GradientMethod,
    Problem,
    accumulate,
    autocast_as,
    preserved_buffers,
)
from aca.gradients.watch import Watched, refuse_unseen, unreplayable_random
from aca.solvers import SOLVERS, rms_norm
from aca.solvers.integrate import column_shape
from aca.solvers.step import Step, combine

if TYPE_CHECKING:
    from aca.options import SolveOptions

#: ``norm(y, adjoint, parameter gradients) -> scalar``: the reverse solve's error norm
AugmentedNorm = Callable[[Tensor, Tensor, list[Tensor]], Tensor]


def refuse_create_graph() -> None:
    """The reverse solve is not differentiable: refuse ``create_graph=True``."""
    if torch.is_grad_enabled():
        raise ODEError("higher-order gradients (create_graph=True) are not supported with "
                       "gradient='adjoint'; use gradient='aca' or 'naive'")


class _Reverse:
    """The augmented dynamics ``(f, -aᵀ ∂f/∂y[, -aᵀ ∂f/∂θ])`` and, per sample, the
    parameter quadrature over the accepted reverse steps; counts batched evaluations."""

    def __init__(self, problem: Problem, method: Adjoint, ys: Tensor, params: list[Tensor]
                 ) -> None:
        self.problem, self.shape, self.params = problem, ys.shape[1:], params
        self.state_dtype = ys.dtype
        # the augmented state in at least float32: half-precision states are solved
        # forward in their own dtype, their adjoint and parameter gradients are not
        self.dtype = torch.promote_types(ys.dtype, torch.float32)
        self.tableau = SOLVERS[method.solver] if method.solver else problem.tableau
        self.shared = not problem.per_sample
        self.sizes = [self.shape.numel()] * 2 + ([p.numel() for p in params] if self.shared else [])
        self.param_grads: list[Tensor | None] = [None] * len(params)
        self.nfe = self.jacobians = 0

    def split(self, z: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``z``'s state, adjoint and (shared) parameter gradients."""
        if not self.shared:
            return z[:, 0], z[:, 1], []
        y, adjoint, *grads = z.split(self.sizes)
        return y.view(self.shape), adjoint.view(self.shape), grads

    def join(self, y: Tensor, adjoint: Tensor, grads: list[Tensor]) -> Tensor:
        if not self.shared:
            return torch.stack([y.to(self.dtype), adjoint.to(self.dtype)], dim=1)
        return torch.cat([y.reshape(-1).to(self.dtype), adjoint.reshape(-1).to(self.dtype),
                          *(g.reshape(-1).to(self.dtype) for g in grads)])

    def dynamics(self, t: Tensor, z: Tensor) -> Tensor:
        """The augmented right-hand side; differentiable in ``z`` when ``z`` requires grad
        (an implicit reverse solver forming its Jacobian: second derivatives of func)."""
        differentiable = z.requires_grad
        self.nfe += 1
        self.jacobians += differentiable
        y, adjoint, _ = self.split(z)
        wrt = self.params if self.shared else []
        with torch.enable_grad():
            y = y.to(self.state_dtype)
            if not differentiable:
                y = y.detach().requires_grad_()
            f = self.problem.rhs(t, y)
            if self.problem.closure and not differentiable:  # a tensor first reached
                refuse_unseen([f], self.params, y)            # after the first evaluation
            # retain: a tensor func closes over may share graph with the parameters (W = 2p)
            vjps = (torch.autograd.grad(f, (y, *wrt), adjoint.to(f.dtype), allow_unused=True,
                                        retain_graph=True, create_graph=differentiable)
                    if f.requires_grad else [None] * (1 + len(wrt)))
        back = [torch.zeros_like(p) if g is None else -g for g, p in zip(vjps, [y, *wrt])]
        return self.join(f, back[0], back[1:])

    def quadrature(self, t: Tensor, z: Tensor, h: Tensor, step: Step, accept: Tensor) -> None:
        """Per sample: add the accepted samples' parameter increments of this attempt."""
        if not self.params or not bool(accept.any()):
            return
        tableau = self.tableau
        weight = (-h * accept).to(z.dtype)[:, 0]  # (B, 1, ...) against a sample's state
        total = z.new_zeros(())
        with torch.enable_grad():
            for i in range(tableau.solution_stages):
                if tableau.b[i] == 0.0:
                    continue
                row = (*tableau.a[i], *tableau.diagonal[i:i + 1])  # an implicit stage's own γ
                stage = (torch.addcmul(z, combine(row, step.stages), h.to(z.dtype)) if any(row)
                         else z)
                f = self.problem.rhs(torch.add(t, h, alpha=tableau.c[i]),
                                     stage[:, 0].to(self.state_dtype))
                self.nfe += 1
                total = total + (f * (tableau.b[i] * weight * stage[:, 1]).to(f.dtype)).sum()
            if total.requires_grad:
                accumulate(self.param_grads, torch.autograd.grad(
                    total, self.params, allow_unused=True, retain_graph=True))

    def norm(self, method: Adjoint) -> Callable[[Tensor, int], Tensor]:
        """The reverse solve's error norm: each group's largest RMS of its parts (the
        seminorm without the parameter gradients), or the method's own."""
        def norm(z: Tensor, groups: int) -> Tensor:
            y, adjoint, grads = self.split(z)
            if method.norm is not None:
                return torch.as_tensor(method.norm(y, adjoint, grads)).to(z.dtype).reshape(1)
            parts = [rms_norm(y, groups), rms_norm(adjoint, groups)]
            if not method.seminorm:
                parts += [rms_norm(g, 1) for g in grads if g.numel()]
            return torch.stack(parts).amax(0)
        return norm


class _Adjoint(torch.autograd.Function):
    """Forward: solve without a graph and keep the outputs; backward: the adjoint ODE
    backwards, output interval by output interval."""

    @staticmethod
    def forward(ctx, problem: Problem, method: Adjoint, y0: Tensor, t: Tensor | None,
                *params: Tensor) -> Tensor:
        func = Watched(problem, y0, unseen=True, random="refuse")
        versions = [buffer._version for buffer in problem.buffers]
        solution = problem.solve(y0, func=func)
        problem.refuse_changed_buffers(versions)
        problem.report_forward(solution)
        ctx.problem, ctx.method, ctx.generators = problem, method, func.unreplayed()
        ctx.save_for_backward(solution.ys, *params)  # params too: in-place edits are noticed
        return solution.ys

    @staticmethod
    def backward(ctx, grad_ys: Tensor) -> tuple[Tensor | None, ...]:
        refuse_create_graph()
        problem, method = ctx.problem, ctx.method
        ys, *params = ctx.saved_tensors
        groups, times = problem.groups, problem.times
        reverse = _Reverse(problem, method, ys, params)
        controller = problem.controller(reverse.norm(method), rtol=method.rtol,
                                        atol=method.atol, step_size=method.step_size,
                                        tableau=reverse.tableau, wrap=method.wrap)
        # an implicit reverse method's stages: Newton at the reverse solve's tolerances
        newton = replace(problem.newton, unrolled=False,
                         rtol=problem.options.rtol if method.rtol is None else method.rtol,
                         atol=problem.options.atol if method.atol is None else method.atol)
        want_t = ctx.needs_input_grad[3]
        t_grad = torch.zeros_like(times)
        before = ctx.generators.get()
        adjoint = grad_ys[-1]
        grads = [torch.zeros_like(p, dtype=reverse.dtype) for p in params] if reverse.shared else []
        try:  # the work done counts, also when the reverse solve fails
            with preserved_buffers(problem.buffers), torch.no_grad(), autocast_as(problem):
                for k in range(times.shape[1] - 1, 0, -1):
                    if want_t:
                        t_grad[:, k] = _dots(grad_ys[k], _rhs_at(problem, times[:, k], ys[k]),
                                             groups)
                        reverse.nfe += 1
                    z = reverse.join(ys[k], adjoint, grads)
                    solution = problem.solve(
                        z, func=reverse.dynamics, times=times[:, [k, k - 1]],
                        controller=controller, tableau=reverse.tableau,
                        on_attempt=None if reverse.shared else reverse.quadrature,
                        interpolate=True, newton=newton)
                    _, adjoint, grads = reverse.split(solution.ys[-1])
                    if want_t and k == 1:
                        t_grad[:, 0] = -_dots(adjoint, _rhs_at(problem, times[:, 0], ys[0]),
                                              groups)
                        reverse.nfe += 1
                    adjoint = adjoint + grad_ys[k - 1]
        finally:
            problem.sinks.add(nfe_backward=reverse.nfe, jacobians=reverse.jacobians)
        if ctx.generators.moved(before):
            raise unreplayable_random(adjoint=True, per_sample=not reverse.shared)
        if not reverse.shared:
            grads = reverse.param_grads
        param_grads = [torch.zeros_like(p) if g is None else g.view_as(p).to(p.dtype)
                       for g, p in zip(grads, params)]
        t_out = None
        if want_t:
            t_out = (t_grad.sum(0) if problem.t.dim() == 1 else t_grad).to(problem.t)
        return (None, None, adjoint.to(ys.dtype), t_out, *param_grads)


def _rhs_at(problem: Problem, t: Tensor, y: Tensor) -> Tensor:
    """``f`` of every group at its own time ``t[b]``."""
    return problem.rhs(t.view(column_shape(y, problem.groups)), y)


def _dots(a: Tensor, b: Tensor, groups: int) -> Tensor:
    """``<a_b, b_b>`` for every group, at least in float32."""
    return (a.to(torch.promote_types(a.dtype, torch.float32)) * b).reshape(groups, -1).sum(1)


@dataclass(frozen=True)
class Adjoint(GradientMethod):
    """The continuous adjoint. ``rtol``/``atol``/``solver``/``step_size``: the reverse
    solve's (default: the forward's); ``seminorm``: its error norm leaves the parameter
    gradients out (fewer backward steps; per-sample steps always do); ``norm``: its own
    error norm ``norm(y, adjoint, parameter gradients)`` (shared steps); ``wrap``: what
    wraps its controller (``aca.solvers.wrappers``)."""

    rtol: float | None = None
    atol: float | None = None
    seminorm: bool = False
    solver: str | None = None
    step_size: float | None = None
    norm: AugmentedNorm | None = None
    wrap: Callable | None = None
    name = "adjoint"

    @classmethod
    def from_options(cls, options: SolveOptions) -> Adjoint:
        return cls(seminorm=options.adjoint_seminorm)

    def __post_init__(self) -> None:
        if self.solver is not None and self.solver not in SOLVERS:
            raise UnknownSolverError(f"Adjoint(solver={self.solver!r}): unknown solver; "
                                     f"choose one of: {', '.join(SOLVERS)}")

    def solve(self, problem: Problem, y0: Tensor) -> Tensor:
        reverse = SOLVERS[self.solver] if self.solver else problem.tableau
        if not reverse.adaptive and self.step_size is None and problem.options.step_size is None:
            raise StepSizeRequiredError(
                f"Adjoint(solver={reverse.name!r}) is fixed-step and the forward solve is "
                "adaptive: give the reverse solve's grid, Adjoint(step_size=<h>)")
        if reverse.implicit:  # refused before the forward solve, not after it
            size = 2 * y0[0].numel() if problem.per_sample else (
                2 * y0.numel() + sum(p.numel() for p in problem.params))
            if size > problem.newton.max_size:
                raise InvalidOptionError(
                    f"the adjoint's implicit reverse solve ({reverse.name}) needs a dense "
                    f"{size}x{size} Jacobian of its augmented state [y, adjoint"
                    f"{'' if problem.per_sample else ', parameter gradients'}] (over "
                    f"{problem.newton.max_size} values): use gradient='aca', an explicit "
                    "reverse solver (aca.Adjoint(solver='dopri5'))"
                    + ("" if problem.per_sample else ", or per_sample=True (the parameters "
                       "then go by quadrature)"))
        return _Adjoint.apply(problem, self, y0, problem.t if problem.t_requires_grad else None,
                              *problem.params)
