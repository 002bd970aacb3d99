"""One explicit Runge–Kutta step and its continuous extension: the only code that
evaluates stages.

The forward solve, ACA's step rebuild and the adjoint's reverse solve all call
``rk_step``, so a step rebuilt in backward repeats the forward arithmetic exactly.
Times ``t`` and step sizes ``h`` are tensors of the solve's time dtype (at least
float64) with one value per group of the state (``aca.solvers.groups``): one for the
whole state, or one per sample (``per_sample=True``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from aca.errors import NewtonConvergenceError
from aca.solvers.newton import Newton, attach, iteration_matrix, jacobian, solve_stage
from aca.solvers.tableau import ButcherTableau

#: ``func(t, y)``: ``t`` a time tensor shaped like ``h`` (the loop's view of time)
Func = Callable[[Tensor, Tensor], Tensor]


class Step(NamedTuple):
    """The result of one step: the new state, the embedded error estimate (only with
    ``with_error``), the FSAL stage ``func(t_next, y)`` (when evaluated), the
    evaluations made, every stage evaluated (for the continuous extension), the
    groups whose Newton iteration failed (implicit methods; the step must be rejected
    there whatever its error) and the dense Jacobians of ``func`` formed (implicit
    methods: one per step for Newton, one per stage attached to the graph)."""

    y: Tensor
    error: Tensor | None
    k_last: Tensor | None
    nfe: int
    stages: list[Tensor]
    failed: Tensor | None = None
    jacobians: int = 0


def combine(weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """``Σ w_j k_j`` over the non-zero weights, accumulated in one buffer."""
    terms = [(w, k) for w, k in zip(weights, ks) if w != 0.0] or [(0.0, ks[0])]
    acc = torch.mul(terms[0][1], terms[0][0])
    for w, k in terms[1:]:
        acc.add_(k, alpha=w)
    return acc


def value(x: Tensor) -> Tensor:
    """``x`` out of the autograd graph (``x`` itself when it is not in one: no copy)."""
    return x.detach() if x.requires_grad else x


def end_from_inside(t: Tensor, t_next: Tensor, dtype: torch.dtype) -> Tensor:
    """``t_next`` in ``dtype`` moved one ulp towards ``t`` (its derivative ``t_next``'s):
    where stages at a step's end are evaluated."""
    end = torch.nextafter(value(t_next).to(dtype), value(t).to(dtype))
    return end if not t_next.requires_grad else end + (t_next - t_next.detach()).to(dtype)


def rk_step(func: Func, t: Tensor, y: Tensor, h: Tensor, tableau: ButcherTableau,
            k1: Tensor | None = None, with_error: bool = False, dense: bool = False,
            k1_time: Tensor | None = None, newton: Newton | None = None) -> Step:
    """Advance ``y`` from ``t`` by ``h`` (time tensors broadcasting against ``y``; in the
    autograd graph when step sizes are differentiated). ``k1`` is ``func(t, y)`` when
    the caller has it (FSAL), else evaluated at ``k1_time`` (default ``t``; a rebuilt
    step replacing an FSAL stage evaluates it where the forward did). The step ends at
    ``t + h``, as the loop and ACA's rebuild both compute it; stages at ``c = 1`` are
    evaluated one ulp (of the state's dtype) inside the step, the limit from inside at a
    discontinuity of ``func`` there (torchdiffeq's convention; then ``step_t`` at a jump
    is exact). The last stage of an FSAL method is evaluated only with ``with_error``
    (the error estimate uses it) or ``dense`` (the continuous extension does). An
    implicit method's stages are solved by ``newton``; a group whose Newton iteration
    fails is ``failed`` (the controller rejects the step and shrinks it), or, without
    an error estimate, ``NewtonConvergenceError``."""
    t_y, h_y = t.to(y.dtype), h.to(y.dtype)  # stage times in the state's dtype, as func
    # gets them; stages at the step's end see it from inside (torchdiffeq's convention)
    end = end_from_inside(t_y, t + h, y.dtype) if 1.0 in tableau.c else None
    if tableau.implicit:
        ks, nfe, jacobians, converged = _implicit_stages(func, t, y, h, t_y, h_y, tableau, k1,
                                                         k1_time, end, newton)
        y_new = torch.addcmul(y, combine(tableau.b, ks), h_y)
        error = combine(tableau.b_error, ks) * h_y if with_error else None
        failed = None
        if not bool(converged.all()):
            if error is None:
                raise NewtonConvergenceError(
                    f"{tableau.name}: Newton's iteration for a stage did not converge in "
                    f"{newton.max_iterations} iterations in the step from t = "
                    f"{float(value(t).reshape(-1)[0]):g}: take a smaller step_size, or an "
                    "adaptive implicit solver (kvaerno3, kvaerno5), which shrinks the step")
            # rejected by ``failed``, not by an infinite error: naive's graph would hold
            # the error norm's derivative at inf, 0 · inf = nan, in every gradient
            failed = ~converged.view(h.shape)
            error = torch.where(failed, 0.0, error)
        return Step(y_new, error, None, nfe, ks, failed, jacobians)
    nfe = 0
    if k1 is None:
        k1 = func(t if k1_time is None else k1_time, y)
        nfe += 1
    ks = [k1]
    for i in range(1, tableau.solution_stages):
        stage = torch.addcmul(y, combine(tableau.a[i], ks), h_y)
        c = tableau.c[i]
        ks.append(func(end if c == 1.0 else torch.add(t_y, h_y, alpha=c), stage))
        nfe += 1
    y_new = torch.addcmul(y, combine(tableau.b, ks), h_y)
    k_last = None
    if tableau.fsal and (with_error or dense):
        k_last = func(end, y_new)
        ks.append(k_last)
        nfe += 1
    error = combine(tableau.b_error, ks) * h_y if with_error else None
    return Step(y_new, error, k_last, nfe, ks)


def _implicit_stages(func: Func, t: Tensor, y: Tensor, h: Tensor, t_y: Tensor, h_y: Tensor,
                     tableau: ButcherTableau, k1: Tensor | None, k1_time: Tensor | None,
                     end: Tensor | None, newton: Newton
                     ) -> tuple[list[Tensor], int, int, Tensor]:
    """The stages of a diagonally implicit step, their evaluations, the Jacobians formed
    and which groups' Newton iterations converged. ``k_i = (z_i - base_i) / (hγ)``: the
    stage derivative from the stage equation (exact at the converged ``z_i``, without the
    amplification of ``f(z_i)``'s residual by the problem's stiffness)."""
    if newton is None:
        raise ValueError(f"{tableau.name} is implicit: rk_step needs newton=Newton(rtol, atol)")
    groups = h.numel()
    ks: list[Tensor] = []
    factors: dict[float, tuple[Tensor, Tensor]] = {}
    converged = torch.ones(groups, dtype=torch.bool, device=y.device)
    nfe = jacobians = 0
    for i, (c, gamma) in enumerate(zip(tableau.c, tableau.diagonal)):
        base = y if i == 0 else torch.addcmul(y, combine(tableau.a[i], ks), h_y)
        stage_time = end if c == 1.0 else torch.add(t_y, h_y, alpha=c)
        if gamma == 0.0:
            if i == 0 and k1 is not None:
                ks.append(k1)
            else:
                ks.append(func((t if k1_time is None else k1_time) if i == 0 else stage_time,
                               base))
                nfe += 1
            continue
        hg = h_y * gamma
        if ks:
            guess = base + hg * ks[-1]
        else:  # an implicit first stage (implicit Euler): f(t, y) predicts it
            guess = base + hg * (func(t if k1_time is None else k1_time, y) if k1 is None
                                 else k1)
            nfe += k1 is None
        if gamma not in factors:
            if not factors:
                jac = jacobian(func, t, y, groups)
                nfe, jacobians = nfe + 1, jacobians + 1
            factors[gamma] = torch.linalg.lu_factor_ex(iteration_matrix(jac, hg))[:2]
        with torch.set_grad_enabled(newton.unrolled and torch.is_grad_enabled()):
            z, evaluations, ok = solve_stage(func, stage_time, base, hg, guess, factors[gamma],
                                             newton, groups)
        nfe += evaluations
        converged &= ok
        if not newton.unrolled and torch.is_grad_enabled():
            z = attach(func, stage_time, base, hg, z, groups)
            nfe, jacobians = nfe + 2, jacobians + 1
        ks.append((z - base) / torch.where(hg == 0, 1.0, hg))
    return ks, nfe, jacobians, converged


@functools.cache
def _dense_matrix(tableau: ButcherTableau, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The continuous extension's coefficients, ``(degree, stages)``."""
    return torch.tensor(tableau.dense, dtype=dtype, device=device).T


def interpolate(y: Tensor, h: Tensor, stages: Sequence[Tensor], tableau: ButcherTableau,
                rows: Tensor, theta: Tensor) -> Tensor:
    """The continuous extension of a step (from ``y``, of size ``h``, with all its stages:
    ``rk_step(..., dense=True)``) at ``θ[p]`` inside the step of group ``rows[p]``:
    ``y + h Σ_j b_j(θ) k_j``, ``(P, N)`` with ``N`` the size of a group's state."""
    if len(stages) != len(tableau.dense):
        raise ValueError(f"{tableau.name}'s interpolant needs {len(tableau.dense)} stages, "
                         f"got {len(stages)}: take the step with dense=True")
    groups = h.numel()
    coefficients = _dense_matrix(tableau, theta.dtype, theta.device)
    powers = theta.unsqueeze(-1) ** torch.arange(1, len(coefficients) + 1, device=theta.device)
    weights = (powers @ coefficients).to(y.dtype)  # (P, stages): b_j(θ_p)
    ks = torch.stack([k.reshape(groups, -1)[rows] for k in stages], 1)  # (P, stages, N)
    increment = torch.bmm(weights.unsqueeze(1), ks).squeeze(1)
    return torch.addcmul(y.reshape(groups, -1)[rows], increment,
                         h.reshape(groups, 1)[rows].to(y.dtype))
