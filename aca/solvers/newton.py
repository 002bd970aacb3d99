"""Newton's method for the stages of a diagonally implicit Runge–Kutta step, and their
derivatives by the implicit function theorem.

A stage ``z`` solves ``F(z) = z - base - hγ f(t_i, z) = 0``. Each group (the whole state,
or one sample with ``per_sample=True``) gets its own dense Jacobian of ``f`` at the
step's start (one evaluation and ``N`` vector-Jacobian products for ``N`` values per
group; with ``per_sample=True`` samples must not interact), and ``I - hγ J`` is
factorised once per step for all its stages (a simplified Newton iteration). A group
stops iterating once its scaled update is below ``tol``, or below the residual's rounding
where the tolerance is finer than the dtype resolves (each group's stage is then its
own: what other groups of the batch do does not change it, so ACA's rebuild of one step
reproduces the forward's stages exactly).

Gradients: ``unrolled`` (naive) differentiates through the iterations. Otherwise the
converged stage ``z*`` enters the graph as ``z* + δ - δ.detach()`` with
``δ = -(I - hγ J(z*))⁻¹ F(z*)``: its value is ``z*`` exactly, its derivative the implicit
function theorem's ``-(∂F/∂z)⁻¹ ∂F/∂θ`` (one transposed solve in backward), not the
iterations'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from aca.errors import InvalidOptionError

Func = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Newton:
    """How stages are solved: the solve's ``rtol``/``atol`` scale the update, which must
    fall below ``tol`` within ``max_iterations``; ``unrolled``: autograd through the
    iterations (gradient="naive"). ``max_size``: the largest group for a dense Jacobian."""

    rtol: float
    atol: float
    tol: float = 1e-3
    max_iterations: int = 10
    unrolled: bool = False
    max_size: int = 2048


def jacobian(func: Func, t: Tensor, y: Tensor, groups: int) -> Tensor:
    """``∂f/∂y`` at ``(t, y)`` for each group, ``(G, N, N)``, out of the autograd graph:
    row ``j`` of every group's block from one vector-Jacobian product."""
    size = y.numel() // groups
    with torch.enable_grad():
        x = y.detach().requires_grad_()
        out = func(t.detach(), x)
    if not out.requires_grad:  # f does not depend on y
        return torch.zeros(groups, size, size, dtype=out.dtype, device=out.device)
    if groups > 1:  # per sample: the blocks below are the Jacobian only if samples are apart
        first = torch.zeros(groups, size, dtype=out.dtype, device=out.device)
        first[0] = 1.0
        (reach,) = torch.autograd.grad(out, x, first.view_as(out), retain_graph=True,
                                       allow_unused=True)
        if reach is not None and bool(reach.reshape(groups, size)[1:].ne(0).any()):
            raise InvalidOptionError(
                "func mixes samples (sample 0's derivative depends on other samples' states: "
                "batch norm, attention across the batch?): an implicit solver with "
                "per_sample=True needs independent samples; use per_sample=False")
    rows = []
    for j in range(size):
        cotangent = torch.zeros(groups, size, dtype=out.dtype, device=out.device)
        cotangent[:, j] = 1.0
        (row,) = torch.autograd.grad(out, x, cotangent.view_as(out), retain_graph=j < size - 1,
                                     allow_unused=True)
        rows.append(torch.zeros_like(x) if row is None else row)
    return torch.stack([row.reshape(groups, size) for row in rows], 1)


def iteration_matrix(jac: Tensor, hg: Tensor) -> Tensor:
    """``I - hγ J`` for each group (``hg``: one value per group)."""
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    return eye - hg.detach().reshape(-1, 1, 1).to(jac.dtype) * jac


def check_size(y: Tensor, groups: int, newton: Newton) -> None:
    size = y.numel() // groups
    if size > newton.max_size:
        raise InvalidOptionError(
            f"an implicit solver needs a dense {size}x{size} Jacobian per group here (over "
            f"{newton.max_size} values per group): use per_sample=True when samples do not "
            "interact, or an explicit solver")


def solve_stage(func: Func, t: Tensor, base: Tensor, hg: Tensor, guess: Tensor,
                factors: tuple[Tensor, Tensor], newton: Newton, groups: int
                ) -> tuple[Tensor, int, Tensor]:
    """The stage ``z = base + hγ f(t, z)`` from ``guess``: ``(z, evaluations, converged)``
    with ``converged`` one flag per group. Sizes are RMS over
    ``max(atol + rtol·|z|, rounding)``; a group converged once its update is within
    ``tol``, and fails if an update does not shrink. ``rounding`` is the residual
    ``z - base - hγf``'s, 8 ulps of ``|z| + |base|`` over ``tol``: it keeps a tolerance
    finer than the dtype resolves (float32 at rtol 1e-6) from failing every step."""
    shape, columns = base.shape, (groups, -1, 1)  # each group's values: one column
    z, base, hg = guess.reshape(columns), base.reshape(columns), hg.reshape(-1, 1, 1)
    ulps = 8 * torch.finfo(base.dtype).eps / newton.tol
    base_rounding = base.detach().abs().mul(ulps).clamp_min(torch.finfo(base.dtype).tiny)
    limit = newton.tol * z.shape[1] ** 0.5  # on the scaled update's 2-norm: RMS <= tol
    running = torch.ones(groups, 1, 1, dtype=torch.bool, device=base.device)
    converged = torch.zeros_like(running)
    previous = torch.full((groups, 1, 1), torch.inf, dtype=base.dtype, device=base.device)
    nfe = 0
    for _ in range(newton.max_iterations):
        residual = z - base - hg * func(t, z.reshape(shape)).reshape(columns)
        nfe += 1
        update = torch.linalg.lu_solve(*factors, residual)
        magnitude = z.detach().abs()
        scale = torch.maximum(magnitude * newton.rtol + newton.atol,
                              torch.add(base_rounding, magnitude, alpha=ulps))
        size = torch.linalg.vector_norm(update.detach() / scale, dim=1, keepdim=True)
        z = torch.where(running, z - update, z)
        within = size <= limit
        converged = torch.where(running, within, converged)
        running = running & ~within & (size < previous)  # NaN and inf stop too
        previous = size
        if not bool(running.any()):
            break
    return z.reshape(shape), nfe, converged.view(-1)


def attach(func: Func, t: Tensor, base: Tensor, hg: Tensor, z: Tensor, groups: int) -> Tensor:
    """The converged stage ``z`` in the autograd graph with the implicit function
    theorem's derivative (value unchanged: ``z + δ - δ``, exactly ``z``)."""
    z = z.detach()
    matrix = iteration_matrix(jacobian(func, t, z, groups), hg)
    residual = z - base - hg * func(t, z)
    delta = -torch.linalg.solve(matrix, residual.reshape(groups, -1, 1).to(matrix.dtype))
    delta = delta.to(z.dtype).reshape(z.shape)
    return z + (delta - delta.detach())
